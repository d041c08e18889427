//! The agent channel: the TLS 1.3 server `serve --listen` runs for agents.
//!
//! Agents connect with the client certificate the collector issued them (or, to enrol, with
//! none), say hello, and then fetch sets, report sightings, renew their certificate and send
//! heartbeats; the collector tells them of each new set version the moment it sees it. The
//! pieces:
//!
//! - `session` runs one connection: the hello within a deadline counted from accept,
//!   identity from the certificate only, frame caps checked before allocation, read and idle
//!   timeouts, the per-agent rate limit with backpressure, in-order answers, revocation.
//! - `limits` holds the per-agent token buckets ([`limits::Budget`]).
//! - `distribute` decides what a fetch gets ([`distribute::plan`]) and shares each built set
//!   file between sessions.
//! - `db` keeps SQLite off the async workers: one writer thread that commits many sessions'
//!   batches per transaction, and a pool of readers.
//! - `alarms` decides when an agent is quiet, lagging, cloned, losing sightings or skipping
//!   batch numbers.
//!
//! Three background tasks watch the database: the revoked agents and each channel's current
//! set version (every `poll_every`, so a revocation or a publish from the command line reaches
//! live sessions within about that), and the periodic alarms (every `alarm_every`).
//!
//! Architecture invariant: an agent's identity is the key its verified client certificate
//! certifies, never a field of a message; and every limit (frame size, rate, timeouts, session
//! counts) is enforced here, by the collector.

pub mod alarms;
pub mod db;
pub mod distribute;
pub mod limits;
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
use crate::{parse_duration, CollectorError};
use alarms::Thresholds;
use db::{Job, Readers, WriterContext};
use distribute::FrameCache;
use limits::{Budgets, RateLimit};

/// Jobs queued for the writer before sessions wait.
const WRITE_QUEUE: usize = 4_096;

/// The channel's settings, typed (from `[channel]` and `[enrolment]` in `picket.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// TLS handshake and hello, from accept.
    pub hello_timeout: Duration,
    /// A frame's body once its length was read; and each write to a slow reader.
    pub read_timeout: Duration,
    /// No frame for this long closes the session.
    pub idle_timeout: Duration,
    /// The most sessions at once.
    pub max_sessions: usize,
    /// The most unauthenticated connections at once.
    pub max_handshakes: usize,
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
            eprintln!(
                "picket-collector: warning: the agent channel's server certificate expires at {}",
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
        // Bound with std and handed to the runtime, so that starting works from inside another
        // runtime too (the tests run one).
        let std_listener = std::net::TcpListener::bind(listen).map_err(|e| refused("cannot listen on", e))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| refused("cannot listen on", e))?;
        let addr = std_listener
            .local_addr()
            .map_err(|e| refused("the bound address of", e))?;
        let _in_runtime = runtime.enter();
        let listener = TcpListener::from_std(std_listener).map_err(|e| refused("cannot listen on", e))?;
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
                eprintln!("picket-collector: error: agent channel: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let accepted = Instant::now();
        // Over either cap, the connection is closed at once, before any TLS work.
        let Ok(session) = shared.sessions.clone().try_acquire_owned() else {
            continue;
        };
        let Ok(handshake) = shared.handshakes.clone().try_acquire_owned() else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(session::run(
            shared.clone(),
            tcp,
            peer,
            accepted,
            session,
            handshake,
        ));
    }
}

/// Reads the revoked set and the channels' state every `poll_every`, and publishes changes to
/// the sessions.
async fn watch_state(shared: Arc<Shared>, channels: Vec<String>) {
    let mut every = tokio::time::interval(shared.settings.poll_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        let names = channels.clone();
        let readers = shared.readers.clone();
        let state = tokio::task::spawn_blocking(move || read_state(&readers, &names)).await;
        let (revoked, current) = match state {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                if !failing {
                    eprintln!(
                        "picket-collector: error: agent channel: reading revocations and set versions: {e}"
                    );
                }
                failing = true;
                continue;
            }
            Err(_) => continue,
        };
        failing = false;
        shared.revoked.send_if_modified(|r| {
            if **r != revoked {
                *r = Arc::new(revoked);
                true
            } else {
                false
            }
        });
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
    }
}
