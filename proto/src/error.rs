//! The one error type of the contract.
//!
//! Every variant names the part of a set that failed and, where it helps an operator, the values
//! involved, so that a message such as "rollback: set version 3 is not newer than installed 5"
//! can be printed as it is.

use std::fmt;

/// Which piece of signed or framed data an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Part {
    /// The signature envelope around a root, timestamp or manifest.
    Envelope,
    /// A root document.
    Root,
    /// A timestamp document.
    Timestamp,
    /// A set manifest.
    Manifest,
    /// A snapshot: the full content of a set version.
    Snapshot,
    /// A delta between two snapshots.
    Delta,
    /// An exported set file.
    SetFile,
    /// The agent's stored state.
    State,
    /// One indicator record inside a snapshot.
    Record,
    /// A trust anchor (`root.pub`).
    Anchor,
    /// A key file.
    Key,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Envelope => "envelope",
            Part::Root => "root",
            Part::Timestamp => "timestamp",
            Part::Manifest => "manifest",
            Part::Snapshot => "snapshot",
            Part::Delta => "delta",
            Part::SetFile => "set file",
            Part::State => "stored state",
            Part::Record => "record",
            Part::Anchor => "trust anchor",
            Part::Key => "key",
        })
    }
}

/// A signing role, as the root document defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Role {
    /// The offline root: signs root documents.
    Root,
    /// The online publisher: signs set manifests.
    Publisher,
    /// The online timestamp role: signs freshness.
    Timestamp,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Root => "root",
            Role::Publisher => "publisher",
            Role::Timestamp => "timestamp",
        })
    }
}

/// What a rollback check was about: the set (manifest) version or the timestamp version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Versioned {
    /// The set version carried by the manifest.
    Set,
    /// The timestamp document's own version.
    Timestamp,
}

impl fmt::Display for Versioned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Versioned::Set => "set",
            Versioned::Timestamp => "timestamp",
        })
    }
}

