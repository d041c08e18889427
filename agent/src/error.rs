use std::io;
use std::path::PathBuf;

/// Errors of the agent's shells. Each names the file or directory it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// A set file, anchor or stored state failed a check.
    #[error("{path}: {error}")]
    Verify {
        /// The file that failed.
        path: PathBuf,
        /// The check that failed.
        error: picket_proto::Error,
    },
    /// Another agent process holds the state directory.
    #[error("{path}: the state directory is in use by another picket-agent process")]
    Locked {
        /// The state directory.
        path: PathBuf,
    },
    /// The set would need more memory than the configured ceiling.
    #[error("set version {version} needs about {} for its index, over the memory limit of {}; raise limits.memory_limit or trim the channel", human(*need), human(*limit))]
    TooBig {
        /// The set version.
        version: u64,
        /// Bytes the index would need.
        need: u64,
        /// The configured limit.
        limit: u64,
    },
    /// No set is installed in the state directory.
    #[error("{path}: no indicator set is installed; run `picket-agent import-set` first")]
    NoSet {
        /// The state directory.
        path: PathBuf,
    },
    /// The installed set is stale and freshness was required.
    #[error("{path}: the installed set is stale: {what} expired at {}", picket_proto::rfc3339(*expired_at))]
    Stale {
        /// The state directory or set file.
        path: PathBuf,
        /// What expired.
        what: picket_proto::Part,
        /// When.
        expired_at: i64,
    },
}

impl AgentError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> AgentError {
        let path = path.into();
        move |error| AgentError::Io { path, error }
    }

    pub(crate) fn verify(path: impl Into<PathBuf>) -> impl FnOnce(picket_proto::Error) -> AgentError {
        let path = path.into();
        move |error| AgentError::Verify { path, error }
    }
}

/// A byte count for people: KiB below a MiB, MiB above.
fn human(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{} KiB", bytes.div_ceil(1024))
    } else {
        format!("{} MiB", bytes.div_ceil(1 << 20))
    }
}
