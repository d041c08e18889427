//! # picket-agent: the endpoint side of Picket
//!
//! The agent holds one verified indicator set and matches it against the host's files,
//! processes and connections, within a CPU budget and a memory ceiling. Pure cores take their
//! inputs (and the time) as arguments; thin shells touch the disk, `/proc` and the clock.
//!
//! Pure cores:
//! - [`index`]: the matching index compiled from a verified snapshot: digests in sorted arrays
//!   with a radix index, names and globs, command-line needles, networks, compounds.
//! - [`budget`]: the CPU governor (a token bucket fed with CPU and wall time).
//! - [`sightings`]: one record per (indicator, observable), deduplicated across rescans.
//! - [`config`]: `agent.toml`, parsed from text.
//!
//! Shells:
//! - [`store`]: the state directory; imports a set file through
//!   [`picket_proto::Trusted::update`] and persists it atomically.
//! - [`loaded`]: the set in force, compiled, with hit records read back by offset.
//! - [`digest`]: one read of a file for exactly the digest kinds wanted.
//! - [`cache`]: the persistent hash cache keyed by file identity.
//! - [`scan`]: the walker.
//! - [`watch`]: file events (notify), debounced.
//! - [`host`]: processes, connections and scheduling priority (Linux; one module per concern).
//! - [`daemon`]: `picket-agent run`, which ties them together.

#![forbid(unsafe_code)]

pub mod budget;
pub mod cache;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod host;
pub mod index;
pub mod loaded;
pub mod scan;
pub mod sightings;
pub mod store;
pub mod watch;

mod error;

pub use error::AgentError;
