//! The few facts Picket reads from an X.509 certificate itself: its validity period, and the
//! Ed25519 public key inside a SubjectPublicKeyInfo. The agent reads its client certificate's
//! validity to renew it at half-life; the collector reads its server certificate's to warn
//! before it expires; both compare a certificate's public key with the key they expect.
//!
//! These are readings, not verification. Whether a certificate is to be trusted is for webpki
//! to decide (rustls does it in every handshake), and the callers that extract a public key
//! have webpki parse the certificate first. What this module reads only decides *when* to act
//! (renew, warn) and *which* key a certificate names, and a certificate it cannot read gives
//! `None`, which every caller treats as "act now" or "refuse": fail closed.
//!
//! Invariant: every reader is total. It checks [`MAX_CERT_LEN`] before it looks at a byte,
//! follows only definite DER lengths that fit inside its input, and never panics, allocates or
//! reads out of bounds, whatever the bytes (the `x509` fuzz target and `proto/tests/x509.rs`
//! hold it to that). No I/O and no clock: callers hand in bytes.

/// The largest certificate read, in bytes. A TLS 1.3 handshake message (which carries the
/// whole chain) is at most 64 KiB in rustls, so no certificate Picket uses on the channel is
/// larger; an Ed25519 certificate the collector issues is a few hundred bytes.
pub const MAX_CERT_LEN: usize = 64 << 10;

/// 9999-12-31T23:59:59Z, the last instant an X.509 time can express (unix seconds).
pub const LAST_TIME: i64 = 253_402_300_799;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410, section 4): the 32 bytes of
/// the key follow it.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT`: the optional version field of a TBSCertificate.
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// Splits one DER element off `input`: `(tag, contents, the bytes after it)`, or `None` when
/// `input` does not start with a whole element. Single-byte tags and definite lengths of at
/// most four bytes only, which is all a certificate uses.
pub fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (
            bytes.iter().fold(0usize, |len, b| (len << 8) | usize::from(*b)),
            rest,
        )
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}

/// A certificate's validity period `(not_before, not_after)` in unix seconds, or `None` when
/// `cert_der` is larger than [`MAX_CERT_LEN`] or does not have the shape RFC 5280 (section
/// 4.1) gives a certificate up to its validity field.
pub fn validity(cert_der: &[u8]) -> Option<(i64, i64)> {
    if cert_der.len() > MAX_CERT_LEN {
        return None;
    }
    let (SEQUENCE, cert, _) = tlv(cert_der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = tlv(rest)?.2;
    }
    // The serial number, the signature algorithm and the issuer come before the validity.
    for expected in [INTEGER, SEQUENCE, SEQUENCE] {
        let (tag, _, after) = tlv(rest)?;
        if tag != expected {
            return None;
        }
        rest = after;
    }
    let (SEQUENCE, validity, _) = tlv(rest)? else {
        return None;
    };
    let (t1, not_before, after) = tlv(validity)?;
    let (t2, not_after, _) = tlv(after)?;
    Some((time(t1, not_before)?, time(t2, not_after)?))
}

/// The SubjectPublicKeyInfo (DER, outer SEQUENCE included) of an Ed25519 public key.
pub fn ed25519_spki(public_key: &[u8; 32]) -> Vec<u8> {
    let mut out = ED25519_SPKI_PREFIX.to_vec();
    out.extend_from_slice(public_key);
    out
}

/// The Ed25519 key of a SubjectPublicKeyInfo (DER, outer SEQUENCE included), or `None` when it
/// holds a key of another kind (or is not an SPKI at all).
pub fn ed25519_key(spki: &[u8]) -> Option<[u8; 32]> {
    spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?.try_into().ok()
}

