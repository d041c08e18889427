//! The pure matching core: an indicator set compiled into structures an endpoint can afford.
//!
//! An agent holds one verified set, which may hold a million indicators, and asks it about every
//! file it walks, every process it polls and every connection it sees. This module is that
//! question and answer, and nothing else: it does no I/O, reads no clock and keeps no
//! indicator ids or metadata. The scanner, the process poller and the connection lister hand it
//! facts ([`FileMeta`] and [`Digests`], [`ProcessFacts`], an [`IpAddr`]); it hands back
//! [`Hit`]s that name the record by its byte offset in the verified snapshot, from which the
//! caller reads the id and metadata in the rare case that something matched. Being pure, it is
//! tested against a naive reference matcher on random sets and inputs.
//!
//! Memory is a correctness property here (an agent must not be the process the OOM killer
//! picks), so each observable kind gets the leanest structure that still answers in one probe
//! or one pass:
//!
//! - file and process hashes: sorted digest arrays with a radix index (`hashes.rs`), about 36
//!   to 40 bytes per SHA-256 indicator; file hashes with a size are sorted by size first, so
//!   that a file whose size no indicator names is never read ([`Index::needed`]);
//! - exact names and paths: one hash map of distinct keys; globs: `globset` sets (`names.rs`);
//! - command-line substrings: one Aho-Corasick automaton over all needles (`text.rs`);
//! - addresses and networks: one sorted table per prefix length (`net.rs`);
//! - compounds (an AND over one file or one process): stored once, reached through one of their
//!   conditions, their anchor (`compound.rs`).
//!
//! [`Index::estimate_bytes`] sizes an index from [`Counts`] gathered in a cheap pre-pass, so a
//! set that would not fit under the agent's memory ceiling is refused before anything is
//! allocated; [`Index::heap_bytes`] reports what a built index holds.
//!
//! # What matches what
//!
//! - **Hashes**: a file hash matches when the file's digest of that kind equals it and, if the
//!   indicator names a size, the file has that size. Two indicators with one digest both hit.
//! - **Exact names and paths** (file name, process name, executable path) compare byte for
//!   byte: case-sensitive, no normalisation, as Linux names are. A file name that is not UTF-8
//!   never equals an exact name, but globs still see its bytes.
//! - **Globs** use the `globset` crate's syntax: `?` is one character, `*` any run, `[abc]`,
//!   `[a-z]`, `[!a-z]` classes, `{a,b}` alternatives, `\` escapes the next character on every
//!   platform. Case-sensitive.
//!   - A **path glob** is matched against the whole path as the scanner reports it, and `*` and
//!     `?` do not match `/` (globset's `literal_separator(true)`): `/tmp/*` matches `/tmp/a` but
//!     not `/tmp/a/b`, and `*.exe` matches no absolute path at all. `**` crosses directories:
//!     `/tmp/**` and `**/evil.sh` match at any depth, `/a/**/b` matches `/a/b` and `/a/x/y/b`.
//!   - A **file-name glob** is matched against the file name alone (`*.exe` matches
//!     `setup.exe` anywhere). A name holds no `/`, so the separator rule changes nothing there.
//! - **Command-line substrings**: every needle that occurs anywhere in the command line hits,
//!   case-sensitively, including needles inside or overlapping other needles; a needle that
//!   occurs twice hits once.
//! - **Addresses**: an address matches every network that contains it (a single address being
//!   a network with the full prefix), nested ones included. An IPv4-mapped IPv6 address
//!   (`::ffff:a.b.c.d`, as dual-stack sockets report IPv4 peers) also matches as its IPv4 self.
//! - **Compounds** hit when every condition holds for the same file or process. A hash
//!   condition holds only if that digest was computed and equals it.
//!
//! Indicators the index cannot match as they stand (an invalid value, a glob that does not
//! parse) are refused and listed by [`Index::rejected`], never silently dropped.

mod compound;
mod hashes;
mod keys;
mod names;
mod net;
mod text;

#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::fmt;
use std::mem::size_of;
use std::net::IpAddr;
use std::path::Path;

use globset::{Candidate, Glob};
use picket_proto::{FileCondition, HashKind, Indicator, NamePattern, Observable, ProcessCondition};

pub use crate::digest::{Digests, Kinds};

use compound::{BySize, FileCompound, FileCond, FileFacts, ProcessCompound, ProcessCond, ProcessKeys};
use hashes::{ByKind, ByKindBuf, SizedByKind, SizedByKindBuf};
use keys::{Interner, Postings, Target};
use names::{Exact, GlobBuf, Globs};
use net::{NetBuf, Nets};
use text::{NeedleBuf, Needles};

