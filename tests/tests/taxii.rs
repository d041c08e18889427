//! The TAXII 2.1 client against a real TAXII server: medallion (PyPI), started on loopback with
//! its in-memory backend seeded with indicators this test writes, over plain HTTP and over TLS
//! with a CA made for the test. Objects are added between pulls through the TAXII API by another
//! client (taxii2-client, PyPI). A small canned-response server covers what medallion never does
//! wrong: media types, non-JSON, oversized bodies, redirects, a server that never stops paging.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use picket_collector::ingest::Defaults;
use picket_collector::taxii::{self, Credentials, Limits, TaxiiError, TaxiiSource, Timestamp};
use picket_e2e::{python, s, Child};
use picket_proto::{Severity, Tlp};
use serde_json::{json, Value};

const COLLECTION: &str = "91a7b528-80eb-42ed-a74d-c6fbd5a26116";
const USER: &str = "picket";
const PASSWORD: &str = "correct horse battery staple";
/// Seeded objects: 25, so that pages of 10 make 3 pages.
const SEEDED: usize = 25;

/// The seeded indicator `i`: a SHA-256 file hash for even `i`, an IPv4 address for odd.
fn seeded_indicator(i: usize) -> Value {
    let pattern = if i.is_multiple_of(2) {
        format!("[file:hashes.'SHA-256' = '{:064x}']", 0xabc0_0000 + i)
    } else {
        format!("[ipv4-addr:value = '198.51.100.{i}']")
    };
    indicator(&seeded_id(i), &pattern, "2024-01-01T00:00:00.000Z")
}

fn seeded_id(i: usize) -> String {
    format!("indicator--00000000-0000-4000-8000-{i:012}")
}

fn indicator(id: &str, pattern: &str, created: &str) -> Value {
    json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": id,
        "created": created,
        "modified": created,
        "name": format!("test indicator {id}"),
        "indicator_types": ["malicious-activity"],
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": "2024-01-01T00:00:00Z"
    })
}

/// When medallion says the seeded indicator `i` was added: one second apart, in 2024, so that
/// everything posted by the test is later.
fn seeded_date_added(i: usize) -> String {
    format!("2024-01-01T00:00:{i:02}.000000Z")
}

/// A medallion server on a free loopback port, killed when dropped.
struct Medallion {
    _child: Child,
    dir: tempfile::TempDir,
    port: u16,
    tls: bool,
}

impl Medallion {
    fn start() -> Medallion {
        Medallion::start_with(None)
    }

    /// Starts medallion, over TLS with `cert_and_key` if given, and waits (bounded) until it
    /// answers. Retries on another port if the one picked was taken in the meantime.
    fn start_with(cert_and_key: Option<(&Path, &Path)>) -> Medallion {
        let dir = tempfile::tempdir().unwrap();
        for _attempt in 0..3 {
            let port = free_port();
            let scheme = if cert_and_key.is_some() { "https" } else { "http" };
            let base = format!("{scheme}://127.0.0.1:{port}");
            write_config(dir.path(), &base);
            let log = fs::File::create(dir.path().join("medallion.log")).unwrap();
            let mut cmd = Command::new(python());
            match cert_and_key {
                // medallion's own command line: `medallion --host --port CONFIG`.
                None => cmd.args([
                    "-c",
                    "import sys; from medallion.scripts.run import main; sys.exit(main())",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    s(&dir.path().join("medallion.json")),
                ]),
                // The command line has no TLS option; this is what `main` does, plus a certificate.
                Some((cert, key)) => cmd.args([
                    "-c",
                    TLS_LAUNCHER,
                    s(&dir.path().join("medallion.json")),
                    &port.to_string(),
                    s(cert),
                    s(key),
                ]),
            };
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut child = Child(child);
            if wait_until_listening(&mut child, port, Duration::from_secs(30)) {
                return Medallion {
                    _child: child,
                    dir,
                    port,
                    tls: cert_and_key.is_some(),
                };
            }
        }
        panic!(
            "medallion did not start; its log:\n{}",
            fs::read_to_string(dir.path().join("medallion.log")).unwrap_or_default()
        );
    }

    fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn api_root(&self) -> String {
        format!("{}/api1/", self.base())
    }

    fn collection_url(&self) -> String {
        format!("{}collections/{COLLECTION}/", self.api_root())
    }

    /// A source for the seeded collection with the right credentials and pages of 10.
    fn source(&self) -> TaxiiSource {
        TaxiiSource {
            credentials: Some(Credentials {
                username: USER.into(),
                password: PASSWORD.into(),
            }),
            limits: Limits {
                page_size: 10,
                request_timeout: Duration::from_secs(20),
                ..Limits::default()
            },
            ..TaxiiSource::new(self.api_root(), COLLECTION)
        }
    }

    /// Adds `objects` through the TAXII API (POST objects, as taxii2-client sends it).
    fn add(&self, objects: &[Value]) {
        let bundle = json!({
            "type": "bundle",
            "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
            "objects": objects,
        });
        let out = run_bounded(
            Command::new(python()).args(["-c", POST_OBJECTS, &self.collection_url(), USER, PASSWORD]),
            bundle.to_string().as_bytes(),
            Duration::from_secs(60),
        );
        let status: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(status["status"], "complete", "{out}");
        assert_eq!(status["success_count"], objects.len(), "{out}");
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("medallion.log")).unwrap_or_default()
    }
}

/// medallion's `main`, with an ssl_context. Arguments: config, port, certificate, key.
const TLS_LAUNCHER: &str = "
import json, sys
from medallion import application_instance, register_blueprints, set_config
conf, port, cert, key = sys.argv[1:5]
with open(conf) as f:
    configuration = json.load(f)
for part in ('users', 'taxii', 'backend'):
    set_config(application_instance, part, configuration)
register_blueprints(application_instance)
application_instance.run(host='127.0.0.1', port=int(port), ssl_context=(cert, key))
";

/// taxii2-client adds the bundle on stdin to a collection. Arguments: collection URL, user,
/// password. Prints the status resource's counts as JSON.
const POST_OBJECTS: &str = "
import json, sys
from taxii2client.v21 import Collection
collection = Collection(sys.argv[1], user=sys.argv[2], password=sys.argv[3])
status = collection.add_objects(sys.stdin.read())
print(json.dumps({'status': status.status, 'success_count': status.success_count,
                  'failure_count': status.failure_count}))
";

