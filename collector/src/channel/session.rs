//! One agent session: TLS, the hello, then requests answered in order until the agent leaves,
//! goes idle, floods, breaks the protocol, is replaced by a newer session of its own, or is
//! revoked.
//!
//! The session's identity is the key its verified client certificate certifies and nothing
//! else: no field of any message names the agent. Everything before authentication runs under
//! one deadline counted from accept (`hello_timeout`): the TLS handshake, the hello, and, for a
//! session without a certificate, its one `Enroll` and the answer, after which it is closed.
//! An enrolment is paced per source address and checked read-only (channel, proof, token)
//! before it may queue on the single writer.
//!
//! An authenticated session runs two halves. The reader is the only thing that reads the
//! socket: it checks each length prefix against the cap before allocating, charges the agent's
//! rate budget before reading the body (and, when the budget is short, answers `RateLimited`
//! and stops reading for the wait), handles the request and queues the answer. The writer sends
//! the queued answers in order, tells the agent of new set versions (coalesced: a watch holds
//! only the newest), and ends the session the moment the agent is revoked, its certificate runs
//! out, a newer session of the same agent replaces it, or the collector can no longer read the
//! revoked agents. The queue between them is short, so a slow reader stalls its own requests
//! and nothing else; a set file in it is a shared reference, never a copy.
//!
//! Every close the collector starts is a lingering close ([`linger`]): after the last frames,
//! TLS `close_notify` and a TCP FIN, then what the agent still sends is read and dropped for a
//! moment before the socket is dropped. Dropping a socket with unread input makes the kernel
//! reset the connection, and a reset throws away whatever the agent had not yet received: the
//! very answers that say why it was cut off.
//!
//! Invariant: every error frame that ends a session says what was wrong and reaches an agent
//! that keeps reading; no request is acted on after the session was refused, replaced or
//! revoked.

use std::collections::HashSet;
use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use picket_proto::rfc3339;
use picket_proto::wire::{
    self, Batch, ClientMsg, Enroll, ErrorCode, Fetch, FrameError, Hello, ServerMsg, Welcome, WireError,
    MAX_CLIENT_FRAME, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};
use tokio_rustls::server::TlsStream;

use super::db::{self, Job};
use super::distribute::{self, Plan};
use super::limits::{self, SourceSlot};
use super::registry::Ticket;
use super::{unix_now, Shared};
use crate::export::{self, Current};
use crate::fleet::{self, AgentRow, EnrolFailure};
use crate::reports::BatchOutcome;

/// Answers queued between reader and writer.
const OUTBOUND: usize = 2;
/// Bytes written per step, so a stalled reader is noticed within the write timeout.
const WRITE_CHUNK: usize = 64 << 10;
/// How long a closing error frame may take to write, and the TLS close after it.
const LAST_WORDS: Duration = Duration::from_secs(2);
/// How long a closing session keeps its socket after the FIN, reading and dropping what the
/// agent still sends, so that the agent receives everything before the socket goes.
const LINGER: Duration = Duration::from_secs(1);
/// The most bytes read and dropped while lingering; past it the socket is only held until
/// [`LINGER`] is up (a flood is not worth reading, and holding costs nothing).
const LINGER_BYTES: usize = 64 << 10;
/// The largest frame before authentication: a hello or an enrolment request (each well under
/// it: their strings are capped at `MAX_FIELD`). Connections that have not authenticated cost
/// little memory however many there are.
const PRE_AUTH_FRAME: usize = 4 << 10;
/// How long a connection turned away because too many are enrolling is told to wait.
const RETRY_AFTER_BUSY_MS: u64 = 1_000;
/// How much earlier than half-way through a certificate's life a renewal is accepted, for agents
/// whose clocks run ahead of the collector's (at most a quarter of the life).
const RENEW_SKEW: i64 = 300;

type Tls = TlsStream<TcpStream>;

/// A frame for the writer: shared (a set file) or the session's own.
enum Out {
    Shared(Arc<[u8]>),
    Owned(Vec<u8>),
}

impl Out {
    fn msg(msg: &ServerMsg) -> Out {
        Out::Owned(wire::encode_frame(msg))
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Out::Shared(b) => b,
            Out::Owned(b) => b,
        }
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError {
        code,
        message: message.into(),
        retry_after_ms: None,
    }
}

fn error_frame(e: WireError) -> Out {
    Out::msg(&ServerMsg::Error(e))
}

