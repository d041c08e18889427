//! File digests: which kinds to compute, and the computed values.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use md5::Digest as _;
use picket_proto::HashKind;

/// A set of digest kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds {
    /// MD5 wanted.
    pub md5: bool,
    /// SHA-1 wanted.
    pub sha1: bool,
    /// SHA-256 wanted.
    pub sha256: bool,
}

impl Kinds {
    /// Whether no digest is wanted.
    pub fn is_empty(&self) -> bool {
        !(self.md5 || self.sha1 || self.sha256)
    }

    /// Adds `kind`.
    pub fn set(&mut self, kind: HashKind) {
        match kind {
            HashKind::Md5 => self.md5 = true,
            HashKind::Sha1 => self.sha1 = true,
            HashKind::Sha256 => self.sha256 = true,
        }
    }
}

/// The digests computed for one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digests {
    /// MD5, if computed.
    pub md5: Option<[u8; 16]>,
    /// SHA-1, if computed.
    pub sha1: Option<[u8; 20]>,
    /// SHA-256, if computed.
    pub sha256: Option<[u8; 32]>,
}

impl Digests {
    /// The digest of `kind`, if computed.
    pub fn get(&self, kind: HashKind) -> Option<&[u8]> {
        match kind {
            HashKind::Md5 => self.md5.as_ref().map(|d| &d[..]),
            HashKind::Sha1 => self.sha1.as_ref().map(|d| &d[..]),
            HashKind::Sha256 => self.sha256.as_ref().map(|d| &d[..]),
        }
    }
}

/// Hashes `path` for `kinds` in one read. Returns `None` if the file changed while it was read
/// (size, modification or change time differ afterwards), or if it is not the file `seen` was
/// taken from.
pub fn hash_file(
    path: &Path,
    seen: &fs::Metadata,
    kinds: Kinds,
    buf: &mut [u8],
) -> io::Result<Option<Digests>> {
    let mut file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)?;
    let before = file.metadata()?;
    // The file opened must be the one `seen` describes, unchanged: callers key caches on
    // `seen`, so digests of other bytes must never be returned under it.
    let same = crate::cache::Identity::of(&before) == crate::cache::Identity::of(seen);
    if !same {
        return Ok(None);
    }
    hash_open_file(&mut file, kinds, buf)
}

/// Hashes the regular file `name` in the directory `dir`, opened relative to it without
/// following a link, if it is still the file `seen` describes (every identity field), for
/// `kinds` in one read. `None` as for [`hash_file`].
pub fn hash_at(
    dir: &std::os::fd::OwnedFd,
    name: &std::ffi::OsStr,
    seen: &crate::cache::Identity,
    kinds: Kinds,
    buf: &mut [u8],
) -> io::Result<Option<Digests>> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut file = File::from(fd);
    if crate::cache::Identity::of(&file.metadata()?) != *seen {
        return Ok(None);
    }
    hash_open_file(&mut file, kinds, buf)
}

/// Hashes an open regular file for `kinds` in one read. Returns `None` if it is not a regular
/// file, or if it changed while it was read (size, modification or change time differ after).
pub fn hash_open_file(file: &mut File, kinds: Kinds, buf: &mut [u8]) -> io::Result<Option<Digests>> {
    let before = file.metadata()?;
    if !before.is_file() {
        return Ok(None);
    }
    let mut sha256 = kinds
        .sha256
        .then(|| ring::digest::Context::new(&ring::digest::SHA256));
    let mut sha1 = kinds.sha1.then(sha1::Sha1::new);
    let mut md5 = kinds.md5.then(md5::Md5::new);
    let mut total = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        total += n as u64;
        if total > before.len() {
            // Growing while read: it is not the file `before` described, and reading on could
            // last as long as a writer keeps appending, past every size limit and budget.
            return Ok(None);
        }
        if let Some(h) = sha256.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = sha1.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = md5.as_mut() {
            h.update(chunk);
        }
    }
    let after = file.metadata()?;
    let changed = after.len() != before.len()
        || total != before.len()
        || after.mtime() != before.mtime()
        || after.mtime_nsec() != before.mtime_nsec()
        || after.ctime() != before.ctime()
        || after.ctime_nsec() != before.ctime_nsec();
    if changed {
        return Ok(None);
    }
    Ok(Some(Digests {
        sha256: sha256.map(|h| {
            let mut out = [0u8; 32];
            out.copy_from_slice(h.finish().as_ref());
            out
        }),
        sha1: sha1.map(|h| h.finalize().into()),
        md5: md5.map(|h| h.finalize().into()),
    }))
}
