#![allow(clippy::unwrap_used)]
//! The agent's side of the live channel against a minimal in-test collector: real TLS 1.3 on
//! loopback with an rcgen-made CA, real frames, a scripted answer per message.
//!
//! What a user would notice: enrolment with only a token trusts exactly the collector the token
//! pins and never hands the secret to another; a collector's refusal reaches the operator with
//! its reason; an oversized frame is refused before it is read; `enroll` leaves a state
//! directory that `run` accepts; and the link loop installs pushed sets, refuses a forged one,
//! and delivers the spool exactly once through a dropped connection and a spool conflict.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use picket_agent::config::Config;
use picket_agent::enroll::{self, EnrollOptions, EnrolledAgent};
use picket_agent::index::{Counts, Index};
use picket_agent::link::{self, cert, tls, LinkContext, LinkError};
use picket_agent::spool::Spool;
use picket_agent::status::LinkStatus;
use picket_agent::store::{self, Imported};
use picket_proto::wire::{
    self, decode_body, encode_frame, frame_len, ClientMsg, ErrorCode, FrameError, ServerMsg, Welcome,
    WireError, MAX_CLIENT_FRAME, MAX_SERVER_FRAME,
};
use picket_proto::{
    sha256, sign_document, x509, ChannelSpec, Content, EnrollToken, Hash, HashKind, Indicator, Limits,
    Manifest, Meta, Observable, PayloadKind, Record, Role, RoleSpec, Root, SetFile, Severity, SigningKey,
    Snapshot, Timestamp, Tlp, TrustAnchor,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SignatureAlgorithm, PKCS_ED25519,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long any one expected event may take.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The collector's PKI, as rcgen makes it.
// ---------------------------------------------------------------------------------------------

struct Pki {
    ca: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    /// A CA named `cn` and a server certificate for 127.0.0.1 and localhost, sent with the CA.
    fn new(cn: &str) -> Arc<Pki> {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = p.self_signed(&ca_key).unwrap().der().clone();
        let issuer = Issuer::new(p, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut s = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        s.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = s.signed_by(&server_key, &issuer).unwrap().der().clone();
        Arc::new(Pki {
            chain: vec![server, ca.clone()],
            ca,
            issuer,
            key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
        })
    }

    fn pin(&self) -> [u8; 32] {
        cert::spki_sha256(&self.ca).unwrap()
    }

    /// A client certificate for an agent's raw Ed25519 key; `aged`: one past half its life
    /// (valid 2000 to 2040), else rcgen's default (1975 to 4096).
    fn issue(&self, public_key: &[u8; 32], aged: bool) -> Vec<u8> {
        struct Ed25519Public<'a>(&'a [u8]);
        impl PublicKeyData for Ed25519Public<'_> {
            fn der_bytes(&self) -> &[u8] {
                self.0
            }
            fn algorithm(&self) -> &'static SignatureAlgorithm {
                &PKCS_ED25519
            }
        }
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "agent-1");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if aged {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2040, 1, 1);
        }
        p.signed_by(&Ed25519Public(public_key), &self.issuer)
            .unwrap()
            .der()
            .to_vec()
    }
}

fn token(pin: [u8; 32]) -> EnrollToken {
    EnrollToken {
        id: "0011223344556677".into(),
        secret: [0x5e; 16],
        ca_pin: pin,
    }
}

// ---------------------------------------------------------------------------------------------
// The in-test collector.
// ---------------------------------------------------------------------------------------------

/// One connection's state, for the script.
struct Conn {
    /// The client presented a certificate.
    client_cert: bool,
    /// The nonce of this session's welcome.
    nonce: [u8; 32],
}

/// What the server does after a message.
enum Reply {
    Msg(ServerMsg),
    Raw(Vec<u8>),
    /// Keep the connection open without reading further (a stalled collector).
    Hold,
    Close,
}

type Script = Arc<dyn Fn(&mut Conn, &ClientMsg) -> Vec<Reply> + Send + Sync>;

/// What the server saw.
#[derive(Debug)]
enum Event {
    /// The TLS handshake failed.
    HandshakeFailed(usize),
    /// A message arrived on connection n.
    Msg(usize, ClientMsg),
    /// Connection n ended.
    Ended(usize),
}

struct Server {
    addr: String,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Server {
    async fn start(pki: Arc<Pki>, alpn: bool, script: Script) -> Server {
        let provider = tls::provider();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.clone()).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(pki.chain.clone(), PrivateKeyDer::Pkcs8(pki.key.clone_key()))
            .unwrap();
        if alpn {
            config.alpn_protocols = vec![tls::ALPN.to_vec()];
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut index = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                index += 1;
                let (acceptor, script, tx) = (acceptor.clone(), script.clone(), tx.clone());
                tokio::spawn(serve(index, tcp, acceptor, script, tx));
            }
        });
        Server { addr, events }
    }

    /// The next event, or a panic naming what was awaited.
    async fn next(&mut self, what: &str) -> Event {
        timeout(WAIT, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
            .unwrap()
    }

    /// The next report batch on connection `conn`, skipping other events.
    async fn report(&mut self, conn: usize, what: &str) -> wire::Batch {
        match self
            .until(
                what,
                |e| matches!(e, Event::Msg(c, ClientMsg::Report(_)) if *c == conn),
            )
            .await
        {
            Event::Msg(_, ClientMsg::Report(b)) => b,
            _ => unreachable!("until returns a matching event"),
        }
    }

    /// Events until `pred` matches one, which is returned.
    async fn until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        loop {
            let e = self.next(what).await;
            if pred(&e) {
                return e;
            }
        }
    }
}

