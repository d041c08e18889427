//! The exported set file: everything an offline agent needs to verify one set version.
//!
//! It carries the root chain (each root tagged with its claimed version, so an agent can skip
//! what it already holds without decoding), the timestamp and manifest envelopes, and either the
//! full snapshot or a delta. The file itself is not signed: every part inside it is, and an
//! agent checks each part's size against its cap before it decodes anything.

use serde::{Deserialize, Serialize};

use crate::error::{check_cap, malformed, Error, Part, Result};
use crate::Limits;

const MAGIC: [u8; 4] = *b"PKSF";
const FORMAT: u8 = 1;

/// The set content a file carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content<'a> {
    /// The full snapshot bytes.
    Full(&'a [u8]),
    /// Delta bytes, to apply to the installed snapshot.
    Delta(&'a [u8]),
    /// No content: a freshness-only file for the set version already installed (a new
    /// timestamp over the same manifest). Verification refuses it for any other version.
    Installed,
}

/// A decoded set file; every field borrows the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetFile<'a> {
    /// The channel the set is for: an unsigned claim that chooses which keys verify it.
    pub channel: &'a str,
    /// Root envelopes with their claimed versions, strictly ascending.
    pub roots: Vec<(u64, &'a [u8])>,
    /// The timestamp envelope.
    pub timestamp: &'a [u8],
    /// The manifest envelope.
    pub manifest: &'a [u8],
    /// The content.
    pub content: Content<'a>,
}

#[derive(Serialize, Deserialize)]
enum ContentWire<'a> {
    Full(#[serde(borrow)] &'a [u8]),
    Delta(#[serde(borrow)] &'a [u8]),
    Installed,
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    magic: [u8; 4],
    format: u8,
    #[serde(borrow)]
    channel: &'a str,
    #[serde(borrow)]
    roots: Vec<(u64, &'a [u8])>,
    #[serde(borrow)]
    timestamp: &'a [u8],
    #[serde(borrow)]
    manifest: &'a [u8],
    #[serde(borrow)]
    content: ContentWire<'a>,
}

/// The longest channel name (as `Root::validate` allows).
const MAX_CHANNEL: u64 = 64;

/// Reads a LEB128 varint at `*pos`, or `None` if the bytes end or it runs past 10 bytes.
fn varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f).checked_shl(7 * i)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Checks the channel length and the root count in the header before postcard decodes them:
/// serde grows a vector by its elements whatever the cap on its first allocation, and a root
/// entry takes two bytes on the wire but far more in memory.
fn precheck(bytes: &[u8], limits: &Limits) -> Result<()> {
    let mut pos = 5; // magic and format: checked by the full decode
    let truncated = || malformed(Part::SetFile, "truncated header");
    let channel = varint(bytes, &mut pos).ok_or_else(truncated)?;
    if channel > MAX_CHANNEL {
        return Err(Error::TooLarge {
            what: Part::SetFile,
            len: channel,
            cap: MAX_CHANNEL,
        });
    }
    pos = pos.saturating_add(channel as usize);
    let roots = varint(bytes, &mut pos).ok_or_else(truncated)?;
    if roots > limits.max_roots as u64 {
        return Err(Error::TooLarge {
            what: Part::Root,
            len: roots,
            cap: limits.max_roots as u64,
        });
    }
    Ok(())
}

impl<'a> SetFile<'a> {
    /// Encodes the file.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            magic: MAGIC,
            format: FORMAT,
            channel: self.channel,
            roots: self.roots.clone(),
            timestamp: self.timestamp,
            manifest: self.manifest,
            content: match self.content {
                Content::Full(b) => ContentWire::Full(b),
                Content::Delta(b) => ContentWire::Delta(b),
                Content::Installed => ContentWire::Installed,
            },
        };
        // Invariant: only byte slices and integers, which always serialise.
        postcard::to_allocvec(&wire).expect("encoding a set file cannot fail")
    }

    /// Decodes the framing, checking the whole size and each part's size against `limits`.
    /// The channel's length and the number of roots are read and checked before anything is
    /// decoded, so a small file cannot claim millions of entries.
    pub fn decode(bytes: &'a [u8], limits: &Limits) -> Result<SetFile<'a>> {
        check_cap(Part::SetFile, bytes.len(), limits.max_set_file())?;
        precheck(bytes, limits)?;
        let (wire, rest): (Wire<'a>, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| malformed(Part::SetFile, e))?;
        if !rest.is_empty() {
            return Err(malformed(Part::SetFile, "trailing bytes"));
        }
        if wire.magic != MAGIC {
            return Err(malformed(Part::SetFile, "not a Picket set file"));
        }
        if wire.format != FORMAT {
            return Err(Error::UnsupportedFormat {
                what: Part::SetFile,
                version: wire.format,
            });
        }
        if wire.roots.len() > limits.max_roots {
            return Err(Error::TooLarge {
                what: Part::Root,
                len: wire.roots.len() as u64,
                cap: limits.max_roots as u64,
            });
        }
        if wire.roots.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(Error::NonCanonical {
                what: Part::SetFile,
                detail: "root versions are not strictly ascending".into(),
            });
        }
        let content = match wire.content {
            ContentWire::Full(b) => {
                check_cap(Part::Snapshot, b.len(), limits.max_snapshot)?;
                Content::Full(b)
            }
            ContentWire::Delta(b) => {
                check_cap(Part::Delta, b.len(), limits.max_delta)?;
                Content::Delta(b)
            }
            ContentWire::Installed => Content::Installed,
        };
        Ok(SetFile {
            channel: wire.channel,
            roots: wire.roots,
            timestamp: wire.timestamp,
            manifest: wire.manifest,
            content,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a file of a few bytes claiming a huge number of roots was decoded element by
    /// element before the count was checked, allocating gigabytes.
    #[test]
    fn a_huge_root_count_is_refused_before_decoding() {
        let mut bytes = b"PKSF\x01".to_vec();
        bytes.push(1);
        bytes.push(b'c');
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f]); // 268 million roots
        bytes.extend(std::iter::repeat_n(0u8, 64));
        let err = SetFile::decode(&bytes, &Limits::default()).unwrap_err();
        assert!(matches!(err, Error::TooLarge { what: Part::Root, .. }), "{err:?}");
    }

    #[test]
    fn a_long_channel_claim_is_refused() {
        let file = SetFile {
            channel: &"x".repeat(65),
            roots: Vec::new(),
            timestamp: b"",
            manifest: b"",
            content: Content::Full(b""),
        };
        let err = SetFile::decode(&file.encode(), &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    what: Part::SetFile,
                    len: 65,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
