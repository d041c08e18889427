//! A borrowed, allocation-free view of snapshot bytes, for agents holding large sets.
//!
//! [`SnapshotView::parse`] checks everything [`Snapshot::decode`](crate::Snapshot::decode)
//! checks (magic, format, minimal varints, UTF-8 ids, ids strictly ascending, no trailing bytes)
//! in one pass without copying a record. A record is then addressed by its byte offset, which
//! is what the agent's matcher keeps instead of the record: a million indicators cost their
//! digests and four bytes each, not their ids and metadata.

use std::cmp::Ordering;

use crate::error::{check_cap, invalid, malformed, Error, Part, Result};
use crate::set::{Delta, Record, MAX_ID};

const SNAPSHOT_MAGIC: &[u8; 4] = b"PKSS";
const FORMAT: u8 = 1;

/// One record inside snapshot bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's byte offset within the snapshot bytes.
    pub offset: u32,
    /// The record kind.
    pub kind: u16,
    /// The indicator id.
    pub id: &'a str,
    /// The record body.
    pub body: &'a [u8],
}

impl RecordRef<'_> {
    /// Decodes the indicator, or `None` when the kind is one this build does not know.
    pub fn indicator(&self) -> Result<Option<crate::Indicator>> {
        crate::set::decode_indicator(self.kind, self.id, self.body)
    }

    /// An owned copy.
    pub fn to_record(&self) -> Record {
        Record {
            kind: self.kind,
            id: self.id.to_owned(),
            body: self.body.to_vec(),
        }
    }
}

/// Parsed header of canonical snapshot bytes; the records stay in the bytes.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotView<'a> {
    bytes: &'a [u8],
    channel: &'a str,
    version: u64,
    count: usize,
    records_at: usize,
}

/// What [`SnapshotView::parse`] learnt, kept beside the bytes so a view can be rebuilt without
/// walking the records again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViewHeader {
    channel_at: usize,
    channel_len: usize,
    version: u64,
    count: usize,
    records_at: usize,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> Error {
        malformed(Part::Snapshot, format!("{what} at byte {}", self.pos))
    }

    /// A LEB128 varint of at most `max_bytes`, rejecting non-minimal encodings.
    fn varint(&mut self, max_bytes: usize) -> Result<u64> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| self.err("truncated varint"))?;
            self.pos += 1;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            value |= part << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(Error::NonCanonical {
                        what: Part::Snapshot,
                        detail: format!("overlong varint ending at byte {}", self.pos),
                    });
                }
                return Ok(value);
            }
        }
        Err(self.err("varint too long"))
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8]> {
        let len = usize::try_from(len).map_err(|_| self.err("length too large"))?;
        let end = self
            .pos
            .checked_add(len)
            .ok_or_else(|| self.err("length too large"))?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| self.err("truncated"))?;
        self.pos = end;
        Ok(out)
    }

    fn str(&mut self) -> Result<&'a str> {
        let len = self.varint(10)?;
        let b = self.take(len)?;
        std::str::from_utf8(b).map_err(|_| self.err("invalid UTF-8"))
    }

    /// Steps over a record of bytes `parse` already checked, returning its id's bytes.
    fn skip_record(&mut self) -> Result<&'a [u8]> {
        self.varint(3)?;
        let len = self.varint(10)?;
        let id = self.take(len)?;
        let len = self.varint(10)?;
        self.take(len)?;
        Ok(id)
    }

    fn record(&mut self) -> Result<RecordRef<'a>> {
        let offset = u32::try_from(self.pos).map_err(|_| self.err("snapshot larger than 4 GiB"))?;
        let kind = self.varint(3)?;
        let kind = u16::try_from(kind).map_err(|_| self.err("record kind above 65535"))?;
        let id = self.str()?;
        if id.is_empty() || id.len() > MAX_ID {
            return Err(invalid(
                Part::Record,
                format!("an id is 1 to {MAX_ID} bytes, got {}", id.len()),
            ));
        }
        let len = self.varint(10)?;
        let body = self.take(len)?;
        Ok(RecordRef {
            offset,
            kind,
            id,
            body,
        })
    }
}

