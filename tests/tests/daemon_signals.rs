//! `picket-agent run` under signals, with the real binary: SIGTERM stops it cleanly (exit 0,
//! sightings saved), SIGHUP reloads its configuration (a new root is scanned; a broken file is
//! refused and the old configuration stays), and `picket-agent status --json` shows what the
//! daemon reports (spool depth, collector link) while `sightings --outbound` shows exactly what
//! would leave the host.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use picket_e2e::{eicar_indicator, import_ok, indicator, ok, s, wait_line, Daemon, SetSigner, EICAR};
use picket_proto::{NamePattern, Observable};

/// A state directory with `indicators` installed, and the path of its config file.
struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    config: PathBuf,
}

fn setup(indicators: &[picket_proto::Indicator]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("watched");
    fs::create_dir_all(&root).unwrap();
    let state = tmp.path().join("state");
    let mut signer = SetSigner::new(tmp.path());
    let v1 = signer.write("v1.pkt", indicators);
    import_ok(&state, &signer.anchor(), &v1);
    let config = tmp.path().join("agent.toml");
    let setup = Setup {
        root,
        state,
        config,
        _tmp: tmp,
    };
    write_config(&setup, &[&setup.root], "6h");
    setup
}

fn write_config(setup: &Setup, roots: &[&Path], rescan: &str) {
    let roots: Vec<String> = roots.iter().map(|r| format!("{:?}", s(r))).collect();
    fs::write(
        &setup.config,
        format!(
            "state_dir = {state:?}\n[scan]\nroots = [{roots}]\nrescan_interval = {rescan:?}\n\
             [processes]\nenabled = false\n[connections]\nenabled = false\n[limits]\ncpu_budget = 0.5\n",
            state = s(&setup.state),
            roots = roots.join(", "),
        ),
    )
    .unwrap();
}

fn status_json(state: &Path) -> serde_json::Value {
    serde_json::from_str(ok("picket-agent", &["status", "--state", s(state), "--json"]).trim()).unwrap()
}

#[test]
fn sigterm_stops_the_daemon_cleanly_and_saves_the_sighting_counts() {
    let st = setup(&[eicar_indicator()]);
    fs::write(st.root.join("sample.com"), EICAR).unwrap();
    // Rescans every second, so the count grows in memory; counts of known sightings are saved
    // only every 30 s or at a clean stop.
    write_config(&st, &[&st.root], "1s");
    let mut d = Daemon::start(&st.config);
    wait_line(&d.stdout, "sample.com", Duration::from_secs(15));
    wait_line(&d.stderr, "scan done", Duration::from_secs(15));
    wait_line(&d.stderr, "scan done", Duration::from_secs(15));
    let asked = Instant::now();
    d.signal("TERM");
    let status = d
        .exit_within(Duration::from_secs(3))
        .expect("the daemon exits within 3 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "took {:?}", asked.elapsed());
    wait_line(&d.stderr, "stopped", Duration::from_secs(1));

    let listed = ok("picket-agent", &["sightings", "--state", s(&st.state), "--json"]);
    let rows: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{listed}");
    assert!(
        rows[0]["count"].as_u64().unwrap() >= 2,
        "the counts of the rescans were saved at the stop: {listed}"
    );
    // The last status says the daemon stopped, rather than leaving it to look alive.
    let v = status_json(&st.state);
    assert_eq!(v["daemon"]["stopped"], true, "{v}");
    assert_eq!(v["daemon"]["running"], false, "{v}");
    // And the state directory is free for the next daemon.
    let mut again = Daemon::start(&st.config);
    wait_line(&again.stderr, "set version=1", Duration::from_secs(15));
    again.signal("TERM");
    assert_eq!(again.exit_within(Duration::from_secs(3)).unwrap().code(), Some(0));
}

#[test]
fn sighup_with_a_new_root_scans_it() {
    let st = setup(&[eicar_indicator()]);
    let d = Daemon::start(&st.config);
    wait_line(&d.stderr, "scan done", Duration::from_secs(15));
    let added = st.root.parent().unwrap().join("added");
    fs::create_dir_all(&added).unwrap();
    write_config(&st, &[&st.root, &added], "6h");
    d.signal("HUP");
    wait_line(&d.stderr, "configuration reloaded", Duration::from_secs(5));
    let planted = added.join("payload.bin");
    fs::write(&planted, EICAR).unwrap();
    let line = wait_line(&d.stdout, "payload.bin", Duration::from_secs(10));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["value"], s(&planted));
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let st = setup(&[eicar_indicator()]);
    let mut d = Daemon::start(&st.config);
    wait_line(&d.stderr, "scan done", Duration::from_secs(15));
    fs::write(
        &st.config,
        format!(
            "state_dir = {:?}\n[scan]\nroots = [\"relative/path\"]\n",
            s(&st.state)
        ),
    )
    .unwrap();
    d.signal("HUP");
    let err = wait_line(&d.stderr, "error", Duration::from_secs(5));
    assert!(
        err.contains(&format!("{}: scan.roots", st.config.display())),
        "names the file and the key: {err}"
    );
    assert!(err.contains("in force stays"), "{err}");
    assert!(
        d.child.0.try_wait().unwrap().is_none(),
        "the daemon keeps running"
    );
    // Still watching the old root.
    fs::write(st.root.join("after.bin"), EICAR).unwrap();
    wait_line(&d.stdout, "after.bin", Duration::from_secs(10));
}

