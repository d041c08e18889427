//! Property tests for every encoding in the contract.
//!
//! Three kinds of property live here:
//!
//! - **Round trips**: every type that has an encoding decodes back to the value that was encoded,
//!   and the canonical formats (snapshots, deltas) re-encode to exactly the bytes they came from.
//! - **Robustness**: every decoder, fed random bytes or a valid encoding with bytes flipped,
//!   inserted or deleted, returns `Ok` or `Err` and never panics. A decoder that panics on a set
//!   file off the network takes an agent down; one that allocates without bound does the same.
//! - **Tamper evidence**: a set file or stored state with random damage either fails
//!   verification or yields exactly the content that was signed.
//!
//! Case counts are kept moderate so that the whole file runs in a few seconds in a debug build;
//! the fuzz targets under `fuzz/` explore the same decoders for longer.

use std::net::IpAddr;

use picket_proto::{
    rfc3339, sha256, sign_document, verify_root_chain, ChannelSpec, Content, Delta, DeltaRef, Document,
    Envelope, Error, FileCondition, Hash, HashKind, Indicator, IpNet, Limits, Manifest, Meta, NamePattern,
    Observable, Outcome, PayloadKind, ProcessCondition, PublicKey, Record, Role, RoleSpec, Root, SetFile,
    Severity, SigningKey, Snapshot, SnapshotView, Timestamp, Tlp, TrustAnchor, Trusted, MAX_CONDITIONS,
    MAX_ID, MAX_TEXT,
};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------------------------
// Strategies: the indicator model.
// ---------------------------------------------------------------------------------------------

/// Text an indicator may carry: usually short, sometimes exactly at the cap.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => "\\PC{1,24}",
        1 => Just("t".repeat(MAX_TEXT)),
    ]
}

/// An indicator id: STIX-like, any printable text, or exactly at the cap.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => "indicator--[0-9a-f]{1,8}",
        10 => "\\PC{1,12}",
        1 => Just("i".repeat(MAX_ID)),
    ]
}

fn tlp() -> impl Strategy<Value = Tlp> {
    prop_oneof![
        Just(Tlp::Clear),
        Just(Tlp::Green),
        Just(Tlp::Amber),
        Just(Tlp::AmberStrict),
        Just(Tlp::Red),
    ]
}

fn severity() -> impl Strategy<Value = Severity> {
    prop_oneof![
        Just(Severity::Info),
        Just(Severity::Low),
        Just(Severity::Medium),
        Just(Severity::High),
        Just(Severity::Critical),
    ]
}

fn hash() -> impl Strategy<Value = Hash> {
    prop_oneof![Just(HashKind::Md5), Just(HashKind::Sha1), Just(HashKind::Sha256)]
        .prop_flat_map(|kind| vec(any::<u8>(), kind.digest_len()).prop_map(move |value| Hash { kind, value }))
}

fn name_pattern() -> impl Strategy<Value = NamePattern> {
    (text(), any::<bool>()).prop_map(|(text, glob)| NamePattern { text, glob })
}

/// An address, and the network `IpNet::parse` makes of it with an optional prefix length.
/// Parsing is what clears host bits, so the network is canonical by construction.
fn addr_and_net() -> impl Strategy<Value = (IpAddr, IpNet)> {
    let v4 = (any::<[u8; 4]>(), prop::option::of(0u8..=32)).prop_map(|(a, p)| (IpAddr::from(a), p));
    let v6 = (any::<[u8; 16]>(), prop::option::of(0u8..=128)).prop_map(|(a, p)| (IpAddr::from(a), p));
    prop_oneof![v4, v6].prop_map(|(addr, prefix)| {
        let text = match prefix {
            Some(p) => format!("{addr}/{p}"),
            None => addr.to_string(),
        };
        let net = IpNet::parse(&text).expect("a displayed address with a prefix in range always parses");
        (addr, net)
    })
}

fn file_condition() -> impl Strategy<Value = FileCondition> {
    prop_oneof![
        hash().prop_map(FileCondition::Hash),
        any::<u64>().prop_map(FileCondition::Size),
        name_pattern().prop_map(FileCondition::Name),
        text().prop_map(FileCondition::Path),
    ]
}

fn process_condition() -> impl Strategy<Value = ProcessCondition> {
    prop_oneof![
        text().prop_map(ProcessCondition::Name),
        text().prop_map(ProcessCondition::Path),
        hash().prop_map(ProcessCondition::Hash),
        text().prop_map(ProcessCondition::CommandLine),
    ]
}

/// Every observable variant, compounds included.
fn observable() -> impl Strategy<Value = Observable> {
    prop_oneof![
        (hash(), prop::option::of(any::<u64>())).prop_map(|(hash, size)| Observable::FileHash { hash, size }),
        name_pattern().prop_map(Observable::FileName),
        text().prop_map(Observable::PathGlob),
        text().prop_map(Observable::ProcessName),
        text().prop_map(Observable::ProcessPath),
        hash().prop_map(Observable::ProcessHash),
        text().prop_map(Observable::CommandLine),
        addr_and_net().prop_map(|(_, net)| Observable::RemoteAddr(net)),
        vec(file_condition(), 1..=MAX_CONDITIONS).prop_map(Observable::FileAll),
        vec(process_condition(), 1..=MAX_CONDITIONS).prop_map(Observable::ProcessAll),
    ]
}

fn meta() -> impl Strategy<Value = Meta> {
    (
        any::<u8>(),
        severity(),
        tlp(),
        prop::option::of(any::<i64>()),
        "\\PC{0,16}",
    )
        .prop_map(|(confidence, severity, tlp, valid_until, source)| Meta {
            confidence,
            severity,
            tlp,
            valid_until,
            source,
        })
}

