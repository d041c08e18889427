//! What agents report, in the store: sightings batches, heartbeats, and alarms about agents.
//!
//! A batch is numbered by the agent (spool epoch, sequence) and identified by the SHA-256 of its
//! items. Storing one is a single transaction: a number already stored with the same digest is
//! a replay and counts nothing; with another digest it is a conflict (the agent's spool was
//! restored from an older copy and must renumber under a new epoch); otherwise the batch row and
//! every sighting are written together. Sightings are keyed by (agent, indicator, observed,
//! location); the agent sends cumulative counts, so the stored count is the largest seen and a
//! resent sighting never inflates it.
//!
//! A batch is the agent's word, so it is checked before anything of it is stored
//! ([`BatchOutcome::Refused`], which the channel answers `BadRequest` naming the field): it
//! holds at least one sighting, every indicator id is one this collector has stored, and the
//! agent keeps under its cap of sightings ([`Intake::max_sightings_per_agent`]; passing it also
//! raises a `sightings-cap` alarm). What cannot be checked is bounded instead: times are clamped
//! into [enrolment − 1 day, now + 5 min] and counts to [`MAX_COUNT`], so one agent cannot push
//! another's aggregates or the fleet's first and last seen to absurd values.
//!
//! Invariants: the agent a batch is stored under is always the caller's (the authenticated
//! session's), never a value from the message; a batch is acknowledged only after the
//! transaction holding it committed, so an acknowledged sighting survives a crash and a
//! replayed one changes no count; a batch is stored whole or not at all.
//!
//! The functions on a bare [`Connection`] let the channel's writer group many sessions'
//! batches into one transaction; the [`Store`] methods each run one transaction of their own.

use std::collections::{BTreeSet, HashMap, HashSet};

use picket_proto::wire::{self, Batch, Heartbeat, SightingReport};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::channel::alarms::{self, AlarmKind, Thresholds};
use crate::store::{Store, ORG};
use crate::CollectorError;

/// What became of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Stored now: acknowledge it.
    Stored,
    /// Already stored with the same items: acknowledge it as a duplicate, nothing counted.
    Duplicate,
    /// Another batch is stored under this number: answer `Conflict`.
    Conflict,
    /// Not stored, and never will be as it is: the reason names the field (answer
    /// `BadRequest`).
    Refused(String),
}

/// The largest count stored for one sighting: far above what a real agent counts (one per
/// scan or poll that found it), far below where sums over a fleet could overflow.
pub const MAX_COUNT: u64 = 1_000_000_000;
/// How long before its enrolment an agent may say it first saw something (it may have scanned
/// from a set imported offline before it enrolled).
pub const BEFORE_ENROLMENT: i64 = 86_400;
/// How far ahead of the collector's clock a sighting's times may be (the agent's clock may run
/// a little fast).
pub const AHEAD_OF_NOW: i64 = 300;

/// The limits a batch is stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intake {
    /// The most sightings kept for one agent.
    pub max_sightings_per_agent: u64,
}

impl Default for Intake {
    fn default() -> Self {
        Intake {
            max_sightings_per_agent: 100_000,
        }
    }
}

/// An alarm raised or cleared by a write, to be printed once the transaction committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmEvent {
    /// The agent.
    pub agent: String,
    /// The kind.
    pub kind: AlarmKind,
    /// What the alarm says (for a cleared alarm: what it said).
    pub detail: String,
    /// Raised (`true`) or cleared.
    pub raised: bool,
}

impl AlarmEvent {
    /// The log line: `picket-collector: alarm <kind> agent=<id> <detail>`, or
    /// `picket-collector: alarm cleared <kind> agent=<id>`.
    pub fn line(&self) -> String {
        if self.raised {
            format!(
                "picket-collector: alarm {} agent={} {}",
                self.kind, self.agent, self.detail
            )
        } else {
            format!(
                "picket-collector: alarm cleared {} agent={}",
                self.kind, self.agent
            )
        }
    }
}

/// A stored alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alarm {
    /// The agent.
    pub agent: String,
    /// The kind's name (see [`AlarmKind::name`]).
    pub kind: String,
    /// What it says.
    pub detail: String,
    /// When it was raised (unix seconds).
    pub raised: i64,
    /// When it was cleared, if it was.
    pub cleared: Option<i64>,
}

/// One stored sighting, in full detail (the collector's internal view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// The agent that saw it.
    pub agent: String,
    /// The indicator id.
    pub indicator: String,
    /// The indicator kind that matched.
    pub what: String,
    /// `file`, `process` or `connection`.
    pub observed: String,
    /// The redacted location, if the agent sent one.
    pub location: Option<String>,
    /// First seen (unix seconds).
    pub first_seen: i64,
    /// Last seen.
    pub last_seen: i64,
    /// Times seen (cumulative, as the agent counts).
    pub count: u64,
    /// The newest set version that matched it.
    pub set_version: u64,
    /// When the collector last received it.
    pub received: i64,
}

/// The sightings of one indicator across the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndicatorSightings {
    /// The indicator id.
    pub indicator: String,
    /// Distinct agents (hosts) that saw it.
    pub hosts: u64,
    /// Times seen, summed over hosts and places.
    pub count: u64,
    /// First seen anywhere.
    pub first_seen: i64,
    /// Last seen anywhere.
    pub last_seen: i64,
    /// The indicator kinds that matched, sorted.
    pub what: Vec<String>,
    /// What it was seen on (`file`, `process`, `connection`), sorted.
    pub observed: Vec<String>,
}

/// The postcard encoding of `value` (a frame body without its length prefix).
pub(crate) fn postcard_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    let mut frame = wire::encode_frame(value);
    frame.drain(..4);
    frame
}

/// The digest a batch is told apart by: SHA-256 of the postcard encoding of its items.
pub fn batch_digest(items: &[SightingReport]) -> [u8; 32] {
    picket_proto::sha256(&postcard_bytes(&items))
}

