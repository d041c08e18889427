//! The SQLite shell: the collector's one store.
//!
//! The interface is kept narrow (indicators in, records out; publications, timestamps and roots
//! in and out) and the SQL portable, so that a PostgreSQL backend can take its place for
//! collectors that outgrow one machine. Every table carries an organisation id so that a
//! collector serving several tenants needs no painful migration.

use std::path::{Path, PathBuf};

use picket_proto::{Indicator, Record, Tlp};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::ingest::{canonical_value, Batch, Item};
use crate::CollectorError;

/// The organisation id used while a collector serves one organisation.
pub const ORG: i64 = 1;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE indicators (
    org         INTEGER NOT NULL,
    id          TEXT    NOT NULL,
    kind        INTEGER NOT NULL,
    value       TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    tlp         INTEGER NOT NULL,
    valid_until INTEGER,
    source      TEXT    NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    PRIMARY KEY (org, id)
);
CREATE TABLE roots (
    org      INTEGER NOT NULL,
    version  INTEGER NOT NULL,
    envelope BLOB    NOT NULL,
    PRIMARY KEY (org, version)
);
CREATE TABLE sets (
    org      INTEGER NOT NULL,
    channel  TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    created  INTEGER NOT NULL,
    snapshot BLOB    NOT NULL,
    manifest BLOB    NOT NULL,
    PRIMARY KEY (org, channel, version)
);
CREATE TABLE deltas (
    org          INTEGER NOT NULL,
    channel      TEXT    NOT NULL,
    base_version INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    bytes        BLOB    NOT NULL,
    PRIMARY KEY (org, channel, base_version, version)
);
CREATE TABLE timestamps (
    org      INTEGER NOT NULL,
    channel  TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    created  INTEGER NOT NULL,
    expires  INTEGER NOT NULL,
    envelope BLOB    NOT NULL,
    PRIMARY KEY (org, channel, version)
);
"#,
    r#"
ALTER TABLE indicators ADD COLUMN observable TEXT NOT NULL DEFAULT '';
ALTER TABLE indicators ADD COLUMN modified INTEGER;
ALTER TABLE indicators ADD COLUMN valid_from INTEGER;
ALTER TABLE indicators ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE indicators ADD COLUMN created_by TEXT;
CREATE TABLE indicator_sources (
    org        INTEGER NOT NULL,
    id         TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (org, id, source)
);
INSERT INTO indicator_sources (org, id, source, first_seen, last_seen)
    SELECT org, id, source, first_seen, last_seen FROM indicators;
CREATE TABLE unsupported (
    org       INTEGER NOT NULL,
    source    TEXT    NOT NULL,
    object_id TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    seen      INTEGER NOT NULL,
    PRIMARY KEY (org, source, object_id, reason)
);
CREATE TABLE allowlist (
    org    INTEGER NOT NULL,
    value  TEXT    NOT NULL,
    reason TEXT    NOT NULL,
    added  INTEGER NOT NULL,
    PRIMARY KEY (org, value)
);
"#,
    r#"
CREATE TABLE sources (
    org         INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    location    TEXT    NOT NULL,
    collection  TEXT,
    username    TEXT,
    secret      TEXT,
    ca_file     TEXT,
    tlp         INTEGER NOT NULL,
    confidence  INTEGER NOT NULL,
    schedule    INTEGER NOT NULL,
    trusted     INTEGER NOT NULL,
    kinds       TEXT    NOT NULL,
    bookmark    TEXT,
    last_pull   INTEGER,
    last_error  TEXT,
    added       INTEGER NOT NULL,
    PRIMARY KEY (org, name)
);
"#,
    r#"
ALTER TABLE sources ADD COLUMN lifetime INTEGER;
"#,
    // The live channel: enrolment tokens, enrolled agents, the sightings they report and the
    // batches those came in (the dedupe key), and alarms about agents. Unix seconds throughout;
    // u64 values (epochs) are stored as their i64 bit pattern.
    r#"