#[test]
fn status_shows_the_spool_after_a_detection_and_outbound_shows_what_leaves() {
    let st = setup(&[
        eicar_indicator(),
        indicator(
            "indicator--lnk",
            Observable::FileName(NamePattern {
                text: "*.lnk".into(),
                glob: true,
            }),
        ),
    ]);
    let d = Daemon::start(&st.config);
    wait_line(&d.stderr, "scan done", Duration::from_secs(15));
    fs::write(st.root.join("dropper.exe"), EICAR).unwrap();
    fs::write(st.root.join("quarterly-salaries.lnk"), b"shortcut").unwrap();
    wait_line(&d.stdout, "dropper.exe", Duration::from_secs(10));
    wait_line(&d.stdout, "quarterly-salaries.lnk", Duration::from_secs(10));

    // The status file follows within a tick or two.
    let deadline = Instant::now() + Duration::from_secs(5);
    let v = loop {
        let v = status_json(&st.state);
        if v["spool"]["depth"].as_u64().unwrap_or(0) >= 1 && v["daemon"]["sightings"] == 2 {
            break v;
        }
        assert!(Instant::now() < deadline, "no spool depth in the status: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(v["set_version"], 1, "{v}");
    assert_eq!(v["daemon"]["running"], true, "{v}");
    assert_eq!(v["spool"]["dropped"], 0, "{v}");
    assert!(v["spool"]["last_seq"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["collector"]["enrolled"], false, "{v}");
    assert_eq!(v["collector"]["connected"], false, "{v}");
    assert!(v["last_scan"]["finished"].as_i64().is_some(), "{v}");
    let text = ok("picket-agent", &["status", "--state", s(&st.state)]);
    assert!(text.contains("daemon: running"), "{text}");
    assert!(text.contains("collector: not enrolled"), "{text}");

    // What would leave: the digest match with its location, the glob match without one.
    let out = ok(
        "picket-agent",
        &["sightings", "--state", s(&st.state), "--outbound", "--json"],
    );
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    let by_hash = rows
        .iter()
        .find(|r| r["indicator"] == "indicator--eicar")
        .unwrap();
    assert!(
        by_hash["location"]
            .as_str()
            .unwrap()
            .ends_with("/watched/dropper.exe"),
        "{out}"
    );
    assert_eq!(by_hash["what"], "sha256");
    let by_glob = rows.iter().find(|r| r["indicator"] == "indicator--lnk").unwrap();
    assert_eq!(by_glob["location"], serde_json::Value::Null, "{out}");
    assert!(!out.contains("salaries"), "the matched name never leaves: {out}");
    for r in &rows {
        assert_eq!(r["first_seen"].as_i64().unwrap() % 60, 0, "{r}");
        assert_eq!(r["last_seen"].as_i64().unwrap() % 60, 0, "{r}");
    }
}
