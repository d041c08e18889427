//! Sharing sightings with communities: the policy that decides what each community learns
//! ([`policy`], pure), the STIX 2.1 bundle it receives ([`stix_out`], pure), what comes in from
//! the community ([`inbound`]: other organisations' sightings, false-positive verdicts and
//! indicators), and the shell that feeds the store's sightings, this organisation's and the
//! community's, through the policy for `share preview`.
//!
//! Architecture invariant: nothing reaches a community except through [`policy::decide`],
//! whose output ([`Shared`]) holds an indicator id, a TLP, coarsened times, a banded count and
//! a false-positive flag, and nothing else. Agent ids, keys, sequence numbers, locations,
//! addresses and heartbeats are never read by this module's shell.

pub mod inbound;
pub mod misp_out;
pub mod policy;
pub mod stix_out;
pub mod upstream;

use std::collections::BTreeMap;

use picket_proto::Tlp;
use serde_json::Value;

pub use policy::{
    decide, Candidate, Community, Decision, Disclosure, Held, MarkingVersion, OrgSighting, OwnSightings,
    SectorWithheld, Shared,
};
pub use stix_out::{bundle, IndicatorObject, Outgoing};

use crate::datadir::DataDir;
use crate::ingest::derived_id;
use crate::store::Stored;
use crate::CollectorError;

/// What a community would receive now, and what was held back.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The bundle, exactly as it would leave.
    pub bundle: Value,
    /// Indicators shared.
    pub shared: usize,
    /// Indicators held back (Picket's indicator id, and why), for the operator only.
    pub held: Vec<(String, Held)>,
    /// The policy's decision for each shared indicator, with the stored indicator ids it
    /// covers (for other output formats, such as [`misp_out`], to render the same decisions).
    pub sent: Vec<(Shared, Vec<String>)>,
    /// The community asks for the sector, but fewer than k of its organisations are in it: the
    /// bundle names no one, and this says why (for the operator).
    pub sector_withheld: Option<SectorWithheld>,
}

/// The STIX id a shared sighting names for a stored indicator: its own id, less the `/<n>`
/// Picket adds to each branch of a STIX pattern with `OR` (the branches are one STIX object).
pub fn stix_id(stored_id: &str) -> &str {
    stored_id.split_once('/').map_or(stored_id, |(id, _)| id)
}

/// The STIX pattern of an indicator Picket minted the id of, when the community would not
/// otherwise know it (see [`stix_out`]); `None` for indicators that came with their own id and
/// for kinds with no exact pattern (their sightings still name the id).
fn minted_indicator(stored: &Stored, bucket: i64) -> Option<IndicatorObject> {
    use picket_proto::{HashKind, Observable};
    let ind = stored.record.indicator().ok()??;
    if derived_id(&ind.observable) != stored.record.id {
        return None;
    }
    let quote = |s: &str| s.replace('\\', "\\\\").replace('\'', "\\'");
    let (name, pattern) = match &ind.observable {
        Observable::FileHash { hash, size } => {
            let algo = match hash.kind {
                HashKind::Md5 => "MD5",
                HashKind::Sha1 => "SHA-1",
                HashKind::Sha256 => "SHA-256",
            };
            let mut p = format!("[file:hashes.'{algo}' = '{}'", hash.hex());
            if let Some(size) = size {
                p.push_str(&format!(" AND file:size = {size}"));
            }
            p.push(']');
            (format!("file {algo} {}", hash.hex()), p)
        }
        Observable::RemoteAddr(net) => {
            let kind = if net.to_string().contains(':') {
                "ipv6-addr"
            } else {
                "ipv4-addr"
            };
            (
                format!("remote address {net}"),
                format!("[{kind}:value = '{net}']"),
            )
        }
        Observable::FileName(n) if !n.glob => (
            format!("file name {}", n.text),
            format!("[file:name = '{}']", quote(&n.text)),
        ),
        _ => return None,
    };
    Some(IndicatorObject {
        pattern,
        name,
        created: policy::floor(stored.first_seen, bucket),
    })
}

/// What community `name` would receive at `now`: this organisation's sightings, with the other
/// organisations' sightings received through this community (posted by its TAXII members or
/// pulled from its upstream collections, see [`inbound`]) counting towards its k, one
/// organisation per account. Sightings received through another community never count here.
pub fn preview(dir: &DataDir, name: &str, now: i64) -> Result<Preview, CollectorError> {
    preview_with(dir, name, &BTreeMap::new(), now)
}

