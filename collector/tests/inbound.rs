//! Community intelligence coming in, from outside: objects members post (and upstreams give)
//! go through `share::inbound::accept` into a real data directory's SQLite store, and what they
//! change is read back the way an operator sees it: `share preview` (k counted per account and
//! per community, the sector rule), `indicators list` / `show` and `sightings` (how many
//! organisations saw an indicator), run as the real binary.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use picket_collector::datadir::DataDir;
use picket_collector::ingest::{parse_file, Defaults};
use picket_collector::share::inbound::{accept, Outcome};
use picket_collector::share::{preview, Held};
use picket_proto::{Severity, Tlp};
use serde_json::{json, Value};

mod common;

const H: i64 = 3600;
const NOW: i64 = 1_750_000_000;
const NOW_MS: i64 = NOW * 1000;
/// The indicator a feed gave (a STIX id, so every community knows it by this id).
const IND: &str = "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f";
const EICAR_SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";

/// A data directory with communities `isac` (k = 3, `extra` appended to its table) and `other`
/// (k = 2), the feed indicator [`IND`], and one agent here that sighted it.
fn data_dir(tmp: &Path, extra: &str) -> PathBuf {
    let data = tmp.join("data");
    DataDir::init(&data, "Example Org", Some(&tmp.join("root.key")), NOW - 100 * H).unwrap();
    let mut cfg = fs::read_to_string(data.join("picket.toml")).unwrap();
    cfg.push_str(&format!(
        "\n[[community]]\nname = \"isac\"\nk = 3\n{extra}\n[[community]]\nname = \"other\"\nk = 2\n"
    ));
    fs::write(data.join("picket.toml"), cfg).unwrap();
    let bundle = tmp.join("feed.json");
    fs::write(
        &bundle,
        json!({
            "type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
            "objects": [{
                "type": "indicator", "spec_version": "2.1", "id": IND,
                "created": "2025-01-01T00:00:00.000Z", "modified": "2025-01-01T00:00:00.000Z",
                "pattern": format!("[file:hashes.'SHA-256' = '{EICAR_SHA256}']"),
                "pattern_type": "stix", "valid_from": "2025-01-01T00:00:00Z",
                "object_marking_refs": ["marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"],
            }]
        })
        .to_string(),
    )
    .unwrap();
    ingest(&data, &bundle, "feed");
    sighted_here(&data, IND);
    data
}

/// Ingests `file` as source `source`, stored 50 hours before [`NOW`].
fn ingest(data: &Path, file: &Path, source: &str) {
    common::ingest_file(data, file, source, NOW - 50 * H);
}

/// An agent here reported `indicator` (stored id) seven times.
fn sighted_here(data: &Path, indicator: &str) {
    common::record_sighting(data, "agent-1", indicator, "", NOW - 30 * H, NOW - 20 * H);
}

/// A STIX sighting of `of`: id `sighting--<n>…`, version `modified`.
fn sighting(n: u32, of: &str, modified: &str, count: u64) -> Value {
    json!({
        "type": "sighting", "spec_version": "2.1",
        "id": format!("sighting--{n:08x}-1111-4111-8111-111111111111"),
        "created": "2025-06-01T00:00:00.000Z", "modified": modified,
        "sighting_of_ref": of, "count": count,
        "first_seen": "2025-06-01T00:00:00Z", "last_seen": "2025-06-02T00:00:00Z",
    })
}

fn give(data: &Path, community: &str, account: &str, objects: &[Value]) -> Vec<Outcome> {
    let dir = DataDir::open(data).unwrap();
    let mut store = dir.store().unwrap();
    accept(&mut store, community, account, objects, NOW_MS).unwrap()
}

fn all_taken(outcomes: &[Outcome]) {
    for o in outcomes {
        assert_eq!(o.error, None, "{o:?}");
    }
}

fn rows(data: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(data.join("picket.db")).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// `share preview` through the library: (shared, held reasons).
fn previewed(data: &Path, community: &str) -> (usize, Vec<Held>) {
    let dir = DataDir::open(data).unwrap();
    let p = preview(&dir, community, NOW).unwrap();
    (p.shared, p.held.into_iter().map(|(_, h)| h).collect())
}

fn collector(args: &[&str], data: &Path) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_picket-collector"))
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
    (stdout, stderr)
}