/// A record's byte offset inside the snapshot bytes ([`picket_proto::RecordRef::offset`]): all
/// the index keeps of an indicator besides what matching needs.
pub type RecordRef = u32;

/// Every hash kind, in the order [`Counts`] arrays use.
const KINDS: [HashKind; 3] = [HashKind::Md5, HashKind::Sha1, HashKind::Sha256];

fn slot(kind: HashKind) -> usize {
    match kind {
        HashKind::Md5 => 0,
        HashKind::Sha1 => 1,
        HashKind::Sha256 => 2,
    }
}

/// Adds every kind of `more` to `into`.
fn kinds_add(into: &mut Kinds, more: Kinds) {
    into.md5 |= more.md5;
    into.sha1 |= more.sha1;
    into.sha256 |= more.sha256;
}

/// What a file is, as far as matching goes. The scanner fills it from the walk; nothing here is
/// read from the disk.
#[derive(Debug, Clone, Copy)]
pub struct FileMeta<'a> {
    /// The path as the scanner reports it; path globs are matched against it.
    pub path: &'a Path,
    /// The file name (the last component of `path`); name indicators are matched against it.
    pub name: &'a OsStr,
    /// The size in bytes.
    pub size: u64,
}

/// What a process is, as far as matching goes. The process poller fills it.
#[derive(Debug, Clone, Copy)]
pub struct ProcessFacts<'a> {
    /// The process name.
    pub name: &'a str,
    /// The executable's path, when known.
    pub exe: Option<&'a Path>,
    /// The executable's digests for [`Index::process_kinds`], when it could be read.
    pub exe_digests: Option<&'a Digests>,
    /// The command line, arguments joined by spaces.
    pub cmdline: &'a str,
}

/// Which observable of an indicator matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum What {
    /// A file digest of this kind (and the size, when the indicator names one).
    FileHash(HashKind),
    /// A file name, exact or glob.
    FileName,
    /// A glob over the file's path.
    PathGlob,
    /// A process name.
    ProcessName,
    /// A process's executable path.
    ProcessPath,
    /// A process's executable digest of this kind.
    ProcessHash(HashKind),
    /// A command-line substring.
    CommandLine,
    /// A remote address or network.
    RemoteAddr,
    /// Every condition of a compound file indicator.
    FileAll,
    /// Every condition of a compound process indicator.
    ProcessAll,
}

impl What {
    /// The kind a finding reports: the digest's name for hash matches (`sha256`), else the
    /// observable kind (`file-name`, `command-line`, ...). `scan` and the daemon both say this.
    pub fn reported_kind(self) -> &'static str {
        match self {
            What::FileHash(k) | What::ProcessHash(k) => k.name(),
            other => other.kind_name(),
        }
    }

    /// The observable kind's name, as [`Observable::kind_name`] spells it.
    pub fn kind_name(self) -> &'static str {
        match self {
            What::FileHash(_) => "file-hash",
            What::FileName => "file-name",
            What::PathGlob => "path-glob",
            What::ProcessName => "process-name",
            What::ProcessPath => "process-path",
            What::ProcessHash(_) => "process-hash",
            What::CommandLine => "command-line",
            What::RemoteAddr => "remote-addr",
            What::FileAll => "file-all",
            What::ProcessAll => "process-all",
        }
    }
}

/// One indicator that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hit {
    /// The indicator's record in the snapshot.
    pub record: RecordRef,
    /// What matched.
    pub what: What,
}

/// Why [`Builder::add`] refused an indicator. A refused indicator is never matched, and is
/// listed by [`Index::rejected`] so that the agent can report it rather than drop it silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The observable breaks a value rule of [`Observable::validate`]: a digest of the wrong
    /// length, an empty or over-long text, a network with host bits set, an empty compound.
    Invalid,
    /// A glob that does not parse, such as an unclosed `[` or `{`.
    BadGlob,
    /// A glob or needle the matching library refused to compile even on its own (a size
    /// limit of its automata).
    TooLarge,
}

/// An indicator the index refused, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// The indicator's record.
    pub record: RecordRef,
    /// Why it was refused.
    pub reason: Reason,
}

