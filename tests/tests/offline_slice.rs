//! The offline slice end to end, with the real binaries: a collector publishes the EICAR hashes,
//! an air-gapped agent imports the exported set file and scans a folder.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use picket_e2e::{import_ok, import_set, ok, run, s, Collector, EICAR, EICAR_MD5, EICAR_SHA1, EICAR_SHA256};

fn eicar_collector() -> Collector {
    let c = Collector::init();
    c.ingest_list(
        "eicar.txt",
        &["# EICAR test file", EICAR_SHA256, EICAR_SHA1, EICAR_MD5],
    );
    c
}

fn plant(dir: &Path) -> std::path::PathBuf {
    fs::create_dir_all(dir.join("docs/2026")).unwrap();
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::write(dir.join("docs/readme.txt"), "an ordinary file\n").unwrap();
    fs::write(dir.join("docs/2026/report.csv"), "a,b,c\n1,2,3\n").unwrap();
    fs::write(dir.join("bin/tool"), vec![0u8; 4096]).unwrap();
    let eicar = dir.join("docs/2026/invoice.pdf.exe");
    fs::write(&eicar, EICAR).unwrap();
    eicar
}

fn stored(state: &Path) -> Vec<u8> {
    fs::read(state.join("set.pkt")).expect("a stored set")
}

#[test]
fn eicar_is_found_after_an_offline_import() {
    let c = eicar_collector();
    c.publish(&[]);
    let set = c.export("set.pkt");
    let state = c.tmp.path().join("agent-state");
    let out = import_ok(&state, &c.anchor(), &set);
    assert!(out.contains("installed set version 1, 3 indicators"), "{out}");

    let folder = c.tmp.path().join("scanned");
    let eicar = plant(&folder);
    let scan = run(
        "picket-agent",
        &["scan", "--state", s(&state), "--json", s(&folder)],
    );
    assert_eq!(
        scan.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&scan.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(scan.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(lines.len(), 3, "one finding per matching hash kind: {lines:?}");
    for l in &lines {
        assert_eq!(l["path"], s(&eicar));
        assert!(l["indicator"].as_str().unwrap().starts_with("indicator--"));
    }
    let mut kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["md5", "sha1", "sha256"]);
    assert!(lines.iter().any(|l| l["value"] == EICAR_SHA256));

    // The same scan straight from the set file, without installing it.
    let direct = run(
        "picket-agent",
        &["scan", "--set", s(&set), "--trust", s(&c.anchor()), s(&folder)],
    );
    assert_eq!(direct.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&direct.stdout).contains(s(&eicar)));

    // Nothing to find: exit 0.
    fs::remove_file(&eicar).unwrap();
    let clean = run("picket-agent", &["scan", "--state", s(&state), s(&folder)]);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
}

#[test]
fn state_directory_and_key_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let c = eicar_collector();
    c.publish(&[]);
    let set = c.export("set.pkt");
    let state = c.tmp.path().join("agent-state");
    import_ok(&state, &c.anchor(), &set);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("set.pkt")), 0o600);
    assert_eq!(mode(&c.root_key()), 0o600);
    for key in fs::read_dir(c.data.join("keys")).unwrap() {
        assert_eq!(mode(&key.unwrap().path()), 0o600);
    }
    // The root private key is not inside the data directory.
    assert!(!c.root_key().starts_with(&c.data));
}

