//! The operator dashboard in a real browser: headless Chromium driven by Selenium
//! (tests/browser/dashboard.py) against the real `picket-collector serve --http`, with a real
//! agent that enrolled over TLS and found the EICAR file.
//!
//! The feed is hostile: its source name holds `<script>alert(1)</script>` and
//! `"><img src=x onerror=alert(1)>`, and so does the name of the file the agent finds. The
//! browser logs in (a wrong password first), sees the agent on the fleet page and the sighting
//! on the sightings page, opens the indicator, marks it a false positive and sees the sharing
//! preview change (a TAXII member's contribution clears the community's k = 2 first, so a
//! sighting leaves; after the mark, a false-positive opinion leaves with it), undoes the mark,
//! and logs out. On every page no script ran and no element was injected, and the hostile
//! strings are there as text.
//!
//! With `PICKET_REFRESH_SCREENSHOT=1` the sightings page is saved to docs/dashboard.png.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use picket_e2e::{bin, lines, ok, python, run, s, Child, Collector, Serve, EICAR, EICAR_SHA256};
use serde_json::{json, Value};

const INDICATOR: &str = "indicator--6b1d3c2a-4e5f-4a7b-8c9d-0e1f2a3b4c5d";
const SCRIPT: &str = "<script>alert(1)</script>";
const IMG: &str = "\"><img src=x onerror=alert(1)>";
const OPERATOR_PASSWORD: &str = "operator password for the browser test";
const MEMBER_PASSWORD: &str = "member password for the browser test";

fn bundle() -> Value {
    json!({
        "type": "bundle",
        "id": "bundle--0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        "objects": [{
            "type": "indicator",
            "spec_version": "2.1",
            "id": INDICATOR,
            "created": "2026-01-01T00:00:00.000Z",
            "modified": "2026-01-01T00:00:00.000Z",
            "name": format!("EICAR {SCRIPT} {IMG}"),
            "description": format!("{IMG}{SCRIPT}"),
            "indicator_types": ["malicious-activity"],
            "pattern": format!("[file:hashes.'SHA-256' = '{EICAR_SHA256}']"),
            "pattern_type": "stix",
            "valid_from": "2026-01-01T00:00:00Z"
        }]
    })
}

