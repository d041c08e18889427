//! The channel's client: connect (TCP, TLS 1.3, hello), send and receive frames, and enrol.
//!
//! This is the reusable layer: the agent's [`session`](super::session) loop and tools that play
//! many agents at once (the load tool, end-to-end tests) speak the protocol through it.
//!
//! Invariants:
//! - a frame's length is checked against the session's cap before anything is allocated for it
//!   ([`SMALL_FRAME`] for the welcome, then [`MAX_SERVER_FRAME`] unless the caller lowers it with
//!   [`Session::set_max_frame`], as the daemon's link does from `[collector] max_set_bytes`), and
//!   its body buffer grows only as bytes actually arrive, so a collector announcing a large
//!   frame and sending nothing costs nothing;
//! - every read has a timeout (the wait for the *next* frame of a held session is the caller's
//!   choice: [`FrameReader::header`] waits for as long as the session is open);
//! - the token's secret leaves the host only in [`enroll`], only after the TLS handshake has
//!   verified the collector against the token's CA pin (or the CA file, whose key must match
//!   the pin).

use std::sync::Arc;
use std::time::Duration;

use picket_proto::wire::{
    self, decode_body, encode_frame, frame_len, ClientMsg, Hello, ServerMsg, Welcome, MAX_CLIENT_FRAME,
    MAX_SERVER_FRAME, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use picket_proto::{x509, EnrollToken};
use ring::signature::KeyPair;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::{cert, tls, LinkError};

/// How long the TCP connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an awaited answer, or the next piece of a frame being read, may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long writing one frame may take (the collector applies backpressure by reading slowly).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read at a time into a frame body.
const CHUNK: usize = 64 << 10;
/// The cap on the collector's answers that never carry a set: the welcome, an enrolment, a
/// renewal, acknowledgements and errors are all far below it. Only a set needs more.
pub const SMALL_FRAME: usize = 1 << 20;

type Stream = tokio_rustls::client::TlsStream<TcpStream>;

/// An open session with a collector, past the hello.
#[derive(Debug)]
pub struct Session {
    addr: String,
    stream: Stream,
    welcome: Welcome,
    read_timeout: Duration,
    max_frame: usize,
}

/// The receiving half of a split [`Session`].
#[derive(Debug)]
pub struct FrameReader {
    addr: String,
    rd: ReadHalf<Stream>,
    read_timeout: Duration,
    max_frame: usize,
}

/// The sending half of a split [`Session`].
#[derive(Debug)]
pub struct FrameWriter {
    addr: String,
    wr: WriteHalf<Stream>,
}

fn io_error(addr: &str, during: &str) -> impl FnOnce(std::io::Error) -> LinkError {
    let addr = addr.to_owned();
    let during = during.to_owned();
    move |error| {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            LinkError::Closed { addr, during }
        } else {
            LinkError::Io { addr, error }
        }
    }
}

fn timed_out(addr: &str, what: &str, after: Duration) -> LinkError {
    LinkError::Timeout {
        addr: addr.to_owned(),
        what: what.to_owned(),
        after,
    }
}

/// Reads a frame header, waiting at most `wait` (forever if `None`), and checks its length
/// against `cap`.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
    addr: &str,
    wait: Option<Duration>,
    cap: usize,
) -> Result<usize, LinkError> {
    let mut h = [0u8; 4];
    let read = r.read_exact(&mut h);
    match wait {
        Some(d) => timeout(d, read)
            .await
            .map_err(|_| timed_out(addr, "waiting for the collector's answer", d))?,
        None => read.await,
    }
    .map_err(io_error(addr, "between frames"))?;
    frame_len(h, cap).map_err(|error| LinkError::Frame {
        addr: addr.to_owned(),
        error,
    })
}

