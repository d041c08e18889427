//! The TAXII 2.1 server from outside: started in-process on 127.0.0.1:0 over real TLS (trusting
//! DIR/tls/ca.pem), with a community whose share policy lets objects out. `taxii2-client`
//! (PyPI, unmodified) discovers, lists collections, pages with a small limit, uses
//! `added_after`, posts a bundle to a `contributions` collection and polls its status; raw
//! HTTPS requests check the specification's points: 406, 401 with `WWW-Authenticate`, 403, 404,
//! 413, 415, 400, the `X-TAXII-Date-Added-*` headers, a `next` token that serves only the member
//! it was issued to, an identical object posted twice, a status shown only to its poster. A
//! restart keeps `date_added`, and failed logins from one address end in 429 without PBKDF2.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use picket_collector::datadir::DataDir;
use picket_collector::share::OrgSighting;
use picket_collector::taxii_server::{api, hash_password, Server, Source};
use rustls::pki_types::ServerName;
use serde_json::Value;

mod common;
use common::{b64, ingest_file, python, record_sighting, taxii_client_config};

const H: i64 = 3600;
const NOW: i64 = 1_750_000_000;

/// A data directory with communities `isac` and `other` (k = 2), two indicators from a plain
/// list with sightings from this organisation's agents, and members: alice reads isac, bob
/// reads other, carol reads both, wanda only contributes to isac, zoe reads and contributes to
/// isac, and slow (reads isac) has a password hash that would take PBKDF2 minutes to check.
fn data_dir(tmp: &Path) -> (PathBuf, Vec<String>) {
    let data = tmp.join("data");
    // The TLS certificates are made for the real clock: the clients check them against it.
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    DataDir::init(&data, "Server Org", Some(&tmp.join("root.key")), wall).unwrap();
    let mut cfg = fs::read_to_string(data.join("picket.toml")).unwrap();
    cfg.push_str(
        "\n[[community]]\nname = \"isac\"\nk = 2\ntlp_ceiling = \"amber\"\ndisclosure = \"organisation\"\n",
    );
    cfg.push_str("\n[[community]]\nname = \"other\"\nk = 2\n");
    for (name, pw, comms, contribute) in [
        ("alice", "alice-pw", "[\"isac\"]", "[]"),
        ("bob", "bob-pw", "[\"other\"]", "[]"),
        ("carol", "carol-pw", "[\"isac\", \"other\"]", "[]"),
        ("wanda", "wanda-pw", "[]", "[\"isac\"]"),
        ("zoe", "zoe-pw", "[\"isac\"]", "[\"isac\"]"),
    ] {
        cfg.push_str(&format!(
            "\n[[taxii.member]]\nname = \"{name}\"\npassword_hash = \"{}\"\ncommunities = {comms}\n\
             contribute = {contribute}\n",
            hash_password(pw, 1000).unwrap()
        ));
    }
    // 50 million iterations: checking any password against this takes minutes.
    cfg.push_str(&format!(
        "\n[[taxii.member]]\nname = \"slow\"\npassword_hash = \"pbkdf2-sha256$50000000${}${}\"\n\
         communities = [\"isac\"]\n",
        "00".repeat(16),
        "00".repeat(32)
    ));
    fs::write(data.join("picket.toml"), cfg).unwrap();
    let list = tmp.join("iocs.txt");
    fs::write(
        &list,
        "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f\n\
         3395856ce81f2b7382dee72602f798b642f14140\n",
    )
    .unwrap();
    let ids = ingest_file(&data, &list, "iocs.txt", NOW - 50 * H);
    for id in &ids {
        record_sighting(&data, "agent-1", id, "~/x/y.exe", NOW - 30 * H, NOW - 20 * H);
    }
    (data, ids)
}

/// Starts the server with one other organisation's sightings of every indicator, so k = 2 is
/// met and the policy lets objects out.
fn start(data: &Path, ids: &[String]) -> Server {
    let mut others = BTreeMap::new();
    for id in ids {
        others.insert(
            id.clone(),
            vec![OrgSighting {
                org: "peer-a".into(),
                count: 1,
            }],
        );
    }
    let owned = data.to_owned();
    let source: Source = Arc::new(move |c: &str, now: i64| {
        let dir = DataDir::open(&owned)?;
        Ok(picket_collector::share::preview_with(&dir, c, &others, now)?.bundle)
    });
    let dir = DataDir::open(data).unwrap();
    Server::start_with(&dir, "127.0.0.1:0".parse().unwrap(), source).unwrap()
}

