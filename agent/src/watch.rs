//! File events: new and changed files under the scan roots within seconds, between the
//! periodic rescans that stay the source of truth.
//!
//! Two parts, the way the rest of the agent is built. [`Debouncer`] is the pure core: paths go
//! in with the time they were seen, and come out once they have been quiet for the settle time
//! (so a file being written is hashed once, when complete) or, for a file that never stops
//! changing, once the longest delay has passed since its first event. It takes the time as an
//! argument and is tested with explicit instants. [`Watcher`] is the shell: it registers
//! inotify watches through `notify`, classifies events, and delivers [`WatchEvent`]s on a
//! channel from a thread of its own.
//!
//! The shell watches each directory on its own (`notify`'s non-recursive mode) and does the
//! recursion itself, because `notify`'s recursive mode does not fit an agent:
//!
//! - it walks with `walkdir` across filesystems (a root of `/` would watch every directory of
//!   `/proc` and `/sys`), and into excluded subtrees, spending inotify watches on both;
//! - one directory that vanishes while it walks fails the whole root;
//! - it hands the creation of a directory to the handler before it watches the directory, so
//!   what `mkdir -p a/b && cp x a/b/` creates in between is never reported.
//!
//! Here a new or moved-in directory is first watched, then listed, and every file the listing
//! finds is reported: what was created before the watch is found by the listing, what comes
//! after raises an event.
//!
//! Architecture invariant: the watcher never follows a symbolic link below a root. Directories
//! are recognised by `lstat`; a link is reported as a path like any file (the scanner decides
//! what to do with it) and never watched or listed through, so no event from outside the roots
//! comes in by way of a link. A root that is itself a link is followed, as `find -H` does.
//!
//! Whenever events may have been lost, the consumer is told to rescan
//! ([`WatchEvent::Rescan`]): the kernel's queue overflowed (`notify` turns `IN_Q_OVERFLOW` into
//! an event flagged `Rescan`), `notify` reported an error, or the consumer fell behind and the
//! channel or the pending set filled. Memory stays bounded in each case. A directory that could
//! not be watched (the inotify watch limit, permissions) is reported once as
//! [`WatchEvent::Unwatched`]: changes below it are seen by periodic rescans only.
//!
//! Note that `notify` 8 registers `IN_OPEN` in every watch and has no way to leave it out, so
//! every open of a file in a watched directory, the scanner's own reads included, costs an
//! event that the shell discards. With the hash cache a rescan of an unchanged tree opens
//! nothing, which keeps a rescan from feeding an overflow that asks for another rescan.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::AgentError;

/// How to watch.
#[derive(Debug, Clone)]
pub struct Options {
    /// Paths not to report, nor to watch below: each excludes itself and everything under it
    /// (compared by whole components). Relative paths are taken from the current directory.
    pub exclude: Vec<PathBuf>,
    /// Stay on the filesystem of each root, as the scanner does.
    pub one_filesystem: bool,
    /// A path is delivered once no event has come for it for this long.
    pub settle: Duration,
    /// A path that keeps changing is delivered this long after its first event anyway.
    pub max_delay: Duration,
    /// Paths waiting to settle, at most; past that they are dropped for a rescan.
    pub max_pending: usize,
    /// Events the channel to the consumer holds; when it is full, what follows is dropped for
    /// a rescan.
    pub capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            exclude: Vec::new(),
            one_filesystem: true,
            settle: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_pending: 65_536,
            capacity: 4096,
        }
    }
}

/// What the watcher tells its consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A regular file or a symbolic link was created, written, or moved in below a root, and
    /// has been quiet for the settle time. The path is below a root as configured.
    Changed(PathBuf),
    /// Events may have been lost: scan the roots again.
    Rescan(RescanReason),
    /// A directory could not be watched; changes below it are seen by rescans only.
    Unwatched {
        /// The first directory of a walk that could not be watched, or a root that went away.
        dir: PathBuf,
        /// Why.
        error: String,
    },
}

/// Why a rescan is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RescanReason {
    /// The kernel's event queue overflowed (`fs.inotify.max_queued_events`).
    Overflow,
    /// The consumer fell behind: the channel or the pending set was full.
    Backlog,
    /// `notify` reported an error.
    Error(String),
}

