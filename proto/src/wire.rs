//! The live channel between agent and collector: messages and framing.
//!
//! The channel runs inside mutual TLS 1.3. Each frame is a 4-byte big-endian length followed by
//! that many bytes of one postcard-encoded message. The length is checked against a cap **before**
//! anything is read or allocated: the collector accepts at most [`MAX_CLIENT_FRAME`] from an agent,
//! and an agent at most [`MAX_SERVER_FRAME`] from the collector (a full snapshot travels in one
//! frame). A zero length is invalid.
//!
//! A session starts with the agent's [`Hello`] (the range of protocol versions it speaks) and the
//! collector's [`Welcome`] (the version chosen). An agent without a client certificate may only
//! [`ClientMsg::Enroll`]; everything else needs the certificate the collector issued, and the
//! agent's identity is that certificate's key, never a field of a message.
//!
//! Compatibility: postcard encodes enum variants by position and struct fields in order. New
//! variants and messages are added **at the end**; a field is never removed or reordered within
//! one protocol version. [`PROTOCOL_VERSION`] changes when that rule cannot be kept.

use serde::{Deserialize, Serialize};

/// The highest protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The lowest protocol version this build speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// The largest frame the collector accepts from an agent (a sightings batch is far below it).
pub const MAX_CLIENT_FRAME: usize = 1 << 20;
/// The largest frame an agent accepts from the collector (a full snapshot of a large set).
pub const MAX_SERVER_FRAME: usize = 512 << 20;
/// The most sightings in one batch.
pub const MAX_BATCH_ITEMS: usize = 1_000;
/// The longest string in a client message (indicator ids, kinds, redacted locations).
pub const MAX_FIELD: usize = 1_024;

/// The domain-separation prefix of the proof an enrolling agent signs with its new key.
pub const ENROLL_PROOF_CONTEXT: &[u8] = b"picket-enroll-v1";

/// A message from agent to collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// The first message of every session.
    Hello(Hello),
    /// Enrolment (the only message allowed without a client certificate).
    Enroll(Enroll),
    /// A new certificate for the same key (the current one still valid).
    Renew,
    /// The set of `channel` the agent should have, given the version it has.
    Fetch(Fetch),
    /// Sightings from the spool.
    Report(Batch),
    /// Health, every heartbeat interval.
    Heartbeat(Heartbeat),
}

/// A message from collector to agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// The answer to [`Hello`].
    Welcome(Welcome),
    /// The answer to [`Enroll`].
    Enrolled(Enrolled),
    /// The answer to [`ClientMsg::Renew`].
    Renewed(Renewed),
    /// A new set version was published on a channel the agent follows (sent unasked).
    NewVersion {
        /// The channel.
        channel: String,
        /// The version now current.
        version: u64,
    },
    /// The answer to [`Fetch`] when the agent is behind: a set file ([`crate::SetFile`] bytes)
    /// holding the deltas from the agent's version, or the snapshot when no delta is kept.
    Set {
        /// The version the file brings the agent to.
        version: u64,
        /// The set file.
        file: Vec<u8>,
    },
    /// The answer to [`Fetch`] when the agent is current; the file carries a fresher timestamp
    /// only when one was signed since (else it is empty).
    UpToDate {
        /// The current version.
        version: u64,
        /// A set file carrying only the root chain and the newest timestamp and manifest, or empty.
        file: Vec<u8>,
    },
    /// A batch was committed (or was already stored: `duplicate`).
    Ack {
        /// Spool epoch.
        epoch: u64,
        /// Sequence number.
        seq: u64,
        /// The collector already had this batch; nothing was counted again.
        duplicate: bool,
    },
    /// The collector holds a different batch under this number: the agent's spool was restored
    /// from an older copy (a VM snapshot, a cloned image). The agent starts a new epoch and
    /// renumbers what it has not had acknowledged.
    Conflict {
        /// Spool epoch.
        epoch: u64,
        /// Sequence number.
        seq: u64,
    },
    /// Something was wrong; the collector closes the session after sending it, except for
    /// [`ErrorCode::RateLimited`] on an enrolled agent's session (which stays open: wait
    /// `retry_after_ms`, then resend). Before enrolment every error closes the session.
    Error(WireError),
}

/// The opening message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Lowest protocol version spoken.
    pub min_version: u16,
    /// Highest protocol version spoken.
    pub max_version: u16,
    /// The agent's software version (`0.1.0`).
    pub agent_version: String,
    /// A keyed hash of the host's machine id (see [`machine_hash`]); compared with the one
    /// recorded at enrolment so that a cloned image shows up as a clone.
    pub machine: [u8; 32],
}

