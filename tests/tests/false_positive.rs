//! False positives with the real binaries: `sightings fp` marks an indicator, the next publish
//! leaves it out of the set (so an agent stops finding it), every view says it is marked and
//! why, `--undo` puts it back, and an unknown id is refused by name.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;
use std::path::Path;

use picket_e2e::{import_ok, ok, run, s, Collector, EICAR, EICAR_SHA256};

/// `indicators list --json`, one object per indicator.
fn indicators(c: &Collector) -> Vec<serde_json::Value> {
    ok(
        "picket-collector",
        &["indicators", "list", "--data", c.data(), "--json"],
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// Exports the current set, installs it on the agent, and scans `file`: whether it was found.
fn agent_finds(c: &Collector, state: &Path, name: &str, file: &Path) -> bool {
    let set = c.export(name);
    import_ok(state, &c.anchor(), &set);
    let out = run("picket-agent", &["scan", "--state", s(state), s(file)]);
    match out.status.code() {
        Some(0) => false,
        Some(1) => true,
        other => panic!("scan exited {other:?}: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[test]
fn a_false_positive_leaves_the_set_until_undone_and_every_view_says_why() {
    let c = Collector::init();
    c.ingest_list("feed.txt", &[EICAR_SHA256, "198.51.100.7"]);
    let rows = indicators(&c);
    assert_eq!(rows.len(), 2);
    let id_of = |rows: &[serde_json::Value], ends: &str| -> String {
        rows.iter()
            .find(|r| r["value"].as_str().unwrap().ends_with(ends))
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let eicar = id_of(&rows, EICAR_SHA256);
    let other = id_of(&rows, "198.51.100.7");
    let published = c.publish(&[]);
    assert!(published.contains("with 2 indicators"), "{published}");

    let state = c.tmp.path().join("agent");
    let sample = c.tmp.path().join("sample.com");
    fs::write(&sample, EICAR).unwrap();
    assert!(agent_finds(&c, &state, "v1.pkt", &sample));

    // An id the collector does not hold is refused, by name, and nothing is marked.
    for args in [
        vec!["--reason", "x", "indicator--0000-not-here"],
        vec!["--undo", "indicator--0000-not-here"],
    ] {
        let mut full = vec!["sightings", "fp", "--data", c.data()];
        full.extend(args);
        let out = run("picket-collector", &full);
        assert_eq!(out.status.code(), Some(2), "{full:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("indicator--0000-not-here"), "{err}");
    }
    // Undoing a mark that is not there says so.
    let out = run(
        "picket-collector",
        &["sightings", "fp", "--data", c.data(), "--undo", &eicar],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not marked"));
    assert_eq!(
        ok(
            "picket-collector",
            &["sightings", "fp", "--data", c.data(), "--list"]
        ),
        ""
    );

    let said = ok(
        "picket-collector",
        &[
            "sightings",
            "fp",
            "--data",
            c.data(),
            &eicar,
            "--reason",
            "the AV test file our QA team drops",
        ],
    );
    assert!(said.contains(&eicar), "{said}");

    // The next publish (no --force: the mark alone changes the content) leaves it out, and says
    // so in its per-reason count.
    let published = ok("picket-collector", &["publish", "--data", c.data()]);
    assert!(published.contains("with 1 indicators"), "{published}");
    assert!(published.contains("1 false positive"), "{published}");
    assert!(!agent_finds(&c, &state, "v2.pkt", &sample));

    // Every view says it is marked and why.
    let rows = indicators(&c);
    let row = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(row(&eicar)["published"], false);
    assert_eq!(
        row(&eicar)["excluded"],
        "marked a false positive (the AV test file our QA team drops)"
    );
    assert_eq!(
        row(&eicar)["false_positive"]["reason"],
        "the AV test file our QA team drops"
    );
    assert_eq!(row(&other)["published"], true);
    assert_eq!(row(&other)["false_positive"], serde_json::Value::Null);
    let shown: serde_json::Value = serde_json::from_str(&ok(
        "picket-collector",
        &["indicators", "show", "--data", c.data(), "--json", &eicar],
    ))
    .unwrap();
    assert_eq!(
        shown["false_positive"]["reason"],
        "the AV test file our QA team drops"
    );
    let text = ok(
        "picket-collector",
        &["indicators", "show", "--data", c.data(), &eicar],
    );
    assert!(text.contains("the AV test file our QA team drops"), "{text}");
    let marks: Vec<serde_json::Value> = ok(
        "picket-collector",
        &["sightings", "fp", "--data", c.data(), "--list", "--json"],
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0]["indicator"], eicar.as_str());
    assert_eq!(marks[0]["reason"], "the AV test file our QA team drops");
    assert!(marks[0]["marked_at"].as_str().unwrap().ends_with('Z'));

    // Undone: the next publish puts it back, and the agent finds the file again.
    ok(
        "picket-collector",
        &["sightings", "fp", "--data", c.data(), "--undo", &eicar],
    );
    let published = ok("picket-collector", &["publish", "--data", c.data()]);
    assert!(published.contains("with 2 indicators"), "{published}");
    assert!(agent_finds(&c, &state, "v3.pkt", &sample));
    assert_eq!(
        indicators(&c).iter().filter(|r| r["published"] == true).count(),
        2
    );
}

#[test]
fn a_mark_needs_a_reason_without_control_characters() {
    let c = Collector::init();
    c.ingest_list("feed.txt", &[EICAR_SHA256]);
    let id = indicators(&c)[0]["id"].as_str().unwrap().to_owned();
    // clap refuses a mark without --reason; the collector refuses an empty or control-laden one.
    for args in [
        vec!["sightings", "fp", "--data", c.data(), &id],
        vec!["sightings", "fp", "--data", c.data(), &id, "--reason", "  "],
        vec![
            "sightings",
            "fp",
            "--data",
            c.data(),
            &id,
            "--reason",
            "a\x1b[2Jb",
        ],
    ] {
        let out = run("picket-collector", &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    assert_eq!(
        ok(
            "picket-collector",
            &["sightings", "fp", "--data", c.data(), "--list"]
        ),
        ""
    );
}