/// The debouncing core: which paths are due, given when each was last seen.
#[derive(Debug, Clone)]
pub struct Debouncer {
    settle: Duration,
    max_delay: Duration,
    cap: usize,
    /// Path to (first event, last event) of its current burst.
    pending: HashMap<PathBuf, (Instant, Instant)>,
}

impl Debouncer {
    /// A debouncer that delivers a path `settle` after its last event, or `max_delay` after
    /// the first event of a burst that does not stop, holding at most `cap` paths.
    pub fn new(settle: Duration, max_delay: Duration, cap: usize) -> Debouncer {
        Debouncer {
            settle,
            max_delay,
            cap,
            pending: HashMap::new(),
        }
    }

    /// Records an event for `path` at `now`. Returns false, and records nothing, when `path`
    /// is new and `cap` paths are already pending: the caller should then rescan.
    #[must_use]
    pub fn push(&mut self, path: PathBuf, now: Instant) -> bool {
        if let Some((_, last)) = self.pending.get_mut(&path) {
            *last = (*last).max(now);
            return true;
        }
        if self.pending.len() >= self.cap {
            return false;
        }
        self.pending.insert(path, (now, now));
        true
    }

    /// Removes and returns, sorted, the paths due at `now`.
    pub fn ready(&mut self, now: Instant) -> Vec<PathBuf> {
        let (settle, max_delay) = (self.settle, self.max_delay);
        let mut out: Vec<PathBuf> = self
            .pending
            .extract_if(|_, &mut (first, last)| now >= due(first, last, settle, max_delay))
            .map(|(path, _)| path)
            .collect();
        out.sort();
        out
    }

    /// When the next path falls due, if any is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|&(first, last)| due(first, last, self.settle, self.max_delay))
            .min()
    }

    /// Paths pending.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no path is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Forgets every pending path (a rescan will cover them).
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

/// When a burst from `first` to `last` is due. A duration too long to add is never the
/// earlier of the two; if neither can be added the burst is due at once.
fn due(first: Instant, last: Instant, settle: Duration, max_delay: Duration) -> Instant {
    match (last.checked_add(settle), first.checked_add(max_delay)) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => last,
    }
}