/// The answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version of this session.
    pub version: u16,
    /// The agent id the session is authenticated as, or `None` before enrolment.
    pub agent: Option<String>,
    /// A fresh random value the enrolment proof signs (binds the proof to this session).
    pub nonce: [u8; 32],
    /// The collector's clock (unix seconds), so an agent can see skew.
    pub now: i64,
}

/// Enrolment with a token. Its `Debug` form never shows the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enroll {
    /// The token's public id.
    pub token_id: String,
    /// The token's secret (sent only after the collector's certificate checked out against the
    /// CA pin the token carries).
    pub secret: Vec<u8>,
    /// The agent's new Ed25519 public key.
    pub public_key: [u8; 32],
    /// A signature by that key over [`enroll_proof_message`]: proof the agent holds it.
    pub proof: Vec<u8>,
    /// The machine hash (as in [`Hello`]).
    pub machine: [u8; 32],
    /// The channel the agent will follow.
    pub channel: String,
}

impl std::fmt::Debug for Enroll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enroll")
            .field("token_id", &self.token_id)
            .field("secret", &"<redacted>")
            .field("public_key", &hex::encode(self.public_key))
            .field("proof", &hex::encode(&self.proof))
            .field("machine", &hex::encode(self.machine))
            .field("channel", &self.channel)
            .finish()
    }
}

/// The message an enrolling agent signs: context, session nonce, token id, public key.
pub fn enroll_proof_message(nonce: &[u8; 32], token_id: &str, public_key: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ENROLL_PROOF_CONTEXT.len() + 32 + token_id.len() + 1 + 32);
    m.extend_from_slice(ENROLL_PROOF_CONTEXT);
    m.extend_from_slice(nonce);
    m.extend_from_slice(token_id.as_bytes());
    m.push(0);
    m.extend_from_slice(public_key);
    m
}

/// The keyed machine hash: SHA-256 of a context, the agent's public key and the machine id, so
/// the collector can compare hosts without learning (or linking across collectors) the id.
pub fn machine_hash(public_key: &[u8; 32], machine_id: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"picket-machine-v1");
    ctx.update(public_key);
    ctx.update(machine_id.trim().as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The answer to [`Enroll`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The agent's id, chosen by the collector.
    pub agent: String,
    /// The client certificate (DER) for the agent's key.
    pub certificate: Vec<u8>,
    /// The collector CA certificate (DER) the agent trusts from now on.
    pub ca: Vec<u8>,
    /// When the certificate expires (unix seconds).
    pub not_after: i64,
}

/// The answer to [`ClientMsg::Renew`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewed {
    /// The new client certificate (DER), same key.
    pub certificate: Vec<u8>,
    /// When it expires.
    pub not_after: i64,
}

/// A request for the current set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetch {
    /// The channel.
    pub channel: String,
    /// The set version installed, if any.
    pub have: Option<u64>,
    /// The timestamp version installed, if any (so the collector sends a fresher one).
    pub have_timestamp: Option<u64>,
}

/// A numbered batch of sightings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The spool epoch: random, new when the spool is created or found restored.
    pub epoch: u64,
    /// The batch's number within the epoch, from 1, without gaps.
    pub seq: u64,
    /// The sightings (at most [`MAX_BATCH_ITEMS`]).
    pub items: Vec<SightingReport>,
}

/// What kind of thing a sighting was seen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ObservedKind {
    /// A file.
    File,
    /// A running process.
    Process,
    /// A live connection.
    Connection,
}

impl ObservedKind {
    /// The lower-case name (`file`, `process`, `connection`).
    pub fn name(self) -> &'static str {
        match self {
            ObservedKind::File => "file",
            ObservedKind::Process => "process",
            ObservedKind::Connection => "connection",
        }
    }
}

/// One sighting as it leaves the host: no host name, user name, address or matched local value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SightingReport {
    /// The indicator id.
    pub indicator: String,
    /// The indicator kind that matched (`sha256`, `file-name`, `remote-addr`, ...).
    pub what: String,
    /// What it was seen on.
    pub observed: ObservedKind,
    /// A redacted location (a path with user segments replaced), or `None` when the matched
    /// local value must not leave (globs, command-line substrings, networks).
    pub location: Option<String>,
    /// First seen (unix seconds).
    pub first_seen: i64,
    /// Last seen (unix seconds).
    pub last_seen: i64,
    /// Times seen (once per scan or poll that found it).
    pub count: u64,
    /// The set version that matched.
    pub set_version: u64,
}

/// Scan statistics in a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanStats {
    /// Files looked at by the last full scan.
    pub files: u64,
    /// Files hashed by it.
    pub hashed: u64,
    /// When it finished (unix seconds), if one has.
    pub finished: Option<i64>,
    /// How long it took, in milliseconds.
    pub millis: u64,
}