#[test]
fn two_other_organisations_and_an_agent_here_clear_k3_and_one_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "");
    assert_eq!(
        previewed(&data, "isac"),
        (0, vec![Held::BelowK { orgs: 1, k: 3 }])
    );
    all_taken(&give(
        &data,
        "isac",
        "bank-a",
        &[sighting(1, IND, "2025-06-02T00:00:00Z", 4)],
    ));
    assert_eq!(
        previewed(&data, "isac"),
        (0, vec![Held::BelowK { orgs: 2, k: 3 }])
    );
    // What an upstream gave counts as one more organisation.
    all_taken(&give(
        &data,
        "isac",
        "upstream:hub",
        &[sighting(2, IND, "2025-06-02T00:00:00Z", 1)],
    ));
    let dir = DataDir::open(&data).unwrap();
    let p = preview(&dir, "isac", NOW).unwrap();
    assert_eq!((p.shared, p.held.len()), (1, 0));
    let objects = p.bundle["objects"].as_array().unwrap();
    let s = objects.iter().find(|o| o["type"] == "sighting").unwrap();
    assert_eq!(s["sighting_of_ref"], IND);
    // The count is this organisation's own (7, shared as its band floor 1), never the members'.
    assert_eq!(s["count"], 1);
}

#[test]
fn one_account_counts_once_however_many_sightings_and_identities_it_claims() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "");
    let claims: Vec<Value> = (0..6)
        .map(|n| {
            let mut s = sighting(10 + n, IND, "2025-06-02T00:00:00Z", 2);
            s["created_by_ref"] = json!(format!("identity--{n:08x}-2222-4222-8222-222222222222"));
            s["where_sighted_refs"] = json!([format!("identity--{n:08x}-3333-4333-8333-333333333333")]);
            s
        })
        .collect();
    all_taken(&give(&data, "isac", "bank-a", &claims));
    assert_eq!(
        previewed(&data, "isac"),
        (0, vec![Held::BelowK { orgs: 2, k: 3 }])
    );
    let dir = DataDir::open(&data).unwrap();
    let inbound = dir.store().unwrap().inbound_sightings("isac").unwrap();
    let seen = &inbound[IND];
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].org.as_str(), seen[0].count), ("bank-a", 12));
    assert_eq!(dir.store().unwrap().inbound_organisations(IND).unwrap(), 1);
}

#[test]
fn an_identical_object_posted_twice_succeeds_and_adds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "");
    let s = sighting(1, IND, "2025-06-02T00:00:00.000Z", 4);
    all_taken(&give(&data, "isac", "bank-a", std::slice::from_ref(&s)));
    let before = (rows(&data, "contributions"), rows(&data, "community_sightings"));
    assert_eq!(before, (1, 1));
    // Again, with its keys in another order: the same object.
    let reordered: serde_json::Map<String, Value> =
        s.as_object().unwrap().clone().into_iter().rev().collect();
    let again = give(&data, "isac", "bank-a", &[s.clone(), Value::Object(reordered)]);
    all_taken(&again);
    assert_eq!(again[0].id, s["id"].as_str().unwrap());
    assert_eq!(again[0].version, "2025-06-02T00:00:00.000Z");
    assert_eq!(
        (rows(&data, "contributions"), rows(&data, "community_sightings")),
        before
    );
}

#[test]
fn the_same_id_and_version_with_another_body_fails_and_keeps_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "");
    all_taken(&give(
        &data,
        "isac",
        "bank-a",
        &[sighting(1, IND, "2025-06-02T00:00:00Z", 4)],
    ));
    // The same version written with milliseconds is the same version.
    let out = give(
        &data,
        "isac",
        "bank-a",
        &[sighting(1, IND, "2025-06-02T00:00:00.000Z", 400)],
    );
    assert_eq!(
        out[0].error.as_deref(),
        Some("a different object under the same id and version")
    );
    let dir = DataDir::open(&data).unwrap();
    assert_eq!(
        dir.store().unwrap().inbound_sightings("isac").unwrap()[IND][0].count,
        4
    );
    // Another account may use the same id: its objects are its own.
    all_taken(&give(
        &data,
        "isac",
        "bank-b",
        &[sighting(1, IND, "2025-06-02T00:00:00Z", 9)],
    ));
}

