//! The sharing policy: what one community may learn about one indicator's sightings. Pure: the
//! community's settings, the facts about the indicator and the time are arguments.
//!
//! The rules, in the order they are applied (the first that holds back wins, and its reason is
//! what `share preview` reports):
//!
//! 1. TLP:RED never leaves; TLP:AMBER+STRICT never leaves the organisation, so it never reaches
//!    a community whatever its ceiling; an indicator above the community's ceiling is not
//!    shared. What is shared carries the stricter of the indicator's TLP and the ceiling.
//! 2. A sighting of an indicator its source revoked is not shared.
//! 3. The k-threshold, counted in distinct organisations: this organisation counts once however
//!    many of its agents saw the indicator, and each other organisation once per authenticated
//!    account of this community (a member's TAXII account, or an upstream collection), however
//!    many sightings it sent and whatever `created_by_ref` they claim. Sightings received
//!    through one community never count towards another's k. Below k nothing about the
//!    indicator leaves, false-positive marks included.
//! 4. The delay: an indicator this organisation first saw later than `now - delay` is not
//!    shared yet, and no shared time is later than `now - delay`.
//!
//! What is shared is coarsened: first seen rounded down and last seen rounded up to the time
//! bucket (but never past `now - delay`), the count replaced by the lower bound of its band.
//! [`Shared`] holds nothing else: no agent, host, key, sequence number, location or address
//! enters this module, so none can leave through it.
//!
//! Identity: a community that asks for the sector is told it only while at least k of its
//! organisations are in that sector ([`disclosed`]); otherwise nothing says who saw it.
//!
//! Ids: a shared sighting's STIX id is an HMAC-SHA256, keyed by the community's secret, over
//! the community's name, the period (the bucket of the indicator's first sighting here) and the
//! indicator id, shaped as a version 4 UUID. Two communities cannot link what they received;
//! within one community the sighting keeps its id while its counts grow, and each update is a
//! new version (`modified` moves, `created` stays).

use std::collections::BTreeSet;
use std::path::Path;

use picket_proto::{parse_duration, Tlp};
use ring::hmac;

use crate::config::{CommunityConfig, TaxiiMember};
use crate::CollectorError;

/// Who a community learns saw an indicator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disclosure {
    /// No one: shared sightings carry no `where_sighted_refs` and no `created_by_ref`.
    None,
    /// A sector identity only, and only when at least k organisations of the community are
    /// in that sector (DESIGN.md): this organisation, whose sector this is, and the TAXII
    /// members of the community (`[[taxii.member]]` that may read or contribute to it) whose
    /// `sector` is the same (see [`disclosed`]). Below k, nothing identifies who saw it, as
    /// with [`Disclosure::None`].
    Sector(String),
    /// This organisation, by name.
    Organisation,
}

/// Which TLP marking definitions a community gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkingVersion {
    /// TLP 2.0 (the extension-based marking definitions).
    Tlp2,
    /// TLP 1.0 (`definition_type: tlp`), for readers that know no other.
    Tlp1,
}

/// One community's policy, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Community {
    /// The name (letters, digits, `-`, `_`).
    pub name: String,
    /// The most restricted TLP the community may receive (at most AMBER).
    pub tlp_ceiling: Tlp,
    /// Who it learns saw an indicator.
    pub disclosure: Disclosure,
    /// Distinct organisations that must have seen an indicator before anything about it leaves.
    pub k: u32,
    /// Bucket length for shared times, in seconds (at least 1).
    pub time_bucket: i64,
    /// Count bands, ascending, starting at 1.
    pub count_bands: Vec<u64>,
    /// Delay in seconds.
    pub delay: i64,
    /// Marking definitions used.
    pub marking: MarkingVersion,
}

/// The most count bands a community may have (each band reached adds a millisecond to
/// `modified`, which must stay within one second).
pub const MAX_BANDS: usize = 100;

/// The largest count a STIX sighting may carry.
const STIX_MAX_COUNT: u64 = 999_999_999;

