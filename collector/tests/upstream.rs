//! Pushing to and pulling from an upstream TAXII 2.1 collection, against a real TAXII server:
//! medallion (PyPI, in the test virtual environment), on loopback with its in-memory backend.
//! The collector runs as the real binary (`share pull`, `share push`) on a real data directory.
//!
//! The story: our agents saw an indicator from a STIX feed; the community's k is 2, so nothing
//! leaves until another organisation's sighting of it arrives through the upstream collection.
//! Then the bundle `share preview` shows is pushed, each object once, and a lost answer to a
//! POST (a proxy in the test drops it) is not followed by sending the objects again.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use picket_collector::datadir::DataDir;
use serde_json::{json, Value};

mod common;
use common::{ingest_file, python, record_sighting};

const API_ROOT: &str = "api1";
const COLLECTION: &str = "365fed99-08fa-fdcd-a1b3-fb247eb41d01";
/// Our collector's account at the upstream server.
const US: (&str, &str) = ("picket", "our upstream password 7f3a");
/// Another organisation's account there.
const PEER: (&str, &str) = ("peer", "peer password 91c2");
/// The indicator the feed brought, under its author's id, known to every member.
const INDICATOR: &str = "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f";
const H: i64 = 3600;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A child process killed (and reaped) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A medallion server on a free loopback port with one API root and one readable, writable
/// collection, killed when dropped.
struct Medallion {
    _child: Killed,
    dir: tempfile::TempDir,
    port: u16,
}