/// How many indicators of each shape a set holds: gathered by a pre-pass over the set (see
/// [`Counts::add`]) so that [`Index::estimate_bytes`] can size the index before it is built.
/// Arrays by hash kind are in the order MD5, SHA-1, SHA-256.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// File-hash indicators without a size, by kind.
    pub file_hashes: [usize; 3],
    /// File-hash indicators with a size, by kind.
    pub sized_file_hashes: [usize; 3],
    /// Process-hash indicators, by kind.
    pub process_hashes: [usize; 3],
    /// Exact strings to match: file names, process names, executable paths and command-line
    /// needles, those inside compounds included.
    pub texts: usize,
    /// The total length of those strings in bytes.
    pub text_bytes: usize,
    /// Globs: file-name globs and path globs, those inside compounds included. They are
    /// counted apart because a compiled glob costs a hundred times an exact string.
    pub globs: usize,
    /// The total length of the globs in bytes.
    pub glob_bytes: usize,
    /// IPv4 addresses and networks.
    pub v4_nets: usize,
    /// IPv6 addresses and networks.
    pub v6_nets: usize,
    /// Compound indicators, file and process.
    pub compounds: usize,
    /// Conditions inside compound indicators.
    pub conditions: usize,
}

impl Counts {
    /// Counts one indicator's observable.
    pub fn add(&mut self, observable: &Observable) {
        match observable {
            Observable::FileHash { hash, size: None } => self.file_hashes[slot(hash.kind)] += 1,
            Observable::FileHash { hash, size: Some(_) } => self.sized_file_hashes[slot(hash.kind)] += 1,
            Observable::ProcessHash(hash) => self.process_hashes[slot(hash.kind)] += 1,
            Observable::FileName(p) => self.name(p),
            Observable::PathGlob(t) => self.glob(t),
            Observable::ProcessName(t) | Observable::ProcessPath(t) | Observable::CommandLine(t) => {
                self.text(t)
            }
            Observable::RemoteAddr(net) => match net.addr {
                IpAddr::V4(_) => self.v4_nets += 1,
                IpAddr::V6(_) => self.v6_nets += 1,
            },
            Observable::FileAll(conds) => {
                self.compounds += 1;
                self.conditions += conds.len();
                for c in conds {
                    match c {
                        FileCondition::Name(p) => self.name(p),
                        FileCondition::Path(t) => self.glob(t),
                        FileCondition::Hash(_) | FileCondition::Size(_) => {}
                    }
                }
            }
            Observable::ProcessAll(conds) => {
                self.compounds += 1;
                self.conditions += conds.len();
                for c in conds {
                    match c {
                        ProcessCondition::Name(t)
                        | ProcessCondition::Path(t)
                        | ProcessCondition::CommandLine(t) => self.text(t),
                        ProcessCondition::Hash(_) => {}
                    }
                }
            }
        }
    }

    fn text(&mut self, t: &str) {
        self.texts += 1;
        self.text_bytes += t.len();
    }

    fn glob(&mut self, t: &str) {
        self.globs += 1;
        self.glob_bytes += t.len();
    }

    fn name(&mut self, p: &NamePattern) {
        if p.glob {
            self.glob(&p.text)
        } else {
            self.text(&p.text)
        }
    }
}

/// Compiles indicators into an [`Index`]. Add every indicator of a verified set, then
/// [`finish`](Builder::finish).
#[derive(Debug, Default)]
pub struct Builder {
    accepted: usize,
    rejected: Vec<Rejected>,
    file_hashes: ByKindBuf,
    sized_hashes: SizedByKindBuf,
    file_names: Interner<Box<[u8]>>,
    name_globs: GlobBuf,
    path_globs: GlobBuf,
    file_compounds: Vec<FileCompound>,
    by_size: Vec<(u64, u32)>,
    file_compound_hashes: ByKindBuf,
    hash_only_kinds: Kinds,
    process_hashes: ByKindBuf,
    process_names: Interner<Box<[u8]>>,
    process_paths: Interner<Box<[u8]>>,
    needles: NeedleBuf,
    process_compounds: Vec<ProcessCompound>,
    process_compound_hashes: ByKindBuf,
    process_kinds: Kinds,
    nets4: NetBuf<u32>,
    nets6: NetBuf<u128>,
}

/// The id of `key` in an exact-key table, adding it when new.
fn intern_bytes(table: &mut Interner<Box<[u8]>>, key: &[u8]) -> u32 {
    match table.get(key) {
        Some(id) => id,
        None => table.intern(Box::from(key)).0,
    }
}

fn compile(text: &str, path: bool) -> Result<Glob, Reason> {
    names::compile(text, path).map_err(|_| Reason::BadGlob)
}

fn valid(pushed: bool) -> Result<(), Reason> {
    if pushed {
        Ok(())
    } else {
        Err(Reason::Invalid)
    }
}

impl Builder {
    /// An empty builder.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// An empty builder with room reserved for the digests `counts` announces, so the digest
    /// tables, the bulk of a large set, are allocated once at their final size.
    pub fn with_counts(counts: &Counts) -> Builder {
        let mut b = Builder::default();
        b.file_hashes.reserve(counts.file_hashes);
        b.sized_hashes.reserve(counts.sized_file_hashes);
        b.process_hashes.reserve(counts.process_hashes);
        b
    }