#[test]
fn rollback_and_tampering_are_refused_and_the_stored_set_is_unchanged() {
    let c = eicar_collector();
    let mut files = Vec::new();
    for v in 1..=5 {
        c.publish(&[]);
        files.push(c.export(&format!("set-{v}.pkt")));
    }
    let state = c.tmp.path().join("agent-state");
    let anchor = c.anchor();
    import_ok(&state, &anchor, &files[3]);
    let before = stored(&state);

    let old = import_set(&state, &anchor, &files[2]);
    assert_eq!(old.status.code(), Some(2));
    let err = String::from_utf8_lossy(&old.stderr);
    assert!(
        err.contains("rollback: timestamp version 3 is not newer than installed 4"),
        "{err}"
    );
    assert_eq!(stored(&state), before);

    // Flip one byte in the snapshot part of the next version's file.
    let mut bytes = fs::read(&files[4]).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x40;
    let tampered = c.tmp.path().join("tampered.pkt");
    fs::write(&tampered, &bytes).unwrap();
    let out = import_set(&state, &anchor, &tampered);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tampered.pkt"), "names the file: {err}");
    assert!(
        err.contains("snapshot: SHA-256 does not match the signed value"),
        "{err}"
    );
    assert_eq!(stored(&state), before);

    // A truncated file.
    fs::write(&tampered, &bytes[..n / 2]).unwrap();
    let out = import_set(&state, &anchor, &tampered);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set file: malformed"));
    assert_eq!(stored(&state), before);

    // The genuine file installs; importing it again changes nothing and is not an error.
    import_ok(&state, &anchor, &files[4]);
    let before = stored(&state);
    let again = import_ok(&state, &anchor, &files[4]);
    assert!(again.contains("already installed"), "{again}");
    assert_eq!(stored(&state), before);
}

#[test]
fn a_set_from_another_collector_is_refused() {
    let ours = eicar_collector();
    let theirs = eicar_collector();
    theirs.publish(&[]);
    let foreign = theirs.export("foreign.pkt");
    let state = ours.tmp.path().join("agent-state");
    let out = import_set(&state, &ours.anchor(), &foreign);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("root: signed by unknown key"), "{err}");
    assert!(!state.join("set.pkt").exists());
}

#[test]
fn an_expired_set_is_refused_when_only_the_clock_changed() {
    let c = eicar_collector();
    c.publish(&["--lifetime", "2s", "--timestamp-lifetime", "2s"]);
    let set = c.export("short.pkt");
    let state = c.tmp.path().join("agent-state");
    // Fresh: accepted.
    let fresh_state = c.tmp.path().join("fresh-state");
    import_ok(&fresh_state, &c.anchor(), &set);
    // Nothing but the clock changes: the real clock, so this test waits for it.
    sleep(Duration::from_millis(3100));
    let out = import_set(&state, &c.anchor(), &set);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("freeze: timestamp expired at"), "{err}");
    assert!(!state.join("set.pkt").exists());
    let scan = run(
        "picket-agent",
        &[
            "scan",
            "--set",
            s(&set),
            "--trust",
            s(&c.anchor()),
            s(c.tmp.path()),
        ],
    );
    assert_eq!(scan.status.code(), Some(2));

    // The installed set went stale: scan keeps matching and warns, unless freshness is required.
    let folder = c.tmp.path().join("scanned");
    plant(&folder);
    let stale = run("picket-agent", &["scan", "--state", s(&fresh_state), s(&folder)]);
    assert_eq!(stale.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stale.stderr).contains("is stale"));
    let strict = run(
        "picket-agent",
        &["scan", "--state", s(&fresh_state), "--require-fresh", s(&folder)],
    );
    assert_eq!(strict.status.code(), Some(2));
    let status = ok("picket-agent", &["status", "--state", s(&fresh_state), "--json"]);
    let v: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(v["fresh"], false);
}

