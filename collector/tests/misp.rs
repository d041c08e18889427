//! MISP ingest against real events (../shared/data/misp, read in place) and against feed
//! directories and malformed files built here from the test's own fixtures.
//!
//! The shared files are PyMISP's test events (see ../shared/data/README.md). Their directory is
//! `$PICKET_SHARED_DATA/misp`, by default `../shared/data/misp` next to the workspace; a test
//! that needs it fails, rather than passes, when it is missing. Everything else here (feeds,
//! malformed input, routing) runs on fixtures written by the tests themselves.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use picket_collector::ingest::{parse_event, parse_feed_dir, parse_file, Batch, Defaults, Item};
use picket_collector::CollectorError;
use picket_proto::{FileCondition, Hash, HashKind, NamePattern, Observable, Record, Severity, Tlp};
use serde_json::json;

mod common;
use common::shared_data;

fn defaults() -> Defaults {
    Defaults {
        source: "misp".into(),
        tlp: Tlp::Amber,
        confidence: 70,
        severity: Severity::Medium,
    }
}

fn ingest(path: &Path) -> Batch {
    let text = fs::read_to_string(path).unwrap();
    let batch = parse_file(path, &text, &defaults()).unwrap_or_else(|e| panic!("{e}"));
    for item in &batch.items {
        Record::from_indicator(&item.indicator).unwrap_or_else(|e| {
            panic!(
                "{}: {} is not a valid record: {e}",
                path.display(),
                item.indicator.id
            )
        });
    }
    batch
}

fn reasons(batch: &Batch) -> BTreeMap<String, usize> {
    batch.unsupported_by_reason().into_iter().collect()
}

fn kinds(batch: &Batch) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for item in &batch.items {
        *out.entry(item.indicator.observable.kind_name()).or_default() += 1;
    }
    out
}

#[test]
fn every_shared_misp_file_ingests() {
    let mut seen = 0;
    for entry in fs::read_dir(shared_data("misp")).unwrap() {
        let path = entry.unwrap().path();
        let batch = ingest(&path);
        assert!(
            !batch.items.is_empty() || !batch.unsupported.is_empty(),
            "{}: nothing at all came out",
            path.display()
        );
        seen += 1;
    }
    assert_eq!(seen, 3, "the three PyMISP example events");
}

