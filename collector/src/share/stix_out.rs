//! STIX 2.1 out: the bundle one community receives, built from the policy's [`Shared`]
//! decisions. Pure: the community, its secret, the organisation's name and the time are
//! arguments, and the same arguments give the same bytes.
//!
//! What a bundle holds:
//! - one `sighting` per shared indicator (`sighting_of_ref`, `count`, `first_seen`,
//!   `last_seen`, its id derived per community and period, `created` at the coarsened first
//!   sighting, `modified` at the coarsened last sighting plus one millisecond per count band
//!   reached, so every update is a newer version of the same object);
//! - an `opinion` (`strongly-disagree`, "false positive") on an indicator marked a false
//!   positive here, with no reason text (the operator's reason is a local value);
//! - the `indicator` itself only when its id is one Picket minted (an indicator from a plain
//!   list or CSV): nobody else knows it. It goes under an id derived per community like a
//!   sighting's (Picket's own ids are name-based version 5 UUIDs, and STIX wants version 4 for
//!   domain objects; a per-community id also keeps communities unlinkable). An indicator that came with its
//!   own id (STIX, MISP) is referenced, never re-published: members that share the feed know
//!   it, and publishing our copy under its author's id would forge a version of their object;
//! - `where_sighted_refs` per disclosure (absent, a sector identity, or this organisation's
//!   identity) and `created_by_ref` only when the organisation is disclosed;
//! - the TLP marking on every object, and the marking-definition objects it names (TLP 2.0 by
//!   default, TLP 1.0 per community).

use std::collections::BTreeMap;

use picket_proto::{rfc3339, Tlp};
use serde_json::{json, Value};

use super::policy::{derived_id, Community, Disclosure, MarkingVersion, Shared};

/// The TLP 2.0 property extension's id.
pub const TLP2_EXTENSION: &str = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d";

/// The marking-definition id of `tlp` in `version`.
pub fn marking_id(tlp: Tlp, version: MarkingVersion) -> &'static str {
    match (version, tlp) {
        (MarkingVersion::Tlp2, Tlp::Clear) => "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
        (MarkingVersion::Tlp2, Tlp::Green) => "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
        (MarkingVersion::Tlp2, Tlp::Amber) => "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
        (MarkingVersion::Tlp2, Tlp::AmberStrict) => {
            "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003"
        }
        (MarkingVersion::Tlp2, Tlp::Red) => "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
        (MarkingVersion::Tlp1, Tlp::Clear) => "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
        (MarkingVersion::Tlp1, Tlp::Green) => "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
        // TLP 1.0 has no AMBER+STRICT; it never leaves anyway, and AMBER is the nearest.
        (MarkingVersion::Tlp1, Tlp::Amber | Tlp::AmberStrict) => {
            "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82"
        }
        (MarkingVersion::Tlp1, Tlp::Red) => "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
    }
}

/// The marking-definition object for `tlp`, as the TLP specifications publish it.
pub fn marking_object(tlp: Tlp, version: MarkingVersion) -> Value {
    let id = marking_id(tlp, version);
    match version {
        MarkingVersion::Tlp2 => {
            let word = match tlp {
                Tlp::Clear => "clear",
                Tlp::Green => "green",
                Tlp::Amber => "amber",
                Tlp::AmberStrict => "amber+strict",
                Tlp::Red => "red",
            };
            json!({
                "type": "marking-definition",
                "spec_version": "2.1",
                "id": id,
                "created": "2022-10-01T00:00:00.000Z",
                "name": format!("TLP:{}", word.to_ascii_uppercase()),
                "extensions": {
                    TLP2_EXTENSION: { "extension_type": "property-extension", "tlp_2_0": word }
                }
            })
        }
        MarkingVersion::Tlp1 => {
            let word = match tlp {
                Tlp::Clear => "white",
                Tlp::Green => "green",
                Tlp::Amber | Tlp::AmberStrict => "amber",
                Tlp::Red => "red",
            };
            json!({
                "type": "marking-definition",
                "spec_version": "2.1",
                "id": id,
                "created": "2017-01-20T00:00:00.000Z",
                "definition_type": "tlp",
                "name": format!("TLP:{}", word.to_ascii_uppercase()),
                "definition": { "tlp": word }
            })
        }
    }
}

