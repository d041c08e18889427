//! `picket-agent run`: the daemon. It keeps the set in force compiled, scans the configured roots
//! at a low priority within the CPU budget, checks files as they are written, polls processes
//! and connections, records sightings, queues their reports for the collector, and runs the
//! link to the collector when the agent is enrolled.
//!
//! Threads:
//! - the **file thread** (lowest CPU and I/O priority, paced by the [`Governor`]): a full scan
//!   at start, after every set change (matched against the hash cache, so unchanged files are not
//!   read again), after a reload that changes what is scanned, and every `rescan_interval`;
//!   between scans, the paths the watcher reports;
//! - the **main thread**: signals, process and connection polls on their intervals, a look at
//!   the state directory every few seconds (at once when the link installed a set) to pick up a
//!   new set, the reports queued for the collector, and `DIR/status.json`;
//! - the **link thread** ([`crate::link`]), only with a `[collector]` section: sends the spool,
//!   heartbeats ([`Health::heartbeat`]) and fetches sets.
//!
//! Sightings: each new one is written at once to the sightings file (atomically), printed on
//! stdout as one JSON object a line, and its report (made by [`crate::redact`], never the local
//! record) queued in the on-disk [`Spool`] within a quarter of a second, so it can reach the
//! collector within seconds. Count and last-seen updates of known sightings are queued together,
//! at most once every `[sightings] report_interval`. The spool is kept whether or not the agent
//! is enrolled (an agent enrolled later still reports what it saw), bounded by `spool_batches`.
//! A crash between recording a sighting and queueing its report loses no sighting: the table
//! has it, and the next time it is seen it is queued as an update.
//!
//! Signals: SIGTERM or SIGINT stops the daemon cleanly within about two seconds: pending reports
//! are queued, the sightings table and the hash cache saved, the link told to stop, and
//! [`run`] returns `Ok(())` (a second signal exits at once). SIGHUP re-reads the configuration
//! file: a file that does not parse is refused with a message naming the file and the key, and
//! the configuration in force stays. Reloaded at once: `[scan]` (roots, exclusions, sizes,
//! filesystems, rescan interval, watching), `[processes]`, `[connections]`,
//! `limits.cpu_budget` and `[sightings]`; `limits.memory_limit` applies from the next set
//! loaded (and the link refuses sets over it from then on). Only at the next restart (the value
//! in force stays, with a warning): `state_dir`, `limits.max_sightings`, `limits.cache_entries`,
//! `[collector]` and `[metrics]`. A full scan in progress finishes with the configuration it started with.
//!
//! A stored set that cannot be loaded (its index would pass `limits.memory_limit`, or the file
//! is damaged) stops an agent that is not enrolled, as a missing set does; an enrolled agent
//! logs it, matches nothing, says so in `status.json` (`set_error`), and keeps its link and spool
//! running, so the collector's next set that loads replaces it without anyone restarting it.
//!
//! The daemon is otherwise crash-only: a kill loses at most the last few seconds of sighting
//! counts.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use picket_proto::wire::{self, Heartbeat};
use picket_proto::{Freshness, Limits, Part, Trusted};

use crate::budget::{Governor, ThreadClock};
use crate::cache::HashCache;
use crate::config::Config;
use crate::digest::Digests;
use crate::host::{self, net, Poller, ProcessInfo};
use crate::index::Hit;
use crate::loaded::LoadedSet;
use crate::redact::Redactor;
use crate::scan::{self, Report, Scanner, Stats};
use crate::sightings::{Observed, Seen, Sightings};
use crate::spool::Spool;
use crate::status::{self, CollectorStatus, ScanStatus, SetStatus, SpoolStatus, StatusReport};
use crate::store::{write_atomically, SET_FILE};
use crate::watch::{self, WatchEvent, Watcher};
use crate::AgentError;

pub use crate::status::LinkStatus;

/// The sightings file's name in the state directory.
pub const SIGHTINGS_FILE: &str = "sightings.pkt";
/// The hash cache's name in the state directory.
pub const CACHE_FILE: &str = crate::cache::CACHE_FILE;
const SIGHTINGS_CAP: usize = 256 << 20;
/// How often the state directory is looked at for a new set.
const SET_CHECK: Duration = Duration::from_secs(2);
/// The main thread's longest sleep: how soon it sees a signal or a set the link installed.
const TICK: Duration = Duration::from_millis(200);
/// New sightings found within this long of a queued one wait for the next tick, so a burst
/// becomes a few batches rather than one per sighting.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// `status.json` is rewritten at least this often, and whenever it changes.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How often the redactor reads the host's accounts, home directories and names again.
const REDACTOR_REFRESH: Duration = Duration::from_secs(60);
/// How long a stop waits for the file and link threads before it returns anyway.
const STOP_GRACE: Duration = Duration::from_millis(1200);
/// The kernel's unit for times in `/proc/self/stat` (`USER_HZ`), 100 on every Linux
/// architecture Picket targets.
const USER_HZ: u64 = 100;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Where sightings go: the table, its file, the output stream, and the reports for the spool.
struct Recorder {
    table: Sightings,
    dir: PathBuf,
    out: Box<dyn Write + Send>,
    dirty_since: Option<Instant>,
    redactor: Redactor,
    /// When `redactor` read the host's accounts, home directories and names.
    redactor_made: Instant,
    report_interval: Duration,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<tokio::sync::Notify>,
    /// Indicators with a new sighting whose report is not yet queued.
    fresh: BTreeSet<String>,
    /// Indicators whose known sightings were seen again since their last report.
    updated: BTreeSet<String>,
    last_flush: Instant,
    last_updates: Instant,
    /// The version of the set that made the last sighting.
    set_version: u64,
}

