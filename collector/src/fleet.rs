//! The fleet: enrolment tokens, enrolled agents, and enrolment itself.
//!
//! A token is `pk1-<id>-<secret>-<ca pin>` (see `picket_proto::token`); the store keeps its id
//! and the SHA-256 of its secret, never the secret. [`enrol`] turns one `Enroll` message into an
//! agent: the channel it names checked against the ones this collector serves, the proof of key
//! possession checked, the token redeemed, the agent recorded and its client certificate issued,
//! all in one transaction. [`precheck`] makes the same checks with a read-only look-up, so that
//! the channel sends to its single writer only enrolments that can succeed; [`renew`] issues a
//! new certificate for an enrolled, unrevoked agent's key.
//!
//! Invariants kept here:
//! - A secret is compared in constant time, and an unknown token id and a wrong secret get the
//!   same refusal ("token not valid"): only a caller holding the secret learns that the token
//!   expired, was revoked or is used up.
//! - A token use is spent in the same (immediate, so serialised) transaction that records the
//!   agent: concurrent enrolments never overspend a token, and a refused or failed enrolment
//!   spends nothing. The read-only [`precheck`] only ever refuses; it never grants.
//! - An agent's id is derived from its public key ([`pki::agent_id`]), never taken from a
//!   message, and one key enrols once.
//! - An agent follows a channel this collector serves, and a certificate is issued only to an
//!   agent that is enrolled with that key and not revoked, checked in the transaction that
//!   records the certificate.

use std::collections::HashSet;

use picket_proto::wire::{
    decode_body, enroll_proof_message, Enroll, Enrolled, ErrorCode, Heartbeat, Renewed, WireError,
};
use picket_proto::{EnrollToken, TOKEN_ID_BYTES, TOKEN_SECRET_BYTES};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, OptionalExtension};
use subtle::ConstantTimeEq;

use crate::pki::{self, Pki};
use crate::store::{Store, ORG};
use crate::CollectorError;

/// The refusal for an unknown token id or a wrong secret (the two are never told apart).
pub const TOKEN_NOT_VALID: &str = "token not valid";

/// A stored token, as `token list` shows it. It holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// The public id (hex).
    pub id: String,
    /// When it was made.
    pub created: i64,
    /// When it stops working.
    pub expires: i64,
    /// Enrolments it still allows.
    pub uses_left: u64,
    /// Enrolments made with it.
    pub used: u64,
    /// When it was revoked.
    pub revoked: Option<i64>,
}

impl TokenRow {
    /// `revoked`, `expired`, `used up` or `valid`, in that order of precedence.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked.is_some() {
            "revoked"
        } else if now >= self.expires {
            "expired"
        } else if self.uses_left == 0 {
            "used up"
        } else {
            "valid"
        }
    }
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    /// Its id (`ag-` and 16 hex digits), derived from its key.
    pub id: String,
    /// The Ed25519 public key it generated and the collector certified.
    pub public_key: [u8; 32],
    /// The channel it follows.
    pub channel: String,
    /// The machine hash it enrolled with.
    pub machine: [u8; 32],
    /// When it enrolled.
    pub enrolled: i64,
    /// When its newest client certificate expires.
    pub cert_not_after: i64,
    /// When it was revoked.
    pub revoked: Option<i64>,
    /// When a frame from it last arrived.
    pub last_seen: Option<i64>,
    /// When a session of it presented another machine hash (a cloned image).
    pub clone_seen: Option<i64>,
    /// Its last heartbeat (postcard `Heartbeat`).
    pub heartbeat: Option<Vec<u8>>,
    /// When that heartbeat arrived.
    pub heartbeat_at: Option<i64>,
}

impl AgentRow {
    /// The last heartbeat, decoded; `Some(Err)` names why it does not decode.
    pub fn last_heartbeat(&self) -> Option<Result<Heartbeat, String>> {
        self.heartbeat
            .as_ref()
            .map(|b| decode_body::<Heartbeat>(b).map_err(|e| format!("stored heartbeat: {e}")))
    }

    /// The agent as one JSON object (`agents list --json`): times are unix seconds, the key and
    /// machine hash hex; the heartbeat fields are null until one arrived.
    pub fn to_json(&self) -> serde_json::Value {
        let hb = self.last_heartbeat().and_then(Result::ok);
        serde_json::json!({
            "id": self.id,
            "public_key": hex::encode(self.public_key),
            "channel": self.channel,
            "enrolled": self.enrolled,
            "last_seen": self.last_seen,
            "revoked": self.revoked,
            "cert_not_after": self.cert_not_after,
            "clone_suspected": self.clone_seen.is_some(),
            "clone_seen": self.clone_seen,
            "heartbeat_at": self.heartbeat_at,
            "agent_version": hb.as_ref().map(|h| h.agent_version.clone()),
            "set_version": hb.as_ref().and_then(|h| h.set_version),
            "spool_depth": hb.as_ref().map(|h| h.spool_depth),
            "spool_dropped": hb.as_ref().map(|h| h.spool_dropped),
        })
    }
}

