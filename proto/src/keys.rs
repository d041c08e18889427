//! Ed25519 keys, with ring doing the cryptography.
//!
//! A [`PublicKey`] is the raw 32 bytes; its [`KeyId`] is the SHA-256 of those bytes, so two key
//! ids are equal exactly when the keys are. Private keys are kept as their 32-byte seed (RFC 8032
//! section 5.1.5) and written to disk in a small text form that names the role, so that `serve`
//! can recognise a root private key it must not be able to read.

use std::fmt;

use ring::rand::SecureRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::error::{malformed, Error, Part, Result, Role};

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The key's id: SHA-256 over the public key bytes.
    pub fn id(&self) -> KeyId {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        let mut id = [0u8; 32];
        id.copy_from_slice(digest.as_ref());
        KeyId(id)
    }

    /// Checks `sig` over `message`. ring rejects non-canonical signatures (S ≥ L), so a
    /// signature cannot be altered into a second valid one.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(message, sig)
            .is_ok()
    }

    /// Parses the `ed25519:<64 hex digits>` form.
    pub fn parse(text: &str) -> Result<PublicKey> {
        let hex_part = text
            .trim()
            .strip_prefix("ed25519:")
            .ok_or_else(|| malformed(Part::Key, "a public key is written ed25519:<64 hex digits>"))?;
        let bytes = hex::decode(hex_part).map_err(|e| malformed(Part::Key, e))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| malformed(Part::Key, "an Ed25519 public key is 32 bytes"))?;
        Ok(PublicKey(arr))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

/// The SHA-256 of a public key. Displayed as its first 8 bytes in hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 32]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// An Ed25519 private key, kept as its seed. The seed never appears in `Debug` output.
pub struct SigningKey {
    seed: [u8; 32],
    pair: Ed25519KeyPair,
    role: Role,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({} {})", self.role, self.public().id())
    }
}

const KEY_FILE_HEADER: &str = "picket-private-key v1";

impl SigningKey {
    /// A new random key for `role`.
    pub fn generate(role: Role) -> Result<SigningKey> {
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| malformed(Part::Key, "the system random generator failed"))?;
        SigningKey::from_seed(seed, role)
    }

    /// The key with this RFC 8032 seed.
    pub fn from_seed(seed: [u8; 32], role: Role) -> Result<SigningKey> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| malformed(Part::Key, "not an Ed25519 seed"))?;
        Ok(SigningKey { seed, pair, role })
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(pk)
    }

    /// The role this key was made for (written in its key file).
    pub fn role(&self) -> Role {
        self.role
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut sig = [0u8; 64];
        sig.copy_from_slice(self.pair.sign(message).as_ref());
        sig
    }

    /// The key file text: a header, the role, the public key (for people) and the seed.
    pub fn to_file_text(&self) -> String {
        format!(
            "{KEY_FILE_HEADER}\nrole: {}\npublic: {}\nseed: {}\n",
            self.role,
            self.public(),
            hex::encode(self.seed)
        )
    }

    /// Parses a key file written by [`SigningKey::to_file_text`].
    pub fn from_file_text(text: &str) -> Result<SigningKey> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(KEY_FILE_HEADER) {
            return Err(malformed(Part::Key, "not a Picket private key file"));
        }
        let mut role = None;
        let mut seed = None;
        let mut public = None;
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k.trim() {
                "role" => role = Some(parse_role(v.trim())?),
                "seed" => {
                    let bytes = hex::decode(v.trim()).map_err(|e| malformed(Part::Key, e))?;
                    seed = Some(
                        <[u8; 32]>::try_from(bytes.as_slice())
                            .map_err(|_| malformed(Part::Key, "a seed is 32 bytes"))?,
                    );
                }
                "public" => public = Some(PublicKey::parse(v.trim_start())?),
                _ => {}
            }
        }
        let key = SigningKey::from_seed(
            seed.ok_or_else(|| malformed(Part::Key, "no seed line"))?,
            role.ok_or_else(|| malformed(Part::Key, "no role line"))?,
        )?;
        if let Some(public) = public {
            if public != key.public() {
                return Err(malformed(Part::Key, "the public line does not match the seed"));
            }
        }
        Ok(key)
    }

    /// Whether `text` looks like a root private key file, without parsing it fully. `serve`
    /// uses this to refuse to run where a root key is readable.
    pub fn text_is_root_key(text: &str) -> bool {
        text.starts_with(KEY_FILE_HEADER) && text.lines().any(|l| l.trim() == "role: root")
    }
}

fn parse_role(s: &str) -> Result<Role> {
    match s {
        "root" => Ok(Role::Root),
        "publisher" => Ok(Role::Publisher),
        "timestamp" => Ok(Role::Timestamp),
        other => Err(Error::Malformed {
            what: Part::Key,
            detail: format!("unknown role {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 section 7.1 test vectors 1, 2, 3 and the 1023-byte "TEST 1024".
    #[test]
    fn rfc8032_vectors() {
        struct V {
            seed: &'static str,
            public: &'static str,
            msg: &'static str,
            sig: &'static str,
        }
        let vectors = [
            V {
                seed: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                public: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                msg: "",
                sig: "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            },
            V {
                seed: "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                public: "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                msg: "72",
                sig: "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            },
            V {
                seed: "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
                public: "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
                msg: "af82",
                sig: "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
            },
            V {
                seed: "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
                public: "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
                msg: "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
                sig: "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
            },
        ];
        for v in vectors {
            let seed: [u8; 32] = hex::decode(v.seed).unwrap().try_into().unwrap();
            let key = SigningKey::from_seed(seed, Role::Publisher).unwrap();
            assert_eq!(hex::encode(key.public().0), v.public);
            let msg = hex::decode(v.msg).unwrap();
            let sig = key.sign(&msg);
            assert_eq!(hex::encode(sig), v.sig, "signature for message {:?}", v.msg);
            assert!(key.public().verify(&msg, &sig));
            let mut flipped = sig;
            flipped[10] ^= 1;
            assert!(!key.public().verify(&msg, &flipped));
            assert!(!key.public().verify(b"other", &sig));
        }
    }

    #[test]
    fn key_file_round_trip_and_root_detection() {
        let key = SigningKey::generate(Role::Root).unwrap();
        let text = key.to_file_text();
        assert!(SigningKey::text_is_root_key(&text));
        let back = SigningKey::from_file_text(&text).unwrap();
        assert_eq!(back.public(), key.public());
        assert_eq!(back.role(), Role::Root);
        let online = SigningKey::generate(Role::Publisher).unwrap().to_file_text();
        assert!(!SigningKey::text_is_root_key(&online));
        assert!(!format!("{key:?}").contains(&hex::encode(key.seed)));
    }

    #[test]
    fn key_file_with_mismatched_public_line_is_refused() {
        let a = SigningKey::generate(Role::Publisher).unwrap();
        let b = SigningKey::generate(Role::Publisher).unwrap();
        let text = a
            .to_file_text()
            .replace(&a.public().to_string(), &b.public().to_string());
        assert!(SigningKey::from_file_text(&text).is_err());
    }
}
