//! The hash cache: digests already computed, keyed by file identity, kept across restarts.
//!
//! Hashing is the scanner's whole cost. With this cache an unchanged tree is rescanned with one
//! `lstat` per file and no reads, and a new indicator set that wants a kind already cached needs
//! only look-ups. A file's identity is its device, inode, size, modification time and change
//! time, both to the nanosecond ([`Identity`]); any write, truncation, `touch`, `chmod`, rename
//! over it or replacement by another inode changes at least one of them.
//!
//! Architecture invariant: a digest comes out of the cache only for the exact identity it was
//! put under, and it is put only if the file's change time was at least [`RACY_MARGIN`] before
//! hashing started. Timestamps are coarse (a kernel tick, or whole seconds on some filesystems),
//! so a file rewritten with the same size within one tick of being hashed keeps its identity;
//! without the margin the old digest would stand for the new content for as long as the file
//! was left alone, which is exactly what someone hiding a file would want (git calls this the
//! "racy" case). Files that recent are simply hashed again next time.
//!
//! Memory: entries are fixed-size and unboxed, 120 bytes each (identity 56, the three digests
//! 68 whether cached or not, one flag byte, padding), in one `Vec` sorted by (device, inode).
//! A look-up bisects a copy of every 32nd key first (half a byte per entry, small enough to
//! stay in the CPU cache), then one block of 32 entries: a handful of cache misses instead of
//! one per bisection step. New keys go to a small unsorted tail, indexed by a hash map, that is
//! merged in place once it holds more than a sixteenth of the entries; the tail and its index
//! add at most about 15% while they exist. A million files cost about 120 MB, bounded by
//! `max_entries`: once full, new files are not cached until [`HashCache::sweep`] makes room.
//! Refusing newcomers, rather than evicting the least recently used, is deliberate: a scan
//! visits files in a cycle, and on a cycle larger than the cache LRU hits nothing while a fixed
//! subset keeps `max_entries / files` of the hits.
//!
//! Eviction follows complete scans: [`HashCache::begin_generation`] when a scan starts,
//! [`HashCache::lookup`] (or [`HashCache::mark_seen`]) for every file it walks, including files
//! the current set needs no digest of, [`HashCache::put`] for what it hashes (which marks as
//! well), and [`HashCache::sweep`] when it completes. Entries of deleted or changed files go
//! then; entries of files the walk skipped without a look-up go too.
//!
//! The file (`DIR/hash-cache.bin`, 0600, replaced atomically) is only a cache: a corrupt,
//! oversized or foreign one is discarded with a warning and the agent starts from empty. It is
//! still input from the disk, so [`decode`] checks a size cap before anything else, then magic,
//! format, a SHA-256 checksum over all of it, the entry count against both the cap and the
//! bytes present, and every entry; it never panics. Layout: `b"PKHC"`, a format byte, a
//! postcard varint count, that many postcard `WireEntry` values in strictly ascending
//! (device, inode) order, then the SHA-256 of everything before it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::digest::{Digests, Kinds};
use crate::store::write_atomically;
use crate::AgentError;

/// The cache file's name inside the state directory.
pub const CACHE_FILE: &str = "hash-cache.bin";

/// How long before hashing started a file must last have changed for its digests to be cached.
/// Two seconds covers the coarsest common timestamp granularity (FAT's two seconds; ext3 and
/// many network filesystems keep whole seconds) and the lag of the kernel's coarse clock.
pub const RACY_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Bytes one cache entry occupies in memory.
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

const MAGIC: [u8; 4] = *b"PKHC";
const FORMAT: u8 = 1;
const HEADER: usize = MAGIC.len() + 1;
const CHECKSUM: usize = 32;
/// The longest encoding of one entry: five 64-bit varints, two 32-bit varints, three option
/// tags and all three digests.
const MAX_WIRE_ENTRY: usize = 5 * 10 + 2 * 5 + 3 + 16 + 20 + 32;
/// The shortest: every varint one byte, three option tags, and the smallest digest, since an
/// entry without a digest is refused.
const MIN_WIRE_ENTRY: usize = 5 + 2 + 3 + 16;
/// The tail is merged once it holds more than this many entries, or a sixteenth of the sorted
/// entries if that is more.
const TAIL_MIN: usize = 4096;
/// Entries per block of `sorted` behind one fence key.
const FENCE: usize = 32;

const MD5: u8 = 1;
const SHA1: u8 = 2;
const SHA256: u8 = 4;
const SEEN: u8 = 0x80;

/// What identifies one version of one file: if any of this changed, the content may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The device the file lives on.
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
    /// The size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Modification time, nanoseconds within the second.
    pub mtime_nsec: u32,
    /// Change time (of the inode), seconds since the epoch.
    pub ctime: i64,
    /// Change time, nanoseconds within the second.
    pub ctime_nsec: u32,
}

impl Identity {
    /// The identity a raw `stat` (from `statat`) describes. For [`HashCache::put`] it must
    /// describe the bytes hashed: [`crate::digest::hash_at`] and [`crate::digest::hash_file`]
    /// check that the file they open matches it in every field, before and after the read.
    // The `stat` field types differ between platforms; on some these casts are no-ops.
    #[allow(clippy::unnecessary_cast)]
    pub fn of_stat(st: &rustix::fs::Stat) -> Identity {
        Identity {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime: st.st_mtime as i64,
            mtime_nsec: nsec(st.st_mtime_nsec as i64),
            ctime: st.st_ctime as i64,
            ctime_nsec: nsec(st.st_ctime_nsec as i64),
        }
    }

    /// The identity of the file `meta` describes (see [`Identity::of_stat`] for a raw `stat`).
    pub fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: nsec(meta.mtime_nsec()),
            ctime: meta.ctime(),
            ctime_nsec: nsec(meta.ctime_nsec()),
        }
    }

    /// Whether the file last changed at least [`RACY_MARGIN`] before `hashed_at`, so that any
    /// later change is bound to give it a new change time. Only the change time counts: the
    /// modification time can be set to anything by the file's owner, the change time cannot.
    pub fn settled_before(&self, hashed_at: SystemTime) -> bool {
        let Ok(at) = hashed_at.duration_since(UNIX_EPOCH) else {
            return false;
        };
        let at = i128::try_from(at.as_nanos()).unwrap_or(i128::MAX);
        let ctime = i128::from(self.ctime) * 1_000_000_000 + i128::from(self.ctime_nsec);
        ctime + RACY_MARGIN.as_nanos() as i128 <= at
    }
}