/// The agent's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Software version.
    pub agent_version: String,
    /// Channel followed.
    pub channel: String,
    /// Set version installed.
    pub set_version: Option<u64>,
    /// When that set version was created (unix seconds).
    pub set_created: Option<i64>,
    /// SHA-256 of the agent's configuration file.
    pub config_hash: [u8; 32],
    /// Scan statistics.
    pub scan: ScanStats,
    /// CPU time used by the agent process so far, in milliseconds.
    pub cpu_millis: u64,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
    /// Batches waiting in the spool.
    pub spool_depth: u64,
    /// Sightings dropped because the spool was full (since the spool was created).
    pub spool_dropped: u64,
    /// The current spool epoch.
    pub epoch: u64,
    /// The last sequence number used in that epoch (0: none yet), so gaps show.
    pub last_seq: u64,
}

/// Why the collector refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// No protocol version in common.
    UnsupportedVersion,
    /// A frame that did not decode, or a message out of order.
    BadFrame,
    /// A frame over the cap.
    TooLarge,
    /// Too many messages; slow down (the session stays open).
    RateLimited,
    /// The message needs an enrolled client certificate.
    Unauthenticated,
    /// The agent was revoked.
    Revoked,
    /// The token is unknown, its secret wrong, expired, revoked or used up.
    TokenRefused,
    /// The session was idle or a message too slow to arrive.
    Timeout,
    /// A field over its cap or otherwise invalid (named in the message).
    BadRequest,
    /// The collector failed; try again later.
    Internal,
}

/// An error frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// What kind of error.
    pub code: ErrorCode,
    /// What was wrong, for the operator reading the agent's log.
    pub message: String,
    /// For [`ErrorCode::RateLimited`] and [`ErrorCode::Internal`]: wait at least this long.
    pub retry_after_ms: Option<u64>,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds the cap.
    #[error("frame of {len} bytes exceeds the cap of {cap}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The cap.
        cap: usize,
    },
    /// A zero length.
    #[error("empty frame")]
    Empty,
    /// The body did not decode as a message, or had bytes left over.
    #[error("frame does not decode: {0}")]
    Decode(String),
}

/// Encodes `msg` as one frame: length prefix and body.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these types into a Vec cannot fail: no maps, no unsized sequences.
    let body = postcard::to_allocvec(msg).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Checks a length prefix against `cap`, before anything is allocated for the body.
pub fn frame_len(header: [u8; 4], cap: usize) -> std::result::Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > cap {
        return Err(FrameError::TooLarge { len, cap });
    }
    Ok(len)
}

