//! The attack matrix: every way DESIGN.md says an agent must refuse a set file, as one table.
//!
//! Each case starts from a fresh state directory holding a legitimate set (set version 5,
//! timestamp version 5, under root version 1), lets an attacker change one thing in the next
//! release, imports the result through `StateDir::import`, and checks two things: the import
//! fails with the typed `picket_proto::Error` that names the check, and `DIR/set.pkt` is
//! byte-for-byte what it was. The time is always passed in; nothing sleeps.
//!
//! The tests after the table pin what must still work: fast-forward recovery after the root
//! rotates stolen online keys, freshness-only updates, deltas, re-imports, unknown record kinds
//! and the clock floor.

use std::fs;
use std::path::Path;

use picket_agent::loaded::LoadedSet;
use picket_agent::store::{Imported, StateDir, SET_FILE};
use picket_agent::AgentError;
use picket_proto::{
    sha256, sign_document, ChannelSpec, Content, Delta, DeltaRef, Envelope, Error, Hash, HashKind, Indicator,
    Limits, Manifest, Meta, Observable, Part, PayloadKind, Record, Role, RoleSpec, Root, SetFile, Severity,
    Signature, SigningKey, Snapshot, Timestamp, Tlp, TrustAnchor, Trusted, Versioned,
};

// ---------------------------------------------------------------------------------------------
// Time, caps and channels.
// ---------------------------------------------------------------------------------------------

const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;
/// When the legitimate set was made, and the wall clock when it was installed.
const T0: i64 = 1_700_000_000;
/// The wall clock when the attacker's file is imported.
const NOW: i64 = T0 + HOUR;
/// The root's caps on each role's lifetime.
const ROOT_CAP: u64 = 2 * 365 * DAY as u64;
const PUBLISHER_CAP: u64 = 30 * DAY as u64;
const TIMESTAMP_CAP: u64 = DAY as u64;
/// The channel the agent follows, and another one the root defines.
const ALPHA: &str = "alpha";
const BETA: &str = "beta";
/// The EICAR test file: 68 bytes, no newline.
const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// The order of the Ed25519 group, little-endian: adding it to S gives a second encoding of the
/// same scalar, which a strict verifier must refuse.
const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

// ---------------------------------------------------------------------------------------------
// The fixture: deterministic keys, the root they start from, and drafts of set releases.
// ---------------------------------------------------------------------------------------------

fn key(seed: u8, role: Role) -> SigningKey {
    SigningKey::from_seed([seed; 32], role).expect("any 32 bytes are an Ed25519 seed")
}

/// A key's id as errors print it.
fn id(k: &SigningKey) -> String {
    k.public().id().to_string()
}

/// Everyone's keys, and root version 1 signed by the root keys.
struct Fx {
    /// Root keys: r1 and r2 hold the root role of version 1 (threshold 2); r3 to r5 appear in
    /// rotations.
    r1: SigningKey,
    r2: SigningKey,
    r3: SigningKey,
    r4: SigningKey,
    r5: SigningKey,
    /// Channel alpha: publisher keys p1 and p2 (threshold 2), timestamp key t1.
    p1: SigningKey,
    p2: SigningKey,
    t1: SigningKey,
    /// Channel beta: publisher q1, timestamp u1.
    q1: SigningKey,
    u1: SigningKey,
    /// The keys alpha's roles move to when the root rotates them.
    p1_new: SigningKey,
    p2_new: SigningKey,
    t1_new: SigningKey,
    /// A key no root has ever named.
    stranger: SigningKey,
    anchor: TrustAnchor,
    root1: Vec<u8>,
}

impl Fx {
    fn new() -> Fx {
        let r1 = key(1, Role::Root);
        let r2 = key(2, Role::Root);
        let mut fx = Fx {
            anchor: TrustAnchor {
                org: "Example".into(),
                root_version: 1,
                threshold: 2,
                keys: RoleSpec::new(vec![r1.public(), r2.public()], 2, ROOT_CAP).keys,
            },
            r1,
            r2,
            r3: key(3, Role::Root),
            r4: key(4, Role::Root),
            r5: key(5, Role::Root),
            p1: key(11, Role::Publisher),
            p2: key(12, Role::Publisher),
            t1: key(13, Role::Timestamp),
            q1: key(21, Role::Publisher),
            u1: key(22, Role::Timestamp),
            p1_new: key(31, Role::Publisher),
            p2_new: key(32, Role::Publisher),
            t1_new: key(33, Role::Timestamp),
            stranger: key(99, Role::Publisher),
            root1: Vec::new(),
        };
        fx.root1 = sign_root(&fx.root_doc(1), &[&fx.r1, &fx.r2]);
        fx
    }

    /// Root `version`: version 1's content (made a day before T0, valid a year); later versions
    /// are made at T0 and valid 180 days, for a rotation case to change.
    fn root_doc(&self, version: u64) -> Root {
        let (created, expires) = match version {
            1 => (T0 - DAY, T0 + 365 * DAY),
            _ => (T0, T0 + 180 * DAY),
        };
        Root {
            version,
            created,
            expires,
            org: "Example".into(),
            root: RoleSpec::new(vec![self.r1.public(), self.r2.public()], 2, ROOT_CAP),
            channels: vec![
                ChannelSpec {
                    name: ALPHA.into(),
                    publisher: RoleSpec::new(vec![self.p1.public(), self.p2.public()], 2, PUBLISHER_CAP),
                    timestamp: RoleSpec::new(vec![self.t1.public()], 1, TIMESTAMP_CAP),
                    max_tlp: Tlp::Amber,
                },
                ChannelSpec {
                    name: BETA.into(),
                    publisher: RoleSpec::new(vec![self.q1.public()], 1, PUBLISHER_CAP),
                    timestamp: RoleSpec::new(vec![self.u1.public()], 1, TIMESTAMP_CAP),
                    max_tlp: Tlp::Amber,
                },
            ],
            tls_ca_pin: None,
        }
    }