impl Recorder {
    fn record(&mut self, set: &LoadedSet, hit: &Hit, observed: Observed, detail: &str) {
        let ind = match set.indicator(hit.record) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("record at {} unreadable: {e}", hit.record);
                return;
            }
        };
        let what = hit.what.reported_kind();
        self.set_version = set.version;
        let seen = self.table.observe(&ind.id, what, observed.clone(), unix_now());
        if seen == Seen::New {
            // Stored before it is announced: whoever reads the line can rely on the record.
            self.save();
            let (kind, value) = match &observed {
                Observed::File(p) => ("file", p.as_str()),
                Observed::Process(p) => ("process", p.as_str()),
                Observed::Connection(a) => ("connection", a.as_str()),
            };
            let line = serde_json::json!({
                "event": "sighting",
                "indicator": ind.id,
                "what": what,
                "observed": kind,
                "value": value,
                "detail": detail,
                "severity": ind.meta.severity.to_string(),
                "tlp": ind.meta.tlp.to_string(),
                "set_version": set.version,
            });
            let _ = writeln!(self.out, "{line}");
            let _ = self.out.flush();
            self.fresh.insert(ind.id);
            if self.last_flush.elapsed() >= FLUSH_EVERY {
                self.flush(false);
            }
        } else {
            self.dirty_since.get_or_insert_with(Instant::now);
            self.updated.insert(ind.id);
        }
    }

    /// Queues the reports of new sightings, and of updated ones when `report_interval` has
    /// passed (or `all`): one pass over the table, the reports of every indicator concerned.
    fn flush(&mut self, all: bool) {
        let updates_due = all || self.last_updates.elapsed() >= self.report_interval;
        let updates = updates_due && !self.updated.is_empty();
        if self.fresh.is_empty() && !updates {
            return;
        }
        let mut wanted = std::mem::take(&mut self.fresh);
        if updates_due {
            wanted.append(&mut self.updated);
            self.last_updates = Instant::now();
        } else {
            // Their reports go now with the new ones: the totals are the same.
            self.updated.retain(|i| !wanted.contains(i));
        }
        self.last_flush = Instant::now();
        if self.redactor_made.elapsed() >= REDACTOR_REFRESH {
            // Users who logged in (and got a home directory) since are redacted too.
            self.redactor = crate::host::accounts::redactor(self.redactor.mode());
            self.redactor_made = Instant::now();
        }
        let reports = self.redactor.outbound(
            self.table.iter().filter(|s| wanted.contains(&s.indicator)),
            self.set_version,
        );
        if reports.is_empty() {
            return;
        }
        let pushed = lock(&self.spool).push(reports);
        match pushed {
            Ok(()) => self.wake.notify_one(),
            Err(e) => {
                tracing::warn!("queueing sightings for the collector: {e}");
                // Tried again with the next updates.
                self.updated.append(&mut wanted);
            }
        }
    }

    fn save(&mut self) {
        match write_atomically(&self.dir, SIGHTINGS_FILE, &self.table.encode()) {
            Ok(()) => self.dirty_since = None,
            Err(e) => tracing::warn!("saving sightings: {e}"),
        }
    }

    fn save_if_stale(&mut self) {
        if self
            .dirty_since
            .is_some_and(|t| t.elapsed() > Duration::from_secs(30))
        {
            self.save();
        }
    }
}

/// Loads the sightings table kept in `dir`; a damaged file is set aside, never fatal.
pub fn load_sightings(dir: &Path, max: usize) -> Sightings {
    let path = dir.join(SIGHTINGS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Sightings::decode(&bytes, max, SIGHTINGS_CAP).unwrap_or_else(|e| {
            tracing::warn!("{}: {e}; starting a new table", path.display());
            Sightings::new(max)
        }),
        Err(_) => Sightings::new(max),
    }
}

/// The set in force, as status and heartbeats describe it.
#[derive(Debug, Clone)]
struct SetInfo {
    channel: String,
    version: u64,
    created: i64,
    /// The earliest expiry among root, manifest and timestamp, and which one it is.
    expires: i64,
    expiring: Part,
    /// The newest `created` verified: the agent's clock never goes below it.
    floor: i64,
}