struct Reply {
    status: u16,
    head: String,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// One GET over real TLS, trusting the data directory's CA.
fn get(data: &Path, addr: SocketAddr, path: &str, auth: Option<(&str, &str)>, accept: Option<&str>) -> Reply {
    request(data, addr, "GET", path, auth, accept, None)
}

/// One request over real TLS; `body` is a Content-Type and a body.
fn request(
    data: &Path,
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    accept: Option<&str>,
    body: Option<(&str, &str)>,
) -> Reply {
    let mut tls = connect(data, addr);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
        addr.port()
    );
    if let Some((u, p)) = auth {
        req.push_str(&format!("Authorization: Basic {}\r\n", b64(&format!("{u}:{p}"))));
    }
    if let Some(a) = accept {
        req.push_str(&format!("Accept: {a}\r\n"));
    }
    if let Some((kind, b)) = body {
        req.push_str(&format!(
            "Content-Type: {kind}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some((_, b)) = body {
        req.push_str(b);
    }
    tls.write_all(req.as_bytes()).unwrap();
    read_reply(&mut tls)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Reads a response to the end of the connection.
fn read_reply(tls: &mut Tls) -> Reply {
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head: head.to_owned(),
        body: serde_json::from_str(body).unwrap(),
    }
}

/// A TLS connection to the server, trusting the data directory's CA.
fn connect(data: &Path, addr: SocketAddr) -> Tls {
    let conn = rustls::ClientConnection::new(
        Arc::new(taxii_client_config(data)),
        ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Runs `script` in the test Python, where `taxii2-client` is installed, with the arguments
/// the server's discovery URL on `port`, the data directory's CA file and `extra`; fails the
/// test unless it succeeds, and returns the JSON it prints.
fn taxii2_client(script: &str, port: u16, data: &Path, extra: &[String]) -> Value {
    // requests lets these override the `verify` the client is given: the test trusts only
    // the data directory's CA.
    let out = Command::new(python())
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .arg("-c")
        .arg(script)
        .arg(format!("https://localhost:{port}/taxii2/"))
        .arg(data.join("tls/ca.pem"))
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "taxii2-client failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

const TAXII: Option<&str> = Some("application/taxii+json;version=2.1");

#[test]
fn taxii2_client_discovers_lists_and_pages_through_the_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, ids) = data_dir(tmp.path());
    let server = start(&data, &ids);
    let port = server.local_addr().port();
    let script = r#"
import sys, json
from taxii2client.v21 import Server, as_pages
url, ca = sys.argv[1], sys.argv[2]
s = Server(url, user="carol", password="carol-pw", verify=ca)
roots = sorted(r.title for r in s.api_roots)
root = [r for r in s.api_roots if r.url.rstrip("/").endswith("/isac")][0]
cols = root.collections
assert len(cols) == 1, cols
col = cols[0]
assert col.title == "sightings" and col.can_read and not col.can_write, col
pages = []
for env in as_pages(col.get_objects, per_request=1):
    pages.append([o["id"] for o in env.get("objects", [])])
ids = [i for p in pages for i in p]
whole = col.get_objects()
last = whole.get("objects", [])
after = col.get_objects(added_after="2000-01-01T00:00:00.000Z")
manifest = col.get_manifest()
print(json.dumps({"roots": roots, "pages": pages, "ids": ids, "whole": [o["id"] for o in last],
                  "after": len(after.get("objects", [])),
                  "manifest": len(manifest.get("objects", []))}))
"#;
    let r = taxii2_client(script, port, &data, &[]);
    assert_eq!(r["roots"], serde_json::json!(["isac", "other"]));
    let whole: Vec<&str> = r["whole"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(whole.len() >= 3, "{r}");
    assert!(whole.iter().any(|i| i.starts_with("sighting--")), "{r}");
    // Paged one by one, the same objects, each once, in one page each.
    let pages = r["pages"].as_array().unwrap();
    assert_eq!(pages.len(), whole.len(), "{r}");
    let mut paged: Vec<&str> = r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut all = whole.clone();
    paged.sort();
    all.sort();
    assert_eq!(paged, all);
    assert_eq!(r["after"].as_u64().unwrap() as usize, whole.len());
    assert_eq!(r["manifest"].as_u64().unwrap() as usize, whole.len());
    server.stop();
}

#[test]
fn the_specification_points_over_raw_https() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, ids) = data_dir(tmp.path());
    let server = start(&data, &ids);
    let addr = server.local_addr();
    let col = api::collection_id("isac");
    let objects = format!("/isac/collections/{col}/objects/");

    // No credentials, or wrong ones: 401 with the Basic challenge, even on discovery.
    for auth in [None, Some(("alice", "wrong")), Some(("mallory", "alice-pw"))] {
        for path in ["/taxii2/", objects.as_str()] {
            let r = get(&data, addr, path, auth, TAXII);
            assert_eq!(r.status, 401, "{path} {auth:?}: {}", r.head);
            assert!(
                r.header("WWW-Authenticate").unwrap().starts_with("Basic realm="),
                "{}",
                r.head
            );
            assert_eq!(r.body["http_status"], "401");
            assert!(r
                .header("Content-Type")
                .unwrap()
                .starts_with("application/taxii+json"));
        }
    }
    let alice = Some(("alice", "alice-pw"));
    // Discovery lists only what the member may read.
    let r = get(&data, addr, "/taxii2/", alice, TAXII);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["api_roots"],
        serde_json::json!([format!("https://127.0.0.1:{}/isac/", addr.port())])
    );
    assert_eq!(
        r.header("Content-Type").unwrap(),
        "application/taxii+json;version=2.1"
    );
    // Wrong media type: 406.
    for accept in [
        "application/json",
        "application/taxii+json;version=2.0",
        "text/html",
    ] {
        let r = get(&data, addr, &objects, alice, Some(accept));
        assert_eq!(r.status, 406, "{accept}: {}", r.head);
        assert_eq!(r.body["http_status"], "406");
    }
    // Another community's root: 403; no such root, collection or object: 404.
    let r = get(&data, addr, "/other/collections/", alice, TAXII);
    assert_eq!(r.status, 403, "{}", r.head);
    for path in [
        "/nope/".to_owned(),
        "/isac/collections/not-a-collection/objects/".to_owned(),
        format!("{objects}indicator--00000000-0000-4000-8000-000000000000/"),
        "/isac/nothing/".to_owned(),
    ] {
        let r = get(&data, addr, &path, alice, TAXII);
        assert_eq!(r.status, 404, "{path}: {}", r.head);
    }
    // Bad filters: 400 naming the parameter.
    let r = get(&data, addr, &format!("{objects}?limit=zero"), alice, TAXII);
    assert_eq!(r.status, 400);
    assert!(r.body["description"].as_str().unwrap().contains("limit"));

    // The whole collection, with its date headers.
    let all = get(&data, addr, &objects, alice, TAXII);
    assert_eq!(all.status, 200);
    let objs = all.body["objects"].as_array().unwrap().clone();
    assert!(objs.len() >= 3);
    assert_eq!(all.body["more"], false);
    let first = all.header("X-TAXII-Date-Added-First").unwrap();
    let last = all.header("X-TAXII-Date-Added-Last").unwrap();
    assert!(first < last, "{first} {last}");
    // added_after the last one: nothing; after the first: all but the first.
    let r = get(
        &data,
        addr,
        &format!("{objects}?added_after={last}"),
        alice,
        TAXII,
    );
    assert!(r.body.get("objects").is_none(), "{}", r.body);
    assert!(r.header("X-TAXII-Date-Added-First").is_none());
    let r = get(
        &data,
        addr,
        &format!("{objects}?added_after={first}"),
        alice,
        TAXII,
    );
    assert_eq!(r.body["objects"].as_array().unwrap().len(), objs.len() - 1);
    // match[type], match[id], a single object, its versions, the manifest.
    let r = get(
        &data,
        addr,
        &format!("{objects}?match[type]=sighting"),
        alice,
        TAXII,
    );
    let sightings = r.body["objects"].as_array().unwrap();
    assert!(!sightings.is_empty() && sightings.iter().all(|o| o["type"] == "sighting"));
    let sid = sightings[0]["id"].as_str().unwrap();
    let r = get(
        &data,
        addr,
        &format!("{objects}?match%5Bid%5D={sid}"),
        alice,
        TAXII,
    );
    assert_eq!(r.body["objects"].as_array().unwrap().len(), 1);
    let r = get(&data, addr, &format!("{objects}{sid}/"), alice, TAXII);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["objects"][0]["id"], sid);
    let r = get(&data, addr, &format!("{objects}{sid}/versions/"), alice, TAXII);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["versions"][0], sightings[0]["modified"]);
    let r = get(
        &data,
        addr,
        &format!("/isac/collections/{col}/manifest/"),
        alice,
        TAXII,
    );
    assert_eq!(r.body["objects"].as_array().unwrap().len(), objs.len());
    assert!(r.header("X-TAXII-Date-Added-Last").is_some());

    // Paging: limit 1 gives more and next; the token serves alice only.
    let r = get(&data, addr, &format!("{objects}?limit=1"), alice, TAXII);
    assert_eq!(r.body["more"], true);
    assert_eq!(r.body["objects"].as_array().unwrap().len(), 1);
    let next = r.body["next"].as_str().unwrap().to_owned();
    let carol = Some(("carol", "carol-pw"));
    let r = get(&data, addr, &format!("{objects}?next={next}"), carol, TAXII);
    assert_eq!(r.status, 403, "another member's next token: {}", r.head);
    let bob = Some(("bob", "bob-pw"));
    let r = get(&data, addr, &format!("{objects}?next={next}"), bob, TAXII);
    assert_eq!(r.status, 403, "{}", r.head);
    let mut seen = 1;
    let mut next = Some(next);
    while let Some(n) = next {
        let r = get(&data, addr, &format!("{objects}?next={n}"), alice, TAXII);
        assert_eq!(r.status, 200, "{}", r.body);
        seen += r.body["objects"].as_array().unwrap().len();
        next = r.body["next"].as_str().map(str::to_owned);
        assert_eq!(r.body["more"], next.is_some());
    }
    assert_eq!(seen, objs.len());
    // POST to `sightings`: 403 whatever the Content-Type (403 comes before 415), the
    // collection being read-only; without credentials, 401 as for a GET.
    let envelope = r#"{"objects": []}"#;
    let post = |auth, kind| request(&data, addr, "POST", &objects, auth, TAXII, Some((kind, envelope)));
    let r = post(alice, "application/json");
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post(alice, "application/taxii+json;version=2.1");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(post(None, "application/taxii+json;version=2.1").status, 401);
    // A used token is gone.
    let r = get(&data, addr, &format!("{objects}?next=0123"), alice, TAXII);
    assert_eq!(r.status, 400);
    server.stop();
}