#[test]
fn malformed_objects_fail_alone_and_say_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "");
    let objects = vec![
        sighting(1, IND, "2025-06-02T00:00:00Z", 1),
        json!("a string"),
        json!({"type": "sighting", "modified": "2025-06-02T00:00:00Z"}),
        json!({"type": "sighting", "id": "sighting--1", "modified": "2025-06-02T00:00:00Z"}),
        json!({"type": "sighting", "id": "sighting--21111111-1111-4111-8111-111111111111"}),
        json!({"type": "sighting", "id": "sighting--31111111-1111-4111-8111-111111111111",
               "modified": "2025-06-02T00:00:00Z", "sighting_of_ref": "malware--31111111-1111-4111-8111-111111111111"}),
        json!({"type": "sighting", "id": "sighting--41111111-1111-4111-8111-111111111111",
               "modified": "2025-06-02T00:00:00Z", "sighting_of_ref": IND, "count": -1}),
        json!({"type": "malware", "id": "malware--51111111-1111-4111-8111-111111111111",
               "modified": "2025-06-02T00:00:00Z", "name": "x", "is_family": false}),
        json!({"type": "indicator", "id": "indicator--61111111-1111-4111-8111-111111111111",
               "spec_version": "2.1", "modified": "2025-06-02T00:00:00Z", "created": "2025-06-02T00:00:00Z",
               "pattern": "[email-message:subject = 'invoice']", "pattern_type": "stix",
               "valid_from": "2025-06-02T00:00:00Z"}),
        json!({"type": "sighting", "id": "sighting--71111111-1111-4111-8111-111111111111",
               "modified": "2025-06-02T00:00:00Z", "sighting_of_ref": IND, "note": "x".repeat(70_000)}),
        sighting(8, IND, "2025-06-02T00:00:00Z", 1),
    ];
    let out = give(&data, "isac", "bank-a", &objects);
    assert_eq!(out.len(), objects.len());
    let expect = [
        None,
        Some("not a JSON object"),
        Some("no \"id\""),
        Some("id: sighting--1 is not <type>--<uuid>"),
        Some("no \"modified\" or \"created\""),
        Some("sighting_of_ref: malware--"),
        Some("count: -1 is not a whole number"),
        Some("type malware is not taken by this collection"),
        Some("not supported"),
        Some("longer than"),
        None,
    ];
    for (i, (o, want)) in out.iter().zip(expect).enumerate() {
        match want {
            None => assert_eq!(o.error, None, "object {i}: {o:?}"),
            Some(w) => assert!(
                o.error.as_deref().is_some_and(|e| e.contains(w)),
                "object {i}: {o:?} should say {w:?}"
            ),
        }
    }
    // Failures name the object by the id and version it gave, even malformed ones.
    assert_eq!(out[7].id, "malware--51111111-1111-4111-8111-111111111111");
    assert_eq!(out[7].version, "2025-06-02T00:00:00Z");
    assert_eq!((out[3].id.as_str(), out[3].version.as_str()), ("sighting--1", ""));
    assert_eq!(out[1].id, "");
    // The good ones were kept, and the unmatchable indicator is listed as unsupported.
    assert_eq!(rows(&data, "community_sightings"), 2);
    let (unsupported, _) = collector(&["indicators", "unsupported"], &data);
    assert!(
        unsupported.contains("community:isac indicator--61111111-1111-4111-8111-111111111111"),
        "{unsupported}"
    );
}

