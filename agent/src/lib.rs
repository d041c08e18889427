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
//! - [`redact`]: what leaves the host: a local sighting turned into the report the collector
//!   receives (home directories and user names replaced, matched values withheld, times
//!   bucketed).
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
//! - [`spool`]: sighting batches on disk, numbered (epoch, sequence), until acknowledged.
//! - [`status`]: the link's state and `DIR/status.json`, which `picket-agent status` reads.
//! - [`link`]: the live channel to the collector: TLS, the protocol client, the session that
//!   fetches sets, delivers the spool, sends heartbeats and renews the client certificate.
//! - [`enroll`]: `picket-agent enroll`, which spends a token and writes a working state
//!   directory.
//! - [`metrics`]: Prometheus metrics of the daemon, as a node_exporter textfile or on a
//!   loopback `GET /metrics` (`[metrics]`, off by default).
//! - [`logging`]: the daemon's `tracing` events on stderr, as text lines or JSON lines.
//! - [`daemon`]: `picket-agent run`, which ties them together.

#![forbid(unsafe_code)]

pub mod budget;
pub mod cache;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod enroll;
pub mod host;
pub mod index;
pub mod link;
pub mod loaded;
pub mod logging;
pub mod metrics;
pub mod redact;
pub mod scan;
pub mod sightings;
pub mod spool;
pub mod status;
pub mod store;
pub mod watch;

mod error;

pub use error::AgentError;
