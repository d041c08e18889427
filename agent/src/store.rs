//! The agent's state directory: the last good set, and how a new one replaces it.
//!
//! Architecture invariant: `DIR/set.pkt` is only ever replaced by `rename` of a fully written
//! and fsynced temporary file, followed by an fsync of the directory. A crash at any instant
//! leaves the old set or the new one, never a torn or empty one. A failed check leaves the
//! stored bytes exactly as they were.
//!
//! An import is two steps, [`StateDir::verify`] (every check, nothing written) and
//! [`StateDir::commit`] (the atomic install), so a caller can refuse a verified set before it
//! replaces the installed one: the link and enrolment use [`StateDir::import_expected`], which
//! also refuses a set file claiming another channel than the agent follows (before any
//! signature is checked) and a set whose index would pass the memory limit, so that the daemon
//! is never left with a stored set it cannot load.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use picket_proto::{Content, Limits, Outcome, SetFile, TrustAnchor, Trusted};

use crate::AgentError;

/// The stored set's file name inside the state directory.
pub const SET_FILE: &str = "set.pkt";
const LOCK_FILE: &str = "lock";

/// What a set from the collector must be, beyond verifying, before it replaces the installed
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected<'a> {
    /// The channel the agent follows: a file claiming another is refused.
    pub channel: &'a str,
    /// The memory ceiling (`limits.memory_limit`): a set whose index would need more is refused,
    /// so a set the daemon could not load never replaces one it can.
    pub memory_limit: u64,
}

/// A set file that passed verification and is not installed yet (see [`StateDir::verify`]).
#[derive(Debug)]
pub enum Checked {
    /// Exactly the installed set and timestamp: nothing to install.
    AlreadyInstalled {
        /// The set version.
        version: u64,
    },
    /// A new version, or the installed one with renewed freshness.
    Update {
        /// What would be installed.
        next: Box<Trusted>,
        /// Whether the set version changes or only its freshness.
        outcome: Outcome,
        /// The version installed now, if any.
        from: Option<u64>,
    },
}

/// An opened, locked state directory.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: File,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// A new set version is installed.
    NewVersion {
        /// The version installed before, if any.
        from: Option<u64>,
        /// The version now installed.
        to: u64,
        /// Indicators in the new set.
        records: usize,
    },
    /// The same set version with renewed freshness.
    Refreshed {
        /// The set version.
        version: u64,
    },
    /// Exactly this set and timestamp were already installed; nothing changed.
    AlreadyInstalled {
        /// The set version.
        version: u64,
    },
}

