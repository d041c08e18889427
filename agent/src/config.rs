//! The agent's configuration file (`agent.toml`), read by `picket-agent run`.
//!
//! Every field is documented here because this is the administrator's reference. Unknown keys
//! and bad values stop start-up with a message naming the file, the key and what was expected.
//! [`Config::parse`] takes the text and a name for it, so tests build configurations from
//! strings without touching the disk.

use std::path::PathBuf;
use std::time::Duration;

use picket_proto::parse_duration;
use serde::Deserialize;

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// The state directory: the installed set, the hash cache, the sightings (0700).
    state_dir: PathBuf,
    /// File scanning.
    #[serde(default)]
    scan: RawScan,
    /// Process matching.
    #[serde(default)]
    processes: RawPoll,
    /// Connection matching.
    #[serde(default)]
    connections: RawPoll,
    /// Resource limits.
    #[serde(default)]
    limits: RawLimits,
    /// What sightings leave the host, and how they wait for the collector.
    #[serde(default)]
    sightings: RawSightings,
    /// The collector this agent is enrolled with (written by `picket-agent enroll`).
    #[serde(default)]
    collector: Option<RawCollector>,
    /// Prometheus metrics (off unless a key here is set).
    #[serde(default)]
    metrics: RawMetrics,
}

/// The `[metrics]` section as written. Both keys are optional and off by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// A file for node_exporter's textfile collector, such as
    /// `/var/lib/node_exporter/textfile_collector/picket.prom`: an absolute path ending in
    /// `.prom`, rewritten (a temporary file renamed over it) after each full scan and at least
    /// every 60 s.
    #[serde(default)]
    textfile: Option<PathBuf>,
    /// A loopback address and port (`127.0.0.1:9464`, `[::1]:9464`) where plain HTTP answers
    /// `GET /metrics`. Any other address is refused: the metrics are for this host's scraper.
    /// Port 0 picks a free port; the address bound is logged.
    #[serde(default)]
    listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScan {
    /// Directories to scan and watch.
    #[serde(default)]
    roots: Vec<PathBuf>,
    /// Path prefixes never scanned (a cache directory, a mounted backup).
    #[serde(default)]
    exclude: Vec<PathBuf>,
    /// Files larger than this are not hashed (`64MiB`, `1GiB`, or bytes).
    #[serde(default = "default_max_file_size")]
    max_file_size: String,
    /// Descend into other filesystems below a root (off: one filesystem per root).
    #[serde(default)]
    cross_filesystems: bool,
    /// How often a full rescan runs; it stays the source of truth behind file events.
    #[serde(default = "default_rescan")]
    rescan_interval: String,
    /// Watch the roots for created and modified files.
    #[serde(default = "yes")]
    watch: bool,
}