CREATE TABLE tokens (
    org         INTEGER NOT NULL,
    id          TEXT PRIMARY KEY,          -- public id (hex)
    secret_hash BLOB NOT NULL,             -- SHA-256 of the secret; the secret is never stored
    created     INTEGER NOT NULL,
    expires     INTEGER NOT NULL,
    uses_left   INTEGER NOT NULL,
    used        INTEGER NOT NULL DEFAULT 0,
    revoked     INTEGER                    -- when revoked
);
CREATE TABLE agents (
    org            INTEGER NOT NULL,
    id             TEXT PRIMARY KEY,       -- chosen by the collector at enrolment
    public_key     BLOB NOT NULL UNIQUE,   -- the Ed25519 key the agent generated
    token          TEXT NOT NULL,          -- the token it enrolled with
    channel        TEXT NOT NULL,
    machine        BLOB NOT NULL,          -- machine hash at enrolment
    enrolled       INTEGER NOT NULL,
    cert_not_after INTEGER NOT NULL,       -- of the newest certificate issued
    revoked        INTEGER,
    last_seen      INTEGER,                -- last frame received
    clone_seen     INTEGER,                -- when a session presented another machine hash
    heartbeat      BLOB,                   -- the last heartbeat (postcard)
    heartbeat_at   INTEGER
);
CREATE TABLE report_batches (
    org      INTEGER NOT NULL,
    agent    TEXT NOT NULL,
    epoch    INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    digest   BLOB NOT NULL,                -- SHA-256 of the batch's items, to tell a replay from a fork
    received INTEGER NOT NULL,
    items    INTEGER NOT NULL,
    PRIMARY KEY (agent, epoch, seq)
);
CREATE TABLE sightings (
    org         INTEGER NOT NULL,
    agent       TEXT NOT NULL,
    indicator   TEXT NOT NULL,
    what        TEXT NOT NULL,
    observed    TEXT NOT NULL,             -- file, process, connection
    location    TEXT NOT NULL DEFAULT '',  -- redacted; '' when the agent sends none
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    set_version INTEGER NOT NULL,
    received    INTEGER NOT NULL,
    PRIMARY KEY (agent, indicator, observed, location)
);
CREATE INDEX sightings_by_indicator ON sightings (indicator);
CREATE TABLE alarms (
    org     INTEGER NOT NULL,
    agent   TEXT NOT NULL,
    kind    TEXT NOT NULL,                 -- quiet, sequence-gap, lagging, clone, spool-dropped
    detail  TEXT NOT NULL,
    raised  INTEGER NOT NULL,
    cleared INTEGER,
    PRIMARY KEY (agent, kind, raised)
);
"#,
    // False positives: the operator's marks, each suppressing its indicator fleet-wide (the
    // publishing policy leaves it out of every set) until undone.
    r#"
CREATE TABLE false_positives (
    org        INTEGER NOT NULL,
    indicator  TEXT NOT NULL,
    reason     TEXT NOT NULL,
    marked_at  INTEGER NOT NULL,
    PRIMARY KEY (org, indicator)
);
"#,
    // Sharing with communities (issue 6).
    //
    // taxii_served: every object version the TAXII server has served a community, with the
    // date_added it was first served under, so that `added_after` survives a restart.
    //
    // taxii_status: the status resource of each POST to a community's collection (the whole
    // resource as JSON), readable by the account that posted it.
    //
    // contributions: every object a member posted (one row per object version per account); an
    // identical object posted again is a no-op, not an error.
    //
    // community_sightings: other organisations' sightings, one row per sighting object per
    // account that gave it (a member's TAXII account, or `upstream:<name>` for what was pulled),
    // keeping the newest version. `indicator` is the STIX id it sighted; k counts distinct
    // accounts, never the `created_by_ref` an object claims.
    //
    // pushed / upstream_bookmarks: what went to each upstream TAXII collection (so a retry never
    // sends an object version twice) and where pulling from it stopped.
    r#"
CREATE TABLE taxii_served (
    org        INTEGER NOT NULL,
    community  TEXT NOT NULL,
    object_id  TEXT NOT NULL,
    version    TEXT NOT NULL,
    added_ms   INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (org, community, object_id, version)
);
CREATE INDEX taxii_served_added ON taxii_served (org, community, added_ms);
CREATE TABLE taxii_status (
    org        INTEGER NOT NULL,
    id         TEXT NOT NULL,
    community  TEXT NOT NULL,
    account    TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (org, id)
);
CREATE TABLE contributions (
    org        INTEGER NOT NULL,
    community  TEXT NOT NULL,
    account    TEXT NOT NULL,
    object_id  TEXT NOT NULL,
    version    TEXT NOT NULL,
    type       TEXT NOT NULL,
    body       TEXT NOT NULL,
    added_ms   INTEGER NOT NULL,
    PRIMARY KEY (org, community, account, object_id, version)
);
CREATE TABLE community_sightings (
    org          INTEGER NOT NULL,
    community    TEXT NOT NULL,
    account      TEXT NOT NULL,
    sighting_id  TEXT NOT NULL,
    indicator    TEXT NOT NULL,
    count        INTEGER NOT NULL,
    first_seen   INTEGER,
    last_seen    INTEGER,
    modified     TEXT NOT NULL,
    false_positive INTEGER NOT NULL DEFAULT 0,
    received     INTEGER NOT NULL,
    PRIMARY KEY (org, community, account, sighting_id)
);
CREATE INDEX community_sightings_indicator ON community_sightings (org, indicator);
CREATE TABLE pushed (
    org        INTEGER NOT NULL,
    community  TEXT NOT NULL,
    upstream   TEXT NOT NULL,
    object_id  TEXT NOT NULL,
    version    TEXT NOT NULL,
    pushed_ms  INTEGER NOT NULL,
    PRIMARY KEY (org, community, upstream, object_id, version)
);
CREATE TABLE upstream_bookmarks (
    org         INTEGER NOT NULL,
    community   TEXT NOT NULL,
    upstream    TEXT NOT NULL,
    added_after TEXT NOT NULL,
    PRIMARY KEY (org, community, upstream)
);
"#,
    // Operators of the dashboard (issue 7): `operator add` writes them, the dashboard's login
    // reads them. The password is salted and stretched as a TAXII member's is (PBKDF2); login
    // sessions live in the serving process only.
    r#"