    /// Adds the indicator whose record is at `at`. Only what matching needs is copied: never
    /// the id or the metadata. An indicator that cannot be matched as it stands is refused and
    /// listed by [`Index::rejected`].
    pub fn add(&mut self, at: RecordRef, ind: &Indicator) {
        let added = match ind.observable.validate() {
            Ok(()) => self.add_observable(at, &ind.observable),
            Err(_) => Err(Reason::Invalid),
        };
        match added {
            Ok(()) => self.accepted += 1,
            Err(reason) => self.rejected.push(Rejected { record: at, reason }),
        }
    }

    fn add_observable(&mut self, at: RecordRef, observable: &Observable) -> Result<(), Reason> {
        let plain = Target::Record(at);
        match observable {
            Observable::FileHash { hash, size: None } => {
                valid(self.file_hashes.push(hash.kind, &hash.value, at))?;
            }
            Observable::FileHash {
                hash,
                size: Some(size),
            } => {
                valid(self.sized_hashes.push(hash, *size, at))?;
            }
            Observable::FileName(p) if p.glob => {
                let id = self.name_globs.intern(compile(&p.text, false)?);
                self.name_globs.link(id, plain);
            }
            Observable::FileName(p) => {
                let id = intern_bytes(&mut self.file_names, p.text.as_bytes());
                self.file_names.link(id, plain);
            }
            Observable::PathGlob(text) => {
                let id = self.path_globs.intern(compile(text, true)?);
                self.path_globs.link(id, plain);
            }
            Observable::ProcessName(name) => {
                let id = intern_bytes(&mut self.process_names, name.as_bytes());
                self.process_names.link(id, plain);
            }
            Observable::ProcessPath(path) => {
                let id = intern_bytes(&mut self.process_paths, path.as_bytes());
                self.process_paths.link(id, plain);
            }
            Observable::ProcessHash(hash) => {
                valid(self.process_hashes.push(hash.kind, &hash.value, at))?;
                self.process_kinds.set(hash.kind);
            }
            Observable::CommandLine(needle) => {
                let id = self.needles.intern(needle);
                self.needles.link(id, plain);
            }
            Observable::RemoteAddr(net) => {
                valid(match net.addr {
                    IpAddr::V4(a) => self.nets4.push(u32::from(a), net.prefix, at),
                    IpAddr::V6(a) => self.nets6.push(u128::from(a), net.prefix, at),
                })?;
            }
            Observable::FileAll(conds) => self.add_file_all(at, conds)?,
            Observable::ProcessAll(conds) => self.add_process_all(at, conds)?,
        }
        Ok(())
    }

    fn add_file_all(&mut self, at: RecordRef, conds: &[FileCondition]) -> Result<(), Reason> {
        // Compile the globs first, so that a bad one refuses the compound before any of its
        // keys is kept.
        let mut globs = Vec::with_capacity(conds.len());
        for c in conds {
            globs.push(match c {
                FileCondition::Name(p) if p.glob => Some(compile(&p.text, false)?),
                FileCondition::Path(text) => Some(compile(text, true)?),
                _ => None,
            });
        }
        let idx = self.file_compounds.len() as u32;
        let mut kinds = Kinds::default();
        let mut out = Vec::with_capacity(conds.len());
        for (c, glob) in conds.iter().zip(globs) {
            out.push(match (c, glob) {
                (FileCondition::Hash(h), _) => {
                    kinds.set(h.kind);
                    FileCond::Hash(h.kind, h.value.clone().into_boxed_slice())
                }
                (FileCondition::Size(s), _) => FileCond::Size(*s),
                (FileCondition::Name(_), Some(g)) => FileCond::NameGlob(self.name_globs.intern(g)),
                (FileCondition::Name(p), None) => {
                    FileCond::Name(intern_bytes(&mut self.file_names, p.text.as_bytes()))
                }
                (FileCondition::Path(_), Some(g)) => FileCond::PathGlob(self.path_globs.intern(g)),
                (FileCondition::Path(text), None) => {
                    FileCond::PathGlob(self.path_globs.intern(compile(text, true)?))
                }
            });
        }
        // The anchor: the most selective condition that needs no digest.
        let rank = |c: &FileCond| match c {
            FileCond::Size(_) => 0,
            FileCond::Name(_) => 1,
            FileCond::NameGlob(_) => 2,
            FileCond::PathGlob(_) => 3,
            FileCond::Hash(..) => 4,
        };
        let target = Target::Compound(idx);
        match out.iter().min_by_key(|c| rank(c)) {
            Some(FileCond::Size(s)) => self.by_size.push((*s, idx)),
            Some(FileCond::Name(id)) => self.file_names.link(*id, target),
            Some(FileCond::NameGlob(id)) => self.name_globs.link(*id, target),
            Some(FileCond::PathGlob(id)) => self.path_globs.link(*id, target),
            Some(FileCond::Hash(kind, value)) => {
                valid(self.file_compound_hashes.push(*kind, value, idx))?;
                kinds_add(&mut self.hash_only_kinds, kinds);
            }
            None => return Err(Reason::Invalid),
        }
        self.file_compounds.push(FileCompound {
            record: at,
            kinds,
            conds: out.into_boxed_slice(),
        });
        Ok(())
    }