impl Default for RawScan {
    fn default() -> Self {
        RawScan {
            roots: Vec::new(),
            exclude: Vec::new(),
            max_file_size: default_max_file_size(),
            cross_filesystems: false,
            rescan_interval: default_rescan(),
            watch: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoll {
    /// Whether to poll at all.
    #[serde(default = "yes")]
    enabled: bool,
    /// How often (`10s`, `1m`).
    #[serde(default = "default_poll")]
    poll_interval: String,
}

impl Default for RawPoll {
    fn default() -> Self {
        RawPoll {
            enabled: true,
            poll_interval: default_poll(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    /// The share of one core that background scanning may use (0.05 is 5 %).
    #[serde(default = "default_cpu")]
    cpu_budget: f64,
    /// The most memory the indicator index may take; a set that would need more is refused.
    #[serde(default = "default_memory")]
    memory_limit: String,
    /// Most sightings kept on this host; the least recently seen go first.
    #[serde(default = "default_max_sightings")]
    max_sightings: usize,
    /// Most entries in the hash cache.
    #[serde(default = "default_cache_entries")]
    cache_entries: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            cpu_budget: default_cpu(),
            memory_limit: default_memory(),
            max_sightings: default_max_sightings(),
            cache_entries: default_cache_entries(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSightings {
    /// How much of a matched file's or process's path leaves the host: `redacted` (home
    /// directories and user names replaced), `name` (the file name only) or `none`. A match on a
    /// glob, a command-line substring or a network never sends the local value, whatever this
    /// says.
    #[serde(default = "default_location")]
    location: String,
    /// How often updates of known sightings (count, last seen) are queued for the collector; a
    /// new sighting is queued at once.
    #[serde(default = "default_report_interval")]
    report_interval: String,
    /// Most batches the on-disk spool holds while the collector is away; past it the oldest are
    /// dropped and counted.
    #[serde(default = "default_spool_batches")]
    spool_batches: usize,
}

impl Default for RawSightings {
    fn default() -> Self {
        RawSightings {
            location: default_location(),
            report_interval: default_report_interval(),
            spool_batches: default_spool_batches(),
        }
    }
}

fn default_location() -> String {
    "redacted".into()
}
fn default_report_interval() -> String {
    "60s".into()
}
fn default_spool_batches() -> usize {
    10_000
}

/// The `[collector]` section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollector {
    /// The collector's agent channel, `HOST:PORT` (`[v6]:PORT` for an IPv6 literal).
    address: String,
    /// The name the collector's certificate must carry (default: the HOST of `address`).
    #[serde(default)]
    server_name: Option<String>,
    /// The collector CA certificate (PEM): the only root the agent trusts for the channel.
    ca: PathBuf,
    /// The agent's private key (PKCS#8 PEM, mode 0600), made on this host at enrolment.
    key: PathBuf,
    /// The agent's client certificate (PEM); renewed in place at half its life.
    cert: PathBuf,
    /// The trust anchor (`root.pub`) that sets from the collector are verified against.
    trust: PathBuf,
    /// The channel whose sets the agent follows.
    #[serde(default = "default_channel")]
    channel: String,
    /// Where the machine id is read (default `/etc/machine-id`, else
    /// `/var/lib/dbus/machine-id`); its hash goes in every hello so clones show up.
    #[serde(default)]
    machine_id_file: Option<PathBuf>,
    /// How often a heartbeat is sent.
    #[serde(default = "default_heartbeat")]
    heartbeat_interval: String,
    /// How often the agent asks for the current set even without being told of a new one
    /// (the fallback when a push is missed), spread by ±20 %.
    #[serde(default = "default_collector_poll")]
    poll_interval: String,
    /// The largest set file accepted from the collector (`256MiB`; at least `1MiB`, at most the
    /// protocol's `512MiB`). A frame announcing more is refused before any of it is read, and
    /// the session starts again; while a set this large is being received and installed, the
    /// agent holds a few times its size in memory.
    #[serde(default = "default_max_set_bytes")]
    max_set_bytes: String,
}

fn default_channel() -> String {
    "default".into()
}
fn default_heartbeat() -> String {
    "60s".into()
}
fn default_collector_poll() -> String {
    "5m".into()
}
fn default_max_set_bytes() -> String {
    "256MiB".into()
}

fn yes() -> bool {
    true
}
fn default_max_file_size() -> String {
    "256MiB".into()
}
fn default_rescan() -> String {
    "6h".into()
}
fn default_poll() -> String {
    "10s".into()
}
fn default_cpu() -> f64 {
    0.05
}
fn default_memory() -> String {
    "256MiB".into()
}
fn default_max_sightings() -> usize {
    100_000
}
fn default_cache_entries() -> usize {
    2_000_000
}

/// The configuration, as typed values.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The state directory.
    pub state_dir: PathBuf,
    /// Scan roots.
    pub roots: Vec<PathBuf>,
    /// Excluded path prefixes.
    pub exclude: Vec<PathBuf>,
    /// Largest file hashed.
    pub max_file_size: u64,
    /// Cross filesystems below a root.
    pub cross_filesystems: bool,
    /// Full rescan period.
    pub rescan_interval: Duration,
    /// Watch for file events.
    pub watch: bool,
    /// Process poll period, if enabled.
    pub process_poll: Option<Duration>,
    /// Connection poll period, if enabled.
    pub connection_poll: Option<Duration>,
    /// CPU share for background work.
    pub cpu_budget: f64,
    /// Memory ceiling for the index, in bytes.
    pub memory_limit: u64,
    /// Most sightings kept.
    pub max_sightings: usize,
    /// Most hash cache entries.
    pub cache_entries: usize,
    /// The `[sightings]` section.
    pub sightings: SightingsConfig,
    /// The `[collector]` section, when the agent is enrolled.
    pub collector: Option<CollectorConfig>,
    /// The `[metrics]` section.
    pub metrics: MetricsConfig,
}

/// The `[metrics]` section, as typed values: where the metrics go, if anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The textfile collector's file, if any.
    pub textfile: Option<PathBuf>,
    /// The loopback address `GET /metrics` is served on, if any.
    pub listen: Option<std::net::SocketAddr>,
}

/// Checks and converts the `[metrics]` section.
fn metrics_config(m: RawMetrics, origin: &str) -> Result<MetricsConfig, String> {
    if let Some(p) = &m.textfile {
        if !p.is_absolute() || p.extension().is_none_or(|e| e != "prom") {
            return Err(format!(
                "{origin}: metrics.textfile: {} is not an absolute path ending in .prom (node_exporter reads only those)",
                p.display()
            ));
        }
    }
    let listen = match &m.listen {
        None => None,
        Some(text) => {
            let addr: std::net::SocketAddr = text.parse().map_err(|_| {
                format!(
                    "{origin}: metrics.listen: {text:?} is not an address and port such as 127.0.0.1:9464"
                )
            })?;
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "{origin}: metrics.listen: {text:?} is not a loopback address (127.0.0.0/8 or ::1); the agent serves metrics to this host only"
                ));
            }
            Some(addr)
        }
    };
    Ok(MetricsConfig {
        textfile: m.textfile,
        listen,
    })
}

/// The `[collector]` section, as typed values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorConfig {
    /// The collector's agent channel, `HOST:PORT`.
    pub address: String,
    /// The name its certificate must carry.
    pub server_name: String,
    /// The collector CA certificate file.
    pub ca: PathBuf,
    /// The agent's private key file.
    pub key: PathBuf,
    /// The agent's client certificate file.
    pub cert: PathBuf,
    /// The trust anchor file for sets.
    pub trust: PathBuf,
    /// The channel followed.
    pub channel: String,
    /// The machine id file, if not the default.
    pub machine_id_file: Option<PathBuf>,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Fallback poll period (before jitter).
    pub poll_interval: Duration,
    /// The largest set file accepted from the collector, in bytes.
    pub max_set_bytes: u64,
}

/// The `[sightings]` section, as typed values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SightingsConfig {
    /// How much of a location leaves the host.
    pub location: crate::redact::Location,
    /// How often updates of known sightings are queued.
    pub report_interval: Duration,
    /// Most batches in the spool.
    pub spool_batches: usize,
}