/// Every way decoding or verifying Picket data can fail.
///
/// Verification fails closed: any of these means nothing was accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is larger than the cap for its kind; it was not decoded.
    #[error("{what}: {len} bytes exceeds the cap of {cap} bytes")]
    TooLarge {
        /// What was too large.
        what: Part,
        /// Its length.
        len: u64,
        /// The cap.
        cap: u64,
    },
    /// The bytes do not decode as the expected structure.
    #[error("{what}: malformed: {detail}")]
    Malformed {
        /// What failed to decode.
        what: Part,
        /// The decoder's complaint.
        detail: String,
    },
    /// The bytes carry a format version this build does not know.
    #[error("{what}: unsupported format version {version}")]
    UnsupportedFormat {
        /// What carried the version.
        what: Part,
        /// The version found.
        version: u8,
    },
    /// The bytes decode but are not the one canonical encoding of their content.
    #[error("{what}: not in canonical form: {detail}")]
    NonCanonical {
        /// What was not canonical.
        what: Part,
        /// Why.
        detail: String,
    },
    /// The content is well formed but breaks a rule of the format.
    #[error("{what}: invalid: {detail}")]
    Invalid {
        /// What was invalid.
        what: Part,
        /// Why.
        detail: String,
    },
    /// An envelope carries no signature at all.
    #[error("{what}: unsigned")]
    Unsigned {
        /// What was unsigned.
        what: Part,
    },
    /// Signed only by keys the root does not know for any role.
    #[error("{what}: signed by unknown key {key}")]
    UnknownKey {
        /// What was signed.
        what: Part,
        /// The id of the first unknown key.
        key: String,
    },
    /// Signed by a key the root knows, but for another role or channel.
    #[error("{what}: key {key} is not allowed for the {role} role on channel {channel:?}")]
    KeyNotAllowed {
        /// What was signed.
        what: Part,
        /// The key id.
        key: String,
        /// The role the document needed.
        role: Role,
        /// The channel the document is for.
        channel: String,
    },
    /// A signature by an allowed key does not verify over the exact bytes received.
    #[error("{what}: bad signature by key {key}")]
    BadSignature {
        /// What was signed.
        what: Part,
        /// The key id.
        key: String,
    },
    /// Fewer distinct allowed keys signed than the role's threshold.
    #[error("{what}: {valid} valid signature(s) from distinct keys, the {role} threshold is {threshold}")]
    BelowThreshold {
        /// What was signed.
        what: Part,
        /// The role whose threshold applies.
        role: Role,
        /// Distinct valid signatures found.
        valid: usize,
        /// The threshold.
        threshold: u8,
    },
    /// A version that is not newer than the one already installed.
    #[error("rollback: {what} version {offered} is not newer than installed {held}")]
    Rollback {
        /// Set or timestamp.
        what: Versioned,
        /// Version offered.
        offered: u64,
        /// Version installed.
        held: u64,
    },
    /// A root document older than the one installed.
    #[error("rollback: root version {offered} is older than installed {held}")]
    RootRollback {
        /// Version offered.
        offered: u64,
        /// Version installed.
        held: u64,
    },
    /// A root chain that skips a version.
    #[error("root: version {offered} cannot follow {held}: roots are installed one version at a time")]
    RootGap {
        /// Version offered.
        offered: u64,
        /// Version installed.
        held: u64,
    },
    /// A document whose expiry has passed (a freeze attack, or a collector gone quiet).
    #[error("freeze: {what} expired at {}, the time is {}", crate::rfc3339(*expires), crate::rfc3339(*now))]
    Expired {
        /// What expired.
        what: Part,
        /// Its expiry.
        expires: i64,
        /// The time used.
        now: i64,
    },
    /// A document whose lifetime (`expires - created`) is beyond the root's cap for its role.
    #[error("{what}: lifetime of {lifetime} s is beyond the root's cap of {cap} s for the {role} role")]
    LifetimeExceeded {
        /// What was signed.
        what: Part,
        /// The role.
        role: Role,
        /// Its lifetime in seconds.
        lifetime: i64,
        /// The cap in seconds.
        cap: u64,
    },
    /// Content whose SHA-256 is not the signed one (mix-and-match).
    #[error("{what}: SHA-256 does not match the signed value")]
    HashMismatch {
        /// What was hashed.
        what: Part,
    },
    /// Content whose length is not the signed one (checked before hashing or decoding).
    #[error("{what}: length {actual} differs from the signed length {expected}")]
    LengthMismatch {
        /// What was measured.
        what: Part,
        /// The signed length.
        expected: u64,
        /// The length received.
        actual: u64,
    },
    /// A document for another channel than the one expected.
    #[error("{what}: channel {found:?} where {expected:?} was expected")]
    ChannelMismatch {
        /// What named the channel.
        what: Part,
        /// The expected channel.
        expected: String,
        /// The channel found.
        found: String,
    },
    /// A channel the root does not define.
    #[error("channel {channel:?} is not defined by the root")]
    UnknownChannel {
        /// The channel.
        channel: String,
    },
    /// Two signed documents that must agree on a version do not.
    #[error("{what}: version {found} where the signed {expected} was expected")]
    VersionMismatch {
        /// What carried the wrong version.
        what: Part,
        /// The signed version.
        expected: u64,
        /// The version found.
        found: u64,
    },
    /// A delta that does not start from the installed snapshot.
    #[error("delta: no delta on offer from installed version {held}")]
    DeltaBase {
        /// The version installed (or 0 when none is).
        held: u64,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn malformed(what: Part, detail: impl fmt::Display) -> Error {
    Error::Malformed {
        what,
        detail: detail.to_string(),
    }
}

pub(crate) fn invalid(what: Part, detail: impl fmt::Display) -> Error {
    Error::Invalid {
        what,
        detail: detail.to_string(),
    }
}

/// Rejects `len` above `cap` before anything is decoded.
pub(crate) fn check_cap(what: Part, len: usize, cap: usize) -> Result<()> {
    if len > cap {
        return Err(Error::TooLarge {
            what,
            len: len as u64,
            cap: cap as u64,
        });
    }
    Ok(())
}
