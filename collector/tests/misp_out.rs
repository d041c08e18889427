//! MISP output, from outside: on a real data directory, `share misp-sightings` and
//! `share misp-feed` give exactly what the sharing policy allows (nothing below k, never
//! TLP:RED), false positives as type 1 sightings, a feed our own MISP feed reader reads back,
//! and never a location or agent id an agent reported.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use picket_collector::datadir::DataDir;
use picket_collector::ingest::{parse_feed_dir, parse_file, Defaults};
use picket_collector::share::misp_out::{export, feed, sightings, write_feed};
use picket_collector::share::OrgSighting;
use picket_collector::store::Source;
use picket_proto::{Observable, Severity, Tlp};
use serde_json::{json, Value};

mod common;
use common::record_sighting;

const H: i64 = 3600;
const NOW: i64 = 1_750_000_000;
const MISP_HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const LIST_HASH: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
const HASH_UUID: &str = "5f3c1d2e-1111-4222-8333-944455556666";
const RED_UUID: &str = "5f3c1d2e-2222-4222-8333-944455556666";
const RED_ADDR: &str = "203.0.113.77";

fn defaults(source: &str, tlp: Tlp) -> Defaults {
    Defaults {
        source: source.into(),
        tlp,
        confidence: 50,
        severity: Severity::Medium,
    }
}

fn source(name: &str, kind: &str, location: &Path) -> Source {
    Source {
        name: name.into(),
        kind: kind.into(),
        location: location.display().to_string(),
        collection: None,
        username: None,
        secret: None,
        ca_file: None,
        tlp: Tlp::Amber,
        confidence: 50,
        schedule: 3600,
        trusted: false,
        kinds: Vec::new(),
        bookmark: None,
        last_pull: None,
        last_error: None,
        lifetime: None,
    }
}

/// A data directory with communities `isac` (k = 2) and `strict` (k = 3), both disclosing the
/// organisation; a MISP event with a GREEN sha256 and a RED address; a list with a hash marked
/// a false positive; sightings of all three from agents whose ids and locations hold `canary`.
/// Returns the directory and the stored ids.
fn data_dir(tmp: &Path, canary: &str) -> (PathBuf, Vec<String>) {
    let data = tmp.join("data");
    DataDir::init(&data, "Canary Org", Some(&tmp.join("root.key")), NOW - 100 * H).unwrap();
    let mut cfg = fs::read_to_string(data.join("picket.toml")).unwrap();
    for (name, k) in [("isac", 2), ("strict", 3)] {
        cfg.push_str(&format!(
            "\n[[community]]\nname = \"{name}\"\nk = {k}\ntlp_ceiling = \"amber\"\ndisclosure = \"organisation\"\n"
        ));
    }
    fs::write(data.join("picket.toml"), cfg).unwrap();
    let dir = DataDir::open(&data).unwrap();
    let mut store = dir.store().unwrap();

    let event = tmp.join("event.json");
    let misp = json!({"Event": {
        "uuid": "5f3c1d2e-0000-4222-8333-944455556666",
        "info": "test event",
        "timestamp": (NOW - 60 * H).to_string(),
        "Orgc": {"name": "Feed Org"},
        "Tag": [{"name": "tlp:green"}],
        "Attribute": [
            {"uuid": HASH_UUID, "type": "sha256", "category": "Payload delivery", "value": MISP_HASH, "to_ids": true},
            {"uuid": RED_UUID, "type": "ip-dst", "category": "Network activity", "value": RED_ADDR, "to_ids": true,
             "Tag": [{"name": "tlp:red"}]},
        ],
    }});
    fs::write(&event, misp.to_string()).unwrap();
    store
        .add_source(&source("feed", "misp", &event), NOW - 60 * H)
        .unwrap();
    let batch = parse_file(
        &event,
        &fs::read_to_string(&event).unwrap(),
        &defaults("feed", Tlp::Amber),
    )
    .unwrap();
    store.upsert_batch(&batch, "feed", NOW - 60 * H).unwrap();

    let list = tmp.join("iocs.txt");
    fs::write(&list, format!("{LIST_HASH}\n")).unwrap();
    store
        .add_source(&source("iocs", "list", &list), NOW - 60 * H)
        .unwrap();
    let batch = parse_file(
        &list,
        &fs::read_to_string(&list).unwrap(),
        &defaults("iocs", Tlp::Green),
    )
    .unwrap();
    let list_id = batch.items[0].indicator.id.clone();
    store.upsert_batch(&batch, "iocs", NOW - 60 * H).unwrap();
    store
        .mark_false_positive(&list_id, "the build server's own tool", NOW - H)
        .unwrap();

    let ids = vec![
        format!("indicator--{HASH_UUID}"),
        format!("indicator--{RED_UUID}"),
        list_id,
    ];
    for id in &ids {
        for n in 0..3 {
            record_sighting(
                &data,
                &format!("agent-{canary}-{n}"),
                id,
                &format!("/home/{canary}/Downloads/{canary}.exe"),
                NOW - 30 * H,
                NOW - 20 * H,
            );
        }
    }
    (data, ids)
}

fn canary() -> String {
    format!(
        "cnry{:016x}",
        (NOW as u64) ^ (u64::from(std::process::id()) << 22)
    )
}

/// One other organisation saw each indicator: k = 2 is reached, k = 3 is not.
fn one_peer(ids: &[String]) -> BTreeMap<String, Vec<OrgSighting>> {
    ids.iter()
        .map(|id| {
            (
                id.clone(),
                vec![OrgSighting {
                    org: "peer-a".into(),
                    count: 1,
                }],
            )
        })
        .collect()
}

