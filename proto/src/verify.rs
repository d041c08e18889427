//! Verification: the only code that turns bytes into trusted documents.
//!
//! [`Trusted::update`] applies TUF's client workflow to one set file, with the time passed in
//! (never read here):
//!
//! 1. Roots: walk the offered chain from the installed root (or from the trust anchor) one
//!    version at a time; each new root must be signed by the previous root's threshold and by
//!    its own (TUF 5.3.4). A chain that ends below the installed root is a rollback. The final
//!    root must not have expired (5.3.10).
//! 2. Timestamp: signed by the channel's timestamp threshold (5.4.2), version strictly above the
//!    installed one unless the root rotated the timestamp keys (fast-forward recovery, 5.3.11),
//!    lifetime within the root's cap, not expired (5.4.4).
//! 3. Manifest: exactly the length and hash the timestamp signed, before it is decoded (5.5.2);
//!    signed by the publisher threshold; version as the timestamp says; not below the installed
//!    set version, and equal only when it is the same manifest (5.5.3); not expired (5.5.5).
//! 4. Content: the snapshot's length, then its SHA-256, then its decoding (5.6.2, 5.6.3); a delta
//!    only on the base the manifest names, with the delta's own length and hash checked before
//!    decoding, and the rebuilt snapshot hashing to the manifest's value.
//!
//! Verification runs over the exact bytes received. Nothing is decoded before its size is
//! checked against a cap and, where a signer vouches for it, before its signature or hash is.

use std::collections::BTreeSet;
use std::ops::Deref;

use ring::digest;
use serde::{Deserialize, Serialize};

use crate::anchor::TrustAnchor;
use crate::docs::{check_lifetime, Document, Manifest, RoleSpec, Root, Timestamp};
use crate::envelope::{signing_message, Envelope, PayloadKind};
use crate::error::{check_cap, invalid, malformed, Error, Part, Result, Role, Versioned};
use crate::keys::PublicKey;
use crate::set::Delta;
use crate::setfile::{Content, SetFile};
use crate::view::{SnapshotView, ViewHeader};

/// Size caps for everything an agent decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest snapshot accepted, in bytes.
    pub max_snapshot: usize,
    /// Largest delta accepted, in bytes.
    pub max_delta: usize,
    /// Most roots a set file may carry.
    pub max_roots: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_snapshot: 512 << 20,
            max_delta: 64 << 20,
            max_roots: 256,
        }
    }
}

impl Limits {
    /// The cap on a whole set file: the largest content plus room for roots and documents.
    pub fn max_set_file(&self) -> usize {
        self.max_snapshot
            .max(self.max_delta)
            .saturating_add(self.max_roots.saturating_mul(Root::CAP))
            .saturating_add(2 * Manifest::CAP)
    }

    /// The cap on stored state: the largest snapshot, and each envelope at the size
    /// verification accepts (its document's cap plus room for signatures), plus framing.
    fn max_state(&self) -> usize {
        const SLACK: usize = 16 * 1024;
        self.max_snapshot
            .saturating_add(Root::CAP + Manifest::CAP + Timestamp::CAP + 3 * SLACK + 256)
    }
}

/// A value that passed verification. Only this module can make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T>(T);

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Counts distinct allowed keys with valid signatures and demands `spec.threshold` of them.
///
/// A signature by an allowed key that does not verify fails the whole envelope (fail closed).
/// Signatures by keys outside `spec` are ignored, but if nothing else signed they decide the
/// error: a key known to the root for another role or channel, or an unknown key.
fn check_signatures(
    env: &Envelope<'_>,
    spec: &RoleSpec,
    role: Role,
    channel: &str,
    known_elsewhere: &dyn Fn(&PublicKey) -> bool,
) -> Result<()> {
    let what = env.kind.part();
    if env.signatures.is_empty() {
        return Err(Error::Unsigned { what });
    }
    let message = signing_message(env.kind, env.payload);
    let mut valid = BTreeSet::new();
    let mut misplaced = None;
    let mut unknown = None;
    for s in &env.signatures {
        if spec.allows(&s.key) {
            if !s.key.verify(&message, &s.sig) {
                return Err(Error::BadSignature {
                    what,
                    key: s.key.id().to_string(),
                });
            }
            valid.insert(s.key);
        } else if known_elsewhere(&s.key) {
            misplaced.get_or_insert(s.key);
        } else {
            unknown.get_or_insert(s.key);
        }
    }
    if valid.len() >= usize::from(spec.threshold) {
        return Ok(());
    }
    if valid.is_empty() {
        if let Some(k) = misplaced {
            return Err(Error::KeyNotAllowed {
                what,
                key: k.id().to_string(),
                role,
                channel: channel.to_owned(),
            });
        }
        if let Some(k) = unknown {
            return Err(Error::UnknownKey {
                what,
                key: k.id().to_string(),
            });
        }
    }
    Err(Error::BelowThreshold {
        what,
        role,
        valid: valid.len(),
        threshold: spec.threshold,
    })
}

