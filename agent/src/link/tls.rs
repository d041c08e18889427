//! TLS for the live channel: rustls client configurations (TLS 1.3 only, the ring provider, ALPN
//! `picket/1`) and the verifier that makes enrolment without `--ca` safe.
//!
//! Two ways to trust the collector:
//! - **pinned** ([`pinned_config`]), for enrolment with only a token: the chain the collector
//!   presents must hold a certificate whose SubjectPublicKeyInfo hashes to the token's CA pin,
//!   and the end-entity certificate must verify, for the server name, with that certificate as
//!   the sole trust anchor. A man in the middle with any other CA fails the handshake, so the
//!   token's secret is never sent to it.
//! - **a CA file** ([`ca_config`], [`agent_config`]): the collector CA is the only root. This is
//!   how an enrolled agent connects, presenting its own key and client certificate.
//!
//! Invariant: no configuration built here trusts a system root store or anything but the one
//! collector CA (named by a file, or by the pin).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use picket_proto::x509;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme,
};

use super::cert;
use super::LinkError;

/// The ALPN protocol id of the live channel.
pub const ALPN: &[u8] = b"picket/1";

/// The crypto provider: ring, as everywhere in Picket.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The error a pinned verifier reports when no certificate in the chain has the pinned key.
#[derive(Debug)]
struct PinMismatch {
    pin: [u8; 32],
    seen: Vec<String>,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "certificate does not match the token's CA pin: no certificate the collector presented has the pinned public key (pin sha256:{}; presented keys {})",
            hex::encode(self.pin),
            if self.seen.is_empty() { "none readable".to_owned() } else { self.seen.join(", ") }
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Accepts the collector's chain only if it contains the CA the enrolment token pins, and the
/// end-entity certificate verifies to that CA alone for the server name (module doc).
#[derive(Debug)]
pub struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    /// A verifier for `pin` (SHA-256 of the CA's SubjectPublicKeyInfo DER).
    pub fn new(pin: [u8; 32]) -> PinVerifier {
        PinVerifier {
            pin,
            provider: provider(),
        }
    }
}

fn rustls_error(message: String) -> rustls::Error {
    rustls::Error::General(message)
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut seen = Vec::new();
        let mut anchor = None;
        for c in std::iter::once(end_entity).chain(intermediates) {
            match cert::spki_sha256(c) {
                Ok(h) if h == self.pin => {
                    anchor = Some(c);
                    break;
                }
                Ok(h) => seen.push(format!("sha256:{}", hex::encode(h))),
                Err(_) => {}
            }
        }
        let Some(anchor) = anchor else {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch { pin: self.pin, seen })),
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls_error(format!("building the pinned verifier: {e}")))?;
        let rest: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| c.as_ref() != anchor.as_ref())
            .cloned()
            .collect();
        inner.verify_server_cert(end_entity, &rest, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Never reached (the configurations allow TLS 1.3 only); delegated rather than refused
        // so that the verifier stays correct if used elsewhere.
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The agent's client identity: its certificate and its PKCS#8 Ed25519 key.
#[derive(Debug)]
pub struct ClientIdentity {
    /// The client certificate (DER).
    pub cert: CertificateDer<'static>,
    /// The private key (PKCS#8 DER).
    pub key: PrivatePkcs8KeyDer<'static>,
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, LinkError> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| LinkError::Invalid(format!("TLS 1.3 with the ring provider: {e}")))
}

fn finish(
    b: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    client: Option<ClientIdentity>,
) -> Result<Arc<ClientConfig>, LinkError> {
    let mut config = match client {
        None => b.with_no_client_auth(),
        Some(id) => b
            .with_client_auth_cert(vec![id.cert], PrivateKeyDer::Pkcs8(id.key))
            .map_err(|e| LinkError::Invalid(format!("the agent's key and certificate: {e}")))?,
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// A configuration for enrolment without a CA file: trust only what the token pins.
pub fn pinned_config(pin: [u8; 32]) -> Result<Arc<ClientConfig>, LinkError> {
    let b = builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier::new(pin)));
    finish(b, None)
}