#[test]
fn a_contributed_indicator_is_listed_from_source_community_with_its_tlp_and_the_account_as_author() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "");
    let red = "indicator--a1111111-1111-4111-8111-111111111111";
    let unmarked = "indicator--b1111111-1111-4111-8111-111111111111";
    let custom_red = "indicator--c1111111-1111-4111-8111-111111111111";
    let ind = |id: &str, value: &str, markings: Value| {
        json!({
            "type": "indicator", "spec_version": "2.1", "id": id,
            "created": "2025-06-01T00:00:00.000Z", "modified": "2025-06-01T00:00:00.000Z",
            "pattern": format!("[ipv4-addr:value = '{value}']"), "pattern_type": "stix",
            "valid_from": "2025-06-01T00:00:00Z", "object_marking_refs": markings,
            "created_by_ref": "identity--d1111111-1111-4111-8111-111111111111",
        })
    };
    let custom = "marking-definition--e1111111-1111-4111-8111-111111111111";
    all_taken(&give(
        &data,
        "isac",
        "bank-a",
        &[
            ind(
                red,
                "198.51.100.7",
                json!(["marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1"]),
            ),
            ind(unmarked, "198.51.100.8", json!([])),
            ind(custom_red, "198.51.100.9", json!([custom])),
            json!({"type": "marking-definition", "spec_version": "2.1", "id": custom,
                   "created": "2025-01-01T00:00:00.000Z", "definition_type": "tlp",
                   "definition": {"tlp": "red"}}),
        ],
    ));
    let (list, _) = collector(&["indicators", "list"], &data);
    for (id, tlp) in [(red, "TLP:RED"), (unmarked, "TLP:AMBER"), (custom_red, "TLP:RED")] {
        let line = list
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not in {list}"));
        assert!(line.contains("sources community:isac"), "{line}");
        assert!(line.contains(tlp), "{line}");
    }
    let (show, _) = collector(&["indicators", "show", "--json", unmarked], &data);
    let v: Value = serde_json::from_str(&show).unwrap();
    assert_eq!(
        v["created_by"], "bank-a",
        "the account, never the claimed created_by_ref"
    );
    assert_eq!(v["published"], true, "{v}");
}

#[test]
fn a_member_never_changes_an_indicator_a_feed_or_another_member_gave() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "");
    let newer = |pattern: &str, modified: &str| {
        json!({
            "type": "indicator", "spec_version": "2.1", "id": IND,
            "created": "2025-01-01T00:00:00.000Z", "modified": modified,
            "pattern": pattern, "pattern_type": "stix", "valid_from": "2025-01-01T00:00:00Z",
            "revoked": true,
        })
    };
    all_taken(&give(
        &data,
        "isac",
        "bank-a",
        &[newer("[ipv4-addr:value = '203.0.113.5']", "2025-06-01T00:00:00Z")],
    ));
    let dir = DataDir::open(&data).unwrap();
    let stored = dir.store().unwrap().indicator(IND).unwrap().unwrap();
    assert!(stored.value.contains(EICAR_SHA256), "{stored:?}");
    assert!(!stored.revoked);
    assert_eq!(stored.sources, vec!["feed".to_owned()]);
    // A member's own indicator: its newer versions replace it, another member's do not.
    let own = "indicator--f1111111-1111-4111-8111-111111111111";
    let v = |modified: &str, value: &str| {
        json!({
            "type": "indicator", "spec_version": "2.1", "id": own,
            "created": "2025-01-01T00:00:00.000Z", "modified": modified,
            "pattern": format!("[ipv4-addr:value = '{value}']"), "pattern_type": "stix",
            "valid_from": "2025-01-01T00:00:00Z",
        })
    };
    all_taken(&give(
        &data,
        "isac",
        "bank-a",
        &[v("2025-06-01T00:00:00Z", "203.0.113.1")],
    ));
    all_taken(&give(
        &data,
        "isac",
        "bank-b",
        &[v("2025-06-03T00:00:00Z", "203.0.113.2")],
    ));
    all_taken(&give(
        &data,
        "isac",
        "bank-a",
        &[v("2025-06-02T00:00:00Z", "203.0.113.3")],
    ));
    let value = dir.store().unwrap().indicator(own).unwrap().unwrap().value;
    assert_eq!(value, "remote-addr:203.0.113.3");
}

#[test]
fn an_older_sighting_version_never_replaces_a_newer() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "");
    all_taken(&give(
        &data,
        "isac",
        "bank-a",
        &[sighting(1, IND, "2025-06-03T00:00:00.5Z", 50)],
    ));
    // Older (by half a second, written without a fraction): taken, but it changes nothing.
    all_taken(&give(
        &data,
        "isac",
        "bank-a",
        &[sighting(1, IND, "2025-06-03T00:00:00Z", 2)],
    ));
    let count = |data: &Path| {
        let dir = DataDir::open(data).unwrap();
        dir.store().unwrap().inbound_sightings("isac").unwrap()[IND][0].count
    };
    assert_eq!(count(&data), 50);
    // Newer replaces; a revoked version withdraws the sighting.
    all_taken(&give(
        &data,
        "isac",
        "bank-a",
        &[sighting(1, IND, "2025-06-04T00:00:00Z", 70)],
    ));
    assert_eq!(count(&data), 70);
    let mut revoked = sighting(1, IND, "2025-06-05T00:00:00Z", 70);
    revoked["revoked"] = json!(true);
    all_taken(&give(&data, "isac", "bank-a", &[revoked]));
    let dir = DataDir::open(&data).unwrap();
    assert!(!dir
        .store()
        .unwrap()
        .inbound_sightings("isac")
        .unwrap()
        .contains_key(IND));
}

