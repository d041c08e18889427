//! # picket-proto: the contract between Picket's collector and agent
//!
//! This crate defines what an indicator is, how indicators travel as signed **indicator sets**,
//! and how an agent decides whether to trust one. It does no I/O and knows no runtime: callers
//! hand it bytes and the current time, and it hands back typed values or a typed [`Error`].
//!
//! The trust model is TUF's, applied to indicator sets:
//!
//! - an offline **root** document (one key or a threshold) names, per channel, the keys of the
//!   online **publisher** and **timestamp** roles, and caps each role's lifetime;
//! - the publisher signs a [`Manifest`] per set version (hash, length, TLP, deltas on offer);
//! - the timestamp role signs a short-lived [`Timestamp`] that pins the current manifest, so that
//!   freshness can be renewed without bumping the set version;
//! - the content is a canonical [`Snapshot`] of length-prefixed, kind-tagged [`Record`]s, or a
//!   [`Delta`] from an earlier snapshot.
//!
//! [`Trusted::update`] is the one place where bytes become [`Verified`] documents. It checks size
//! caps before decoding and signatures or hashes over the exact bytes received before decoding
//! what they cover, and it fails closed.
//!
//! Serialization is postcard: field order is the schema. Every format starts with a magic and a
//! version, and golden-bytes tests pin each encoding.
//!
//! Two modules are public as namespaces rather than re-exported: [`wire`], the messages and
//! framing of the live channel between agent and collector, and [`x509`], the few certificate
//! facts (validity, Ed25519 public key) both ends read from the channel's certificates.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod anchor;
mod docs;
mod envelope;
mod error;
mod indicator;
mod keys;
#[cfg(feature = "logging")]
pub mod logging;
mod set;
mod setfile;
mod time;
mod token;
mod verify;
mod view;
pub mod wire;
pub mod x509;

pub use anchor::TrustAnchor;
pub use docs::{ChannelSpec, DeltaRef, Document, Manifest, RoleSpec, Root, Timestamp};
pub use envelope::{signing_message, Envelope, PayloadKind, Signature};
pub use error::{Error, Part, Result, Role, Versioned};
pub use indicator::{
    FileCondition, Hash, HashKind, Indicator, IpNet, Meta, NamePattern, Observable, ProcessCondition,
    Severity, Tlp, MAX_CONDITIONS, MAX_TEXT,
};
pub use keys::{KeyId, PublicKey, SigningKey};
pub use set::{Decoded, Delta, Record, Snapshot, MAX_ID};
pub use setfile::{Content, SetFile};
pub use time::{civil_from_days, days_from_civil, parse_duration, rfc3339, rfc3339_millis};
pub use token::{EnrollToken, TOKEN_ID_BYTES, TOKEN_PREFIX, TOKEN_SECRET_BYTES};
pub use verify::{sha256, verify_root_chain, Freshness, Limits, Outcome, Trusted, Verified};
pub use view::{parse_record, RecordRef, SnapshotView};

/// Signs a document with `keys` and returns the envelope bytes.
pub fn sign_document<T: Document>(doc: &T, kind: PayloadKind, keys: &[&SigningKey]) -> Vec<u8> {
    let payload = doc.encode();
    Envelope::sign(kind, &payload, keys).encode()
}