/// A configuration trusting `ca` (DER) as the only root, presenting `client` if given.
pub fn ca_config(
    ca: &CertificateDer<'_>,
    client: Option<ClientIdentity>,
) -> Result<Arc<ClientConfig>, LinkError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone().into_owned())
        .map_err(|e| LinkError::Invalid(format!("the collector CA cannot be a trust anchor: {e}")))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| LinkError::Invalid(format!("the collector CA: {e}")))?;
    finish(builder()?.with_webpki_verifier(verifier), client)
}

/// Reads a certificate file (PEM or DER).
pub fn read_cert_file(path: &Path) -> Result<CertificateDer<'static>, LinkError> {
    let bytes = read_small(path)?;
    cert::parse_cert(&bytes).map_err(LinkError::file(path))
}

/// Reads the agent's private key (PEM `PRIVATE KEY` or DER PKCS#8). A key that other users can
/// read is refused: whoever reads it can act as this agent.
pub fn read_key_file(path: &Path) -> Result<PrivatePkcs8KeyDer<'static>, LinkError> {
    let meta = fs::metadata(path).map_err(|e| LinkError::file(path)(e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(LinkError::file(path)(format!(
            "the agent's private key is readable by other users (mode {:o}); run chmod 600",
            meta.permissions().mode() & 0o777
        )));
    }
    let bytes = read_small(path)?;
    let der = if bytes.windows(10).any(|w| w == b"-----BEGIN") {
        PrivatePkcs8KeyDer::from_pem_slice(&bytes)
            .map_err(|e| LinkError::file(path)(format!("no PKCS#8 PEM key could be read ({e})")))?
    } else {
        PrivatePkcs8KeyDer::from(bytes)
    };
    ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
        .map_err(|e| LinkError::file(path)(format!("not an Ed25519 PKCS#8 key: {e}")))?;
    Ok(der)
}

/// The Ed25519 public key of a PKCS#8 key.
pub fn public_key(key: &PrivatePkcs8KeyDer<'_>) -> Result<[u8; 32], String> {
    use ring::signature::KeyPair;
    let kp = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.secret_pkcs8_der())
        .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(kp.public_key().as_ref());
    Ok(out)
}

/// The configuration of an enrolled agent: the collector CA from `ca`, the client certificate
/// from `cert` and the key from `key` (files as `enroll` writes them). The certificate must be
/// for that key.
pub fn agent_config(ca: &Path, cert_path: &Path, key: &Path) -> Result<Arc<ClientConfig>, LinkError> {
    let ca_der = read_cert_file(ca)?;
    let cert_der = read_cert_file(cert_path)?;
    let key_der = read_key_file(key)?;
    let pk = public_key(&key_der).map_err(LinkError::file(key))?;
    let spki = cert::spki(&cert_der).map_err(LinkError::file(cert_path))?;
    if spki != x509::ed25519_spki(&pk) {
        return Err(LinkError::file(cert_path)(format!(
            "this certificate is not for the agent's key {}",
            key.display()
        )));
    }
    ca_config(
        &ca_der,
        Some(ClientIdentity {
            cert: cert_der,
            key: key_der,
        }),
    )
}

/// Reads a file of at most 1 MiB (keys, certificates, machine ids are far smaller).
pub(crate) fn read_small(path: &Path) -> Result<Vec<u8>, LinkError> {
    const CAP: u64 = 1 << 20;
    let bytes = crate::store::read_capped(path, CAP).map_err(|e| match e {
        crate::AgentError::Io { error, .. } => LinkError::file(path)(error.to_string()),
        _ => LinkError::file(path)(format!("larger than {CAP} bytes")),
    })?;
    Ok(bytes)
}

