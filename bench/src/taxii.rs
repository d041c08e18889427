//! TAXII 2.1 read throughput: the collector's TAXII server (`picket-collector serve --http`, the
//! release binary) against medallion (PyPI, its memory backend), serving the same objects to
//! the same client.
//!
//! 1. Set-up: a fresh data directory (`init`, the root key removed), a community `bench` with
//!    k = 2, a member `reader` (`member add`), `ingest` of N SHA-256 lines, and for each
//!    indicator one sighting by this organisation's agents and one by another organisation
//!    (rows written straight into `sightings` and `community_sightings`, as the channel and a
//!    member's POST would), so the share policy lets N sightings out. Then `serve --listen
//!    127.0.0.1:0 --http 127.0.0.1:0`.
//! 2. The objects Picket serves are read once (they are what medallion is given), and medallion
//!    is started with its memory backend holding exactly those objects, each with a manifest
//!    entry, in one collection.
//! 3. Timed: full paged reads of the collection's objects (`limit=100`, then `next` until `more`
//!    is false), alternating between the two servers, with one client for both: HTTP/1.1
//!    keep-alive over a blocking socket, HTTP Basic, the response parsed as JSON and its objects
//!    counted. Picket is read over HTTPS (TLS 1.3, trusting `DIR/tls/ca.pem`); medallion over
//!    plain HTTP on loopback (its command line has no TLS), which favours medallion, and the
//!    report says so. Each figure is objects per second of the median read.
//!
//! Invariant: nothing outlives the run. Both servers are children killed when their guards
//! drop, and every wait on them is bounded.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

use crate::channel::{collector, init, status_bytes, write_hashes};
use crate::data::Rng;
use crate::report;

/// The community the objects are shared with (its API root on Picket's server).
const COMMUNITY: &str = "bench";
/// The member both servers know.
const USER: &str = "reader";
const PASSWORD: &str = "bench-reader-password";
/// The objects per page asked of both (Picket's and medallion's largest page here).
const PAGE: usize = 100;
/// medallion's collection id (any UUID).
const MEDALLION_COLLECTION: &str = "91a7b528-80eb-42ed-a74d-c6fbd5a26116";
/// The TAXII media type both are asked for.
const ACCEPT: &str = "application/taxii+json;version=2.1";
/// How long a server may take to start, and one request to be answered.
const START: Duration = Duration::from_secs(30);
const REQUEST: Duration = Duration::from_secs(60);
/// The throughput goal: Picket's reads at least this many times medallion's.
const GOAL: f64 = 10.0;