/// The community `name` of picket.toml, checked, and its pseudonym secret (made on first use).
pub(crate) fn community(dir: &DataDir, name: &str) -> Result<(Community, [u8; 32]), CollectorError> {
    let entry = dir
        .config()
        .communities
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| {
            CollectorError::Refused(format!(
                "{}: no [[community]] named {name:?}",
                dir.config_path().display()
            ))
        })?;
    let community = Community::from_config(entry, &dir.config_path())?;
    let key = dir.community_key(&community.name)?;
    Ok((community, key))
}

/// Whether Picket minted `stored`'s id and publishes the indicator beside its sightings: a
/// community then knows it only under the id derived for that community.
pub(crate) fn is_minted(stored: &Stored) -> bool {
    minted_indicator(stored, 1).is_some()
}

/// [`preview`], with more other organisations' sightings by stored indicator id (Picket's id,
/// as `sightings` shows it), one entry per account, on top of those the store received through
/// the community: for tests, and for callers holding sightings the store does not.
pub fn preview_with(
    dir: &DataDir,
    name: &str,
    others: &BTreeMap<String, Vec<OrgSighting>>,
    now: i64,
) -> Result<Preview, CollectorError> {
    let (community, key) = community(dir, name)?;
    let store = dir.store()?;
    // Matched by the STIX id this community knows the indicator by (below).
    let inbound = store.inbound_sightings(&community.name)?;
    // The branches of one STIX indicator with `OR` are one shared object: their sightings are
    // merged, and the strictest TLP among them goes.
    let mut by_stix: BTreeMap<String, (Candidate, Vec<String>, Option<IndicatorObject>)> = BTreeMap::new();
    for agg in store.sightings_by_indicator()? {
        let stored = store.indicator(&agg.indicator)?;
        // An indicator the store does not know has no TLP to go by: treated as RED.
        let (tlp, revoked) = stored.as_ref().map_or((Tlp::Red, false), |s| (s.tlp, s.revoked));
        let own = OwnSightings {
            hosts: agg.hosts,
            count: agg.count,
            first_seen: agg.first_seen,
            last_seen: agg.last_seen,
        };
        let minted = stored
            .as_ref()
            .and_then(|s| minted_indicator(s, community.time_bucket));
        // A minted indicator goes under an id derived for this community (see stix_out).
        let id = match &minted {
            Some(_) => policy::derived_id(&key, &community.name, "indicator", 0, &agg.indicator),
            None => stix_id(&agg.indicator).to_owned(),
        };
        let entry = by_stix.entry(id.clone()).or_insert_with(|| {
            let others = inbound.get(&id).cloned().unwrap_or_default();
            let cand = Candidate {
                stix_id: id,
                tlp,
                revoked,
                false_positive: false,
                own: None,
                others,
            };
            (cand, Vec::new(), minted)
        });
        let cand = &mut entry.0;
        cand.tlp = cand.tlp.max(tlp);
        cand.revoked |= revoked;
        cand.others
            .extend(others.get(&agg.indicator).into_iter().flatten().cloned());
        // A false-positive mark is shared as such, but only once the indicator clears k.
        cand.false_positive |= store.false_positive(&agg.indicator)?.is_some();
        cand.own = Some(match cand.own {
            None => own,
            Some(o) => OwnSightings {
                hosts: o.hosts.max(own.hosts),
                count: o.count.saturating_add(own.count),
                first_seen: o.first_seen.min(own.first_seen),
                last_seen: o.last_seen.max(own.last_seen),
            },
        });
        entry.1.push(agg.indicator);
    }
    let mut out = Vec::new();
    let mut held = Vec::new();
    let mut sent = Vec::new();
    for (cand, ids, minted) in by_stix.into_values() {
        match decide(&community, &cand, now) {
            Decision::Share(shared) => {
                sent.push((shared.clone(), ids));
                out.push(Outgoing {
                    shared,
                    indicator: minted,
                })
            }
            Decision::Hold(why) => held.extend(ids.into_iter().map(|id| (id, why.clone()))),
        }
    }
    // The sector rule: the sector is named only while k organisations of the community are in
    // it; otherwise the bundle names no one.
    let in_sector = match &community.disclosure {
        Disclosure::Sector(sector) => {
            policy::organisations_in_sector(&community.name, sector, &dir.config().taxii.members)
        }
        _ => 1,
    };
    let (disclosure, sector_withheld) = match policy::disclosed(&community, in_sector) {
        Ok(d) => (d, None),
        Err(withheld) => (Disclosure::None, Some(withheld)),
    };
    let outgoing = Community {
        disclosure,
        ..community
    };
    Ok(Preview {
        bundle: bundle(&outgoing, &key, &dir.config().org, &out),
        shared: out.len(),
        held,
        sent,
        sector_withheld,
    })
}