/// Kills the `serve` it holds when dropped, so a failing test leaves nothing running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn member_add_then_serve_http_lets_the_new_member_in() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = data_dir(tmp.path());
    let pw = tmp.path().join("pw.txt");
    fs::write(&pw, "dave's secret\n").unwrap();
    let add_with = |name: &str, flags: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_picket-collector"))
            .args(["member", "add", "--data"])
            .arg(&data)
            .args(flags)
            .args(["--name", name, "--password-file"])
            .arg(&pw)
            .output()
            .unwrap()
    };
    let add = |name: &str, community: &str| add_with(name, &["--community", community]);
    let out = add("dave", "other");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A member that only contributes, with its sector.
    let out = add_with(
        "frank",
        &["--contribute", "isac", "--sector", "financial-services"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let toml = fs::read_to_string(data.join("picket.toml")).unwrap();
    assert!(!toml.contains("dave's secret"), "the password itself was stored");
    let cfg = DataDir::open(&data).unwrap().config().clone();
    let frank = cfg.taxii.members.iter().find(|m| m.name == "frank").unwrap();
    assert_eq!(frank.contribute, vec!["isac".to_owned()]);
    assert!(frank.communities.is_empty());
    assert_eq!(frank.sector.as_deref(), Some("financial-services"));
    // A second dave, a community that does not exist (to read or to contribute to), a bad
    // sector, or no community at all: refused, the file unchanged.
    for (name, flags, why) in [
        ("dave", &["--community", "other"][..], "already"),
        ("erin", &["--community", "nope"][..], "\"nope\""),
        ("erin", &["--contribute", "nope"][..], "\"nope\""),
        (
            "erin",
            &["--contribute", "isac", "--sector", "Banks & Co"][..],
            "sector",
        ),
        ("erin", &[][..], "--community"),
    ] {
        let out = add_with(name, flags);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(why), "{out:?}");
    }
    assert_eq!(fs::read_to_string(data.join("picket.toml")).unwrap(), toml);

    // serve refuses while the root key is readable: it goes offline first.
    fs::remove_file(tmp.path().join("root.key")).unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_picket-collector"))
            .args(["serve", "--data"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut addr = None;
    let mut lines = stdout.lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("picket-collector: TAXII 2.1 server listening on https://") {
            addr = Some(rest.trim_end_matches("/taxii2/").parse::<SocketAddr>().unwrap());
            break;
        }
    }
    // serve goes on printing: its output is read to the end, so it never writes to a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let addr = addr.expect("serve printed no TAXII address");
    let r = get(&data, addr, "/taxii2/", Some(("dave", "dave's secret")), TAXII);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["api_roots"],
        serde_json::json!([format!("https://127.0.0.1:{}/other/", addr.port())])
    );
    let r = get(&data, addr, "/taxii2/", Some(("dave", "wrong")), TAXII);
    assert_eq!(r.status, 401);
    // Nothing has cleared k = 2 in the real share policy: the collection is empty, not an error.
    let col = api::collection_id("other");
    let r = get(
        &data,
        addr,
        &format!("/other/collections/{col}/objects/"),
        Some(("dave", "dave's secret")),
        TAXII,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["more"], false);
    assert!(r.body.get("objects").is_none());
    // frank, added to contribute to isac, finds it and posts to it through the real serve.
    let frank = Some(("frank", "dave's secret"));
    let r = get(&data, addr, "/taxii2/", frank, TAXII);
    assert_eq!(
        r.body["api_roots"],
        serde_json::json!([format!("https://127.0.0.1:{}/isac/", addr.port())])
    );
    let body = serde_json::json!({
        "objects": [sighting("sighting--7d8e9f0a-1b2c-4d3e-8f4a-5b6c7d8e9f0a", "indicator--11111111-1111-4111-8111-111111111111")]
    });
    let r = request(
        &data,
        addr,
        "POST",
        &format!("/isac/collections/{}/objects/", api::contributions_id("isac")),
        frank,
        TAXII,
        Some((TAXII_TYPE, &body.to_string())),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["success_count"], 1, "{}", r.body);
}