impl Medallion {
    fn start() -> Medallion {
        let dir = tempfile::tempdir().unwrap();
        let medallion = python().parent().unwrap().join("medallion");
        for _attempt in 0..3 {
            let port = free_port();
            write_config(dir.path(), port);
            let log = fs::File::create(dir.path().join("medallion.log")).unwrap();
            let child = Command::new(&medallion)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .arg(dir.path().join("medallion.json"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut child = Killed(child);
            if wait_until_answering(&mut child, port) {
                return Medallion {
                    _child: child,
                    dir,
                    port,
                };
            }
        }
        panic!(
            "medallion did not start; its log:\n{}",
            fs::read_to_string(dir.path().join("medallion.log")).unwrap_or_default()
        );
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn collection_path(&self) -> String {
        format!("/{API_ROOT}/collections/{COLLECTION}/")
    }

    /// Every object version the collection holds, through the objects endpoint
    /// (`match[version]=all`): (id, version) pairs, one per stored copy.
    fn all_versions(&self) -> Vec<(String, String)> {
        let (status, body) = http(
            &self.addr(),
            "GET",
            &format!("{}objects/?match[version]=all", self.collection_path()),
            US,
            None,
        );
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_ne!(v["more"], true, "one page is enough here: {body}");
        v["objects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| {
                        let version = o.get("modified").or_else(|| o.get("created")).unwrap();
                        (
                            o["id"].as_str().unwrap().to_owned(),
                            version.as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The versions the versions endpoint lists for `id`.
    fn versions_of(&self, id: &str) -> Vec<String> {
        let (status, body) = http(
            &self.addr(),
            "GET",
            &format!("{}objects/{id}/versions/", self.collection_path()),
            US,
            None,
        );
        assert_eq!(status, 200, "{id}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    }

    /// Another organisation adds a sighting of the shared indicator, straight to medallion.
    fn peer_posts_sighting(&self) -> String {
        let id = "sighting--6b0e3856-95b3-4c04-a2f1-4d9a8c3b7e10";
        let t = |secs: i64| picket_proto::rfc3339(secs);
        let sighting = json!({
            "type": "sighting",
            "spec_version": "2.1",
            "id": id,
            "created": t(now() - 5 * H),
            "modified": t(now() - 5 * H),
            "sighting_of_ref": INDICATOR,
            "count": 3,
            "first_seen": t(now() - 8 * H),
            "last_seen": t(now() - 6 * H),
            "created_by_ref": "identity--d6e9ae8c-0b14-4c59-9a8d-1c6f1e3a2b44"
        });
        let (status, body) = http(
            &self.addr(),
            "POST",
            &format!("{}objects/", self.collection_path()),
            PEER,
            Some(&json!({ "objects": [sighting] }).to_string()),
        );
        assert_eq!(status, 202, "{body}");
        let s: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(s["success_count"], 1, "{body}");
        id.to_owned()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("medallion.log")).unwrap_or_default()
    }
}

/// medallion's configuration: two users, and the memory backend seeded with an empty
/// collection that both may read and write.
fn write_config(dir: &Path, port: u16) {
    let base = format!("http://127.0.0.1:{port}");
    let data = json!({
        "/discovery": {
            "title": "Community TAXII server",
            "default": format!("{base}/{API_ROOT}/"),
            "api_roots": [format!("{base}/{API_ROOT}/")]
        },
        API_ROOT: {
            "information": {
                "title": "Community sharing",
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 10_485_760
            },
            "status": [],
            "collections": [{
                "id": COLLECTION,
                "title": "Shared sightings",
                "can_read": true,
                "can_write": true,
                "media_types": ["application/stix+json;version=2.1"],
                "objects": [],
                "manifest": []
            }]
        }
    });
    fs::write(dir.join("data.json"), data.to_string()).unwrap();
    let config = json!({
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": dir.join("data.json").to_str().unwrap()
        },
        "users": { US.0: US.1, PEER.0: PEER.1 },
        "taxii": { "max_page_size": 100 }
    });
    fs::write(dir.join("medallion.json"), config.to_string()).unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls until medallion answers its discovery endpoint; false if it exits first (a taken
/// port).
fn wait_until_answering(child: &mut Killed, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.0.try_wait().unwrap().is_some() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let (status, _) = http(&format!("127.0.0.1:{port}"), "GET", "/taxii2/", US, None);
            if status == 200 {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("medallion did not answer on port {port} within 30 s");
}

/// Standard base64 (RFC 4648), for HTTP Basic.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= c.len() {
                char::from(A[(n >> (18 - 6 * i) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

/// One raw HTTP/1.1 request (TAXII media types, HTTP Basic, `Connection: close`): the status
/// and the body.
fn http(addr: &str, method: &str, path: &str, user: (&str, &str), body: Option<&str>) -> (u16, String) {
    let path = path.replace('[', "%5B").replace(']', "%5D");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = base64(format!("{}:{}", user.0, user.1).as_bytes());
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/taxii+json;version=2.1\r\n\
         Authorization: Basic {auth}\r\nConnection: close\r\n"
    );
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/taxii+json;version=2.1\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or_default());
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// What the proxy saw: method, path (with query) and body of each request.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// A loopback HTTP proxy in front of medallion that forwards every request and its answer,
/// except that it drops the answer to the first POST: it forwards the request, waits for
/// medallion to answer (so the objects are in), and closes the connection instead of replying.
struct Proxy {
    port: u16,
    seen: Seen,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Seen = Arc::default();
        let dropped = Arc::new(AtomicBool::new(false));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (upstream, log, dropped) = (upstream.clone(), log.clone(), dropped.clone());
                std::thread::spawn(move || forward(conn, &upstream, &log, &dropped));
            }
        });
        Proxy { port, seen }
    }

    fn posts(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _, _)| m == "POST")
            .map(|(_, _, b)| b.clone())
            .collect()
    }
}

/// Serves one client connection: one request, one answer (or none), then close.
fn forward(mut client: TcpStream, upstream: &str, seen: &Seen, dropped: &AtomicBool) {
    client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "the proxy reads only Content-Length bodies: {head}"
    );
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = &buf[head_end..head_end + length];
    let mut words = head.split_whitespace();
    let (method, path) = (
        words.next().unwrap_or_default().to_owned(),
        words.next().unwrap_or_default().to_owned(),
    );
    seen.lock()
        .unwrap()
        .push((method.clone(), path, String::from_utf8_lossy(body).into_owned()));
    // The same request, on a connection of its own that closes after the answer.
    let mut rewritten: String = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    rewritten.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(upstream).unwrap();
    server.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    server.write_all(rewritten.as_bytes()).unwrap();
    server.write_all(body).unwrap();
    let mut answer = Vec::new();
    let _ = server.read_to_end(&mut answer);
    if method == "POST" && !dropped.swap(true, Ordering::SeqCst) {
        // The request was done; its answer is lost.
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let text = answer;
    let split = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(text.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&text[..split]).into_owned();
    let mut out: String = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    out.push_str("Connection: close\r\n\r\n");
    let _ = client.write_all(out.as_bytes());
    let _ = client.write_all(&text[split..]);
    let _ = client.shutdown(Shutdown::Both);
}

/// A data directory: community `isac` (k = 2, organisation disclosed) whose upstream is the
/// collection at `addr` (push, and pull), an indicator from a STIX feed, and three of our
/// agents' sightings of it.
fn data_dir(tmp: &Path, addr: &str) -> PathBuf {
    let data = tmp.join("data");
    let t = now();
    DataDir::init(&data, "Example Org", Some(&tmp.join("root.key")), t - 100 * H).unwrap();
    fs::write(data.join("upstream-isac.pw"), format!("{}\n", US.1)).unwrap();
    let mut cfg = fs::read_to_string(data.join("picket.toml")).unwrap();
    cfg.push_str(&format!(
        "\n[[community]]\nname = \"isac\"\nk = 2\ntlp_ceiling = \"amber\"\ndisclosure = \"organisation\"\n\
         \n[[community.upstream]]\nname = \"hub\"\napi_root = \"http://{addr}/{API_ROOT}/\"\n\
         collection = \"{COLLECTION}\"\nusername = \"{}\"\npassword_file = \"upstream-isac.pw\"\npull = true\n",
        US.0
    ));
    fs::write(data.join("picket.toml"), cfg).unwrap();
    let feed = tmp.join("feed.json");
    let bundle = json!({
        "type": "bundle",
        "id": "bundle--0e1f6d8a-4b1c-4a5e-9f3d-2c7b8a9e0d11",
        "objects": [{
            "type": "indicator",
            "spec_version": "2.1",
            "id": INDICATOR,
            "created": "2024-01-01T00:00:00.000Z",
            "modified": "2024-01-01T00:00:00.000Z",
            "name": "EICAR test file",
            "indicator_types": ["malicious-activity"],
            "pattern": "[file:hashes.'SHA-256' = '275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f']",
            "pattern_type": "stix",
            "valid_from": "2024-01-01T00:00:00Z"
        }]
    });
    fs::write(&feed, bundle.to_string()).unwrap();
    let id = ingest_file(&data, &feed, "feed.json", t - 50 * H).remove(0);
    for n in 0..3 {
        record_sighting(
            &data,
            &format!("agent-{n}"),
            &id,
            &format!("~/user{n}/Downloads/eicar.com"),
            t - 30 * H,
            t - 20 * H,
        );
    }
    data
}

/// Runs `picket-collector share VERB --data DATA --community isac --json`: the exit code and
/// the report lines.
fn share(data: &Path, verb: &str) -> (Option<i32>, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_picket-collector"))
        .args(["share", verb, "--data"])
        .arg(data)
        .args(["--community", "isac", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let reports = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    (out.status.code(), reports, format!("{stdout}{stderr}"))
}

/// The bundle `share preview` prints now: (id, version) of each object.
fn preview(data: &Path) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_picket-collector"))
        .args(["share", "preview", "--json", "--data"])
        .arg(data)
        .args(["--community", "isac"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut v: Vec<(String, String)> = b["objects"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| {
                    let version = o.get("modified").or_else(|| o.get("created")).unwrap();
                    (
                        o["id"].as_str().unwrap().to_owned(),
                        version.as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Rows of a table query, as strings.
fn rows(data: &Path, sql: &str) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(data.join("picket.db")).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let mut v: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    v.sort();
    v
}

#[test]
fn another_orgs_sighting_pulled_clears_k_and_the_bundle_is_pushed_once() {
    let m = Medallion::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), &m.addr());

    // k = 2 and only we saw it: nothing to push.
    assert!(preview(&data).is_empty());
    let (code, r, text) = share(&data, "push");
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        (r[0]["offered"].as_u64(), r[0]["sent"].as_u64()),
        (Some(0), Some(0)),
        "{text}"
    );
    assert!(m.all_versions().is_empty());

    // Another organisation sights the indicator upstream; the pull stores it as that
    // upstream's account.
    let theirs = m.peer_posts_sighting();
    let (code, r, text) = share(&data, "pull");
    assert_eq!(code, Some(0), "{text}\n{}", m.log());
    assert_eq!(r[0]["upstream"], "hub");
    assert_eq!(
        (r[0]["received"].as_u64(), r[0]["taken"].as_u64()),
        (Some(1), Some(1)),
        "{text}"
    );
    let stored = "SELECT account, sighting_id FROM community_sightings WHERE community = 'isac'";
    assert_eq!(rows(&data, stored), [("upstream:hub".to_owned(), theirs.clone())]);

    // That cleared k: the push delivers exactly the preview's objects, each once.
    let want = preview(&data);
    assert!(
        want.iter().any(|(id, _)| id.starts_with("sighting--")),
        "{want:?}"
    );
    let (code, r, text) = share(&data, "push");
    assert_eq!(code, Some(0), "{text}\n{}", m.log());
    assert_eq!(r[0]["sent"].as_u64(), Some(want.len() as u64), "{text}");
    assert_eq!(r[0]["failed"], json!([]), "{text}");
    let mut held = m.all_versions();
    held.retain(|(id, _)| *id != theirs);
    held.sort();
    assert_eq!(
        held, want,
        "medallion holds each pushed object version once, and nothing else"
    );
    for (id, version) in &want {
        assert_eq!(m.versions_of(id).len(), 1, "{id} {version}");
    }
    let pushed = "SELECT object_id, version FROM pushed WHERE community = 'isac' AND upstream = 'hub'";
    assert_eq!(rows(&data, pushed), want);

    // A second push sends nothing.
    let (code, r, text) = share(&data, "push");
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(r[0]["sent"].as_u64(), Some(0), "{text}");
    assert_eq!(r[0]["unchanged"].as_u64(), Some(want.len() as u64), "{text}");

    // Our own sighting comes back on the next pull and is not taken as another organisation's.
    let (code, r, text) = share(&data, "pull");
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        (
            r[0]["received"].as_u64(),
            r[0]["own"].as_u64(),
            r[0]["taken"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{text}"
    );
    assert_eq!(rows(&data, stored), [("upstream:hub".to_owned(), theirs.clone())]);
    // And the bookmark means nothing new after that.
    let (code, r, text) = share(&data, "pull");
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(r[0]["received"].as_u64(), Some(0), "{text}");
    let bookmark = "SELECT upstream, added_after FROM upstream_bookmarks WHERE community = 'isac'";
    assert_eq!(rows(&data, bookmark).len(), 1);
    // The password never shows.
    assert!(!text.contains(US.1));
}

#[test]
fn a_lost_answer_to_a_post_is_followed_by_a_question_not_by_a_duplicate() {
    let m = Medallion::start();
    let proxy = Proxy::start(m.addr());
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), &format!("127.0.0.1:{}", proxy.port));
    m.peer_posts_sighting();
    let (code, _, text) = share(&data, "pull");
    assert_eq!(code, Some(0), "{text}");
    let want = preview(&data);
    assert!(!want.is_empty());

    let started = Instant::now();
    let (code, r, text) = share(&data, "push");
    assert_eq!(code, Some(0), "{text}\n{}", m.log());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The POST's answer was lost: the push retried, asked which objects had arrived, found them
    // all, and sent none of them again.
    assert!(r[0]["retries"].as_u64().unwrap() >= 1, "{text}");
    assert_eq!(r[0]["sent"].as_u64(), Some(want.len() as u64), "{text}");
    let posts = proxy.posts();
    assert_eq!(posts.len(), 1, "one POST, no resend: {posts:?}");
    let asked = proxy
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(method, path, _)| method == "GET" && path.contains("/manifest/"))
        .count();
    assert!(asked >= 2, "asked before the POST and after losing its answer");
    let mut held = m.all_versions();
    held.retain(|(id, _)| !id.starts_with("sighting--6b0e3856"));
    held.sort();
    assert_eq!(held, want, "each object version once in medallion");
    let pushed = "SELECT object_id, version FROM pushed WHERE community = 'isac' AND upstream = 'hub'";
    assert_eq!(rows(&data, pushed), want);
    // Nothing left to do.
    let (code, r, text) = share(&data, "push");
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(r[0]["sent"].as_u64(), Some(0), "{text}");
    assert_eq!(proxy.posts().len(), 1);
}

#[test]
fn an_unreachable_or_misconfigured_upstream_is_named_with_exit_2() {
    let m = Medallion::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), &m.addr());
    // Another organisation's sighting clears k, so there is something to push.
    m.peer_posts_sighting();
    let (code, _, text) = share(&data, "pull");
    assert_eq!(code, Some(0), "{text}");
    // Then the upstream is gone: nothing listens on its port any more.
    let gone = free_port();
    let cfg = fs::read_to_string(data.join("picket.toml")).unwrap();
    let moved = cfg.replace(&m.addr(), &format!("127.0.0.1:{gone}"));
    fs::write(data.join("picket.toml"), &moved).unwrap();
    for verb in ["push", "pull"] {
        let (code, r, text) = share(&data, verb);
        assert_eq!(code, Some(2), "{verb}: {text}");
        assert!(r[0]["error"].is_string(), "{verb}: {text}");
        assert!(r[0]["retries"].as_u64().unwrap() >= 1, "{verb}: {text}");
        assert!(
            text.contains("upstream hub") && text.contains(&format!("127.0.0.1:{gone}/{API_ROOT}/")),
            "{verb}: {text}"
        );
    }
    // Nothing was recorded as pushed, so the next push offers it all again.
    let pushed = "SELECT object_id, version FROM pushed WHERE community = 'isac'";
    assert!(rows(&data, pushed).is_empty());
    // A setting the client would refuse stops the command, naming the upstream and picket.toml.
    fs::write(
        data.join("picket.toml"),
        moved.replace(&format!("http://127.0.0.1:{gone}"), "http://192.0.2.7"),
    )
    .unwrap();
    let (code, _, text) = share(&data, "push");
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("picket.toml") && text.contains("[[community.upstream]] \"hub\""),
        "{text}"
    );
    assert!(text.contains("plain http to another host"), "{text}");
}
