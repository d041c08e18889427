//! Alarms about agents: the decisions, without the store or the clock.
//!
//! An agent whose network is cut cannot raise its own alarm, so the collector watches for what
//! it should have heard and did not: an agent gone quiet, a batch number that skips ahead (a
//! batch lost between spool and store), an agent that stays on an old set version after a new
//! one was published, a spool that had to drop sightings, and an identity presented from a
//! second machine (a cloned image). One more is about what the agent sent: an agent that
//! reached the collector's cap of sightings per agent (`sightings-cap`, raised by
//! `reports::record_batch`). Each function here takes the facts and the time as arguments and
//! says whether the condition holds and, if so, the detail an operator reads.
//!
//! Invariant: every decision is a pure function of its arguments, so that the same facts always
//! raise or clear the same alarms, whichever process (the channel or a CLI) looks at them.

use picket_proto::rfc3339;
use picket_proto::wire::Heartbeat;

/// What an alarm is about. The names are stored and printed; they never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmKind {
    /// No frame from the agent for longer than `quiet_after`.
    Quiet,
    /// A sightings batch whose number skipped past the next expected one.
    SequenceGap,
    /// The agent's set version stayed below the channel's current one for longer than
    /// `lag_after`.
    Lagging,
    /// A session presented a machine hash other than the one recorded at enrolment.
    Clone,
    /// The agent's spool dropped sightings because it was full.
    SpoolDropped,
    /// The agent holds as many sightings as the collector keeps per agent; batches adding new
    /// ones are refused.
    SightingsCap,
}

impl AlarmKind {
    /// Every kind.
    pub const ALL: [AlarmKind; 6] = [
        AlarmKind::Quiet,
        AlarmKind::SequenceGap,
        AlarmKind::Lagging,
        AlarmKind::Clone,
        AlarmKind::SpoolDropped,
        AlarmKind::SightingsCap,
    ];