/// A sighting of `indicator` as a member would post it.
fn sighting(id: &str, indicator: &str) -> Value {
    serde_json::json!({
        "type": "sighting",
        "spec_version": "2.1",
        "id": id,
        "created": "2025-06-01T10:00:00.000Z",
        "modified": "2025-06-01T10:00:00.000Z",
        "sighting_of_ref": indicator,
        "count": 3,
        "first_seen": "2025-06-01T08:00:00.000Z",
        "last_seen": "2025-06-01T09:00:00.000Z",
    })
}

const TAXII_TYPE: &str = "application/taxii+json;version=2.1";

#[test]
fn taxii2_client_posts_a_bundle_and_polls_its_status() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, ids) = data_dir(tmp.path());
    let server = start(&data, &ids);
    let port = server.local_addr().port();
    let bundle = serde_json::json!({
        "type": "bundle",
        "id": "bundle--6f3c4a1e-8c0b-4f0e-9d7a-1b2c3d4e5f60",
        "objects": [
            sighting("sighting--0c8e2f4a-3b1d-4e6f-8a9b-7c6d5e4f3a21", &ids[0]),
            {"type": "sighting", "spec_version": "2.1", "modified": "2025-06-01T10:00:00.000Z"},
        ],
    });
    let script = r#"
import sys, json
import requests
from taxii2client.v21 import Server, Status
url, ca, bundle = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
s = Server(url, user="wanda", password="wanda-pw", verify=ca)
roots = [r.url for r in s.api_roots]
root = s.api_roots[0]
cols = root.collections
col = cols[0]
seen = {"roots": roots, "max": root.max_content_length,
        "cols": [[c.title, c.can_read, c.can_write] for c in cols]}