    fn add_process_all(&mut self, at: RecordRef, conds: &[ProcessCondition]) -> Result<(), Reason> {
        let idx = self.process_compounds.len() as u32;
        let mut out = Vec::with_capacity(conds.len());
        for c in conds {
            out.push(match c {
                ProcessCondition::Name(name) => {
                    ProcessCond::Name(intern_bytes(&mut self.process_names, name.as_bytes()))
                }
                ProcessCondition::Path(path) => {
                    ProcessCond::Path(intern_bytes(&mut self.process_paths, path.as_bytes()))
                }
                ProcessCondition::Hash(h) => {
                    self.process_kinds.set(h.kind);
                    ProcessCond::Hash(h.kind, h.value.clone().into_boxed_slice())
                }
                ProcessCondition::CommandLine(needle) => ProcessCond::Needle(self.needles.intern(needle)),
            });
        }
        let rank = |c: &ProcessCond| match c {
            ProcessCond::Path(_) => 0,
            ProcessCond::Name(_) => 1,
            ProcessCond::Hash(..) => 2,
            ProcessCond::Needle(_) => 3,
        };
        let target = Target::Compound(idx);
        match out.iter().min_by_key(|c| rank(c)) {
            Some(ProcessCond::Path(id)) => self.process_paths.link(*id, target),
            Some(ProcessCond::Name(id)) => self.process_names.link(*id, target),
            Some(ProcessCond::Hash(kind, value)) => {
                valid(self.process_compound_hashes.push(*kind, value, idx))?
            }
            Some(ProcessCond::Needle(id)) => self.needles.link(*id, target),
            None => return Err(Reason::Invalid),
        }
        self.process_compounds.push(ProcessCompound {
            record: at,
            conds: out.into_boxed_slice(),
        });
        Ok(())
    }

    /// Sorts and compiles everything added into an [`Index`].
    pub fn finish(self) -> Index {
        let (name_globs, failed_names) = self.name_globs.finish();
        let (path_globs, failed_paths) = self.path_globs.finish();
        let (needles, failed_needles) = self.needles.finish();

        // A glob or needle that could not be compiled never reports a match: refuse, visibly,
        // every indicator that depends on one.
        let mut rejected = self.rejected;
        let mut accepted = self.accepted;
        let too_large = |record| Rejected {
            record,
            reason: Reason::TooLarge,
        };
        let plain = |postings: &Postings, failed: &[u32]| -> Vec<RecordRef> {
            if failed.is_empty() {
                return Vec::new();
            }
            postings
                .iter()
                .filter(|(id, _)| failed.binary_search(id).is_ok())
                .filter_map(|(_, t)| match t {
                    Target::Record(r) => Some(r),
                    Target::Compound(_) => None,
                })
                .collect()
        };
        let mut refused: Vec<RecordRef> = plain(name_globs.postings(), &failed_names);
        refused.extend(plain(path_globs.postings(), &failed_paths));
        refused.extend(plain(needles.postings(), &failed_needles));
        if !(failed_names.is_empty() && failed_paths.is_empty()) {
            refused.extend(self.file_compounds.iter().filter_map(|c| {
                let dead = c.conds.iter().any(|cond| match cond {
                    FileCond::NameGlob(id) => failed_names.binary_search(id).is_ok(),
                    FileCond::PathGlob(id) => failed_paths.binary_search(id).is_ok(),
                    _ => false,
                });
                dead.then_some(c.record)
            }));
        }
        if !failed_needles.is_empty() {
            refused.extend(self.process_compounds.iter().filter_map(|c| {
                let dead = c.conds.iter().any(|cond| match cond {
                    ProcessCond::Needle(id) => failed_needles.binary_search(id).is_ok(),
                    _ => false,
                });
                dead.then_some(c.record)
            }));
        }
        accepted -= refused.len();
        rejected.extend(refused.into_iter().map(too_large));
        rejected.shrink_to_fit();

        let file_hashes = self.file_hashes.finish();
        let mut always_file = file_hashes.kinds();
        kinds_add(&mut always_file, self.hash_only_kinds);
        let mut file_compounds = self.file_compounds;
        file_compounds.shrink_to_fit();
        let mut process_compounds = self.process_compounds;
        process_compounds.shrink_to_fit();
        Index {
            len: accepted,
            rejected,
            file_hashes,
            sized_hashes: self.sized_hashes.finish(),
            always_file,
            file_names: Exact::build(self.file_names),
            name_globs,
            path_globs,
            file_compounds,
            by_size: BySize::build(self.by_size),
            file_compound_hashes: self.file_compound_hashes.finish(),
            process_hashes: self.process_hashes.finish(),
            process_names: Exact::build(self.process_names),
            process_paths: Exact::build(self.process_paths),
            needles,
            process_compounds,
            process_compound_hashes: self.process_compound_hashes.finish(),
            process_kinds: self.process_kinds,
            nets4: self.nets4.finish(),
            nets6: self.nets6.finish(),
        }
    }
}

