//! The file scanner: walks paths, hashes each regular file once for the digest kinds the set
//! needs, and reports matches.
//!
//! It never follows a symbolic link below a root, never crosses into another filesystem unless
//! told to, skips devices, FIFOs and sockets (and opens files non-blocking, so one swapped in
//! after the check cannot hang it), reports unreadable files and goes on, and drops the digests
//! of a file that changed while it was read rather than report a wrong hash.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::digest::{hash_file, Digests};
use crate::matcher::{FileMatch, Matcher};

/// How to scan.
#[derive(Debug, Clone)]
pub struct Options {
    /// Files larger than this are not hashed.
    pub max_file_size: u64,
    /// Stay on the filesystem of each root.
    pub one_filesystem: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_file_size: 256 << 20,
            one_filesystem: true,
        }
    }
}

/// Counters for one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Regular files looked at.
    pub files: u64,
    /// Files hashed.
    pub hashed: u64,
    /// Bytes hashed.
    pub bytes: u64,
    /// Files skipped: links, special files, too large, other filesystems.
    pub skipped: u64,
    /// Files or directories that could not be read.
    pub errors: u64,
}

/// What the scanner tells its caller as it goes.
pub trait Report {
    /// A file matched indicators.
    fn found(&mut self, path: &Path, matches: &[FileMatch<'_>], digests: &Digests);
    /// A file or directory could not be scanned; the scan goes on.
    fn error(&mut self, path: &Path, err: &io::Error);
}

/// Scans `roots` with `matcher`.
pub fn scan(matcher: &Matcher, roots: &[PathBuf], opts: &Options, report: &mut dyn Report) -> Stats {
    let mut stats = Stats::default();
    let mut buf = vec![0u8; 1 << 20];
    for root in roots {
        // A root named on the command line is followed if it is a link, as `find -H` does.
        let meta = match fs::metadata(root) {
            Ok(m) => m,
            Err(e) => {
                stats.errors += 1;
                report.error(root, &e);
                continue;
            }
        };
        let dev = meta.dev();
        if meta.is_file() {
            scan_file(matcher, root, &meta, opts, &mut buf, &mut stats, report);
            continue;
        }
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    stats.errors += 1;
                    report.error(&dir, &e);
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        stats.errors += 1;
                        report.error(&dir, &e);
                        continue;
                    }
                };
                let path = entry.path();
                let meta = match fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) => {
                        stats.errors += 1;
                        report.error(&path, &e);
                        continue;
                    }
                };
                let ft = meta.file_type();
                if ft.is_dir() {
                    if opts.one_filesystem && meta.dev() != dev {
                        stats.skipped += 1;
                    } else {
                        stack.push(path);
                    }
                } else if ft.is_file() {
                    scan_file(matcher, &path, &meta, opts, &mut buf, &mut stats, report);
                } else {
                    // Symbolic links are never followed; devices, FIFOs and sockets are skipped.
                    stats.skipped += 1;
                }
            }
        }
    }
    stats
}

fn scan_file(
    matcher: &Matcher,
    path: &Path,
    meta: &fs::Metadata,
    opts: &Options,
    buf: &mut [u8],
    stats: &mut Stats,
    report: &mut dyn Report,
) {
    stats.files += 1;
    let size = meta.len();
    if size > opts.max_file_size {
        stats.skipped += 1;
        return;
    }
    let kinds = matcher.needed(size);
    if kinds.is_empty() {
        return;
    }
    match hash_file(path, meta, kinds, buf) {
        Ok(Some(d)) => {
            stats.hashed += 1;
            stats.bytes += size;
            let matches = matcher.match_file(size, &d);
            if !matches.is_empty() {
                report.found(path, &matches, &d);
            }
        }
        Ok(None) => {
            stats.errors += 1;
            report.error(path, &io::Error::other("changed while being read; not reported"));
        }
        Err(e) => {
            stats.errors += 1;
            report.error(path, &e);
        }
    }
}
