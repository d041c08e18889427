//! File and process names and paths: exact keys in a hash map, globs in glob sets.
//!
//! # Glob options
//!
//! The semantics are stated in the module documentation of `index` ("What matches what"). Both
//! kinds of glob are compiled case-sensitive with `backslash_escape(true)`. Path globs use
//! `literal_separator(true)`, so `*` and `?` stop at `/`. File-name globs do not: a name holds
//! no `/`, so the option changes nothing they match, and without it `globset` serves the
//! common `*.ext` form from a hash map of extensions (about 0.8 KiB a glob, measured) instead
//! of one regex per glob (about 6 KiB).
//!
//! # Memory
//!
//! `globset` is fast but not small: measured with a counting allocator (globset 0.4.22), a
//! typical path glob such as `/home/*/Downloads/*.exe` costs about 9 KiB once compiled and up
//! to 17 KiB once the regex engine's lazy caches have warmed, and long globs about 140 bytes
//! per byte of pattern. Globs come only from sources an operator trusts (DESIGN.md), so a set
//! holds tens or hundreds, not millions; the estimates below ([`GLOB_BYTES_EACH`]) are set
//! above those measurements so that a set with too many is refused, not run out of memory.

use std::collections::HashMap;
use std::mem::size_of;

use globset::{Candidate, Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::keys::{build_split, Interner, Postings, Target};

/// Byte-exact keys: file names, process names, executable paths. Looked up with one hash probe.
#[derive(Debug, Default)]
pub(super) struct Exact {
    ids: HashMap<Box<[u8]>, u32>,
    key_bytes: usize,
    postings: Postings,
}

impl Exact {
    pub(super) fn build(interner: Interner<Box<[u8]>>) -> Exact {
        let (mut ids, postings) = interner.finish();
        ids.shrink_to_fit();
        let key_bytes = ids.keys().map(|k| malloc_bytes(k.len())).sum();
        Exact {
            ids,
            key_bytes,
            postings,
        }
    }

    /// The id of the key equal to `bytes`, if any.
    pub(super) fn key(&self, bytes: &[u8]) -> Option<u32> {
        if self.ids.is_empty() {
            return None;
        }
        self.ids.get(bytes).copied()
    }

    pub(super) fn targets(&self, id: u32) -> &[Target] {
        self.postings.get(id)
    }

    pub(super) fn heap_bytes(&self) -> usize {
        map_bytes::<Box<[u8]>, u32>(self.ids.capacity()) + self.key_bytes + self.postings.heap_bytes()
    }
}

/// Heap bytes of an allocation of `len` bytes as glibc's malloc rounds it: a header word, a
/// multiple of 16, at least 32. Counted for the many small key allocations, where it matters.
fn malloc_bytes(len: usize) -> usize {
    (len + 8).next_multiple_of(16).max(32)
}

/// Heap bytes of a std `HashMap` holding `items` entries after `shrink_to_fit` (or with that
/// capacity): hashbrown's bucket count for that capacity, one slot and one control byte each,
/// plus a group of trailing control bytes.
pub(super) fn map_bytes<K, V>(items: usize) -> usize {
    if items == 0 {
        return 0;
    }
    let buckets = if items < 4 {
        4
    } else if items < 8 {
        8
    } else {
        (items * 8 / 7).next_power_of_two()
    };
    buckets * (size_of::<(K, V)>() + 1) + 16
}

/// Compiles an indicator's glob with the options this module's documentation describes: a
/// path glob when `path`, else a file-name glob.
pub(super) fn compile(text: &str, path: bool) -> Result<Glob, globset::Error> {
    GlobBuilder::new(text)
        .literal_separator(path)
        .backslash_escape(true)
        .build()
}

/// Heap bytes a compiled glob is taken to hold, besides its text (see "Memory" above).
pub(super) const GLOB_BYTES_EACH: usize = 16 * 1024;
/// Heap bytes per byte of glob text in a compiled glob set.
pub(super) const GLOB_BYTES_PER_BYTE: usize = 160;
/// Heap bytes of one compiled glob set besides its patterns: its strategy tables and the
/// regex engine's caches.
pub(super) const GLOB_SET_BYTES: usize = 64 * 1024;

/// Globs collected before compiling the set.
#[derive(Debug, Default)]
pub(super) struct GlobBuf {
    interner: Interner<String>,
    globs: Vec<Glob>,
}

impl GlobBuf {
    /// The id of `glob`, adding it when new.
    pub(super) fn intern(&mut self, glob: Glob) -> u32 {
        let (id, new) = self.interner.intern(glob.glob().to_owned());
        if new {
            self.globs.push(glob);
        }
        id
    }

    /// Records that a match of glob `id` leads to `target`.
    pub(super) fn link(&mut self, id: u32, target: Target) {
        self.interner.link(id, target);
    }

    /// Compiles the globs into as few sets as `globset` accepts (one, unless a size limit
    /// splits them), and returns the ids of globs that could not be compiled even alone.
    pub(super) fn finish(self) -> (Globs, Vec<u32>) {
        let (_, postings) = self.interner.finish();
        let mut sets = Vec::new();
        let mut failed = Vec::new();
        let mut try_build = |items: &[Glob]| {
            let mut b = GlobSetBuilder::new();
            for g in items {
                b.add(g.clone());
            }
            b.build().ok()
        };
        build_split(&self.globs, 0, &mut try_build, &mut sets, &mut failed);
        let text_bytes = self.globs.iter().map(|g| g.glob().len()).sum();
        let globs = Globs {
            patterns: self.globs.len(),
            text_bytes,
            sets,
            postings,
        };
        (globs, failed)
    }
}

/// Compiled globs: the ids of those that match a candidate, and what each id leads to.
#[derive(Debug, Default)]
pub(super) struct Globs {
    sets: Vec<(u32, GlobSet)>,
    postings: Postings,
    patterns: usize,
    text_bytes: usize,
}

impl Globs {
    /// Whether there is no glob to match.
    pub(super) fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Sets `out` to the ids of the globs matching `candidate`, ascending.
    pub(super) fn matches(&self, candidate: &Candidate<'_>, out: &mut Vec<u32>) {
        out.clear();
        let mut part = Vec::new();
        for (base, set) in &self.sets {
            set.matches_candidate_into(candidate, &mut part);
            out.extend(part.iter().map(|&i| base + i as u32));
        }
    }

    pub(super) fn targets(&self, id: u32) -> &[Target] {
        self.postings.get(id)
    }

    pub(super) fn postings(&self) -> &Postings {
        &self.postings
    }

    /// An estimate: see [`GLOB_BYTES_EACH`].
    pub(super) fn heap_bytes(&self) -> usize {
        self.sets.len() * GLOB_SET_BYTES
            + Globs::estimate_patterns(self.patterns, self.text_bytes)
            + self.postings.heap_bytes()
    }

    /// Bytes `patterns` compiled globs of `text_bytes` in total are taken to hold.
    pub(super) fn estimate_patterns(patterns: usize, text_bytes: usize) -> usize {
        patterns * GLOB_BYTES_EACH + text_bytes * GLOB_BYTES_PER_BYTE
    }
}
