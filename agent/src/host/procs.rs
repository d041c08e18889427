//! Running processes: who they are, what they run, and which of them are new.
//!
//! The list comes from `sysinfo`, so another OS only needs the Linux specifics below replaced:
//!
//! - **Start marker.** A pid alone does not name a process: pids are reused, and with
//!   `kernel.pid_max` at its old default of 32768 a busy host cycles through them in minutes. A
//!   process is named by (pid, start), where start is the clock-tick count since boot at which it
//!   started (field 22 of `/proc/PID/stat`, 10 ms resolution). `sysinfo` only offers whole seconds,
//!   and a second is long enough to be gamed.
//! - **Name.** `sysinfo`'s name on Linux is `comm`, which the kernel truncates to 15 bytes and any
//!   process can rewrite for itself with `prctl(PR_SET_NAME)`. [`ProcessInfo::name`] is the file name
//!   of the executable when that is known (it is neither truncated nor settable without running
//!   another program), and `comm` otherwise; `comm` is kept as [`ProcessInfo::comm`] as well.
//!   The two differ beyond truncation where the executable is reached through a link or is a
//!   multi-call binary: `/usr/bin/python3` runs as `python3.11`, and busybox's `sh` as `busybox`.
//! - **Executable.** [`open_exe`] opens `/proc/PID/exe`. That is a magic link to the file the
//!   process was started from, not a path: it opens the very inode the process runs even when
//!   the file has since been deleted or replaced on disk (a common way for malware to hide), and
//!   for programs run from a `memfd` with no file on disk at all.
//! - **Exec.** A process that calls `execve` keeps its pid and start time. [`Poller::poll`]
//!   reports a process again when its executable path or command line changed, so `sh -c 'exec
//!   payload'` is checked as the payload and not only as the shell.
//!
//! The list is that of the agent's PID namespace, as its `/proc` shows it: an agent in a container
//! sees the container's processes only, and must share the host's PID namespace (Docker's
//! `--pid=host`, Kubernetes' `hostPID`) to see the host's.
//!
//! Reading another user's `/proc/PID/exe` needs the same rights as `ptrace` (in practice: root or
//! `CAP_SYS_PTRACE`); without them the process is still listed and [`open_exe`] fails with
//! `PermissionDenied` for it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use super::FileIdentity;
use crate::digest::{hash_open_file, Digests, Kinds};

const PROC: &str = "/proc";

/// One running process, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process id.
    pub pid: u32,
    /// When the process started, in clock ticks since boot. Together with `pid` this names one
    /// process for its whole life; a reused pid has a later start.
    pub start: u64,
    /// The executable's file name when the executable is known, else [`comm`](Self::comm). See
    /// the module documentation for why.
    pub name: String,
    /// The kernel's short name for the process (`comm`): at most 15 bytes, and settable by the
    /// process itself.
    pub comm: String,
    /// The path the executable was started from, if readable. If the file was deleted since,
    /// this is the path it had (the kernel's ` (deleted)` suffix is removed); hash through
    /// [`open_exe`], never through this path.
    pub exe: Option<PathBuf>,
    /// The command line, its arguments joined with single spaces. Bytes that are not UTF-8 are
    /// replaced with U+FFFD.
    pub cmdline: String,
}

/// An executable opened through `/proc/PID/exe`, ready to be looked up in the hash cache by
/// [`identity`](Self::identity) and hashed only on a miss.
#[derive(Debug)]
pub struct Exe {
    file: File,
    identity: FileIdentity,
    nlink: u64,
}

impl Exe {
    /// The (device, inode, size, mtime, ctime) of the executable, from the open file itself.
    pub fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// Whether the executable has no name left on disk: it was deleted after the process
    /// started, or it never had one (a `memfd`). Not a verdict by itself: a package upgrade
    /// that renames a new binary over the old one leaves every running copy of the old one
    /// deleted too.
    pub fn deleted(&self) -> bool {
        self.nlink == 0
    }

    /// Hashes the executable for `kinds`, using `buf` as the read buffer. `None` if it is not a
    /// regular file or changed while it was read (see [`hash_open_file`]).
    pub fn hash(&mut self, kinds: Kinds, buf: &mut [u8]) -> io::Result<Option<Digests>> {
        // Still the file `identity` describes: a cache keys the digests on it.
        if FileIdentity::of(&self.file.metadata()?) != self.identity {
            return Ok(None);
        }
        self.file.seek(SeekFrom::Start(0))?;
        hash_open_file(&mut self.file, kinds, buf)
    }
}

/// Opens the executable that `process` is running, through `/proc/PID/exe`.
///
/// This works when the file was deleted or replaced on disk after the process started. It is the
/// executable the process runs at the time of the call: if it called `execve` since it was
/// listed, the new one (and the next [`Poller::poll`] reports the process again). It fails
/// with `NotFound` if the process exited (or its pid now belongs to another process: the start
/// time is checked after the open, so the file returned is never another process's), and with
/// `PermissionDenied` if the agent may not inspect the process.
pub fn open_exe(process: &ProcessInfo) -> io::Result<Exe> {
    let dir = Path::new(PROC).join(process.pid.to_string());
    // `/proc/PID/exe` is a magic link: O_NOFOLLOW would refuse it, and following it is the point.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(dir.join("exe"))?;
    if read_start(&dir)? != process.start {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {} exited and its pid was reused", process.pid),
        ));
    }
    let meta = file.metadata()?;
    Ok(Exe {
        identity: FileIdentity::of(&meta),
        nlink: meta.nlink(),
        file,
    })
}

/// What [`Poller`] remembers of a process it reported.
#[derive(Debug)]
struct Seen {
    start: u64,
    exe: Option<PathBuf>,
    cmdline: String,
}