/// The smallest `collector.max_set_bytes` accepted: below it not even a small set would fit.
const MIN_SET_BYTES: u64 = 1 << 20;

/// Checks and converts the `[collector]` section.
fn collector_config(c: RawCollector, origin: &str) -> Result<CollectorConfig, String> {
    let Some((host, _port)) = crate::link::split_host_port(&c.address) else {
        return Err(format!(
            "{origin}: collector.address: {:?} is not HOST:PORT (an IPv6 address goes in brackets: [::1]:4433)",
            c.address
        ));
    };
    let server_name = c.server_name.unwrap_or_else(|| host.to_owned());
    crate::link::tls::server_name(&server_name)
        .map_err(|e| format!("{origin}: collector.server_name: {e}"))?;
    for (key, path) in [
        ("collector.ca", Some(&c.ca)),
        ("collector.key", Some(&c.key)),
        ("collector.cert", Some(&c.cert)),
        ("collector.trust", Some(&c.trust)),
        ("collector.machine_id_file", c.machine_id_file.as_ref()),
    ] {
        if let Some(p) = path {
            if !p.is_absolute() {
                return Err(format!(
                    "{origin}: {key}: {} is not an absolute path",
                    p.display()
                ));
            }
        }
    }
    if c.channel.is_empty() || c.channel.len() > 64 {
        return Err(format!(
            "{origin}: collector.channel: {:?} is not a channel name (1 to 64 bytes)",
            c.channel
        ));
    }
    let dur = |key: &str, v: &str| {
        parse_duration(v)
            .filter(|&s| s > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                format!("{origin}: {key}: {v:?} is not a duration of at least 1s, such as 60s or 5m")
            })
    };
    let max_set_bytes = parse_size(&c.max_set_bytes)
        .filter(|n| (MIN_SET_BYTES..=picket_proto::wire::MAX_SERVER_FRAME as u64).contains(n))
        .ok_or_else(|| {
            format!(
                "{origin}: collector.max_set_bytes: {:?} is not a size between 1MiB and 512MiB, such as 256MiB",
                c.max_set_bytes
            )
        })?;
    Ok(CollectorConfig {
        max_set_bytes,
        heartbeat_interval: dur("collector.heartbeat_interval", &c.heartbeat_interval)?,
        poll_interval: dur("collector.poll_interval", &c.poll_interval)?,
        address: c.address,
        server_name,
        ca: c.ca,
        key: c.key,
        cert: c.cert,
        trust: c.trust,
        channel: c.channel,
        machine_id_file: c.machine_id_file,
    })
}

