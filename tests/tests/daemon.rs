//! `picket-agent run`, the daemon, with the real binary: a file written under a watched root is
//! found within seconds, a new set is picked up without a restart, and sightings are recorded
//! once per (indicator, observable) across rescans and restarts.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use picket_e2e::{bin, eicar_indicator, import_ok, indicator, ok, s, wait_line, Daemon, SetSigner, EICAR};
use picket_proto::{NamePattern, Observable};

#[test]
fn the_daemon_finds_a_new_file_within_seconds_and_follows_set_updates() {
    let tmp = tempfile::tempdir().unwrap();
    let watched = tmp.path().join("watched");
    fs::create_dir_all(watched.join("existing")).unwrap();
    fs::write(watched.join("existing/old.com"), EICAR).unwrap();
    // The hash cache trusts only files whose change time is at least 2 s older than their hash
    // (a same-size rewrite within one timestamp tick would otherwise keep its old digest), so
    // let this file's change time age past that margin: the real clock is what is tested.
    std::thread::sleep(Duration::from_millis(2100));
    let state = tmp.path().join("state");
    let mut signer = SetSigner::new(tmp.path());
    let v1 = signer.write("v1.pkt", &[eicar_indicator()]);
    import_ok(&state, &signer.anchor(), &v1);
    let config = tmp.path().join("agent.toml");
    fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n[scan]\nroots = [{watched:?}]\n[processes]\nenabled = false\n[connections]\nenabled = false\n[limits]\ncpu_budget = 0.5\n",
            state = s(&state),
            watched = s(&watched)
        ),
    )
    .unwrap();
    let d = Daemon::start(&config);
    // The initial scan finds what was already there.
    let first = wait_line(&d.stdout, "old.com", Duration::from_secs(30));
    assert!(first.contains("\"indicator\":\"indicator--eicar\""), "{first}");
    wait_line(&d.stderr, "scan done", Duration::from_secs(30));

    // A file written while the daemon runs, in a directory created after it started.
    fs::create_dir_all(watched.join("new/deeper")).unwrap();
    let planted = watched.join("new/deeper/dropper.exe");
    let written = Instant::now();
    fs::write(&planted, EICAR).unwrap();
    let line = wait_line(&d.stdout, "dropper.exe", Duration::from_secs(10));
    let found_in = written.elapsed();
    assert!(found_in < Duration::from_secs(5), "found after {found_in:?}");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["value"], s(&planted));
    assert_eq!(v["set_version"], 1);

    // A new set imported while the daemon runs is picked up, and matched against the hash cache.
    let v2 = signer.write(
        "v2.pkt",
        &[
            eicar_indicator(),
            indicator(
                "indicator--name",
                Observable::FileName(NamePattern {
                    text: "dropper.exe".into(),
                    glob: false,
                }),
            ),
        ],
    );
    import_ok(&state, &signer.anchor(), &v2);
    wait_line(&d.stderr, "set version=2", Duration::from_secs(15));
    let rescan = wait_line(&d.stderr, "scan done set_version=2", Duration::from_secs(30));
    // old.com comes from the cache; dropper.exe, written within the cache's margin, is read.
    assert!(
        rescan.contains("hashed=1 bytes=68 cached=1"),
        "unchanged files are not read again: {rescan}"
    );
    let by_name = wait_line(&d.stdout, "indicator--name", Duration::from_secs(10));
    assert!(by_name.contains("dropper.exe"), "{by_name}");
    drop(d);

    // Sightings: one record per (indicator, file), counted across the rescans.
    let listed = ok("picket-agent", &["sightings", "--state", s(&state), "--json"]);
    let rows: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3, "{listed}");
    let old = rows
        .iter()
        .find(|r| r["indicator"] == "indicator--eicar" && r["value"].as_str().unwrap().ends_with("old.com"))
        .unwrap();
    assert!(old["count"].as_u64().unwrap() >= 2, "seen by both scans: {old}");
}

/// Regression (noticed while packaging): one scan root that did not exist turned file events
/// off for every root, leaving the daemon to its rescans. The others are watched now.
#[test]
fn a_missing_scan_root_leaves_the_others_watched() {
    let tmp = tempfile::tempdir().unwrap();
    let watched = tmp.path().join("watched");
    fs::create_dir_all(&watched).unwrap();
    let missing = tmp.path().join("not-mounted-yet");
    let state = tmp.path().join("state");
    let mut signer = SetSigner::new(tmp.path());
    let v1 = signer.write("v1.pkt", &[eicar_indicator()]);
    import_ok(&state, &signer.anchor(), &v1);
    let config = tmp.path().join("agent.toml");
    fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n[scan]\nroots = [{watched:?}, {missing:?}]\nrescan_interval = \"1h\"\n[processes]\nenabled = false\n[connections]\nenabled = false\n",
            state = s(&state),
            watched = s(&watched),
            missing = s(&missing)
        ),
    )
    .unwrap();
    let d = Daemon::start(&config);
    let warned = wait_line(&d.stderr, "does not exist: not watched", Duration::from_secs(30));
    assert!(warned.contains("not-mounted-yet"), "{warned}");
    wait_line(&d.stderr, "scan done", Duration::from_secs(30));
    let written = Instant::now();
    fs::write(watched.join("dropper.exe"), EICAR).unwrap();
    wait_line(&d.stdout, "dropper.exe", Duration::from_secs(10));
    let found_in = written.elapsed();
    assert!(
        found_in < Duration::from_secs(5),
        "found after {found_in:?}: not by a file event"
    );
}

#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut signer = SetSigner::new(tmp.path());
    let v1 = signer.write("v1.pkt", &[eicar_indicator()]);
    import_ok(&state, &signer.anchor(), &v1);
    let config = tmp.path().join("agent.toml");
    fs::write(&config, format!("state_dir = {:?}\n", s(&state))).unwrap();
    let d = Daemon::start(&config);
    wait_line(&d.stderr, "set version=1", Duration::from_secs(15));
    let second = Command::new(bin("picket-agent"))
        .args(["run", "--config", s(&config)])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another picket-agent process"));
}

#[test]
fn a_bad_config_names_the_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("agent.toml");
    fs::write(&config, "state_dir = \"/x\"\n[limits]\nmemory_limit = \"lots\"\n").unwrap();
    let out = Command::new(bin("picket-agent"))
        .args(["run", "--config", s(&config)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: limits.memory_limit: \"lots\"", config.display())),
        "{err}"
    );
}