/// A compiled indicator set, asked about files, processes and addresses.
pub struct Index {
    len: usize,
    rejected: Vec<Rejected>,
    file_hashes: ByKind,
    sized_hashes: SizedByKind,
    /// Digest kinds every file needs: those of file hashes without a size, and of compounds
    /// made of hashes alone.
    always_file: Kinds,
    file_names: Exact,
    name_globs: Globs,
    path_globs: Globs,
    file_compounds: Vec<FileCompound>,
    by_size: BySize,
    file_compound_hashes: ByKind,
    process_hashes: ByKind,
    process_names: Exact,
    process_paths: Exact,
    needles: Needles,
    process_compounds: Vec<ProcessCompound>,
    process_compound_hashes: ByKind,
    process_kinds: Kinds,
    nets4: Nets<u32>,
    nets6: Nets<u128>,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("len", &self.len)
            .field("rejected", &self.rejected.len())
            .field("file_hashes", &(self.file_hashes.len() + self.sized_hashes.len()))
            .field("process_hashes", &self.process_hashes.len())
            .field("networks", &(self.nets4.len() + self.nets6.len()))
            .field(
                "compounds",
                &(self.file_compounds.len() + self.process_compounds.len()),
            )
            .field("heap_bytes", &self.heap_bytes())
            .finish_non_exhaustive()
    }
}

/// Per-entry cost of an exact-key map slot, for estimates.
const EXACT_SLOT: usize = size_of::<(Box<[u8]>, u32)>() + 1;