/// `stat` reports nanoseconds as `i64` in `0..1e9`; a filesystem that breaks that still gets
/// a stable value, and it is one no well-behaved file has.
fn nsec(n: i64) -> u32 {
    u32::try_from(n)
        .ok()
        .filter(|&n| n < 1_000_000_000)
        .unwrap_or(u32::MAX)
}

/// One cached file: its identity, the digests known for it, and which ones those are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    ctime: i64,
    mtime_nsec: u32,
    ctime_nsec: u32,
    sha256: [u8; 32],
    sha1: [u8; 20],
    md5: [u8; 16],
    /// `MD5 | SHA1 | SHA256` for the digests held, `SEEN` once marked this generation.
    flags: u8,
}

impl Entry {
    fn new(id: &Identity) -> Entry {
        Entry {
            dev: id.dev,
            ino: id.ino,
            size: id.size,
            mtime: id.mtime,
            ctime: id.ctime,
            mtime_nsec: id.mtime_nsec,
            ctime_nsec: id.ctime_nsec,
            sha256: [0; 32],
            sha1: [0; 20],
            md5: [0; 16],
            flags: 0,
        }
    }

    fn key(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    fn identity(&self) -> Identity {
        Identity {
            dev: self.dev,
            ino: self.ino,
            size: self.size,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            ctime: self.ctime,
            ctime_nsec: self.ctime_nsec,
        }
    }

    /// Adds (or replaces) the digests `d` holds.
    fn merge(&mut self, d: &Digests) {
        if let Some(v) = d.md5 {
            self.md5 = v;
            self.flags |= MD5;
        }
        if let Some(v) = d.sha1 {
            self.sha1 = v;
            self.flags |= SHA1;
        }
        if let Some(v) = d.sha256 {
            self.sha256 = v;
            self.flags |= SHA256;
        }
    }

    /// The digests of the kinds in `want`, all of which the entry holds.
    fn digests(&self, want: u8) -> Digests {
        Digests {
            md5: (want & MD5 != 0).then_some(self.md5),
            sha1: (want & SHA1 != 0).then_some(self.sha1),
            sha256: (want & SHA256 != 0).then_some(self.sha256),
        }
    }

    fn wire(&self) -> WireEntry {
        let all = self.digests(self.flags);
        WireEntry {
            dev: self.dev,
            ino: self.ino,
            size: self.size,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            ctime: self.ctime,
            ctime_nsec: self.ctime_nsec,
            md5: all.md5,
            sha1: all.sha1,
            sha256: all.sha256,
        }
    }
}

fn bits(k: Kinds) -> u8 {
    (if k.md5 { MD5 } else { 0 }) | (if k.sha1 { SHA1 } else { 0 }) | (if k.sha256 { SHA256 } else { 0 })
}

fn digest_bits(d: &Digests) -> u8 {
    (if d.md5.is_some() { MD5 } else { 0 })
        | (if d.sha1.is_some() { SHA1 } else { 0 })
        | (if d.sha256.is_some() { SHA256 } else { 0 })
}

/// One entry on disk. postcard is not self-describing: the field order is the format. Never
/// reorder; a change means a new `FORMAT`.
#[derive(Debug, Serialize, Deserialize)]
struct WireEntry {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: u32,
    ctime: i64,
    ctime_nsec: u32,
    md5: Option<[u8; 16]>,
    sha1: Option<[u8; 20]>,
    sha256: Option<[u8; 32]>,
}

/// Why cache bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Larger than any cache of `max_entries` entries could be; refused before reading it.
    #[error("{len} bytes, more than the {cap} a cache of this size can take")]
    TooLarge {
        /// The length found.
        len: u64,
        /// The cap.
        cap: u64,
    },
    /// Not a Picket hash cache at all.
    #[error("not a Picket hash cache")]
    Magic,
    /// Written by a version of the agent with another format.
    #[error("hash cache format {0}, this agent reads format {FORMAT}")]
    Format(u8),
    /// The checksum does not match: the file was damaged or cut short.
    #[error("checksum mismatch: damaged or truncated")]
    Checksum,
    /// More entries than allowed, or than the bytes could hold.
    #[error("{count} entries, more than the {max} allowed or the bytes can hold")]
    TooMany {
        /// The count found.
        count: u64,
        /// The smaller of the cap and what the bytes could hold.
        max: u64,
    },
    /// An entry could not be decoded or breaks a rule (nanoseconds out of range, no digest,
    /// keys not strictly ascending), or the count could not be.
    #[error("entry {index}: {what}")]
    Entry {
        /// The entry's position (the count is at position 0 too).
        index: u64,
        /// What was wrong.
        what: &'static str,
    },
    /// Bytes left over after the last entry.
    #[error("{0} bytes after the last entry")]
    Trailing(usize),
}

/// A cache file that was found but not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: hash cache discarded, starting empty: {reason}")]
pub struct Discarded {
    /// The cache file.
    pub path: PathBuf,
    /// Why.
    pub reason: DecodeError,
}

/// The longest cache file `max_entries` entries can make.
pub fn encoded_cap(max_entries: usize) -> u64 {
    let body = (max_entries as u64).saturating_mul(MAX_WIRE_ENTRY as u64);
    body.saturating_add((HEADER + 10 + CHECKSUM) as u64)
}

