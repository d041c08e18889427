//! Enrolment tokens: `pk1-<id>-<secret>-<pin>`.
//!
//! - `id`: 8 random bytes in hex, the public handle (`token revoke ID`, logs);
//! - `secret`: 16 random bytes (128 bits) in hex; the collector stores only its SHA-256;
//! - `pin`: the SHA-256 of the collector CA's SubjectPublicKeyInfo in hex, as kubeadm's
//!   discovery hash: an agent enrolling without `--ca` accepts only a server certificate that
//!   chains to a CA with this key, so a man in the middle cannot collect the secret.
//!
//! A token grants enrolment and nothing else. Its `Debug` form never shows the secret.

use std::fmt;

/// The prefix naming the token format.
pub const TOKEN_PREFIX: &str = "pk1";
/// Bytes of randomness in a token id.
pub const TOKEN_ID_BYTES: usize = 8;
/// Bytes of randomness in a token secret (128 bits).
pub const TOKEN_SECRET_BYTES: usize = 16;

/// A parsed enrolment token.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollToken {
    /// The public id (hex).
    pub id: String,
    /// The secret.
    pub secret: [u8; TOKEN_SECRET_BYTES],
    /// SHA-256 of the collector CA's SubjectPublicKeyInfo (DER).
    pub ca_pin: [u8; 32],
}

impl fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("ca_pin", &hex::encode(self.ca_pin))
            .finish()
    }
}

impl EnrollToken {
    /// The token's text, as `token create` prints it.
    pub fn encode(&self) -> String {
        format!(
            "{TOKEN_PREFIX}-{}-{}-{}",
            self.id,
            hex::encode(self.secret),
            hex::encode(self.ca_pin)
        )
    }

    /// Parses token text (surrounding white space ignored). The error says what is wrong with
    /// the shape and never echoes the text, which may be a real secret with a typo.
    pub fn parse(text: &str) -> Result<EnrollToken, String> {
        let t = text.trim();
        let parts: Vec<&str> = t.split('-').collect();
        if parts.len() != 4 || parts[0] != TOKEN_PREFIX {
            return Err(format!(
                "not an enrolment token: expected {TOKEN_PREFIX}-<id>-<secret>-<ca pin> as `picket-collector token create` prints it"
            ));
        }
        let hexed = |what: &str, s: &str, n: usize| -> Result<Vec<u8>, String> {
            match hex::decode(s) {
                Ok(b) if b.len() == n => Ok(b),
                _ => Err(format!("the token's {what} is not {} hex digits", n * 2)),
            }
        };
        let id = hexed("id", parts[1], TOKEN_ID_BYTES)?;
        let secret = hexed("secret", parts[2], TOKEN_SECRET_BYTES)?;
        let pin = hexed("CA pin", parts[3], 32)?;
        let mut s = [0u8; TOKEN_SECRET_BYTES];
        s.copy_from_slice(&secret);
        let mut p = [0u8; 32];
        p.copy_from_slice(&pin);
        Ok(EnrollToken {
            id: hex::encode(id),
            secret: s,
            ca_pin: p,
        })
    }

    /// SHA-256 of the secret: what the collector stores and compares (in constant time).
    pub fn secret_hash(secret: &[u8]) -> [u8; 32] {
        crate::verify::sha256(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_redacted_debug() {
        let t = EnrollToken {
            id: "0011223344556677".into(),
            secret: [0xab; 16],
            ca_pin: [0xcd; 32],
        };
        let text = t.encode();
        assert!(text.starts_with("pk1-0011223344556677-abab"));
        assert_eq!(EnrollToken::parse(&format!("  {text}\n")).unwrap(), t);
        assert!(!format!("{t:?}").contains("abab"));
    }

    #[test]
    fn bad_shapes_are_named_without_echoing() {
        for (text, needle) in [
            ("hello", "not an enrolment token"),
            ("pk1-00-abab-cdcd", "id is not 16 hex digits"),
            ("pk1-0011223344556677-zz-cdcd", "secret is not 32 hex digits"),
        ] {
            let e = EnrollToken::parse(text).unwrap_err();
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains("zz"));
        }
    }
}
