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

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use crate::cache::{HashCache, Identity};
use crate::digest::{hash_at, hash_file, Digests, Kinds};
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

/// A directory waiting to be listed.
enum Pending {
    /// Already open (a root).
    Open(Rc<OwnedFd>, PathBuf),
    /// To open by `name` in `parent`, and only if it is still the directory `id` described.
    Child {
        parent: Rc<OwnedFd>,
        name: OsString,
        path: PathBuf,
        id: Identity,
    },
}

/// Opens directory `name` in `parent` without following a link, and returns it only if it is
/// the directory the listing saw (same device and inode).
// The `stat` field types differ between platforms; on some these casts are no-ops.
#[allow(clippy::unnecessary_cast)]
fn open_dir_at(parent: &OwnedFd, name: &OsStr, id: &Identity) -> io::Result<Option<OwnedFd>> {
    let fd = rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rfs::fstat(&fd)?;
    if st.st_dev as u64 != id.dev || st.st_ino as u64 != id.ino {
        return Ok(None);
    }
    Ok(Some(fd))
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

    /// Walks `roots`. A root named here is followed if it is a link, as `find -H` does; below
    /// it, the walk goes through directory descriptors (`openat` with `O_NOFOLLOW`, each
    /// directory's identity checked against the entry that named it), so swapping a directory
    /// for a link while the walk runs cannot lead it outside the root, and a file is opened
    /// relative to the directory it was listed in.
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
            let fd = match rfs::open(
                root,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(e) => {
                    self.stats.errors += 1;
                    report.error(root, &e.into());
                    continue;
                }
            };
            let dev = meta.dev();
            // Pending directories: the parent's descriptor (shared, so that siblings waiting
            // their turn hold one descriptor between them) and the name to open in it.
            let mut stack: Vec<Pending> = vec![Pending::Open(Rc::new(fd), root.clone())];
            while let Some(next) = stack.pop() {
                let (dir, path) = match next {
                    Pending::Open(fd, path) => (fd, path),
                    Pending::Child {
                        parent,
                        name,
                        path,
                        id,
                    } => {
                        match open_dir_at(&parent, &name, &id) {
                            Ok(Some(fd)) => (Rc::new(fd), path),
                            Ok(None) => {
                                // Replaced between the listing and now: not followed.
                                self.stats.skipped += 1;
                                continue;
                            }
                            Err(e) => {
                                self.stats.errors += 1;
                                report.error(&path, &e);
                                continue;
                            }
                        }
                    }
                };
                let mut entries = match rfs::Dir::read_from(&*dir) {
                    Ok(d) => d,
                    Err(e) => {
                        self.stats.errors += 1;
                        report.error(&path, &e.into());
                        continue;
                    }
                };
                while let Some(entry) = entries.read() {
                    let entry = match entry {
                        Ok(e) => e,
                        Err(e) => {
                            self.stats.errors += 1;
                            report.error(&path, &e.into());
                            break;
                        }
                    };
                    let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
                    if name == "." || name == ".." {
                        continue;
                    }
                    let child = path.join(&name);
                    if self.excluded(&child) {
                        self.stats.skipped += 1;
                        continue;
                    }
                    let st = match rfs::statat(&*dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => st,
                        Err(e) => {
                            self.stats.errors += 1;
                            report.error(&child, &e.into());
                            continue;
                        }
                    };
                    let id = Identity::of_stat(&st);
                    match rfs::FileType::from_raw_mode(st.st_mode) {
                        rfs::FileType::Directory => {
                            if self.opts.one_filesystem && id.dev != dev {
                                self.stats.skipped += 1;
                            } else {
                                stack.push(Pending::Child {
                                    parent: dir.clone(),
                                    name,
                                    path: child,
                                    id,
                                });
                            }
                        }
                        rfs::FileType::RegularFile => self.file_at(&dir, &name, &child, &id, report),
                        // Symbolic links are never followed; devices, FIFOs and sockets skipped.
                        _ => self.stats.skipped += 1,
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
        let id = Identity::of(meta);
        self.check(path, &id, report, |kinds, buf| hash_file(path, meta, kinds, buf));
    }

    /// A file listed in the directory `dir` under `name`, opened relative to it.
    fn file_at(&mut self, dir: &OwnedFd, name: &OsStr, path: &Path, id: &Identity, report: &mut dyn Report) {
        self.check(path, id, report, |kinds, buf| hash_at(dir, name, id, kinds, buf));
    }

    fn check(
        &mut self,
        path: &Path,
        id: &Identity,
        report: &mut dyn Report,
        hash: impl FnOnce(Kinds, &mut [u8]) -> io::Result<Option<Digests>>,
    ) {
        self.stats.files += 1;
        let size = id.size;
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
                lock(c).mark_seen(id);
            }
        } else {
            let cached = self.cache.and_then(|c| lock(c).lookup(id, kinds));
            match cached {
                Some(d) => {
                    self.stats.cached += 1;
                    digests = d;
                }
                None => {
                    let started = SystemTime::now();
                    match hash(kinds, &mut self.buf) {
                        Ok(Some(d)) => {
                            self.stats.hashed += 1;
                            self.stats.bytes += size;
                            if let Some(c) = self.cache {
                                lock(c).put(*id, &d, started);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory swapped for a link, or for another directory, between the listing and its
    /// turn in the walk is not entered.
    #[test]
    fn a_swapped_directory_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = rfs::open(tmp.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        let st = rfs::statat(&root, "d", AtFlags::SYMLINK_NOFOLLOW).unwrap();
        let id = Identity::of_stat(&st);
        assert!(open_dir_at(&root, OsStr::new("d"), &id).unwrap().is_some());
        // Swapped for a link to somewhere else: the open refuses to follow it.
        std::fs::remove_dir(tmp.path().join("d")).unwrap();
        std::os::unix::fs::symlink("/etc", tmp.path().join("d")).unwrap();
        assert!(open_dir_at(&root, OsStr::new("d"), &id).is_err());
        // Swapped for another directory: not the one listed.
        std::fs::remove_file(tmp.path().join("d")).unwrap();
        std::fs::create_dir(tmp.path().join("other")).unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        let fresh = open_dir_at(&root, OsStr::new("d"), &id).unwrap();
        // A new directory may reuse the inode number; only a different one must be refused.
        let now = Identity::of_stat(&rfs::statat(&root, "d", AtFlags::SYMLINK_NOFOLLOW).unwrap());
        assert_eq!(fresh.is_some(), now.ino == id.ino);
    }
}
