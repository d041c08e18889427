//! The host-facing shells for processes, connections and scheduling priority.
//!
//! Everything the agent learns about running processes and live sockets, and the one place it
//! changes how the kernel schedules it, goes through this module. The rest of the agent sees
//! plain values ([`ProcessInfo`], [`Socket`], [`FileIdentity`]) and never opens `/proc` itself,
//! so porting to Windows or macOS means giving these three files a second implementation and
//! leaving the matcher, the cache and the sighting spool alone.
//!
//! - [`accounts`]: the host's accounts and names for the redactor (passwd, hostname, homes).
//! - [`procs`]: lists processes (through `sysinfo`), remembers which it has already reported so
//!   each new process is checked within one poll interval, and hashes a process's executable
//!   through `/proc/PID/exe`, which still works after the file was deleted from disk.
//! - [`net`]: the remote addresses of live TCP and UDP sockets. A pure parser for the
//!   `/proc/net/{tcp,tcp6,udp,udp6}` format, the shell that reads those files, and the lookup
//!   from a socket's inode to the processes that hold it.
//! - [`priority`]: puts the calling thread at the lowest CPU and I/O priority the kernel offers
//!   an unprivileged thread, without `unsafe` code.
//!
//! Today every shell here is Linux's. The parsers are pure and take text; the shells take the
//! directory they read (`/proc` in production), so tests can point them at fixtures.

pub mod accounts;
pub mod net;
pub mod priority;
pub mod procs;

pub use net::{parse_proc_net, read_sockets, read_sockets_at, socket_owners, Proto, Socket, SocketState};
pub use priority::{lower_current_thread, Lowered, PriorityError, Step};
pub use procs::{open_exe, Exe, Poller, ProcessInfo};

/// The identity of a file's content, as the hash cache keys it. The same key serves files the
/// scanner finds and executables opened through `/proc/PID/exe`, so a running program and its
/// file on disk share one cache entry.
pub use crate::cache::Identity as FileIdentity;