impl Index {
    /// Computes once what matching `file` needs from its name and path (its exact-name key,
    /// the globs it matches), so that [`Probe::needed`] and [`Probe::match_file`] can both use
    /// them. [`Index::needed`] and [`Index::match_file`] are shorthands that probe each time.
    pub fn probe(&self, file: &FileMeta<'_>) -> Probe<'_> {
        let name = self.file_names.key(file.name.as_encoded_bytes());
        let mut name_globs = Vec::new();
        if !self.name_globs.is_empty() {
            self.name_globs
                .matches(&Candidate::new(file.name), &mut name_globs);
        }
        let mut path_globs = Vec::new();
        if !self.path_globs.is_empty() {
            self.path_globs
                .matches(&Candidate::new(file.path), &mut path_globs);
        }
        Probe {
            index: self,
            size: file.size,
            name,
            name_globs,
            path_globs,
        }
    }

    /// The digest kinds worth computing for `file`: a kind is needed when some indicator could
    /// still match with it. File hashes without a size need their kind for every file; with a
    /// size, only for files of that size; a compound needs its hash kinds only for files that
    /// already satisfy all its other conditions. So a file no indicator could match is never
    /// read.
    pub fn needed(&self, file: &FileMeta<'_>) -> Kinds {
        self.probe(file).needed()
    }

    /// Appends to `out` every file indicator that `file` matches: exact and glob names, path
    /// globs, hashes (respecting sizes) and file compounds. A digest missing from `digests`
    /// matches nothing; computing the kinds [`Index::needed`] names is enough to find every hit.
    pub fn match_file(&self, file: &FileMeta<'_>, digests: &Digests, out: &mut Vec<Hit>) {
        self.probe(file).match_file(digests, out);
    }

    /// The digest kinds process indicators (executable hashes, hash conditions of process
    /// compounds) need of an executable.
    pub fn process_kinds(&self) -> Kinds {
        self.process_kinds
    }

    /// Appends to `out` every process indicator that `p` matches: name, executable path,
    /// executable hash, command-line substrings and process compounds.
    pub fn match_process(&self, p: &ProcessFacts<'_>, out: &mut Vec<Hit>) {
        let name = self.process_names.key(p.name.as_bytes());
        let path = p
            .exe
            .and_then(|exe| self.process_paths.key(exe.as_os_str().as_encoded_bytes()));
        let mut needles = Vec::new();
        self.needles.matches(p.cmdline, &mut needles);
        let keys = ProcessKeys {
            name,
            path,
            needles: &needles,
            digests: p.exe_digests,
        };
        let mut visit = |what: What, t: Target| match t {
            Target::Record(record) => out.push(Hit { record, what }),
            Target::Compound(c) => {
                let c = &self.process_compounds[c as usize];
                if c.holds(&keys) {
                    out.push(Hit {
                        record: c.record,
                        what: What::ProcessAll,
                    });
                }
            }
        };
        if let Some(id) = name {
            self.process_names
                .targets(id)
                .iter()
                .for_each(|&t| visit(What::ProcessName, t));
        }
        if let Some(id) = path {
            self.process_paths
                .targets(id)
                .iter()
                .for_each(|&t| visit(What::ProcessPath, t));
        }
        for &id in &needles {
            self.needles
                .targets(id)
                .iter()
                .for_each(|&t| visit(What::CommandLine, t));
        }
        if let Some(digests) = p.exe_digests {
            for kind in KINDS {
                let Some(d) = digests.get(kind) else { continue };
                for &r in self.process_hashes.get(kind, d) {
                    visit(What::ProcessHash(kind), Target::Record(r));
                }
                for &c in self.process_compound_hashes.get(kind, d) {
                    visit(What::ProcessAll, Target::Compound(c));
                }
            }
        }
    }

    /// Appends to `out` every address indicator whose network contains `ip`. An IPv4-mapped
    /// IPv6 address (`::ffff:a.b.c.d`, as dual-stack sockets report IPv4 peers) is looked up as
    /// itself and as the IPv4 address it carries.
    pub fn match_addr(&self, ip: IpAddr, out: &mut Vec<Hit>) {
        let mut found = |record| {
            out.push(Hit {
                record,
                what: What::RemoteAddr,
            })
        };
        match ip {
            IpAddr::V4(a) => self.nets4.lookup(u32::from(a), &mut found),
            IpAddr::V6(a) => {
                self.nets6.lookup(u128::from(a), &mut found);
                if let Some(v4) = a.to_ipv4_mapped() {
                    self.nets4.lookup(u32::from(v4), &mut found);
                }
            }
        }
    }

    /// Indicators the index matches (those added and not rejected).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index matches no indicator.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Indicators the builder refused, with the reason.
    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    /// Heap bytes the index holds, for the agent's memory ceiling. Exact for the digest,
    /// network and compound tables (the bulk of any large set) and for the command-line
    /// automaton; the hash maps of exact names are computed from their capacity; the glob sets,
    /// whose library does not report its memory, are estimated from measurements (see
    /// `names.rs`).
    pub fn heap_bytes(&self) -> usize {
        self.rejected.capacity() * size_of::<Rejected>()
            + self.file_hashes.heap_bytes()
            + self.sized_hashes.heap_bytes()
            + self.file_names.heap_bytes()
            + self.name_globs.heap_bytes()
            + self.path_globs.heap_bytes()
            + self.file_compounds.capacity() * size_of::<FileCompound>()
            + self
                .file_compounds
                .iter()
                .map(FileCompound::heap_bytes)
                .sum::<usize>()
            + self.by_size.heap_bytes()
            + self.file_compound_hashes.heap_bytes()
            + self.process_hashes.heap_bytes()
            + self.process_names.heap_bytes()
            + self.process_paths.heap_bytes()
            + self.needles.heap_bytes()
            + self.process_compounds.capacity() * size_of::<ProcessCompound>()
            + self
                .process_compounds
                .iter()
                .map(ProcessCompound::heap_bytes)
                .sum::<usize>()
            + self.process_compound_hashes.heap_bytes()
            + self.nets4.heap_bytes()
            + self.nets6.heap_bytes()
    }

    /// The heap bytes an index of a set with these counts would hold, at most (as
    /// [`Index::heap_bytes`] counts them), computed before anything is allocated so that a set
    /// that would not fit under the memory ceiling can be refused. Building needs little more
    /// than this at its peak: digest tables are sorted in place, and sized ones need 16 bytes
    /// more per entry while they are sorted.
    pub fn estimate_bytes(counts: &Counts) -> usize {
        let hashes = ByKind::estimate(counts.file_hashes)
            + SizedByKind::estimate(counts.sized_file_hashes)
            + ByKind::estimate(counts.process_hashes);
        // Exact strings go into one of three hash maps (a slot, and the key in its own
        // allocation) or into the automaton: bound each by the dearer of the two.
        let texts = if counts.texts == 0 {
            0
        } else {
            let exact_each = EXACT_SLOT * 16 / 7 + 1 + 32;
            3 * (EXACT_SLOT * 8 + 16)
                + text::NEEDLE_FIXED_BYTES
                + counts.texts * exact_each.max(text::NEEDLE_BYTES_EACH)
                + counts.text_bytes * text::NEEDLE_BYTES_PER_BYTE
        };
        let globs = if counts.globs == 0 {
            0
        } else {
            2 * names::GLOB_SET_BYTES + Globs::estimate_patterns(counts.globs, counts.glob_bytes)
        };
        // Six key tables, each with one start per key plus one; a link per string and per
        // compound anchor.
        let keys = counts.texts + counts.globs;
        let postings = Postings::estimate(keys + 5, keys + counts.compounds);
        let compounds = if counts.compounds == 0 {
            0
        } else {
            // Hash anchors live in six digest tables; each radix index has at most one entry
            // per digest plus one.
            counts.compounds * compound::COMPOUND_BYTES
                + counts.conditions * compound::CONDITION_BYTES
                + 6 * 2 * size_of::<u32>()
        };
        let nets = Nets::<u32>::estimate(counts.v4_nets) + Nets::<u128>::estimate(counts.v6_nets);
        hashes + texts + globs + postings + compounds + nets
    }
}

/// One file's name and path facts, computed once by [`Index::probe`]: the scanner asks
/// [`Probe::needed`], hashes the file for those kinds, and calls [`Probe::match_file`].
#[derive(Debug)]
pub struct Probe<'i> {
    index: &'i Index,
    size: u64,
    name: Option<u32>,
    name_globs: Vec<u32>,
    path_globs: Vec<u32>,
}

