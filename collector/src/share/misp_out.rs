//! MISP output for a community: its shared sightings as MISP sighting JSON, and its shared
//! indicators as a MISP feed directory. The renderers ([`sightings`], [`feed`]) are pure; the
//! shell ([`export`], [`write_feed`]) reads only what [`super::preview_with`] decided and the
//! stored indicator records those decisions name.
//!
//! Invariant: what leaves here is exactly what the STIX output would share under the same
//! policy. Every item comes from a [`Shared`] the policy produced (TLP:RED, AMBER+STRICT, above
//! the ceiling, revoked, below k or too recent: nothing at all); its times are the coarsened
//! ones and its value is the indicator's own (a hash or an address the community's members
//! already match on). No sighting row is read, so no agent id, location, address or host name
//! can reach the output.
//!
//! Sightings (`share misp-sightings`): a JSON array, one object per sighting, each ready to be
//! the body of one `POST /sightings/add`. MISP's `SightingsController::add` (MISP source,
//! `app/Controller/SightingsController.php`) reads `value` (or `values`), `uuid` (or `id`) to
//! name the attribute, `type` (`"0"` a sighting, `"1"` a false positive, `"2"` an expiration),
//! `source` (free text, trimmed) and `timestamp` (unix seconds) for when it was seen; MISP's
//! sighting records carry that time as `date_sighting`. Each object carries both `date_sighting`
//! and `timestamp`, the same coarsened last-seen time, so both MISP's add endpoint and readers
//! of its sighting records find it. The attribute is named by `uuid` when the indicator came
//! from a MISP source (its id is the MISP attribute's uuid), else by `value` for file hashes and
//! addresses; other kinds have no MISP value a member could match, and are left out.
//!
//! Feed (`share misp-feed`): `manifest.json` and one event file `<uuid>.json`, in the layout
//! MISP's feed fetcher and our own [`crate::ingest::parse_feed_dir`] read. The event's
//! uuid and each attribute's uuid are derived from the community's secret
//! ([`policy::derived_id`]), so a community's feed keeps its ids from one export to the next
//! and two communities cannot link their feeds. Attributes carry `to_ids: true` and the shared
//! TLP as a `tlp:` tag. Indicators marked false positive are not in the feed (they go out as
//! type 1 sightings instead).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use picket_proto::{HashKind, Observable, Tlp};
use serde_json::{json, Map, Value};

use super::policy::{self, Community, Disclosure, OrgSighting, Shared};
use crate::datadir::DataDir;
use crate::ingest::derived_id as value_id;
use crate::CollectorError;

/// One shared indicator, as MISP names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MispItem {
    /// What the policy allowed.
    pub shared: Shared,
    /// The MISP attribute uuid, when the indicator came from a MISP source.
    pub misp_uuid: Option<String>,
    /// The MISP attributes (type, value) the indicator is, for file hashes and addresses.
    pub attributes: Vec<(&'static str, String)>,
}

/// What one community receives in MISP form, with what the renderers need to know about it.
#[derive(Debug, Clone)]
pub struct Export {
    /// The community's checked policy.
    pub community: Community,
    /// Its secret (derives the feed's ids).
    pub key: [u8; 32],
    /// This organisation's name (disclosed only under `disclosure = "organisation"`).
    pub org: String,
    /// The shared indicators.
    pub items: Vec<MispItem>,
}

/// The MISP attribute (type, value) for an observable, for file hashes and addresses only.
pub fn attribute_of(observable: &Observable) -> Option<(&'static str, String)> {
    match observable {
        Observable::FileHash { hash, .. } => {
            let kind = match hash.kind {
                HashKind::Md5 => "md5",
                HashKind::Sha1 => "sha1",
                HashKind::Sha256 => "sha256",
            };
            Some((kind, hash.hex()))
        }
        Observable::RemoteAddr(net) => Some(("ip-dst", net.to_string())),
        _ => None,
    }
}

