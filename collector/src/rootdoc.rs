//! Root documents: the first one `init` makes, and the rotations the offline `root` commands
//! make. Pure: keys and the time are arguments.

use picket_proto::{
    sign_document, ChannelSpec, Envelope, PayloadKind, PublicKey, RoleSpec, Root, SigningKey, Tlp,
};

use crate::CollectorError;

const DAY: u64 = 86_400;
/// How long a new root is valid.
pub const ROOT_LIFETIME: u64 = 365 * DAY;
/// The cap a root puts on its own successors' lifetime.
pub const ROOT_CAP: u64 = 2 * 365 * DAY;
/// The cap on a manifest's lifetime.
pub const PUBLISHER_CAP: u64 = 180 * DAY;
/// The cap on a timestamp's lifetime.
pub const TIMESTAMP_CAP: u64 = 30 * DAY;

/// The first root: version 1, one channel (`default`) with one publisher and one timestamp key.
pub fn initial(
    org: &str,
    now: i64,
    root_keys: &[PublicKey],
    publisher: PublicKey,
    timestamp: PublicKey,
) -> Root {
    Root {
        version: 1,
        created: now,
        expires: now + ROOT_LIFETIME as i64,
        org: org.to_owned(),
        root: RoleSpec::new(root_keys.to_vec(), 1, ROOT_CAP),
        channels: vec![ChannelSpec {
            name: "default".into(),
            publisher: RoleSpec::new(vec![publisher], 1, PUBLISHER_CAP),
            timestamp: RoleSpec::new(vec![timestamp], 1, TIMESTAMP_CAP),
            max_tlp: Tlp::Amber,
        }],
        tls_ca_pin: None,
    }
}

/// What a rotation changes. Anything left `None` or empty is carried over.
#[derive(Debug, Clone, Default)]
pub struct Rotation {
    /// Root keys to add.
    pub add_root_keys: Vec<PublicKey>,
    /// Root keys to remove.
    pub remove_root_keys: Vec<PublicKey>,
    /// The new root threshold.
    pub threshold: Option<u8>,
    /// The channel whose online keys change.
    pub channel: String,
    /// New publisher keys for `channel` (replacing the old ones).
    pub publisher: Vec<PublicKey>,
    /// New timestamp keys for `channel` (replacing the old ones).
    pub timestamp: Vec<PublicKey>,
    /// The new root's lifetime in seconds.
    pub lifetime: Option<u64>,
}

/// The next root: version + 1, created now, with the rotation applied and checked.
pub fn rotate(current: &Root, r: &Rotation, now: i64) -> Result<Root, CollectorError> {
    let mut next = current.clone();
    next.version = current
        .version
        .checked_add(1)
        .ok_or_else(|| CollectorError::Refused("root version overflow".into()))?;
    next.created = now;
    let lifetime = r.lifetime.unwrap_or(ROOT_LIFETIME);
    next.expires = now.saturating_add(lifetime as i64);
    let mut keys: Vec<PublicKey> = current
        .root
        .keys
        .iter()
        .filter(|k| !r.remove_root_keys.contains(k))
        .copied()
        .collect();
    keys.extend(&r.add_root_keys);
    next.root = RoleSpec::new(
        keys,
        r.threshold.unwrap_or(current.root.threshold),
        current.root.max_lifetime,
    );
    if !r.publisher.is_empty() || !r.timestamp.is_empty() {
        let ch = next
            .channels
            .iter_mut()
            .find(|c| c.name == r.channel)
            .ok_or_else(|| CollectorError::Refused(format!("the root has no channel {:?}", r.channel)))?;
        if !r.publisher.is_empty() {
            ch.publisher = RoleSpec::new(
                r.publisher.clone(),
                ch.publisher.threshold,
                ch.publisher.max_lifetime,
            );
        }
        if !r.timestamp.is_empty() {
            ch.timestamp = RoleSpec::new(
                r.timestamp.clone(),
                ch.timestamp.threshold,
                ch.timestamp.max_lifetime,
            );
        }
    }
    next.validate()
        .map_err(CollectorError::proto(format!("root version {}", next.version)))?;
    Ok(next)
}

/// Signs a root document with `keys`.
pub fn sign(root: &Root, keys: &[&SigningKey]) -> Vec<u8> {
    sign_document(root, PayloadKind::Root, keys)
}

/// Adds `key`'s signature to a root envelope (for gathering a threshold one holder at a time).
pub fn add_signature(envelope: &[u8], key: &SigningKey) -> Result<Vec<u8>, CollectorError> {
    let mut env = Envelope::decode(envelope, PayloadKind::Root, 128 * 1024)
        .map_err(CollectorError::proto("root envelope"))?;
    env.add_signature(key);
    Ok(env.encode())
}

/// Decodes a root envelope without verifying it (for `root show` and for building the next
/// version on the offline machine, where the operator vouches for the input).
pub fn read_unverified(envelope: &[u8]) -> Result<(Root, Vec<PublicKey>), CollectorError> {
    use picket_proto::Document;
    let env = Envelope::decode(envelope, PayloadKind::Root, 128 * 1024)
        .map_err(CollectorError::proto("root envelope"))?;
    let root = Root::decode(env.payload).map_err(CollectorError::proto("root document"))?;
    Ok((root, env.signatures.iter().map(|s| s.key).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::{verify_root_chain, Role, TrustAnchor};

    #[test]
    fn rotation_is_accepted_only_with_both_thresholds() {
        let old = SigningKey::generate(Role::Root).unwrap();
        let new = SigningKey::generate(Role::Root).unwrap();
        let p = SigningKey::generate(Role::Publisher).unwrap().public();
        let t = SigningKey::generate(Role::Timestamp).unwrap().public();
        let r1 = initial("Org", 1000, &[old.public()], p, t);
        let e1 = sign(&r1, &[&old]);
        let r2 = rotate(
            &r1,
            &Rotation {
                add_root_keys: vec![new.public()],
                remove_root_keys: vec![old.public()],
                channel: "default".into(),
                ..Rotation::default()
            },
            2000,
        )
        .unwrap();
        let anchor = TrustAnchor {
            org: "Org".into(),
            root_version: 1,
            threshold: 1,
            keys: vec![old.public()],
        };
        for (signers, ok) in [(vec![&old], false), (vec![&new], false), (vec![&old, &new], true)] {
            let e2 = sign(&r2, &signers);
            let got = verify_root_chain(&anchor, &[(1, &e1), (2, &e2)]);
            assert_eq!(got.is_ok(), ok, "signed by {} key(s): {got:?}", signers.len());
        }
        // Gathering the signatures one holder at a time works too.
        let e2 = add_signature(&sign(&r2, &[&old]), &new).unwrap();
        assert_eq!(
            verify_root_chain(&anchor, &[(1, &e1), (2, &e2)]).unwrap().version,
            2
        );
    }
}
