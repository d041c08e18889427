//! What reaches endpoints: the pure decision, per indicator, of whether it goes into a set and,
//! if not, why. Nothing here reads the store or the clock.
//!
//! An indicator is left out when it is revoked, expired or not yet valid, marked a false
//! positive by the operator (fleet-wide: no channel carries it), above the channel's TLP
//! ceiling, on an allowlist (built in, or the operator's), or of an observable kind that none
//! of the sources carrying it may put on endpoints. By default a source may send file
//! hashes and remote addresses only; names, globs, paths and command-line substrings come only
//! from sources the operator marks trusted, since otherwise any feed could turn the fleet into a
//! search engine for a leaked document or a person's files.
//!
//! Priority: an indicator that another organisation of a community saw (its sightings came in
//! through the community, see `share::inbound`) goes into the next set with its severity
//! raised one step, at most critical ([`prioritised`]): a confirmed indicator is live in the
//! wild, and a match on it deserves a faster look. Only sightings raise it: a member's
//! false-positive verdict is shown to the operator but changes nothing here, so one member
//! cannot lower what reaches this organisation's endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use picket_proto::{FileCondition, Observable, ProcessCondition, Record, Severity, Tlp};

/// The observable kinds a source may put on endpoints unless it is trusted.
pub const DEFAULT_KINDS: &[&str] = &["file-hash", "process-hash", "remote-addr"];

/// Every observable kind (a trusted source's policy).
pub const ALL_KINDS: &[&str] = &[
    "file-hash",
    "file-name",
    "path-glob",
    "process-name",
    "process-path",
    "process-hash",
    "command-line",
    "remote-addr",
    "file-all",
    "process-all",
];

/// Values that are never malicious, as canonical values (see `ingest::canonical_value`), with
/// the reason shown to the operator. A feed carrying one of these would make every endpoint
/// alarm.
pub const BUILTIN_ALLOWLIST: &[(&str, &str)] = &[
    ("file-hash:md5:d41d8cd98f00b204e9800998ecf8427e", "the empty file"),
    (
        "file-hash:sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "the empty file",
    ),
    (
        "file-hash:sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "the empty file",
    ),
    ("remote-addr:127.0.0.1", "loopback"),
    ("remote-addr:127.0.0.0/8", "loopback"),
    ("remote-addr:::1", "loopback"),
    ("remote-addr:0.0.0.0", "the unspecified address"),
    ("remote-addr:0.0.0.0/0", "every IPv4 address"),
    ("remote-addr:::/0", "every IPv6 address"),
    ("remote-addr:255.255.255.255", "broadcast"),
];

/// Why an indicator is not published.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Excluded {
    /// Revoked by its source.
    Revoked,
    /// Past its valid_until.
    Expired,
    /// Before its valid_from.
    NotYetValid,
    /// Marked a false positive by the operator, with the reason.
    FalsePositive(String),
    /// Above the channel's TLP ceiling.
    AboveTlpCeiling(Tlp),
    /// On an allowlist, with the reason.
    Allowlisted(String),
    /// No source carrying it may send this kind.
    KindNotAllowed(String),
}

impl fmt::Display for Excluded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Excluded::Revoked => f.write_str("revoked by its source"),
            Excluded::Expired => f.write_str("expired"),
            Excluded::NotYetValid => f.write_str("not yet valid"),
            Excluded::FalsePositive(why) => write!(f, "marked a false positive ({why})"),
            Excluded::AboveTlpCeiling(t) => write!(f, "{t} is above the channel's TLP ceiling"),
            Excluded::Allowlisted(why) => write!(f, "allowlisted ({why})"),
            Excluded::KindNotAllowed(k) => {
                write!(f, "no source carrying it may put {k} indicators on endpoints (mark a source trusted to allow it)")
            }
        }
    }
}

impl Excluded {
    /// A short label, the same for every indicator left out for this kind of reason, for the
    /// publish summary.
    pub fn label(&self) -> &'static str {
        match self {
            Excluded::Revoked => "revoked",
            Excluded::Expired => "expired",
            Excluded::NotYetValid => "not yet valid",
            Excluded::FalsePositive(_) => "false positive",
            Excluded::AboveTlpCeiling(_) => "above the TLP ceiling",
            Excluded::Allowlisted(_) => "allowlisted",
            Excluded::KindNotAllowed(_) => "kind not allowed from its sources",
        }
    }
}