/// Decodes a frame body; trailing bytes are an error.
pub fn decode_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> std::result::Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Decode(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

impl ClientMsg {
    /// Checks the caps a decoded message must keep (string lengths, batch size), naming the
    /// field that broke one.
    pub fn check(&self) -> std::result::Result<(), String> {
        fn s(name: &str, v: &str) -> std::result::Result<(), String> {
            if v.len() > MAX_FIELD {
                return Err(format!("{name} is {} bytes, more than {MAX_FIELD}", v.len()));
            }
            Ok(())
        }
        match self {
            ClientMsg::Hello(h) => s("hello.agent_version", &h.agent_version),
            ClientMsg::Enroll(e) => {
                s("enroll.token_id", &e.token_id)?;
                s("enroll.channel", &e.channel)?;
                if e.secret.len() > 64 || e.proof.len() > 128 {
                    return Err("enroll.secret or enroll.proof is too long".into());
                }
                Ok(())
            }
            ClientMsg::Renew => Ok(()),
            ClientMsg::Fetch(f) => s("fetch.channel", &f.channel),
            ClientMsg::Report(b) => {
                if b.items.len() > MAX_BATCH_ITEMS {
                    return Err(format!(
                        "report holds {} sightings, more than {MAX_BATCH_ITEMS}",
                        b.items.len()
                    ));
                }
                if b.seq == 0 {
                    return Err("report.seq is 0; sequence numbers start at 1".into());
                }
                for i in &b.items {
                    s("sighting.indicator", &i.indicator)?;
                    s("sighting.what", &i.what)?;
                    if let Some(l) = &i.location {
                        s("sighting.location", l)?;
                    }
                    if i.last_seen < i.first_seen {
                        return Err(format!(
                            "sighting of {}: last_seen before first_seen",
                            i.indicator
                        ));
                    }
                }
                Ok(())
            }
            ClientMsg::Heartbeat(h) => {
                s("heartbeat.agent_version", &h.agent_version)?;
                s("heartbeat.channel", &h.channel)
            }
        }
    }
}

/// Picks the protocol version for a session: the highest both sides speak.
pub fn negotiate(hello: &Hello) -> Option<u16> {
    let hi = hello.max_version.min(PROTOCOL_VERSION);
    let lo = hello.min_version.max(MIN_PROTOCOL_VERSION);
    (lo <= hi).then_some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_caps_hold() {
        let msg = ClientMsg::Fetch(Fetch {
            channel: "default".into(),
            have: Some(3),
            have_timestamp: None,
        });
        let frame = encode_frame(&msg);
        let len = frame_len(frame[..4].try_into().unwrap(), MAX_CLIENT_FRAME).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert_eq!(decode_body::<ClientMsg>(&frame[4..]).unwrap(), msg);
        assert_eq!(
            frame_len((MAX_CLIENT_FRAME as u32 + 1).to_be_bytes(), MAX_CLIENT_FRAME),
            Err(FrameError::TooLarge {
                len: MAX_CLIENT_FRAME + 1,
                cap: MAX_CLIENT_FRAME
            })
        );
        assert_eq!(frame_len([0; 4], 10), Err(FrameError::Empty));
        let mut long = frame[4..].to_vec();
        long.push(0);
        assert!(matches!(
            decode_body::<ClientMsg>(&long),
            Err(FrameError::Decode(_))
        ));
    }

    #[test]
    fn golden_hello() {
        // Pins the wire encoding: a change here breaks every deployed agent.
        let frame = encode_frame(&ClientMsg::Hello(Hello {
            min_version: 1,
            max_version: 1,
            agent_version: "0.1.0".into(),
            machine: [7; 32],
        }));
        assert_eq!(hex::encode(&frame[..12]), "0000002900010105302e312e");
        assert_eq!(frame.len(), 4 + 0x29);
    }

    #[test]
    fn an_enroll_message_never_shows_its_secret() {
        let e = Enroll {
            token_id: "0011223344556677".into(),
            secret: b"s3cr3t-s3cr3t-xx".to_vec(),
            public_key: [1; 32],
            proof: vec![2; 64],
            machine: [3; 32],
            channel: "default".into(),
        };
        let shown = format!("{e:?} {:?}", ClientMsg::Enroll(e.clone()));
        assert!(
            !shown.contains("s3cr3t") && !shown.contains(&hex::encode(b"s3cr3t")),
            "{shown}"
        );
        assert!(shown.contains("0011223344556677"));
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        let h = |min, max| Hello {
            min_version: min,
            max_version: max,
            agent_version: String::new(),
            machine: [0; 32],
        };
        assert_eq!(negotiate(&h(1, 1)), Some(1));
        assert_eq!(negotiate(&h(1, 9)), Some(PROTOCOL_VERSION));
        assert_eq!(negotiate(&h(2, 9)), None);
    }

    proptest::proptest! {
        /// Any bytes: decoding a client or server frame body returns a value or an error, never
        /// panics. (Frames need no canonical form: nothing signs them; postcard accepts
        /// non-minimal varints, so re-encoding may differ.)
        #[test]
        fn any_body_decodes_or_fails_cleanly(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Ok(m) = decode_body::<ClientMsg>(&body) {
                let _ = m.check();
            }
            let _ = decode_body::<ServerMsg>(&body);
        }

        /// Reports round-trip through a frame whatever their contents.
        #[test]
        fn reports_round_trip(
            epoch in proptest::num::u64::ANY,
            seq in 1u64..,
            ind in "[a-z0-9-]{1,40}",
            loc in proptest::option::of("[ -~]{0,60}"),
            first in 0i64..2_000_000_000,
            extra in 0i64..1_000_000,
            count in proptest::num::u64::ANY,
        ) {
            let m = ClientMsg::Report(Batch { epoch, seq, items: vec![SightingReport {
                indicator: ind, what: "sha256".into(), observed: ObservedKind::Process, location: loc,
                first_seen: first, last_seen: first + extra, count, set_version: 3,
            }]});
            let f = encode_frame(&m);
            proptest::prop_assert_eq!(decode_body::<ClientMsg>(&f[4..]).unwrap(), m.clone());
            proptest::prop_assert!(m.check().is_ok());
        }
    }

    #[test]
    fn caps_name_the_field() {
        let mut b = Batch {
            epoch: 1,
            seq: 1,
            items: vec![],
        };
        b.items.push(SightingReport {
            indicator: "x".repeat(MAX_FIELD + 1),
            what: "sha256".into(),
            observed: ObservedKind::File,
            location: None,
            first_seen: 1,
            last_seen: 2,
            count: 1,
            set_version: 1,
        });
        let err = ClientMsg::Report(b).check().unwrap_err();
        assert!(err.contains("sighting.indicator"), "{err}");
    }
}