/// Runs `cmd`, killing it after `limit`; its output.
fn bounded(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = Child(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let out = lines(child.0.stdout.take().unwrap());
    let err = lines(child.0.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "{cmd:?} did not finish within {limit:?}; stdout so far: {:?}; stderr: {:?}",
            out.try_iter().collect::<Vec<_>>(),
            err.try_iter().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The reader threads end with the pipes.
    std::thread::sleep(Duration::from_millis(100));
    let join =
        |rx: std::sync::mpsc::Receiver<String>| rx.try_iter().collect::<Vec<_>>().join("\n").into_bytes();
    std::process::Output {
        status,
        stdout: join(out),
        stderr: join(err),
    }
}

#[test]
fn an_operator_logs_in_sees_the_loop_and_marks_a_false_positive_in_chromium() {
    let started = Instant::now();
    let c = Collector::init();
    let tmp = c.tmp.path();
    fs::rename(c.root_key(), tmp.join("offline.key")).unwrap();
    // A community with k = 2 and no delay, and a member who may contribute to it.
    let config = c.data.join("picket.toml");
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str("\n[[community]]\nname = \"isac\"\nk = 2\ndelay = \"0s\"\ntime_bucket = \"1h\"\n");
    fs::write(&config, text).unwrap();
    let member_pw = tmp.join("member.pw");
    fs::write(&member_pw, MEMBER_PASSWORD).unwrap();
    ok(
        "picket-collector",
        &[
            "member",
            "add",
            "--data",
            c.data(),
            "--name",
            "peer-org",
            "--contribute",
            "isac",
            "--community",
            "isac",
            "--password-file",
            s(&member_pw),
        ],
    );
    // The hostile feed, ingested under a hostile source name.
    let feed = tmp.join("feed.json");
    fs::write(&feed, bundle().to_string()).unwrap();
    let source = format!("{SCRIPT} {IMG}");
    ok(
        "picket-collector",
        &["ingest", "--data", c.data(), "--source", &source, s(&feed)],
    );
    c.publish(&[]);
    let pw = tmp.join("operator.pw");
    fs::write(&pw, format!("{OPERATOR_PASSWORD}\n")).unwrap();
    ok(
        "picket-collector",
        &[
            "operator",
            "add",
            "--data",
            c.data(),
            "--name",
            "analyst",
            "--password-file",
            s(&pw),
        ],
    );
    // A second operator of the same name is refused.
    assert_eq!(
        run(
            "picket-collector",
            &[
                "operator",
                "add",
                "--data",
                c.data(),
                "--name",
                "analyst",
                "--password-file",
                s(&pw)
            ]
        )
        .status
        .code(),
        Some(2)
    );

    let serve = Serve::start(c.data(), "127.0.0.1:0", &["--http", "127.0.0.1:0"]);
    let channel = serve.channel.clone();
    let base = serve.https.clone().unwrap();

    // An agent that finds the EICAR file under a hostile name.
    let token = ok("picket-collector", &["token", "create", "--data", c.data()]);
    let agent_dir = tmp.join("agent");
    let (state, root) = (agent_dir.join("state"), agent_dir.join("files"));
    fs::create_dir_all(&root).unwrap();
    fs::write(agent_dir.join("token"), token.trim()).unwrap();
    fs::write(agent_dir.join("machine-id"), "0123456789abcdef0123456789abcdef\n").unwrap();
    ok(
        "picket-agent",
        &[
            "enroll",
            "--state",
            s(&state),
            "--collector",
            &channel,
            "--token-file",
            s(&agent_dir.join("token")),
            "--trust",
            s(&c.anchor()),
            "--root",
            s(&root),
            "--machine-id-file",
            s(&agent_dir.join("machine-id")),
        ],
    );
    let file_name = format!("{IMG}.com");
    fs::write(root.join(&file_name), EICAR).unwrap();
    let _agent = Child(
        Command::new(bin("picket-agent"))
            .args(["run", "--config", s(&state.join("agent.toml"))])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = ok("picket-collector", &["sightings", "--data", c.data(), "--json"]);
        if got.contains(INDICATOR) {
            break;
        }
        assert!(Instant::now() < deadline, "no sighting within 20 s: {got}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let agents = ok(
        "picket-collector",
        &["agents", "list", "--data", c.data(), "--json"],
    );
    let agent: Value = serde_json::from_str(agents.lines().next().unwrap()).unwrap();
    let agent_id = agent["id"].as_str().unwrap().to_owned();

    // The browser's certificate: the one Chromium is told to accept (by its key's hash).
    let https = picket_collector::pki::read_certs(&c.data.join("tls/https.pem")).unwrap();
    let spki = picket_collector::pki::spki_sha256(&https[0]).unwrap();
    let screenshot = if std::env::var("PICKET_REFRESH_SCREENSHOT").as_deref() == Ok("1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png")
    } else {
        tmp.join("dashboard.png")
    };
    let args = json!({
        "base": base,
        "spki_hex": hex::encode(spki),
        "ca": s(&c.data.join("tls/ca.pem")),
        "operator": "analyst",
        "password": OPERATOR_PASSWORD,
        "member": "peer-org",
        "member_password": MEMBER_PASSWORD,
        "community": "isac",
        "indicator": INDICATOR,
        "agent": agent_id,
        "hostile": [SCRIPT, IMG],
        "location": file_name,
        "screenshot": s(&screenshot),
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/dashboard.py");
    let out = bounded(
        Command::new(python()).arg(s(&script)).arg(args.to_string()),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "the browser test failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(screenshot.exists(), "the screenshot was written");
    eprintln!(
        "dashboard browser test: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
