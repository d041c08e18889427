//! Community intelligence coming in: the objects a TAXII member posts to a community's
//! `contributions` collection, and what an upstream collection gave when it was pulled.
//!
//! [`accept`] takes a list of STIX objects from one authenticated account and gives one
//! [`Outcome`] per object, in order: a bad object fails alone and never stops the others, and
//! everything the list changes is written in one transaction. What is taken:
//!
//! - `sighting` (its `sighting_of_ref` an indicator): a row of `community_sightings`, the
//!   account's sighting of that indicator. A newer version of the object replaces the older;
//!   an older version never replaces a newer. These rows are what counts towards a community's
//!   k ([`Store::inbound_sightings`]) and what raises an indicator's priority
//!   ([`confirmations`]).
//! - `opinion` of `disagree` or `strongly-disagree` on indicators: the member's verdict that
//!   they are false positives, kept as `community_sightings` rows flagged `false_positive`
//!   (count 0: a verdict is not a sighting and never counts towards k). It is shown to the
//!   operator and nothing more: one member cannot take an indicator off this organisation's
//!   endpoints.
//! - `indicator`: community intelligence. Its pattern goes through the same STIX reader as an
//!   ingested bundle ([`crate::stix::parse_bundle`]), with its TLP markings (an unmarked one is
//!   taken as TLP:AMBER, the most a community carries), and is stored as indicators from the
//!   source `community:<name>`. A pattern Picket cannot match is a failure naming the reason.
//! - `identity` and `marking-definition`: stored only (a marking definition posted beside an
//!   indicator gives the indicator its TLP).
//!
//! Every object taken is also kept as posted in `contributions`. An identical object posted
//! again succeeds and changes nothing; another object under an id and version already taken
//! from the same account fails (versions compare as times, so `…00Z` and `…00.000Z` are one).
//! An object needs a string `id` (`<type>--<uuid>`, its type the object's `type`) and a version
//! (`modified`, else `created`, a STIX timestamp); it is at most [`MAX_OBJECT_BYTES`] as JSON,
//! no string in it longer than [`MAX_STRING_BYTES`], nested at most [`MAX_DEPTH`] deep.
//!
//! Invariant: the organisation behind an object is the authenticated account it came through
//! (a member's name, or `upstream:<name>`), never the `created_by_ref` the object claims: one
//! account counts once towards k however many objects, or identities, it posts. Sightings
//! count in the community they arrived through and in no other.
//!
//! Invariant: community intelligence never changes an indicator held from another source, or
//! contributed by another account: a member's version replaces only a version the same account
//! of the same community gave.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use picket_proto::{Record, Severity, Tlp};
use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::{json, Value};

use super::policy::OrgSighting;
use crate::datadir::DataDir;
use crate::ingest::{Defaults, Item};
use crate::store::{self, Store, Stored, ORG};
use crate::CollectorError;

/// The largest object taken, as compact JSON.
pub const MAX_OBJECT_BYTES: usize = 64 * 1024;
/// The longest string anywhere in an object.
pub const MAX_STRING_BYTES: usize = 16 * 1024;
/// The deepest nesting of arrays and objects in an object.
pub const MAX_DEPTH: usize = 32;
/// The longest STIX id: a type of at most 250 characters, `--`, a UUID.
pub const MAX_ID_BYTES: usize = 250 + 2 + 36;
/// The largest sighting `count` STIX allows.
pub const MAX_COUNT: u64 = 999_999_999;
/// The most indicators one opinion may name.
pub const MAX_OPINION_REFS: usize = 100;
/// The longest timestamp taken.
const MAX_TIMESTAMP_BYTES: usize = 40;

/// What became of one object a member posted or an upstream gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The object's `id`, as given (empty when it had none usable).
    pub id: String,
    /// The object's version (`modified`, else `created`), as given (empty when it had none
    /// usable).
    pub version: String,
    /// `None` when the object was taken (or was already there, identical); otherwise why not,
    /// naming the property at fault.
    pub error: Option<String>,
}

/// An object that was checked and can be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Its `id`.
    pub id: String,
    /// Its `type`.
    pub kind: String,
    /// Its version, as given.
    pub version: String,
    /// Its version, normalised so that versions order as text
    /// (`YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`).
    pub version_key: String,
    /// What taking it means.
    pub what: Contribution,
}

/// What a checked object contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contribution {
    /// A sighting of an indicator.
    Sighting {
        /// The STIX id of the indicator sighted.
        indicator: String,
        /// Times seen (0 for a revoked sighting: withdrawn).
        count: u64,
        /// First seen (unix seconds).
        first_seen: Option<i64>,
        /// Last seen (unix seconds).
        last_seen: Option<i64>,
    },
    /// A false-positive verdict on indicators (an opinion of disagree or strongly-disagree).
    FalsePositive {
        /// The STIX ids of the indicators.
        indicators: Vec<String>,
    },
    /// An indicator, translated: one item per branch of its pattern.
    Indicator {
        /// The items, from source `community:<name>`.
        items: Vec<Item>,
    },
    /// Stored only (`identity`, `marking-definition`).
    Kept,
}

