//! Sharing, from outside: the bundles the policy emits pass the OASIS validator
//! (`stix2_validator`, PyPI, strict), and `share preview` on a real data directory prints only
//! what may leave (with k = 2 and no other organisation: nothing), says why, and never shows a
//! location an agent reported.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use picket_collector::datadir::DataDir;
use picket_collector::share::{
    bundle, decide, Candidate, Community, Decision, Disclosure, IndicatorObject, MarkingVersion, OrgSighting,
    Outgoing, OwnSightings,
};
use picket_proto::Tlp;

mod common;
use common::{ingest_file, python, record_sighting};

const H: i64 = 3600;
const NOW: i64 = 1_750_000_000;

/// Runs stix2_validator in strict mode on each bundle; panics with its report on any error or
/// warning.
fn validate_strictly(bundles: &[(String, serde_json::Value)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, b) in bundles {
        let p = dir.path().join(format!("{name}.json"));
        fs::write(&p, serde_json::to_string_pretty(b).unwrap()).unwrap();
        files.push(p);
    }
    let script = r#"
import sys
from stix2validator import validate_file, ValidationOptions, print_results
bad = 0
for path in sys.argv[1:]:
    r = validate_file(path, ValidationOptions(strict=True, version="2.1"))
    if not r.is_valid or any(o.errors or o.warnings for o in r.object_results):
        print_results(r)
        bad += 1
print("checked", len(sys.argv) - 1, "bad", bad)
sys.exit(1 if bad else 0)
"#;
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "stix2_validator --strict refused:\n{text}");
    assert!(
        text.contains(&format!("checked {} bad 0", bundles.len())),
        "{text}"
    );
}

fn community(name: &str, disclosure: Disclosure, marking: MarkingVersion, ceiling: Tlp) -> Community {
    Community {
        name: name.into(),
        tlp_ceiling: ceiling,
        disclosure,
        k: 3,
        time_bucket: H,
        count_bands: vec![1, 10, 100, 1000],
        delay: 6 * H,
        marking,
    }
}

fn candidate(id: &str, tlp: Tlp, fp: bool) -> Candidate {
    Candidate {
        stix_id: id.into(),
        tlp,
        revoked: false,
        false_positive: fp,
        own: Some(OwnSightings {
            hosts: 12,
            count: 243,
            first_seen: NOW - 40 * H + 1234,
            last_seen: NOW - 7 * H + 99,
        }),
        others: ["peer-a", "peer-b"]
            .iter()
            .map(|o| OrgSighting {
                org: (*o).into(),
                count: 4,
            })
            .collect(),
    }
}

