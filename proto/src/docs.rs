//! The signed documents: root, manifest and timestamp (TUF's roles, applied to indicator sets).
//!
//! Each is postcard-encoded with a magic and a format version in front, and carried inside a
//! signature [`Envelope`](crate::Envelope). Field order is the schema: never reorder, only
//! append in a new format version.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{check_cap, invalid, malformed, Error, Part, Result, Role};
use crate::indicator::Tlp;
use crate::keys::PublicKey;

const FORMAT: u8 = 1;

/// The keys allowed for a role, how many must sign, and the longest lifetime a document signed
/// for the role may have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSpec {
    /// Allowed keys, sorted, without duplicates.
    pub keys: Vec<PublicKey>,
    /// How many distinct keys must sign.
    pub threshold: u8,
    /// The cap on `expires - created`, in seconds.
    pub max_lifetime: u64,
}

impl RoleSpec {
    /// A role with these keys (sorted and deduplicated here).
    pub fn new(mut keys: Vec<PublicKey>, threshold: u8, max_lifetime: u64) -> RoleSpec {
        keys.sort();
        keys.dedup();
        RoleSpec {
            keys,
            threshold,
            max_lifetime,
        }
    }

    fn validate(&self, what: &str) -> Result<()> {
        if self.threshold == 0 {
            return Err(invalid(Part::Root, format!("{what}: threshold 0")));
        }
        if usize::from(self.threshold) > self.keys.len() {
            return Err(invalid(
                Part::Root,
                format!(
                    "{what}: threshold {} with only {} key(s)",
                    self.threshold,
                    self.keys.len()
                ),
            ));
        }
        if self.keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(
                Part::Root,
                format!("{what}: keys not sorted or duplicated"),
            ));
        }
        if self.max_lifetime == 0 {
            return Err(invalid(Part::Root, format!("{what}: lifetime cap 0")));
        }
        Ok(())
    }

    /// Whether `key` is one of this role's keys.
    pub fn allows(&self, key: &PublicKey) -> bool {
        self.keys.binary_search(key).is_ok()
    }
}

/// One channel: who may publish on it and stamp its freshness, and its TLP ceiling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSpec {
    /// The channel name.
    pub name: String,
    /// The publisher role (signs manifests).
    pub publisher: RoleSpec,
    /// The timestamp role (signs freshness).
    pub timestamp: RoleSpec,
    /// The highest TLP a set on this channel may hold.
    pub max_tlp: Tlp,
}

/// The root document: the trust an agent starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// Strictly increasing; agents install roots one version at a time.
    pub version: u64,
    /// When it was made (unix seconds).
    pub created: i64,
    /// When it stops being trusted (unix seconds).
    pub expires: i64,
    /// The organisation it belongs to.
    pub org: String,
    /// The root role: who signs the next root.
    pub root: RoleSpec,
    /// The channels, sorted by name.
    pub channels: Vec<ChannelSpec>,
    /// The SHA-256 of the collector TLS CA's public key, so that rotating the CA is a signed
    /// event.
    pub tls_ca_pin: Option<[u8; 32]>,
}

impl Root {
    /// The channel called `name`.
    pub fn channel(&self, name: &str) -> Result<&ChannelSpec> {
        self.channels
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::UnknownChannel {
                channel: name.to_owned(),
            })
    }

    /// The role spec for `role` on `channel` (the root role ignores the channel).
    pub fn role(&self, role: Role, channel: &str) -> Result<&RoleSpec> {
        match role {
            Role::Root => Ok(&self.root),
            Role::Publisher => Ok(&self.channel(channel)?.publisher),
            Role::Timestamp => Ok(&self.channel(channel)?.timestamp),
        }
    }

    /// Whether `key` appears anywhere in this root, under any role or channel.
    pub fn knows(&self, key: &PublicKey) -> bool {
        self.root.allows(key)
            || self
                .channels
                .iter()
                .any(|c| c.publisher.allows(key) || c.timestamp.allows(key))
    }

    /// Checks the rules serde cannot: thresholds, sorted keys, unique channels, lifetime cap.
    pub fn validate(&self) -> Result<()> {
        if self.org.chars().any(char::is_control) || self.org.trim() != self.org {
            return Err(invalid(
                Part::Root,
                "org holds a control character or surrounding spaces",
            ));
        }
        self.root.validate("root role")?;
        let mut names = BTreeSet::new();
        for c in &self.channels {
            if c.name.is_empty() || c.name.len() > 64 {
                return Err(invalid(Part::Root, "a channel name is 1 to 64 bytes"));
            }
            if !names.insert(&c.name) {
                return Err(invalid(Part::Root, format!("channel {} defined twice", c.name)));
            }
            c.publisher.validate(&format!("channel {} publisher", c.name))?;
            c.timestamp.validate(&format!("channel {} timestamp", c.name))?;
        }
        check_lifetime(Part::Root, Role::Root, self.created, self.expires, &self.root)
    }
}

/// A delta on offer: from which snapshot, and what its bytes hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaRef {
    /// The version it applies to.
    pub base_version: u64,
    /// The SHA-256 of the base snapshot's bytes.
    pub base_sha256: [u8; 32],
    /// The SHA-256 of the delta's own bytes.
    pub sha256: [u8; 32],
    /// The length of the delta's bytes.
    pub length: u64,
}