fn assert_no_local_value(text: &str, canary: &str) {
    for leak in [canary, "agent-", "Downloads", ".exe", "/home/"] {
        assert!(!text.contains(leak), "{leak:?} left in {text}");
    }
}

#[test]
fn sightings_follow_the_policy_and_mark_false_positives_type_1() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = canary();
    let (data, ids) = data_dir(tmp.path(), &canary);
    let dir = DataDir::open(&data).unwrap();
    let others = one_peer(&ids);

    let e = export(&dir, "isac", &others, NOW).unwrap();
    let s = sightings(&e);
    let text = serde_json::to_string(&s).unwrap();
    assert_no_local_value(&text, &canary);
    // TLP:RED never leaves: neither its uuid nor its value.
    assert!(!text.contains(RED_UUID) && !text.contains(RED_ADDR), "{text}");
    let list = s.as_array().unwrap();
    assert_eq!(list.len(), 2, "{text}");
    // The MISP attribute goes by its uuid; the list's hash by its value, as a false positive.
    // Last seen NOW - 20h lands on its hour; the organisation is disclosed by name.
    let when = (NOW - 20 * H).div_euclid(H) * H;
    let when = if when < NOW - 20 * H { when + H } else { when };
    assert!(
        list.contains(&json!({
            "uuid": HASH_UUID, "type": "0", "date_sighting": when.to_string(),
            "timestamp": when.to_string(), "source": "Canary Org",
        })),
        "{text}"
    );
    assert!(
        list.contains(&json!({
            "value": LIST_HASH, "type": "1", "date_sighting": when.to_string(),
            "timestamp": when.to_string(), "source": "Canary Org",
        })),
        "{text}"
    );

    // With k = 3 and two organisations, nothing about any of them leaves, false positive
    // included; nor with k = 2 and no other organisation.
    let strict = export(&dir, "strict", &others, NOW).unwrap();
    assert_eq!(sightings(&strict), json!([]));
    assert_eq!(feed(&strict, NOW).event["Event"]["Attribute"], json!([]));
    let alone = export(&dir, "isac", &BTreeMap::new(), NOW).unwrap();
    assert_eq!(sightings(&alone), json!([]));
}

#[test]
fn the_feed_reads_back_through_our_misp_feed_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = canary();
    let (data, ids) = data_dir(tmp.path(), &canary);
    let dir = DataDir::open(&data).unwrap();
    let e = export(&dir, "isac", &one_peer(&ids), NOW).unwrap();
    let f = feed(&e, NOW);
    let out = tmp.path().join("feed");
    write_feed(&out, &f).unwrap();
    for entry in fs::read_dir(&out).unwrap() {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap();
        assert_no_local_value(&text, &canary);
        assert!(!text.contains(RED_ADDR) && !text.contains(LIST_HASH), "{text}");
    }
    let batch = parse_feed_dir(&out, &defaults("reader", Tlp::Red)).unwrap();
    assert!(batch.unsupported.is_empty(), "{:?}", batch.unsupported);
    assert_eq!(batch.items.len(), 1, "{:?}", batch.items);
    let item = &batch.items[0];
    match &item.indicator.observable {
        Observable::FileHash { hash, .. } => assert_eq!(hash.hex(), MISP_HASH),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        item.indicator.meta.tlp,
        Tlp::Amber,
        "the tag carries the stricter of GREEN and the community's AMBER ceiling, not the reader's RED default"
    );
    assert_eq!(item.created_by.as_deref(), Some("Canary Org"));
    // The same community gets the same event uuid each time; another community another one.
    assert_eq!(
        feed(&export(&dir, "isac", &one_peer(&ids), NOW + H).unwrap(), NOW + H).uuid,
        f.uuid
    );
    let mut cfg = fs::read_to_string(data.join("picket.toml")).unwrap();
    cfg.push_str("\n[[community]]\nname = \"other\"\nk = 2\n");
    fs::write(data.join("picket.toml"), cfg).unwrap();
    let dir = DataDir::open(&data).unwrap();
    let g = feed(&export(&dir, "other", &one_peer(&ids), NOW).unwrap(), NOW);
    assert_ne!(g.uuid, f.uuid);
    let attr_uuid = |f: &Value| f["Event"]["Attribute"][0]["uuid"].clone();
    assert_ne!(attr_uuid(&g.event), attr_uuid(&f.event));
}

#[test]
fn the_commands_write_json_and_a_feed_and_name_an_unknown_community() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = canary();
    let (data, _) = data_dir(tmp.path(), &canary);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_picket-collector"))
            .args(["share"])
            .args(args)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    // No other organisation yet: k = 2 is not reached, so the array is empty.
    let (code, stdout, stderr) = run(&["misp-sightings", "--community", "isac"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), json!([]));
    let file = tmp.path().join("sightings.json");
    let (code, _, stderr) = run(&[
        "misp-sightings",
        "--community",
        "isac",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&fs::read_to_string(&file).unwrap()).unwrap(),
        json!([])
    );
    let feed_dir = tmp.path().join("feed");
    let (code, _, stderr) = run(&[
        "misp-feed",
        "--community",
        "isac",
        "--out",
        feed_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let batch = parse_feed_dir(&feed_dir, &defaults("reader", Tlp::Red)).unwrap();
    assert!(batch.items.is_empty());
    for text in [stdout, stderr] {
        assert_no_local_value(&text, &canary);
    }
    let (code, _, stderr) = run(&["misp-sightings", "--community", "nope"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("\"nope\""), "{stderr}");
}
