//! Compound indicators: an AND of conditions that must all hold for the same file or process.
//!
//! A compound is stored once, with its conditions turned into ids of the shared key tables
//! (an exact name becomes the id of that name, a glob the id of that glob), and it is reached
//! through one condition, its **anchor**, picked when it is added: the most selective condition
//! that can be checked without reading the file. For a file that is its size, else an exact
//! name, else a name glob, else a path glob; only a compound made of hashes alone is anchored on
//! a hash. For a process: executable path, name, executable hash, then command-line needle.
//!
//! So a file or process only ever evaluates the compounds whose anchor it matched, and each at
//! most once. Evaluating one is then cheap: the facts about the file (its name's id, the ids of
//! the globs it matched) are computed once per file, and each condition is a comparison or a
//! binary search in them.

use std::mem::size_of;

use picket_proto::HashKind;

use super::{Digests, Kinds, RecordRef};

/// One condition of a file compound.
#[derive(Debug)]
pub(super) enum FileCond {
    /// The digest of this kind equals this value.
    Hash(HashKind, Box<[u8]>),
    /// The size in bytes.
    Size(u64),
    /// The name equals the exact key with this id.
    Name(u32),
    /// The name matches the name glob with this id.
    NameGlob(u32),
    /// The path matches the path glob with this id.
    PathGlob(u32),
}

/// A file compound.
#[derive(Debug)]
pub(super) struct FileCompound {
    pub(super) record: RecordRef,
    /// The kinds of its hash conditions.
    pub(super) kinds: Kinds,
    pub(super) conds: Box<[FileCond]>,
}

/// What a file is, as the compound conditions see it: computed once per file.
#[derive(Debug)]
pub(super) struct FileFacts<'a> {
    pub(super) size: u64,
    pub(super) name: Option<u32>,
    pub(super) name_globs: &'a [u32],
    pub(super) path_globs: &'a [u32],
}

impl FileCompound {
    /// Whether every condition but the hashes holds.
    pub(super) fn facts_hold(&self, f: &FileFacts<'_>) -> bool {
        self.conds.iter().all(|c| match c {
            FileCond::Hash(..) => true,
            FileCond::Size(s) => *s == f.size,
            FileCond::Name(id) => f.name == Some(*id),
            FileCond::NameGlob(id) => f.name_globs.binary_search(id).is_ok(),
            FileCond::PathGlob(id) => f.path_globs.binary_search(id).is_ok(),
        })
    }

    /// Whether every hash condition holds; a digest that was not computed does not.
    pub(super) fn hashes_hold(&self, digests: &Digests) -> bool {
        self.conds.iter().all(|c| match c {
            FileCond::Hash(kind, value) => digests.get(*kind) == Some(&value[..]),
            _ => true,
        })
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.conds.len() * size_of::<FileCond>()
            + self
                .conds
                .iter()
                .map(|c| match c {
                    FileCond::Hash(_, v) => v.len(),
                    _ => 0,
                })
                .sum::<usize>()
    }
}

/// One condition of a process compound.
#[derive(Debug)]
pub(super) enum ProcessCond {
    /// The process name equals the exact key with this id.
    Name(u32),
    /// The executable path equals the exact key with this id.
    Path(u32),
    /// The executable's digest of this kind equals this value.
    Hash(HashKind, Box<[u8]>),
    /// The command line contains the needle with this id.
    Needle(u32),
}

/// A process compound.
#[derive(Debug)]
pub(super) struct ProcessCompound {
    pub(super) record: RecordRef,
    pub(super) conds: Box<[ProcessCond]>,
}

/// What a process is, as the compound conditions see it: computed once per process.
#[derive(Debug)]
pub(super) struct ProcessKeys<'a> {
    pub(super) name: Option<u32>,
    pub(super) path: Option<u32>,
    pub(super) needles: &'a [u32],
    pub(super) digests: Option<&'a Digests>,
}

impl ProcessCompound {
    /// Whether every condition holds.
    pub(super) fn holds(&self, p: &ProcessKeys<'_>) -> bool {
        self.conds.iter().all(|c| match c {
            ProcessCond::Name(id) => p.name == Some(*id),
            ProcessCond::Path(id) => p.path == Some(*id),
            ProcessCond::Needle(id) => p.needles.binary_search(id).is_ok(),
            ProcessCond::Hash(kind, value) => p.digests.and_then(|d| d.get(*kind)) == Some(&value[..]),
        })
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.conds.len() * size_of::<ProcessCond>()
            + self
                .conds
                .iter()
                .map(|c| match c {
                    ProcessCond::Hash(_, v) => v.len(),
                    _ => 0,
                })
                .sum::<usize>()
    }
}

/// File compounds anchored on their size, sorted by size.
#[derive(Debug, Default)]
pub(super) struct BySize {
    sizes: Vec<u64>,
    compounds: Vec<u32>,
}

impl BySize {
    pub(super) fn build(mut pairs: Vec<(u64, u32)>) -> BySize {
        pairs.sort_unstable();
        let (sizes, compounds) = pairs.into_iter().unzip();
        BySize { sizes, compounds }
    }

    /// The compounds anchored on `size`.
    pub(super) fn get(&self, size: u64) -> &[u32] {
        let start = self.sizes.partition_point(|&s| s < size);
        let len = self.sizes[start..].partition_point(|&s| s == size);
        &self.compounds[start..start + len]
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.sizes.capacity() * size_of::<u64>() + self.compounds.capacity() * size_of::<u32>()
    }
}

/// Heap bytes per compound at most, besides its conditions: the entry itself and its anchor
/// (a size entry, a posting, or a digest-table entry with its share of the radix index).
pub(super) const COMPOUND_BYTES: usize = {
    let file = size_of::<FileCompound>();
    let process = size_of::<ProcessCompound>();
    let entry = if file > process { file } else { process };
    // The largest anchor: a SHA-256 table entry (32 + 4) plus at most 4 bytes of radix.
    entry + 32 + 4 + 4 + 8
};

/// Heap bytes per compound condition at most, digest included.
pub(super) const CONDITION_BYTES: usize = {
    let file = size_of::<FileCond>();
    let process = size_of::<ProcessCond>();
    (if file > process { file } else { process }) + 32
};