/// The publisher's statement about one set version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The channel.
    pub channel: String,
    /// The set version, strictly increasing.
    pub version: u64,
    /// When it was made (unix seconds).
    pub created: i64,
    /// When it stops being valid (unix seconds).
    pub expires: i64,
    /// The SHA-256 of the snapshot bytes.
    pub sha256: [u8; 32],
    /// The length of the snapshot bytes.
    pub length: u64,
    /// The highest TLP of any indicator in the set.
    pub max_tlp: Tlp,
    /// The deltas on offer that lead to this version.
    pub deltas: Vec<DeltaRef>,
}

/// The timestamp role's statement that a manifest is current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    /// The channel.
    pub channel: String,
    /// The timestamp's own version, strictly increasing; refreshing freshness bumps only this.
    pub version: u64,
    /// When it was made (unix seconds).
    pub created: i64,
    /// When it stops being valid: short, so a withheld update is noticed.
    pub expires: i64,
    /// The set version of the current manifest.
    pub manifest_version: u64,
    /// The SHA-256 of the current manifest's envelope bytes.
    pub manifest_sha256: [u8; 32],
    /// The length of the current manifest's envelope bytes.
    pub manifest_length: u64,
}

/// Encoding shared by the three documents: a magic, the format version, the fields.
pub trait Document: Serialize + DeserializeOwned {
    /// The four magic bytes.
    const MAGIC: [u8; 4];
    /// Which part this is, for errors.
    const PART: Part;
    /// The cap on the encoded size.
    const CAP: usize;

    /// Encodes the document.
    fn encode(&self) -> Vec<u8> {
        // Invariant: these documents hold only strings, integers and fixed arrays.
        let mut out = postcard::to_allocvec(&(Self::MAGIC, FORMAT)).expect("encoding cannot fail");
        out.extend(postcard::to_allocvec(self).expect("encoding a document cannot fail"));
        out
    }

    /// Decodes the document, refusing anything over the cap before decoding.
    fn decode(bytes: &[u8]) -> Result<Self> {
        check_cap(Self::PART, bytes.len(), Self::CAP)?;
        let ((magic, format), rest): (([u8; 4], u8), &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| malformed(Self::PART, e))?;
        if magic != Self::MAGIC {
            return Err(malformed(Self::PART, format!("not a Picket {}", Self::PART)));
        }
        if format != FORMAT {
            return Err(Error::UnsupportedFormat {
                what: Self::PART,
                version: format,
            });
        }
        let (doc, rest): (Self, &[u8]) =
            postcard::take_from_bytes(rest).map_err(|e| malformed(Self::PART, e))?;
        if !rest.is_empty() {
            return Err(malformed(Self::PART, "trailing bytes"));
        }
        Ok(doc)
    }
}

impl Document for Root {
    const MAGIC: [u8; 4] = *b"PKRT";
    const PART: Part = Part::Root;
    const CAP: usize = 64 * 1024;
}

impl Document for Manifest {
    const MAGIC: [u8; 4] = *b"PKMF";
    const PART: Part = Part::Manifest;
    const CAP: usize = 64 * 1024;
}

impl Document for Timestamp {
    const MAGIC: [u8; 4] = *b"PKTS";
    const PART: Part = Part::Timestamp;
    const CAP: usize = 4 * 1024;
}

/// Checks `expires - created` against the role's cap, and that it is positive.
pub(crate) fn check_lifetime(
    what: Part,
    role: Role,
    created: i64,
    expires: i64,
    spec: &RoleSpec,
) -> Result<()> {
    let lifetime = expires.saturating_sub(created);
    if lifetime <= 0 {
        return Err(invalid(
            what,
            format!("expires ({expires}) is not after created ({created})"),
        ));
    }
    if lifetime as u64 > spec.max_lifetime {
        return Err(Error::LifetimeExceeded {
            what,
            role,
            lifetime,
            cap: spec.max_lifetime,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_timestamp() {
        let ts = Timestamp {
            channel: "c".into(),
            version: 2,
            created: 100,
            expires: 200,
            manifest_version: 7,
            manifest_sha256: [0xab; 32],
            manifest_length: 300,
        };
        let expected = format!(
            "504b545301{}{}",
            "0163" /* channel */.to_owned() + "02" /* version */ + "c801" /* created 100 zigzag */
                + "9003" /* expires 200 zigzag */ + "07",
            "ab".repeat(32) + "ac02" /* 300 */
        );
        assert_eq!(hex::encode(ts.encode()), expected);
        assert_eq!(Timestamp::decode(&ts.encode()).unwrap(), ts);
    }

    #[test]
    fn trailing_bytes_and_wrong_magic_are_refused() {
        let ts = Timestamp {
            channel: "c".into(),
            version: 2,
            created: 100,
            expires: 200,
            manifest_version: 7,
            manifest_sha256: [0; 32],
            manifest_length: 3,
        };
        let mut b = ts.encode();
        b.push(0);
        assert!(Timestamp::decode(&b).is_err());
        assert!(Manifest::decode(&ts.encode()).is_err());
    }
}