impl SetInfo {
    fn of(trusted: &Trusted) -> SetInfo {
        let (expiring, expires) = match trusted.freshness(i64::MIN) {
            Freshness::Fresh { until } => {
                // `freshness` names the part only once it expired: ask at its expiry.
                match trusted.freshness(until) {
                    Freshness::Stale { what, .. } => (what, until),
                    Freshness::Fresh { .. } => (Part::Timestamp, until),
                }
            }
            Freshness::Stale { what, expired_at } => (what, expired_at),
        };
        SetInfo {
            channel: trusted.manifest().channel.clone(),
            version: trusted.manifest().version,
            created: trusted.manifest().created,
            expires,
            expiring,
            floor: trusted.effective_now(i64::MIN),
        }
    }

    fn fresh(&self, wall: i64) -> bool {
        wall.max(self.floor) < self.expires
    }
}

/// The last complete full scan.
#[derive(Debug, Clone, Copy)]
struct LastScan {
    finished: i64,
    files: u64,
    hashed: u64,
    millis: u64,
}

struct Shared {
    cfg: RwLock<Arc<Config>>,
    /// Bumped at each reload, so the file thread knows to look.
    cfg_version: AtomicU64,
    config_hash: Mutex<[u8; 32]>,
    /// `None` only for an enrolled agent whose first set has not arrived yet, or whose stored
    /// set could not be loaded at start (`set_error` says why).
    set: RwLock<Option<Arc<LoadedSet>>>,
    set_info: Mutex<Option<SetInfo>>,
    /// Why the stored set is not the one in force (it could not be loaded), until one is.
    set_error: Mutex<Option<String>>,
    /// `limits.memory_limit` in force, shared with the link so it refuses sets over it.
    memory_limit: Arc<AtomicU64>,
    cache: Mutex<HashCache>,
    recorder: Mutex<Recorder>,
    set_changed: AtomicBool,
    stop: Arc<AtomicBool>,
    last_scan: Mutex<Option<LastScan>>,
    spool: Arc<Mutex<Spool>>,
    link: Arc<Mutex<LinkStatus>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks is a bug already reported; the data (a cache, a
    // table of sightings) stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn current(shared: &Shared) -> Option<Arc<LoadedSet>> {
    shared.set.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn config(shared: &Shared) -> Arc<Config> {
    shared.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The daemon's health, for the link's heartbeats.
#[derive(Clone)]
pub struct Health {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

impl Health {
    /// A heartbeat from the daemon's current state: versions, the config's hash, the last full
    /// scan, this process's CPU time and resident memory, and the spool.
    pub fn heartbeat(&self) -> Heartbeat {
        let s = &self.shared;
        let set = lock(&s.set_info).clone();
        let channel = match (&set, &config(s).collector) {
            (Some(i), _) => i.channel.clone(),
            (None, Some(c)) => c.channel.clone(),
            (None, None) => String::new(),
        };
        let scan = match *lock(&s.last_scan) {
            Some(l) => wire::ScanStats {
                files: l.files,
                hashed: l.hashed,
                finished: Some(l.finished),
                millis: l.millis,
            },
            None => wire::ScanStats::default(),
        };
        let (spool_depth, spool_dropped, epoch, last_seq) = {
            let sp = lock(&s.spool);
            (
                sp.pending_batches() as u64,
                sp.dropped(),
                sp.epoch(),
                sp.last_seq(),
            )
        };
        let (cpu_millis, rss_bytes) = process_usage();
        Heartbeat {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            channel,
            set_version: set.as_ref().map(|i| i.version),
            set_created: set.as_ref().map(|i| i.created),
            config_hash: *lock(&s.config_hash),
            scan,
            cpu_millis,
            rss_bytes,
            spool_depth,
            spool_dropped,
            epoch,
            last_seq,
        }
    }
}

/// CPU time used by this process (user and system, all threads, in milliseconds) and its
/// resident memory (bytes), from `/proc/self`; zero where it cannot be read.
fn process_usage() -> (u64, u64) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat_cpu_millis(&t))
        .unwrap_or(0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| parse_status_rss(&t))
        .unwrap_or(0);
    (cpu, rss)
}

/// `utime + stime` of a `/proc/PID/stat` line, in milliseconds. The command name (field 2) is
/// in parentheses and may hold spaces and parentheses itself, so fields are counted after its
/// last `)`.
fn parse_stat_cpu_millis(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime.saturating_add(stime).saturating_mul(1000) / USER_HZ)
}

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
fn parse_status_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => Some(n.saturating_mul(1024)),
        _ => None,
    }
}

