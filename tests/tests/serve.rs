//! `picket-collector serve` and registered sources, with the real binary.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use picket_e2e::{bin, lines, ok, run, s, wait_line, Child, Collector, EICAR_MD5, EICAR_SHA256};

#[test]
fn serve_refuses_to_start_while_a_root_key_is_readable() {
    let c = Collector::init();
    let out = run("picket-collector", &["serve", "--data", c.data()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve: a root private key is readable from here"),
        "{err}"
    );
    assert!(err.contains(s(&c.root_key())), "names the file: {err}");
}

#[test]
fn sources_are_pulled_on_schedule_published_in_batches_and_kept_fresh() {
    let c = Collector::init();
    // The root key goes offline, as init says it must.
    let offline = c.tmp.path().join("offline.key");
    fs::rename(c.root_key(), &offline).unwrap();
    // Short lifetimes so the test sees a re-stamp: half of 4 s.
    let config = c.data.join("picket.toml");
    let text = fs::read_to_string(&config)
        .unwrap()
        .replace("timestamp_lifetime = \"1d\"", "timestamp_lifetime = \"4s\"");
    fs::write(&config, text).unwrap();
    let feed = c.tmp.path().join("feed.txt");
    fs::write(&feed, format!("{EICAR_SHA256}\n")).unwrap();
    ok(
        "picket-collector",
        &[
            "source",
            "add",
            "--data",
            c.data(),
            "--name",
            "feed",
            "--kind",
            "list",
            "--location",
            s(&feed),
            "--every",
            "1s",
        ],
    );
    let listed = ok(
        "picket-collector",
        &["source", "list", "--data", c.data(), "--json"],
    );
    assert!(listed.contains("\"name\":\"feed\""), "{listed}");

    let mut child = Command::new(bin("picket-collector"))
        .args([
            "serve",
            "--data",
            c.data(),
            "--batch",
            "1s",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(child.stdout.take().unwrap());
    let _guard = Child(child);
    let wait = |needle: &str| wait_line(&rx, needle, Duration::from_secs(20));
    wait("source feed: 1 indicators (1 new");
    wait("published set version 1 with 1 indicators");
    // Nothing changes: freshness is re-signed anyway, without a new set version.
    let stamp = wait("timestamp version 2 for set version 1");
    assert!(stamp.contains("channel default"), "{stamp}");
    // The feed grows: the next pull brings it in and a new version follows.
    fs::write(&feed, format!("{EICAR_SHA256}\n{EICAR_MD5}\n")).unwrap();
    wait("published set version 2 with 2 indicators");
}

#[test]
fn a_failing_source_is_reported_and_stores_nothing() {
    let c = Collector::init();
    let feed = c.tmp.path().join("bad.txt");
    fs::write(&feed, "not an indicator\n").unwrap();
    ok(
        "picket-collector",
        &[
            "source",
            "add",
            "--data",
            c.data(),
            "--name",
            "bad",
            "--kind",
            "list",
            "--location",
            s(&feed),
        ],
    );
    let out = run("picket-collector", &["pull", "--data", c.data()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.txt:1: cannot tell what"));
    let listed = ok("picket-collector", &["source", "list", "--data", c.data()]);
    assert!(listed.contains("FAILED"), "{listed}");
    let ind = ok("picket-collector", &["indicators", "list", "--data", c.data()]);
    assert!(ind.is_empty(), "{ind}");
    let dup = run(
        "picket-collector",
        &[
            "source",
            "add",
            "--data",
            c.data(),
            "--name",
            "bad",
            "--kind",
            "list",
            "--location",
            s(&feed),
        ],
    );
    assert_eq!(dup.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
}
