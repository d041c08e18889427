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
            },
        };
        // Invariant: only byte slices and integers, which always serialise.
        postcard::to_allocvec(&wire).expect("encoding a set file cannot fail")
    }

    /// Decodes the framing, checking the whole size and each part's size against `limits`.
    pub fn decode(bytes: &'a [u8], limits: &Limits) -> Result<SetFile<'a>> {
        check_cap(Part::SetFile, bytes.len(), limits.max_set_file())?;
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
