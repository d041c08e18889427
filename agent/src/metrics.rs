//! The agent's metrics, for Prometheus: what the scans did, the set in force, the spool and the
//! link, written in the text exposition format 0.0.4.
//!
//! Off by default. `[metrics]` in agent.toml turns on either or both of:
//! - `textfile`: a file for node_exporter's textfile collector, written whole under a
//!   temporary name (not ending in `.prom`, so node_exporter never reads half of it) and
//!   renamed over the old one, after each full scan and at least every [`TEXTFILE_EVERY`];
//! - `listen`: a loopback address where a small thread answers plain-HTTP `GET /metrics`,
//!   one connection at a time, each bounded in size and time. Only loopback addresses are
//!   accepted (the configuration refuses others): no TLS and no credentials, so nothing off
//!   this host may reach it.
//!
//! Cost: the scan paths add a few atomic additions per full scan or file event; the daemon's
//! status tick copies a handful of numbers; the text is made only when written or scraped.
//! This keeps inside the agent's CPU budget.
//!
//! Invariant: no metric carries a path, a user name, an indicator or a sighting's content,
//! only counts, sizes, times and the set's version. No label holds anything but fixed names.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::MetricsConfig;
use crate::scan::Stats;
use crate::status::StatusReport;
use crate::AgentError;

/// How often the textfile is rewritten when no scan finishes.
pub const TEXTFILE_EVERY: Duration = Duration::from_secs(60);
/// The largest request head the listener reads.
const MAX_REQUEST: usize = 8 << 10;
/// How long a scrape may take to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// The full-scan duration histogram's upper bounds, in seconds.
const SCAN_BUCKETS: [f64; 10] = [1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0];

/// Counters the scan paths add to; all cumulative since the daemon started.
static SCANS: AtomicU64 = AtomicU64::new(0);
static SCAN_MICROS: AtomicU64 = AtomicU64::new(0);
static SCAN_BUCKET_COUNTS: [AtomicU64; SCAN_BUCKETS.len()] =
    [const { AtomicU64::new(0) }; SCAN_BUCKETS.len()];
static LAST_SCAN_MICROS: AtomicU64 = AtomicU64::new(0);
static LAST_SCAN_END: AtomicU64 = AtomicU64::new(0);
static FILES: AtomicU64 = AtomicU64::new(0);
static HASHED: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static CACHED: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);
/// Set when a full scan finished, so the textfile is written at once.
static SCAN_FINISHED: AtomicBool = AtomicBool::new(false);

/// The daemon's state as its last status tick saw it.
static STATUS: Mutex<Option<Gauges>> = Mutex::new(None);

