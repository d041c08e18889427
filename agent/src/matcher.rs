//! The pure matching core: compiled once from a verified snapshot, asked about each file.
//!
//! It does no I/O. The scanner asks [`Matcher::needed`] which digests a file of a given size
//! needs (none, when no indicator of any kind could match that size), computes exactly those,
//! and hands them to [`Matcher::match_file`].

use std::collections::{BTreeMap, HashMap, HashSet};

use picket_proto::{Decoded, HashKind, Indicator, Observable};

pub use crate::digest::{Digests, Kinds};

/// One digest kind's indicators: digest to indicator indexes, and the sizes that can match
/// when every indicator of the kind names a size.
#[derive(Debug, Default)]
struct HashTable {
    by_digest: HashMap<Vec<u8>, Vec<u32>>,
    sizes: Option<HashSet<u64>>,
}

/// A file match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMatch<'a> {
    /// The indicator.
    pub indicator: &'a Indicator,
    /// The digest kind that matched.
    pub kind: HashKind,
}

/// Indicators compiled for matching.
#[derive(Debug, Default)]
pub struct Matcher {
    indicators: Vec<Indicator>,
    tables: [HashTable; 3],
    unknown_kinds: usize,
    not_matched: BTreeMap<&'static str, usize>,
}

fn slot(kind: HashKind) -> usize {
    match kind {
        HashKind::Md5 => 0,
        HashKind::Sha1 => 1,
        HashKind::Sha256 => 2,
    }
}

const ALL_KINDS: [HashKind; 3] = [HashKind::Md5, HashKind::Sha1, HashKind::Sha256];

impl Matcher {
    /// Compiles the indicators of a decoded snapshot.
    pub fn compile(decoded: Decoded) -> Matcher {
        let mut m = Matcher {
            unknown_kinds: decoded.unknown_kinds,
            ..Matcher::default()
        };
        let mut all_sized = [true; 3];
        let mut sizes: [HashSet<u64>; 3] = Default::default();
        for (i, ind) in decoded.indicators.into_iter().enumerate() {
            match &ind.observable {
                Observable::FileHash { hash, size } => {
                    let s = slot(hash.kind);
                    m.tables[s]
                        .by_digest
                        .entry(hash.value.clone())
                        .or_default()
                        .push(i as u32);
                    match size {
                        Some(n) => {
                            sizes[s].insert(*n);
                        }
                        None => all_sized[s] = false,
                    }
                }
                other => *m.not_matched.entry(other.kind_name()).or_default() += 1,
            }
            m.indicators.push(ind);
        }
        for (s, sized) in sizes.into_iter().enumerate() {
            if all_sized[s] && !m.tables[s].by_digest.is_empty() {
                m.tables[s].sizes = Some(sized);
            }
        }
        m
    }

    /// The digest kinds worth computing for a file of `size` bytes.
    pub fn needed(&self, size: u64) -> Kinds {
        let mut k = Kinds::default();
        for kind in ALL_KINDS {
            let t = &self.tables[slot(kind)];
            if !t.by_digest.is_empty() && t.sizes.as_ref().is_none_or(|s| s.contains(&size)) {
                k.set(kind);
            }
        }
        k
    }

    /// The digest kinds the set holds at all.
    pub fn kinds(&self) -> Kinds {
        let mut k = Kinds::default();
        for kind in ALL_KINDS {
            if !self.tables[slot(kind)].by_digest.is_empty() {
                k.set(kind);
            }
        }
        k
    }

    /// The indicators that match a file of `size` bytes with these digests.
    pub fn match_file(&self, size: u64, digests: &Digests) -> Vec<FileMatch<'_>> {
        let mut out = Vec::new();
        for kind in ALL_KINDS {
            let Some(d) = digests.get(kind) else { continue };
            let Some(idxs) = self.tables[slot(kind)].by_digest.get(d) else {
                continue;
            };
            for &i in idxs {
                let ind = &self.indicators[i as usize];
                if let Observable::FileHash { size: Some(want), .. } = ind.observable {
                    if want != size {
                        continue;
                    }
                }
                out.push(FileMatch { indicator: ind, kind });
            }
        }
        out
    }

    /// Indicators in the set.
    pub fn len(&self) -> usize {
        self.indicators.len()
    }

    /// Whether the set holds no indicator.
    pub fn is_empty(&self) -> bool {
        self.indicators.is_empty()
    }

    /// Records of kinds this build does not know, skipped.
    pub fn unknown_kinds(&self) -> usize {
        self.unknown_kinds
    }

    /// Indicators of known kinds that file scanning does not match, by kind name.
    pub fn not_matched(&self) -> &BTreeMap<&'static str, usize> {
        &self.not_matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::{Hash, Meta, Severity, Tlp};

    fn file_hash(id: &str, hex: &str, size: Option<u64>) -> Indicator {
        Indicator {
            id: id.into(),
            observable: Observable::FileHash {
                hash: Hash::from_hex(hex).unwrap(),
                size,
            },
            meta: Meta {
                confidence: 50,
                severity: Severity::High,
                tlp: Tlp::Green,
                valid_until: None,
                source: "t".into(),
            },
        }
    }

    const EICAR_SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
    const EICAR_MD5: &str = "44d88612fea8a8f36de82e1278abb02f";

    fn digests(sha256: Option<&str>, md5: Option<&str>) -> Digests {
        Digests {
            sha256: sha256.map(|h| hex::decode(h).unwrap().try_into().unwrap()),
            md5: md5.map(|h| hex::decode(h).unwrap().try_into().unwrap()),
            sha1: None,
        }
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            set: Vec<Indicator>,
            size: u64,
            digests: Digests,
            needed: Kinds,
            matches: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "sha256 only: only sha256 is needed, and it matches",
                set: vec![file_hash("a", EICAR_SHA256, None)],
                size: 68,
                digests: digests(Some(EICAR_SHA256), None),
                needed: Kinds {
                    sha256: true,
                    ..Kinds::default()
                },
                matches: vec!["a"],
            },
            Case {
                name: "every indicator sized: other sizes need no digest",
                set: vec![
                    file_hash("a", EICAR_SHA256, Some(68)),
                    file_hash("b", EICAR_MD5, Some(68)),
                ],
                size: 69,
                digests: Digests::default(),
                needed: Kinds::default(),
                matches: vec![],
            },
            Case {
                name: "sized indicator does not match a file of another size",
                set: vec![
                    file_hash("a", EICAR_SHA256, Some(68)),
                    file_hash("b", EICAR_MD5, None),
                ],
                size: 70,
                digests: digests(Some(EICAR_SHA256), Some(EICAR_MD5)),
                needed: Kinds {
                    md5: true,
                    ..Kinds::default()
                },
                matches: vec!["b"],
            },
            Case {
                name: "two kinds both match",
                set: vec![
                    file_hash("a", EICAR_SHA256, None),
                    file_hash("b", EICAR_MD5, None),
                ],
                size: 68,
                digests: digests(Some(EICAR_SHA256), Some(EICAR_MD5)),
                needed: Kinds {
                    md5: true,
                    sha256: true,
                    ..Kinds::default()
                },
                matches: vec!["b", "a"],
            },
        ];
        for c in cases {
            let m = Matcher::compile(Decoded {
                indicators: c.set,
                unknown_kinds: 0,
            });
            assert_eq!(m.needed(c.size), c.needed, "{}", c.name);
            let got: Vec<&str> = m
                .match_file(c.size, &c.digests)
                .iter()
                .map(|f| f.indicator.id.as_str())
                .collect();
            assert_eq!(got, c.matches, "{}", c.name);
        }
    }
}