impl<'a> SnapshotView<'a> {
    /// Checks canonical snapshot bytes in one pass, refusing anything over `cap` first.
    pub fn parse(bytes: &'a [u8], cap: usize) -> Result<SnapshotView<'a>> {
        check_cap(Part::Snapshot, bytes.len(), cap)?;
        let mut r = Reader { bytes, pos: 0 };
        if r.take(4)? != SNAPSHOT_MAGIC {
            return Err(malformed(Part::Snapshot, "not a Picket snapshot"));
        }
        let format = r.take(1)?[0];
        if format != FORMAT {
            return Err(Error::UnsupportedFormat {
                what: Part::Snapshot,
                version: format,
            });
        }
        let channel = r.str()?;
        let version = r.varint(10)?;
        let count = r.varint(10)?;
        // Each record takes at least four bytes, so a count beyond that is a lie; refuse it
        // before iterating.
        if count > (bytes.len() / 4) as u64 {
            return Err(r.err("record count larger than the bytes can hold"));
        }
        let records_at = r.pos;
        let mut prev: Option<&str> = None;
        for _ in 0..count {
            let rec = r.record()?;
            if let Some(p) = prev {
                if p >= rec.id {
                    return Err(Error::NonCanonical {
                        what: Part::Snapshot,
                        detail: format!(
                            "id {:?} does not follow {p:?} in strictly ascending order",
                            rec.id
                        ),
                    });
                }
            }
            prev = Some(rec.id);
        }
        if r.pos != bytes.len() {
            return Err(malformed(Part::Snapshot, "trailing bytes"));
        }
        Ok(SnapshotView {
            bytes,
            channel,
            version,
            count: count as usize,
            records_at,
        })
    }

    pub(crate) fn header(&self) -> ViewHeader {
        let channel_at = self.channel.as_ptr() as usize - self.bytes.as_ptr() as usize;
        ViewHeader {
            channel_at,
            channel_len: self.channel.len(),
            version: self.version,
            count: self.count,
            records_at: self.records_at,
        }
    }

    /// Rebuilds the view of bytes that `parse` accepted with this header.
    pub(crate) fn from_header(bytes: &'a [u8], h: ViewHeader) -> SnapshotView<'a> {
        // Invariant: `h` came from `parse` over these very bytes, which checked the channel's
        // UTF-8; the slice and the conversion cannot fail.
        let channel = std::str::from_utf8(&bytes[h.channel_at..h.channel_at + h.channel_len])
            .expect("checked by parse");
        SnapshotView {
            bytes,
            channel,
            version: h.version,
            count: h.count,
            records_at: h.records_at,
        }
    }

    /// An owned copy of the snapshot.
    pub fn to_snapshot(&self) -> crate::Snapshot {
        crate::Snapshot {
            channel: self.channel.to_owned(),
            version: self.version,
            records: self.records().map(|r| r.to_record()).collect(),
        }
    }

    /// Decodes every record of a known kind; unknown kinds are skipped and counted.
    pub fn indicators(&self) -> Result<crate::Decoded> {
        let mut out = crate::Decoded::default();
        for r in self.records() {
            match r.indicator()? {
                Some(ind) => out.indicators.push(ind),
                None => out.unknown_kinds += 1,
            }
        }
        Ok(out)
    }

    /// The channel.
    pub fn channel(&self) -> &'a str {
        self.channel
    }

    /// The set version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The records in order.
    pub fn records(&self) -> impl Iterator<Item = RecordRef<'a>> + 'a {
        let mut r = Reader {
            bytes: self.bytes,
            pos: self.records_at,
        };
        // Invariant: `parse` already walked every record, so reading them again cannot fail.
        (0..self.count).map(move |_| r.record().expect("records were checked by parse"))
    }

    /// The record at `offset`, as [`RecordRef::offset`] gave it.
    pub fn record_at(&self, offset: u32) -> Result<RecordRef<'a>> {
        let pos = offset as usize;
        if pos < self.records_at || pos >= self.bytes.len() {
            return Err(invalid(Part::Snapshot, format!("no record at offset {offset}")));
        }
        Reader {
            bytes: self.bytes,
            pos,
        }
        .record()
    }
}

