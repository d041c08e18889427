//! The collector's PKI: its TLS certificate authority, the server certificate agents connect
//! to, and the short-lived client certificates that are each agent's identity on the channel.
//!
//! ```text
//! DIR/tls/ca.pem       the collector CA (Ed25519, 10 years), 0644: what `--ca` on an agent names
//! DIR/tls/ca.key       its private key (PKCS#8 PEM), 0600
//! DIR/tls/server.pem   the server certificate (1 year) then the CA certificate, 0644
//! DIR/tls/server.key   its private key, 0600
//! ```
//!
//! An operator may supply the server certificate instead (`[tls] cert`, `key`, `ca` in
//! `picket.toml`); the collector's own CA still issues every client certificate.
//!
//! Invariants kept here:
//! - The pin a token carries ([`Pki::ca_pin`]) is the SHA-256 of the SubjectPublicKeyInfo of the
//!   CA that issued the server certificate the collector actually presents: `load` refuses a
//!   server chain that does not verify under that CA, so an agent checking the pin never fails
//!   against its own collector, and a man in the middle cannot pass the check.
//! - A client certificate is only accepted if it chains to the collector's own CA
//!   ([`Pki::server_config`]); nothing else can issue an agent identity.
//! - Private keys are never printed (`Debug` shows the pin and dates only) and `load` refuses a
//!   key file other users can read.

use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use picket_proto::x509;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm, PKCS_ED25519,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::datadir::{self, DataDir};
use crate::CollectorError;

/// The TLS folder inside the data directory.
pub const TLS_DIR: &str = "tls";
/// The collector CA's certificate.
pub const CA_CERT: &str = "ca.pem";
/// The collector CA's private key.
pub const CA_KEY: &str = "ca.key";
/// The server certificate chain made by `init`.
pub const SERVER_CERT: &str = "server.pem";
/// Its private key.
pub const SERVER_KEY: &str = "server.key";
/// The ALPN protocol name of the agent channel.
pub const ALPN: &[u8] = b"picket/1";
/// The longest client certificate lifetime `issue_client` accepts (agents renew at half-life).
pub const MAX_CLIENT_LIFETIME: u64 = 365 * DAY;
/// The names every server certificate made by `init` carries.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

const DAY: u64 = 86_400;
const CA_LIFETIME: u64 = 10 * 365 * DAY;
const SERVER_LIFETIME: u64 = 365 * DAY;
/// How far back `not_before` goes, so that an endpoint whose clock is behind still accepts a
/// certificate made a moment ago.
const BACKDATE: u64 = DAY;
const CLIENT_BACKDATE: u64 = 300;
/// The largest PEM file read (a chain of a few certificates is a few kilobytes).
const PEM_CAP: u64 = 1 << 20;

/// The collector's TLS material, loaded from the data directory.
pub struct Pki {
    ca_key: KeyPair,
    ca_name: DistinguishedName,
    ca_der: Vec<u8>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    server_ca_der: Vec<u8>,
    pin: [u8; 32],
    server_not_after: i64,
    server_source: PathBuf,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("ca_pin", &hex::encode(self.pin))
            .field("server_certificate", &self.server_source)
            .field("server_not_after", &self.server_not_after)
            .field("keys", &"<redacted>")
            .finish()
    }
}

/// An Ed25519 public key as rcgen wants it for the certificate it signs.
struct Ed25519Public<'a>(&'a [u8; 32]);

impl PublicKeyData for Ed25519Public<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

fn refused(context: impl fmt::Display) -> impl FnOnce(rcgen::Error) -> CollectorError {
    move |e| CollectorError::Refused(format!("{context}: {e}"))
}

