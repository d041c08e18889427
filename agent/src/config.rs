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