st = col.add_objects(bundle, wait_for_completion=False)
seen["first"] = st.status
st.refresh()
st.wait_until_final(poll_interval=0.1, timeout=10)
seen["status"] = {"id": st.id, "status": st.status, "total": st.total_count,
                  "success": st.success_count, "failure": st.failure_count,
                  "pending": st.pending_count, "successes": st.successes,
                  "failures": st.failures, "url": st.url}
again = Status(st.url, user="wanda", password="wanda-pw", verify=ca)
seen["again"] = [again.id, again.status, again.success_count]
try:
    Status(st.url, user="zoe", password="zoe-pw", verify=ca)
    seen["zoe"] = 200
except requests.exceptions.HTTPError as e:
    seen["zoe"] = e.response.status_code
print(json.dumps(seen))
"#;
    let r = taxii2_client(script, port, &data, &[bundle.to_string()]);
    // wanda may only write isac: one API root, one collection, write-only.
    assert_eq!(
        r["roots"],
        serde_json::json!([format!("https://localhost:{port}/isac/")])
    );
    assert_eq!(r["max"], 1024 * 1024);
    assert_eq!(r["cols"], serde_json::json!([["contributions", false, true]]));
    assert_eq!(r["first"], "complete");
    let st = &r["status"];
    assert_eq!(st["status"], "complete", "{r}");
    assert_eq!(
        (&st["total"], &st["success"], &st["failure"], &st["pending"]),
        (
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(0)
        ),
        "{r}"
    );
    assert_eq!(
        st["successes"][0]["id"],
        "sighting--0c8e2f4a-3b1d-4e6f-8a9b-7c6d5e4f3a21"
    );
    assert_eq!(st["successes"][0]["version"], "2025-06-01T10:00:00.000Z");
    assert!(
        st["failures"][0]["message"].as_str().unwrap().contains("id"),
        "{r}"
    );
    assert!(st["url"].as_str().unwrap().contains("/isac/status/"), "{r}");
    assert_eq!(r["again"], serde_json::json!([st["id"], "complete", 1]));
    // Another member of the same community does not see it.
    assert_eq!(r["zoe"], 404, "{r}");
    server.stop();
}

