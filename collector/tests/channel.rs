//! The agent channel on loopback: the server in-process on 127.0.0.1:0 over a data directory
//! made by the real `picket-collector` binary, and a raw tokio-rustls client speaking the wire
//! protocol (enrolling with a real token for its client certificate).

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use picket_collector::channel::{Server, Settings};
use picket_collector::datadir::DataDir;
use picket_proto::wire::{
    self, Batch, ClientMsg, Enroll, ErrorCode, Fetch, Heartbeat, Hello, ObservedKind, ScanStats, ServerMsg,
    SightingReport, Welcome, MAX_CLIENT_FRAME, MAX_SERVER_FRAME,
};
use picket_proto::{Content, EnrollToken, Limits, SetFile};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

mod common;
use common::run_collector;

const EICAR_SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";

/// A data directory with one published set, and the server running over it.
struct Fixture {
    tmp: tempfile::TempDir,
    data: PathBuf,
    server: Option<Server>,
}

impl Fixture {
    fn new(tweak: impl FnOnce(&mut Settings)) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("collector");
        let d = data.to_str().unwrap();
        run_collector(&["init", "--data", d, "--org", "Test Org"]);
        // Enough indicators that a delta adding one is smaller than the snapshot (and kept).
        let list = tmp.path().join("feed.txt");
        let mut feed = format!("{EICAR_SHA256}\n");
        for i in 0..200 {
            feed.push_str(&hex::encode(picket_proto::sha256(
                format!("picket-test-{i}").as_bytes(),
            )));
            feed.push('\n');
        }
        std::fs::write(&list, feed).unwrap();
        run_collector(&["ingest", "--data", d, list.to_str().unwrap()]);
        run_collector(&["publish", "--data", d]);
        let dir = DataDir::open(&data).unwrap();
        let mut settings = Settings::from_config(dir.config(), &dir.config_path()).unwrap();
        settings.listen = "127.0.0.1:0".parse().unwrap();
        tweak(&mut settings);
        let server = Server::start(&data, settings).unwrap();
        Fixture {
            tmp,
            data,
            server: Some(server),
        }
    }

    fn d(&self) -> &str {
        self.data.to_str().unwrap()
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }

    fn token(&self) -> String {
        run_collector(&["token", "create", "--data", self.d(), "--uses", "10"])
            .trim()
            .to_owned()
    }

    fn ca(&self) -> PathBuf {
        self.data.join("tls/ca.pem")
    }

    /// The id of the stored indicator whose value holds `hash`.
    fn indicator(&self, hash: &str) -> String {
        let store = DataDir::open(&self.data).unwrap().store().unwrap();
        let all = store.candidates().unwrap();
        all.into_iter()
            .find(|c| c.value.contains(hash))
            .unwrap_or_else(|| panic!("no indicator for {hash}"))
            .record
            .id
    }

    /// The id of the EICAR indicator.
    fn eicar(&self) -> String {
        self.indicator(EICAR_SHA256)
    }

    /// Publishes a new version holding one more indicator.
    fn publish_more(&self, value: &str) {
        let list = self.tmp.path().join(format!("more-{value}.txt"));
        std::fs::write(&list, format!("{value}\n")).unwrap();
        run_collector(&["ingest", "--data", self.d(), list.to_str().unwrap()]);
        run_collector(&["publish", "--data", self.d()]);
    }
}

fn client_config(ca: &Path, identity: Option<&Agent>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match identity {
        None => builder.with_no_client_auth(),
        Some(a) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(a.cert.clone())],
                PrivateKeyDer::Pkcs8(a.pkcs8.clone().into()),
            )
            .unwrap(),
    };
    cfg.alpn_protocols = vec![b"picket/1".to_vec()];
    Arc::new(cfg)
}

/// An enrolled agent: its key and certificate.
#[derive(Clone)]
struct Agent {
    pkcs8: Vec<u8>,
    public: [u8; 32],
    cert: Vec<u8>,
    id: String,
    machine: [u8; 32],
}

fn new_key() -> (Vec<u8>, [u8; 32]) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    (
        pkcs8.as_ref().to_vec(),
        kp.public_key().as_ref().try_into().unwrap(),
    )
}

/// A client connection speaking frames.
struct Conn {
    tls: TlsStream<TcpStream>,
}

async fn connect(fx: &Fixture, identity: Option<&Agent>) -> Conn {
    let tcp = TcpStream::connect(fx.addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(&fx.ca(), identity));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    Conn {
        tls: connector.connect(name, tcp).await.unwrap(),
    }
}

fn hello(machine: [u8; 32]) -> ClientMsg {
    ClientMsg::Hello(Hello {
        min_version: 1,
        max_version: 1,
        agent_version: "0.1.0".into(),
        machine,
    })
}

impl Conn {
    async fn send(&mut self, msg: &ClientMsg) {
        self.tls.write_all(&wire::encode_frame(msg)).await.unwrap();
    }