fn to_i64(v: u64, what: &str) -> rusqlite::Result<i64> {
    i64::try_from(v)
        .map_err(|_| rusqlite::Error::ToSqlConversionFailure(format!("{what} {v} is beyond 2^63 - 1").into()))
}

/// A value from the agent for a message back to it: quoted, and cut short when long.
fn quoted(v: &str) -> String {
    const SHOWN: usize = 80;
    match v.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}...", &v[..cut]),
        None => format!("{v:?}"),
    }
}

/// `t` clamped into `[lo, hi]`.
fn clamp_time(t: i64, lo: i64, hi: i64) -> i64 {
    t.max(lo).min(hi)
}

/// Stores `batch` from `agent` (see the module documentation), within the caller's
/// transaction. Returns the outcome and the alarms it raised or cleared. A refused batch
/// stores nothing but the alarm it may raise.
pub(crate) fn record_batch(
    conn: &Connection,
    agent: &str,
    batch: &Batch,
    now: i64,
    intake: &Intake,
) -> rusqlite::Result<(BatchOutcome, Vec<AlarmEvent>)> {
    if batch.items.is_empty() {
        let why = "report.items is empty: a batch carries at least one sighting".to_owned();
        return Ok((BatchOutcome::Refused(why), Vec::new()));
    }
    let digest = batch_digest(&batch.items);
    // Epochs are random u64s, stored as their bit pattern; sequence numbers count up from 1.
    let epoch = batch.epoch as i64;
    let seq = to_i64(batch.seq, "sequence number")?;
    let stored: Option<Vec<u8>> = conn
        .query_row(
            "SELECT digest FROM report_batches WHERE agent = ?1 AND epoch = ?2 AND seq = ?3",
            params![agent, epoch, seq],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(d) = stored {
        let outcome = if d == digest {
            BatchOutcome::Duplicate
        } else {
            BatchOutcome::Conflict
        };
        return Ok((outcome, Vec::new()));
    }
    let enrolled: Option<i64> = conn
        .query_row(
            "SELECT enrolled FROM agents WHERE org = ?1 AND id = ?2",
            params![ORG, agent],
            |r| r.get(0),
        )
        .optional()?;
    let Some(enrolled) = enrolled else {
        let why = format!("no enrolled agent {agent}");
        return Ok((BatchOutcome::Refused(why), Vec::new()));
    };
    // Every indicator must be one this collector has (looked up by primary key), and the new
    // sightings are counted against the agent's cap.
    let mut new_rows: HashSet<(&str, &str, &str)> = HashSet::new();
    {
        let mut known = conn.prepare_cached("SELECT 1 FROM indicators WHERE org = ?1 AND id = ?2")?;
        let mut held = conn.prepare_cached(
            "SELECT 1 FROM sightings WHERE agent = ?1 AND indicator = ?2 AND observed = ?3 AND location = ?4",
        )?;
        for (i, s) in batch.items.iter().enumerate() {
            if !known.exists(params![ORG, s.indicator])? {
                let why = format!(
                    "report.items[{i}].indicator {} is not an indicator this collector has",
                    quoted(&s.indicator)
                );
                return Ok((BatchOutcome::Refused(why), Vec::new()));
            }
            let location = s.location.as_deref().unwrap_or("");
            let key = (s.indicator.as_str(), s.observed.name(), location);
            if !new_rows.contains(&key) && !held.exists(params![agent, key.0, key.1, key.2])? {
                new_rows.insert(key);
            }
        }
    }
    if !new_rows.is_empty() {
        let rows: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sightings WHERE agent = ?1",
            params![agent],
            |r| r.get(0),
        )?;
        let rows = rows.max(0) as u64;
        let cap = intake.max_sightings_per_agent;
        if rows.saturating_add(new_rows.len() as u64) > cap {
            let detail = format!(
                "holds {rows} sightings, and the cap is {cap} (channel.max_sightings_per_agent): batches adding new ones are refused, existing ones keep updating"
            );
            let events = raise(conn, agent, AlarmKind::SightingsCap, &detail, now)?;
            let why = format!(
                "agent {agent} holds {rows} sightings and this batch adds {} new ones: over the collector's cap of {cap} per agent",
                new_rows.len()
            );
            return Ok((BatchOutcome::Refused(why), events.into_iter().collect()));
        }
    }
    // What cannot be checked is bounded.
    let (lo, hi) = (
        enrolled.saturating_sub(BEFORE_ENROLMENT),
        now.saturating_add(AHEAD_OF_NOW),
    );
    let last: Option<i64> = conn.query_row(
        "SELECT MAX(seq) FROM report_batches WHERE agent = ?1 AND epoch = ?2",
        params![agent, epoch],
        |r| r.get(0),
    )?;
    conn.execute(
        "INSERT INTO report_batches (org, agent, epoch, seq, digest, received, items)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![ORG, agent, epoch, seq, &digest[..], now, batch.items.len() as i64],
    )?;
    let mut upsert = conn.prepare_cached(
        "INSERT INTO sightings (org, agent, indicator, what, observed, location, first_seen, last_seen,
                                count, set_version, received)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (agent, indicator, observed, location) DO UPDATE SET
             what = excluded.what,
             first_seen = MIN(first_seen, excluded.first_seen),
             last_seen = MAX(last_seen, excluded.last_seen),
             count = MAX(count, excluded.count),
             set_version = MAX(set_version, excluded.set_version),
             received = excluded.received",
    )?;
    for s in &batch.items {
        let first = clamp_time(s.first_seen, lo, hi);
        let last = clamp_time(s.last_seen, lo, hi);
        upsert.execute(params![
            ORG,
            agent,
            s.indicator,
            s.what,
            s.observed.name(),
            s.location.as_deref().unwrap_or(""),
            first.min(last),
            first.max(last),
            s.count.min(MAX_COUNT) as i64,
            s.set_version.min(i64::MAX as u64) as i64,
            now,
        ])?;
    }
    let last = last.map(|l| l as u64);
    let mut events = Vec::new();
    match alarms::gap(last, batch.seq) {
        Some(missing) => events.extend(raise(
            conn,
            agent,
            AlarmKind::SequenceGap,
            &alarms::gap_detail(batch.epoch, missing),
            now,
        )?),
        // The first batch of a new spool: an older spool's gap is history.
        None if last.is_none() => events.extend(clear(conn, agent, AlarmKind::SequenceGap, now)?),
        // A batch below the highest: it may have filled the gap.
        None => {
            let top = last.unwrap_or(0).max(batch.seq);
            if batch.seq < top {
                let held: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM report_batches WHERE agent = ?1 AND epoch = ?2",
                    params![agent, epoch],
                    |r| r.get(0),
                )?;
                if held as u64 == top {
                    events.extend(clear(conn, agent, AlarmKind::SequenceGap, now)?);
                }
            }
        }
    }
    Ok((BatchOutcome::Stored, events))
}