    /// Root 2 rotating alpha's publisher and timestamp keys to the `_new` ones, signed by the
    /// (unchanged) root threshold.
    fn root2_rotating_alpha(&self) -> Vec<u8> {
        let mut r = self.root_doc(2);
        r.channels[0].publisher =
            RoleSpec::new(vec![self.p1_new.public(), self.p2_new.public()], 2, PUBLISHER_CAP);
        r.channels[0].timestamp = RoleSpec::new(vec![self.t1_new.public()], 1, TIMESTAMP_CAP);
        sign_root(&r, &[&self.r1, &self.r2])
    }

    /// Root 2 handing the root role to r3, r4 and r5 with threshold 3.
    fn root2_handover(&self) -> Root {
        let mut r = self.root_doc(2);
        r.root = RoleSpec::new(
            vec![self.r3.public(), self.r4.public(), self.r5.public()],
            3,
            ROOT_CAP,
        );
        r
    }

    /// A snapshot of `n` EICAR-like indicators on channel alpha: the first is EICAR's own
    /// SHA-256, the others hashes of EICAR with a counter appended.
    fn snapshot(&self, version: u64, n: usize) -> Snapshot {
        let records = (0..n)
            .map(|i| {
                let mut content = EICAR.to_vec();
                if i > 0 {
                    content.extend_from_slice(i.to_string().as_bytes());
                }
                let ind = Indicator {
                    id: format!("indicator--eicar-{i:04}"),
                    observable: Observable::FileHash {
                        hash: Hash {
                            kind: HashKind::Sha256,
                            value: sha256(&content).to_vec(),
                        },
                        size: Some(content.len() as u64),
                    },
                    meta: Meta {
                        confidence: 90,
                        severity: Severity::High,
                        tlp: Tlp::Green,
                        valid_until: None,
                        source: "eicar-test".into(),
                    },
                };
                Record::from_indicator(&ind).expect("an EICAR hash indicator is valid")
            })
            .collect();
        Snapshot::new(ALPHA, version, records).expect("ids are distinct")
    }

    /// The installed set's content: version 5, three indicators.
    fn legit_snapshot(&self) -> Snapshot {
        self.snapshot(5, 3)
    }

    /// The legitimate release every case starts from: set 5, timestamp 5, made at T0.
    fn legit(&self) -> Draft<'_> {
        self.draft_of(self.legit_snapshot(), 5, T0)
    }

    /// An honest next release, made a minute after the legitimate one: four indicators (so its
    /// content always differs from the installed set's), signed by alpha's keys.
    fn draft(&self, set_version: u64, timestamp_version: u64) -> Draft<'_> {
        self.draft_of(self.snapshot(set_version, 4), timestamp_version, T0 + MINUTE)
    }

    /// The next honest release (set 6, timestamp 6) with the attacker's `edit`, sealed.
    fn next<'f>(&'f self, edit: impl FnOnce(&mut Draft<'f>)) -> Vec<u8> {
        let mut d = self.draft(6, 6);
        edit(&mut d);
        d.seal()
    }

    /// An honest release after root 2 rotated alpha's keys: it carries roots 1 and 2 and is
    /// signed by the new keys.
    fn rotated(&self, set_version: u64, timestamp_version: u64) -> Draft<'_> {
        let mut d = self.draft(set_version, timestamp_version);
        d.roots.push((2, self.root2_rotating_alpha()));
        d.manifest_signers = vec![&self.p1_new, &self.p2_new];
        d.timestamp_signers = vec![&self.t1_new];
        d
    }

    fn draft_of(&self, snapshot: Snapshot, timestamp_version: u64, created: i64) -> Draft<'_> {
        Draft {
            channel: ALPHA.into(),
            roots: vec![(1, self.root1.clone())],
            manifest: Manifest {
                channel: ALPHA.into(),
                version: snapshot.version,
                created,
                expires: created + 7 * DAY,
                sha256: [0; 32],
                length: 0,
                max_tlp: Tlp::Green,
                deltas: Vec::new(),
            },
            manifest_signers: vec![&self.p1, &self.p2],
            manifest_envelope: None,
            timestamp: Timestamp {
                channel: ALPHA.into(),
                version: timestamp_version,
                created,
                expires: created + 12 * HOUR,
                manifest_version: snapshot.version,
                manifest_sha256: [0; 32],
                manifest_length: 0,
            },
            timestamp_signers: vec![&self.t1],
            ship_manifest: None,
            ship: None,
            snapshot,
        }
    }
}

fn sign_root(root: &Root, keys: &[&SigningKey]) -> Vec<u8> {
    sign_document(root, PayloadKind::Root, keys)
}

/// Content a set file ships in place of the draft's snapshot.
#[derive(Debug, Clone)]
enum Body {
    Full(Vec<u8>),
    Delta(Vec<u8>),
    /// No content: a freshness-only file (what the live channel sends to renew a timestamp).
    Installed,
}

/// One release, as plain documents, before it is signed and framed.
///
/// `seal` pins what honest signers would: the manifest to the snapshot's hash and length, the
/// timestamp to the manifest envelope's. A case changes a field to say what the attacker did.
#[derive(Clone)]
struct Draft<'f> {
    /// The file's (unsigned) channel claim.
    channel: String,
    /// The root chain the file carries.
    roots: Vec<(u64, Vec<u8>)>,
    /// The content the manifest pins (and, unless `ship` says otherwise, the file carries).
    snapshot: Snapshot,
    /// The manifest; `sha256` and `length` are pinned to `snapshot` when sealed.
    manifest: Manifest,
    manifest_signers: Vec<&'f SigningKey>,
    /// A manifest envelope to use instead of signing `manifest` (the timestamp still pins it).
    manifest_envelope: Option<Vec<u8>>,
    /// The timestamp; the manifest hash and length are pinned when sealed.
    timestamp: Timestamp,
    timestamp_signers: Vec<&'f SigningKey>,
    /// A manifest envelope the file carries instead of the one the timestamp pins.
    ship_manifest: Option<Vec<u8>>,
    /// Content the file carries instead of `snapshot`.
    ship: Option<Body>,
}