#[test]
fn posting_contributions_over_raw_https() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, ids) = data_dir(tmp.path());
    let server = start(&data, &ids);
    let addr = server.local_addr();
    let contributions = format!("/isac/collections/{}/objects/", api::contributions_id("isac"));
    let sightings = format!("/isac/collections/{}/objects/", api::collection_id("isac"));
    let (wanda, zoe, alice) = (
        Some(("wanda", "wanda-pw")),
        Some(("zoe", "zoe-pw")),
        Some(("alice", "alice-pw")),
    );
    let post = |path: &str, auth, accept, kind: &str, body: &str| {
        request(&data, addr, "POST", path, auth, accept, Some((kind, body)))
    };
    let one = serde_json::json!({
        "objects": [sighting("sighting--5b6a7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d", &ids[0])]
    })
    .to_string();

    // An identical object posted twice: 202 with a success both times.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = post(&contributions, wanda, TAXII, TAXII_TYPE, &one);
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(
            r.header("Content-Type").unwrap(),
            "application/taxii+json;version=2.1"
        );
        assert_eq!(r.body["status"], "complete");
        assert_eq!(
            (
                &r.body["total_count"],
                &r.body["success_count"],
                &r.body["failure_count"]
            ),
            (
                &serde_json::json!(1),
                &serde_json::json!(1),
                &serde_json::json!(0)
            ),
            "{}",
            r.body
        );
        assert_eq!(
            r.body["successes"][0]["id"],
            "sighting--5b6a7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"
        );
        assert!(r.body.get("failures").is_none(), "{}", r.body);
        assert!(api::parse_timestamp(r.body["request_timestamp"].as_str().unwrap()).is_some());
        statuses.push(r.body);
    }
    assert_ne!(statuses[0]["id"], statuses[1]["id"]);
    // The status, to its poster only: zoe (same community) 404, bob (not in it) 403.
    let status = format!("/isac/status/{}/", statuses[0]["id"].as_str().unwrap());
    let r = get(&data, addr, &status, wanda, TAXII);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, statuses[0]);
    assert_eq!(get(&data, addr, &status, zoe, TAXII).status, 404);
    assert_eq!(
        get(&data, addr, &status, Some(("bob", "bob-pw")), TAXII).status,
        403
    );
    assert_eq!(
        get(
            &data,
            addr,
            "/isac/status/00000000-0000-4000-8000-000000000000/",
            wanda,
            TAXII
        )
        .status,
        404
    );
    // Objects without an id or a type fail alone.
    let mixed =
        r#"{"objects": [{"type": "sighting"}, {"id": "sighting--5b6a7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8e"}, 7]}"#;
    let r = post(&contributions, wanda, TAXII, TAXII_TYPE, mixed);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["failure_count"], 3, "{}", r.body);
    assert_eq!(r.body["success_count"], 0);
    assert_eq!(r.body["failures"].as_array().unwrap().len(), 3);

    // 415, 413, 400.
    let r = post(&contributions, wanda, TAXII, "application/json", &one);
    assert_eq!(r.status, 415, "{}", r.body);
    let r = post(
        &contributions,
        wanda,
        TAXII,
        "application/stix+json;version=2.1",
        &one,
    );
    assert_eq!(r.status, 415, "{}", r.body);
    let big = format!(r#"{{"objects": [], "padding": "{}"}}"#, "x".repeat(1024 * 1024));
    let r = post(&contributions, wanda, TAXII, TAXII_TYPE, &big);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body["description"].as_str().unwrap().contains("1048576"));
    for body in ["not json", r#"{"objects": 5}"#, r#"{"type": "bundle"}"#, "[]", ""] {
        let r = post(&contributions, wanda, TAXII, TAXII_TYPE, body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.body["http_status"], "400");
    }
    // 406 on Accept, 404 for an unknown collection, 401 without credentials.
    let r = post(&contributions, wanda, Some("application/json"), TAXII_TYPE, &one);
    assert_eq!(r.status, 406, "{}", r.body);
    let r = post(
        "/isac/collections/not-a-collection/objects/",
        wanda,
        TAXII,
        TAXII_TYPE,
        &one,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = post(&contributions, None, TAXII, TAXII_TYPE, &one);
    assert_eq!(r.status, 401);
    assert!(r.header("WWW-Authenticate").is_some());
    // Writing to `sightings` (even for a member that contributes): 403; a read-only member
    // posting to `contributions`: 403.
    let r = post(&sightings, zoe, TAXII, TAXII_TYPE, &one);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post(&contributions, alice, TAXII, TAXII_TYPE, &one);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post(
        &contributions.replace("isac", "other"),
        wanda,
        TAXII,
        TAXII_TYPE,
        &one,
    );
    assert_eq!(r.status, 403, "{}", r.body);

    // A write-only member reads nothing; each member sees can_read and can_write as its own.
    assert_eq!(get(&data, addr, &contributions, wanda, TAXII).status, 403);
    assert_eq!(get(&data, addr, &sightings, wanda, TAXII).status, 403);
    assert_eq!(get(&data, addr, &contributions, zoe, TAXII).status, 403);
    let r = get(&data, addr, "/isac/collections/", zoe, TAXII);
    let cols: Vec<(String, bool, bool)> = r.body["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["title"].as_str().unwrap().to_owned(),
                c["can_read"].as_bool().unwrap(),
                c["can_write"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cols,
        vec![
            ("sightings".to_owned(), true, false),
            ("contributions".to_owned(), false, true)
        ]
    );
    let r = get(&data, addr, "/isac/collections/", alice, TAXII);
    assert_eq!(r.body["collections"].as_array().unwrap().len(), 1);
    let r = get(&data, addr, "/isac/", wanda, TAXII);
    assert_eq!(r.body["max_content_length"], 1024 * 1024);
    server.stop();
}

#[test]
fn a_restart_keeps_date_added_and_added_after_does_not_serve_old_objects_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, ids) = data_dir(tmp.path());
    let manifest = format!("/isac/collections/{}/manifest/", api::collection_id("isac"));
    let objects = format!("/isac/collections/{}/objects/", api::collection_id("isac"));
    let alice = Some(("alice", "alice-pw"));
    let dates = |r: &Reply| -> BTreeMap<String, String> {
        r.body["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    format!("{} {}", o["id"].as_str().unwrap(), o["version"].as_str().unwrap()),
                    o["date_added"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let server = start(&data, &ids);
    let addr = server.local_addr();
    let before = get(&data, addr, &manifest, alice, TAXII);
    assert_eq!(before.status, 200, "{}", before.body);
    let first = dates(&before);
    assert!(first.len() >= 3, "{}", before.body);
    let last = before.header("X-TAXII-Date-Added-Last").unwrap();
    server.stop();

    let server = start(&data, &ids);
    let addr = server.local_addr();
    let after = get(&data, addr, &manifest, alice, TAXII);
    assert_eq!(dates(&after), first, "date_added changed across a restart");
    assert_eq!(after.header("X-TAXII-Date-Added-Last").unwrap(), last);
    let r = get(
        &data,
        addr,
        &format!("{objects}?added_after={last}"),
        alice,
        TAXII,
    );
    assert_eq!(r.status, 200);
    assert!(
        r.body.get("objects").is_none(),
        "served again as new after a restart: {}",
        r.body
    );
    server.stop();
}

#[test]
fn eleven_bad_passwords_from_one_address_get_429_without_running_pbkdf2() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, ids) = data_dir(tmp.path());
    let server = start(&data, &ids);
    let addr = server.local_addr();
    // carol logs in first: a credential that verified is remembered.
    assert_eq!(
        get(&data, addr, "/taxii2/", Some(("carol", "carol-pw")), TAXII).status,
        200
    );
    for i in 0..10 {
        let r = get(&data, addr, "/taxii2/", Some(("alice", "wrong")), TAXII);
        assert_eq!(r.status, 401, "attempt {i}: {}", r.body);
    }
    // The eleventh, against a hash that would take PBKDF2 minutes: refused at once.
    let t0 = std::time::Instant::now();
    let r = get(&data, addr, "/taxii2/", Some(("slow", "wrong")), TAXII);
    let took = t0.elapsed();
    assert_eq!(r.status, 429, "{}", r.body);
    let wait: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert!(took < Duration::from_secs(2), "the refusal took {took:?}");
    // A right password not yet verified is refused too (it would cost PBKDF2)...
    assert_eq!(
        get(&data, addr, "/taxii2/", Some(("alice", "alice-pw")), TAXII).status,
        429
    );
    // ...but a member whose credential already verified keeps working.
    assert_eq!(
        get(&data, addr, "/taxii2/", Some(("carol", "carol-pw")), TAXII).status,
        200
    );
    // No credentials at all cost nothing and are still told how to authenticate.
    assert_eq!(get(&data, addr, "/taxii2/", None, TAXII).status, 401);
    server.stop();
}