async fn serve(
    index: usize,
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    script: Script,
    tx: mpsc::UnboundedSender<Event>,
) {
    let Ok(mut stream) = acceptor.accept(tcp).await else {
        let _ = tx.send(Event::HandshakeFailed(index));
        return;
    };
    let mut conn = Conn {
        client_cert: stream.get_ref().1.peer_certificates().is_some(),
        nonce: [index as u8; 32],
    };
    'frames: loop {
        let mut h = [0u8; 4];
        if stream.read_exact(&mut h).await.is_err() {
            break;
        }
        let Ok(len) = frame_len(h, MAX_CLIENT_FRAME) else {
            break;
        };
        let mut body = vec![0u8; len];
        if stream.read_exact(&mut body).await.is_err() {
            break;
        }
        let msg: ClientMsg = decode_body(&body).unwrap();
        msg.check().unwrap();
        let _ = tx.send(Event::Msg(index, msg.clone()));
        for reply in script(&mut conn, &msg) {
            match reply {
                Reply::Msg(m) => {
                    if stream.write_all(&encode_frame(&m)).await.is_err() {
                        break 'frames;
                    }
                }
                Reply::Raw(b) => {
                    if stream.write_all(&b).await.is_err() {
                        break 'frames;
                    }
                }
                Reply::Hold => {
                    tokio::time::sleep(WAIT * 2).await;
                    break 'frames;
                }
                Reply::Close => break 'frames,
            }
        }
        let _ = stream.flush().await;
    }
    let _ = stream.shutdown().await;
    let _ = tx.send(Event::Ended(index));
}

fn welcome(conn: &Conn) -> Reply {
    Reply::Msg(ServerMsg::Welcome(Welcome {
        version: wire::PROTOCOL_VERSION,
        agent: conn.client_cert.then(|| "agent-1".to_owned()),
        nonce: conn.nonce,
        now: unix_now(),
    }))
}

/// Answers an enrolment as a collector would, after checking the proof.
fn enrolled(pki: &Pki, conn: &Conn, e: &wire::Enroll, aged: bool) -> Reply {
    let msg = wire::enroll_proof_message(&conn.nonce, &e.token_id, &e.public_key);
    let pk = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, e.public_key);
    if pk.verify(&msg, &e.proof).is_err() {
        return refuse(ErrorCode::BadRequest, "the proof does not verify");
    }
    Reply::Msg(ServerMsg::Enrolled(wire::Enrolled {
        agent: "agent-1".into(),
        certificate: pki.issue(&e.public_key, aged),
        ca: pki.ca.to_vec(),
        not_after: unix_now() + 30 * 86_400,
    }))
}

fn refuse(code: ErrorCode, message: &str) -> Reply {
    Reply::Msg(ServerMsg::Error(WireError {
        code,
        message: message.into(),
        retry_after_ms: None,
    }))
}

/// A collector that welcomes and enrols.
fn enrolling(pki: Arc<Pki>) -> Script {
    Arc::new(move |conn, msg| match msg {
        ClientMsg::Hello(_) => vec![welcome(conn)],
        ClientMsg::Enroll(e) => vec![enrolled(&pki, conn, e, false)],
        _ => vec![Reply::Close],
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------------------------------
// Enrolment and framing.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn enrolment_without_ca_trusts_the_collector_the_token_pins() {
    let pki = Pki::new("Picket collector CA");
    let mut server = Server::start(pki.clone(), true, enrolling(pki.clone())).await;
    let t = token(pki.pin());
    let got = link::enroll(&server.addr, "127.0.0.1", &t, None, "machine-1", "default")
        .await
        .unwrap();
    assert_eq!(got.agent, "agent-1");
    assert_eq!(got.ca, pki.ca.to_vec());
    assert_eq!(
        cert::spki(&got.certificate).unwrap(),
        x509::ed25519_spki(&got.public_key)
    );
    // The key is the agent's own: the certificate is for the key it kept.
    let kp = ring::signature::Ed25519KeyPair::from_pkcs8(&got.key_pkcs8).unwrap();
    assert_eq!(
        ring::signature::KeyPair::public_key(&kp).as_ref(),
        &got.public_key
    );
    assert!(!format!("{got:?}").contains(&hex::encode(&got.key_pkcs8)));
    let Event::Msg(_, ClientMsg::Hello(hello)) = server.next("hello").await else {
        panic!()
    };
    assert_eq!(hello.machine, wire::machine_hash(&got.public_key, "machine-1"));
    let Event::Msg(_, ClientMsg::Enroll(e)) = server.next("enroll").await else {
        panic!()
    };
    assert_eq!(e.secret, t.secret.to_vec());
    assert_eq!(e.token_id, t.id);
    assert_eq!(e.machine, hello.machine);
    assert_eq!(e.channel, "default");
}

#[tokio::test]
async fn enrolment_without_ca_refuses_a_collector_with_another_ca_before_sending_the_secret() {
    let genuine = Pki::new("Picket collector CA");
    // A man in the middle with a CA of the same name, and a valid certificate for the address.
    let mitm = Pki::new("Picket collector CA");
    let mut server = Server::start(mitm.clone(), true, enrolling(mitm.clone())).await;
    let err = link::enroll(
        &server.addr,
        "127.0.0.1",
        &token(genuine.pin()),
        None,
        "m",
        "default",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LinkError::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("does not match the token's CA pin"), "{text}");
    assert!(text.contains(&server.addr), "{text}");
    assert!(
        text.contains(&hex::encode(mitm.pin())),
        "the presented key is named: {text}"
    );
    // The server never saw a frame: no hello, and above all no enrolment with the secret.
    let e = server.next("the end of the handshake").await;
    assert!(matches!(e, Event::HandshakeFailed(1) | Event::Ended(1)), "{e:?}");
}

#[tokio::test]
async fn a_ca_file_that_is_not_the_pinned_one_is_refused_before_connecting() {
    let genuine = Pki::new("Picket collector CA");
    let other = Pki::new("Other CA");
    let mut server = Server::start(genuine.clone(), true, enrolling(genuine.clone())).await;
    let err = link::enroll(
        &server.addr,
        "127.0.0.1",
        &token(genuine.pin()),
        Some(cert::pem("CERTIFICATE", &other.ca).as_bytes()),
        "m",
        "default",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&hex::encode(other.pin())) && err.contains(&hex::encode(genuine.pin())),
        "{err}"
    );
    assert!(server.events.try_recv().is_err(), "nothing reached the server");
    // With the right CA file, enrolment goes through the CA (not the pin) and succeeds.
    let got = link::enroll(
        &server.addr,
        "localhost",
        &token(genuine.pin()),
        Some(cert::pem("CERTIFICATE", &genuine.ca).as_bytes()),
        "m",
        "default",
    )
    .await
    .unwrap();
    assert_eq!(got.agent, "agent-1");
}

#[tokio::test]
async fn the_collector_refusing_the_token_is_reported_with_its_reason() {
    let pki = Pki::new("Picket collector CA");
    let script: Script = Arc::new(|conn, msg| match msg {
        ClientMsg::Hello(_) => vec![welcome(conn)],
        _ => vec![refuse(ErrorCode::TokenRefused, "token expired"), Reply::Close],
    });
    let server = Server::start(pki.clone(), true, script).await;
    let err = link::enroll(&server.addr, "127.0.0.1", &token(pki.pin()), None, "m", "default")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TokenRefused));
    let text = err.to_string();
    assert!(text.contains("TokenRefused: token expired"), "{text}");
    assert!(
        !text.contains(&hex::encode([0x5e; 16])),
        "the secret is never shown: {text}"
    );
}

