//! The daemon's link loop: stay connected to the collector, keep the set current, deliver the
//! spooled sightings, send heartbeats and renew the client certificate.
//!
//! One session at a time, over mutual TLS with the agent's key. In a session:
//! - a `Fetch` at once, another when the collector announces a newer version on our channel,
//!   and one every `poll_interval` (±20 %) in any case, the fallback for a missed announcement;
//!   a set that arrives is installed through [`StateDir::import_expected`] with every check an
//!   offline import applies, plus two: the set file must claim the configured channel, and its
//!   index must fit under the memory limit (a set the daemon could not load never replaces one
//!   it can); a refused one leaves the installed set as it was, and an announcement of a version
//!   refused as too large brings no new fetch (the poll still asks);
//! - the spool's oldest batch goes out when no batch is in flight (one at a time); `Ack` deletes
//!   it from the spool, `Conflict` starts a new spool epoch. After a reconnect the same batch is
//!   sent again: the collector recognises it and acknowledges it as a duplicate;
//! - a heartbeat every `heartbeat_interval`;
//! - `Renew` once the client certificate is past half its life; the new certificate replaces
//!   the file atomically and is used from the next connection on.
//!
//! When a session fails the loop waits with exponential backoff and full jitter
//! ([`super::backoff`]) before it connects again; the first connection waits 0-2 s, so agents
//! started together do not arrive together. A revoked agent backs off to the maximum.
//!
//! Invariants: the loop looks at the stop flag at least every 500 ms, whatever it is waiting
//! for; a connection that is silent for [`REPLY_TIMEOUT`] while an answer is owed is dropped;
//! no wait the collector asks for is longer than [`backoff::CAP`]; frames are capped by
//! `[collector] max_set_bytes` before they are read, and the reader reads ahead of the loop
//! only small frames: a frame over [`SMALL_FRAME`] is read only once the loop has finished with
//! the previous large one, so at most one set is in memory; nothing secret is logged.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use picket_proto::wire::{ClientMsg, ErrorCode, Fetch, ServerMsg, MAX_SERVER_FRAME};
use picket_proto::{x509, Limits, TrustAnchor};
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, sleep_until, Instant};

use super::backoff::{self, Backoff};
use super::client::{self, FrameWriter, SMALL_FRAME};
use super::{cert, tls, LinkContext, LinkError};
use crate::store::{self, Expected, Imported, StateDir};
use crate::AgentError;

/// How often the stop flag is looked at, at the least.
pub const STOP_CHECK: Duration = Duration::from_millis(500);
/// How long the connection may stay silent while an answer is owed.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// The window of the random wait before the first connection.
pub const FIRST_CONNECT_SPREAD: Duration = Duration::from_secs(2);
/// How far the poll timer is moved at random, in percent.
const POLL_SPREAD_PERCENT: u64 = 20;
/// Room for the `Set` message around a set file of `max_set_bytes` (its tag, version and
/// length prefix).
const SET_FRAME_OVERHEAD: usize = 64;

/// The largest frame the link accepts when set files may be `max_set_bytes` long.
pub fn frame_cap(max_set_bytes: u64) -> usize {
    usize::try_from(max_set_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(SET_FRAME_OVERHEAD)
        .clamp(SMALL_FRAME, MAX_SERVER_FRAME)
}

/// How long to wait before connecting again after a session failed with `error`: the
/// backoff's next delay, or longer if the collector asked for it, but never longer than
/// [`backoff::CAP`]. A revoked agent waits the cap (nothing will change soon).
fn reconnect_delay(error: &LinkError, backoff: &mut Backoff, random: u64) -> Duration {
    if error.code() == Some(ErrorCode::Revoked) {
        backoff.to_cap();
        return backoff::CAP;
    }
    let d = backoff.next_delay(random);
    let asked = match error {
        LinkError::Refused { error, .. } => backoff::server_wait(error.retry_after_ms, Duration::ZERO),
        _ => Duration::ZERO,
    };
    d.max(asked)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the status or the spool is a bug already reported; the value (a
    // status record, the spool's in-memory index of files that are on disk) stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log(message: impl std::fmt::Display) {
    // A message that starts `warning: ` is logged as a warning: `picket-agent: warning: link: ...`.
    let message = message.to_string();
    if let Some(rest) = message.strip_prefix("warning: ") {
        tracing::warn!(target: "picket_agent::link", "link: {rest}");
    } else {
        tracing::info!(target: "picket_agent::link", "link: {message}");
    }
}

fn stopped(ctx: &LinkContext) -> bool {
    ctx.stop.load(Ordering::SeqCst)
}

/// Sleeps `d`, waking every [`STOP_CHECK`] to look at the stop flag; `false` if asked to stop.
async fn pause(ctx: &LinkContext, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if stopped(ctx) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        sleep((end - now).min(STOP_CHECK)).await;
    }
}

/// Runs `fut` unless the stop flag is set first (then `None`).
async fn unless_stopped<T>(ctx: &LinkContext, fut: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = sleep(STOP_CHECK) => {
                if stopped(ctx) {
                    return None;
                }
            }
        }
    }
}