/// A new token for a collector whose CA pin is `ca_pin`: 8 random bytes of id, 16 of secret,
/// from the system's random generator.
pub fn new_token(ca_pin: [u8; 32]) -> Result<EnrollToken, CollectorError> {
    let rng = SystemRandom::new();
    let fail = |_| CollectorError::Refused("the system random generator failed".into());
    let mut id = [0u8; TOKEN_ID_BYTES];
    rng.fill(&mut id).map_err(fail)?;
    let mut secret = [0u8; TOKEN_SECRET_BYTES];
    rng.fill(&mut secret).map_err(fail)?;
    Ok(EnrollToken {
        id: hex::encode(id),
        secret,
        ca_pin,
    })
}

const TOKEN_COLUMNS: &str = "id, created, expires, uses_left, used, revoked";
const AGENT_COLUMNS: &str =
    "id, public_key, channel, machine, enrolled, cert_not_after, revoked, last_seen, clone_seen, heartbeat, heartbeat_at";

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        created: r.get(1)?,
        expires: r.get(2)?,
        uses_left: r.get::<_, i64>(3)?.max(0) as u64,
        used: r.get::<_, i64>(4)?.max(0) as u64,
        revoked: r.get(5)?,
    })
}

fn blob32(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<[u8; 32]> {
    let v: Vec<u8> = r.get(i)?;
    v.as_slice().try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Blob,
            format!("{} bytes where 32 belong", v.len()).into(),
        )
    })
}

fn agent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok(AgentRow {
        id: r.get(0)?,
        public_key: blob32(r, 1)?,
        channel: r.get(2)?,
        machine: blob32(r, 3)?,
        enrolled: r.get(4)?,
        cert_not_after: r.get(5)?,
        revoked: r.get(6)?,
        last_seen: r.get(7)?,
        clone_seen: r.get(8)?,
        heartbeat: r.get(9)?,
        heartbeat_at: r.get(10)?,
    })
}

