//! The content of an indicator set: snapshots, deltas and the records inside them.
//!
//! A snapshot is a channel, a version and a list of records sorted by id. Each record is
//! length-prefixed and tagged with its kind, so an agent skips (and counts) a kind it does not
//! know instead of rejecting the set. The encoding is canonical: records strictly ascending by
//! id, postcard's minimal varints, no trailing bytes. The decoder re-encodes and compares, so
//! two different byte strings never decode to the same snapshot, and a snapshot rebuilt from a
//! delta hashes to exactly the value the publisher signed.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::error::{check_cap, invalid, malformed, Error, Part, Result};
use crate::indicator::{Indicator, Meta, Observable};
use crate::view::SnapshotView;

const SNAPSHOT_MAGIC: [u8; 4] = *b"PKSS";
const DELTA_MAGIC: [u8; 4] = *b"PKSD";
const FORMAT: u8 = 1;

/// Longest indicator id.
pub const MAX_ID: usize = 256;

/// One indicator as stored in a set: its kind tag, its id, and the kind-specific body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record kind (see [`Observable::kind_tag`]).
    pub kind: u16,
    /// The indicator id; unique within a snapshot.
    pub id: String,
    /// The postcard-encoded metadata and observable.
    pub body: Vec<u8>,
}

impl Record {
    /// Encodes an indicator as a record, after checking its values.
    pub fn from_indicator(ind: &Indicator) -> Result<Record> {
        check_id(&ind.id)?;
        ind.observable.validate()?;
        check_source(&ind.meta)?;
        let body =
            postcard::to_allocvec(&(&ind.meta, &ind.observable)).map_err(|e| malformed(Part::Record, e))?;
        Ok(Record {
            kind: ind.observable.kind_tag(),
            id: ind.id.clone(),
            body,
        })
    }

    /// Decodes the indicator, or `None` when the kind is one this build does not know.
    pub fn indicator(&self) -> Result<Option<Indicator>> {
        decode_indicator(self.kind, &self.id, &self.body)
    }
}

/// Decodes a record's body into an indicator, or `None` for a kind this build does not know.
pub(crate) fn decode_indicator(kind: u16, id: &str, body: &[u8]) -> Result<Option<Indicator>> {
    if kind == 0 || kind > Observable::MAX_KNOWN_TAG {
        return Ok(None);
    }
    let ((meta, observable), rest): ((Meta, Observable), &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| Error::Malformed {
            what: Part::Record,
            detail: format!("{id}: {e}"),
        })?;
    if !rest.is_empty() {
        return Err(malformed(Part::Record, format!("{id}: trailing bytes")));
    }
    if observable.kind_tag() != kind {
        return Err(invalid(
            Part::Record,
            format!("{id}: tagged kind {kind} but holds a {}", observable.kind_name()),
        ));
    }
    observable.validate()?;
    check_source(&meta)?;
    Ok(Some(Indicator {
        id: id.to_owned(),
        observable,
        meta,
    }))
}

/// The source name is as long as any other text an indicator carries, at most: agents read a
/// record back in one bounded window.
fn check_source(meta: &Meta) -> Result<()> {
    if meta.source.len() > crate::indicator::MAX_TEXT {
        return Err(invalid(
            Part::Record,
            format!("a source name of {} bytes", meta.source.len()),
        ));
    }
    Ok(())
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err(invalid(
            Part::Record,
            format!("an id is 1 to {MAX_ID} bytes, got {}", id.len()),
        ));
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct RecordWire<'a> {
    kind: u16,
    #[serde(borrow)]
    id: &'a str,
    #[serde(borrow)]
    body: &'a [u8],
}

impl<'a> From<&'a Record> for RecordWire<'a> {
    fn from(r: &'a Record) -> Self {
        RecordWire {
            kind: r.kind,
            id: &r.id,
            body: &r.body,
        }
    }
}

