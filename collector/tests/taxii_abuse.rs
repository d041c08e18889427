//! The TAXII API under abuse, with the real `picket-collector serve --http` on loopback (the
//! binary, so that its resident memory can be read from `/proc/PID/status`): heads and bodies
//! over their caps, bodies announced larger than anything the server takes, a gzip and a
//! deflate `Content-Encoding` (a decompression bomb if it were inflated), a chunked body,
//! envelopes of 100 000 objects, JSON nested half a million deep, slow clients (a byte every
//! two seconds, on the head and on the body) and a thousand connections at once.
//!
//! Invariant under test: whatever one connection does, the server refuses it with the status
//! the specification names (or closes it), the connection ends, the process's memory stays
//! within a bound, and a legitimate member is still answered, promptly, while it happens and
//! afterwards.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use picket_collector::datadir::DataDir;
use picket_collector::taxii_server::{api, hash_password};
use rustls::pki_types::ServerName;

mod common;
use common::{b64, python, taxii_client_config};

const MIB: u64 = 1 << 20;
const TAXII: &str = "application/taxii+json;version=2.1";
/// The longest any single answer may take before the test fails.
const ANSWER: Duration = Duration::from_secs(5);

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// `serve --http` on loopback over a data directory with community `isac`, a reader (`alice`)
/// and a contributor (`zoe`). Killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    _tmp: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start() -> Serve {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let root_key = tmp.path().join("root.key");
        DataDir::init(&data, "Abused Org", Some(&root_key), wall).unwrap();
        // Moved offline, as an operator would: serve refuses to run while it can read it.
        fs::remove_file(&root_key).unwrap();
        let mut cfg = fs::read_to_string(data.join("picket.toml")).unwrap();
        cfg.push_str("\n[[community]]\nname = \"isac\"\nk = 2\n");
        for (name, pw, comms, contribute) in [
            ("alice", "alice-pw", "[\"isac\"]", "[]"),
            ("zoe", "zoe-pw", "[]", "[\"isac\"]"),
        ] {
            cfg.push_str(&format!(
                "\n[[taxii.member]]\nname = \"{name}\"\npassword_hash = \"{}\"\ncommunities = {comms}\n\
                 contribute = {contribute}\n",
                hash_password(pw, 1000).unwrap()
            ));
        }
        fs::write(data.join("picket.toml"), cfg).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_picket-collector"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--data",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut serve = Serve {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            config: Arc::new(taxii_client_config(&data)),
            _tmp: tmp,
        };
        let says = "picket-collector: TAXII 2.1 server listening on https://";
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("serve --http names its TAXII address within 30 s");
            if let Some(rest) = line.strip_prefix(says) {
                serve.addr = rest.trim_end_matches("/taxii2/").parse().unwrap();
                return serve;
            }
        }
    }

    fn rss(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }

    /// A TLS connection, handshake done, reads timing out after [`ANSWER`].
    fn tls(&self) -> Tls {
        let tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_read_timeout(Some(ANSWER)).unwrap();
        let conn =
            rustls::ClientConnection::new(self.config.clone(), ServerName::try_from("127.0.0.1").unwrap())
                .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).unwrap();
        }
        tls
    }

    /// alice lists isac's collections: the answer must be 200 within a second; returns how long
    /// it took.
    fn member_is_served(&self) -> Duration {
        let start = Instant::now();
        let mut tls = self.tls();
        let head = format!(
            "GET /isac/collections/ HTTP/1.1\r\nHost: {}\r\nAccept: {TAXII}\r\nAuthorization: Basic {}\r\n\
             Connection: close\r\n\r\n",
            self.addr,
            b64("alice:alice-pw")
        );
        tls.write_all(head.as_bytes()).unwrap();
        let r = read_reply(&mut tls);
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.text.contains(&api::collection_id("isac")), "{}", r.text);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(1), "a member waited {took:?}");
        took
    }

    /// The head of a POST of `length` bytes to isac's contributions, as zoe, with `extra`
    /// header lines (each ending in CRLF).
    fn post_head(&self, length: &str, extra: &str) -> String {
        format!(
            "POST /isac/collections/{}/objects/ HTTP/1.1\r\nHost: {}\r\nAccept: {TAXII}\r\n\
             Authorization: Basic {}\r\nContent-Type: {TAXII}\r\nContent-Length: {length}\r\n{extra}\r\n",
            api::contributions_id("isac"),
            self.addr,
            b64("zoe:zoe-pw")
        )
    }

    /// POSTs `body` as zoe (with `extra` header lines) and reads the reply.
    fn post(&self, body: &[u8], extra: &str) -> Reply {
        let mut tls = self.tls();
        let mut req = self.post_head(&body.len().to_string(), extra).into_bytes();
        req.extend_from_slice(body);
        // The server may answer and close before it has read everything (a refusal from the
        // head): a failed write is then expected, the reply is what counts.
        let _ = tls.write_all(&req);
        let _ = tls.flush();
        read_reply(&mut tls)
    }
}

