use std::io;
use std::path::{Path, PathBuf};

/// Errors of the collector's library. Each names the file, line or setting it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectorError {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// A line of an ingested file could not be understood.
    #[error("{path}:{line}: {problem}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// A configuration file is wrong.
    #[error("{path}: {problem}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        problem: String,
    },
    /// The database failed. A write that failed for want of space says so plainly (SQLite
    /// often calls it a "disk I/O error"), with the space left when the error is shown.
    #[error("database {}: {}", .path.display(), db_problem(.path, .error))]
    Db {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        error: rusqlite::Error,
    },
    /// The data directory is not in a usable state.
    #[error("{path}: {problem}")]
    DataDir {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Signing or verifying failed.
    #[error("{context}: {error}")]
    Proto {
        /// What was being done.
        context: String,
        /// The contract's error.
        error: picket_proto::Error,
    },
    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Refused(String),
    /// A TAXII server could not be read.
    #[error(transparent)]
    Taxii(#[from] crate::taxii::TaxiiError),
}

impl CollectorError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CollectorError {
        let path = path.into();
        move |error| CollectorError::Io { path, error }
    }

    pub(crate) fn proto(context: impl Into<String>) -> impl FnOnce(picket_proto::Error) -> CollectorError {
        let context = context.into();
        move |error| CollectorError::Proto { context, error }
    }
}

/// Below this much free space, a failed write is put down to a full disk.
const NEARLY_FULL: u64 = 1 << 20;

/// SQLite's error, and for a failed write the state of the disk: SQLite reports running out of
/// space as "database or disk is full" or, when the write-ahead log or its index cannot grow, as
/// a "disk I/O error", which sends an operator looking for a broken disk.
fn db_problem(path: &Path, error: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    let full = match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => true,
        Some(ErrorCode::SystemIoFailure) => false,
        _ => return error.to_string(),
    };
    match free_space(path) {
        Some(free) if full || free < NEARLY_FULL => format!(
            "{error}: the disk is full ({} free on the file system holding it); free some space \
             and run it again",
            kib(free)
        ),
        Some(free) => format!("{error} ({} free on the file system holding it)", kib(free)),
        None if full => format!("{error}: the disk is full"),
        None => error.to_string(),
    }
}

/// Bytes an unprivileged writer could still use on the file system holding `path` (or its
/// nearest existing parent).
fn free_space(path: &Path) -> Option<u64> {
    let at = path.ancestors().find(|p| p.exists())?;
    let at = if at.as_os_str().is_empty() {
        Path::new(".")
    } else {
        at
    };
    let st = rustix::fs::statvfs(at).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

fn kib(bytes: u64) -> String {
    format!("{} KiB", bytes / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    /// Regression (soak finding): ingest on a full disk said only "disk I/O error".
    #[test]
    fn a_write_that_fails_for_want_of_space_says_the_disk_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("picket.db");
        let full = CollectorError::Db {
            path: path.clone(),
            error: sqlite(rusqlite::ffi::SQLITE_FULL),
        }
        .to_string();
        assert!(
            full.starts_with(&format!("database {}: ", path.display())),
            "{full}"
        );
        assert!(full.contains("the disk is full ("), "{full}");
        assert!(full.contains("free on the file system holding it"), "{full}");

        // An I/O error on a disk with room is not called full, but the room is shown.
        let io = CollectorError::Db {
            path: path.clone(),
            error: sqlite(rusqlite::ffi::SQLITE_IOERR),
        }
        .to_string();
        if free_space(&path).unwrap() >= NEARLY_FULL {
            assert!(!io.contains("full"), "{io}");
        }
        assert!(
            io.contains("disk I/O error") && io.contains("free on the file system"),
            "{io}"
        );

        // Other errors are SQLite's words alone.
        let other = CollectorError::Db {
            path,
            error: sqlite(rusqlite::ffi::SQLITE_CONSTRAINT),
        }
        .to_string();
        assert!(!other.contains("free on"), "{other}");
    }
}