/// A running watch over some roots. Dropping it stops the thread and removes the watches.
#[derive(Debug)]
pub struct Watcher {
    control: Sender<Raw>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

/// What the worker thread receives: `notify`'s events, and the order to stop.
#[derive(Debug)]
enum Raw {
    Notify(notify::Result<notify::Event>),
    Stop,
}

/// How long the worker waits before retrying to hand an owed rescan to a full channel.
const RETRY: Duration = Duration::from_millis(100);
/// Raw events handled between two deliveries, so that a flood does not starve delivery.
const BATCH: usize = 1024;

impl Watcher {
    /// Watches `roots` (directories, recursively; a root that is a file is watched alone) and
    /// returns the channel events come on. Every directory below the roots is watched before
    /// this returns, so anything created afterwards is reported; what existed before is the
    /// initial scan's business. Fails if a root cannot be read or watched; a directory below
    /// a root that cannot be watched is reported as [`WatchEvent::Unwatched`] instead. The
    /// channel disconnects when the watcher stops.
    pub fn start(roots: &[PathBuf], opts: &Options) -> Result<(Watcher, Receiver<WatchEvent>), AgentError> {
        let absolute = |p: &PathBuf| std::path::absolute(p).map_err(AgentError::io(p));
        let roots: Vec<PathBuf> = roots.iter().map(absolute).collect::<Result<_, _>>()?;
        let exclude: Vec<PathBuf> = opts.exclude.iter().map(absolute).collect::<Result<_, _>>()?;
        let (raw_tx, raw_rx) = mpsc::channel();
        let handler_tx = raw_tx.clone();
        let notify = RecommendedWatcher::new(
            move |event| {
                // The worker is gone only when the watcher is stopping.
                let _ = handler_tx.send(Raw::Notify(event));
            },
            notify::Config::default().with_follow_symlinks(false),
        )
        .map_err(|e| AgentError::io("inotify")(to_io(e)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut tree = Tree {
            notify,
            roots: Vec::new(),
            exclude,
            one_filesystem: opts.one_filesystem,
            stop: stop.clone(),
        };
        let (out_tx, out_rx) = mpsc::sync_channel(opts.capacity.max(1));
        for root in roots {
            // A root that is a link is followed, as the scanner does.
            let meta = fs::metadata(&root).map_err(AgentError::io(&root))?;
            tree.roots.push((root.clone(), meta.dev()));
            if !meta.is_dir() {
                tree.notify
                    .watch(&root, RecursiveMode::NonRecursive)
                    .map_err(|e| AgentError::io(&root)(to_io(e)))?;
                continue;
            }
            let walk = tree.walk(&root, meta.dev(), true, None);
            match walk.unwatched {
                Some((dir, error)) if dir == root => {
                    return Err(AgentError::io(&root)(io::Error::other(error)));
                }
                Some((dir, error)) => {
                    // The channel is empty but for at most one event per root.
                    let _ = out_tx.try_send(WatchEvent::Unwatched { dir, error });
                }
                None => {}
            }
        }
        let worker = Worker {
            tree,
            debouncer: Debouncer::new(opts.settle, opts.max_delay, opts.max_pending),
            raw: raw_rx,
            out: out_tx,
            owe_rescan: false,
            rescan_last: false,
        };
        let worker = thread::Builder::new()
            .name("picket-watch".into())
            .spawn(move || worker.run())
            .map_err(AgentError::io("picket-watch thread"))?;
        Ok((
            Watcher {
                control: raw_tx,
                stop,
                worker: Some(worker),
            },
            out_rx,
        ))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.control.send(Raw::Stop);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The watches and the rules for what is below a root.
struct Tree {
    notify: RecommendedWatcher,
    /// Each root with the device it lives on.
    roots: Vec<(PathBuf, u64)>,
    exclude: Vec<PathBuf>,
    one_filesystem: bool,
    stop: Arc<AtomicBool>,
}

/// What a walk found wrong.
#[derive(Debug, Default)]
struct Walk {
    /// The first directory that could not be watched, and why.
    unwatched: Option<(PathBuf, String)>,
    /// The pending set filled up; the walk stopped.
    full: bool,
}

impl Tree {
    fn excluded(&self, path: &Path) -> bool {
        self.exclude.iter().any(|e| path.starts_with(e))
    }

    /// The device of the innermost root `path` is below, if it is below one.
    fn root_dev(&self, path: &Path) -> Option<u64> {
        self.roots
            .iter()
            .filter(|(root, _)| path.starts_with(root))
            .max_by_key(|(root, _)| root.components().count())
            .map(|&(_, dev)| dev)
    }

    /// Watches `top` and every directory below it on device `dev` that is not excluded, each
    /// before it is listed, and pushes every regular file and link found when `push` is given.
    /// `top` is followed if it is a link only when `follow_top` (a root).
    fn walk(
        &mut self,
        top: &Path,
        dev: u64,
        follow_top: bool,
        mut push: Option<(&mut Debouncer, Instant)>,
    ) -> Walk {
        let mut out = Walk::default();
        let mut stack = vec![top.to_owned()];
        while let Some(dir) = stack.pop() {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            if let Err(e) = self.notify.watch(&dir, RecursiveMode::NonRecursive) {
                if matches!(e.kind, notify::ErrorKind::PathNotFound) {
                    continue;
                }
                if out.unwatched.is_none() {
                    out.unwatched = Some((dir.clone(), describe(&e)));
                }
            }
            // inotify follows links: a directory swapped for a link after it was classified
            // must not stay watched, nor be listed.
            let followed = follow_top && dir == top;
            if !followed && !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                let _ = self.notify.unwatch(&dir);
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if self.excluded(&path) {
                    continue;
                }
                if kind.is_dir() {
                    if !self.one_filesystem || entry.metadata().is_ok_and(|m| m.dev() == dev) {
                        stack.push(path);
                    }
                } else if kind.is_file() || kind.is_symlink() {
                    if let Some((debouncer, now)) = push.as_mut() {
                        if !debouncer.push(path, *now) {
                            out.full = true;
                            return out;
                        }
                    }
                }
            }
        }
        out
    }
}

/// The consumer is gone; the worker stops.
struct Gone;

struct Worker {
    tree: Tree,
    debouncer: Debouncer,
    raw: Receiver<Raw>,
    out: SyncSender<WatchEvent>,
    /// A rescan could not be handed over yet; until it is, changes are dropped (the rescan
    /// covers them).
    owe_rescan: bool,
    /// The last event handed over was a rescan. While the channel is full it is then still
    /// unread, and covers whatever does not fit.
    rescan_last: bool,
}

impl Worker {
    fn run(mut self) {
        // The loop stops when the consumer or the watcher goes away.
        let _ = self.run_until_gone();
    }

    fn run_until_gone(&mut self) -> Result<(), Gone> {
        loop {
            let now = Instant::now();
            let mut deadline = self.debouncer.next_deadline();
            if self.owe_rescan {
                let retry = now + RETRY;
                deadline = Some(deadline.map_or(retry, |d| d.min(retry)));
            }
            let first = match deadline {
                None => self.raw.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => self.raw.recv_timeout(d.saturating_duration_since(now)),
            };
            match first {
                Ok(Raw::Stop) | Err(RecvTimeoutError::Disconnected) => return Err(Gone),
                Ok(Raw::Notify(event)) => self.handle(event)?,
                Err(RecvTimeoutError::Timeout) => {}
            }
            for _ in 0..BATCH {
                match self.raw.try_recv() {
                    Ok(Raw::Stop) => return Err(Gone),
                    Ok(Raw::Notify(event)) => self.handle(event)?,
                    Err(_) => break,
                }
            }
            if self.tree.stop.load(Ordering::Relaxed) {
                return Err(Gone);
            }
            for path in self.debouncer.ready(Instant::now()) {
                // Classified when delivered, not when the event came: by now the file is
                // complete, renamed away, or replaced.
                if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() || m.is_symlink()) {
                    self.send(WatchEvent::Changed(path))?;
                }
            }
            if self.owe_rescan {
                self.pay_rescan()?;
            }
        }
    }

    fn handle(&mut self, event: notify::Result<notify::Event>) -> Result<(), Gone> {
        let event = match event {
            Ok(e) => e,
            Err(e) => return self.send(WatchEvent::Rescan(RescanReason::Error(describe(&e)))),
        };
        if event.need_rescan() {
            self.send(WatchEvent::Rescan(RescanReason::Overflow))?;
        }
        let gone = match event.kind {
            EventKind::Remove(_) => Some("the root was removed"),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Some("the root was moved away"),
            _ => None,
        };
        if let Some(error) = gone {
            // A root's own removal or move: no parent watch will see it come back.
            for path in &event.paths {
                if self.tree.roots.iter().any(|(root, _)| root == path) {
                    let (dir, error) = (path.clone(), error.into());
                    self.send(WatchEvent::Unwatched { dir, error })?;
                }
            }
            return Ok(());
        }
        let wanted = match event.kind {
            EventKind::Any
            | EventKind::Create(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Modify(m) => matches!(
                m,
                ModifyKind::Any
                    | ModifyKind::Data(_)
                    | ModifyKind::Other
                    | ModifyKind::Name(RenameMode::To | RenameMode::Any)
            ),
            _ => false,
        };
        if !wanted {
            return Ok(());
        }
        let now = Instant::now();
        for path in event.paths {
            self.touched(path, now)?;
        }
        Ok(())
    }

    /// Something happened to `path` at `now`: a file to deliver once settled, or a new
    /// directory to watch and list.
    fn touched(&mut self, path: PathBuf, now: Instant) -> Result<(), Gone> {
        if self.tree.excluded(&path) {
            return Ok(());
        }
        let Some(dev) = self.tree.root_dev(&path) else {
            return Ok(());
        };
        let Ok(meta) = fs::symlink_metadata(&path) else {
            // Gone already (a temporary file renamed away): its new name has its own event.
            return Ok(());
        };
        if meta.is_dir() {
            if self.tree.one_filesystem && meta.dev() != dev {
                return Ok(());
            }
            let walk = self
                .tree
                .walk(&path, dev, false, Some((&mut self.debouncer, now)));
            if let Some((dir, error)) = walk.unwatched {
                self.send(WatchEvent::Unwatched { dir, error })?;
            }
            if walk.full {
                return self.backlog();
            }
            return Ok(());
        }
        if !self.debouncer.push(path, now) {
            return self.backlog();
        }
        Ok(())
    }

    fn backlog(&mut self) -> Result<(), Gone> {
        self.debouncer.clear();
        self.send(WatchEvent::Rescan(RescanReason::Backlog))
    }

    /// Hands `event` over without ever blocking: a full channel turns into an owed rescan.
    fn send(&mut self, event: WatchEvent) -> Result<(), Gone> {
        if self.owe_rescan {
            self.pay_rescan()?;
            if self.owe_rescan {
                return Ok(());
            }
        }
        let is_rescan = matches!(event, WatchEvent::Rescan(_));
        match self.out.try_send(event) {
            Ok(()) => {
                self.rescan_last = is_rescan;
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.owe_rescan = !self.rescan_last;
                self.debouncer.clear();
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(Gone),
        }
    }

    fn pay_rescan(&mut self) -> Result<(), Gone> {
        match self.out.try_send(WatchEvent::Rescan(RescanReason::Backlog)) {
            Ok(()) => {
                self.owe_rescan = false;
                self.rescan_last = true;
                Ok(())
            }
            Err(TrySendError::Full(_)) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(Gone),
        }
    }
}

fn describe(e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => {
            "the inotify watch limit is reached (sysctl fs.inotify.max_user_watches)".into()
        }
        _ => e.to_string(),
    }
}

fn to_io(e: notify::Error) -> io::Error {
    let message = describe(&e);
    match e.kind {
        notify::ErrorKind::Io(e) => e,
        notify::ErrorKind::PathNotFound => io::Error::new(io::ErrorKind::NotFound, message),
        _ => io::Error::other(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    const SETTLE: Duration = Duration::from_millis(500);
    const MAX_DELAY: Duration = Duration::from_millis(2000);

    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// An event for a path at a time in milliseconds.
        Push(&'static str, u64),
        /// What is due at a time.
        Ready(u64, &'static [&'static str]),
        /// When the next path falls due.
        Next(Option<u64>),
    }
    use Step::*;

    fn check(steps: &[Step]) {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut d = Debouncer::new(SETTLE, MAX_DELAY, 3);
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Push(p, t) => assert!(d.push(p.into(), at(t)), "step {i}: {step:?}"),
                Ready(t, want) => {
                    let want: Vec<PathBuf> = want.iter().map(PathBuf::from).collect();
                    assert_eq!(d.ready(at(t)), want, "step {i}: {step:?}");
                }
                Next(t) => assert_eq!(d.next_deadline(), t.map(at), "step {i}: {step:?}"),
            }
        }
    }

    #[test]
    fn a_path_is_delivered_once_it_settles() {
        check(&[
            Next(None),
            Push("a", 0),
            Next(Some(500)),
            Ready(499, &[]),
            Ready(500, &["a"]),
            Ready(10_000, &[]),
            Next(None),
        ]);
    }

    #[test]
    fn a_burst_is_delivered_once_after_its_last_event() {
        check(&[
            Push("a", 0),
            Push("a", 200),
            Push("a", 400),
            Next(Some(900)),
            Ready(800, &[]),
            Ready(899, &[]),
            Ready(900, &["a"]),
            Ready(2000, &[]),
        ]);
    }

    #[test]
    fn a_file_that_never_settles_is_delivered_after_the_longest_delay() {
        check(&[
            Push("log", 0),
            Push("log", 300),
            Push("log", 600),
            Push("log", 900),
            Push("log", 1200),
            Push("log", 1500),
            Push("log", 1800),
            Next(Some(2000)),
            Ready(1999, &[]),
            Push("log", 1999),
            Ready(2000, &["log"]),
            // The next burst starts its own window.
            Push("log", 2100),
            Next(Some(2600)),
            Ready(2599, &[]),
            Ready(2600, &["log"]),
        ]);
    }

    #[test]
    fn paths_are_independent_and_come_sorted() {
        check(&[
            Push("b", 0),
            Push("a", 100),
            Next(Some(500)),
            Ready(500, &["b"]),
            Next(Some(600)),
            Ready(600, &["a"]),
            Push("d", 1000),
            Push("c", 1000),
            Push("b", 1000),
            Ready(1500, &["b", "c", "d"]),
        ]);
    }

    #[test]
    fn an_event_from_the_past_does_not_move_a_burst_back() {
        check(&[
            Push("a", 1000),
            Push("a", 100),
            Ready(1499, &[]),
            Ready(1500, &["a"]),
        ]);
    }

    #[test]
    fn the_pending_set_is_bounded() {
        let t = Instant::now();
        let mut d = Debouncer::new(SETTLE, MAX_DELAY, 2);
        assert!(d.push("a".into(), t));
        assert!(d.push("b".into(), t));
        assert!(!d.push("c".into(), t), "full");
        assert!(d.push("a".into(), t), "a pending path is still updated");
        assert_eq!(d.len(), 2);
        d.clear();
        assert!(d.is_empty());
        assert!(d.push("c".into(), t));
    }

    #[test]
    fn durations_too_long_to_add_do_not_panic() {
        let t = Instant::now();
        let mut d = Debouncer::new(Duration::MAX, Duration::from_secs(1), 4);
        assert!(d.push("a".into(), t));
        assert_eq!(d.next_deadline(), Some(t + Duration::from_secs(1)));
        let mut d = Debouncer::new(Duration::MAX, Duration::MAX, 4);
        assert!(d.push("a".into(), t));
        assert_eq!(d.ready(t), [PathBuf::from("a")]);
    }

    /// A worker over an empty root with a real (idle) inotify instance, fed events by hand:
    /// the overflow and error paths cannot be provoked on demand through the kernel.
    fn worker(capacity: usize) -> (Worker, Receiver<WatchEvent>, tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        let dev = fs::metadata(&root).expect("stat").dev();
        let notify = RecommendedWatcher::new(|_| {}, notify::Config::default()).expect("inotify");
        let (out, rx) = mpsc::sync_channel(capacity);
        let (_, raw) = mpsc::channel();
        let worker = Worker {
            tree: Tree {
                notify,
                roots: vec![(root.clone(), dev)],
                exclude: vec![root.join("excluded")],
                one_filesystem: true,
                stop: Arc::default(),
            },
            debouncer: Debouncer::new(SETTLE, MAX_DELAY, 4),
            raw,
            out,
            owe_rescan: false,
            rescan_last: false,
        };
        (worker, rx, dir, root)
    }

    fn event(kind: EventKind, path: &Path) -> notify::Result<notify::Event> {
        Ok(notify::Event::new(kind).add_path(path.to_owned()))
    }

    #[test]
    fn an_overflow_or_an_error_asks_for_a_rescan() {
        let (mut w, rx, _dir, _) = worker(8);
        // What notify makes of IN_Q_OVERFLOW: a pathless `Other` event flagged `Rescan`.
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(w.handle(Ok(overflow)).is_ok());
        assert!(w.handle(Err(notify::Error::generic("read failed"))).is_ok());
        let got: Vec<WatchEvent> = rx.try_iter().collect();
        assert_eq!(
            got,
            [
                WatchEvent::Rescan(RescanReason::Overflow),
                WatchEvent::Rescan(RescanReason::Error("read failed".into())),
            ]
        );
    }

    #[test]
    fn only_content_changes_are_changes() {
        use notify::event::{CreateKind, DataChange, MetadataKind};
        let (mut w, _rx, _dir, root) = worker(8);
        let file = root.join("f");
        fs::write(&file, b"x").expect("write");
        let ignored = [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            EventKind::Remove(notify::event::RemoveKind::File),
        ];
        for kind in ignored {
            assert!(w.handle(event(kind, &file)).is_ok());
            assert!(w.debouncer.is_empty(), "{kind:?}");
        }
        let wanted = [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ];
        for kind in wanted {
            w.debouncer.clear();
            assert!(w.handle(event(kind, &file)).is_ok());
            assert_eq!(w.debouncer.len(), 1, "{kind:?}");
        }
        // Excluded, outside every root, or gone already: nothing.
        w.debouncer.clear();
        let excluded = root.join("excluded");
        fs::write(&excluded, b"x").expect("write");
        for path in [excluded, PathBuf::from("/etc/passwd"), root.join("gone")] {
            assert!(w
                .handle(event(EventKind::Create(CreateKind::File), &path))
                .is_ok());
            assert!(w.debouncer.is_empty(), "{}", path.display());
        }
    }

    #[test]
    fn a_root_removed_or_moved_away_is_reported() {
        use notify::event::RemoveKind;
        let (mut w, rx, _dir, root) = worker(8);
        let inner = root.join("sub");
        assert!(w
            .handle(event(EventKind::Remove(RemoveKind::Folder), &inner))
            .is_ok());
        assert!(w
            .handle(event(EventKind::Remove(RemoveKind::Folder), &root))
            .is_ok());
        assert!(w
            .handle(event(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                &root
            ))
            .is_ok());
        let unwatched = |error: &str| WatchEvent::Unwatched {
            dir: root.clone(),
            error: error.into(),
        };
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            [
                unwatched("the root was removed"),
                unwatched("the root was moved away")
            ]
        );
    }

    #[test]
    fn a_full_channel_becomes_one_rescan_once_there_is_room() {
        let (mut w, rx, _dir, _) = worker(1);
        let changed = |p: &str| WatchEvent::Changed(PathBuf::from(p));
        assert!(w.send(changed("a")).is_ok());
        assert!(w.send(changed("b")).is_ok(), "full: dropped, a rescan is owed");
        assert!(w.send(changed("c")).is_ok(), "still full: dropped");
        assert_eq!(rx.try_recv().ok(), Some(changed("a")));
        assert!(
            w.send(changed("d")).is_ok(),
            "the rescan goes first and fills the channel"
        );
        assert!(!w.owe_rescan, "d is covered by the rescan still in the channel");
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            [WatchEvent::Rescan(RescanReason::Backlog)]
        );
        assert!(w.send(changed("e")).is_ok());
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [changed("e")]);
        drop(rx);
        assert!(w.send(changed("f")).is_err(), "the consumer is gone");
    }