    /// The stored and printed name (`quiet`, `sequence-gap`, `lagging`, `clone`,
    /// `spool-dropped`, `sightings-cap`).
    pub fn name(self) -> &'static str {
        match self {
            AlarmKind::Quiet => "quiet",
            AlarmKind::SequenceGap => "sequence-gap",
            AlarmKind::Lagging => "lagging",
            AlarmKind::Clone => "clone",
            AlarmKind::SpoolDropped => "spool-dropped",
            AlarmKind::SightingsCap => "sightings-cap",
        }
    }

    /// The kind a stored name stands for.
    pub fn parse(name: &str) -> Option<AlarmKind> {
        AlarmKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How long the collector waits before it calls an agent quiet or lagging (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// No frame for this long: `quiet`.
    pub quiet_after: u64,
    /// Behind the current set version for this long: `lagging`.
    pub lag_after: u64,
}

/// `quiet`: the agent sent nothing since `last_frame` (or, never having connected, since it
/// enrolled) for longer than `quiet_after`. Revoked agents are never quiet: nobody expects to
/// hear from them.
pub fn quiet(
    last_frame: Option<i64>,
    enrolled: i64,
    revoked: bool,
    now: i64,
    quiet_after: u64,
) -> Option<String> {
    if revoked {
        return None;
    }
    let since = last_frame.unwrap_or(enrolled);
    let silent = now.saturating_sub(since);
    if silent <= quiet_after as i64 {
        return None;
    }
    // The detail stays the same while the condition lasts, so checking again rewrites nothing.
    Some(match last_frame {
        Some(t) => format!("no frame since {}", rfc3339(t)),
        None => format!("never connected since enrolment at {}", rfc3339(enrolled)),
    })
}

/// Whether an agent holding `set_version` (`None`: no set yet) is behind `current`.
pub fn behind(set_version: Option<u64>, current: u64) -> bool {
    set_version.is_none_or(|v| v < current)
}

/// `lagging`: the agent reports `set_version` while `current` is published, and the first
/// version it lacks was published at `behind_since`, longer than `lag_after` ago.
pub fn lagging(
    set_version: Option<u64>,
    current: u64,
    behind_since: i64,
    now: i64,
    lag_after: u64,
) -> Option<String> {
    if !behind(set_version, current) {
        return None;
    }
    let late = now.saturating_sub(behind_since);
    if late <= lag_after as i64 {
        return None;
    }
    let has = set_version.map_or("no set".to_owned(), |v| format!("set version {v}"));
    Some(format!(
        "{has} while version {current} is current; behind since {}",
        rfc3339(behind_since)
    ))
}

/// The batch numbers missing before `seq` in an epoch whose highest stored number is
/// `last_seq` (`None`: nothing stored yet in that epoch; numbers start at 1): the first and
/// last missing, or `None` when `seq` follows on (or fills in below `last_seq`).
pub fn gap(last_seq: Option<u64>, seq: u64) -> Option<(u64, u64)> {
    let next = last_seq.map_or(1, |l| l.saturating_add(1));
    (seq > next).then(|| (next, seq - 1))
}

/// The detail of a `sequence-gap` alarm.
pub fn gap_detail(epoch: u64, (first, last): (u64, u64)) -> String {
    if first == last {
        format!("epoch {epoch:016x}: batch {first} missing")
    } else {
        format!("epoch {epoch:016x}: batches {first} to {last} missing")
    }
}

/// How many sightings the agent's spool dropped between heartbeat `prev` and `new` (`None`:
/// none). The count is per spool: a new epoch starts it again from zero.
pub fn spool_dropped(prev: Option<&Heartbeat>, new: &Heartbeat) -> Option<u64> {
    let before = match prev {
        Some(p) if p.epoch == new.epoch => p.spool_dropped,
        _ => 0,
    };
    (new.spool_dropped > before).then(|| new.spool_dropped - before)
}

/// The detail of a `clone` alarm: which machine hashes met (their first bytes: they are keyed
/// hashes, not the machine ids).
pub fn clone_detail(enrolled: &[u8; 32], presented: &[u8; 32]) -> String {
    format!(
        "a session presented machine {} but the agent enrolled on machine {}; revoke it and enrol each host with its own token",
        hex::encode(&presented[..6]),
        hex::encode(&enrolled[..6])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::wire::ScanStats;

    #[test]
    fn names_round_trip() {
        for k in AlarmKind::ALL {
            assert_eq!(AlarmKind::parse(k.name()), Some(k));
        }
        assert_eq!(AlarmKind::parse("loud"), None);
    }

    #[test]
    fn quiet_counts_from_the_last_frame_or_enrolment() {
        let check = |last: Option<i64>, revoked: bool, now: i64, expected: bool| {
            assert_eq!(
                quiet(last, 100, revoked, now, 600).is_some(),
                expected,
                "{last:?} {revoked} {now}"
            );
        };
        check(Some(1_000), false, 1_600, false);
        check(Some(1_000), false, 1_601, true);
        check(None, false, 700, false);
        check(None, false, 701, true);
        check(Some(1_000), true, 99_999, false);
        let d = quiet(None, 100, false, 800, 600).unwrap();
        assert!(d.contains("never connected"), "{d}");
    }

    #[test]
    fn lagging_needs_both_behind_and_late() {
        assert_eq!(lagging(Some(5), 5, 0, 10_000, 600), None);
        assert_eq!(lagging(Some(6), 5, 0, 10_000, 600), None);
        assert_eq!(lagging(Some(4), 5, 9_500, 10_000, 600), None);
        let d = lagging(Some(4), 5, 9_000, 10_000, 600).unwrap();
        assert!(d.contains("set version 4 while version 5"), "{d}");
        assert!(lagging(None, 1, 0, 10_000, 600).unwrap().contains("no set"));
    }

    #[test]
    fn gaps_name_the_missing_range() {
        for (last, seq, expected) in [
            (None, 1, None),
            (None, 2, Some((1, 1))),
            (Some(3), 4, None),
            (Some(3), 3, None),
            (Some(3), 2, None),
            (Some(3), 7, Some((4, 6))),
            (Some(u64::MAX), 1, None),
        ] {
            assert_eq!(gap(last, seq), expected, "{last:?} {seq}");
        }
        assert_eq!(gap_detail(1, (4, 4)), "epoch 0000000000000001: batch 4 missing");
        assert_eq!(
            gap_detail(1, (4, 6)),
            "epoch 0000000000000001: batches 4 to 6 missing"
        );
    }

    #[test]
    fn dropped_sightings_count_per_epoch() {
        let hb = |epoch: u64, dropped: u64| Heartbeat {
            agent_version: "0.1.0".into(),
            channel: "default".into(),
            set_version: Some(1),
            set_created: None,
            config_hash: [0; 32],
            scan: ScanStats::default(),
            cpu_millis: 0,
            rss_bytes: 0,
            spool_depth: 0,
            spool_dropped: dropped,
            epoch,
            last_seq: 0,
        };
        assert_eq!(spool_dropped(None, &hb(1, 0)), None);
        assert_eq!(spool_dropped(None, &hb(1, 3)), Some(3));
        assert_eq!(spool_dropped(Some(&hb(1, 3)), &hb(1, 3)), None);
        assert_eq!(spool_dropped(Some(&hb(1, 3)), &hb(1, 5)), Some(2));
        // A new spool: its count starts again.
        assert_eq!(spool_dropped(Some(&hb(1, 9)), &hb(2, 1)), Some(1));
        assert_eq!(spool_dropped(Some(&hb(1, 9)), &hb(2, 0)), None);
    }
}
