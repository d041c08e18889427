//! # picket-agent: the endpoint side of Picket
//!
//! The agent holds one verified indicator set and matches it against the host. This crate is
//! split the way the rest of Picket is: pure cores that take their inputs (and the time) as
//! arguments, and thin shells that touch the disk.
//!
//! - [`store`]: the state directory. Imports a set file through
//!   [`picket_proto::Trusted::update`] and persists the result atomically (temp file, fsync,
//!   rename, fsync the directory), so a crash leaves the old set or the new one.
//! - [`matcher`]: the pure matching core, compiled from a verified snapshot.
//! - [`scan`]: walks paths, hashes each file once for exactly the digest kinds the set needs,
//!   and asks the matcher.

#![forbid(unsafe_code)]

pub mod budget;
pub mod config;
pub mod digest;
pub mod matcher;
pub mod scan;
pub mod sightings;
pub mod store;

mod error;

pub use error::AgentError;
