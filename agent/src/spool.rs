//! The sightings spool: reports wait on disk, numbered, until the collector acknowledges them.
//!
//! `DIR/spool/` (0700) holds one file per batch, `<epoch hex>-<seq 20 digits>.pkt`, and
//! `state.pkt` (the epoch, the last sequence number used, the count of sightings dropped). Every
//! file is written whole under a temporary name, fsynced, renamed into place, and the directory
//! fsynced before [`Spool::push`] returns: a batch the caller handed over survives a crash.
//!
//! Numbering: a batch is `(epoch, seq)`, `seq` counting from 1 without gaps within the epoch.
//! The epoch is random, made when the spool is created. When the collector already holds a
//! different batch under a number (the spool came back from a VM snapshot or a cloned image),
//! [`Spool::restart_epoch`] renumbers every unacknowledged batch under a new epoch, so real
//! sightings are never discarded as duplicates.
//!
//! Invariants:
//! - **A batch is never lost**, except the oldest ones when more than `max_batches` are held:
//!   those are deleted and their sightings counted in [`Spool::dropped`].
//! - **A number is never reused with other content within an epoch.** `state.pkt` records the
//!   last number before the batch is acknowledged and deleted, and a restart takes the larger of
//!   it and the newest file.
//! - **With `state.pkt` intact, every batch file of another epoch is a copy.** Renumbering
//!   writes the new copies first, commits by writing `state.pkt` with the new epoch, then
//!   deletes the old copies; a crash before the commit leaves new copies that are deleted at the
//!   next open, one after it old copies that are deleted likewise. A damaged `state.pkt` is set
//!   aside and every batch found is adopted into a new epoch, so nothing is lost then either.
//! - **Every batch passes the collector's checks** ([`wire::ClientMsg::check`]) and fits in one
//!   frame, so one bad sighting cannot block the queue: an item that breaks a cap is dropped
//!   (and counted) when pushed.
//! - A damaged batch file (truncated, wrong checksum, not the batch its name says) is renamed
//!   `*.bad` with a warning; it never stops the agent. Its sightings are counted as dropped when
//!   the spool knew how many it held (it was written or read whole since the spool was opened).
//!
//! One process uses a spool at a time: the daemon, holding the state directory's daemon lock.

use std::collections::VecDeque;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use picket_proto::wire::{self, Batch, ClientMsg, SightingReport};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::store::{self, sync_dir, Durability};
use crate::AgentError;

/// The spool's directory inside the state directory.
pub const SPOOL_DIR: &str = "spool";
/// The spool's state file inside [`SPOOL_DIR`].
pub const STATE_FILE: &str = "state.pkt";
/// The most bytes of sightings in one batch: half a frame, so a batch always fits in one.
pub const MAX_BATCH_BYTES: usize = wire::MAX_CLIENT_FRAME / 2;

const BATCH_MAGIC: [u8; 4] = *b"PKSB";
const STATE_MAGIC: [u8; 4] = *b"PKSQ";
const FORMAT: u8 = 1;
const CHECKSUM: usize = 32;
/// The largest batch file read back.
const BATCH_FILE_CAP: u64 = (MAX_BATCH_BYTES + 4096) as u64;
const STATE_FILE_CAP: u64 = 1024;
const SUFFIX: &str = ".pkt";

/// A batch held on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    epoch: u64,
    seq: u64,
    items: u64,
}

/// The on-disk queue of numbered sighting batches.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    epoch: u64,
    last_seq: u64,
    dropped: u64,
    max_batches: usize,
    /// Oldest first.
    held: VecDeque<Held>,
    /// The oldest batch, read back.
    head: Option<Batch>,
    rng: SystemRandom,
}

/// The spool's state file (`state.pkt`): its epoch, the last batch number given out, and the
/// sightings dropped by the bound so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateWire {
    /// The epoch every held batch belongs to.
    pub epoch: u64,
    /// The last batch number given out in it.
    pub last_seq: u64,
    /// Sightings dropped by the bound so far.
    pub dropped: u64,
}

/// Decodes a state file's bytes (magic, format, checksum, then the body). Public so that a
/// fuzz target can reach it; the caller has already capped the bytes.
pub fn decode_state(bytes: &[u8]) -> Result<StateWire, String> {
    let body = unseal(STATE_MAGIC, bytes)?;
    postcard::from_bytes::<StateWire>(body).map_err(|e| e.to_string())
}