#[test]
fn sightings_received_in_one_community_do_not_count_in_another() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "");
    for account in ["bank-a", "bank-b", "bank-c"] {
        all_taken(&give(
            &data,
            "other",
            account,
            &[sighting(1, IND, "2025-06-02T00:00:00Z", 3)],
        ));
    }
    assert_eq!(
        previewed(&data, "isac"),
        (0, vec![Held::BelowK { orgs: 1, k: 3 }])
    );
    assert_eq!(previewed(&data, "other"), (1, vec![]));
}

#[test]
fn a_false_positive_verdict_is_shown_but_never_counts_towards_k() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "");
    let verdict = json!({
        "type": "opinion", "spec_version": "2.1", "id": "opinion--11111111-1111-4111-8111-111111111111",
        "created": "2025-06-02T00:00:00Z", "modified": "2025-06-02T00:00:00Z",
        "opinion": "strongly-disagree", "explanation": "false positive", "object_refs": [IND],
    });
    for account in ["bank-a", "bank-b"] {
        all_taken(&give(&data, "isac", account, std::slice::from_ref(&verdict)));
    }
    assert_eq!(
        previewed(&data, "isac"),
        (0, vec![Held::BelowK { orgs: 1, k: 3 }])
    );
    let (show, _) = collector(&["indicators", "show", "--json", IND], &data);
    let v: Value = serde_json::from_str(&show).unwrap();
    assert_eq!(
        (v["organisations"].as_u64(), v["disputed_by"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        v["published"], true,
        "a member's verdict does not take it off endpoints"
    );
}

/// `[[taxii.member]]` entries for `isac`: name and sector.
fn members(list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(name, sector)| {
            format!(
                "\n[[taxii.member]]\nname = \"{name}\"\npassword_hash = \"pbkdf2-sha256$1$00$00\"\ncommunities = [\"isac\"]\nsector = \"{sector}\"\n"
            )
        })
        .collect()
}