/// Decodes a cache file's bytes: cap, magic, format and checksum, then [`decode_body`].
/// Pure, and never panics, whatever the bytes.
pub fn decode(bytes: &[u8], max_entries: usize) -> Result<HashCache, DecodeError> {
    let cap = encoded_cap(max_entries);
    if bytes.len() as u64 > cap {
        return Err(DecodeError::TooLarge {
            len: bytes.len() as u64,
            cap,
        });
    }
    if bytes.len() < HEADER + CHECKSUM || bytes[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::Magic);
    }
    if bytes[MAGIC.len()] != FORMAT {
        return Err(DecodeError::Format(bytes[MAGIC.len()]));
    }
    let (signed, sum) = bytes.split_at(bytes.len() - CHECKSUM);
    if ring::digest::digest(&ring::digest::SHA256, signed).as_ref() != sum {
        return Err(DecodeError::Checksum);
    }
    decode_body(&signed[HEADER..], max_entries)
}

/// Decodes the entries between header and checksum: everything [`decode`] checks after the
/// checksum. Public so that a fuzz target can reach past the checksum.
pub fn decode_body(body: &[u8], max_entries: usize) -> Result<HashCache, DecodeError> {
    let (count, mut rest) = postcard::take_from_bytes::<u64>(body).map_err(|_| DecodeError::Entry {
        index: 0,
        what: "the entry count is malformed",
    })?;
    // Refuse a count beyond the cap or beyond what the bytes could hold before allocating.
    let max = (max_entries as u64).min((rest.len() / MIN_WIRE_ENTRY) as u64);
    if count > max {
        return Err(DecodeError::TooMany { count, max });
    }
    let mut sorted: Vec<Entry> = Vec::with_capacity(count as usize);
    for index in 0..count {
        let bad = |what| DecodeError::Entry { index, what };
        let (w, next) = postcard::take_from_bytes::<WireEntry>(rest).map_err(|_| bad("malformed"))?;
        rest = next;
        if w.mtime_nsec >= 1_000_000_000 && w.mtime_nsec != u32::MAX
            || w.ctime_nsec >= 1_000_000_000 && w.ctime_nsec != u32::MAX
        {
            return Err(bad("nanoseconds out of range"));
        }
        let mut e = Entry::new(&Identity {
            dev: w.dev,
            ino: w.ino,
            size: w.size,
            mtime: w.mtime,
            mtime_nsec: w.mtime_nsec,
            ctime: w.ctime,
            ctime_nsec: w.ctime_nsec,
        });
        e.merge(&Digests {
            md5: w.md5,
            sha1: w.sha1,
            sha256: w.sha256,
        });
        if e.flags == 0 {
            return Err(bad("no digest"));
        }
        if sorted.last().is_some_and(|p| p.key() >= e.key()) {
            return Err(bad("out of order or duplicated"));
        }
        sorted.push(e);
    }
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    let mut cache = HashCache {
        sorted,
        ..HashCache::new(max_entries)
    };
    cache.build_fences();
    Ok(cache)
}

/// The cache. See the module documentation for the layout and the rules.
#[derive(Debug, Clone)]
pub struct HashCache {
    /// Strictly ascending by (device, inode).
    sorted: Vec<Entry>,
    /// The key of `sorted[i * FENCE]` for each block `i`; rebuilt whenever `sorted` changes
    /// shape.
    fences: Vec<(u64, u64)>,
    /// Keys in none of `sorted`, in arrival order.
    tail: Vec<Entry>,
    /// Key to position in `tail`.
    tail_index: HashMap<(u64, u64), usize>,
    max_entries: usize,
    tail_min: usize,
    dirty: bool,
}

impl HashCache {
    /// An empty cache of at most `max_entries` entries.
    pub fn new(max_entries: usize) -> HashCache {
        HashCache {
            sorted: Vec::new(),
            fences: Vec::new(),
            tail: Vec::new(),
            tail_index: HashMap::new(),
            max_entries,
            tail_min: TAIL_MIN,
            dirty: false,
        }
    }