impl Store {
    /// Stores a token: its id and the SHA-256 of its secret, `uses` enrolments, valid until
    /// `expires`.
    pub fn insert_token(
        &mut self,
        token: &EnrollToken,
        uses: u32,
        now: i64,
        expires: i64,
    ) -> Result<(), CollectorError> {
        if uses == 0 {
            return Err(CollectorError::Refused("a token needs at least one use".into()));
        }
        let hash = EnrollToken::secret_hash(&token.secret);
        self.conn()
            .execute(
                "INSERT INTO tokens (org, id, secret_hash, created, expires, uses_left, used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
                params![ORG, token.id, hash.as_slice(), now, expires, i64::from(uses)],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Makes and stores a new token (see [`new_token`] and [`Store::insert_token`]).
    pub fn create_token(
        &mut self,
        ca_pin: [u8; 32],
        uses: u32,
        now: i64,
        expires: i64,
    ) -> Result<EnrollToken, CollectorError> {
        let token = new_token(ca_pin)?;
        self.insert_token(&token, uses, now, expires)?;
        Ok(token)
    }

    /// Every token, newest first.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, CollectorError> {
        self.org_rows(
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE org = ?1 ORDER BY created DESC, id"),
            token_row,
        )
    }

    /// One token by id.
    pub fn token(&self, id: &str) -> Result<Option<TokenRow>, CollectorError> {
        self.org_row(
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE org = ?1 AND id = ?2"),
            id,
            token_row,
        )
    }

    /// Revokes a token (a second revocation keeps the first time). `None` if no token has
    /// that id.
    pub fn revoke_token(&mut self, id: &str, now: i64) -> Result<Option<TokenRow>, CollectorError> {
        self.conn()
            .execute(
                "UPDATE tokens SET revoked = COALESCE(revoked, ?3) WHERE org = ?1 AND id = ?2",
                params![ORG, id, now],
            )
            .map_err(self.err())?;
        self.token(id)
    }

    /// Every enrolled agent (revoked ones too), by id.
    pub fn agents(&self) -> Result<Vec<AgentRow>, CollectorError> {
        self.org_rows(
            &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE org = ?1 ORDER BY id"),
            agent_row,
        )
    }

    /// One agent by id.
    pub fn agent(&self, id: &str) -> Result<Option<AgentRow>, CollectorError> {
        self.org_row(
            &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE org = ?1 AND id = ?2"),
            id,
            agent_row,
        )
    }

    /// The agent enrolled with `public_key`: how a session learns who its verified client
    /// certificate belongs to.
    pub fn agent_by_key(&self, public_key: &[u8; 32]) -> Result<Option<AgentRow>, CollectorError> {
        self.org_row(
            &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE org = ?1 AND public_key = ?2"),
            public_key.as_slice(),
            agent_row,
        )
    }

    /// The ids of revoked agents (polled by `serve` to end their live sessions).
    pub fn revoked_agents(&self) -> Result<HashSet<String>, CollectorError> {
        self.org_rows(
            "SELECT id FROM agents WHERE org = ?1 AND revoked IS NOT NULL",
            |r| r.get(0),
        )
    }

    /// Revokes an agent (a second revocation keeps the first time). `None` if no agent has
    /// that id.
    pub fn revoke_agent(&mut self, id: &str, now: i64) -> Result<Option<AgentRow>, CollectorError> {
        self.conn()
            .execute(
                "UPDATE agents SET revoked = COALESCE(revoked, ?3) WHERE org = ?1 AND id = ?2",
                params![ORG, id, now],
            )
            .map_err(self.err())?;
        self.agent(id)
    }

    /// Records the expiry of the newest certificate issued to `agent` (after a renewal).
    pub fn set_cert_not_after(&mut self, agent: &str, not_after: i64) -> Result<(), CollectorError> {
        let n = self
            .conn()
            .execute(
                "UPDATE agents SET cert_not_after = ?3 WHERE org = ?1 AND id = ?2",
                params![ORG, agent, not_after],
            )
            .map_err(self.err())?;
        if n == 0 {
            return Err(CollectorError::Refused(format!("no enrolled agent {agent}")));
        }
        Ok(())
    }

    /// Every row `sql` selects with this organisation as `?1`, each read by `row`.
    fn org_rows<T, C: FromIterator<T>>(
        &self,
        sql: &str,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<C, CollectorError> {
        let mut stmt = self.conn().prepare(sql).map_err(self.err())?;
        let rows = stmt.query_map(params![ORG], row).map_err(self.err())?;
        rows.collect::<Result<C, _>>().map_err(self.err())
    }

    /// The row `sql` selects with this organisation as `?1` and `key` as `?2`, read by `row`;
    /// `None` when there is none.
    fn org_row<T>(
        &self,
        sql: &str,
        key: impl rusqlite::ToSql,
        row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, CollectorError> {
        self.conn()
            .query_row(sql, params![ORG, key], row)
            .optional()
            .map_err(self.err())
    }
}

/// Why an enrolment did not happen: refused (the agent's fault, told to it as is), or the
/// collector failed (the agent is told to retry; the detail is for the collector's log).
#[derive(Debug)]
pub enum EnrolFailure {
    /// A refusal to send to the agent.
    Refused(WireError),
    /// The collector's own failure (database, certificate issuance).
    Internal(CollectorError),
}

impl EnrolFailure {
    /// What the agent is told. An internal failure is not described to it (it would name
    /// files of the collector's host).
    pub fn to_wire(&self) -> WireError {
        match self {
            EnrolFailure::Refused(w) => w.clone(),
            EnrolFailure::Internal(_) => WireError {
                code: ErrorCode::Internal,
                message: "the collector could not complete the enrolment; try again later".into(),
                retry_after_ms: Some(5_000),
            },
        }
    }
}

impl std::fmt::Display for EnrolFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnrolFailure::Refused(w) => write!(f, "enrolment refused: {w}"),
            EnrolFailure::Internal(e) => write!(f, "enrolment failed: {e}"),
        }
    }
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> EnrolFailure {
    EnrolFailure::Refused(WireError {
        code,
        message: message.into(),
        retry_after_ms: None,
    })
}

/// Handles one `Enroll` message in full (see [`enrol_checked`]); the error is the frame to send.
pub fn enrol(
    store: &mut Store,
    pki: &Pki,
    msg: &Enroll,
    nonce: &[u8; 32],
    now: i64,
    cert_lifetime_secs: u64,
    channels: &[String],
) -> Result<Enrolled, WireError> {
    enrol_checked(store, pki, msg, nonce, now, cert_lifetime_secs, channels).map_err(|f| f.to_wire())
}

/// The checks that need no store: the channel is one of `channels` (those this collector
/// serves), and the proof is an Ed25519 signature by `msg.public_key` over
/// `enroll_proof_message(nonce, token id, key)`.
fn check_request(msg: &Enroll, nonce: &[u8; 32], channels: &[String]) -> Result<(), EnrolFailure> {
    if msg.channel.is_empty() {
        return Err(refuse(ErrorCode::BadRequest, "enroll.channel is empty"));
    }
    if !channels.contains(&msg.channel) {
        // The name is the agent's: quoted (escaped) and cut short.
        let name: String = msg.channel.chars().take(64).collect();
        return Err(refuse(
            ErrorCode::BadRequest,
            format!(
                "enroll.channel: channel {name:?} is not served here (channels: {})",
                channels.join(", ")
            ),
        ));
    }
    let proof_message = enroll_proof_message(nonce, &msg.token_id, &msg.public_key);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &msg.public_key)
        .verify(&proof_message, &msg.proof)
        .map_err(|_| {
            refuse(
                ErrorCode::BadRequest,
                "enroll.proof is not a signature by enroll.public_key over this session's nonce",
            )
        })
}

/// A stored token as enrolment reads it: secret hash, expiry, uses left, revocation.
type StoredToken = (Vec<u8>, i64, i64, Option<i64>);