#[test]
fn the_sector_is_named_only_when_k_organisations_of_the_community_are_in_it() {
    for (member_list, named) in [
        // This organisation and one member in the sector: 2 < k = 3.
        (
            vec![("bank-a", "financial-services"), ("clinic", "healthcare")],
            false,
        ),
        (
            vec![("bank-a", "financial-services"), ("bank-b", "Financial-Services")],
            true,
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let data = data_dir(
            tmp.path(),
            "disclosure = \"sector\"\nsector = \"financial-services\"",
        );
        let mut cfg = fs::read_to_string(data.join("picket.toml")).unwrap();
        cfg.push_str(&members(&member_list));
        fs::write(data.join("picket.toml"), cfg).unwrap();
        for account in ["bank-a", "clinic"] {
            all_taken(&give(
                &data,
                "isac",
                account,
                &[sighting(1, IND, "2025-06-02T00:00:00Z", 1)],
            ));
        }
        let (stdout, stderr) = collector(&["share", "preview", "--community", "isac"], &data);
        let b: Value = serde_json::from_str(&stdout).unwrap();
        let objects = b["objects"].as_array().unwrap();
        let s = objects.iter().find(|o| o["type"] == "sighting").unwrap();
        assert!(s.get("created_by_ref").is_none());
        if named {
            let w = s["where_sighted_refs"][0].as_str().unwrap();
            let identity = objects.iter().find(|o| o["id"] == w).unwrap();
            assert_eq!(identity["sectors"][0], "financial-services");
            assert!(!stderr.contains("not disclosed"), "{stderr}");
        } else {
            assert!(s.get("where_sighted_refs").is_none(), "{s}");
            assert!(!objects.iter().any(|o| o["type"] == "identity"), "{stdout}");
            assert!(
                stderr.contains("sector \"financial-services\" is not disclosed")
                    && stderr.contains("2 organisations")
                    && stderr.contains("k = 3"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn indicators_show_list_and_sightings_say_how_many_organisations_saw_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "");
    all_taken(&give(
        &data,
        "isac",
        "bank-a",
        &[sighting(1, IND, "2025-06-02T00:00:00Z", 4)],
    ));
    all_taken(&give(
        &data,
        "other",
        "upstream:hub",
        &[sighting(1, IND, "2025-06-02T00:00:00Z", 4)],
    ));
    let (show, _) = collector(&["indicators", "show", "--json", IND], &data);
    let v: Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["organisations"], 3, "{v}");
    assert_eq!(v["seen_here"], true);
    assert_eq!(v["communities"], json!(["isac", "other"]));
    // Confirmed by others: the next set carries it one step above its medium.
    assert_eq!(
        (v["severity"].as_str(), v["published_severity"].as_str()),
        (Some("medium"), Some("high"))
    );
    let (human, _) = collector(&["indicators", "show", IND], &data);
    assert!(human.lines().any(|l| l == "organisations: 3"), "{human}");
    // `list` flags it, and sorts by it on request.
    let lone = tmp.path().join("lone.txt");
    fs::write(&lone, "44d88612fea8a8f36de82e1278abb02f\n").unwrap();
    ingest(&data, &lone, "lone.txt");
    let (list, _) = collector(&["indicators", "list", "--by-organisations"], &data);
    let first = list.lines().next().unwrap();
    assert!(
        first.starts_with(IND) && first.contains("[seen by 3 organisations in isac,other]"),
        "{list}"
    );
    assert!(!list.lines().nth(1).unwrap().contains("seen by"), "{list}");
    let (sightings, _) = collector(&["sightings", "--json"], &data);
    let s: Value = serde_json::from_str(sightings.lines().next().unwrap()).unwrap();
    assert_eq!(
        (s["indicator"].as_str(), s["organisations"].as_u64()),
        (Some(IND), Some(3))
    );
    let (sightings, _) = collector(&["sightings"], &data);
    assert!(sightings.contains(" orgs=3 "), "{sightings}");
}

#[test]
fn an_indicator_picket_minted_is_matched_by_the_id_the_community_knows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "");
    let list = tmp.path().join("iocs.txt");
    fs::write(&list, "44d88612fea8a8f36de82e1278abb02f\n").unwrap();
    ingest(&data, &list, "iocs.txt");
    let dir = DataDir::open(&data).unwrap();
    let minted = dir
        .store()
        .unwrap()
        .candidates()
        .unwrap()
        .into_iter()
        .find(|s| s.sources == ["iocs.txt"])
        .unwrap()
        .record
        .id;
    sighted_here(&data, &minted);
    // The community learns the indicator under its own derived id, from the bundle.
    let mut others = std::collections::BTreeMap::new();
    others.insert(
        minted.clone(),
        vec![picket_collector::share::OrgSighting {
            org: "x".into(),
            count: 1,
        }],
    );
    let b = picket_collector::share::preview_with(&dir, "other", &others, NOW)
        .unwrap()
        .bundle;
    let known = b["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "indicator")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(known, minted);
    // A member's sighting of that id counts towards k and towards the organisations.
    all_taken(&give(
        &data,
        "other",
        "bank-a",
        &[sighting(1, &known, "2025-06-02T00:00:00Z", 1)],
    ));
    let p = preview(&dir, "other", NOW).unwrap();
    assert_eq!(p.shared, 1, "{:?}", p.held);
    assert_eq!(p.sent[0].1, vec![minted.clone()]);
    let (show, _) = collector(&["indicators", "show", "--json", &minted], &data);
    let v: Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["organisations"], 2, "{v}");
    // The same id posted in another community means nothing there.
    all_taken(&give(
        &data,
        "isac",
        "bank-z",
        &[sighting(1, &known, "2025-06-02T00:00:00Z", 1)],
    ));
    let (show, _) = collector(&["indicators", "show", "--json", &minted], &data);
    let v: Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["organisations"], 2, "{v}");
}