/// Why an object is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The object's `id`, when it had a usable one.
    pub id: String,
    /// Its version, when it had a usable one.
    pub version: String,
    /// What is wrong, naming the property.
    pub reason: String,
    /// Whether it is an indicator Picket cannot match (recorded with the unsupported
    /// objects, as ingest records them).
    pub unsupported: bool,
}

/// The source contributed indicators are stored under.
pub fn source_name(community: &str) -> String {
    format!("community:{community}")
}

/// Checks one object, without the store: what [`accept`] takes, or why not. Pure.
pub fn check(object: &Value, community: &str) -> Result<Checked, Rejected> {
    check_with(object, community, &[])
}

/// [`check`], with marking-definition objects that the object's markings may name (posted
/// beside it, or earlier).
pub fn check_with(object: &Value, community: &str, markings: &[Value]) -> Result<Checked, Rejected> {
    let mut reject = Rejected {
        id: String::new(),
        version: String::new(),
        reason: String::new(),
        unsupported: false,
    };
    let fail = |r: &Rejected, reason: String| Err::<Checked, _>(Rejected { reason, ..r.clone() });
    let Some(map) = object.as_object() else {
        return fail(&reject, "not a JSON object".into());
    };
    // The id and version first, so that every later failure names them.
    let id = match map.get("id") {
        Some(Value::String(s)) if s.len() <= MAX_ID_BYTES => s.clone(),
        Some(Value::String(s)) => {
            return fail(
                &reject,
                format!("id: longer than {MAX_ID_BYTES} bytes ({})", s.len()),
            )
        }
        Some(_) => return fail(&reject, "id: not a string".into()),
        None => return fail(&reject, "no \"id\"".into()),
    };
    // Named in the outcome even when malformed, so the member can tell which object failed.
    reject.id = id.clone();
    let Some((id_type, uuid)) = id.split_once("--") else {
        return fail(&reject, format!("id: {} is not <type>--<uuid>", clip(&id)));
    };
    if !is_type(id_type) || !is_uuid(uuid) {
        return fail(&reject, format!("id: {} is not <type>--<uuid>", clip(&id)));
    }
    let (version, version_key) = {
        let (name, raw) = match (map.get("modified"), map.get("created")) {
            (Some(v), _) => ("modified", v),
            (None, Some(v)) => ("created", v),
            (None, None) => {
                return fail(
                    &reject,
                    "no \"modified\" or \"created\": an object needs a version".into(),
                )
            }
        };
        let Some(text) = raw.as_str().filter(|s| s.len() <= MAX_TIMESTAMP_BYTES) else {
            return fail(&reject, format!("{name}: not a STIX timestamp"));
        };
        reject.version = text.to_owned();
        let Some(key) = version_key(text) else {
            return fail(
                &reject,
                format!("{name}: {:?} is not a STIX timestamp", clip(text)),
            );
        };
        (text.to_owned(), key)
    };
    reject.version = version.clone();
    let kind = match map.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return fail(&reject, "type: not a string".into()),
        None => return fail(&reject, "no \"type\"".into()),
    };
    if kind != id_type {
        return fail(
            &reject,
            format!("type: {} does not match the id's type {id_type}", clip(&kind)),
        );
    }
    if let Some(v) = map.get("spec_version") {
        if v.as_str() != Some("2.1") {
            return fail(
                &reject,
                format!("spec_version: {} is not \"2.1\"", clip(&v.to_string())),
            );
        }
    }
    if let Err(why) = bounded(object) {
        return fail(&reject, why);
    }
    let what = match kind.as_str() {
        "sighting" => match sighting(map) {
            Ok(c) => c,
            Err(why) => return fail(&reject, why),
        },
        "opinion" => match opinion(map) {
            Ok(c) => c,
            Err(why) => return fail(&reject, why),
        },
        "indicator" => match indicator(object, community, markings) {
            Ok(items) => Contribution::Indicator { items },
            Err((why, unsupported)) => {
                return Err(Rejected {
                    reason: why,
                    unsupported,
                    ..reject
                })
            }
        },
        "identity" | "marking-definition" => Contribution::Kept,
        other => {
            return fail(
                &reject,
                format!("type {} is not taken by this collection", clip(other)),
            )
        }
    };
    Ok(Checked {
        id,
        kind,
        version,
        version_key,
        what,
    })
}

