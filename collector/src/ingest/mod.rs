//! Ingest: outside data in, normalised indicators out.
//!
//! Every parser here is pure (text in, indicators or an error out) and all-or-nothing per file:
//! a file with one bad line yields an error naming the file and the line, and nothing from it
//! is stored. The shell in `main` reads the file (with a size cap) and stores the result in one
//! transaction.

mod list;

use std::path::Path;

use picket_proto::{Indicator, Meta, Observable, Severity, Tlp};
use sha1::{Digest, Sha1};

use crate::CollectorError;

pub use list::parse_list;

/// Largest file `ingest` reads.
pub const MAX_INGEST_FILE: u64 = 256 << 20;

/// Defaults for the metadata a source does not give.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The source name recorded with each indicator.
    pub source: String,
    /// TLP.
    pub tlp: Tlp,
    /// Confidence, 0 to 100.
    pub confidence: u8,
    /// Severity.
    pub severity: Severity,
}

impl Defaults {
    fn meta(&self) -> Meta {
        Meta {
            confidence: self.confidence,
            severity: self.severity,
            tlp: self.tlp,
            valid_until: None,
            source: self.source.clone(),
        }
    }
}

/// Parses one file's text, choosing the parser by content.
pub fn parse_file(path: &Path, text: &str, defaults: &Defaults) -> Result<Vec<Indicator>, CollectorError> {
    let first = text.trim_start().chars().next();
    if matches!(first, Some('{') | Some('[')) {
        return Err(CollectorError::Parse {
            path: path.to_owned(),
            line: 1,
            problem:
                "this looks like JSON (a STIX bundle or MISP event); this version ingests plain lists only"
                    .into(),
        });
    }
    parse_list(path, text, defaults)
}

/// The stable id Picket gives an indicator that arrives without one: a name-based UUID (version
/// 5) over the observable's kind and canonical value, so the same value from any list is one
/// indicator.
pub fn derived_id(observable: &Observable) -> String {
    const NAMESPACE: [u8; 16] = [
        0x6f, 0x1c, 0x3a, 0x52, 0x8e, 0x4d, 0x4b, 0x0a, 0x9c, 0x51, 0x2b, 0x7e, 0x03, 0xd4, 0x61, 0x9f,
    ];
    let mut h = Sha1::new();
    h.update(NAMESPACE);
    h.update(canonical_value(observable).as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "indicator--{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The canonical text of an observable: kind, then normalised value.
pub fn canonical_value(observable: &Observable) -> String {
    match observable {
        Observable::FileHash { hash, size } => match size {
            Some(s) => format!("file-hash:{}:{}:{s}", hash.kind.name(), hash.hex()),
            None => format!("file-hash:{}:{}", hash.kind.name(), hash.hex()),
        },
        Observable::RemoteAddr(net) => format!("remote-addr:{net}"),
        other => format!("{}:{other:?}", other.kind_name()),
    }
}

fn indicator(observable: Observable, defaults: &Defaults) -> Indicator {
    Indicator {
        id: derived_id(&observable),
        observable,
        meta: defaults.meta(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::Hash;

    #[test]
    fn derived_ids_are_stable_uuid5() {
        let o = Observable::FileHash {
            hash: Hash::from_hex("44d88612fea8a8f36de82e1278abb02f").unwrap(),
            size: None,
        };
        let id = derived_id(&o);
        assert_eq!(id, derived_id(&o));
        assert_eq!(id.len(), "indicator--".len() + 36);
        assert_eq!(&id[11 + 14..11 + 15], "5", "{id}");
    }
}