fn bad_file(path: &Path, problem: impl Into<String>) -> CollectorError {
    CollectorError::DataDir {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Sets a certificate's validity to `[from, to]` (unix seconds), both clamped to what X.509 and
/// the date type can express.
fn set_validity(params: &mut CertificateParams, from: i64, to: i64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let at = |t: i64| Duration::from_secs(t.clamp(0, x509::LAST_TIME) as u64);
    params.not_before = epoch + at(from);
    params.not_after = epoch + at(to);
}

/// A fresh random serial number (RFC 5280: positive, at most 20 bytes). rcgen's default derives
/// it from the public key, which would repeat for every renewal of one agent's key.
fn random_serial() -> Result<SerialNumber, CollectorError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CollectorError::Refused("the system random generator failed".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, DnValue::Utf8String(cn.to_owned()));
    dn
}

/// The subject names of the server certificate: the defaults, then `names`, each checked to be a
/// DNS name or an IP address, without repeats.
fn server_names(names: &[String]) -> Result<Vec<String>, CollectorError> {
    let mut all: Vec<String> = DEFAULT_NAMES.iter().map(|n| (*n).to_owned()).collect();
    for name in names {
        let name = name.trim();
        if ServerName::try_from(name).is_err() || name.is_empty() {
            return Err(CollectorError::Refused(format!(
                "TLS name {name:?}: not a DNS name or an IP address"
            )));
        }
        let canonical = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => name.to_ascii_lowercase(),
        };
        if !all.contains(&canonical) {
            all.push(canonical);
        }
    }
    Ok(all)
}