/// A STIX timestamp with milliseconds.
fn ts(secs: i64, millis: usize) -> String {
    let s = rfc3339(secs);
    format!("{}.{:03}Z", s.trim_end_matches('Z'), millis.min(999))
}

/// When identities Picket makes are said to be created: fixed, so an identity keeps one
/// version.
const IDENTITY_CREATED: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

/// This organisation's identity id: a UUID derived from its name (SHA-1, shaped as version 4,
/// the form STIX asks of domain objects), the same for every community (an organisation that
/// discloses itself is meant to be recognised).
pub fn organisation_identity_id(org: &str) -> String {
    use sha1::{Digest, Sha1};
    const NAMESPACE: [u8; 16] = [
        0x3e, 0x8a, 0x51, 0x0c, 0x77, 0x2f, 0x4d, 0x1b, 0x8f, 0x60, 0x19, 0xd2, 0xa4, 0x3b, 0x5e, 0x01,
    ];
    let mut h = Sha1::new();
    h.update(NAMESPACE);
    h.update(org.as_bytes());
    format!("identity--{}", crate::uuid::uuid_text(&h.finalize(), 4))
}

/// An indicator Picket minted, to publish beside its sightings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndicatorObject {
    /// The STIX pattern.
    pub pattern: String,
    /// A short name (the observable, for example `file SHA-256 275a…`).
    pub name: String,
    /// When it was first stored, already coarsened by the caller (unix seconds).
    pub created: i64,
}

/// One shared indicator: the decision, and the indicator object when one goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// What the policy allowed.
    pub shared: Shared,
    /// The indicator, when the community would not otherwise know it.
    pub indicator: Option<IndicatorObject>,
}

