//! A certificate browsers can use on the HTTPS listener.
//!
//! The collector's own server certificate is Ed25519, which TLS libraries of agents, Python and
//! curl accept but browsers do not (Chromium and Firefox offer no Ed25519 signature scheme, so
//! the handshake fails). The listener therefore holds a second certificate, ECDSA P-256,
//! self-signed, in `DIR/tls/https.pem` (key `DIR/tls/https.key`, 0600), made on first use and
//! remade once it is [`RENEW_AFTER`] old. A client that offers Ed25519 gets the collector's
//! certificate as before (so TAXII clients that trust `DIR/tls/ca.pem` keep verifying); one
//! that does not gets the ECDSA certificate, which an operator trusts or pins in the browser.
//! An operator's own certificate (`[tls]`), when it is not Ed25519, is served to everyone.
//!
//! Invariant: the choice depends only on the signature schemes the client offers, and the
//! ECDSA key never leaves `DIR/tls/`.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::datadir::{self, DataDir};
use crate::CollectorError;

/// The browsers' certificate, in `DIR/tls/`.
pub const HTTPS_CERT: &str = "https.pem";
/// Its private key, in `DIR/tls/`.
pub const HTTPS_KEY: &str = "https.key";
/// A certificate older than this (by its file's time) is made anew at start.
pub const RENEW_AFTER: Duration = Duration::from_secs(300 * 86_400);
/// How long a certificate made here is valid (under the 398 days browsers accept).
const LIFETIME: i64 = 397 * 86_400;

/// Wraps `inner` (the listener's resolver) so that a client offering no Ed25519 scheme gets the
/// ECDSA certificate of `dir` (made if needed, naming localhost, 127.0.0.1, ::1 and `ip` when
/// it is a specific address) instead of an Ed25519 one.
pub fn browser_resolver(
    dir: &DataDir,
    inner: Arc<dyn ResolvesServerCert>,
    ip: IpAddr,
    now: i64,
) -> Result<Arc<dyn ResolvesServerCert>, CollectorError> {
    let tls = dir.path().join(crate::pki::TLS_DIR);
    let (cert, key) = load_or_make(&tls, &dir.config().org, ip, now)?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| CollectorError::Refused(format!("{}: {e}", tls.join(HTTPS_KEY).display())))?;
    Ok(Arc::new(BySchemes {
        inner,
        ecdsa: Arc::new(CertifiedKey::new(vec![cert], signing)),
    }))
}

/// The certificate and key in `tls`, made (or remade, when old) first.
fn load_or_make(
    tls: &Path,
    org: &str,
    ip: IpAddr,
    now: i64,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), CollectorError> {
    let (cert_path, key_path) = (tls.join(HTTPS_CERT), tls.join(HTTPS_KEY));
    let fresh = fs::metadata(&cert_path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < RENEW_AFTER);
    if !(fresh && key_path.exists()) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CollectorError::Refused(format!("making the HTTPS key: {e}")))?;
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
        if !ip.is_unspecified() && !ip.is_loopback() {
            names.push(ip.to_string());
        }
        let mut params = CertificateParams::new(names)
            .map_err(|e| CollectorError::Refused(format!("the HTTPS certificate's names: {e}")))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Picket collector dashboard {org}"));
        params.distinguished_name = dn;
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let at = |t: i64| Duration::from_secs(t.max(0) as u64);
        params.not_before = epoch + at(now - 3600);
        params.not_after = epoch + at(now + LIFETIME);
        let cert = params
            .self_signed(&key)
            .map_err(|e| CollectorError::Refused(format!("signing the HTTPS certificate: {e}")))?;
        datadir::replace(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        datadir::replace(&cert_path, cert.pem().as_bytes(), 0o644)?;
    }
    let cert = crate::pki::read_certs(&cert_path)?
        .into_iter()
        .next()
        .ok_or_else(|| CollectorError::Refused(format!("{}: holds no certificate", cert_path.display())))?;
    let key_text = fs::read(&key_path).map_err(CollectorError::io(&key_path))?;
    let key = PrivateKeyDer::from_pem_slice(&key_text).map_err(|e| {
        CollectorError::Refused(format!("{}: not a PEM private key: {e}", key_path.display()))
    })?;
    Ok((cert, key))
}

#[derive(Debug)]
struct BySchemes {
    inner: Arc<dyn ResolvesServerCert>,
    ecdsa: Arc<CertifiedKey>,
}

impl ResolvesServerCert for BySchemes {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let ed25519 = hello.signature_schemes().contains(&SignatureScheme::ED25519);
        match self.inner.resolve(hello) {
            Some(k) if k.key.algorithm() == SignatureAlgorithm::ED25519 && !ed25519 => {
                Some(self.ecdsa.clone())
            }
            other => other,
        }
    }
}