/// The installed set's version and timestamp version, re-read only when `set.pkt` changes.
#[derive(Debug, Default)]
struct Installed {
    identity: Option<(u64, u64, i64, i64, u64)>,
    versions: (Option<u64>, Option<u64>),
    /// The newest set version refused because its index would not fit under the memory limit:
    /// an announcement of it (or of an older one) brings no fetch, so the agent does not
    /// download it again and again; the poll still asks, in case the limit was raised.
    too_big: Option<u64>,
}

impl Installed {
    fn get(&mut self, dir: &Path) -> (Option<u64>, Option<u64>) {
        use std::os::unix::fs::MetadataExt;
        let identity = std::fs::metadata(dir.join(store::SET_FILE))
            .ok()
            .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()));
        if identity.is_none() || identity != self.identity {
            self.versions = match store::load_set(dir, &Limits::default()) {
                Ok(Some(t)) => (Some(t.manifest().version), Some(t.timestamp().version)),
                Ok(None) => (None, None),
                Err(e) => {
                    log(format!(
                        "warning: the installed set cannot be read ({e}); asking for a full one"
                    ));
                    (None, None)
                }
            };
            self.identity = identity;
        }
        self.versions
    }
}

/// Runs the link until `ctx.stop` is set.
pub async fn run(ctx: LinkContext) {
    let addr = ctx.config.address.clone();
    lock(&ctx.status).collector = Some(addr.clone());
    let mut backoff = Backoff::new(backoff::BASE, backoff::CAP);
    let mut installed = Installed::default();
    if !pause(
        &ctx,
        backoff::full_jitter(FIRST_CONNECT_SPREAD, backoff::random_u64()),
    )
    .await
    {
        return;
    }
    loop {
        let mut connected_at = None;
        let result = session(&ctx, &mut installed, &mut connected_at).await;
        lock(&ctx.status).connected = false;
        let error = match result {
            Ok(()) => return,                  // asked to stop
            Err(_) if stopped(&ctx) => return, // cut short by the stop: not a failure
            Err(e) => e,
        };
        if connected_at.is_some_and(|t: Instant| t.elapsed() >= backoff::HEALTHY_SESSION) {
            backoff.reset();
        }
        let delay = reconnect_delay(&error, &mut backoff, backoff::random_u64());
        if error.code() == Some(ErrorCode::Revoked) {
            log(format!(
                "error: {error}; this agent is revoked: matching goes on with the installed set, the agent asks again every {} minutes, and enrolling it again restores the link",
                backoff::CAP.as_secs() / 60
            ));
        } else {
            log(format!(
                "error: {error}; reconnecting in {:.1}s (attempt {})",
                delay.as_secs_f64(),
                backoff.attempt()
            ));
        }
        lock(&ctx.status).last_error = Some(error.to_string());
        if !pause(&ctx, delay).await {
            return;
        }
    }
}

