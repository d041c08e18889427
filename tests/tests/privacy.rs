//! Privacy canaries, end to end, with the real binaries. Four agents, each in its own UTS and
//! mount namespace so that its host name is a random string and its `/home` is a directory of
//! users whose names are random strings too, find the EICAR file under every home (in the
//! user's Downloads, in a folder named after the host, in a folder named after the user, and in
//! a file named after the user in capitals). Their sightings reach `picket-collector serve`; a
//! TAXII member contributes a sighting so the community's k = 2 is cleared; the community
//! discloses the organisation (the most revealing setting). Then every byte that leaves, or
//! could, is gathered: everything the TAXII API serves (discovery, API roots, collections,
//! objects page by page, manifests, versions, each version of each object), `share preview`
//! (both forms, stdout and stderr), `share misp-sightings`, every file of `share misp-feed`,
//! `share push` and everything the upstream medallion server holds afterwards, the collector's
//! whole data directory and its logs, and what each agent would send (its spool, its status,
//! `explain`). No user name and no host name appears in any of it, in any case.
//!
//! So the test cannot pass by looking at nothing, it also checks that every agent's sightings
//! arrived, that the shared bundle, the TAXII collection and the upstream collection hold a
//! sighting of the indicator, that the MISP outputs are not empty, and that the canaries *are*
//! in the agents' own local records (the same search finds them there).
//!
//! Every step runs even when an earlier one failed (as long as it can), and the test fails at
//! the end with the list of everything that went wrong: each leak with where it was found, and
//! each step that did not work.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use picket_e2e::{
    bin, contains_ci, ok, on_host, on_host_as_root, python, random_name, run, s, Child, Collector, EICAR,
    EICAR_SHA256,
};
use serde_json::{json, Value};

/// The indicator's STIX id (a version 4 UUID, as STIX wants for domain objects).
const INDICATOR: &str = "indicator--3f7c2b1e-8a4d-4c6b-9e2f-5d1a7b3c9e40";
const COMMUNITY: &str = "canary";
const AGENTS: usize = 4;
const USERS_PER_AGENT: usize = 3;
const FILES_PER_USER: usize = 4;
/// The upstream collection on medallion.
const UPSTREAM_COLLECTION: &str = "5f0e9b2a-7c41-4d8e-a3b6-1e2d3c4b5a69";
const UPSTREAM_USER: &str = "picket-upstream";
const UPSTREAM_PASSWORD: &str = "upstream password for the canary test";
const READER_PASSWORD: &str = "reader password for the canary test";
const CONTRIBUTOR_PASSWORD: &str = "contributor password for the canary test";

/// One simulated machine: its host name, its users, its `/home`, and its agent.
struct Host {
    name: String,
    users: Vec<String>,
    home: PathBuf,
    state: PathBuf,
    dir: PathBuf,
    daemon: Option<Child>,
}

/// Everything gathered to be searched: a label saying where it came from, and its bytes.
#[derive(Default)]
struct Gathered(Vec<(String, Vec<u8>)>);

impl Gathered {
    fn add(&mut self, label: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0.push((label.into(), bytes.into()));
    }

    /// A command's stdout and stderr.
    fn output(&mut self, label: &str, out: &Output) {
        self.add(format!("{label} (stdout)"), out.stdout.clone());
        self.add(format!("{label} (stderr)"), out.stderr.clone());
    }

    /// Every regular file under `dir` (links are not followed), and every name in it.
    fn dir(&mut self, label: &str, dir: &Path) {
        let Ok(entries) = fs::read_dir(dir) else {
            self.add(format!("{label}: {} (missing)", dir.display()), Vec::new());
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let kind = e.file_type().unwrap();
            self.add(
                format!("{label}: the name {}", path.display()),
                e.file_name().into_encoded_bytes(),
            );
            if kind.is_dir() {
                self.dir(label, &path);
            } else if kind.is_file() {
                self.add(format!("{label}: {}", path.display()), fs::read(&path).unwrap());
            }
        }
    }

    fn bytes(&self) -> usize {
        self.0.iter().map(|(_, b)| b.len()).sum()
    }
}