impl Community {
    /// Checks one `[[community]]` table of `path`; errors name the key.
    pub fn from_config(c: &CommunityConfig, path: &Path) -> Result<Community, CollectorError> {
        let bad = |key: &str, problem: String| CollectorError::Config {
            path: path.to_owned(),
            problem: format!("community {:?}: {key}: {problem}", c.name),
        };
        if c.name.is_empty()
            || c.name.len() > 64
            || !c
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("name", "1 to 64 letters, digits, - and _".into()));
        }
        let tlp_ceiling = Tlp::parse(&c.tlp_ceiling)
            .ok_or_else(|| bad("tlp_ceiling", format!("{:?} is not a TLP level", c.tlp_ceiling)))?;
        if tlp_ceiling > Tlp::Amber {
            return Err(bad(
                "tlp_ceiling",
                format!(
                    "{tlp_ceiling} never leaves the organisation; a community's ceiling is clear, green or amber"
                ),
            ));
        }
        let disclosure = match (c.disclosure.as_str(), &c.sector) {
            ("none", _) => Disclosure::None,
            ("organisation", _) => Disclosure::Organisation,
            ("sector", Some(s))
                if !s.is_empty()
                    && s.len() <= 64
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                Disclosure::Sector(s.clone())
            }
            ("sector", Some(s)) => {
                // The same form as a member's sector, so that the two compare as written.
                return Err(bad(
                    "sector",
                    format!(
                        "{s:?}: lowercase letters, digits and '-' only, at most 64 (as `financial-services`)"
                    ),
                ));
            }
            ("sector", _) => return Err(bad("sector", "disclosure = \"sector\" needs a sector".into())),
            (other, _) => {
                return Err(bad(
                    "disclosure",
                    format!("{other:?} is not one of none, sector, organisation"),
                ))
            }
        };
        if c.k < 2 {
            return Err(bad(
                "k",
                format!(
                    "{} is below 2: a sighting shared by one organisation names it",
                    c.k
                ),
            ));
        }
        let dur = |key: &str, v: &str| {
            // `0s` (no delay) is a duration here, though parse_duration wants more than zero.
            if v.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" {
                return Ok(0);
            }
            parse_duration(v)
                .and_then(|s| i64::try_from(s).ok())
                .ok_or_else(|| bad(key, format!("{v:?} is not a duration such as 90s, 15m, 12h, 30d")))
        };
        let time_bucket = dur("time_bucket", &c.time_bucket)?;
        if time_bucket < 1 {
            return Err(bad("time_bucket", "must be at least 1s".into()));
        }
        let delay = dur("delay", &c.delay)?;
        let bands = &c.count_bands;
        if bands.first() != Some(&1)
            || bands.len() > MAX_BANDS
            || bands.windows(2).any(|w| w[0] >= w[1])
            || bands.iter().any(|&b| b > STIX_MAX_COUNT)
        {
            return Err(bad(
                "count_bands",
                format!("strictly ascending, starting at 1, at most {MAX_BANDS} bands, each at most {STIX_MAX_COUNT}"),
            ));
        }
        let marking = match c.marking.as_str() {
            "2.0" => MarkingVersion::Tlp2,
            "1.0" => MarkingVersion::Tlp1,
            other => return Err(bad("marking", format!("{other:?} is not \"2.0\" or \"1.0\""))),
        };
        Ok(Community {
            name: c.name.clone(),
            tlp_ceiling,
            disclosure,
            k: c.k,
            time_bucket,
            count_bands: bands.clone(),
            delay,
            marking,
        })
    }
}

/// A configured sector that is not disclosed: fewer than k organisations of the community are
/// in it, so naming it could name this organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectorWithheld {
    /// The configured sector.
    pub sector: String,
    /// The organisations of the community in it, this one included.
    pub organisations: u32,
    /// The community's k.
    pub k: u32,
}

impl std::fmt::Display for SectorWithheld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sector {:?} is not disclosed: {} organisation{} of the community {} in it (this one included), below k = {}; nothing identifies who saw it",
            self.sector,
            self.organisations,
            if self.organisations == 1 { "" } else { "s" },
            if self.organisations == 1 { "is" } else { "are" },
            self.k
        )
    }
}