/// Reads a body of `len` bytes (each piece within `wait`) and decodes it.
pub(crate) async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    addr: &str,
    len: usize,
    wait: Duration,
) -> Result<ServerMsg, LinkError> {
    let mut body = Vec::with_capacity(len.min(CHUNK));
    while body.len() < len {
        let start = body.len();
        body.resize(start + (len - start).min(CHUNK), 0);
        let n = timeout(wait, r.read(&mut body[start..]))
            .await
            .map_err(|_| timed_out(addr, &format!("in a frame after {start} of {len} bytes"), wait))?
            .map_err(io_error(
                addr,
                &format!("in a frame after {start} of {len} bytes"),
            ))?;
        if n == 0 {
            return Err(LinkError::Closed {
                addr: addr.to_owned(),
                during: format!("in a frame after {start} of {len} bytes"),
            });
        }
        body.truncate(start + n);
    }
    decode_body(&body).map_err(|error| LinkError::Frame {
        addr: addr.to_owned(),
        error,
    })
}

async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, addr: &str, msg: &ClientMsg) -> Result<(), LinkError> {
    msg.check()
        .map_err(|e| LinkError::Invalid(format!("not sending a message to {addr}: {e}")))?;
    let frame = encode_frame(msg);
    if frame.len() - 4 > MAX_CLIENT_FRAME {
        return Err(LinkError::Invalid(format!(
            "not sending a message of {} bytes to {addr}: the cap is {MAX_CLIENT_FRAME}",
            frame.len() - 4
        )));
    }
    let write = async {
        w.write_all(&frame).await?;
        w.flush().await
    };
    timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(|_| timed_out(addr, "sending (the collector is not reading)", WRITE_TIMEOUT))?
        .map_err(io_error(addr, "while the agent was sending"))
}

/// Connects to `addr` (`HOST:PORT`), runs the TLS handshake with `tls` for `server_name`, sends
/// the hello with `machine` (see [`wire::machine_hash`]) and reads the welcome.
pub async fn connect(
    addr: &str,
    server_name: &str,
    tls: Arc<ClientConfig>,
    machine: [u8; 32],
) -> Result<Session, LinkError> {
    let name = tls::server_name(server_name)?;
    let tcp = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out(addr, "connecting", CONNECT_TIMEOUT))?
        .map_err(|error| LinkError::Connect {
            addr: addr.to_owned(),
            error,
        })?;
    // Small frames (acks, heartbeats) go out at once.
    let _ = tcp.set_nodelay(true);
    let stream = timeout(
        HANDSHAKE_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|_| timed_out(addr, "in the TLS handshake", HANDSHAKE_TIMEOUT))?
    .map_err(|e| LinkError::Tls {
        addr: addr.to_owned(),
        message: tls::describe(&e),
    })?;
    if stream.get_ref().1.alpn_protocol() != Some(tls::ALPN) {
        return Err(LinkError::Tls {
            addr: addr.to_owned(),
            message: format!(
                "the server did not agree to the protocol {:?} (ALPN): is this a Picket collector's agent port?",
                String::from_utf8_lossy(tls::ALPN)
            ),
        });
    }
    let mut session = Session {
        addr: addr.to_owned(),
        stream,
        welcome: Welcome {
            version: 0,
            agent: None,
            nonce: [0; 32],
            now: 0,
        },
        read_timeout: READ_TIMEOUT,
        max_frame: SMALL_FRAME,
    };
    session
        .send(&ClientMsg::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            machine,
        }))
        .await?;
    match session.recv().await? {
        ServerMsg::Welcome(w) => {
            if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&w.version) {
                return Err(LinkError::Protocol {
                    addr: addr.to_owned(),
                    message: format!(
                        "the collector chose protocol version {}, which this agent does not speak ({MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION})",
                        w.version
                    ),
                });
            }
            session.welcome = w;
            session.max_frame = MAX_SERVER_FRAME;
            Ok(session)
        }
        ServerMsg::Error(error) => Err(LinkError::Refused {
            addr: addr.to_owned(),
            error,
        }),
        other => Err(unexpected(addr, "a welcome", &other)),
    }
}

/// The name of a message's variant, for errors (never its contents).
pub fn kind(msg: &ServerMsg) -> &'static str {
    match msg {
        ServerMsg::Welcome(_) => "Welcome",
        ServerMsg::Enrolled(_) => "Enrolled",
        ServerMsg::Renewed(_) => "Renewed",
        ServerMsg::NewVersion { .. } => "NewVersion",
        ServerMsg::Set { .. } => "Set",
        ServerMsg::UpToDate { .. } => "UpToDate",
        ServerMsg::Ack { .. } => "Ack",
        ServerMsg::Conflict { .. } => "Conflict",
        ServerMsg::Error(_) => "Error",
    }
}

