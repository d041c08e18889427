//! What reaches endpoints: the collector's allowlists, TLP ceiling and indicator views, with the
//! real binary.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;

use picket_e2e::{ok, run, s, Collector, EICAR_MD5, EICAR_SHA256};

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn allowlisted_and_red_indicators_never_reach_agents_and_say_why() {
    let c = Collector::init();
    c.ingest_list(
        "feed.txt",
        &[EICAR_SHA256, EMPTY_SHA256, "198.51.100.9", "203.0.113.0/24"],
    );
    let red = c.tmp.path().join("red.txt");
    fs::write(&red, format!("{EICAR_MD5}\n")).unwrap();
    ok(
        "picket-collector",
        &["ingest", "--data", c.data(), "--tlp", "red", s(&red)],
    );
    ok(
        "picket-collector",
        &[
            "allowlist",
            "add",
            "--data",
            c.data(),
            "--reason",
            "our web proxy",
            "198.51.100.9",
        ],
    );
    let published = c.publish(&[]);
    assert!(published.contains("with 2 indicators"), "{published}");
    assert!(published.contains("1 above the TLP ceiling"), "{published}");
    assert!(published.contains("2 allowlisted"), "{published}");

    let listed = ok(
        "picket-collector",
        &["indicators", "list", "--data", c.data(), "--json"],
    );
    let rows: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 5);
    let why = |value: &str| {
        rows.iter()
            .find(|r| r["value"].as_str().unwrap().ends_with(value))
            .map(|r| r["excluded"].clone())
            .unwrap()
    };
    assert_eq!(why(EMPTY_SHA256), "allowlisted (built in: the empty file)");
    assert_eq!(why("198.51.100.9"), "allowlisted (our web proxy)");
    assert_eq!(why(EICAR_MD5), "TLP:RED is above the channel's TLP ceiling");
    assert_eq!(why(EICAR_SHA256), serde_json::Value::Null);

    let found = ok(
        "picket-collector",
        &["indicators", "search", "--data", c.data(), "203.0.113"],
    );
    assert!(found.contains("remote-addr:203.0.113.0/24"), "{found}");
    let id = rows
        .iter()
        .find(|r| r["value"].as_str().unwrap().ends_with(EICAR_SHA256))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = ok(
        "picket-collector",
        &["indicators", "show", "--data", c.data(), "--json", &id],
    );
    let v: serde_json::Value = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(v["sources"], serde_json::json!(["feed.txt"]));
    assert_eq!(v["published"], true);

    // Taking the proxy off the allowlist puts it in the next version.
    ok(
        "picket-collector",
        &["allowlist", "remove", "--data", c.data(), "198.51.100.9"],
    );
    assert!(c.publish(&[]).contains("with 3 indicators"));
    let bad = run(
        "picket-collector",
        &[
            "allowlist",
            "add",
            "--data",
            c.data(),
            "--reason",
            "x",
            "not-a-value",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn one_value_from_two_sources_is_one_indicator_remembering_both() {
    let c = Collector::init();
    c.ingest_list("first.txt", &[EICAR_SHA256]);
    c.ingest_list("second.txt", &[&EICAR_SHA256.to_uppercase()]);
    let listed = ok(
        "picket-collector",
        &["indicators", "list", "--data", c.data(), "--json"],
    );
    let rows: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["sources"], serde_json::json!(["first.txt", "second.txt"]));
}