/// Runs the benchmark: `objects` sightings (default 1 000; `quick`: 300, since medallion's
/// first page costs it time quadratic in the objects held) read `rounds` times from each
/// server (`quick`: 3 rounds, full: 9).
pub fn run(objects: Option<usize>, quick: bool) -> Result<()> {
    let n = objects.unwrap_or(if quick { 300 } else { 1_000 });
    let rounds = if quick { 3 } else { 9 };
    let bin = crate::built_bin("picket-collector")?;
    let python = python()?;
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let data = setup(&bin, tmp.path(), n)?;
    let picket = PicketServer::start(&bin, &data)?;
    let mut pc = Client::picket(&data, picket.addr)?;
    let collection = picket_collection(&mut pc)?;
    let picket_path = format!("/{COMMUNITY}/collections/{collection}/objects/");
    let served = read_all(&mut pc, &picket_path)?;
    let sightings = served.iter().filter(|o| o["type"] == "sighting").count();
    ensure!(
        sightings == n,
        "Picket's TAXII server shares {sightings} sightings ({} objects in all), not the {n} set up",
        served.len()
    );
    let medallion = Medallion::start(&python, tmp.path(), &served)?;
    let mut mc = Client::plain(medallion.addr);
    let medallion_path = format!("/api1/collections/{MEDALLION_COLLECTION}/objects/");
    let same = read_all(&mut mc, &medallion_path)?;
    ensure!(
        ids(&same) == ids(&served),
        "medallion serves {} objects, not the {} Picket serves",
        same.len(),
        served.len()
    );

    let (mut pt, mut pf) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    let (mut mt, mut mf) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        let (all, first) = timed(&mut pc, &picket_path, served.len())?;
        pt.push(all);
        pf.push(first);
        let (all, first) = timed(&mut mc, &medallion_path, served.len())?;
        mt.push(all);
        mf.push(first);
    }
    let (p, m) = (median(pt.clone()), median(mt.clone()));
    let (p1, m1) = (median(pf), median(mf));
    let total = served.len() as f64;
    let (prate, mrate) = (total / p, total / m);
    // The pages after the first, apart: medallion's first page holds its filtering of the whole
    // collection, Picket's the share policy's run over the store.
    let later = total - PAGE.min(served.len()) as f64;
    let (plater, mlater) = (later / (p - p1).max(1e-9), later / (m - m1).max(1e-9));
    let picket_rss = status_bytes(picket.child.id(), "VmRSS")?;
    let medallion_rss = status_bytes(medallion.child.id(), "VmRSS")?;
    let pages = served.len().div_ceil(PAGE);
    report(
        "taxii-read",
        &format!(
            "{} objects ({n} STIX sightings and what they refer to), full paged reads of {pages} pages of {PAGE}, \
             median of {rounds}, one keep-alive client for both: Picket (`serve --http`, HTTPS/TLS 1.3) {:.1} ms, \
             {prate:.0} objects/s (range {:.1}-{:.1} ms; first page {:.1} ms; {} requests on {} connections); medallion 3.0 \
             (memory backend, plain HTTP on loopback, which favours it) {:.1} ms, {mrate:.0} objects/s (range {:.1}-{:.1} ms; \
             first page {:.1} ms; {} requests on {} connections); Picket/medallion {:.1}x; the pages after the first alone: Picket {plater:.0} objects/s, medallion \
             {mlater:.0} objects/s, {:.1}x; RSS after the reads: serve {:.1} MiB, medallion {:.1} MiB",
            served.len(),
            p * 1e3,
            min(&pt) * 1e3,
            max(&pt) * 1e3,
            p1 * 1e3,
            pc.requests,
            pc.connections,
            m * 1e3,
            min(&mt) * 1e3,
            max(&mt) * 1e3,
            m1 * 1e3,
            mc.requests,
            mc.connections,
            prate / mrate,
            plater / mlater,
            picket_rss as f64 / f64::from(1 << 20),
            medallion_rss as f64 / f64::from(1 << 20),
        ),
        Some((prate >= GOAL * mrate, "at least 10x medallion's objects/s")),
    );
    Ok(())
}

