//! The agent channel under abuse, with the real `picket-collector serve` on loopback: clients
//! without an enrolled key, batches that try to pass as another agent's or are replayed (10 000
//! forged, replayed and spoofed reports in one test, counts compared exactly before and after),
//! oversized frames, clients that never finish their hello, slow clients (a byte a second, on
//! the hello and on a frame's body), and an agent that floods while others fetch and report.
//! One organisation's many agents count once towards a community's k, and their count leaves
//! banded (`share preview --json`).
//!
//! The channel carries no compressed content (a frame is a length and one postcard message), so
//! there is no decompression bomb to defuse; what such a bomb amounts to here, a large claimed
//! length, is refused from the header when over the cap and never allocated up front when
//! within it.
//!
//! The agents are simulated: they enrol through the real protocol with tokens from
//! `token create`, and speak through the agent's own client (`picket_agent::link`), or through
//! raw TLS where a client has to misbehave in ways that client refuses to. Outcomes are read
//! the way an operator reads them (`sightings --json`, `agents list --json`, `alarms --json`)
//! and from the serve process itself (its resident memory, from `/proc/PID/status`).
//!
//! The collector stores sightings only of indicators it has, so the sightings here name
//! indicators ingested for the purpose ([`NAMED`]); results are read back by those names.
//!
//! Invariant under test: whatever one connection does, it costs the collector a bounded amount
//! of memory, is closed or throttled (and told why), never gets anything stored under another
//! agent's name, and leaves the other agents served promptly.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use picket_agent::link::{self, tls, LinkError, Session};
use picket_e2e::{ok, Collector};
use picket_proto::wire::{
    self, Batch, ClientMsg, ErrorCode, Fetch, Heartbeat, Hello, ObservedKind, ScanStats, ServerMsg,
    SightingReport, WireError, MAX_CLIENT_FRAME, MAX_SERVER_FRAME,
};
use picket_proto::EnrollToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::ClientConfig;

/// The name the collector's server certificate holds for loopback.
const HOST: &str = "127.0.0.1";
/// A SHA-256 nobody will ever match (the first set must hold something).
const DECOY: &str = "0000000000000000000000000000000000000000000000000000000000000001";
/// The indicators the tests report sightings of, by name. The collector stores sightings only
/// of indicators it has, so each name is the SHA-256 of itself in the first set, and
/// [`Serve::id`] gives its indicator id.
const NAMED: [&str; 7] = [
    "stolen",
    "ind-a",
    "ind-b",
    "ind-both",
    "ind-named",
    "flood",
    "calm",
];
/// The longest any single answer may take before the test fails (every wait is bounded).
const ANSWER: Duration = Duration::from_secs(5);
const MIB: f64 = (1 << 20) as f64;

/// A collector with one published set, its root key moved offline, and `serve` running on a
/// loopback port. Dropping it kills `serve`.
struct Serve {
    /// The serve process, killed on drop (first: fields drop in order, and the data directory
    /// goes with `c`); its output is drained by threads so it never blocks on a full pipe.
    serve: picket_e2e::Serve,
    c: Collector,
    addr: String,
    /// The indicator id of each of [`NAMED`], and back.
    ids: BTreeMap<String, String>,
    names: BTreeMap<String, String>,
}

/// The SHA-256 (hex) a name in [`NAMED`] stands for.
fn named_hash(name: &str) -> String {
    hex::encode(picket_proto::sha256(name.as_bytes()))
}

impl Serve {
    /// Inits a collector, sets the `[channel]` keys given (values in TOML syntax), publishes a
    /// first set and starts `serve --listen 127.0.0.1:0`.
    fn start(channel: &[(&str, &str)]) -> Serve {
        Serve::start_with(channel, "")
    }

    /// [`Serve::start`], with `extra` (TOML tables, `[[community]]` say) appended to the
    /// configuration.
    fn start_with(channel: &[(&str, &str)], extra: &str) -> Serve {
        let c = Collector::init();
        let toml = c.data.join("picket.toml");
        let mut text = fs::read_to_string(&toml).unwrap();
        for (key, value) in channel {
            let prefix = format!("{key} = ");
            let line = text
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no {key} in {}:\n{text}", toml.display()))
                .to_owned();
            text = text.replace(&line, &format!("{prefix}{value}"));
        }
        text.push_str(extra);
        fs::write(&toml, text).unwrap();
        fs::rename(c.root_key(), c.tmp.path().join("offline.key")).unwrap();
        let mut first: Vec<String> = NAMED.iter().map(|n| named_hash(n)).collect();
        first.push(DECOY.to_owned());
        c.ingest_list("first.txt", &first.iter().map(String::as_str).collect::<Vec<_>>());
        c.publish(&[]);
        let store = picket_collector::datadir::DataDir::open(&c.data)
            .unwrap()
            .store()
            .unwrap();
        let stored = store.candidates().unwrap();
        let mut ids = BTreeMap::new();
        let mut names = BTreeMap::new();
        for name in NAMED {
            let hash = named_hash(name);
            let id = stored
                .iter()
                .find(|c| c.value.contains(&hash))
                .unwrap_or_else(|| panic!("{name} was not ingested"))
                .record
                .id
                .clone();
            ids.insert(name.to_owned(), id.clone());
            names.insert(id, name.to_owned());
        }
        drop(store);
        let serve = picket_e2e::Serve::start(c.data(), "127.0.0.1:0", &[]);
        let addr = serve.channel.clone();
        Serve {
            serve,
            c,
            addr,
            ids,
            names,
        }
    }

    /// The indicator id of `name` (one of [`NAMED`]).
    fn id(&self, name: &str) -> String {
        self.ids[name].clone()
    }

    /// The name an indicator id stands for, or the id itself.
    fn name(&self, id: &str) -> String {
        self.names.get(id).cloned().unwrap_or_else(|| id.to_owned())
    }

    fn pid(&self) -> u32 {
        self.serve.child.0.id()
    }

    /// A token for `uses` enrolments.
    fn token(&self, uses: u32) -> String {
        let uses = uses.to_string();
        ok(
            "picket-collector",
            &["token", "create", "--data", self.c.data(), "--uses", &uses],
        )
        .trim()
        .to_owned()
    }

    /// The collector CA, as `init` wrote it.
    fn ca(&self) -> CertificateDer<'static> {
        tls::read_cert_file(&self.c.data.join("tls/ca.pem")).unwrap()
    }

    /// A client configuration trusting this collector and presenting no certificate.
    fn anonymous(&self) -> Arc<ClientConfig> {
        tls::ca_config(&self.ca(), None).unwrap()
    }

    fn json_lines(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--data", self.c.data(), "--json"]);
        ok("picket-collector", &all)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `sightings --json` as indicator (its name in [`NAMED`]) -> (hosts, count).
    fn sightings(&self) -> BTreeMap<String, (u64, u64)> {
        self.json_lines(&["sightings"])
            .into_iter()
            .map(|v| {
                let n = |k: &str| v[k].as_u64().unwrap();
                (
                    self.name(v["indicator"].as_str().unwrap()),
                    (n("hosts"), n("count")),
                )
            })
            .collect()
    }

    /// The ids in `agents list --json`.
    fn agent_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .json_lines(&["agents", "list"])
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// Every stored sighting row as (agent, indicator name, location, count), read from the
    /// collector's SQLite file (the CLI aggregates per indicator and does not name agents).
    fn rows(&self) -> Vec<(String, String, Option<String>, u64)> {
        let dir = picket_collector::datadir::DataDir::open(&self.c.data).unwrap();
        let rows = dir.store().unwrap().sightings().unwrap();
        rows.into_iter()
            .map(|r| (r.agent, self.name(&r.indicator), r.location, r.count))
            .collect()
    }

    /// serve's resident memory, in bytes.
    fn rss(&self) -> u64 {
        rss_of(self.pid())
    }
}