impl Draft<'_> {
    /// The manifest, pinned to the snapshot and signed by `manifest_signers`.
    fn signed_manifest(&self) -> Vec<u8> {
        let mut m = self.manifest.clone();
        let bytes = self.snapshot.encode();
        m.sha256 = sha256(&bytes);
        m.length = bytes.len() as u64;
        sign_document(&m, PayloadKind::Manifest, &self.manifest_signers)
    }

    /// Offers a delta from `base` (the manifest lists it) and ships it instead of the snapshot.
    fn offer_delta(&mut self, base: &Snapshot, delta: Vec<u8>) {
        self.manifest.deltas.push(delta_ref(base, &delta));
        self.ship = Some(Body::Delta(delta));
    }

    /// Signs and frames the release.
    fn seal(&self) -> Vec<u8> {
        let manifest = self
            .manifest_envelope
            .clone()
            .unwrap_or_else(|| self.signed_manifest());
        let mut ts = self.timestamp.clone();
        ts.manifest_sha256 = sha256(&manifest);
        ts.manifest_length = manifest.len() as u64;
        let timestamp = sign_document(&ts, PayloadKind::Timestamp, &self.timestamp_signers);
        let snapshot = self.snapshot.encode();
        let content = match &self.ship {
            None => Content::Full(&snapshot),
            Some(Body::Full(b)) => Content::Full(b),
            Some(Body::Delta(b)) => Content::Delta(b),
            Some(Body::Installed) => Content::Installed,
        };
        SetFile {
            channel: &self.channel,
            roots: self.roots.iter().map(|(v, b)| (*v, b.as_slice())).collect(),
            timestamp: &timestamp,
            manifest: self.ship_manifest.as_deref().unwrap_or(&manifest),
            content,
        }
        .encode()
    }
}

impl<'f> Draft<'f> {
    /// Moves every part of the release to channel beta, signed by beta's keys: a genuine beta
    /// set.
    fn move_to_beta(&mut self, fx: &'f Fx) {
        self.channel = BETA.into();
        self.snapshot.channel = BETA.into();
        self.manifest.channel = BETA.into();
        self.timestamp.channel = BETA.into();
        self.manifest_signers = vec![&fx.q1];
        self.timestamp_signers = vec![&fx.u1];
    }
}

fn delta_ref(base: &Snapshot, delta: &[u8]) -> DeltaRef {
    DeltaRef {
        base_version: base.version,
        base_sha256: sha256(&base.encode()),
        sha256: sha256(delta),
        length: delta.len() as u64,
    }
}

fn delta(base: &Snapshot, target: &Snapshot) -> Vec<u8> {
    Delta::between(base, target).encode()
}

/// The same snapshot with one bit of its last indicator's hash flipped: same length, other bytes.
fn tweak(s: &Snapshot) -> Snapshot {
    let mut s = s.clone();
    let body = &mut s
        .records
        .last_mut()
        .expect("the fixture's snapshots are not empty")
        .body;
    // The body ends with the 32-byte digest and the encoded size (two bytes).
    let at = body.len() - 3;
    body[at] ^= 1;
    s
}

/// `bytes` with one bit flipped `from_end` bytes before the end.
fn flipped(mut bytes: Vec<u8>, from_end: usize) -> Vec<u8> {
    let at = bytes.len() - from_end;
    bytes[at] ^= 1;
    bytes
}

/// Re-encodes a manifest envelope with its signatures changed by `f`; the payload is untouched.
fn with_signatures(envelope: &[u8], f: impl FnOnce(&mut Vec<Signature>)) -> Vec<u8> {
    let mut env = Envelope::decode(envelope, PayloadKind::Manifest, 1 << 20).expect("the fixture's envelope");
    f(&mut env.signatures);
    env.encode()
}