#[test]
fn emitted_bundles_pass_the_oasis_validator_strictly() {
    let minted = "indicator--2f0e6a43-4b0b-4c3e-9d1f-8a7c6b5e4d3c";
    let from_feed = "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f";
    let items = |c: &Community| -> Vec<Outgoing> {
        [(minted, Tlp::Green, false), (from_feed, Tlp::Clear, true)]
            .into_iter()
            .map(|(id, tlp, fp)| {
                let Decision::Share(shared) = decide(c, &candidate(id, tlp, fp), NOW) else {
                    panic!("{id} held for {}", c.name)
                };
                Outgoing {
                    shared,
                    indicator: (id == minted).then(|| IndicatorObject {
                        name: "file SHA-256 275a021b".into(),
                        pattern: "[file:hashes.'SHA-256' = '275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f']".into(),
                        created: NOW - 100 * H,
                    }),
                }
            })
            .collect()
    };
    let key = [42u8; 32];
    let mut bundles = Vec::new();
    for (name, disclosure, marking, ceiling) in [
        ("none-tlp2", Disclosure::None, MarkingVersion::Tlp2, Tlp::Amber),
        (
            "sector-tlp2",
            Disclosure::Sector("financial-services".into()),
            MarkingVersion::Tlp2,
            Tlp::Green,
        ),
        (
            "org-tlp2",
            Disclosure::Organisation,
            MarkingVersion::Tlp2,
            Tlp::Clear,
        ),
        ("none-tlp1", Disclosure::None, MarkingVersion::Tlp1, Tlp::Clear),
        (
            "org-tlp1",
            Disclosure::Organisation,
            MarkingVersion::Tlp1,
            Tlp::Amber,
        ),
    ] {
        let c = community(name, disclosure, marking, ceiling);
        let its = if ceiling == Tlp::Clear {
            // A GREEN indicator is above a CLEAR ceiling: only the CLEAR one goes.
            items(&community(name, c.disclosure.clone(), marking, Tlp::Green))
                .into_iter()
                .filter(|o| o.shared.indicator == from_feed)
                .collect()
        } else {
            items(&c)
        };
        let b = bundle(&c, &key, "Example Org", &its);
        assert!(b["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["type"] == "sighting"));
        bundles.push((name.to_owned(), b));
    }
    // The empty bundle share preview prints when nothing may leave.
    let c = community(
        "empty",
        Disclosure::Organisation,
        MarkingVersion::Tlp2,
        Tlp::Amber,
    );
    bundles.push(("empty".into(), bundle(&c, &key, "Example Org", &[])));
    validate_strictly(&bundles);
}

/// A data directory with one community (k = 2), an indicator from a plain list, and sightings
/// of it from three agents whose locations hold `canary`.
fn data_dir(tmp: &Path, canary: &str) -> PathBuf {
    let data = tmp.join("data");
    DataDir::init(&data, "Canary Org", Some(&tmp.join("root.key")), NOW - 100 * H).unwrap();
    let mut cfg = fs::read_to_string(data.join("picket.toml")).unwrap();
    cfg.push_str(
        "\n[[community]]\nname = \"isac\"\nk = 2\ntlp_ceiling = \"amber\"\ndisclosure = \"organisation\"\n",
    );
    fs::write(data.join("picket.toml"), cfg).unwrap();
    let list = tmp.join("iocs.txt");
    fs::write(
        &list,
        "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f\n",
    )
    .unwrap();
    let id = ingest_file(&data, &list, "iocs.txt", NOW - 50 * H).remove(0);
    for n in 0..3 {
        record_sighting(
            &data,
            &format!("agent-{canary}-{n}"),
            &id,
            &format!("~/{canary}/Downloads/{canary}.exe"),
            NOW - 30 * H,
            NOW - 20 * H,
        );
    }
    data
}

fn preview(data: &Path, extra: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_picket-collector"))
        .args(["share", "preview", "--data"])
        .arg(data)
        .args(["--community", "isac"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

#[test]
fn share_preview_with_k2_and_no_other_organisation_prints_an_empty_bundle_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = format!("cnry{:016x}", NOW as u64 ^ u64::from(std::process::id()) << 20);
    let data = data_dir(tmp.path(), &canary);
    let (stdout, stderr) = preview(&data, &[]);
    let b: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(b["type"], "bundle");
    assert!(b.get("objects").is_none(), "{stdout}");
    assert!(stderr.contains("0 indicators shared, 1 held back"), "{stderr}");
    assert!(
        stderr.contains("below-k") && stderr.contains("below k = 2"),
        "{stderr}"
    );
    let (line, _) = preview(&data, &["--json"]);
    assert_eq!(line.trim().lines().count(), 1);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&line).unwrap(), b);
    for text in [&stdout, &stderr, &line] {
        assert!(
            !text.contains(&canary),
            "a reported location or agent id leaked: {text}"
        );
    }
    // Its secret was made on first use, private.
    let key = data.join("keys/community-isac.key");
    assert_eq!(fs::read(&key).unwrap().len(), 32);
    // A community that is not configured is an error naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_picket-collector"))
        .args(["share", "preview", "--data"])
        .arg(&data)
        .args(["--community", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nope\""));
}

#[test]
fn a_shared_bundle_from_the_store_holds_no_local_value_and_passes_the_validator() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = format!(
        "cnry{:016x}",
        (NOW as u64) ^ (u64::from(std::process::id()) << 24)
    );
    let data = data_dir(tmp.path(), &canary);
    let dir = DataDir::open(&data).unwrap();
    let id = dir.store().unwrap().sightings_by_indicator().unwrap()[0]
        .indicator
        .clone();
    let peer = |org: &str| OrgSighting {
        org: org.into(),
        count: 1,
    };
    let mut others = std::collections::BTreeMap::new();
    others.insert(id.clone(), vec![peer("peer-a")]);
    let p = picket_collector::share::preview_with(&dir, "isac", &others, NOW).unwrap();
    assert_eq!((p.shared, p.held.len()), (1, 0));
    let text = serde_json::to_string(&p.bundle).unwrap();
    for leak in [canary.as_str(), "agent-", "Downloads", ".exe", "~/"] {
        assert!(!text.contains(leak), "{leak:?} left in {text}");
    }
    let objects = p.bundle["objects"].as_array().unwrap();
    let sighting = objects.iter().find(|o| o["type"] == "sighting").unwrap();
    // Three agents, 7 each: 21 goes out as its band, 10; one organisation disclosed by name.
    assert_eq!(sighting["count"], 10);
    assert_eq!(sighting["where_sighted_refs"][0], sighting["created_by_ref"]);
    // The list's indicator is published beside it under this community's id, not Picket's.
    let indicator = objects.iter().find(|o| o["type"] == "indicator").unwrap();
    assert_eq!(sighting["sighting_of_ref"], indicator["id"]);
    assert_ne!(indicator["id"], id.as_str());
    assert!(indicator["pattern"]
        .as_str()
        .unwrap()
        .contains("275a021bbfb6489e"));
    // Another community gets other ids for the same facts.
    let mut cfg = fs::read_to_string(data.join("picket.toml")).unwrap();
    cfg.push_str("\n[[community]]\nname = \"other\"\nk = 2\n");
    fs::write(data.join("picket.toml"), cfg).unwrap();
    let dir = DataDir::open(&data).unwrap();
    let q = picket_collector::share::preview_with(&dir, "other", &others, NOW).unwrap();
    let ids = |b: &serde_json::Value| -> Vec<String> {
        b["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["type"] == "sighting" || o["type"] == "indicator")
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(ids(&q.bundle).iter().all(|i| !ids(&p.bundle).contains(i)));
    validate_strictly(&[("store-isac".into(), p.bundle), ("store-other".into(), q.bundle)]);
}

#[test]
fn k_below_2_in_picket_toml_stops_the_command_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "x");
    let cfg = fs::read_to_string(data.join("picket.toml"))
        .unwrap()
        .replace("k = 2", "k = 1");
    fs::write(data.join("picket.toml"), cfg).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_picket-collector"))
        .args(["share", "preview", "--data"])
        .arg(&data)
        .args(["--community", "isac"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("picket.toml") && err.contains("k: 1 is below 2"),
        "{err}"
    );
}