/// The bundle `community` receives for `items`. `key` is the community's secret and `org` this
/// organisation's name (used only when the community's disclosure is `organisation`).
pub fn bundle(community: &Community, key: &[u8; 32], org: &str, items: &[Outgoing]) -> Value {
    let mut markings: BTreeMap<&'static str, Value> = BTreeMap::new();
    let mut identities: Vec<Value> = Vec::new();
    let mut rest: Vec<Value> = Vec::new();
    let (where_sighted, created_by) = match &community.disclosure {
        Disclosure::None => (None, None),
        Disclosure::Sector(sector) => {
            let id = derived_id(key, &community.name, "identity", 0, &format!("sector:{sector}"));
            identities.push(json!({
                "type": "identity",
                "spec_version": "2.1",
                "id": id,
                "created": ts(IDENTITY_CREATED, 0),
                "modified": ts(IDENTITY_CREATED, 0),
                "name": format!("A member of the {sector} sector"),
                "identity_class": "class",
                "sectors": [sector],
            }));
            (Some(id), None)
        }
        Disclosure::Organisation => {
            let id = organisation_identity_id(org);
            identities.push(json!({
                "type": "identity",
                "spec_version": "2.1",
                "id": id,
                "created": ts(IDENTITY_CREATED, 0),
                "modified": ts(IDENTITY_CREATED, 0),
                "name": org,
                "identity_class": "organization",
            }));
            (Some(id.clone()), Some(id))
        }
    };
    let mut items: Vec<&Outgoing> = items.iter().collect();
    items.sort_by(|a, b| a.shared.indicator.cmp(&b.shared.indicator));
    for item in items {
        let s = &item.shared;
        let marking = marking_id(s.tlp, community.marking);
        markings
            .entry(marking)
            .or_insert_with(|| marking_object(s.tlp, community.marking));
        let created = ts(s.first_seen, 0);
        let modified = ts(s.last_seen, s.band);
        if let Some(ind) = &item.indicator {
            let mut o = json!({
                "type": "indicator",
                "spec_version": "2.1",
                "id": s.indicator,
                "created": ts(ind.created, 0),
                "modified": ts(ind.created, 0),
                "name": ind.name,
                "description": "An indicator members of this community sighted, published by Picket beside its sightings.",
                "pattern": ind.pattern,
                "pattern_type": "stix",
                "valid_from": ts(ind.created, 0),
                "object_marking_refs": [marking],
            });
            if let Some(c) = &created_by {
                o["created_by_ref"] = json!(c);
            }
            rest.push(o);
        }
        let mut sighting = json!({
            "type": "sighting",
            "spec_version": "2.1",
            "id": derived_id(key, &community.name, "sighting", s.period, &s.indicator),
            "created": created,
            "modified": modified,
            "first_seen": ts(s.first_seen, 0),
            "last_seen": ts(s.last_seen, 0),
            "count": s.count,
            "sighting_of_ref": s.indicator,
            "object_marking_refs": [marking],
        });
        if let Some(w) = &where_sighted {
            sighting["where_sighted_refs"] = json!([w]);
        }
        if let Some(c) = &created_by {
            sighting["created_by_ref"] = json!(c);
        }
        rest.push(sighting);
        if s.false_positive {
            let mut opinion = json!({
                "type": "opinion",
                "spec_version": "2.1",
                "id": derived_id(key, &community.name, "opinion", s.period, &s.indicator),
                "created": created,
                "modified": modified,
                "opinion": "strongly-disagree",
                "explanation": "false positive",
                "object_refs": [s.indicator],
                "object_marking_refs": [marking],
            });
            if let Some(c) = &created_by {
                opinion["created_by_ref"] = json!(c);
            }
            rest.push(opinion);
        }
    }
    let objects: Vec<Value> = if rest.is_empty() {
        Vec::new()
    } else {
        markings.into_values().chain(identities).chain(rest).collect()
    };
    // The bundle's id follows from what it holds (each object's id and version), not from the
    // clock: the same content is the same bundle, whenever it is rendered.
    let content: Vec<String> = objects
        .iter()
        .map(|o| {
            let field = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
            format!("{} {}", field("id"), field("modified"))
        })
        .collect();
    let mut out = json!({
        "type": "bundle",
        "id": derived_id(key, &community.name, "bundle", 0, &content.join("\n")),
    });
    if !objects.is_empty() {
        out["objects"] = Value::Array(objects);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share::policy::{decide, Candidate, Decision, OwnSightings};

    const H: i64 = 3600;
    const IND: &str = "indicator--4b1c6a2e-7a55-4d59-9b2f-1f0a9c1e0b11";

    fn community(name: &str, disclosure: Disclosure) -> Community {
        Community {
            name: name.into(),
            tlp_ceiling: Tlp::Amber,
            disclosure,
            k: 2,
            time_bucket: H,
            count_bands: vec![1, 10, 100, 1000],
            delay: 0,
            marking: MarkingVersion::Tlp2,
        }
    }

    /// The bundle for one indicator seen `count` times between `first` and `last`, and one
    /// other organisation.
    fn emitted(c: &Community, key: &[u8; 32], count: u64, first: i64, last: i64) -> Value {
        let cand = Candidate {
            stix_id: IND.into(),
            tlp: Tlp::Green,
            revoked: false,
            false_positive: false,
            own: Some(OwnSightings {
                hosts: 3,
                count,
                first_seen: first,
                last_seen: last,
            }),
            others: vec![crate::share::OrgSighting {
                org: "peer".into(),
                count: 1,
            }],
        };
        let Decision::Share(shared) = decide(c, &cand, 1000 * H) else {
            panic!("held")
        };
        bundle(
            c,
            key,
            "Example Org",
            &[Outgoing {
                shared,
                indicator: None,
            }],
        )
    }

    fn sighting(b: &Value) -> &Value {
        b["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["type"] == "sighting")
            .unwrap()
    }

    #[test]
    fn the_same_sighting_for_two_communities_has_unrelated_ids() {
        let a = emitted(
            &community("isac-a", Disclosure::None),
            &[1; 32],
            5,
            10 * H,
            11 * H,
        );
        let b = emitted(
            &community("isac-b", Disclosure::None),
            &[2; 32],
            5,
            10 * H,
            11 * H,
        );
        assert_ne!(sighting(&a)["id"], sighting(&b)["id"]);
        assert_ne!(a["id"], b["id"]);
        // Everything else is the same: only the ids could link them, and they do not.
        let strip = |v: &Value| {
            let mut v = v.clone();
            v["id"] = Value::Null;
            v
        };
        assert_eq!(strip(sighting(&a)), strip(sighting(&b)));
    }

    #[test]
    fn a_bundle_s_id_follows_its_content_not_the_clock() {
        let c = community("isac", Disclosure::None);
        let key = [7u8; 32];
        let a = emitted(&c, &key, 3, 10 * H, 11 * H);
        // Rendered again (a later request, a push after a preview): the same bundle.
        assert_eq!(a, emitted(&c, &key, 3, 10 * H, 11 * H));
        // A new version of the sighting is a new bundle.
        let b = emitted(&c, &key, 30, 10 * H, 12 * H);
        assert_ne!(a["id"], b["id"]);
        // Two empty bundles of one community are the same; of two communities, not.
        let empty = |c: &Community| bundle(c, &key, "Example Org", &[]);
        assert_eq!(empty(&c), empty(&c));
        assert_ne!(
            empty(&c)["id"],
            empty(&community("peers", Disclosure::None))["id"]
        );
    }

    #[test]
    fn a_later_count_is_a_new_version_of_the_same_sighting() {
        let c = community("isac", Disclosure::None);
        let key = [3; 32];
        let first = sighting(&emitted(&c, &key, 5, 10 * H + 60, 10 * H + 120)).clone();
        // More sightings, later, in the same period: same object, newer version.
        let later = sighting(&emitted(&c, &key, 50, 10 * H + 60, 14 * H + 1)).clone();
        assert_eq!(first["id"], later["id"]);
        assert_eq!(first["created"], later["created"]);
        assert_eq!(first["created"], "1970-01-01T10:00:00.000Z");
        assert!(later["modified"].as_str() > first["modified"].as_str());
        assert_eq!(
            (first["count"].as_u64(), later["count"].as_u64()),
            (Some(1), Some(10))
        );
        assert_eq!(later["last_seen"], "1970-01-01T15:00:00.000Z");
        // A larger band within the same last-seen bucket still moves `modified`.
        let more = sighting(&emitted(&c, &key, 500, 10 * H + 60, 14 * H + 1)).clone();
        assert_eq!(more["last_seen"], later["last_seen"]);
        assert!(more["modified"].as_str() > later["modified"].as_str());
    }

    #[test]
    fn disclosure_decides_where_sighted_and_created_by() {
        let key = [4; 32];
        let none = emitted(&community("c", Disclosure::None), &key, 2, 0, H);
        assert!(sighting(&none).get("where_sighted_refs").is_none());
        assert!(sighting(&none).get("created_by_ref").is_none());
        assert!(!none.to_string().contains("Example Org"));
        let sector = emitted(
            &community("c", Disclosure::Sector("financial-services".into())),
            &key,
            2,
            0,
            H,
        );
        let s = sighting(&sector);
        assert!(s.get("created_by_ref").is_none());
        let w = s["where_sighted_refs"][0].as_str().unwrap();
        let identity = sector["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"] == w)
            .unwrap();
        assert_eq!(identity["sectors"][0], "financial-services");
        assert!(!sector.to_string().contains("Example Org"));
        let org = emitted(&community("c", Disclosure::Organisation), &key, 2, 0, H);
        let s = sighting(&org);
        assert_eq!(s["created_by_ref"], s["where_sighted_refs"][0]);
        assert_eq!(s["created_by_ref"], organisation_identity_id("Example Org"));
        assert!(org.to_string().contains("\"name\":\"Example Org\""));
    }

    #[test]
    fn tlp_markings_in_both_versions() {
        let key = [5; 32];
        let mut c = community("c", Disclosure::None);
        let b = emitted(&c, &key, 2, 0, H);
        assert_eq!(
            sighting(&b)["object_marking_refs"][0],
            "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
            "green under an amber ceiling goes as amber"
        );
        c.marking = MarkingVersion::Tlp1;
        let b = emitted(&c, &key, 2, 0, H);
        let id = "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82";
        assert_eq!(sighting(&b)["object_marking_refs"][0], id);
        assert!(b["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["id"] == id && o["definition"]["tlp"] == "amber"));
    }
}