/// How many organisations of `community` are in `sector`: this one (the community's configured
/// sector is this organisation's) and each TAXII member that may read or contribute to the
/// community and gives the same sector (compared without case and surrounding spaces). A
/// member is one organisation however often it is listed.
pub fn organisations_in_sector(community: &str, sector: &str, members: &[TaxiiMember]) -> u32 {
    let want = sector.trim();
    let names: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.communities.iter().chain(&m.contribute).any(|c| c == community))
        .filter(|m| {
            m.sector
                .as_deref()
                .is_some_and(|s| s.trim().eq_ignore_ascii_case(want))
        })
        .map(|m| m.name.as_str())
        .collect();
    u32::try_from(names.len()).unwrap_or(u32::MAX).saturating_add(1)
}

/// The disclosure the community's objects carry, given how many of its organisations are in
/// the configured sector ([`organisations_in_sector`]): a sector only when at least k are;
/// otherwise [`Disclosure::None`], and why (`Err`). Other disclosures are returned as they are.
pub fn disclosed(community: &Community, in_sector: u32) -> Result<Disclosure, SectorWithheld> {
    match &community.disclosure {
        Disclosure::Sector(sector) if in_sector < community.k => Err(SectorWithheld {
            sector: sector.clone(),
            organisations: in_sector,
            k: community.k,
        }),
        other => Ok(other.clone()),
    }
}

/// This organisation's sightings of one indicator, aggregated over its agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnSightings {
    /// Distinct hosts (never shared; kept so callers can show it beside the decision).
    pub hosts: u64,
    /// Times seen, summed.
    pub count: u64,
    /// First seen (unix seconds).
    pub first_seen: i64,
    /// Last seen.
    pub last_seen: i64,
}

/// Another organisation's sightings of the indicator, as they reached this collector through
/// the community (posted by a TAXII member, or pulled from an upstream collection; see
/// [`super::inbound`]). `org` is the authenticated account, never a claimed `created_by_ref`:
/// it is what the k-threshold counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgSighting {
    /// The authenticated account of the organisation that reported it.
    pub org: String,
    /// Times seen, as reported.
    pub count: u64,
}

/// Everything the policy knows about one indicator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The indicator's STIX id: what a shared sighting's `sighting_of_ref` names.
    pub stix_id: String,
    /// Its TLP.
    pub tlp: Tlp,
    /// Revoked by its source.
    pub revoked: bool,
    /// Marked a false positive here.
    pub false_positive: bool,
    /// This organisation's sightings, if any agent saw it.
    pub own: Option<OwnSightings>,
    /// Other organisations' sightings received through this community (never another's).
    pub others: Vec<OrgSighting>,
}

/// Why nothing about an indicator goes to a community.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// TLP:RED never leaves.
    Red,
    /// TLP:AMBER+STRICT never leaves the organisation.
    AmberStrict,
    /// The indicator's TLP is above the community's ceiling.
    AboveCeiling {
        /// The indicator's TLP.
        tlp: Tlp,
        /// The ceiling.
        ceiling: Tlp,
    },
    /// Its source revoked it.
    Revoked,
    /// Fewer than k distinct organisations saw it.
    BelowK {
        /// Distinct organisations that saw it.
        orgs: u32,
        /// The community's k.
        k: u32,
    },
    /// This organisation first saw it too recently.
    Delay {
        /// When it may first be shared (unix seconds).
        until: i64,
    },
    /// No agent here saw it: this organisation has no sighting of its own to share.
    NotSeenHere,
}

