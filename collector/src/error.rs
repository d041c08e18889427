use std::io;
use std::path::PathBuf;

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
    /// The database failed.
    #[error("database {path}: {error}")]
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