impl From<RecordWire<'_>> for Record {
    fn from(r: RecordWire<'_>) -> Self {
        Record {
            kind: r.kind,
            id: r.id.to_owned(),
            body: r.body.to_vec(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotWire<'a> {
    magic: [u8; 4],
    format: u8,
    #[serde(borrow)]
    channel: &'a str,
    version: u64,
    #[serde(borrow)]
    records: Vec<RecordWire<'a>>,
}

/// The full content of one set version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The channel it was published on.
    pub channel: String,
    /// The set version; the manifest signs the same number.
    pub version: u64,
    /// The records, strictly ascending by id.
    pub records: Vec<Record>,
}

/// The indicators of a snapshot, with the records this build could not read counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Indicators of known kinds.
    pub indicators: Vec<Indicator>,
    /// Records of kinds this build does not know, skipped.
    pub unknown_kinds: usize,
}

impl Snapshot {
    /// A snapshot from records in any order; fails on a duplicate id.
    pub fn new(channel: &str, version: u64, mut records: Vec<Record>) -> Result<Snapshot> {
        records.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(w) = records.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(invalid(Part::Snapshot, format!("duplicate id {}", w[0].id)));
        }
        records.iter().try_for_each(|r| check_id(&r.id))?;
        Ok(Snapshot {
            channel: channel.to_owned(),
            version,
            records,
        })
    }

    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let wire = SnapshotWire {
            magic: SNAPSHOT_MAGIC,
            format: FORMAT,
            channel: &self.channel,
            version: self.version,
            records: self.records.iter().map(RecordWire::from).collect(),
        };
        // Invariant: serialising borrowed strings, bytes and integers into a Vec cannot fail.
        postcard::to_allocvec(&wire).expect("encoding a snapshot cannot fail")
    }

    /// Decodes canonical snapshot bytes, refusing anything over `cap` before decoding. The
    /// checks are [`SnapshotView::parse`]'s; this copies the records out.
    pub fn decode(bytes: &[u8], cap: usize) -> Result<Snapshot> {
        let view = SnapshotView::parse(bytes, cap)?;
        Ok(Snapshot {
            channel: view.channel().to_owned(),
            version: view.version(),
            records: view.records().map(|r| r.to_record()).collect(),
        })
    }

    /// Decodes every record of a known kind; unknown kinds are skipped and counted.
    pub fn indicators(&self) -> Result<Decoded> {
        let mut out = Decoded::default();
        for r in &self.records {
            match r.indicator()? {
                Some(ind) => out.indicators.push(ind),
                None => out.unknown_kinds += 1,
            }
        }
        Ok(out)
    }
}

fn ascending<'a>(what: Part, ids: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut prev: Option<&str> = None;
    for id in ids {
        if let Some(p) = prev {
            if p >= id {
                return Err(Error::NonCanonical {
                    what,
                    detail: format!("id {id:?} does not follow {p:?} in strictly ascending order"),
                });
            }
        }
        prev = Some(id);
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct DeltaWire<'a> {
    magic: [u8; 4],
    format: u8,
    #[serde(borrow)]
    channel: &'a str,
    base_version: u64,
    version: u64,
    #[serde(borrow)]
    remove: Vec<&'a str>,
    #[serde(borrow)]
    upsert: Vec<RecordWire<'a>>,
}

/// The change from one snapshot to a later one: ids removed, records added or replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// The channel.
    pub channel: String,
    /// The version it applies to.
    pub base_version: u64,
    /// The version it produces.
    pub version: u64,
    /// Ids to remove, strictly ascending.
    pub remove: Vec<String>,
    /// Records to add or replace, strictly ascending by id; no id is also in `remove`.
    pub upsert: Vec<Record>,
}

