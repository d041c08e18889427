//! Distinct match keys (names, paths, globs, needles) and what each one leads to.
//!
//! Many indicators can share one key (two feeds naming the same file), and a compound indicator
//! is reached through one of its keys (its anchor). So every key table maps a key to a small id,
//! and one [`Postings`] list per table maps the id to its [`Target`]s. Ids are dense, which lets
//! the glob sets and the Aho-Corasick automaton use them directly as their pattern numbers.

use std::collections::HashMap;
use std::mem::size_of;

use super::RecordRef;

/// What a key leads to: a plain indicator, or a compound to evaluate further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Target {
    /// A plain indicator: a match on the key is a hit on this record.
    Record(RecordRef),
    /// A compound indicator, by its index in the compound table of the same side (file or
    /// process); all its conditions must be checked before it is a hit.
    Compound(u32),
}

/// For each key id, the targets it leads to, in one flat array (compressed sparse rows).
#[derive(Debug, Default)]
pub(super) struct Postings {
    starts: Vec<u32>,
    targets: Vec<Target>,
}

impl Postings {
    /// Groups `links` (key id, target) by key id; `keys` is the number of key ids.
    pub(super) fn build(keys: usize, mut links: Vec<(u32, Target)>) -> Postings {
        if links.is_empty() {
            return Postings::default();
        }
        links.sort_unstable();
        let mut starts = vec![0u32; keys + 1];
        for &(id, _) in &links {
            starts[id as usize + 1] += 1;
        }
        for i in 0..keys {
            starts[i + 1] += starts[i];
        }
        // A fresh, exact allocation: collecting from `links` in place would keep its larger
        // buffer, and `heap_bytes` would then exceed what `estimate` promised the memory ceiling.
        let mut targets = Vec::with_capacity(links.len());
        targets.extend(links.into_iter().map(|(_, t)| t));
        Postings { starts, targets }
    }

    /// The targets of key `id`.
    pub(super) fn get(&self, id: u32) -> &[Target] {
        let id = id as usize;
        match (self.starts.get(id), self.starts.get(id + 1)) {
            (Some(&lo), Some(&hi)) => &self.targets[lo as usize..hi as usize],
            _ => &[],
        }
    }

    /// Every (key id, target) pair.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, Target)> + '_ {
        self.starts.windows(2).enumerate().flat_map(move |(id, w)| {
            self.targets[w[0] as usize..w[1] as usize]
                .iter()
                .map(move |&t| (id as u32, t))
        })
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.starts.capacity() * size_of::<u32>() + self.targets.capacity() * size_of::<Target>()
    }

    /// Bytes for `keys` keys and `links` targets.
    pub(super) fn estimate(keys: usize, links: usize) -> usize {
        if links == 0 {
            return 0;
        }
        (keys + 1) * size_of::<u32>() + links * size_of::<Target>()
    }
}

/// Builds a table of distinct keys: each new key gets the next id.
#[derive(Debug, Default)]
pub(super) struct Interner<K> {
    ids: HashMap<K, u32>,
    links: Vec<(u32, Target)>,
}

impl<K: std::hash::Hash + Eq> Interner<K> {
    /// The id of `key`, new or existing, and whether it is new.
    pub(super) fn intern(&mut self, key: K) -> (u32, bool) {
        let next = self.ids.len() as u32;
        let id = *self.ids.entry(key).or_insert(next);
        (id, id == next)
    }

    /// The id of `key`, if interned.
    pub(super) fn get<Q>(&self, key: &Q) -> Option<u32>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.ids.get(key).copied()
    }

    /// Records that a match on key `id` leads to `target`.
    pub(super) fn link(&mut self, id: u32, target: Target) {
        self.links.push((id, target));
    }

    /// Number of distinct keys.
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The key map and the postings.
    pub(super) fn finish(self) -> (HashMap<K, u32>, Postings) {
        let keys = self.ids.len();
        (self.ids, Postings::build(keys, self.links))
    }
}

/// Builds one matcher over `items`, or, when the matcher library refuses that many at once (a
/// size limit), splits them in halves until each part builds. An item that cannot be built even
/// alone is reported in `failed` by its id. Ids are `base` plus the position in `items`; the
/// parts come out in ascending order of their base.
pub(super) fn build_split<T, S>(
    items: &[T],
    base: u32,
    try_build: &mut impl FnMut(&[T]) -> Option<S>,
    out: &mut Vec<(u32, S)>,
    failed: &mut Vec<u32>,
) {
    if items.is_empty() {
        return;
    }
    if let Some(s) = try_build(items) {
        out.push((base, s));
    } else if items.len() == 1 {
        failed.push(base);
    } else {
        let mid = items.len() / 2;
        build_split(&items[..mid], base, try_build, out, failed);
        build_split(&items[mid..], base + mid as u32, try_build, out, failed);
    }
}