/// What community `name` would receive at `now` in MISP form: [`super::preview_with`]'s
/// decisions, each with the MISP names of its indicator. `others` is as there.
pub fn export(
    dir: &DataDir,
    name: &str,
    others: &BTreeMap<String, Vec<OrgSighting>>,
    now: i64,
) -> Result<Export, CollectorError> {
    let preview = super::preview_with(dir, name, others, now)?;
    let (community, key) = super::community(dir, name)?;
    let store = dir.store()?;
    let misp_sources: Vec<String> = store
        .sources()?
        .into_iter()
        .filter(|s| s.kind == "misp" || s.kind == "misp-feed")
        .map(|s| s.name)
        .collect();
    let mut items = Vec::new();
    for (shared, ids) in preview.sent {
        let mut misp_uuid = None;
        let mut attributes = Vec::new();
        for id in &ids {
            let Some(stored) = store.indicator(id)? else {
                continue;
            };
            let Ok(Some(ind)) = stored.record.indicator() else {
                continue;
            };
            // The MISP reader names an indicator after its attribute's uuid; any other id is
            // one Picket derived from the value (or a STIX id), unknown to a MISP instance.
            let from_misp = stored.sources.iter().any(|s| misp_sources.contains(s))
                && value_id(&ind.observable) != stored.record.id;
            if from_misp && misp_uuid.is_none() {
                misp_uuid = stored
                    .record
                    .id
                    .strip_prefix("indicator--")
                    .filter(|u| !u.contains('/'))
                    .map(str::to_owned);
            }
            if let Some(attr) = attribute_of(&ind.observable) {
                if !attributes.contains(&attr) {
                    attributes.push(attr);
                }
            }
        }
        items.push(MispItem {
            shared,
            misp_uuid,
            attributes,
        });
    }
    Ok(Export {
        community,
        key,
        org: dir.config().org.clone(),
        items,
    })
}

/// The `source` a community's sightings carry: none, the sector, or this organisation.
fn source(community: &Community, org: &str) -> Option<String> {
    match &community.disclosure {
        Disclosure::None => None,
        Disclosure::Sector(s) => Some(s.clone()),
        Disclosure::Organisation => Some(org.to_owned()),
    }
}

/// The MISP sighting JSON for `export`: an array of objects, each the body of one
/// `POST /sightings/add`.
pub fn sightings(export: &Export) -> Value {
    let source = source(&export.community, &export.org);
    let mut out = Vec::new();
    for item in &export.items {
        let when = item.shared.last_seen.to_string();
        let kind = if item.shared.false_positive { "1" } else { "0" };
        let names: Vec<(&str, &str)> = match &item.misp_uuid {
            Some(u) => vec![("uuid", u.as_str())],
            None => item
                .attributes
                .iter()
                .map(|(_, v)| ("value", v.as_str()))
                .collect(),
        };
        for (field, name) in names {
            let mut o = Map::new();
            o.insert(field.into(), json!(name));
            o.insert("type".into(), json!(kind));
            o.insert("date_sighting".into(), json!(when));
            o.insert("timestamp".into(), json!(when));
            if let Some(s) = &source {
                o.insert("source".into(), json!(s));
            }
            out.push(Value::Object(o));
        }
    }
    Value::Array(out)
}

/// A MISP feed: the event's uuid, `manifest.json` and the event file's content.
#[derive(Debug, Clone, PartialEq)]
pub struct Feed {
    /// The event's uuid (also its file name, `<uuid>.json`).
    pub uuid: String,
    /// `manifest.json`.
    pub manifest: Value,
    /// `<uuid>.json`.
    pub event: Value,
}

/// The uuid part of a derived `<kind>--<uuid>` id.
fn uuid_of(id: &str) -> String {
    id.split_once("--").map_or(id, |(_, u)| u).to_owned()
}

/// MISP's tag name for a TLP.
fn tlp_tag(tlp: Tlp) -> String {
    tlp.to_string().to_ascii_lowercase()
}

