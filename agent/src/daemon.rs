//! `picket-agent run`: the daemon. It keeps the set in force compiled, scans the configured roots
//! at a low priority within the CPU budget, checks files as they are written, polls processes
//! and connections, and records sightings.
//!
//! Threads:
//! - the **file thread** (lowest CPU and I/O priority, paced by the [`Governor`]): a full scan
//!   at start, after every set change (matched against the hash cache, so unchanged files are not
//!   read again) and every `rescan_interval`; between scans, the paths the watcher reports;
//! - the **main thread**: process and connection polls on their intervals, and a look at the
//!   state directory every few seconds to pick up a newly imported set.
//!
//! Each new sighting is written at once to the sightings file (atomically) and printed on
//! stdout as one JSON object a line. The daemon is crash-only: it keeps no state that a kill
//! would lose beyond the last few seconds of sighting counts, and has no shutdown sequence.

use std::collections::HashSet;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use picket_proto::{Freshness, Limits};

use crate::budget::{Governor, ThreadClock};
use crate::cache::HashCache;
use crate::config::Config;
use crate::digest::Digests;
use crate::host::{self, net, Poller, ProcessInfo};
use crate::index::Hit;
use crate::loaded::LoadedSet;
use crate::scan::{self, Report, Scanner, Stats};
use crate::sightings::{Observed, Seen, Sightings};
use crate::store::{write_atomically, SET_FILE};
use crate::watch::{self, WatchEvent, Watcher};
use crate::AgentError;

/// The sightings file's name in the state directory.
pub const SIGHTINGS_FILE: &str = "sightings.pkt";
/// The hash cache's name in the state directory.
pub const CACHE_FILE: &str = crate::cache::CACHE_FILE;
const SIGHTINGS_CAP: usize = 256 << 20;
/// How often the state directory is looked at for a new set.
const SET_CHECK: Duration = Duration::from_secs(2);

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Where sightings go: the table, its file, and the output stream.
struct Recorder {
    table: Sightings,
    dir: PathBuf,
    out: Box<dyn Write + Send>,
    dirty_since: Option<Instant>,
}

impl Recorder {
    fn record(&mut self, set: &LoadedSet, hit: &Hit, observed: Observed, detail: &str) {
        let ind = match set.indicator(hit.record) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("picket-agent: warning: record at {} unreadable: {e}", hit.record);
                return;
            }
        };
        let what = hit.what.reported_kind();
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
        } else {
            self.dirty_since.get_or_insert_with(Instant::now);
        }
    }

    fn save(&mut self) {
        match write_atomically(&self.dir, SIGHTINGS_FILE, &self.table.encode()) {
            Ok(()) => self.dirty_since = None,
            Err(e) => eprintln!("picket-agent: warning: saving sightings: {e}"),
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
            eprintln!(
                "picket-agent: warning: {}: {e}; starting a new table",
                path.display()
            );
            Sightings::new(max)
        }),
        Err(_) => Sightings::new(max),
    }
}