/// What the decision needs to know of one stored indicator.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The indicator id.
    pub id: &'a str,
    /// The canonical value.
    pub value: &'a str,
    /// The observable kind name.
    pub kind: &'a str,
    /// TLP.
    pub tlp: Tlp,
    /// valid_from, if any.
    pub valid_from: Option<i64>,
    /// valid_until, if any.
    pub valid_until: Option<i64>,
    /// Revoked.
    pub revoked: bool,
    /// The sources carrying it.
    pub sources: &'a [String],
}

/// The kind the source policy judges an observable by. A compound holding a digest can only
/// match that exact content, whatever else it names, so it is judged as the digest: a feed that
/// may send hashes may send `file name X with SHA-256 Y`.
pub fn policy_kind(observable: &Observable) -> &'static str {
    match observable {
        Observable::FileAll(conds) if conds.iter().any(|c| matches!(c, FileCondition::Hash(_))) => {
            "file-hash"
        }
        Observable::ProcessAll(conds) if conds.iter().any(|c| matches!(c, ProcessCondition::Hash(_))) => {
            "process-hash"
        }
        other => other.kind_name(),
    }
}

impl<'a> Candidate<'a> {
    /// The candidate view of a stored indicator.
    pub fn of(s: &'a crate::store::Stored) -> Candidate<'a> {
        let kind = match s.record.indicator() {
            Ok(Some(ind)) => policy_kind(&ind.observable),
            _ => "unknown",
        };
        Candidate {
            id: &s.record.id,
            value: &s.value,
            kind,
            tlp: s.tlp,
            valid_from: s.valid_from,
            valid_until: s.valid_until,
            revoked: s.revoked,
            sources: &s.sources,
        }
    }
}

/// The publishing policy in force.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The operator's allowlist: canonical value to reason.
    pub allowlist: BTreeMap<String, String>,
    /// Per registered source, the kinds it may send. A source not registered gets
    /// [`DEFAULT_KINDS`].
    pub source_kinds: BTreeMap<String, BTreeSet<String>>,
    /// The operator's false-positive marks: indicator id to reason.
    pub false_positives: BTreeMap<String, String>,
}

impl Policy {
    /// Whether `c` goes into a set on a channel with `ceiling`, at `now`.
    pub fn decide(&self, c: &Candidate<'_>, now: i64, ceiling: Tlp) -> Result<(), Excluded> {
        if c.revoked {
            return Err(Excluded::Revoked);
        }
        if c.valid_until.is_some_and(|t| t <= now) {
            return Err(Excluded::Expired);
        }
        if c.valid_from.is_some_and(|t| t > now) {
            return Err(Excluded::NotYetValid);
        }
        if let Some(why) = self.false_positives.get(c.id) {
            return Err(Excluded::FalsePositive(why.clone()));
        }
        if c.tlp > ceiling {
            return Err(Excluded::AboveTlpCeiling(c.tlp));
        }
        if let Some((_, why)) = BUILTIN_ALLOWLIST.iter().find(|(v, _)| *v == c.value) {
            return Err(Excluded::Allowlisted(format!("built in: {why}")));
        }
        if let Some(why) = self.allowlist.get(c.value) {
            return Err(Excluded::Allowlisted(why.clone()));
        }
        let allowed = c.sources.iter().any(|s| match self.source_kinds.get(s) {
            Some(kinds) => kinds.contains(c.kind),
            None => DEFAULT_KINDS.contains(&c.kind),
        });
        if !allowed {
            return Err(Excluded::KindNotAllowed(c.kind.to_owned()));
        }
        Ok(())
    }
}

/// One step up: info → low → medium → high → critical (critical stays).
pub fn raised(severity: Severity) -> Severity {
    match severity {
        Severity::Info => Severity::Low,
        Severity::Low => Severity::Medium,
        Severity::Medium => Severity::High,
        Severity::High | Severity::Critical => Severity::Critical,
    }
}