/// Lists processes and remembers which it has reported, so that [`poll`](Self::poll) returns only
/// processes not seen before. Call `poll` once per interval and each new process is checked
/// within one interval of its start.
#[derive(Debug)]
pub struct Poller {
    system: System,
    seen: HashMap<u32, Seen>,
}

impl Default for Poller {
    fn default() -> Self {
        Poller::new()
    }
}

impl Poller {
    /// A poller that has seen nothing: its first [`poll`](Self::poll) returns every process.
    ///
    /// This also tells `sysinfo` not to keep a `/proc/PID/stat` file open per process between
    /// refreshes (by default it keeps up to half the process's file descriptor limit), so the
    /// scanner and the file watcher keep their descriptors.
    pub fn new() -> Poller {
        sysinfo::set_open_files_limit(0);
        Poller {
            system: System::new(),
            seen: HashMap::new(),
        }
    }

    /// Every running process. They count as reported: the next [`poll`](Self::poll) does not
    /// return them again.
    pub fn snapshot(&mut self) -> Vec<ProcessInfo> {
        let all = self.list();
        self.remember(&all);
        all
    }

    /// The processes started since the last `poll` or [`snapshot`](Self::snapshot), and those
    /// whose executable or command line changed since (an `execve` keeps the pid). Each is
    /// returned once per change.
    ///
    /// A process caught in the middle of its `execve` can have its new executable but no command
    /// line yet (the kernel fills that in last); it is returned then, and again with its command
    /// line on the next poll. So is a process that rewrites its own command line, as servers that
    /// show their status there do. Both are cheap for the caller: the executable's hash comes
    /// from the cache.
    pub fn poll(&mut self) -> Vec<ProcessInfo> {
        let all = self.list();
        let new = all
            .iter()
            .filter(|p| match self.seen.get(&p.pid) {
                None => true,
                // An exec shows as a new executable or command line. Losing them is no news: that
                // is a process turning into a zombie, or one not yet readable.
                Some(seen) => {
                    seen.start != p.start
                        || (p.exe.is_some() && seen.exe != p.exe)
                        || (!p.cmdline.is_empty() && seen.cmdline != p.cmdline)
                }
            })
            .cloned()
            .collect();
        self.remember(&all);
        new
    }

    /// Replaces what is remembered with `all`, so exited processes are forgotten.
    fn remember(&mut self, all: &[ProcessInfo]) {
        self.seen = all
            .iter()
            .map(|p| {
                let seen = Seen {
                    start: p.start,
                    exe: p.exe.clone(),
                    cmdline: p.cmdline.clone(),
                };
                (p.pid, seen)
            })
            .collect();
    }

    /// Refreshes `sysinfo` and lists the user-space processes. Kernel threads are left out: they
    /// have no executable or command line, and no program can start one.
    fn list(&mut self) -> Vec<ProcessInfo> {
        // Executable and command line are read again each time because `execve` changes both.
        let what = ProcessRefreshKind::nothing()
            .without_tasks()
            .with_exe(UpdateKind::Always)
            .with_cmd(UpdateKind::Always);
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::All, true, what);
        let mut out: Vec<ProcessInfo> = self
            .system
            .processes()
            .values()
            .filter(|p| p.thread_kind().is_none())
            .filter_map(|p| {
                let pid = p.pid().as_u32();
                // A process that exited since the refresh has no stat file; leave it out.
                let start = read_start(&Path::new(PROC).join(pid.to_string())).ok()?;
                let exe = p
                    .exe()
                    .filter(|e| !e.as_os_str().is_empty())
                    .map(Path::to_path_buf);
                let comm = p.name().to_string_lossy().into_owned();
                let name = match exe.as_deref().and_then(Path::file_name) {
                    Some(file_name) => file_name.to_string_lossy().into_owned(),
                    None => comm.clone(),
                };
                let cmdline = p
                    .cmd()
                    .iter()
                    .map(|arg| arg.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ");
                Some(ProcessInfo {
                    pid,
                    start,
                    name,
                    comm,
                    exe,
                    cmdline,
                })
            })
            .collect();
        out.sort_by_key(|p| p.pid);
        out
    }
}

/// Reads the start time of the process whose `/proc` directory is `dir`.
fn read_start(dir: &Path) -> io::Result<u64> {
    let stat = fs::read(dir.join("stat"))?;
    parse_stat_start(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no start time", dir.join("stat").display()),
        )
    })
}

/// The start time (field 22, clock ticks since boot) from the text of a `/proc/PID/stat` file.
///
/// The second field is the process name in parentheses, and the name may itself contain spaces
/// and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat_start(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    // After the name come field 3 (state) onwards; start time is field 22.
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_stat_start;

    fn check(stat: &str, expected: Option<u64>) {
        assert_eq!(parse_stat_start(stat.as_bytes()), expected, "{stat:?}");
    }

    #[test]
    fn stat_start_time() {
        let tail = "S 1 1 1 0 -1 4194560 1234 0 5 0 1 2 0 0 20 0 1 0 987654 12345678 100 \
                    18446744073709551615 1 1 0 0 0 0 671173123 4096 1260 0 0 0 17 0 0 0 0 0 0";
        check(&format!("1 (systemd) {tail}"), Some(987654));
        // A name with spaces and parentheses, as `prctl(PR_SET_NAME)` allows.
        check(&format!("42 (a) b (c)) {tail}"), Some(987654));
        check(&format!("42 () {tail}"), Some(987654));
        check("42 (short) S 1 1", None);
        check("no parenthesis at all", None);
        check("", None);
        check(&format!("1 (x) {}", tail.replace("987654", "-5")), None);
    }
}
