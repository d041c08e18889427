//! Publishing: compile records into a snapshot, sign a manifest with the deltas on offer, and
//! stamp it fresh. Pure: the records, earlier snapshots, keys and time are arguments; the shell
//! stores the result.

use picket_proto::{
    sha256, sign_document, Delta, DeltaRef, Document, Limits, Manifest, PayloadKind, Record, Role, Root,
    SigningKey, Snapshot, Timestamp, Tlp,
};

use crate::store::StoredTimestamp;
use crate::CollectorError;

/// What to publish.
#[derive(Debug)]
pub struct Input<'a> {
    /// The channel.
    pub channel: &'a str,
    /// The new set version.
    pub version: u64,
    /// The time (unix seconds).
    pub now: i64,
    /// The records, in any order.
    pub records: Vec<Record>,
    /// The highest TLP among them.
    pub max_tlp: Tlp,
    /// Earlier snapshots to offer deltas from: (version, bytes).
    pub previous: &'a [(u64, Vec<u8>)],
    /// Manifest lifetime in seconds.
    pub manifest_lifetime: u64,
    /// The timestamp's version.
    pub timestamp_version: u64,
    /// Timestamp lifetime in seconds.
    pub timestamp_lifetime: u64,
}

/// A signed set version, ready to store.
#[derive(Debug)]
pub struct Output {
    /// The snapshot bytes.
    pub snapshot: Vec<u8>,
    /// The manifest envelope.
    pub manifest: Vec<u8>,
    /// Deltas: (base version, bytes).
    pub deltas: Vec<(u64, Vec<u8>)>,
    /// The timestamp.
    pub timestamp: StoredTimestamp,
}

fn check_cap(root: &Root, role: Role, channel: &str, lifetime: u64) -> Result<(), CollectorError> {
    let spec = root
        .role(role, channel)
        .map_err(CollectorError::proto(format!("root version {}", root.version)))?;
    if lifetime > spec.max_lifetime {
        return Err(CollectorError::Refused(format!(
            "a {role} lifetime of {lifetime} s is beyond the root's cap of {} s; agents would refuse it",
            spec.max_lifetime
        )));
    }
    Ok(())
}

/// Builds and signs a set version.
pub fn publish(
    input: Input<'_>,
    root: &Root,
    publisher: &SigningKey,
    stamper: &SigningKey,
) -> Result<Output, CollectorError> {
    check_cap(root, Role::Publisher, input.channel, input.manifest_lifetime)?;
    let channel = root
        .channel(input.channel)
        .map_err(CollectorError::proto(format!("root version {}", root.version)))?;
    if input.max_tlp > channel.max_tlp {
        return Err(CollectorError::Refused(format!(
            "the set holds {} but the root allows at most {} on channel {}",
            input.max_tlp, channel.max_tlp, input.channel
        )));
    }
    let snapshot = Snapshot::new(input.channel, input.version, input.records)
        .map_err(CollectorError::proto("compiling the snapshot"))?;
    let snapshot_bytes = snapshot.encode();
    let limits = Limits::default();
    let mut deltas = Vec::new();
    let mut refs = Vec::new();
    for (base_version, base_bytes) in input.previous {
        let base = Snapshot::decode(base_bytes, limits.max_snapshot).map_err(CollectorError::proto(
            format!("stored snapshot version {base_version}"),
        ))?;
        let delta = Delta::between(&base, &snapshot).encode();
        if delta.len() > limits.max_delta || delta.len() >= snapshot_bytes.len() {
            // A delta no smaller than the snapshot helps no one.
            continue;
        }
        refs.push(DeltaRef {
            base_version: *base_version,
            base_sha256: sha256(base_bytes),
            sha256: sha256(&delta),
            length: delta.len() as u64,
        });
        deltas.push((*base_version, delta));
    }
    let manifest = Manifest {
        channel: input.channel.to_owned(),
        version: input.version,
        created: input.now,
        expires: input.now.saturating_add(input.manifest_lifetime as i64),
        sha256: sha256(&snapshot_bytes),
        length: snapshot_bytes.len() as u64,
        max_tlp: input.max_tlp,
        deltas: refs,
    };
    let manifest_env = sign_document(&manifest, PayloadKind::Manifest, &[publisher]);
    let timestamp = stamp(
        &manifest_env,
        &manifest,
        input.timestamp_version,
        input.now,
        input.timestamp_lifetime,
        root,
        stamper,
    )?;
    crate::metrics::set_published(input.channel);
    Ok(Output {
        snapshot: snapshot_bytes,
        manifest: manifest_env,
        deltas,
        timestamp,
    })
}

/// Signs a timestamp that makes `manifest` current until `now + lifetime`.
pub fn stamp(
    manifest_env: &[u8],
    manifest: &Manifest,
    version: u64,
    now: i64,
    lifetime: u64,
    root: &Root,
    key: &SigningKey,
) -> Result<StoredTimestamp, CollectorError> {
    check_cap(root, Role::Timestamp, &manifest.channel, lifetime)?;
    let ts = Timestamp {
        channel: manifest.channel.clone(),
        version,
        created: now,
        expires: now.saturating_add(lifetime as i64),
        manifest_version: manifest.version,
        manifest_sha256: sha256(manifest_env),
        manifest_length: manifest_env.len() as u64,
    };
    Ok(StoredTimestamp {
        version,
        created: ts.created,
        expires: ts.expires,
        envelope: sign_document(&ts, PayloadKind::Timestamp, &[key]),
    })
}

/// Decodes a stored manifest envelope (written by this collector) to read its fields.
pub fn read_manifest(envelope: &[u8]) -> Result<Manifest, CollectorError> {
    let env = picket_proto::Envelope::decode(envelope, PayloadKind::Manifest, Manifest::CAP + 16 * 1024)
        .map_err(CollectorError::proto("stored manifest"))?;
    Manifest::decode(env.payload).map_err(CollectorError::proto("stored manifest"))
}