/// The record an indicator goes into a set as, given how many other organisations confirmed
/// it (distinct community accounts whose sightings name it): as stored when none did, with
/// its severity [`raised`] one step when at least one did. A record that does not decode is
/// returned as stored (the set's own checks deal with it).
pub fn prioritised(record: &Record, confirmed_by: usize) -> Record {
    if confirmed_by == 0 {
        return record.clone();
    }
    match record.indicator() {
        Ok(Some(mut ind)) => {
            ind.meta.severity = raised(ind.meta.severity);
            Record::from_indicator(&ind).unwrap_or_else(|_| record.clone())
        }
        _ => record.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand<'a>(value: &'a str, kind: &'a str, sources: &'a [String]) -> Candidate<'a> {
        Candidate {
            id: "indicator--1",
            value,
            kind,
            tlp: Tlp::Green,
            valid_from: None,
            valid_until: None,
            revoked: false,
            sources,
        }
    }

    #[test]
    fn a_confirmed_indicator_goes_out_one_severity_step_higher() {
        use picket_proto::{Hash, Indicator, Meta};
        let record = |severity| {
            Record::from_indicator(&Indicator {
                id: "indicator--1".into(),
                observable: Observable::FileHash {
                    hash: Hash::from_hex("44d88612fea8a8f36de82e1278abb02f").unwrap(),
                    size: None,
                },
                meta: Meta {
                    confidence: 50,
                    severity,
                    tlp: Tlp::Green,
                    valid_until: None,
                    source: "feed".into(),
                },
            })
            .unwrap()
        };
        let severity = |r: &Record| r.indicator().unwrap().unwrap().meta.severity;
        assert_eq!(
            prioritised(&record(Severity::Medium), 0),
            record(Severity::Medium)
        );
        assert_eq!(
            severity(&prioritised(&record(Severity::Medium), 1)),
            Severity::High
        );
        assert_eq!(
            severity(&prioritised(&record(Severity::Medium), 5)),
            Severity::High,
            "one step, however many"
        );
        assert_eq!(severity(&prioritised(&record(Severity::Info), 1)), Severity::Low);
        assert_eq!(
            severity(&prioritised(&record(Severity::Critical), 1)),
            Severity::Critical
        );
    }

    #[test]
    fn table() {
        let feed = vec!["feed".to_owned()];
        let trusted = vec!["ours".to_owned()];
        let mut policy = Policy::default();
        policy
            .source_kinds
            .insert("ours".into(), ALL_KINDS.iter().map(|k| k.to_string()).collect());
        policy
            .allowlist
            .insert("remote-addr:198.51.100.9".into(), "our proxy".into());
        policy
            .false_positives
            .insert("indicator--fp".into(), "our vulnerability scanner".into());
        let h = "file-hash:sha256:275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
        let cases: Vec<(&str, Candidate<'_>, Result<(), Excluded>)> = vec![
            (
                "a hash from a feed is published",
                cand(h, "file-hash", &feed),
                Ok(()),
            ),
            (
                "a file name from an untrusted feed is not",
                cand("file-name:x", "file-name", &feed),
                Err(Excluded::KindNotAllowed("file-name".into())),
            ),
            (
                "a file name from a trusted source is",
                cand("file-name:x", "file-name", &trusted),
                Ok(()),
            ),
            (
                "the empty file's hash never is",
                cand(BUILTIN_ALLOWLIST[2].0, "file-hash", &feed),
                Err(Excluded::Allowlisted("built in: the empty file".into())),
            ),
            (
                "an operator allowlist entry",
                cand("remote-addr:198.51.100.9", "remote-addr", &feed),
                Err(Excluded::Allowlisted("our proxy".into())),
            ),
            (
                "revoked",
                Candidate {
                    revoked: true,
                    ..cand(h, "file-hash", &feed)
                },
                Err(Excluded::Revoked),
            ),
            (
                "expired",
                Candidate {
                    valid_until: Some(100),
                    ..cand(h, "file-hash", &feed)
                },
                Err(Excluded::Expired),
            ),
            (
                "not yet valid",
                Candidate {
                    valid_from: Some(1000),
                    ..cand(h, "file-hash", &feed)
                },
                Err(Excluded::NotYetValid),
            ),
            (
                "a false positive stays out of every channel",
                Candidate {
                    id: "indicator--fp",
                    ..cand(h, "file-hash", &feed)
                },
                Err(Excluded::FalsePositive("our vulnerability scanner".into())),
            ),
            (
                "a false positive that is also revoked counts as revoked",
                Candidate {
                    id: "indicator--fp",
                    revoked: true,
                    ..cand(h, "file-hash", &feed)
                },
                Err(Excluded::Revoked),
            ),
            (
                "TLP:RED stays out",
                Candidate {
                    tlp: Tlp::Red,
                    ..cand(h, "file-hash", &feed)
                },
                Err(Excluded::AboveTlpCeiling(Tlp::Red)),
            ),
        ];
        for (name, c, want) in cases {
            assert_eq!(policy.decide(&c, 500, Tlp::Amber), want, "{name}");
        }
    }
}
