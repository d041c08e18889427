//! Ingest: outside data in, normalised indicators out.
//!
//! Every parser here is pure (text in, indicators or an error out) and all-or-nothing per file:
//! a file with one bad line yields an error naming the file and the line, and nothing from it
//! is stored. The shell in `main` reads the file (with a size cap) and stores the result in one
//! transaction.

mod csv;
mod list;
mod misp;

use std::path::Path;

use picket_proto::{Indicator, Meta, Observable, Severity, Tlp};
use sha1::{Digest, Sha1};

use crate::CollectorError;

pub use csv::{parse_csv, CsvColumn, CsvOptions};
pub use list::{detect, parse_list};
pub use misp::{looks_like_misp, parse_event, parse_feed_dir, parse_manifest};

/// Largest file `ingest` reads.
pub const MAX_INGEST_FILE: u64 = 1 << 30;

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

/// One indicator as a source gave it: the indicator for the set, and what the store needs to
/// merge it with what it already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The indicator. Its id is the source's stable id (a STIX id; for a STIX pattern with
    /// `OR`, the branches are `<stix id>/<n>`, n from 0), or one derived from the value.
    pub indicator: Indicator,
    /// When the source last modified it (unix seconds): a newer version replaces an older one,
    /// an older one never replaces a newer.
    pub modified: Option<i64>,
    /// When it becomes valid (unix seconds), if the source says.
    pub valid_from: Option<i64>,
    /// Whether the source revoked it: a revoked indicator leaves the next set.
    pub revoked: bool,
    /// Who made it (a STIX identity id, a MISP organisation), if the source says.
    pub created_by: Option<String>,
    /// MISP's sharing level, if the source is MISP: 0 this organisation only, 1 this community,
    /// 2 connected communities, 3 all communities, 4 a sharing group. "Inherit" (5) is resolved
    /// to the event's level before it gets here. Kept so that sharing can honour it.
    pub distribution: Option<u8>,
}

impl Item {
    /// An item with no source metadata beyond the indicator's own. Parsers that know more set
    /// the fields they know on top: `Item { revoked: true, ..Item::new(indicator) }`.
    pub fn new(indicator: Indicator) -> Item {
        Item {
            indicator,
            modified: None,
            valid_from: None,
            revoked: false,
            created_by: None,
            distribution: None,
        }
    }
}

/// Something a source held that Picket did not turn into an indicator, and why. Never dropped
/// silently: counted per reason in the ingest summary and listed by `indicators unsupported`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The object's id, or `line N` for line-based sources.
    pub id: String,
    /// A short reason, the same for every object with the same problem (it is what is counted),
    /// such as `pattern: email-message:from_ref.value is not matchable on an endpoint`.
    pub reason: String,
}

/// What one file, feed or collection page yields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Indicators.
    pub items: Vec<Item>,
    /// What was not turned into indicators.
    pub unsupported: Vec<Unsupported>,
}

impl Batch {
    /// A batch of plain indicators, with no source metadata beyond the indicator's own.
    pub fn of(indicators: Vec<Indicator>) -> Batch {
        Batch {
            items: indicators.into_iter().map(Item::new).collect(),
            unsupported: Vec::new(),
        }
    }

    /// The unsupported objects counted per reason, most frequent first.
    pub fn unsupported_by_reason(&self) -> Vec<(String, usize)> {
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for u in &self.unsupported {
            *counts.entry(u.reason.as_str()).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = counts.into_iter().map(|(r, n)| (r.to_owned(), n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

/// Parses one file's text, choosing the parser by name and content: a `.csv` file is CSV with
/// the default [`CsvOptions`]; JSON with MISP's keys (see [`looks_like_misp`]) is a MISP event;
/// a STIX document (see [`crate::stix::is_stix`]) is a STIX bundle.
pub fn parse_file(path: &Path, text: &str, defaults: &Defaults) -> Result<Batch, CollectorError> {
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        return parse_csv(path, text, &CsvOptions::default(), defaults);
    }
    let first = text.trim_start().chars().next();
    if matches!(first, Some('{') | Some('[')) && looks_like_misp(text) {
        return parse_event(path, text, defaults);
    }
    if first == Some('{') && crate::stix::is_stix(text) {
        return crate::stix::parse_bundle(path, text, defaults);
    }
    if matches!(first, Some('{') | Some('[')) {
        return Err(CollectorError::Parse {
            path: path.to_owned(),
            line: 1,
            problem:
                "JSON that is neither a STIX 2.1 bundle (\"type\": \"bundle\") nor a MISP event (\"Event\")"
                    .into(),
        });
    }
    parse_list(path, text, defaults).map(Batch::of)
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
    format!("indicator--{}", crate::uuid::uuid_text(&h.finalize(), 5))
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
