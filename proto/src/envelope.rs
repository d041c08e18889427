//! The signature envelope: a versioned postcard frame holding a payload and its signatures.
//!
//! Signatures cover a domain-separated message (`picket-sig-v1`, the payload kind, the payload),
//! so a timestamp signature can never be replayed as a manifest signature. The payload stays as
//! the exact bytes received: verification runs over them, and only then are they decoded.

use serde::{Deserialize, Serialize};

use crate::error::{check_cap, malformed, Error, Part, Result};
use crate::keys::{PublicKey, SigningKey};

const MAGIC: [u8; 4] = *b"PKEV";
const FORMAT: u8 = 1;

/// What a signed payload is; part of the signed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// A root document.
    Root,
    /// A timestamp document.
    Timestamp,
    /// A set manifest.
    Manifest,
}

impl PayloadKind {
    fn tag(self) -> u8 {
        match self {
            PayloadKind::Root => 1,
            PayloadKind::Timestamp => 2,
            PayloadKind::Manifest => 3,
        }
    }

    fn name(self) -> &'static [u8] {
        match self {
            PayloadKind::Root => b"root",
            PayloadKind::Timestamp => b"timestamp",
            PayloadKind::Manifest => b"manifest",
        }
    }

    pub(crate) fn part(self) -> Part {
        match self {
            PayloadKind::Root => Part::Root,
            PayloadKind::Timestamp => Part::Timestamp,
            PayloadKind::Manifest => Part::Manifest,
        }
    }
}

/// One signature: the signer's public key and the 64 signature bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    /// Who signed.
    pub key: PublicKey,
    /// The Ed25519 signature.
    pub sig: [u8; 64],
}

/// A decoded envelope. The payload borrows the received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// What the payload is.
    pub kind: PayloadKind,
    /// The payload bytes, exactly as received.
    pub payload: &'a [u8],
    /// The signatures, in the order received.
    pub signatures: Vec<Signature>,
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    magic: [u8; 4],
    format: u8,
    kind: u8,
    #[serde(borrow)]
    payload: &'a [u8],
    #[serde(borrow)]
    signatures: Vec<SigWire<'a>>,
}

#[derive(Serialize, Deserialize)]
struct SigWire<'a> {
    #[serde(borrow)]
    key: &'a [u8],
    #[serde(borrow)]
    sig: &'a [u8],
}

/// The message a signature covers.
pub fn signing_message(kind: PayloadKind, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(payload.len() + 32);
    m.extend_from_slice(b"picket-sig-v1\0");
    m.extend_from_slice(kind.name());
    m.push(0);
    m.extend_from_slice(payload);
    m
}

impl<'a> Envelope<'a> {
    /// Decodes an envelope of `expected` kind, refusing anything over `cap` bytes before decoding.
    pub fn decode(bytes: &'a [u8], expected: PayloadKind, cap: usize) -> Result<Envelope<'a>> {
        let part = expected.part();
        check_cap(part, bytes.len(), cap)?;
        let (wire, rest): (Wire<'a>, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| malformed(part, format!("envelope: {e}")))?;
        if !rest.is_empty() {
            return Err(malformed(part, "trailing bytes after the envelope"));
        }
        if wire.magic != MAGIC {
            return Err(malformed(part, "not a Picket envelope"));
        }
        if wire.format != FORMAT {
            return Err(Error::UnsupportedFormat {
                what: Part::Envelope,
                version: wire.format,
            });
        }
        if wire.kind != expected.tag() {
            return Err(Error::Invalid {
                what: part,
                detail: format!("envelope holds payload kind {}, not a {part}", wire.kind),
            });
        }
        let signatures = wire
            .signatures
            .iter()
            .map(|s| {
                let key: [u8; 32] = s
                    .key
                    .try_into()
                    .map_err(|_| malformed(part, "a signature's key is not 32 bytes"))?;
                let sig: [u8; 64] = s
                    .sig
                    .try_into()
                    .map_err(|_| malformed(part, "a signature is not 64 bytes"))?;
                Ok(Signature {
                    key: PublicKey(key),
                    sig,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Envelope {
            kind: expected,
            payload: wire.payload,
            signatures,
        })
    }

    /// Encodes the envelope.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            magic: MAGIC,
            format: FORMAT,
            kind: self.kind.tag(),
            payload: self.payload,
            signatures: self
                .signatures
                .iter()
                .map(|s| SigWire {
                    key: &s.key.0,
                    sig: &s.sig,
                })
                .collect(),
        };
        // Invariant: postcard serialisation into a Vec only fails on a serializer error, and
        // this structure has no fallible field.
        postcard::to_allocvec(&wire).expect("encoding an envelope cannot fail")
    }

    /// Signs `payload` as `kind` with each of `keys`, in order.
    pub fn sign(kind: PayloadKind, payload: &'a [u8], keys: &[&SigningKey]) -> Envelope<'a> {
        let message = signing_message(kind, payload);
        Envelope {
            kind,
            payload,
            signatures: keys
                .iter()
                .map(|k| Signature {
                    key: k.public(),
                    sig: k.sign(&message),
                })
                .collect(),
        }
    }

    /// Adds `key`'s signature (used by `root sign` to gather a threshold one key at a time).
    pub fn add_signature(&mut self, key: &SigningKey) {
        let message = signing_message(self.kind, self.payload);
        self.signatures.retain(|s| s.key != key.public());
        self.signatures.push(Signature {
            key: key.public(),
            sig: key.sign(&message),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Role;

    fn key() -> SigningKey {
        SigningKey::from_seed([7; 32], Role::Publisher).unwrap()
    }

    /// Pins the wire encoding: this test fails when the envelope format changes by accident.
    #[test]
    fn golden_bytes() {
        let k = key();
        let env = Envelope::sign(PayloadKind::Manifest, b"hello", &[&k]);
        let bytes = env.encode();
        let expected = concat!(
            "504b4556", // magic "PKEV"
            "01",       // format
            "03",       // kind: manifest
            "05",
            "68656c6c6f", // payload
            "01",         // one signature
            "20",
            "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c",
        );
        assert!(
            hex::encode(&bytes).starts_with(expected),
            "got {}",
            hex::encode(&bytes)
        );
        assert_eq!(bytes.len(), expected.len() / 2 + 1 + 64);
        let back = Envelope::decode(&bytes, PayloadKind::Manifest, 1 << 16).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn wrong_kind_and_oversize_are_refused() {
        let k = key();
        let bytes = Envelope::sign(PayloadKind::Timestamp, b"x", &[&k]).encode();
        assert!(matches!(
            Envelope::decode(&bytes, PayloadKind::Manifest, 1 << 16),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            Envelope::decode(&bytes, PayloadKind::Timestamp, 10),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn signatures_are_domain_separated() {
        let k = key();
        let env = Envelope::sign(PayloadKind::Timestamp, b"x", &[&k]);
        let s = env.signatures[0];
        assert!(k
            .public()
            .verify(&signing_message(PayloadKind::Timestamp, b"x"), &s.sig));
        assert!(!k
            .public()
            .verify(&signing_message(PayloadKind::Manifest, b"x"), &s.sig));
    }
}