impl Held {
    /// A short tag for summaries (`tlp-red`, `below-k`, ...).
    pub fn tag(&self) -> &'static str {
        match self {
            Held::Red => "tlp-red",
            Held::AmberStrict => "tlp-amber+strict",
            Held::AboveCeiling { .. } => "above-ceiling",
            Held::Revoked => "revoked",
            Held::BelowK { .. } => "below-k",
            Held::Delay { .. } => "delay",
            Held::NotSeenHere => "not-seen-here",
        }
    }
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Held::Red => write!(f, "TLP:RED never leaves"),
            Held::AmberStrict => write!(f, "TLP:AMBER+STRICT never leaves the organisation"),
            Held::AboveCeiling { tlp, ceiling } => {
                write!(f, "{tlp} is above the community's ceiling {ceiling}")
            }
            Held::Revoked => write!(f, "its source revoked it"),
            Held::BelowK { orgs, k } => write!(
                f,
                "seen by {orgs} organisation{} (this one included), below k = {k}",
                if *orgs == 1 { "" } else { "s" }
            ),
            Held::Delay { until } => write!(f, "too recent: shared from {}", picket_proto::rfc3339(*until)),
            Held::NotSeenHere => write!(f, "no agent here saw it"),
        }
    }
}

/// What one community learns about one indicator: coarsened, banded, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    /// The indicator's STIX id.
    pub indicator: String,
    /// The TLP the shared objects carry: the stricter of the indicator's and the ceiling.
    pub tlp: Tlp,
    /// First seen, rounded down to the bucket.
    pub first_seen: i64,
    /// Last seen, rounded up to the bucket, but never past `now - delay`.
    pub last_seen: i64,
    /// The lower bound of the count's band.
    pub count: u64,
    /// Which band (0 for the first): it orders versions whose times coarsen alike.
    pub band: usize,
    /// The period the sighting's id is derived for: the bucket of the first sighting.
    pub period: i64,
    /// Marked a false positive here.
    pub false_positive: bool,
}

/// The decision for one indicator and one community.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Share this.
    Share(Shared),
    /// Share nothing about it, for this reason.
    Hold(Held),
}

/// Decides what `community` learns about `cand` at `now`.
pub fn decide(community: &Community, cand: &Candidate, now: i64) -> Decision {
    match cand.tlp {
        Tlp::Red => return Decision::Hold(Held::Red),
        Tlp::AmberStrict => return Decision::Hold(Held::AmberStrict),
        t if t > community.tlp_ceiling => {
            return Decision::Hold(Held::AboveCeiling {
                tlp: t,
                ceiling: community.tlp_ceiling,
            })
        }
        _ => {}
    }
    if cand.revoked {
        return Decision::Hold(Held::Revoked);
    }
    let others: BTreeSet<&str> = cand
        .others
        .iter()
        .filter(|o| o.count > 0 && !o.org.is_empty())
        .map(|o| o.org.as_str())
        .collect();
    let orgs = u32::try_from(others.len())
        .unwrap_or(u32::MAX)
        .saturating_add(u32::from(cand.own.is_some_and(|o| o.count > 0)));
    if orgs < community.k {
        return Decision::Hold(Held::BelowK { orgs, k: community.k });
    }
    let Some(own) = cand.own.filter(|o| o.count > 0) else {
        return Decision::Hold(Held::NotSeenHere);
    };
    let horizon = now.saturating_sub(community.delay);
    if own.first_seen > horizon {
        return Decision::Hold(Held::Delay {
            until: own.first_seen.saturating_add(community.delay),
        });
    }
    let b = community.time_bucket;
    let first_seen = floor(own.first_seen, b);
    let last_seen = ceil(own.last_seen.max(own.first_seen), b).min(floor(horizon, b));
    let (band, count) = band(&community.count_bands, own.count);
    Decision::Share(Shared {
        indicator: cand.stix_id.clone(),
        tlp: cand.tlp.max(community.tlp_ceiling),
        first_seen,
        last_seen: last_seen.max(first_seen),
        count,
        band,
        period: first_seen,
        false_positive: cand.false_positive,
    })
}

/// `t` rounded down to a multiple of `bucket`.
pub fn floor(t: i64, bucket: i64) -> i64 {
    t.div_euclid(bucket).saturating_mul(bucket)
}