/// The Python of the test virtual environment (`PICKET_PYTHON`, or `.venv` at the workspace's
/// top, which `test.sh` makes), where medallion is installed.
fn python() -> Result<PathBuf> {
    let path = std::env::var_os("PICKET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    ensure!(
        path.exists(),
        "{} is missing: run ./test.sh, which installs medallion (PyPI) there, or set PICKET_PYTHON",
        path.display()
    );
    Ok(path)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The data directory: community, member, `n` indicators each sighted by this organisation and
/// by one other.
fn setup(bin: &Path, dir: &Path, n: usize) -> Result<PathBuf> {
    let data = init(bin, dir, "data", 0)?;
    let config = data.join("picket.toml");
    let mut text = fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
    text.push_str(&format!(
        "\n[[community]]\nname = \"{COMMUNITY}\"\nk = 2\ndisclosure = \"none\"\n"
    ));
    fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    let pw = dir.join("reader.pw");
    fs::write(&pw, PASSWORD).with_context(|| format!("writing {}", pw.display()))?;
    collector(
        bin,
        "member add",
        &data,
        &[
            OsStr::new("--community"),
            OsStr::new(COMMUNITY),
            OsStr::new("--name"),
            OsStr::new(USER),
            OsStr::new("--password-file"),
            pw.as_os_str(),
        ],
    )?;
    // A STIX bundle, so that each indicator keeps its STIX id, the id every community knows
    // it by and other organisations' sightings name.
    let list = dir.join("iocs.txt");
    write_hashes(&list, n, &mut Rng(77))?;
    let hashes = fs::read_to_string(&list).with_context(|| format!("reading {}", list.display()))?;
    let indicators: Vec<Value> = hashes
        .lines()
        .enumerate()
        .map(|(i, h)| {
            json!({
                "type": "indicator", "spec_version": "2.1",
                "id": format!("indicator--00000000-0000-4000-8000-{i:012}"),
                "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
                "pattern": format!("[file:hashes.'SHA-256' = '{h}']"),
                "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00Z",
            })
        })
        .collect();
    let bundle = dir.join("feed.json");
    let text = json!({
        "type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": indicators
    });
    fs::write(&bundle, text.to_string()).with_context(|| format!("writing {}", bundle.display()))?;
    collector(
        bin,
        "ingest",
        &data,
        &[bundle.as_os_str(), OsStr::new("--tlp"), OsStr::new("green")],
    )?;
    let db = data.join("picket.db");
    let mut conn = rusqlite::Connection::open(&db).with_context(|| format!("opening {}", db.display()))?;
    let ids: Vec<String> = {
        let mut q = conn.prepare("SELECT id FROM indicators WHERE org = 1 ORDER BY id")?;
        let rows = q.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    ensure!(
        ids.len() == n,
        "{} holds {} indicators, not {n}",
        db.display(),
        ids.len()
    );
    let now = unix_now();
    let (first, last) = (now / 3600 * 3600 - 6 * 3600, now / 3600 * 3600 - 3 * 3600);
    let tx = conn.transaction()?;
    for (i, id) in ids.iter().enumerate() {
        tx.execute(
            "INSERT INTO sightings (org, agent, indicator, what, observed, location, first_seen, last_seen,
                                    count, set_version, received)
             VALUES (1, ?1, ?2, 'sha256', 'file', '', ?3, ?4, ?5, 1, ?4)",
            rusqlite::params![
                format!("bench-agent-{}", i % 10),
                id,
                first,
                last,
                3 + (i % 40) as i64
            ],
        )?;
        tx.execute(
            "INSERT INTO community_sightings (org, community, account, sighting_id, indicator, count,
                                              first_seen, last_seen, modified, false_positive, received)
             VALUES (1, ?1, 'peer', ?2, ?3, 2, ?4, ?5, '2026-01-01T00:00:00.000Z', 0, ?5)",
            rusqlite::params![
                COMMUNITY,
                format!("sighting--00000000-0000-4000-8000-{i:012}"),
                id,
                first,
                last
            ],
        )?;
    }
    tx.commit()?;
    Ok(data)
}

/// `picket-collector serve` with its TAXII server on a loopback port; killed when dropped.
struct PicketServer {
    child: Child,
    addr: SocketAddr,
}

impl PicketServer {
    fn start(bin: &Path, data: &Path) -> Result<PicketServer> {
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting picket-collector serve --http")?;
        let stdout = child.stdout.take();
        let mut server = PicketServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let (tx, rx) = mpsc::channel();
        if let Some(out) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        const SAYS: &str = "picket-collector: TAXII 2.1 server listening on https://";
        let deadline = Instant::now() + START;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(SAYS) {
                        let addr = rest.trim_end_matches("/taxii2/");
                        server.addr = addr
                            .parse()
                            .with_context(|| format!("serve named {addr:?} as its TAXII address"))?;
                        return Ok(server);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("serve --http did not say where it listens within {START:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = server.child.try_wait()?;
                    bail!("serve --http closed its stdout without saying where it listens ({status:?})");
                }
            }
        }
    }
}

impl Drop for PicketServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// medallion on a loopback port, its memory backend holding `objects`; killed when dropped.
struct Medallion {
    child: Child,
    addr: SocketAddr,
}