pub(crate) fn unexpected(addr: &str, wanted: &str, got: &ServerMsg) -> LinkError {
    LinkError::Protocol {
        addr: addr.to_owned(),
        message: format!("expected {wanted}, the collector sent {}", kind(got)),
    }
}

impl Session {
    /// The collector's welcome: protocol version, the agent id it authenticated, its clock.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The collector's address, as given to [`connect`].
    pub fn peer(&self) -> &str {
        &self.addr
    }

    /// Changes how long [`Session::recv`] waits (default [`READ_TIMEOUT`]).
    pub fn set_read_timeout(&mut self, wait: Duration) {
        self.read_timeout = wait;
    }

    /// Lowers (or raises, up to [`MAX_SERVER_FRAME`]) the largest frame accepted from the
    /// collector from now on, on this session and the [`FrameReader`] split from it. A header
    /// announcing more ends the session with [`LinkError::Frame`] before the body is read.
    pub fn set_max_frame(&mut self, cap: usize) {
        self.max_frame = cap.min(MAX_SERVER_FRAME);
    }

    /// The largest frame accepted from the collector.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Sends one message (checked against the caps the collector enforces, so a message it
    /// would refuse is not sent).
    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), LinkError> {
        write_msg(&mut self.stream, &self.addr, msg).await
    }

    /// Receives one message, waiting at most the read timeout for it to start and for each
    /// piece of it.
    pub async fn recv(&mut self) -> Result<ServerMsg, LinkError> {
        let len = read_header(
            &mut self.stream,
            &self.addr,
            Some(self.read_timeout),
            self.max_frame,
        )
        .await?;
        read_body(&mut self.stream, &self.addr, len, self.read_timeout).await
    }

    /// Splits the session so one task can wait for frames while another sends.
    pub fn into_split(self) -> (FrameReader, FrameWriter) {
        let (rd, wr) = tokio::io::split(self.stream);
        (
            FrameReader {
                addr: self.addr.clone(),
                rd,
                read_timeout: self.read_timeout,
                max_frame: self.max_frame,
            },
            FrameWriter { addr: self.addr, wr },
        )
    }
}

impl FrameReader {
    /// The read half, the collector's address, the read timeout and the frame cap: for a
    /// reader loop of its own (the daemon's link reads frames in a task that holds back large
    /// ones, see [`super::session`]).
    pub(crate) fn into_parts(self) -> (ReadHalf<Stream>, String, Duration, usize) {
        (self.rd, self.addr, self.read_timeout, self.max_frame)
    }

    /// Waits (without a time limit) for the next frame header and returns the body's length,
    /// checked against the session's cap ([`Session::set_max_frame`]).
    pub async fn header(&mut self) -> Result<usize, LinkError> {
        read_header(&mut self.rd, &self.addr, None, self.max_frame).await
    }

    /// Reads and decodes a body of `len` bytes, each piece within the read timeout.
    pub async fn body(&mut self, len: usize) -> Result<ServerMsg, LinkError> {
        read_body(&mut self.rd, &self.addr, len, self.read_timeout).await
    }
}

impl FrameWriter {
    /// Sends one message, as [`Session::send`].
    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), LinkError> {
        write_msg(&mut self.wr, &self.addr, msg).await
    }

    /// Closes the sending side (TLS close_notify).
    pub async fn close(&mut self) {
        let _ = timeout(Duration::from_secs(2), self.wr.shutdown()).await;
    }
}