/// What the reader task hands the loop.
enum Incoming {
    /// A frame header arrived: the connection is alive, the body is on its way.
    Started,
    /// A whole message, and for a frame over [`SMALL_FRAME`] the permit without which the
    /// reader reads no other large frame: the loop drops it once it is done with the message.
    Msg(ServerMsg, Option<OwnedSemaphorePermit>),
    /// Reading failed; the session is over.
    Failed(LinkError),
}

/// The reader task: frames from `rd` to `tx` until the connection fails or the loop is gone.
/// Each header is checked against `cap` before the body is read. Small frames are read ahead
/// of the loop (the channel holds a few); a frame over [`SMALL_FRAME`] waits for the one
/// permit, which the previous large message holds until the loop has finished with it, so a
/// collector cannot make the agent hold several sets at once.
async fn read_frames<R: AsyncRead + Unpin>(
    mut rd: R,
    addr: String,
    cap: usize,
    wait: Duration,
    tx: mpsc::Sender<Incoming>,
) {
    let large = Arc::new(Semaphore::new(1));
    loop {
        let len = match client::read_header(&mut rd, &addr, None, cap).await {
            Ok(len) => len,
            Err(e) => {
                let _ = tx.send(Incoming::Failed(e)).await;
                return;
            }
        };
        if tx.send(Incoming::Started).await.is_err() {
            return;
        }
        let permit = if len > SMALL_FRAME {
            match large.clone().acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => return, // never closed
            }
        } else {
            None
        };
        let event = match client::read_body(&mut rd, &addr, len, wait).await {
            Ok(m) => Incoming::Msg(m, permit),
            Err(e) => {
                let _ = tx.send(Incoming::Failed(e)).await;
                return;
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

/// Aborts the reader task when the session ends, whichever way.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers the loop is waiting for, each with the time it was asked.
#[derive(Debug, Default)]
struct Owed {
    fetch: Option<Instant>,
    report: Option<(u64, u64, Instant)>,
    renew: Option<Instant>,
}

impl Owed {
    fn oldest(&self) -> Option<(Instant, &'static str)> {
        [
            self.fetch.map(|t| (t, "a fetch")),
            self.report.map(|(_, _, t)| (t, "a report")),
            self.renew.map(|t| (t, "a renewal")),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(t, _)| *t)
    }
}

fn read_anchor(path: &Path) -> Result<TrustAnchor, LinkError> {
    let bytes = tls::read_small(path)?;
    let text = String::from_utf8(bytes).map_err(|_| LinkError::file(path)("not UTF-8 text".into()))?;
    TrustAnchor::parse(&text).map_err(|e| LinkError::file(path)(e.to_string()))
}

/// One session: connect, then serve it until it fails (`Err`) or the agent stops (`Ok`).
async fn session(
    ctx: &LinkContext,
    installed: &mut Installed,
    connected_at: &mut Option<Instant>,
) -> Result<(), LinkError> {
    let cfg = &ctx.config;
    let addr = cfg.address.as_str();
    // Every file is read again for each connection: a renewed certificate, a replaced anchor
    // or a fixed key take effect without a restart.
    let tls_config = tls::agent_config(&cfg.ca, &cfg.cert, &cfg.key)?;
    let public_key = tls::public_key(&tls::read_key_file(&cfg.key)?).map_err(LinkError::file(&cfg.key))?;
    let machine_id = crate::enroll::read_machine_id(cfg.machine_id_file.as_deref())?.0;
    let machine = picket_proto::wire::machine_hash(&public_key, &machine_id);
    let recorded = ctx.state_dir.join(crate::enroll::MACHINE_ID_FILE);
    if let Ok((at_enrolment, _)) = crate::enroll::read_machine_id(Some(&recorded)) {
        if at_enrolment != machine_id {
            log(format!(
                "warning: this host's machine id is not the one recorded at enrolment ({}): the state directory was copied or the image cloned; the collector sees it too",
                recorded.display()
            ));
        }
    }
    let anchor = read_anchor(&cfg.trust)?;
    let validity = x509::validity(&tls::read_cert_file(&cfg.cert)?);
    if let Some((_, not_after)) = validity {
        if unix_now() > not_after {
            log(format!(
                "warning: the client certificate {} expired at {}; the collector will refuse it: enrol the agent again",
                cfg.cert.display(),
                picket_proto::rfc3339(not_after)
            ));
        }
    }
    let Some(session) =
        unless_stopped(ctx, client::connect(addr, &cfg.server_name, tls_config, machine)).await
    else {
        return Ok(());
    };
    let mut session = session?;
    let welcome = session.welcome().clone();
    let Some(agent_id) = welcome.agent.clone() else {
        return Err(LinkError::Protocol {
            addr: addr.to_owned(),
            message: "the collector did not recognise this agent's certificate (the welcome names no agent)"
                .into(),
        });
    };
    *connected_at = Some(Instant::now());
    {
        let mut st = lock(&ctx.status);
        st.connected = true;
        st.last_contact = Some(unix_now());
        st.last_error = None;
    }
    let skew = backoff::clock_skew(welcome.now, unix_now());
    log(format!(
        "connected to {addr} as agent {agent_id} (protocol {}{})",
        welcome.version,
        if skew.unsigned_abs() > 60 {
            format!(", clock skew {skew}s")
        } else {
            String::new()
        }
    ));
    session.set_max_frame(frame_cap(cfg.max_set_bytes));
    let (reader, mut writer) = session.into_split();
    let (rd, reader_addr, read_timeout, cap) = reader.into_parts();
    let (tx, mut rx) = mpsc::channel::<Incoming>(4);
    let _reader = AbortOnDrop(tokio::spawn(read_frames(rd, reader_addr, cap, read_timeout, tx)));

    let mut owed = Owed::default();
    let mut fetch_wanted = true;
    let mut quiet_until: Option<Instant> = None;
    let mut last_heard = Instant::now();
    let mut next_heartbeat = Instant::now();
    let mut next_poll = Instant::now();
    let mut renew_at = Some(validity.map_or(0, |(nb, na)| cert::renew_at(nb, na)));
    loop {
        if stopped(ctx) {
            writer.close().await;
            return Ok(());
        }
        let now = Instant::now();
        if now >= next_poll {
            fetch_wanted = true;
            next_poll = now + backoff::spread(cfg.poll_interval, POLL_SPREAD_PERCENT, backoff::random_u64());
        }
        if quiet_until.is_some_and(|q| now >= q) {
            quiet_until = None;
        }
        if quiet_until.is_none() {
            if fetch_wanted && owed.fetch.is_none() {
                let (have, have_timestamp) = installed.get(&ctx.state_dir);
                send(
                    ctx,
                    &mut writer,
                    ClientMsg::Fetch(Fetch {
                        channel: cfg.channel.clone(),
                        have,
                        have_timestamp,
                    }),
                )
                .await?;
                owed.fetch = Some(Instant::now());
                fetch_wanted = false;
                next_poll = Instant::now()
                    + backoff::spread(cfg.poll_interval, POLL_SPREAD_PERCENT, backoff::random_u64());
            }
            if owed.renew.is_none() && renew_at.is_some_and(|t| unix_now() >= t) {
                send(ctx, &mut writer, ClientMsg::Renew).await?;
                owed.renew = Some(Instant::now());
            }
            if owed.report.is_none() {
                let pending = lock(&ctx.spool).pending();
                if let Some(batch) = pending {
                    let (epoch, seq) = (batch.epoch, batch.seq);
                    send(ctx, &mut writer, ClientMsg::Report(batch)).await?;
                    owed.report = Some((epoch, seq, Instant::now()));
                }
            }
            if Instant::now() >= next_heartbeat {
                send(ctx, &mut writer, ClientMsg::Heartbeat((ctx.heartbeat)())).await?;
                next_heartbeat = Instant::now() + cfg.heartbeat_interval;
            }
        }
        if let Some((asked, what)) = owed.oldest() {
            let silent_since = asked.max(last_heard);
            if silent_since.elapsed() >= REPLY_TIMEOUT {
                return Err(LinkError::Timeout {
                    addr: addr.to_owned(),
                    what: format!("waiting for the answer to {what}"),
                    after: REPLY_TIMEOUT,
                });
            }
        }
        let mut wake_at = Instant::now() + STOP_CHECK;
        if quiet_until.is_none() {
            wake_at = wake_at.min(next_heartbeat).min(next_poll);
        }
        tokio::select! {
            event = rx.recv() => match event {
                None => {
                    return Err(LinkError::Closed { addr: addr.to_owned(), during: "(the reader stopped)".into() })
                }
                Some(Incoming::Failed(e)) => return Err(e),
                Some(Incoming::Started) => last_heard = Instant::now(),
                Some(Incoming::Msg(msg, _large)) => {
                    last_heard = Instant::now();
                    lock(&ctx.status).last_contact = Some(unix_now());
                    let mut s = Served {
                        ctx,
                        addr,
                        anchor: &anchor,
                        public_key: &public_key,
                        installed,
                        owed: &mut owed,
                        fetch_wanted: &mut fetch_wanted,
                        quiet_until: &mut quiet_until,
                        renew_at: &mut renew_at,
                    };
                    s.handle(msg).await?;
                }
            },
            _ = ctx.wake.notified() => {}
            _ = sleep_until(wake_at) => {}
        }
    }
}

/// Sends one message; a write the collector holds up (backpressure) gives way to the stop flag.
async fn send(ctx: &LinkContext, writer: &mut FrameWriter, msg: ClientMsg) -> Result<(), LinkError> {
    unless_stopped(ctx, writer.send(&msg)).await.unwrap_or_else(|| {
        Err(LinkError::Closed {
            addr: ctx.config.address.clone(),
            during: "(the agent is stopping)".into(),
        })
    })
}

/// The loop's state that handling one message may change.
struct Served<'a> {
    ctx: &'a LinkContext,
    addr: &'a str,
    anchor: &'a TrustAnchor,
    public_key: &'a [u8; 32],
    installed: &'a mut Installed,
    owed: &'a mut Owed,
    fetch_wanted: &'a mut bool,
    quiet_until: &'a mut Option<Instant>,
    renew_at: &'a mut Option<i64>,
}

impl Served<'_> {
    async fn handle(&mut self, msg: ServerMsg) -> Result<(), LinkError> {
        let cfg = &self.ctx.config;
        match msg {
            ServerMsg::NewVersion { channel, version } => {
                let (have, _) = self.installed.get(&self.ctx.state_dir);
                let refused = self.installed.too_big.is_some_and(|v| version <= v);
                if channel == cfg.channel && have.is_none_or(|h| version > h) && !refused {
                    *self.fetch_wanted = true;
                }
            }
            ServerMsg::Set { version, file } => {
                self.owed.fetch = None;
                self.install(file, version).await;
            }
            ServerMsg::UpToDate { version, file } => {
                self.owed.fetch = None;
                if !file.is_empty() {
                    self.install(file, version).await;
                }
            }
            ServerMsg::Ack { epoch, seq, duplicate } => match self.owed.report {
                Some((e, s, _)) if (e, s) == (epoch, seq) => {
                    self.owed.report = None;
                    if let Err(err) = lock(&self.ctx.spool).ack(epoch, seq) {
                        // The batch stays in the spool and goes out again; the collector
                        // acknowledges it as a duplicate.
                        log(format!("warning: acknowledging batch {epoch:016x}/{seq} in the spool: {err}"));
                    }
                    if duplicate {
                        log(format!("batch {epoch:016x}/{seq} was already at the collector"));
                    }
                }
                _ => log(format!(
                    "warning: collector {} acknowledged batch {epoch:016x}/{seq}, which is not the one in flight; ignored",
                    self.addr
                )),
            },
            ServerMsg::Conflict { epoch, seq } => match self.owed.report {
                Some((e, s, _)) if (e, s) == (epoch, seq) => {
                    self.owed.report = None;
                    log(format!(
                        "collector {} holds other sightings under batch {epoch:016x}/{seq}: this spool was restored from an older copy; starting a new epoch",
                        self.addr
                    ));
                    if let Err(err) = lock(&self.ctx.spool).restart_epoch() {
                        return Err(LinkError::File {
                            path: self.ctx.state_dir.join("spool"),
                            message: format!("starting a new spool epoch: {err}"),
                        });
                    }
                }
                _ => log(format!(
                    "warning: collector {} reported a conflict on batch {epoch:016x}/{seq}, which is not the one in flight; ignored",
                    self.addr
                )),
            },
            ServerMsg::Renewed(r) => {
                self.owed.renew = None;
                self.renewed(&r.certificate, r.not_after);
            }
            ServerMsg::Error(error) if error.code == ErrorCode::RateLimited => {
                let wait = backoff::server_wait(error.retry_after_ms, Duration::from_secs(1));
                log(format!(
                    "collector {} asks the agent to slow down; pausing {}ms: {}",
                    self.addr,
                    wait.as_millis(),
                    error.message
                ));
                *self.quiet_until = Some(Instant::now() + wait);
                // Whatever was dropped is asked again after the pause; a batch the collector
                // did store is acknowledged again as a duplicate.
                if self.owed.fetch.take().is_some() {
                    *self.fetch_wanted = true;
                }
                self.owed.report = None;
                self.owed.renew = None;
            }
            ServerMsg::Error(error) => {
                return Err(LinkError::Refused {
                    addr: self.addr.to_owned(),
                    error,
                })
            }
            other @ (ServerMsg::Welcome(_) | ServerMsg::Enrolled(_)) => {
                return Err(client::unexpected(self.addr, "no welcome or enrolment in a session", &other))
            }
        }
        Ok(())
    }

    /// Verifies and installs a set file from the collector; a refusal is logged and the old set
    /// stays.
    async fn install(&mut self, file: Vec<u8>, version: u64) {
        let dir = self.ctx.state_dir.clone();
        let anchor = self.anchor.clone();
        let origin = PathBuf::from(format!("set version {version} from collector {}", self.addr));
        let origin2 = origin.clone();
        let channel = self.ctx.config.channel.clone();
        let memory_limit = self.ctx.memory_limit.load(Ordering::SeqCst);
        let import = tokio::task::spawn_blocking(move || {
            let expected = Expected {
                channel: &channel,
                memory_limit,
            };
            StateDir::open(&dir)?.import_expected(
                &anchor,
                &origin2,
                &file,
                unix_now(),
                &Limits::default(),
                &expected,
            )
        });
        // The import is atomic (rename): stopping while it runs leaves the old set or the new.
        let Some(result) = unless_stopped(self.ctx, import).await else {
            return;
        };
        match result {
            Ok(Ok(Imported::NewVersion { from, to, records })) => {
                log(format!(
                    "installed set version {to} ({records} indicators{}) from collector {}",
                    from.map(|f| format!(", was {f}")).unwrap_or_default(),
                    self.addr
                ));
                self.ctx.set_installed.store(true, Ordering::SeqCst);
            }
            Ok(Ok(Imported::Refreshed { version })) => {
                log(format!(
                    "set version {version}: freshness renewed by collector {}",
                    self.addr
                ));
                self.ctx.set_installed.store(true, Ordering::SeqCst);
            }
            Ok(Ok(Imported::AlreadyInstalled { .. })) => {}
            Ok(Err(e)) => {
                if let AgentError::TooBig { version, .. } = &e {
                    self.installed.too_big = Some(self.installed.too_big.unwrap_or(0).max(*version));
                }
                let message = install_failure(&origin, &e);
                log(format!("error: {message}"));
                lock(&self.ctx.status).last_error = Some(message);
            }
            Err(e) => {
                let message = format!("{}: the import stopped: {e}", origin.display());
                log(format!("error: {message}"));
                lock(&self.ctx.status).last_error = Some(message);
            }
        }
    }

    /// Writes a renewed client certificate in place of the old one (atomically), after checking
    /// it is for the agent's key.
    fn renewed(&mut self, der: &[u8], not_after: i64) {
        let path = &self.ctx.config.cert;
        // Not asked again in this session whatever happens: a collector that cannot renew
        // now is asked again at the next connection.
        *self.renew_at = None;
        match cert::spki(der) {
            Ok(spki) if spki == x509::ed25519_spki(self.public_key) => {}
            _ => {
                log(format!(
                    "error: collector {} sent a renewed certificate that is not for this agent's key; keeping {}",
                    self.addr,
                    path.display()
                ));
                return;
            }
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
            log(format!(
                "error: {}: not a file path; the renewed certificate is not kept",
                path.display()
            ));
            return;
        };
        match store::write_atomically(dir, name, cert::pem("CERTIFICATE", der).as_bytes()) {
            Ok(()) => log(format!(
                "client certificate renewed until {}; {} replaced, used from the next connection",
                picket_proto::rfc3339(not_after),
                path.display()
            )),
            Err(e) => log(format!("error: writing the renewed certificate: {e}")),
        }
    }
}

/// What the log and `status` say when a set fetched from the collector was not installed.
fn install_failure(origin: &Path, e: &AgentError) -> String {
    match e {
        // The other errors name the set and the collector already (as their path).
        AgentError::TooBig { .. } => {
            format!("{}: refused, the installed set stays: {e}", origin.display())
        }
        // A local failure (a full disk, a read-only state directory) is not the set's fault:
        // saying "refused" would send an analyst looking for a forged set.
        AgentError::Io { .. } | AgentError::Locked { .. } => {
            format!("the set could not be installed, the installed one stays: {e}")
        }
        _ => format!("the set was refused, the installed one stays: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use picket_proto::wire::{encode_frame, FrameError, WireError};
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn set_frame(version: u64, len: usize) -> Vec<u8> {
        encode_frame(&ServerMsg::Set {
            version,
            file: vec![7; len],
        })
    }

    async fn next(rx: &mut mpsc::Receiver<Incoming>) -> Incoming {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("the reader is running")
    }

    /// Regression: the reader read up to four frames ahead of the loop, so a collector could
    /// make the agent hold several sets of up to 512 MiB at once.
    #[tokio::test]
    async fn the_reader_holds_back_a_large_frame_until_the_loop_is_done_with_the_last() {
        let big = 2 * SMALL_FRAME;
        let (mut collector, agent) = tokio::io::duplex(64 << 10);
        let (tx, mut rx) = mpsc::channel(4);
        let _reader = AbortOnDrop(tokio::spawn(read_frames(
            agent,
            "collector.test:4433".into(),
            frame_cap(256 << 20),
            Duration::from_secs(5),
            tx,
        )));
        let writer = tokio::spawn(async move {
            for version in [1, 2] {
                collector.write_all(&set_frame(version, big)).await.unwrap();
            }
            let small = encode_frame(&ServerMsg::NewVersion {
                channel: "default".into(),
                version: 3,
            });
            collector.write_all(&small).await.unwrap();
            collector
        });
        assert!(matches!(next(&mut rx).await, Incoming::Started));
        let first = next(&mut rx).await;
        let Incoming::Msg(ServerMsg::Set { version: 1, .. }, Some(permit)) = first else {
            panic!("the first set, with the permit")
        };
        // The second header is read (the connection is alive), its body is not: the collector
        // cannot even finish writing it.
        assert!(matches!(next(&mut rx).await, Incoming::Started));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "nothing more while the first set is held");
        assert!(!writer.is_finished());
        // Done with the first set: the second one comes, then the small frame behind it.
        drop(permit);
        let Incoming::Msg(ServerMsg::Set { version: 2, .. }, Some(_held)) = next(&mut rx).await else {
            panic!("the second set")
        };
        assert!(matches!(next(&mut rx).await, Incoming::Started));
        // A small frame is read while the large one is still held.
        let Incoming::Msg(ServerMsg::NewVersion { version: 3, .. }, None) = next(&mut rx).await else {
            panic!("the announcement, without a permit")
        };
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_frame_over_the_configured_cap_ends_the_reader_on_its_header() {
        let cap = frame_cap(1 << 20);
        let (mut collector, agent) = tokio::io::duplex(64 << 10);
        let (tx, mut rx) = mpsc::channel(4);
        let _reader = AbortOnDrop(tokio::spawn(read_frames(
            agent,
            "collector.test:4433".into(),
            cap,
            Duration::from_secs(30),
            tx,
        )));
        // A header for 2 MiB (well under the protocol's 512 MiB), and no body at all.
        collector.write_all(&((2u32 << 20).to_be_bytes())).await.unwrap();
        match next(&mut rx).await {
            Incoming::Failed(LinkError::Frame {
                error: FrameError::TooLarge { len, cap: c },
                addr,
            }) => {
                assert_eq!((len, c), (2 << 20, cap));
                assert_eq!(addr, "collector.test:4433");
            }
            _ => panic!("a frame error on the header"),
        }
        assert!(rx.recv().await.is_none(), "the reader stopped");
    }

    #[test]
    fn the_frame_cap_follows_max_set_bytes_within_the_protocols_bounds() {
        assert_eq!(frame_cap(256 << 20), (256 << 20) + SET_FRAME_OVERHEAD);
        assert_eq!(frame_cap(1 << 20), (1 << 20) + SET_FRAME_OVERHEAD);
        assert_eq!(frame_cap(0), SMALL_FRAME);
        assert_eq!(frame_cap(u64::MAX), MAX_SERVER_FRAME);
    }

    #[test]
    fn a_set_not_installed_for_want_of_space_is_not_called_refused() {
        let origin = Path::new("set version 7 from collector c.test:4433");
        let full = AgentError::Io {
            path: "set version 7 from collector c.test:4433".into(),
            error: std::io::Error::from_raw_os_error(28),
        };
        let said = install_failure(origin, &full);
        assert!(said.starts_with("the set could not be installed"), "{said}");
        assert!(said.contains("No space left on device"), "{said}");
        assert!(!said.contains("refused"), "{said}");
        let forged = AgentError::Verify {
            path: origin.into(),
            error: picket_proto::Error::BadSignature {
                what: picket_proto::Part::Manifest,
                key: "k1".into(),
            },
        };
        assert!(install_failure(origin, &forged).starts_with("the set was refused"));
    }

    fn refused(code: ErrorCode, retry_after_ms: Option<u64>) -> LinkError {
        LinkError::Refused {
            addr: "collector.test:4433".into(),
            error: WireError {
                code,
                message: "busy".into(),
                retry_after_ms,
            },
        }
    }

    /// Regression: a collector's `retry_after_ms` of u64::MAX parked the link until a restart.
    #[test]
    fn no_reconnect_waits_longer_than_the_backoff_cap() {
        for asked in [Some(u64::MAX), Some(86_400_000), Some(300_001)] {
            let mut b = Backoff::new(backoff::BASE, backoff::CAP);
            let d = reconnect_delay(&refused(ErrorCode::Internal, asked), &mut b, 0);
            assert_eq!(d, backoff::CAP, "{asked:?}");
            assert_eq!(
                refused(ErrorCode::Internal, asked).retry_after(),
                Some(backoff::CAP)
            );
        }
        // A shorter ask is honoured over a shorter backoff draw.
        let mut b = Backoff::new(backoff::BASE, backoff::CAP);
        let d = reconnect_delay(&refused(ErrorCode::Internal, Some(7_000)), &mut b, 0);
        assert_eq!(d, Duration::from_secs(7));
        // Without an ask, the backoff's draw.
        let mut b = Backoff::new(backoff::BASE, backoff::CAP);
        let d = reconnect_delay(&refused(ErrorCode::Internal, None), &mut b, 500);
        assert_eq!(d, Duration::from_millis(500));
        // Revoked: the cap, and the backoff stays there.
        let mut b = Backoff::new(backoff::BASE, backoff::CAP);
        let d = reconnect_delay(&refused(ErrorCode::Revoked, Some(u64::MAX)), &mut b, 0);
        assert_eq!(d, backoff::CAP);
        assert_eq!(
            backoff::window(backoff::BASE, backoff::CAP, b.attempt()),
            backoff::CAP
        );
    }
}