/// A state file's bytes.
pub fn encode_state(state: &StateWire) -> Vec<u8> {
    // Invariant: three integers always serialise.
    let body = postcard::to_allocvec(state).expect("the spool state serialises");
    seal(STATE_MAGIC, &body)
}

fn batch_name(epoch: u64, seq: u64) -> String {
    format!("{epoch:016x}-{seq:020}{SUFFIX}")
}

/// `(epoch, seq)` from a batch file name, or `None` for any other name.
fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (e, s) = stem.split_once('-')?;
    if e.len() != 16 || s.len() != 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let epoch = u64::from_str_radix(e, 16).ok()?;
    let seq = s.parse().ok()?;
    (seq > 0).then_some((epoch, seq))
}

/// `magic`, format, postcard body, SHA-256 of all that.
fn seal(magic: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len() + CHECKSUM);
    out.extend_from_slice(&magic);
    out.push(FORMAT);
    out.extend_from_slice(body);
    let sum = picket_proto::sha256(&out);
    out.extend_from_slice(&sum);
    out
}

/// The body of a sealed file, after checking magic, format and checksum.
fn unseal(magic: [u8; 4], bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < 5 + CHECKSUM {
        return Err(format!("{} bytes is too short", bytes.len()));
    }
    if bytes[..4] != magic {
        return Err("not a Picket spool file (bad magic)".into());
    }
    if bytes[4] != FORMAT {
        return Err(format!("format {} is not {FORMAT}", bytes[4]));
    }
    let (content, sum) = bytes.split_at(bytes.len() - CHECKSUM);
    if picket_proto::sha256(content)[..] != sum[..] {
        return Err("checksum mismatch (a torn or altered file)".into());
    }
    Ok(&content[5..])
}

/// The bytes of a batch file: magic `PKSB`, format, the postcard [`Batch`], and the SHA-256 of
/// all that. [`decode_batch`] reads them back.
pub fn encode_batch(b: &Batch) -> Vec<u8> {
    // Invariant: integers, strings and enums always serialise into a Vec.
    seal(
        BATCH_MAGIC,
        &postcard::to_allocvec(b).expect("a batch serialises"),
    )
}

/// Decodes and checks the bytes of a batch file that its name says holds `(epoch, seq)`: the
/// magic, format and checksum, a postcard [`Batch`] with nothing after it, numbered as named,
/// not empty, and passing the collector's own checks ([`ClientMsg::check`]). The error says
/// what is wrong, for the warning given when the file is set aside. The caller caps the bytes
/// read (a batch file is at most [`MAX_BATCH_BYTES`] and a few kilobytes).
pub fn decode_batch(bytes: &[u8], epoch: u64, seq: u64) -> Result<Batch, String> {
    let body = unseal(BATCH_MAGIC, bytes)?;
    let (b, rest): (Batch, &[u8]) = postcard::take_from_bytes(body).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the batch", rest.len()));
    }
    if (b.epoch, b.seq) != (epoch, seq) {
        return Err(format!(
            "holds batch {:016x}/{} but is named for {epoch:016x}/{seq}",
            b.epoch, b.seq
        ));
    }
    if b.items.is_empty() {
        return Err("an empty batch".into());
    }
    let msg = ClientMsg::Report(b);
    msg.check()?;
    let ClientMsg::Report(b) = msg else {
        return Err("not a report".into());
    };
    Ok(b)
}

fn item_size(item: &SightingReport) -> usize {
    postcard::to_allocvec(item).map_or(usize::MAX, |v| v.len())
}

/// Why an item cannot go to the collector, if it cannot.
fn refuse(item: &SightingReport) -> Option<String> {
    let probe = ClientMsg::Report(Batch {
        epoch: 0,
        seq: 1,
        items: vec![item.clone()],
    });
    if let Err(e) = probe.check() {
        return Some(e);
    }
    (item_size(item) > MAX_BATCH_BYTES).then(|| "larger than a batch may be".to_owned())
}

fn remove(path: &Path) -> Result<(), AgentError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(AgentError::io(path)(e)),
        _ => Ok(()),
    }
}

/// Renames a damaged file to `*.bad`, keeping it for a post-mortem but out of the queue.
fn set_aside(path: &Path, why: &str) {
    let mut bad = path.as_os_str().to_owned();
    bad.push(".bad");
    tracing::warn!(
        "{}: {why}; set aside as {}",
        path.display(),
        Path::new(&bad).display()
    );
    if let Err(e) = fs::rename(path, &bad) {
        tracing::warn!("{}: could not set it aside: {e}", path.display());
        let _ = fs::remove_file(path);
    }
}

fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    crate::store::read_capped(path, cap).map_err(|e| match e {
        AgentError::Io { error, .. } => error.to_string(),
        other => other.to_string(),
    })
}

impl Spool {
    /// Opens the spool in `dir/spool` (created 0700), keeping at most `max_batches` batches.
    ///
    /// Removes temporary files a killed writer left, sets damaged files aside (with a warning,
    /// never an error), deletes copies a crashed renumbering left (see the module invariants),
    /// and starts a new random epoch when there is no state yet. Errors only when the directory
    /// itself cannot be made, read or written.
    pub fn open(dir: &Path, max_batches: usize) -> Result<Spool, AgentError> {
        let path = dir.join(SPOOL_DIR);
        match DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let meta = fs::symlink_metadata(&path).map_err(AgentError::io(&path))?;
                if !meta.is_dir() {
                    return Err(AgentError::io(&path)(io::Error::other("not a directory")));
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                    .map_err(AgentError::io(&path))?;
            }
            Err(e) => return Err(AgentError::io(&path)(e)),
        }
        let mut spool = Spool {
            dir: path.clone(),
            epoch: 0,
            last_seq: 0,
            dropped: 0,
            max_batches: max_batches.max(1),
            held: VecDeque::new(),
            head: None,
            rng: SystemRandom::new(),
        };
        // Temporary files, and the batch files' names.
        let mut found = Vec::new();
        for entry in fs::read_dir(&path).map_err(AgentError::io(&path))? {
            let entry = entry.map_err(AgentError::io(&path))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') && name.contains(store::TEMP_MARK) {
                remove(&entry.path())?;
            } else if let Some(id) = parse_name(name) {
                found.push(id);
            }
        }
        found.sort_unstable();
        // The state.
        let state_path = path.join(STATE_FILE);
        let state = match read_capped(&state_path, STATE_FILE_CAP) {
            Ok(bytes) => match decode_state(&bytes) {
                Ok(s) => Some(s),
                Err(why) => {
                    set_aside(&state_path, &why);
                    None
                }
            },
            Err(_) if !state_path.exists() => None,
            Err(why) => {
                set_aside(&state_path, &why);
                None
            }
        };
        // The batches, read whole once so a damaged one is found now rather than when it is due.
        let read = |epoch: u64, seq: u64| -> Option<Held> {
            let p = path.join(batch_name(epoch, seq));
            match read_capped(&p, BATCH_FILE_CAP).and_then(|b| decode_batch(&b, epoch, seq)) {
                Ok(b) => Some(Held {
                    epoch,
                    seq,
                    items: b.items.len() as u64,
                }),
                Err(why) => {
                    set_aside(&p, &why);
                    None
                }
            }
        };
        match state {
            Some(s) => {
                spool.epoch = s.epoch;
                spool.last_seq = s.last_seq;
                spool.dropped = s.dropped;
                for (epoch, seq) in found {
                    if epoch != s.epoch {
                        // A copy left by a renumbering that crashed (see the module invariants).
                        remove(&path.join(batch_name(epoch, seq)))?;
                    } else if let Some(h) = read(epoch, seq) {
                        spool.last_seq = spool.last_seq.max(seq);
                        spool.held.push_back(h);
                    }
                }
            }
            None => {
                // A new spool, or one whose state was lost: a new epoch, and every batch found is
                // adopted into it (sent again if it had been, rather than lost).
                let old: Vec<Held> = found.into_iter().filter_map(|(e, s)| read(e, s)).collect();
                spool.held = old.into();
                spool.renumber()?;
            }
        }
        spool.trim_and_commit()?;
        Ok(spool)
    }

    /// Queues `items` for the collector: split into batches of at most
    /// [`wire::MAX_BATCH_ITEMS`] sightings (and [`MAX_BATCH_BYTES`]), numbered `last_seq + 1`
    /// on, each written durably before this returns. When more than `max_batches` are then
    /// held, the oldest are deleted and their sightings counted in [`Spool::dropped`]. An item
    /// the collector would refuse (a field over its cap) is dropped and counted, with a warning.
    pub fn push(&mut self, items: Vec<SightingReport>) -> Result<(), AgentError> {
        let mut batches: Vec<Vec<SightingReport>> = Vec::new();
        let mut bytes = 0;
        for item in items {
            if let Some(why) = refuse(&item) {
                tracing::warn!(
                    "a sighting of {:.64} cannot be reported ({why}); counted as dropped",
                    item.indicator
                );
                self.dropped += 1;
                continue;
            }
            let size = item_size(&item);
            match batches.last_mut() {
                Some(b) if b.len() < wire::MAX_BATCH_ITEMS && bytes + size <= MAX_BATCH_BYTES => {
                    bytes += size;
                    b.push(item);
                }
                _ => {
                    bytes = size;
                    batches.push(vec![item]);
                }
            }
        }
        let mut result = Ok(());
        for items in batches {
            let b = Batch {
                epoch: self.epoch,
                seq: self.last_seq + 1,
                items,
            };
            if let Err(e) = store::write_file(
                &self.dir,
                &batch_name(b.epoch, b.seq),
                &encode_batch(&b),
                Durability::FileSynced,
            ) {
                result = Err(e);
                break;
            }
            self.last_seq = b.seq;
            self.held.push_back(Held {
                epoch: b.epoch,
                seq: b.seq,
                items: b.items.len() as u64,
            });
            if self.head.is_none() {
                self.head = Some(b);
            }
        }
        // The batches written so far are kept and numbered even when a later one failed.
        let committed = sync_dir(&self.dir).and_then(|()| self.trim_and_commit());
        result.and(committed)
    }

    /// The oldest batch not yet acknowledged.
    pub fn pending(&self) -> Option<Batch> {
        self.head.clone()
    }

    /// How many batches are held.
    pub fn pending_batches(&self) -> usize {
        self.held.len()
    }

    /// The collector committed batch `(epoch, seq)`: it is deleted. An unknown batch is ignored.
    pub fn ack(&mut self, epoch: u64, seq: u64) -> Result<(), AgentError> {
        let Some(i) = self.held.iter().position(|h| (h.epoch, h.seq) == (epoch, seq)) else {
            return Ok(());
        };
        // Not fsynced: a deletion undone by a crash only sends the batch again, which the
        // collector acknowledges as a duplicate.
        remove(&self.dir.join(batch_name(epoch, seq)))?;
        self.held.remove(i);
        if i == 0 {
            self.load_head();
        }
        Ok(())
    }

    /// Starts a new random epoch and renumbers every unacknowledged batch `1..` under it, in
    /// order, durably. Called when the collector holds other content under one of this spool's
    /// numbers (a restored snapshot or a cloned image).
    pub fn restart_epoch(&mut self) -> Result<(), AgentError> {
        self.renumber()?;
        self.load_head();
        Ok(())
    }

    /// Changes the bound; the oldest batches over it are dropped at the next push.
    pub fn set_max_batches(&mut self, max_batches: usize) {
        self.max_batches = max_batches.max(1);
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The last sequence number used in the current epoch (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Sightings dropped since the spool was created (full spool, unreportable items, damaged
    /// files).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// A new epoch; every held batch rewritten under it (`1..`), committed by the state file,
    /// then the old copies deleted.
    fn renumber(&mut self) -> Result<(), AgentError> {
        let mut epoch = self.epoch;
        while epoch == self.epoch || epoch == 0 || self.held.iter().any(|h| h.epoch == epoch) {
            let mut b = [0u8; 8];
            self.rng.fill(&mut b).map_err(|_| {
                AgentError::io(&self.dir)(io::Error::other("the system random source failed"))
            })?;
            epoch = u64::from_le_bytes(b);
        }
        let mut renumbered = VecDeque::with_capacity(self.held.len());
        for h in &self.held {
            let path = self.dir.join(batch_name(h.epoch, h.seq));
            let batch =
                match read_capped(&path, BATCH_FILE_CAP).and_then(|b| decode_batch(&b, h.epoch, h.seq)) {
                    Ok(b) => b,
                    Err(why) => {
                        set_aside(&path, &why);
                        self.dropped += h.items;
                        continue;
                    }
                };
            let seq = renumbered.len() as u64 + 1;
            let b = Batch {
                epoch,
                seq,
                items: batch.items,
            };
            store::write_file(
                &self.dir,
                &batch_name(epoch, seq),
                &encode_batch(&b),
                Durability::FileSynced,
            )?;
            renumbered.push_back(Held {
                epoch,
                seq,
                items: h.items,
            });
        }
        sync_dir(&self.dir)?;
        let old = std::mem::replace(&mut self.held, renumbered);
        let (old_epoch, old_last) = (self.epoch, self.last_seq);
        self.epoch = epoch;
        self.last_seq = self.held.len() as u64;
        if let Err(e) = self.commit() {
            // Not committed: the old numbering stays in force (the new copies are deleted at the
            // next open).
            self.held = old;
            self.epoch = old_epoch;
            self.last_seq = old_last;
            return Err(e);
        }
        for h in old {
            remove(&self.dir.join(batch_name(h.epoch, h.seq)))?;
        }
        Ok(())
    }

    /// Drops the oldest batches over the bound (counted), writes the state, then deletes them.
    fn trim_and_commit(&mut self) -> Result<(), AgentError> {
        let mut gone = Vec::new();
        while self.held.len() > self.max_batches {
            if let Some(h) = self.held.pop_front() {
                self.dropped += h.items;
                gone.push(h);
            }
        }
        self.commit()?;
        for h in &gone {
            remove(&self.dir.join(batch_name(h.epoch, h.seq)))?;
        }
        if !gone.is_empty() || self.head.is_none() {
            self.load_head();
        }
        Ok(())
    }

    /// Writes `state.pkt` durably.
    fn commit(&self) -> Result<(), AgentError> {
        let state = StateWire {
            epoch: self.epoch,
            last_seq: self.last_seq,
            dropped: self.dropped,
        };
        store::write_file(
            &self.dir,
            STATE_FILE,
            &encode_state(&state),
            Durability::FileSynced,
        )?;
        sync_dir(&self.dir)
    }

    /// Reads the oldest batch into `head`, setting aside (and counting) damaged ones.
    fn load_head(&mut self) {
        self.head = None;
        while let Some(h) = self.held.front().copied() {
            let path = self.dir.join(batch_name(h.epoch, h.seq));
            match read_capped(&path, BATCH_FILE_CAP).and_then(|b| decode_batch(&b, h.epoch, h.seq)) {
                Ok(b) => {
                    self.head = Some(b);
                    return;
                }
                Err(why) => {
                    set_aside(&path, &why);
                    self.dropped += h.items;
                    self.held.pop_front();
                }
            }
        }
    }

    /// Every held batch, oldest first, read back from disk (for tests and inspection).
    pub fn batches(&self) -> Result<Vec<Batch>, AgentError> {
        self.held
            .iter()
            .map(|h| {
                let path = self.dir.join(batch_name(h.epoch, h.seq));
                let bytes = crate::store::read_capped(&path, BATCH_FILE_CAP)?;
                decode_batch(&bytes, h.epoch, h.seq)
                    .map_err(|why| AgentError::io(&path)(io::Error::new(io::ErrorKind::InvalidData, why)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::{BTreeMap, BTreeSet};

    use picket_proto::wire::ObservedKind;
    use proptest::prelude::*;

    use super::*;

    fn item(n: u64) -> SightingReport {
        SightingReport {
            indicator: format!("indicator--{n}"),
            what: "sha256".into(),
            observed: ObservedKind::File,
            location: Some(format!("~/Downloads/{n}.exe")),
            first_seen: 1_700_000_000,
            last_seen: 1_700_000_060,
            count: 1,
            set_version: 3,
        }
    }

    fn items(from: u64, n: u64) -> Vec<SightingReport> {
        (from..from + n).map(item).collect()
    }

    fn ids(b: &Batch) -> Vec<u64> {
        b.items
            .iter()
            .map(|i| i.indicator["indicator--".len()..].parse().unwrap())
            .collect()
    }

    fn spool_files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir.join(SPOOL_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn pushed_batches_are_numbered_and_survive_a_restart_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        let epoch = s.epoch();
        assert_ne!(epoch, 0);
        assert_eq!((s.last_seq(), s.pending_batches(), s.pending()), (0, 0, None));
        s.push(items(0, 2)).unwrap();
        s.push(items(2, 1)).unwrap();
        s.push(Vec::new()).unwrap();
        assert_eq!((s.last_seq(), s.pending_batches()), (2, 2));
        let mode = fs::metadata(dir.path().join(SPOOL_DIR))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(s);
        let mut s = Spool::open(dir.path(), 100).unwrap();
        assert_eq!((s.epoch(), s.last_seq(), s.pending_batches()), (epoch, 2, 2));
        let b = s.pending().unwrap();
        assert_eq!((b.epoch, b.seq, ids(&b)), (epoch, 1, vec![0, 1]));
        s.ack(epoch, 1).unwrap();
        s.ack(epoch, 1).unwrap();
        s.ack(epoch ^ 1, 2).unwrap();
        assert_eq!(s.pending().unwrap().seq, 2);
        s.ack(epoch, 2).unwrap();
        assert_eq!(s.pending(), None);
        drop(s);
        // Acknowledged batches stay gone; their numbers are not handed out again.
        let mut s = Spool::open(dir.path(), 100).unwrap();
        assert_eq!((s.epoch(), s.last_seq(), s.pending()), (epoch, 2, None));
        s.push(items(3, 1)).unwrap();
        assert_eq!(s.pending().unwrap().seq, 3);
        assert_eq!(
            spool_files(dir.path()),
            [batch_name(epoch, 3), STATE_FILE.to_owned()]
        );
    }

    #[test]
    fn large_pushes_are_split_within_the_item_and_byte_caps() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        s.push(items(0, 2_500)).unwrap();
        let sizes: Vec<usize> = s.batches().unwrap().iter().map(|b| b.items.len()).collect();
        assert_eq!(sizes, [1_000, 1_000, 500]);
        // Long locations: the byte cap splits before the item cap does.
        let mut big = items(10_000, 1_000);
        for i in &mut big {
            i.location = Some("x".repeat(wire::MAX_FIELD));
        }
        s.push(big).unwrap();
        for b in s.batches().unwrap() {
            let frame = wire::encode_frame(&ClientMsg::Report(b.clone()));
            assert!(frame.len() <= wire::MAX_CLIENT_FRAME, "{}", frame.len());
            ClientMsg::Report(b).check().unwrap();
        }
        assert!(s.pending_batches() > 4);
    }

    #[test]
    fn an_item_the_collector_would_refuse_is_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        let mut bad = item(1);
        bad.indicator = "i".repeat(wire::MAX_FIELD + 1);
        let mut backwards = item(2);
        backwards.last_seen = backwards.first_seen - 60;
        s.push(vec![bad, item(0), backwards]).unwrap();
        assert_eq!(s.dropped(), 2);
        assert_eq!(ids(&s.pending().unwrap()), [0]);
    }

    #[test]
    fn the_spool_is_bounded_and_counts_what_it_drops() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 3).unwrap();
        for n in 0..5 {
            s.push(items(n * 10, n + 1)).unwrap();
        }
        // Batches 1 (1 item) and 2 (2 items) went.
        assert_eq!((s.pending_batches(), s.dropped(), s.last_seq()), (3, 3, 5));
        assert_eq!(s.pending().unwrap().seq, 3);
        assert_eq!(spool_files(dir.path()).len(), 4);
        drop(s);
        // A smaller bound at the next start drops more, and says so.
        let s = Spool::open(dir.path(), 1).unwrap();
        assert_eq!((s.pending_batches(), s.dropped()), (1, 3 + 3 + 4));
        assert_eq!(s.pending().unwrap().seq, 5);
    }

    #[test]
    fn a_leftover_temporary_file_and_a_torn_batch_do_not_stop_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        s.push(items(0, 1)).unwrap();
        s.push(items(1, 1)).unwrap();
        s.push(items(2, 1)).unwrap();
        let epoch = s.epoch();
        drop(s);
        let sp = dir.path().join(SPOOL_DIR);
        // A writer killed between creating its temporary file and renaming it.
        fs::write(
            sp.join(format!(".{}{}4242", batch_name(epoch, 4), store::TEMP_MARK)),
            b"half",
        )
        .unwrap();
        fs::write(sp.join(format!(".{STATE_FILE}{}4242", store::TEMP_MARK)), b"").unwrap();
        // A batch cut short (a disk that lied about fsync, or a hand at the keyboard).
        let torn = sp.join(batch_name(epoch, 2));
        let bytes = fs::read(&torn).unwrap();
        fs::write(&torn, &bytes[..bytes.len() / 2]).unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        let got: Vec<u64> = s.batches().unwrap().iter().map(|b| b.seq).collect();
        assert_eq!(got, [1, 3]);
        assert_eq!(s.dropped(), 0, "the torn batch's size is unknown at open");
        assert_eq!(s.last_seq(), 3);
        s.push(items(3, 1)).unwrap();
        assert_eq!(s.last_seq(), 4);
        let files = spool_files(dir.path());
        assert!(
            files.contains(&format!("{}.bad", batch_name(epoch, 2))),
            "{files:?}"
        );
        assert!(!files.iter().any(|f| f.contains(store::TEMP_MARK)), "{files:?}");
    }

    #[test]
    fn a_batch_damaged_while_queued_is_set_aside_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        s.push(items(0, 1)).unwrap();
        s.push(items(1, 5)).unwrap();
        s.push(items(6, 1)).unwrap();
        let epoch = s.epoch();
        // Corrupt batch 2 after open, then acknowledge batch 1: batch 2 comes due.
        let p = dir.path().join(SPOOL_DIR).join(batch_name(epoch, 2));
        let mut bytes = fs::read(&p).unwrap();
        bytes[10] ^= 0xff;
        fs::write(&p, bytes).unwrap();
        s.ack(epoch, 1).unwrap();
        assert_eq!(s.pending().unwrap().seq, 3);
        assert_eq!(s.dropped(), 5);
    }

    #[test]
    fn a_file_that_is_not_the_batch_its_name_says_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        s.push(items(0, 1)).unwrap();
        s.push(items(1, 1)).unwrap();
        let epoch = s.epoch();
        drop(s);
        let sp = dir.path().join(SPOOL_DIR);
        fs::copy(sp.join(batch_name(epoch, 1)), sp.join(batch_name(epoch, 2))).unwrap();
        let s = Spool::open(dir.path(), 100).unwrap();
        assert_eq!(s.pending_batches(), 1);
    }

    #[test]
    fn a_new_epoch_renumbers_what_was_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        for n in 0..4 {
            s.push(items(n, 1)).unwrap();
        }
        let old = s.epoch();
        s.ack(old, 1).unwrap();
        s.restart_epoch().unwrap();
        let new = s.epoch();
        assert_ne!(new, old);
        let got: Vec<(u64, u64, Vec<u64>)> = s
            .batches()
            .unwrap()
            .iter()
            .map(|b| (b.epoch, b.seq, ids(b)))
            .collect();
        assert_eq!(got, [(new, 1, vec![1]), (new, 2, vec![2]), (new, 3, vec![3])]);
        assert_eq!(s.last_seq(), 3);
        assert_eq!(s.pending().unwrap().seq, 1);
        drop(s);
        let s = Spool::open(dir.path(), 100).unwrap();
        assert_eq!((s.epoch(), s.last_seq(), s.pending_batches()), (new, 3, 3));
    }

    #[test]
    fn copies_left_by_a_crashed_renumbering_are_not_sent_twice() {
        let dir = tempfile::tempdir().unwrap();
        let sp = dir.path().join(SPOOL_DIR);
        let mut s = Spool::open(dir.path(), 100).unwrap();
        s.push(items(0, 1)).unwrap();
        s.push(items(1, 1)).unwrap();
        let old = s.epoch();
        let before: BTreeMap<String, Vec<u8>> = spool_files(dir.path())
            .into_iter()
            .map(|n| (n.clone(), fs::read(sp.join(&n)).unwrap()))
            .collect();
        s.restart_epoch().unwrap();
        let new = s.epoch();
        drop(s);
        // Crash after the commit, before the old copies were deleted: old copies reappear.
        for (name, bytes) in &before {
            if name != STATE_FILE {
                fs::write(sp.join(name), bytes).unwrap();
            }
        }
        let s = Spool::open(dir.path(), 100).unwrap();
        let got: Vec<(u64, u64)> = s.batches().unwrap().iter().map(|b| (b.epoch, b.seq)).collect();
        assert_eq!(got, [(new, 1), (new, 2)]);
        drop(s);
        // Crash before the commit: the state still names the old epoch; the new copies go.
        let renumbered: Vec<String> = spool_files(dir.path());
        for (name, bytes) in &before {
            fs::write(sp.join(name), bytes).unwrap();
        }
        assert!(renumbered.iter().any(|n| n.starts_with(&format!("{new:016x}"))));
        let s = Spool::open(dir.path(), 100).unwrap();
        let got: Vec<(u64, u64)> = s.batches().unwrap().iter().map(|b| (b.epoch, b.seq)).collect();
        assert_eq!(got, [(old, 1), (old, 2)]);
        assert_eq!(s.epoch(), old);
    }

    #[test]
    fn a_lost_state_file_starts_a_new_epoch_and_keeps_every_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        s.push(items(0, 1)).unwrap();
        s.push(items(1, 2)).unwrap();
        let old = s.epoch();
        drop(s);
        let state = dir.path().join(SPOOL_DIR).join(STATE_FILE);
        fs::write(&state, b"PKSQ garbage").unwrap();
        let s = Spool::open(dir.path(), 100).unwrap();
        assert_ne!(s.epoch(), old);
        let got: Vec<(u64, Vec<u64>)> = s.batches().unwrap().iter().map(|b| (b.seq, ids(b))).collect();
        assert_eq!(got, [(1, vec![0]), (2, vec![1, 2])]);
        assert!(spool_files(dir.path()).contains(&format!("{STATE_FILE}.bad")));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u64),
        AckFront,
        AckUnknown,
        Restart,
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop_oneof![0u64..4, 990u64..1_010].prop_map(Op::Push),
            4 => Just(Op::AckFront),
            1 => Just(Op::AckUnknown),
            1 => Just(Op::Restart),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Random pushes, acknowledgements, new epochs and restarts against a model: every
        /// sighting pushed is acknowledged, still queued or counted as dropped, exactly once;
        /// queued batches keep push order; numbers within an epoch run 1, 2, 3... and are never
        /// given to other content.
        #[test]
        fn nothing_is_lost_and_numbers_stay_contiguous(
            ops in proptest::collection::vec(op(), 1..40),
            max in 1usize..6,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut s = Spool::open(dir.path(), max).unwrap();
            let mut next = 0u64;
            let mut acked: Vec<u64> = Vec::new();
            // Every (epoch, seq) ever seen with its content.
            let mut numbered: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Push(n) => {
                        s.push(items(next, n)).unwrap();
                        next += n;
                    }
                    Op::AckFront => {
                        if let Some(b) = s.pending() {
                            acked.extend(ids(&b));
                            s.ack(b.epoch, b.seq).unwrap();
                        }
                    }
                    Op::AckUnknown => s.ack(s.epoch(), s.last_seq() + 7).unwrap(),
                    Op::Restart => s.restart_epoch().unwrap(),
                    Op::Reopen => {
                        let before = s.batches().unwrap();
                        let epoch = s.epoch();
                        drop(s);
                        s = Spool::open(dir.path(), max).unwrap();
                        prop_assert_eq!(s.batches().unwrap(), before);
                        prop_assert_eq!(s.epoch(), epoch);
                    }
                }
                let queued = s.batches().unwrap();
                prop_assert!(queued.len() <= max);
                prop_assert_eq!(s.pending(), queued.first().cloned());
                prop_assert_eq!(s.pending_batches(), queued.len());
                let mut queued_ids = Vec::new();
                for b in &queued {
                    prop_assert!(!b.items.is_empty() && b.items.len() <= wire::MAX_BATCH_ITEMS);
                    prop_assert_eq!(b.epoch, s.epoch());
                    let content = ids(b);
                    if let Some(prev) = numbered.insert((b.epoch, b.seq), content.clone()) {
                        prop_assert_eq!(prev, content.clone(), "a number reused for other content");
                    }
                    queued_ids.extend(content);
                }
                // Contiguous, ending at last_seq.
                for (i, b) in queued.iter().enumerate() {
                    prop_assert_eq!(b.seq, s.last_seq() - (queued.len() - 1 - i) as u64);
                }
                // Push order is kept (queued ids ascend), each sighting is in one place only,
                // and every one pushed is acknowledged, queued or counted as dropped.
                prop_assert!(queued_ids.windows(2).all(|w| w[0] < w[1]));
                let all: BTreeSet<u64> = acked.iter().chain(&queued_ids).copied().collect();
                prop_assert_eq!(all.len(), acked.len() + queued_ids.len(), "a sighting in two places");
                prop_assert_eq!(all.len() as u64 + s.dropped(), next, "lost without being counted");
            }
        }
    }

    proptest! {
        /// Any state round-trips through its file; any bytes decode or are refused, never
        /// panic; one flipped bit anywhere is refused (the checksum covers the whole file).
        #[test]
        fn the_state_file_round_trips_and_refuses_damage(
            epoch in any::<u64>(),
            last_seq in any::<u64>(),
            dropped in any::<u64>(),
            junk in proptest::collection::vec(any::<u8>(), 0..128),
            bit in any::<usize>(),
        ) {
            let state = StateWire { epoch, last_seq, dropped };
            let file = encode_state(&state);
            prop_assert!(file.len() as u64 <= STATE_FILE_CAP);
            prop_assert_eq!(decode_state(&file), Ok(state));
            let _ = decode_state(&junk);
            let mut damaged = file.clone();
            let bit = bit % (damaged.len() * 8);
            damaged[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_state(&damaged).is_err());
        }
    }
}