fn human(d: Duration) -> String {
    if d.as_secs() >= 60 && d.as_secs().is_multiple_of(60) {
        format!("{} min", d.as_secs() / 60)
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Why a frame was not read.
enum ReadFail {
    /// The peer closed or the connection failed: nothing to say.
    Gone,
    /// Something to tell the peer before closing.
    Tell(WireError),
}

/// A length prefix being read. Reading it can be abandoned and resumed without losing bytes,
/// so the session can look whether a header is already waiting without committing to wait.
#[derive(Default)]
struct Header {
    bytes: [u8; 4],
    filled: usize,
}

impl Header {
    /// Reads until the header is complete (cancel-safe).
    async fn fill<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> std::io::Result<()> {
        while self.filled < 4 {
            let n = rd.read(&mut self.bytes[self.filled..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.filled += n;
        }
        Ok(())
    }

    /// Whether a whole header can be read without waiting.
    async fn ready<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> std::io::Result<bool> {
        // The inner future is polled once before the zero timer is looked at.
        match timeout(Duration::ZERO, self.fill(rd)).await {
            Ok(r) => r.map(|()| true),
            Err(_) => Ok(false),
        }
    }
}

/// Reads one whole frame of at most `cap` bytes, all of it by `deadline`.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    cap: usize,
    deadline: Instant,
    waited: &str,
) -> Result<Vec<u8>, ReadFail> {
    let len = read_header(rd, &mut Header::default(), cap, deadline, waited).await?;
    let left = deadline.saturating_duration_since(Instant::now());
    read_body(rd, len, left).await
}

/// Completes `header` by `deadline` and checks the length against `cap`.
async fn read_header<R: AsyncRead + Unpin>(
    rd: &mut R,
    header: &mut Header,
    cap: usize,
    deadline: Instant,
    waited: &str,
) -> Result<usize, ReadFail> {
    match timeout_at(deadline, header.fill(rd)).await {
        Err(_) => return Err(ReadFail::Tell(error(ErrorCode::Timeout, waited))),
        Ok(Err(_)) => return Err(ReadFail::Gone),
        Ok(Ok(())) => {}
    }
    header.filled = 0;
    wire::frame_len(header.bytes, cap).map_err(|e| {
        ReadFail::Tell(match e {
            FrameError::TooLarge { len, cap } => error(
                ErrorCode::TooLarge,
                format!("a frame of {len} bytes is over the collector's cap of {cap}"),
            ),
            other => error(ErrorCode::BadFrame, other.to_string()),
        })
    })
}

/// Reads a body of `len` bytes (checked against its cap) within `read_timeout`. The buffer
/// grows as bytes arrive, so a peer announcing a large frame and sending it slowly holds only
/// what it sent.
async fn read_body<R: AsyncRead + Unpin>(
    rd: &mut R,
    len: usize,
    read_timeout: Duration,
) -> Result<Vec<u8>, ReadFail> {
    let mut body = Vec::with_capacity(len.min(WRITE_CHUNK));
    let read = async {
        (&mut *rd).take(len as u64).read_to_end(&mut body).await?;
        if body.len() < len {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        Ok(())
    };
    match timeout(read_timeout, read).await {
        Err(_) => Err(ReadFail::Tell(error(
            ErrorCode::Timeout,
            format!(
                "the body of a {len}-byte frame did not arrive within {}",
                human(read_timeout)
            ),
        ))),
        Ok(Err(_)) => Err(ReadFail::Gone),
        Ok(Ok(_)) => Ok(body),
    }
}

/// Reads and drops `len` bytes (a refused frame's body) without allocating them.
async fn skip_body<R: AsyncRead + Unpin>(
    rd: &mut R,
    len: usize,
    read_timeout: Duration,
) -> Result<(), ReadFail> {
    let mut left = len;
    let mut scratch = [0u8; 8 << 10];
    let deadline = Instant::now() + read_timeout;
    while left > 0 {
        let n = left.min(scratch.len());
        match timeout_at(deadline, rd.read_exact(&mut scratch[..n])).await {
            Err(_) => {
                return Err(ReadFail::Tell(error(
                    ErrorCode::Timeout,
                    format!(
                        "the body of a {len}-byte frame did not arrive within {}",
                        human(read_timeout)
                    ),
                )))
            }
            Ok(Err(_)) => return Err(ReadFail::Gone),
            Ok(Ok(_)) => left -= n,
        }
    }
    Ok(())
}

/// Decodes a frame body as a client message and checks its caps.
fn decode(body: &[u8]) -> Result<ClientMsg, WireError> {
    let msg: ClientMsg = wire::decode_body(body).map_err(|e| error(ErrorCode::BadFrame, e.to_string()))?;
    msg.check().map_err(|e| error(ErrorCode::BadRequest, e))?;
    Ok(msg)
}

/// Writes `bytes`, each chunk within `per_chunk`.
async fn write_timed<W: AsyncWrite + Unpin>(
    wr: &mut W,
    bytes: &[u8],
    per_chunk: Duration,
) -> std::io::Result<()> {
    let slow = || std::io::Error::new(std::io::ErrorKind::TimedOut, "the agent stopped reading");
    for chunk in bytes.chunks(WRITE_CHUNK) {
        timeout(per_chunk, wr.write_all(chunk))
            .await
            .map_err(|_| slow())??;
    }
    timeout(per_chunk, wr.flush()).await.map_err(|_| slow())?
}

/// How a session's writer ended: with its last frames written (close it lingering), or cut
/// off mid-frame or by a peer that stopped reading (nothing more can reach it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Linger,
    Cut,
}

/// Says `e`: the session's last frame.
async fn last_words<W: AsyncWrite + Unpin>(wr: &mut W, e: WireError) -> End {
    let frame = wire::encode_frame(&ServerMsg::Error(e));
    match write_timed(wr, &frame, LAST_WORDS).await {
        Ok(()) => End::Linger,
        Err(_) => End::Cut,
    }
}

/// Closes `tls` the way the collector closes every session it ends: TLS `close_notify` and a
/// TCP FIN after what was written, then what the peer still sends is read and dropped until it
/// closes too, for at most [`LINGER`] (reading at most [`LINGER_BYTES`] of it). Only then is
/// the socket dropped: dropped with unread input, it would be reset, and the peer would lose
/// whatever it had not yet read.
async fn linger(mut tls: Tls) {
    if !matches!(timeout(LAST_WORDS, tls.shutdown()).await, Ok(Ok(()))) {
        return;
    }
    let (mut tcp, _) = tls.into_inner();
    let until = Instant::now() + LINGER;
    let mut scratch = vec![0u8; 16 << 10];
    let mut left = LINGER_BYTES;
    while left > 0 {
        match timeout_at(until, tcp.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            // The peer closed (nothing unread is left to cause a reset), the connection
            // failed, or the time is up.
            _ => return,
        }
    }
    // A flood: not worth reading, but the peer gets the rest of the time to take what was sent.
    sleep_until(until).await;
}

/// Says `e` (if anything) and closes `tls` lingering: a session ended before it was split.
async fn close(mut tls: Tls, e: Option<WireError>) {
    if let Some(e) = e {
        crate::metrics::session_refused();
        if last_words(&mut tls, e).await == End::Cut {
            return;
        }
    }
    linger(tls).await
}

/// Resolves when `agent` is in the revoked set (at once if it already is).
async fn revoked(rx: &mut watch::Receiver<Arc<HashSet<String>>>, agent: &str) {
    loop {
        if rx.borrow_and_update().contains(agent) {
            return;
        }
        if rx.changed().await.is_err() {
            pending::<()>().await;
        }
    }
}

/// Resolves when the collector can no longer read the revoked set (at once if it cannot now).
async fn blinded(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            pending::<()>().await;
        }
    }
}

/// What a session is told when the collector cannot read the revoked agents.
fn blind_error() -> WireError {
    WireError {
        code: ErrorCode::Internal,
        message: "the collector cannot read its list of revoked agents, so it serves no agent until it can; try again later".into(),
        retry_after_ms: Some(db::RETRY_AFTER_DB_FAILURE_MS),
    }
}

/// Resolves with the channel's state when it changes.
async fn new_version(rx: &mut Option<watch::Receiver<Option<Current>>>) -> Current {
    let Some(rx) = rx else {
        return pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return pending().await;
        }
        if let Some(c) = rx.borrow_and_update().clone() {
            return c;
        }
    }
}