CREATE TABLE operators (
    org           INTEGER NOT NULL,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created       INTEGER NOT NULL,
    PRIMARY KEY (org, name)
);
"#,
];

/// The store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// A stored set version.
#[derive(Debug, Clone)]
pub struct StoredSet {
    /// The set version.
    pub version: u64,
    /// The snapshot bytes.
    pub snapshot: Vec<u8>,
    /// The manifest envelope bytes.
    pub manifest: Vec<u8>,
}

/// A new publication, stored in one transaction.
#[derive(Debug)]
pub struct Publication<'a> {
    /// The channel.
    pub channel: &'a str,
    /// The set version.
    pub version: u64,
    /// When it was made.
    pub created: i64,
    /// Snapshot bytes.
    pub snapshot: &'a [u8],
    /// Manifest envelope bytes.
    pub manifest: &'a [u8],
    /// Deltas leading to this version: (base version, bytes).
    pub deltas: Vec<(u64, Vec<u8>)>,
    /// The timestamp that makes it current.
    pub timestamp: StoredTimestamp,
}

/// A stored timestamp.
#[derive(Debug, Clone)]
pub struct StoredTimestamp {
    /// Its version.
    pub version: u64,
    /// Created.
    pub created: i64,
    /// Expires.
    pub expires: i64,
    /// Envelope bytes.
    pub envelope: Vec<u8>,
}

/// What an ingest changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upserted {
    /// Indicators new to the store.
    pub added: usize,
    /// Indicators already there, refreshed.
    pub updated: usize,
    /// Items older than the stored version of the same id, which was kept.
    pub older: usize,
}

/// A registered source. `secret` is a credential: never printed or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Source {
    /// The name, also recorded as each indicator's source.
    pub name: String,
    /// `list`, `csv`, `stix`, `misp`, `misp-feed` or `taxii`.
    pub kind: String,
    /// A file, a directory, or a TAXII API root URL.
    pub location: String,
    /// The TAXII collection id.
    pub collection: Option<String>,
    /// HTTP Basic user name.
    pub username: Option<String>,
    /// HTTP Basic password.
    pub secret: Option<String>,
    /// A PEM CA file to trust for the source's TLS.
    pub ca_file: Option<String>,
    /// Default TLP for what the source does not mark.
    pub tlp: Tlp,
    /// Default confidence.
    pub confidence: u8,
    /// Seconds between pulls in `serve`.
    pub schedule: u64,
    /// Whether it may put names, globs, paths and command lines on endpoints.
    pub trusted: bool,
    /// The observable kinds it may put on endpoints.
    pub kinds: Vec<String>,
    /// The TAXII `added_after` bookmark.
    pub bookmark: Option<String>,
    /// When it was last pulled.
    pub last_pull: Option<i64>,
    /// The last pull's error, if it failed.
    pub last_error: Option<String>,
    /// How long an indicator from it stays valid when it does not say (seconds), renewed each
    /// time a pull still carries it; `None`: until the source revokes it.
    pub lifetime: Option<u64>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("location", &self.location)
            .field("username", &self.username)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

fn source_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Source> {
    let kinds: String = r.get(11)?;
    Ok(Source {
        name: r.get(0)?,
        kind: r.get(1)?,
        location: r.get(2)?,
        collection: r.get(3)?,
        username: r.get(4)?,
        secret: r.get(5)?,
        ca_file: r.get(6)?,
        tlp: tlp_from_code(r.get(7)?),
        confidence: r.get(8)?,
        schedule: r.get(9)?,
        trusted: r.get(10)?,
        kinds: kinds
            .split(',')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
        bookmark: r.get(12)?,
        last_pull: r.get(13)?,
        last_error: r.get(14)?,
        lifetime: r.get(15)?,
    })
}

