//! `picket-agent explain` with the real binaries: on a state directory whose spool holds
//! batches (the daemon ran with no collector to send them to), it prints each batch's numbers
//! and items exactly as the spool files hold them, the location mode and the file it comes
//! from, and nothing of the local paths that mode keeps on the host.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;
use std::path::Path;
use std::time::Duration;

use picket_e2e::{eicar_indicator, import_ok, ok, run, s, wait_line, Daemon, SetSigner, EICAR};
use picket_proto::wire::Batch;

/// Every batch file in the spool of `state`, decoded, by (epoch, seq).
fn spool_files(state: &Path) -> Vec<Batch> {
    let dir = state.join(picket_agent::spool::SPOOL_DIR);
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        // `<epoch hex>-<seq>.pkt`, beside `state.pkt`.
        let Some((epoch, seq)) = name.strip_suffix(".pkt").and_then(|n| n.split_once('-')) else {
            continue;
        };
        let (epoch, seq) = (u64::from_str_radix(epoch, 16).unwrap(), seq.parse().unwrap());
        let bytes = fs::read(dir.join(&name)).unwrap();
        out.push(picket_agent::spool::decode_batch(&bytes, epoch, seq).unwrap());
    }
    out.sort_by_key(|b| (b.epoch, b.seq));
    out
}

#[test]
fn explain_shows_the_spooled_batches_exactly_and_the_location_mode_in_force() {
    let tmp = tempfile::tempdir().unwrap();
    let watched = tmp.path().join("watched-private-folder");
    fs::create_dir_all(&watched).unwrap();
    fs::write(watched.join("first.com"), EICAR).unwrap();
    fs::write(watched.join("second.com"), EICAR).unwrap();
    let state = tmp.path().join("state");
    let mut signer = SetSigner::new(tmp.path());
    let set = signer.write("v1.pkt", &[eicar_indicator()]);
    import_ok(&state, &signer.anchor(), &set);
    // No [collector] section: the daemon spools what it would send, and nothing leaves.
    let config = tmp.path().join("agent.toml");
    fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n[scan]\nroots = [{watched:?}]\n[processes]\nenabled = false\n[connections]\nenabled = false\n[sightings]\nlocation = \"name\"\n",
            state = s(&state),
            watched = s(&watched)
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&config);
    wait_line(&d.stdout, "first.com", Duration::from_secs(20));
    wait_line(&d.stdout, "second.com", Duration::from_secs(20));
    // SIGTERM: the daemon queues what is pending and stops, leaving the spool to explain.
    d.signal("TERM");
    assert!(d
        .exit_within(Duration::from_secs(10))
        .is_some_and(|st| st.success()));

    let on_disk = spool_files(&state);
    assert!(!on_disk.is_empty(), "the daemon spooled nothing");
    let out = ok(
        "picket-agent",
        &["explain", "--state", s(&state), "--config", s(&config), "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["location"], "name");
    assert_eq!(v["config"], s(&config));
    assert_eq!(v["collector"], serde_json::Value::Null);
    // The batches, in order, with the numbers and items the spool files hold.
    let batches = v["spool"]["batches"].as_array().unwrap();
    assert_eq!(batches.len(), on_disk.len());
    for (shown, held) in batches.iter().zip(&on_disk) {
        assert_eq!(shown["epoch"], held.epoch);
        assert_eq!(shown["seq"], held.seq);
        let items = shown["items"].as_array().unwrap();
        assert_eq!(items.len(), held.items.len());
        for (i, r) in items.iter().zip(&held.items) {
            assert_eq!(i["indicator"], r.indicator.as_str());
            assert_eq!(i["what"], r.what.as_str());
            assert_eq!(i["observed"], r.observed.name());
            assert_eq!(i["location"], serde_json::json!(r.location));
            assert_eq!(i["first_seen"], r.first_seen);
            assert_eq!(i["last_seen"], r.last_seen);
            assert_eq!(i["count"], r.count);
            assert_eq!(i["set_version"], r.set_version);
        }
    }
    assert_eq!(on_disk[0].seq, 1);
    let mut locations: Vec<String> = on_disk
        .iter()
        .flat_map(|b| b.items.iter().filter_map(|i| i.location.clone()))
        .collect();
    locations.sort();
    locations.dedup();
    assert_eq!(locations, ["first.com", "second.com"]);
    // The sightings recorded here, as reports: both files, by name only.
    let reports = v["sightings"].as_array().unwrap();
    assert_eq!(reports.len(), 2, "{out}");
    assert!(reports.iter().all(|r| r["indicator"] == "indicator--eicar"));
    // Under `name`, the folder the files are in stays on the host.
    assert!(!out.contains("watched-private-folder"), "{out}");

    // The text form says the same, with the mode's origin.
    let text = ok(
        "picket-agent",
        &["explain", "--state", s(&state), "--config", s(&config)],
    );
    assert!(
        text.contains(&format!("location = \"name\" (from {})", s(&config))),
        "{text}"
    );
    let first = &on_disk[0];
    assert!(
        text.contains(&format!(
            "batch {:016x}/1: {} item(s)",
            first.epoch,
            first.items.len()
        )),
        "{text}"
    );
    assert!(text.contains("collector: none configured"), "{text}");
    assert!(!text.contains("watched-private-folder"), "{text}");
    // Explaining changed nothing: the same files are held.
    assert_eq!(spool_files(&state), on_disk);

    // While a daemon runs, the spool changes under it: explain refuses rather than guess.
    let d = Daemon::start(&config);
    wait_line(&d.stderr, "scan done", Duration::from_secs(20));
    let out = run("picket-agent", &["explain", "--state", s(&state)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a daemon is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