    #[test]
    fn a_full_pending_set_is_dropped_for_a_rescan() {
        let (mut w, rx, _dir, root) = worker(8);
        for i in 0..5 {
            let path = root.join(format!("f{i}"));
            fs::write(&path, b"x").expect("write");
            assert!(w
                .handle(event(EventKind::Create(notify::event::CreateKind::File), &path))
                .is_ok());
        }
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            [WatchEvent::Rescan(RescanReason::Backlog)]
        );
        assert!(w.debouncer.is_empty());
    }

    proptest! {
        /// Fed any sequence of events in time order, with `ready` asked at arbitrary times: a
        /// path is never delivered early (before it settled and before the longest delay),
        /// never twice for one burst, and every path is delivered in the end.
        #[test]
        fn delivers_every_path_once_and_never_early(
            steps in proptest::collection::vec((0u64..700, 0u8..6, any::<bool>()), 0..80)
        ) {
            let t0 = Instant::now();
            let mut d = Debouncer::new(SETTLE, MAX_DELAY, usize::MAX);
            let mut now = t0;
            // Path to (first, last) of its undelivered burst, as the test sees it.
            let mut model: HashMap<PathBuf, (Instant, Instant)> = HashMap::new();
            for (gap, p, ask) in steps {
                now += Duration::from_millis(gap);
                if ask {
                    for path in d.ready(now) {
                        let (first, last) = model.remove(&path).expect("delivered once per burst");
                        prop_assert!(now >= last + SETTLE || now >= first + MAX_DELAY);
                    }
                    for (first, last) in model.values() {
                        prop_assert!(now < *last + SETTLE && now < *first + MAX_DELAY, "due but held");
                    }
                } else {
                    let path = PathBuf::from(format!("p{p}"));
                    prop_assert!(d.push(path.clone(), now));
                    model.entry(path).and_modify(|b| b.1 = now).or_insert((now, now));
                }
            }
            let end = now + MAX_DELAY;
            for path in d.ready(end) {
                prop_assert!(model.remove(&path).is_some());
            }
            prop_assert!(model.is_empty());
            prop_assert!(d.is_empty());
        }
    }
}
