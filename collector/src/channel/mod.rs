//! The agent channel: the TLS 1.3 server `serve --listen` runs for agents.
//!
//! Agents connect with the client certificate the collector issued them (or, to enrol, with
//! none), say hello, and then fetch sets, report sightings, renew their certificate and send
//! heartbeats; the collector tells them of each new set version the moment it sees it. The
//! pieces:
//!
//! - `session` runs one connection: everything before authentication (TLS handshake, hello,
//!   and for a connection without a certificate its one enrolment) within a deadline counted
//!   from accept, identity from the certificate only, frame caps checked before allocation,
//!   read and idle timeouts, the per-agent rate limit with backpressure, in-order answers,
//!   revocation, and a lingering close so that the last frames reach the agent.
//! - `limits` holds the per-agent token buckets ([`limits::Budget`]) and the per-source caps
//!   on connections that have not authenticated ([`limits::SourceSlots`]).
//! - `registry` holds each agent's live sessions, at most `max_sessions_per_agent`: a new one
//!   replaces the oldest.
//! - `distribute` decides what a fetch gets ([`distribute::plan`]) and shares each built set
//!   file between sessions.
//! - `db` keeps SQLite off the async workers: one writer thread that commits many sessions'
//!   batches per transaction, and a pool of readers.
//! - `alarms` decides when an agent is quiet, lagging, cloned, losing sightings or skipping
//!   batch numbers.
//!
//! Three background tasks watch the database: the revoked agents and each channel's current
//! set version (every `poll_every`, so a revocation or a publish from the command line reaches
//! live sessions within about that), and the periodic alarms (every `alarm_every`). When the
//! revoked agents cannot be read for `blind_after`, the channel fails closed: every agent
//! session is closed and none is admitted until a read succeeds, so a revocation is never
//! silently ignored.
//!
//! What a connection may hold, and when it gives it back: a session permit (`max_sessions`)
//! for its whole life; a handshake permit (`max_handshakes`) until its TLS handshake completes;
//! a place among its source address's unauthenticated connections (`max_handshakes_per_ip`)
//! until it is welcomed as an enrolled agent; and, without a client certificate, an enrolling
//! permit (`max_enrolling`) until it closes. Connections that cannot get one are closed. So
//! clients that never authenticate cannot take the places enrolled agents need to reconnect.
//!
//! Architecture invariant: an agent's identity is the key its verified client certificate
//! certifies, never a field of a message; and every limit (frame size, rate, timeouts, session
//! counts) is enforced here, by the collector.

pub mod alarms;
pub mod db;
pub mod distribute;
pub mod limits;
mod registry;
mod session;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::datadir::{self, DataDir};
use crate::export::Current;
use crate::pki::Pki;
use crate::reports::Intake;
use crate::{parse_duration, CollectorError};
use alarms::Thresholds;
use db::{Job, Readers, WriterContext};
use distribute::FrameCache;
use limits::{Budgets, RateLimit, SourceSlots};
use registry::Registry;

/// Jobs queued for the writer before sessions wait.
const WRITE_QUEUE: usize = 4_096;