impl Delta {
    /// The delta that turns `old` into `new`.
    pub fn between(old: &Snapshot, new: &Snapshot) -> Delta {
        let mut remove = Vec::new();
        let mut upsert = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < old.records.len() || j < new.records.len() {
            match (old.records.get(i), new.records.get(j)) {
                (Some(a), Some(b)) => match a.id.cmp(&b.id) {
                    Ordering::Less => {
                        remove.push(a.id.clone());
                        i += 1;
                    }
                    Ordering::Greater => {
                        upsert.push(b.clone());
                        j += 1;
                    }
                    Ordering::Equal => {
                        if a != b {
                            upsert.push(b.clone());
                        }
                        i += 1;
                        j += 1;
                    }
                },
                (Some(a), None) => {
                    remove.push(a.id.clone());
                    i += 1;
                }
                (None, Some(b)) => {
                    upsert.push(b.clone());
                    j += 1;
                }
                (None, None) => break,
            }
        }
        Delta {
            channel: new.channel.clone(),
            base_version: old.version,
            version: new.version,
            remove,
            upsert,
        }
    }

    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let wire = DeltaWire {
            magic: DELTA_MAGIC,
            format: FORMAT,
            channel: &self.channel,
            base_version: self.base_version,
            version: self.version,
            remove: self.remove.iter().map(String::as_str).collect(),
            upsert: self.upsert.iter().map(RecordWire::from).collect(),
        };
        // Invariant: as for snapshots, nothing here can fail to serialise.
        postcard::to_allocvec(&wire).expect("encoding a delta cannot fail")
    }

    /// Decodes canonical delta bytes, refusing anything over `cap` before decoding.
    pub fn decode(bytes: &[u8], cap: usize) -> Result<Delta> {
        check_cap(Part::Delta, bytes.len(), cap)?;
        let (wire, rest): (DeltaWire<'_>, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| malformed(Part::Delta, e))?;
        if !rest.is_empty() {
            return Err(malformed(Part::Delta, "trailing bytes"));
        }
        if wire.magic != DELTA_MAGIC {
            return Err(malformed(Part::Delta, "not a Picket delta"));
        }
        if wire.format != FORMAT {
            return Err(Error::UnsupportedFormat {
                what: Part::Delta,
                version: wire.format,
            });
        }
        ascending(Part::Delta, wire.remove.iter().copied())?;
        ascending(Part::Delta, wire.upsert.iter().map(|r| r.id))?;
        // The same id rule as a snapshot's: otherwise a delta could rebuild a snapshot that the
        // full path refuses, and an agent would install state it cannot load back.
        wire.remove.iter().try_for_each(|id| check_id(id))?;
        wire.upsert.iter().try_for_each(|r| check_id(r.id))?;
        let delta = Delta {
            channel: wire.channel.to_owned(),
            base_version: wire.base_version,
            version: wire.version,
            remove: wire.remove.into_iter().map(str::to_owned).collect(),
            upsert: wire.upsert.into_iter().map(Record::from).collect(),
        };
        if delta.encode() != bytes {
            return Err(Error::NonCanonical {
                what: Part::Delta,
                detail: "re-encoding gives other bytes".into(),
            });
        }
        Ok(delta)
    }

    /// Applies the delta to `base`, which must be the snapshot it was made from.
    ///
    /// A removal of an id `base` does not hold, or an id both removed and upserted, means the
    /// delta was not made from this base; the caller also checks the result's hash.
    pub fn apply(&self, base: &Snapshot) -> Result<Snapshot> {
        if self.channel != base.channel {
            return Err(Error::ChannelMismatch {
                what: Part::Delta,
                expected: base.channel.clone(),
                found: self.channel.clone(),
            });
        }
        if self.base_version != base.version {
            return Err(Error::VersionMismatch {
                what: Part::Delta,
                expected: base.version,
                found: self.base_version,
            });
        }
        let mut out = Vec::with_capacity(base.records.len() + self.upsert.len());
        let mut rm = self.remove.iter().peekable();
        let mut up = self.upsert.iter().peekable();
        for rec in &base.records {
            while let Some(u) = up.next_if(|u| u.id < rec.id) {
                out.push(u.clone());
            }
            if let Some(r) = rm.peek() {
                match r.as_str().cmp(rec.id.as_str()) {
                    Ordering::Less => {
                        return Err(invalid(
                            Part::Delta,
                            format!("removes {r}, which the base does not hold"),
                        ))
                    }
                    Ordering::Equal => {
                        rm.next();
                        if up.peek().is_some_and(|u| u.id == rec.id) {
                            return Err(invalid(
                                Part::Delta,
                                format!("{} is both removed and upserted", rec.id),
                            ));
                        }
                        continue;
                    }
                    Ordering::Greater => {}
                }
            }
            match up.next_if(|u| u.id == rec.id) {
                Some(u) => out.push(u.clone()),
                None => out.push(rec.clone()),
            }
        }
        if let Some(r) = rm.next() {
            return Err(invalid(
                Part::Delta,
                format!("removes {r}, which the base does not hold"),
            ));
        }
        out.extend(up.cloned());
        Ok(Snapshot {
            channel: self.channel.clone(),
            version: self.version,
            records: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::{Hash, HashKind, Severity, Tlp};

    fn ind(id: &str, byte: u8) -> Indicator {
        Indicator {
            id: id.into(),
            observable: Observable::FileHash {
                hash: Hash {
                    kind: HashKind::Sha256,
                    value: vec![byte; 32],
                },
                size: Some(68),
            },
            meta: Meta {
                confidence: 80,
                severity: Severity::High,
                tlp: Tlp::Green,
                valid_until: None,
                source: "test".into(),
            },
        }
    }

    fn snap(version: u64, items: &[(&str, u8)]) -> Snapshot {
        let recs = items
            .iter()
            .map(|(id, b)| Record::from_indicator(&ind(id, *b)).unwrap())
            .collect();
        Snapshot::new("default", version, recs).unwrap()
    }

    /// Pins the snapshot encoding: fails when the wire format changes by accident.
    #[test]
    fn golden_bytes() {
        let s = snap(3, &[("a", 1)]);
        let expected = concat!(
            "504b5353",
            "01", // magic "PKSS", format
            "07",
            "64656661756c74", // channel "default"
            "03",             // version
            "01",             // one record
            "01",
            "01",
            "61", // kind 1, id "a"
            "2e", // body length 46
            "50",
            "03",
            "01",
            "00",
            "04",
            "74657374", // meta: 80, High, Green, no expiry, "test"
            "00",
            "02",
            "20",
            "0101010101010101010101010101010101010101010101010101010101010101", // FileHash sha256
            "01",
            "44", // size Some(68)
        );
        assert_eq!(hex::encode(s.encode()), expected);
        assert_eq!(Snapshot::decode(&s.encode(), 1 << 20).unwrap(), s);
    }

    #[test]
    fn unknown_kinds_are_skipped_and_counted() {
        let mut s = snap(1, &[("a", 1), ("c", 2)]);
        s.records.insert(
            1,
            Record {
                kind: 999,
                id: "b".into(),
                body: vec![1, 2, 3],
            },
        );
        let back = Snapshot::decode(&s.encode(), 1 << 20).unwrap();
        let d = back.indicators().unwrap();
        assert_eq!(d.indicators.len(), 2);
        assert_eq!(d.unknown_kinds, 1);
    }

    #[test]
    fn out_of_order_and_duplicate_ids_are_not_canonical() {
        let mut s = snap(1, &[("a", 1), ("b", 2)]);
        s.records.swap(0, 1);
        assert!(matches!(
            Snapshot::decode(&s.encode(), 1 << 20),
            Err(Error::NonCanonical { .. })
        ));
        let mut s = snap(1, &[("a", 1)]);
        s.records.push(s.records[0].clone());
        assert!(matches!(
            Snapshot::decode(&s.encode(), 1 << 20),
            Err(Error::NonCanonical { .. })
        ));
    }

    #[test]
    fn overlong_varint_is_not_canonical() {
        let s = snap(3, &[("a", 1)]);
        let mut bytes = s.encode();
        // The version byte 0x03 follows magic, format and the 8-byte channel; write it as the
        // two-byte varint 0x83 0x00.
        let pos = 4 + 1 + 8;
        assert_eq!(bytes[pos], 3);
        bytes.splice(pos..=pos, [0x83, 0x00]);
        assert!(Snapshot::decode(&bytes, 1 << 20).is_err());
    }

    #[test]
    fn delta_round_trip() {
        let a = snap(1, &[("a", 1), ("b", 2), ("c", 3)]);
        let b = snap(2, &[("b", 9), ("c", 3), ("d", 4)]);
        let d = Delta::between(&a, &b);
        assert_eq!(d.remove, vec!["a".to_string()]);
        assert_eq!(d.upsert.len(), 2);
        let d = Delta::decode(&d.encode(), 1 << 20).unwrap();
        assert_eq!(d.apply(&a).unwrap(), b);
    }

    #[test]
    fn delta_on_the_wrong_base_is_refused() {
        let a = snap(1, &[("a", 1)]);
        let b = snap(2, &[("b", 1)]);
        let d = Delta::between(&a, &b);
        let other = snap(1, &[("z", 1)]);
        assert!(d.apply(&other).is_err());
        let older = snap(0, &[("a", 1)]);
        assert!(matches!(d.apply(&older), Err(Error::VersionMismatch { .. })));
    }
}