/// Reads the one record that starts at the beginning of `bytes` (a window read from a stored
/// snapshot at a record's offset); `offset` is recorded in the result. Checks the id rules;
/// the bytes after the record are ignored.
pub fn parse_record(bytes: &[u8], offset: u32) -> Result<RecordRef<'_>> {
    let mut r = Reader { bytes, pos: 0 };
    let rec = r.record()?;
    Ok(RecordRef { offset, ..rec })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_record(out: &mut Vec<u8>, kind: u16, id: &str, body: &[u8]) {
    put_varint(out, u64::from(kind));
    put_varint(out, id.len() as u64);
    out.extend_from_slice(id.as_bytes());
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

impl Delta {
    /// Applies the delta to snapshot bytes and returns the new snapshot's canonical bytes,
    /// without materialising either snapshot.
    pub fn apply_to_bytes(&self, base: &SnapshotView<'_>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.apply_into(base, &mut out)?;
        Ok(out)
    }

    /// Like [`Delta::apply_to_bytes`], writing into `out` (cleared first), so a caller can reuse
    /// one buffer across updates: on a large set, faulting in fresh memory costs more than the
    /// merge itself.
    ///
    /// One pass over the base: unchanged records are copied as whole runs of bytes and only the
    /// records at a change are looked at. The header's record count is known only at the end,
    /// so the records are written after a gap as large as any header, which is then closed.
    pub fn apply_into(&self, base: &SnapshotView<'_>, out: &mut Vec<u8>) -> Result<()> {
        if self.channel != base.channel {
            return Err(Error::ChannelMismatch {
                what: Part::Delta,
                expected: base.channel.to_owned(),
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
        let gap = 4 + 1 + 10 + self.channel.len() + 10 + 10;
        out.clear();
        out.reserve(gap + base.bytes.len() - base.records_at + self.upsert.len() * 128);
        out.resize(gap, 0);
        let mut count: u64 = 0;
        let mut rm = self.remove.iter().peekable();
        let mut up = self.upsert.iter().peekable();
        let mut reader = Reader {
            bytes: base.bytes,
            pos: base.records_at,
        };
        let mut run_start = reader.pos;
        let mut run_len: u64 = 0;
        for _ in 0..base.count {
            let start = reader.pos;
            // The base passed `parse`: its ids are valid UTF-8 and compare as bytes.
            let id = reader.skip_record()?;
            let touched = up.peek().is_some_and(|u| u.id.as_bytes() <= id)
                || rm.peek().is_some_and(|r| r.as_bytes() <= id);
            if !touched {
                run_len += 1;
                continue;
            }
            out.extend_from_slice(&base.bytes[run_start..start]);
            count += run_len;
            run_len = 0;
            run_start = reader.pos;
            while let Some(u) = up.next_if(|u| u.id.as_bytes() < id) {
                put_record(out, u.kind, &u.id, &u.body);
                count += 1;
            }
            if let Some(r) = rm.peek() {
                match r.as_bytes().cmp(id) {
                    Ordering::Less => {
                        return Err(invalid(
                            Part::Delta,
                            format!("removes {r}, which the base does not hold"),
                        ))
                    }
                    Ordering::Equal => {
                        if up.peek().is_some_and(|u| u.id.as_bytes() == id) {
                            return Err(invalid(Part::Delta, format!("{r} is both removed and upserted")));
                        }
                        rm.next();
                        continue;
                    }
                    Ordering::Greater => {}
                }
            }
            match up.next_if(|u| u.id.as_bytes() == id) {
                Some(u) => put_record(out, u.kind, &u.id, &u.body),
                None => out.extend_from_slice(&base.bytes[start..reader.pos]),
            }
            count += 1;
        }
        out.extend_from_slice(&base.bytes[run_start..reader.pos]);
        count += run_len;
        if let Some(r) = rm.next() {
            return Err(invalid(
                Part::Delta,
                format!("removes {r}, which the base does not hold"),
            ));
        }
        for u in up {
            put_record(out, u.kind, &u.id, &u.body);
            count += 1;
        }
        let mut header = Vec::with_capacity(gap);
        header.extend_from_slice(SNAPSHOT_MAGIC);
        header.push(FORMAT);
        put_varint(&mut header, self.channel.len() as u64);
        header.extend_from_slice(self.channel.as_bytes());
        put_varint(&mut header, self.version);
        put_varint(&mut header, count);
        let skip = gap - header.len();
        out[skip..gap].copy_from_slice(&header);
        out.drain(..skip);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::set::Snapshot;

    fn rec(id: &str, b: u8) -> Record {
        Record {
            kind: 1,
            id: id.into(),
            body: vec![b; 3],
        }
    }

    #[test]
    fn view_agrees_with_owned_decode() {
        let s = Snapshot::new("c", 7, vec![rec("b", 2), rec("a", 1), rec("c", 3)]).unwrap();
        let bytes = s.encode();
        let v = SnapshotView::parse(&bytes, 1 << 20).unwrap();
        assert_eq!((v.channel(), v.version(), v.len()), ("c", 7, 3));
        let got: Vec<Record> = v.records().map(|r| r.to_record()).collect();
        assert_eq!(got, s.records);
        for r in v.records() {
            assert_eq!(v.record_at(r.offset).unwrap(), r);
        }
    }

    #[test]
    fn apply_to_bytes_matches_owned_apply() {
        let a = Snapshot::new("c", 1, vec![rec("a", 1), rec("b", 2), rec("d", 4)]).unwrap();
        let b = Snapshot::new("c", 2, vec![rec("b", 9), rec("c", 3), rec("d", 4), rec("e", 5)]).unwrap();
        let d = Delta::between(&a, &b);
        let base = a.encode();
        let view = SnapshotView::parse(&base, 1 << 20).unwrap();
        assert_eq!(d.apply_to_bytes(&view).unwrap(), b.encode());
    }

    #[test]
    fn overlong_varint_and_lying_count_are_refused() {
        let s = Snapshot::new("c", 3, vec![rec("a", 1)]).unwrap();
        let mut bytes = s.encode();
        let pos = 4 + 1 + 2;
        assert_eq!(bytes[pos], 3);
        bytes.splice(pos..=pos, [0x83, 0x00]);
        assert!(matches!(
            SnapshotView::parse(&bytes, 1 << 20),
            Err(Error::NonCanonical { .. })
        ));
        let mut bytes = s.encode();
        bytes[pos + 1] = 0x7f;
        assert!(SnapshotView::parse(&bytes, 1 << 20).is_err());
    }
}