/// The numbers copied from a status report.
#[derive(Debug, Clone, Default)]
struct Gauges {
    set_version: Option<u64>,
    set_created: i64,
    set_fresh: bool,
    sightings: u64,
    spool_batches: u64,
    spool_dropped: u64,
    enrolled: bool,
    connected: bool,
    last_contact: Option<i64>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn add(stats: &Stats) {
    FILES.fetch_add(stats.files, Ordering::Relaxed);
    HASHED.fetch_add(stats.hashed, Ordering::Relaxed);
    BYTES.fetch_add(stats.bytes, Ordering::Relaxed);
    CACHED.fetch_add(stats.cached, Ordering::Relaxed);
    ERRORS.fetch_add(stats.errors, Ordering::Relaxed);
}

/// Records a full scan that took `took` and did `stats`.
pub fn scan_done(took: Duration, stats: &Stats) {
    add(stats);
    let secs = took.as_secs_f64();
    for (count, bound) in SCAN_BUCKET_COUNTS.iter().zip(SCAN_BUCKETS) {
        if secs <= bound {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
    let micros = took.as_micros().min(u64::MAX as u128) as u64;
    SCAN_MICROS.fetch_add(micros, Ordering::Relaxed);
    LAST_SCAN_MICROS.store(micros, Ordering::Relaxed);
    LAST_SCAN_END.store(unix_now().max(0) as u64, Ordering::Relaxed);
    SCANS.fetch_add(1, Ordering::Relaxed);
    SCAN_FINISHED.store(true, Ordering::Relaxed);
}

/// Records the work of checking the files a file event named (`stats` of that check alone).
pub fn checked(stats: &Stats) {
    add(stats);
}

/// Copies the numbers of the daemon's status report, for the next render.
pub fn status(report: &StatusReport) {
    let g = Gauges {
        set_version: report.set.as_ref().map(|s| s.version),
        set_created: report.set.as_ref().map_or(0, |s| s.created),
        set_fresh: report.set.as_ref().is_some_and(|s| s.fresh),
        sightings: report.sightings,
        spool_batches: report.spool.depth,
        spool_dropped: report.spool.dropped,
        enrolled: report.collector.enrolled,
        connected: report.collector.connected,
        last_contact: report.collector.last_contact,
    };
    *STATUS.lock().unwrap_or_else(|e| e.into_inner()) = Some(g);
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Bytes of the batch files in `state_dir/spool` (the state file and temporary files aside).
fn spool_bytes(state_dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(state_dir.join(crate::spool::SPOOL_DIR)) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".pkt") && name != crate::spool::STATE_FILE
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The resident set size in bytes, from `/proc/self/status`.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Every agent metric in the Prometheus text format 0.0.4. `state_dir` is where the spool's
/// size is measured; `started` when the daemon started.
pub fn render(state_dir: &Path, started: Instant) -> String {
    let mut out = String::with_capacity(4096);
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    one(
        &mut out,
        "picket_agent_scans_total",
        "counter",
        "Full scans finished.",
        r(&SCANS),
    );
    family(
        &mut out,
        "picket_agent_scan_duration_seconds",
        "histogram",
        "How long full scans took, paced to the CPU budget.",
    );
    for (count, bound) in SCAN_BUCKET_COUNTS.iter().zip(SCAN_BUCKETS) {
        let _ = writeln!(
            out,
            "picket_agent_scan_duration_seconds_bucket{{le=\"{bound}\"}} {}",
            r(count)
        );
    }
    let _ = writeln!(
        out,
        "picket_agent_scan_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        r(&SCANS)
    );
    let _ = writeln!(
        out,
        "picket_agent_scan_duration_seconds_sum {:.6}",
        r(&SCAN_MICROS) as f64 / 1e6
    );
    let _ = writeln!(out, "picket_agent_scan_duration_seconds_count {}", r(&SCANS));
    one(
        &mut out,
        "picket_agent_last_scan_duration_seconds",
        "gauge",
        "How long the last full scan took.",
        format_args!("{:.6}", r(&LAST_SCAN_MICROS) as f64 / 1e6),
    );
    one(
        &mut out,
        "picket_agent_last_scan_end_timestamp_seconds",
        "gauge",
        "When the last full scan finished, Unix time (0: none yet).",
        r(&LAST_SCAN_END),
    );
    one(
        &mut out,
        "picket_agent_files_scanned_total",
        "counter",
        "Regular files looked at, by full scans and file events.",
        r(&FILES),
    );
    one(
        &mut out,
        "picket_agent_bytes_hashed_total",
        "counter",
        "Bytes read and hashed.",
        r(&BYTES),
    );
    one(
        &mut out,
        "picket_agent_hash_cache_hits_total",
        "counter",
        "Files whose digests came from the hash cache.",
        r(&CACHED),
    );
    one(
        &mut out,
        "picket_agent_hash_cache_misses_total",
        "counter",
        "Files read and hashed because the cache did not hold them.",
        r(&HASHED),
    );
    one(
        &mut out,
        "picket_agent_scan_errors_total",
        "counter",
        "Files or directories that could not be read.",
        r(&ERRORS),
    );
    let g = STATUS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(g) = g {
        let now = unix_now();
        if let Some(version) = g.set_version {
            one(
                &mut out,
                "picket_agent_set_version",
                "gauge",
                "The version of the set in force.",
                version,
            );
            one(
                &mut out,
                "picket_agent_set_age_seconds",
                "gauge",
                "Seconds since the publisher made the set in force.",
                now.saturating_sub(g.set_created).max(0),
            );
            one(
                &mut out,
                "picket_agent_set_fresh",
                "gauge",
                "1 while the set's root, manifest and timestamp are all within their lifetimes.",
                u8::from(g.set_fresh),
            );
        }
        one(
            &mut out,
            "picket_agent_sightings",
            "gauge",
            "Sightings held on this host.",
            g.sightings,
        );
        one(
            &mut out,
            "picket_agent_spool_batches",
            "gauge",
            "Report batches waiting for the collector.",
            g.spool_batches,
        );
        one(
            &mut out,
            "picket_agent_spool_dropped_total",
            "counter",
            "Sightings dropped from a full spool, since the spool was made.",
            g.spool_dropped,
        );
        one(
            &mut out,
            "picket_agent_enrolled",
            "gauge",
            "1 when the agent is enrolled.",
            u8::from(g.enrolled),
        );
        one(
            &mut out,
            "picket_agent_link_connected",
            "gauge",
            "1 while a session with the collector is up.",
            u8::from(g.connected),
        );
        if let Some(t) = g.last_contact {
            one(
                &mut out,
                "picket_agent_link_last_contact_timestamp_seconds",
                "gauge",
                "When the collector last answered, Unix time.",
                t,
            );
        }
    }
    one(
        &mut out,
        "picket_agent_spool_bytes",
        "gauge",
        "Bytes of report batches waiting for the collector.",
        spool_bytes(state_dir),
    );
    one(
        &mut out,
        "picket_agent_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        format_args!("{:.3}", started.elapsed().as_secs_f64()),
    );
    if let Some(rss) = rss_bytes() {
        one(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the agent.",
            rss,
        );
    }
    out
}

/// Where the metrics go: the textfile, the listener, both or neither.
#[derive(Debug)]
pub struct Exporter {
    state_dir: PathBuf,
    started: Instant,
    textfile: Option<PathBuf>,
    next_write: Instant,
    last_error: Option<String>,
    listener: Option<Listener>,
}

/// The `GET /metrics` thread.
#[derive(Debug)]
struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    /// Starts what `cfg` asks for: binds the listener (an error names the address) and makes
    /// the textfile due at the first [`Exporter::tick`].
    pub fn start(cfg: &MetricsConfig, state_dir: &Path) -> Result<Exporter, AgentError> {
        let started = Instant::now();
        let listener = match cfg.listen {
            None => None,
            Some(addr) => {
                let socket = TcpListener::bind(addr).map_err(|e| {
                    AgentError::io(state_dir)(std::io::Error::other(format!(
                        "metrics.listen {addr}: cannot listen: {e}"
                    )))
                })?;
                let bound = socket.local_addr().map_err(AgentError::io(state_dir))?;
                let stop = Arc::new(AtomicBool::new(false));
                let thread = {
                    let (stop, dir) = (stop.clone(), state_dir.to_owned());
                    std::thread::Builder::new()
                        .name("picket-metrics".into())
                        .spawn(move || serve(&socket, &stop, &dir, started))
                        .map_err(AgentError::io(state_dir))?
                };
                tracing::info!("metrics on http://{bound}/metrics");
                Some(Listener {
                    addr: bound,
                    stop,
                    thread: Some(thread),
                })
            }
        };
        Ok(Exporter {
            state_dir: state_dir.to_owned(),
            started,
            textfile: cfg.textfile.clone(),
            next_write: started,
            last_error: None,
            listener,
        })
    }

    /// The address the listener is bound to, if there is one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().map(|l| l.addr)
    }

    /// Writes the textfile if it is due: a full scan finished since the last write, or
    /// [`TEXTFILE_EVERY`] passed. A failure is logged once until it changes or succeeds.
    pub fn tick(&mut self) {
        let Some(path) = &self.textfile else { return };
        let scanned = SCAN_FINISHED.load(Ordering::Relaxed);
        if !scanned && Instant::now() < self.next_write {
            return;
        }
        SCAN_FINISHED.store(false, Ordering::Relaxed);
        self.next_write = Instant::now() + TEXTFILE_EVERY;
        match write_textfile(path, &render(&self.state_dir, self.started)) {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    tracing::info!("metrics textfile {} written again", path.display());
                }
            }
            Err(e) => {
                let message = format!("metrics textfile {}: {e}", path.display());
                if self.last_error.as_ref() != Some(&message) {
                    tracing::warn!("{message}");
                }
                self.last_error = Some(message);
            }
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(l) = &mut self.listener {
            l.stop.store(true, Ordering::SeqCst);
            // Wakes the thread from accept; it sees the stop and returns.
            let _ = TcpStream::connect_timeout(&l.addr, Duration::from_millis(200));
            if let Some(t) = l.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename, so a
/// reader sees the old file or the new one, whole. 0644: node_exporter runs as another user.
fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        // Whatever the umask: node_exporter, another user, must be able to read it.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The listener's loop: one connection at a time until `stop`.
fn serve(socket: &TcpListener, stop: &AtomicBool, state_dir: &Path, started: Instant) {
    for conn in socket.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok(stream) => {
                let _ = answer(stream, state_dir, started);
            }
            // Out of descriptors, most likely: a pause rather than a spin.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Reads one request head (at most [`MAX_REQUEST`] bytes, within [`CLIENT_TIMEOUT`]) and
/// answers it: `GET /metrics` with the metrics, anything else 404 or 405, then closes.
fn answer(mut stream: TcpStream, state_dir: &Path, started: Instant) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST || Instant::now() >= deadline {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            );
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => respond(
            &mut stream,
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &render(state_dir, started),
        ),
        (_, "/metrics") => respond(&mut stream, "405 Method Not Allowed", "text/plain", "GET only\n"),
        _ => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            "not found; try /metrics\n",
        ),
    }
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_textfile_is_replaced_whole_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("picket.prom");
        write_textfile(&path, "a 1\n").unwrap();
        write_textfile(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("picket.prom")]);
    }

    #[test]
    fn a_scan_moves_the_counters_and_the_histogram() {
        let before = render(Path::new("/nonexistent"), Instant::now());
        assert!(
            before.contains("picket_agent_scan_duration_seconds_bucket{le=\"+Inf\"}"),
            "{before}"
        );
        let stats = Stats {
            files: 10,
            hashed: 3,
            bytes: 300,
            cached: 7,
            ..Stats::default()
        };
        let scans = SCANS.load(Ordering::Relaxed);
        scan_done(Duration::from_secs(2), &stats);
        let after = render(Path::new("/nonexistent"), Instant::now());
        assert_eq!(SCANS.load(Ordering::Relaxed), scans + 1);
        assert!(
            after.contains("picket_agent_last_scan_duration_seconds 2.000000"),
            "{after}"
        );
        assert!(
            after.contains("picket_agent_scan_duration_seconds_bucket{le=\"1\"}"),
            "{after}"
        );
    }
}
