use std::io;
use std::path::PathBuf;

/// Errors of the collector's library. Each names the file, line or setting it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectorError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
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
    /// The database failed.
    #[error("database {path}: {source}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
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
    #[error("{context}: {source}")]
    Proto {
        /// What was being done.
        context: String,
        /// The contract's error.
        source: picket_proto::Error,
    },
    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Refused(String),
}

impl CollectorError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CollectorError {
        let path = path.into();
        move |source| CollectorError::Io { path, source }
    }

    pub(crate) fn proto(context: impl Into<String>) -> impl FnOnce(picket_proto::Error) -> CollectorError {
        let context = context.into();
        move |source| CollectorError::Proto { context, source }
    }
}