struct Shared {
    cfg: Config,
    set: RwLock<Arc<LoadedSet>>,
    cache: Mutex<HashCache>,
    recorder: Mutex<Recorder>,
    set_changed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks is a bug already reported; the data (a cache, a
    // table of sightings) stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn current(shared: &Shared) -> Arc<LoadedSet> {
    shared.set.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Runs the daemon until it is killed. New sightings go to `out`, one JSON object a line.
pub fn run(cfg: Config, out: Box<dyn Write + Send>) -> Result<(), AgentError> {
    let limits = Limits::default();
    let dir = cfg.state_dir.clone();
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
    for name in [SIGHTINGS_FILE, CACHE_FILE] {
        crate::store::remove_stale_temps(&dir, name)?;
    }
    let (set, trusted) = LoadedSet::from_state(&dir, &limits, cfg.memory_limit)?
        .ok_or_else(|| AgentError::NoSet { path: dir.clone() })?;
    report_loaded(&set, &trusted);
    // `Trusted` owns a copy of the whole snapshot (96 MiB for a million SHA-256 indicators);
    // the index and the open state file are all matching needs, and this function never
    // returns, so a binding kept to the end would hold it for the daemon's lifetime.
    drop(trusted);
    let (cache, discarded) = HashCache::load(&dir.join(CACHE_FILE), cfg.cache_entries)?;
    if let Some(d) = discarded {
        eprintln!(
            "picket-agent: warning: hash cache {} discarded: {}",
            d.path.display(),
            d.reason
        );
    }
    let shared = Arc::new(Shared {
        set: RwLock::new(Arc::new(set)),
        cache: Mutex::new(cache),
        recorder: Mutex::new(Recorder {
            table: load_sightings(&dir, cfg.max_sightings),
            dir: dir.clone(),
            out,
            dirty_since: None,
        }),
        set_changed: AtomicBool::new(false),
        cfg,
    });
    let files = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("picket-files".into())
            .spawn(move || file_thread(&shared))
            .map_err(AgentError::io(&dir))?
    };
    let mut poller = Poller::new();
    let mut next_procs = Instant::now();
    let mut next_conns = Instant::now();
    let mut next_set_check = Instant::now() + SET_CHECK;
    let mut set_identity = state_identity(&dir);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let now = Instant::now();
        if let Some(every) = shared.cfg.process_poll {
            if now >= next_procs {
                let procs = poller.poll();
                check_processes(&shared, &procs, &mut buf);
                next_procs = now + every;
            }
        }
        if let Some(every) = shared.cfg.connection_poll {
            if now >= next_conns {
                check_connections(&shared);
                next_conns = now + every;
            }
        }
        if now >= next_set_check {
            let id = state_identity(&dir);
            if id != set_identity {
                set_identity = id;
                match LoadedSet::from_state(&dir, &limits, shared.cfg.memory_limit) {
                    Ok(Some((set, trusted))) => {
                        report_loaded(&set, &trusted);
                        *shared.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                        shared.set_changed.store(true, Ordering::SeqCst);
                        // Processes already running are checked against the new set too.
                        poller = Poller::new();
                        next_procs = now;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!("picket-agent: error: the new set was not loaded, the old one stays: {e}")
                    }
                }
            }
            lock(&shared.recorder).save_if_stale();
            next_set_check = now + SET_CHECK;
        }
        let _held = &daemon_lock;
        if files.is_finished() {
            return Err(AgentError::io(&dir)(io::Error::other(
                "the file scanning thread stopped",
            )));
        }
        let next = [
            Some(next_set_check),
            shared.cfg.process_poll.map(|_| next_procs),
            shared.cfg.connection_poll.map(|_| next_conns),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(next_set_check);
        std::thread::sleep(next.saturating_duration_since(Instant::now()).min(SET_CHECK));
    }
}

fn state_identity(dir: &Path) -> Option<(u64, u64, i64, i64)> {
    std::fs::metadata(dir.join(SET_FILE))
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()))
}