/// existing_event.json is a bare event (no `{"Event": ...}` wrapper), CIRCL's "OSINT - Sednit
/// update". Counted from the file itself (jq or Python over `Attribute` and `Object`):
///
/// - 9 attributes: 7 `domain` with to_ids (unsupported: not matchable on an endpoint), one
///   `link` and one `text` without to_ids (unsupported: to_ids false).
/// - 49 objects: 37 `file` objects, each with a to_ids `sha1`, 15 of them also with a to_ids
///   `filename` (none holds a path), and a `state` text without to_ids; and 12 `domain-ip`
///   objects, each with a to_ids `domain` and a to_ids `ip-dst` (11 distinct addresses; each
///   attribute keeps its own uuid, so 12 indicators).
///
/// So: 37 file indicators, one per object (15 name-and-sha1 compounds, 22 plain SHA-1 hashes),
/// plus 12 addresses = 49 items; 7 + 12 = 19 domains and 2 to_ids-false attributes unsupported.
#[test]
fn existing_event_yields_its_37_file_objects_as_one_indicator_each() {
    let path = shared_data("misp").join("existing_event.json");
    let text = fs::read_to_string(&path).unwrap();
    let batch = ingest(&path);
    assert_eq!(batch.items.len(), 49);
    assert_eq!(
        kinds(&batch),
        BTreeMap::from([("file-all", 15), ("file-hash", 22), ("remote-addr", 12)])
    );
    assert_eq!(
        reasons(&batch),
        BTreeMap::from([
            ("misp: domain is not matchable on an endpoint".to_owned(), 19),
            ("misp: to_ids false".to_owned(), 2),
        ])
    );

    // The 37 file indicators carry exactly the 37 file objects' uuids.
    let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
    let file_objects: Vec<String> = raw["Object"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["name"] == "file")
        .map(|o| format!("indicator--{}", o["uuid"].as_str().unwrap()))
        .collect();
    assert_eq!(file_objects.len(), 37);
    let by_id: BTreeMap<&str, &Item> = batch.items.iter().map(|i| (i.indicator.id.as_str(), i)).collect();
    for id in &file_objects {
        let item = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("no indicator for {id}"));
        match &item.indicator.observable {
            Observable::FileHash { hash, size: None } => assert_eq!(hash.kind, HashKind::Sha1),
            Observable::FileAll(conds) => {
                assert_eq!(conds.len(), 2, "{conds:?}");
                assert!(matches!(&conds[0], FileCondition::Hash(h) if h.kind == HashKind::Sha1));
                assert!(matches!(&conds[1], FileCondition::Name(n) if !n.glob));
            }
            other => panic!("{id}: {other:?}"),
        }
    }

    // One of them in full: "Bulletin.doc" with its SHA-1, as one compound.
    let bulletin = &by_id["indicator--5a3cd5b6-9568-4342-b2ab-4c62950d210f"];
    assert_eq!(
        bulletin.indicator.observable,
        Observable::FileAll(vec![
            FileCondition::Hash(Hash::from_hex("68064fc152e23d56e541714af52651cb4ba81aaf").unwrap()),
            FileCondition::Name(NamePattern {
                text: "Bulletin.doc".into(),
                glob: false
            }),
        ])
    );
    assert_eq!(bulletin.modified, Some(1513936310));

    // Event-wide metadata: tlp:white, CIRCL, distribution 5 ("inherit") resolved to the
    // event's 3, threat level 3 (low).
    for item in &batch.items {
        assert_eq!(item.indicator.meta.tlp, Tlp::Clear, "{}", item.indicator.id);
        assert_eq!(item.indicator.meta.severity, Severity::Low);
        assert_eq!(item.indicator.meta.confidence, 70);
        assert_eq!(item.created_by.as_deref(), Some("CIRCL"));
        assert_eq!(item.distribution, Some(3));
        assert!(!item.revoked);
    }
}

/// The small CIRCL event: a to_ids filename, md5, sha1 and sha256 become four indicators; the
/// two links, the comment and the text are context; a registry key is not matchable.
#[test]
fn small_event_with_hash_attributes() {
    let batch = ingest(&shared_data("misp").join("57c4445b-c548-4654-af0b-4be3950d210f.json"));
    assert_eq!(batch.items.len(), 4);
    assert_eq!(
        kinds(&batch),
        BTreeMap::from([("file-hash", 3), ("file-name", 1)])
    );
    assert_eq!(
        reasons(&batch),
        BTreeMap::from([
            ("misp: to_ids false".to_owned(), 4),
            ("misp: type regkey|value".to_owned(), 1),
        ])
    );
    let ids: Vec<&str> = batch.items.iter().map(|i| i.indicator.id.as_str()).collect();
    assert!(
        ids.contains(&"indicator--57c4448b-454c-4d17-90d1-4d2f950d210f"),
        "{ids:?}"
    );
    for item in &batch.items {
        assert_eq!(item.indicator.meta.tlp, Tlp::Clear);
        assert_eq!(item.created_by.as_deref(), Some("CIRCL"));
        // The event has no distribution, and the attributes none of their own.
        assert_eq!(item.distribution, None);
    }
}

/// sighting_1.json comes from PyMISP's report tests. Despite its name it is an ordinary event
/// whose attributes carry MISP sightings (`Sighting` arrays): it is ingested as an event, its
/// four to_ids domains and one URL are listed as unsupported, and the sightings are not
/// indicators (MISP sightings are not read by this parser).
#[test]
fn sighting_file_is_an_event_of_domains_and_a_url() {
    let batch = ingest(&shared_data("misp").join("sighting_1.json"));
    assert!(batch.items.is_empty(), "{:?}", batch.items);
    assert_eq!(
        reasons(&batch),
        BTreeMap::from([
            ("misp: domain is not matchable on an endpoint".to_owned(), 4),
            ("misp: url is not matchable on an endpoint".to_owned(), 1),
        ])
    );
    assert!(batch
        .unsupported
        .iter()
        .any(|u| u.id == "indicator--5b6464ca-e73c-4707-9b8a-d0350acd0835"));
}