fn indicator() -> impl Strategy<Value = Indicator> {
    (id(), observable(), meta()).prop_map(|(id, observable, meta)| Indicator { id, observable, meta })
}

// ---------------------------------------------------------------------------------------------
// Strategies: sets.
// ---------------------------------------------------------------------------------------------

/// What a record in a generated snapshot holds: an indicator of a known kind, or a kind this
/// build does not know with an opaque body (which a snapshot must carry through untouched).
#[derive(Debug, Clone, PartialEq)]
enum Body {
    Known(Observable, Meta),
    Unknown(u16, Vec<u8>),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        8 => (observable(), meta()).prop_map(|(o, m)| Body::Known(o, m)),
        1 => (Observable::MAX_KNOWN_TAG + 1.., vec(any::<u8>(), 0..24)).prop_map(|(k, b)| Body::Unknown(k, b)),
    ]
}

fn record(id: &str, body: &Body) -> Record {
    match body {
        Body::Known(observable, meta) => Record::from_indicator(&Indicator {
            id: id.to_owned(),
            observable: observable.clone(),
            meta: meta.clone(),
        })
        .expect("generated indicators are valid"),
        Body::Unknown(kind, body) => Record {
            kind: *kind,
            id: id.to_owned(),
            body: body.clone(),
        },
    }
}

fn channel() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z][a-z0-9-]{0,11}", "\\PC{0,8}"]
}

/// A version number: small ones are the common case and take the shortest varints, which is
/// where a non-canonical (overlong) encoding can hide.
fn version() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..300, any::<u64>()]
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (channel(), version(), btree_map(id(), body(), 0..8)).prop_map(|(channel, version, bodies)| {
        let records = bodies.iter().map(|(id, b)| record(id, b)).collect();
        Snapshot::new(&channel, version, records).expect("ids from a map are unique and valid")
    })
}

/// Two snapshots of one channel that share some ids: records only in the old one, only in the
/// new one, in both unchanged, and in both with a new body.
fn snapshot_pair() -> impl Strategy<Value = (Snapshot, Snapshot)> {
    (
        channel(),
        version(),
        version(),
        btree_map(id(), (body(), body(), 0u8..4), 0..10),
    )
        .prop_map(|(channel, v_old, v_new, entries)| {
            let (mut old, mut new) = (Vec::new(), Vec::new());
            for (id, (a, b, fate)) in &entries {
                match fate {
                    0 => old.push(record(id, a)),
                    1 => new.push(record(id, b)),
                    2 => {
                        old.push(record(id, a));
                        new.push(record(id, a));
                    }
                    _ => {
                        old.push(record(id, a));
                        new.push(record(id, b));
                    }
                }
            }
            let old = Snapshot::new(&channel, v_old, old).expect("ids from a map are unique and valid");
            let new = Snapshot::new(&channel, v_new, new).expect("ids from a map are unique and valid");
            (old, new)
        })
}

// ---------------------------------------------------------------------------------------------
// Strategies: signed documents and framing.
// ---------------------------------------------------------------------------------------------

fn public_key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

fn role_spec() -> impl Strategy<Value = RoleSpec> {
    (vec(public_key(), 0..4), any::<u8>(), any::<u64>()).prop_map(|(k, t, l)| RoleSpec::new(k, t, l))
}

fn root() -> impl Strategy<Value = Root> {
    let channel_spec =
        (channel(), role_spec(), role_spec(), tlp()).prop_map(|(name, publisher, timestamp, max_tlp)| {
            ChannelSpec {
                name,
                publisher,
                timestamp,
                max_tlp,
            }
        });
    (
        any::<u64>(),
        any::<i64>(),
        any::<i64>(),
        "\\PC{0,16}",
        role_spec(),
        vec(channel_spec, 0..3),
        prop::option::of(any::<[u8; 32]>()),
    )
        .prop_map(
            |(version, created, expires, org, root, channels, tls_ca_pin)| Root {
                version,
                created,
                expires,
                org,
                root,
                channels,
                tls_ca_pin,
            },
        )
}

fn manifest() -> impl Strategy<Value = Manifest> {
    let delta_ref = (any::<u64>(), any::<[u8; 32]>(), any::<[u8; 32]>(), any::<u64>()).prop_map(
        |(base_version, base_sha256, sha256, length)| DeltaRef {
            base_version,
            base_sha256,
            sha256,
            length,
        },
    );
    (
        channel(),
        any::<u64>(),
        any::<i64>(),
        any::<i64>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        tlp(),
        vec(delta_ref, 0..3),
    )
        .prop_map(
            |(channel, version, created, expires, sha256, length, max_tlp, deltas)| Manifest {
                channel,
                version,
                created,
                expires,
                sha256,
                length,
                max_tlp,
                deltas,
            },
        )
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (
        channel(),
        any::<u64>(),
        any::<i64>(),
        any::<i64>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u64>(),
    )
        .prop_map(
            |(channel, version, created, expires, manifest_version, manifest_sha256, manifest_length)| {
                Timestamp {
                    channel,
                    version,
                    created,
                    expires,
                    manifest_version,
                    manifest_sha256,
                    manifest_length,
                }
            },
        )
}

fn payload_kind() -> impl Strategy<Value = PayloadKind> {
    prop_oneof![
        Just(PayloadKind::Root),
        Just(PayloadKind::Timestamp),
        Just(PayloadKind::Manifest),
    ]
}

fn other_kind(kind: PayloadKind) -> PayloadKind {
    match kind {
        PayloadKind::Root => PayloadKind::Timestamp,
        PayloadKind::Timestamp => PayloadKind::Manifest,
        PayloadKind::Manifest => PayloadKind::Root,
    }
}

/// An organisation name that survives the anchor's line format: printable, one line, and no
/// whitespace at either end (the parser trims values).
fn org() -> impl Strategy<Value = String> {
    "\\PC{0,24}".prop_filter("no surrounding whitespace", |s| s.trim() == s)
}