    /// Reads the cache file at `path`. A missing file gives an empty cache. A file that is too
    /// large or fails [`decode`] gives an empty cache and the reason it was discarded, for the
    /// log: it is only a cache. Only an I/O error (other than the file not existing) is an
    /// error, since it would stop [`HashCache::save`] as well.
    pub fn load(path: &Path, max_entries: usize) -> Result<(HashCache, Option<Discarded>), AgentError> {
        let discard = |reason| {
            let mut cache = HashCache::new(max_entries);
            // Written over at the next save, so the bad file does not linger.
            cache.dirty = true;
            Ok((
                cache,
                Some(Discarded {
                    path: path.to_owned(),
                    reason,
                }),
            ))
        };
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((HashCache::new(max_entries), None)),
            Err(e) => return Err(AgentError::io(path)(e)),
        };
        let meta = file.metadata().map_err(AgentError::io(path))?;
        if !meta.is_file() {
            return Err(AgentError::io(path)(io::Error::other("not a regular file")));
        }
        let cap = encoded_cap(max_entries);
        if meta.len() > cap {
            return discard(DecodeError::TooLarge { len: meta.len(), cap });
        }
        let bytes = read_up_to(file, cap).map_err(AgentError::io(path))?;
        match decode(&bytes, max_entries) {
            Ok(cache) => Ok((cache, None)),
            Err(reason) => discard(reason),
        }
    }

    /// Writes the cache to `path` (0600) so that a crash leaves the old file or the new one.
    pub fn save(&mut self, path: &Path) -> Result<(), AgentError> {
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            AgentError::io(path)(io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        write_atomically(dir, name, &self.encode())?;
        self.dirty = false;
        Ok(())
    }

    /// The cache file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut tail: Vec<&Entry> = self.tail.iter().collect();
        tail.sort_unstable_by_key(|e| e.key());
        let mut out = Vec::with_capacity(HEADER + 10 + self.len() * 80 + CHECKSUM);
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT);
        // Invariant: postcard fails only when its writer does, and a Vec never does.
        out = postcard::to_extend(&(self.len() as u64), out).expect("writing to a Vec");
        let (mut a, mut b) = (self.sorted.iter().peekable(), tail.into_iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.key() < y.key() => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            };
            let Some(e) = next else { break };
            out = postcard::to_extend(&e.wire(), out).expect("writing to a Vec");
        }
        let sum = ring::digest::digest(&ring::digest::SHA256, &out);
        out.extend_from_slice(sum.as_ref());
        out
    }

    /// The cached digests of every kind in `kinds` for exactly this identity, or `None` if
    /// any of them is missing or the file changed since.
    pub fn get(&self, id: &Identity, kinds: Kinds) -> Option<Digests> {
        let want = bits(kinds);
        let e = self.find(id.dev, id.ino)?;
        (e.identity() == *id && e.flags & want == want).then(|| e.digests(want))
    }

    /// What a scan asks of each file it walks, in one search: marks the entry of exactly this
    /// identity seen (as [`HashCache::mark_seen`] does) and returns what [`HashCache::get`]
    /// would.
    pub fn lookup(&mut self, id: &Identity, kinds: Kinds) -> Option<Digests> {
        let want = bits(kinds);
        let e = self.find_mut(id.dev, id.ino).filter(|e| e.identity() == *id)?;
        e.flags |= SEEN;
        (e.flags & want == want).then(|| e.digests(want))
    }

    /// The kinds cached for exactly this identity: the rest is what hashing must add.
    pub fn cached(&self, id: &Identity) -> Kinds {
        let flags = self
            .find(id.dev, id.ino)
            .filter(|e| e.identity() == *id)
            .map_or(0, |e| e.flags);
        Kinds {
            md5: flags & MD5 != 0,
            sha1: flags & SHA1 != 0,
            sha256: flags & SHA256 != 0,
        }
    }

    /// Records `digests` for the file `id` describes, hashed from `hashed_at` on (taken before
    /// the file was opened), and marks it seen. Kinds already cached for the same identity are
    /// kept; a new identity for the same inode replaces the entry. `id` must describe the bytes
    /// that were hashed: the file's metadata as `hash_file` checked it, not an older `lstat`.
    ///
    /// Returns whether the digests were cached. They are not when the file changed within
    /// [`RACY_MARGIN`] of `hashed_at` (see the module documentation), when `digests` is empty,
    /// or when the cache is full and this is a new inode.
    pub fn put(&mut self, id: Identity, digests: &Digests, hashed_at: SystemTime) -> bool {
        if digest_bits(digests) == 0 || !id.settled_before(hashed_at) {
            return false;
        }
        if let Some(e) = self.find_mut(id.dev, id.ino) {
            if e.identity() != id {
                *e = Entry::new(&id);
            }
            e.merge(digests);
            e.flags |= SEEN;
            self.dirty = true;
            return true;
        }
        if self.len() >= self.max_entries {
            return false;
        }
        let mut e = Entry::new(&id);
        e.merge(digests);
        e.flags |= SEEN;
        self.tail_index.insert(e.key(), self.tail.len());
        self.tail.push(e);
        self.dirty = true;
        if self.tail.len() > self.tail_min.max(self.sorted.len() / 16) {
            self.merge_tail();
        }
        true
    }

    /// Starts a generation: every entry counts as unseen until marked.
    pub fn begin_generation(&mut self) {
        for e in self.sorted.iter_mut().chain(self.tail.iter_mut()) {
            e.flags &= !SEEN;
        }
    }

    /// Marks the entry of exactly this identity as seen in this generation. Returns whether
    /// there was one.
    pub fn mark_seen(&mut self, id: &Identity) -> bool {
        match self.find_mut(id.dev, id.ino) {
            Some(e) if e.identity() == *id => {
                e.flags |= SEEN;
                true
            }
            _ => false,
        }
    }

    /// Drops every entry not marked or put since [`HashCache::begin_generation`] (or since the
    /// cache was loaded). Call it after a complete scan only: a partial one would drop the
    /// files it did not reach. Returns how many were dropped.
    pub fn sweep(&mut self) -> usize {
        self.merge_tail();
        let before = self.sorted.len();
        self.sorted.retain(|e| e.flags & SEEN != 0);
        let dropped = before - self.sorted.len();
        if dropped > 0 {
            self.dirty = true;
            if self.sorted.capacity() > self.sorted.len() + self.sorted.len() / 4 {
                self.sorted.shrink_to_fit();
            }
            self.build_fences();
        }
        dropped
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.sorted.len() + self.tail.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound on entries.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Whether anything changed since the cache was loaded or saved.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Where `key` is: `Ok` with its position in `sorted`, or `Err` with its position in
    /// `tail`, if it is there.
    fn position(&self, key: (u64, u64)) -> Option<Result<usize, usize>> {
        // Fences at or below the key; the key can only be in the last of their blocks.
        let block = self.fences.partition_point(|f| *f <= key);
        if block > 0 {
            let start = (block - 1) * FENCE;
            let end = (start + FENCE).min(self.sorted.len());
            if let Ok(i) = self.sorted[start..end].binary_search_by_key(&key, Entry::key) {
                return Some(Ok(start + i));
            }
        }
        self.tail_index.get(&key).map(|&i| Err(i))
    }

    fn find(&self, dev: u64, ino: u64) -> Option<&Entry> {
        match self.position((dev, ino))? {
            Ok(i) => self.sorted.get(i),
            Err(i) => self.tail.get(i),
        }
    }

    fn find_mut(&mut self, dev: u64, ino: u64) -> Option<&mut Entry> {
        match self.position((dev, ino))? {
            Ok(i) => self.sorted.get_mut(i),
            Err(i) => self.tail.get_mut(i),
        }
    }

    fn build_fences(&mut self) {
        self.fences.clear();
        self.fences
            .extend(self.sorted.iter().step_by(FENCE).map(Entry::key));
        self.fences.shrink_to_fit();
    }

    /// Merges the tail into `sorted` in place, from the back, in O(n) moves and no allocation
    /// beyond `sorted` growing by the tail's length.
    fn merge_tail(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let mut tail = std::mem::take(&mut self.tail);
        self.tail_index = HashMap::new();
        tail.sort_unstable_by_key(Entry::key);
        let mut i = self.sorted.len();
        self.sorted.reserve_exact(tail.len());
        self.sorted.extend_from_slice(&tail);
        let mut j = tail.len();
        // Invariant: slots i + j.. are final. Writing at i + j - 1 never overwrites an unread
        // sorted[..i] while j > 0. Keys in the tail are never in `sorted`, so no tie.
        while j > 0 {
            let k = i + j - 1;
            if i > 0 && self.sorted[i - 1].key() > tail[j - 1].key() {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = tail[j - 1];
                j -= 1;
            }
        }
        self.build_fences();
    }
}