/// Runs the daemon until SIGTERM or SIGINT, then stops cleanly and returns `Ok(())`. New
/// sightings go to `out`, one JSON object a line. `config_path` is the file `cfg` came from:
/// SIGHUP re-reads it, and heartbeats carry its hash.
pub fn run(cfg: Config, config_path: &Path, out: Box<dyn Write + Send>) -> Result<(), AgentError> {
    let limits = Limits::default();
    let dir = cfg.state_dir.clone();
    // Signals first, so a stop asked for during a long start is not lost.
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let signal_error = |e: io::Error| {
        AgentError::io(config_path)(io::Error::other(format!("installing the signal handlers: {e}")))
    };
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while stopping exits at once (status 1).
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone()).map_err(signal_error)?;
        signal_hook::flag::register(sig, stop.clone()).map_err(signal_error)?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone()).map_err(signal_error)?;
    let config_hash = std::fs::read(config_path)
        .map(|b| picket_proto::sha256(&b))
        .unwrap_or([0; 32]);

    // One daemon per state directory: the second would fight the first over the cache and the
    // sightings file. The lock lives as long as this function.
    let lock_path = dir.join("daemon.lock");
    let daemon_lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(AgentError::io(&lock_path))?;
    if let Err(std::fs::TryLockError::WouldBlock) = daemon_lock.try_lock() {
        return Err(AgentError::Locked { path: dir });
    }
    // A daemon killed while saving leaves a temporary file behind; with the lock held, any such
    // file is stale.
    for name in [SIGHTINGS_FILE, CACHE_FILE, status::STATUS_FILE] {
        crate::store::remove_stale_temps(&dir, name)?;
    }
    let mut set_error = None;
    let (set, set_info) = match LoadedSet::from_state(&dir, &limits, cfg.memory_limit) {
        Ok(Some((set, trusted))) => {
            report_loaded(&set, &trusted);
            let info = SetInfo::of(&trusted);
            // `Trusted` owns a copy of the whole snapshot (96 MiB for a million SHA-256
            // indicators); the index and the open state file are all matching needs.
            drop(trusted);
            (Some(Arc::new(set)), Some(info))
        }
        // Enrolled: the link brings the first set.
        Ok(None) if cfg.collector.is_some() => {
            tracing::info!(
                "no set installed in {} yet; waiting for one from the collector",
                dir.display()
            );
            (None, None)
        }
        Ok(None) => return Err(AgentError::NoSet { path: dir }),
        // Enrolled: a stored set that cannot be loaded (over the memory limit, damaged) must
        // not stop the agent, or the link could never bring the set that replaces it.
        Err(e) if cfg.collector.is_some() => {
            let message = format!("the installed set is not in force: {e}");
            tracing::error!("{message}; nothing is matched until the collector sends a set that loads");
            set_error = Some(message);
            (None, None)
        }
        Err(e) => return Err(e),
    };
    let (cache, discarded) = HashCache::load(&dir.join(CACHE_FILE), cfg.cache_entries)?;
    if let Some(d) = discarded {
        tracing::warn!("hash cache {} discarded: {}", d.path.display(), d.reason);
    }
    let spool = Arc::new(Mutex::new(Spool::open(&dir, cfg.sightings.spool_batches)?));
    let wake = Arc::new(tokio::sync::Notify::new());
    let link = Arc::new(Mutex::new(LinkStatus {
        collector: cfg.collector.as_ref().map(|c| c.address.clone()),
        ..LinkStatus::default()
    }));
    let set_version = set.as_ref().map_or(0, |s| s.version);
    let memory_limit = Arc::new(AtomicU64::new(cfg.memory_limit));
    let shared = Arc::new(Shared {
        set: RwLock::new(set),
        set_info: Mutex::new(set_info),
        set_error: Mutex::new(set_error),
        memory_limit: memory_limit.clone(),
        cache: Mutex::new(cache),
        recorder: Mutex::new(Recorder {
            table: load_sightings(&dir, cfg.max_sightings),
            dir: dir.clone(),
            out,
            dirty_since: None,
            redactor: crate::host::accounts::redactor(cfg.sightings.location),
            redactor_made: Instant::now(),
            report_interval: cfg.sightings.report_interval,
            spool: spool.clone(),
            wake: wake.clone(),
            fresh: BTreeSet::new(),
            updated: BTreeSet::new(),
            last_flush: Instant::now() - FLUSH_EVERY,
            last_updates: Instant::now(),
            set_version,
        }),
        set_changed: AtomicBool::new(false),
        stop: stop.clone(),
        last_scan: Mutex::new(None),
        spool,
        link,
        cfg_version: AtomicU64::new(0),
        config_hash: Mutex::new(config_hash),
        cfg: RwLock::new(Arc::new(cfg)),
    });
    let files = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("picket-files".into())
            .spawn(move || file_thread(&shared))
            .map_err(AgentError::io(&dir))?
    };
    let set_installed = Arc::new(AtomicBool::new(false));
    let link_thread = match config(&shared).collector.clone() {
        Some(collector) => {
            let health = Health {
                shared: shared.clone(),
            };
            let ctx = crate::link::LinkContext {
                config: collector,
                state_dir: dir.clone(),
                spool: shared.spool.clone(),
                wake: wake.clone(),
                heartbeat: Arc::new(move || health.heartbeat()),
                status: shared.link.clone(),
                stop: stop.clone(),
                set_installed: set_installed.clone(),
                memory_limit,
            };
            Some(crate::link::spawn(ctx).map_err(AgentError::io(&dir))?)
        }
        None => None,
    };

    let mut metrics = crate::metrics::Exporter::start(&config(&shared).metrics, &dir)?;
    let mut poller = Poller::new();
    let mut next_procs = Instant::now();
    let mut next_conns = Instant::now();
    let mut next_set_check = Instant::now() + SET_CHECK;
    let mut set_identity = state_identity(&dir);
    let mut buf = vec![0u8; 1 << 20];
    let mut last_status: Option<(StatusReport, Instant)> = None;
    while !stop.load(Ordering::SeqCst) {
        if reload.swap(false, Ordering::SeqCst) {
            reload_config(&shared, config_path);
        }
        let cfg = config(&shared);
        let now = Instant::now();
        if let Some(every) = cfg.process_poll {
            if now >= next_procs {
                let procs = poller.poll();
                check_processes(&shared, &procs, &mut buf);
                next_procs = now + every;
            }
        }
        if let Some(every) = cfg.connection_poll {
            if now >= next_conns {
                check_connections(&shared);
                next_conns = now + every;
            }
        }
        if set_installed.swap(false, Ordering::SeqCst) {
            next_set_check = now;
        }
        if now >= next_set_check {
            let id = state_identity(&dir);
            if id != set_identity {
                set_identity = id;
                match LoadedSet::from_state(&dir, &limits, cfg.memory_limit) {
                    Ok(Some((set, trusted))) => {
                        report_loaded(&set, &trusted);
                        *lock(&shared.set_info) = Some(SetInfo::of(&trusted));
                        *lock(&shared.set_error) = None;
                        drop(trusted);
                        *shared.set.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(set));
                        shared.set_changed.store(true, Ordering::SeqCst);
                        // Processes already running are checked against the new set too.
                        poller = Poller::new();
                        next_procs = now;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let message = if current(&shared).is_some() {
                            format!("the new set was not loaded, the old one stays: {e}")
                        } else {
                            format!("the installed set is not in force: {e}")
                        };
                        tracing::error!("{message}");
                        *lock(&shared.set_error) = Some(message);
                    }
                }
            }
            lock(&shared.recorder).save_if_stale();
            next_set_check = now + SET_CHECK;
        }
        lock(&shared.recorder).flush(false);
        write_status(&shared, &mut last_status, false);
        metrics.tick();
        let _held = &daemon_lock;
        if files.is_finished() {
            return Err(AgentError::io(&dir)(io::Error::other(
                "the file scanning thread stopped",
            )));
        }
        let next = [
            Some(next_set_check),
            cfg.process_poll.map(|_| next_procs),
            cfg.connection_poll.map(|_| next_conns),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(next_set_check);
        std::thread::sleep(next.saturating_duration_since(Instant::now()).min(TICK));
    }
    shut_down(&shared, &wake, files, link_thread, &mut last_status);
    Ok(())
}