/// Stores the heartbeat of `agent` and raises or clears `spool-dropped`.
pub(crate) fn record_heartbeat(
    conn: &Connection,
    agent: &str,
    hb: &Heartbeat,
    now: i64,
) -> rusqlite::Result<Vec<AlarmEvent>> {
    let prev: Option<Option<Vec<u8>>> = conn
        .query_row(
            "SELECT heartbeat FROM agents WHERE org = ?1 AND id = ?2",
            params![ORG, agent],
            |r| r.get(0),
        )
        .optional()?;
    let Some(prev) = prev else {
        return Ok(Vec::new());
    };
    let prev = prev.and_then(|b| wire::decode_body::<Heartbeat>(&b).ok());
    conn.execute(
        "UPDATE agents SET heartbeat = ?3, heartbeat_at = ?4, last_seen = MAX(COALESCE(last_seen, 0), ?4)
         WHERE org = ?1 AND id = ?2",
        params![ORG, agent, postcard_bytes(hb), now],
    )?;
    match alarms::spool_dropped(prev.as_ref(), hb) {
        Some(n) => raise(
            conn,
            agent,
            AlarmKind::SpoolDropped,
            &format!(
                "the spool was full and dropped {n} sightings since the last heartbeat ({} in spool epoch {:016x})",
                hb.spool_dropped, hb.epoch
            ),
            now,
        )
        .map(|e| e.into_iter().collect()),
        None => clear(conn, agent, AlarmKind::SpoolDropped, now).map(|e| e.into_iter().collect()),
    }
}

/// Records that a frame arrived from `agent` at `now`.
pub(crate) fn record_seen(conn: &Connection, agent: &str, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE agents SET last_seen = MAX(COALESCE(last_seen, 0), ?3) WHERE org = ?1 AND id = ?2",
        params![ORG, agent, now],
    )
    .map(|_| ())
}

/// Records that a session of `agent` presented machine hash `presented` instead of the one it
/// enrolled with, and raises `clone`.
pub(crate) fn record_clone(
    conn: &Connection,
    agent: &str,
    presented: &[u8; 32],
    now: i64,
) -> rusqlite::Result<Vec<AlarmEvent>> {
    let enrolled: Option<Vec<u8>> = conn
        .query_row(
            "SELECT machine FROM agents WHERE org = ?1 AND id = ?2",
            params![ORG, agent],
            |r| r.get(0),
        )
        .optional()?;
    let Some(enrolled) = enrolled else {
        return Ok(Vec::new());
    };
    let enrolled: [u8; 32] = enrolled.try_into().unwrap_or([0; 32]);
    if &enrolled == presented {
        return Ok(Vec::new());
    }
    conn.execute(
        "UPDATE agents SET clone_seen = ?3 WHERE org = ?1 AND id = ?2",
        params![ORG, agent, now],
    )?;
    Ok(raise(
        conn,
        agent,
        AlarmKind::Clone,
        &alarms::clone_detail(&enrolled, presented),
        now,
    )?
    .into_iter()
    .collect())
}