    /// The next message, or `None` when the server closed the connection.
    async fn recv(&mut self) -> Option<ServerMsg> {
        let fut = async {
            let mut header = [0u8; 4];
            if self.tls.read_exact(&mut header).await.is_err() {
                return None;
            }
            let len = wire::frame_len(header, MAX_SERVER_FRAME).unwrap();
            let mut body = vec![0u8; len];
            self.tls.read_exact(&mut body).await.ok()?;
            Some(wire::decode_body(&body).unwrap())
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .expect("the server answered within 10 s")
    }

    async fn welcome(&mut self, machine: [u8; 32]) -> Welcome {
        self.send(&hello(machine)).await;
        match self.recv().await {
            Some(ServerMsg::Welcome(w)) => w,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Asserts the next message is an error of `code` and the connection then closes.
    async fn refused(&mut self, code: ErrorCode) -> wire::WireError {
        let e = match self.recv().await {
            Some(ServerMsg::Error(e)) => e,
            other => panic!("expected an error {code:?}, got {other:?}"),
        };
        assert_eq!(e.code, code, "{e}");
        assert_eq!(self.recv().await, None, "the server closes after {code:?}");
        e
    }
}

async fn enrol(fx: &Fixture, token: &str, machine: [u8; 32]) -> Agent {
    let token = EnrollToken::parse(token).unwrap();
    let (pkcs8, public) = new_key();
    let mut conn = connect(fx, None).await;
    let w = conn.welcome(machine).await;
    assert_eq!(w.agent, None);
    let kp = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
    let proof = kp.sign(&wire::enroll_proof_message(&w.nonce, &token.id, &public));
    conn.send(&ClientMsg::Enroll(Enroll {
        token_id: token.id.clone(),
        secret: token.secret.to_vec(),
        public_key: public,
        proof: proof.as_ref().to_vec(),
        machine,
        channel: "default".into(),
    }))
    .await;
    let enrolled = match conn.recv().await {
        Some(ServerMsg::Enrolled(e)) => e,
        other => panic!("expected Enrolled, got {other:?}"),
    };
    // One enrolment per session, then the server closes.
    assert_eq!(conn.recv().await, None);
    Agent {
        pkcs8,
        public,
        cert: enrolled.certificate,
        id: enrolled.agent,
        machine,
    }
}

async fn session(fx: &Fixture, agent: &Agent) -> Conn {
    let mut conn = connect(fx, Some(agent)).await;
    let w = conn.welcome(agent.machine).await;
    assert_eq!(w.agent.as_deref(), Some(agent.id.as_str()));
    conn
}

fn heartbeat(set_version: Option<u64>) -> Heartbeat {
    Heartbeat {
        agent_version: "0.1.0".into(),
        channel: "default".into(),
        set_version,
        set_created: None,
        config_hash: [3; 32],
        scan: ScanStats::default(),
        cpu_millis: 1,
        rss_bytes: 1 << 20,
        spool_depth: 0,
        spool_dropped: 0,
        epoch: 1,
        last_seq: 0,
    }
}

/// When the test's sightings were first seen: an hour before the test started, on a minute
/// (agents round down to the minute), so that it is after the agents enrolled, less a day.
fn seen() -> i64 {
    static SEEN: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *SEEN.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        now / 60 * 60 - 3_600
    })
}

fn sighting(indicator: &str, count: u64) -> SightingReport {
    SightingReport {
        indicator: indicator.into(),
        what: "sha256".into(),
        observed: ObservedKind::File,
        location: Some("/home/*/eicar.com".into()),
        first_seen: seen(),
        last_seen: seen() + 100,
        count,
        set_version: 1,
    }
}

fn fetch(have: Option<u64>, have_timestamp: Option<u64>) -> ClientMsg {
    ClientMsg::Fetch(Fetch {
        channel: "default".into(),
        have,
        have_timestamp,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_handshake_or_hello_is_dropped_at_the_hello_timeout() {
    let fx = Fixture::new(|s| s.hello_timeout = Duration::from_secs(1));
    // A TLS record header announcing a 512-byte handshake message, then its bytes one at a
    // time, too slowly to finish: the connection is busy but never gets anywhere.
    let start = Instant::now();
    let mut tcp = TcpStream::connect(fx.addr()).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = async {
        loop {
            let _ = tcp.write_all(&[0x01]).await;
            tokio::select! {
                r = tcp.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // A finished handshake and no hello: told why, then closed, at the same deadline.
    let start = Instant::now();
    let mut conn = connect(&fx, None).await;
    let e = conn.refused(ErrorCode::Timeout).await;
    assert!(e.message.contains("no hello within 1 s"), "{e}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_from_its_header_alone() {
    let fx = Fixture::new(|_| {});
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    // Before authentication the cap is a few kilobytes (a hello or an enrolment request); after
    // it, MAX_CLIENT_FRAME.
    for (authenticated, cap) in [(false, 4_096), (true, MAX_CLIENT_FRAME)] {
        let mut conn = if authenticated {
            session(&fx, &agent).await
        } else {
            connect(&fx, None).await
        };
        // A header announcing 4 GiB, and no body: the answer comes at once, so the server
        // neither allocated nor waited for the body.
        let start = Instant::now();
        conn.tls.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let e = conn.refused(ErrorCode::TooLarge).await;
        assert!(e.message.contains(&format!("cap of {cap}")), "{e}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
    // A hello padded past the pre-authentication cap.
    let mut conn = connect(&fx, None).await;
    conn.tls.write_all(&4_097u32.to_be_bytes()).await.unwrap();
    conn.refused(ErrorCode::TooLarge).await;
    // One byte over the cap is over the cap.
    let mut conn = session(&fx, &agent).await;
    conn.tls
        .write_all(&(MAX_CLIENT_FRAME as u32 + 1).to_be_bytes())
        .await
        .unwrap();
    conn.refused(ErrorCode::TooLarge).await;
    // A frame that does not decode is named and closes the session.
    let mut conn = session(&fx, &agent).await;
    conn.tls.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
    conn.refused(ErrorCode::BadFrame).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_enrolled_certificate_nothing_but_enrolment_is_accepted() {
    let fx = Fixture::new(|_| {});
    let report = ClientMsg::Report(Batch {
        epoch: 1,
        seq: 1,
        items: vec![sighting("x", 1)],
    });
    for msg in [report, fetch(None, None), heartbeat_msg(), ClientMsg::Renew] {
        let mut conn = connect(&fx, None).await;
        conn.welcome([1; 32]).await;
        conn.send(&msg).await;
        let e = conn.refused(ErrorCode::Unauthenticated).await;
        assert!(e.message.contains("may only enrol"), "{e}");
    }
    // A message before the hello.
    let mut conn = connect(&fx, None).await;
    conn.send(&fetch(None, None)).await;
    conn.refused(ErrorCode::BadFrame).await;
    // A version the collector does not speak.
    let mut conn = connect(&fx, None).await;
    conn.send(&ClientMsg::Hello(Hello {
        min_version: 7,
        max_version: 9,
        agent_version: "9.0".into(),
        machine: [0; 32],
    }))
    .await;
    conn.refused(ErrorCode::UnsupportedVersion).await;
    // A wrong token secret.
    let mut token = EnrollToken::parse(&fx.token()).unwrap();
    token.secret[0] ^= 1;
    let (pkcs8, public) = new_key();
    let mut conn = connect(&fx, None).await;
    let w = conn.welcome([1; 32]).await;
    let kp = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
    conn.send(&ClientMsg::Enroll(Enroll {
        token_id: token.id.clone(),
        secret: token.secret.to_vec(),
        public_key: public,
        proof: kp
            .sign(&wire::enroll_proof_message(&w.nonce, &token.id, &public))
            .as_ref()
            .to_vec(),
        machine: [1; 32],
        channel: "default".into(),
    }))
    .await;
    conn.refused(ErrorCode::TokenRefused).await;
    assert!(DataDir::open(&fx.data)
        .unwrap()
        .store()
        .unwrap()
        .sightings()
        .unwrap()
        .is_empty());
}

fn heartbeat_msg() -> ClientMsg {
    ClientMsg::Heartbeat(heartbeat(Some(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agent_is_throttled_then_closed_while_another_is_served_promptly() {
    let fx = Fixture::new(|s| {
        s.rate.messages_per_second = 20.0;
        s.rate.message_burst = 20.0;
        s.flood_strikes = 10;
    });
    let token = fx.token();
    let flooder = enrol(&fx, &token, [1; 32]).await;
    let other = enrol(&fx, &token, [2; 32]).await;
    let conn = session(&fx, &flooder).await;
    let (mut rd, mut wr) = tokio::io::split(conn.tls);
    // Fire heartbeats as fast as the socket takes them, never reading.
    let frame = wire::encode_frame(&heartbeat_msg());
    let flood = tokio::spawn(async move {
        for _ in 0..100_000 {
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    // The flooder is told to slow down, with a wait, and then cut off.
    let mut limited = 0;
    let started = Instant::now();
    let closing = loop {
        let mut header = [0u8; 4];
        if rd.read_exact(&mut header).await.is_err() {
            panic!("closed without saying why after {limited} RateLimited");
        }
        let mut body = vec![0u8; wire::frame_len(header, MAX_SERVER_FRAME).unwrap()];
        rd.read_exact(&mut body).await.unwrap();
        match wire::decode_body::<ServerMsg>(&body).unwrap() {
            ServerMsg::Error(e) if e.code == ErrorCode::RateLimited && e.message.contains("closing") => {
                break e
            }
            ServerMsg::Error(e) if e.code == ErrorCode::RateLimited => {
                assert!(e.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 1_000), "{e:?}");
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(limited, 10, "{closing:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut rest))
        .await
        .unwrap();
    flood.await.unwrap();

    // Meanwhile another agent's fetch is answered at once.
    let mut conn = session(&fx, &other).await;
    let start = Instant::now();
    conn.send(&fetch(None, None)).await;
    assert!(matches!(
        conn.recv().await,
        Some(ServerMsg::Set { version: 1, .. })
    ));
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_waits_as_told_is_never_cut_off() {
    let fx = Fixture::new(|s| {
        s.rate.messages_per_second = 50.0;
        s.rate.message_burst = 5.0;
        s.flood_strikes = 3;
    });
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    let eicar = fx.eicar();
    let mut conn = session(&fx, &agent).await;
    // 60 reports, one at a time, each sent again after the wait when refused.
    let mut refused = 0;
    for seq in 1..=60 {
        let msg = ClientMsg::Report(Batch {
            epoch: 7,
            seq,
            items: vec![sighting(&eicar, seq)],
        });
        loop {
            conn.send(&msg).await;
            match conn.recv().await {
                Some(ServerMsg::Ack {
                    seq: s,
                    duplicate: false,
                    ..
                }) if s == seq => break,
                Some(ServerMsg::Error(e)) if e.code == ErrorCode::RateLimited => {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(e.retry_after_ms.unwrap())).await;
                }
                other => panic!("batch {seq}: {other:?}"),
            }
        }
    }
    assert!(refused > 3, "the limit was reached: {refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_ends_a_live_session_within_a_second() {
    let fx = Fixture::new(|_| {});
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    let mut conn = session(&fx, &agent).await;
    conn.send(&heartbeat_msg()).await;
    run_collector(&["agents", "revoke", "--data", fx.d(), &agent.id]);
    let start = Instant::now();
    let e = conn.refused(ErrorCode::Revoked).await;
    assert!(e.message.contains(&agent.id), "{e}");
    assert!(
        start.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        start.elapsed()
    );
    // And it cannot come back.
    let mut conn = connect(&fx, Some(&agent)).await;
    conn.send(&hello(agent.machine)).await;
    conn.refused(ErrorCode::Revoked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_versions_are_pushed_and_each_fetch_gets_what_it_needs() {
    let fx = Fixture::new(|_| {});
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    let mut conn = session(&fx, &agent).await;
    // Nothing installed: the full snapshot, the same bytes `export-set` writes.
    conn.send(&fetch(None, None)).await;
    let Some(ServerMsg::Set { version: 1, file }) = conn.recv().await else {
        panic!("expected set version 1");
    };
    let exported = fx.tmp.path().join("v1.pkt");
    run_collector(&[
        "export-set",
        "--data",
        fx.d(),
        "--out",
        exported.to_str().unwrap(),
    ]);
    assert_eq!(file, std::fs::read(&exported).unwrap());
    let parsed = SetFile::decode(&file, &Limits::default()).unwrap();
    assert!(matches!(parsed.content, Content::Full(_)));
    let ts = DataDir::open(&fx.data)
        .unwrap()
        .store()
        .unwrap()
        .current("default")
        .unwrap()
        .unwrap()
        .timestamp_version;
    // Current: nothing to send.
    conn.send(&fetch(Some(1), Some(ts))).await;
    assert_eq!(
        conn.recv().await,
        Some(ServerMsg::UpToDate {
            version: 1,
            file: vec![]
        })
    );
    // Current, with an older timestamp: a freshness-only file.
    conn.send(&fetch(Some(1), Some(ts - 1))).await;
    let Some(ServerMsg::Set { version: 1, file }) = conn.recv().await else {
        panic!("expected a freshness file");
    };
    assert!(matches!(
        SetFile::decode(&file, &Limits::default()).unwrap().content,
        Content::Installed
    ));

    // A publish from the command line is pushed within a second.
    let start = Instant::now();
    fx.publish_more("44d88612fea8a8f36de82e1278abb02f");
    let published = start.elapsed();
    assert_eq!(
        conn.recv().await,
        Some(ServerMsg::NewVersion {
            channel: "default".into(),
            version: 2
        })
    );
    assert!(start.elapsed() - published < Duration::from_millis(1_500));
    // One version behind: the delta.
    conn.send(&fetch(Some(1), Some(ts))).await;
    let Some(ServerMsg::Set { version: 2, file }) = conn.recv().await else {
        panic!("expected set version 2");
    };
    assert!(matches!(
        SetFile::decode(&file, &Limits::default()).unwrap().content,
        Content::Delta(_)
    ));
    // Another channel is not this agent's to fetch.
    conn.send(&ClientMsg::Fetch(Fetch {
        channel: "other".into(),
        have: None,
        have_timestamp: None,
    }))
    .await;
    conn.refused(ErrorCode::BadRequest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sightings_are_counted_once_and_always_under_the_sender() {
    let fx = Fixture::new(|_| {});
    let token = fx.token();
    let a = enrol(&fx, &token, [1; 32]).await;
    let b = enrol(&fx, &token, [2; 32]).await;
    let eicar = fx.eicar();
    let other = fx.indicator(&hex::encode(picket_proto::sha256(b"picket-test-7")));
    let mut conn = session(&fx, &a).await;
    let batch = |seq, items| {
        ClientMsg::Report(Batch {
            epoch: 42,
            seq,
            items,
        })
    };
    let ack = |seq, duplicate| {
        Some(ServerMsg::Ack {
            epoch: 42,
            seq,
            duplicate,
        })
    };
    conn.send(&batch(1, vec![sighting(&eicar, 3)])).await;
    assert_eq!(conn.recv().await, ack(1, false));
    // The same batch again (the ack was lost): acknowledged, counted once.
    conn.send(&batch(1, vec![sighting(&eicar, 3)])).await;
    assert_eq!(conn.recv().await, ack(1, true));
    // Another batch under that number: the agent's spool was restored.
    conn.send(&batch(1, vec![sighting(&other, 1)])).await;
    assert_eq!(conn.recv().await, Some(ServerMsg::Conflict { epoch: 42, seq: 1 }));
    // Batch 2 is skipped: the gap raises an alarm.
    conn.send(&batch(3, vec![sighting(&eicar, 5)])).await;
    assert_eq!(conn.recv().await, ack(3, false));
    conn.send(&heartbeat_msg()).await;
    drop(conn);
    // Agent b sends the same numbers: its own batch, its own sightings.
    let mut conn = session(&fx, &b).await;
    conn.send(&batch(1, vec![sighting(&eicar, 2)])).await;
    assert_eq!(conn.recv().await, ack(1, false));
    drop(conn);

    let store = DataDir::open(&fx.data).unwrap().store().unwrap();
    let all = store.sightings().unwrap();
    let of = |id: &str| {
        all.iter()
            .filter(|s| s.agent == id)
            .map(|s| s.count)
            .collect::<Vec<_>>()
    };
    assert_eq!(of(&a.id), vec![5]);
    assert_eq!(of(&b.id), vec![2]);
    let json = run_collector(&["sightings", "--data", fx.d(), "--json"]);
    let line: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(line["indicator"], eicar.as_str());
    assert_eq!(line["hosts"], 2);
    assert_eq!(line["count"], 7);
    assert_eq!(line["first_seen"], picket_proto::rfc3339(seen()));
    assert_eq!(line["observed"], serde_json::json!(["file"]));
    let alarms = run_collector(&["alarms", "--data", fx.d(), "--json"]);
    assert!(alarms.contains("\"kind\":\"sequence-gap\""), "{alarms}");
    assert!(alarms.contains(&a.id), "{alarms}");
    assert!(alarms.contains("batch 2 missing"), "{alarms}");
    // The heartbeat was stored.
    let row = store.agent(&a.id).unwrap().unwrap();
    assert!(matches!(row.last_heartbeat(), Some(Ok(h)) if h.config_hash == [3; 32]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_is_flagged_and_a_certificate_renewed() {
    // Certificates of a minute, issued five minutes back-dated: past half their life at once,
    // so a renewal is open.
    let fx = Fixture::new(|s| s.cert_lifetime = 60);
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    // The same identity from another machine.
    let mut clone = agent.clone();
    clone.machine = [9; 32];
    let mut conn = session(&fx, &clone).await;
    conn.send(&ClientMsg::Renew).await;
    let Some(ServerMsg::Renewed(renewed)) = conn.recv().await else {
        panic!("expected Renewed");
    };
    assert_eq!(
        picket_collector::pki::ed25519_key(&renewed.certificate),
        Some(agent.public)
    );
    assert_ne!(renewed.certificate, agent.cert);
    drop(conn);
    let store = DataDir::open(&fx.data).unwrap().store().unwrap();
    let row = store.agent(&agent.id).unwrap().unwrap();
    assert!(row.clone_seen.is_some());
    assert_eq!(row.cert_not_after, renewed.not_after);
    let alarms = store.alarms(false).unwrap();
    assert_eq!(alarms.len(), 1);
    assert_eq!(alarms[0].kind, "clone");
    // The renewed certificate works.
    let renewed_agent = Agent {
        cert: renewed.certificate,
        ..agent
    };
    session(&fx, &renewed_agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_handshake_cap_are_closed_at_accept() {
    let fx = Fixture::new(|s| {
        s.max_handshakes = 2;
        s.hello_timeout = Duration::from_secs(3);
    });
    let _a = TcpStream::connect(fx.addr()).await.unwrap();
    let _b = TcpStream::connect(fx.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = TcpStream::connect(fx.addr()).await.unwrap();
    let mut buf = [0u8; 1];
    let start = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
    drop((_a, _b));
    // Once they are gone, a new connection gets through.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    session(&fx, &agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_and_a_body_that_never_arrives_are_closed_with_the_reason() {
    let fx = Fixture::new(|s| {
        s.idle_timeout = Duration::from_secs(1);
        s.read_timeout = Duration::from_secs(1);
    });
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    let mut conn = session(&fx, &agent).await;
    let start = Instant::now();
    let e = conn.refused(ErrorCode::Timeout).await;
    assert!(e.message.contains("no frame for 1 s"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(3));
    // A header, half a body, then nothing.
    let mut conn = session(&fx, &agent).await;
    let frame = wire::encode_frame(&heartbeat_msg());
    conn.tls.write_all(&frame[..frame.len() / 2]).await.unwrap();
    let e = conn.refused(ErrorCode::Timeout).await;
    assert!(e.message.contains("did not arrive within 1 s"), "{e}");
}

#[test]
fn serve_listens_where_told_and_prints_the_address() {
    use std::io::BufRead;
    let fx = Fixture::new(|_| {});
    // serve refuses to run while the root key is readable: it goes offline.
    let key = fx.tmp.path().join("collector.root-OFFLINE.key");
    std::fs::rename(&key, fx.tmp.path().join("offline.key")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_picket-collector"))
        .args(["serve", "--data", fx.d(), "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let addr = line
        .strip_prefix("picket-collector: agent channel listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer = rt.block_on(async {
        // The same data directory, served by the binary this time.
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(client_config(&fx.ca(), None));
        let tls = connector
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let mut conn = Conn { tls };
        conn.welcome([1; 32]).await
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer.agent, None);
    assert_eq!(answer.version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_client_certificate_runs_out() {
    // Certificates of three seconds: the session outlives its certificate only that long.
    let fx = Fixture::new(|s| s.cert_lifetime = 3);
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    let mut conn = session(&fx, &agent).await;
    let start = Instant::now();
    let e = conn.refused(ErrorCode::Unauthenticated).await;
    assert!(e.message.contains("expired"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}

/// A session of `agent`, once the collector lets it in: connections turned away at accept (the
/// places of sessions that just closed are given back a moment after) are tried again, for at
/// most two seconds.
async fn session_when_admitted(fx: &Fixture, agent: &Agent) -> Conn {
    let give_up = Instant::now() + Duration::from_secs(2);
    loop {
        let tcp = TcpStream::connect(fx.addr()).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(client_config(&fx.ca(), Some(agent)));
        let name = ServerName::try_from("127.0.0.1").unwrap();
        if let Ok(tls) = connector.connect(name, tcp).await {
            let mut conn = Conn { tls };
            conn.send(&hello(agent.machine)).await;
            match conn.recv().await {
                Some(ServerMsg::Welcome(w)) => {
                    assert_eq!(w.agent.as_deref(), Some(agent.id.as_str()));
                    return conn;
                }
                // Closed at accept, or told to come back later.
                None => {}
                Some(ServerMsg::Error(e)) if e.code == ErrorCode::Internal => {}
                other => panic!("expected Welcome, got {other:?}"),
            }
        }
        assert!(Instant::now() < give_up, "not admitted within 2 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a fetch and expects set version 1.
async fn fetched(conn: &mut Conn) {
    conn.send(&fetch(None, None)).await;
    match conn.recv().await {
        Some(ServerMsg::Set { version: 1, .. }) => {}
        other => panic!("expected set version 1, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_holds_at_most_its_share_of_sessions_and_the_newest_win() {
    // Three sessions for the whole collector, two per agent.
    let fx = Fixture::new(|s| {
        s.max_sessions = 3;
        s.max_sessions_per_agent = 2;
    });
    let token = fx.token();
    let a = enrol(&fx, &token, [1; 32]).await;
    let b = enrol(&fx, &token, [2; 32]).await;
    // Agent A opens five sessions, one after another, keeping each: each new one past two
    // closes A's oldest, which is told why.
    let mut open = std::collections::VecDeque::new();
    for i in 0..5 {
        open.push_back(session_when_admitted(&fx, &a).await);
        if open.len() > 2 {
            let mut oldest = open.pop_front().unwrap();
            let e = oldest.refused(ErrorCode::BadRequest).await;
            assert!(
                e.message
                    .contains(&format!("another session of agent {} replaced this one", a.id))
                    && e.message.contains("at most 2 live sessions per agent"),
                "session {i}: {e}"
            );
        }
    }
    // The two newest are served.
    for conn in open.iter_mut() {
        fetched(conn).await;
    }
    // And A's key did not take the collector's last place: B gets in.
    let mut conn = session_when_admitted(&fx, &b).await;
    fetched(&mut conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_certificate_cannot_lock_out_an_enrolled_agent() {
    // Four TLS handshakes at once, two enrolments at once; two seconds from accept for all
    // of an enrolment, thirty for a frame once authenticated.
    let fx = Fixture::new(|s| {
        s.max_handshakes = 4;
        s.max_enrolling = 2;
        s.hello_timeout = Duration::from_secs(2);
        s.read_timeout = Duration::from_secs(30);
    });
    let token = fx.token();
    let agent = enrol(&fx, &token, [1; 32]).await;
    // Six squatters finish their TLS handshake without a certificate, say hello, and then sit
    // there as if to enrol, never sending the request. Two are let in; the others are turned
    // away at once, told why. None keeps a handshake place.
    let start = Instant::now();
    let mut held = Vec::new();
    for _ in 0..6 {
        let mut conn = connect(&fx, None).await;
        conn.send(&hello([5; 32])).await;
        match conn.recv().await {
            Some(ServerMsg::Welcome(w)) => {
                assert_eq!(w.agent, None);
                held.push(conn);
            }
            Some(ServerMsg::Error(e)) => {
                assert_eq!(e.code, ErrorCode::Internal, "{e}");
                assert!(e.message.contains("2 enrolments are in progress"), "{e}");
                assert!(e.retry_after_ms.is_some(), "{e:?}");
                assert_eq!(conn.recv().await, None);
            }
            other => panic!("expected Welcome or a refusal, got {other:?}"),
        }
    }
    assert_eq!(held.len(), 2);
    // Meanwhile the enrolled agent connects and is served at once.
    let t = Instant::now();
    let mut conn = session(&fx, &agent).await;
    fetched(&mut conn).await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // The squatters are closed two seconds after they connected, welcome or not: their whole
    // enrolment has that long, not a fresh read timeout after the welcome.
    for mut squatter in held {
        let e = squatter.refused(ErrorCode::Timeout).await;
        assert!(
            e.message
                .contains("no enrolment request within 2 s of connecting"),
            "{e}"
        );
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    // Their places are free again: enrolment works.
    enrol(&fx, &token, [2; 32]).await;
    // And the agent's session outlived them.
    fetched(&mut conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_unauthenticated_connections() {
    let fx = Fixture::new(|s| {
        s.max_handshakes_per_ip = 2;
        s.max_sessions_per_agent = 4;
        // Long, so that a close at accept (what is tested) cannot be mistaken for the hello
        // deadline however loaded the machine is.
        s.hello_timeout = Duration::from_secs(10);
    });
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    // Authenticated sessions give their place back once welcomed: three at once from one
    // address.
    let mut live = Vec::new();
    for _ in 0..3 {
        live.push(session(&fx, &agent).await);
    }
    // Two connections that never say anything hold the address's two places...
    let quiet_a = TcpStream::connect(fx.addr()).await.unwrap();
    let quiet_b = TcpStream::connect(fx.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so a third from it is closed at accept, before any TLS.
    let mut third = TcpStream::connect(fx.addr()).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(8), third.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "closed at accept, not at the hello deadline"
    );
    // The sessions already in are untouched.
    for conn in live.iter_mut() {
        fetched(conn).await;
    }
    // Once the silent ones are gone, the address gets in again.
    drop((quiet_a, quiet_b));
    let mut conn = session_when_admitted(&fx, &agent).await;
    fetched(&mut conn).await;
}

/// Sends an enrolment request with `token` for a new key on `channel`, and returns the answer.
async fn enrol_attempt(fx: &Fixture, token: &EnrollToken, channel: &str) -> Option<ServerMsg> {
    let (pkcs8, public) = new_key();
    let mut conn = connect(fx, None).await;
    let w = conn.welcome([1; 32]).await;
    let kp = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
    let proof = kp.sign(&wire::enroll_proof_message(&w.nonce, &token.id, &public));
    conn.send(&ClientMsg::Enroll(Enroll {
        token_id: token.id.clone(),
        secret: token.secret.to_vec(),
        public_key: public,
        proof: proof.as_ref().to_vec(),
        machine: [1; 32],
        channel: channel.into(),
    }))
    .await;
    let answer = conn.recv().await;
    assert_eq!(conn.recv().await, None, "one enrolment per session");
    answer
}

fn wire_error(answer: Option<ServerMsg>) -> wire::WireError {
    match answer {
        Some(ServerMsg::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_enrolments_are_paced_per_address_and_never_wait_for_the_writer() {
    let fx = Fixture::new(|s| {
        // One attempt each 5 s after a burst of 3: slow enough that a loaded machine cannot
        // refill the bucket between the attempts below.
        s.enrolment_rate = picket_collector::channel::limits::RateLimit::messages_only(0.2, 3.0);
    });
    let mut wrong = EnrollToken::parse(&fx.token()).unwrap();
    wrong.secret[0] ^= 1;
    // Another process holds the database's write lock (a long `ingest`, say): the writer
    // thread would wait for it. Attempts that cannot succeed are refused without it.
    let db = rusqlite::Connection::open(fx.data.join("picket.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    for _ in 0..2 {
        let start = Instant::now();
        let e = wire_error(enrol_attempt(&fx, &wrong, "default").await);
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::TokenRefused, "token not valid")
        );
        // Not queued behind the locked writer (which would wait out SQLite's 10 s busy timeout).
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    }
    // A channel this collector does not serve is refused the same way, naming the ones it does.
    let e = wire_error(enrol_attempt(&fx, &wrong, "servers").await);
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert_eq!(
        e.message,
        "enroll.channel: channel \"servers\" is not served here (channels: default)"
    );
    // The fourth attempt from this address: paced.
    let e = wire_error(enrol_attempt(&fx, &wrong, "default").await);
    assert_eq!(e.code, ErrorCode::RateLimited, "{e}");
    assert!(e.message.contains("too many enrolment attempts"), "{e}");
    assert!(e.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 5_000), "{e:?}");
    db.execute_batch("ROLLBACK").unwrap();
    // After the wait, a real token enrols.
    tokio::time::sleep(Duration::from_millis(e.retry_after_ms.unwrap())).await;
    enrol(&fx, &fx.token(), [3; 32]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_checked_before_anything_of_it_is_stored() {
    let fx = Fixture::new(|_| {});
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    let eicar = fx.eicar();
    let report = |seq, items| ClientMsg::Report(Batch { epoch: 5, seq, items });
    // An indicator id the collector never had: refused, naming the item, and the session ends.
    let mut conn = session(&fx, &agent).await;
    conn.send(&report(
        1,
        vec![sighting(&eicar, 1), sighting("indicator--made-up", 1)],
    ))
    .await;
    let e = conn.refused(ErrorCode::BadRequest).await;
    assert!(
        e.message.contains(
            "report.items[1].indicator \"indicator--made-up\" is not an indicator this collector has"
        ),
        "{e}"
    );
    // An empty batch.
    let mut conn = session(&fx, &agent).await;
    conn.send(&report(1, vec![])).await;
    let e = conn.refused(ErrorCode::BadRequest).await;
    assert!(e.message.contains("report.items is empty"), "{e}");
    // Nothing of either was stored; absurd times and counts are bounded.
    let mut conn = session(&fx, &agent).await;
    let mut wild = sighting(&eicar, u64::MAX);
    (wild.first_seen, wild.last_seen) = (i64::MIN, i64::MAX);
    conn.send(&report(1, vec![wild])).await;
    assert_eq!(
        conn.recv().await,
        Some(ServerMsg::Ack {
            epoch: 5,
            seq: 1,
            duplicate: false
        })
    );
    drop(conn);
    let store = DataDir::open(&fx.data).unwrap().store().unwrap();
    let rows = store.sightings().unwrap();
    assert_eq!(rows.len(), 1);
    let enrolled = store.agent(&agent.id).unwrap().unwrap().enrolled;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // From a day before enrolment to five minutes ahead of the collector's clock.
    assert_eq!(rows[0].first_seen, enrolled - 86_400);
    assert!(
        (enrolled + 300..=now + 300).contains(&rows[0].last_seen),
        "{rows:?}"
    );
    assert_eq!(rows[0].count, 1_000_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_agents_wrote_reaches_the_operator_without_control_characters() {
    let fx = Fixture::new(|_| {});
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    let eicar = fx.eicar();
    let mut conn = session(&fx, &agent).await;
    // A heartbeat whose version string retitles the terminal and clears it; a sighting whose
    // kind turns the text red.
    let mut hb = heartbeat(Some(1));
    hb.agent_version = "0.1.0\u{1b}]0;pwned\u{7}\u{1b}[2J".into();
    conn.send(&ClientMsg::Heartbeat(hb)).await;
    let mut s = sighting(&eicar, 1);
    s.what = "sha256\u{1b}[31m".into();
    conn.send(&ClientMsg::Report(Batch {
        epoch: 1,
        seq: 1,
        items: vec![s],
    }))
    .await;
    assert!(matches!(conn.recv().await, Some(ServerMsg::Ack { .. })));
    drop(conn);
    let agents = run_collector(&["agents", "list", "--data", fx.d()]);
    let sightings = run_collector(&["sightings", "--data", fx.d()]);
    for out in [&agents, &sightings] {
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
    }
    assert!(agents.contains("agent 0.1.0?]0;pwned??[2J"), "{agents}");
    assert!(sightings.contains("what=sha256?[31m"), "{sightings}");
    // JSON keeps the exact string, escaped.
    let json = run_collector(&["agents", "list", "--data", fx.d(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["agent_version"], "0.1.0\u{1b}]0;pwned\u{7}\u{1b}[2J");
    assert!(!json.contains('\u{1b}'), "{json:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_opens_half_way_through_the_certificate() {
    // The shipped lifetime, a week: a certificate fresh from enrolment is not renewed.
    let fx = Fixture::new(|_| {});
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    let (not_before, not_after) = picket_proto::x509::validity(&agent.cert).unwrap();
    let mut conn = session(&fx, &agent).await;
    conn.send(&ClientMsg::Renew).await;
    let e = conn.refused(ErrorCode::BadRequest).await;
    let opens = not_before + (not_after - not_before) / 2 - 300;
    assert_eq!(
        e.message,
        format!(
            "renewal opens at {} (half-way through the life of this session's certificate, which ends {})",
            picket_proto::rfc3339(opens),
            picket_proto::rfc3339(not_after)
        )
    );
    // Nothing was issued.
    let store = DataDir::open(&fx.data).unwrap().store().unwrap();
    assert_eq!(store.agent(&agent.id).unwrap().unwrap().cert_not_after, not_after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_revocations_cannot_be_read_agent_sessions_end_until_they_can() {
    let fx = Fixture::new(|s| s.blind_after = Duration::from_secs(1));
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    let mut conn = session(&fx, &agent).await;
    fetched(&mut conn).await;
    // The poll reads revocations and set versions together; take a table it needs away.
    let db = rusqlite::Connection::open(fx.data.join("picket.db")).unwrap();
    let start = Instant::now();
    db.execute_batch("ALTER TABLE sets RENAME TO sets_away").unwrap();
    // The live session is closed within about a second and a poll, and says why.
    let e = conn.refused(ErrorCode::Internal).await;
    assert!(
        e.message.contains("cannot read its list of revoked agents"),
        "{e}"
    );
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    // New sessions are refused the same way (the agent itself is still found).
    let mut conn = connect(&fx, Some(&agent)).await;
    conn.send(&hello(agent.machine)).await;
    let e = conn.refused(ErrorCode::Internal).await;
    assert!(e.message.contains("serves no agent until it can"), "{e}");
    // Readable again: sessions are admitted at the next poll.
    db.execute_batch("ALTER TABLE sets_away RENAME TO sets").unwrap();
    let mut conn = session_when_admitted(&fx, &agent).await;
    fetched(&mut conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_cut_off_still_receives_every_answer_and_the_reason() {
    // 200 messages a second in bursts of 5: each refusal waits 5 ms; 20 ignored ones close.
    let fx = Fixture::new(|s| {
        s.rate.messages_per_second = 200.0;
        s.rate.message_burst = 5.0;
        s.flood_strikes = 20;
    });
    let agent = enrol(&fx, &fx.token(), [1; 32]).await;
    // A client with a tiny receive buffer that floods and does not read: the collector's
    // answers back up in its own socket, as they do for a flooder busy writing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2_048).unwrap();
    let tcp = socket.connect(fx.addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(&fx.ca(), Some(&agent)));
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let mut conn = Conn { tls };
    conn.welcome(agent.machine).await;
    let (mut rd, mut wr) = tokio::io::split(conn.tls);
    let frame = wire::encode_frame(&heartbeat_msg());
    let flood = tokio::spawn(async move { while wr.write_all(&frame).await.is_ok() {} });
    // Long enough for the collector to refuse twenty frames and close; well within the second
    // it lingers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut limited = 0;
    let closing = loop {
        let mut header = [0u8; 4];
        if let Err(e) = rd.read_exact(&mut header).await {
            panic!("the connection ended ({e}) after {limited} RateLimited, without the reason");
        }
        let mut body = vec![0u8; wire::frame_len(header, MAX_SERVER_FRAME).unwrap()];
        rd.read_exact(&mut body).await.unwrap();
        match wire::decode_body::<ServerMsg>(&body).unwrap() {
            ServerMsg::Error(e) if e.code == ErrorCode::RateLimited && e.message.contains("closing") => {
                break e
            }
            ServerMsg::Error(e) if e.code == ErrorCode::RateLimited => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(limited, 20, "{closing:?}");
    assert!(closing.message.contains("21 frames in a row"), "{closing:?}");
    // Then a clean end: TLS close_notify, not a reset.
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(
        end.is_ok() && rest.is_empty(),
        "{end:?} after {} more bytes",
        rest.len()
    );
    flood.abort();
}