/// Verifies a root envelope signed by `signers` (the anchor, or the previous root), then
/// decodes it and checks that it is also signed by its own root threshold.
fn verify_root(bytes: &[u8], signers: &RoleSpec, claimed_version: u64) -> Result<Verified<Root>> {
    let env = Envelope::decode(bytes, PayloadKind::Root, Root::CAP + 16 * 1024)?;
    check_signatures(&env, signers, Role::Root, "", &|_| false)?;
    let root = Root::decode(env.payload)?;
    if root.version != claimed_version {
        return Err(Error::VersionMismatch {
            what: Part::Root,
            expected: claimed_version,
            found: root.version,
        });
    }
    root.validate()?;
    check_signatures(&env, &root.root, Role::Root, "", &|_| false)?;
    Ok(Verified(root))
}

fn verify_self_signed_root(bytes: &[u8]) -> Result<Verified<Root>> {
    // For stored state: the root must at least carry its own threshold. Decoding the envelope
    // first is needed to learn its keys; the bytes come from the agent's own 0700 directory.
    let env = Envelope::decode(bytes, PayloadKind::Root, Root::CAP + 16 * 1024)?;
    let root = Root::decode(env.payload)?;
    root.validate()?;
    check_signatures(&env, &root.root, Role::Root, "", &|_| false)?;
    Ok(Verified(root))
}

fn verify_doc<T: Document>(
    bytes: &[u8],
    kind: PayloadKind,
    root: &Root,
    role: Role,
    channel: &str,
) -> Result<Verified<T>> {
    let env = Envelope::decode(bytes, kind, T::CAP + 16 * 1024)?;
    let spec = root.role(role, channel)?;
    check_signatures(&env, spec, role, channel, &|k| root.knows(k))?;
    Ok(Verified(T::decode(env.payload)?))
}

/// Verifies the root the trust anchor pins: signed by the anchor's threshold of its keys, and
/// holding exactly those keys as its root role.
fn bootstrap(anchor: &TrustAnchor, roots: &[(u64, &[u8])]) -> Result<(Verified<Root>, Vec<u8>)> {
    let anchor_spec = RoleSpec::new(anchor.keys.clone(), anchor.threshold, u64::MAX);
    let (_, bytes) = roots
        .iter()
        .find(|(v, _)| *v == anchor.root_version)
        .ok_or_else(|| {
            invalid(
                Part::Root,
                format!(
                    "root version {} (pinned by the trust anchor) is not among the roots offered",
                    anchor.root_version
                ),
            )
        })?;
    let root = verify_root(bytes, &anchor_spec, anchor.root_version)?;
    if root.root.keys != anchor_spec.keys || root.root.threshold != anchor.threshold {
        return Err(invalid(
            Part::Anchor,
            "the pinned root's keys differ from the trust anchor's",
        ));
    }
    Ok((root, bytes.to_vec()))
}

/// Verifies a whole root chain from the root the anchor pins to the newest, one version at a
/// time, each signed by the previous threshold and its own. Expiry is not checked: the
/// collector uses this to know which root is in force, and says so when it has expired.
pub fn verify_root_chain(anchor: &TrustAnchor, roots: &[(u64, &[u8])]) -> Result<Verified<Root>> {
    let (mut root, _) = bootstrap(anchor, roots)?;
    for (claimed, bytes) in roots.iter().filter(|(v, _)| *v > anchor.root_version) {
        if Some(*claimed) != root.version.checked_add(1) {
            return Err(Error::RootGap {
                offered: *claimed,
                held: root.version,
            });
        }
        root = verify_root(bytes, &root.root, *claimed)?;
    }
    Ok(root)
}