fn anchor() -> impl Strategy<Value = TrustAnchor> {
    (org(), any::<u64>(), btree_set(public_key(), 1..5)).prop_flat_map(|(org, root_version, keys)| {
        let n = keys.len();
        (1..=n as u8).prop_map(move |threshold| TrustAnchor {
            org: org.clone(),
            root_version,
            threshold,
            // Sorted and without duplicates, as `parse` returns them.
            keys: keys.iter().copied().collect(),
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Damage: random bytes and edits to valid encodings.
// ---------------------------------------------------------------------------------------------

/// Random bytes; half of them start with `magic` and format 1 so that they get past the first
/// checks and into the structure behind them.
fn noise(magic: &'static [u8; 4]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..512),
        vec(any::<u8>(), 0..512).prop_map(move |tail| [&magic[..], &[1], &tail].concat()),
    ]
}

/// One edit to a byte string.
#[derive(Debug, Clone)]
enum Edit {
    /// XOR a byte with a non-zero mask.
    Flip(Index, u8),
    /// Insert a byte.
    Insert(Index, u8),
    /// Delete a byte.
    Delete(Index),
    /// Cut the string short.
    Truncate(Index),
    /// Rewrite a byte below 0x80 as the two bytes `b | 0x80, 0x00`: where it ends a varint,
    /// that is the same number written with one byte too many (the classic non-canonical form).
    Overlong(Index),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        4 => (any::<Index>(), 1u8..).prop_map(|(i, m)| Edit::Flip(i, m)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        2 => any::<Index>().prop_map(Edit::Delete),
        1 => any::<Index>().prop_map(Edit::Truncate),
        2 => any::<Index>().prop_map(Edit::Overlong),
    ];
    vec(edit, 1..4)
}

fn damage(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for e in edits {
        match e {
            Edit::Flip(i, m) if !out.is_empty() => {
                let i = i.index(out.len());
                out[i] ^= m;
            }
            Edit::Insert(i, b) => out.insert(i.index(out.len() + 1), *b),
            Edit::Delete(i) if !out.is_empty() => {
                out.remove(i.index(out.len()));
            }
            Edit::Truncate(i) => out.truncate(i.index(out.len() + 1)),
            Edit::Overlong(i) if !out.is_empty() => {
                let i = i.index(out.len());
                if out[i] < 0x80 {
                    out.splice(i..=i, [out[i] | 0x80, 0x00]);
                }
            }
            _ => {}
        }
    }
    out
}

/// A decoder's value, or `None` after checking that its error renders as a message. Operators
/// read these messages, and rendering one must not panic whatever values damaged input put in
/// it (times, for one, are formatted as dates).
fn said<T>(r: Result<T, Error>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(!e.to_string().is_empty(), "{e:?} renders as an empty message");
            None
        }
    }
}

/// Decodes a snapshot from arbitrary bytes and checks canonicity: anything that decodes
/// re-encodes to exactly the bytes it came from.
fn check_snapshot_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Some(s) = said(Snapshot::decode(bytes, bytes.len())) {
        prop_assert_eq!(s.encode(), bytes);
        prop_assert!(s.records.windows(2).all(|w| w[0].id < w[1].id));
        // Reading the records must not panic either, whatever they hold.
        said(s.indicators());
    }
    Ok(())
}

/// As [`check_snapshot_bytes`], for deltas.
fn check_delta_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Some(d) = said(Delta::decode(bytes, bytes.len())) {
        prop_assert_eq!(d.encode(), bytes);
    }
    Ok(())
}

/// Decodes a document from arbitrary bytes; whatever decodes must survive its own round trip.
fn check_document_bytes<T: Document + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
) -> Result<(), TestCaseError> {
    if let Some(doc) = said(T::decode(bytes)) {
        prop_assert_eq!(T::decode(&doc.encode()).ok(), Some(doc));
    }
    Ok(())
}

fn check_envelope_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    for kind in [PayloadKind::Root, PayloadKind::Timestamp, PayloadKind::Manifest] {
        if let Some(env) = said(Envelope::decode(bytes, kind, bytes.len())) {
            let again = env.encode();
            prop_assert_eq!(Envelope::decode(&again, kind, again.len()).ok(), Some(env));
        }
    }
    Ok(())
}