#[test]
fn a_contributed_indicator_is_stored_as_the_same_indicator_ingested_from_a_bundle() {
    // Inbound writes indicators itself (inside its one transaction); it must store exactly what
    // ingest stores, so that publish treats them alike.
    let tmp = tempfile::tempdir().unwrap();
    let object = json!({
        "type": "indicator", "spec_version": "2.1", "id": "indicator--91111111-1111-4111-8111-111111111111",
        "created": "2025-06-01T00:00:00.000Z", "modified": "2025-06-01T00:00:00.000Z",
        "pattern": format!("[file:hashes.'SHA-256' = '{EICAR_SHA256}'] OR [ipv4-addr:value = '198.51.100.0/24']"),
        "pattern_type": "stix", "valid_from": "2025-06-01T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z",
        "confidence": 80,
        "object_marking_refs": ["marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421"],
    });
    let a = tmp.path().join("a");
    fs::create_dir(&a).unwrap();
    let data = data_dir(&a, "");
    all_taken(&give(&data, "isac", "bank-a", std::slice::from_ref(&object)));
    let b = tmp.path().join("b");
    fs::create_dir(&b).unwrap();
    let other = data_dir(&b, "");
    let file = b.join("bundle.json");
    fs::write(
        &file,
        json!({"type": "bundle", "id": "bundle--91111111-1111-4111-8111-111111111111", "objects": [object]})
            .to_string(),
    )
    .unwrap();
    let defaults = Defaults {
        source: "community:isac".into(),
        tlp: Tlp::Amber,
        confidence: 50,
        severity: Severity::Medium,
    };
    let batch = parse_file(&file, &fs::read_to_string(&file).unwrap(), &defaults).unwrap();
    DataDir::open(&other)
        .unwrap()
        .store()
        .unwrap()
        .upsert_batch(&batch, "community:isac", NOW)
        .unwrap();
    for n in 0..2 {
        let id = format!("indicator--91111111-1111-4111-8111-111111111111/{n}");
        let got = DataDir::open(&data)
            .unwrap()
            .store()
            .unwrap()
            .indicator(&id)
            .unwrap()
            .unwrap();
        let want = DataDir::open(&other)
            .unwrap()
            .store()
            .unwrap()
            .indicator(&id)
            .unwrap()
            .unwrap();
        assert_eq!(got.created_by.as_deref(), Some("bank-a"));
        assert_eq!(
            picket_collector::store::Stored {
                created_by: None,
                ..got
            },
            want,
            "branch {n}"
        );
    }
}

#[test]
fn an_indicator_another_organisation_confirmed_is_published_one_severity_step_higher() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // `publish` signs at the real time: the root must be valid now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    DataDir::init(&data, "Example Org", Some(&tmp.path().join("root.key")), now - 60).unwrap();
    let list = tmp.path().join("iocs.txt");
    fs::write(
        &list,
        format!("{EICAR_SHA256}\n44d88612fea8a8f36de82e1278abb02f\n"),
    )
    .unwrap();
    ingest(&data, &list, "iocs.txt");
    let feed = tmp.path().join("feed.json");
    fs::write(
        &feed,
        json!({"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": [{
            "type": "indicator", "spec_version": "2.1", "id": IND,
            "created": "2025-01-01T00:00:00.000Z", "modified": "2025-01-01T00:00:00.000Z",
            "pattern": "[ipv4-addr:value = '203.0.113.9']", "pattern_type": "stix",
            "valid_from": "2025-01-01T00:00:00Z"}]})
        .to_string(),
    )
    .unwrap();
    ingest(&data, &feed, "feed");
    all_taken(&give(
        &data,
        "isac",
        "bank-a",
        &[sighting(1, IND, "2025-06-02T00:00:00Z", 1)],
    ));
    collector(&["publish"], &data);
    let dir = DataDir::open(&data).unwrap();
    let set = dir.store().unwrap().latest_set("default").unwrap().unwrap();
    let snapshot = picket_proto::Snapshot::decode(&set.snapshot, usize::MAX).unwrap();
    let severities: std::collections::BTreeMap<String, Severity> = snapshot
        .records
        .iter()
        .map(|r| (r.id.clone(), r.indicator().unwrap().unwrap().meta.severity))
        .collect();
    assert_eq!(severities.len(), 3, "{severities:?}");
    assert_eq!(
        severities[IND],
        Severity::High,
        "confirmed by a member: medium goes out as high (publish_channels must build records with policy::prioritised)"
    );
    assert!(
        severities
            .iter()
            .filter(|(id, _)| id.as_str() != IND)
            .all(|(_, s)| *s == Severity::Medium),
        "{severities:?}"
    );
}
