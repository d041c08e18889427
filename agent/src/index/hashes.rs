//! Digest tables: the part of the index that has to hold a million entries in little memory.
//!
//! A [`DigestTable`] is a flat array of digests sorted by value, a parallel array of `u32`
//! values (record offsets, or compound numbers), and a radix index on the leading bits of the
//! digest that says where each bucket starts. A look-up reads two radix entries and
//! binary-searches a bucket of one or two digests on average. With up to 16 radix bits, a
//! SHA-256 entry costs 32 + 4 bytes plus at most 4 bytes of radix (2.6 at 100 000 entries),
//! where a `HashMap<[u8; 32], u32>` costs about twice that. Equal digests sit side by side,
//! so two indicators with one hash are both found.
//!
//! The table is sorted in place (a counting pass on the radix bits, an American-flag
//! permutation, then each small bucket on its own), so building it needs no second copy of the
//! digests: the peak is the final size plus the radix counters.
//!
//! File hashes that carry a size go into a [`SizedTable`], sorted by (size, digest): the sizes
//! column answers "could a file of this size match anything?" before the file is read, and then
//! narrows the digest search to the entries of that size.

use std::fmt;
use std::mem::size_of;

use picket_proto::{Hash, HashKind};

use super::{kinds_add, Kinds};

/// The most leading bits of a digest the radix index uses.
const MAX_RADIX_BITS: u32 = 16;

/// Radix bits for `n` entries: about one entry per bucket, at most 2^16 buckets.
fn radix_bits(n: usize) -> u32 {
    if n < 2 {
        0
    } else {
        (usize::BITS - 1 - n.leading_zeros()).min(MAX_RADIX_BITS)
    }
}

/// Entries in the radix index for `n` digests (zero for an empty table).
pub(super) fn radix_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (1usize << radix_bits(n)) + 1
    }
}

/// The radix bucket of `key`: its leading 16 bits, shifted down to the table's radix bits.
fn bucket<const N: usize>(key: &[u8; N], shift: u32) -> usize {
    const { assert!(N >= 2) };
    ((usize::from(key[0]) << 8) | usize::from(key[1])) >> shift
}

/// Rows of parallel arrays that can be sorted in place.
trait Rows {
    fn less(&self, i: usize, j: usize) -> bool;
    fn swap(&mut self, i: usize, j: usize);
}

/// Sorts rows `lo..hi` in place: insertion sort when short, heapsort otherwise (no allocation,
/// and no quadratic worst case when an adversary puts every digest into one bucket).
fn sort_rows<R: Rows>(rows: &mut R, lo: usize, hi: usize) {
    let n = hi - lo;
    if n <= 16 {
        for i in lo + 1..hi {
            let mut j = i;
            while j > lo && rows.less(j, j - 1) {
                rows.swap(j, j - 1);
                j -= 1;
            }
        }
        return;
    }
    fn sift<R: Rows>(rows: &mut R, lo: usize, mut root: usize, end: usize) {
        loop {
            let mut child = 2 * root + 1;
            if child >= end {
                break;
            }
            if child + 1 < end && rows.less(lo + child, lo + child + 1) {
                child += 1;
            }
            if !rows.less(lo + root, lo + child) {
                break;
            }
            rows.swap(lo + root, lo + child);
            root = child;
        }
    }
    for start in (0..n / 2).rev() {
        sift(rows, lo, start, n);
    }
    for end in (1..n).rev() {
        rows.swap(lo, lo + end);
        sift(rows, lo, 0, end);
    }
}

struct Pairs<'a, const N: usize> {
    keys: &'a mut [[u8; N]],
    vals: &'a mut [u32],
}

impl<const N: usize> Rows for Pairs<'_, N> {
    fn less(&self, i: usize, j: usize) -> bool {
        (&self.keys[i], self.vals[i]) < (&self.keys[j], self.vals[j])
    }
    fn swap(&mut self, i: usize, j: usize) {
        self.keys.swap(i, j);
        self.vals.swap(i, j);
    }
}

/// The range of `sorted` equal to `key`.
fn equal_range<T: Ord>(sorted: &[T], key: &T) -> (usize, usize) {
    let start = sorted.partition_point(|k| k < key);
    let len = sorted[start..].partition_point(|k| k == key);
    (start, start + len)
}

/// Digests of one width with a `u32` value each, sorted, with a radix index.
#[derive(Default)]
pub(super) struct DigestTable<const N: usize> {
    keys: Vec<[u8; N]>,
    vals: Vec<u32>,
    radix: Vec<u32>,
    shift: u32,
}

impl<const N: usize> fmt::Debug for DigestTable<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestTable")
            .field("width", &N)
            .field("entries", &self.keys.len())
            .finish()
    }
}