/// medallion's configuration: users for HTTP Basic, page size, and the memory backend seeded
/// from a data file with the discovery resource, one API root and one collection.
fn write_config(dir: &Path, base: &str) {
    let objects: Vec<Value> = (0..SEEDED).map(seeded_indicator).collect();
    let manifest: Vec<Value> = (0..SEEDED)
        .map(|i| {
            json!({
                "id": seeded_id(i),
                "date_added": seeded_date_added(i),
                "version": "2024-01-01T00:00:00.000Z",
                "media_type": "application/stix+json;version=2.1"
            })
        })
        .collect();
    let data = json!({
        "/discovery": {
            "title": "Picket test TAXII server",
            "description": "medallion, seeded by tests/tests/taxii.rs",
            "default": format!("{base}/api1/"),
            "api_roots": [format!("{base}/api1/")]
        },
        "api1": {
            "information": {
                "title": "Test API root",
                "description": "Indicators for Picket's tests",
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 10_485_760
            },
            "status": [],
            "collections": [{
                "id": COLLECTION,
                "title": "Test indicators",
                "description": "25 seeded indicators",
                "can_read": true,
                "can_write": true,
                "media_types": ["application/stix+json;version=2.1"],
                "objects": objects,
                "manifest": manifest
            }]
        }
    });
    let data_file = dir.join("data.json");
    fs::write(&data_file, data.to_string()).unwrap();
    let mut users = serde_json::Map::new();
    users.insert(USER.to_owned(), PASSWORD.into());
    let config = json!({
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": s(&data_file)
        },
        "users": users,
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

/// Polls until `port` accepts connections; false if the child exits first (a taken port).
fn wait_until_listening(child: &mut Child, port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.0.try_wait().unwrap().is_some() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listened on port {port} within {limit:?}");
}

/// Runs a command with `input` on stdin; panics unless it succeeds within `limit`.
fn run_bounded(cmd: &mut Command, input: &[u8], limit: Duration) -> String {
    let mut child = Child(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    child.0.stdin.take().unwrap().write_all(input).unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{cmd:?} did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{cmd:?} failed: {status}\n{out}\n{err}");
    out
}

fn ids(pulled: &taxii::Pulled) -> Vec<String> {
    pulled
        .objects
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

fn defaults() -> Defaults {
    Defaults {
        source: "medallion".into(),
        tlp: Tlp::Green,
        confidence: 50,
        severity: Severity::Medium,
    }
}

#[test]
fn first_pull_takes_every_page_and_the_next_only_what_was_added_since() {
    let server = Medallion::start();
    let source = server.source();

    let first = taxii::pull_objects(&source, None).unwrap();
    let seeded: Vec<String> = (0..SEEDED).map(seeded_id).collect();
    assert_eq!(ids(&first), seeded, "every object, once, oldest first");
    assert_eq!(first.pages, 3, "25 objects in pages of 10");
    assert_eq!(
        first.bookmark.as_deref(),
        Some(seeded_date_added(SEEDED - 1).as_str())
    );
    assert_eq!(
        Value::Object(first.objects[0].clone()),
        seeded_indicator(0),
        "as the server holds it"
    );

    // The same pull, translated by the STIX parser: one indicator per seeded object.
    let (batch, bookmark) = taxii::pull(&source, None, &defaults()).unwrap();
    assert!(batch.unsupported.is_empty(), "{:?}", batch.unsupported);
    let translated: Vec<&str> = batch.items.iter().map(|i| i.indicator.id.as_str()).collect();
    assert_eq!(translated, seeded, "every seeded indicator, translated");
    assert_eq!(bookmark, first.bookmark);

    // Nothing new: no objects, and the bookmark stays where it was.
    let idle = taxii::pull_objects(&source, first.bookmark.as_deref()).unwrap();
    assert!(idle.objects.is_empty(), "{:?}", ids(&idle));
    assert_eq!(idle.bookmark, first.bookmark);

    // Another client adds 12 indicators through the TAXII API.
    let added: Vec<Value> = (0..12)
        .map(|i| {
            indicator(
                &format!("indicator--11111111-0000-4000-8000-{i:012}"),
                &format!("[ipv4-addr:value = '203.0.113.{i}']"),
                "2024-02-01T00:00:00.000Z",
            )
        })
        .collect();
    server.add(&added);

    let second = taxii::pull_objects(&source, first.bookmark.as_deref()).unwrap();
    let mut got = ids(&second);
    got.sort();
    let mut want: Vec<String> = added
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    want.sort();
    assert_eq!(got, want, "only what was added after the bookmark");
    assert_eq!(second.pages, 2, "12 objects in pages of 10");
    let (old, new) = (first.bookmark.unwrap(), second.bookmark.unwrap());
    assert!(
        Timestamp::parse(&new).unwrap() > Timestamp::parse(&old).unwrap(),
        "the bookmark moved forward: {old} -> {new}"
    );

    let (batch, _) = taxii::pull(&source, Some(&old), &defaults()).unwrap();
    let mut translated: Vec<String> = batch.items.iter().map(|i| i.indicator.id.clone()).collect();
    translated.sort();
    assert_eq!(translated, want, "the new indicators, translated");

    // And after that, nothing again.
    let third = taxii::pull_objects(&source, Some(&new)).unwrap();
    assert!(third.objects.is_empty());
    assert_eq!(third.bookmark.as_deref(), Some(new.as_str()));

    // Page size 1 exercises `next` across many pages of one result set.
    let tiny = TaxiiSource {
        limits: Limits {
            page_size: 1,
            ..source.limits.clone()
        },
        ..source.clone()
    };
    let all = taxii::pull_objects(&tiny, None).unwrap();
    assert_eq!(all.objects.len(), SEEDED + added.len());
    assert_eq!(all.pages as usize, SEEDED + added.len());
    assert_eq!(all.bookmark.as_deref(), Some(new.as_str()));

    // A pull that needs more pages than the source allows stops with a clear error.
    let capped = TaxiiSource {
        limits: Limits {
            max_pages: 2,
            ..source.limits.clone()
        },
        ..source.clone()
    };
    let e = taxii::pull_objects(&capped, None).unwrap_err().to_string();
    assert!(e.contains("still had more objects after 2 pages"), "{e}");

    // An empty pull translates to an empty batch and keeps the bookmark.
    let (batch, bookmark) = taxii::pull(&source, Some(&new), &defaults()).unwrap();
    assert!(batch.items.is_empty() && batch.unsupported.is_empty());
    assert_eq!(bookmark.as_deref(), Some(new.as_str()));
}

#[test]
fn discovery_api_root_and_collections() {
    let server = Medallion::start();
    let client = server.source().client().unwrap();
    let discovery = client.discovery(&format!("{}/taxii2/", server.base())).unwrap();
    assert_eq!(discovery.title, "Picket test TAXII server");
    assert_eq!(discovery.api_roots, vec![server.api_root()]);
    let root_url = taxii::resolve(&format!("{}/taxii2/", server.base()), &discovery.api_roots[0]).unwrap();
    let root = client.api_root(&root_url).unwrap();
    assert_eq!(root.title, "Test API root");
    assert!(root.versions.iter().any(|v| v == taxii::TAXII_MEDIA_TYPE));
    let collections = client.collections(&root_url).unwrap();
    assert_eq!(collections.len(), 1);
    assert_eq!(collections[0].id, COLLECTION);
    assert!(collections[0].can_read);
}

#[test]
fn wrong_or_missing_credentials_are_refused_clearly() {
    let server = Medallion::start();
    let objects_url = format!("{}collections/{COLLECTION}/objects/", server.api_root());

    let wrong = TaxiiSource {
        credentials: Some(Credentials {
            username: USER.into(),
            password: "not the password".into(),
        }),
        ..server.source()
    };
    let e = taxii::pull(&wrong, None, &defaults()).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("the TAXII server refused the credentials for {objects_url} (HTTP 401)")
    );
    assert!(!e.contains("not the password") && !e.contains(USER), "{e}");

    let none = TaxiiSource {
        credentials: None,
        ..server.source()
    };
    let e = taxii::pull_objects(&none, None).unwrap_err();
    assert!(matches!(e, TaxiiError::CredentialsRequired { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("requires credentials (HTTP 401), and the source has none"),
        "{e}"
    );
}

#[test]
fn unknown_collections_and_api_roots_are_named() {
    let server = Medallion::start();
    let unknown = TaxiiSource {
        collection: "no-such-collection".into(),
        ..server.source()
    };
    let e = taxii::pull_objects(&unknown, None).unwrap_err().to_string();
    assert!(
        e.starts_with("TAXII collection no-such-collection not found:")
            && e.contains("/api1/collections/no-such-collection/objects/ answered HTTP 404")
            && e.contains("Collection 'no-such-collection' not found"),
        "{e}"
    );

    let no_root = TaxiiSource {
        api_root: format!("{}/api9/", server.base()),
        ..server.source()
    };
    let e = taxii::pull_objects(&no_root, None).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "TAXII API root not found: {}/api9/ answered HTTP 404",
            server.base()
        )) && e.contains("API root 'api9'"),
        "{e}"
    );
    // medallion logged each refusal; nothing in its log shows the password either.
    assert!(!server.log().contains(PASSWORD));
}

/// A test CA and a certificate for 127.0.0.1 signed by it, made with the openssl command line.
struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let d = |name: &str| dir.path().join(name);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap_or_else(|e| panic!("running openssl (apt-get install openssl): {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        for (ca, subject) in [("ca", "/CN=Picket test CA"), ("other-ca", "/CN=Some other CA")] {
            let (key, pem) = (format!("{ca}.key"), format!("{ca}.pem"));
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", subject]);
            openssl(&args);
        }
        fs::write(
            d("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(&args);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        TestPki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn tls_trusts_the_operators_ca_and_nothing_else() {
    let pki = TestPki::new();
    let server = Medallion::start_with(Some((&pki.path("server.pem"), &pki.path("server.key"))));

    let trusted = TaxiiSource {
        ca_file: Some(pki.path("ca.pem")),
        ..server.source()
    };
    let pulled = taxii::pull_objects(&trusted, None).unwrap();
    assert_eq!(pulled.objects.len(), SEEDED);
    assert_eq!(pulled.pages, 3);

    let other = TaxiiSource {
        ca_file: Some(pki.path("other-ca.pem")),
        ..server.source()
    };
    let e = taxii::pull_objects(&other, None).unwrap_err();
    assert!(matches!(e, TaxiiError::Transport { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("TLS failed: invalid peer certificate: UnknownIssuer"),
        "{e}"
    );

    let none = TaxiiSource {
        ca_file: None,
        ..server.source()
    };
    let e = taxii::pull_objects(&none, None).unwrap_err().to_string();
    assert!(e.contains("needs a CA file"), "{e}");
}

/// A server that answers each connection with the next canned response (the last one again once
/// they run out), for as many connections as the test makes.
struct Canned {
    port: u16,
}

impl Canned {
    fn start(responses: Vec<Vec<u8>>) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = &responses[i.min(responses.len() - 1)];
                let _ = stream.write_all(response);
            }
        });
        Canned { port }
    }

    fn source(&self) -> TaxiiSource {
        TaxiiSource {
            limits: Limits {
                max_response: 4096,
                request_timeout: Duration::from_secs(10),
                ..Limits::default()
            },
            ..TaxiiSource::new(format!("http://127.0.0.1:{}/api1/", self.port), "c1")
        }
    }
}

/// An HTTP/1.1 response that ends when the connection closes (no Content-Length), so that size
/// caps must be checked while reading.
fn response(status: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

const TAXII: (&str, &str) = ("Content-Type", "application/taxii+json;version=2.1");

fn pull_error(responses: Vec<Vec<u8>>) -> String {
    let server = Canned::start(responses);
    taxii::pull_objects(&server.source(), None)
        .unwrap_err()
        .to_string()
}

#[test]
fn misbehaving_servers_get_clear_errors() {
    let e = pull_error(vec![response(
        "200 OK",
        &[("Content-Type", "text/html")],
        "<html>",
    )]);
    assert!(
        e.contains("the response is \"text/html\", not application/taxii+json;version=2.1"),
        "{e}"
    );

    let e = pull_error(vec![response("200 OK", &[TAXII], "<html>")]);
    assert!(e.contains("the response is not JSON"), "{e}");

    let e = pull_error(vec![response("200 OK", &[TAXII], r#"{"objects": "none"}"#)]);
    assert!(e.contains("the response is not a TAXII 2.1 envelope"), "{e}");

    let e = pull_error(vec![response("406 Not Acceptable", &[], "")]);
    assert!(
        e.contains("answered HTTP 406: it does not accept application/taxii+json;version=2.1"),
        "{e}"
    );

    let e = pull_error(vec![response("415 Unsupported Media Type", &[], "")]);
    assert!(e.contains("answered HTTP 415"), "{e}");

    let big = format!(r#"{{"objects": [{{"pad": "{}"}}]}}"#, "x".repeat(10_000));
    let e = pull_error(vec![response("200 OK", &[TAXII], &big)]);
    assert!(e.contains("larger than the 4096-byte cap"), "{e}");

    let e = pull_error(vec![response(
        "301 Moved Permanently",
        &[("Location", "http://192.0.2.1/elsewhere/?token=secret")],
        "",
    )]);
    assert!(e.contains("redirects to \"http://192.0.2.1/elsewhere/\""), "{e}");
    assert!(!e.contains("secret"), "{e}");

    let e = pull_error(vec![response(
        "500 Internal Server Error",
        &[TAXII],
        r#"{"title": "InternalError", "description": "backend down\n\u001b[31m"}"#,
    )]);
    assert!(
        e.ends_with("answered HTTP 500: InternalError: backend down??[31m"),
        "{e}"
    );

    let e = pull_error(vec![response(
        "200 OK",
        &[TAXII, ("X-TAXII-Date-Added-Last", "last tuesday")],
        r#"{"objects": []}"#,
    )]);
    assert!(
        e.contains("malformed X-TAXII-Date-Added-Last header: \"last tuesday\""),
        "{e}"
    );

    // "More" for ever, with no way forward: an error, not a loop.
    let e = pull_error(vec![response(
        "200 OK",
        &[TAXII],
        r#"{"more": true, "objects": []}"#,
    )]);
    assert!(
        e.contains("neither a `next` token nor an X-TAXII-Date-Added-Last"),
        "{e}"
    );

    // "More" for ever with a token: stopped by the total size cap, checked while reading.
    let page = format!(
        r#"{{"more": true, "next": "n", "objects": [{{"pad": "{}"}}]}}"#,
        "x".repeat(3000)
    );
    let server = Canned::start(vec![response("200 OK", &[TAXII], &page)]);
    let capped = TaxiiSource {
        limits: Limits {
            max_pull: 8000,
            ..server.source().limits
        },
        ..server.source()
    };
    let e = taxii::pull_objects(&capped, None).unwrap_err();
    assert!(matches!(e, TaxiiError::PullTooLarge { limit: 8000, .. }), "{e}");

    // Nobody listening.
    let port = free_port();
    let nobody = TaxiiSource::new(format!("http://127.0.0.1:{port}/api1/"), "c1");
    let e = taxii::pull_objects(&nobody, None).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("http://127.0.0.1:{port}/api1/collections/c1/objects/: ")),
        "{e}"
    );

    // Plain http leaves the host only over TLS.
    let remote = TaxiiSource::new("http://192.0.2.1/api1/", "c1");
    let e = taxii::pull_objects(&remote, None).unwrap_err().to_string();
    assert!(e.contains("plain http to another host"), "{e}");
}

/// The operator's path: a TAXII source registered with the CLI (password from a file, never on
/// the command line), pulled twice (the second pull brings nothing new: the bookmark is kept),
/// and published.
#[test]
fn a_registered_taxii_source_is_pulled_by_the_cli_with_its_bookmark() {
    let server = Medallion::start();
    let c = picket_e2e::Collector::init();
    let password = c.tmp.path().join("taxii.password");
    fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    picket_e2e::ok(
        "picket-collector",
        &[
            "source",
            "add",
            "--data",
            c.data(),
            "--name",
            "isac",
            "--kind",
            "taxii",
            "--location",
            &server.api_root(),
            "--collection",
            COLLECTION,
            "--username",
            USER,
            "--password-file",
            s(&password),
        ],
    );
    let listed = picket_e2e::ok(
        "picket-collector",
        &["source", "list", "--data", c.data(), "--json"],
    );
    assert!(
        !listed.contains(PASSWORD),
        "the password is never shown: {listed}"
    );
    let first = picket_e2e::ok("picket-collector", &["pull", "--data", c.data()]);
    assert!(first.contains("source isac: 25 indicators (25 new"), "{first}");
    let second = picket_e2e::ok("picket-collector", &["pull", "--data", c.data()]);
    assert!(second.contains("source isac: 0 indicators"), "{second}");
    let published = picket_e2e::ok("picket-collector", &["publish", "--data", c.data()]);
    assert!(published.contains("with 25 indicators"), "{published}");
}
