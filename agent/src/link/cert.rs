//! The few certificate facts the agent reads itself: the SHA-256 of a certificate's public key
//! (the CA pin an enrolment token carries), when to renew its own client certificate (at
//! half-life), and PEM text for the files it writes.
//!
//! Pure functions over bytes. Parsing a certificate for trust is rustls's and webpki's job, and
//! [`spki`] has webpki parse the certificate before it hands out the key. The validity period
//! comes from [`picket_proto::x509::validity`], which only decides *when to ask* for a new
//! certificate: one it cannot read makes the agent renew early, never trust anything.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

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

/// When to renew a certificate valid from `not_before` to `not_after`: half-way through
/// (computed without overflow, whatever times the certificate claims).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let mid = (i128::from(not_before) + i128::from(not_after)).div_euclid(2);
    // The midpoint of two i64 values is an i64.
    mid as i64
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn renewal_is_at_half_life() {
        assert_eq!(renew_at(1_000, 3_000), 2_000);
        // Times a hostile certificate could claim do not overflow.
        assert_eq!(renew_at(i64::MIN, i64::MAX), -1);
        assert_eq!(renew_at(i64::MAX, i64::MAX), i64::MAX);
        assert_eq!(renew_at(i64::MIN, i64::MIN), i64::MIN);
    }
}