/// The channel's settings, typed (from `[channel]` and `[enrolment]` in `picket.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// TLS handshake and hello, from accept; for a connection without a client certificate,
    /// its whole enrolment.
    pub hello_timeout: Duration,
    /// A frame's body once its length was read; and each write to a slow reader.
    pub read_timeout: Duration,
    /// No frame for this long closes the session.
    pub idle_timeout: Duration,
    /// The most sessions at once.
    pub max_sessions: usize,
    /// The most connections in their TLS handshake at once.
    pub max_handshakes: usize,
    /// The most unauthenticated connections at once from one source address.
    pub max_handshakes_per_ip: usize,
    /// The most connections without a client certificate (enrolling) at once.
    pub max_enrolling: usize,
    /// Live sessions per agent; a new one past it replaces the oldest.
    pub max_sessions_per_agent: usize,
    /// Enrolment attempts per source address (messages only).
    pub enrolment_rate: RateLimit,
    /// The limits sightings batches are stored under.
    pub intake: Intake,
    /// Each agent's rate limit.
    pub rate: RateLimit,
    /// Refused frames in a row before the session is closed.
    pub flood_strikes: u32,
    /// When agents count as quiet or lagging.
    pub thresholds: Thresholds,
    /// Lifetime of issued client certificates (seconds).
    pub cert_lifetime: u64,
    /// How often the revoked set and the current versions are read.
    pub poll_every: Duration,
    /// How long the revoked set may stay unreadable before every agent session is closed and
    /// new ones are refused (until a read succeeds).
    pub blind_after: Duration,
    /// How often quiet and lagging agents are looked for.
    pub alarm_every: Duration,
    /// How often, at most, a session records that its agent was seen.
    pub seen_every: Duration,
}

impl Settings {
    /// The settings `cfg` (read from `path`) gives; errors name the file and the key.
    pub fn from_config(cfg: &Config, path: &Path) -> Result<Settings, CollectorError> {
        let c = &cfg.channel;
        let bad = |key: &str, problem: String| CollectorError::Config {
            path: path.to_owned(),
            problem: format!("channel.{key}: {problem}"),
        };
        let dur = |key: &str, v: &str| -> Result<Duration, CollectorError> {
            match parse_duration(v) {
                Some(0) => Err(bad(key, format!("{v:?} must be more than 0s"))),
                Some(s) => Ok(Duration::from_secs(s)),
                None => Err(bad(
                    key,
                    format!("{v:?} is not a duration such as 90s, 15m, 12h, 30d"),
                )),
            }
        };
        let positive = |key: &str, v: u64| -> Result<u64, CollectorError> {
            if v == 0 {
                Err(bad(key, "must be more than 0".into()))
            } else {
                Ok(v)
            }
        };
        let listen = c.listen.parse::<SocketAddr>().map_err(|_| {
            bad(
                "listen",
                format!(
                    "{:?} is not an address and port such as 0.0.0.0:7443 or [::]:7443",
                    c.listen
                ),
            )
        })?;
        Ok(Settings {
            listen,
            hello_timeout: dur("hello_timeout", &c.hello_timeout)?,
            read_timeout: dur("read_timeout", &c.read_timeout)?,
            idle_timeout: dur("idle_timeout", &c.idle_timeout)?,
            max_sessions: positive("max_sessions", c.max_sessions.into())? as usize,
            max_handshakes: positive("max_handshakes", c.max_handshakes.into())? as usize,
            max_handshakes_per_ip: positive("max_handshakes_per_ip", c.max_handshakes_per_ip.into())?
                as usize,
            max_enrolling: positive("max_enrolling", c.max_enrolling.into())? as usize,
            max_sessions_per_agent: positive("max_sessions_per_agent", c.max_sessions_per_agent.into())?
                as usize,
            enrolment_rate: RateLimit::messages_only(
                positive("enrolments_per_second", c.enrolments_per_second.into())? as f64,
                positive("enrolment_burst", c.enrolment_burst.into())? as f64,
            ),
            intake: Intake {
                max_sightings_per_agent: positive("max_sightings_per_agent", c.max_sightings_per_agent)?,
            },
            rate: RateLimit {
                messages_per_second: positive("messages_per_second", c.messages_per_second.into())? as f64,
                message_burst: positive("message_burst", c.message_burst.into())? as f64,
                bytes_per_second: positive("bytes_per_second", c.bytes_per_second)? as f64,
                byte_burst: positive("byte_burst", c.byte_burst)? as f64,
            },
            flood_strikes: c.flood_strikes,
            thresholds: Thresholds {
                quiet_after: dur("quiet_after", &c.quiet_after)?.as_secs(),
                lag_after: dur("lag_after", &c.lag_after)?.as_secs(),
            },
            cert_lifetime: cfg.enrolment(path)?.cert_lifetime,
            poll_every: Duration::from_millis(500),
            blind_after: Duration::from_secs(10),
            alarm_every: Duration::from_secs(10),
            seen_every: Duration::from_secs(5),
        })
    }
}