#[test]
fn truncated_shared_event_names_file_and_position() {
    let path = shared_data("misp").join("existing_event.json");
    let text = fs::read_to_string(&path).unwrap();
    let cut = &text[..text.len() / 2];
    let err = parse_file(&path, cut, &defaults()).unwrap_err().to_string();
    let lines = cut.lines().count();
    assert!(
        err.starts_with(&format!("{}:{lines}: column ", path.display())),
        "{err}"
    );
    assert!(err.contains("EOF"), "{err}");
}

// Fixtures of our own.

const MD5: &str = "44d88612fea8a8f36de82e1278abb02f";
const SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
const EVENT_A: &str = "11111111-2222-4333-8444-555555555555";
const EVENT_B: &str = "66666666-7777-4888-9999-aaaaaaaaaaaa";

fn fixture_a() -> serde_json::Value {
    json!({"Event": {
        "uuid": EVENT_A, "info": "fixture A", "timestamp": "1700000000", "distribution": "1",
        "threat_level_id": "2", "Orgc": {"name": "Example CERT"},
        "Tag": [{"name": "tlp:green"}],
        "Attribute": [
            {"uuid": "a0000000-0000-4000-8000-000000000001", "type": "sha256", "value": SHA256,
             "to_ids": true, "distribution": "5"},
            {"uuid": "a0000000-0000-4000-8000-000000000002", "type": "ip-dst|port",
             "value": "203.0.113.9|8443", "to_ids": true, "Tag": [{"name": "tlp:amber"}]},
            {"uuid": "a0000000-0000-4000-8000-000000000003", "type": "url",
             "value": "http://203.0.113.9/x", "to_ids": true}
        ],
        "Object": [
            {"uuid": "a0000000-0000-4000-8000-000000000004", "name": "file", "Attribute": [
                {"uuid": "a0000000-0000-4000-8000-000000000005", "type": "md5", "value": MD5, "to_ids": true},
                {"uuid": "a0000000-0000-4000-8000-000000000006", "type": "size-in-bytes", "value": "68", "to_ids": false},
                {"uuid": "a0000000-0000-4000-8000-000000000007", "type": "filename", "value": "eicar.com", "to_ids": true}
            ]}
        ]
    }})
}

fn fixture_b() -> serde_json::Value {
    json!({"Event": {
        "uuid": EVENT_B, "info": "fixture B", "timestamp": 1700000500,
        "Attribute": [
            {"uuid": "b0000000-0000-4000-8000-000000000001", "type": "ip-src", "value": "198.51.100.0/24",
             "to_ids": "1", "deleted": "1"},
            {"uuid": "b0000000-0000-4000-8000-000000000002", "type": "comment", "value": "seen in a phishing run",
             "to_ids": false}
        ]
    }})
}

fn write_feed(dir: &Path, events: &[(&str, &serde_json::Value)]) {
    let mut manifest = serde_json::Map::new();
    for (uuid, event) in events {
        manifest.insert(
            (*uuid).to_owned(),
            json!({"info": event["Event"]["info"], "timestamp": event["Event"]["timestamp"], "Tag": []}),
        );
        fs::write(
            dir.join(format!("{uuid}.json")),
            serde_json::to_string_pretty(event).unwrap(),
        )
        .unwrap();
    }
    fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    // Feeds also carry hashes.csv; it is not an event and is not read.
    fs::write(dir.join("hashes.csv"), format!("{MD5},{EVENT_A}\n")).unwrap();
}