/// Adds the group order L to the S half of an Ed25519 signature (little-endian, with carry).
fn malleate(mut sig: [u8; 64]) -> [u8; 64] {
    let mut carry = 0u16;
    for (s, l) in sig[32..].iter_mut().zip(ED25519_L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + L fits in 256 bits because S < L < 2^253");
    sig
}

// ---------------------------------------------------------------------------------------------
// The agent under attack.
// ---------------------------------------------------------------------------------------------

/// A state directory in a temp dir. The `StateDir` (and its lock) is dropped before the dir.
struct Agent {
    state: StateDir,
    dir: tempfile::TempDir,
}

impl Agent {
    fn empty() -> Agent {
        let dir = tempfile::tempdir().expect("a temp dir");
        let state = StateDir::open(dir.path()).expect("open the state dir");
        Agent { state, dir }
    }

    /// An agent that installed the legitimate set 5 at T0.
    fn with_legit_set(fx: &Fx) -> Agent {
        let agent = Agent::empty();
        let got = agent
            .import(fx, &fx.legit().seal(), T0)
            .expect("the legitimate set installs");
        assert_eq!(got, installed(None, 5, 3));
        agent
    }

    fn import(&self, fx: &Fx, bytes: &[u8], wall: i64) -> Result<Imported, AgentError> {
        self.import_with(fx, bytes, wall, &Limits::default())
    }

    fn import_with(&self, fx: &Fx, bytes: &[u8], wall: i64, limits: &Limits) -> Result<Imported, AgentError> {
        self.state
            .import(&fx.anchor, Path::new("offered.pkt"), bytes, wall, limits)
    }

    /// The stored set's bytes.
    fn stored(&self) -> Vec<u8> {
        fs::read(self.dir.path().join(SET_FILE)).expect("set.pkt is readable")
    }

    /// The names in the state directory, sorted.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path())
            .expect("the state dir is readable")
            .map(|e| e.expect("a dir entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn load(&self) -> Trusted {
        self.state
            .load(&Limits::default())
            .expect("the stored set verifies")
            .expect("a set is stored")
    }
}

/// What a successful import of a new set version reports.
fn installed(from: Option<u64>, to: u64, records: usize) -> Imported {
    Imported::NewVersion { from, to, records }
}

/// Asserts that an import failed verification with `want`.
fn assert_refused(result: Result<Imported, AgentError>, want: Want) {
    match result {
        Err(AgentError::Verify { error, .. }) if want.accepts(&error) => {}
        other => panic!("expected a refusal with {want:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The table.
// ---------------------------------------------------------------------------------------------

/// The refusal a case expects.
#[derive(Debug)]
enum Want {
    /// Exactly this error, every field.
    Is(Error),
    /// `Error::Malformed` about this part; the decoder's words are free.
    Malformed(Part),
    /// `Error::Invalid` about this part; the detail is free.
    Invalid(Part),
}

impl Want {
    fn accepts(&self, e: &Error) -> bool {
        match self {
            Want::Is(want) => want == e,
            Want::Malformed(part) => matches!(e, Error::Malformed { what, .. } if what == part),
            Want::Invalid(part) => matches!(e, Error::Invalid { what, .. } if what == part),
        }
    }
}

// One constructor per refusal, so that each case reads as one line of expectation.

fn unsigned(what: Part) -> Want {
    Want::Is(Error::Unsigned { what })
}

fn unknown_key(what: Part, k: &SigningKey) -> Want {
    Want::Is(Error::UnknownKey { what, key: id(k) })
}

fn bad_signature(what: Part, k: &SigningKey) -> Want {
    Want::Is(Error::BadSignature { what, key: id(k) })
}

fn not_allowed(what: Part, k: &SigningKey, role: Role) -> Want {
    Want::Is(Error::KeyNotAllowed {
        what,
        key: id(k),
        role,
        channel: ALPHA.into(),
    })
}

fn below_threshold(what: Part, role: Role, valid: usize, threshold: u8) -> Want {
    Want::Is(Error::BelowThreshold {
        what,
        role,
        valid,
        threshold,
    })
}

fn rollback(what: Versioned, offered: u64, held: u64) -> Want {
    Want::Is(Error::Rollback { what, offered, held })
}

fn root_rollback(offered: u64, held: u64) -> Want {
    Want::Is(Error::RootRollback { offered, held })
}

fn root_gap(offered: u64, held: u64) -> Want {
    Want::Is(Error::RootGap { offered, held })
}

fn expired(what: Part, expires: i64, now: i64) -> Want {
    Want::Is(Error::Expired { what, expires, now })
}

fn lifetime(what: Part, role: Role, cap: u64) -> Want {
    Want::Is(Error::LifetimeExceeded {
        what,
        role,
        lifetime: cap as i64 + 1,
        cap,
    })
}

fn hash_mismatch(what: Part) -> Want {
    Want::Is(Error::HashMismatch { what })
}

fn length_mismatch(what: Part, expected: usize, actual: usize) -> Want {
    Want::Is(Error::LengthMismatch {
        what,
        expected: expected as u64,
        actual: actual as u64,
    })
}

fn too_large(what: Part, len: usize, cap: usize) -> Want {
    Want::Is(Error::TooLarge {
        what,
        len: len as u64,
        cap: cap as u64,
    })
}

fn version_mismatch(what: Part, expected: u64, found: u64) -> Want {
    Want::Is(Error::VersionMismatch {
        what,
        expected,
        found,
    })
}

/// A document on channel beta where the agent follows alpha.
fn channel_mismatch(what: Part) -> Want {
    Want::Is(Error::ChannelMismatch {
        what,
        expected: ALPHA.into(),
        found: BETA.into(),
    })
}

fn delta_base(held: u64) -> Want {
    Want::Is(Error::DeltaBase { held })
}

struct Case {
    name: &'static str,
    /// The attacker's set file.
    attack: fn(&Fx) -> Vec<u8>,
    /// The refusal.
    want: fn(&Fx) -> Want,
    /// A legitimate release installed after the legitimate set, before the attack.
    history: Option<fn(&Fx) -> Vec<u8>>,
    /// The wall clock at the attack.
    wall: i64,
    limits: Limits,
}

fn case(name: &'static str, attack: fn(&Fx) -> Vec<u8>, want: fn(&Fx) -> Want) -> Case {
    Case {
        name,
        attack,
        want,
        history: None,
        wall: NOW,
        limits: Limits::default(),
    }
}

impl Case {
    fn at(self, wall: i64) -> Case {
        Case { wall, ..self }
    }

    fn limits(self, limits: Limits) -> Case {
        Case { limits, ..self }
    }

    fn after(self, history: fn(&Fx) -> Vec<u8>) -> Case {
        Case {
            history: Some(history),
            ..self
        }
    }
}

/// Small caps for the oversize cases: the installed set (three indicators) fits, more does not.
const SMALL: Limits = Limits {
    max_snapshot: 1024,
    max_delta: 128,
    max_roots: 1,
};

fn cases() -> Vec<Case> {
    use Part::{Delta as DeltaPart, Manifest as M, Root as R, SetFile as F, Snapshot as S, Timestamp as Ts};
    vec![
        // --- Signatures ---------------------------------------------------------------------
        case(
            "manifest unsigned",
            |fx| fx.next(|d| d.manifest_signers = vec![]),
            |_| unsigned(M),
        ),
        case(
            "timestamp unsigned",
            |fx| fx.next(|d| d.timestamp_signers = vec![]),
            |_| unsigned(Ts),
        ),
        case(
            "manifest signed by a key no root names",
            |fx| fx.next(|d| d.manifest_signers = vec![&fx.stranger]),
            |fx| unknown_key(M, &fx.stranger),
        ),
        case(
            "timestamp signed by a key no root names",
            |fx| fx.next(|d| d.timestamp_signers = vec![&fx.stranger]),
            |fx| unknown_key(Ts, &fx.stranger),
        ),
        case(
            "publisher signatures moved onto a manifest with a later expiry",
            |fx| {
                fx.next(|d| {
                    let genuine = d.signed_manifest();
                    d.manifest.expires += DAY;
                    d.manifest_envelope = Some(with_signatures(&d.signed_manifest(), |s| {
                        *s = Envelope::decode(&genuine, PayloadKind::Manifest, 1 << 20)
                            .expect("the genuine envelope")
                            .signatures
                    }));
                })
            },
            |fx| bad_signature(M, &fx.p1),
        ),
        case(
            "malleable manifest signature (S + L)",
            |fx| {
                fx.next(|d| {
                    let sealed = with_signatures(&d.signed_manifest(), |s| s[0].sig = malleate(s[0].sig));
                    d.manifest_envelope = Some(sealed);
                })
            },
            |fx| bad_signature(M, &fx.p1),
        ),
        case(
            "one publisher key counted twice toward threshold 2",
            |fx| fx.next(|d| d.manifest_signers = vec![&fx.p1, &fx.p1]),
            |_| below_threshold(M, Role::Publisher, 1, 2),
        ),
        case(
            "manifest below the publisher threshold",
            |fx| fx.next(|d| d.manifest_signers = vec![&fx.p2, &fx.stranger]),
            |_| below_threshold(M, Role::Publisher, 1, 2),
        ),
        case(
            "manifest signed by the timestamp key",
            |fx| fx.next(|d| d.manifest_signers = vec![&fx.t1]),
            |fx| not_allowed(M, &fx.t1, Role::Publisher),
        ),
        case(
            "timestamp signed by a publisher key",
            |fx| fx.next(|d| d.timestamp_signers = vec![&fx.p1]),
            |fx| not_allowed(Ts, &fx.p1, Role::Timestamp),
        ),
        case(
            "manifest signed by another channel's publisher key",
            |fx| fx.next(|d| d.manifest_signers = vec![&fx.q1]),
            |fx| not_allowed(M, &fx.q1, Role::Publisher),
        ),
        case(
            "timestamp signed by another channel's timestamp key",
            |fx| fx.next(|d| d.timestamp_signers = vec![&fx.u1]),
            |fx| not_allowed(Ts, &fx.u1, Role::Timestamp),
        ),
        // --- Rollback -----------------------------------------------------------------------
        case(
            "set rollback to an older version",
            |fx| fx.draft(4, 6).seal(),
            |_| rollback(Versioned::Set, 4, 5),
        ),
        case(
            "set rollback: the installed version with other content",
            |fx| fx.draft(5, 6).seal(),
            |_| rollback(Versioned::Set, 5, 5),
        ),
        case(
            "timestamp rollback to an older version",
            |fx| fx.draft(6, 4).seal(),
            |_| rollback(Versioned::Timestamp, 4, 5),
        ),
        case(
            "timestamp rollback: the installed version over a new manifest",
            |fx| fx.draft(6, 5).seal(),
            |_| rollback(Versioned::Timestamp, 5, 5),
        ),
        case(
            "replay of an older genuine release",
            |fx| fx.draft_of(fx.snapshot(4, 3), 4, T0 - HOUR).seal(),
            |_| rollback(Versioned::Timestamp, 4, 5),
        ),
        // --- Freeze and lifetimes -----------------------------------------------------------
        case(
            "freeze: expired timestamp",
            |fx| fx.next(|d| d.timestamp.expires = T0 + 2 * MINUTE),
            |_| expired(Ts, T0 + 2 * MINUTE, NOW),
        ),
        case(
            "freeze: expired manifest",
            |fx| fx.next(|d| d.manifest.expires = T0 + 2 * MINUTE),
            |_| expired(M, T0 + 2 * MINUTE, NOW),
        ),
        case(
            "freeze: the installed root has expired",
            |fx| fx.draft(6, 6).seal(),
            |fx| expired(R, fx.root_doc(1).expires, T0 + 400 * DAY),
        )
        .at(T0 + 400 * DAY),
        case(
            "freeze: rotation to an already expired root",
            |fx| {
                let mut r2 = fx.root_doc(2);
                r2.expires = T0 + 10 * MINUTE;
                fx.next(|d| d.roots.push((2, sign_root(&r2, &[&fx.r1, &fx.r2]))))
            },
            |_| expired(R, T0 + 10 * MINUTE, NOW),
        ),
        case(
            "manifest lifetime beyond the root's cap",
            |fx| fx.next(|d| d.manifest.expires = d.manifest.created + PUBLISHER_CAP as i64 + 1),
            |_| lifetime(M, Role::Publisher, PUBLISHER_CAP),
        ),
        case(
            "timestamp lifetime beyond the root's cap",
            |fx| fx.next(|d| d.timestamp.expires = d.timestamp.created + TIMESTAMP_CAP as i64 + 1),
            |_| lifetime(Ts, Role::Timestamp, TIMESTAMP_CAP),
        ),
        case(
            "root lifetime beyond the root's cap",
            |fx| {
                let mut r2 = fx.root_doc(2);
                r2.expires = r2.created + ROOT_CAP as i64 + 1;
                fx.next(|d| d.roots.push((2, sign_root(&r2, &[&fx.r1, &fx.r2]))))
            },
            |_| lifetime(R, Role::Root, ROOT_CAP),
        ),
        // --- Content ------------------------------------------------------------------------
        case(
            "snapshot hash differs from the manifest's",
            |fx| fx.next(|d| d.ship = Some(Body::Full(tweak(&d.snapshot).encode()))),
            |_| hash_mismatch(S),
        ),
        case(
            "snapshot length differs from the manifest's",
            |fx| fx.next(|d| d.ship = Some(Body::Full(fx.snapshot(6, 5).encode()))),
            |fx| {
                length_mismatch(
                    S,
                    fx.snapshot(6, 4).encode().len(),
                    fx.snapshot(6, 5).encode().len(),
                )
            },
        ),
        case(
            "mix-and-match: snapshot of another version under a valid manifest",
            |fx| fx.next(|d| d.ship = Some(Body::Full(fx.snapshot(4, 4).encode()))),
            |_| hash_mismatch(S),
        ),
        case(
            "snapshot of another version signed into the manifest",
            |fx| fx.next(|d| d.snapshot.version = 7),
            |_| version_mismatch(S, 6, 7),
        ),
        case(
            "manifest claims more than the channel's TLP ceiling",
            |fx| fx.next(|d| d.manifest.max_tlp = Tlp::Red),
            |_| Want::Invalid(M),
        ),
        case(
            "oversize snapshot refused before decoding",
            |fx| fx.next(|d| d.snapshot = fx.snapshot(6, 40)),
            |fx| too_large(S, fx.snapshot(6, 40).encode().len(), SMALL.max_snapshot),
        )
        .limits(SMALL),
        case(
            "oversize delta refused before decoding",
            |fx| {
                fx.next(|d| {
                    d.snapshot = fx.snapshot(6, 10);
                    d.offer_delta(&fx.legit_snapshot(), delta(&fx.legit_snapshot(), &d.snapshot));
                })
            },
            |fx| {
                too_large(
                    DeltaPart,
                    delta(&fx.legit_snapshot(), &fx.snapshot(6, 10)).len(),
                    SMALL.max_delta,
                )
            },
        )
        .limits(SMALL),
        case(
            "more roots than the cap",
            |fx| fx.next(|d| d.roots.push((2, sign_root(&fx.root_doc(2), &[&fx.r1, &fx.r2])))),
            |_| too_large(R, 2, SMALL.max_roots),
        )
        .limits(SMALL),
        case(
            "set file cut short by one byte",
            |fx| {
                let mut bytes = fx.draft(6, 6).seal();
                bytes.pop();
                bytes
            },
            |_| Want::Malformed(F),
        ),
        case(
            "set file cut in half",
            |fx| {
                let mut bytes = fx.draft(6, 6).seal();
                bytes.truncate(bytes.len() / 2);
                bytes
            },
            |_| Want::Malformed(F),
        ),
        // --- Manifest against timestamp -----------------------------------------------------
        case(
            "manifest hash differs from the timestamp's",
            |fx| {
                fx.next(|d| {
                    let mut other = d.clone();
                    other.snapshot = tweak(&d.snapshot);
                    d.ship_manifest = Some(other.signed_manifest());
                })
            },
            |_| hash_mismatch(M),
        ),
        case(
            "manifest length differs from the timestamp's",
            |fx| {
                fx.next(|d| {
                    let mut other = d.clone();
                    other
                        .manifest
                        .deltas
                        .push(delta_ref(&fx.legit_snapshot(), b"padding"));
                    d.ship_manifest = Some(other.signed_manifest());
                })
            },
            |fx| {
                let mut d = fx.draft(6, 6);
                let pinned = d.signed_manifest().len();
                d.manifest
                    .deltas
                    .push(delta_ref(&fx.legit_snapshot(), b"padding"));
                length_mismatch(M, pinned, d.signed_manifest().len())
            },
        ),
        case(
            "manifest version differs from the timestamp's",
            |fx| fx.next(|d| d.timestamp.manifest_version = 7),
            |_| version_mismatch(M, 7, 6),
        ),
        // --- Deltas -------------------------------------------------------------------------
        case(
            "delta hash differs from the manifest's",
            |fx| {
                fx.next(|d| {
                    let genuine = delta(&fx.legit_snapshot(), &d.snapshot);
                    d.manifest.deltas.push(delta_ref(&fx.legit_snapshot(), &genuine));
                    d.ship = Some(Body::Delta(flipped(genuine, 3)));
                })
            },
            |_| hash_mismatch(DeltaPart),
        ),
        case(
            "delta from another base version",
            |fx| {
                let base = fx.snapshot(4, 3);
                fx.next(|d| d.offer_delta(&base, delta(&base, &d.snapshot)))
            },
            |_| delta_base(5),
        ),
        case(
            "delta from another snapshot of the installed version",
            |fx| {
                let base = fx.snapshot(5, 2);
                fx.next(|d| d.offer_delta(&base, delta(&base, &d.snapshot)))
            },
            |_| delta_base(5),
        ),
        case(
            "delta whose result differs from the manifest's snapshot",
            |fx| {
                let base = fx.legit_snapshot();
                fx.next(|d| d.offer_delta(&base, delta(&base, &tweak(&d.snapshot))))
            },
            |_| hash_mismatch(S),
        ),
        // --- Channels -----------------------------------------------------------------------
        case(
            "a whole set of another channel",
            |fx| fx.next(|d| d.move_to_beta(fx)),
            |_| channel_mismatch(F),
        ),
        case(
            "timestamp names another channel",
            |fx| fx.next(|d| d.timestamp.channel = BETA.into()),
            |_| channel_mismatch(Ts),
        ),
        case(
            "manifest names another channel",
            |fx| fx.next(|d| d.manifest.channel = BETA.into()),
            |_| channel_mismatch(M),
        ),
        case(
            "snapshot names another channel",
            |fx| fx.next(|d| d.snapshot.channel = BETA.into()),
            |_| channel_mismatch(S),
        ),
        // --- Roots --------------------------------------------------------------------------
        case(
            "root rotation without the old root threshold",
            |fx| {
                let r2 = sign_root(&fx.root2_handover(), &[&fx.r1, &fx.r3, &fx.r4, &fx.r5]);
                fx.next(|d| d.roots.push((2, r2)))
            },
            |_| below_threshold(R, Role::Root, 1, 2),
        ),
        case(
            "root rotation without the new root threshold",
            |fx| {
                let r2 = sign_root(&fx.root2_handover(), &[&fx.r1, &fx.r2, &fx.r3, &fx.r4]);
                fx.next(|d| d.roots.push((2, r2)))
            },
            |_| below_threshold(R, Role::Root, 2, 3),
        ),
        case(
            "root rotation with one root key counted twice",
            |fx| fx.next(|d| d.roots.push((2, sign_root(&fx.root_doc(2), &[&fx.r1, &fx.r1])))),
            |_| below_threshold(R, Role::Root, 1, 2),
        ),
        case(
            "root rollback: only root 1 after the agent rotated to root 2",
            |fx| {
                let mut d = fx.rotated(7, 7);
                d.roots.truncate(1);
                d.seal()
            },
            |_| root_rollback(1, 2),
        )
        .after(|fx| fx.rotated(6, 6).seal()),
        case(
            "root rollback: a root older than the trust anchor's",
            |fx| fx.next(|d| d.roots = vec![(0, sign_root(&fx.root_doc(0), &[&fx.r1, &fx.r2]))]),
            |_| root_rollback(0, 1),
        ),
        case(
            "root chain skipping a version",
            |fx| fx.next(|d| d.roots.push((3, sign_root(&fx.root_doc(3), &[&fx.r1, &fx.r2])))),
            |_| root_gap(3, 1),
        ),
        case(
            "another root 1 in place of the installed one",
            |fx| {
                let mut other = fx.root_doc(1);
                other.org = "Mallory".into();
                fx.next(|d| d.roots = vec![(1, sign_root(&other, &[&fx.r1, &fx.r2]))])
            },
            |_| Want::Invalid(R),
        ),
    ]
}

/// Runs one case on a fresh agent; `Err` says what went wrong.
fn run(fx: &Fx, case: &Case) -> Result<(), String> {
    let agent = Agent::with_legit_set(fx);
    if let Some(history) = case.history {
        agent
            .import(fx, &history(fx), NOW)
            .map_err(|e| format!("the legitimate history was refused: {e}"))?;
    }
    let before = agent.stored();
    let listing = agent.listing();
    let attack = (case.attack)(fx);
    let want = (case.want)(fx);
    match agent.import_with(fx, &attack, case.wall, &case.limits) {
        Err(AgentError::Verify { error, .. }) if want.accepts(&error) => {}
        Err(AgentError::Verify { error, .. }) => return Err(format!("refused with {error:?}, not {want:?}")),
        Err(other) => return Err(format!("failed outside verification: {other:?}")),
        Ok(imported) => return Err(format!("ACCEPTED: {imported:?}")),
    }
    if agent.stored() != before {
        return Err("set.pkt changed".into());
    }
    if agent.listing() != listing {
        return Err(format!(
            "the state dir changed: {listing:?} -> {:?}",
            agent.listing()
        ));
    }
    Ok(())
}

#[test]
fn attack_matrix() {
    let fx = Fx::new();
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run(&fx, c).err().map(|why| format!("{}: {why}", c.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// What must still work.
// ---------------------------------------------------------------------------------------------

/// The table's starting point is sound: the honest next release, unmodified, installs, so each
/// refusal above comes from the attacker's change. (And the fixture's EICAR is the real one.)
#[test]
fn the_unmodified_next_release_installs() {
    let fx = Fx::new();
    assert_eq!(
        hex::encode(sha256(EICAR)),
        "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
    );
    let agent = Agent::with_legit_set(&fx);
    let got = agent
        .import(&fx, &fx.next(|_| ()), NOW)
        .expect("the next release installs");
    assert_eq!(got, installed(Some(5), 6, 4));
    // The beta set of "a whole set of another channel" is genuine too: an agent that follows
    // beta takes it.
    let beta = fx.next(|d| d.move_to_beta(&fx));
    let got = Agent::empty()
        .import(&fx, &beta, NOW)
        .expect("a genuine beta set");
    assert_eq!(got, installed(None, 6, 4));
}

#[test]
fn fast_forward_recovery_after_the_root_rotates_stolen_online_keys() {
    let fx = Fx::new();
    let agent = Agent::with_legit_set(&fx);

    // The thief holds p1, p2 and t1 and pushes the highest versions there are.
    let frozen = fx.draft(u64::MAX, u64::MAX).seal();
    let got = agent
        .import(&fx, &frozen, NOW)
        .expect("signed by keys the root allows");
    assert_eq!(got, installed(Some(5), u64::MAX, 4));

    // Until the root rotates those keys, no honest release can get past them.
    let honest = fx.next(|_| ());
    assert_refused(
        agent.import(&fx, &honest, NOW),
        rollback(Versioned::Timestamp, 6, u64::MAX),
    );

    // Root 2 gives alpha new publisher and timestamp keys: a LOWER set version signed by them
    // installs, because the versions stored for the rotated roles no longer bind.
    let got = agent
        .import(&fx, &fx.rotated(6, 6).seal(), NOW)
        .expect("recovery installs");
    assert_eq!(got, installed(Some(u64::MAX), 6, 4));
    let state = agent.load();
    let versions = (
        state.root().version,
        state.manifest().version,
        state.timestamp().version,
    );
    assert_eq!(versions, (2, 6, 6));

    // The thief's file, as it was, now offers a root older than the agent's; with root 2
    // attached, its keys are unknown. Versions bind again under the new keys.
    assert_refused(agent.import(&fx, &frozen, NOW), root_rollback(1, 2));
    let mut stolen = fx.draft(u64::MAX, u64::MAX);
    stolen.roots.push((2, fx.root2_rotating_alpha()));
    assert_refused(
        agent.import(&fx, &stolen.seal(), NOW),
        unknown_key(Part::Timestamp, &fx.t1),
    );
    let replay = fx.rotated(5, 7);
    assert_refused(
        agent.import(&fx, &replay.seal(), NOW),
        rollback(Versioned::Set, 5, 6),
    );
    let got = agent
        .import(&fx, &fx.rotated(7, 7).seal(), NOW)
        .expect("the next release installs");
    assert_eq!(got, installed(Some(6), 7, 4));
}

#[test]
fn a_newer_timestamp_over_the_same_manifest_only_refreshes() {
    let fx = Fx::new();
    let agent = Agent::with_legit_set(&fx);
    let before = agent.load();
    let mut d = fx.legit();
    d.timestamp.version = 6;
    d.timestamp.created = T0 + HOUR;
    d.timestamp.expires = T0 + HOUR + 12 * HOUR;
    let got = agent.import(&fx, &d.seal(), NOW).expect("a refresh installs");
    assert_eq!(got, Imported::Refreshed { version: 5 });
    let after = agent.load();
    assert_eq!(after.timestamp().version, 6);
    assert_eq!(after.manifest_bytes(), before.manifest_bytes());
    assert_eq!(after.snapshot_bytes(), before.snapshot_bytes());
    assert_eq!(after.clock_floor(), T0 + HOUR);
}

#[test]
fn a_freshness_only_file_without_content_refreshes_the_installed_version() {
    let fx = Fx::new();
    let agent = Agent::with_legit_set(&fx);
    let before = agent.load();
    let mut d = fx.legit();
    d.timestamp.version = 6;
    d.timestamp.created = T0 + HOUR;
    d.timestamp.expires = T0 + HOUR + 12 * HOUR;
    d.ship = Some(Body::Installed);
    let got = agent
        .import(&fx, &d.seal(), NOW)
        .expect("a content-less refresh installs");
    assert_eq!(got, Imported::Refreshed { version: 5 });
    let after = agent.load();
    assert_eq!(after.timestamp().version, 6);
    assert_eq!(after.snapshot_bytes(), before.snapshot_bytes());
}

#[test]
fn a_content_less_file_cannot_install_a_new_version() {
    // The attacker holds a genuine manifest for version 6 but wants the agent to keep its
    // version 5 content under it: without content the file may only refresh version 5.
    let fx = Fx::new();
    let agent = Agent::with_legit_set(&fx);
    let before = agent.stored();
    let file = fx.next(|d| d.ship = Some(Body::Installed));
    assert_refused(
        agent.import(&fx, &file, NOW),
        Want::Is(Error::DeltaBase { held: 5 }),
    );
    assert_eq!(agent.stored(), before);
    // And with nothing installed there is nothing to refresh.
    let mut d = fx.legit();
    d.ship = Some(Body::Installed);
    assert_refused(
        Agent::empty().import(&fx, &d.seal(), NOW),
        Want::Is(Error::DeltaBase { held: 0 }),
    );
}

#[test]
fn a_delta_on_the_installed_base_installs() {
    let fx = Fx::new();
    let agent = Agent::with_legit_set(&fx);
    let mut d = fx.draft(6, 6);
    d.offer_delta(&fx.legit_snapshot(), delta(&fx.legit_snapshot(), &d.snapshot));
    let got = agent.import(&fx, &d.seal(), NOW).expect("the delta applies");
    assert_eq!(got, installed(Some(5), 6, 4));
    assert_eq!(agent.load().snapshot_bytes(), d.snapshot.encode());
}

#[test]
fn importing_the_installed_file_again_changes_nothing() {
    let fx = Fx::new();
    let agent = Agent::with_legit_set(&fx);
    let before = agent.stored();
    let got = agent
        .import(&fx, &fx.legit().seal(), NOW)
        .expect("a re-import is fine");
    assert_eq!(got, Imported::AlreadyInstalled { version: 5 });
    assert_eq!(agent.stored(), before);
}

#[test]
fn an_unknown_record_kind_is_skipped_and_counted() {
    let fx = Fx::new();
    let mut records = fx.legit_snapshot().records;
    records.push(Record {
        kind: 999,
        id: "indicator--from-a-newer-collector".into(),
        body: vec![1, 2, 3],
    });
    let snapshot = Snapshot::new(ALPHA, 5, records).expect("ids are distinct");
    let agent = Agent::empty();
    let got = agent
        .import(&fx, &fx.draft_of(snapshot, 5, T0).seal(), T0)
        .expect("the set installs");
    assert_eq!(got, installed(None, 5, 4));
    let decoded = agent.load().snapshot().indicators().expect("known kinds decode");
    assert_eq!((decoded.indicators.len(), decoded.unknown_kinds), (3, 1));
    let loaded = LoadedSet::from_trusted(agent.load(), 1 << 30).expect("the set compiles");
    assert_eq!((loaded.index().len(), loaded.unknown_kinds), (3, 1));
}

/// After a set made at T, the agent never takes its clock to be earlier than T: a timestamp
/// that expired before T is refused even when the wall clock says it is still valid.
#[test]
fn the_clock_never_goes_below_the_newest_verified_created() {
    let fx = Fx::new();
    let t = T0 + 10 * DAY;
    let agent = Agent::empty();
    let made_at_t = fx.draft_of(fx.legit_snapshot(), 5, t).seal();
    agent
        .import(&fx, &made_at_t, t)
        .expect("the set made at T installs");
    assert_eq!(agent.load().clock_floor(), t);
    let before = agent.stored();

    let attack = fx.next(|d| {
        d.timestamp.created = t - 100;
        d.timestamp.expires = t - 1;
    });
    assert_refused(agent.import(&fx, &attack, T0), expired(Part::Timestamp, t - 1, t));
    assert_eq!(agent.stored(), before);

    // Control: an agent that never saw T accepts the same file at that wall clock, so the
    // refusal above is the floor's doing.
    let fresh = Agent::empty();
    let got = fresh
        .import(&fx, &attack, T0)
        .expect("without a floor the timestamp is current");
    assert_eq!(got, installed(None, 6, 4));
}

/// Regression: one stolen timestamp key used to freeze an agent for good. The thief re-stamps
/// the installed manifest with a far-future `created`; the agent's clock floor jumped there, so
/// every later import, the root rotation meant to recover included, failed as expired. The floor
/// is now kept per role and dropped, like the role's version, when the root rotates its keys.
#[test]
fn stolen_timestamp_key_that_poisons_the_clock_floor_is_recovered_by_rotation() {
    let fx = Fx::new();
    let agent = Agent::with_legit_set(&fx);
    let future = T0 + 1000 * DAY;

    let mut poisoned = fx.legit();
    poisoned.timestamp.version = 6;
    poisoned.timestamp.created = future;
    poisoned.timestamp.expires = future + 12 * HOUR;
    let got = agent
        .import(&fx, &poisoned.seal(), NOW)
        .expect("t1 is the timestamp key the root allows");
    assert_eq!(got, Imported::Refreshed { version: 5 });
    assert_eq!(agent.load().clock_floor(), future);

    // While the stolen key is trusted, the agent's clock stays at the thief's time.
    assert_refused(
        agent.import(&fx, &fx.draft(6, 7).seal(), NOW),
        expired(Part::Root, fx.root_doc(1).expires, future),
    );

    // Root 2 rotates alpha's keys: the timestamp role's floor goes with its old keys.
    let got = agent
        .import(&fx, &fx.rotated(6, 7).seal(), NOW)
        .expect("recovery installs");
    assert_eq!(got, installed(Some(5), 6, 4));
    assert!(agent.load().clock_floor() < future);
}

/// Regression: a root envelope padded with an extra signature (by a key no root names) still
/// verifies, and used to be stored as it came; every honest file afterwards carries the plain
/// envelope of that root version and was refused as a different root, freezing the agent. The
/// installed root is now compared by the document it signs, not by its envelope's bytes.
#[test]
fn a_padded_root_envelope_does_not_freeze_the_agent() {
    let fx = Fx::new();
    let agent = Agent::empty();
    let mut padded = fx.legit();
    let root = padded.roots[0].1.clone();
    let mut env = Envelope::decode(&root, PayloadKind::Root, 1 << 20).expect("the fixture's root");
    env.add_signature(&fx.stranger);
    let padded_root = env.encode();
    assert_ne!(padded_root, root);
    padded.roots[0].1 = padded_root;
    let got = agent
        .import(&fx, &padded.seal(), T0)
        .expect("a root with an extra signature still verifies");
    assert_eq!(got, installed(None, 5, 3));
    let got = agent
        .import(&fx, &fx.next(|_| ()), NOW)
        .expect("the honest next release installs");
    assert_eq!(got, installed(Some(5), 6, 4));
}