/// Reads all of `file`, stopping past `cap` (so a file growing after its size was checked
/// cannot make the read unbounded); the caller's decode refuses anything over `cap`.
fn read_up_to(file: File, cap: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Duration;

    use proptest::prelude::*;

    fn id(dev: u64, ino: u64) -> Identity {
        Identity {
            dev,
            ino,
            size: 68,
            mtime: 1_700_000_000,
            mtime_nsec: 123_456_789,
            ctime: 1_700_000_001,
            ctime_nsec: 987_654_321,
        }
    }

    fn sha256(b: u8) -> Digests {
        Digests {
            sha256: Some([b; 32]),
            ..Digests::default()
        }
    }

    fn all(b: u8) -> Digests {
        Digests {
            md5: Some([b; 16]),
            sha1: Some([b.wrapping_add(1); 20]),
            sha256: Some([b.wrapping_add(2); 32]),
        }
    }

    const SHA256_ONLY: Kinds = Kinds {
        md5: false,
        sha1: false,
        sha256: true,
    };
    const ALL: Kinds = Kinds {
        md5: true,
        sha1: true,
        sha256: true,
    };

    /// Long after every test identity's change time.
    fn later() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn entry_is_120_bytes() {
        assert_eq!(ENTRY_BYTES, 120);
    }

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CACHE_FILE);
        let mut c = HashCache::new(100);
        assert!(c.put(id(1, 5), &all(7), later()));
        assert!(c.put(id(1, 2), &sha256(3), later()));
        assert!(c.put(
            id(0, 9),
            &Digests {
                md5: Some([4; 16]),
                ..Digests::default()
            },
            later()
        ));
        assert!(c.is_dirty());
        c.save(&path).expect("save");
        assert!(!c.is_dirty());
        let mode = fs::metadata(&path).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o600);

        let (back, warning) = HashCache::load(&path, 100).expect("load");
        assert_eq!(warning, None);
        assert_eq!(back.len(), 3);
        assert!(!back.is_dirty());
        assert_eq!(back.get(&id(1, 5), ALL), Some(all(7)));
        assert_eq!(back.get(&id(1, 2), SHA256_ONLY), Some(sha256(3)));
        assert_eq!(back.get(&id(1, 2), ALL), None);
        assert_eq!(back.encode(), c.encode());
    }

    #[test]
    fn missing_file_is_an_empty_cache_without_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, warning) = HashCache::load(&dir.path().join(CACHE_FILE), 10).expect("load");
        assert!(c.is_empty());
        assert_eq!(warning, None);
    }

    /// The encoding is the format: this fails when it changes by accident.
    #[test]
    fn golden_bytes() {
        let mut c = HashCache::new(10);
        let i = Identity {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: -1,
            mtime_nsec: 5,
            ctime: 6,
            ctime_nsec: 7,
        };
        assert!(c.put(
            i,
            &Digests {
                md5: Some([0xaa; 16]),
                ..Digests::default()
            },
            later()
        ));
        let bytes = c.encode();
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM);
        assert_eq!(
            hex::encode(body),
            "504b4843010101020301050c0701aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa0000"
        );
        assert_eq!(sum, ring::digest::digest(&ring::digest::SHA256, body).as_ref());
    }

    #[test]
    fn a_kind_not_cached_is_a_miss_until_put() {
        let mut c = HashCache::new(10);
        assert!(c.put(id(1, 1), &sha256(1), later()));
        let md5_and_sha256 = Kinds {
            md5: true,
            sha1: false,
            sha256: true,
        };
        assert_eq!(c.get(&id(1, 1), md5_and_sha256), None);
        assert_eq!(c.cached(&id(1, 1)), SHA256_ONLY);
        // Hashing adds MD5; SHA-256 stays.
        assert!(c.put(
            id(1, 1),
            &Digests {
                md5: Some([2; 16]),
                ..Digests::default()
            },
            later()
        ));
        let got = c.get(&id(1, 1), md5_and_sha256).expect("both cached");
        assert_eq!(got.md5, Some([2; 16]));
        assert_eq!(got.sha256, Some([1; 32]));
        assert_eq!(got.sha1, None, "only what was asked for");
    }

    #[test]
    fn a_new_identity_for_the_same_inode_replaces_the_entry() {
        let mut c = HashCache::new(10);
        assert!(c.put(id(1, 1), &all(1), later()));
        let changed = Identity {
            ctime_nsec: 1,
            ..id(1, 1)
        };
        assert_eq!(c.get(&changed, SHA256_ONLY), None);
        assert!(!c.mark_seen(&changed));
        assert!(c.put(changed, &sha256(9), later()));
        assert_eq!(c.get(&changed, SHA256_ONLY), Some(sha256(9)));
        assert_eq!(
            c.cached(&changed),
            SHA256_ONLY,
            "the old MD5 and SHA-1 went with the old identity"
        );
        assert_eq!(c.get(&id(1, 1), SHA256_ONLY), None);
        assert_eq!(c.len(), 1);
    }

    /// Each field of the identity on its own makes a miss.
    #[test]
    fn every_identity_field_counts() {
        let mut c = HashCache::new(10);
        let base = id(3, 4);
        assert!(c.put(base, &sha256(1), later()));
        let variants = [
            Identity { size: 69, ..base },
            Identity {
                mtime: base.mtime + 1,
                ..base
            },
            Identity {
                mtime_nsec: 0,
                ..base
            },
            Identity {
                ctime: base.ctime + 1,
                ..base
            },
            Identity {
                ctime_nsec: 0,
                ..base
            },
            Identity { dev: 4, ..base },
            Identity { ino: 5, ..base },
        ];
        for v in variants {
            assert_eq!(c.get(&v, SHA256_ONLY), None, "{v:?}");
        }
        assert!(c.get(&base, SHA256_ONLY).is_some());
    }

    #[test]
    fn racy_margin() {
        fn check(ctime: (i64, u32), hashed_at: Duration, expected: bool) {
            let i = Identity {
                ctime: ctime.0,
                ctime_nsec: ctime.1,
                ..id(1, 1)
            };
            assert_eq!(
                i.settled_before(UNIX_EPOCH + hashed_at),
                expected,
                "{ctime:?} {hashed_at:?}"
            );
            assert_eq!(
                HashCache::new(1).put(i, &sha256(1), UNIX_EPOCH + hashed_at),
                expected
            );
        }
        check((100, 0), Duration::new(102, 0), true);
        check((100, 0), Duration::new(101, 999_999_999), false);
        check((100, 500), Duration::new(102, 499), false);
        check((100, 500), Duration::new(102, 500), true);
        check((100, 0), Duration::new(100, 0), false);
        check((200, 0), Duration::new(100, 0), false);
        check((-5, 0), Duration::new(0, 0), true);
        check(
            (i64::MAX, u32::MAX),
            Duration::new(i64::MAX as u64, 999_999_999),
            false,
        );
        check((-1, 0), Duration::new(i64::MAX as u64, 999_999_999), true);
    }

    fn write(path: &Path, content: &[u8]) {
        fs::write(path, content).expect("write");
    }

    fn set_mtime(path: &Path, t: SystemTime) {
        let f = OpenOptions::new().write(true).open(path).expect("open");
        f.set_modified(t).expect("set mtime");
    }

    /// Rewriting a file with the same size gives it a new identity, so the cached digest no
    /// longer answers for it. The file starts with an mtime in 2001, so the rewrite's "now" is
    /// bound to differ whatever the timestamp granularity.
    #[test]
    fn modifying_a_file_with_the_same_size_invalidates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write(&path, b"benign!!");
        set_mtime(&path, UNIX_EPOCH + Duration::from_secs(1_000_000_000));
        let before = Identity::of(&fs::symlink_metadata(&path).expect("stat"));
        let mut c = HashCache::new(10);
        assert!(c.put(before, &sha256(1), SystemTime::now() + RACY_MARGIN));
        assert!(c.get(&before, SHA256_ONLY).is_some());

        write(&path, b"malware!");
        let after = Identity::of(&fs::symlink_metadata(&path).expect("stat"));
        assert_eq!(
            (after.dev, after.ino, after.size),
            (before.dev, before.ino, before.size)
        );
        assert_ne!((after.mtime, after.mtime_nsec), (before.mtime, before.mtime_nsec));
        assert_eq!(c.get(&after, SHA256_ONLY), None);
        assert!(!c.mark_seen(&after));
    }

    #[test]
    fn touching_a_file_invalidates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write(&path, b"content");
        set_mtime(&path, UNIX_EPOCH + Duration::from_secs(1_000_000_000));
        let before = Identity::of(&fs::symlink_metadata(&path).expect("stat"));
        let mut c = HashCache::new(10);
        assert!(c.put(before, &sha256(1), SystemTime::now() + RACY_MARGIN));
        set_mtime(&path, SystemTime::now());
        let after = Identity::of(&fs::symlink_metadata(&path).expect("stat"));
        assert_ne!(after, before);
        assert_eq!(c.get(&after, SHA256_ONLY), None);
    }

    /// A file hashed right after it was written is not cached: a same-size rewrite within the
    /// same timestamp tick would keep its identity and inherit the old digest.
    #[test]
    fn a_file_changed_just_before_hashing_is_not_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write(&path, b"fresh");
        let i = Identity::of(&fs::symlink_metadata(&path).expect("stat"));
        let mut c = HashCache::new(10);
        assert!(!c.put(i, &sha256(1), SystemTime::now()));
        assert!(c.is_empty());
    }

    #[test]
    fn corrupt_files_are_discarded_with_a_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CACHE_FILE);
        let mut c = HashCache::new(10);
        assert!(c.put(id(1, 1), &all(1), later()));
        let good = c.encode();

        let mut flipped = good.clone();
        flipped[20] ^= 1;
        let mut wrong_format = good.clone();
        wrong_format[4] = 9;
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (flipped, DecodeError::Checksum),
            (good[..good.len() - 1].to_vec(), DecodeError::Checksum),
            (b"garbage".to_vec(), DecodeError::Magic),
            (Vec::new(), DecodeError::Magic),
            (wrong_format, DecodeError::Format(9)),
            (
                vec![0; 10_000],
                DecodeError::TooLarge {
                    len: 10_000,
                    cap: encoded_cap(10),
                },
            ),
        ];
        for (bytes, reason) in cases {
            fs::write(&path, &bytes).expect("write");
            let (c, warning) = HashCache::load(&path, 10).expect("a bad cache is not an error");
            assert!(c.is_empty());
            assert!(c.is_dirty(), "the next save replaces the bad file");
            assert_eq!(warning.map(|w| w.reason), Some(reason));
        }
    }

    /// A body whose checksum is right but whose content breaks a rule.
    #[test]
    fn bad_bodies_are_refused() {
        fn framed(body: &[u8]) -> Vec<u8> {
            let mut out = MAGIC.to_vec();
            out.push(FORMAT);
            out.extend_from_slice(body);
            let sum = ring::digest::digest(&ring::digest::SHA256, &out);
            out.extend_from_slice(sum.as_ref());
            out
        }
        fn entry(dev: u64, ino: u64, nsec: u32, digest: bool) -> Vec<u8> {
            let w = WireEntry {
                dev,
                ino,
                size: 1,
                mtime: 1,
                mtime_nsec: nsec,
                ctime: 1,
                ctime_nsec: 1,
                md5: digest.then_some([1; 16]),
                sha1: None,
                sha256: None,
            };
            postcard::to_allocvec(&w).expect("encode")
        }
        fn check(body: Vec<u8>, max: usize, expected: Result<usize, DecodeError>) {
            let got = decode(&framed(&body), max).map(|c| c.len());
            assert_eq!(got, expected, "{}", hex::encode(&body));
        }
        let cat = |parts: &[Vec<u8>]| parts.concat();
        check(
            cat(&[vec![2], entry(1, 1, 0, true), entry(1, 2, 0, true)]),
            5,
            Ok(2),
        );
        check(cat(&[vec![0]]), 5, Ok(0));
        check(
            cat(&[vec![2], entry(1, 2, 0, true), entry(1, 1, 0, true)]),
            5,
            Err(DecodeError::Entry {
                index: 1,
                what: "out of order or duplicated",
            }),
        );
        check(
            cat(&[vec![2], entry(1, 1, 0, true), entry(1, 1, 0, true)]),
            5,
            Err(DecodeError::Entry {
                index: 1,
                what: "out of order or duplicated",
            }),
        );
        check(
            cat(&[vec![1], entry(1, 1, 1_000_000_000, true)]),
            5,
            Err(DecodeError::Entry {
                index: 0,
                what: "nanoseconds out of range",
            }),
        );
        check(
            cat(&[vec![1], entry(1, 1, 0, false), vec![0; 30]]),
            5,
            Err(DecodeError::Entry {
                index: 0,
                what: "no digest",
            }),
        );
        check(
            cat(&[vec![2], entry(1, 1, 0, true), entry(1, 2, 0, true)]),
            1,
            Err(DecodeError::TooMany { count: 2, max: 1 }),
        );
        // A count the bytes cannot hold is refused before anything is allocated for it.
        check(
            cat(&[vec![0xff, 0xff, 0xff, 0xff, 0x0f], entry(1, 1, 0, true)]),
            usize::MAX,
            Err(DecodeError::TooMany {
                count: u64::from(u32::MAX),
                max: 1,
            }),
        );
        check(
            cat(&[vec![1], entry(1, 1, 0, true), vec![0]]),
            5,
            Err(DecodeError::Trailing(1)),
        );
        let mut bad_tag = entry(1, 1, 0, true);
        bad_tag[7] = 2;
        check(
            cat(&[vec![1], bad_tag]),
            5,
            Err(DecodeError::Entry {
                index: 0,
                what: "malformed",
            }),
        );
    }

    #[test]
    fn generations_drop_what_a_complete_scan_did_not_see() {
        let mut c = HashCache::new(10);
        for ino in 0..5 {
            assert!(c.put(id(1, ino), &sha256(1), later()));
        }
        c.begin_generation();
        assert!(c.mark_seen(&id(1, 0)));
        assert!(c.mark_seen(&id(1, 3)));
        assert!(c.put(id(1, 4), &sha256(2), later()), "put marks too");
        assert!(c.put(id(1, 7), &sha256(2), later()));
        assert_eq!(c.sweep(), 2);
        let left: Vec<u64> = (0..8)
            .filter(|&i| c.get(&id(1, i), SHA256_ONLY).is_some())
            .collect();
        assert_eq!(left, [0, 3, 4, 7]);
        // A fresh generation with nothing marked drops everything.
        c.begin_generation();
        assert_eq!(c.sweep(), 4);
        assert!(c.is_empty());
    }

    #[test]
    fn a_full_cache_refuses_new_inodes_until_a_sweep() {
        let mut c = HashCache::new(3);
        for ino in 0..3 {
            assert!(c.put(id(1, ino), &sha256(1), later()));
        }
        assert!(!c.put(id(1, 9), &sha256(1), later()), "full");
        assert!(
            c.put(id(1, 2), &all(1), later()),
            "an existing inode is still updated"
        );
        c.begin_generation();
        assert!(c.mark_seen(&id(1, 0)));
        assert_eq!(c.sweep(), 2);
        assert!(c.put(id(1, 9), &sha256(1), later()));
        assert_eq!(c.len(), 2);
    }

    /// A load with a smaller bound than the file was written with is a discard, not a
    /// truncation: which entries to keep is not the decoder's call.
    #[test]
    fn a_cache_over_a_lowered_bound_is_discarded() {
        let mut c = HashCache::new(10);
        for ino in 0..3 {
            assert!(c.put(id(1, ino), &sha256(1), later()));
        }
        assert!(matches!(decode(&c.encode(), 2), Err(DecodeError::TooMany { .. })));
    }

    #[test]
    fn many_entries_in_shuffled_order_survive_tail_merges() {
        let mut c = HashCache::new(100_000);
        // A permutation of 0..n (multiplication by a unit modulo a prime).
        let n = 20_011u64;
        let order: Vec<u64> = (0..n).map(|i| i * 7_919 % n).collect();
        for &i in &order {
            assert!(c.put(id(i % 3, i), &sha256((i % 251) as u8), later()));
        }
        assert_eq!(c.len(), n as usize);
        assert!(c.tail.len() <= c.tail_min.max(c.sorted.len() / 16));
        for i in 0..n {
            assert_eq!(
                c.get(&id(i % 3, i), SHA256_ONLY),
                Some(sha256((i % 251) as u8)),
                "{i}"
            );
            // Absent keys on either side of each present one, across every block.
            assert_eq!(c.get(&id(i % 3 + 3, i), SHA256_ONLY), None);
            assert_eq!(c.get(&id(i % 3, i + n), SHA256_ONLY), None);
        }
        assert_eq!(c.get(&id(0, 0), SHA256_ONLY), Some(sha256(0)));
        let back = decode(&c.encode(), 100_000).expect("decode");
        assert_eq!(back.len(), n as usize);
        assert!(back.sorted.windows(2).all(|w| w[0].key() < w[1].key()));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8, u8, u8),
        Mark(u8, u8),
        Lookup(u8, u8, u8),
        Begin,
        Sweep,
        Reload,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..24, 0u8..3, 1u8..8, any::<u8>()).prop_map(|(k, v, kinds, d)| Op::Put(k, v, kinds, d)),
            3 => (0u8..24, 0u8..3).prop_map(|(k, v)| Op::Mark(k, v)),
            3 => (0u8..24, 0u8..3, 0u8..8).prop_map(|(k, v, kinds)| Op::Lookup(k, v, kinds)),
            1 => Just(Op::Begin),
            1 => Just(Op::Sweep),
            1 => Just(Op::Reload),
        ]
    }

    fn ident(key: u8, version: u8) -> Identity {
        Identity {
            size: u64::from(version),
            ..id(u64::from(key % 2), u64::from(key))
        }
    }

    fn digests_of(kinds: u8, d: u8) -> Digests {
        Digests {
            md5: (kinds & MD5 != 0).then_some([d; 16]),
            sha1: (kinds & SHA1 != 0).then_some([d; 20]),
            sha256: (kinds & SHA256 != 0).then_some([d; 32]),
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, 16);
            let _ = decode_body(&bytes, 16);
            let _ = decode_body(&bytes, usize::MAX);
        }

        /// Whatever is put comes back after an encode and a decode, byte for byte.
        #[test]
        fn round_trips(
            entries in proptest::collection::vec(
                (
                    any::<(u64, u64, u64, i64, i64)>(),
                    0u32..1_000_000_000,
                    0u32..1_000_000_000,
                    1u8..8,
                    any::<u8>(),
                ),
                0..64,
            )
        ) {
            let mut c = HashCache::new(64);
            c.tail_min = 5;
            let mut want: HashMap<(u64, u64), (Identity, Digests)> = HashMap::new();
            for ((dev, ino, size, mtime, ctime), mtime_nsec, ctime_nsec, kinds, d) in entries {
                let ctime = ctime.min(1_700_000_000);
                let i = Identity { dev, ino, size, mtime, mtime_nsec, ctime, ctime_nsec };
                let dg = digests_of(kinds, d);
                prop_assert!(c.put(i, &dg, later()));
                want.insert((dev, ino), (i, dg));
            }
            let bytes = c.encode();
            let back = decode(&bytes, 64).expect("own encoding");
            prop_assert_eq!(back.len(), want.len());
            for (i, d) in want.values() {
                prop_assert_eq!(back.get(i, ALL).is_some(), digest_bits(d) == 7);
                prop_assert_eq!(back.get(i, back.cached(i)), Some(d.clone()));
            }
            prop_assert_eq!(back.encode(), bytes);
        }

        #[test]
        fn damaged_encodings_never_panic(
            n in 0u64..20,
            at in any::<prop::sample::Index>(),
            xor in 1u8..,
            cut in any::<prop::sample::Index>(),
        ) {
            let mut c = HashCache::new(100);
            for i in 0..n {
                c.put(id(i, i * 3), &all(i as u8), later());
            }
            let good = c.encode();
            let body = &good[HEADER..good.len() - CHECKSUM];
            let mut bad = body.to_vec();
            if !bad.is_empty() {
                let i = at.index(bad.len());
                bad[i] ^= xor;
            }
            let _ = decode_body(&bad, 100);
            let _ = decode_body(&body[..cut.index(body.len() + 1)], 100);
            let mut flipped = good.clone();
            let i = at.index(flipped.len());
            flipped[i] ^= xor;
            prop_assert!(decode(&flipped, 100).is_err());
        }

        /// The cache behaves like a plain map from identity to digests, with sweeps removing
        /// what was not seen, whatever the order of operations and however often it is saved
        /// and loaded on the way.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 0..200)) {
            let mut c = HashCache::new(16);
            c.tail_min = 3;
            let mut model: HashMap<(u64, u64), (Identity, Digests, bool)> = HashMap::new();
            for op in ops {
                match op {
                    Op::Put(k, v, kinds, d) => {
                        let i = ident(k, v);
                        let dg = digests_of(kinds, d);
                        let key = (i.dev, i.ino);
                        let fits = model.contains_key(&key) || model.len() < 16;
                        prop_assert_eq!(c.put(i, &dg, later()), fits);
                        if fits {
                            let slot = model.entry(key).or_insert((i, Digests::default(), true));
                            if slot.0 != i {
                                *slot = (i, Digests::default(), true);
                            }
                            slot.1.md5 = dg.md5.or(slot.1.md5);
                            slot.1.sha1 = dg.sha1.or(slot.1.sha1);
                            slot.1.sha256 = dg.sha256.or(slot.1.sha256);
                            slot.2 = true;
                        }
                    }
                    Op::Mark(k, v) => {
                        let i = ident(k, v);
                        let hit = match model.get_mut(&(i.dev, i.ino)) {
                            Some(slot) if slot.0 == i => { slot.2 = true; true }
                            _ => false,
                        };
                        prop_assert_eq!(c.mark_seen(&i), hit);
                    }
                    Op::Lookup(k, v, kinds) => {
                        let i = ident(k, v);
                        let want = digests_of(kinds, 0);
                        let expected = match model.get_mut(&(i.dev, i.ino)) {
                            Some(slot) if slot.0 == i => {
                                slot.2 = true;
                                (digest_bits(&slot.1) & kinds == kinds).then(|| Digests {
                                    md5: want.md5.and(slot.1.md5),
                                    sha1: want.sha1.and(slot.1.sha1),
                                    sha256: want.sha256.and(slot.1.sha256),
                                })
                            }
                            _ => None,
                        };
                        let k = Kinds {
                            md5: kinds & MD5 != 0,
                            sha1: kinds & SHA1 != 0,
                            sha256: kinds & SHA256 != 0,
                        };
                        prop_assert_eq!(c.lookup(&i, k), expected);
                    }
                    Op::Begin => {
                        c.begin_generation();
                        model.values_mut().for_each(|s| s.2 = false);
                    }
                    Op::Sweep => {
                        let before = model.len();
                        model.retain(|_, s| s.2);
                        prop_assert_eq!(c.sweep(), before - model.len());
                    }
                    Op::Reload => {
                        c = decode(&c.encode(), 16).expect("own encoding");
                        c.tail_min = 3;
                        // Loaded entries start unseen.
                        model.values_mut().for_each(|s| s.2 = false);
                    }
                }
                prop_assert_eq!(c.len(), model.len());
                for (i, d, _) in model.values() {
                    prop_assert_eq!(c.get(i, ALL), (digest_bits(d) == 7).then(|| d.clone()));
                    let k = c.cached(i);
                    prop_assert_eq!(bits(k), digest_bits(d));
                    prop_assert_eq!(c.get(i, k), Some(d.clone()));
                }
            }
        }
    }
}