impl<const N: usize> DigestTable<N> {
    /// Sorts `keys` and `vals` (parallel) in place and indexes them. Entries are counted in
    /// `u32`: a table never holds more entries than a snapshot, whose offsets are `u32`.
    fn build(mut keys: Vec<[u8; N]>, mut vals: Vec<u32>) -> DigestTable<N> {
        debug_assert_eq!(keys.len(), vals.len());
        let n = keys.len();
        if n == 0 {
            return DigestTable {
                shift: MAX_RADIX_BITS,
                ..DigestTable::default()
            };
        }
        let buckets = 1usize << radix_bits(n);
        let shift = MAX_RADIX_BITS - radix_bits(n);
        let mut radix = vec![0u32; buckets + 1];
        for k in &keys {
            radix[bucket(k, shift) + 1] += 1;
        }
        for b in 0..buckets {
            radix[b + 1] += radix[b];
        }
        // American-flag permutation: move each entry into its bucket with swaps.
        let mut next: Vec<u32> = radix[..buckets].to_vec();
        for b in 0..buckets {
            let end = radix[b + 1];
            while next[b] < end {
                let i = next[b] as usize;
                let t = bucket(&keys[i], shift);
                if t != b {
                    let j = next[t] as usize;
                    keys.swap(i, j);
                    vals.swap(i, j);
                    next[t] += 1;
                } else {
                    next[b] += 1;
                }
            }
        }
        drop(next);
        let mut rows = Pairs {
            keys: &mut keys,
            vals: &mut vals,
        };
        for b in 0..buckets {
            sort_rows(&mut rows, radix[b] as usize, radix[b + 1] as usize);
        }
        keys.shrink_to_fit();
        vals.shrink_to_fit();
        DigestTable {
            keys,
            vals,
            radix,
            shift,
        }
    }

    /// The values of every entry equal to `digest` (none when its length is not `N`).
    pub(super) fn get(&self, digest: &[u8]) -> &[u32] {
        let Ok(key) = <&[u8; N]>::try_from(digest) else {
            return &[];
        };
        if self.keys.is_empty() {
            return &[];
        }
        let b = bucket(key, self.shift);
        let lo = self.radix[b] as usize;
        let hi = self.radix[b + 1] as usize;
        let (start, end) = equal_range(&self.keys[lo..hi], key);
        &self.vals[lo + start..lo + end]
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn heap_bytes(&self) -> usize {
        self.keys.capacity() * N + (self.vals.capacity() + self.radix.capacity()) * size_of::<u32>()
    }

    /// Bytes a table of `n` entries holds.
    pub(super) fn estimate(n: usize) -> usize {
        n * (N + size_of::<u32>()) + radix_len(n) * size_of::<u32>()
    }
}

/// Digests of one width with a size and a `u32` value each, sorted by (size, digest, value).
#[derive(Default)]
pub(super) struct SizedTable<const N: usize> {
    sizes: Vec<u64>,
    keys: Vec<[u8; N]>,
    vals: Vec<u32>,
}

impl<const N: usize> fmt::Debug for SizedTable<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SizedTable")
            .field("width", &N)
            .field("entries", &self.keys.len())
            .finish()
    }
}

impl<const N: usize> SizedTable<N> {
    fn build(sizes: Vec<u64>, mut keys: Vec<[u8; N]>, mut vals: Vec<u32>) -> SizedTable<N> {
        // Sort (size, position) pairs, breaking ties on the digest, then permute the digests
        // and values into that order in place: the digests are never copied whole.
        let mut order: Vec<(u64, u32)> = sizes.iter().enumerate().map(|(i, &s)| (s, i as u32)).collect();
        drop(sizes);
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| keys[a.1 as usize].cmp(&keys[b.1 as usize]))
                .then_with(|| vals[a.1 as usize].cmp(&vals[b.1 as usize]))
        });
        for start in 0..order.len() {
            if order[start].1 as usize == start {
                continue;
            }
            let (k0, v0) = (keys[start], vals[start]);
            let mut pos = start;
            loop {
                let src = order[pos].1 as usize;
                order[pos].1 = pos as u32;
                if src == start {
                    keys[pos] = k0;
                    vals[pos] = v0;
                    break;
                }
                keys[pos] = keys[src];
                vals[pos] = vals[src];
                pos = src;
            }
        }
        let sizes: Vec<u64> = order.iter().map(|&(s, _)| s).collect();
        drop(order);
        keys.shrink_to_fit();
        vals.shrink_to_fit();
        SizedTable { sizes, keys, vals }
    }

    /// Whether any entry has this size.
    fn has_size(&self, size: u64) -> bool {
        self.sizes.binary_search(&size).is_ok()
    }

    /// The values of every entry with this size and digest.
    fn get(&self, size: u64, digest: &[u8]) -> &[u32] {
        let Ok(key) = <&[u8; N]>::try_from(digest) else {
            return &[];
        };
        let (lo, hi) = equal_range(&self.sizes, &size);
        let (start, end) = equal_range(&self.keys[lo..hi], key);
        &self.vals[lo + start..lo + end]
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn heap_bytes(&self) -> usize {
        self.sizes.capacity() * size_of::<u64>() + self.keys.capacity() * N + self.vals.capacity() * 4
    }

    /// Bytes a table of `n` entries holds.
    pub(super) fn estimate(n: usize) -> usize {
        n * (N + size_of::<u32>() + size_of::<u64>())
    }
}