/// Looks at every agent and raises or clears `quiet` and `lagging`; clears every alarm of a
/// revoked agent (the operator has acted on it). `clone` stays until then.
pub(crate) fn check_alarms(
    conn: &Connection,
    now: i64,
    th: &Thresholds,
) -> rusqlite::Result<Vec<AlarmEvent>> {
    struct Row {
        id: String,
        channel: String,
        enrolled: i64,
        revoked: bool,
        last_seen: Option<i64>,
        heartbeat: Option<Vec<u8>>,
    }
    let rows = {
        let mut stmt = conn.prepare(
            "SELECT id, channel, enrolled, revoked IS NOT NULL, last_seen, heartbeat FROM agents WHERE org = ?1",
        )?;
        let rows = stmt.query_map(params![ORG], |r| {
            Ok(Row {
                id: r.get(0)?,
                channel: r.get(1)?,
                enrolled: r.get(2)?,
                revoked: r.get(3)?,
                last_seen: r.get(4)?,
                heartbeat: r.get(5)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let open: HashSet<(String, String)> = {
        let mut stmt = conn.prepare("SELECT agent, kind FROM alarms WHERE org = ?1 AND cleared IS NULL")?;
        let rows = stmt.query_map(params![ORG], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let is_open = |agent: &str, kind: AlarmKind| open.contains(&(agent.to_owned(), kind.name().to_owned()));
    let mut current: HashMap<String, Option<u64>> = HashMap::new();
    let mut events = Vec::new();
    for row in rows {
        if row.revoked {
            for kind in AlarmKind::ALL {
                if is_open(&row.id, kind) {
                    events.extend(clear(conn, &row.id, kind, now)?);
                }
            }
            continue;
        }
        match alarms::quiet(row.last_seen, row.enrolled, false, now, th.quiet_after) {
            Some(detail) => events.extend(raise(conn, &row.id, AlarmKind::Quiet, &detail, now)?),
            None if is_open(&row.id, AlarmKind::Quiet) => {
                events.extend(clear(conn, &row.id, AlarmKind::Quiet, now)?)
            }
            None => {}
        }
        // Lagging is judged from what the agent last said it holds.
        let Some(hb) = row
            .heartbeat
            .and_then(|b| wire::decode_body::<Heartbeat>(&b).ok())
        else {
            continue;
        };
        let cur = match current.get(&row.channel) {
            Some(c) => *c,
            None => {
                let c: Option<u64> = conn.query_row(
                    "SELECT MAX(version) FROM sets WHERE org = ?1 AND channel = ?2",
                    params![ORG, row.channel],
                    |r| r.get(0),
                )?;
                current.insert(row.channel.clone(), c);
                c
            }
        };
        let verdict = match cur {
            Some(cur) if alarms::behind(hb.set_version, cur) => {
                let since: Option<i64> = conn.query_row(
                    "SELECT MIN(created) FROM sets WHERE org = ?1 AND channel = ?2 AND version > ?3",
                    params![
                        ORG,
                        row.channel,
                        hb.set_version.unwrap_or(0).min(i64::MAX as u64) as i64
                    ],
                    |r| r.get(0),
                )?;
                let since = since.unwrap_or(now).max(row.enrolled);
                alarms::lagging(hb.set_version, cur, since, now, th.lag_after)
            }
            _ => None,
        };
        match verdict {
            Some(detail) => events.extend(raise(conn, &row.id, AlarmKind::Lagging, &detail, now)?),
            None if is_open(&row.id, AlarmKind::Lagging) => {
                events.extend(clear(conn, &row.id, AlarmKind::Lagging, now)?)
            }
            None => {}
        }
    }
    Ok(events)
}

/// Raises an alarm unless one of that kind is open for the agent (then its detail is brought up
/// to date). Returns the event when newly raised.
fn raise(
    conn: &Connection,
    agent: &str,
    kind: AlarmKind,
    detail: &str,
    now: i64,
) -> rusqlite::Result<Option<AlarmEvent>> {
    let updated = conn.execute(
        "UPDATE alarms SET detail = ?4 WHERE org = ?1 AND agent = ?2 AND kind = ?3 AND cleared IS NULL",
        params![ORG, agent, kind.name(), detail],
    )?;
    if updated > 0 {
        return Ok(None);
    }
    // Cleared and raised again within the same second: the row is reopened.
    conn.execute(
        "INSERT INTO alarms (org, agent, kind, detail, raised, cleared) VALUES (?1, ?2, ?3, ?4, ?5, NULL)
         ON CONFLICT (agent, kind, raised) DO UPDATE SET detail = excluded.detail, cleared = NULL",
        params![ORG, agent, kind.name(), detail, now],
    )?;
    Ok(Some(AlarmEvent {
        agent: agent.to_owned(),
        kind,
        detail: detail.to_owned(),
        raised: true,
    }))
}

/// Clears the open alarm of `kind` for the agent, if there is one.
fn clear(conn: &Connection, agent: &str, kind: AlarmKind, now: i64) -> rusqlite::Result<Option<AlarmEvent>> {
    let detail: Option<String> = conn
        .query_row(
            "UPDATE alarms SET cleared = ?4 WHERE org = ?1 AND agent = ?2 AND kind = ?3 AND cleared IS NULL
             RETURNING detail",
            params![ORG, agent, kind.name(), now],
            |r| r.get(0),
        )
        .optional()?;
    Ok(detail.map(|detail| AlarmEvent {
        agent: agent.to_owned(),
        kind,
        detail,
        raised: false,
    }))
}

impl Store {
    /// Runs `f` in one immediate transaction (the write lock is taken at the start, so a
    /// concurrent writer makes it wait rather than fail half way).
    fn write<T>(&mut self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, CollectorError> {
        let db = self.err();
        let tx = self.tx()?;
        let out = f(&tx).map_err(&db)?;
        tx.commit().map_err(&db)?;
        Ok(out)
    }

    /// Stores a sightings batch from `agent` in one transaction (see the module documentation).
    pub fn record_batch(
        &mut self,
        agent: &str,
        batch: &Batch,
        now: i64,
        intake: &Intake,
    ) -> Result<(BatchOutcome, Vec<AlarmEvent>), CollectorError> {
        self.write(|c| record_batch(c, agent, batch, now, intake))
    }

    /// Stores a heartbeat from `agent`.
    pub fn record_heartbeat(
        &mut self,
        agent: &str,
        hb: &Heartbeat,
        now: i64,
    ) -> Result<Vec<AlarmEvent>, CollectorError> {
        self.write(|c| record_heartbeat(c, agent, hb, now))
    }

    /// Records that `agent` presented another machine hash.
    pub fn record_clone(
        &mut self,
        agent: &str,
        presented: &[u8; 32],
        now: i64,
    ) -> Result<Vec<AlarmEvent>, CollectorError> {
        self.write(|c| record_clone(c, agent, presented, now))
    }

    /// Raises and clears `quiet` and `lagging` alarms for every agent.
    pub fn check_alarms(&mut self, now: i64, th: &Thresholds) -> Result<Vec<AlarmEvent>, CollectorError> {
        self.write(|c| check_alarms(c, now, th))
    }

    /// The alarms, newest first: the open ones, or all with `all`.
    pub fn alarms(&self, all: bool) -> Result<Vec<Alarm>, CollectorError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT agent, kind, detail, raised, cleared FROM alarms
                 WHERE org = ?1 AND (?2 OR cleared IS NULL) ORDER BY raised DESC, agent, kind",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG, all], |r| {
                Ok(Alarm {
                    agent: r.get(0)?,
                    kind: r.get(1)?,
                    detail: r.get(2)?,
                    raised: r.get(3)?,
                    cleared: r.get(4)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Every stored sighting, by agent and indicator.
    pub fn sightings(&self) -> Result<Vec<Sighting>, CollectorError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT agent, indicator, what, observed, location, first_seen, last_seen, count, set_version, received
                 FROM sightings WHERE org = ?1 ORDER BY agent, indicator, observed, location",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG], |r| {
                let location: String = r.get(4)?;
                Ok(Sighting {
                    agent: r.get(0)?,
                    indicator: r.get(1)?,
                    what: r.get(2)?,
                    observed: r.get(3)?,
                    location: (!location.is_empty()).then_some(location),
                    first_seen: r.get(5)?,
                    last_seen: r.get(6)?,
                    count: r.get::<_, i64>(7)?.max(0) as u64,
                    set_version: r.get::<_, i64>(8)?.max(0) as u64,
                    received: r.get(9)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The sightings aggregated per indicator, most recently seen first.
    pub fn sightings_by_indicator(&self) -> Result<Vec<IndicatorSightings>, CollectorError> {
        struct Acc {
            hosts: BTreeSet<String>,
            count: u64,
            first: i64,
            last: i64,
            what: BTreeSet<String>,
            observed: BTreeSet<String>,
        }
        let mut by: HashMap<String, Acc> = HashMap::new();
        for s in self.sightings()? {
            let a = by.entry(s.indicator).or_insert_with(|| Acc {
                hosts: BTreeSet::new(),
                count: 0,
                first: i64::MAX,
                last: i64::MIN,
                what: BTreeSet::new(),
                observed: BTreeSet::new(),
            });
            a.hosts.insert(s.agent);
            a.count = a.count.saturating_add(s.count);
            a.first = a.first.min(s.first_seen);
            a.last = a.last.max(s.last_seen);
            a.what.insert(s.what);
            a.observed.insert(s.observed);
        }
        let mut out: Vec<IndicatorSightings> = by
            .into_iter()
            .map(|(indicator, a)| IndicatorSightings {
                indicator,
                hosts: a.hosts.len() as u64,
                count: a.count,
                first_seen: a.first,
                last_seen: a.last,
                what: a.what.into_iter().collect(),
                observed: a.observed.into_iter().collect(),
            })
            .collect();
        out.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.indicator.cmp(&b.indicator))
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::wire::{ObservedKind, ScanStats};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("p.db")).unwrap();
        (dir, s)
    }

    /// A store where agents `ag-1` and `ag-2` enrolled at time 0 and indicators `ind-a`,
    /// `ind-b` and `i` are stored: what a batch may name.
    fn reporting() -> (tempfile::TempDir, Store) {
        let (d, s) = store();
        enrol(&s, "ag-1", 0);
        enrol(&s, "ag-2", 0);
        for id in ["ind-a", "ind-b", "i"] {
            indicator(&s, id);
        }
        (d, s)
    }

    fn indicator(s: &Store, id: &str) {
        s.conn()
            .execute(
                "INSERT INTO indicators (org, id, kind, value, body, tlp, source, first_seen, last_seen)
                 VALUES (?1, ?2, 1, ?2, x'', 1, 'test', 0, 0)",
                params![ORG, id],
            )
            .unwrap();
    }

    fn enrol(s: &Store, id: &str, enrolled: i64) {
        s.conn()
            .execute(
                "INSERT INTO agents (org, id, public_key, token, channel, machine, enrolled, cert_not_after)
                 VALUES (?1, ?2, ?3, 't', 'default', ?4, ?5, ?6)",
                params![
                    ORG,
                    id,
                    id.as_bytes(),
                    &[7u8; 32][..],
                    enrolled,
                    enrolled + 86_400
                ],
            )
            .unwrap();
    }

    fn sighting(
        indicator: &str,
        location: Option<&str>,
        first: i64,
        last: i64,
        count: u64,
    ) -> SightingReport {
        SightingReport {
            indicator: indicator.into(),
            what: "sha256".into(),
            observed: ObservedKind::File,
            location: location.map(str::to_owned),
            first_seen: first,
            last_seen: last,
            count,
            set_version: 1,
        }
    }

    fn batch(epoch: u64, seq: u64, items: Vec<SightingReport>) -> Batch {
        Batch { epoch, seq, items }
    }

    fn open_kinds(s: &Store, agent: &str) -> Vec<String> {
        s.alarms(false)
            .unwrap()
            .into_iter()
            .filter(|a| a.agent == agent)
            .map(|a| a.kind)
            .collect()
    }

    #[test]
    fn a_replayed_batch_counts_nothing_and_a_different_one_under_its_number_conflicts() {
        let (_d, mut s) = reporting();
        let b1 = batch(9, 1, vec![sighting("ind-a", Some("/tmp/x"), 100, 200, 3)]);
        assert_eq!(
            s.record_batch("ag-1", &b1, 1_000, &Intake::default()).unwrap().0,
            BatchOutcome::Stored
        );
        assert_eq!(
            s.record_batch("ag-1", &b1, 1_001, &Intake::default()).unwrap().0,
            BatchOutcome::Duplicate
        );
        let before = s.sightings().unwrap();
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].count, 3);
        assert_eq!(before[0].received, 1_000, "a duplicate writes nothing");
        // Another batch under the same number: the agent's spool was restored.
        let other = batch(9, 1, vec![sighting("ind-b", None, 100, 200, 1)]);
        assert_eq!(
            s.record_batch("ag-1", &other, 1_002, &Intake::default())
                .unwrap()
                .0,
            BatchOutcome::Conflict
        );
        assert_eq!(
            s.sightings().unwrap(),
            before,
            "a conflicting batch stores nothing"
        );
        // The same number from another agent is that agent's own batch.
        assert_eq!(
            s.record_batch("ag-2", &other, 1_003, &Intake::default())
                .unwrap()
                .0,
            BatchOutcome::Stored
        );
        let all = s.sightings().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[1].agent.as_str(), all[1].indicator.as_str()),
            ("ag-2", "ind-b")
        );
    }

    #[test]
    fn cumulative_counts_keep_the_largest_and_widen_the_window() {
        let (_d, mut s) = reporting();
        s.record_batch(
            "ag-1",
            &batch(1, 1, vec![sighting("i", Some("/a"), 100, 200, 5)]),
            1_000,
            &Intake::default(),
        )
        .unwrap();
        // A later batch repeats the sighting with the agent's running totals.
        s.record_batch(
            "ag-1",
            &batch(1, 2, vec![sighting("i", Some("/a"), 90, 300, 7)]),
            1_001,
            &Intake::default(),
        )
        .unwrap();
        // An older count arriving late does not lower it.
        s.record_batch(
            "ag-1",
            &batch(1, 3, vec![sighting("i", Some("/a"), 150, 250, 6)]),
            1_002,
            &Intake::default(),
        )
        .unwrap();
        // Another place is another sighting; no location is its own key too.
        s.record_batch(
            "ag-1",
            &batch(
                1,
                4,
                vec![
                    sighting("i", Some("/b"), 400, 400, 1),
                    sighting("i", None, 500, 500, 2),
                ],
            ),
            1_003,
            &Intake::default(),
        )
        .unwrap();
        let all = s.sightings().unwrap();
        assert_eq!(all.len(), 3);
        let a = all.iter().find(|x| x.location.as_deref() == Some("/a")).unwrap();
        assert_eq!((a.first_seen, a.last_seen, a.count), (90, 300, 7));
        let agg = s.sightings_by_indicator().unwrap();
        assert_eq!(agg.len(), 1);
        assert_eq!(
            (agg[0].hosts, agg[0].count, agg[0].first_seen, agg[0].last_seen),
            (1, 10, 90, 500)
        );
        assert_eq!(agg[0].what, vec!["sha256"]);
        assert_eq!(agg[0].observed, vec!["file"]);
    }

    #[test]
    fn a_skipped_sequence_number_raises_a_gap_that_clears_when_filled() {
        let (_d, mut s) = reporting();
        let b = |seq| batch(5, seq, vec![sighting("i", None, 1, 1, seq)]);
        assert!(s
            .record_batch("ag-1", &b(1), 10, &Intake::default())
            .unwrap()
            .1
            .is_empty());
        let (_, events) = s.record_batch("ag-1", &b(4), 11, &Intake::default()).unwrap();
        assert_eq!(events.len(), 1);
        assert!(events[0].raised);
        assert_eq!(events[0].kind, AlarmKind::SequenceGap);
        assert!(
            events[0].detail.contains("batches 2 to 3 missing"),
            "{}",
            events[0].detail
        );
        assert!(events[0]
            .line()
            .starts_with("picket-collector: alarm sequence-gap agent=ag-1 "));
        // Still a gap after one of the two arrives.
        assert!(s
            .record_batch("ag-1", &b(2), 12, &Intake::default())
            .unwrap()
            .1
            .is_empty());
        assert_eq!(open_kinds(&s, "ag-1"), vec!["sequence-gap"]);
        // Filled.
        let (_, events) = s.record_batch("ag-1", &b(3), 13, &Intake::default()).unwrap();
        assert_eq!(events.len(), 1);
        assert!(!events[0].raised);
        assert!(open_kinds(&s, "ag-1").is_empty());
        // A gap, then the agent starts a new spool: the old gap is history.
        s.record_batch("ag-1", &b(9), 14, &Intake::default()).unwrap();
        assert_eq!(open_kinds(&s, "ag-1"), vec!["sequence-gap"]);
        s.record_batch(
            "ag-1",
            &batch(6, 1, vec![sighting("i", None, 1, 1, 1)]),
            15,
            &Intake::default(),
        )
        .unwrap();
        assert!(open_kinds(&s, "ag-1").is_empty());
        let all = s.alarms(true).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|a| a.cleared.is_some()));
    }

    #[test]
    fn a_sequence_number_beyond_i64_is_refused_whole() {
        let (_d, mut s) = reporting();
        let b = batch(1, u64::MAX, vec![sighting("i", None, 1, 1, 1)]);
        let err = s
            .record_batch("ag-1", &b, 1, &Intake::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("sequence number"), "{err}");
        assert!(s.sightings().unwrap().is_empty());
    }

    fn refused(outcome: BatchOutcome) -> String {
        match outcome {
            BatchOutcome::Refused(why) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn batch_rows(s: &Store) -> i64 {
        s.conn()
            .query_row("SELECT COUNT(*) FROM report_batches", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_batch_naming_an_indicator_the_collector_lacks_is_refused_whole() {
        let (_d, mut s) = reporting();
        let poisoned = batch(
            3,
            1,
            vec![
                sighting("ind-a", Some("/a"), 100, 200, 1),
                sighting("made-up\u{1b}[31m", Some("/b"), 100, 200, 1),
            ],
        );
        let (outcome, events) = s
            .record_batch("ag-1", &poisoned, 1_000, &Intake::default())
            .unwrap();
        let why = refused(outcome);
        assert!(
            why.starts_with("report.items[1].indicator \"made-up\\u{1b}[31m\""),
            "names the field, escaped: {why}"
        );
        assert!(events.is_empty());
        // Nothing of it was stored, not even its number: the agent's next batch under that
        // number is a batch like any other, not a conflict.
        assert!(s.sightings().unwrap().is_empty());
        assert_eq!(batch_rows(&s), 0);
        let honest = batch(3, 1, vec![sighting("ind-a", Some("/a"), 100, 200, 1)]);
        let (outcome, _) = s
            .record_batch("ag-1", &honest, 1_001, &Intake::default())
            .unwrap();
        assert_eq!(outcome, BatchOutcome::Stored);
        // An agent that is not enrolled stores nothing either.
        let (outcome, _) = s
            .record_batch("ag-gone", &honest, 1_002, &Intake::default())
            .unwrap();
        assert_eq!(refused(outcome), "no enrolled agent ag-gone");
    }

    #[test]
    fn an_empty_batch_is_refused() {
        let (_d, mut s) = reporting();
        let (outcome, _) = s
            .record_batch("ag-1", &batch(1, 1, vec![]), 10, &Intake::default())
            .unwrap();
        assert_eq!(
            refused(outcome),
            "report.items is empty: a batch carries at least one sighting"
        );
        assert_eq!(batch_rows(&s), 0);
    }

    #[test]
    fn times_are_clamped_to_the_agents_life_and_counts_to_a_billion() {
        let (_d, mut s) = store();
        let enrolled = 1_700_000_000;
        let now = enrolled + 3_600;
        enrol(&s, "ag-1", enrolled);
        enrol(&s, "ag-2", enrolled);
        indicator(&s, "i");
        // Seen since the epoch, until the end of time, more often than anything ever is.
        let wild = sighting("i", Some("/a"), 0, i64::MAX, u64::MAX);
        // Seen before it was first seen, and a day before enrolment (kept: an agent may have
        // scanned from an offline set before it enrolled).
        let reversed = sighting("i", Some("/b"), now + 999_999, enrolled - 86_400, 5);
        let (outcome, _) = s
            .record_batch(
                "ag-1",
                &batch(1, 1, vec![wild, reversed]),
                now,
                &Intake::default(),
            )
            .unwrap();
        assert_eq!(outcome, BatchOutcome::Stored);
        let rows = s.sightings().unwrap();
        let a = rows.iter().find(|r| r.location.as_deref() == Some("/a")).unwrap();
        assert_eq!(
            (a.first_seen, a.last_seen, a.count),
            (enrolled - BEFORE_ENROLMENT, now + AHEAD_OF_NOW, MAX_COUNT)
        );
        let b = rows.iter().find(|r| r.location.as_deref() == Some("/b")).unwrap();
        assert_eq!(
            (b.first_seen, b.last_seen),
            (enrolled - 86_400, now + AHEAD_OF_NOW)
        );
        // Another agent's ordinary sighting keeps the aggregate sane.
        let (outcome, _) = s
            .record_batch(
                "ag-2",
                &batch(1, 1, vec![sighting("i", None, now - 60, now, 2)]),
                now,
                &Intake::default(),
            )
            .unwrap();
        assert_eq!(outcome, BatchOutcome::Stored);
        let agg = &s.sightings_by_indicator().unwrap()[0];
        assert_eq!(agg.count, MAX_COUNT + 5 + 2);
        assert_eq!(agg.last_seen, now + AHEAD_OF_NOW);
    }

    #[test]
    fn past_its_cap_an_agent_adds_no_sighting_but_keeps_updating_its_own() {
        let (_d, mut s) = reporting();
        let cap = Intake {
            max_sightings_per_agent: 2,
        };
        // Two places: the cap. The same place twice in one batch is one sighting.
        let first = batch(
            1,
            1,
            vec![
                sighting("i", Some("/a"), 100, 100, 1),
                sighting("i", Some("/b"), 100, 100, 1),
                sighting("i", Some("/b"), 100, 110, 2),
            ],
        );
        assert_eq!(
            s.record_batch("ag-1", &first, 1_000, &cap).unwrap().0,
            BatchOutcome::Stored
        );
        // A third place: refused whole, and the operator hears of it.
        let more = batch(
            1,
            2,
            vec![
                sighting("i", Some("/a"), 100, 200, 5),
                sighting("i", Some("/c"), 100, 200, 1),
            ],
        );
        let (outcome, events) = s.record_batch("ag-1", &more, 1_001, &cap).unwrap();
        let why = refused(outcome);
        assert!(
            why.contains("holds 2 sightings") && why.contains("adds 1 new") && why.contains("cap of 2"),
            "{why}"
        );
        assert_eq!(events.len(), 1);
        assert!(events[0].raised && events[0].kind == AlarmKind::SightingsCap);
        assert!(
            events[0]
                .line()
                .starts_with("picket-collector: alarm sightings-cap agent=ag-1 holds 2 sightings"),
            "{}",
            events[0].line()
        );
        assert_eq!(open_kinds(&s, "ag-1"), vec!["sightings-cap"]);
        let counts = |s: &Store| -> Vec<u64> { s.sightings().unwrap().iter().map(|r| r.count).collect() };
        assert_eq!(counts(&s), vec![1, 2], "nothing of the refused batch was stored");
        // Its known sightings still update.
        let update = batch(1, 3, vec![sighting("i", Some("/a"), 100, 300, 9)]);
        assert_eq!(
            s.record_batch("ag-1", &update, 1_002, &cap).unwrap().0,
            BatchOutcome::Stored
        );
        assert_eq!(counts(&s), vec![9, 2]);
        // Another agent has a cap of its own.
        let other = batch(1, 1, vec![sighting("i", Some("/c"), 100, 100, 1)]);
        assert_eq!(
            s.record_batch("ag-2", &other, 1_003, &cap).unwrap().0,
            BatchOutcome::Stored
        );
        // Refused again: the alarm stays one alarm.
        let (outcome, events) = s.record_batch("ag-1", &more, 1_004, &cap).unwrap();
        refused(outcome);
        assert!(events.is_empty());
        let caps = s
            .alarms(true)
            .unwrap()
            .into_iter()
            .filter(|a| a.kind == "sightings-cap");
        assert_eq!(caps.count(), 1);
    }

    fn heartbeat(set_version: Option<u64>, epoch: u64, dropped: u64) -> Heartbeat {
        Heartbeat {
            agent_version: "0.1.0".into(),
            channel: "default".into(),
            set_version,
            set_created: None,
            config_hash: [1; 32],
            scan: ScanStats::default(),
            cpu_millis: 5,
            rss_bytes: 1 << 20,
            spool_depth: 0,
            spool_dropped: dropped,
            epoch,
            last_seq: 0,
        }
    }

    #[test]
    fn heartbeats_are_stored_and_raise_spool_dropped_while_it_grows() {
        let (_d, mut s) = store();
        enrol(&s, "ag-1", 100);
        assert!(s
            .record_heartbeat("ag-1", &heartbeat(Some(1), 1, 0), 200)
            .unwrap()
            .is_empty());
        let stored: Vec<u8> = s
            .conn()
            .query_row("SELECT heartbeat FROM agents WHERE id = 'ag-1'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            wire::decode_body::<Heartbeat>(&stored).unwrap(),
            heartbeat(Some(1), 1, 0)
        );
        let events = s
            .record_heartbeat("ag-1", &heartbeat(Some(1), 1, 4), 260)
            .unwrap();
        assert_eq!(events.len(), 1);
        assert!(events[0].raised && events[0].kind == AlarmKind::SpoolDropped);
        assert!(
            events[0].detail.contains("dropped 4 sightings"),
            "{}",
            events[0].detail
        );
        // Still growing: still one open alarm.
        assert!(s
            .record_heartbeat("ag-1", &heartbeat(Some(1), 1, 9), 320)
            .unwrap()
            .is_empty());
        assert_eq!(open_kinds(&s, "ag-1"), vec!["spool-dropped"]);
        // No more drops: cleared.
        let events = s
            .record_heartbeat("ag-1", &heartbeat(Some(1), 1, 9), 380)
            .unwrap();
        assert!(!events[0].raised);
        assert!(open_kinds(&s, "ag-1").is_empty());
        // An unknown agent's heartbeat is dropped.
        assert!(s
            .record_heartbeat("ag-x", &heartbeat(None, 1, 9), 380)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn quiet_lagging_and_clone_are_raised_and_cleared() {
        let (_d, mut s) = store();
        let th = Thresholds {
            quiet_after: 600,
            lag_after: 600,
        };
        enrol(&s, "ag-1", 1_000);
        // Never connected, 601 s after enrolment: quiet.
        assert!(s.check_alarms(1_500, &th).unwrap().is_empty());
        let events = s.check_alarms(1_601, &th).unwrap();
        assert_eq!(events.len(), 1);
        assert!(events[0].raised && events[0].kind == AlarmKind::Quiet);
        // Checked again: nothing new.
        assert!(s.check_alarms(1_700, &th).unwrap().is_empty());
        // A heartbeat: no longer quiet. It holds version 1 while version 2 is published.
        for (v, created) in [(1, 900), (2, 2_000)] {
            s.conn()
                .execute(
                    "INSERT INTO sets (org, channel, version, created, snapshot, manifest) VALUES (1, 'default', ?1, ?2, x'', x'')",
                    params![v, created],
                )
                .unwrap();
        }
        s.record_heartbeat("ag-1", &heartbeat(Some(1), 1, 0), 2_100)
            .unwrap();
        let events = s.check_alarms(2_100, &th).unwrap();
        assert_eq!(events.len(), 1);
        assert!(!events[0].raised && events[0].kind == AlarmKind::Quiet);
        // Behind since version 2 was published at 2 000: lagging after 600 s.
        s.record_heartbeat("ag-1", &heartbeat(Some(1), 1, 0), 2_550)
            .unwrap();
        assert!(s.check_alarms(2_600, &th).unwrap().is_empty());
        s.record_heartbeat("ag-1", &heartbeat(Some(1), 1, 0), 2_601)
            .unwrap();
        let events = s.check_alarms(2_601, &th).unwrap();
        assert_eq!(events.len(), 1);
        assert!(events[0].raised && events[0].kind == AlarmKind::Lagging);
        assert!(
            events[0].detail.contains("set version 1 while version 2"),
            "{}",
            events[0].detail
        );
        // It catches up.
        s.record_heartbeat("ag-1", &heartbeat(Some(2), 1, 0), 2_650)
            .unwrap();
        let events = s.check_alarms(2_650, &th).unwrap();
        assert!(!events[0].raised && events[0].kind == AlarmKind::Lagging);
        // Another machine presents the identity: clone, which stays until revocation.
        let events = s.record_clone("ag-1", &[9; 32], 2_700).unwrap();
        assert!(events[0].raised && events[0].kind == AlarmKind::Clone);
        assert!(
            s.record_clone("ag-1", &[7; 32], 2_701).unwrap().is_empty(),
            "the enrolled machine"
        );
        s.record_heartbeat("ag-1", &heartbeat(Some(2), 1, 0), 2_800)
            .unwrap();
        assert!(s.check_alarms(2_800, &th).unwrap().is_empty());
        assert_eq!(open_kinds(&s, "ag-1"), vec!["clone"]);
        let clone_seen: Option<i64> = s
            .conn()
            .query_row("SELECT clone_seen FROM agents WHERE id = 'ag-1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(clone_seen, Some(2_700));
        s.conn().execute("UPDATE agents SET revoked = 2_900", []).unwrap();
        let events = s.check_alarms(9_999, &th).unwrap();
        assert_eq!(events.len(), 1);
        assert!(!events[0].raised && events[0].kind == AlarmKind::Clone);
        assert!(s.alarms(false).unwrap().is_empty());
        assert_eq!(s.alarms(true).unwrap().len(), 3);
    }
}