const SOURCE_COLUMNS: &str = "name, kind, location, collection, username, secret, ca_file, tlp, confidence, schedule, trusted, kinds, bookmark, last_pull, last_error, lifetime";

/// A stored indicator with its provenance and lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The record as it goes into a set.
    pub record: Record,
    /// The canonical value.
    pub value: String,
    /// The observable kind name.
    pub kind: String,
    /// TLP.
    pub tlp: Tlp,
    /// valid_from.
    pub valid_from: Option<i64>,
    /// valid_until.
    pub valid_until: Option<i64>,
    /// Revoked by its source.
    pub revoked: bool,
    /// The source's modified time.
    pub modified: Option<i64>,
    /// Who made it.
    pub created_by: Option<String>,
    /// First ingested.
    pub first_seen: i64,
    /// Last ingested.
    pub last_seen: i64,
    /// Every source that carried it.
    pub sources: Vec<String>,
}

fn stored_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    let sources: Option<String> = r.get(13)?;
    Ok(Stored {
        record: Record {
            id: r.get(0)?,
            kind: r.get(1)?,
            body: r.get(2)?,
        },
        value: r.get(3)?,
        kind: r.get(4)?,
        tlp: tlp_from_code(r.get(5)?),
        valid_from: r.get(6)?,
        valid_until: r.get(7)?,
        revoked: r.get(8)?,
        modified: r.get(9)?,
        created_by: r.get(10)?,
        first_seen: r.get(11)?,
        last_seen: r.get(12)?,
        sources: sources
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

/// Writes indicators from `source` inside `tx`, each with its checked [`Record`]: the source is
/// remembered for each, and each replaces the stored indicator of the same id unless the stored
/// one was modified later. `created_by`, when given, is written instead of each item's own (a
/// community member's account, never the object's claimed `created_by_ref`). The one writer of
/// the `indicators` table for ingest ([`Store::upsert_batch`]) and for what community members
/// contribute (`share/inbound.rs`, inside its own transaction).
pub(crate) fn put_items(
    tx: &Transaction<'_>,
    items: &[(&Item, &Record)],
    source: &str,
    now: i64,
    created_by: Option<&str>,
) -> rusqlite::Result<Upserted> {
    let mut counts = Upserted::default();
    let mut existing = tx.prepare_cached("SELECT modified FROM indicators WHERE org = ?1 AND id = ?2")?;
    let mut put = tx.prepare_cached(
        "INSERT INTO indicators (org, id, kind, value, body, tlp, valid_until, source, first_seen, last_seen,
                                 observable, modified, valid_from, revoked, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (org, id) DO UPDATE SET
            kind = excluded.kind, value = excluded.value, body = excluded.body, tlp = excluded.tlp,
            valid_until = excluded.valid_until, source = excluded.source, last_seen = excluded.last_seen,
            observable = excluded.observable, modified = excluded.modified,
            valid_from = excluded.valid_from, revoked = excluded.revoked, created_by = excluded.created_by",
    )?;
    let mut seen_by = tx.prepare_cached(
        "INSERT INTO indicator_sources (org, id, source, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (org, id, source) DO UPDATE SET last_seen = excluded.last_seen",
    )?;
    for (item, rec) in items {
        let ind = &item.indicator;
        let stored: Option<Option<i64>> = existing
            .query_row(params![ORG, ind.id], |r| r.get(0))
            .optional()?;
        seen_by.execute(params![ORG, ind.id, source, now])?;
        if let Some(Some(stored_modified)) = stored {
            if item.modified.is_none_or(|m| m < stored_modified) {
                counts.older += 1;
                continue;
            }
        }
        put.execute(params![
            ORG,
            ind.id,
            rec.kind,
            canonical_value(&ind.observable),
            rec.body,
            tlp_code(ind.meta.tlp),
            ind.meta.valid_until,
            ind.meta.source,
            now,
            ind.observable.kind_name(),
            item.modified,
            item.valid_from,
            item.revoked,
            created_by.or(item.created_by.as_deref()),
        ])?;
        if stored.is_some() {
            counts.updated += 1;
        } else {
            counts.added += 1;
        }
    }
    Ok(counts)
}

fn tlp_code(t: Tlp) -> i64 {
    match t {
        Tlp::Clear => 0,
        Tlp::Green => 1,
        Tlp::Amber => 2,
        Tlp::AmberStrict => 3,
        Tlp::Red => 4,
    }
}

fn tlp_from_code(c: i64) -> Tlp {
    match c {
        0 => Tlp::Clear,
        1 => Tlp::Green,
        2 => Tlp::Amber,
        3 => Tlp::AmberStrict,
        _ => Tlp::Red,
    }
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, CollectorError> {
        let db = |error| CollectorError::Db {
            path: path.to_owned(),
            error,
        };
        let mut conn = Connection::open(path).map_err(db)?;
        // It holds source credentials: readable by the collector alone (SQLite gives its -wal and
        // -shm files the same mode).
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(CollectorError::io(path))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)?;
        if version as usize > MIGRATIONS.len() {
            return Err(CollectorError::DataDir {
                path: path.to_owned(),
                problem: format!(
                    "schema version {version} is newer than this collector knows; upgrade picket-collector"
                ),
            });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            tx.execute_batch(m).map_err(db)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(db)?;
            tx.commit().map_err(db)?;
        }
        Ok(Store {
            conn,
            path: path.to_owned(),
        })
    }

    /// The connection, for the store's other modules (fleet queries).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Names the database in an error; it owns its copy of the path, so it may outlive a
    /// borrow of the store (a transaction's).
    pub(crate) fn err(&self) -> impl Fn(rusqlite::Error) -> CollectorError + 'static {
        let path = self.path.clone();
        move |error| CollectorError::Db {
            path: path.clone(),
            error,
        }
    }

    /// A write transaction. It takes the write lock when it begins (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads first and then writes fails at once with "database is
    /// locked" when another process (serve beside an `ingest`) committed in between, and the
    /// busy timeout cannot help it; an immediate one waits its turn instead.
    pub(crate) fn tx(&mut self) -> Result<Transaction<'_>, CollectorError> {
        let path = self.path.clone();
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(move |error| CollectorError::Db { path, error })
    }

    /// Stores plain indicators from `source` in one transaction (see [`Store::upsert_batch`]).
    pub fn upsert_indicators(
        &mut self,
        indicators: &[Indicator],
        now: i64,
    ) -> Result<Upserted, CollectorError> {
        let source = indicators
            .first()
            .map_or_else(String::new, |i| i.meta.source.clone());
        self.upsert_batch(&Batch::of(indicators.to_vec()), &source, now)
    }

    /// Stores a batch from `source` in one transaction: all or nothing. An item replaces the
    /// stored indicator of the same id unless the stored one was modified later; every source
    /// carrying an indicator is remembered; what was unsupported is recorded with its reason.
    pub fn upsert_batch(
        &mut self,
        batch: &Batch,
        source: &str,
        now: i64,
    ) -> Result<Upserted, CollectorError> {
        let path = self.path.clone();
        let db = |error| CollectorError::Db {
            path: path.clone(),
            error,
        };
        let mut records = Vec::with_capacity(batch.items.len());
        for item in &batch.items {
            let rec = Record::from_indicator(&item.indicator)
                .map_err(CollectorError::proto(format!("indicator {}", item.indicator.id)))?;
            records.push((item, rec));
        }
        let tx = self.tx()?;
        let refs: Vec<(&Item, &Record)> = records.iter().map(|(i, r)| (*i, r)).collect();
        let counts = put_items(&tx, &refs, source, now, None).map_err(db)?;
        {
            let mut unsupported = tx
                .prepare(
                    "INSERT INTO unsupported (org, source, object_id, reason, seen) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (org, source, object_id, reason) DO UPDATE SET seen = excluded.seen",
                )
                .map_err(db)?;
            for u in &batch.unsupported {
                unsupported
                    .execute(params![ORG, source, u.id, u.reason, now])
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)?;
        Ok(counts)
    }

    /// Every stored indicator with what the publishing policy needs, ordered by id.
    pub fn candidates(&self) -> Result<Vec<Stored>, CollectorError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT i.id, i.kind, i.body, i.value, i.observable, i.tlp, i.valid_from, i.valid_until, i.revoked,
                        i.modified, i.created_by, i.first_seen, i.last_seen,
                        (SELECT GROUP_CONCAT(s.source, char(10)) FROM indicator_sources s
                          WHERE s.org = i.org AND s.id = i.id)
                 FROM indicators i WHERE i.org = ?1 ORDER BY i.id",
            )
            .map_err(self.err())?;
        let rows = stmt.query_map(params![ORG], stored_row).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// One stored indicator.
    pub fn indicator(&self, id: &str) -> Result<Option<Stored>, CollectorError> {
        self.conn
            .query_row(
                "SELECT i.id, i.kind, i.body, i.value, i.observable, i.tlp, i.valid_from, i.valid_until, i.revoked,
                        i.modified, i.created_by, i.first_seen, i.last_seen,
                        (SELECT GROUP_CONCAT(s.source, char(10)) FROM indicator_sources s
                          WHERE s.org = i.org AND s.id = i.id)
                 FROM indicators i WHERE i.org = ?1 AND i.id = ?2",
                params![ORG, id],
                stored_row,
            )
            .optional()
            .map_err(self.err())
    }

    /// What was not turned into indicators: (source, object id, reason), newest first.
    pub fn unsupported(&self) -> Result<Vec<(String, String, String)>, CollectorError> {
        let mut stmt = self
            .conn
            .prepare("SELECT source, object_id, reason FROM unsupported WHERE org = ?1 ORDER BY seen DESC, object_id")
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The operator's allowlist: canonical value to reason.
    pub fn allowlist(&self) -> Result<Vec<(String, String)>, CollectorError> {
        let mut stmt = self
            .conn
            .prepare("SELECT value, reason FROM allowlist WHERE org = ?1 ORDER BY value")
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Adds (or replaces) an allowlist entry.
    pub fn allow(&mut self, value: &str, reason: &str, now: i64) -> Result<(), CollectorError> {
        self.conn
            .execute(
                "INSERT INTO allowlist (org, value, reason, added) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (org, value) DO UPDATE SET reason = excluded.reason",
                params![ORG, value, reason, now],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Removes an allowlist entry; whether there was one.
    pub fn disallow(&mut self, value: &str) -> Result<bool, CollectorError> {
        self.conn
            .execute(
                "DELETE FROM allowlist WHERE org = ?1 AND value = ?2",
                params![ORG, value],
            )
            .map(|n| n > 0)
            .map_err(self.err())
    }

    /// Registers a source; fails if the name is taken.
    pub fn add_source(&mut self, src: &Source, now: i64) -> Result<(), CollectorError> {
        self.conn
            .execute(
                "INSERT INTO sources (org, name, kind, location, collection, username, secret, ca_file, tlp,
                                      confidence, schedule, trusted, kinds, added, lifetime)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    ORG,
                    src.name,
                    src.kind,
                    src.location,
                    src.collection,
                    src.username,
                    src.secret,
                    src.ca_file,
                    tlp_code(src.tlp),
                    src.confidence,
                    src.schedule,
                    src.trusted,
                    src.kinds.join(","),
                    now,
                    src.lifetime
                ],
            )
            .map(|_| ())
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    CollectorError::Refused(format!("a source named {:?} already exists", src.name))
                }
                other => CollectorError::Db {
                    path: self.path.clone(),
                    error: other,
                },
            })
    }

    /// The registered sources, by name.
    pub fn sources(&self) -> Result<Vec<Source>, CollectorError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {SOURCE_COLUMNS} FROM sources WHERE org = ?1 ORDER BY name"
            ))
            .map_err(self.err())?;
        let rows = stmt.query_map(params![ORG], source_row).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Removes a source (its indicators stay, remembering it); whether there was one.
    pub fn remove_source(&mut self, name: &str) -> Result<bool, CollectorError> {
        self.conn
            .execute(
                "DELETE FROM sources WHERE org = ?1 AND name = ?2",
                params![ORG, name],
            )
            .map(|n| n > 0)
            .map_err(self.err())
    }

    /// Records a pull's outcome: its time, its error if any, and the new bookmark if it moved.
    pub fn record_pull(
        &mut self,
        name: &str,
        now: i64,
        error: Option<&str>,
        bookmark: Option<&str>,
    ) -> Result<(), CollectorError> {
        self.conn
            .execute(
                "UPDATE sources SET last_pull = ?3, last_error = ?4, bookmark = COALESCE(?5, bookmark)
                 WHERE org = ?1 AND name = ?2",
                params![ORG, name, now, error, bookmark],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// The newest stored set of `channel`.
    pub fn latest_set(&self, channel: &str) -> Result<Option<StoredSet>, CollectorError> {
        self.conn
            .query_row(
                "SELECT version, snapshot, manifest FROM sets WHERE org = ?1 AND channel = ?2
                 ORDER BY version DESC LIMIT 1",
                params![ORG, channel],
                |r| {
                    Ok(StoredSet {
                        version: r.get(0)?,
                        snapshot: r.get(1)?,
                        manifest: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(self.err())
    }

    /// The newest `n` stored snapshots of `channel`: (version, bytes), newest first.
    pub fn recent_snapshots(&self, channel: &str, n: usize) -> Result<Vec<(u64, Vec<u8>)>, CollectorError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT version, snapshot FROM sets WHERE org = ?1 AND channel = ?2
                 ORDER BY version DESC LIMIT ?3",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG, channel, n as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The stored delta from `base` to `version`.
    pub fn delta(&self, channel: &str, base: u64, version: u64) -> Result<Option<Vec<u8>>, CollectorError> {
        self.conn
            .query_row(
                "SELECT bytes FROM deltas WHERE org = ?1 AND channel = ?2 AND base_version = ?3 AND version = ?4",
                params![ORG, channel, base, version],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// Stores a new set version, its deltas and its timestamp in one transaction.
    pub fn insert_publication(&mut self, p: &Publication<'_>) -> Result<(), CollectorError> {
        let path = self.path.clone();
        let db = |error| CollectorError::Db {
            path: path.clone(),
            error,
        };
        let tx = self.tx()?;
        tx.execute(
            "INSERT INTO sets (org, channel, version, created, snapshot, manifest) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![ORG, p.channel, p.version, p.created, p.snapshot, p.manifest],
        )
        .map_err(db)?;
        for (base, bytes) in &p.deltas {
            tx.execute(
                "INSERT INTO deltas (org, channel, base_version, version, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![ORG, p.channel, base, p.version, bytes],
            )
            .map_err(db)?;
        }
        insert_timestamp(&tx, p.channel, &p.timestamp).map_err(db)?;
        tx.commit().map_err(db)
    }

    /// Stores a re-signed timestamp.
    pub fn insert_timestamp(&mut self, channel: &str, ts: &StoredTimestamp) -> Result<(), CollectorError> {
        insert_timestamp(&self.conn, channel, ts).map_err(self.err())
    }

    /// The newest timestamp of `channel`.
    pub fn latest_timestamp(&self, channel: &str) -> Result<Option<StoredTimestamp>, CollectorError> {
        self.conn
            .query_row(
                "SELECT version, created, expires, envelope FROM timestamps WHERE org = ?1 AND channel = ?2
                 ORDER BY version DESC LIMIT 1",
                params![ORG, channel],
                |r| {
                    Ok(StoredTimestamp {
                        version: r.get(0)?,
                        created: r.get(1)?,
                        expires: r.get(2)?,
                        envelope: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(self.err())
    }

    /// Every root, oldest first: (version, envelope).
    pub fn roots(&self) -> Result<Vec<(u64, Vec<u8>)>, CollectorError> {
        let mut stmt = self
            .conn
            .prepare("SELECT version, envelope FROM roots WHERE org = ?1 ORDER BY version")
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Marks `indicator` a false positive for `reason`, replacing an earlier mark; the earlier
    /// mark's reason, if there was one. Refused, naming it, when no such indicator is stored.
    pub fn mark_false_positive(
        &mut self,
        indicator: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<String>, CollectorError> {
        let path = self.path.clone();
        let db = |error| CollectorError::Db {
            path: path.clone(),
            error,
        };
        let tx = self.tx()?;
        let known: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM indicators WHERE org = ?1 AND id = ?2)",
                params![ORG, indicator],
                |r| r.get(0),
            )
            .map_err(db)?;
        if !known {
            return Err(CollectorError::Refused(format!(
                "no indicator {indicator:?} is stored (`indicators search` finds ids)"
            )));
        }
        let earlier: Option<String> = tx
            .query_row(
                "SELECT reason FROM false_positives WHERE org = ?1 AND indicator = ?2",
                params![ORG, indicator],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        tx.execute(
            "INSERT INTO false_positives (org, indicator, reason, marked_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (org, indicator) DO UPDATE SET reason = excluded.reason, marked_at = excluded.marked_at",
            params![ORG, indicator, reason, now],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(earlier)
    }

    /// Removes the false-positive mark of `indicator`; whether there was one.
    pub fn unmark_false_positive(&mut self, indicator: &str) -> Result<bool, CollectorError> {
        self.conn
            .execute(
                "DELETE FROM false_positives WHERE org = ?1 AND indicator = ?2",
                params![ORG, indicator],
            )
            .map(|n| n > 0)
            .map_err(self.err())
    }

    /// Every false-positive mark: (indicator, reason, marked_at), by indicator id.
    pub fn false_positives(&self) -> Result<Vec<(String, String, i64)>, CollectorError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT indicator, reason, marked_at FROM false_positives WHERE org = ?1 ORDER BY indicator",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The false-positive mark of `indicator`, if any: (reason, marked_at).
    pub fn false_positive(&self, indicator: &str) -> Result<Option<(String, i64)>, CollectorError> {
        self.conn
            .query_row(
                "SELECT reason, marked_at FROM false_positives WHERE org = ?1 AND indicator = ?2",
                params![ORG, indicator],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())
    }

    /// Stores a root document.
    pub fn insert_root(&mut self, version: u64, envelope: &[u8]) -> Result<(), CollectorError> {
        self.conn
            .execute(
                "INSERT INTO roots (org, version, envelope) VALUES (?1, ?2, ?3)",
                params![ORG, version, envelope],
            )
            .map(|_| ())
            .map_err(self.err())
    }
}

fn insert_timestamp(conn: &Connection, channel: &str, ts: &StoredTimestamp) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO timestamps (org, channel, version, created, expires, envelope) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![ORG, channel, ts.version, ts.created, ts.expires, ts.envelope],
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{parse_list, Defaults};
    use picket_proto::Severity;

    /// `serve` and an `ingest` write the same file from two connections. A write transaction
    /// that read first used to fail at once with "database is locked" when the other committed
    /// in between (SQLite cannot upgrade a stale read snapshot); now each waits its turn.
    #[test]
    fn two_connections_writing_at_once_both_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        Store::open(&path).unwrap();
        let d = Defaults {
            source: "a".into(),
            tlp: Tlp::Green,
            confidence: 50,
            severity: Severity::Medium,
        };
        let writers: Vec<_> = (0..2u8)
            .map(|w| {
                let (path, d) = (path.clone(), d.clone());
                std::thread::spawn(move || {
                    let mut s = Store::open(&path).unwrap();
                    for round in 0..100u32 {
                        let text = format!("198.51.{w}.{}\n", round % 250);
                        let batch = parse_list(Path::new("feed"), &text, &d).unwrap();
                        s.upsert_indicators(&batch, i64::from(round))
                            .unwrap_or_else(|e| panic!("writer {w} round {round}: {e}"));
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
    }

    #[test]
    fn upsert_counts_and_tlp_ceiling() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("p.db")).unwrap();
        let mut d = Defaults {
            source: "a".into(),
            tlp: Tlp::Green,
            confidence: 50,
            severity: Severity::Medium,
        };
        let green = parse_list(
            Path::new("a"),
            "44d88612fea8a8f36de82e1278abb02f\n198.51.100.1\n",
            &d,
        )
        .unwrap();
        d.tlp = Tlp::Red;
        let red = parse_list(Path::new("b"), "198.51.100.2\n", &d).unwrap();
        assert_eq!(
            s.upsert_indicators(&green, 1).unwrap(),
            Upserted {
                added: 2,
                updated: 0,
                older: 0
            }
        );
        assert_eq!(
            s.upsert_indicators(&green, 2).unwrap(),
            Upserted {
                added: 0,
                updated: 2,
                older: 0
            }
        );
        s.upsert_indicators(&red, 3).unwrap();
        let all = s.candidates().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all.iter().filter(|c| c.tlp == Tlp::Red).count(), 1);
        assert_eq!(all[0].sources, vec!["a".to_owned()]);
        // Reopening keeps the data and does not re-run migrations.
        drop(s);
        let s = Store::open(&dir.path().join("p.db")).unwrap();
        assert_eq!(s.candidates().unwrap().len(), 3);
    }

    #[test]
    fn false_positive_marks_survive_reopen_and_undo() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("p.db")).unwrap();
        let d = Defaults {
            source: "a".into(),
            tlp: Tlp::Green,
            confidence: 50,
            severity: Severity::Medium,
        };
        let list = parse_list(Path::new("a"), "198.51.100.1\n", &d).unwrap();
        s.upsert_indicators(&list, 1).unwrap();
        let id = list[0].id.clone();
        let unknown = s.mark_false_positive("indicator--nope", "x", 2).unwrap_err();
        assert!(unknown.to_string().contains("indicator--nope"), "{unknown}");
        assert_eq!(s.mark_false_positive(&id, "our scanner", 2).unwrap(), None);
        assert_eq!(
            s.mark_false_positive(&id, "our vulnerability scanner", 3)
                .unwrap(),
            Some("our scanner".into())
        );
        drop(s);
        let mut s = Store::open(&dir.path().join("p.db")).unwrap();
        assert_eq!(
            s.false_positives().unwrap(),
            vec![(id.clone(), "our vulnerability scanner".into(), 3)]
        );
        assert_eq!(
            s.false_positive(&id).unwrap(),
            Some(("our vulnerability scanner".into(), 3))
        );
        assert!(s.unmark_false_positive(&id).unwrap());
        assert!(!s.unmark_false_positive(&id).unwrap());
        assert!(s.false_positives().unwrap().is_empty());
    }
}