impl Probe<'_> {
    fn facts(&self) -> FileFacts<'_> {
        FileFacts {
            size: self.size,
            name: self.name,
            name_globs: &self.name_globs,
            path_globs: &self.path_globs,
        }
    }

    /// Calls `f` with every target the file's name, globs and size lead to; each compound is
    /// reached at most once, through its anchor.
    fn each_anchored(&self, mut f: impl FnMut(What, Target)) {
        let ix = self.index;
        if let Some(id) = self.name {
            ix.file_names
                .targets(id)
                .iter()
                .for_each(|&t| f(What::FileName, t));
        }
        for &id in &self.name_globs {
            ix.name_globs
                .targets(id)
                .iter()
                .for_each(|&t| f(What::FileName, t));
        }
        for &id in &self.path_globs {
            ix.path_globs
                .targets(id)
                .iter()
                .for_each(|&t| f(What::PathGlob, t));
        }
        for &c in ix.by_size.get(self.size) {
            f(What::FileAll, Target::Compound(c));
        }
    }

    /// The digest kinds worth computing for this file (see [`Index::needed`]).
    pub fn needed(&self) -> Kinds {
        let ix = self.index;
        let mut kinds = ix.always_file;
        ix.sized_hashes.kinds_for_size(self.size, &mut kinds);
        let facts = self.facts();
        self.each_anchored(|_, t| {
            if let Target::Compound(c) = t {
                let c = &ix.file_compounds[c as usize];
                if !c.kinds.is_empty() && c.facts_hold(&facts) {
                    kinds_add(&mut kinds, c.kinds);
                }
            }
        });
        kinds
    }

    /// Appends to `out` every file indicator the file matches (see [`Index::match_file`]).
    pub fn match_file(&self, digests: &Digests, out: &mut Vec<Hit>) {
        let ix = self.index;
        let facts = self.facts();
        let compound = |c: u32, out: &mut Vec<Hit>| {
            let c = &ix.file_compounds[c as usize];
            if c.facts_hold(&facts) && c.hashes_hold(digests) {
                out.push(Hit {
                    record: c.record,
                    what: What::FileAll,
                });
            }
        };
        self.each_anchored(|what, t| match t {
            Target::Record(record) => out.push(Hit { record, what }),
            Target::Compound(c) => compound(c, out),
        });
        for kind in KINDS {
            let Some(d) = digests.get(kind) else { continue };
            let what = What::FileHash(kind);
            out.extend(
                ix.file_hashes
                    .get(kind, d)
                    .iter()
                    .map(|&record| Hit { record, what }),
            );
            out.extend(
                ix.sized_hashes
                    .get(kind, self.size, d)
                    .iter()
                    .map(|&record| Hit { record, what }),
            );
            for &c in ix.file_compound_hashes.get(kind, d) {
                compound(c, out);
            }
        }
    }
}