impl Pki {
    /// Makes the collector CA and a server certificate signed by it in `tls_dir` (created 0700):
    /// `ca.pem`, `ca.key`, `server.pem` (server certificate, then the CA), `server.key`. The
    /// server certificate names localhost, 127.0.0.1, ::1 and every name in `names` (IP
    /// addresses become IP names). Existing files are never overwritten.
    pub fn create(tls_dir: &Path, org: &str, names: &[String], now: i64) -> Result<(), CollectorError> {
        let sans = server_names(names)?;
        fs::create_dir_all(tls_dir).map_err(CollectorError::io(tls_dir))?;
        fs::set_permissions(tls_dir, fs::Permissions::from_mode(0o700))
            .map_err(CollectorError::io(tls_dir))?;

        let ca_key = KeyPair::generate_for(&PKCS_ED25519).map_err(refused("generating the CA key"))?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = common_name(&format!("Picket collector CA {org}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.serial_number = Some(random_serial()?);
        set_validity(&mut ca, now - BACKDATE as i64, now + CA_LIFETIME as i64);
        let ca_cert = ca
            .self_signed(&ca_key)
            .map_err(refused("signing the CA certificate"))?;

        let server_key =
            KeyPair::generate_for(&PKCS_ED25519).map_err(refused("generating the server key"))?;
        let mut server = CertificateParams::new(sans).map_err(refused("the server certificate's names"))?;
        server.distinguished_name = common_name(&format!("Picket collector {org}"));
        server.is_ca = IsCa::ExplicitNoCa;
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.serial_number = Some(random_serial()?);
        set_validity(&mut server, now - BACKDATE as i64, now + SERVER_LIFETIME as i64);
        let issuer = Issuer::from_params(&ca, &ca_key);
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .map_err(refused("signing the server certificate"))?;

        datadir::write_new(&tls_dir.join(CA_KEY), ca_key.serialize_pem().as_bytes(), 0o600)?;
        datadir::write_new(&tls_dir.join(CA_CERT), ca_cert.pem().as_bytes(), 0o644)?;
        datadir::write_new(
            &tls_dir.join(SERVER_KEY),
            server_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        let chain = format!("{}{}", server_cert.pem(), ca_cert.pem());
        datadir::write_new(&tls_dir.join(SERVER_CERT), chain.as_bytes(), 0o644)
    }

    /// The pin of the collector's own CA (`tls_dir/ca.pem`), as `init` puts it into root v1.
    pub fn own_ca_pin(tls_dir: &Path) -> Result<[u8; 32], CollectorError> {
        let path = tls_dir.join(CA_CERT);
        let der = one_cert(&path)?;
        spki_sha256(&der).map_err(|e| bad_file(&path, e.to_string()))
    }

    /// Loads the TLS material of a data directory: the collector CA (always `DIR/tls/ca.*`) and
    /// the server certificate, either the one `init` made or the operator's (`[tls] cert`, `key`,
    /// `ca` in the configuration). Refuses a key other users can read, a key that does not match
    /// its certificate, and a server chain that does not verify under the CA it is said to come
    /// from.
    pub fn load(dir: &DataDir) -> Result<Pki, CollectorError> {
        let tls = dir.path().join(TLS_DIR);
        let ca_path = tls.join(CA_CERT);
        if !ca_path.exists() {
            return Err(bad_file(
                &ca_path,
                "missing: this data directory has no collector CA (it was made before the agent channel existed, or DIR/tls/ was removed)",
            ));
        }
        let ca_der = one_cert(&ca_path)?;
        let ca_key_path = tls.join(CA_KEY);
        let ca_key = KeyPair::from_pkcs8_pem_and_sign_algo(&read_key_text(&ca_key_path)?, &PKCS_ED25519)
            .map_err(|e| bad_file(&ca_key_path, format!("not an Ed25519 PKCS#8 private key: {e}")))?;
        let spki = spki_of(&ca_der).map_err(|e| bad_file(&ca_path, e))?;
        if spki != ca_key.subject_public_key_info() {
            return Err(bad_file(
                &ca_key_path,
                format!("is not the private key of {}", ca_path.display()),
            ));
        }
        let ca_name = own_ca_name(&ca_der).map_err(|e| bad_file(&ca_path, e))?;

        let operator = dir.config().tls_files(dir.path(), &dir.config_path())?;
        let (chain_path, key_path, server_ca_der) = match &operator {
            Some(files) => (files.cert.clone(), files.key.clone(), one_cert(&files.ca)?),
            None => (tls.join(SERVER_CERT), tls.join(SERVER_KEY), ca_der.clone()),
        };
        let server_chain = read_certs(&chain_path)?;
        let Some(leaf) = server_chain.first() else {
            return Err(bad_file(&chain_path, "holds no certificate"));
        };
        let (not_before, server_not_after) = x509::validity(leaf)
            .ok_or_else(|| bad_file(&chain_path, "the certificate's validity does not parse"))?;
        let ca_label = operator.as_ref().map_or(ca_path.clone(), |f| f.ca.clone());
        check_chain(&server_chain, &server_ca_der, not_before, server_not_after).map_err(|e| {
            bad_file(
                &chain_path,
                format!(
                    "the server certificate does not verify under the CA in {}: {e}",
                    ca_label.display()
                ),
            )
        })?;
        let key_text = read_key_text(&key_path)?;
        let server_key = PrivateKeyDer::from_pem_slice(key_text.as_bytes())
            .map_err(|e| bad_file(&key_path, format!("not a PEM private key: {e}")))?;
        let pin = spki_sha256(&server_ca_der).map_err(|e| bad_file(&ca_label, e.to_string()))?;
        let pki = Pki {
            ca_key,
            ca_name,
            ca_der,
            server_chain,
            server_key,
            server_ca_der,
            pin,
            server_not_after,
            server_source: chain_path.clone(),
        };
        pki.server_config()
            .map_err(|e| bad_file(&key_path, e.to_string()))?;
        Ok(pki)
    }

    /// SHA-256 of the SubjectPublicKeyInfo (DER) of the CA that issued the server certificate:
    /// the pin enrolment tokens carry.
    pub fn ca_pin(&self) -> [u8; 32] {
        self.pin
    }

    /// That CA's certificate (DER): what `Enrolled.ca` carries, the agent's trust from then on.
    pub fn server_ca_der(&self) -> &[u8] {
        &self.server_ca_der
    }

    /// The collector's own CA certificate (DER), the issuer of every client certificate.
    pub fn client_ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// When the server certificate expires (unix seconds), so `serve` can warn before it does.
    pub fn server_not_after(&self) -> i64 {
        self.server_not_after
    }

    /// Issues a client certificate for an agent's Ed25519 `public_key`: subject CN `agent_id`,
    /// clientAuth only, not a CA, valid from a few minutes before `now` for `lifetime_secs`.
    /// Returns the certificate (DER) and its `not_after`.
    pub fn issue_client(
        &self,
        agent_id: &str,
        public_key: &[u8; 32],
        now: i64,
        lifetime_secs: u64,
    ) -> Result<(Vec<u8>, i64), CollectorError> {
        if lifetime_secs == 0 || lifetime_secs > MAX_CLIENT_LIFETIME {
            return Err(CollectorError::Refused(format!(
                "client certificate lifetime of {lifetime_secs} s: must be between 1 s and {MAX_CLIENT_LIFETIME} s"
            )));
        }
        let not_after = now.saturating_add(lifetime_secs as i64).min(x509::LAST_TIME);
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(agent_id);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, now - CLIENT_BACKDATE as i64, not_after);
        let mut ca = CertificateParams::default();
        ca.distinguished_name = self.ca_name.clone();
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = Issuer::new(ca, &self.ca_key);
        let cert = params
            .signed_by(&Ed25519Public(public_key), &issuer)
            .map_err(refused(format!("issuing the client certificate of {agent_id}")))?;
        Ok((cert.der().to_vec(), not_after))
    }

    /// The channel's TLS server configuration: TLS 1.3 only, the ring provider, ALPN
    /// `picket/1`, the server certificate, and client certificates optional but, when given,
    /// verified against the collector's own CA (a session without one may only enrol).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, CollectorError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = |e: rustls::Error| CollectorError::Refused(format!("TLS configuration: {e}"));
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca_der.clone()))
            .map_err(|e| CollectorError::Refused(format!("the collector CA as a trust anchor: {e}")))?;
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| CollectorError::Refused(format!("the client certificate verifier: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
            .map_err(tls)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo (DER, with its outer SEQUENCE): the CA pin
/// when the certificate is a CA's.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32], CollectorError> {
    let spki = spki_of(cert_der).map_err(CollectorError::Refused)?;
    Ok(picket_proto::sha256(&spki))
}

fn spki_of(cert_der: &[u8]) -> Result<Vec<u8>, String> {
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| format!("not an X.509 certificate webpki can read: {e:?}"))?;
    Ok(cert.subject_public_key_info().as_ref().to_vec())
}

/// An agent's id: `ag-` and the first 8 bytes of the SHA-256 of its public key, in hex.
pub fn agent_id(public_key: &[u8; 32]) -> String {
    format!("ag-{}", hex::encode(&picket_proto::sha256(public_key)[..8]))
}

/// The Ed25519 public key a certificate certifies, or `None` if it certifies another kind.
pub fn ed25519_key(cert_der: &[u8]) -> Option<[u8; 32]> {
    x509::ed25519_key(&spki_of(cert_der).ok()?)
}

/// Whether a certificate is valid for `name` (a DNS name or an IP address), as a TLS client
/// checks it.
pub fn valid_for_name(cert_der: &[u8], name: &str) -> Result<bool, CollectorError> {
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| CollectorError::Refused(format!("not an X.509 certificate webpki can read: {e:?}")))?;
    let name = ServerName::try_from(name)
        .map_err(|_| CollectorError::Refused(format!("{name:?} is not a DNS name or an IP address")))?;
    Ok(cert.verify_is_valid_for_subject_name(&name).is_ok())
}

