//! Set files: the one way the collector packs a set version for an agent, whether `export-set`
//! writes it to disk for an offline host or the channel sends it to a connected agent.
//!
//! A file carries the root chain, the timestamp and the manifest, and the full snapshot, a
//! delta from a version the agent has, or nothing (a freshness-only file for the version the
//! agent already has).
//!
//! Invariant: the parts of one file always belong together. The set version and the timestamp
//! version are read in one statement ([`Store::current`]), and the file is then built from the
//! rows of exactly those versions, which never change once written; so a publish running at the
//! same moment cannot pair a new timestamp with an old manifest.

use picket_proto::{Content, SetFile};
use rusqlite::{params, OptionalExtension};

use crate::datadir::RootChain;
use crate::store::{Store, ORG};
use crate::CollectorError;

/// The current state of a channel: what a fetch is answered against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// The newest set version.
    pub version: u64,
    /// The newest timestamp version (it points at that set version's manifest).
    pub timestamp_version: u64,
    /// The versions a delta to `version` is kept from, ascending.
    pub delta_bases: Vec<u64>,
}

/// What a set file carries besides the signed documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Carry {
    /// The full snapshot.
    Full,
    /// The delta from this set version.
    Delta(u64),
    /// Nothing: a newer timestamp for the version the agent has installed.
    Installed,
}

/// A built set file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedSet {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The set version it brings an agent to.
    pub version: u64,
    /// The timestamp version inside.
    pub timestamp_version: u64,
    /// When that timestamp expires (unix seconds).
    pub expires: i64,
}

impl Store {
    /// The newest set version of `channel`, its newest timestamp, and the bases of the deltas
    /// kept to it; `None` before the first publish.
    pub fn current(&self, channel: &str) -> Result<Option<Current>, CollectorError> {
        // One statement: one consistent reading of both tables.
        let row: Option<(u64, Option<u64>)> = self
            .conn()
            .query_row(
                "SELECT s.version,
                        (SELECT MAX(t.version) FROM timestamps t WHERE t.org = ?1 AND t.channel = ?2)
                 FROM sets s WHERE s.org = ?1 AND s.channel = ?2 ORDER BY s.version DESC LIMIT 1",
                params![ORG, channel],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())?;
        let Some((version, Some(timestamp_version))) = row else {
            return Ok(None);
        };
        // Deltas to a version are written with it and never change afterwards.
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT base_version FROM deltas WHERE org = ?1 AND channel = ?2 AND version = ?3
                 ORDER BY base_version",
            )
            .map_err(self.err())?;
        let delta_bases = stmt
            .query_map(params![ORG, channel, version], |r| r.get(0))
            .map_err(self.err())?
            .collect::<Result<Vec<u64>, _>>()
            .map_err(self.err())?;
        Ok(Some(Current {
            version,
            timestamp_version,
            delta_bases,
        }))
    }

    fn manifest_at(&self, channel: &str, version: u64) -> Result<Option<Vec<u8>>, CollectorError> {
        self.conn()
            .query_row(
                "SELECT manifest FROM sets WHERE org = ?1 AND channel = ?2 AND version = ?3",
                params![ORG, channel, version],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    fn snapshot_at(&self, channel: &str, version: u64) -> Result<Option<Vec<u8>>, CollectorError> {
        self.conn()
            .query_row(
                "SELECT snapshot FROM sets WHERE org = ?1 AND channel = ?2 AND version = ?3",
                params![ORG, channel, version],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    fn timestamp_at(&self, channel: &str, version: u64) -> Result<Option<(Vec<u8>, i64)>, CollectorError> {
        self.conn()
            .query_row(
                "SELECT envelope, expires FROM timestamps WHERE org = ?1 AND channel = ?2 AND version = ?3",
                params![ORG, channel, version],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())
    }
}

/// Builds the set file of `channel` at `at` (set and timestamp versions as [`Store::current`]
/// read them) carrying `carry`, with the root chain `chain` (oldest first). A delta that is not
/// kept is an error naming the versions.
pub fn set_file(
    store: &Store,
    chain: &RootChain,
    channel: &str,
    at: &Current,
    carry: Carry,
) -> Result<ExportedSet, CollectorError> {
    let missing = |what: String| CollectorError::Refused(format!("channel {channel}: {what}"));
    let manifest = store
        .manifest_at(channel, at.version)?
        .ok_or_else(|| missing(format!("set version {} is not stored", at.version)))?;
    let (timestamp, expires) = store
        .timestamp_at(channel, at.timestamp_version)?
        .ok_or_else(|| {
            missing(format!(
                "timestamp version {} is not stored",
                at.timestamp_version
            ))
        })?;
    let body;
    let content = match carry {
        Carry::Full => {
            body = store
                .snapshot_at(channel, at.version)?
                .ok_or_else(|| missing(format!("set version {} is not stored", at.version)))?;
            Content::Full(&body)
        }
        Carry::Delta(base) => {
            body = store.delta(channel, base, at.version)?.ok_or_else(|| {
                missing(format!(
                    "no delta from version {base} to {} is kept; export the full set instead",
                    at.version
                ))
            })?;
            Content::Delta(&body)
        }
        Carry::Installed => Content::Installed,
    };
    let file = SetFile {
        channel,
        roots: chain.iter().map(|(v, b)| (*v, b.as_slice())).collect(),
        timestamp: &timestamp,
        manifest: &manifest,
        content,
    };
    Ok(ExportedSet {
        bytes: file.encode(),
        version: at.version,
        timestamp_version: at.timestamp_version,
        expires,
    })
}

/// The set file of the newest version of `channel` (what `export-set` writes).
pub fn latest_set_file(
    store: &Store,
    chain: &RootChain,
    channel: &str,
    carry: Carry,
) -> Result<ExportedSet, CollectorError> {
    let at = store.current(channel)?.ok_or_else(|| {
        CollectorError::Refused(format!(
            "channel {channel}: nothing published yet; run `publish` first"
        ))
    })?;
    set_file(store, chain, channel, &at, carry)
}