const TOKEN_BY_ID: &str =
    "SELECT secret_hash, expires, uses_left, revoked FROM tokens WHERE org = ?1 AND id = ?2";

/// Whether `secret` redeems `stored` (the token row of the id presented, if any) at `now`.
fn token_verdict(stored: Option<StoredToken>, secret: &[u8], now: i64) -> Result<(), EnrolFailure> {
    // An unknown id is compared against a hash no secret has, so that it takes the same path
    // and gets the same answer as a wrong secret.
    let presented = EnrollToken::secret_hash(secret);
    let no_secret = [0u8; 32];
    let expected = stored.as_ref().map_or(&no_secret[..], |s| s.0.as_slice());
    let secret_ok: bool = presented.as_slice().ct_eq(expected).into();
    let Some((_, expires, uses_left, revoked)) = stored.filter(|_| secret_ok) else {
        return Err(refuse(ErrorCode::TokenRefused, TOKEN_NOT_VALID));
    };
    if revoked.is_some() {
        return Err(refuse(ErrorCode::TokenRefused, "token revoked"));
    }
    if now >= expires {
        return Err(refuse(ErrorCode::TokenRefused, "token expired"));
    }
    if uses_left <= 0 {
        return Err(refuse(ErrorCode::TokenRefused, "token used up"));
    }
    Ok(())
}