impl StateDir {
    /// Opens (creating it 0700 if needed) and locks the state directory. The lock is held until
    /// the value is dropped, so two imports cannot interleave. Temporary files that a killed
    /// import left behind are deleted once the lock is held.
    pub fn open(path: &Path) -> Result<StateDir, AgentError> {
        fs::create_dir_all(path).map_err(AgentError::io(path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(AgentError::io(path))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(AgentError::io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(AgentError::Locked {
                    path: path.to_owned(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(AgentError::io(&lock_path)(e)),
        }
        remove_stale_temps(path, SET_FILE)?;
        Ok(StateDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored set, re-verified, or `None` when none is installed.
    pub fn load(&self, limits: &Limits) -> Result<Option<Trusted>, AgentError> {
        load_set(&self.path, limits)
    }

    /// Verifies `file_bytes` against the installed set (or the anchor, when none is) and, if
    /// every check passes, installs it atomically: [`StateDir::verify`] then
    /// [`StateDir::commit`]. The file's channel claim is not checked against anything but the
    /// installed set (`import-set` installs a first set of any channel the anchor's root signs).
    pub fn import(
        &self,
        anchor: &TrustAnchor,
        file_path: &Path,
        file_bytes: &[u8],
        wall: i64,
        limits: &Limits,
    ) -> Result<Imported, AgentError> {
        let checked = self.verify(anchor, file_path, file_bytes, wall, limits, None)?;
        self.commit(checked)
    }

    /// [`StateDir::import`] for a set that must be for `expected.channel` and whose index must
    /// fit under `expected.memory_limit`: what the link and enrolment install. A set that fails
    /// either check is refused before anything is written, and the installed set stays.
    pub fn import_expected(
        &self,
        anchor: &TrustAnchor,
        file_path: &Path,
        file_bytes: &[u8],
        wall: i64,
        limits: &Limits,
        expected: &Expected<'_>,
    ) -> Result<Imported, AgentError> {
        let checked = self.verify(
            anchor,
            file_path,
            file_bytes,
            wall,
            limits,
            Some(expected.channel),
        )?;
        if let Checked::Update {
            next,
            outcome: Outcome::NewVersion,
            ..
        } = &checked
        {
            crate::loaded::check_index_fits(&next.snapshot(), expected.memory_limit)?;
        }
        self.commit(checked)
    }

    /// Verifies `file_bytes` against the installed set (or the anchor, when none is) without
    /// writing anything, so the caller can look at the result before [`StateDir::commit`]. With
    /// `channel`, a file whose channel claim is another channel is refused before any signature
    /// is checked (the claim chooses the keys; the signed documents must then agree with it).
    pub fn verify(
        &self,
        anchor: &TrustAnchor,
        file_path: &Path,
        file_bytes: &[u8],
        wall: i64,
        limits: &Limits,
        channel: Option<&str>,
    ) -> Result<Checked, AgentError> {
        let file = SetFile::decode(file_bytes, limits).map_err(AgentError::verify(file_path))?;
        if let Some(expected) = channel {
            if file.channel != expected {
                return Err(AgentError::Verify {
                    path: file_path.to_owned(),
                    error: picket_proto::Error::ChannelMismatch {
                        what: picket_proto::Part::SetFile,
                        expected: expected.to_owned(),
                        found: file.channel.to_owned(),
                    },
                });
            }
        }
        let prev = self.load(limits)?;
        if let Some(p) = &prev {
            // Exactly the installed bytes, every part of them: nothing to do. Anything else, even
            // one byte, goes through every check.
            let same_content = matches!(file.content, Content::Full(b) if b == p.snapshot_bytes());
            if same_content && p.timestamp_bytes() == file.timestamp && p.manifest_bytes() == file.manifest {
                return Ok(Checked::AlreadyInstalled {
                    version: p.manifest().version,
                });
            }
        }
        let (next, outcome) = Trusted::update(prev.as_ref(), anchor, &file, wall, limits)
            .map_err(AgentError::verify(file_path))?;
        Ok(Checked::Update {
            from: prev.map(|p| p.manifest().version),
            next: Box::new(next),
            outcome,
        })
    }

    /// Installs what [`StateDir::verify`] accepted (atomically) and says what changed.
    pub fn commit(&self, checked: Checked) -> Result<Imported, AgentError> {
        let (next, outcome, from) = match checked {
            Checked::AlreadyInstalled { version } => return Ok(Imported::AlreadyInstalled { version }),
            Checked::Update { next, outcome, from } => (next, outcome, from),
        };
        self.install(&next)?;
        Ok(match outcome {
            Outcome::Refreshed => Imported::Refreshed {
                version: next.manifest().version,
            },
            Outcome::NewVersion => Imported::NewVersion {
                from,
                to: next.manifest().version,
                records: next.snapshot().len(),
            },
        })
    }

    /// Writes `set` as the stored set: temp file, fsync, rename, fsync the directory.
    pub fn install(&self, set: &Trusted) -> Result<(), AgentError> {
        write_atomically(&self.path, SET_FILE, &set.encode())
    }
}

/// Reads and re-verifies the stored set without taking the lock (a reader never sees a torn
/// file, because the file is only ever replaced by rename).
pub fn load_set(dir: &Path, limits: &Limits) -> Result<Option<Trusted>, AgentError> {
    let path = dir.join(SET_FILE);
    let bytes = match read_capped(&path, limits.max_set_file() as u64) {
        Ok(b) => b,
        Err(AgentError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Trusted::decode_stored(&bytes, limits)
        .map(Some)
        .map_err(AgentError::verify(path))
}

/// Reads a whole file, refusing one larger than `cap` without reading it all.
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, AgentError> {
    let file = File::open(path).map_err(AgentError::io(path))?;
    let len = file.metadata().map_err(AgentError::io(path))?.len();
    if len > cap {
        return Err(AgentError::Verify {
            path: path.to_owned(),
            error: picket_proto::Error::TooLarge {
                what: picket_proto::Part::SetFile,
                len,
                cap,
            },
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(AgentError::io(path))?;
    if bytes.len() as u64 > cap {
        return Err(AgentError::Verify {
            path: path.to_owned(),
            error: picket_proto::Error::TooLarge {
                what: picket_proto::Part::SetFile,
                len: bytes.len() as u64,
                cap,
            },
        });
    }
    Ok(bytes)
}

/// How much of a replacement [`write_file`] makes durable before it returns. In every case a
/// reader sees the old content or the new, never a mix: the new content is written whole under
/// a temporary name and renamed over the old.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Rename only, no fsync: after a power loss the file may hold the old content, the new, or
    /// (on some file systems) nothing. For advice that is rewritten seconds later
    /// (`status.json`).
    Renamed,
    /// The new content is fsynced before the rename; the directory is not. The caller fsyncs it
    /// with [`sync_dir`], once after several files (the spool), before it relies on them.
    FileSynced,
    /// The content is fsynced before the rename and the directory after it: once this returns,
    /// the new content survives a crash.
    Durable,
}

/// Replaces `dir/name` (mode 0600) with `bytes` through a temporary file that is renamed over
/// it, fsyncing as much as `durability` says. On an error the temporary file is removed and the
/// old content is left as it was.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8], durability: Durability) -> Result<(), AgentError> {
    let tmp = dir.join(format!("{}{}", temp_prefix(name), std::process::id()));
    let target = dir.join(name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(AgentError::io(&tmp))?;
        f.write_all(bytes).map_err(AgentError::io(&tmp))?;
        if durability != Durability::Renamed {
            f.sync_all().map_err(AgentError::io(&tmp))?;
        }
        drop(f);
        fs::rename(&tmp, &target).map_err(AgentError::io(&target))?;
        if durability == Durability::Durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or the new content,
/// and the new once this returns: [`write_file`] with [`Durability::Durable`].
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), AgentError> {
    write_file(dir, name, bytes, Durability::Durable)
}

/// Fsyncs a directory, so that the renames and removals in it so far survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), AgentError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(AgentError::io(dir))
}

/// What every temporary file of [`write_file`] has in its name, after `.` and the target's
/// name and before the writer's process id.
pub(crate) const TEMP_MARK: &str = ".tmp-";

/// The prefix of `write_file`'s temporary files for `name`; the writer's process id follows.
fn temp_prefix(name: &str) -> String {
    format!(".{name}{TEMP_MARK}")
}

/// Deletes temporary files that writers of `dir/name` left when they were killed between
/// creating the file and renaming it. Each writer names its file after its process id, so
/// without this every crash would leave another full-size copy of the set behind. Only called
/// with the directory locked: no live writer owns one of these files.
pub(crate) fn remove_stale_temps(dir: &Path, name: &str) -> Result<(), AgentError> {
    let prefix = temp_prefix(name);
    for entry in fs::read_dir(dir).map_err(AgentError::io(dir))? {
        let entry = entry.map_err(AgentError::io(dir))?;
        if entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
            let path = entry.path();
            fs::remove_file(&path).map_err(AgentError::io(&path))?;
        }
    }
    Ok(())
}
