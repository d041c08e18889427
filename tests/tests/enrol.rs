//! `picket-agent enroll` with the real binaries on loopback: a token alone (no `--ca`) is enough
//! to enrol safely, the state directory it writes runs as it is, and the refusals an operator
//! meets name what is wrong without ever showing the token.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use picket_e2e::{bin, lines, ok, s, wait_line, Child, Collector, Serve};

/// A collector with a published set, its root key moved offline, serving on a loopback port.
struct Serving {
    /// Killed on drop, before the data directory in `c` goes.
    _serve: Serve,
    c: Collector,
    addr: String,
}

impl Serving {
    fn start() -> Serving {
        let c = Collector::init();
        fs::rename(c.root_key(), c.tmp.path().join("offline.key")).unwrap();
        c.ingest_list(
            "first.txt",
            &["275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"],
        );
        c.publish(&[]);
        let serve = Serve::start(c.data(), "127.0.0.1:0", &[]);
        Serving {
            addr: serve.channel.clone(),
            _serve: serve,
            c,
        }
    }

    fn token(&self, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "--data", self.c.data()];
        args.extend_from_slice(extra);
        ok("picket-collector", &args).trim().to_owned()
    }

    fn agents(&self) -> Vec<serde_json::Value> {
        ok(
            "picket-collector",
            &["agents", "list", "--data", self.c.data(), "--json"],
        )
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
    }
}

/// Runs `picket-agent enroll` into `dir/state`, the token on standard input.
fn enroll(collector: &Serving, dir: &Path, token: &str, extra: &[&str]) -> (Output, PathBuf) {
    let state = dir.join("state");
    let root = dir.join("files");
    fs::create_dir_all(&root).unwrap();
    let machine = dir.join("machine-id");
    fs::write(&machine, "5f0c1d2e3a4b5c6d7e8f90a1b2c3d4e5\n").unwrap();
    let anchor = collector.c.anchor();
    let mut args = vec![
        "enroll",
        "--state",
        s(&state),
        "--collector",
        &collector.addr,
        "--token-file",
        "-",
        "--trust",
        s(&anchor),
        "--root",
        s(&root),
        "--machine-id-file",
        s(&machine),
    ];
    args.extend_from_slice(extra);
    let mut child = Command::new(bin("picket-agent"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    (child.wait_with_output().unwrap(), state)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_token_alone_enrols_and_the_written_config_runs() {
    let collector = Serving::start();
    let tmp = tempfile::tempdir().unwrap();
    let token = collector.token(&[]);
    let (out, state) = enroll(&collector, tmp.path(), &token, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let secret = token.split('-').nth(2).unwrap();
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "the token is never printed"
    );
    let agents = collector.agents();
    assert_eq!(agents.len(), 1, "{agents:?}");
    let id = agents[0]["id"].as_str().unwrap().to_owned();
    assert!(stdout.contains(&format!("enrolled as agent {id}")), "{stdout}");
    assert!(stdout.contains("installed set version 1"), "{stdout}");
    let config = state.join("agent.toml");
    assert!(
        stdout.contains(&format!("picket-agent run --config {}", config.display())),
        "{stdout}"
    );

    let mut daemon = Command::new(bin("picket-agent"))
        .args(["run", "--config", s(&config)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines(daemon.stderr.take().unwrap());
    let _daemon = Child(daemon);
    wait_line(
        &err,
        &format!("connected to {} as agent {id}", collector.addr),
        Duration::from_secs(20),
    );
    // Its heartbeat reaches the collector: the agent's row shows the set it runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let agents = collector.agents();
        if agents[0]["set_version"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no heartbeat recorded: {agents:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The same token again (`token create` makes it for one use) is refused, and nothing is written.
    let again = tempfile::tempdir().unwrap();
    let (out, state) = enroll(&collector, again.path(), &token, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("TokenRefused"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");
    assert!(!state.exists(), "nothing written for a refused enrolment");
}

#[test]
fn a_token_of_another_collector_is_refused_before_its_secret_is_sent() {
    let collector = Serving::start();
    let other = Collector::init();
    let foreign = ok("picket-collector", &["token", "create", "--data", other.data()])
        .trim()
        .to_owned();
    let tmp = tempfile::tempdir().unwrap();

    // Without --ca: the TLS handshake fails on the pin; the collector never saw an enrolment.
    let (out, state) = enroll(&collector, tmp.path(), &foreign, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("does not match the token's CA pin"), "{stderr}");
    assert!(stderr.contains(&collector.addr), "{stderr}");
    assert!(!state.exists());
    assert!(collector.agents().is_empty());

    // With --ca naming this collector's CA: refused before connecting, naming both keys.
    let ca = collector.c.data.join("tls/ca.pem");
    let (out, _) = enroll(&collector, tmp.path(), &foreign, &["--ca", s(&ca)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(s(&ca)) && stderr.contains("not the one the token pins"),
        "{stderr}"
    );

    // A token that is not one at all is named as such, without echoing it.
    let (out, _) = enroll(&collector, tmp.path(), "pk1-not-a-token-zzzz", &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("the token on standard input"), "{stderr}");
    assert!(!stderr.contains("zzzz"), "{stderr}");
}