/// Parses a server name: a DNS name or an IP literal (IPv6 with or without brackets).
pub fn server_name(name: &str) -> Result<ServerName<'static>, LinkError> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned())
        .map_err(|_| LinkError::Invalid(format!("{name:?} is not a DNS name or an IP address")))
}

/// A handshake error as a sentence: a certificate problem of our own verifier is shown as
/// itself rather than as rustls's debug form.
pub(crate) fn describe(error: &std::io::Error) -> String {
    if let Some(inner) = error.get_ref() {
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e)))) =
            inner.downcast_ref::<rustls::Error>()
        {
            return e.to_string();
        }
        if let Some(e) = inner.downcast_ref::<rustls::Error>() {
            return e.to_string();
        }
    }
    error.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

    struct Ca {
        cert: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = p.self_signed(&key).unwrap().der().clone();
        Ca {
            cert,
            issuer: Issuer::new(p, key),
        }
    }

    fn server_cert(ca: &Ca, names: &[&str]) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.signed_by(&key, &ca.issuer).unwrap().der().clone()
    }

    fn check(
        v: &PinVerifier,
        ee: &CertificateDer<'_>,
        chain: &[CertificateDer<'_>],
        name: &str,
    ) -> Result<(), String> {
        v.verify_server_cert(ee, chain, &server_name(name).unwrap(), &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e))) => e.to_string(),
                e => e.to_string(),
            })
    }

    #[test]
    fn pin_verifier_accepts_the_pinned_ca_only_for_the_right_name() {
        let good = ca("Picket collector CA");
        let pin = cert::spki_sha256(&good.cert).unwrap();
        let v = PinVerifier::new(pin);
        let ee = server_cert(&good, &["collector.example", "127.0.0.1"]);
        // The chain with the pinned CA passes, for a DNS name and an IP literal.
        check(&v, &ee, std::slice::from_ref(&good.cert), "collector.example").unwrap();
        check(&v, &ee, std::slice::from_ref(&good.cert), "127.0.0.1").unwrap();
        // The right chain for another name fails.
        let err = check(&v, &ee, std::slice::from_ref(&good.cert), "other.example").unwrap_err();
        assert!(err.contains("not valid for name \"other.example\""), "{err}");
        // Without the CA in the chain there is nothing to anchor to.
        let err = check(&v, &ee, &[], "collector.example").unwrap_err();
        assert!(err.contains("does not match the token's CA pin"), "{err}");
    }

    #[test]
    fn pin_verifier_refuses_another_ca_with_the_same_name() {
        let good = ca("Picket collector CA");
        let evil = ca("Picket collector CA");
        let v = PinVerifier::new(cert::spki_sha256(&good.cert).unwrap());
        let ee = server_cert(&evil, &["collector.example"]);
        let err = check(&v, &ee, std::slice::from_ref(&evil.cert), "collector.example").unwrap_err();
        assert!(err.contains("does not match the token's CA pin"), "{err}");
        assert!(
            err.contains(&hex::encode(cert::spki_sha256(&evil.cert).unwrap())),
            "{err}"
        );
        // The pinned CA sent along does not vouch for a certificate another CA issued.
        let err = check(
            &v,
            &ee,
            &[good.cert.clone(), evil.cert.clone()],
            "collector.example",
        )
        .unwrap_err();
        assert!(
            err.contains("BadSignature") || err.contains("UnknownIssuer"),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_reads_back_from_its_pem_and_its_der() {
        let key = KeyPair::generate().unwrap();
        let p = CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        let c = p.self_signed(&key).unwrap();
        let pem = cert::pem("CERTIFICATE", c.der());
        assert_eq!(pem, c.pem().replace("\r\n", "\n"));
        assert_eq!(
            cert::parse_cert(pem.as_bytes()).unwrap().as_ref(),
            c.der().as_ref()
        );
        assert_eq!(cert::parse_cert(c.der()).unwrap().as_ref(), c.der().as_ref());
    }
}
