//! # picket-collector: gathers indicators and publishes signed indicator sets
//!
//! The collector is a set of pure cores under thin shells:
//!
//! - [`ingest`] parses outside data (plain lists, CSV, MISP events and feeds) into normalised
//!   indicators. Pure: text in, typed indicators or an error naming the file and line out.
//! - [`publish`] compiles indicators into a canonical snapshot, a manifest with the deltas on
//!   offer, and a timestamp, and signs them. Pure: keys and the time are arguments.
//! - [`stix`] reads STIX 2.1 bundles: a pattern parser, and the translation of the patterns an
//!   endpoint can match into indicators, with a reason for each one it cannot. Pure.
//! - [`rootdoc`] builds, rotates and signs root documents; it is what the offline `root`
//!   commands run.
//! - [`taxii`] is the TAXII 2.1 client: a pure paging core (what to ask next, which bookmark
//!   to keep) under a ureq and rustls shell.
//! - [`store`] is the SQLite shell: one narrow interface, so a PostgreSQL backend can follow.
//! - [`datadir`] lays out and opens the data directory: configuration, online keys, trust
//!   anchor, and the check that no root private key is readable from where `serve` runs.
//! - [`pki`] is the agent channel's TLS: the collector CA, the server certificate, the
//!   short-lived client certificates that are agents' identities, and the rustls server config.
//! - [`fleet`] holds enrolment tokens and enrolled agents, and enrols an agent: the token
//!   redeemed, the key recorded and certified, in one transaction.
//! - [`channel`] is the agent channel `serve --listen` runs: TLS sessions, limits, set
//!   distribution, and the writer that stores what agents report.
//! - [`reports`] stores sightings batches (once each), heartbeats and alarms about agents, and
//!   aggregates sightings per indicator.
//! - [`share`] decides what each community learns about the sightings (TLP, k distinct
//!   organisations, coarse times, banded counts, a delay, ids unlinkable across communities)
//!   and writes it as a STIX 2.1 bundle (pure, under a thin shell for `share preview`); takes in
//!   what members post and upstreams give; pushes to and pulls from upstream collections.
//! - [`taxii_server`] is the TAXII 2.1 server `serve --http` runs: one API root per community
//!   with a `sightings` collection members read and a `contributions` collection they post to,
//!   HTTP Basic members, status resources and served history kept across restarts. Pure request
//!   core under a tokio and rustls shell.
//! - [`logging`] writes the long-running paths' `tracing` events to stderr, as the classic text
//!   lines or as JSON lines (`--log-format`).
//! - [`metrics`] counts what the long-running paths do and renders it for Prometheus; it also
//!   decides who may read `/metrics` (a bearer token in `DIR/keys/metrics.token`, off without).
//! - [`export`] packs a set version into a set file, for `export-set` and for the channel.
//!
//! Architecture invariant: only the collector holds the online signing keys, and the root
//! private key is never written inside the data directory.

#![forbid(unsafe_code)]

pub mod channel;
pub mod config;
pub mod datadir;
pub mod export;
pub mod fleet;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod publish;
pub mod reports;
pub mod rootdoc;
pub mod share;
pub mod sources;
pub mod stix;
pub mod store;
pub mod taxii;
pub mod taxii_server;
pub mod uuid;
pub mod web;

mod error;

pub use error::CollectorError;

pub use picket_proto::parse_duration;