/// The largest document [`check_json`] reads: the TAXII server's body cap.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Checks every object of a JSON document, as [`check`] does: a TAXII envelope or bundle
/// (`{"objects": [...]}`), a list of objects, or one object. A document that is not JSON, or
/// larger than [`MAX_DOCUMENT_BYTES`], gives one rejection. Pure; the fuzz target's entry.
pub fn check_json(bytes: &[u8], community: &str) -> Vec<Result<Checked, Rejected>> {
    let refuse = |reason: String| {
        vec![Err(Rejected {
            id: String::new(),
            version: String::new(),
            reason,
            unsupported: false,
        })]
    };
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return refuse(format!("larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return refuse(format!("not JSON: {e}")),
    };
    let objects = match value {
        Value::Object(mut m) if m.get("objects").is_some_and(Value::is_array) => match m.remove("objects") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        Value::Array(a) => a,
        other => vec![other],
    };
    let markings: Vec<Value> = objects
        .iter()
        .filter(|o| o.get("type").and_then(Value::as_str) == Some("marking-definition"))
        .filter(|o| bounded(o).is_ok())
        .take(16)
        .cloned()
        .collect();
    objects
        .iter()
        .map(|o| check_with(o, community, &markings))
        .collect()
}

/// Whether `object` is within the caps: nesting, string lengths, and its size as JSON.
fn bounded(object: &Value) -> Result<(), String> {
    // The walk bounds depth and adds up an estimate first, so an oversized object is never
    // serialised whole.
    fn walk(v: &Value, depth: usize, size: &mut usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        *size = size.saturating_add(8);
        if *size > MAX_OBJECT_BYTES {
            return Err(format!("larger than {MAX_OBJECT_BYTES} bytes"));
        }
        match v {
            Value::String(s) => {
                if s.len() > MAX_STRING_BYTES {
                    return Err(format!("a string longer than {MAX_STRING_BYTES} bytes"));
                }
                *size = size.saturating_add(s.len());
            }
            Value::Array(a) => {
                for x in a {
                    walk(x, depth + 1, size)?;
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    if k.len() > MAX_STRING_BYTES {
                        return Err(format!("a property name longer than {MAX_STRING_BYTES} bytes"));
                    }
                    *size = size.saturating_add(k.len());
                    walk(x, depth + 1, size)?;
                }
            }
            _ => {}
        }
        if *size > MAX_OBJECT_BYTES {
            return Err(format!("larger than {MAX_OBJECT_BYTES} bytes"));
        }
        Ok(())
    }
    let mut size = 0;
    walk(object, 0, &mut size)?;
    if object.to_string().len() > MAX_OBJECT_BYTES {
        return Err(format!("larger than {MAX_OBJECT_BYTES} bytes"));
    }
    Ok(())
}

/// A `sighting` object's contribution.
fn sighting(map: &serde_json::Map<String, Value>) -> Result<Contribution, String> {
    let indicator = match map.get("sighting_of_ref") {
        Some(Value::String(s)) if is_indicator_id(s) => s.clone(),
        Some(Value::String(s)) => {
            return Err(format!(
                "sighting_of_ref: {} is not an indicator id (indicator--<uuid>)",
                clip(s)
            ))
        }
        Some(_) => return Err("sighting_of_ref: not a string".into()),
        None => return Err("no \"sighting_of_ref\"".into()),
    };
    let count = match map.get("count") {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(c) if c <= MAX_COUNT => c,
            _ => {
                return Err(format!(
                    "count: {} is not a whole number from 0 to {MAX_COUNT}",
                    clip(&v.to_string())
                ))
            }
        },
    };
    let time = |name: &str| -> Result<Option<i64>, String> {
        match map.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .filter(|s| s.len() <= MAX_TIMESTAMP_BYTES)
                .and_then(timestamp)
                .map(|(secs, _)| Some(secs))
                .ok_or_else(|| format!("{name}: {} is not a STIX timestamp", clip(&v.to_string()))),
        }
    };
    let first_seen = time("first_seen")?;
    let last_seen = time("last_seen")?;
    if let (Some(f), Some(l)) = (first_seen, last_seen) {
        if l < f {
            return Err("last_seen: earlier than first_seen".into());
        }
    }
    let revoked = match map.get("revoked") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("revoked: not true or false".into()),
    };
    Ok(Contribution::Sighting {
        indicator,
        count: if revoked { 0 } else { count },
        first_seen,
        last_seen,
    })
}

/// An `opinion` object's contribution: only a false-positive verdict on indicators is taken.
fn opinion(map: &serde_json::Map<String, Value>) -> Result<Contribution, String> {
    match map.get("opinion").and_then(Value::as_str) {
        Some("disagree" | "strongly-disagree") => {}
        Some(other) => {
            return Err(format!(
                "opinion: {} is not taken: an opinion is taken as a false-positive verdict (disagree or strongly-disagree) only",
                clip(other)
            ))
        }
        None => return Err("opinion: missing or not a string".into()),
    }
    let Some(refs) = map.get("object_refs").and_then(Value::as_array) else {
        return Err("object_refs: missing or not a list".into());
    };
    if refs.is_empty() || refs.len() > MAX_OPINION_REFS {
        return Err(format!("object_refs: 1 to {MAX_OPINION_REFS} indicator ids"));
    }
    let mut indicators = BTreeSet::new();
    for r in refs {
        match r.as_str() {
            Some(s) if is_indicator_id(s) => {
                indicators.insert(s.to_owned());
            }
            _ => {
                return Err(format!(
                    "object_refs: {} is not an indicator id: a false-positive verdict names indicators only",
                    clip(&r.to_string())
                ))
            }
        }
    }
    Ok(Contribution::FalsePositive {
        indicators: indicators.into_iter().collect(),
    })
}