/// What enrolment produced: the agent's new key and the collector's certificates.
pub struct Enrolment {
    /// The agent id the collector chose.
    pub agent: String,
    /// The agent's Ed25519 private key (PKCS#8 DER). Secret: never logged.
    pub key_pkcs8: Vec<u8>,
    /// The agent's public key.
    pub public_key: [u8; 32],
    /// The client certificate (DER).
    pub certificate: Vec<u8>,
    /// The collector CA certificate (DER), trusted from now on.
    pub ca: Vec<u8>,
    /// When the client certificate expires (unix seconds).
    pub not_after: i64,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolment")
            .field("agent", &self.agent)
            .field("key_pkcs8", &"<redacted>")
            .field("public_key", &hex::encode(self.public_key))
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Enrols with the collector at `addr`: generates the agent's key, proves it holds it, and
/// spends `token`. Without `ca` the collector is trusted only through the token's CA pin; with
/// `ca` (PEM or DER) that CA is the root, and its key must still match the pin.
pub async fn enroll(
    addr: &str,
    server_name: &str,
    token: &EnrollToken,
    ca: Option<&[u8]>,
    machine_id: &str,
    channel: &str,
) -> Result<Enrolment, LinkError> {
    let config = match ca {
        None => tls::pinned_config(token.ca_pin)?,
        Some(bytes) => {
            let ca = cert::parse_cert(bytes).map_err(|e| LinkError::Invalid(format!("the CA file: {e}")))?;
            let h = cert::spki_sha256(&ca).map_err(|e| LinkError::Invalid(format!("the CA file: {e}")))?;
            if h != token.ca_pin {
                return Err(LinkError::Invalid(format!(
                    "the CA file's public key (sha256:{}) is not the one the token pins (sha256:{}): the token and the CA file are from different collectors",
                    hex::encode(h),
                    hex::encode(token.ca_pin)
                )));
            }
            tls::ca_config(&ca, None)?
        }
    };
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| {
        LinkError::Invalid("the OS random generator failed while making the agent's key".into())
    })?;
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| LinkError::Invalid(format!("the new key does not load: {e}")))?;
    let mut public_key = [0u8; 32];
    public_key.copy_from_slice(key.public_key().as_ref());
    let machine = wire::machine_hash(&public_key, machine_id);
    let mut session = connect(addr, server_name, config, machine).await?;
    // An enrolment's answer is certificates and an id: nothing near a set.
    session.set_max_frame(SMALL_FRAME);
    // The handshake verified the collector against the pin: only now does the secret leave.
    let proof = key.sign(&wire::enroll_proof_message(
        &session.welcome().nonce,
        &token.id,
        &public_key,
    ));
    session
        .send(&ClientMsg::Enroll(wire::Enroll {
            token_id: token.id.clone(),
            secret: token.secret.to_vec(),
            public_key,
            proof: proof.as_ref().to_vec(),
            machine,
            channel: channel.to_owned(),
        }))
        .await?;
    let got = match session.recv().await? {
        ServerMsg::Enrolled(e) => e,
        ServerMsg::Error(error) => {
            return Err(LinkError::Refused {
                addr: addr.to_owned(),
                error,
            })
        }
        other => return Err(unexpected(addr, "Enrolled", &other)),
    };
    let bad = |message: String| LinkError::Protocol {
        addr: addr.to_owned(),
        message,
    };
    let ca_pin = cert::spki_sha256(&got.ca).map_err(|e| bad(format!("the CA certificate it sent: {e}")))?;
    if ca_pin != token.ca_pin {
        return Err(bad(format!(
            "the CA certificate it sent has key sha256:{}, not the one the token pins",
            hex::encode(ca_pin)
        )));
    }
    let spki =
        cert::spki(&got.certificate).map_err(|e| bad(format!("the client certificate it sent: {e}")))?;
    if spki != x509::ed25519_spki(&public_key) {
        return Err(bad(
            "the client certificate it sent is not for the agent's new key".into(),
        ));
    }
    if got.agent.is_empty() || got.agent.len() > wire::MAX_FIELD || got.agent.chars().any(char::is_control) {
        return Err(bad(format!(
            "an agent id of {} bytes that is empty, too long or holds control characters",
            got.agent.len()
        )));
    }
    Ok(Enrolment {
        agent: got.agent,
        key_pkcs8: pkcs8.as_ref().to_vec(),
        public_key,
        certificate: got.certificate,
        ca: got.ca,
        not_after: got.not_after,
    })
}