/// The clean stop: reports queued, table and cache saved, link stopped, a last status written.
fn shut_down(
    shared: &Shared,
    wake: &tokio::sync::Notify,
    files: std::thread::JoinHandle<()>,
    link: Option<std::thread::JoinHandle<()>>,
    last_status: &mut Option<(StatusReport, Instant)>,
) {
    let deadline = Instant::now() + STOP_GRACE;
    tracing::info!("stopping");
    shared.stop.store(true, Ordering::SeqCst);
    // The link may be waiting for a batch: let it see the stop.
    wake.notify_one();
    {
        let mut rec = lock(&shared.recorder);
        rec.flush(true);
        rec.save();
    }
    {
        let cfg = config(shared);
        let mut cache = lock(&shared.cache);
        if cache.is_dirty() {
            if let Err(e) = cache.save(&cfg.state_dir.join(CACHE_FILE)) {
                tracing::warn!("saving the hash cache: {e}");
            }
        }
    }
    // The file thread stops between two files or events; a full scan in progress does not wait
    // for (its work so far is in the cache just saved).
    for t in [Some(files), link].into_iter().flatten() {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
    {
        let mut l = lock(&shared.link);
        l.connected = false;
    }
    write_status(shared, last_status, true);
    tracing::info!("stopped");
}

/// SIGHUP: re-reads the configuration file; a bad one is refused and the one in force stays.
fn reload_config(shared: &Shared, path: &Path) {
    let origin = path.display().to_string();
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{origin}: {e}; the configuration in force stays");
            return;
        }
    };
    let parsed = std::str::from_utf8(&text)
        .map_err(|e| format!("{origin}: not UTF-8 text: {e}"))
        .and_then(|t| Config::parse(t, &origin));
    let mut new = match parsed {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}; the configuration in force stays");
            return;
        }
    };
    let old = config(shared);
    let mut kept = Vec::new();
    if new.state_dir != old.state_dir {
        kept.push("state_dir");
        new.state_dir = old.state_dir.clone();
    }
    if new.max_sightings != old.max_sightings {
        kept.push("limits.max_sightings");
        new.max_sightings = old.max_sightings;
    }
    if new.cache_entries != old.cache_entries {
        kept.push("limits.cache_entries");
        new.cache_entries = old.cache_entries;
    }
    if new.collector != old.collector {
        kept.push("[collector]");
        new.collector = old.collector.clone();
    }
    if new.metrics != old.metrics {
        kept.push("[metrics]");
        new.metrics = old.metrics.clone();
    }
    for key in kept {
        tracing::warn!("{origin}: {key} changes only at the next restart; the value in force stays");
    }
    {
        // Accounts added since are redacted from now on too.
        let mut rec = lock(&shared.recorder);
        rec.redactor = crate::host::accounts::redactor(new.sightings.location);
        rec.redactor_made = Instant::now();
        rec.report_interval = new.sightings.report_interval;
    }
    lock(&shared.spool).set_max_batches(new.sightings.spool_batches);
    // The link refuses sets over the new ceiling from now on; the set in force stays.
    shared.memory_limit.store(new.memory_limit, Ordering::SeqCst);
    *lock(&shared.config_hash) = picket_proto::sha256(&text);
    *shared.cfg.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    shared.cfg_version.fetch_add(1, Ordering::SeqCst);
    tracing::info!("configuration reloaded from {origin}");
}