/// An `indicator` object through the STIX reader, with `markings` beside it: its items, or
/// why not (and whether it is an unsupported pattern rather than a malformed object).
fn indicator(object: &Value, community: &str, markings: &[Value]) -> Result<Vec<Item>, (String, bool)> {
    let mut objects = vec![object.clone()];
    objects.extend(markings.iter().cloned());
    let text = json!({ "type": "bundle", "objects": objects }).to_string();
    let defaults = Defaults {
        source: source_name(community),
        // What a member did not mark is taken as the most a community carries.
        tlp: Tlp::Amber,
        confidence: 50,
        severity: Severity::Medium,
    };
    let batch = crate::stix::parse_bundle(Path::new("contribution"), &text, &defaults).map_err(|e| {
        let why = match e {
            CollectorError::Parse { problem, .. } => {
                // The position is in the bundle made here, which the member never saw.
                let p = problem
                    .rfind(" (column ")
                    .map_or(problem.as_str(), |i| &problem[..i]);
                p.to_owned()
            }
            other => other.to_string(),
        };
        (why, false)
    })?;
    if let Some(u) = batch.unsupported.first() {
        return Err((format!("not supported: {}", u.reason), true));
    }
    if batch.items.is_empty() {
        return Err(("no indicator Picket can match".into(), true));
    }
    Ok(batch.items)
}

/// The marking-definition ids `object` names that are not TLP definitions Picket knows.
fn unknown_markings(object: &Value) -> Vec<String> {
    let mut ids: Vec<String> = object
        .get("object_marking_refs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            object
                .get("granular_markings")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|g| g.get("marking_ref")),
        )
        .filter_map(Value::as_str)
        .filter(|id| id.len() <= MAX_ID_BYTES && !crate::stix::TLP_MARKINGS.iter().any(|(m, _)| m == id))
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids.dedup();
    ids.truncate(16);
    ids
}

