//! What can go wrong on the live channel, each error naming the collector (or the local file)
//! it is about, so an operator reading the agent's log knows where to look.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use picket_proto::wire::{ErrorCode, FrameError, WireError};

/// A failure of the live channel or of the files it needs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The TCP connection could not be made.
    #[error("connect to {addr}: {error}")]
    Connect {
        /// The collector's address as configured (`HOST:PORT`).
        addr: String,
        /// The OS error (connection refused, unreachable, ...).
        error: io::Error,
    },
    /// The TLS handshake failed: most often the collector's certificate did not verify.
    #[error("TLS with {addr}: {message}")]
    Tls {
        /// The collector.
        addr: String,
        /// What rustls reported, with a certificate problem spelled out.
        message: String,
    },
    /// Nothing arrived (or could be sent) in time.
    #[error("{addr}: timed out after {}s {what}", after.as_secs())]
    Timeout {
        /// The collector.
        addr: String,
        /// What the agent was waiting for.
        what: String,
        /// How long it waited.
        after: Duration,
    },
    /// The collector closed the connection.
    #[error("{addr}: the collector closed the connection {during}")]
    Closed {
        /// The collector.
        addr: String,
        /// What the agent was doing.
        during: String,
    },
    /// Reading or writing the connection failed.
    #[error("{addr}: {error}")]
    Io {
        /// The collector.
        addr: String,
        /// The OS or TLS error.
        error: io::Error,
    },
    /// A frame from the collector broke the framing rules (over the cap, empty, undecodable).
    #[error("{addr}: bad frame from the collector: {error}")]
    Frame {
        /// The collector.
        addr: String,
        /// What was wrong with it.
        error: FrameError,
    },
    /// The collector answered with an error frame.
    #[error("collector {addr} refused: {error}")]
    Refused {
        /// The collector.
        addr: String,
        /// Its error frame (code and message).
        error: WireError,
    },
    /// The collector sent something the protocol does not allow here.
    #[error("{addr}: {message}")]
    Protocol {
        /// The collector.
        addr: String,
        /// What was unexpected.
        message: String,
    },
    /// A local file the channel needs (key, certificate, CA, machine id) is missing or bad.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An argument or configuration value does not work (an address, a CA that is not the one
    /// the token pins).
    #[error("{0}")]
    Invalid(String),
}

impl LinkError {
    /// The collector's error code, when this is an error frame.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            LinkError::Refused { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// How long the collector asked the agent to wait, if it did, capped at the backoff's
    /// longest wait ([`super::backoff::CAP`]).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LinkError::Refused { error, .. } => error
                .retry_after_ms
                .map(|ms| super::backoff::server_wait(Some(ms), Duration::ZERO)),
            _ => None,
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>) -> impl FnOnce(String) -> LinkError {
        let path = path.into();
        move |message| LinkError::File { path, message }
    }
}