#[test]
fn a_refreshed_timestamp_renews_freshness_without_a_new_set_version() {
    let c = eicar_collector();
    c.publish(&[]);
    let first = c.export("first.pkt");
    ok(
        "picket-collector",
        &["timestamp", "--data", c.data(), "--lifetime", "7d"],
    );
    let second = c.export("second.pkt");
    let state = c.tmp.path().join("agent-state");
    import_ok(&state, &c.anchor(), &first);
    let out = import_ok(&state, &c.anchor(), &second);
    assert!(
        out.contains("set version 1 unchanged; freshness renewed"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(ok("picket-agent", &["status", "--state", s(&state), "--json"]).trim()).unwrap();
    assert_eq!(v["set_version"], 1);
    assert_eq!(v["timestamp_version"], 2);
}

#[test]
fn a_delta_export_updates_an_agent_on_the_base_version() {
    let c = eicar_collector();
    c.publish(&[]);
    let v1 = c.export("v1.pkt");
    c.ingest_list("more.txt", &["198.51.100.7", "2001:db8::/32"]);
    c.publish(&[]);
    let delta = c.tmp.path().join("delta.pkt");
    ok(
        "picket-collector",
        &[
            "export-set",
            "--data",
            c.data(),
            "--out",
            s(&delta),
            "--since",
            "1",
        ],
    );
    let state = c.tmp.path().join("agent-state");
    import_ok(&state, &c.anchor(), &v1);
    let out = import_ok(&state, &c.anchor(), &delta);
    assert!(
        out.contains("installed set version 2 (was 1), 5 indicators"),
        "{out}"
    );
    // A fresh agent cannot use a delta.
    let fresh = c.tmp.path().join("fresh");
    let out = import_set(&fresh, &c.anchor(), &delta);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("delta: no delta on offer from installed version 0")
    );
}

#[test]
fn a_junk_line_names_file_and_line_and_stores_nothing_from_that_file() {
    let c = Collector::init();
    let bad = c.tmp.path().join("bad.txt");
    fs::write(&bad, format!("{EICAR_SHA256}\n# fine so far\nnot an indicator\n")).unwrap();
    let good = c.tmp.path().join("good.txt");
    fs::write(&good, format!("{EICAR_MD5}\n")).unwrap();
    let out = run(
        "picket-collector",
        &["ingest", "--data", c.data(), s(&bad), s(&good)],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3: cannot tell what \"not an indicator\" is",
            bad.display()
        )),
        "{err}"
    );
    // Only the good file's one indicator was stored.
    let published = c.publish(&[]);
    assert!(published.contains("with 1 indicators"), "{published}");
}

#[test]
fn root_and_publisher_keys_rotate_offline_and_agents_follow() {
    let c = eicar_collector();
    c.publish(&[]);
    let v1 = c.export("v1.pkt");
    let state = c.tmp.path().join("agent-state");
    import_ok(&state, &c.anchor(), &v1);

    // Offline: a new root key replaces the old one, and a new publisher key comes in.
    let tmp = c.tmp.path();
    let new_root_key = tmp.join("root-2.key");
    let new_root_pub = ok("picket-collector", &["root", "keygen", "--out", s(&new_root_key)]);
    let new_publisher = ok(
        "picket-collector",
        &["keys", "new", "--data", c.data(), "--role", "publisher"],
    );
    let current = tmp.join("root-1.pkt");
    ok(
        "picket-collector",
        &["root", "export", "--data", c.data(), "--out", s(&current)],
    );
    let old_root_pub = fs::read_to_string(c.anchor())
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("key: ").map(str::to_owned))
        .unwrap();
    let next = tmp.join("root-2.pkt");
    let rotate = |signers: &[&Path]| {
        let _ = fs::remove_file(&next);
        let mut args = vec![
            "root",
            "rotate",
            "--current",
            s(&current),
            "--out",
            s(&next),
            "--add-key",
            new_root_pub.trim(),
            "--remove-key",
            &old_root_pub,
            "--publisher",
            new_publisher.trim(),
        ];
        for k in signers {
            args.extend(["--sign", s(k)]);
        }
        ok("picket-collector", &args)
    };
    // Signed by the new key alone: the collector refuses to install it.
    rotate(&[&new_root_key]);
    let out = run(
        "picket-collector",
        &["root", "install", "--data", c.data(), s(&next)],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("root version 2: root: signed by unknown key"),
        "{err}"
    );
    // Signed by the old key too (gathered with `root sign`): accepted.
    ok(
        "picket-collector",
        &["root", "sign", "--key", s(&c.root_key()), s(&next)],
    );
    ok(
        "picket-collector",
        &["root", "install", "--data", c.data(), s(&next)],
    );

    c.ingest_list("more.txt", &["198.51.100.7"]);
    c.publish(&[]);
    let v2 = c.export("v2.pkt");
    let out = import_ok(&state, &c.anchor(), &v2);
    assert!(out.contains("installed set version 2 (was 1)"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(ok("picket-agent", &["status", "--state", s(&state), "--json"]).trim()).unwrap();
    assert_eq!(v["root_version"], 2);
    // A new agent bootstraps from the new anchor, which pins root version 2.
    let fresh = tmp.join("fresh-state");
    import_ok(&fresh, &c.anchor(), &v2);
}