/// Whether `s` is a STIX type name: 3 to 250 lower-case letters, digits and hyphens.
fn is_type(s: &str) -> bool {
    (3..=250).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `s` is a UUID in its text form (lower or upper case hex).
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_indicator_id(s: &str) -> bool {
    s.strip_prefix("indicator--").is_some_and(is_uuid)
}

/// The first 64 characters of `s`, for messages.
fn clip(s: &str) -> String {
    if s.chars().count() > 64 {
        format!("{}...", s.chars().take(64).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// Parses a STIX timestamp, `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (UTC, as STIX requires):
/// unix seconds and nanoseconds.
pub fn timestamp(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        b.get(from..from + len)?.iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut nanos = 0u32;
    let rest = &b[19..];
    let rest = match rest.split_first() {
        Some((b'.', frac)) => {
            let digits = frac.iter().take_while(|d| d.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            for (i, d) in frac[..digits].iter().take(9).enumerate() {
                nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
            }
            &frac[digits..]
        }
        _ => rest,
    };
    if rest != b"Z" {
        return None;
    }
    let days = picket_proto::days_from_civil(i64::from(year), month, day);
    Some((
        days * 86_400 + i64::from(hour * 3600 + minute * 60 + second),
        nanos,
    ))
}

/// A STIX timestamp normalised so that versions order as text: the date and time as given,
/// then nine digits of fraction (`2024-05-01T10:00:00.500000000Z`).
pub fn version_key(s: &str) -> Option<String> {
    let (_, nanos) = timestamp(s)?;
    Some(format!("{}.{nanos:09}Z", s.get(..19)?))
}

/// Takes `objects` from `account` (a TAXII member's name, or `upstream:<name>` for what was
/// pulled) for `community`: one [`Outcome`] per object, in order. A bad object fails alone,
/// with its reason; everything taken is written in one transaction. `Err` only when the store
/// fails (nothing of the list is then kept). `now_ms` is the time received (unix milliseconds).
pub fn accept(
    store: &mut Store,
    community: &str,
    account: &str,
    objects: &[Value],
    now_ms: i64,
) -> Result<Vec<Outcome>, CollectorError> {
    let db = store.err();
    // Marking definitions posted in the same request may give an indicator its TLP.
    let posted: BTreeMap<&str, &Value> = objects
        .iter()
        .filter(|o| o.get("type").and_then(Value::as_str) == Some("marking-definition"))
        .filter(|o| bounded(o).is_ok())
        .filter_map(|o| Some((o.get("id")?.as_str()?, o)))
        .collect();
    let tx = store.tx()?;
    let mut out = Vec::with_capacity(objects.len());
    {
        let ctx = Ctx {
            tx: &tx,
            community,
            account,
            now: now_ms.div_euclid(1000),
            now_ms,
        };
        for object in objects {
            out.push(ctx.accept_one(object, &posted).map_err(&db)?);
        }
    }
    tx.commit().map_err(&db)?;
    Ok(out)
}

/// One [`accept`] call's transaction and arguments.
struct Ctx<'a> {
    tx: &'a Transaction<'a>,
    community: &'a str,
    account: &'a str,
    now: i64,
    now_ms: i64,
}

impl Ctx<'_> {
    fn accept_one(&self, object: &Value, posted: &BTreeMap<&str, &Value>) -> rusqlite::Result<Outcome> {
        let markings = self.markings(object, posted)?;
        let checked = match check_with(object, self.community, &markings) {
            Ok(c) => c,
            Err(r) => {
                if r.unsupported {
                    self.tx.execute(
                        "INSERT INTO unsupported (org, source, object_id, reason, seen) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (org, source, object_id, reason) DO UPDATE SET seen = excluded.seen",
                        params![ORG, source_name(self.community), r.id, r.reason, self.now],
                    )?;
                }
                return Ok(Outcome {
                    id: r.id,
                    version: r.version,
                    error: Some(r.reason),
                });
            }
        };
        let outcome = |error: Option<String>| Outcome {
            id: checked.id.clone(),
            version: checked.version.clone(),
            error,
        };
        // The same id and version from this account before: identical is success, anything
        // else a conflict. Versions compare as times (`…00Z` and `…00.000Z` are one version).
        let mut earlier = self.tx.prepare_cached(
            "SELECT version, body FROM contributions
             WHERE org = ?1 AND community = ?2 AND account = ?3 AND object_id = ?4",
        )?;
        let rows = earlier.query_map(params![ORG, self.community, self.account, checked.id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (version, body) = row?;
            if version_key(&version).as_deref() == Some(checked.version_key.as_str()) {
                let same = serde_json::from_str::<Value>(&body).is_ok_and(|b| &b == object);
                return Ok(outcome(
                    (!same).then(|| "a different object under the same id and version".to_owned()),
                ));
            }
        }
        match &checked.what {
            Contribution::Sighting {
                indicator,
                count,
                first_seen,
                last_seen,
            } => self.sighting(&checked, indicator, *count, *first_seen, *last_seen)?,
            Contribution::FalsePositive { indicators } => self.false_positive(&checked, indicators)?,
            Contribution::Indicator { items } => self.indicator(items)?,
            Contribution::Kept => {}
        }
        self.tx.execute(
            "INSERT INTO contributions (org, community, account, object_id, version, type, body, added_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                ORG,
                self.community,
                self.account,
                checked.id,
                checked.version,
                checked.kind,
                object.to_string(),
                self.now_ms
            ],
        )?;
        Ok(outcome(None))
    }

    /// The marking definitions `object` names that are not known TLP ids: posted beside it,
    /// else the newest this community was given.
    fn markings(&self, object: &Value, posted: &BTreeMap<&str, &Value>) -> rusqlite::Result<Vec<Value>> {
        if object.get("type").and_then(Value::as_str) != Some("indicator") {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for id in unknown_markings(object) {
            if let Some(v) = posted.get(id.as_str()) {
                out.push((*v).clone());
                continue;
            }
            let body: Option<String> = self
                .tx
                .query_row(
                    "SELECT body FROM contributions
                     WHERE org = ?1 AND community = ?2 AND object_id = ?3 AND type = 'marking-definition'
                     ORDER BY added_ms DESC LIMIT 1",
                    params![ORG, self.community, id],
                    |r| r.get(0),
                )
                .optional()?;
            out.extend(body.and_then(|b| serde_json::from_str(&b).ok()));
        }
        Ok(out)
    }

    /// Stores a sighting unless a newer version of it is stored.
    fn sighting(
        &self,
        c: &Checked,
        indicator: &str,
        count: u64,
        first_seen: Option<i64>,
        last_seen: Option<i64>,
    ) -> rusqlite::Result<()> {
        let stored: Option<String> = self
            .tx
            .query_row(
                "SELECT modified FROM community_sightings
                 WHERE org = ?1 AND community = ?2 AND account = ?3 AND sighting_id = ?4",
                params![ORG, self.community, self.account, c.id],
                |r| r.get(0),
            )
            .optional()?;
        if stored.is_some_and(|m| m > c.version_key) {
            return Ok(());
        }
        self.tx.execute(
            "INSERT INTO community_sightings
                (org, community, account, sighting_id, indicator, count, first_seen, last_seen, modified,
                 false_positive, received)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10)
             ON CONFLICT (org, community, account, sighting_id) DO UPDATE SET
                indicator = excluded.indicator, count = excluded.count, first_seen = excluded.first_seen,
                last_seen = excluded.last_seen, modified = excluded.modified, false_positive = 0,
                received = excluded.received",
            params![
                ORG,
                self.community,
                self.account,
                c.id,
                indicator,
                count as i64,
                first_seen,
                last_seen,
                c.version_key,
                self.now
            ],
        )?;
        Ok(())
    }

    /// Stores a false-positive verdict (one row per indicator, `<opinion id>#<indicator id>`)
    /// unless a newer version of the opinion is stored.
    fn false_positive(&self, c: &Checked, indicators: &[String]) -> rusqlite::Result<()> {
        // The rows of one opinion share the prefix `<id>#`: ids hold no `#` or `$`.
        let (lo, hi) = (format!("{}#", c.id), format!("{}$", c.id));
        let newest: Option<String> = self.tx.query_row(
            "SELECT MAX(modified) FROM community_sightings
             WHERE org = ?1 AND community = ?2 AND account = ?3 AND sighting_id >= ?4 AND sighting_id < ?5",
            params![ORG, self.community, self.account, lo, hi],
            |r| r.get(0),
        )?;
        if newest.is_some_and(|m| m > c.version_key) {
            return Ok(());
        }
        self.tx.execute(
            "DELETE FROM community_sightings
             WHERE org = ?1 AND community = ?2 AND account = ?3 AND sighting_id >= ?4 AND sighting_id < ?5",
            params![ORG, self.community, self.account, lo, hi],
        )?;
        for ind in indicators {
            self.tx.execute(
                "INSERT INTO community_sightings
                    (org, community, account, sighting_id, indicator, count, first_seen, last_seen, modified,
                     false_positive, received)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, NULL, NULL, ?6, 1, ?7)",
                params![
                    ORG,
                    self.community,
                    self.account,
                    format!("{lo}{ind}"),
                    ind,
                    c.version_key,
                    self.now
                ],
            )?;
        }
        Ok(())
    }

    /// Stores a contributed indicator's items with the writer [`Store::upsert_batch`] uses
    /// ([`store::put_items`]: a newer version replaces an older, never the reverse; the source
    /// is remembered), inside this list's transaction, but only where no other source and no
    /// other account holds the id.
    fn indicator(&self, items: &[Item]) -> rusqlite::Result<()> {
        let source = source_name(self.community);
        let mut sources = self
            .tx
            .prepare_cached("SELECT source FROM indicator_sources WHERE org = ?1 AND id = ?2")?;
        for item in items {
            let id = &item.indicator.id;
            let held: Option<(Option<String>, Option<i64>)> = self
                .tx
                .query_row(
                    "SELECT created_by, modified FROM indicators WHERE org = ?1 AND id = ?2",
                    params![ORG, id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((created_by, _)) = &held {
                let others = sources
                    .query_map(params![ORG, id], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .any(|s| s != source);
                if others || created_by.as_deref() != Some(self.account) {
                    // Held from a feed or given by another account: never replaced from here.
                    return Ok(());
                }
            }
        }
        let records = items
            .iter()
            .map(|item| Record::from_indicator(&item.indicator))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let refs: Vec<(&Item, &Record)> = items.iter().zip(&records).collect();
        // The account, never the object's claimed `created_by_ref`.
        store::put_items(self.tx, &refs, &source, self.now, Some(self.account))?;
        Ok(())
    }
}

/// Who, in the communities, saw one indicator or called it a false positive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confirmations {
    /// The (community, account) pairs whose newest sightings of it count more than zero.
    pub sighted: BTreeSet<(String, String)>,
    /// The (community, account) pairs whose newest verdict calls it a false positive.
    pub disputed: BTreeSet<(String, String)>,
}

impl Confirmations {
    /// Other organisations that saw it: distinct (community, account) pairs. An account of
    /// one community and an account of another are never known to be the same organisation,
    /// so each counts.
    pub fn organisations(&self) -> usize {
        self.sighted.len()
    }

    /// The communities whose members saw it.
    pub fn communities(&self) -> BTreeSet<&str> {
        self.sighted.iter().map(|(c, _)| c.as_str()).collect()
    }

    fn merge(&mut self, other: &Confirmations) {
        self.sighted.extend(other.sighted.iter().cloned());
        self.disputed.extend(other.disputed.iter().cloned());
    }
}

impl Store {
    /// Other organisations' sightings received through `community`, by the STIX id of the
    /// indicator sighted: one [`OrgSighting`] per account (its newest count of each sighting
    /// object, summed), accounts with nothing above zero left out. Only this community's: what
    /// arrived through one community never counts towards another's k.
    pub fn inbound_sightings(
        &self,
        community: &str,
    ) -> Result<BTreeMap<String, Vec<OrgSighting>>, CollectorError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT indicator, account, SUM(count) FROM community_sightings
                 WHERE org = ?1 AND community = ?2 AND false_positive = 0
                 GROUP BY indicator, account HAVING SUM(count) > 0 ORDER BY indicator, account",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG, community], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(self.err())?;
        let mut out: BTreeMap<String, Vec<OrgSighting>> = BTreeMap::new();
        for row in rows {
            let (indicator, org, count) = row.map_err(self.err())?;
            out.entry(indicator).or_default().push(OrgSighting {
                org,
                count: u64::try_from(count).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Who saw (or disputed) each indicator, by the STIX id the sightings name, across every
    /// community.
    pub fn inbound_by_indicator(&self) -> Result<BTreeMap<String, Confirmations>, CollectorError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT indicator, community, account,
                        SUM(CASE WHEN false_positive = 0 THEN count ELSE 0 END), MAX(false_positive)
                 FROM community_sightings WHERE org = ?1 GROUP BY indicator, community, account",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(self.err())?;
        let mut out: BTreeMap<String, Confirmations> = BTreeMap::new();
        for row in rows {
            let (indicator, community, account, count, fp) = row.map_err(self.err())?;
            let c = out.entry(indicator).or_default();
            if count > 0 {
                c.sighted.insert((community.clone(), account.clone()));
            }
            if fp > 0 {
                c.disputed.insert((community, account));
            }
        }
        out.retain(|_, c| !c.sighted.is_empty() || !c.disputed.is_empty());
        Ok(out)
    }

    /// The number of distinct (community, account) pairs whose sightings name the stored
    /// indicator `id` by its STIX id (the id less a `/<n>` branch suffix). An indicator Picket
    /// minted is known to each community under a derived id: [`confirmations`] finds those too.
    pub fn inbound_organisations(&self, id: &str) -> Result<usize, CollectorError> {
        let n: i64 = self
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM (SELECT community, account FROM community_sightings
                  WHERE org = ?1 AND indicator = ?2 AND false_positive = 0
                  GROUP BY community, account HAVING SUM(count) > 0)",
                params![ORG, super::stix_id(id)],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// Who in the communities confirmed each of `stored`, by stored indicator id (indicators no
/// one else saw or disputed are left out). An indicator is matched by every STIX id a
/// community knows it by: its own (less the branch suffix), and for an indicator Picket minted,
/// the id derived for each configured community that sent anything.
pub fn confirmations(
    dir: &DataDir,
    store: &Store,
    stored: &[Stored],
) -> Result<BTreeMap<String, Confirmations>, CollectorError> {
    let inbound = store.inbound_by_indicator()?;
    let mut out = BTreeMap::new();
    if inbound.is_empty() {
        return Ok(out);
    }
    let present: BTreeSet<&str> = inbound
        .values()
        .flat_map(|c| {
            c.sighted
                .iter()
                .chain(&c.disputed)
                .map(|(community, _)| community.as_str())
        })
        .collect();
    let mut keys = Vec::new();
    for c in &dir.config().communities {
        if present.contains(c.name.as_str()) {
            let (community, key) = super::community(dir, &c.name)?;
            keys.push((community.name, key));
        }
    }
    for s in stored {
        let mut found = Confirmations::default();
        if let Some(c) = inbound.get(super::stix_id(&s.record.id)) {
            found.merge(c);
        }
        if super::is_minted(s) {
            for (name, key) in &keys {
                let id = super::policy::derived_id(key, name, "indicator", 0, &s.record.id);
                if let Some(c) = inbound.get(&id) {
                    // Only that community knows the id.
                    found
                        .sighted
                        .extend(c.sighted.iter().filter(|(n, _)| n == name).cloned());
                    found
                        .disputed
                        .extend(c.disputed.iter().filter(|(n, _)| n == name).cloned());
                }
            }
        }
        if !found.sighted.is_empty() || !found.disputed.is_empty() {
            out.insert(s.record.id.clone(), found);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IND: &str = "indicator--4b1c6a2e-7a55-4d59-9b2f-1f0a9c1e0b11";

    fn sighting(id: &str, modified: &str, count: u64) -> Value {
        json!({
            "type": "sighting", "spec_version": "2.1", "id": id,
            "created": "2024-05-01T10:00:00.000Z", "modified": modified,
            "sighting_of_ref": IND, "count": count,
        })
    }

    #[test]
    fn checks_name_the_property_at_fault() {
        let ok = sighting(
            "sighting--11111111-1111-4111-8111-111111111111",
            "2024-05-01T10:00:00Z",
            3,
        );
        assert!(check(&ok, "c").is_ok());
        let cases: Vec<(Value, &str)> = vec![
            (json!(5), "not a JSON object"),
            (json!({"type": "sighting"}), "no \"id\""),
            (json!({"id": "sighting-1", "type": "sighting"}), "id: "),
            (
                json!({"id": "sighting--11111111-1111-4111-8111-111111111111", "type": "sighting"}),
                "version",
            ),
            (
                json!({"id": "sighting--11111111-1111-4111-8111-111111111111", "type": "sighting", "modified": "yesterday"}),
                "modified: \"yesterday\" is not a STIX timestamp",
            ),
            (
                json!({"id": "sighting--11111111-1111-4111-8111-111111111111", "type": "indicator", "modified": "2024-05-01T10:00:00Z"}),
                "does not match",
            ),
            (
                json!({"id": "malware--11111111-1111-4111-8111-111111111111", "type": "malware", "modified": "2024-05-01T10:00:00Z"}),
                "type malware is not taken by this collection",
            ),
            (
                json!({"id": "sighting--11111111-1111-4111-8111-111111111111", "type": "sighting", "modified": "2024-05-01T10:00:00Z"}),
                "no \"sighting_of_ref\"",
            ),
            (
                json!({"id": "sighting--11111111-1111-4111-8111-111111111111", "type": "sighting", "modified": "2024-05-01T10:00:00Z", "sighting_of_ref": IND, "count": 1_000_000_000u64}),
                "count: ",
            ),
            (
                json!({"id": "sighting--11111111-1111-4111-8111-111111111111", "type": "sighting", "modified": "2024-05-01T10:00:00Z", "sighting_of_ref": IND, "first_seen": "2024-05-02T00:00:00Z", "last_seen": "2024-05-01T00:00:00Z"}),
                "last_seen",
            ),
            (
                json!({"id": "sighting--11111111-1111-4111-8111-111111111111", "type": "sighting", "modified": "2024-05-01T10:00:00Z", "sighting_of_ref": "malware--11111111-1111-4111-8111-111111111111"}),
                "sighting_of_ref: ",
            ),
            (
                json!({"id": "opinion--11111111-1111-4111-8111-111111111111", "type": "opinion", "modified": "2024-05-01T10:00:00Z", "opinion": "agree", "object_refs": [IND]}),
                "opinion: agree is not taken",
            ),
            (
                json!({"id": "indicator--11111111-1111-4111-8111-111111111111", "type": "indicator", "modified": "2024-05-01T10:00:00Z", "pattern": "[email-message:subject = 'x']", "pattern_type": "stix", "valid_from": "2024-05-01T10:00:00Z"}),
                "not supported",
            ),
            (
                json!({"id": "sighting--11111111-1111-4111-8111-111111111111", "type": "sighting", "modified": "2024-05-01T10:00:00Z", "sighting_of_ref": IND, "x": "a".repeat(MAX_STRING_BYTES + 1)}),
                "string longer",
            ),
        ];
        for (object, want) in cases {
            let err = check(&object, "c").unwrap_err();
            assert!(err.reason.contains(want), "{object}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn versions_order_as_times() {
        let k = |s| version_key(s).unwrap();
        assert_eq!(k("2024-05-01T10:00:00Z"), k("2024-05-01T10:00:00.000Z"));
        assert!(k("2024-05-01T10:00:00.5Z") > k("2024-05-01T10:00:00Z"));
        assert!(k("2024-05-01T10:00:01Z") > k("2024-05-01T10:00:00.999Z"));
        assert_eq!(timestamp("1970-01-01T00:01:00Z"), Some((60, 0)));
        for bad in [
            "2024-02-30T00:00:00Z",
            "2024-05-01 10:00:00Z",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00.Z",
        ] {
            assert_eq!(timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_document_is_checked_object_by_object() {
        let envelope = json!({"objects": [
            sighting("sighting--11111111-1111-4111-8111-111111111111", "2024-05-01T10:00:00Z", 3),
            {"type": "indicator", "spec_version": "2.1", "id": "indicator--a1111111-1111-4111-8111-111111111111",
             "created": "2024-05-01T10:00:00Z", "modified": "2024-05-01T10:00:00Z", "pattern_type": "stix",
             "pattern": "[ipv4-addr:value = '198.51.100.7']", "valid_from": "2024-05-01T10:00:00Z",
             "object_marking_refs": ["marking-definition--e1111111-1111-4111-8111-111111111111"]},
            {"type": "marking-definition", "spec_version": "2.1", "created": "2024-01-01T00:00:00Z",
             "id": "marking-definition--e1111111-1111-4111-8111-111111111111",
             "definition_type": "tlp", "definition": {"tlp": "red"}},
            7,
        ]});
        let out = check_json(envelope.to_string().as_bytes(), "c");
        assert_eq!(out.len(), 4);
        match &out[1] {
            Ok(Checked {
                what: Contribution::Indicator { items },
                ..
            }) => assert_eq!(
                items[0].indicator.meta.tlp,
                Tlp::Red,
                "the marking posted beside it"
            ),
            other => panic!("{other:?}"),
        }
        assert!(out[3].is_err());
        assert_eq!(check_json(b"{", "c").len(), 1);
        assert!(check_json(&vec![b' '; MAX_DOCUMENT_BYTES + 1], "c")[0].is_err());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z-]{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("sighting"),
                Just("indicator"),
                Just("opinion"),
                Just("identity"),
                Just("marking-definition"),
                Just("sighting--11111111-1111-4111-8111-111111111111"),
                Just("indicator--4b1c6a2e-7a55-4d59-9b2f-1f0a9c1e0b11"),
                Just("2024-05-01T10:00:00.000Z"),
                Just("[file:hashes.'SHA-256' = '275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f']"),
                Just("strongly-disagree"),
            ]
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(4, 48, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("type".to_owned()),
                        Just("id".to_owned()),
                        Just("modified".to_owned()),
                        Just("created".to_owned()),
                        Just("sighting_of_ref".to_owned()),
                        Just("count".to_owned()),
                        Just("pattern".to_owned()),
                        Just("opinion".to_owned()),
                        Just("object_refs".to_owned()),
                        Just("object_marking_refs".to_owned()),
                        "[a-z_]{1,8}",
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever arrives, accept() answers every object and the store never fails.
        #[test]
        fn accept_never_panics_or_errors(objects in prop::collection::vec(json_value(), 0..12)) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(&dir.path().join("p.db")).unwrap();
            let out = accept(&mut store, "isac", "member-a", &objects, 1_700_000_000_000).unwrap();
            prop_assert_eq!(out.len(), objects.len());
            // And again: the same objects are all identical now, or fail the same way.
            let again = accept(&mut store, "isac", "member-a", &objects, 1_700_000_001_000).unwrap();
            prop_assert_eq!(again.len(), objects.len());
        }
    }
}