/// Parses `64MiB`, `1GiB`, `512KiB`, `100MB` or a plain number of bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl Config {
    /// Parses configuration text; `origin` names it in errors (the file path).
    pub fn parse(text: &str, origin: &str) -> Result<Config, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        let bad = |key: &str, what: &str, value: &str| format!("{origin}: {key}: {value:?} is not {what}");
        let dur = |key: &str, v: &str| {
            parse_duration(v)
                .map(Duration::from_secs)
                .ok_or_else(|| bad(key, "a duration such as 30s, 10m, 6h", v))
        };
        let size = |key: &str, v: &str| parse_size(v).ok_or_else(|| bad(key, "a size such as 64MiB", v));
        if !(raw.limits.cpu_budget > 0.0 && raw.limits.cpu_budget <= 1.0) {
            return Err(format!(
                "{origin}: limits.cpu_budget: {} is not a share of one core between 0 (excluded) and 1",
                raw.limits.cpu_budget
            ));
        }
        for r in &raw.scan.roots {
            if !r.is_absolute() {
                return Err(format!(
                    "{origin}: scan.roots: {} is not an absolute path",
                    r.display()
                ));
            }
        }
        let sightings = SightingsConfig {
            location: crate::redact::Location::parse(&raw.sightings.location).ok_or_else(|| {
                bad(
                    "sightings.location",
                    "one of \"redacted\", \"name\", \"none\"",
                    &raw.sightings.location,
                )
            })?,
            report_interval: dur("sightings.report_interval", &raw.sightings.report_interval)?,
            spool_batches: raw.sightings.spool_batches,
        };
        if sightings.spool_batches == 0 {
            return Err(format!(
                "{origin}: sightings.spool_batches: 0 is not a number of batches of at least 1"
            ));
        }
        if sightings.report_interval.is_zero() {
            return Err(format!(
                "{origin}: sightings.report_interval: {:?} is not a duration of at least 1s",
                raw.sightings.report_interval
            ));
        }
        Ok(Config {
            state_dir: raw.state_dir,
            roots: raw.scan.roots,
            exclude: raw.scan.exclude,
            max_file_size: size("scan.max_file_size", &raw.scan.max_file_size)?,
            cross_filesystems: raw.scan.cross_filesystems,
            rescan_interval: dur("scan.rescan_interval", &raw.scan.rescan_interval)?,
            watch: raw.scan.watch,
            process_poll: if raw.processes.enabled {
                Some(dur("processes.poll_interval", &raw.processes.poll_interval)?)
            } else {
                None
            },
            connection_poll: if raw.connections.enabled {
                Some(dur("connections.poll_interval", &raw.connections.poll_interval)?)
            } else {
                None
            },
            cpu_budget: raw.limits.cpu_budget,
            memory_limit: size("limits.memory_limit", &raw.limits.memory_limit)?,
            max_sightings: raw.limits.max_sightings,
            cache_entries: raw.limits.cache_entries,
            sightings,
            collector: match raw.collector {
                Some(c) => Some(collector_config(c, origin)?),
                None => None,
            },
            metrics: metrics_config(raw.metrics, origin)?,
        })
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Config::parse(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_defaults() {
        let c = Config::parse("state_dir = \"/var/lib/picket-agent\"\n", "agent.toml").unwrap();
        assert_eq!(c.max_file_size, 256 << 20);
        assert_eq!(c.process_poll, Some(Duration::from_secs(10)));
        assert!((c.cpu_budget - 0.05).abs() < 1e-9);
        assert!(c.watch);
    }

    #[test]
    fn errors_name_the_file_and_key() {
        for (text, needle) in [
            ("state_dir = \"/s\"\nbogus = 1\n", "unknown field `bogus`"),
            (
                "state_dir = \"/s\"\n[scan]\nmax_file_size = \"big\"\n",
                "scan.max_file_size: \"big\"",
            ),
            (
                "state_dir = \"/s\"\n[scan]\nroots = [\"relative\"]\n",
                "scan.roots: relative",
            ),
            (
                "state_dir = \"/s\"\n[limits]\ncpu_budget = 2.0\n",
                "limits.cpu_budget",
            ),
            (
                "state_dir = \"/s\"\n[processes]\npoll_interval = \"often\"\n",
                "processes.poll_interval",
            ),
        ] {
            let err = Config::parse(text, "/etc/picket/agent.toml").unwrap_err();
            assert!(err.starts_with("/etc/picket/agent.toml: "), "{err}");
            assert!(err.contains(needle), "{err} should contain {needle}");
        }
    }

    #[test]
    fn metrics_are_off_by_default_and_served_on_loopback_only() {
        let c = Config::parse("state_dir = \"/s\"\n", "agent.toml").unwrap();
        assert_eq!(c.metrics, MetricsConfig::default());
        let c = Config::parse(
            "state_dir = \"/s\"\n[metrics]\nlisten = \"[::1]:9464\"\ntextfile = \"/var/lib/ne/picket.prom\"\n",
            "agent.toml",
        )
        .unwrap();
        assert_eq!(c.metrics.listen, Some("[::1]:9464".parse().unwrap()));
        assert_eq!(c.metrics.textfile, Some(PathBuf::from("/var/lib/ne/picket.prom")));
        for (text, needle) in [
            (
                "listen = \"0.0.0.0:9464\"",
                "metrics.listen: \"0.0.0.0:9464\" is not a loopback address",
            ),
            ("listen = \"10.1.2.3:9464\"", "is not a loopback address"),
            ("listen = \"localhost:9464\"", "is not an address and port"),
            (
                "textfile = \"picket.prom\"",
                "metrics.textfile: picket.prom is not an absolute path",
            ),
            ("textfile = \"/var/lib/ne/picket.txt\"", "ending in .prom"),
            ("port = 9464", "unknown field `port`"),
        ] {
            let err =
                Config::parse(&format!("state_dir = \"/s\"\n[metrics]\n{text}\n"), "agent.toml").unwrap_err();
            assert!(err.contains(needle), "{err} should contain {needle}");
        }
    }

    #[test]
    fn the_sightings_section() {
        let c = Config::parse("state_dir = \"/s\"\n", "agent.toml").unwrap();
        assert_eq!(c.sightings.location, crate::redact::Location::Redacted);
        assert_eq!(c.sightings.report_interval, Duration::from_secs(60));
        assert_eq!(c.sightings.spool_batches, 10_000);
        let c = Config::parse(
            "state_dir = \"/s\"\n[sightings]\nlocation = \"name\"\nreport_interval = \"5m\"\nspool_batches = 50\n",
            "agent.toml",
        )
        .unwrap();
        assert_eq!(c.sightings.location, crate::redact::Location::Name);
        assert_eq!(c.sightings.report_interval, Duration::from_secs(300));
        assert_eq!(c.sightings.spool_batches, 50);
        for (text, needle) in [
            (
                "[sightings]\nlocation = \"full\"\n",
                "sightings.location: \"full\" is not one of",
            ),
            (
                "[sightings]\nreport_interval = \"soon\"\n",
                "sightings.report_interval",
            ),
            ("[sightings]\nspool_batches = 0\n", "sightings.spool_batches"),
            ("[sightings]\nhostname = true\n", "unknown field `hostname`"),
        ] {
            let err =
                Config::parse(&format!("state_dir = \"/s\"\n{text}"), "/etc/picket/agent.toml").unwrap_err();
            assert!(err.starts_with("/etc/picket/agent.toml: "), "{err}");
            assert!(err.contains(needle), "{err} should contain {needle}");
        }
    }

    #[test]
    fn the_collector_section() {
        let base = "state_dir = \"/s\"\n[collector]\nca = \"/s/ca.pem\"\nkey = \"/s/agent.key\"\ncert = \"/s/agent.crt\"\ntrust = \"/s/trust.pub\"\n";
        let c = Config::parse(
            &format!("{base}address = \"collector.example:4433\"\n"),
            "agent.toml",
        )
        .unwrap()
        .collector
        .unwrap();
        assert_eq!(c.server_name, "collector.example");
        assert_eq!(c.channel, "default");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(60));
        assert_eq!(c.poll_interval, Duration::from_secs(300));
        assert_eq!(c.max_set_bytes, 256 << 20);
        let c = Config::parse(
            &format!("{base}address = \"c:1\"\nmax_set_bytes = \"8MiB\"\n"),
            "agent.toml",
        )
        .unwrap()
        .collector
        .unwrap();
        assert_eq!(c.max_set_bytes, 8 << 20);
        let c = Config::parse(&format!("{base}address = \"[::1]:4433\"\n"), "agent.toml")
            .unwrap()
            .collector
            .unwrap();
        assert_eq!(c.server_name, "::1");
        assert_eq!(
            Config::parse("state_dir = \"/s\"\n", "agent.toml")
                .unwrap()
                .collector,
            None
        );
        for (extra, needle) in [
            (
                "address = \"collector.example\"\n",
                "collector.address: \"collector.example\" is not HOST:PORT",
            ),
            (
                "address = \"c:1\"\nheartbeat_interval = \"0s\"\n",
                "collector.heartbeat_interval",
            ),
            (
                "address = \"c:1\"\npoll_interval = \"often\"\n",
                "collector.poll_interval",
            ),
            (
                "address = \"c:1\"\nmachine_id_file = \"machine-id\"\n",
                "collector.machine_id_file: machine-id is not an absolute path",
            ),
            (
                "address = \"c:1\"\ntoken = \"pk1-...\"\n",
                "unknown field `token`",
            ),
            (
                "address = \"c:1\"\nmax_set_bytes = \"1GiB\"\n",
                "collector.max_set_bytes: \"1GiB\" is not a size between 1MiB and 512MiB",
            ),
            (
                "address = \"c:1\"\nmax_set_bytes = \"64KiB\"\n",
                "collector.max_set_bytes: \"64KiB\"",
            ),
        ] {
            let err = Config::parse(&format!("{base}{extra}"), "/etc/picket/agent.toml").unwrap_err();
            assert!(err.starts_with("/etc/picket/agent.toml: "), "{err}");
            assert!(err.contains(needle), "{err} should contain {needle}");
        }
    }

    #[test]
    fn sizes() {
        for (t, want) in [
            ("64MiB", Some(64 << 20)),
            ("1GiB", Some(1 << 30)),
            ("100", Some(100)),
            ("1TB", None),
            ("x", None),
        ] {
            assert_eq!(parse_size(t), want, "{t}");
        }
    }
}