/// Digests and values collected before sorting.
#[derive(Debug, Default)]
struct Buf<const N: usize> {
    sizes: Vec<u64>,
    keys: Vec<[u8; N]>,
    vals: Vec<u32>,
}

impl<const N: usize> Buf<N> {
    fn push(&mut self, size: Option<u64>, digest: &[u8], val: u32) -> bool {
        let Ok(key) = <[u8; N]>::try_from(digest) else {
            return false;
        };
        self.keys.push(key);
        self.vals.push(val);
        if let Some(s) = size {
            self.sizes.push(s);
        }
        true
    }

    fn reserve(&mut self, n: usize, sized: bool) {
        self.keys.reserve_exact(n);
        self.vals.reserve_exact(n);
        if sized {
            self.sizes.reserve_exact(n);
        }
    }
}

/// One [`DigestTable`] per hash kind, collected first and sorted by [`Self::finish`].
#[derive(Debug, Default)]
pub(super) struct ByKindBuf {
    md5: Buf<16>,
    sha1: Buf<20>,
    sha256: Buf<32>,
}

impl ByKindBuf {
    /// Adds `hash` with `val`; false when the digest length does not match its kind.
    pub(super) fn push(&mut self, kind: HashKind, digest: &[u8], val: u32) -> bool {
        match kind {
            HashKind::Md5 => self.md5.push(None, digest, val),
            HashKind::Sha1 => self.sha1.push(None, digest, val),
            HashKind::Sha256 => self.sha256.push(None, digest, val),
        }
    }

    /// Reserves room for `[md5, sha1, sha256]` entries.
    pub(super) fn reserve(&mut self, n: [usize; 3]) {
        self.md5.reserve(n[0], false);
        self.sha1.reserve(n[1], false);
        self.sha256.reserve(n[2], false);
    }

    pub(super) fn finish(self) -> ByKind {
        ByKind {
            md5: DigestTable::build(self.md5.keys, self.md5.vals),
            sha1: DigestTable::build(self.sha1.keys, self.sha1.vals),
            sha256: DigestTable::build(self.sha256.keys, self.sha256.vals),
        }
    }
}

/// One [`DigestTable`] per hash kind.
#[derive(Debug, Default)]
pub(super) struct ByKind {
    md5: DigestTable<16>,
    sha1: DigestTable<20>,
    sha256: DigestTable<32>,
}

impl ByKind {
    /// The values stored under `digest` of `kind`.
    pub(super) fn get(&self, kind: HashKind, digest: &[u8]) -> &[u32] {
        match kind {
            HashKind::Md5 => self.md5.get(digest),
            HashKind::Sha1 => self.sha1.get(digest),
            HashKind::Sha256 => self.sha256.get(digest),
        }
    }

    /// The kinds with at least one entry.
    pub(super) fn kinds(&self) -> Kinds {
        Kinds {
            md5: self.md5.len() > 0,
            sha1: self.sha1.len() > 0,
            sha256: self.sha256.len() > 0,
        }
    }

    /// Entries over all kinds.
    pub(super) fn len(&self) -> usize {
        self.md5.len() + self.sha1.len() + self.sha256.len()
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.md5.heap_bytes() + self.sha1.heap_bytes() + self.sha256.heap_bytes()
    }

    /// Bytes for `[md5, sha1, sha256]` entries.
    pub(super) fn estimate(n: [usize; 3]) -> usize {
        DigestTable::<16>::estimate(n[0])
            + DigestTable::<20>::estimate(n[1])
            + DigestTable::<32>::estimate(n[2])
    }
}

/// One [`SizedTable`] per hash kind, collected first and sorted by [`Self::finish`].
#[derive(Debug, Default)]
pub(super) struct SizedByKindBuf {
    md5: Buf<16>,
    sha1: Buf<20>,
    sha256: Buf<32>,
}