fn report_loaded(set: &LoadedSet, trusted: &picket_proto::Trusted) {
    eprintln!(
        "picket-agent: set version={} channel={} indicators={} unknown_kinds={} index_bytes={}",
        set.version,
        set.channel,
        set.records_total,
        set.unknown_kinds,
        set.index().heap_bytes()
    );
    for r in set.index().rejected() {
        eprintln!(
            "picket-agent: warning: indicator at record {} not matched: {:?}",
            r.record, r.reason
        );
    }
    if let Freshness::Stale { what, expired_at } = trusted.freshness(unix_now()) {
        eprintln!(
            "picket-agent: warning: set version {} is stale ({what} expired at {}); matching with it until a fresh one arrives",
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
            eprintln!("picket-agent: {}: {err}", path.display());
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

fn file_thread(shared: &Shared) {
    match host::priority::lower_current_thread() {
        Ok(l) => eprintln!("picket-agent: file thread at low priority: {l:?}"),
        Err(e) => eprintln!("picket-agent: warning: could not lower the file thread's priority: {e}"),
    }
    let cfg = &shared.cfg;
    let opts = scan::Options {
        max_file_size: cfg.max_file_size,
        one_filesystem: !cfg.cross_filesystems,
        exclude: cfg.exclude.clone(),
    };
    let governor = || {
        let mut clock = ThreadClock::open().ok()?;
        let start = Instant::now();
        let cpu = clock.cpu_ns().ok()?;
        Some((
            Governor::new(cfg.cpu_budget, Duration::from_millis(100), cpu, 0),
            clock,
            start,
        ))
    };
    let watcher = if cfg.watch && !cfg.roots.is_empty() {
        let wopts = watch::Options {
            exclude: cfg.exclude.clone(),
            one_filesystem: !cfg.cross_filesystems,
            ..watch::Options::default()
        };
        match Watcher::start(&cfg.roots, &wopts) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("picket-agent: warning: not watching files ({e}); rescans only");
                None
            }
        }
    } else {
        None
    };
    let mut full_scan_due = Instant::now();
    loop {
        if shared.set_changed.swap(false, Ordering::SeqCst) {
            full_scan_due = Instant::now();
        }
        if Instant::now() >= full_scan_due {
            let set = current(shared);
            let mut report = FileReport {
                shared,
                set: &set,
                governor: governor(),
                last_pace: (0, 0),
            };
            lock(&shared.cache).begin_generation();
            let started = Instant::now();
            let mut scanner = Scanner::new(set.index(), &opts, Some(&shared.cache));
            scanner.scan(&cfg.roots, &mut report);
            let stats = scanner.stats.clone();
            let mut cache = lock(&shared.cache);
            let swept = cache.sweep();
            if let Err(e) = cache.save(&cfg.state_dir.join(CACHE_FILE)) {
                eprintln!("picket-agent: warning: saving the hash cache: {e}");
            }
            drop(cache);
            eprintln!(
                "picket-agent: scan done set_version={} files={} hashed={} bytes={} cached={} skipped={} errors={} swept={} seconds={:.1}",
                set.version,
                stats.files,
                stats.hashed,
                stats.bytes,
                stats.cached,
                stats.skipped,
                stats.errors,
                swept,
                started.elapsed().as_secs_f64()
            );
            full_scan_due = Instant::now() + cfg.rescan_interval;
        }
        let wait = full_scan_due
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(500));
        match &watcher {
            Some((_, events)) => match events.recv_timeout(wait) {
                Ok(WatchEvent::Changed(path)) => {
                    let set = current(shared);
                    let mut report = FileReport {
                        shared,
                        set: &set,
                        governor: None,
                        last_pace: (0, 0),
                    };
                    let mut scanner = Scanner::new(set.index(), &opts, Some(&shared.cache));
                    scanner.check_path(&path, &mut report);
                }
                Ok(WatchEvent::Rescan(reason)) => {
                    eprintln!("picket-agent: file events lost ({reason:?}); rescanning");
                    full_scan_due = Instant::now();
                }
                Ok(WatchEvent::Unwatched { dir, error }) => {
                    eprintln!(
                        "picket-agent: warning: {} not watched ({error}); rescans cover it",
                        dir.display()
                    );
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    eprintln!("picket-agent: warning: the file watcher stopped; rescans only");
                    std::thread::sleep(wait);
                }
            },
            None => std::thread::sleep(wait),
        }
    }
}

/// Matches processes against the set: name, executable path, command line, and the
/// executable's digests (through the hash cache) when the set holds process hashes.
fn check_processes(shared_set: &Shared, procs: &[ProcessInfo], buf: &mut [u8]) {
    let set = current(shared_set);
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
    let set = current(shared);
    let sockets = match net::read_sockets() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("picket-agent: warning: reading /proc/net: {e}");
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