/// Whether two root envelopes carry the same signed document. Anything that does not decode
/// is not the same.
fn same_signed_payload(a: &[u8], b: &[u8]) -> bool {
    let cap = Root::CAP + 16 * 1024;
    match (
        Envelope::decode(a, PayloadKind::Root, cap),
        Envelope::decode(b, PayloadKind::Root, cap),
    ) {
        (Ok(x), Ok(y)) => x.payload == y.payload,
        _ => false,
    }
}

/// Whether the installed document's role keys differ from the new root's: then its version no
/// longer binds (TUF 5.3.11, fast-forward attack recovery).
fn rotated(prev: &Root, next: &Root, role: Role, channel: &str) -> bool {
    match (prev.role(role, channel), next.role(role, channel)) {
        (Ok(a), Ok(b)) => a.keys != b.keys || a.threshold != b.threshold,
        _ => true,
    }
}

fn not_expired(what: Part, expires: i64, now: i64) -> Result<()> {
    if now >= expires {
        return Err(Error::Expired { what, expires, now });
    }
    Ok(())
}

fn check_length_and_hash(what: Part, bytes: &[u8], length: u64, hash: &[u8; 32]) -> Result<()> {
    if bytes.len() as u64 != length {
        return Err(Error::LengthMismatch {
            what,
            expected: length,
            actual: bytes.len() as u64,
        });
    }
    if &sha256(bytes) != hash {
        return Err(Error::HashMismatch { what });
    }
    Ok(())
}

/// How current an installed set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Every document is within its lifetime.
    Fresh {
        /// The earliest expiry among root, manifest and timestamp.
        until: i64,
    },
    /// Something expired: the agent keeps matching with this set but says it is stale.
    Stale {
        /// What expired first.
        what: Part,
        /// When.
        expired_at: i64,
    },
}

/// What an update changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new set version was installed.
    NewVersion,
    /// Only freshness was renewed: same set version, newer timestamp.
    Refreshed,
}

/// Everything an agent trusts: the root, timestamp, manifest and snapshot it verified, with the
/// exact bytes they came from, and the floor below which its clock never goes.
#[derive(Debug, Clone)]
pub struct Trusted {
    root: Verified<Root>,
    root_bytes: Vec<u8>,
    timestamp: Verified<Timestamp>,
    timestamp_bytes: Vec<u8>,
    manifest: Verified<Manifest>,
    manifest_bytes: Vec<u8>,
    snapshot_bytes: Vec<u8>,
    snapshot_header: ViewHeader,
    floors: Floors,
}

/// The newest `created` verified from each role. The agent's clock is never taken to be below
/// any of them; a role's floor is dropped, like its version, when the root rotates its keys, so
/// a stolen key that stamped a far-future `created` cannot freeze the agent after recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Floors {
    root: i64,
    timestamp: i64,
    publisher: i64,
}

impl Floors {
    const NONE: Floors = Floors {
        root: i64::MIN,
        timestamp: i64::MIN,
        publisher: i64::MIN,
    };

    fn max(&self) -> i64 {
        self.root.max(self.timestamp).max(self.publisher)
    }
}

#[derive(Serialize, Deserialize)]
struct StateWire<'a> {
    magic: [u8; 4],
    format: u8,
    floors: Floors,
    #[serde(borrow)]
    channel: &'a str,
    #[serde(borrow)]
    root: &'a [u8],
    #[serde(borrow)]
    timestamp: &'a [u8],
    #[serde(borrow)]
    manifest: &'a [u8],
    #[serde(borrow)]
    snapshot: &'a [u8],
}

const STATE_MAGIC: [u8; 4] = *b"PKAS";

impl Trusted {
    /// The root in force.
    pub fn root(&self) -> &Verified<Root> {
        &self.root
    }

    /// The root's exact bytes.
    pub fn root_bytes(&self) -> &[u8] {
        &self.root_bytes
    }

    /// The timestamp envelope's exact bytes.
    pub fn timestamp_bytes(&self) -> &[u8] {
        &self.timestamp_bytes
    }

    /// The manifest envelope's exact bytes.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The snapshot's exact bytes.
    pub fn snapshot_bytes(&self) -> &[u8] {
        &self.snapshot_bytes
    }