/// What every session shares.
pub(crate) struct Shared {
    settings: Settings,
    dir: DataDir,
    acceptor: TlsAcceptor,
    readers: Arc<Readers>,
    db: mpsc::Sender<Job>,
    budgets: Budgets,
    /// The revoked agents, as last read.
    revoked: watch::Sender<Arc<HashSet<String>>>,
    /// Each published channel's current state, as last read.
    versions: HashMap<String, watch::Sender<Option<Current>>>,
    cache: FrameCache,
    sessions: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    /// Connections without a client certificate, past their handshake.
    enrolling: Arc<Semaphore>,
    /// Unauthenticated connections per source address.
    sources: Arc<SourceSlots>,
    /// Enrolment attempts per source address.
    enrol_attempts: Budgets,
    /// Each agent's live sessions.
    registry: Arc<Registry>,
    /// Whether the revoked set has gone unread for too long (then no agent session runs).
    blind: watch::Sender<bool>,
    /// The channels this collector serves, sorted.
    channels: Vec<String>,
    started: Instant,
}

impl Shared {
    /// The budgets' clock: time since the server started.
    fn clock(&self) -> Duration {
        self.started.elapsed()
    }
}

/// A running channel server. Dropping it stops it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The wall clock in unix seconds (the shells read it; the cores take it as an argument).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The revoked set and each channel's state, read in one go.
fn read_state(
    readers: &Readers,
    channels: &[String],
) -> Result<(HashSet<String>, Vec<Option<Current>>), CollectorError> {
    readers.with(|s| {
        let revoked = s.revoked_agents()?;
        let current = channels.iter().map(|c| s.current(c)).collect::<Result<_, _>>()?;
        Ok((revoked, current))
    })
}