fn rss_of(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Samples a process's resident memory every 5 ms until stopped; returns the peak.
struct PeakRss {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    fn start(pid: u32) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = rss_of(pid);
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_of(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(rss_of(pid))
        });
        PeakRss { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

/// An agent enrolled through the real protocol: its key and certificate, and a client
/// configuration presenting them.
struct Agent {
    id: String,
    machine: [u8; 32],
    cert: Vec<u8>,
    key: Vec<u8>,
    config: Arc<ClientConfig>,
}

impl Agent {
    /// Enrols with `token` at `serve`, as `picket-agent enroll` does (no `--ca`: the token's pin).
    async fn enrol(serve: &Serve, token: &str, machine_id: &str) -> Agent {
        let token = EnrollToken::parse(token).unwrap();
        let enrol = link::enroll(&serve.addr, HOST, &token, None, machine_id, "default");
        let e = timeout(ANSWER, enrol).await.unwrap().unwrap();
        let machine = wire::machine_hash(&e.public_key, machine_id);
        let config = Self::config(&e.ca.clone().into(), &e.certificate, &e.key_pkcs8);
        Agent {
            id: e.agent,
            machine,
            cert: e.certificate,
            key: e.key_pkcs8,
            config,
        }
    }

    fn config(ca: &CertificateDer<'_>, cert: &[u8], key: &[u8]) -> Arc<ClientConfig> {
        let identity = tls::ClientIdentity {
            cert: cert.to_vec().into(),
            key: key.to_vec().into(),
        };
        tls::ca_config(ca, Some(identity)).unwrap()
    }

    /// A session with the collector at `addr`, past the hello, authenticated as this agent.
    async fn session(&self, addr: &str) -> Session {
        let connect = link::connect(addr, HOST, self.config.clone(), self.machine);
        let mut s = timeout(ANSWER, connect).await.unwrap().unwrap();
        assert_eq!(s.welcome().agent.as_deref(), Some(self.id.as_str()));
        s.set_read_timeout(ANSWER);
        s
    }

    /// A raw TLS connection to `addr` presenting this agent's certificate, hello sent and
    /// welcomed.
    async fn raw(&self, addr: &str) -> Raw {
        let mut raw = Raw::connect(addr, self.config.clone()).await;
        raw.send(&hello(self.machine)).await;
        match raw.recv().await {
            Some(ServerMsg::Welcome(w)) => assert_eq!(w.agent.as_deref(), Some(self.id.as_str())),
            other => panic!("expected Welcome, got {other:?}"),
        }
        raw
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

/// A TLS connection that writes whatever bytes it is told to, for what the agent's client will
/// not send (oversized headers, messages out of order).
struct Raw {
    tls: tokio_rustls::client::TlsStream<TcpStream>,
}

impl Raw {
    async fn connect(addr: &str, config: Arc<ClientConfig>) -> Raw {
        let tcp = timeout(ANSWER, TcpStream::connect(addr)).await.unwrap().unwrap();
        let name = tls::server_name(HOST).unwrap();
        let tls = timeout(
            ANSWER,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .unwrap()
        .unwrap();
        Raw { tls }
    }

    async fn write(&mut self, bytes: &[u8]) {
        timeout(ANSWER, self.tls.write_all(bytes)).await.unwrap().unwrap();
        timeout(ANSWER, self.tls.flush()).await.unwrap().unwrap();
    }

    async fn send(&mut self, msg: &ClientMsg) {
        self.write(&wire::encode_frame(msg)).await;
    }

    /// The next message, or `None` once the server closed the connection.
    async fn recv(&mut self) -> Option<ServerMsg> {
        let read = async {
            let mut header = [0u8; 4];
            self.tls.read_exact(&mut header).await.ok()?;
            let mut body = vec![0u8; wire::frame_len(header, MAX_SERVER_FRAME).unwrap()];
            self.tls.read_exact(&mut body).await.ok()?;
            Some(wire::decode_body(&body).unwrap())
        };
        timeout(ANSWER, read)
            .await
            .expect("the collector answers within 5 s")
    }

    /// Asserts the next message is an error of `code` and that the connection then closes.
    async fn refused(&mut self, code: ErrorCode) -> WireError {
        let e = match self.recv().await {
            Some(ServerMsg::Error(e)) => e,
            other => panic!("expected an error {code:?}, got {other:?}"),
        };
        assert_eq!(e.code, code, "{e}");
        assert_eq!(self.recv().await, None, "the collector closes after {code:?}");
        e
    }
}

/// Asserts a session's next message is an error of `code` and that the session then ends.
async fn refused(session: &mut Session, code: ErrorCode) -> WireError {
    let e = match session.recv().await {
        Ok(ServerMsg::Error(e)) => e,
        other => panic!("expected an error {code:?}, got {other:?}"),
    };
    assert_eq!(e.code, code, "{e}");
    match session.recv().await {
        Err(LinkError::Closed { .. } | LinkError::Io { .. }) => {}
        other => panic!("the collector closes after {code:?}; got {other:?}"),
    }
    e
}

/// A sighting of the indicator with id `indicator`, seen an hour ago (agents enrolled at the
/// start of the test: the collector keeps times from a day before enrolment on).
fn sighting(indicator: &str, location: Option<&str>, count: u64) -> SightingReport {
    let seen = picket_e2e::unix_now() / 60 * 60 - 3_600;
    SightingReport {
        indicator: indicator.into(),
        what: "sha256".into(),
        observed: ObservedKind::File,
        location: location.map(str::to_owned),
        first_seen: seen,
        last_seen: seen + 60,
        count,
        set_version: 1,
    }
}

fn report(epoch: u64, seq: u64, items: Vec<SightingReport>) -> ClientMsg {
    ClientMsg::Report(Batch { epoch, seq, items })
}

fn fetch() -> ClientMsg {
    ClientMsg::Fetch(Fetch {
        channel: "default".into(),
        have: None,
        have_timestamp: None,
    })
}

fn heartbeat() -> ClientMsg {
    ClientMsg::Heartbeat(Heartbeat {
        agent_version: "0.1.0".into(),
        channel: "default".into(),
        set_version: Some(1),
        set_created: None,
        config_hash: [3; 32],
        scan: ScanStats::default(),
        cpu_millis: 1,
        rss_bytes: 1 << 20,
        spool_depth: 0,
        spool_dropped: 0,
        epoch: 1,
        last_seq: 0,
    })
}

/// Sends a fetch and waits for the set; returns how long the answer took.
async fn timed_fetch(session: &mut Session) -> Duration {
    let start = Instant::now();
    session.send(&fetch()).await.unwrap();
    match session.recv().await.unwrap() {
        ServerMsg::Set { version: 1, .. } => start.elapsed(),
        other => panic!("expected set version 1, got {other:?}"),
    }
}

/// An enrolled agent fetching in a loop until `stop`; returns each answer's latency.
fn fetch_loop(mut session: Session, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Duration>> {
    tokio::spawn(async move {
        let mut took = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            took.push(timed_fetch(&mut session).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        took
    })
}

/// An enrolled agent reporting one new sighting of `indicator` (a location of its own each
/// time) and waiting for its acknowledgement, in a loop until `stop`; returns each
/// acknowledgement's latency.
fn report_loop(
    mut session: Session,
    stop: Arc<AtomicBool>,
    indicator: String,
) -> tokio::task::JoinHandle<Vec<Duration>> {
    tokio::spawn(async move {
        let mut took = Vec::new();
        let mut seq = 0;
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            let location = format!("/calm/{seq}");
            let start = Instant::now();
            session
                .send(&report(9, seq, vec![sighting(&indicator, Some(&location), 1)]))
                .await
                .unwrap();
            match session.recv().await.unwrap() {
                ServerMsg::Ack {
                    epoch: 9,
                    seq: s,
                    duplicate: false,
                } if s == seq => took.push(start.elapsed()),
                other => panic!("report {seq} was answered {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        took
    })
}

fn max(d: &[Duration]) -> Duration {
    d.iter().copied().max().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_without_an_enrolled_key_can_submit_nothing() {
    let serve = Serve::start(&[]);
    let enrolled = Agent::enrol(&serve, &serve.token(1), "enrolled").await;
    // A TLS client with no client certificate gets its hello answered (it could be enrolling)
    // and nothing else: a report, a fetch, a heartbeat, a renewal are each refused and the
    // connection closed.
    let stolen = report(1, 1, vec![sighting(&serve.id("stolen"), Some("/tmp/x"), 1)]);
    for msg in [stolen.clone(), fetch(), heartbeat(), ClientMsg::Renew] {
        let connect = link::connect(&serve.addr, HOST, serve.anonymous(), [7; 32]);
        let mut s = timeout(ANSWER, connect).await.unwrap().unwrap();
        assert_eq!(s.welcome().agent, None);
        s.set_read_timeout(ANSWER);
        s.send(&msg).await.unwrap();
        let e = refused(&mut s, ErrorCode::Unauthenticated).await;
        assert!(e.message.contains("may only enrol"), "{e}");
    }
    // Skipping the hello does not help.
    let mut raw = Raw::connect(&serve.addr, serve.anonymous()).await;
    raw.send(&stolen).await;
    raw.refused(ErrorCode::BadFrame).await;
    // An agent enrolled with another collector, presenting its certificate (a real Picket
    // client certificate for a real key, from the wrong CA): no session at all.
    let other = Serve::start(&[]);
    let foreign = Agent::enrol(&other, &other.token(1), "foreign").await;
    let config = Agent::config(&serve.ca(), &foreign.cert, &foreign.key);
    let connect = link::connect(&serve.addr, HOST, config, foreign.machine);
    match timeout(ANSWER, connect).await.expect("refused within 5 s") {
        Ok(s) => panic!("a foreign certificate got a session: {:?}", s.welcome()),
        Err(e) => eprintln!("foreign agent refused: {e}"),
    }
    drop(other);

    assert_eq!(serve.sightings(), BTreeMap::new());
    assert_eq!(serve.agent_ids(), vec![enrolled.id.clone()]);
    // The same report from the enrolled agent is stored: the refusals above were about the key.
    let mut s = enrolled.session(&serve.addr).await;
    s.send(&stolen).await.unwrap();
    assert_eq!(
        s.recv().await.unwrap(),
        ServerMsg::Ack {
            epoch: 1,
            seq: 1,
            duplicate: false
        }
    );
    assert_eq!(serve.sightings(), BTreeMap::from([("stolen".to_owned(), (1, 1))]));
}

/// Names every field of a batch and of a sighting, with no `..`: if a field is ever added (an
/// agent id, say) this stops compiling, and whoever adds it must decide here how it is checked.
/// Today no field of a report can name an agent: a batch is the sender's because the session
/// is authenticated by the sender's client certificate, and by nothing in the message.
fn no_field_names_an_agent(batch: &Batch) {
    let Batch {
        epoch: _,
        seq: _,
        items,
    } = batch;
    for item in items {
        let SightingReport {
            indicator: _,
            what: _,
            observed: _,
            location: _,
            first_seen: _,
            last_seen: _,
            count: _,
            set_version: _,
        } = item;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_count_under_their_sender_and_a_replay_changes_nothing() {
    let serve = Serve::start(&[]);
    let token = serve.token(2);
    let a = Agent::enrol(&serve, &token, "machine-a").await;
    let b = Agent::enrol(&serve, &token, "machine-b").await;
    assert_ne!(a.id, b.id);
    let mut ids = vec![a.id.clone(), b.id.clone()];
    ids.sort();
    assert_eq!(serve.agent_ids(), ids);
    let ack = |seq, duplicate| ServerMsg::Ack {
        epoch: 42,
        seq,
        duplicate,
    };
    let mut sa = a.session(&serve.addr).await;
    let mut sb = b.session(&serve.addr).await;

    // The same (epoch, seq) from both agents, different items: two batches, one per sender.
    let a1 = report(42, 1, vec![sighting(&serve.id("ind-a"), Some("/srv/a"), 3)]);
    let ClientMsg::Report(batch) = &a1 else {
        unreachable!()
    };
    no_field_names_an_agent(batch);
    sa.send(&a1).await.unwrap();
    assert_eq!(sa.recv().await.unwrap(), ack(1, false));
    sb.send(&report(
        42,
        1,
        vec![sighting(&serve.id("ind-b"), Some("/srv/b"), 2)],
    ))
    .await
    .unwrap();
    assert_eq!(sb.recv().await.unwrap(), ack(1, false));
    // Identical batches (same number, same items) from both: neither is the other's replay.
    let shared = report(42, 2, vec![sighting(&serve.id("ind-both"), Some("/srv/c"), 1)]);
    sb.send(&shared).await.unwrap();
    assert_eq!(sb.recv().await.unwrap(), ack(2, false));
    sa.send(&shared).await.unwrap();
    assert_eq!(sa.recv().await.unwrap(), ack(2, false));
    // The only place a client could write another agent's id is inside a sighting's strings:
    // it is just text there, and the sighting is still the sender's.
    let mut named = sighting(&serve.id("ind-named"), Some(&b.id), 9);
    named.what = b.id.clone();
    sa.send(&report(42, 3, vec![named])).await.unwrap();
    assert_eq!(sa.recv().await.unwrap(), ack(3, false));

    let want = BTreeMap::from([
        ("ind-a".to_owned(), (1, 3)),
        ("ind-b".to_owned(), (1, 2)),
        ("ind-both".to_owned(), (2, 2)),
        ("ind-named".to_owned(), (1, 9)),
    ]);
    assert_eq!(serve.sightings(), want);
    let mut rows = serve.rows();
    rows.sort();
    let mut expected = vec![
        (a.id.clone(), "ind-a".to_owned(), Some("/srv/a".to_owned()), 3),
        (a.id.clone(), "ind-both".to_owned(), Some("/srv/c".to_owned()), 1),
        (a.id.clone(), "ind-named".to_owned(), Some(b.id.clone()), 9),
        (b.id.clone(), "ind-b".to_owned(), Some("/srv/b".to_owned()), 2),
        (b.id.clone(), "ind-both".to_owned(), Some("/srv/c".to_owned()), 1),
    ];
    expected.sort();
    assert_eq!(rows, expected);

    // A's first batch again, on the same session and on a new one (the ack was lost): each
    // acknowledged as a duplicate, nothing counted again.
    sa.send(&a1).await.unwrap();
    assert_eq!(sa.recv().await.unwrap(), ack(1, true));
    drop(sa);
    let mut sa = a.session(&serve.addr).await;
    sa.send(&a1).await.unwrap();
    assert_eq!(sa.recv().await.unwrap(), ack(1, true));
    assert_eq!(serve.sightings(), want);
    // Another batch under a number A already used (a restored spool): a conflict, nothing stored.
    sa.send(&report(
        42,
        1,
        vec![sighting(&serve.id("ind-a"), Some("/srv/a"), 50)],
    ))
    .await
    .unwrap();
    assert_eq!(
        sa.recv().await.unwrap(),
        ServerMsg::Conflict { epoch: 42, seq: 1 }
    );
    assert_eq!(serve.sightings(), want);
    // And the sessions are still good.
    sa.send(&report(
        42,
        4,
        vec![sighting(&serve.id("ind-a"), Some("/srv/a"), 4)],
    ))
    .await
    .unwrap();
    assert_eq!(sa.recv().await.unwrap(), ack(4, false));
    assert_eq!(serve.sightings()["ind-a"], (1, 4));
    // An agent id where the indicator id goes names no indicator the collector has: the batch
    // is refused whole and the session ends; nothing is counted for anyone.
    sa.send(&report(42, 5, vec![sighting(&b.id, None, 100)]))
        .await
        .unwrap();
    let e = refused(&mut sa, ErrorCode::BadRequest).await;
    assert!(
        e.message.contains("report.items[0].indicator") && e.message.contains(&b.id),
        "{e}"
    );
    let mut want = want;
    want.insert("ind-a".to_owned(), (1, 4));
    assert_eq!(serve.sightings(), want);
}

/// One oversized attempt at `addr` (`kind` picks which); returns how long the refusal took
/// from the header.
async fn oversized(addr: String, anonymous: Arc<ClientConfig>, agent: Arc<Agent>, kind: usize) -> Duration {
    // (authenticated, announced length, the cap the error names)
    let (authenticated, len, cap) = match kind % 4 {
        0 => (true, MAX_CLIENT_FRAME as u32 + 1, MAX_CLIENT_FRAME),
        1 => (true, u32::MAX, MAX_CLIENT_FRAME),
        // Before the hello, the cap is a few kilobytes.
        2 => (false, u32::MAX, 4_096),
        _ => (false, 4_097, 4_096),
    };
    let mut raw = if authenticated {
        agent.raw(&addr).await
    } else {
        Raw::connect(&addr, anonymous).await
    };
    // A header and no body: the answer comes at once, so the collector neither allocated for
    // the body nor waited for it.
    let start = Instant::now();
    raw.write(&len.to_be_bytes()).await;
    let e = raw.refused(ErrorCode::TooLarge).await;
    assert!(e.message.contains(&format!("cap of {cap}")), "{e}");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_frames_are_refused_from_the_header_and_cost_no_memory() {
    // The attacker's authenticated attempts run ten at a time: more than the two live sessions
    // an agent may hold by default, so the cap is raised (this test is about frame sizes).
    let serve = Serve::start(&[("max_sessions_per_agent", "64")]);
    let token = serve.token(2);
    let attacker = Arc::new(Agent::enrol(&serve, &token, "attacker").await);
    let bystander = Agent::enrol(&serve, &token, "bystander").await;
    let anonymous = serve.anonymous();
    let attempt = |kind| oversized(serve.addr.clone(), anonymous.clone(), attacker.clone(), kind);
    // Warm up: the first connections allocate what any session needs (TLS state, caches).
    for kind in 0..20 {
        attempt(kind).await;
    }
    let before = serve.rss();
    let peak = PeakRss::start(serve.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let fetches = fetch_loop(bystander.session(&serve.addr).await, stop.clone());
    // 200 attempts, 20 at a time.
    let started = Instant::now();
    let mut answers = Vec::new();
    for wave in 0..10 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..20 {
            set.spawn(attempt(wave * 20 + i));
        }
        while let Some(took) = set.join_next().await {
            answers.push(took.unwrap());
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let fetched = timeout(ANSWER, fetches).await.unwrap().unwrap();
    let peak = peak.finish();
    let after = serve.rss();
    eprintln!(
        "oversized: {} attempts in {:.2}s, each refused {:?} after its header at most; serve RSS {:.1} MiB before, peak {:.1}, after {:.1}; bystander: {} fetches, slowest {:?}",
        answers.len(),
        elapsed.as_secs_f64(),
        max(&answers),
        mib(before),
        mib(peak),
        mib(after),
        fetched.len(),
        max(&fetched),
    );
    assert_eq!(answers.len(), 200);
    assert!(max(&answers) < Duration::from_secs(1), "{:?}", max(&answers));
    assert!(peak < before + (8 << 20), "RSS grew from {before} to {peak}");
    assert!(after < before + (4 << 20), "RSS grew from {before} to {after}");
    assert!(!fetched.is_empty());
    assert!(max(&fetched) < Duration::from_secs(1), "{fetched:?}");
    // The attacker's own sessions still work: a refused frame cost only that connection.
    let mut s = attacker.session(&serve.addr).await;
    timed_fetch(&mut s).await;
    assert_eq!(serve.sightings(), BTreeMap::new());
}

/// The first bytes a TLS client sends (its ClientHello), captured from a real handshake over an
/// in-memory pipe.
async fn client_hello(config: Arc<ClientConfig>) -> Vec<u8> {
    let (client, mut server) = tokio::io::duplex(64 << 10);
    let name = tls::server_name(HOST).unwrap();
    let handshake = tokio::spawn(tokio_rustls::TlsConnector::from(config).connect(name, client));
    let mut buf = vec![0u8; 64 << 10];
    let n = timeout(ANSWER, server.read(&mut buf)).await.unwrap().unwrap();
    handshake.abort();
    buf.truncate(n);
    assert!(n > 100 && buf[0] == 0x16, "a TLS handshake record: {n} bytes");
    buf
}

/// Opens 200 TCP connections to `addr` that send nothing and 20 that send `half` a ClientHello,
/// and holds them: each task waits (at most `limit` and 5 s more) for the collector to close
/// its connection and returns how long after opening that was.
async fn hold(addr: &str, half: &[u8], limit: Duration) -> tokio::task::JoinSet<Duration> {
    let mut held = tokio::task::JoinSet::new();
    for i in 0..220 {
        let mut tcp = timeout(ANSWER, TcpStream::connect(addr)).await.unwrap().unwrap();
        let opened = Instant::now();
        if i >= 200 {
            tcp.write_all(half).await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + limit + ANSWER;
        held.spawn(async move {
            let mut buf = [0u8; 1024];
            loop {
                match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
                    Err(_) => panic!("connection {i} still open {:?} after it opened", opened.elapsed()),
                    Ok(Ok(0) | Err(_)) => return opened.elapsed(),
                    Ok(Ok(_)) => {}
                }
            }
        });
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_never_finish_their_hello_are_dropped_at_the_hello_timeout() {
    let limit = Duration::from_secs(2);
    // Every connection here comes from 127.0.0.1, which may hold 32 unauthenticated ones by
    // default: the cap is raised so that all 220 wait for the timeout this test is about (the
    // cap itself is tested in collector/tests/channel.rs).
    let serve = Serve::start(&[("hello_timeout", "\"2s\""), ("max_handshakes_per_ip", "1000")]);
    let agent = Agent::enrol(&serve, &serve.token(1), "patient").await;
    let hello = client_hello(serve.anonymous()).await;
    let half = hello[..hello.len() / 2].to_vec();
    let mut s = agent.session(&serve.addr).await;
    let before = serve.rss();
    let peak = PeakRss::start(serve.pid());
    let mut held = hold(&serve.addr, &half, limit).await;
    // While they are all held, the enrolled agent connects again and fetches at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let mut s2 = agent.session(&serve.addr).await;
    let connected = start.elapsed();
    timed_fetch(&mut s2).await;
    let served = start.elapsed();
    let holding = serve.rss();
    let mut closed = Vec::new();
    while let Some(took) = held.join_next().await {
        closed.push(took.unwrap());
    }
    let peak = peak.finish();
    let after = serve.rss();
    // A second round: the memory such connections take is reused, not accumulated.
    let peak_again = PeakRss::start(serve.pid());
    let mut held = hold(&serve.addr, &half, limit).await;
    while let Some(took) = held.join_next().await {
        closed.push(took.unwrap());
    }
    let peak_again = peak_again.finish();
    let again = serve.rss();
    let first = closed.iter().copied().min().unwrap();
    eprintln!(
        "slow hello: 2 x 220 held connections closed {:.2}s to {:.2}s after opening (hello_timeout {limit:?}); meanwhile an agent connected in {connected:?} and had its set {served:?} after starting; serve RSS {:.1} MiB before, {:.1} while holding, peak {:.1}, {:.1} after; a second round: peak {:.1}, {:.1} after",
        first.as_secs_f64(),
        max(&closed).as_secs_f64(),
        mib(before),
        mib(holding),
        mib(peak),
        mib(after),
        mib(peak_again),
        mib(again),
    );
    assert_eq!(closed.len(), 440);
    assert!(first >= limit - Duration::from_millis(100), "{first:?}");
    assert!(
        max(&closed) < limit + Duration::from_secs(2),
        "{:?}",
        max(&closed)
    );
    assert!(served < Duration::from_secs(1), "{served:?}");
    assert!(peak < before + (16 << 20), "RSS grew from {before} to {peak}");
    assert!(
        peak_again < before + (16 << 20),
        "RSS grew from {before} to {peak_again}"
    );
    // Not a leak: after the second round serve holds no more than at the first one's peak
    // (give or take the allocator's slack), where a leak would have added the round's cost.
    assert!(
        again < peak + (2 << 20),
        "RSS {again} after the second round, {peak} at the first one's peak"
    );
    // The agent's sessions outlived them all.
    timed_fetch(&mut s).await;
    timed_fetch(&mut s2).await;
}

/// What one flooding session got.
#[derive(Debug, Default)]
struct Flood {
    /// Reports sent (or being sent when the connection closed).
    sent: u64,
    /// Reports acknowledged as stored.
    acked: u64,
    /// `RateLimited` refusals that kept the session open.
    limited: u64,
    /// The error that closed the session.
    closing: Option<WireError>,
    /// How the connection ended, as the client saw it.
    ended: String,
}

/// One session of `agent` sending as fast as the socket takes them, never waiting for an
/// answer: heartbeats, fetches and reports under `epoch`, each report a sighting of the
/// indicator with id `indicator` with a location of its own, so that each stored batch adds
/// exactly one to the count. Runs until the collector closes the session.
async fn flood(addr: String, agent: Arc<Agent>, epoch: u64, indicator: String) -> Flood {
    let (mut rd, mut wr) = agent.session(&addr).await.into_split();
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let mut reports = 0u64;
        for i in 0..300_000u64 {
            let msg = match i % 3 {
                0 => heartbeat(),
                1 => fetch(),
                _ => {
                    reports += 1;
                    let location = format!("/flood/{epoch}/{reports}");
                    report(epoch, reports, vec![sighting(&indicator, Some(&location), 1)])
                }
            };
            if wr.send(&msg).await.is_err() || started.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        reports
    });
    let mut got = Flood::default();
    loop {
        let len = match timeout(ANSWER, rd.header()).await.expect("an answer within 5 s") {
            Ok(len) => len,
            Err(e @ (LinkError::Closed { .. } | LinkError::Io { .. })) => {
                got.ended = e.to_string();
                break;
            }
            Err(e) => panic!("{e}"),
        };
        assert!(got.closing.is_none(), "a frame after the closing error");
        match rd.body(len).await.unwrap() {
            ServerMsg::Ack {
                epoch: e,
                duplicate: false,
                ..
            } if e == epoch => got.acked += 1,
            ServerMsg::Set { version: 1, .. } => {}
            ServerMsg::Error(e) if e.code == ErrorCode::RateLimited => {
                assert!(e.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 1_000), "{e:?}");
                if e.message.contains("closing") {
                    got.closing = Some(e);
                } else {
                    got.limited += 1;
                }
            }
            other => panic!("the flooder got {other:?}"),
        }
    }
    got.sent = timeout(ANSWER, sender).await.unwrap().unwrap();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooding_agent_is_throttled_then_closed_while_another_is_served_promptly() {
    // The shipped limits: 50 messages a second in bursts of 200, per agent; 20 refusals in a
    // row, each ignored, close the session.
    let serve = Serve::start(&[]);
    let token = serve.token(3);
    let flooder = Arc::new(Agent::enrol(&serve, &token, "flooder").await);
    let other = Agent::enrol(&serve, &token, "other").await;
    let reporter = Agent::enrol(&serve, &token, "reporter").await;
    let mut quiet = other.session(&serve.addr).await;
    let before = serve.rss();
    let peak = PeakRss::start(serve.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let fetches = fetch_loop(other.session(&serve.addr).await, stop.clone());
    // A third agent reports sightings throughout, each waiting for its acknowledgement.
    let reports = report_loop(
        reporter.session(&serve.addr).await,
        stop.clone(),
        serve.id("calm"),
    );

    // One session: its burst goes through, then it is told to wait, ignores it, and is cut off.
    let target = serve.id("flood");
    let started = Instant::now();
    let first = flood(serve.addr.clone(), flooder.clone(), 1, target.clone()).await;
    let cut_off = started.elapsed();
    assert!(cut_off < Duration::from_secs(10), "{cut_off:?}");
    assert!(first.acked > 0 && first.acked < first.sent, "{first:?}");
    // Coming back at once, two sessions at a time (the most live sessions an agent may hold;
    // a third would replace the oldest), for two seconds: the budget is the agent's, not the
    // session's, so each new session is cut off in turn.
    let again = Instant::now() + Duration::from_secs(2);
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..2u64 {
        let (addr, flooder, target) = (serve.addr.clone(), flooder.clone(), target.clone());
        lanes.spawn(async move {
            let mut sessions = Vec::new();
            while Instant::now() < again {
                let epoch = 100 * (lane + 1) + sessions.len() as u64;
                sessions.push(flood(addr.clone(), flooder.clone(), epoch, target.clone()).await);
            }
            sessions
        });
    }
    let mut later = Vec::new();
    while let Some(sessions) = timeout(Duration::from_secs(20), lanes.join_next()).await.unwrap() {
        later.extend(sessions.unwrap());
    }
    let flooding = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let fetched = timeout(ANSWER, fetches).await.unwrap().unwrap();
    let reported = timeout(ANSWER, reports).await.unwrap().unwrap();
    let peak = peak.finish();
    let after = serve.rss();
    let all: Vec<&Flood> = std::iter::once(&first).chain(&later).collect();
    let acked: u64 = all.iter().map(|f| f.acked).sum();
    let sent: u64 = all.iter().map(|f| f.sent).sum();
    let told = all.iter().filter(|f| f.closing.is_some()).count();
    let (hosts, count) = serve.sightings()["flood"];
    eprintln!(
        "flood: the first session cut off after {:.2}s ({} of {} reports acknowledged, then {} RateLimited and {:?}); {} sessions in all over {:.2}s, {told} told why they were cut off: {acked} of {sent} reports acknowledged, {count} counted; the other agent: {} fetches meanwhile, slowest {:?}; a third: {} reports acknowledged meanwhile, slowest {:?}; serve RSS {:.1} MiB before, peak {:.1}, after {:.1}",
        cut_off.as_secs_f64(),
        first.acked,
        first.sent,
        first.limited,
        first.closing.as_ref().map(|e| &e.message),
        all.len(),
        flooding.as_secs_f64(),
        fetched.len(),
        max(&fetched),
        reported.len(),
        max(&reported),
        mib(before),
        mib(peak),
        mib(after),
    );
    assert!(later.len() >= 2, "{later:?}");
    // Every session was throttled, then closed by the collector (`flood` returns only then),
    // and told why: it ignored 20 refusals in a row. The collector closes lingering (its FIN
    // first, then the flood read and dropped a moment), so no reset throws away its last
    // answers before the flooder has read them.
    for f in &all {
        assert!(f.limited >= 20, "{f:?}");
        let Some(e) = &f.closing else {
            panic!("a flooding session was closed without being told why: {f:?}");
        };
        assert!(e.message.contains("21 frames in a row"), "{e}");
    }
    assert_eq!(told, all.len());
    // Only what was acknowledged is counted, all of it, and only under the flooder.
    assert_eq!(hosts, 1);
    assert_eq!(count, acked);
    let rows: Vec<_> = serve.rows().into_iter().filter(|r| r.1 == "flood").collect();
    assert_eq!(rows.len() as u64, count);
    assert!(rows.iter().all(|r| r.0 == flooder.id), "{rows:?}");
    // The other agent was served promptly throughout, and still is: its budget is its own.
    assert!(fetched.len() > 20, "{}", fetched.len());
    assert!(max(&fetched) < Duration::from_secs(1), "{fetched:?}");
    quiet
        .send(&report(1, 1, vec![sighting(&serve.id("calm"), None, 1)]))
        .await
        .unwrap();
    let start = Instant::now();
    assert_eq!(
        quiet.recv().await.unwrap(),
        ServerMsg::Ack {
            epoch: 1,
            seq: 1,
            duplicate: false
        }
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    // The reporter's sightings were acknowledged promptly while the flood ran, and every one
    // is counted, under its own name: one location each, plus the quiet session's one.
    assert!(reported.len() > 20, "{}", reported.len());
    assert!(max(&reported) < Duration::from_secs(1), "{reported:?}");
    assert_eq!(
        serve.sightings()["calm"],
        (2, reported.len() as u64 + 1),
        "the reporter's {} acknowledged reports and the quiet session's one",
        reported.len()
    );
    let alarms = serve.json_lines(&["alarms"]);
    assert!(
        alarms.iter().all(|a| a["agent"] != other.id.as_str()),
        "{alarms:?}"
    );
    assert!(peak < before + (32 << 20), "RSS grew from {before} to {peak}");
}

/// Sends every message of `msgs` on `session` without waiting, while reading one answer for
/// each; returns the answers in order.
async fn pipelined(session: Session, msgs: Vec<ClientMsg>) -> Vec<ServerMsg> {
    let (mut rd, mut wr) = session.into_split();
    let n = msgs.len();
    let sender = tokio::spawn(async move {
        for m in msgs {
            wr.send(&m).await.unwrap();
        }
        wr
    });
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let len = timeout(ANSWER, rd.header()).await.unwrap().unwrap();
        got.push(rd.body(len).await.unwrap());
    }
    drop(timeout(ANSWER, sender).await.unwrap().unwrap());
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_forged_replayed_and_spoofed_reports_change_no_count() {
    // The rate limits are not what this test is about: they are raised so that the attempts
    // arrive as fast as the collector takes them (the flood test covers the limits).
    let serve = Serve::start(&[
        ("messages_per_second", "1000000"),
        ("message_burst", "1000000"),
        ("max_sessions_per_agent", "64"),
        ("max_handshakes_per_ip", "1000"),
    ]);
    let token = serve.token(2);
    let a = Arc::new(Agent::enrol(&serve, &token, "victim-a").await);
    let b = Agent::enrol(&serve, &token, "victim-b").await;
    // Each agent's ten real batches, acknowledged and counted.
    let batch_of = |who: &str, seq: u64, count: u64| {
        let name = if who == "a" { "ind-a" } else { "ind-b" };
        report(
            7,
            seq,
            vec![sighting(&serve.id(name), Some(&format!("/{who}/{seq}")), count)],
        )
    };
    let real_a: Vec<ClientMsg> = (1..=10).map(|seq| batch_of("a", seq, 2)).collect();
    let real_b: Vec<ClientMsg> = (1..=10).map(|seq| batch_of("b", seq, 3)).collect();
    let ack = |seq, duplicate| ServerMsg::Ack {
        epoch: 7,
        seq,
        duplicate,
    };
    let answers = pipelined(a.session(&serve.addr).await, real_a.clone()).await;
    assert_eq!(answers, (1..=10).map(|s| ack(s, false)).collect::<Vec<_>>());
    let answers = pipelined(b.session(&serve.addr).await, real_b.clone()).await;
    assert_eq!(answers, (1..=10).map(|s| ack(s, false)).collect::<Vec<_>>());
    let want = BTreeMap::from([("ind-a".to_owned(), (1, 20)), ("ind-b".to_owned(), (1, 30))]);
    assert_eq!(serve.sightings(), want);
    let mut rows = serve.rows();
    rows.sort();
    let mut attempts = 0usize;

    // 1. 4 000 replays of A's acknowledged batches: each a duplicate, nothing counted again.
    let replays: Vec<ClientMsg> = (0..4_000).map(|i| real_a[i % 10].clone()).collect();
    let answers = pipelined(a.session(&serve.addr).await, replays).await;
    for (i, got) in answers.iter().enumerate() {
        assert_eq!(got, &ack(1 + (i % 10) as u64, true), "replay {i}");
    }
    attempts += answers.len();

    // 2. 2 000 batches under numbers A already used, carrying B's sightings with inflated
    // counts (a restored or forged spool): each a conflict, nothing stored.
    let forged: Vec<ClientMsg> = (0..2_000)
        .map(|i| {
            let seq = 1 + (i % 10) as u64;
            report(
                7,
                seq,
                vec![sighting(
                    &serve.id("ind-b"),
                    Some(&format!("/b/{seq}")),
                    1_000_000,
                )],
            )
        })
        .collect();
    let answers = pipelined(a.session(&serve.addr).await, forged).await;
    for (i, got) in answers.iter().enumerate() {
        assert_eq!(
            got,
            &ServerMsg::Conflict {
                epoch: 7,
                seq: 1 + (i % 10) as u64
            },
            "forged batch {i}"
        );
    }
    attempts += answers.len();

    // 3. 2 000 replays from A's key in sessions whose hello claims B's machine: still A's
    // batches (the certificate decides who speaks), still duplicates.
    let spoofed = link::connect(&serve.addr, HOST, a.config.clone(), b.machine);
    let spoofed = timeout(ANSWER, spoofed).await.unwrap().unwrap();
    assert_eq!(spoofed.welcome().agent.as_deref(), Some(a.id.as_str()));
    let replays: Vec<ClientMsg> = (0..2_000).map(|i| real_a[i % 10].clone()).collect();
    let answers = pipelined(spoofed, replays).await;
    for (i, got) in answers.iter().enumerate() {
        assert_eq!(got, &ack(1 + (i % 10) as u64, true), "spoofed-machine replay {i}");
    }
    attempts += answers.len();

    // 4. 500 reports naming B's agent id where the indicator goes (it names no indicator):
    // each refused whole, its session closed.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..500u64 {
        let (a, addr, target) = (a.clone(), serve.addr.clone(), b.id.clone());
        set.spawn(async move {
            let mut s = a.session(&addr).await;
            s.send(&report(8, i + 1, vec![sighting(&target, Some("/b/1"), 5)]))
                .await
                .unwrap();
            refused(&mut s, ErrorCode::BadRequest).await;
        });
        if set.len() >= 16 {
            set.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
    attempts += 500;

    // 5. 1 500 of B's real batches sent without a client certificate (so with no key): each
    // refused as unauthenticated, the connection closed.
    let anonymous = serve.anonymous();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..1_500usize {
        let (addr, config, msg) = (serve.addr.clone(), anonymous.clone(), real_b[i % 10].clone());
        set.spawn(async move {
            let connect = link::connect(&addr, HOST, config, [7; 32]);
            let mut s = timeout(ANSWER, connect).await.unwrap().unwrap();
            assert_eq!(s.welcome().agent, None);
            s.set_read_timeout(ANSWER);
            s.send(&msg).await.unwrap();
            refused(&mut s, ErrorCode::Unauthenticated).await;
        });
        if set.len() >= 16 {
            set.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
    attempts += 1_500;

    assert_eq!(attempts, 10_000);
    assert_eq!(
        serve.sightings(),
        want,
        "after {attempts} forged, replayed and spoofed reports"
    );
    let mut after = serve.rows();
    after.sort();
    assert_eq!(after, rows);
    assert!(
        after.iter().all(|r| (r.0 == a.id) == (r.1 == "ind-a")),
        "{after:?}"
    );
    // The spoofed hello was noticed, and against A, whose key spoke: B is not blamed.
    let alarms = serve.json_lines(&["alarms"]);
    assert!(alarms.iter().all(|x| x["agent"] != b.id.as_str()), "{alarms:?}");
    eprintln!(
        "forged: {attempts} attempts (4 000 replays, 2 000 conflicting batches, 2 000 replays under another machine's hello, 500 foreign indicator ids, 1 500 without a key): counts unchanged {want:?}; alarms {}",
        alarms.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_organisations_many_agents_count_once_towards_k_and_share_a_banded_count() {
    let serve = Serve::start_with(
        &[("max_handshakes_per_ip", "1000")],
        "\n[[community]]\nname = \"isac\"\nk = 2\n",
    );
    let token = serve.token(20);
    let target = serve.id("ind-a");
    // 20 agents of this organisation each see the indicator 7 times: 140 in all.
    for i in 0..20 {
        let agent = Agent::enrol(&serve, &token, &format!("fleet-{i}")).await;
        let mut s = agent.session(&serve.addr).await;
        s.send(&report(
            1,
            1,
            vec![sighting(&target, Some(&format!("/srv/{i}")), 7)],
        ))
        .await
        .unwrap();
        assert_eq!(
            s.recv().await.unwrap(),
            ServerMsg::Ack {
                epoch: 1,
                seq: 1,
                duplicate: false
            }
        );
    }
    assert_eq!(serve.sightings()["ind-a"], (20, 140));
    let preview = || {
        let out = picket_e2e::run(
            "picket-collector",
            &[
                "share",
                "preview",
                "--data",
                serve.c.data(),
                "--community",
                "isac",
                "--json",
            ],
        );
        assert!(out.status.success(), "{out:?}");
        let bundle: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let sightings: Vec<serde_json::Value> = bundle["objects"]
            .as_array()
            .map(|o| o.iter().filter(|o| o["type"] == "sighting").cloned().collect())
            .unwrap_or_default();
        (sightings, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // Twenty agents are one organisation: below k = 2, nothing is shared.
    let (shared, said) = preview();
    assert!(shared.is_empty(), "{shared:?}");
    assert!(
        said.contains(&format!(
            "held {target}: below-k (seen by 1 organisation (this one included), below k = 2)"
        )),
        "{said}"
    );
    // Another organisation (a member account of the community) sights it once, under the id
    // the community knows it by: k is met.
    let dir = picket_collector::datadir::DataDir::open(&serve.c.data).unwrap();
    let now = picket_e2e::unix_now();
    let probe = BTreeMap::from([(
        target.clone(),
        vec![picket_collector::share::OrgSighting {
            org: "probe".into(),
            count: 1,
        }],
    )]);
    let known = picket_collector::share::preview_with(&dir, "isac", &probe, now)
        .unwrap()
        .bundle["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "indicator")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = picket_proto::rfc3339(now / 3600 * 3600 - 7_200);
    let theirs = serde_json::json!({
        "type": "sighting", "spec_version": "2.1",
        "id": "sighting--0b0e3856-95f3-4c04-a882-116832996d3f",
        "created": seen, "modified": seen,
        "sighting_of_ref": known, "count": 1,
        "first_seen": seen, "last_seen": seen,
    });
    let mut store = dir.store().unwrap();
    let taken = picket_collector::share::inbound::accept(&mut store, "isac", "bank-b", &[theirs], now * 1000)
        .unwrap();
    assert!(taken.iter().all(|o| o.error.is_none()), "{taken:?}");
    drop(store);
    let (shared, said) = preview();
    assert_eq!(shared.len(), 1, "{said}");
    let s = &shared[0];
    assert_eq!(s["sighting_of_ref"], known.as_str());
    // The organisation's 140 go out as the floor of their band (1, 10, 100, 1000): 100. Not
    // 140, not twenty sightings of 7, and not 141 with the other organisation's.
    assert_eq!(s["count"], 100, "{s}");
    eprintln!("k: 20 agents of one organisation held back below k = 2; with one more organisation: {s}");
}

/// Opens a connection (authenticated with `config` and welcomed, when `hello_first` gives a
/// machine, or anonymous) and trickles `bytes` into it, one every `every`; returns how long
/// after the first trickled byte's connection was ready (accept for an anonymous one, the
/// welcome for an authenticated one) the collector closed it (panics past `limit`).
async fn trickle(
    addr: String,
    config: Arc<ClientConfig>,
    hello_first: Option<[u8; 32]>,
    at_once: Vec<u8>,
    bytes: Vec<u8>,
    every: Duration,
    limit: Duration,
) -> Duration {
    let mut opened = Instant::now();
    let mut raw = Raw::connect(&addr, config).await;
    if let Some(machine) = hello_first {
        raw.send(&hello(machine)).await;
        match raw.recv().await {
            Some(ServerMsg::Welcome(_)) => {}
            other => panic!("expected Welcome, got {other:?}"),
        }
        opened = Instant::now();
    }
    if !at_once.is_empty() {
        raw.write(&at_once).await;
    }
    let mut k = 0;
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            opened.elapsed() < limit,
            "a slow client was still connected after {limit:?}"
        );
        if k < bytes.len() {
            if raw.tls.write_all(&bytes[k..=k]).await.is_err() || raw.tls.flush().await.is_err() {
                return opened.elapsed();
            }
            k += 1;
        }
        // Whatever the collector says (an error frame, then the end) is read until it closes.
        match timeout(every, raw.tls.read(&mut buf)).await {
            Err(_) | Ok(Ok(1..)) => {}
            Ok(Ok(0) | Err(_)) => return opened.elapsed(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_closed_at_their_deadlines_and_a_claimed_length_is_not_allocated() {
    // The channel carries no compressed content: a frame is a 4-byte length and one postcard
    // message, so there is nothing to inflate. What a "bomb" can do is claim a length; a
    // claim over the cap is refused from the header (the oversized-frames test), and a claim at
    // the cap is read as its bytes arrive, never allocated up front: this test holds 200 of
    // them open at once.
    let serve = Serve::start(&[
        ("hello_timeout", "\"2s\""),
        ("read_timeout", "\"3s\""),
        ("max_handshakes", "1000"),
        ("max_handshakes_per_ip", "1000"),
        ("max_enrolling", "1000"),
        ("max_sessions_per_agent", "400"),
    ]);
    let token = serve.token(2);
    let slow = Agent::enrol(&serve, &token, "slow").await;
    let bystander = Agent::enrol(&serve, &token, "bystander").await;
    for _ in 0..5 {
        let mut s = slow.session(&serve.addr).await;
        timed_fetch(&mut s).await;
    }
    let before = serve.rss();
    let peak = PeakRss::start(serve.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let fetches = fetch_loop(bystander.session(&serve.addr).await, stop.clone());
    let every = Duration::from_secs(1);
    let mut held = tokio::task::JoinSet::new();
    // 200 enrolled sessions announce a frame of exactly the cap (1 MiB) and send its body a
    // byte a second: read_timeout (3 s) bounds the whole body.
    let claim = (MAX_CLIENT_FRAME as u32).to_be_bytes().to_vec();
    for _ in 0..200 {
        let (addr, config) = (serve.addr.clone(), slow.config.clone());
        let (machine, claim) = (slow.machine, claim.clone());
        let limit = Duration::from_secs(10);
        held.spawn(async move {
            (
                "body",
                trickle(addr, config, Some(machine), claim, vec![0; 16], every, limit).await,
            )
        });
    }
    // 100 anonymous ones send their hello a byte a second: hello_timeout (2 s from accept)
    // bounds it.
    let hello_bytes = wire::encode_frame(&hello([9; 32]));
    for _ in 0..100 {
        let bytes = hello_bytes.clone();
        let (addr, config) = (serve.addr.clone(), serve.anonymous());
        let limit = Duration::from_secs(10);
        held.spawn(async move {
            (
                "hello",
                trickle(addr, config, None, Vec::new(), bytes, every, limit).await,
            )
        });
    }
    let mut body = Vec::new();
    let mut hellos = Vec::new();
    while let Some(done) = held.join_next().await {
        let (kind, took) = done.unwrap();
        if kind == "body" {
            body.push(took);
        } else {
            hellos.push(took);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let fetched = timeout(ANSWER, fetches).await.unwrap().unwrap();
    let peak = peak.finish();
    let after = serve.rss();
    eprintln!(
        "slow clients: 200 one-MiB frames trickled a byte a second closed {:.2}s to {:.2}s after their header (read_timeout 3s), 100 hellos trickled closed {:.2}s to {:.2}s after connecting (hello_timeout 2s); bystander: {} fetches, slowest {:?}; serve RSS {:.1} MiB before, peak {:.1}, after {:.1}",
        body.iter().min().unwrap().as_secs_f64(),
        max(&body).as_secs_f64(),
        hellos.iter().min().unwrap().as_secs_f64(),
        max(&hellos).as_secs_f64(),
        fetched.len(),
        max(&fetched),
        mib(before),
        mib(peak),
        mib(after),
    );
    assert_eq!((body.len(), hellos.len()), (200, 100));
    assert!(max(&body) < Duration::from_secs(5), "{:?}", max(&body));
    assert!(*body.iter().min().unwrap() >= Duration::from_millis(2_900));
    assert!(max(&hellos) < Duration::from_secs(5), "{:?}", max(&hellos));
    assert!(*hellos.iter().min().unwrap() >= Duration::from_millis(1_900));
    // 200 claims of 1 MiB each would be 200 MiB if allocated on the claim.
    assert!(peak < before + (32 << 20), "RSS grew from {before} to {peak}");
    assert!(!fetched.is_empty());
    assert!(max(&fetched) < Duration::from_secs(1), "{fetched:?}");
    assert_eq!(serve.sightings(), BTreeMap::new());
}