/// What a connection holds from accept (see the channel's module documentation).
pub(crate) struct Admission {
    /// Its place among all sessions, for its whole life.
    pub session: OwnedSemaphorePermit,
    /// Its place among TLS handshakes, given back once its handshake completes.
    pub handshake: OwnedSemaphorePermit,
    /// Its place among its source address's unauthenticated connections, given back once it is
    /// welcomed as an enrolled agent.
    pub source: SourceSlot,
}

/// Runs one connection from TCP accept to close.
pub(crate) async fn run(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    admission: Admission,
) {
    let Admission {
        session: _session,
        handshake,
        source,
    } = admission;
    let s = &shared.settings;
    // Everything before authentication counts against the hello timeout, from accept: a client
    // that never finishes its handshake, its hello or its enrolment is dropped then.
    let deadline = accepted + s.hello_timeout;
    let mut tls = match timeout_at(deadline, shared.acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        _ => return crate::metrics::session_refused(),
    };
    // The handshake is done: its place goes to the next one at once, so that connections past
    // their handshake (enrolling, or saying hello) never keep an agent from reconnecting.
    drop(handshake);
    let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
    let cert_key = cert.map(|c| crate::pki::ed25519_key(c));
    // rustls checked the validity at the handshake; the session ends when it runs out, and a
    // renewal opens half-way through it.
    let validity = cert.and_then(|c| picket_proto::x509::validity(c));
    // Without a certificate, a connection can only enrol, from a pool of its own.
    let enrolling = match cert_key {
        None => match shared.enrolling.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let busy = WireError {
                    code: ErrorCode::Internal,
                    message: format!(
                        "{} enrolments are in progress, the most this collector takes at once; try again later",
                        s.max_enrolling
                    ),
                    retry_after_ms: Some(RETRY_AFTER_BUSY_MS),
                };
                return close(tls, Some(busy)).await;
            }
        },
        Some(_) => None,
    };
    let waited = format!("no hello within {} of connecting", human(s.hello_timeout));
    let hello = match read_frame(&mut tls, PRE_AUTH_FRAME, deadline, &waited).await {
        Ok(body) => match decode(&body) {
            Ok(ClientMsg::Hello(h)) => h,
            Ok(_) => {
                let e = error(
                    ErrorCode::BadFrame,
                    "the first message of a session must be Hello",
                );
                return close(tls, Some(e)).await;
            }
            Err(e) => return close(tls, Some(e)).await,
        },
        Err(ReadFail::Tell(e)) => return close(tls, Some(e)).await,
        Err(ReadFail::Gone) => return,
    };
    let Some(version) = wire::negotiate(&hello) else {
        let e = error(
            ErrorCode::UnsupportedVersion,
            format!(
                "this collector speaks protocol versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; the agent speaks {} to {}",
                hello.min_version, hello.max_version
            ),
        );
        return close(tls, Some(e)).await;
    };
    let mut nonce = [0u8; 32];
    if SystemRandom::new().fill(&mut nonce).is_err() {
        return close(tls, Some(db::internal("draw a nonce"))).await;
    }
    let key = match cert_key {
        None => {
            enrolment(&shared, tls, peer, version, nonce, deadline).await;
            drop((enrolling, source));
            return;
        }
        Some(None) => {
            let e = error(
                ErrorCode::Unauthenticated,
                "the client certificate does not certify an Ed25519 key",
            );
            return close(tls, Some(e)).await;
        }
        Some(Some(key)) => key,
    };
    let lookup = shared.readers.run(move |s| s.agent_by_key(&key));
    let row = match timeout_at(deadline, lookup).await {
        Ok(Ok(row)) => row,
        Ok(Err(e)) => {
            tracing::error!("channel: looking up the agent of {peer}: {e}");
            return close(tls, Some(db::internal("look the agent up"))).await;
        }
        Err(_) => return close(tls, Some(db::internal("look the agent up in time"))).await,
    };
    let Some(row) = row else {
        let e = error(
            ErrorCode::Unauthenticated,
            "no enrolled agent has the key this certificate certifies",
        );
        return close(tls, Some(e)).await;
    };
    if row.revoked.is_some() || shared.revoked.borrow().contains(&row.id) {
        let e = error(ErrorCode::Revoked, format!("agent {} was revoked", row.id));
        return close(tls, Some(e)).await;
    }
    if *shared.blind.borrow() {
        return close(tls, Some(blind_error())).await;
    }
    // Authenticated: no longer counted against its source address. Given back before the
    // Welcome goes out, so that an agent holding its Welcome can count on the place being free.
    drop(source);
    // A live session of its agent from here: a newer one past the cap replaces the oldest.
    let ticket = shared.registry.admit(&row.id);
    let welcome = ServerMsg::Welcome(Welcome {
        version,
        agent: Some(row.id.clone()),
        nonce,
        now: unix_now(),
    });
    let frame = wire::encode_frame(&welcome);
    if !matches!(
        timeout_at(deadline, write_timed(&mut tls, &frame, s.read_timeout)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    agent_session(shared, row, key, validity, hello, tls, ticket).await;
}

/// A session without a client certificate: Welcome, one Enroll, its answer, close; all of it
/// by `deadline`.
async fn enrolment(
    shared: &Shared,
    mut tls: Tls,
    peer: SocketAddr,
    version: u16,
    nonce: [u8; 32],
    deadline: Instant,
) {
    let s = &shared.settings;
    let welcome = ServerMsg::Welcome(Welcome {
        version,
        agent: None,
        nonce,
        now: unix_now(),
    });
    let frame = wire::encode_frame(&welcome);
    if !matches!(
        timeout_at(deadline, write_timed(&mut tls, &frame, s.read_timeout)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let waited = format!(
        "no enrolment request within {} of connecting",
        human(s.hello_timeout)
    );
    let body = match read_frame(&mut tls, PRE_AUTH_FRAME, deadline, &waited).await {
        Ok(b) => b,
        Err(ReadFail::Tell(e)) => return close(tls, Some(e)).await,
        Err(ReadFail::Gone) => return,
    };
    let request = match decode(&body) {
        Ok(ClientMsg::Enroll(e)) => e,
        Ok(_) => {
            let e = error(
                ErrorCode::Unauthenticated,
                "this message needs an enrolled client certificate; a session without one may only enrol",
            );
            return close(tls, Some(e)).await;
        }
        Err(e) => return close(tls, Some(e)).await,
    };
    // Attempts are paced per source address, before anything is looked up.
    let now = shared.clock();
    let source = limits::source_key(peer.ip()).to_string();
    let paced = {
        let budget = shared.enrol_attempts.of(&source, now);
        let mut b = budget.lock().unwrap_or_else(|p| p.into_inner());
        b.charge(0, now)
    };
    if let Err(wait) = paced {
        let rate = &s.enrolment_rate;
        let e = WireError {
            code: ErrorCode::RateLimited,
            message: format!(
                "too many enrolment attempts from this address (at most {} a second, {} at once); this connection is closed: connect again after the wait",
                rate.messages_per_second, rate.message_burst
            ),
            retry_after_ms: Some((wait.as_micros().div_ceil(1_000) as u64).max(1)),
        };
        return close(tls, Some(e)).await;
    }
    // Checked read-only first: only an enrolment that can succeed queues on the writer.
    let request = match timeout_at(deadline, precheck(shared, request, nonce)).await {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => return close(tls, Some(e)).await,
        Err(_) => return close(tls, Some(db::internal("check the enrolment in time"))).await,
    };
    let (reply, answer) = oneshot::channel();
    let job = Job::Enroll {
        request: Box::new(request),
        nonce,
        reply,
    };
    if !matches!(timeout_at(deadline, shared.db.send(job)).await, Ok(Ok(()))) {
        return close(tls, Some(db::internal("enrol in time"))).await;
    }
    let enrolled = match timeout_at(deadline, answer).await {
        Ok(Ok(Ok(enrolled))) => enrolled,
        Ok(Ok(Err(e))) => return close(tls, Some(e)).await,
        Ok(Err(_)) => return close(tls, Some(db::internal("enrol"))).await,
        Err(_) => {
            let e = error(
                ErrorCode::Timeout,
                format!(
                    "the enrolment was not completed within {} of connecting; enrol again with a new key",
                    human(s.hello_timeout)
                ),
            );
            return close(tls, Some(e)).await;
        }
    };
    let frame = wire::encode_frame(&ServerMsg::Enrolled(enrolled));
    if matches!(
        timeout_at(deadline, write_timed(&mut tls, &frame, s.read_timeout)).await,
        Ok(Ok(()))
    ) {
        linger(tls).await;
    }
}

/// [`fleet::precheck`] on a read connection; gives the request back when it may go on.
async fn precheck(shared: &Shared, request: Enroll, nonce: [u8; 32]) -> Result<Enroll, WireError> {
    let channels = shared.channels.clone();
    let now = unix_now();
    let checked = shared
        .readers
        .run(move |store| Ok((fleet::precheck(store, &request, &nonce, now, &channels), request)))
        .await;
    match checked {
        Ok((Ok(()), request)) => Ok(request),
        Ok((Err(EnrolFailure::Refused(e)), _)) => Err(e),
        Ok((Err(EnrolFailure::Internal(e)), _)) | Err(e) => {
            tracing::error!("channel: checking an enrolment: {e}");
            Err(db::internal("check the enrolment"))
        }
    }
}

/// An authenticated session: the reader and the writer, until either ends; then, unless the
/// connection was cut, a lingering close.
async fn agent_session(
    shared: Arc<Shared>,
    row: AgentRow,
    key: [u8; 32],
    validity: Option<(i64, i64)>,
    hello: Hello,
    tls: Tls,
    ticket: Ticket,
) {
    let _connected = crate::metrics::session_opened();
    if hello.machine != row.machine {
        let _ = shared
            .db
            .send(Job::Clone {
                agent: row.id.clone(),
                presented: hello.machine,
            })
            .await;
    }
    let _ = shared.db.try_send(Job::Seen {
        agent: row.id.clone(),
    });
    let (mut rd, mut wr) = tokio::io::split(tls);
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND);
    let versions = shared.versions.get(&row.channel).map(|tx| tx.subscribe());
    let id = Arc::<str>::from(row.id.as_str());
    let cert_not_after = validity.map_or(i64::MAX, |(_, na)| na);
    let left = u64::try_from(cert_not_after.saturating_sub(unix_now())).unwrap_or(0);
    // Far enough to mean never, near enough for the timer.
    let expiry = Instant::now() + Duration::from_secs(left.min(10 * 365 * 86_400));
    let end = {
        let reader = reader(
            shared.clone(),
            id.clone(),
            row.channel.clone(),
            key,
            validity,
            &mut rd,
            out_tx,
        );
        let ends = Ends {
            versions,
            revoked: shared.revoked.subscribe(),
            blind: shared.blind.subscribe(),
            ticket: &ticket,
            cert_expiry: expiry,
        };
        let writer = writer(shared.clone(), id, row.channel, &mut wr, out_rx, ends);
        tokio::pin!(reader, writer);
        tokio::select! {
            () = &mut reader => {
                // The reader has said its last: let the writer send what is queued, then close.
                timeout(shared.settings.read_timeout, &mut writer).await.unwrap_or(End::Cut)
            }
            end = &mut writer => end,
        }
    };
    // No longer a live session of its agent: a new one takes its place without replacing it.
    drop(ticket);
    if end == End::Linger {
        linger(rd.unsplit(wr)).await;
    }
}

/// What the writer watches besides its queue.
struct Ends<'a> {
    /// The channel's state (`None`: a channel this collector does not publish).
    versions: Option<watch::Receiver<Option<Current>>>,
    /// The revoked agents.
    revoked: watch::Receiver<Arc<HashSet<String>>>,
    /// Whether the revoked agents can be read.
    blind: watch::Receiver<bool>,
    /// The session's place among its agent's live sessions.
    ticket: &'a Ticket,
    /// When the session's client certificate runs out.
    cert_expiry: Instant,
}

/// The writer half: queued answers in order, new versions, revocation, replacement,
/// certificate expiry. Returns how the session is to be closed.
async fn writer(
    shared: Arc<Shared>,
    agent: Arc<str>,
    channel: String,
    wr: &mut WriteHalf<Tls>,
    mut out: mpsc::Receiver<Out>,
    ends: Ends<'_>,
) -> End {
    let per_chunk = shared.settings.read_timeout;
    let Ends {
        mut versions,
        revoked: mut revoked_rx,
        mut blind,
        ticket,
        cert_expiry,
    } = ends;
    enum Next {
        Revoked,
        Blind,
        Replaced,
        Expired,
        Send(Out),
        Done,
        Version(Current),
    }
    loop {
        let next = tokio::select! {
            biased;
            () = revoked(&mut revoked_rx, &agent) => Next::Revoked,
            () = blinded(&mut blind) => Next::Blind,
            () = ticket.replaced() => Next::Replaced,
            () = tokio::time::sleep_until(cert_expiry) => Next::Expired,
            m = out.recv() => m.map_or(Next::Done, Next::Send),
            c = new_version(&mut versions) => Next::Version(c),
        };
        let frame = match next {
            Next::Revoked => {
                return last_words(
                    wr,
                    error(ErrorCode::Revoked, format!("agent {agent} was revoked")),
                )
                .await
            }
            Next::Blind => return last_words(wr, blind_error()).await,
            Next::Replaced => {
                let e = error(
                    ErrorCode::BadRequest,
                    format!(
                        "another session of agent {agent} replaced this one (at most {} live sessions per agent)",
                        shared.settings.max_sessions_per_agent
                    ),
                );
                return last_words(wr, e).await;
            }
            Next::Expired => {
                return last_words(
                    wr,
                    error(
                        ErrorCode::Unauthenticated,
                        "the session's client certificate expired; connect with the renewed one",
                    ),
                )
                .await
            }
            Next::Done => return End::Linger,
            Next::Send(f) => f,
            Next::Version(c) => Out::msg(&ServerMsg::NewVersion {
                channel: channel.clone(),
                version: c.version,
            }),
        };
        tokio::select! {
            biased;
            () = revoked(&mut revoked_rx, &agent) => {
                // Mid-frame: the connection can only be cut.
                return End::Cut;
            }
            r = write_timed(wr, frame.bytes(), per_chunk) => if r.is_err() { return End::Cut },
        }
    }
}

/// The reader half: frames in, answers queued, in order. Returns when the session must end
/// (the last answer, if any, is queued).
async fn reader(
    shared: Arc<Shared>,
    agent: Arc<str>,
    channel: String,
    key: [u8; 32],
    validity: Option<(i64, i64)>,
    rd: &mut ReadHalf<Tls>,
    out: mpsc::Sender<Out>,
) {
    let s = &shared.settings;
    let budget = shared.budgets.of(&agent, shared.clock());
    let mut strikes = 0u32;
    let mut seen_sent = Instant::now();
    let idle = format!("no frame for {}; closing", human(s.idle_timeout));
    let mut header = Header::default();
    // Whether the frame now waiting was already queued when a refusal was answered: sent
    // without waiting for the answer, let alone the wait. That is a flood, whatever the budget
    // says by the time it is read.
    let mut eager = false;
    loop {
        let deadline = Instant::now() + s.idle_timeout;
        let len = match read_header(rd, &mut header, MAX_CLIENT_FRAME, deadline, &idle).await {
            Ok(len) => len,
            Err(ReadFail::Tell(e)) => {
                let _ = out.send(error_frame(e)).await;
                return;
            }
            Err(ReadFail::Gone) => return,
        };
        let verdict = {
            let mut b = budget.lock().unwrap_or_else(|p| p.into_inner());
            let cost = len as u64 + 4;
            if eager {
                Err(b.wait(cost, shared.clock()))
            } else {
                b.charge(cost, shared.clock())
            }
        };
        if let Err(wait) = verdict {
            strikes += 1;
            // Rounded up: a client waiting what it is told never comes back early.
            let retry_after_ms = (wait.as_micros().div_ceil(1_000) as u64).max(1);
            if strikes > s.flood_strikes {
                let e = WireError {
                    code: ErrorCode::RateLimited,
                    message: format!(
                        "{strikes} frames in a row over the rate limit, sent without waiting as told; closing the session"
                    ),
                    retry_after_ms: Some(retry_after_ms),
                };
                let _ = out.send(error_frame(e)).await;
                return;
            }
            let e = WireError {
                code: ErrorCode::RateLimited,
                message: format!(
                    "over the rate limit ({} messages and {} bytes a second); this frame was not acted on: send it again after the wait, and nothing before",
                    s.rate.messages_per_second, s.rate.bytes_per_second
                ),
                retry_after_ms: Some(retry_after_ms),
            };
            if out.send(error_frame(e)).await.is_err() {
                return;
            }
            match skip_body(rd, len, s.read_timeout).await {
                Ok(()) => {}
                Err(ReadFail::Tell(e)) => {
                    let _ = out.send(error_frame(e)).await;
                    return;
                }
                Err(ReadFail::Gone) => return,
            }
            eager = match header.ready(rd).await {
                Ok(ready) => ready,
                Err(_) => return,
            };
            // Backpressure: nothing more is read from this agent until the wait is over.
            sleep(wait).await;
            continue;
        }
        strikes = 0;
        eager = false;
        let body = match read_body(rd, len, s.read_timeout).await {
            Ok(b) => b,
            Err(ReadFail::Tell(e)) => {
                let _ = out.send(error_frame(e)).await;
                return;
            }
            Err(ReadFail::Gone) => return,
        };
        let msg = match decode(&body) {
            Ok(m) => m,
            Err(e) => {
                let _ = out.send(error_frame(e)).await;
                return;
            }
        };
        drop(body);
        if seen_sent.elapsed() >= s.seen_every {
            // Not worth waiting for: the next frame tries again.
            if shared
                .db
                .try_send(Job::Seen {
                    agent: agent.to_string(),
                })
                .is_ok()
            {
                seen_sent = Instant::now();
            }
        }
        let answer = match msg {
            ClientMsg::Hello(_) => Err(error(ErrorCode::BadFrame, "Hello was already sent in this session")),
            ClientMsg::Enroll(_) => Err(error(
                ErrorCode::BadFrame,
                format!("this session is already enrolled as {agent}; enrolment needs a session without a client certificate"),
            )),
            ClientMsg::Renew => renew(&shared, &agent, key, validity).await,
            ClientMsg::Fetch(f) => fetch(&shared, &channel, &agent, f).await,
            ClientMsg::Report(b) => report(&shared, &agent, b).await,
            ClientMsg::Heartbeat(h) => {
                let job = Job::Heartbeat {
                    agent: agent.to_string(),
                    heartbeat: Box::new(h),
                };
                if shared.db.send(job).await.is_err() {
                    return;
                }
                continue;
            }
        };
        match answer {
            Ok(frame) => {
                if out.send(frame).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = out.send(error_frame(e)).await;
                return;
            }
        }
    }
}

/// When a certificate valid from `not_before` to `not_after` may be renewed: half-way through
/// its life, as agents renew, less [`RENEW_SKEW`] (at most a quarter of the life) for agents
/// whose clocks run ahead.
fn renewal_opens(not_before: i64, not_after: i64) -> i64 {
    let life = not_after.saturating_sub(not_before).max(0);
    not_before.saturating_add(life / 2) - RENEW_SKEW.min(life / 4)
}

async fn renew(
    shared: &Shared,
    agent: &str,
    key: [u8; 32],
    validity: Option<(i64, i64)>,
) -> Result<Out, WireError> {
    // A renewal is a signature and a write on the single writer: one per half-life is all an
    // agent needs, so one sooner is refused before it costs anything.
    let Some((not_before, not_after)) = validity else {
        return Err(error(
            ErrorCode::BadRequest,
            "renewal refused: the validity of this session's certificate could not be read",
        ));
    };
    let opens = renewal_opens(not_before, not_after);
    if unix_now() < opens {
        return Err(error(
            ErrorCode::BadRequest,
            format!(
                "renewal opens at {} (half-way through the life of this session's certificate, which ends {})",
                rfc3339(opens),
                rfc3339(not_after)
            ),
        ));
    }
    let (reply, answer) = oneshot::channel();
    let job = Job::Renew {
        agent: agent.to_owned(),
        public_key: key,
        reply,
    };
    shared
        .db
        .send(job)
        .await
        .map_err(|_| db::internal("issue a certificate"))?;
    let renewed = answer.await.map_err(|_| db::internal("issue a certificate"))??;
    Ok(Out::msg(&ServerMsg::Renewed(renewed)))
}

async fn report(shared: &Shared, agent: &str, batch: Batch) -> Result<Out, WireError> {
    if batch.seq > i64::MAX as u64 {
        return Err(error(
            ErrorCode::BadRequest,
            format!("report.seq {} is beyond 2^63 - 1", batch.seq),
        ));
    }
    let (epoch, seq) = (batch.epoch, batch.seq);
    let items = batch.items.len() as u64;
    let (reply, answer) = oneshot::channel();
    let job = Job::Report {
        agent: agent.to_owned(),
        batch,
        reply,
    };
    shared
        .db
        .send(job)
        .await
        .map_err(|_| db::internal("store the report"))?;
    match answer.await {
        Ok(Ok(BatchOutcome::Stored)) => {
            crate::metrics::batch(crate::metrics::Batch::Stored, items);
            Ok(Out::msg(&ServerMsg::Ack {
                epoch,
                seq,
                duplicate: false,
            }))
        }
        Ok(Ok(BatchOutcome::Duplicate)) => {
            crate::metrics::batch(crate::metrics::Batch::Replayed, items);
            Ok(Out::msg(&ServerMsg::Ack {
                epoch,
                seq,
                duplicate: true,
            }))
        }
        Ok(Ok(BatchOutcome::Conflict)) => {
            crate::metrics::batch(crate::metrics::Batch::Refused, items);
            Ok(Out::msg(&ServerMsg::Conflict { epoch, seq }))
        }
        Ok(Ok(BatchOutcome::Refused(why))) => {
            crate::metrics::batch(crate::metrics::Batch::Refused, items);
            Err(error(ErrorCode::BadRequest, why))
        }
        Ok(Err(())) | Err(_) => Err(db::internal("store the report")),
    }
}

async fn fetch(shared: &Arc<Shared>, channel: &str, agent: &str, f: Fetch) -> Result<Out, WireError> {
    if f.channel != channel {
        return Err(error(
            ErrorCode::BadRequest,
            format!("agent {agent} follows channel {channel:?}, not {:?}", f.channel),
        ));
    }
    let Some(tx) = shared.versions.get(channel) else {
        return Err(error(
            ErrorCode::BadRequest,
            format!("this collector does not publish channel {channel:?}"),
        ));
    };
    let current = tx.borrow().clone();
    match distribute::plan(current.as_ref(), f.have, f.have_timestamp) {
        Plan::UpToDate(version) => Ok(Out::msg(&ServerMsg::UpToDate {
            version,
            file: Vec::new(),
        })),
        Plan::Send(carry) => {
            let Some(at) = current else {
                return Err(db::internal("find the current set"));
            };
            let (sh, name, at2) = (shared.clone(), channel.to_owned(), at.clone());
            let build = move || {
                sh.readers
                    .with(|store| {
                        let (_, chain) = sh.dir.current_root(store)?;
                        export::set_file(store, &chain, &name, &at2, carry)
                    })
                    .map_err(|e| {
                        tracing::error!("channel: building the set file of {name}: {e}");
                        db::internal("build the set file")
                    })
                    .and_then(|file| distribute::set_frame(file.version, file.bytes))
            };
            shared
                .cache
                .get(channel, &at, carry, build)
                .await
                .map(Out::Shared)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_opens_half_way_through_the_certificate_less_a_little_skew() {
        const DAY: i64 = 86_400;
        // A week's certificate: three and a half days in, less five minutes.
        assert_eq!(renewal_opens(0, 7 * DAY), 7 * DAY / 2 - 300);
        // A short one: the skew allowance is at most a quarter of the life.
        assert_eq!(renewal_opens(1_000, 1_100), 1_000 + 50 - 25);
        // Nonsense validity (after before before) opens at its start, never earlier.
        assert_eq!(renewal_opens(500, 400), 500);
    }
}