/// What `status.json` says now.
fn status_report(shared: &Shared, stopped: bool) -> StatusReport {
    let now = unix_now();
    let set = lock(&shared.set_info).clone();
    let sightings = lock(&shared.recorder).table.len() as u64;
    let spool = {
        let sp = lock(&shared.spool);
        SpoolStatus {
            depth: sp.pending_batches() as u64,
            dropped: sp.dropped(),
            epoch: format!("{:016x}", sp.epoch()),
            last_seq: sp.last_seq(),
        }
    };
    let link = lock(&shared.link).clone();
    StatusReport {
        written: now,
        pid: std::process::id(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        stopped,
        set: set.map(|set| SetStatus {
            fresh: set.fresh(now),
            channel: set.channel,
            version: set.version,
            created: set.created,
            expires: set.expires,
            expiring: set.expiring.to_string(),
        }),
        last_scan: lock(&shared.last_scan).map(|l| ScanStatus {
            finished: l.finished,
            files: l.files,
            hashed: l.hashed,
            millis: l.millis,
        }),
        sightings,
        spool,
        set_error: lock(&shared.set_error).clone(),
        collector: CollectorStatus {
            enrolled: config(shared).collector.is_some(),
            address: link.collector,
            connected: link.connected,
            last_contact: link.last_contact,
            last_error: link.last_error,
        },
    }
}

/// Writes `status.json` when it changed or `STATUS_EVERY` passed (or `stopped`, always).
fn write_status(shared: &Shared, last: &mut Option<(StatusReport, Instant)>, stopped: bool) {
    let report = status_report(shared, stopped);
    crate::metrics::status(&report);
    if let Some((prev, at)) = last {
        let same = StatusReport {
            written: prev.written,
            ..report.clone()
        } == *prev;
        if same && at.elapsed() < STATUS_EVERY && !stopped {
            return;
        }
    }
    if let Err(e) = status::write(&config(shared).state_dir, &report) {
        tracing::warn!("writing the status file: {e}");
    }
    *last = Some((report, Instant::now()));
}

fn state_identity(dir: &Path) -> Option<(u64, u64, i64, i64)> {
    std::fs::metadata(dir.join(SET_FILE))
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()))
}

fn report_loaded(set: &LoadedSet, trusted: &Trusted) {
    tracing::info!(
        version = set.version,
        channel = %set.channel,
        indicators = set.records_total,
        unknown_kinds = set.unknown_kinds,
        index_bytes = set.index().heap_bytes(),
        "set"
    );
    for r in set.index().rejected() {
        tracing::warn!("indicator at record {} not matched: {:?}", r.record, r.reason);
    }
    if let Freshness::Stale { what, expired_at } = trusted.freshness(unix_now()) {
        tracing::warn!(
            "set version {} is stale ({what} expired at {}); matching with it until a fresh one arrives",
            set.version,
            picket_proto::rfc3339(expired_at)
        );
    }
}

/// Records file hits and paces the walk to the CPU budget.
struct FileReport<'a> {
    shared: &'a Shared,
    set: &'a LoadedSet,
    governor: Option<(Governor, ThreadClock, Instant)>,
    last_pace: (u64, u64),
}

impl Report for FileReport<'_> {
    fn found(&mut self, path: &Path, hits: &[Hit], _digests: &Digests) {
        let mut rec = lock(&self.shared.recorder);
        for h in hits {
            rec.record(
                self.set,
                h,
                Observed::File(path.to_string_lossy().into_owned()),
                "",
            );
        }
    }

    fn error(&mut self, path: &Path, err: &io::Error) {
        if err.kind() != io::ErrorKind::NotFound {
            tracing::info!("{}: {err}", path.display());
        }
    }

    fn tick(&mut self, stats: &Stats) {
        // Pace every 16 files or 4 MiB: often enough to hold the budget, rarely enough that
        // reading the thread's CPU clock costs nothing.
        if stats.files < self.last_pace.0 + 16 && stats.bytes < self.last_pace.1 + (4 << 20) {
            return;
        }
        self.last_pace = (stats.files, stats.bytes);
        if let Some((g, clock, start)) = self.governor.as_mut() {
            if let Ok(cpu) = clock.cpu_ns() {
                let sleep = g.pace(cpu, start.elapsed().as_nanos() as u64);
                if !sleep.is_zero() {
                    std::thread::sleep(sleep);
                }
            }
        }
    }
}