/// Runs `cmd` with stdout and stderr in files (no pipe to fill up), killing it after `limit`.
fn bounded(cmd: &mut Command, limit: Duration, scratch: &Path) -> Output {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (o, e) = (scratch.join(format!("out{n}")), scratch.join(format!("err{n}")));
    let mut child = Child(
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&o).unwrap())
            .stderr(fs::File::create(&e).unwrap())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {cmd:?}: {err}")),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            drop(child);
            let mut err = fs::read(&e).unwrap();
            err.extend_from_slice(format!("\n(killed after {limit:?})").as_bytes());
            return Output {
                status: std::os::unix::process::ExitStatusExt::from_raw(9),
                stdout: fs::read(&o).unwrap(),
                stderr: err,
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: fs::read(&o).unwrap(),
        stderr: fs::read(&e).unwrap(),
    }
}

fn said(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The TAXII client side, in Python with `requests` (a dependency of taxii2-client): `crawl`
/// fetches everything a member can read and `contribute` posts a sighting to the one collection
/// the member can write. Every response (status, headers, body) is appended to the dump file.
/// Arguments: mode, discovery URL, user, password, CA file (`-`: plain HTTP), dump file, and
/// for `contribute` the indicator id. Prints a JSON summary.
const TAXII_SCRIPT: &str = r#"
import datetime, json, sys, time, uuid
import requests

TAXII = "application/taxii+json;version=2.1"
mode, discovery, user, password, ca, dump = sys.argv[1:7]
s = requests.Session()
s.trust_env = False
s.auth = (user, password)
s.verify = ca if ca != "-" else True
s.headers["Accept"] = TAXII
out = open(dump, "ab")

def record(method, r):
    out.write(f"{method} {r.url}\n{r.status_code} {r.reason}\n".encode())
    for k, v in r.headers.items():
        out.write(f"{k}: {v}\n".encode())
    out.write(b"\n" + r.content + b"\n\n")
    out.flush()

def get(url, params=None, want=200):
    r = s.get(url, params=params, timeout=20)
    record("GET", r)
    if r.status_code != want:
        sys.exit(f"GET {r.url}: {r.status_code} {r.text[:800]}")
    return r.json() if r.content else {}

def pages(url, key, extra=None):
    items, params = [], dict(extra or {}, limit="1")
    for _ in range(500):
        body = get(url, params)
        items += body.get(key, [])
        if not body.get("more"):
            return items
        if not body.get("next"):
            sys.exit(f"GET {url}: more without next")
        params = dict(extra or {}, limit="1", next=body["next"])
    sys.exit(f"GET {url}: more than 500 pages")

def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

disc = get(discovery)
roots = disc.get("api_roots", [])
if mode == "crawl":
    summary = {"roots": roots, "collections": [], "objects": []}
    for root in roots:
        get(root)
        for c in get(root + "collections/").get("collections", []):
            base = f"{root}collections/{c['id']}/"
            get(base)
            summary["collections"].append(dict(c, root=root))
            if not c.get("can_read"):
                continue
            objects = pages(base + "objects/", "objects", {"match[version]": "all"})
            pages(base + "objects/", "objects")
            manifest = pages(base + "manifest/", "objects", {"match[version]": "all"})
            for oid in sorted({o["id"] for o in objects} | {m["id"] for m in manifest}):
                for v in pages(f"{base}objects/{oid}/versions/", "versions"):
                    pages(f"{base}objects/{oid}/", "objects", {"match[version]": v})
            summary["objects"] += objects
    print(json.dumps(summary))
elif mode == "contribute":
    indicator = sys.argv[7]
    writable = []
    for root in roots:
        for c in get(root + "collections/").get("collections", []):
            if c.get("can_write"):
                writable.append((root, c))
    if len(writable) != 1:
        sys.exit(f"expected one collection with can_write true, found {writable}")
    root, c = writable[0]
    t = now()
    sighting = {"type": "sighting", "spec_version": "2.1", "id": f"sighting--{uuid.uuid4()}",
                "created": t, "modified": t, "sighting_of_ref": indicator, "count": 3,
                "first_seen": t, "last_seen": t}
    r = s.post(f"{root}collections/{c['id']}/objects/", data=json.dumps({"objects": [sighting]}),
               headers={"Content-Type": TAXII}, timeout=20)
    record("POST", r)
    if r.status_code != 202:
        sys.exit(f"POST to {c.get('title')} ({c['id']}): {r.status_code} {r.text[:800]}")
    status = r.json()
    for _ in range(100):
        if status.get("status") == "complete":
            break
        time.sleep(0.1)
        status = get(f"{root}status/{status['id']}/")
    if status.get("status") != "complete" or status.get("success_count") != 1:
        sys.exit(f"the status resource: {status}")
    print(json.dumps({"collection": c, "status": status}))
else:
    sys.exit(f"unknown mode {mode}")
"#;

/// Runs [`TAXII_SCRIPT`]; its summary, or what went wrong.
fn taxii(args: &[&str], scratch: &Path) -> Result<Value, String> {
    let out = bounded(
        Command::new(python())
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .arg("-c")
            .arg(TAXII_SCRIPT)
            .args(args),
        Duration::from_secs(40),
        scratch,
    );
    if !out.status.success() {
        return Err(said(&out));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", said(&out)))
}

/// A medallion (PyPI) TAXII 2.1 server on a free loopback port, in-memory backend, one API root
/// (`api1`) with one empty writable collection: the community's upstream. Killed when dropped.
struct Medallion {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Medallion {
    /// Starts it; [`Medallion::wait`] waits until it answers.
    fn start(dir: &Path) -> Medallion {
        fs::create_dir_all(dir).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let data = json!({
            "/discovery": {
                "title": "upstream",
                "description": "medallion playing the community's upstream server",
                "default": format!("{base}/api1/"),
                "api_roots": [format!("{base}/api1/")]
            },
            "api1": {
                "information": {
                    "title": "upstream root",
                    "description": "the community's collection elsewhere",
                    "versions": ["application/taxii+json;version=2.1"],
                    "max_content_length": 10_485_760
                },
                "status": [],
                "collections": [{
                    "id": UPSTREAM_COLLECTION,
                    "title": "shared sightings",
                    "description": "what Picket pushes",
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
                "filename": s(&dir.join("data.json"))
            },
            "users": { UPSTREAM_USER: UPSTREAM_PASSWORD },
            "taxii": { "max_page_size": 100 }
        });
        fs::write(dir.join("medallion.json"), config.to_string()).unwrap();
        let log = dir.join("medallion.log");
        let file = fs::File::create(&log).unwrap();
        let child = Command::new(python())
            .args([
                "-c",
                "import sys; from medallion.scripts.run import main; sys.exit(main())",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                s(&dir.join("medallion.json")),
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Medallion {
            child: Child(child),
            port,
            log,
        }
    }

    /// Waits (bounded) until it accepts connections; an error with its log if it exited.
    fn wait(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.0.try_wait().unwrap().is_some() {
                return Err(format!(
                    "medallion exited: {}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "medallion did not listen on {} within {limit:?}",
            self.port
        ))
    }
}

/// A STIX 2.1 bundle with the EICAR indicator, TLP:GREEN (2.0 marking).
fn bundle() -> Value {
    json!({
        "type": "bundle",
        "id": "bundle--8d2f4a6c-1b3e-4f5a-9c7d-2e4f6a8b0c1d",
        "objects": [
            {
                "type": "marking-definition",
                "spec_version": "2.1",
                "id": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
                "created": "2022-10-01T00:00:00.000Z",
                "name": "TLP:GREEN",
                "extensions": {
                    "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d": {
                        "extension_type": "property-extension",
                        "tlp_2_0": "green"
                    }
                }
            },
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": INDICATOR,
                "created": "2026-01-01T00:00:00.000Z",
                "modified": "2026-01-01T00:00:00.000Z",
                "name": "EICAR test file",
                "indicator_types": ["malicious-activity"],
                "pattern": format!("[file:hashes.'SHA-256' = '{EICAR_SHA256}']"),
                "pattern_type": "stix",
                "valid_from": "2026-01-01T00:00:00Z",
                "object_marking_refs": ["marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"]
            }
        ]
    })
}

/// Makes `home` a `/home` of `USERS_PER_AGENT` random users, each with the EICAR file in four
/// places naming the user or the host, and (as root) each home owned by its own uid, as real
/// homes are. Returns the user names.
fn populate(home: &Path, host: &str, first_uid: u32) -> Vec<String> {
    let users: Vec<String> = (0..USERS_PER_AGENT).map(|_| random_name("u", 12)).collect();
    for (i, user) in users.iter().enumerate() {
        let dir = home.join(user);
        let files = [
            dir.join("Downloads").join(format!("{user}-invoice.com")),
            dir.join(format!("{host}-notes")).join("eicar.txt"),
            dir.join(".cache").join(user).join("x.bin"),
            dir.join("Desktop")
                .join(format!("report-{}.pdf.exe", user.to_ascii_uppercase())),
        ];
        assert_eq!(files.len(), FILES_PER_USER);
        for f in &files {
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, EICAR).unwrap();
        }
        if on_host_as_root() {
            let uid = (first_uid + i as u32).to_string();
            let out = Command::new("chown")
                .args(["-R", &format!("{uid}:{uid}"), s(&dir)])
                .output()
                .unwrap();
            assert!(out.status.success(), "chown: {}", said(&out));
        }
    }
    users
}

/// The collector's aggregate for the indicator: (hosts, count).
fn indicator_sightings(data: &str) -> Option<(u64, u64)> {
    let out = ok("picket-collector", &["sightings", "--data", data, "--json"]);
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["indicator"] == INDICATOR)
        .map(|v| (v["hosts"].as_u64().unwrap(), v["count"].as_u64().unwrap()))
}

/// Whether `objects` holds a sighting of the indicator.
fn has_sighting(objects: &Value) -> bool {
    objects.as_array().is_some_and(|objs| {
        objs.iter()
            .any(|o| o["type"] == "sighting" && o["sighting_of_ref"] == INDICATOR)
    })
}

/// The bytes around the first place `needle` is in `hay` (any case), for the failure message.
fn context(hay: &[u8], needle: &str) -> String {
    let n = needle.len();
    let at = hay
        .windows(n)
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
        .unwrap_or(0);
    let from = at.saturating_sub(60);
    let to = (at + n + 60).min(hay.len());
    String::from_utf8_lossy(&hay[from..to]).escape_debug().to_string()
}

/// One run of the scenario: the collector, its upstream, the hosts, and what was found.
struct Scenario {
    c: Collector,
    /// Where commands' outputs and TAXII dumps are written.
    scratch: PathBuf,
    medallion: Medallion,
    serve: Option<Child>,
    serve_log: [PathBuf; 2],
    /// The agent channel's address.
    listen: String,
    /// The TAXII discovery URL.
    discovery: String,
    hosts: Vec<Host>,
    /// Everything that leaves, or could.
    gathered: Gathered,
    /// What went wrong, step by step (leaks are counted apart).
    fails: Vec<String>,
}

impl Scenario {
    fn tmp(&self) -> PathBuf {
        self.c.tmp.path().to_owned()
    }

    /// Step 1: the indicator (a STIX bundle), a community that discloses the organisation, its
    /// upstream, a reader and a contributor, and `serve` with the agent channel and TAXII.
    fn start() -> Scenario {
        let c = Collector::init();
        let tmp = c.tmp.path().to_owned();
        let scratch = tmp.join("scratch");
        fs::create_dir_all(&scratch).unwrap();
        let medallion = Medallion::start(&tmp.join("medallion"));
        let mut fails = Vec::new();
        let stix = tmp.join("eicar.json");
        fs::write(&stix, bundle().to_string()).unwrap();
        ok("picket-collector", &["ingest", "--data", c.data(), s(&stix)]);
        let upstream_pw = c.data.join("upstream.password");
        fs::write(&upstream_pw, format!("{UPSTREAM_PASSWORD}\n")).unwrap();
        let config = c.data.join("picket.toml");
        let mut text = fs::read_to_string(&config).unwrap();
        text.push_str(&format!(
            "\n[[community]]\nname = \"{COMMUNITY}\"\nk = 2\ndisclosure = \"organisation\"\ntime_bucket = \"1m\"\n\
             \n[[community.upstream]]\nname = \"medallion\"\napi_root = \"http://127.0.0.1:{}/api1/\"\n\
             collection = \"{UPSTREAM_COLLECTION}\"\nusername = \"{UPSTREAM_USER}\"\npassword_file = \"{}\"\n",
            medallion.port,
            s(&upstream_pw)
        ));
        fs::write(&config, text).unwrap();
        fs::rename(c.root_key(), tmp.join("offline.key")).unwrap();
        c.publish(&[]);
        for (name, flag, password) in [
            ("reader", "--community", READER_PASSWORD),
            ("contributor", "--contribute", CONTRIBUTOR_PASSWORD),
        ] {
            let file = tmp.join(format!("{name}.password"));
            fs::write(&file, format!("{password}\n")).unwrap();
            let out = run(
                "picket-collector",
                &[
                    "member",
                    "add",
                    "--data",
                    c.data(),
                    flag,
                    COMMUNITY,
                    "--name",
                    name,
                    "--password-file",
                    s(&file),
                ],
            );
            if !out.status.success() {
                fails.push(format!(
                    "step 1: `member add {flag} {COMMUNITY}` failed: {}",
                    said(&out)
                ));
            }
        }
        let serve_log = [tmp.join("serve.out"), tmp.join("serve.err")];
        let serve = Child(
            Command::new(bin("picket-collector"))
                .args([
                    "serve",
                    "--data",
                    c.data(),
                    "--listen",
                    "127.0.0.1:0",
                    "--http",
                    "127.0.0.1:0",
                ])
                .stdout(fs::File::create(&serve_log[0]).unwrap())
                .stderr(fs::File::create(&serve_log[1]).unwrap())
                .spawn()
                .unwrap(),
        );
        // serve prints where it listens: `... listening on ADDR` and `... on https://ADDR/taxii2/`.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (listen, discovery) = loop {
            let text = fs::read_to_string(&serve_log[0]).unwrap();
            let find = |needle: &str| {
                text.lines()
                    .find(|l| l.contains(needle))
                    .map(|l| l.rsplit(' ').next().unwrap().trim().to_owned())
            };
            if let (Some(a), Some(t)) = (
                find("agent channel listening on"),
                find("TAXII 2.1 server listening on"),
            ) {
                break (a, t);
            }
            assert!(
                Instant::now() < deadline,
                "serve did not say where it listens within 20 s:\n{text}{}",
                fs::read_to_string(&serve_log[1]).unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Scenario {
            c,
            scratch,
            medallion,
            serve: Some(serve),
            serve_log,
            listen,
            discovery,
            hosts: Vec::new(),
            gathered: Gathered::default(),
            fails,
        }
    }

    /// Step 2: `AGENTS` hosts, each with its random host name and users, enrolled and running
    /// in namespaces of their own; waits until all their sightings are at the collector.
    fn start_hosts(&mut self) {
        let tmp = self.tmp();
        let token = ok(
            "picket-collector",
            &[
                "token",
                "create",
                "--data",
                self.c.data(),
                "--uses",
                &AGENTS.to_string(),
            ],
        );
        let token_file = tmp.join("token");
        fs::write(&token_file, token.trim()).unwrap();
        for i in 0..AGENTS {
            let name = random_name("h", 12);
            let dir = tmp.join(format!("host{i}"));
            let home = dir.join("home");
            fs::create_dir_all(&home).unwrap();
            let users = populate(&home, &name, 20_000 + 100 * i as u32);
            let machine = dir.join("machine-id");
            fs::write(&machine, format!("{}\n", random_name("", 32))).unwrap();
            let state = dir.join("state");
            // Enrolled on the host as it is, so that enrolment could leak its names too.
            let out = bounded(
                &mut on_host(
                    &name,
                    &home,
                    &bin("picket-agent"),
                    &[
                        "enroll",
                        "--state",
                        s(&state),
                        "--collector",
                        &self.listen,
                        "--token-file",
                        s(&token_file),
                        "--trust",
                        s(&self.c.anchor()),
                        "--root",
                        "/home",
                        "--machine-id-file",
                        s(&machine),
                    ],
                ),
                Duration::from_secs(30),
                &self.scratch,
            );
            assert!(out.status.success(), "enrolling agent {i}: {}", said(&out));
            let daemon = on_host(
                &name,
                &home,
                &bin("picket-agent"),
                &["run", "--config", s(&state.join("agent.toml"))],
            )
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("agent.out")).unwrap())
            .stderr(fs::File::create(dir.join("agent.err")).unwrap())
            .spawn()
            .unwrap();
            self.hosts.push(Host {
                name,
                users,
                home,
                state,
                dir,
                daemon: Some(Child(daemon)),
            });
        }
        let files = (AGENTS * USERS_PER_AGENT * FILES_PER_USER) as u64;
        let all_in = |got: Option<(u64, u64)>| got.is_some_and(|(h, n)| h == AGENTS as u64 && n >= files);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = indicator_sightings(self.c.data());
        while !all_in(got) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            got = indicator_sightings(self.c.data());
        }
        if !all_in(got) {
            let logs: Vec<String> = self
                .hosts
                .iter()
                .map(|h| fs::read_to_string(h.dir.join("agent.err")).unwrap_or_default())
                .collect();
            self.fails.push(format!(
                "step 2: the collector has (hosts, count) {got:?} for {INDICATOR}, not ({AGENTS}, at least \
                 {files}) within 30 s; agent logs:\n{}",
                logs.join("\n---\n")
            ));
        }
    }

    /// `share preview --json`: the bundle, and the output gathered under `label`.
    fn preview(&mut self, label: &str) -> Value {
        let out = run(
            "picket-collector",
            &[
                "share",
                "preview",
                "--data",
                self.c.data(),
                "--community",
                COMMUNITY,
                "--json",
            ],
        );
        self.gathered.output(label, &out);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            self.fails.push(format!("{label}: {e}: {}", said(&out)));
            Value::Null
        })
    }

    /// Step 3: below k nothing about the indicator is shared; then the contributor posts a
    /// sighting of it to the community's writable collection, and it is. Whether it is shared.
    fn clear_k(&mut self) -> bool {
        let below = self.preview("share preview --json below k");
        if below.to_string().contains(INDICATOR) {
            self.fails.push(format!(
                "step 3: below k the preview already names the indicator: {below}"
            ));
        }
        let dump = self.scratch.join("contribution.dump");
        let ca = self.c.data.join("tls/ca.pem");
        let posted = taxii(
            &[
                "contribute",
                &self.discovery,
                "contributor",
                CONTRIBUTOR_PASSWORD,
                s(&ca),
                s(&dump),
                INDICATOR,
            ],
            &self.scratch,
        );
        self.gathered.add(
            "TAXII responses to the contributor's POST",
            fs::read(&dump).unwrap_or_default(),
        );
        if let Err(e) = &posted {
            self.fails.push(format!(
                "step 3: the contributor could not post a sighting to the community's contributions: {e}"
            ));
        }
        // The contribution counts at once; the loop only bounds a slow store.
        let deadline = Instant::now() + Duration::from_secs(if posted.is_ok() { 10 } else { 0 });
        loop {
            let bundle = self.preview("share preview --json after the contribution");
            if has_sighting(&bundle["objects"]) {
                return true;
            }
            if Instant::now() > deadline {
                self.fails.push(format!(
                    "step 3: the preview holds no sighting of {INDICATOR} (contribution posted: {}): {bundle}",
                    posted.is_ok()
                ));
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Step 4, the TAXII API: everything the reader and the contributor can fetch.
    fn gather_taxii(&mut self) {
        let ca = self.c.data.join("tls/ca.pem");
        for (who, password) in [("reader", READER_PASSWORD), ("contributor", CONTRIBUTOR_PASSWORD)] {
            let dump = self.scratch.join(format!("{who}.dump"));
            let crawl = taxii(
                &["crawl", &self.discovery, who, password, s(&ca), s(&dump)],
                &self.scratch,
            );
            match crawl {
                Ok(summary) if who == "reader" && !has_sighting(&summary["objects"]) => {
                    self.fails.push(format!(
                        "step 4: the reader's TAXII collection holds no sighting of {INDICATOR}: {summary}"
                    ))
                }
                Ok(_) => {}
                Err(e) => self
                    .fails
                    .push(format!("step 4: crawling the TAXII API as {who}: {e}")),
            }
            self.gathered.add(
                format!("TAXII responses to the {who}"),
                fs::read(&dump).unwrap_or_default(),
            );
        }
    }

    /// Step 4, the share commands: the preview in both forms, the MISP sightings and feed.
    fn gather_share(&mut self, shared: bool) {
        let data = self.c.data().to_owned();
        for extra in [None, Some("--json")] {
            let mut args = vec!["share", "preview", "--data", &data, "--community", COMMUNITY];
            args.extend(extra);
            let out = run("picket-collector", &args);
            if !out.status.success() {
                self.fails
                    .push(format!("step 4: share preview {extra:?}: {}", said(&out)));
            }
            self.gathered
                .output(&format!("share preview {}", extra.unwrap_or("")), &out);
        }
        let out = run(
            "picket-collector",
            &[
                "share",
                "misp-sightings",
                "--data",
                &data,
                "--community",
                COMMUNITY,
            ],
        );
        match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(v) if shared && v.as_array().is_none_or(Vec::is_empty) => self.fails.push(format!(
                "step 4: the MISP sightings are empty although the indicator is shared: {v}"
            )),
            Ok(_) => {}
            Err(e) => self
                .fails
                .push(format!("step 4: share misp-sightings: {e}: {}", said(&out))),
        }
        self.gathered.output("share misp-sightings", &out);
        let feed = self.tmp().join("misp-feed");
        let out = run(
            "picket-collector",
            &[
                "share",
                "misp-feed",
                "--data",
                &data,
                "--community",
                COMMUNITY,
                "--out",
                s(&feed),
            ],
        );
        if !out.status.success() {
            self.fails
                .push(format!("step 4: share misp-feed: {}", said(&out)));
        }
        self.gathered.output("share misp-feed", &out);
        self.gathered.dir("share misp-feed", &feed);
    }

    /// Step 4, upstream: `share push` to medallion, then everything medallion holds.
    fn gather_upstream(&mut self) {
        if let Err(e) = self.medallion.wait(Duration::from_secs(20)) {
            self.fails
                .push(format!("step 4: the upstream medallion server: {e}"));
            return;
        }
        let out = bounded(
            Command::new(bin("picket-collector")).args([
                "share",
                "push",
                "--data",
                self.c.data(),
                "--community",
                COMMUNITY,
            ]),
            Duration::from_secs(30),
            &self.scratch,
        );
        if !out.status.success() {
            self.fails.push(format!("step 4: share push: {}", said(&out)));
        }
        self.gathered.output("share push", &out);
        let dump = self.scratch.join("upstream.dump");
        let url = format!("http://127.0.0.1:{}/taxii2/", self.medallion.port);
        match taxii(
            &["crawl", &url, UPSTREAM_USER, UPSTREAM_PASSWORD, "-", s(&dump)],
            &self.scratch,
        ) {
            Ok(summary) if !has_sighting(&summary["objects"]) => self.fails.push(format!(
                "step 4: the upstream collection holds no sighting of {INDICATOR} after the push: {summary}"
            )),
            Ok(_) => {}
            Err(e) => self
                .fails
                .push(format!("step 4: reading back the upstream collection: {e}")),
        }
        self.gathered
            .add("what medallion holds", fs::read(&dump).unwrap_or_default());
        self.gathered.add(
            "medallion's log",
            fs::read(&self.medallion.log).unwrap_or_default(),
        );
    }

    /// Step 4, the endpoints: with each daemon stopped, what it would send (`explain`, run on
    /// the host as it is), its spool and its status. Returns what stays on the hosts: each
    /// agent's local record of its sightings and its standard output, where the names are.
    fn gather_agents(&mut self) -> Gathered {
        let mut local = Gathered::default();
        for (i, h) in self.hosts.iter_mut().enumerate() {
            // `explain` wants the daemon stopped (its spool changes while it sends).
            h.daemon = None;
            let out = bounded(
                &mut on_host(
                    &h.name,
                    &h.home,
                    &bin("picket-agent"),
                    &["explain", "--state", s(&h.state), "--json"],
                ),
                Duration::from_secs(20),
                &self.scratch,
            );
            match serde_json::from_slice::<Value>(&out.stdout) {
                Ok(v) if v["sightings"].as_array().is_some_and(|a| !a.is_empty()) => {}
                other => self.fails.push(format!(
                    "agent {i}: `explain` shows no sighting it would report: {other:?} {}",
                    said(&out)
                )),
            }
            self.gathered.output(&format!("agent {i}: explain --json"), &out);
            self.gathered
                .dir(&format!("agent {i}: spool"), &h.state.join("spool"));
            self.gathered.add(
                format!("agent {i}: status.json"),
                fs::read(h.state.join("status.json")).unwrap_or_default(),
            );
            local.add(
                format!("agent {i}: sightings.pkt"),
                fs::read(h.state.join("sightings.pkt")).unwrap_or_default(),
            );
            local.add(
                format!("agent {i}: stdout"),
                fs::read(h.dir.join("agent.out")).unwrap_or_default(),
            );
        }
        local
    }

    /// Step 4, the collector itself: its operator views, then, with serve stopped (SIGKILL:
    /// the write-ahead log stays as it was), every file of its data directory and its logs.
    fn gather_collector(&mut self) {
        let data = self.c.data().to_owned();
        for args in [
            vec!["sightings", "--data", &data, "--json"],
            vec!["sightings", "--data", &data],
            vec!["agents", "list", "--data", &data, "--json"],
            vec!["indicators", "show", "--data", &data, "--json", INDICATOR],
        ] {
            let out = run("picket-collector", &args);
            self.gathered
                .output(&format!("picket-collector {}", args.join(" ")), &out);
        }
        self.serve = None;
        self.gathered.dir("collector data directory", &self.c.data);
        for log in &self.serve_log {
            self.gathered
                .add(format!("serve's {}", log.display()), fs::read(log).unwrap());
        }
    }
}

#[test]
fn no_user_or_host_name_of_any_agent_leaves_by_any_way_out() {
    let started = Instant::now();
    let mut sc = Scenario::start();
    sc.start_hosts();
    eprintln!(
        "agents' sightings at the collector after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let shared = sc.clear_k();
    sc.gather_taxii();
    sc.gather_share(shared);
    sc.gather_upstream();
    let local = sc.gather_agents();
    sc.gather_collector();

    // The canaries: each host's name and each of its users' names.
    let mut canaries: Vec<(String, String)> = Vec::new();
    for (i, h) in sc.hosts.iter().enumerate() {
        canaries.push((h.name.clone(), format!("host name of agent {i}")));
        for u in &h.users {
            canaries.push((u.clone(), format!("user name on agent {i}")));
        }
    }
    // Not vacuous: each canary is where the agent met it, and the search finds it there.
    for (i, h) in sc.hosts.iter().enumerate() {
        for canary in std::iter::once(&h.name).chain(&h.users) {
            if !local.0.iter().any(|(_, b)| contains_ci(b, canary)) {
                sc.fails.push(format!(
                    "agent {i}: {canary} is not in the agent's own local records, so this test could not \
                     tell whether it leaks"
                ));
            }
        }
    }
    let mut leaks = Vec::new();
    for (label, bytes) in &sc.gathered.0 {
        // Folded once per source; the canaries are lower-case already.
        let folded = bytes.to_ascii_lowercase();
        for (canary, what) in &canaries {
            if folded.windows(canary.len()).any(|w| w == canary.as_bytes()) {
                leaks.push(format!(
                    "{canary} ({what}) in {label}: …{}…",
                    context(bytes, canary)
                ));
            }
        }
    }
    eprintln!(
        "searched {} sources, {} bytes, for {} canaries; {:.1}s in all",
        sc.gathered.0.len(),
        sc.gathered.bytes(),
        canaries.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        leaks.is_empty() && sc.fails.is_empty(),
        "{} leak(s):\n{}\n\n{} other failure(s):\n{}",
        leaks.len(),
        leaks.join("\n"),
        sc.fails.len(),
        sc.fails.join("\n\n")
    );
}