/// `t` rounded up to a multiple of `bucket`.
pub fn ceil(t: i64, bucket: i64) -> i64 {
    let f = floor(t, bucket);
    if f == t {
        t
    } else {
        f.saturating_add(bucket)
    }
}

/// The band `count` falls in and its lower bound (bands start at 1; a count of 0 is band 0).
pub fn band(bands: &[u64], count: u64) -> (usize, u64) {
    let i = bands.iter().rposition(|&b| b <= count).unwrap_or(0);
    (i, bands.get(i).copied().unwrap_or(1))
}

/// A STIX id (`<kind>--<uuid>`) derived from the community's secret: HMAC-SHA256 over the
/// community name, the period and `subject`, its first 16 bytes shaped as a version 4 UUID.
/// Without the secret, ids of one community say nothing about another's.
pub fn derived_id(key: &[u8; 32], community: &str, kind: &str, period: i64, subject: &str) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    for part in [
        b"picket-share-v1".as_slice(),
        kind.as_bytes(),
        community.as_bytes(),
        period.to_string().as_bytes(),
        subject.as_bytes(),
    ] {
        // Length-prefixed, so no two different inputs give the same message.
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    format!("{kind}--{}", crate::uuid::uuid_text(ctx.sign().as_ref(), 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;

    fn community(k: u32) -> Community {
        Community {
            name: "isac".into(),
            tlp_ceiling: Tlp::Amber,
            disclosure: Disclosure::None,
            k,
            time_bucket: H,
            count_bands: vec![1, 10, 100, 1000],
            delay: 0,
            marking: MarkingVersion::Tlp2,
        }
    }

    fn own(count: u64, first: i64, last: i64) -> Option<OwnSightings> {
        Some(OwnSightings {
            hosts: 5,
            count,
            first_seen: first,
            last_seen: last,
        })
    }

    fn others(orgs: &[&str]) -> Vec<OrgSighting> {
        orgs.iter()
            .map(|o| OrgSighting {
                org: (*o).into(),
                count: 3,
            })
            .collect()
    }

    fn cand(tlp: Tlp, other_orgs: &[&str]) -> Candidate {
        Candidate {
            stix_id: "indicator--4b1c6a2e-7a55-4d59-9b2f-1f0a9c1e0b11".into(),
            tlp,
            revoked: false,
            false_positive: false,
            own: own(37, 10 * H + 17, 12 * H + 5),
            others: others(other_orgs),
        }
    }

    fn shared(d: Decision) -> Shared {
        match d {
            Decision::Share(s) => s,
            Decision::Hold(h) => panic!("held: {h}"),
        }
    }

    const NOW: i64 = 100 * H;

    #[test]
    fn tlp_red_never_leaves_whatever_the_ceiling_and_k() {
        let mut c = community(2);
        c.tlp_ceiling = Tlp::Amber;
        let d = decide(&c, &cand(Tlp::Red, &["a", "b", "c", "d"]), NOW);
        assert_eq!(d, Decision::Hold(Held::Red));
    }

    #[test]
    fn amber_strict_never_reaches_a_community() {
        let d = decide(&community(2), &cand(Tlp::AmberStrict, &["a", "b", "c"]), NOW);
        assert_eq!(d, Decision::Hold(Held::AmberStrict));
    }

    #[test]
    fn above_the_ceiling_is_held_and_below_it_carries_the_stricter_tlp() {
        let mut c = community(2);
        c.tlp_ceiling = Tlp::Green;
        assert_eq!(
            decide(&c, &cand(Tlp::Amber, &["a"]), NOW),
            Decision::Hold(Held::AboveCeiling {
                tlp: Tlp::Amber,
                ceiling: Tlp::Green
            })
        );
        assert_eq!(shared(decide(&c, &cand(Tlp::Clear, &["a"]), NOW)).tlp, Tlp::Green);
        assert_eq!(shared(decide(&c, &cand(Tlp::Green, &["a"]), NOW)).tlp, Tlp::Green);
    }

    #[test]
    fn k3_two_orgs_share_nothing_not_even_a_false_positive_three_do() {
        let mut two = cand(Tlp::Green, &["peer-a"]);
        two.false_positive = true;
        assert_eq!(
            decide(&community(3), &two, NOW),
            Decision::Hold(Held::BelowK { orgs: 2, k: 3 })
        );
        let mut three = cand(Tlp::Green, &["peer-a", "peer-b"]);
        three.false_positive = true;
        let s = shared(decide(&community(3), &three, NOW));
        assert!(s.false_positive);
    }

    #[test]
    fn one_org_counts_once_however_many_agents_or_reports() {
        // Our own 5 hosts count once; peer-a reporting three times counts once.
        let mut c = cand(Tlp::Green, &["peer-a", "peer-a", "peer-a"]);
        c.own = own(10_000, 0, H);
        assert_eq!(
            decide(&community(3), &c, NOW),
            Decision::Hold(Held::BelowK { orgs: 2, k: 3 })
        );
        // With no other organisation, k = 2 is never reached.
        assert_eq!(
            decide(&community(2), &cand(Tlp::Green, &[]), NOW),
            Decision::Hold(Held::BelowK { orgs: 1, k: 2 })
        );
    }

    #[test]
    fn seen_only_elsewhere_gives_us_nothing_to_share() {
        let mut c = cand(Tlp::Green, &["a", "b", "c"]);
        c.own = None;
        assert_eq!(decide(&community(3), &c, NOW), Decision::Hold(Held::NotSeenHere));
    }

    #[test]
    fn revoked_is_held() {
        let mut c = cand(Tlp::Green, &["a", "b"]);
        c.revoked = true;
        assert_eq!(decide(&community(2), &c, NOW), Decision::Hold(Held::Revoked));
    }

    #[test]
    fn times_land_on_bucket_boundaries_and_counts_on_band_floors() {
        let s = shared(decide(&community(2), &cand(Tlp::Green, &["a"]), NOW));
        assert_eq!((s.first_seen, s.last_seen), (10 * H, 13 * H));
        assert_eq!((s.band, s.count), (1, 10), "37 is shared as 10");
        for (count, expected) in [(1, 1), (9, 1), (10, 10), (99, 10), (100, 100), (5000, 1000)] {
            assert_eq!(band(&[1, 10, 100, 1000], count).1, expected, "{count}");
        }
        assert_eq!((floor(-1, H), ceil(-1, H), ceil(2 * H, H)), (-H, 0, 2 * H));
    }

    #[test]
    fn the_delay_holds_recent_first_sightings_and_caps_shared_times() {
        let mut c = community(2);
        c.delay = 24 * H;
        let mut recent = cand(Tlp::Green, &["a"]);
        recent.own = own(3, NOW - 2 * H, NOW - H);
        assert_eq!(
            decide(&c, &recent, NOW),
            Decision::Hold(Held::Delay { until: NOW + 22 * H })
        );
        let mut older = cand(Tlp::Green, &["a"]);
        older.own = own(3, NOW - 30 * H + 5, NOW - 60);
        let s = shared(decide(&c, &older, NOW));
        assert_eq!((s.first_seen, s.last_seen), (NOW - 30 * H, NOW - 24 * H));
        assert!(s.last_seen <= NOW - c.delay);
    }

    #[test]
    fn ids_differ_between_communities_and_stay_within_one_period() {
        let key_a = [7u8; 32];
        let key_b = [9u8; 32];
        let ind = "indicator--4b1c6a2e-7a55-4d59-9b2f-1f0a9c1e0b11";
        let a = derived_id(&key_a, "isac", "sighting", 36_000, ind);
        assert_eq!(a, derived_id(&key_a, "isac", "sighting", 36_000, ind));
        assert_ne!(a, derived_id(&key_b, "other", "sighting", 36_000, ind));
        assert_ne!(
            a,
            derived_id(&key_b, "isac", "sighting", 36_000, ind),
            "the key alone differs"
        );
        assert_ne!(
            a,
            derived_id(&key_a, "isac", "sighting", 39_600, ind),
            "another period"
        );
        let uuid = a.strip_prefix("sighting--").unwrap();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4", "{a}");
        assert!(matches!(&uuid[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    fn member(name: &str, read: &[&str], write: &[&str], sector: Option<&str>) -> TaxiiMember {
        TaxiiMember {
            name: name.into(),
            password_hash: String::new(),
            communities: read.iter().map(|c| (*c).into()).collect(),
            contribute: write.iter().map(|c| (*c).into()).collect(),
            sector: sector.map(Into::into),
        }
    }

    #[test]
    fn a_sector_is_named_only_when_k_organisations_of_the_community_share_it() {
        let fin = Some("financial-services");
        let members = [
            member("bank-a", &["isac"], &[], fin),
            member("bank-b", &[], &["isac"], Some(" Financial-Services ")),
            // Listed twice, one organisation.
            member("bank-b", &["isac"], &[], fin),
            member("hospital", &["isac"], &["isac"], Some("healthcare")),
            member("no-sector", &["isac"], &[], None),
            member("bank-elsewhere", &["other"], &["other"], fin),
        ];
        assert_eq!(organisations_in_sector("isac", "financial-services", &members), 3);
        assert_eq!(organisations_in_sector("isac", "healthcare", &members), 2);
        assert_eq!(
            organisations_in_sector("other", "financial-services", &members),
            2
        );
        let mut c = community(3);
        c.disclosure = Disclosure::Sector("financial-services".into());
        assert_eq!(
            disclosed(&c, 3),
            Ok(Disclosure::Sector("financial-services".into()))
        );
        let held = disclosed(&c, 2).unwrap_err();
        assert_eq!((held.organisations, held.k), (2, 3));
        assert!(
            held.to_string().contains("nothing identifies who saw it"),
            "{held}"
        );
        // The other disclosures are not the sector rule's business.
        c.disclosure = Disclosure::Organisation;
        assert_eq!(disclosed(&c, 1), Ok(Disclosure::Organisation));
        c.disclosure = Disclosure::None;
        assert_eq!(disclosed(&c, 1), Ok(Disclosure::None));
    }

    #[test]
    fn config_is_checked_by_key() {
        let base = CommunityConfig {
            name: "isac".into(),
            tlp_ceiling: "amber".into(),
            disclosure: "none".into(),
            sector: None,
            k: 3,
            time_bucket: "1h".into(),
            count_bands: vec![1, 10, 100, 1000],
            delay: "0s".into(),
            marking: "2.0".into(),
            upstream: Vec::new(),
        };
        let p = Path::new("picket.toml");
        assert_eq!(Community::from_config(&base, p).unwrap(), community(3));
        let err = |f: &dyn Fn(&mut CommunityConfig)| {
            let mut c = base.clone();
            f(&mut c);
            Community::from_config(&c, p).unwrap_err().to_string()
        };
        assert!(err(&|c| c.k = 1).contains("k: 1 is below 2"));
        assert!(err(&|c| c.tlp_ceiling = "red".into()).contains("tlp_ceiling"));
        assert!(err(&|c| c.tlp_ceiling = "amber+strict".into()).contains("tlp_ceiling"));
        assert!(err(&|c| c.disclosure = "sector".into()).contains("sector"));
        assert!(err(&|c| {
            c.disclosure = "sector".into();
            c.sector = Some("Financial Services".into());
        })
        .contains("lowercase letters"));
        assert!(err(&|c| c.disclosure = "everyone".into()).contains("disclosure"));
        assert!(err(&|c| c.count_bands = vec![5, 10]).contains("count_bands"));
        assert!(err(&|c| c.count_bands = vec![1, 10, 10]).contains("count_bands"));
        assert!(err(&|c| c.time_bucket = "0s".into()).contains("time_bucket"));
        assert!(err(&|c| c.delay = "later".into()).contains("delay"));
        assert!(err(&|c| c.marking = "3".into()).contains("marking"));
        assert!(err(&|c| c.name = "a/b".into()).contains("name"));
    }
}
