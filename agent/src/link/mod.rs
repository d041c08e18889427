//! The live channel to the collector: TLS, the protocol client, enrolment, and the session that
//! keeps the agent connected.
//!
//! - [`tls`]: rustls configurations (TLS 1.3 only, ring, ALPN `picket/1`) and the CA-pin
//!   verifier for enrolment with only a token.
//! - [`client`]: connect, hello, frames in and out with size caps and timeouts, enrolment. The
//!   reusable layer for tools that play many agents.
//! - [`session`]: the daemon's link loop (fetch and install sets, send spooled sightings one
//!   batch at a time, heartbeats, certificate renewal), reconnecting with backoff.
//! - [`backoff`]: reconnect delays with full jitter, and poll jitter; pure.
//! - [`cert`]: the certificate facts the agent reads itself (key pin, validity) and PEM text.
//!
//! Architecture invariant: the agent's identity on the channel is its key and the client
//! certificate the collector issued for it; no message carries an identity of its own. A set
//! that arrives over the channel is installed only through
//! [`crate::store::StateDir::import_expected`], with every check an offline import applies, and
//! two more: the set is for the configured channel, and its index fits under the memory limit.

pub mod backoff;
pub mod cert;
pub mod client;
mod error;
pub mod session;
pub mod tls;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use picket_proto::wire;

pub use client::{connect, enroll, Enrolment, FrameReader, FrameWriter, Session};
pub use error::LinkError;

use crate::spool::Spool;
use crate::status::LinkStatus;

/// Splits `HOST:PORT` (or `[IPV6]:PORT`) into the host (brackets removed) and the port.
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?,
        None if host.contains(':') => return None, // an IPv6 literal needs brackets
        None => host,
    };
    (!host.is_empty()).then_some((host, port))
}

/// What the link thread shares with the daemon.
#[derive(Clone)]
pub struct LinkContext {
    /// The `[collector]` section.
    pub config: crate::config::CollectorConfig,
    /// The state directory, where sets from the collector are installed.
    pub state_dir: PathBuf,
    /// The sightings spool: batches waiting for the collector's acknowledgement.
    pub spool: Arc<Mutex<Spool>>,
    /// Notified when the spool has a new batch, so it goes out without waiting for a timer.
    pub wake: Arc<tokio::sync::Notify>,
    /// Builds a heartbeat from the daemon's current state.
    pub heartbeat: Arc<dyn Fn() -> wire::Heartbeat + Send + Sync>,
    /// The link's state, for `status.json`.
    pub status: Arc<Mutex<LinkStatus>>,
    /// Set to ask the link thread to stop (checked at least every 500 ms).
    pub stop: Arc<AtomicBool>,
    /// Set by the link thread after it installed a set (or renewed its freshness).
    pub set_installed: Arc<AtomicBool>,
    /// The memory ceiling in force (`limits.memory_limit`, bytes; the daemon updates it on a
    /// reload): a set whose index would need more is refused and the installed one stays.
    pub memory_limit: Arc<AtomicU64>,
}

impl std::fmt::Debug for LinkContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkContext")
            .field("config", &self.config)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// Starts the link thread: a current-thread tokio runtime running [`session::run`] until
/// `ctx.stop` is set.
pub fn spawn(ctx: LinkContext) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("picket-link".into())
        .spawn(move || {
            runtime.block_on(session::run(ctx));
            // An import still running in the blocking pool is atomic; it is not waited for.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        for (addr, want) in [
            ("collector.example:4433", Some(("collector.example", 4433))),
            ("127.0.0.1:1", Some(("127.0.0.1", 1))),
            ("[::1]:4433", Some(("::1", 4433))),
            ("::1:4433", None),
            ("collector.example", None),
            ("collector.example:0", None),
            ("collector.example:70000", None),
            (":4433", None),
            ("[::1:4433", None),
        ] {
            assert_eq!(split_host_port(addr), want, "{addr}");
        }
    }
}