#[tokio::test]
async fn nothing_listening_and_a_wrong_server_name_are_named() {
    let pki = Pki::new("Picket collector CA");
    let server = Server::start(pki.clone(), true, enrolling(pki.clone())).await;
    let err = link::enroll(
        &server.addr,
        "collector.example",
        &token(pki.pin()),
        None,
        "m",
        "default",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("not valid for name \"collector.example\""), "{err}");
    // A port nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let err = link::enroll(&addr, "127.0.0.1", &token(pki.pin()), None, "m", "default")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&format!("connect to {addr}: ")), "{err}");
}

#[tokio::test]
async fn a_server_that_does_not_speak_the_picket_alpn_is_refused() {
    let pki = Pki::new("Picket collector CA");
    let server = Server::start(pki.clone(), false, enrolling(pki.clone())).await;
    let err = link::enroll(&server.addr, "127.0.0.1", &token(pki.pin()), None, "m", "default")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("picket/1"), "{err}");
}

#[tokio::test]
async fn a_frame_header_over_the_cap_is_refused_without_reading_the_body() {
    let pki = Pki::new("Picket collector CA");
    let over = (MAX_SERVER_FRAME as u32 + 1).to_be_bytes().to_vec();
    // In place of the welcome: a header announcing 512 MiB + 1, then nothing, connection held.
    let o = over.clone();
    let script: Script = Arc::new(move |_, _| vec![Reply::Raw(o.clone()), Reply::Hold]);
    let server = Server::start(pki.clone(), true, script).await;
    let config = tls::ca_config(&pki.ca, None).unwrap();
    let started = std::time::Instant::now();
    let err = link::connect(&server.addr, "127.0.0.1", config.clone(), [0; 32])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LinkError::Frame { error: FrameError::TooLarge { len, cap }, .. }
            if *len == MAX_SERVER_FRAME + 1 && *cap == link::client::SMALL_FRAME),
        "{err:?}"
    );
    // Refused on the header alone: the client did not wait for a body that never comes.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The same inside a session, after the welcome.
    let script: Script = Arc::new(move |conn, msg| match msg {
        ClientMsg::Hello(_) => vec![welcome(conn)],
        _ => vec![Reply::Raw(over.clone()), Reply::Hold],
    });
    let server = Server::start(pki.clone(), true, script).await;
    let mut session = link::connect(&server.addr, "127.0.0.1", config, [0; 32])
        .await
        .unwrap();
    session.send(&ClientMsg::Renew).await.unwrap();
    let err = session.recv().await.unwrap_err();
    assert!(
        matches!(
            &err,
            LinkError::Frame {
                error: FrameError::TooLarge { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("exceeds the cap"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// `enroll`, the command's library side.
// ---------------------------------------------------------------------------------------------

/// Root, publisher and timestamp keys for channel `default`, and the sets they sign.
struct Signer {
    root_key: SigningKey,
    publisher: SigningKey,
    stamper: SigningKey,
    root: Vec<u8>,
}

impl Signer {
    fn new() -> Signer {
        let key = |seed, role| SigningKey::from_seed([seed; 32], role).unwrap();
        let (root_key, publisher, stamper) = (
            key(1, Role::Root),
            key(2, Role::Publisher),
            key(3, Role::Timestamp),
        );
        let now = unix_now();
        let root = Root {
            version: 1,
            created: now - 86_400,
            expires: now + 365 * 86_400,
            org: "Test Org".into(),
            root: RoleSpec::new(vec![root_key.public()], 1, 2 * 365 * 86_400),
            channels: ["default", "other"]
                .into_iter()
                .map(|name| ChannelSpec {
                    name: name.into(),
                    publisher: RoleSpec::new(vec![publisher.public()], 1, 30 * 86_400),
                    timestamp: RoleSpec::new(vec![stamper.public()], 1, 86_400),
                    max_tlp: Tlp::Amber,
                })
                .collect(),
            tls_ca_pin: None,
        };
        let root = sign_document(&root, PayloadKind::Root, &[&root_key]);
        Signer {
            root_key,
            publisher,
            stamper,
            root,
        }
    }

    fn anchor(&self) -> String {
        TrustAnchor {
            org: "Test Org".into(),
            root_version: 1,
            threshold: 1,
            keys: vec![self.root_key.public()],
        }
        .to_text()
    }

    /// Set `version` of channel `default` with `n` indicators, timestamp version = set version.
    fn set(&self, version: u64, n: usize) -> Vec<u8> {
        self.set_on("default", version, n)
    }

    /// [`Signer::set`] for `channel`.
    fn set_on(&self, channel: &str, version: u64, n: usize) -> Vec<u8> {
        let now = unix_now();
        let records = (0..n)
            .map(|i| {
                Record::from_indicator(&Indicator {
                    id: format!("indicator--{version}-{i}"),
                    observable: Observable::FileHash {
                        hash: Hash {
                            kind: HashKind::Sha256,
                            value: sha256(format!("{version}-{i}").as_bytes()).to_vec(),
                        },
                        size: None,
                    },
                    meta: Meta {
                        confidence: 90,
                        severity: Severity::High,
                        tlp: Tlp::Green,
                        valid_until: None,
                        source: "test".into(),
                    },
                })
                .unwrap()
            })
            .collect();
        let snapshot = Snapshot::new(channel, version, records).unwrap().encode();
        let manifest = Manifest {
            channel: channel.into(),
            version,
            created: now - 60,
            expires: now + 7 * 86_400,
            sha256: sha256(&snapshot),
            length: snapshot.len() as u64,
            max_tlp: Tlp::Green,
            deltas: Vec::new(),
        };
        let manifest = sign_document(&manifest, PayloadKind::Manifest, &[&self.publisher]);
        let ts = Timestamp {
            channel: channel.into(),
            version,
            created: now - 60,
            expires: now + 12 * 3_600,
            manifest_version: version,
            manifest_sha256: sha256(&manifest),
            manifest_length: manifest.len() as u64,
        };
        let timestamp = sign_document(&ts, PayloadKind::Timestamp, &[&self.stamper]);
        SetFile {
            channel,
            roots: vec![(1, &self.root)],
            timestamp: &timestamp,
            manifest: &manifest,
            content: Content::Full(&snapshot),
        }
        .encode()
    }
}

fn options(dir: &Path, server: &str, pin: [u8; 32]) -> EnrollOptions {
    let machine = dir.join("machine-id");
    std::fs::write(&machine, "0123456789abcdef0123456789abcdef\n").unwrap();
    EnrollOptions {
        state: dir.join("state"),
        collector: server.to_owned(),
        server_name: None,
        token: token(pin),
        trust: dir.join("root.pub"),
        ca: None,
        roots: vec![dir.join("scanned")],
        channel: "default".into(),
        machine_id_file: Some(machine),
        force: false,
    }
}

/// The `enroll` command's library side (it blocks: it runs its own runtime), run off the test's.
async fn run_enroll(options: EnrollOptions) -> Result<EnrolledAgent, LinkError> {
    tokio::task::spawn_blocking(move || enroll::enroll(&options))
        .await
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn enroll_writes_a_state_directory_the_daemon_accepts() {
    let pki = Pki::new("Picket collector CA");
    let signer = Arc::new(Signer::new());
    let (p, s) = (pki.clone(), signer.clone());
    let script: Script = Arc::new(move |conn, msg| match msg {
        ClientMsg::Hello(_) => vec![welcome(conn)],
        ClientMsg::Enroll(e) => vec![enrolled(&p, conn, e, false)],
        ClientMsg::Fetch(f) if conn.client_cert && f.have.is_none() => vec![Reply::Msg(ServerMsg::Set {
            version: 1,
            file: s.set(1, 3),
        })],
        ClientMsg::Fetch(f) if conn.client_cert => vec![Reply::Msg(ServerMsg::UpToDate {
            version: f.have.unwrap_or_default(),
            file: Vec::new(),
        })],
        _ => vec![Reply::Close],
    });
    let mut server = Server::start(pki.clone(), true, script).await;
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(tmp.path(), &server.addr, pki.pin());

    // A bad anchor is refused before anything is spent or written.
    std::fs::write(&opts.trust, "not an anchor\n").unwrap();
    let err = run_enroll(options(tmp.path(), &server.addr, pki.pin()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&format!("{}: ", opts.trust.display())), "{err}");
    assert!(!opts.state.exists());
    assert!(server.events.try_recv().is_err(), "nothing reached the server");

    std::fs::write(&opts.trust, signer.anchor()).unwrap();
    let done = run_enroll(options(tmp.path(), &server.addr, pki.pin()))
        .await
        .unwrap();
    assert_eq!(done.agent, "agent-1");
    let state = &opts.state;
    // The first set came over mutual TLS with the files just written, and is installed.
    assert_eq!(
        done.first_set,
        Ok(Some(Imported::NewVersion {
            from: None,
            to: 1,
            records: 3
        }))
    );
    assert_eq!(version_installed(state), Some(1));
    assert_eq!(done.config, state.join("agent.toml"));
    assert_eq!(mode(state), 0o700);
    for f in [
        "agent.key",
        "agent.crt",
        "collector-ca.pem",
        "trust.pub",
        "machine-id",
        "agent.toml",
    ] {
        assert_eq!(mode(&state.join(f)), 0o600, "{f}");
    }
    assert_eq!(
        std::fs::read_to_string(state.join("trust.pub")).unwrap(),
        signer.anchor()
    );
    assert_eq!(
        std::fs::read_to_string(state.join("machine-id")).unwrap(),
        "0123456789abcdef0123456789abcdef\n"
    );
    let text = std::fs::read_to_string(&done.config).unwrap();
    assert!(
        !text.contains(&hex::encode([0x5e; 16])),
        "the token is not written: {text}"
    );
    let cfg = Config::load(&done.config).unwrap();
    assert_eq!(cfg.state_dir, *state);
    assert_eq!(cfg.roots, vec![tmp.path().join("scanned")]);
    let c = cfg.collector.unwrap();
    assert_eq!(
        (c.address.as_str(), c.server_name.as_str()),
        (server.addr.as_str(), "127.0.0.1")
    );
    assert_eq!(c.heartbeat_interval, Duration::from_secs(60));
    assert_eq!(c.poll_interval, Duration::from_secs(300));
    assert_eq!(c.machine_id_file, opts.machine_id_file);
    // The files it names make a working mutual-TLS configuration.
    tls::agent_config(&c.ca, &c.cert, &c.key).unwrap();

    // A second enrolment into the same directory needs --force.
    let err = run_enroll(options(tmp.path(), &server.addr, pki.pin()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already holds an enrolment") && err.contains("--force"),
        "{err}"
    );
    let key_before = std::fs::read(state.join("agent.key")).unwrap();
    let again = run_enroll(EnrollOptions {
        force: true,
        ..options(tmp.path(), &server.addr, pki.pin())
    })
    .await
    .unwrap();
    assert_eq!(again.first_set, Ok(None), "the installed set is current");
    assert_ne!(
        std::fs::read(state.join("agent.key")).unwrap(),
        key_before,
        "a new key"
    );
}

// ---------------------------------------------------------------------------------------------
// The link loop.
// ---------------------------------------------------------------------------------------------

/// The collector side of the session test: what it has answered so far.
#[derive(Default)]
struct Fleet {
    reports: usize,
    announced: bool,
    forged_sent: bool,
    agent_key: Option<[u8; 32]>,
    renews: usize,
    renewed: Vec<u8>,
}

fn report(epoch: u64, seq: u64) -> wire::SightingReport {
    wire::SightingReport {
        indicator: format!("indicator--{epoch}-{seq}"),
        what: "sha256".into(),
        observed: wire::ObservedKind::File,
        location: Some("/srv/x".into()),
        first_seen: 1,
        last_seen: 2,
        count: 1,
        set_version: 1,
    }
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_link_installs_pushed_sets_and_delivers_the_spool_exactly_once() {
    let pki = Pki::new("Picket collector CA");
    let signer = Arc::new(Signer::new());
    let fleet = Arc::new(Mutex::new(Fleet::default()));
    let (p, s, f) = (pki.clone(), signer.clone(), fleet.clone());
    // The script: enrolment; then sets on request and reports. The first report is cut off
    // (connection closed), its resend gets a conflict, the renumbered batch an ack, and then
    // version 2 is announced. The first fetch of version 2 gets a forged file with a second
    // announcement, the next the genuine one. The client certificate issued at enrolment is
    // past half its life, so the first session renews it.
    let script: Script = Arc::new(move |conn, msg| {
        let mut fl = f.lock().unwrap();
        match msg {
            ClientMsg::Hello(_) => vec![welcome(conn)],
            ClientMsg::Enroll(e) => {
                fl.agent_key = Some(e.public_key);
                vec![enrolled(&p, conn, e, true)]
            }
            ClientMsg::Renew if conn.client_cert => {
                fl.renews += 1;
                let certificate = p.issue(&fl.agent_key.unwrap(), false);
                fl.renewed = certificate.clone();
                vec![Reply::Msg(ServerMsg::Renewed(wire::Renewed {
                    certificate,
                    not_after: unix_now() + 30 * 86_400,
                }))]
            }
            _ if !conn.client_cert => {
                vec![refuse(ErrorCode::Unauthenticated, "no certificate"), Reply::Close]
            }
            ClientMsg::Fetch(fetch) => {
                match fetch.have {
                    None => vec![Reply::Msg(ServerMsg::Set {
                        version: 1,
                        file: s.set(1, 3),
                    })],
                    Some(1) if !fl.announced => vec![Reply::Msg(ServerMsg::UpToDate {
                        version: 1,
                        file: Vec::new(),
                    })],
                    Some(1) if !fl.forged_sent => {
                        fl.forged_sent = true;
                        let mut forged = s.set(2, 5);
                        let n = forged.len();
                        forged[n - 10] ^= 1; // a byte of the snapshot: its hash no longer matches
                        vec![
                            Reply::Msg(ServerMsg::Set {
                                version: 2,
                                file: forged,
                            }),
                            Reply::Msg(ServerMsg::NewVersion {
                                channel: "default".into(),
                                version: 2,
                            }),
                        ]
                    }
                    Some(1) => vec![Reply::Msg(ServerMsg::Set {
                        version: 2,
                        file: s.set(2, 5),
                    })],
                    Some(v) => vec![Reply::Msg(ServerMsg::UpToDate {
                        version: v,
                        file: Vec::new(),
                    })],
                }
            }
            ClientMsg::Report(b) => {
                fl.reports += 1;
                match fl.reports {
                    1 => vec![Reply::Close],
                    2 => vec![Reply::Msg(ServerMsg::Conflict {
                        epoch: b.epoch,
                        seq: b.seq,
                    })],
                    _ => {
                        fl.announced = true;
                        vec![
                            Reply::Msg(ServerMsg::Ack {
                                epoch: b.epoch,
                                seq: b.seq,
                                duplicate: false,
                            }),
                            Reply::Msg(ServerMsg::NewVersion {
                                channel: "default".into(),
                                version: 2,
                            }),
                        ]
                    }
                }
            }
            _ => Vec::new(),
        }
    });
    let mut server = Server::start(pki.clone(), true, script).await;
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(tmp.path(), &server.addr, pki.pin());
    std::fs::write(&opts.trust, signer.anchor()).unwrap();
    let done = run_enroll(options(tmp.path(), &server.addr, pki.pin()))
        .await
        .unwrap();
    let cfg = Config::load(&done.config).unwrap();
    // Enrolment (connection 1) installed set 1 through a first fetch (connection 2).
    assert!(
        matches!(done.first_set, Ok(Some(Imported::NewVersion { to: 1, .. }))),
        "{:?}",
        done.first_set
    );
    assert_eq!(version_installed(&cfg.state_dir), Some(1));

    let mut spool = Spool::open(&cfg.state_dir, 100).unwrap();
    spool.push(vec![report(0, 1)]).unwrap();
    let first = spool.pending().unwrap();
    let spool = Arc::new(Mutex::new(spool));
    let status = Arc::new(Mutex::new(LinkStatus::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let installed = Arc::new(AtomicBool::new(false));
    let ctx = LinkContext {
        spool: spool.clone(),
        status: status.clone(),
        stop: stop.clone(),
        set_installed: installed.clone(),
        ..link_context(&cfg)
    };
    let thread = link::spawn(ctx).unwrap();

    // Session 1 (connection 3): a fetch saying what is installed, a renewal, then the report,
    // cut off.
    let Event::Msg(3, ClientMsg::Fetch(f)) = server
        .until("the first fetch", |e| {
            matches!(e, Event::Msg(3, ClientMsg::Fetch(_)))
        })
        .await
    else {
        unreachable!()
    };
    assert_eq!(
        (f.channel.as_str(), f.have, f.have_timestamp),
        ("default", Some(1), Some(1))
    );
    server
        .until("the renewal", |e| matches!(e, Event::Msg(3, ClientMsg::Renew)))
        .await;
    let b = server.report(3, "the first report").await;
    assert_eq!(b, first);
    assert!(status.lock().unwrap().last_contact.is_some());
    let cert_file = cfg.collector.as_ref().unwrap().cert.clone();
    wait_for("the renewed certificate written", || {
        let renewed = fleet.lock().unwrap().renewed.clone();
        std::fs::read(&cert_file).unwrap() == cert::pem("CERTIFICATE", &renewed).into_bytes()
    })
    .await;

    // Session 2: the same batch again (the collector dedupes), a conflict, the renumbered batch.
    let again = server.report(4, "the resent report").await;
    assert_eq!(
        again, first,
        "after a reconnect the batch in flight is sent again, unchanged"
    );
    let renumbered = server.report(4, "the renumbered report").await;
    assert_ne!(renumbered.epoch, first.epoch, "a conflict starts a new epoch");
    assert_eq!((renumbered.seq, &renumbered.items), (1, &first.items));
    wait_for("the spool emptied by the ack", || {
        spool.lock().unwrap().pending().is_none()
    })
    .await;

    // The announcement of version 2 brings a fetch; the forged file is refused and the old set
    // stays; the second announcement brings the genuine one.
    let fetches_of_2 = |e: &Event| matches!(e, Event::Msg(4, ClientMsg::Fetch(f)) if f.have == Some(1));
    server
        .until("the fetch after the announcement", fetches_of_2)
        .await;
    server.until("the fetch after the forged set", fetches_of_2).await;
    wait_for("set 2 installed", || installed.load(Ordering::SeqCst)).await;
    assert_eq!(version_installed(&cfg.state_dir), Some(2));
    let error = status.lock().unwrap().last_error.clone().unwrap_or_default();
    assert!(
        error.contains("refused") && error.contains(&server.addr),
        "{error}"
    );
    assert!(status.lock().unwrap().connected);

    stop.store(true, Ordering::SeqCst);
    let stopped = std::time::Instant::now();
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "stopped in {:?}",
        stopped.elapsed()
    );
    assert_eq!(
        fleet.lock().unwrap().renews,
        1,
        "the renewed certificate is used, not renewed again"
    );
    assert_eq!(
        fleet.lock().unwrap().reports,
        3,
        "no batch was sent more often than needed"
    );
}

/// A link context for the agent `cfg` describes, with a spool of its own and the memory limit
/// of `cfg`.
fn link_context(cfg: &Config) -> LinkContext {
    LinkContext {
        config: cfg.collector.clone().unwrap(),
        state_dir: cfg.state_dir.clone(),
        spool: Arc::new(Mutex::new(Spool::open(&cfg.state_dir, 100).unwrap())),
        wake: Arc::new(tokio::sync::Notify::new()),
        heartbeat: Arc::new(|| wire::Heartbeat {
            agent_version: "0.1.0".into(),
            channel: "default".into(),
            set_version: None,
            set_created: None,
            config_hash: [0; 32],
            scan: wire::ScanStats::default(),
            cpu_millis: 0,
            rss_bytes: 0,
            spool_depth: 0,
            spool_dropped: 0,
            epoch: 0,
            last_seq: 0,
        }),
        status: Arc::new(Mutex::new(LinkStatus::default())),
        stop: Arc::new(AtomicBool::new(false)),
        set_installed: Arc::new(AtomicBool::new(false)),
        memory_limit: Arc::new(AtomicU64::new(cfg.memory_limit)),
    }
}

/// Stops a link thread and waits for it.
async fn stop_link(ctx: &LinkContext, thread: std::thread::JoinHandle<()>) {
    ctx.stop.store(true, Ordering::SeqCst);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
}

/// The index estimate for a set of `n` SHA-256 indicators.
fn index_bytes(n: usize) -> u64 {
    let mut counts = Counts::default();
    counts.file_hashes[2] = n;
    Index::estimate_bytes(&counts) as u64
}

/// Regression (security review, finding 1): a set over the memory limit was installed from the
/// channel, and the daemon then refused to start on it, for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_set_over_the_memory_limit_is_refused_and_the_installed_one_stays() {
    let pki = Pki::new("Picket collector CA");
    let signer = Arc::new(Signer::new());
    #[derive(Default)]
    struct Seen {
        fetches: usize,
        heartbeats_after_refusal: usize,
        refused: bool,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let announce_3 = Arc::new(AtomicBool::new(false));
    let (p, s, f, a) = (pki.clone(), signer.clone(), seen.clone(), announce_3.clone());
    // Set 1 (3 indicators) at enrolment; then set 2 (5 000 indicators, over the limit),
    // announced again at every heartbeat; set 3 (4 indicators) once the test says so.
    let script: Script = Arc::new(move |conn, msg| match msg {
        ClientMsg::Hello(_) => vec![welcome(conn)],
        ClientMsg::Enroll(e) => vec![enrolled(&p, conn, e, false)],
        ClientMsg::Fetch(fetch) if conn.client_cert => {
            let mut seen = f.lock().unwrap();
            seen.fetches += 1;
            let (version, n) = match fetch.have {
                None => (1, 3),
                Some(1) if !a.load(Ordering::SeqCst) => (2, 5_000),
                Some(1) => (3, 4),
                Some(v) => {
                    return vec![Reply::Msg(ServerMsg::UpToDate {
                        version: v,
                        file: Vec::new(),
                    })]
                }
            };
            vec![Reply::Msg(ServerMsg::Set {
                version,
                file: s.set(version, n),
            })]
        }
        ClientMsg::Heartbeat(_) => {
            let mut seen = f.lock().unwrap();
            if seen.refused {
                seen.heartbeats_after_refusal += 1;
            }
            let version = if a.load(Ordering::SeqCst) { 3 } else { 2 };
            vec![Reply::Msg(ServerMsg::NewVersion {
                channel: "default".into(),
                version,
            })]
        }
        _ => Vec::new(),
    });
    let server = Server::start(pki.clone(), true, script).await;
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(tmp.path(), &server.addr, pki.pin());
    std::fs::write(&opts.trust, signer.anchor()).unwrap();
    let done = run_enroll(options(tmp.path(), &server.addr, pki.pin()))
        .await
        .unwrap();
    let cfg = Config::load(&done.config).unwrap();
    assert_eq!(version_installed(&cfg.state_dir), Some(1));
    let stored = std::fs::read(cfg.state_dir.join(store::SET_FILE)).unwrap();

    let limit = index_bytes(5_000) - 1;
    assert!(index_bytes(4) < limit);
    let mut ctx = LinkContext {
        memory_limit: Arc::new(AtomicU64::new(limit)),
        ..link_context(&cfg)
    };
    ctx.config.heartbeat_interval = Duration::from_secs(1);
    let thread = link::spawn(ctx.clone()).unwrap();
    wait_for("the refusal in the link's status", || {
        ctx.status
            .lock()
            .unwrap()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("memory limit"))
    })
    .await;
    seen.lock().unwrap().refused = true;
    let error = ctx.status.lock().unwrap().last_error.clone().unwrap();
    // Named: the set version, the collector, what it needs and what is allowed.
    assert!(
        error.contains(&format!("set version 2 from collector {}", server.addr)),
        "{error}"
    );
    assert!(
        error.contains(&format!("needs about {} KiB", index_bytes(5_000).div_ceil(1024)))
            && error.contains(&format!("memory limit of {} KiB", limit.div_ceil(1024))),
        "{error}"
    );
    assert!(error.contains("the installed set stays"), "{error}");
    // The stored set is exactly what it was.
    assert_eq!(
        std::fs::read(cfg.state_dir.join(store::SET_FILE)).unwrap(),
        stored
    );
    assert!(!ctx.set_installed.load(Ordering::SeqCst));
    // Announcements of the refused version bring no new download.
    wait_for("two heartbeats answered with version 2", || {
        seen.lock().unwrap().heartbeats_after_refusal >= 2
    })
    .await;
    assert_eq!(seen.lock().unwrap().fetches, 2, "one at enrolment, one for set 2");
    // A newer version is fetched, and one that fits is installed.
    announce_3.store(true, Ordering::SeqCst);
    wait_for("set 3 installed", || ctx.set_installed.load(Ordering::SeqCst)).await;
    assert_eq!(version_installed(&cfg.state_dir), Some(3));
    stop_link(&ctx, thread).await;
    let leftovers: Vec<_> = std::fs::read_dir(&cfg.state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Regression (security review, finding 2): frames up to 512 MiB were accepted whatever the
/// agent was configured for.
#[tokio::test(flavor = "multi_thread")]
async fn the_link_refuses_a_frame_over_its_configured_cap_on_the_header() {
    let pki = Pki::new("Picket collector CA");
    let signer = Arc::new(Signer::new());
    let (p, s) = (pki.clone(), signer.clone());
    let over = (3u32 << 20).to_be_bytes().to_vec();
    // Set 1 at enrolment; afterwards every fetch gets a header announcing 3 MiB (far under the
    // protocol's 512 MiB), then nothing, the connection held.
    let script: Script = Arc::new(move |conn, msg| match msg {
        ClientMsg::Hello(_) => vec![welcome(conn)],
        ClientMsg::Enroll(e) => vec![enrolled(&p, conn, e, false)],
        ClientMsg::Fetch(f) if f.have.is_none() => vec![Reply::Msg(ServerMsg::Set {
            version: 1,
            file: s.set(1, 3),
        })],
        ClientMsg::Fetch(_) => vec![Reply::Raw(over.clone()), Reply::Hold],
        _ => Vec::new(),
    });
    let server = Server::start(pki.clone(), true, script).await;
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(tmp.path(), &server.addr, pki.pin());
    std::fs::write(&opts.trust, signer.anchor()).unwrap();
    let done = run_enroll(options(tmp.path(), &server.addr, pki.pin()))
        .await
        .unwrap();
    // `max_set_bytes = "2MiB"` in the configuration.
    let text = std::fs::read_to_string(&done.config).unwrap();
    std::fs::write(&done.config, format!("{text}max_set_bytes = \"2MiB\"\n")).unwrap();
    let cfg = Config::load(&done.config).unwrap();
    assert_eq!(cfg.collector.as_ref().unwrap().max_set_bytes, 2 << 20);
    let ctx = link_context(&cfg);
    let started = std::time::Instant::now();
    let thread = link::spawn(ctx.clone()).unwrap();
    wait_for("the frame refused", || {
        ctx.status.lock().unwrap().last_error.is_some()
    })
    .await;
    let error = ctx.status.lock().unwrap().last_error.clone().unwrap();
    let cap = link::session::frame_cap(2 << 20);
    assert!(
        error.contains(&server.addr)
            && error.contains(&format!("frame of {} bytes exceeds the cap of {cap}", 3 << 20)),
        "{error}"
    );
    // Refused on the header: no wait for a body that never comes (the read timeout is 30 s).
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(version_installed(&cfg.state_dir), Some(1));
    stop_link(&ctx, thread).await;
}

/// Regression (security review, finding 4): the first set was installed whatever channel it
/// was for, as long as the root signed it.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_set_for_another_channel_is_refused_at_enrolment() {
    let pki = Pki::new("Picket collector CA");
    let signer = Arc::new(Signer::new());
    let (p, s) = (pki.clone(), signer.clone());
    let script: Script = Arc::new(move |conn, msg| match msg {
        ClientMsg::Hello(_) => vec![welcome(conn)],
        ClientMsg::Enroll(e) => vec![enrolled(&p, conn, e, false)],
        // A genuine set, signed under the same root, for the channel `other`.
        ClientMsg::Fetch(_) => vec![Reply::Msg(ServerMsg::Set {
            version: 1,
            file: s.set_on("other", 1, 3),
        })],
        _ => Vec::new(),
    });
    let server = Server::start(pki.clone(), true, script).await;
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(tmp.path(), &server.addr, pki.pin());
    std::fs::write(&opts.trust, signer.anchor()).unwrap();
    let done = run_enroll(options(tmp.path(), &server.addr, pki.pin()))
        .await
        .unwrap();
    let err = done.first_set.unwrap_err();
    assert!(
        err.contains(&format!("set version 1 from collector {}", server.addr))
            && err.contains("channel \"other\" where \"default\" was expected"),
        "{err}"
    );
    assert_eq!(version_installed(&opts.state), None);
    // The same file imported offline (`import-set`) still installs: the CLI is unchanged.
    let anchor = TrustAnchor::parse(&signer.anchor()).unwrap();
    let file = signer.set_on("other", 1, 3);
    let dir = store::StateDir::open(&tmp.path().join("offline")).unwrap();
    let got = dir
        .import(
            &anchor,
            Path::new("other.pkt"),
            &file,
            unix_now(),
            &Limits::default(),
        )
        .unwrap();
    assert!(matches!(got, Imported::NewVersion { to: 1, .. }), "{got:?}");
}

fn version_installed(dir: &Path) -> Option<u64> {
    store::load_set(dir, &Limits::default())
        .unwrap()
        .map(|t| t.manifest().version)
}