impl Medallion {
    fn start(python: &Path, dir: &Path, objects: &[Value]) -> Result<Medallion> {
        for _attempt in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .context("finding a free port")?
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let config = write_medallion_config(dir, port, objects)?;
            let log_path = dir.join("medallion.log");
            let log =
                fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
            let child = Command::new(python)
                .args([
                    "-c",
                    "import sys; from medallion.scripts.run import main; sys.exit(main())",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                ])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting medallion with {}", python.display()))?;
            let mut m = Medallion { child, addr };
            let deadline = Instant::now() + START;
            while Instant::now() < deadline {
                if m.child.try_wait()?.is_some() {
                    break; // The port was taken in the meantime: try another.
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Ok(m);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let log = fs::read_to_string(dir.join("medallion.log")).unwrap_or_default();
        bail!("medallion did not start; its log:\n{log}")
    }
}

impl Drop for Medallion {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// medallion's configuration and data file: one API root, one collection holding `objects`
/// with a manifest entry each, the member, and pages of at most [`PAGE`].
fn write_medallion_config(dir: &Path, port: u16, objects: &[Value]) -> Result<PathBuf> {
    let base = format!("http://127.0.0.1:{port}");
    let manifest: Vec<Value> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            json!({
                "id": o["id"],
                "date_added": format!("2026-01-01T00:{:02}:{:02}.{:06}Z", i / 60_000 % 60, i / 1000 % 60, i % 1000),
                "version": o.get("modified").or_else(|| o.get("created")).cloned().unwrap_or(Value::Null),
                "media_type": "application/stix+json;version=2.1"
            })
        })
        .collect();
    let data = json!({
        "/discovery": {
            "title": "medallion for picket-bench",
            "default": format!("{base}/api1/"),
            "api_roots": [format!("{base}/api1/")]
        },
        "api1": {
            "information": {
                "title": "bench",
                "versions": [ACCEPT],
                "max_content_length": 10_485_760
            },
            "status": [],
            "collections": [{
                "id": MEDALLION_COLLECTION,
                "title": "sightings",
                "can_read": true,
                "can_write": false,
                "media_types": ["application/stix+json;version=2.1"],
                "objects": objects,
                "manifest": manifest
            }]
        }
    });
    let data_file = dir.join("medallion-data.json");
    fs::write(&data_file, data.to_string()).with_context(|| format!("writing {}", data_file.display()))?;
    let config = json!({
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": data_file
        },
        "users": { USER: PASSWORD },
        "taxii": { "max_page_size": PAGE }
    });
    let path = dir.join("medallion.json");
    fs::write(&path, config.to_string()).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Anything a client can speak HTTP over.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One HTTP/1.1 client: keep-alive (a new connection only when the server closes one), HTTP
/// Basic, bodies framed by `Content-Length`.
struct Client {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    auth: String,
    conn: Option<BufReader<Box<dyn Stream>>>,
    requests: u64,
    connections: u64,
}

impl Client {
    /// A client for Picket's server: TLS trusting the data directory's CA.
    fn picket(data: &Path, addr: SocketAddr) -> Result<Client> {
        let ca_path = data.join("tls/ca.pem");
        let ca =
            CertificateDer::from_pem_file(&ca_path).map_err(|e| anyhow!("{}: {e}", ca_path.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).context("adding the collector CA")?;
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .context("TLS 1.3 with ring")?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut c = Client::plain(addr);
        c.tls = Some(Arc::new(config));
        Ok(c)
    }

    /// A client over plain TCP.
    fn plain(addr: SocketAddr) -> Client {
        Client {
            addr,
            tls: None,
            auth: format!("Basic {}", base64(&format!("{USER}:{PASSWORD}"))),
            conn: None,
            requests: 0,
            connections: 0,
        }
    }

    fn connect(&mut self) -> Result<BufReader<Box<dyn Stream>>> {
        let tcp = TcpStream::connect_timeout(&self.addr, REQUEST)
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(REQUEST))?;
        self.connections += 1;
        let stream: Box<dyn Stream> = match &self.tls {
            Some(config) => {
                let name = ServerName::try_from("127.0.0.1").context("the server name")?;
                let conn = rustls::ClientConnection::new(config.clone(), name).context("a TLS client")?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
            None => Box::new(tcp),
        };
        Ok(BufReader::with_capacity(64 << 10, stream))
    }

    /// GET `target`: the status and the body as JSON.
    fn get(&mut self, target: &str) -> Result<(u16, Value)> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect()?,
        };
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nAccept: {ACCEPT}\r\nAuthorization: {}\r\n\r\n",
            self.addr, self.auth
        );
        conn.get_mut().write_all(req.as_bytes())?;
        conn.get_mut().flush()?;
        self.requests += 1;
        let mut line = String::new();
        conn.read_line(&mut line)
            .with_context(|| format!("{}: reading the status line", self.addr))?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{}: status line {line:?}", self.addr))?;
        let mut keep = line.starts_with("HTTP/1.1");
        let mut length = None;
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((k, v)) = l.split_once(':') else {
                bail!("{}: header {l:?}", self.addr)
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = Some(
                    v.parse::<usize>()
                        .with_context(|| format!("Content-Length {v:?}"))?,
                );
            } else if k.eq_ignore_ascii_case("connection") {
                keep = !v.eq_ignore_ascii_case("close");
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                bail!(
                    "{}: a {v} body; this client reads Content-Length bodies only",
                    self.addr
                );
            }
        }
        let length = length.with_context(|| format!("{}: an answer without Content-Length", self.addr))?;
        ensure!(length <= 64 << 20, "{}: a body of {length} bytes", self.addr);
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body)?;
        if keep {
            self.conn = Some(conn);
        }
        let value = serde_json::from_slice(&body).with_context(|| {
            format!(
                "{}: GET {target} answered {status} with a body that is not JSON",
                self.addr
            )
        })?;
        Ok((status, value))
    }
}