impl SizedByKindBuf {
    /// Adds `hash` of `size` bytes with `val`; false when the digest length does not match.
    pub(super) fn push(&mut self, hash: &Hash, size: u64, val: u32) -> bool {
        match hash.kind {
            HashKind::Md5 => self.md5.push(Some(size), &hash.value, val),
            HashKind::Sha1 => self.sha1.push(Some(size), &hash.value, val),
            HashKind::Sha256 => self.sha256.push(Some(size), &hash.value, val),
        }
    }

    /// Reserves room for `[md5, sha1, sha256]` entries.
    pub(super) fn reserve(&mut self, n: [usize; 3]) {
        self.md5.reserve(n[0], true);
        self.sha1.reserve(n[1], true);
        self.sha256.reserve(n[2], true);
    }

    pub(super) fn finish(self) -> SizedByKind {
        SizedByKind {
            md5: SizedTable::build(self.md5.sizes, self.md5.keys, self.md5.vals),
            sha1: SizedTable::build(self.sha1.sizes, self.sha1.keys, self.sha1.vals),
            sha256: SizedTable::build(self.sha256.sizes, self.sha256.keys, self.sha256.vals),
        }
    }
}

/// One [`SizedTable`] per hash kind.
#[derive(Debug, Default)]
pub(super) struct SizedByKind {
    md5: SizedTable<16>,
    sha1: SizedTable<20>,
    sha256: SizedTable<32>,
}

impl SizedByKind {
    /// Adds to `kinds` each kind with an entry of this size.
    pub(super) fn kinds_for_size(&self, size: u64, kinds: &mut Kinds) {
        let found = Kinds {
            md5: self.md5.has_size(size),
            sha1: self.sha1.has_size(size),
            sha256: self.sha256.has_size(size),
        };
        kinds_add(kinds, found);
    }

    /// The values stored under (`size`, `digest` of `kind`).
    pub(super) fn get(&self, kind: HashKind, size: u64, digest: &[u8]) -> &[u32] {
        match kind {
            HashKind::Md5 => self.md5.get(size, digest),
            HashKind::Sha1 => self.sha1.get(size, digest),
            HashKind::Sha256 => self.sha256.get(size, digest),
        }
    }

    /// Entries over all kinds.
    pub(super) fn len(&self) -> usize {
        self.md5.len() + self.sha1.len() + self.sha256.len()
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.md5.heap_bytes() + self.sha1.heap_bytes() + self.sha256.heap_bytes()
    }

    /// Bytes for `[md5, sha1, sha256]` entries.
    pub(super) fn estimate(n: [usize; 3]) -> usize {
        SizedTable::<16>::estimate(n[0]) + SizedTable::<20>::estimate(n[1]) + SizedTable::<32>::estimate(n[2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table whose digests all share their leading bytes lands in one bucket and must still
    /// sort and find every entry (the heapsort path).
    #[test]
    fn one_crowded_bucket_still_sorts() {
        let mut keys = Vec::new();
        let mut vals = Vec::new();
        for i in 0..300u32 {
            let mut k = [0u8; 16];
            k[15] = (i * 7 % 251) as u8;
            k[14] = (i % 3) as u8;
            keys.push(k);
            vals.push(i);
        }
        let t = DigestTable::build(keys.clone(), vals);
        assert!(t.keys.windows(2).all(|w| w[0] <= w[1]));
        for (i, k) in keys.iter().enumerate() {
            assert!(t.get(k).contains(&(i as u32)), "entry {i}");
        }
    }

    #[test]
    fn sized_table_sorts_by_size_then_digest() {
        let keys = vec![[3u8; 16], [1u8; 16], [2u8; 16], [1u8; 16]];
        let t = SizedTable::build(vec![9, 5, 5, 9], keys, vec![10, 11, 12, 13]);
        assert_eq!(t.sizes, vec![5, 5, 9, 9]);
        assert_eq!(t.vals, vec![11, 12, 13, 10]);
        assert_eq!(t.get(9, &[1u8; 16]), &[13]);
        assert_eq!(t.get(5, &[1u8; 16]), &[11]);
        assert!(t.get(7, &[1u8; 16]).is_empty());
        assert!(t.has_size(9) && !t.has_size(10));
    }

    #[test]
    fn radix_bits_grow_with_the_table() {
        assert_eq!(radix_len(0), 0);
        assert_eq!(radix_len(1), 2);
        assert_eq!(radix_len(3), 3);
        assert_eq!(radix_len(10_000), (1 << 13) + 1);
        assert_eq!(radix_len(100_000), (1 << 16) + 1);
        assert_eq!(radix_len(10_000_000), (1 << 16) + 1);
    }
}