fn check_set_file_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let limits = Limits::default();
    if let Some(f) = said(SetFile::decode(bytes, &limits)) {
        let again = f.encode();
        prop_assert_eq!(SetFile::decode(&again, &limits).ok(), Some(f));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A small, fixed trust chain for the verification properties.
// ---------------------------------------------------------------------------------------------

const CHANNEL: &str = "default";
const NOW: i64 = 1_000;

/// The three roles' keys, from fixed seeds.
struct Signers {
    root: SigningKey,
    publisher: SigningKey,
    timestamp: SigningKey,
}

fn signers() -> Signers {
    let key =
        |b: u8, role| SigningKey::from_seed([b; 32], role).expect("every 32-byte string is an Ed25519 seed");
    Signers {
        root: key(1, Role::Root),
        publisher: key(2, Role::Publisher),
        timestamp: key(3, Role::Timestamp),
    }
}

impl Signers {
    fn anchor(&self) -> TrustAnchor {
        TrustAnchor {
            org: "Example".into(),
            root_version: 1,
            threshold: 1,
            keys: vec![self.root.public()],
        }
    }

    /// Root version 1, signed by the fixed root key, with one channel.
    fn root_envelope(&self) -> Vec<u8> {
        sign_document(&self.root_doc(1, &self.root), PayloadKind::Root, &[&self.root])
    }

    /// A root of `version` whose root role is `root_key`, with one channel.
    fn root_doc(&self, version: u64, root_key: &SigningKey) -> Root {
        Root {
            version,
            created: 0,
            expires: 10_000_000,
            org: "Example".into(),
            root: RoleSpec::new(vec![root_key.public()], 1, 10_000_000),
            channels: vec![ChannelSpec {
                name: CHANNEL.into(),
                publisher: RoleSpec::new(vec![self.publisher.public()], 1, 1_000_000),
                timestamp: RoleSpec::new(vec![self.timestamp.public()], 1, 100_000),
                max_tlp: Tlp::Red,
            }],
            tls_ca_pin: None,
        }
    }

    /// A set file for `snapshot` (whose version is both the set and the timestamp version),
    /// carrying the full snapshot or, when given, a delta on offer under `deltas`.
    fn publish(
        &self,
        root: &[u8],
        snapshot: &Snapshot,
        deltas: Vec<DeltaRef>,
        delta: Option<&[u8]>,
    ) -> Vec<u8> {
        self.publish_chain(&[(1, root)], snapshot, deltas, delta)
    }

    /// As [`Signers::publish`], carrying a whole root chain.
    fn publish_chain(
        &self,
        roots: &[(u64, &[u8])],
        snapshot: &Snapshot,
        deltas: Vec<DeltaRef>,
        delta: Option<&[u8]>,
    ) -> Vec<u8> {
        let bytes = snapshot.encode();
        let manifest = Manifest {
            channel: CHANNEL.into(),
            version: snapshot.version,
            created: 0,
            expires: 1_000_000,
            sha256: sha256(&bytes),
            length: bytes.len() as u64,
            max_tlp: Tlp::Red,
            deltas,
        };
        let manifest = sign_document(&manifest, PayloadKind::Manifest, &[&self.publisher]);
        let timestamp = Timestamp {
            channel: CHANNEL.into(),
            version: snapshot.version,
            created: 0,
            expires: 100_000,
            manifest_version: snapshot.version,
            manifest_sha256: sha256(&manifest),
            manifest_length: manifest.len() as u64,
        };
        let timestamp = sign_document(&timestamp, PayloadKind::Timestamp, &[&self.timestamp]);
        SetFile {
            channel: CHANNEL,
            roots: roots.to_vec(),
            timestamp: &timestamp,
            manifest: &manifest,
            content: match delta {
                Some(d) => Content::Delta(d),
                None => Content::Full(&bytes),
            },
        }
        .encode()
    }
}

/// Moves a generated snapshot onto the fixed channel with the given version.
fn on_channel(s: &Snapshot, version: u64) -> Snapshot {
    Snapshot {
        channel: CHANNEL.into(),
        version,
        records: s.records.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn record_round_trips_every_observable(ind in indicator()) {
        let rec = Record::from_indicator(&ind).expect("generated indicators are valid");
        prop_assert_eq!(rec.kind, ind.observable.kind_tag());
        prop_assert_eq!(rec.indicator(), Ok(Some(ind.clone())));
        // The same body under any other tag is refused when the tag is known, skipped when not.
        for kind in (0..=Observable::MAX_KNOWN_TAG + 1).filter(|k| *k != rec.kind) {
            let retagged = Record { kind, ..rec.clone() };
            if kind == 0 || kind > Observable::MAX_KNOWN_TAG {
                prop_assert_eq!(retagged.indicator(), Ok(None));
            } else {
                prop_assert!(retagged.indicator().is_err(), "kind {} accepted a {}", kind, ind.observable.kind_name());
            }
        }
    }

    #[test]
    fn ip_net_parse_clears_host_bits_and_round_trips((addr, net) in addr_and_net()) {
        prop_assert!(net.contains(addr), "{net} does not contain {addr}");
        prop_assert!(net.contains(net.addr));
        prop_assert_eq!(IpNet::parse(&net.to_string()), Some(net));
        prop_assert!(Observable::RemoteAddr(net).validate().is_ok());
    }

    #[test]
    fn snapshot_round_trips_and_is_canonical(s in snapshot()) {
        let bytes = s.encode();
        let back = Snapshot::decode(&bytes, bytes.len()).expect("an encoded snapshot decodes");
        prop_assert_eq!(&back, &s);
        prop_assert_eq!(back.encode(), bytes.clone());
        // Every known kind reads back as the indicator that made it; unknown kinds are counted.
        let decoded = back.indicators().expect("generated records are valid");
        let unknown = s.records.iter().filter(|r| r.kind > Observable::MAX_KNOWN_TAG).count();
        prop_assert_eq!(decoded.unknown_kinds, unknown);
        prop_assert_eq!(decoded.indicators.len() + unknown, s.records.len());
        // One byte short of the cap is refused before decoding.
        let too_large = matches!(Snapshot::decode(&bytes, bytes.len() - 1), Err(Error::TooLarge { .. }));
        prop_assert!(too_large);
    }

    #[test]
    fn delta_round_trips_and_rebuilds_the_new_snapshot_exactly((old, new) in snapshot_pair()) {
        let delta = Delta::between(&old, &new);
        let bytes = delta.encode();
        let back = Delta::decode(&bytes, bytes.len()).expect("an encoded delta decodes");
        prop_assert_eq!(&back, &delta);
        prop_assert_eq!(back.encode(), bytes);
        let rebuilt = back.apply(&old).expect("a delta applies to the snapshot it was made from");
        prop_assert_eq!(rebuilt.encode(), new.encode());
        prop_assert_eq!(&rebuilt, &new);
        // Applied to a base of another version it is refused.
        let mut wrong = old.clone();
        wrong.version = old.version.wrapping_add(1);
        prop_assert!(back.apply(&wrong).is_err());
    }

    /// The delta path must accept no snapshot that the full path refuses: whatever a delta
    /// rebuilds decodes as a snapshot, or an agent installs state it cannot load back.
    #[test]
    fn delta_rebuilds_only_snapshots_that_decode(
        (old, _) in snapshot_pair(),
        ids in btree_set(prop_oneof![Just(String::new()), "\\PC{1,4}", Just("x".repeat(MAX_ID + 1))], 0..4),
    ) {
        let delta = Delta {
            channel: old.channel.clone(),
            base_version: old.version,
            version: old.version.wrapping_add(1),
            remove: Vec::new(),
            upsert: ids.into_iter().map(|id| Record { kind: 99, id, body: Vec::new() }).collect(),
        };
        let bytes = delta.encode();
        if let Some(rebuilt) = said(Delta::decode(&bytes, bytes.len())).and_then(|d| said(d.apply(&old))) {
            let again = rebuilt.encode();
            prop_assert!(
                said(Snapshot::decode(&again, again.len())).is_some(),
                "a delta rebuilt a snapshot that does not decode: {:?}",
                rebuilt.records.iter().map(|r| &r.id).collect::<Vec<_>>()
            );
        }
    }

    /// Records out of order or with a repeated id are not canonical; neither is a delta
    /// whose removals or upserts are.
    #[test]
    fn repeated_or_unordered_ids_are_refused(
        s in snapshot().prop_filter("a record to repeat", |s| !s.records.is_empty()),
        at in any::<Index>(),
    ) {
        let i = at.index(s.records.len());
        let mut repeated = s.clone();
        repeated.records.insert(i, s.records[i].clone());
        let bytes = repeated.encode();
        let refused = matches!(Snapshot::decode(&bytes, bytes.len()), Err(Error::NonCanonical { .. }));
        prop_assert!(refused);
        let delta = Delta {
            channel: s.channel.clone(),
            base_version: s.version,
            version: s.version.wrapping_add(1),
            remove: Vec::new(),
            upsert: repeated.records.clone(),
        };
        let bytes = delta.encode();
        prop_assert!(said(Delta::decode(&bytes, bytes.len())).is_none());
        let delta = Delta { remove: repeated.records.iter().map(|r| r.id.clone()).collect(), upsert: Vec::new(), ..delta };
        let bytes = delta.encode();
        prop_assert!(said(Delta::decode(&bytes, bytes.len())).is_none());
        if s.records.len() > 1 {
            let mut swapped = s.clone();
            swapped.records.reverse();
            let bytes = swapped.encode();
            prop_assert!(said(Snapshot::decode(&bytes, bytes.len())).is_none());
        }
    }

    #[test]
    fn root_round_trips(doc in root()) {
        prop_assert_eq!(Root::decode(&doc.encode()), Ok(doc));
    }

    #[test]
    fn manifest_round_trips(doc in manifest()) {
        prop_assert_eq!(Manifest::decode(&doc.encode()), Ok(doc));
    }

    #[test]
    fn timestamp_round_trips(doc in timestamp()) {
        prop_assert_eq!(Timestamp::decode(&doc.encode()), Ok(doc));
    }

    #[test]
    fn envelope_round_trips_and_signatures_verify(
        kind in payload_kind(),
        payload in vec(any::<u8>(), 0..256),
        seeds in vec(any::<[u8; 32]>(), 0..4),
    ) {
        let keys: Vec<SigningKey> = seeds
            .iter()
            .map(|s| SigningKey::from_seed(*s, Role::Publisher).expect("every 32-byte string is a seed"))
            .collect();
        let refs: Vec<&SigningKey> = keys.iter().collect();
        let env = Envelope::sign(kind, &payload, &refs);
        let bytes = env.encode();
        let back = Envelope::decode(&bytes, kind, bytes.len()).expect("an encoded envelope decodes");
        prop_assert_eq!(&back, &env);
        prop_assert_eq!(back.encode(), bytes.clone());
        let message = picket_proto::signing_message(kind, &payload);
        for (s, k) in back.signatures.iter().zip(&keys) {
            prop_assert_eq!(s.key, k.public());
            prop_assert!(s.key.verify(&message, &s.sig));
        }
        prop_assert!(Envelope::decode(&bytes, other_kind(kind), bytes.len()).is_err());
        prop_assert!(Envelope::decode(&bytes, kind, bytes.len() - 1).is_err());
    }

    #[test]
    fn set_file_round_trips(
        channel in channel(),
        roots in btree_map(any::<u64>(), vec(any::<u8>(), 0..64), 0..4),
        timestamp in vec(any::<u8>(), 0..64),
        manifest in vec(any::<u8>(), 0..64),
        delta in any::<bool>(),
        content in vec(any::<u8>(), 0..128),
    ) {
        let file = SetFile {
            channel: &channel,
            roots: roots.iter().map(|(v, b)| (*v, b.as_slice())).collect(),
            timestamp: &timestamp,
            manifest: &manifest,
            content: if delta { Content::Delta(&content) } else { Content::Full(&content) },
        };
        let bytes = file.encode();
        prop_assert_eq!(SetFile::decode(&bytes, &Limits::default()), Ok(file));
    }

    #[test]
    fn trust_anchor_text_round_trips(a in anchor()) {
        prop_assert_eq!(TrustAnchor::parse(&a.to_text()), Ok(a));
    }

    #[test]
    fn trust_anchor_keys_are_sorted_and_deduplicated_on_parse(a in anchor()) {
        let mut shuffled = a.clone();
        shuffled.keys.reverse();
        shuffled.keys.push(a.keys[0]);
        prop_assert_eq!(TrustAnchor::parse(&shuffled.to_text()), Ok(a));
    }

    /// Dates up to year 9999 sort as text exactly as their seconds sort as numbers, which a
    /// wrong month or day boundary breaks; no time at all makes formatting panic.
    #[test]
    fn rfc3339_orders_like_seconds_and_never_panics(
        a in 0i64..=253_402_300_799,
        b in 0i64..=253_402_300_799,
        any_secs in any::<i64>(),
    ) {
        let (ta, tb) = (rfc3339(a), rfc3339(b));
        prop_assert_eq!(ta.len(), 20);
        prop_assert_eq!(a.cmp(&b), ta.cmp(&tb), "{} is {}, {} is {}", a, ta, b, tb);
        prop_assert!(rfc3339(any_secs).ends_with('Z'));
    }

    #[test]
    fn key_file_round_trips(seed in any::<[u8; 32]>(), role in prop_oneof![
        Just(Role::Root), Just(Role::Publisher), Just(Role::Timestamp)
    ]) {
        let key = SigningKey::from_seed(seed, role).expect("every 32-byte string is a seed");
        let back = SigningKey::from_file_text(&key.to_file_text()).expect("a written key file parses");
        prop_assert_eq!(back.public(), key.public());
        prop_assert_eq!(back.role(), role);
    }
}

// ---------------------------------------------------------------------------------------------
// Verification: a full set, then a delta, then stored state. Signing is the slow part, so
// fewer cases.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn update_installs_full_then_delta_and_state_round_trips((a, b) in snapshot_pair()) {
        let s = signers();
        let limits = Limits::default();
        let anchor = s.anchor();
        let root = s.root_envelope();
        let (old, new) = (on_channel(&a, 1), on_channel(&b, 2));

        let file = s.publish(&root, &old, Vec::new(), None);
        let file = SetFile::decode(&file, &limits).expect("a published set file decodes");
        let (first, outcome) = Trusted::update(None, &anchor, &file, NOW, &limits).expect("a valid set verifies");
        prop_assert_eq!(outcome, Outcome::NewVersion);
        prop_assert_eq!(&first.snapshot().to_snapshot(), &old);

        let stored = first.encode();
        let loaded = Trusted::decode_stored(&stored, &limits).expect("stored state loads");
        prop_assert_eq!(loaded.encode(), stored);
        prop_assert_eq!(&loaded.snapshot().to_snapshot(), &old);

        let delta = Delta::between(&old, &new).encode();
        let offer = DeltaRef {
            base_version: 1,
            base_sha256: sha256(&old.encode()),
            sha256: sha256(&delta),
            length: delta.len() as u64,
        };
        let file = s.publish(&root, &new, vec![offer], Some(&delta));
        let file = SetFile::decode(&file, &limits).expect("a published set file decodes");
        let (second, outcome) =
            Trusted::update(Some(&loaded), &anchor, &file, NOW, &limits).expect("a valid delta verifies");
        prop_assert_eq!(outcome, Outcome::NewVersion);
        prop_assert_eq!(&second.snapshot().to_snapshot(), &new);
        // The same file again carries no newer timestamp: a replay, refused.
        let replay = matches!(
            Trusted::update(Some(&second), &anchor, &file, NOW, &limits),
            Err(Error::Rollback { .. })
        );
        prop_assert!(replay);
    }

    /// Each new root is signed by the previous root's key and its own; walking the chain from
    /// the anchor ends at the newest root, whether the collector walks it or an agent does.
    /// Damage to any root either breaks the walk or changes nothing that was signed.
    #[test]
    fn root_rotation_walks_the_chain(
        seeds in vec(any::<[u8; 32]>(), 0..4),
        s in snapshot(),
        damaged in any::<Index>(),
        edits in edits(),
    ) {
        let keys = signers();
        let limits = Limits::default();
        let mut root_keys = vec![signers().root];
        root_keys.extend(
            seeds.iter().map(|s| SigningKey::from_seed(*s, Role::Root).expect("every 32-byte string is a seed")),
        );
        let envelopes: Vec<Vec<u8>> = root_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let by: Vec<&SigningKey> = if i == 0 { vec![k] } else { vec![&root_keys[i - 1], k] };
                sign_document(&keys.root_doc(i as u64 + 1, k), PayloadKind::Root, &by)
            })
            .collect();
        let roots: Vec<(u64, &[u8])> =
            envelopes.iter().enumerate().map(|(i, e)| (i as u64 + 1, e.as_slice())).collect();
        let newest = keys.root_doc(roots.len() as u64, &root_keys[root_keys.len() - 1]);

        let walked = verify_root_chain(&keys.anchor(), &roots).expect("a cross-signed chain verifies");
        prop_assert_eq!(&*walked, &newest);
        let signed = on_channel(&s, 1);
        let file = keys.publish_chain(&roots, &signed, Vec::new(), None);
        let file = SetFile::decode(&file, &limits).expect("a published set file decodes");
        let (t, _) = Trusted::update(None, &keys.anchor(), &file, NOW, &limits).expect("the chain and set verify");
        prop_assert_eq!(&**t.root(), &newest);

        let i = damaged.index(roots.len());
        let broken = damage(roots[i].1, &edits);
        let mut roots = roots.clone();
        roots[i].1 = &broken;
        if let Some(walked) = said(verify_root_chain(&keys.anchor(), &roots)) {
            prop_assert_eq!(&*walked, &newest);
        }
    }

    /// TUF 5.3.4: a new root needs the previous root's threshold and its own. Signed by only
    /// one side, it is refused by both the collector's walk and an agent's update.
    #[test]
    fn root_signed_by_one_side_only_is_refused(
        seed in any::<[u8; 32]>().prop_filter("a new key", |s| *s != [1; 32]),
        by_old in any::<bool>(),
        s in snapshot(),
    ) {
        let keys = signers();
        let limits = Limits::default();
        let new_key = SigningKey::from_seed(seed, Role::Root).expect("every 32-byte string is a seed");
        let by = if by_old { &keys.root } else { &new_key };
        let second = sign_document(&keys.root_doc(2, &new_key), PayloadKind::Root, &[by]);
        let first = keys.root_envelope();
        let roots: Vec<(u64, &[u8])> = vec![(1, &first), (2, &second)];
        prop_assert!(said(verify_root_chain(&keys.anchor(), &roots)).is_none());
        let file = keys.publish_chain(&roots, &on_channel(&s, 1), Vec::new(), None);
        let file = SetFile::decode(&file, &limits).expect("a published set file decodes");
        prop_assert!(said(Trusted::update(None, &keys.anchor(), &file, NOW, &limits)).is_none());
    }

    /// Random damage to a valid set file either fails verification or changes nothing that was
    /// signed: the snapshot installed is the one the publisher signed.
    #[test]
    fn damaged_set_file_never_installs_other_content(s in snapshot(), edits in edits()) {
        let keys = signers();
        let limits = Limits::default();
        let signed = on_channel(&s, 1);
        let bytes = keys.publish(&keys.root_envelope(), &signed, Vec::new(), None);
        let damaged = damage(&bytes, &edits);
        check_set_file_bytes(&damaged)?;
        if let Some(file) = said(SetFile::decode(&damaged, &limits)) {
            if let Some((t, _)) = said(Trusted::update(None, &keys.anchor(), &file, NOW, &limits)) {
                prop_assert_eq!(&t.snapshot().to_snapshot(), &signed);
            }
        }
    }

    /// Random damage to stored state either fails to load or leaves the signed content intact.
    #[test]
    fn damaged_state_never_loads_other_content(s in snapshot(), edits in edits()) {
        let keys = signers();
        let limits = Limits::default();
        let signed = on_channel(&s, 1);
        let bytes = keys.publish(&keys.root_envelope(), &signed, Vec::new(), None);
        let file = SetFile::decode(&bytes, &limits).expect("a published set file decodes");
        let (t, _) = Trusted::update(None, &keys.anchor(), &file, NOW, &limits).expect("a valid set verifies");
        let damaged = damage(&t.encode(), &edits);
        if let Some(loaded) = said(Trusted::decode_stored(&damaged, &limits)) {
            prop_assert_eq!(&loaded.snapshot().to_snapshot(), &signed);
            prop_assert_eq!(&**loaded.manifest(), &**t.manifest());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Robustness: random bytes.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic_the_snapshot_decoder(bytes in noise(b"PKSS")) {
        check_snapshot_bytes(&bytes)?;
    }

    #[test]
    fn random_bytes_never_panic_the_delta_decoder(bytes in noise(b"PKSD")) {
        check_delta_bytes(&bytes)?;
    }

    #[test]
    fn random_bytes_never_panic_the_document_decoders(
        root in noise(b"PKRT"),
        manifest in noise(b"PKMF"),
        timestamp in noise(b"PKTS"),
    ) {
        check_document_bytes::<Root>(&root)?;
        check_document_bytes::<Manifest>(&manifest)?;
        check_document_bytes::<Timestamp>(&timestamp)?;
    }

    #[test]
    fn random_bytes_never_panic_the_envelope_decoder(bytes in noise(b"PKEV")) {
        check_envelope_bytes(&bytes)?;
    }

    #[test]
    fn random_bytes_never_panic_the_set_file_decoder(bytes in noise(b"PKSF")) {
        check_set_file_bytes(&bytes)?;
    }

    #[test]
    fn random_bytes_never_panic_the_state_decoder(bytes in noise(b"PKAS")) {
        said(Trusted::decode_stored(&bytes, &Limits::default()));
    }

    #[test]
    fn random_records_never_panic_the_indicator_decoder(
        kind in prop_oneof![0u16..=Observable::MAX_KNOWN_TAG + 2, any::<u16>()],
        body in vec(any::<u8>(), 0..96),
    ) {
        let rec = Record { kind, id: "x".into(), body };
        match rec.indicator() {
            Ok(Some(ind)) => {
                prop_assert_eq!(ind.observable.kind_tag(), kind);
                prop_assert!(ind.observable.validate().is_ok());
            }
            Ok(None) => prop_assert!(kind == 0 || kind > Observable::MAX_KNOWN_TAG),
            Err(_) => prop_assert!(kind != 0 && kind <= Observable::MAX_KNOWN_TAG),
        }
    }

    #[test]
    fn random_text_never_panics_the_anchor_parser(
        text in prop_oneof![
            "\\PC{0,200}",
            vec(
                prop_oneof![
                    Just("org: x".to_owned()),
                    "root-version: [0-9a-z-]{0,24}",
                    "threshold: [0-9a-z-]{0,4}",
                    "key: (ed25519:)?[0-9a-fA-F]{0,66}",
                    "\\PC{0,16}",
                    Just("# comment".to_owned()),
                ],
                0..8,
            )
            .prop_map(|lines| format!("picket-trust-anchor v1\n{}", lines.join("\n"))),
        ],
    ) {
        if let Some(a) = said(TrustAnchor::parse(&text)) {
            prop_assert!(a.threshold >= 1 && usize::from(a.threshold) <= a.keys.len());
            prop_assert!(a.keys.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn random_text_never_panics_the_key_file_parser(
        text in prop_oneof![
            "\\PC{0,200}",
            vec(
                prop_oneof![
                    "role: [a-z]{0,10}",
                    "seed: [0-9a-fA-F]{0,66}",
                    "public: (ed25519:)?[0-9a-f]{0,66}",
                    "\\PC{0,16}",
                ],
                0..6,
            )
            .prop_map(|lines| format!("picket-private-key v1\n{}", lines.join("\n"))),
        ],
    ) {
        said(SigningKey::from_file_text(&text));
    }
}

// ---------------------------------------------------------------------------------------------
// Robustness: valid encodings with bytes flipped, inserted and deleted.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// A damaged snapshot either fails to decode or is itself canonical: it re-encodes to
    /// exactly the damaged bytes, so no two byte strings decode to one snapshot.
    #[test]
    fn damaged_snapshot_decodes_only_canonically(s in snapshot(), edits in edits()) {
        check_snapshot_bytes(&damage(&s.encode(), &edits))?;
    }

    #[test]
    fn damaged_delta_decodes_only_canonically((old, new) in snapshot_pair(), edits in edits()) {
        let bytes = damage(&Delta::between(&old, &new).encode(), &edits);
        check_delta_bytes(&bytes)?;
        if let Some(d) = said(Delta::decode(&bytes, bytes.len())) {
            // Applying a damaged delta may fail, but must not panic.
            said(d.apply(&old));
        }
    }

    #[test]
    fn damaged_documents_never_panic(
        r in root(),
        m in manifest(),
        t in timestamp(),
        edits in edits(),
    ) {
        check_document_bytes::<Root>(&damage(&r.encode(), &edits))?;
        check_document_bytes::<Manifest>(&damage(&m.encode(), &edits))?;
        check_document_bytes::<Timestamp>(&damage(&t.encode(), &edits))?;
    }

    #[test]
    fn damaged_envelope_never_panics(
        kind in payload_kind(),
        payload in vec(any::<u8>(), 0..128),
        seed in any::<[u8; 32]>(),
        edits in edits(),
    ) {
        let key = SigningKey::from_seed(seed, Role::Publisher).expect("every 32-byte string is a seed");
        let bytes = Envelope::sign(kind, &payload, &[&key]).encode();
        check_envelope_bytes(&damage(&bytes, &edits))?;
    }

    #[test]
    fn damaged_records_never_panic_the_indicator_decoder(ind in indicator(), edits in edits()) {
        let mut rec = Record::from_indicator(&ind).expect("generated indicators are valid");
        rec.body = damage(&rec.body, &edits);
        if let Some(Some(back)) = said(rec.indicator()) {
            prop_assert_eq!(back.observable.kind_tag(), rec.kind);
            prop_assert!(back.observable.validate().is_ok());
        }
    }

    #[test]
    fn damaged_anchor_text_never_panics(a in anchor(), edits in edits()) {
        let bytes = damage(a.to_text().as_bytes(), &edits);
        said(TrustAnchor::parse(&String::from_utf8_lossy(&bytes)));
    }

    #[test]
    fn damaged_key_file_never_panics(seed in any::<[u8; 32]>(), edits in edits()) {
        let key = SigningKey::from_seed(seed, Role::Timestamp).expect("every 32-byte string is a seed");
        let bytes = damage(key.to_file_text().as_bytes(), &edits);
        said(SigningKey::from_file_text(&String::from_utf8_lossy(&bytes)));
    }
}

// ---------------------------------------------------------------------------------------------
// The borrowed snapshot view: it must accept exactly what the owned decoder accepts, address
// every record by its offset, and rebuild a delta's result byte for byte.
// ---------------------------------------------------------------------------------------------

/// Parses `bytes` as a view and checks it against the owned snapshot decoder and the encoder.
fn check_view_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let view = said(SnapshotView::parse(bytes, bytes.len()));
    let owned = said(Snapshot::decode(bytes, bytes.len()));
    prop_assert_eq!(view.is_some(), owned.is_some());
    if let (Some(view), Some(owned)) = (view, owned) {
        prop_assert_eq!(view.channel(), owned.channel.as_str());
        prop_assert_eq!(view.version(), owned.version);
        prop_assert_eq!(view.len(), owned.records.len());
        prop_assert_eq!(view.is_empty(), owned.records.is_empty());
        for (r, o) in view.records().zip(&owned.records) {
            prop_assert_eq!(&r.to_record(), o);
            prop_assert_eq!(view.record_at(r.offset), Ok(r));
            prop_assert_eq!(said(r.indicator()), said(o.indicator()));
        }
        // Anything the view accepts is the one canonical encoding of what it holds.
        prop_assert_eq!(owned.encode(), bytes);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn view_agrees_with_the_owned_decoder(s in snapshot()) {
        check_view_bytes(&s.encode())?;
    }

    #[test]
    fn damaged_view_agrees_with_the_owned_decoder(s in snapshot(), edits in edits()) {
        check_view_bytes(&damage(&s.encode(), &edits))?;
    }

    #[test]
    fn random_bytes_never_panic_the_view(bytes in noise(b"PKSS"), offset in any::<u32>()) {
        check_view_bytes(&bytes)?;
        if let Ok(view) = SnapshotView::parse(&bytes, bytes.len()) {
            // An offset that is not a record's may yield an error or a stray record, not a panic.
            said(view.record_at(offset));
            said(view.record_at(offset % (bytes.len() as u32 + 1)));
        }
    }

    /// Applying a delta to bytes gives exactly the bytes of applying it to the owned snapshot:
    /// the hash an agent checks is the same whichever path it takes.
    #[test]
    fn apply_to_bytes_agrees_with_apply((old, new) in snapshot_pair(), edits in edits(), damaged in any::<bool>()) {
        let base = old.encode();
        let view = SnapshotView::parse(&base, base.len()).expect("an encoded snapshot parses");
        let delta = Delta::between(&old, &new);
        prop_assert_eq!(said(delta.apply_to_bytes(&view)), Some(new.encode()));
        if damaged {
            let bytes = damage(&delta.encode(), &edits);
            if let Some(d) = said(Delta::decode(&bytes, bytes.len())) {
                let owned = said(d.apply(&old)).map(|s| s.encode());
                prop_assert_eq!(said(d.apply_to_bytes(&view)), owned);
            }
        }
    }
}
