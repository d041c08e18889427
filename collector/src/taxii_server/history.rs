//! What the TAXII server keeps in the store, so that a restart changes nothing a member can see:
//! the history of every object version served to each community (`taxii_served`: the
//! `date_added` it was first served under, and the object), and the status resource of every
//! POST (`taxii_status`).
//!
//! Invariant: a row of `taxii_served` is written before the version it records is served, and
//! its `added_ms` is never changed afterwards; so a `date_added` a client has seen stays the
//! same across restarts, and `added_after` never re-serves an old version as new. A status is
//! read back only for the community and the account that posted it.
//!
//! Bound: at most [`MAX_VERSIONS`] versions of one object are kept per community, the newest by
//! `date_added`; older ones leave the store when a newer one is recorded, and the server's
//! memory when it loads or records. The invariant above holds for every version kept.

use rusqlite::{params, OptionalExtension};

use crate::store::{Store, ORG};
use crate::CollectorError;

/// The most versions of one object kept (and served) per community: the newest by
/// `date_added`. A shared sighting gets a new version each time its banded count or its last
/// bucket moves, so without a bound the history of an indicator sighted for a year would grow
/// for ever, in the store and in the memory of `serve`, which loads it whole.
pub const MAX_VERSIONS: usize = 64;

/// One object version served to a community.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// The community (API root).
    pub community: String,
    /// The STIX id.
    pub object_id: String,
    /// The version (`modified`, else `created`).
    pub version: String,
    /// `date_added`, unix milliseconds.
    pub added_ms: i64,
    /// The object as served, JSON.
    pub body: String,
}

impl Store {
    /// Every object version the TAXII server has served, oldest `date_added` first.
    pub fn taxii_served(&self) -> Result<Vec<Served>, CollectorError> {
        let db = self.err();
        let mut q = self
            .conn()
            .prepare(
                "SELECT community, object_id, version, added_ms, body FROM taxii_served
                 WHERE org = ?1 ORDER BY added_ms, community, object_id, version",
            )
            .map_err(&db)?;
        let rows = q
            .query_map(params![ORG], |r| {
                Ok(Served {
                    community: r.get(0)?,
                    object_id: r.get(1)?,
                    version: r.get(2)?,
                    added_ms: r.get(3)?,
                    body: r.get(4)?,
                })
            })
            .map_err(&db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    /// Records `rows` in one transaction: a version not seen before with its `added_ms`; for
    /// one already there, only the body is replaced (its `added_ms` stays). Then drops, in the
    /// same transaction, every version beyond the newest [`MAX_VERSIONS`] of its object.
    pub fn taxii_served_put(&mut self, rows: &[Served]) -> Result<(), CollectorError> {
        let db = self.err();
        let tx = self.tx()?;
        {
            let mut put = tx
                .prepare(
                    "INSERT INTO taxii_served (org, community, object_id, version, added_ms, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (org, community, object_id, version) DO UPDATE SET body = excluded.body",
                )
                .map_err(&db)?;
            for r in rows {
                put.execute(params![
                    ORG,
                    r.community,
                    r.object_id,
                    r.version,
                    r.added_ms,
                    r.body
                ])
                .map_err(&db)?;
            }
            tx.execute(
                "DELETE FROM taxii_served WHERE rowid IN (
                    SELECT rowid FROM (
                        SELECT rowid, ROW_NUMBER() OVER (
                            PARTITION BY community, object_id ORDER BY added_ms DESC, version DESC
                        ) AS newer
                        FROM taxii_served WHERE org = ?1)
                    WHERE newer > ?2)",
                params![ORG, MAX_VERSIONS as i64],
            )
            .map_err(&db)?;
        }
        tx.commit().map_err(db)
    }

    /// Stores the status resource `body` (JSON) of a POST by `account` to `community`.
    pub fn taxii_status_put(
        &mut self,
        id: &str,
        community: &str,
        account: &str,
        created_ms: i64,
        body: &str,
    ) -> Result<(), CollectorError> {
        let db = self.err();
        let tx = self.tx()?;
        tx.execute(
            "INSERT INTO taxii_status (org, id, community, account, created_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![ORG, id, community, account, created_ms, body],
        )
        .map_err(&db)?;
        tx.commit().map_err(db)
    }

    /// The status resource `id` (JSON), if `account` posted it to `community`.
    pub fn taxii_status(
        &self,
        id: &str,
        community: &str,
        account: &str,
    ) -> Result<Option<String>, CollectorError> {
        self.conn()
            .query_row(
                "SELECT body FROM taxii_status WHERE org = ?1 AND id = ?2 AND community = ?3 AND account = ?4",
                params![ORG, id, community, account],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }
}