/// The MISP feed of `export`'s shared indicators at `now`: one event per community, its uuid
/// derived from the community's secret, every shared file hash and address an attribute with
/// `to_ids` and its TLP tag. False positives are left out.
pub fn feed(export: &Export, now: i64) -> Feed {
    let c = &export.community;
    let uuid = uuid_of(&policy::derived_id(&export.key, &c.name, "misp-event", 0, "feed"));
    let org_name = source(c, &export.org).unwrap_or_else(|| format!("picket community {}", c.name));
    let orgc = json!({
        "name": org_name,
        "uuid": uuid_of(&policy::derived_id(&export.key, &c.name, "misp-org", 0, &org_name)),
    });
    let mut attributes = Vec::new();
    let mut strictest = Tlp::Clear;
    for item in export.items.iter().filter(|i| !i.shared.false_positive) {
        for (kind, value) in &item.attributes {
            strictest = strictest.max(item.shared.tlp);
            let subject = format!("{}\n{kind}\n{value}", item.shared.indicator);
            let category = if *kind == "ip-dst" {
                "Network activity"
            } else {
                "Payload delivery"
            };
            attributes.push(json!({
                "uuid": uuid_of(&policy::derived_id(&export.key, &c.name, "misp-attribute", 0, &subject)),
                "type": kind,
                "category": category,
                "value": value,
                "to_ids": true,
                "distribution": "5",
                "timestamp": item.shared.last_seen.to_string(),
                "Tag": [{ "name": tlp_tag(item.shared.tlp) }],
            }));
        }
    }
    let date = picket_proto::rfc3339(now).chars().take(10).collect::<String>();
    let tags = json!([{ "name": tlp_tag(strictest) }]);
    let info = format!("Picket: indicators sighted, shared with community {}", c.name);
    let event = json!({
        "Event": {
            "uuid": uuid,
            "info": info,
            "date": date,
            "timestamp": now.to_string(),
            "publish_timestamp": now.to_string(),
            "published": true,
            "analysis": "2",
            "threat_level_id": "2",
            "distribution": "1",
            "Orgc": orgc,
            "Tag": tags,
            "Attribute": attributes,
        }
    });
    let manifest = json!({
        uuid.clone(): {
            "info": info,
            "date": date,
            "timestamp": now.to_string(),
            "analysis": "2",
            "threat_level_id": "2",
            "Orgc": orgc,
            "Tag": tags,
        }
    });
    Feed {
        uuid,
        manifest,
        event,
    }
}

/// Writes `feed` into directory `out` (created if missing): `manifest.json` and
/// `<uuid>.json`. Errors name the file.
pub fn write_feed(out: &Path, feed: &Feed) -> Result<(), CollectorError> {
    fs::create_dir_all(out).map_err(CollectorError::io(out))?;
    for (name, value) in [
        (format!("{}.json", feed.uuid), &feed.event),
        ("manifest.json".to_owned(), &feed.manifest),
    ] {
        let path = out.join(name);
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CollectorError::Refused(format!("{}: {e}", path.display())))?;
        fs::write(&path, text + "\n").map_err(CollectorError::io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share::policy::MarkingVersion;

    fn export(disclosure: Disclosure, items: Vec<MispItem>) -> Export {
        Export {
            community: Community {
                name: "isac".into(),
                tlp_ceiling: Tlp::Amber,
                disclosure,
                k: 2,
                time_bucket: 3600,
                count_bands: vec![1, 10],
                delay: 0,
                marking: MarkingVersion::Tlp2,
            },
            key: [5; 32],
            org: "Example Org".into(),
            items,
        }
    }

    fn item(id: &str, fp: bool, uuid: Option<&str>) -> MispItem {
        MispItem {
            shared: Shared {
                indicator: id.into(),
                tlp: Tlp::Green,
                first_seen: 3600,
                last_seen: 7200,
                count: 10,
                band: 1,
                period: 3600,
                false_positive: fp,
            },
            misp_uuid: uuid.map(str::to_owned),
            attributes: vec![("ip-dst", "203.0.113.7".into())],
        }
    }

    #[test]
    fn sightings_name_the_uuid_or_the_value_and_mark_false_positives_type_1() {
        let u = "5f3c1d2e-1111-4222-8333-944455556666";
        let e = export(
            Disclosure::None,
            vec![
                item("indicator--a", false, Some(u)),
                item("indicator--b", true, None),
            ],
        );
        let s = sightings(&e);
        assert_eq!(
            s,
            json!([
                {"uuid": u, "type": "0", "date_sighting": "7200", "timestamp": "7200"},
                {"value": "203.0.113.7", "type": "1", "date_sighting": "7200", "timestamp": "7200"},
            ])
        );
        let e = export(
            Disclosure::Sector("energy".into()),
            vec![item("indicator--a", false, None)],
        );
        assert_eq!(sightings(&e)[0]["source"], "energy");
        let e = export(Disclosure::Organisation, vec![item("indicator--a", false, None)]);
        assert_eq!(sightings(&e)[0]["source"], "Example Org");
    }

    #[test]
    fn the_feed_keeps_its_ids_and_leaves_false_positives_out() {
        let e = export(
            Disclosure::None,
            vec![
                item("indicator--a", false, None),
                item("indicator--b", true, None),
            ],
        );
        let f = feed(&e, 86_400);
        assert_eq!(f, feed(&e, 86_400));
        assert_eq!(f.event["Event"]["Attribute"].as_array().map(Vec::len), Some(1));
        assert!(f.manifest.get(&f.uuid).is_some());
        let mut other = e.clone();
        other.key = [6; 32];
        assert_ne!(feed(&other, 86_400).uuid, f.uuid, "another secret, another event");
    }
}