/// An X.509 time (RFC 5280, section 4.1.2.5) in unix seconds: UTCTime `YYMMDDHHMMSSZ` (years
/// 1950 to 2049) or GeneralizedTime `YYYYMMDDHHMMSSZ`, both in UTC with whole seconds, as
/// RFC 5280 requires of a certificate. Any other form is `None`.
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = text.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |s: &[u8]| s.iter().fold(0i64, |n, b| n * 10 + i64::from(b - b'0'));
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = num(&digits[..2]);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (num(&digits[..4]), &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| num(&rest[i..i + 2]);
    let (month, day, h, m, s) = (field(0), field(2), field(4), field(6), field(8));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(crate::time::days_from_civil(year, month as u32, day as u32) * 86_400 + h * 3_600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x509_times() {
        for (tag, text, want) in [
            (UTC_TIME, &b"700101000000Z"[..], Some(0)),
            (UTC_TIME, b"491231235959Z", Some(2_524_607_999)),
            (UTC_TIME, b"500101000000Z", Some(-631_152_000)),
            (GENERALIZED_TIME, b"20500101000000Z", Some(2_524_608_000)),
            (GENERALIZED_TIME, b"20240229120000Z", Some(1_709_208_000)),
            (GENERALIZED_TIME, b"99991231235959Z", Some(LAST_TIME)),
            (GENERALIZED_TIME, b"20240229120000", None),
            (UTC_TIME, b"20240229120000Z", None),
            (UTC_TIME, b"7001010000a0Z", None),
            (UTC_TIME, b"7001010000Z", None),
            (UTC_TIME, b"700101000000+0100", None),
            (UTC_TIME, b"701301000000Z", None),
            (UTC_TIME, b"700100000000Z", None),
            (UTC_TIME, b"700101240000Z", None),
            (UTC_TIME, b"700101006000Z", None),
            (UTC_TIME, b"700101000061Z", None),
            (SEQUENCE, b"700101000000Z", None),
        ] {
            assert_eq!(time(tag, text), want, "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn truncated_der_has_no_validity() {
        assert_eq!(validity(&[]), None);
        assert_eq!(validity(&[0x30, 0x82, 0xff]), None);
        assert_eq!(validity(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
        assert_eq!(validity(&[0x30, 0x80]), None, "indefinite length");
        assert_eq!(validity(&[0x30, 0x85, 0, 0, 0, 0, 0]), None, "five length bytes");
    }

    #[test]
    fn a_certificate_over_the_cap_is_not_read() {
        // A validity-shaped DER of MAX_CERT_LEN + 1 bytes: the padding sits after the validity.
        let utc = |t: &[u8]| [&[UTC_TIME, t.len() as u8][..], t].concat();
        let period = [utc(b"700101000000Z"), utc(b"700101000001Z")].concat();
        let mut tbs = vec![
            INTEGER,
            1,
            1,
            SEQUENCE,
            0,
            SEQUENCE,
            0,
            SEQUENCE,
            period.len() as u8,
        ];
        tbs.extend_from_slice(&period);
        let wrap = |tag: u8, body: &[u8]| {
            let len = (body.len() as u32).to_be_bytes();
            [&[tag, 0x84][..], &len, body].concat()
        };
        let cert_of = |padding: usize| {
            let tbs = wrap(SEQUENCE, &tbs);
            wrap(SEQUENCE, &[&tbs[..], &vec![0; padding]].concat())
        };
        let small = cert_of(0);
        assert_eq!(validity(&small), Some((0, 1)));
        let at_cap = cert_of(MAX_CERT_LEN - small.len());
        assert_eq!(at_cap.len(), MAX_CERT_LEN);
        assert_eq!(validity(&at_cap), Some((0, 1)));
        assert_eq!(validity(&cert_of(MAX_CERT_LEN - small.len() + 1)), None);
    }

    #[test]
    fn ed25519_keys_round_trip_through_their_spki() {
        let key = [7u8; 32];
        let spki = ed25519_spki(&key);
        assert_eq!(spki.len(), 44);
        assert_eq!(ed25519_key(&spki), Some(key));
        assert_eq!(ed25519_key(&spki[..43]), None);
        assert_eq!(ed25519_key(&[&spki[..], &[0]].concat()), None);
        let mut other = spki.clone();
        other[8] ^= 1; // another algorithm OID
        assert_eq!(ed25519_key(&other), None);
    }
}