    /// The timestamp in force.
    pub fn timestamp(&self) -> &Verified<Timestamp> {
        &self.timestamp
    }

    /// The manifest in force.
    pub fn manifest(&self) -> &Verified<Manifest> {
        &self.manifest
    }

    /// The snapshot in force, read in place from its verified bytes.
    pub fn snapshot(&self) -> SnapshotView<'_> {
        SnapshotView::from_header(&self.snapshot_bytes, self.snapshot_header)
    }

    /// The time below which this agent's clock is never taken to be: the newest `created` it
    /// has verified.
    pub fn clock_floor(&self) -> i64 {
        self.floors.max()
    }

    /// The time to check expiry against, given the wall clock.
    pub fn effective_now(&self, wall: i64) -> i64 {
        wall.max(self.floors.max())
    }

    /// Whether the root, manifest and timestamp are all still within their lifetimes.
    pub fn freshness(&self, wall: i64) -> Freshness {
        let now = self.effective_now(wall);
        let mut expiries = [
            (Part::Timestamp, self.timestamp.expires),
            (Part::Manifest, self.manifest.expires),
            (Part::Root, self.root.expires),
        ];
        expiries.sort_by_key(|e| e.1);
        let (what, at) = expiries[0];
        if now >= at {
            Freshness::Stale { what, expired_at: at }
        } else {
            Freshness::Fresh { until: at }
        }
    }

    /// Verifies `file` against the installed state (`prev`) or, with none, the trust anchor.
    /// `wall` is the wall-clock time in unix seconds. Returns the new state; `prev` is untouched,
    /// so a caller that fails to persist the result still holds the old one.
    pub fn update(
        prev: Option<&Trusted>,
        anchor: &TrustAnchor,
        file: &SetFile<'_>,
        wall: i64,
        limits: &Limits,
    ) -> Result<(Trusted, Outcome)> {
        // 1. Roots, one version at a time.
        let (mut root, mut root_bytes) = match prev {
            Some(p) => (p.root.clone(), p.root_bytes.clone()),
            None => bootstrap(anchor, &file.roots)?,
        };
        let held_root = root.version;
        for (claimed, bytes) in &file.roots {
            let claimed = *claimed;
            if claimed < root.version {
                continue;
            }
            if claimed == root.version {
                // The signed document must be the same; the envelope around it may differ
                // (signatures can be added, or padded by whoever carried an earlier file).
                if !same_signed_payload(bytes, &root_bytes) {
                    return Err(invalid(
                        Part::Root,
                        format!(
                            "offered root version {claimed} differs from the installed root of that version"
                        ),
                    ));
                }
                continue;
            }
            if Some(claimed) != root.version.checked_add(1) {
                return Err(Error::RootGap {
                    offered: claimed,
                    held: root.version,
                });
            }
            root = verify_root(bytes, &root.root, claimed)?;
            root_bytes = bytes.to_vec();
        }
        if let Some(&(newest, _)) = file.roots.last() {
            if newest < held_root {
                return Err(Error::RootRollback {
                    offered: newest,
                    held: held_root,
                });
            }
        }
        // The file's channel claim only chooses which keys to verify with; the signed documents
        // must then name the same channel.
        let channel = match prev {
            Some(p) if p.manifest.channel != file.channel => {
                return Err(Error::ChannelMismatch {
                    what: Part::SetFile,
                    expected: p.manifest.channel.clone(),
                    found: file.channel.to_owned(),
                })
            }
            _ => file.channel.to_owned(),
        };
        // The time: never below what was verified before, except what a role whose keys the
        // root just rotated claimed (TUF 5.3.11, applied to the clock as to versions).
        let ts_rotated = prev.is_some_and(|p| rotated(&p.root, &root, Role::Timestamp, &channel));
        let pub_rotated = prev.is_some_and(|p| rotated(&p.root, &root, Role::Publisher, &channel));
        let mut floors = prev.map_or(Floors::NONE, |p| p.floors);
        if ts_rotated {
            floors.timestamp = i64::MIN;
        }
        if pub_rotated {
            floors.publisher = i64::MIN;
        }
        let now = wall.max(floors.max());
        not_expired(Part::Root, root.expires, now)?;

        // 2. Timestamp.
        let timestamp: Verified<Timestamp> = verify_doc(
            file.timestamp,
            PayloadKind::Timestamp,
            &root,
            Role::Timestamp,
            &channel,
        )?;
        if timestamp.channel != channel {
            return Err(Error::ChannelMismatch {
                what: Part::Timestamp,
                expected: channel,
                found: timestamp.channel.clone(),
            });
        }
        let ts_spec = root.role(Role::Timestamp, &channel)?;
        check_lifetime(
            Part::Timestamp,
            Role::Timestamp,
            timestamp.created,
            timestamp.expires,
            ts_spec,
        )?;
        if let Some(p) = prev {
            if !ts_rotated && timestamp.version <= p.timestamp.version {
                return Err(Error::Rollback {
                    what: Versioned::Timestamp,
                    offered: timestamp.version,
                    held: p.timestamp.version,
                });
            }
        }
        not_expired(Part::Timestamp, timestamp.expires, now)?;

        // 3. Manifest: length and hash as the timestamp signed them, before decoding.
        check_cap(Part::Manifest, file.manifest.len(), Manifest::CAP + 16 * 1024)?;
        check_length_and_hash(
            Part::Manifest,
            file.manifest,
            timestamp.manifest_length,
            &timestamp.manifest_sha256,
        )?;
        let manifest: Verified<Manifest> = verify_doc(
            file.manifest,
            PayloadKind::Manifest,
            &root,
            Role::Publisher,
            &channel,
        )?;
        if manifest.channel != channel {
            return Err(Error::ChannelMismatch {
                what: Part::Manifest,
                expected: channel,
                found: manifest.channel.clone(),
            });
        }
        if manifest.version != timestamp.manifest_version {
            return Err(Error::VersionMismatch {
                what: Part::Manifest,
                expected: timestamp.manifest_version,
                found: manifest.version,
            });
        }
        let pub_spec = root.role(Role::Publisher, &channel)?;
        check_lifetime(
            Part::Manifest,
            Role::Publisher,
            manifest.created,
            manifest.expires,
            pub_spec,
        )?;
        let mut outcome = Outcome::NewVersion;
        if let Some(p) = prev {
            if !pub_rotated {
                let same =
                    manifest.version == p.manifest.version && file.manifest == p.manifest_bytes.as_slice();
                if same {
                    outcome = Outcome::Refreshed;
                } else if manifest.version <= p.manifest.version {
                    return Err(Error::Rollback {
                        what: Versioned::Set,
                        offered: manifest.version,
                        held: p.manifest.version,
                    });
                }
            }
        }
        not_expired(Part::Manifest, manifest.expires, now)?;
        if manifest.max_tlp > root.channel(&channel)?.max_tlp {
            return Err(invalid(
                Part::Manifest,
                format!(
                    "holds {} but channel {channel} allows at most {}",
                    manifest.max_tlp,
                    root.channel(&channel)?.max_tlp
                ),
            ));
        }

        // 4. Content.
        let snapshot_bytes = match file.content {
            Content::Full(bytes) => {
                check_cap(Part::Snapshot, bytes.len(), limits.max_snapshot)?;
                check_length_and_hash(Part::Snapshot, bytes, manifest.length, &manifest.sha256)?;
                bytes.to_vec()
            }
            Content::Delta(bytes) => {
                let p = prev.ok_or(Error::DeltaBase { held: 0 })?;
                let base_hash = p.manifest.sha256;
                let dref = manifest
                    .deltas
                    .iter()
                    .find(|d| d.base_version == p.manifest.version && d.base_sha256 == base_hash)
                    .ok_or(Error::DeltaBase {
                        held: p.manifest.version,
                    })?;
                check_cap(Part::Delta, bytes.len(), limits.max_delta)?;
                check_length_and_hash(Part::Delta, bytes, dref.length, &dref.sha256)?;
                let delta = Delta::decode(bytes, limits.max_delta)?;
                let rebuilt = delta.apply_to_bytes(&p.snapshot())?;
                check_cap(Part::Snapshot, rebuilt.len(), limits.max_snapshot)?;
                check_length_and_hash(Part::Snapshot, &rebuilt, manifest.length, &manifest.sha256)?;
                rebuilt
            }
            Content::Installed => {
                // Freshness only: valid solely over the very manifest already installed.
                let p = prev.ok_or(Error::DeltaBase { held: 0 })?;
                if outcome != Outcome::Refreshed {
                    return Err(Error::DeltaBase {
                        held: p.manifest.version,
                    });
                }
                check_length_and_hash(
                    Part::Snapshot,
                    &p.snapshot_bytes,
                    manifest.length,
                    &manifest.sha256,
                )?;
                p.snapshot_bytes.clone()
            }
        };
        let snapshot = SnapshotView::parse(&snapshot_bytes, limits.max_snapshot)?;
        if snapshot.version() != manifest.version {
            return Err(Error::VersionMismatch {
                what: Part::Snapshot,
                expected: manifest.version,
                found: snapshot.version(),
            });
        }
        if snapshot.channel() != channel {
            return Err(Error::ChannelMismatch {
                what: Part::Snapshot,
                expected: channel,
                found: snapshot.channel().to_owned(),
            });
        }
        let snapshot_header = snapshot.header();

        let floors = Floors {
            root: floors.root.max(root.created),
            timestamp: floors.timestamp.max(timestamp.created),
            publisher: floors.publisher.max(manifest.created),
        };
        Ok((
            Trusted {
                root,
                root_bytes,
                timestamp,
                timestamp_bytes: file.timestamp.to_vec(),
                manifest,
                manifest_bytes: file.manifest.to_vec(),
                snapshot_bytes,
                snapshot_header,
                floors,
            },
            outcome,
        ))
    }

    /// The bytes an agent stores.
    pub fn encode(&self) -> Vec<u8> {
        let wire = StateWire {
            magic: STATE_MAGIC,
            format: 1,
            floors: self.floors,
            channel: &self.manifest.channel,
            root: &self.root_bytes,
            timestamp: &self.timestamp_bytes,
            manifest: &self.manifest_bytes,
            snapshot: &self.snapshot_bytes,
        };
        // Invariant: byte slices and integers always serialise.
        postcard::to_allocvec(&wire).expect("encoding state cannot fail")
    }

    /// Reads stored state back, re-checking every signature and hash (not expiry: a stale set
    /// is still loaded, and reported as stale).
    pub fn decode_stored(bytes: &[u8], limits: &Limits) -> Result<Trusted> {
        check_cap(Part::State, bytes.len(), limits.max_state())?;
        let (w, rest): (StateWire<'_>, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| malformed(Part::State, e))?;
        if !rest.is_empty() || w.magic != STATE_MAGIC {
            return Err(malformed(Part::State, "not a Picket agent state file"));
        }
        if w.format != 1 {
            return Err(Error::UnsupportedFormat {
                what: Part::State,
                version: w.format,
            });
        }
        let root = verify_self_signed_root(w.root)?;
        let channel = w.channel;
        let timestamp: Verified<Timestamp> = verify_doc(
            w.timestamp,
            PayloadKind::Timestamp,
            &root,
            Role::Timestamp,
            channel,
        )?;
        check_length_and_hash(
            Part::Manifest,
            w.manifest,
            timestamp.manifest_length,
            &timestamp.manifest_sha256,
        )?;
        let manifest: Verified<Manifest> =
            verify_doc(w.manifest, PayloadKind::Manifest, &root, Role::Publisher, channel)?;
        if timestamp.channel != channel
            || manifest.channel != channel
            || manifest.version != timestamp.manifest_version
        {
            return Err(invalid(
                Part::State,
                "timestamp and manifest do not belong together",
            ));
        }
        check_length_and_hash(Part::Snapshot, w.snapshot, manifest.length, &manifest.sha256)?;
        let view = SnapshotView::parse(w.snapshot, limits.max_snapshot)?;
        if view.version() != manifest.version || view.channel() != channel {
            return Err(invalid(
                Part::State,
                "the snapshot does not belong to the manifest",
            ));
        }
        let snapshot_header = view.header();
        Ok(Trusted {
            root,
            root_bytes: w.root.to_vec(),
            timestamp,
            timestamp_bytes: w.timestamp.to_vec(),
            manifest,
            manifest_bytes: w.manifest.to_vec(),
            snapshot_bytes: w.snapshot.to_vec(),
            snapshot_header,
            floors: w.floors,
        })
    }
}