/// What the file thread derives from the configuration.
struct FileSetup {
    cfg: Arc<Config>,
    opts: scan::Options,
    watcher: Option<(Watcher, std::sync::mpsc::Receiver<WatchEvent>)>,
}

impl FileSetup {
    fn new(cfg: Arc<Config>) -> FileSetup {
        let opts = scan::Options {
            max_file_size: cfg.max_file_size,
            one_filesystem: !cfg.cross_filesystems,
            exclude: cfg.exclude.clone(),
        };
        let watcher = if cfg.watch && !cfg.roots.is_empty() {
            let wopts = watch::Options {
                exclude: cfg.exclude.clone(),
                one_filesystem: !cfg.cross_filesystems,
                ..watch::Options::default()
            };
            // A root that does not exist (yet) is left to the rescans, and the others are
            // still watched: one missing root must not turn file events off for all of them.
            let (present, missing): (Vec<PathBuf>, Vec<PathBuf>) =
                cfg.roots.iter().cloned().partition(|r| r.exists());
            for root in &missing {
                tracing::warn!(
                    "scan root {} does not exist: not watched (rescans look for it; SIGHUP to watch it once it exists)",
                    root.display()
                );
            }
            match Watcher::start(&present, &wopts) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!("not watching files ({e}); rescans only");
                    None
                }
            }
        } else {
            None
        };
        FileSetup { cfg, opts, watcher }
    }

    /// Whether `other` scans differently (so a full scan is due).
    fn scans_like(&self, other: &Config) -> bool {
        let c = &self.cfg;
        c.roots == other.roots
            && c.exclude == other.exclude
            && c.max_file_size == other.max_file_size
            && c.cross_filesystems == other.cross_filesystems
            && c.watch == other.watch
    }
}

fn file_thread(shared: &Shared) {
    match host::priority::lower_current_thread() {
        Ok(l) => tracing::info!("file thread at low priority: {l:?}"),
        Err(e) => tracing::warn!("could not lower the file thread's priority: {e}"),
    }
    let governor = |budget: f64| {
        let mut clock = ThreadClock::open().ok()?;
        let start = Instant::now();
        let cpu = clock.cpu_ns().ok()?;
        Some((
            Governor::new(budget, Duration::from_millis(100), cpu, 0),
            clock,
            start,
        ))
    };
    // An enrolled agent may start before its first set arrives: nothing to match until then,
    // and a set never goes away once there.
    while current(shared).is_none() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut applied = shared.cfg_version.load(Ordering::SeqCst);
    let mut setup = FileSetup::new(config(shared));
    let mut full_scan_due = Instant::now();
    let mut last_full_scan = Instant::now();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let version = shared.cfg_version.load(Ordering::SeqCst);
        if version != applied {
            applied = version;
            let cfg = config(shared);
            if !setup.scans_like(&cfg) {
                // The old watches go before the new ones are made.
                setup.watcher = None;
                setup = FileSetup::new(cfg);
                tracing::info!(
                    "scanning {} root(s) under the reloaded configuration",
                    setup.cfg.roots.len()
                );
                full_scan_due = Instant::now();
            } else {
                if cfg.rescan_interval != setup.cfg.rescan_interval {
                    full_scan_due = last_full_scan + cfg.rescan_interval;
                }
                setup.cfg = cfg;
            }
        }
        if shared.set_changed.swap(false, Ordering::SeqCst) {
            full_scan_due = Instant::now();
        }
        let cfg = setup.cfg.clone();
        let Some(set) = current(shared) else { return };
        if Instant::now() >= full_scan_due {
            let mut report = FileReport {
                shared,
                set: &set,
                governor: governor(cfg.cpu_budget),
                last_pace: (0, 0),
            };
            lock(&shared.cache).begin_generation();
            let started = Instant::now();
            let mut scanner = Scanner::new(set.index(), &setup.opts, Some(&shared.cache));
            scanner.scan(&cfg.roots, &mut report);
            let stats = scanner.stats.clone();
            let mut cache = lock(&shared.cache);
            let swept = cache.sweep();
            if let Err(e) = cache.save(&cfg.state_dir.join(CACHE_FILE)) {
                tracing::warn!("saving the hash cache: {e}");
            }
            drop(cache);
            let took = started.elapsed();
            *lock(&shared.last_scan) = Some(LastScan {
                finished: unix_now(),
                files: stats.files,
                hashed: stats.hashed,
                millis: took.as_millis() as u64,
            });
            crate::metrics::scan_done(took, &stats);
            tracing::info!(
                set_version = set.version,
                files = stats.files,
                hashed = stats.hashed,
                bytes = stats.bytes,
                cached = stats.cached,
                skipped = stats.skipped,
                errors = stats.errors,
                swept,
                seconds = %format_args!("{:.1}", took.as_secs_f64()),
                "scan done"
            );
            last_full_scan = Instant::now();
            full_scan_due = last_full_scan + cfg.rescan_interval;
        }
        let wait = full_scan_due
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(500));
        match &setup.watcher {
            Some((_, events)) => match events.recv_timeout(wait) {
                Ok(WatchEvent::Changed(path)) => {
                    let set = current(shared).unwrap_or(set);
                    let mut report = FileReport {
                        shared,
                        set: &set,
                        governor: None,
                        last_pace: (0, 0),
                    };
                    let mut scanner = Scanner::new(set.index(), &setup.opts, Some(&shared.cache));
                    scanner.check_path(&path, &mut report);
                    crate::metrics::checked(&scanner.stats);
                }
                Ok(WatchEvent::Rescan(reason)) => {
                    tracing::info!("file events lost ({reason:?}); rescanning");
                    full_scan_due = Instant::now();
                }
                Ok(WatchEvent::Unwatched { dir, error }) => {
                    tracing::warn!("{} not watched ({error}); rescans cover it", dir.display());
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    tracing::warn!("the file watcher stopped; rescans only");
                    setup.watcher = None;
                }
            },
            None => std::thread::sleep(wait),
        }
    }
}