/// Everything [`enrol_checked`] would refuse that a read can tell: the channel, the proof, and
/// the token (unknown, wrong secret, revoked, expired or used up, with the same answers). It
/// reads and never writes, so it runs on a read connection beside the writer; an enrolment it
/// lets through is checked again in the transaction that redeems the token.
pub fn precheck(
    store: &Store,
    msg: &Enroll,
    nonce: &[u8; 32],
    now: i64,
    channels: &[String],
) -> Result<(), EnrolFailure> {
    check_request(msg, nonce, channels)?;
    let stored: Option<StoredToken> = store
        .conn()
        .query_row(TOKEN_BY_ID, params![ORG, msg.token_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()
        .map_err(|e| EnrolFailure::Internal(store.err()(e)))?;
    token_verdict(stored, &msg.secret, now)
}

/// Handles one `Enroll` message: checks the channel (one of `channels`) and the proof (see
/// [`precheck`]), redeems the token, records the agent (id derived from the key, machine hash,
/// channel, time), issues its client certificate, and returns the `Enrolled` reply. Nothing is
/// stored unless everything succeeds.
pub fn enrol_checked(
    store: &mut Store,
    pki: &Pki,
    msg: &Enroll,
    nonce: &[u8; 32],
    now: i64,
    cert_lifetime_secs: u64,
    channels: &[String],
) -> Result<Enrolled, EnrolFailure> {
    check_request(msg, nonce, channels)?;
    let internal = EnrolFailure::Internal;
    let agent = pki::agent_id(&msg.public_key);
    let tx = store.tx().map_err(internal)?;
    let db = |e: rusqlite::Error| {
        EnrolFailure::Internal(CollectorError::Refused(format!("enrolment database: {e}")))
    };
    let stored: Option<StoredToken> = tx
        .query_row(TOKEN_BY_ID, params![ORG, msg.token_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()
        .map_err(db)?;
    token_verdict(stored, &msg.secret, now)?;
    let enrolled_as: Option<String> = tx
        .query_row(
            "SELECT id FROM agents WHERE public_key = ?1",
            params![msg.public_key.as_slice()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    if let Some(id) = enrolled_as {
        return Err(refuse(
            ErrorCode::BadRequest,
            format!("this public key is already enrolled (as {id}); generate a new key to enrol again"),
        ));
    }
    let id_taken: bool = tx
        .query_row("SELECT 1 FROM agents WHERE id = ?1", params![agent], |_| Ok(()))
        .optional()
        .map_err(db)?
        .is_some();
    if id_taken {
        // Two keys whose SHA-256 share 64 leading bits: astronomically unlikely, but an id
        // must name one key.
        return Err(refuse(
            ErrorCode::BadRequest,
            "the id derived from this public key is taken; generate a new key",
        ));
    }
    let (certificate, not_after) = pki
        .issue_client(&agent, &msg.public_key, now, cert_lifetime_secs)
        .map_err(internal)?;
    let spent = tx
        .execute(
            "UPDATE tokens SET uses_left = uses_left - 1, used = used + 1
             WHERE org = ?1 AND id = ?2 AND uses_left > 0",
            params![ORG, msg.token_id],
        )
        .map_err(db)?;
    if spent != 1 {
        return Err(refuse(ErrorCode::TokenRefused, "token used up"));
    }
    tx.execute(
        "INSERT INTO agents (org, id, public_key, token, channel, machine, enrolled, cert_not_after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            ORG,
            agent,
            msg.public_key.as_slice(),
            msg.token_id,
            msg.channel,
            msg.machine.as_slice(),
            now,
            not_after
        ],
    )
    .map_err(db)?;
    tx.commit().map_err(db)?;
    Ok(Enrolled {
        agent,
        certificate,
        ca: pki.server_ca_der().to_vec(),
        not_after,
    })
}

/// Issues a new client certificate for `agent`'s key `public_key`, valid from `now` for
/// `cert_lifetime_secs`, and records its expiry, in one immediate transaction that first checks
/// the agent is enrolled with that key and not revoked (a revocation committed a moment before
/// is seen, whatever the channel's last poll said).
pub fn renew(
    store: &mut Store,
    pki: &Pki,
    agent: &str,
    public_key: &[u8; 32],
    now: i64,
    cert_lifetime_secs: u64,
) -> Result<Renewed, EnrolFailure> {
    let db = |e: rusqlite::Error| {
        EnrolFailure::Internal(CollectorError::Refused(format!("renewal database: {e}")))
    };
    let tx = store.tx().map_err(EnrolFailure::Internal)?;
    let row: Option<(Vec<u8>, Option<i64>)> = tx
        .query_row(
            "SELECT public_key, revoked FROM agents WHERE org = ?1 AND id = ?2",
            params![ORG, agent],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db)?;
    let Some((key, revoked)) = row else {
        return Err(refuse(
            ErrorCode::Unauthenticated,
            format!("no enrolled agent {agent}"),
        ));
    };
    if revoked.is_some() {
        return Err(refuse(ErrorCode::Revoked, format!("agent {agent} was revoked")));
    }
    if key.as_slice() != public_key.as_slice() {
        return Err(refuse(
            ErrorCode::Unauthenticated,
            format!("agent {agent} is not enrolled with the key this certificate certifies"),
        ));
    }
    let (certificate, not_after) = pki
        .issue_client(agent, public_key, now, cert_lifetime_secs)
        .map_err(EnrolFailure::Internal)?;
    tx.execute(
        "UPDATE agents SET cert_not_after = ?3 WHERE org = ?1 AND id = ?2",
        params![ORG, agent, not_after],
    )
    .map_err(db)?;
    tx.commit().map_err(db)?;
    Ok(Renewed {
        certificate,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datadir::DataDir;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    const NOW: i64 = 1_750_000_000;
    const WEEK: u64 = 7 * 86_400;

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: DataDir,
        store: Store,
        pki: Pki,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        DataDir::init(&data, "Org", None, NOW).unwrap();
        let dir = DataDir::open(&data).unwrap();
        let store = dir.store().unwrap();
        let pki = Pki::load(&dir).unwrap();
        Fixture {
            _tmp: tmp,
            dir,
            store,
            pki,
        }
    }

    impl Fixture {
        /// Enrols `key` with `token` at `now` for a week, the proof signed over `nonce`.
        fn enrol(
            &mut self,
            token: &EnrollToken,
            key: &Ed25519KeyPair,
            nonce: &[u8; 32],
            now: i64,
        ) -> Result<Enrolled, WireError> {
            super::enrol(
                &mut self.store,
                &self.pki,
                &enroll_msg(token, key, nonce),
                nonce,
                now,
                WEEK,
                &channels(),
            )
        }
    }

    /// The channels `init` configures.
    fn channels() -> Vec<String> {
        vec!["default".to_owned()]
    }

    fn agent_key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn enroll_msg(token: &EnrollToken, key: &Ed25519KeyPair, nonce: &[u8; 32]) -> Enroll {
        let public_key: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
        let proof = key
            .sign(&enroll_proof_message(nonce, &token.id, &public_key))
            .as_ref()
            .to_vec();
        Enroll {
            token_id: token.id.clone(),
            secret: token.secret.to_vec(),
            public_key,
            proof,
            machine: [9; 32],
            channel: "default".into(),
        }
    }

    fn refusal(r: Result<Enrolled, WireError>) -> (ErrorCode, String) {
        let e = r.unwrap_err();
        (e.code, e.message)
    }

    #[test]
    fn a_token_enrols_an_agent_and_the_certificate_is_for_its_key() {
        let mut f = fixture();
        let token = f.store.create_token(f.pki.ca_pin(), 2, NOW, NOW + 3600).unwrap();
        assert_eq!(EnrollToken::parse(&token.encode()).unwrap(), token);
        let key = agent_key();
        let nonce = [1; 32];
        let msg = enroll_msg(&token, &key, &nonce);
        let got = enrol(&mut f.store, &f.pki, &msg, &nonce, NOW + 10, WEEK, &channels()).unwrap();
        assert_eq!(got.agent, pki::agent_id(&msg.public_key));
        assert_eq!(got.ca, f.pki.server_ca_der());
        assert_eq!(got.not_after, NOW + 10 + WEEK as i64);
        assert_eq!(pki::ed25519_key(&got.certificate), Some(msg.public_key));
        let row = f.store.agent_by_key(&msg.public_key).unwrap().unwrap();
        assert_eq!(row.id, got.agent);
        assert_eq!(row.machine, [9; 32]);
        assert_eq!(row.channel, "default");
        assert_eq!((row.enrolled, row.cert_not_after), (NOW + 10, got.not_after));
        assert_eq!(row.revoked, None);
        // One use spent, one left.
        let t = f.store.token(&token.id).unwrap().unwrap();
        assert_eq!((t.uses_left, t.used), (1, 1));
        assert_eq!(t.state(NOW + 20), "valid");
        f.store.set_cert_not_after(&row.id, NOW + 99).unwrap();
        assert_eq!(f.store.agent(&row.id).unwrap().unwrap().cert_not_after, NOW + 99);
        assert!(f.store.set_cert_not_after("ag-0000000000000000", 1).is_err());
    }

    #[test]
    fn the_token_row_holds_no_secret() {
        let mut f = fixture();
        let token = f.store.create_token(f.pki.ca_pin(), 1, NOW, NOW + 3600).unwrap();
        drop(f.store);
        let db = std::fs::read(f.dir.path().join("picket.db")).unwrap();
        let wal = std::fs::read(f.dir.path().join("picket.db-wal")).unwrap_or_default();
        let needle = token.secret;
        let hex_needle = hex::encode(token.secret);
        for bytes in [&db, &wal] {
            assert!(!bytes.windows(16).any(|w| w == needle), "raw secret stored");
            assert!(
                !bytes.windows(32).any(|w| w == hex_needle.as_bytes()),
                "hex secret stored"
            );
        }
        let hash = EnrollToken::secret_hash(&token.secret);
        assert!(
            db.windows(32).any(|w| w == hash) || wal.windows(32).any(|w| w == hash),
            "the hash is what is stored"
        );
    }

    #[test]
    fn refusals_say_only_what_the_secret_holder_may_learn() {
        let mut f = fixture();
        let pin = f.pki.ca_pin();
        let nonce = [2; 32];
        let key = agent_key();

        // Unknown id and wrong secret: the same words.
        let known = f.store.create_token(pin, 1, NOW, NOW + 3600).unwrap();
        let mut wrong = known.clone();
        wrong.secret[0] ^= 1;
        let mut unknown = new_token(pin).unwrap();
        unknown.secret = known.secret;
        for t in [&wrong, &unknown] {
            let r = f.enrol(t, &key, &nonce, NOW);
            assert_eq!(refusal(r), (ErrorCode::TokenRefused, TOKEN_NOT_VALID.to_owned()));
        }
        // A wrong secret on an expired or revoked token still says only "not valid".
        let expired = f.store.create_token(pin, 1, NOW - 100, NOW - 1).unwrap();
        let mut expired_wrong = expired.clone();
        expired_wrong.secret[3] ^= 0x80;
        let r = f.enrol(&expired_wrong, &key, &nonce, NOW);
        assert_eq!(refusal(r).1, TOKEN_NOT_VALID);
        // With the right secret: expired, revoked, used up.
        let r = f.enrol(&expired, &key, &nonce, NOW);
        assert_eq!(refusal(r), (ErrorCode::TokenRefused, "token expired".to_owned()));
        let revoked = f.store.create_token(pin, 5, NOW, NOW + 3600).unwrap();
        let row = f.store.revoke_token(&revoked.id, NOW + 1).unwrap().unwrap();
        assert_eq!(row.revoked, Some(NOW + 1));
        // Revoking again keeps the first time.
        let row = f.store.revoke_token(&revoked.id, NOW + 50).unwrap().unwrap();
        assert_eq!(row.revoked, Some(NOW + 1));
        assert_eq!(row.state(NOW), "revoked");
        let r = f.enrol(&revoked, &key, &nonce, NOW + 2);
        assert_eq!(refusal(r), (ErrorCode::TokenRefused, "token revoked".to_owned()));
        assert_eq!(f.store.revoke_token("0000000000000000", NOW).unwrap(), None);

        f.enrol(&known, &key, &nonce, NOW).unwrap();
        let other = agent_key();
        let r = f.enrol(&known, &other, &nonce, NOW);
        assert_eq!(refusal(r), (ErrorCode::TokenRefused, "token used up".to_owned()));
        assert_eq!(f.store.token(&known.id).unwrap().unwrap().state(NOW), "used up");
        // No refused attempt recorded an agent or spent a use.
        assert_eq!(f.store.agents().unwrap().len(), 1);
        assert_eq!(f.store.token(&revoked.id).unwrap().unwrap().uses_left, 5);
    }

    #[test]
    fn one_key_enrols_once_and_a_bad_proof_spends_nothing() {
        let mut f = fixture();
        let token = f.store.create_token(f.pki.ca_pin(), 3, NOW, NOW + 3600).unwrap();
        let key = agent_key();
        let nonce = [3; 32];
        f.enrol(&token, &key, &nonce, NOW).unwrap();
        let r = f.enrol(&token, &key, &nonce, NOW);
        let (code, message) = refusal(r);
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(message.contains("already enrolled"), "{message}");
        // A proof made for another session's nonce does not verify.
        let other = agent_key();
        let stale = enroll_msg(&token, &other, &[4; 32]);
        let r = enrol(&mut f.store, &f.pki, &stale, &nonce, NOW, WEEK, &channels());
        let (code, message) = refusal(r);
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(message.contains("enroll.proof"), "{message}");
        // A key substituted after signing does not verify either.
        let mut swapped = enroll_msg(&token, &other, &nonce);
        swapped.public_key = enroll_msg(&token, &agent_key(), &nonce).public_key;
        assert!(enrol(&mut f.store, &f.pki, &swapped, &nonce, NOW, WEEK, &channels()).is_err());
        let t = f.store.token(&token.id).unwrap().unwrap();
        assert_eq!((t.uses_left, t.used), (2, 1));
        assert_eq!(f.store.agents().unwrap().len(), 1);
    }

    #[test]
    fn an_enrolment_for_a_channel_not_served_here_is_refused_and_spends_nothing() {
        let mut f = fixture();
        let token = f.store.create_token(f.pki.ca_pin(), 1, NOW, NOW + 3600).unwrap();
        let key = agent_key();
        let nonce = [7; 32];
        let mut msg = enroll_msg(&token, &key, &nonce);
        msg.channel = "secret-ops\u{1b}[2J".into();
        let r = enrol(&mut f.store, &f.pki, &msg, &nonce, NOW, WEEK, &channels());
        let (code, message) = refusal(r);
        assert_eq!(code, ErrorCode::BadRequest);
        assert_eq!(
            message,
            "enroll.channel: channel \"secret-ops\\u{1b}[2J\" is not served here (channels: default)"
        );
        // The same refusal without the store, and nothing spent.
        let pre = precheck(&f.store, &msg, &nonce, NOW, &channels()).unwrap_err();
        assert_eq!(pre.to_wire().message, message);
        assert_eq!(f.store.token(&token.id).unwrap().unwrap().uses_left, 1);
        assert!(f.store.agents().unwrap().is_empty());
        // A collector serving several channels lists them all.
        let served = vec!["default".to_owned(), "servers".to_owned()];
        msg.channel = "desktops".into();
        let e = enrol(&mut f.store, &f.pki, &msg, &nonce, NOW, WEEK, &served).unwrap_err();
        assert!(e.message.ends_with("(channels: default, servers)"), "{e}");
        msg.channel = "servers".into();
        let got = enrol(&mut f.store, &f.pki, &msg, &nonce, NOW, WEEK, &served).unwrap();
        assert_eq!(f.store.agent(&got.agent).unwrap().unwrap().channel, "servers");
    }

    #[test]
    fn the_read_only_precheck_refuses_as_enrolment_would_and_writes_nothing() {
        let mut f = fixture();
        let pin = f.pki.ca_pin();
        let key = agent_key();
        let nonce = [8; 32];
        let good = f.store.create_token(pin, 1, NOW, NOW + 3600).unwrap();
        let expired = f.store.create_token(pin, 1, NOW - 100, NOW - 1).unwrap();
        let mut wrong = good.clone();
        wrong.secret[5] ^= 4;
        let unknown = new_token(pin).unwrap();
        let mut bad_proof = enroll_msg(&good, &key, &nonce);
        bad_proof.proof[0] ^= 1;
        let cases: Vec<(Enroll, ErrorCode, &str)> = vec![
            (
                enroll_msg(&wrong, &key, &nonce),
                ErrorCode::TokenRefused,
                TOKEN_NOT_VALID,
            ),
            (
                enroll_msg(&unknown, &key, &nonce),
                ErrorCode::TokenRefused,
                TOKEN_NOT_VALID,
            ),
            (
                enroll_msg(&expired, &key, &nonce),
                ErrorCode::TokenRefused,
                "token expired",
            ),
            (
                bad_proof,
                ErrorCode::BadRequest,
                "enroll.proof is not a signature",
            ),
        ];
        for (msg, code, words) in cases {
            let pre = precheck(&f.store, &msg, &nonce, NOW, &channels())
                .unwrap_err()
                .to_wire();
            let full = enrol(&mut f.store, &f.pki, &msg, &nonce, NOW, WEEK, &channels()).unwrap_err();
            assert_eq!(pre, full, "the precheck says what enrolment says");
            assert_eq!(pre.code, code);
            assert!(pre.message.starts_with(words), "{pre}");
        }
        // A plausible request passes, and only enrolment spends the token.
        let msg = enroll_msg(&good, &key, &nonce);
        precheck(&f.store, &msg, &nonce, NOW, &channels()).unwrap();
        assert_eq!(f.store.token(&good.id).unwrap().unwrap().uses_left, 1);
        f.enrol(&good, &key, &nonce, NOW).unwrap();
        // Used up: the precheck now says so too.
        let other = agent_key();
        let e = precheck(
            &f.store,
            &enroll_msg(&good, &other, &nonce),
            &nonce,
            NOW,
            &channels(),
        )
        .unwrap_err();
        assert_eq!(e.to_wire().message, "token used up");
    }

    #[test]
    fn renewal_checks_the_key_and_revocation_in_its_transaction() {
        let mut f = fixture();
        let token = f.store.create_token(f.pki.ca_pin(), 2, NOW, NOW + 3600).unwrap();
        let key = agent_key();
        let public: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
        let got = f.enrol(&token, &key, &[9; 32], NOW).unwrap();
        let renewed = renew(&mut f.store, &f.pki, &got.agent, &public, NOW + 100, WEEK).unwrap();
        assert_eq!(renewed.not_after, NOW + 100 + WEEK as i64);
        assert_eq!(pki::ed25519_key(&renewed.certificate), Some(public));
        assert_eq!(
            f.store.agent(&got.agent).unwrap().unwrap().cert_not_after,
            renewed.not_after
        );
        // Another key under this agent's id.
        let stranger: [u8; 32] = agent_key().public_key().as_ref().try_into().unwrap();
        let e = renew(&mut f.store, &f.pki, &got.agent, &stranger, NOW + 200, WEEK).unwrap_err();
        assert_eq!(e.to_wire().code, ErrorCode::Unauthenticated);
        // Revoked a moment ago (no poll has seen it yet): no certificate.
        f.store.revoke_agent(&got.agent, NOW + 300).unwrap();
        let e = renew(&mut f.store, &f.pki, &got.agent, &public, NOW + 301, WEEK).unwrap_err();
        let w = e.to_wire();
        assert_eq!(w.code, ErrorCode::Revoked);
        assert!(w.message.contains(&got.agent), "{w}");
        assert_eq!(
            f.store.agent(&got.agent).unwrap().unwrap().cert_not_after,
            renewed.not_after,
            "nothing recorded"
        );
        let e = renew(&mut f.store, &f.pki, "ag-0000000000000000", &public, NOW, WEEK).unwrap_err();
        assert_eq!(e.to_wire().code, ErrorCode::Unauthenticated);
    }

    #[test]
    fn revocation_and_listing() {
        let mut f = fixture();
        let token = f.store.create_token(f.pki.ca_pin(), 2, NOW, NOW + 3600).unwrap();
        let nonce = [5; 32];
        let a = f.enrol(&token, &agent_key(), &nonce, NOW).unwrap();
        let b = f.enrol(&token, &agent_key(), &nonce, NOW).unwrap();
        assert!(f.store.revoked_agents().unwrap().is_empty());
        let row = f.store.revoke_agent(&a.agent, NOW + 5).unwrap().unwrap();
        assert_eq!(row.revoked, Some(NOW + 5));
        assert_eq!(
            f.store.revoked_agents().unwrap(),
            HashSet::from([a.agent.clone()])
        );
        assert_eq!(f.store.revoke_agent("ag-nobody", NOW).unwrap(), None);
        let ids: Vec<String> = f.store.agents().unwrap().into_iter().map(|r| r.id).collect();
        let mut expected = vec![a.agent.clone(), b.agent.clone()];
        expected.sort();
        assert_eq!(ids, expected);
        let json = f.store.agent(&b.agent).unwrap().unwrap().to_json();
        assert_eq!(json["id"], b.agent.as_str());
        assert_eq!(json["clone_suspected"], false);
        assert!(json["set_version"].is_null());
        let tokens = f.store.tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!((tokens[0].uses_left, tokens[0].used), (0, 2));
    }

    #[test]
    fn the_heartbeat_columns_are_decoded() {
        let mut f = fixture();
        let token = f.store.create_token(f.pki.ca_pin(), 1, NOW, NOW + 3600).unwrap();
        let nonce = [6; 32];
        let got = f.enrol(&token, &agent_key(), &nonce, NOW).unwrap();
        let hb = Heartbeat {
            agent_version: "0.1.0".into(),
            channel: "default".into(),
            set_version: Some(7),
            set_created: Some(NOW),
            config_hash: [0; 32],
            scan: Default::default(),
            cpu_millis: 1,
            rss_bytes: 2,
            spool_depth: 3,
            spool_dropped: 0,
            epoch: 1,
            last_seq: 4,
        };
        let frame = picket_proto::wire::encode_frame(&hb);
        f.store
            .conn()
            .execute(
                "UPDATE agents SET heartbeat = ?1, heartbeat_at = ?2 WHERE id = ?3",
                params![&frame[4..], NOW + 60, got.agent],
            )
            .unwrap();
        let row = f.store.agent(&got.agent).unwrap().unwrap();
        assert_eq!(row.last_heartbeat(), Some(Ok(hb)));
        let json = row.to_json();
        assert_eq!(json["set_version"], 7);
        assert_eq!(json["spool_depth"], 3);
        assert_eq!(json["agent_version"], "0.1.0");
        assert_eq!(json["heartbeat_at"], NOW + 60);
    }
}
