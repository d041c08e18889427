//! The set in force, compiled for matching.
//!
//! The index keeps, per indicator, only what matching needs and the byte offset of its record
//! in the snapshot. A hit is turned back into the full indicator (id, severity, TLP, source) by
//! reading that one record: from memory for a one-shot scan, or from the stored state file for
//! the daemon, which does not keep a large snapshot resident. The daemon keeps the state file
//! it loaded open, so an import that replaces it (by rename) does not pull records from under a
//! running index.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use picket_proto::{parse_record, Indicator, Limits, Part, SnapshotView, Trusted};

use crate::index::{Builder, Counts, Index, RecordRef};
use crate::store::SET_FILE;
use crate::AgentError;

/// Where hit records are read back from.
#[derive(Debug)]
enum Records {
    Memory(Vec<u8>),
    File { file: File, at: u64, len: u64 },
}

/// A verified set compiled into an index.
#[derive(Debug)]
pub struct LoadedSet {
    index: Index,
    records: Records,
    /// The set version.
    pub version: u64,
    /// The channel.
    pub channel: String,
    /// Records in the set.
    pub records_total: usize,
    /// Records of kinds this build does not know (skipped).
    pub unknown_kinds: usize,
}

/// Longest record read back: an id and a compound of the largest texts.
const MAX_RECORD: usize = 256 + 16 * (4096 + 16) + 256;

/// Compiles the records of `view`, refusing the set as soon as the index it is building would
/// pass `memory_limit` (checked every few thousand records, before the tables grow further).
/// A record that does not decode passed verification, so the set is newer than this build:
/// it is skipped and counted, never fatal.
fn compile(view: &SnapshotView<'_>, memory_limit: u64) -> Result<(Index, usize), AgentError> {
    let mut counts = Counts::default();
    let mut b = Builder::new();
    let mut unknown = 0;
    for (i, r) in view.records().enumerate() {
        match r.indicator() {
            Ok(Some(ind)) => {
                counts.add(&ind.observable);
                b.add(r.offset, &ind);
            }
            Ok(None) | Err(_) => unknown += 1,
        }
        if i % 4096 == 0 {
            check_fits(&counts, view, memory_limit)?;
        }
    }
    check_fits(&counts, view, memory_limit)?;
    Ok((b.finish(), unknown))
}

/// Refuses a set whose index would need more than `memory_limit`, without building it: one pass
/// counts the indicators by shape, and [`Index::estimate_bytes`] sizes the index from the
/// counts (the check [`LoadedSet::from_trusted`] makes while it builds). Returns the estimate.
/// The link and enrolment call it before a set replaces the installed one, so that a set the
/// daemon could not load is never installed in place of one it can.
pub fn check_index_fits(view: &SnapshotView<'_>, memory_limit: u64) -> Result<u64, AgentError> {
    let mut counts = Counts::default();
    for r in view.records() {
        if let Ok(Some(ind)) = r.indicator() {
            counts.add(&ind.observable);
        }
    }
    check_fits(&counts, view, memory_limit)?;
    Ok(Index::estimate_bytes(&counts) as u64)
}

fn check_fits(counts: &Counts, view: &SnapshotView<'_>, limit: u64) -> Result<(), AgentError> {
    let need = Index::estimate_bytes(counts) as u64;
    if need > limit {
        return Err(AgentError::TooBig {
            version: view.version(),
            need,
            limit,
        });
    }
    Ok(())
}

impl LoadedSet {
    /// Compiles `trusted`, keeping its snapshot bytes in memory.
    pub fn from_trusted(trusted: Trusted, memory_limit: u64) -> Result<LoadedSet, AgentError> {
        let view = trusted.snapshot();
        let (index, unknown_kinds) = compile(&view, memory_limit)?;
        let (version, channel, total) = (view.version(), view.channel().to_owned(), view.len());
        let bytes = trusted.snapshot_bytes().to_vec();
        Ok(LoadedSet {
            index,
            records: Records::Memory(bytes),
            version,
            channel,
            records_total: total,
            unknown_kinds,
        })
    }

    /// Loads, re-verifies and compiles the set stored in `dir`, then lets the snapshot bytes go:
    /// hit records are read back from the state file, which stays open. `None` when no set is
    /// installed.
    pub fn from_state(
        dir: &Path,
        limits: &Limits,
        memory_limit: u64,
    ) -> Result<Option<(LoadedSet, Trusted)>, AgentError> {
        let path = dir.join(SET_FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AgentError::io(&path)(e)),
        };
        // Read through the handle we keep, so the bytes verified are the bytes read back later.
        let cap = limits.max_set_file() as u64;
        let mut bytes = Vec::new();
        (&file)
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(AgentError::io(&path))?;
        if bytes.len() as u64 > cap {
            return Err(AgentError::Verify {
                path,
                error: picket_proto::Error::TooLarge {
                    what: Part::State,
                    len: bytes.len() as u64,
                    cap,
                },
            });
        }
        let file_len = bytes.len() as u64;
        let trusted = Trusted::decode_stored(&bytes, limits).map_err(AgentError::verify(&path))?;
        drop(bytes);
        let view = trusted.snapshot();
        let (index, unknown_kinds) = compile(&view, memory_limit)?;
        // The snapshot is the last field of the state file (see `Trusted::encode`).
        let len = view.bytes().len() as u64;
        let loaded = LoadedSet {
            index,
            records: Records::File {
                file,
                at: file_len - len,
                len,
            },
            version: view.version(),
            channel: view.channel().to_owned(),
            records_total: view.len(),
            unknown_kinds,
        };
        Ok(Some((loaded, trusted)))
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Appends the hits of running process `p` (its executable's `digests`, when computed).
    pub fn match_process(
        &self,
        p: &crate::host::ProcessInfo,
        digests: Option<&crate::digest::Digests>,
        out: &mut Vec<crate::index::Hit>,
    ) {
        self.index.match_process(
            &crate::index::ProcessFacts {
                name: &p.name,
                exe: p.exe.as_deref(),
                exe_digests: digests,
                cmdline: &p.cmdline,
            },
            out,
        );
    }

    /// The full indicator behind a hit.
    pub fn indicator(&self, record: RecordRef) -> Result<Indicator, String> {
        let mut window;
        let bytes: &[u8] = match &self.records {
            Records::Memory(b) => b.get(record as usize..).ok_or("record offset out of range")?,
            Records::File { file, at, len } => {
                let start = u64::from(record);
                let n = (len.saturating_sub(start) as usize).min(MAX_RECORD);
                window = vec![0u8; n];
                file.read_exact_at(&mut window, at + start)
                    .map_err(|e| e.to_string())?;
                &window
            }
        };
        let rec = parse_record(bytes, record).map_err(|e| e.to_string())?;
        rec.indicator()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("record {} is of a kind this build does not know", rec.id))
    }
}