/// One reply, and whether the server then closed the connection.
#[derive(Debug)]
struct Reply {
    status: u16,
    text: String,
    closed: bool,
}

/// Reads one response (head and `Content-Length` body), then waits (at most [`ANSWER`] and the
/// server's 2 s linger) to see whether the server closes the connection.
fn read_reply(tls: &mut Tls) -> Reply {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match tls.read(&mut chunk) {
            Ok(0) => panic!("closed without a reply: {:?}", String::from_utf8_lossy(&buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("no reply within {ANSWER:?}: {e}"),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("the body did not arrive: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let closed = if head.to_ascii_lowercase().contains("connection: close") {
        closes(tls)
    } else {
        false
    };
    Reply { status, text, closed }
}

/// Whether the server closes `tls` within [`ANSWER`] (anything it still sends is read and
/// dropped).
fn closes<S: Read>(s: &mut S) -> bool {
    let until = Instant::now() + ANSWER;
    let mut chunk = [0u8; 4096];
    while Instant::now() < until {
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            // A reset, or TLS ended without close_notify: closed all the same.
            Err(_) => return true,
        }
    }
    false
}

/// Samples a process's resident memory every 5 ms until stopped; returns the peak.
struct PeakRss {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: thread::JoinHandle<u64>,
}

impl PeakRss {
    fn start(pid: u32) -> PeakRss {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let read = move || {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        let thread = thread::spawn(move || {
            let mut peak = read();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(read());
                thread::sleep(Duration::from_millis(5));
            }
            peak.max(read())
        });
        PeakRss { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

/// Warms the server up (TLS, PBKDF2 for both members, the first pages) so that what is
/// measured afterwards is the abuse, not first-use allocations.
fn warm(serve: &Serve) {
    for _ in 0..5 {
        serve.member_is_served();
        serve.post(b"{\"objects\": []}", "");
    }
}

#[test]
fn oversized_heads_and_bodies_are_refused_before_they_are_read() {
    let serve = Serve::start();
    warm(&serve);
    let before = serve.rss();
    let peak = PeakRss::start(serve.child.id());
    for round in 0..20 {
        // A head over 16 KiB: 431, closed.
        let mut tls = serve.tls();
        let mut head = format!("GET /isac/collections/ HTTP/1.1\r\nHost: {}\r\n", serve.addr);
        while head.len() < 64 * 1024 {
            head.push_str(&format!("X-Filler-{}: {}\r\n", head.len(), "a".repeat(200)));
        }
        head.push_str("\r\n");
        let _ = tls.write_all(head.as_bytes());
        let r = read_reply(&mut tls);
        assert_eq!(r.status, 431, "round {round}: {}", r.text);
        assert!(r.closed, "round {round}: the connection stayed open after 431");
        // Bodies announced over the 1 MiB cap, even past what any integer holds: refused from
        // the head (no body byte is sent), closed.
        for length in [
            "1048577",
            "107374182400",
            "18446744073709551615",
            "99999999999999999999999999",
        ] {
            let mut tls = serve.tls();
            tls.write_all(serve.post_head(length, "").as_bytes()).unwrap();
            let r = read_reply(&mut tls);
            assert!(
                r.status == 413 || r.status == 400,
                "Content-Length {length}: {}",
                r.text
            );
            assert!(r.closed, "Content-Length {length}: the connection stayed open");
        }
        // A real body over the cap, sent whole: 413, closed.
        let body = vec![b' '; 2 * 1024 * 1024];
        let r = serve.post(&body, "");
        assert_eq!(r.status, 413, "{}", r.text);
        assert!(r.closed);
    }
    let peak = peak.finish();
    let after = serve.rss();
    eprintln!(
        "oversized: 20 x (64 KiB head, 4 huge Content-Lengths, a 2 MiB body) refused; serve RSS {:.1} MiB before, peak {:.1}, after {:.1}",
        mib(before),
        mib(peak),
        mib(after)
    );
    assert!(peak < before + 16 * MIB, "RSS grew from {before} to {peak}");
    assert!(after < before + 8 * MIB, "RSS grew from {before} to {after}");
    serve.member_is_served();
}

/// Writes a gzip and a zlib (`deflate`) stream of `zeros` zero bytes, made by Python's own
/// compressors: (gzip, deflate).
fn bombs(dir: &Path, zeros: usize) -> (Vec<u8>, Vec<u8>) {
    let (gz, zl) = (dir.join("bomb.gz"), dir.join("bomb.zz"));
    let script = "import sys, gzip, zlib\n\
                  n = int(sys.argv[1])\n\
                  z = bytes(1 << 20)\n\
                  c = zlib.compressobj(9, zlib.DEFLATED, 31)\n\
                  d = zlib.compressobj(9)\n\
                  g = open(sys.argv[2], 'wb'); f = open(sys.argv[3], 'wb')\n\
                  for _ in range(n >> 20):\n    g.write(c.compress(z)); f.write(d.compress(z))\n\
                  g.write(c.flush()); f.write(d.flush())\n";
    let status = Command::new(python())
        .args(["-c", script, &zeros.to_string()])
        .arg(&gz)
        .arg(&zl)
        .status()
        .unwrap();
    assert!(status.success());
    (fs::read(gz).unwrap(), fs::read(zl).unwrap())
}

#[test]
fn gzip_and_deflate_bodies_are_refused_not_inflated() {
    let serve = Serve::start();
    warm(&serve);
    let tmp = tempfile::tempdir().unwrap();
    // 1 GiB of zeros each, about 1 MiB compressed: a bomb for a server that inflates.
    let (gz, zl) = bombs(tmp.path(), 1 << 30);
    assert!(
        gz.len() < 1 << 20 && zl.len() < 1 << 20,
        "{} {}",
        gz.len(),
        zl.len()
    );
    let before = serve.rss();
    let peak = PeakRss::start(serve.child.id());
    for (body, encoding) in [
        (&gz, "gzip"),
        (&zl, "deflate"),
        (&gz, "x-gzip"),
        (&zl, "gzip, deflate"),
    ] {
        for _ in 0..5 {
            let r = serve.post(body, &format!("Content-Encoding: {encoding}\r\n"));
            // Not inflated: the body is taken as what it is (not JSON), or the encoding refused.
            assert!(
                r.status == 400 || r.status == 415,
                "Content-Encoding {encoding}: {}",
                r.text
            );
            assert!(!r.text.contains("\"success_count\""), "{}", r.text);
        }
    }
    let peak = peak.finish();
    let after = serve.rss();
    eprintln!(
        "compressed bodies: gzip {} bytes and deflate {} bytes (1 GiB inflated each), 20 posts refused; serve RSS {:.1} MiB before, peak {:.1}, after {:.1}",
        gz.len(),
        zl.len(),
        mib(before),
        mib(peak),
        mib(after)
    );
    assert!(peak < before + 32 * MIB, "RSS grew from {before} to {peak}");
    serve.member_is_served();
}

#[test]
fn a_chunked_body_is_refused_and_the_connection_closed() {
    let serve = Serve::start();
    let mut tls = serve.tls();
    let head = format!(
        "POST /isac/collections/{}/objects/ HTTP/1.1\r\nHost: {}\r\nAccept: {TAXII}\r\n\
         Authorization: Basic {}\r\nContent-Type: {TAXII}\r\nTransfer-Encoding: chunked\r\n\r\n",
        api::contributions_id("isac"),
        serve.addr,
        b64("zoe:zoe-pw")
    );
    tls.write_all(head.as_bytes()).unwrap();
    // The chunks of an endless body: the server must not wait for them.
    let _ = tls.write_all(b"10\r\n{\"objects\": [  \r\n");
    let r = read_reply(&mut tls);
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("Transfer-Encoding"), "{}", r.text);
    assert!(r.closed, "the connection stayed open after a chunked body");
    // Both framings at once (request smuggling): refused the same way.
    let mut tls = serve.tls();
    let both = serve.post_head("5", "Transfer-Encoding: chunked\r\n");
    tls.write_all(both.as_bytes()).unwrap();
    let r = read_reply(&mut tls);
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.closed);
    serve.member_is_served();
}

#[test]
fn envelopes_of_100_000_objects_are_refused_by_count_or_size() {
    let serve = Serve::start();
    warm(&serve);
    let before = serve.rss();
    let peak = PeakRss::start(serve.child.id());
    // 100 000 empty objects fit in 1 MiB: refused by count.
    let small = format!("{{\"objects\": [{}]}}", vec!["{}"; 100_000].join(","));
    assert!(small.len() < 1 << 20);
    let r = serve.post(small.as_bytes(), "");
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("at most 10000"), "{}", r.text);
    // 100 000 sightings do not: refused by size, from the head. (The client sends the head and
    // the first 64 KiB, then reads: past what the server drains after a refusal, a client that
    // keeps writing 26 MB gets its connection reset before it reads the answer.)
    let one = r#"{"type":"sighting","spec_version":"2.1","id":"sighting--6b0e3856-95f3-4c04-a882-116832996d3f","created":"2026-01-01T00:00:00.000Z","modified":"2026-01-01T00:00:00.000Z","sighting_of_ref":"indicator--6b0e3856-95f3-4c04-a882-116832996d3f","count":1}"#;
    let big = format!("{{\"objects\": [{}]}}", vec![one; 100_000].join(","));
    let mut tls = serve.tls();
    tls.write_all(serve.post_head(&big.len().to_string(), "").as_bytes())
        .unwrap();
    let _ = tls.write_all(&big.as_bytes()[..64 * 1024]);
    let r = read_reply(&mut tls);
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(r.closed);
    let peak = peak.finish();
    eprintln!(
        "100 000-object envelopes ({} and {} bytes) refused; serve RSS {:.1} MiB before, peak {:.1}",
        small.len(),
        big.len(),
        mib(before),
        mib(peak)
    );
    assert!(peak < before + 32 * MIB, "RSS grew from {before} to {peak}");
    serve.member_is_served();
}

#[test]
fn json_nested_half_a_million_deep_is_refused_without_harm() {
    let serve = Serve::start();
    warm(&serve);
    let before = serve.rss();
    // Arrays nested 500 000 deep (1 MiB less the envelope): a parser that recursed for each
    // level would overflow its stack.
    let depth = 500_000;
    let deep = format!("{{\"objects\": [{}{}]}}", "[".repeat(depth), "]".repeat(depth));
    let r = serve.post(deep.as_bytes(), "");
    assert_eq!(r.status, 400, "{}", r.text);
    let deep_status = r.status;
    // Objects nested 100 deep inside one STIX object: within what the parser takes, over what
    // an inbound object may hold (32 levels), so that one object fails and nothing is stored.
    let mut nested = String::from("1");
    for _ in 0..100 {
        nested = format!("{{\"x_deep\": {nested}}}");
    }
    let obj = format!(
        "{{\"objects\": [{{\"type\":\"indicator\",\"spec_version\":\"2.1\",\"id\":\"indicator--6b0e3856-95f3-4c04-a882-116832996d3f\",\"created\":\"2026-01-01T00:00:00.000Z\",\"modified\":\"2026-01-01T00:00:00.000Z\",\"x_deep\":{nested}}}]}}"
    );
    let r = serve.post(obj.as_bytes(), "");
    assert!(r.status == 400 || r.status == 202, "{}", r.text);
    if r.status == 202 {
        assert!(r.text.contains("\"success_count\":0"), "{}", r.text);
        assert!(r.text.contains("deeper than"), "{}", r.text);
    }
    let after = serve.rss();
    eprintln!(
        "deep JSON: {depth} levels refused ({deep_status}), 100 levels in one object answered {}; serve RSS {:.1} MiB before, {:.1} after",
        r.status,
        mib(before),
        mib(after)
    );
    assert!(after < before + 16 * MIB, "RSS grew from {before} to {after}");
    serve.member_is_served();
}

/// Opens `n` TLS connections to `serve` and has each send `first` and then, every `every`, one
/// byte of `then`; each thread returns how long after opening the server closed its connection
/// (or panics after `limit`).
fn slow_clients(
    serve: &Serve,
    n: usize,
    first: String,
    then: &'static [u8],
    every: Duration,
    limit: Duration,
) -> Vec<thread::JoinHandle<Duration>> {
    (0..n)
        .map(|i| {
            let mut tls = serve.tls();
            let first = first.clone();
            thread::spawn(move || {
                let opened = Instant::now();
                tls.sock
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                if tls.write_all(first.as_bytes()).is_err() {
                    return opened.elapsed();
                }
                let mut next = Instant::now() + every;
                let mut k = 0;
                loop {
                    assert!(
                        opened.elapsed() < limit,
                        "slow client {i} still connected after {limit:?}"
                    );
                    let mut chunk = [0u8; 4096];
                    match tls.read(&mut chunk) {
                        Ok(0) => return opened.elapsed(),
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => return opened.elapsed(),
                    }
                    if Instant::now() >= next {
                        next += every;
                        let byte = [then[k % then.len()]];
                        k += 1;
                        if tls.write_all(&byte).and_then(|()| tls.flush()).is_err() {
                            return opened.elapsed();
                        }
                    }
                }
            })
        })
        .collect()
}

/// While the slow clients `held` are open: after a second, a member is served `times` times,
/// half a second apart. Then waits for every slow client to be closed. Returns how long each
/// member's answer took and how long after opening each slow client was closed.
fn served_while_held(
    serve: &Serve,
    times: usize,
    held: Vec<thread::JoinHandle<Duration>>,
) -> (Vec<Duration>, Vec<Duration>) {
    thread::sleep(Duration::from_secs(1));
    let mut served = Vec::new();
    for _ in 0..times {
        served.push(serve.member_is_served());
        thread::sleep(Duration::from_millis(500));
    }
    let closed = held.into_iter().map(|h| h.join().unwrap()).collect();
    (served, closed)
}

#[test]
fn slow_clients_on_the_body_are_cut_off_at_the_body_deadline() {
    let serve = Serve::start();
    warm(&serve);
    let before = serve.rss();
    let peak = PeakRss::start(serve.child.id());
    // 100 contributions whose body trickles in at a byte every two seconds: each would take
    // a week to arrive. The server's body deadline is 60 s from the head.
    let head = serve.post_head("300000", "");
    let held = slow_clients(
        &serve,
        100,
        head,
        b"{\"objects\": [",
        Duration::from_secs(2),
        Duration::from_secs(75),
    );
    // Meanwhile a member is served promptly, again and again.
    let (served, closed) = served_while_held(&serve, 20, held);
    let peak = peak.finish();
    let after = serve.rss();
    let (first, last) = (closed.iter().min().unwrap(), closed.iter().max().unwrap());
    eprintln!(
        "slow bodies: 100 held, closed {:.1}s to {:.1}s after opening; a member served meanwhile in at most {:?}; serve RSS {:.1} MiB before, peak {:.1}, after {:.1}",
        first.as_secs_f64(),
        last.as_secs_f64(),
        served.iter().max().unwrap(),
        mib(before),
        mib(peak),
        mib(after)
    );
    assert!(*first >= Duration::from_secs(55), "{first:?}");
    assert!(*last < Duration::from_secs(70), "{last:?}");
    assert!(peak < before + 32 * MIB, "RSS grew from {before} to {peak}");
    serve.member_is_served();
}

/// Regression (found by this suite): the server waited at most 15 s between two reads of a
/// head but set no deadline on the head as a whole, so a client sending a byte every 14 s held
/// its connection (and its task and buffers) for as long as it liked: 16 KiB of head took 64
/// hours. A head must now arrive whole within `HEAD_DEADLINE` (20 s).
#[test]
fn slow_clients_on_the_head_are_cut_off() {
    let serve = Serve::start();
    warm(&serve);
    let before = serve.rss();
    let peak = PeakRss::start(serve.child.id());
    // 100 requests whose head trickles in at a byte every two seconds (a 16 KiB head would
    // take nine hours). Bounded: the server must close them within 30 s of opening.
    let first = format!("GET /isac/collections/ HTTP/1.1\r\nHost: {}\r\n", serve.addr);
    let held = slow_clients(
        &serve,
        100,
        first,
        b"X-Slow: a\r\n",
        Duration::from_secs(2),
        Duration::from_secs(30),
    );
    let (served, closed) = served_while_held(&serve, 10, held);
    let peak = peak.finish();
    eprintln!(
        "slow heads: 100 held, closed {:.1}s to {:.1}s after opening; a member served meanwhile in at most {:?}; serve RSS {:.1} MiB before, peak {:.1}",
        closed.iter().min().unwrap().as_secs_f64(),
        closed.iter().max().unwrap().as_secs_f64(),
        served.iter().max().unwrap(),
        mib(before),
        mib(peak)
    );
    assert!(peak < before + 32 * MIB, "RSS grew from {before} to {peak}");
    serve.member_is_served();
}

/// Taken by the tests that open a thousand connections or more, so that they do not run at
/// the same time: their deadlines are timed, and thousands of sockets set up at once slow
/// every server on the machine.
static MANY_CONNECTIONS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_thousand_idle_connections_at_once_are_closed_and_cost_bounded_memory() {
    let _alone = MANY_CONNECTIONS.lock().unwrap_or_else(|p| p.into_inner());
    let serve = Serve::start();
    warm(&serve);
    let before = serve.rss();
    let peak = PeakRss::start(serve.child.id());
    // 500 connections that finish TLS and send nothing, 500 that never start it.
    let opened = Instant::now();
    let mut tls: Vec<Tls> = (0..500).map(|_| serve.tls()).collect();
    let mut tcp: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(serve.addr).unwrap())
        .collect();
    let holding = serve.rss();
    let mut served = Vec::new();
    for _ in 0..5 {
        served.push(serve.member_is_served());
    }
    // Every one is closed by the server (15 s without a byte), none by us.
    let limit = Duration::from_secs(25);
    for s in &mut tls {
        s.sock
            .set_read_timeout(Some(
                limit
                    .saturating_sub(opened.elapsed())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!(
                "an idle TLS connection got {other:?} after {:?}",
                opened.elapsed()
            ),
        }
    }
    for s in &mut tcp {
        s.set_read_timeout(Some(
            limit
                .saturating_sub(opened.elapsed())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!(
                "an idle TCP connection got {other:?} after {:?}",
                opened.elapsed()
            ),
        }
    }
    let all_closed = opened.elapsed();
    let peak = peak.finish();
    let after = serve.rss();
    eprintln!(
        "1 000 idle connections: all closed by the server {:.1}s after opening; a member served meanwhile in at most {:?}; serve RSS {:.1} MiB before, {:.1} holding, peak {:.1}, after {:.1}",
        all_closed.as_secs_f64(),
        served.iter().max().unwrap(),
        mib(before),
        mib(holding),
        mib(peak),
        mib(after)
    );
    assert!(peak < before + 64 * MIB, "RSS grew from {before} to {peak}");
    serve.member_is_served();
}

/// A burst of `MAX_CONNECTIONS` connections at once is queued by the kernel, none dropped
/// (regression: with the standard library's listen backlog of 128, a burst like this overflowed
/// the queue hundreds of times, and each dropped connection waited a second to try again, so
/// opening them took 5 to 7 s); with them held open, one more is closed as soon as it is
/// accepted (it costs no TLS work and no task); once the held ones go, a member is served.
#[test]
fn a_burst_of_connections_is_queued_and_one_past_the_cap_is_closed_at_once() {
    use picket_collector::taxii_server::MAX_CONNECTIONS;
    let _alone = MANY_CONNECTIONS.lock().unwrap_or_else(|p| p.into_inner());
    // This process holds MAX_CONNECTIONS + 1 sockets, beside what the other tests running at
    // the same time hold: raise its own open-file limit.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let want = (4 * MAX_CONNECTIONS) as u64;
    assert!(
        limit.maximum.is_none_or(|m| m >= want),
        "the hard open-file limit {:?} is below the {want} this test needs",
        limit.maximum
    );
    if limit.current.is_some_and(|c| c < want) {
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(want),
                maximum: limit.maximum,
            },
        )
        .unwrap();
    }
    let serve = Serve::start();
    warm(&serve);
    let overflows = listen_overflows();
    let opened = Instant::now();
    // Opened from 64 threads at once: one connect now and then waits out a dropped SYN (1 s),
    // and the held connections must all be open well within the server's 15 s handshake
    // timeout, which would free their slots.
    let addr = serve.addr;
    let held: Vec<TcpStream> = (0..64)
        .map(|_| {
            std::thread::spawn(move || {
                (0..MAX_CONNECTIONS / 64)
                    .map(|_| TcpStream::connect(addr).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let all_open = opened.elapsed();
    assert_eq!(
        listen_overflows() - overflows,
        0,
        "connections of the burst were dropped by a full listen queue"
    );
    assert!(
        all_open < Duration::from_secs(12),
        "opening the held connections took {all_open:?}, too near the 15 s that would free them"
    );
    // Accepted in order: once the server has taken every held connection, the next is over
    // the cap. It is closed without a byte, long before any deadline would close it.
    let extra_opened = Instant::now();
    let mut extra = TcpStream::connect(serve.addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 16];
    let got = extra.read(&mut b);
    let closed_after = extra_opened.elapsed();
    assert!(
        matches!(&got, Ok(0)) || matches!(&got, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the connection past the cap got {got:?}"
    );
    assert!(
        closed_after < Duration::from_secs(2),
        "the connection past the cap was closed after {closed_after:?}, not at once"
    );
    // A held one is still open: the cap closed the newcomer, not the ones it was holding.
    let mut first = &held[0];
    first.set_nonblocking(true).unwrap();
    assert!(
        matches!(first.read(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock),
        "a held connection was closed"
    );
    drop(held);
    // The slots come back as the server reads the end of each closed connection.
    std::thread::sleep(Duration::from_secs(2));
    serve.member_is_served();
    eprintln!(
        "{MAX_CONNECTIONS} held connections (opened in {:.1}s): one more closed {:.1} ms after it connected",
        all_open.as_secs_f64(),
        closed_after.as_secs_f64() * 1000.0
    );
}

/// The kernel's count of connections dropped because a listener's queue was full
/// (`TcpExt: ListenOverflows` in /proc/net/netstat).
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let tcp_ext: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let (names, values) = (tcp_ext[0].split_whitespace(), tcp_ext[1].split_whitespace());
    names
        .zip(values)
        .find(|(n, _)| *n == "ListenOverflows")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap()
}