/// Reads every certificate of a PEM file (size-capped).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CollectorError> {
    let bytes = read_capped(path)?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_file(path, format!("not a PEM certificate file: {e}")))
}

/// The one certificate of a PEM file (the first, if it holds a chain).
fn one_cert(path: &Path) -> Result<Vec<u8>, CollectorError> {
    read_certs(path)?
        .into_iter()
        .next()
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| bad_file(path, "holds no PEM certificate"))
}

fn read_capped(path: &Path) -> Result<Vec<u8>, CollectorError> {
    let file = fs::File::open(path).map_err(CollectorError::io(path))?;
    let mut bytes = Vec::new();
    file.take(PEM_CAP + 1)
        .read_to_end(&mut bytes)
        .map_err(CollectorError::io(path))?;
    if bytes.len() as u64 > PEM_CAP {
        return Err(bad_file(
            path,
            format!("larger than the {PEM_CAP} bytes accepted"),
        ));
    }
    Ok(bytes)
}

/// Reads a private key file, refusing one that other users may read.
fn read_key_text(path: &Path) -> Result<String, CollectorError> {
    let meta = fs::metadata(path).map_err(CollectorError::io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(bad_file(
            path,
            format!("a private key readable by other users (mode {mode:04o}); run chmod 600 on it"),
        ));
    }
    String::from_utf8(read_capped(path)?).map_err(|_| bad_file(path, "not a PEM file (not UTF-8)"))
}

