//! The few certificate facts the agent reads itself: the SHA-256 of a certificate's public key
//! (the CA pin an enrolment token carries), the validity period of its own client certificate
//! (to renew it at half-life), and PEM text for the files it writes.
//!
//! Pure functions over bytes. Parsing a certificate for trust is rustls's and webpki's job; the
//! validity reader here only decides *when to ask* for a new certificate, so a certificate it
//! cannot read makes the agent renew early, never trust anything.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The SubjectPublicKeyInfo (DER, outer SEQUENCE included) of a certificate.
pub fn spki(cert_der: &[u8]) -> Result<Vec<u8>, String> {
    let der = CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&der).map_err(|e| format!("not a certificate: {e}"))?;
    Ok(ee.subject_public_key_info().as_ref().to_vec())
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo: the value an enrolment token pins.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32], String> {
    Ok(picket_proto::sha256(&spki(cert_der)?))
}

/// The SubjectPublicKeyInfo DER of an Ed25519 public key.
pub fn ed25519_spki(public_key: &[u8; 32]) -> Vec<u8> {
    let mut out = ED25519_SPKI_PREFIX.to_vec();
    out.extend_from_slice(public_key);
    out
}

/// Reads a certificate from PEM text (the first `CERTIFICATE` block) or raw DER.
pub fn parse_cert(bytes: &[u8]) -> Result<CertificateDer<'static>, String> {
    if bytes.windows(10).any(|w| w == b"-----BEGIN") {
        return CertificateDer::from_pem_slice(bytes)
            .map_err(|e| format!("no PEM certificate could be read ({e})"));
    }
    let der = CertificateDer::from(bytes.to_vec());
    webpki::EndEntityCert::try_from(&der).map_err(|e| format!("not a DER certificate: {e}"))?;
    Ok(der)
}

/// PEM text for `der` under `label` (`CERTIFICATE`, `PRIVATE KEY`), 64 columns.
pub fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]);
            } else {
                b64.push(b'=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        // The alphabet is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One DER element: (tag, contents, the bytes after it).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes.iter().fold(0usize, |l, b| (l << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An X.509 time (UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ`) in unix seconds.
fn x509_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |n, b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let f = |i: usize| digits(&rest[i..i + 2]);
    let (mo, d, h, mi, s) = (f(0)?, f(2)?, f(4)?, f(6)?, f(8)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3_600 + mi * 60 + s)
}

/// A certificate's validity period `(not_before, not_after)` in unix seconds, or `None` when
/// the DER does not have the shape RFC 5280 gives it.
pub fn validity(cert_der: &[u8]) -> Option<(i64, i64)> {
    let (0x30, cert, _) = tlv(cert_der)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(cert)? else { return None };
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit version
    }
    // serial number, signature algorithm, issuer
    for want in [0x02, 0x30, 0x30] {
        let (tag, _, after) = tlv(rest)?;
        if tag != want {
            return None;
        }
        rest = after;
    }
    let (0x30, validity, _) = tlv(rest)? else {
        return None;
    };
    let (t1, nb, after) = tlv(validity)?;
    let (t2, na, _) = tlv(after)?;
    Some((x509_time(t1, nb)?, x509_time(t2, na)?))
}

/// When to renew a certificate valid from `not_before` to `not_after`: half-way through.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x509_times() {
        for (tag, text, want) in [
            (0x17u8, &b"700101000000Z"[..], Some(0)),
            (0x17, b"491231235959Z", Some(2_524_607_999)),
            (0x18, b"20240229120000Z", Some(1_709_208_000)),
            (0x18, b"20240229120000", None),
            (0x17, b"20240229120000Z", None),
            (0x17, b"7001010000a0Z", None),
        ] {
            assert_eq!(x509_time(tag, text), want, "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn pem_round_trips_through_the_reader() {
        for len in [0usize, 1, 2, 3, 4, 47, 48, 49, 100] {
            let der: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = pem("CERTIFICATE", &der);
            let back = CertificateDer::from_pem_slice(text.as_bytes());
            if len == 0 {
                continue; // an empty body is not something we ever write
            }
            assert_eq!(back.expect("decodes").as_ref(), &der[..], "length {len}");
        }
    }

    #[test]
    fn truncated_der_has_no_validity() {
        assert_eq!(validity(&[]), None);
        assert_eq!(validity(&[0x30, 0x82, 0xff]), None);
        assert_eq!(validity(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
    }

    #[test]
    fn renewal_is_at_half_life() {
        assert_eq!(renew_at(1_000, 3_000), 2_000);
    }
}
