//! The file scanner: walks paths, hashes each regular file once for the digest kinds the set
//! needs (none when only its name matters), and reports matches.
//!
//! It never follows a symbolic link below a root, never crosses into another filesystem unless
//! told to, skips excluded prefixes, devices, FIFOs and sockets (and opens files non-blocking, so
//! one swapped in after the check cannot hang it), reports unreadable files and goes on, and
//! drops the digests of a file that changed while it was read rather than report a wrong hash.
//! With a [`HashCache`], a file whose identity (device, inode, size, mtime, ctime) is unchanged
//! is not read again: a rescan of an unchanged tree hashes nothing, and a new set version is
//! matched against the cache.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use crate::cache::{HashCache, Identity};
use crate::digest::{hash_file, Digests, Kinds};
use crate::index::{FileMeta, Hit, Index};

/// How to scan.
#[derive(Debug, Clone)]
pub struct Options {
    /// Files larger than this are not hashed (their names are still matched).
    pub max_file_size: u64,
    /// Stay on the filesystem of each root.
    pub one_filesystem: bool,
    /// Path prefixes not scanned.
    pub exclude: Vec<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_file_size: 256 << 20,
            one_filesystem: true,
            exclude: Vec::new(),
        }
    }
}

/// Counters for one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Regular files looked at.
    pub files: u64,
    /// Files read and hashed.
    pub hashed: u64,
    /// Bytes read and hashed.
    pub bytes: u64,
    /// Files whose digests came from the cache.
    pub cached: u64,
    /// Entries skipped: links, special files, too large, excluded, other filesystems.
    pub skipped: u64,
    /// Files or directories that could not be read.
    pub errors: u64,
}

/// What the scanner tells its caller as it goes.
pub trait Report {
    /// A file matched indicators.
    fn found(&mut self, path: &Path, hits: &[Hit], digests: &Digests);
    /// A file or directory could not be scanned; the scan goes on.
    fn error(&mut self, path: &Path, err: &io::Error);
    /// Called after each file, for progress display and pacing (the CPU budget).
    fn tick(&mut self, _stats: &Stats) {}
}

/// A scanner: the index, the options, an optional cache and a read buffer.
#[derive(Debug)]
pub struct Scanner<'a> {
    index: &'a Index,
    opts: &'a Options,
    cache: Option<&'a Mutex<HashCache>>,
    buf: Vec<u8>,
    hits: Vec<Hit>,
    /// Counters so far.
    pub stats: Stats,
}

impl<'a> Scanner<'a> {
    /// A scanner over `index`.
    /// A scanner over `index`. The cache, shared with process checks, is locked per file.
    pub fn new(index: &'a Index, opts: &'a Options, cache: Option<&'a Mutex<HashCache>>) -> Scanner<'a> {
        Scanner {
            index,
            opts,
            cache,
            buf: vec![0u8; 1 << 20],
            hits: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn excluded(&self, path: &Path) -> bool {
        self.opts.exclude.iter().any(|p| path.starts_with(p))
    }

    /// Walks `roots`. A root named here is followed if it is a link, as `find -H` does.
    pub fn scan(&mut self, roots: &[PathBuf], report: &mut dyn Report) {
        for root in roots {
            let meta = match fs::metadata(root) {
                Ok(m) => m,
                Err(e) => {
                    self.stats.errors += 1;
                    report.error(root, &e);
                    continue;
                }
            };
            if meta.is_file() {
                self.file(root, &meta, report);
                continue;
            }
            let dev = meta.dev();
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) => {
                        self.stats.errors += 1;
                        report.error(&dir, &e);
                        continue;
                    }
                };
                for entry in entries {
                    let entry = match entry {
                        Ok(e) => e,
                        Err(e) => {
                            self.stats.errors += 1;
                            report.error(&dir, &e);
                            continue;
                        }
                    };
                    let path = entry.path();
                    if self.excluded(&path) {
                        self.stats.skipped += 1;
                        continue;
                    }
                    let meta = match fs::symlink_metadata(&path) {
                        Ok(m) => m,
                        Err(e) => {
                            self.stats.errors += 1;
                            report.error(&path, &e);
                            continue;
                        }
                    };
                    let ft = meta.file_type();
                    if ft.is_dir() {
                        if self.opts.one_filesystem && meta.dev() != dev {
                            self.stats.skipped += 1;
                        } else {
                            stack.push(path);
                        }
                    } else if ft.is_file() {
                        self.file(&path, &meta, report);
                    } else {
                        // Symbolic links are never followed; devices, FIFOs and sockets skipped.
                        self.stats.skipped += 1;
                    }
                }
            }
        }
    }

    /// Checks one path (a file event): `lstat`, then as the walk would.
    pub fn check_path(&mut self, path: &Path, report: &mut dyn Report) {
        if self.excluded(path) {
            return;
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_file() => self.file(path, &meta, report),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                self.stats.errors += 1;
                report.error(path, &e);
            }
        }
    }

    fn file(&mut self, path: &Path, meta: &fs::Metadata, report: &mut dyn Report) {
        self.stats.files += 1;
        let size = meta.len();
        let name = path.file_name().unwrap_or(path.as_os_str());
        let probe = self.index.probe(&FileMeta { path, name, size });
        let mut kinds = probe.needed();
        if size > self.opts.max_file_size && !kinds.is_empty() {
            self.stats.skipped += 1;
            kinds = Kinds::default();
        }
        let mut digests = Digests::default();
        if kinds.is_empty() {
            // Keep what the cache knows of this file through the next sweep: a later set may
            // need its digests.
            if let Some(c) = self.cache {
                lock(c).mark_seen(&Identity::of(meta));
            }
        } else {
            let id = Identity::of(meta);
            let cached = self.cache.and_then(|c| lock(c).lookup(&id, kinds));
            match cached {
                Some(d) => {
                    self.stats.cached += 1;
                    digests = d;
                }
                None => {
                    let started = SystemTime::now();
                    match hash_file(path, meta, kinds, &mut self.buf) {
                        Ok(Some(d)) => {
                            self.stats.hashed += 1;
                            self.stats.bytes += size;
                            if let Some(c) = self.cache {
                                lock(c).put(id, &d, started);
                            }
                            digests = d;
                        }
                        Ok(None) => {
                            self.stats.errors += 1;
                            report.error(path, &io::Error::other("changed while being read; not reported"));
                            report.tick(&self.stats);
                            return;
                        }
                        Err(e) => {
                            self.stats.errors += 1;
                            report.error(path, &e);
                            report.tick(&self.stats);
                            return;
                        }
                    }
                }
            }
        }
        self.hits.clear();
        probe.match_file(&digests, &mut self.hits);
        if !self.hits.is_empty() {
            report.found(path, &self.hits, &digests);
        }
        report.tick(&self.stats);
    }
}

fn lock(m: &Mutex<HashCache>) -> MutexGuard<'_, HashCache> {
    // A panic while the cache was locked is a bug already reported; the cache is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