/// Base64 (standard alphabet, padded), for HTTP Basic.
fn base64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The id of the `sightings` collection of [`COMMUNITY`] on Picket's server.
fn picket_collection(c: &mut Client) -> Result<String> {
    let (status, v) = c.get(&format!("/{COMMUNITY}/collections/"))?;
    ensure!(status == 200, "listing the collections: {status} {v}");
    v["collections"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["title"] == "sightings")
        .and_then(|c| c["id"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no sightings collection in {v}"))
}

/// Every object of the collection at `path`, page by page.
fn read_all(c: &mut Client, path: &str) -> Result<Vec<Value>> {
    read_pages(c, path).map(|(objects, _)| objects)
}

/// Every object of the collection at `path`, page by page, and when the first page had fully
/// arrived.
fn read_pages(c: &mut Client, path: &str) -> Result<(Vec<Value>, Instant)> {
    let mut objects = Vec::new();
    let mut first = None;
    let mut target = format!("{path}?limit={PAGE}");
    for _page in 0..1_000_000 {
        let (status, mut v) = c.get(&target)?;
        ensure!(status == 200, "GET {target}: {status} {v}");
        first.get_or_insert_with(Instant::now);
        if let Some(page) = v.get_mut("objects").and_then(|o| o.as_array_mut()) {
            objects.append(page);
        }
        if v["more"] != true {
            return Ok((objects, first.unwrap_or_else(Instant::now)));
        }
        let next = v["next"]
            .as_str()
            .with_context(|| format!("GET {target}: more is true but there is no next"))?;
        target = format!("{path}?limit={PAGE}&next={next}");
    }
    bail!("{path}: more than a million pages")
}

/// One full read, timed: (seconds for the whole read, for its first page). Checks it brought
/// `want` objects.
fn timed(c: &mut Client, path: &str, want: usize) -> Result<(f64, f64)> {
    let start = Instant::now();
    let (objects, first) = read_pages(c, path)?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        objects.len() == want,
        "a full read of {path} brought {} objects, not {want}",
        objects.len()
    );
    Ok((secs, first.saturating_duration_since(start).as_secs_f64()))
}

fn ids(objects: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = objects
        .iter()
        .map(|o| format!("{}@{}", o["id"], o["modified"]))
        .collect();
    ids.sort();
    ids
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_in_base64() {
        assert_eq!(base64("reader:pw"), "cmVhZGVyOnB3");
        assert_eq!(base64("a"), "YQ==");
        assert_eq!(base64("ab"), "YWI=");
    }

    #[test]
    fn median_of_an_odd_and_an_even_count() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