#[test]
fn feed_directory_ingests() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (fixture_a(), fixture_b());
    write_feed(dir.path(), &[(EVENT_A, &a), (EVENT_B, &b)]);
    let batch = parse_feed_dir(dir.path(), &defaults()).unwrap();
    let by_id: BTreeMap<&str, &Item> = batch.items.iter().map(|i| (i.indicator.id.as_str(), i)).collect();
    assert_eq!(
        by_id.keys().copied().collect::<Vec<_>>(),
        vec![
            "indicator--a0000000-0000-4000-8000-000000000001",
            "indicator--a0000000-0000-4000-8000-000000000002",
            "indicator--a0000000-0000-4000-8000-000000000004",
            "indicator--b0000000-0000-4000-8000-000000000001",
        ]
    );
    let sha = by_id["indicator--a0000000-0000-4000-8000-000000000001"];
    assert_eq!(sha.indicator.meta.tlp, Tlp::Green);
    assert_eq!(sha.indicator.meta.severity, Severity::Medium);
    assert_eq!(sha.distribution, Some(1));
    assert_eq!(sha.modified, Some(1_700_000_000));
    assert_eq!(sha.created_by.as_deref(), Some("Example CERT"));
    let ip = by_id["indicator--a0000000-0000-4000-8000-000000000002"];
    assert_eq!(ip.indicator.meta.tlp, Tlp::Amber);
    assert_eq!(
        format!("{:?}", ip.indicator.observable),
        "RemoteAddr(IpNet { addr: 203.0.113.9, prefix: 32 })"
    );
    // The file object: md5 and name (the size is not to_ids, so not a condition).
    let file = by_id["indicator--a0000000-0000-4000-8000-000000000004"];
    assert!(
        matches!(&file.indicator.observable, Observable::FileAll(c) if c.len() == 2),
        "{:?}",
        file.indicator.observable
    );
    let net = by_id["indicator--b0000000-0000-4000-8000-000000000001"];
    assert!(net.revoked);
    assert_eq!(net.indicator.meta.tlp, Tlp::Amber, "no tag: the source default");
    assert_eq!(net.modified, Some(1_700_000_500));
    assert_eq!(
        reasons(&batch),
        BTreeMap::from([
            ("misp: to_ids false".to_owned(), 1),
            ("misp: url is not matchable on an endpoint".to_owned(), 1),
        ])
    );
}

#[test]
fn feed_event_missing_from_the_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (fixture_a(), fixture_b());
    write_feed(dir.path(), &[(EVENT_A, &a), (EVENT_B, &b)]);
    let missing = dir.path().join(format!("{EVENT_B}.json"));
    fs::remove_file(&missing).unwrap();
    let err = parse_feed_dir(dir.path(), &defaults()).unwrap_err();
    assert!(
        matches!(&err, CollectorError::Io { path, .. } if path == &missing),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("{}: listed in manifest.json, but missing", missing.display())
    );
}

#[test]
fn feed_event_file_holding_another_event_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = fixture_b();
    // The manifest says A; the file named after A holds B.
    write_feed(dir.path(), &[(EVENT_A, &b)]);
    let err = parse_feed_dir(dir.path(), &defaults()).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "{EVENT_A}.json:1: manifest.json lists event {EVENT_A}, but this file holds [{EVENT_B}]"
        )),
        "{err}"
    );
}

#[test]
fn feed_manifest_cannot_name_files_outside_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("manifest.json"), "{\"../../../etc/passwd\": {}}").unwrap();
    let err = parse_feed_dir(dir.path(), &defaults()).unwrap_err().to_string();
    assert!(err.contains("manifest.json:1: column "), "{err}");
    assert!(err.contains("is not an event uuid"), "{err}");
}

#[test]
fn feed_errors_name_the_event_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = fixture_a();
    a["Event"]["Attribute"][0]["value"] = json!("not-a-sha256");
    write_feed(dir.path(), &[(EVENT_A, &a)]);
    let err = parse_feed_dir(dir.path(), &defaults()).unwrap_err().to_string();
    let file = dir.path().join(format!("{EVENT_A}.json"));
    // Reported where the attribute ends: the line after its value (the last key, in serde_json's
    // sorted order).
    let text = fs::read_to_string(&file).unwrap();
    let value_line = text[..text.find("not-a-sha256").unwrap()].lines().count();
    assert!(
        err.starts_with(&format!("{}:{}: column ", file.display(), value_line + 1)),
        "{err}"
    );
    assert!(
        err.contains("attribute a0000000-0000-4000-8000-000000000001: sha256 value \"not-a-sha256\""),
        "{err}"
    );

    // Invalid UTF-8 in an event file: the line it is on.
    fs::write(&file, b"{\"Event\": {\n\"info\": \"\xff\"}}").unwrap();
    let err = parse_feed_dir(dir.path(), &defaults()).unwrap_err().to_string();
    assert_eq!(err, format!("{}:2: not valid UTF-8", file.display()));

    // No manifest at all.
    let empty = tempfile::tempdir().unwrap();
    let err = parse_feed_dir(empty.path(), &defaults()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}", empty.path().join("manifest.json").display())),
        "{err}"
    );
}