#[test]
fn a_client_that_expects_100_continue_is_asked_for_its_body_only_when_it_would_be_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, ids) = data_dir(tmp.path());
    let server = start(&data, &ids);
    let addr = server.local_addr();
    let path = format!("/isac/collections/{}/objects/", api::contributions_id("isac"));
    let body = serde_json::json!({
        "objects": [sighting("sighting--1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", &ids[0])]
    })
    .to_string();
    let head = |who: &str, length: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {}\r\n\
             Accept: {TAXII_TYPE}\r\nContent-Type: {TAXII_TYPE}\r\nContent-Length: {length}\r\n\
             Expect: 100-continue\r\n\r\n",
            b64(&format!("{who}:{who}-pw"))
        )
    };
    // A member that may post: 100 Continue, then the body, then 202.
    let mut tls = connect(&data, addr);
    tls.write_all(head("wanda", body.len()).as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    tls.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    tls.write_all(body.as_bytes()).unwrap();
    let r = read_reply(&mut tls);
    assert_eq!(r.status, 202, "{}", r.body);
    // One that may not, or a body too large: the final answer at once, no body sent.
    for (who, length, status) in [("alice", body.len(), 403), ("wanda", 2 << 20, 413)] {
        let mut tls = connect(&data, addr);
        tls.write_all(head(who, length).as_bytes()).unwrap();
        let r = read_reply(&mut tls);
        assert_eq!(r.status, status, "{}", r.body);
    }
    server.stop();
}