/// Checks that `chain` (leaf first) verifies for server use under `ca_der`, at an instant inside
/// the leaf's validity: this is about who issued it, expiry is `serve`'s warning to give.
fn check_chain(
    chain: &[CertificateDer<'static>],
    ca_der: &[u8],
    not_before: i64,
    not_after: i64,
) -> Result<(), String> {
    let ca = CertificateDer::from(ca_der);
    let anchor = webpki::anchor_from_trusted_cert(&ca).map_err(|e| format!("the CA: {e:?}"))?;
    let (leaf, intermediates) = chain.split_first().ok_or("no certificate")?;
    let leaf = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("{e:?}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let at = now.clamp(not_before.max(0), (not_after - 1).max(not_before.max(0)));
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        intermediates,
        UnixTime::since_unix_epoch(Duration::from_secs(at as u64)),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("{e:?}"))
}

/// The subject of the collector's own CA, as `create` wrote it: one RDN, one common name. Read
/// back so that issued certificates name their issuer byte for byte as the CA names itself.
fn own_ca_name(ca_der: &[u8]) -> Result<DistinguishedName, String> {
    let der = CertificateDer::from(ca_der);
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| format!("{e:?}"))?;
    let not_ours = || "the CA's subject is not the single common name `init` writes".to_owned();
    let (tag, rdn, rest) = x509::tlv(cert.subject()).ok_or_else(not_ours)?;
    if tag != 0x31 || !rest.is_empty() {
        return Err(not_ours());
    }
    let (tag, atv, rest) = x509::tlv(rdn).ok_or_else(not_ours)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(not_ours());
    }
    let (tag, oid, rest) = x509::tlv(atv).ok_or_else(not_ours)?;
    if tag != 0x06 || oid != [0x55, 0x04, 0x03] {
        return Err(not_ours());
    }
    let (tag, value, rest) = x509::tlv(rest).ok_or_else(not_ours)?;
    if tag != 0x0c || !rest.is_empty() {
        return Err(not_ours());
    }
    let cn = std::str::from_utf8(value).map_err(|_| not_ours())?;
    Ok(common_name(cn))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;

    fn data_dir(names: &[&str]) -> (tempfile::TempDir, DataDir) {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        DataDir::init_with_names(&data, "Org", None, &names, NOW).unwrap();
        let dir = DataDir::open(&data).unwrap();
        (tmp, dir)
    }

    fn agent_key() -> [u8; 32] {
        use ring::signature::KeyPair as _;
        let rng = SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let kp = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        kp.public_key().as_ref().try_into().unwrap()
    }

    fn unix(t: i64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(t as u64))
    }

    #[test]
    fn a_client_certificate_verifies_under_the_collector_ca_and_names_the_agent() {
        let (_tmp, dir) = data_dir(&[]);
        let pki = Pki::load(&dir).unwrap();
        let key = agent_key();
        let id = agent_id(&key);
        assert!(id.starts_with("ag-") && id.len() == 3 + 16, "{id}");
        let (cert, not_after) = pki.issue_client(&id, &key, NOW, 7 * DAY).unwrap();
        assert_eq!(not_after, NOW + 7 * DAY as i64);
        assert_eq!(x509::validity(&cert), Some((NOW - 300, not_after)));
        assert_eq!(ed25519_key(&cert), Some(key));

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(pki.client_ca_der().to_vec()))
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let der = CertificateDer::from(cert.clone());
        verifier.verify_client_cert(&der, &[], unix(NOW + 60)).unwrap();
        // Expired a moment after not_after.
        assert!(verifier
            .verify_client_cert(&der, &[], unix(not_after + 1))
            .is_err());
        // It is a client certificate, not a server one, and not a CA.
        let ca = CertificateDer::from(pki.client_ca_der().to_vec());
        let anchor = webpki::anchor_from_trusted_cert(&ca).unwrap();
        let ee = webpki::EndEntityCert::try_from(&der).unwrap();
        assert!(ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &[anchor],
                &[],
                unix(NOW + 60),
                webpki::KeyUsage::server_auth(),
                None,
                None
            )
            .is_err());
        // Renewals get fresh serial numbers.
        let (again, _) = pki.issue_client(&id, &key, NOW, 7 * DAY).unwrap();
        let serial = |c: &[u8]| {
            let d = CertificateDer::from(c.to_vec());
            webpki::EndEntityCert::try_from(&d).unwrap().serial().to_vec()
        };
        assert_ne!(serial(&cert), serial(&again));
        assert!(pki.issue_client(&id, &key, NOW, 0).is_err());
        assert!(pki.issue_client(&id, &key, NOW, MAX_CLIENT_LIFETIME + 1).is_err());
    }

    #[test]
    fn the_pin_is_the_sha256_of_the_ca_public_key_info() {
        let (_tmp, dir) = data_dir(&[]);
        let pki = Pki::load(&dir).unwrap();
        let ca_key = fs::read_to_string(dir.path().join("tls/ca.key")).unwrap();
        let kp = KeyPair::from_pkcs8_pem_and_sign_algo(&ca_key, &PKCS_ED25519).unwrap();
        let spki = x509::ed25519_spki(kp.public_key_raw().try_into().unwrap());
        assert_eq!(pki.ca_pin(), picket_proto::sha256(&spki));
        assert_eq!(pki.ca_pin(), spki_sha256(pki.server_ca_der()).unwrap());
        assert_eq!(Pki::own_ca_pin(&dir.path().join(TLS_DIR)).unwrap(), pki.ca_pin());
        // init put the same pin into root version 1.
        let store = dir.store().unwrap();
        let (root, _) = dir.current_root(&store).unwrap();
        assert_eq!(root.tls_ca_pin, Some(pki.ca_pin()));
        // Debug shows the pin, never a key.
        let shown = format!("{pki:?}");
        assert!(shown.contains(&hex::encode(pki.ca_pin())), "{shown}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
    }

    #[test]
    fn the_server_certificate_has_the_default_names_and_the_ones_given() {
        let (_tmp, dir) = data_dir(&["picket.example", "10.1.2.3", "Picket.Example"]);
        let chain = read_certs(&dir.path().join("tls/server.pem")).unwrap();
        assert_eq!(chain.len(), 2, "server certificate, then the CA");
        let ca = fs::read(dir.path().join("tls/ca.pem")).unwrap();
        assert_eq!(
            chain[1].as_ref(),
            CertificateDer::from_pem_slice(&ca).unwrap().as_ref()
        );
        for name in ["localhost", "127.0.0.1", "::1", "picket.example", "10.1.2.3"] {
            assert!(valid_for_name(&chain[0], name).unwrap(), "{name}");
        }
        assert!(!valid_for_name(&chain[0], "other.example").unwrap());
        assert_eq!(
            dir.config().tls.names,
            vec!["picket.example", "10.1.2.3", "Picket.Example"]
        );
        let (nb, na) = x509::validity(&chain[0]).unwrap();
        assert_eq!((nb, na), (NOW - DAY as i64, NOW + SERVER_LIFETIME as i64));
        let pki = Pki::load(&dir).unwrap();
        assert_eq!(pki.server_not_after(), na);
        assert_eq!(
            pki.server_config().unwrap().alpn_protocols,
            vec![b"picket/1".to_vec()]
        );
    }

    #[test]
    fn bad_tls_names_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["not a name", "", "exa_mple..com"] {
            let err = Pki::create(&tmp.path().join("tls"), "Org", &[bad.to_owned()], NOW).unwrap_err();
            assert!(
                err.to_string().contains("not a DNS name or an IP address"),
                "{err}"
            );
        }
        assert!(!tmp.path().join("tls").exists());
    }

    #[test]
    fn keys_are_0600_and_a_readable_key_is_refused() {
        let (_tmp, dir) = data_dir(&[]);
        let tls = dir.path().join(TLS_DIR);
        let mode = |name: &str| fs::metadata(tls.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(CA_KEY), 0o600);
        assert_eq!(mode(SERVER_KEY), 0o600);
        assert_eq!(mode(""), 0o700, "the tls folder");
        // The certificates are public (subject to the umask).
        assert_eq!(mode(CA_CERT) & 0o600, 0o600);
        fs::set_permissions(tls.join(CA_KEY), fs::Permissions::from_mode(0o644)).unwrap();
        let err = Pki::load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("ca.key") && err.contains("readable by other users"),
            "{err}"
        );
    }

    #[test]
    fn a_swapped_key_or_a_foreign_server_certificate_is_refused() {
        let (_tmp, dir) = data_dir(&[]);
        let (_tmp2, other) = data_dir(&[]);
        let tls = dir.path().join(TLS_DIR);
        // Another collector's server certificate and key, presented under this CA.
        fs::copy(other.path().join("tls/server.pem"), tls.join(SERVER_CERT)).unwrap();
        fs::copy(other.path().join("tls/server.key"), tls.join(SERVER_KEY)).unwrap();
        let err = Pki::load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("server.pem") && err.contains("does not verify"),
            "{err}"
        );
        // Another CA's key beside this CA's certificate.
        let (_tmp3, third) = data_dir(&[]);
        fs::copy(third.path().join("tls/ca.key"), tls.join(CA_KEY)).unwrap();
        let err = Pki::load(&dir).unwrap_err().to_string();
        assert!(err.contains("is not the private key of"), "{err}");
    }

    #[test]
    fn an_operator_certificate_is_used_and_pinned_by_its_own_ca() {
        let (tmp, dir) = data_dir(&[]);
        // The "operator's" CA and server certificate: another collector's, made the same way.
        let (_tmp2, other) = data_dir(&["collector.corp.example"]);
        let ours = Pki::load(&dir).unwrap();
        let theirs = Pki::load(&other).unwrap();
        let config = dir.config_path();
        let text = fs::read_to_string(&config).unwrap();
        let tls = other.path().join(TLS_DIR);
        let text = text.replace(
            "[tls]\n",
            &format!(
                "[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n",
                tls.join(SERVER_CERT),
                tls.join(SERVER_KEY),
                tls.join(CA_CERT)
            ),
        );
        fs::write(&config, text).unwrap();
        let dir = DataDir::open(dir.path()).unwrap();
        let pki = Pki::load(&dir).unwrap();
        assert_eq!(pki.ca_pin(), theirs.ca_pin());
        assert_ne!(pki.ca_pin(), ours.ca_pin());
        assert_eq!(pki.server_ca_der(), theirs.server_ca_der());
        // Client certificates still come from this collector's own CA.
        assert_eq!(pki.client_ca_der(), ours.client_ca_der());
        // A CA that did not issue the server certificate is refused, naming the files.
        let wrong = fs::read_to_string(&config).unwrap().replace(
            &format!("{:?}", tls.join(CA_CERT)),
            &format!("{:?}", dir.path().join("tls/ca.pem")),
        );
        fs::write(&config, wrong).unwrap();
        let err = Pki::load(&DataDir::open(dir.path()).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not verify under the CA in"), "{err}");
        drop(tmp);
    }
}
