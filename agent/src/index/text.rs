//! Command-line substrings: every needle searched in one pass over the command line.
//!
//! The needles go into one Aho-Corasick automaton (the `aho-corasick` crate, standard match
//! semantics, contiguous NFA: compact, and fast enough for command lines of a few kilobytes).
//! The search is overlapping, so every needle that occurs is reported, including one that is
//! part of another (`evil` inside `evil.sh`) or overlaps another. Matching is case-sensitive and
//! byte for byte.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use super::keys::{build_split, Interner, Postings, Target};

/// Heap bytes the automaton is taken to need per needle, for estimates made before it is
/// built. Measured with a counting allocator (aho-corasick 1.1.5, contiguous NFA): random
/// needles cost 11 to 14 bytes per byte, needles with shared prefixes much less, plus about
/// 700 bytes per automaton; these figures are set above that.
pub(super) const NEEDLE_BYTES_EACH: usize = 64;
/// Heap bytes the automaton is taken to need per byte of needle text.
pub(super) const NEEDLE_BYTES_PER_BYTE: usize = 16;
/// Heap bytes of an automaton besides its needles.
pub(super) const NEEDLE_FIXED_BYTES: usize = 2048;
/// What an automaton allocates beyond what its `memory_usage` reports (its own header and
/// shared parts), as measured.
const AUTOMATON_OVERHEAD: usize = 1024;

/// Needles collected before the automaton is built.
#[derive(Debug, Default)]
pub(super) struct NeedleBuf {
    interner: Interner<String>,
}

impl NeedleBuf {
    /// The id of `needle`, adding it when new.
    pub(super) fn intern(&mut self, needle: &str) -> u32 {
        match self.interner.get(needle) {
            Some(id) => id,
            None => self.interner.intern(needle.to_owned()).0,
        }
    }

    /// Records that an occurrence of needle `id` leads to `target`.
    pub(super) fn link(&mut self, id: u32, target: Target) {
        self.interner.link(id, target);
    }

    /// Builds the automaton (split in parts only if the library refuses one so large) and
    /// returns the ids of needles that could not be built even alone.
    pub(super) fn finish(self) -> (Needles, Vec<u32>) {
        let n = self.interner.len();
        let (ids, postings) = self.interner.finish();
        let mut texts = vec![String::new(); n];
        for (text, id) in ids {
            texts[id as usize] = text;
        }
        let mut automata = Vec::new();
        let mut failed = Vec::new();
        let mut try_build = |items: &[String]| {
            AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                .build(items)
                .ok()
        };
        build_split(&texts, 0, &mut try_build, &mut automata, &mut failed);
        (Needles { automata, postings }, failed)
    }
}

/// The compiled needles.
#[derive(Debug, Default)]
pub(super) struct Needles {
    automata: Vec<(u32, AhoCorasick)>,
    postings: Postings,
}

impl Needles {
    /// Sets `out` to the ids of the needles occurring in `haystack`, ascending, each once.
    pub(super) fn matches(&self, haystack: &str, out: &mut Vec<u32>) {
        out.clear();
        for (base, ac) in &self.automata {
            // Overlapping search cannot fail: the automaton was built with standard semantics.
            out.extend(
                ac.find_overlapping_iter(haystack)
                    .map(|m| base + m.pattern().as_u32()),
            );
        }
        out.sort_unstable();
        out.dedup();
    }

    pub(super) fn targets(&self, id: u32) -> &[Target] {
        self.postings.get(id)
    }

    pub(super) fn postings(&self) -> &Postings {
        &self.postings
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.automata
            .iter()
            .map(|(_, ac)| ac.memory_usage() + AUTOMATON_OVERHEAD)
            .sum::<usize>()
            + self.automata.capacity() * std::mem::size_of::<(u32, AhoCorasick)>()
            + self.postings.heap_bytes()
    }
}