/// How many accepted connections the kernel may queue for a listener before the program takes
/// them (the kernel caps it at `net.core.somaxconn`). The standard library's 128 made a burst of
/// connections (agents reconnecting after a restart, a flood at the TAXII port) wait out
/// dropped SYNs, a second each, while the server had room for them.
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as the standard library
/// sets it). Call inside a tokio runtime's context.
pub(crate) fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Server {
    /// Opens the data directory `data`, loads its TLS material, binds `settings.listen` and
    /// starts serving agents on a runtime of its own (two worker threads) and a writer thread.
    /// Returns once the socket is bound; the revoked set and the current versions are read
    /// before the first connection is accepted.
    pub fn start(data: &Path, settings: Settings) -> Result<Server, CollectorError> {
        let dir = DataDir::open(data)?;
        let pki = Arc::new(Pki::load(&dir)?);
        let now = unix_now();
        if pki.server_not_after() - now < 30 * 86_400 {
            tracing::warn!(
                "the agent channel's server certificate expires at {}",
                picket_proto::rfc3339(pki.server_not_after())
            );
        }
        let acceptor = TlsAcceptor::from(pki.server_config()?);
        let readers = Arc::new(Readers::new(dir.path().join(datadir::DB)));
        let channels: Vec<String> = dir.config().channels.keys().cloned().collect();
        let (revoked, current) = read_state(&readers, &channels)?;
        let (db_tx, db_rx) = mpsc::channel(WRITE_QUEUE);
        let ctx = WriterContext {
            pki,
            cert_lifetime: settings.cert_lifetime,
            thresholds: settings.thresholds,
            channels: channels.clone(),
            intake: settings.intake,
        };
        db::spawn_writer(dir.store()?, ctx, db_rx).map_err(CollectorError::io(dir.path()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("picket-channel")
            .enable_all()
            .build()
            .map_err(|e| CollectorError::Refused(format!("starting the agent channel's runtime: {e}")))?;
        let listen = settings.listen;
        let refused = |what: &str, e: std::io::Error| {
            CollectorError::Refused(format!("agent channel: {what} {listen}: {e}"))
        };
        // Bound inside this runtime's context without blocking on it, so that starting works
        // from inside another runtime too (the tests run one).
        let _in_runtime = runtime.enter();
        let listener = listener(listen).map_err(|e| refused("cannot listen on", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| refused("the bound address of", e))?;
        let versions = channels
            .iter()
            .cloned()
            .zip(current)
            .map(|(name, c)| (name, watch::channel(c).0))
            .collect();
        let shared = Arc::new(Shared {
            budgets: Budgets::new(settings.rate),
            sessions: Arc::new(Semaphore::new(settings.max_sessions)),
            handshakes: Arc::new(Semaphore::new(settings.max_handshakes)),
            enrolling: Arc::new(Semaphore::new(settings.max_enrolling)),
            sources: SourceSlots::new(settings.max_handshakes_per_ip),
            enrol_attempts: Budgets::new(settings.enrolment_rate),
            registry: Registry::new(settings.max_sessions_per_agent),
            blind: watch::channel(false).0,
            channels: channels.clone(),
            settings,
            dir,
            acceptor,
            readers,
            db: db_tx,
            revoked: watch::channel(Arc::new(revoked)).0,
            versions,
            cache: FrameCache::default(),
            started: Instant::now(),
        });
        runtime.spawn(accept(listener, shared.clone()));
        runtime.spawn(watch_state(shared.clone(), channels));
        runtime.spawn(tick(shared));
        drop(_in_runtime);
        Ok(Server {
            addr,
            runtime: Some(runtime),
        })
    }

    /// The address the server is bound to (with the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and ends every session. Batches already handed to the writer are still
    /// committed (and then the writer thread ends).
    pub fn stop(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, most likely: wait for sessions to end.
                tracing::error!("agent channel: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let accepted = Instant::now();
        // Over any cap, the connection is closed at once, before any TLS work.
        let Some(source) = shared.sources.take(peer.ip()) else {
            crate::metrics::session_refused();
            continue;
        };
        let Ok(session) = shared.sessions.clone().try_acquire_owned() else {
            crate::metrics::session_refused();
            continue;
        };
        let Ok(handshake) = shared.handshakes.clone().try_acquire_owned() else {
            crate::metrics::session_refused();
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let admission = session::Admission {
            session,
            handshake,
            source,
        };
        tokio::spawn(session::run(shared.clone(), tcp, peer, accepted, admission));
    }
}

/// When the revoked set was last read, and whether the channel has gone blind: a pure clock
/// (offsets since the server started, as arguments), so that when the channel fails closed is
/// tested without a database. Time rather than a count of failures: a read that hangs, or fails
/// slowly, counts as much as one that fails at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watchdog {
    /// How long the revoked set may go unread.
    after: Duration,
    /// When it was last read.
    last_read: Duration,
    blind: bool,
}

impl Watchdog {
    /// Read at `now`; blind once nothing more is read for `after`.
    fn new(after: Duration, now: Duration) -> Watchdog {
        Watchdog {
            after,
            last_read: now,
            blind: false,
        }
    }

    /// When the channel goes blind unless a read succeeds first.
    fn deadline(&self) -> Duration {
        self.last_read.saturating_add(self.after)
    }

    /// No read succeeded by `now`; `true` when that makes the channel blind (once).
    fn unread(&mut self, now: Duration) -> bool {
        if !self.blind && now >= self.deadline() {
            self.blind = true;
            return true;
        }
        false
    }

    /// A read succeeded at `now`; `true` when the channel was blind until now.
    fn read(&mut self, now: Duration) -> bool {
        self.last_read = self.last_read.max(now);
        std::mem::replace(&mut self.blind, false)
    }
}

/// Reads the revoked set and the channels' state every `poll_every`, and publishes changes to
/// the sessions. When no read succeeds for `blind_after` (the reads fail, or one hangs), the
/// channel fails closed (see the module documentation) until one does.
async fn watch_state(shared: Arc<Shared>, channels: Vec<String>) {
    let s = &shared.settings;
    let mut every = tokio::time::interval(s.poll_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watchdog = Watchdog::new(s.blind_after, shared.clock());
    let mut failing = false;
    let go_blind = |why: &str| {
        tracing::error!(
            "agent channel: revocations unread for {} s ({why}): closing every agent session and admitting none until they can be read",
            s.blind_after.as_secs()
        );
        shared.blind.send_replace(true);
    };
    loop {
        every.tick().await;
        let names = channels.clone();
        let readers = shared.readers.clone();
        let read = tokio::task::spawn_blocking(move || read_state(&readers, &names));
        tokio::pin!(read);
        // A read that does not finish by the deadline makes the channel blind all the same.
        let state = loop {
            let deadline = shared.started + watchdog.deadline();
            tokio::select! {
                r = &mut read => break r,
                () = tokio::time::sleep_until(deadline), if !watchdog.blind => {
                    if watchdog.unread(shared.clock()) {
                        go_blind("a read has not finished");
                    }
                }
            }
        };
        let state = match state {
            Ok(read) => read.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the read did not finish: {e}")),
        };
        let (revoked, current) = match state {
            Ok(s) => s,
            Err(why) => {
                if !failing {
                    tracing::error!("agent channel: reading revocations and set versions: {why}");
                }
                failing = true;
                if watchdog.unread(shared.clock()) {
                    go_blind(&why);
                }
                continue;
            }
        };
        failing = false;
        if watchdog.read(shared.clock()) {
            tracing::info!("agent channel: revocations readable again; admitting agent sessions");
        }
        shared.revoked.send_if_modified(|r| {
            if **r != revoked {
                *r = Arc::new(revoked);
                true
            } else {
                false
            }
        });
        // Only once the revoked set is up to date are sessions admitted again.
        shared.blind.send_if_modified(|b| std::mem::replace(b, false));
        for (name, cur) in channels.iter().zip(current) {
            let Some(tx) = shared.versions.get(name) else {
                continue;
            };
            let changed = tx.send_if_modified(|c| {
                if *c != cur {
                    *c = cur.clone();
                    true
                } else {
                    false
                }
            });
            if changed {
                shared.cache.keep_only(name, cur.as_ref());
            }
        }
    }
}

/// The periodic alarms, and forgetting rate budgets that refilled.
async fn tick(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(shared.settings.alarm_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if shared.db.send(Job::CheckAlarms).await.is_err() {
            return;
        }
        shared.budgets.prune(shared.clock());
        shared.enrol_attempts.prune(shared.clock());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_goes_blind_when_nothing_was_read_for_a_while_and_sees_again_after_one_read() {
        let s = Duration::from_secs;
        let mut w = Watchdog::new(s(10), s(100));
        assert_eq!(w.deadline(), s(110));
        // Failures, or a read still running, before the deadline: not yet.
        assert!(!w.unread(s(105)));
        assert!(!w.unread(s(109)));
        // A read in between starts the wait again.
        assert!(!w.read(s(109)));
        assert!(!w.unread(s(118)));
        assert!(w.unread(s(119)), "ten seconds since the last read");
        assert!(w.blind);
        // Said once, however long it lasts.
        assert!(!w.unread(s(500)));
        assert!(w.read(s(501)), "the first read that succeeds");
        assert!(!w.blind);
        assert!(!w.read(s(502)));
        assert_eq!(w.deadline(), s(512));
        // A clock that went backwards does not move the last read back.
        assert!(!w.read(s(400)));
        assert_eq!(w.deadline(), s(512));
    }
}