/// Matches processes against the set: name, executable path, command line, and the
/// executable's digests (through the hash cache) when the set holds process hashes.
fn check_processes(shared_set: &Shared, procs: &[ProcessInfo], buf: &mut [u8]) {
    let Some(set) = current(shared_set) else { return };
    let kinds = set.index().process_kinds();
    let mut hits = Vec::new();
    for p in procs {
        let mut digests = None;
        if !kinds.is_empty() {
            if let Ok(mut exe) = host::open_exe(p) {
                let id = exe.identity();
                let cached = lock(&shared_set.cache).lookup(&id, kinds);
                digests = match cached {
                    Some(d) => Some(d),
                    None => {
                        let started = SystemTime::now();
                        match exe.hash(kinds, buf) {
                            Ok(Some(d)) => {
                                lock(&shared_set.cache).put(id, &d, started);
                                Some(d)
                            }
                            _ => None,
                        }
                    }
                };
            }
        }
        hits.clear();
        set.match_process(p, digests.as_ref(), &mut hits);
        if hits.is_empty() {
            continue;
        }
        let observed = p
            .exe
            .as_ref()
            .map_or_else(|| p.name.clone(), |e| e.to_string_lossy().into_owned());
        let detail = format!("pid {}", p.pid);
        let mut rec = lock(&shared_set.recorder);
        for h in &hits {
            rec.record(&set, h, Observed::Process(observed.clone()), &detail);
        }
    }
}

fn check_connections(shared: &Shared) {
    let Some(set) = current(shared) else { return };
    let sockets = match net::read_sockets() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("reading /proc/net: {e}");
            return;
        }
    };
    let mut hits = Vec::new();
    let mut matched: Vec<(IpAddr, u64, Vec<Hit>)> = Vec::new();
    for s in &sockets {
        hits.clear();
        set.index().match_addr(s.remote.ip(), &mut hits);
        if !hits.is_empty() {
            matched.push((s.remote.ip(), s.inode, hits.clone()));
        }
    }
    if matched.is_empty() {
        return;
    }
    let inodes: HashSet<u64> = matched.iter().map(|m| m.1).filter(|&i| i != 0).collect();
    let owners = net::socket_owners(&inodes);
    let mut rec = lock(&shared.recorder);
    for (ip, inode, hits) in matched {
        let detail = match owners.get(&inode) {
            Some(pids) => format!("pids {pids:?}"),
            None => String::new(),
        };
        for h in &hits {
            rec.record(&set, h, Observed::Connection(ip.to_string()), &detail);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        // A real /proc/PID/stat line, with a hostile command name; utime 250 and stime 50
        // ticks are 3 seconds.
        let line = "4242 (evil) (x y) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 50 0 0 39 19 6 0 \
                    12345 1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        assert_eq!(parse_stat_cpu_millis(line), Some(3_000));
        assert_eq!(parse_stat_cpu_millis("4242 (x) S 1"), None);
        assert_eq!(parse_stat_cpu_millis("no parenthesis"), None);
    }

    #[test]
    fn resident_memory_is_read_from_status() {
        let text = "Name:\tpicket-agent\nVmPeak:\t  900000 kB\nVmRSS:\t   20480 kB\nThreads:\t4\n";
        assert_eq!(parse_status_rss(text), Some(20 << 20));
        assert_eq!(parse_status_rss("Name:\tx\n"), None);
        assert_eq!(parse_status_rss("VmRSS:\t12 pages\n"), None);
    }

    #[test]
    fn this_process_reports_cpu_time_and_memory() {
        // Burn a little CPU so the count is above zero.
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let (cpu, rss) = process_usage();
        assert!(cpu >= 10, "cpu {cpu} ms");
        assert!(rss > 1 << 20, "rss {rss}");
    }
}