#[test]
fn malformed_events_name_file_and_position() {
    let path = Path::new("/feeds/event.json");
    let good = serde_json::to_string_pretty(&fixture_a()).unwrap();
    assert_eq!(parse_file(path, &good, &defaults()).unwrap().items.len(), 3);
    let line_of = |needle: &str| good[..good.find(needle).unwrap()].lines().count();
    let cases: Vec<(String, String)> = vec![
        // Truncated.
        (
            good[..good.len() - 40].to_owned(),
            format!(":{}: column ", good[..good.len() - 40].lines().count()),
        ),
        // Invalid hex, reported where the attribute ends.
        (
            good.replacen(SHA256, &format!("{}zz", &SHA256[..62]), 1),
            "sha256 value".to_owned(),
        ),
        // The replacement character a lossy UTF-8 decoding would leave in a hash.
        (
            good.replacen(MD5, "44d88612fea8a8f36de82e1278abb0\u{FFFD}", 1),
            "md5 value".to_owned(),
        ),
        // Wrong types.
        (
            good.replacen("\"to_ids\": true", "\"to_ids\": \"sometimes\"", 1),
            "expected a boolean".to_owned(),
        ),
        (
            good.replacen(
                "\"threat_level_id\": \"2\"",
                "\"threat_level_id\": {\"level\": 2}",
                1,
            ),
            "expected a whole number".to_owned(),
        ),
        (
            good.replacen("\"Example CERT\"", "[\"Example CERT\"]", 1),
            "expected a string".to_owned(),
        ),
        (
            good.replacen("\"Attribute\": [", "\"Attribute\": 3, \"x\": [", 1),
            "expected a sequence".to_owned(),
        ),
        (
            good.replacen("\"1700000000\"", "[1700000000]", 1),
            format!(":{}: column ", line_of("\"1700000000\"")),
        ),
    ];
    for (text, want) in cases {
        let err = parse_file(path, &text, &defaults()).unwrap_err().to_string();
        assert!(err.starts_with("/feeds/event.json:"), "{err}");
        assert!(err.contains(&want), "want {want:?} in {err}");
        // Every error has a line and a column.
        let after = err.strip_prefix("/feeds/event.json:").unwrap();
        let (line, rest) = after.split_once(": ").unwrap();
        assert!(line.parse::<usize>().unwrap() >= 1, "{err}");
        assert!(rest.starts_with("column "), "{err}");
    }
}

#[test]
fn parse_file_routes_misp_and_csv() {
    // A bare event whose first key is "Attribute", like existing_event.json.
    let bare = json!({"Attribute": [{"uuid": "c0000000-0000-4000-8000-000000000001", "type": "md5", "value": MD5, "to_ids": true}]});
    assert_eq!(
        parse_file(Path::new("e.json"), &bare.to_string(), &defaults())
            .unwrap()
            .items
            .len(),
        1
    );
    let response = json!({"response": [fixture_a(), fixture_b()]});
    assert_eq!(
        parse_file(Path::new("r.json"), &response.to_string(), &defaults())
            .unwrap()
            .items
            .len(),
        4
    );
    let array = json!([fixture_a()]);
    assert_eq!(
        parse_file(Path::new("r.json"), &array.to_string(), &defaults())
            .unwrap()
            .items
            .len(),
        3
    );
    // The same events through parse_event directly.
    assert_eq!(
        parse_event(Path::new("r.json"), &array.to_string(), &defaults())
            .unwrap()
            .items
            .len(),
        3
    );

    let csv = format!("md5,note\n{MD5},\"a, b\"\n");
    let batch = parse_file(Path::new("feed.CSV"), &csv, &defaults()).unwrap();
    assert_eq!(batch.items.len(), 1);
    // The default column is the first: here a date, which is an error naming the line.
    let dated = format!("first_seen,md5\n2024-01-01,{MD5}\n");
    let err = parse_file(Path::new("feed.csv"), &dated, &defaults())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("feed.csv:2: cannot tell what \"2024-01-01\" is"),
        "{err}"
    );
}
