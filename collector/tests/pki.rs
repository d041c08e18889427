//! The agent channel's TLS, for real on loopback: a tokio-rustls server built from
//! `Pki::server_config` and rustls clients with client certificates from `Pki::issue_client`.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::sync::Arc;
use std::time::Duration;

use picket_collector::datadir::DataDir;
use picket_collector::pki::{self, Pki};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const LIMIT: Duration = Duration::from_secs(5);

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Collector {
    _tmp: tempfile::TempDir,
    pki: Pki,
}

fn collector() -> Collector {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    DataDir::init(&data, "Loopback Org", None, now()).unwrap();
    let pki = Pki::load(&DataDir::open(&data).unwrap()).unwrap();
    Collector { _tmp: tmp, pki }
}

/// An agent's key and the client certificate `pki` issued for it.
fn agent_identity(
    pki: &Pki,
) -> (
    String,
    [u8; 32],
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
    let id = pki::agent_id(&public);
    let (cert, _) = pki.issue_client(&id, &public, now(), 3_600).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec()));
    (id, public, vec![CertificateDer::from(cert)], key)
}

fn client_config(
    server_ca: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(server_ca.to_vec())).unwrap();
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![pki::ALPN.to_vec()];
    Arc::new(config)
}

/// What the server saw of one connection: the peer's Ed25519 key (if it presented a
/// certificate), or the handshake error.
type Seen = Result<Option<[u8; 32]>, String>;

/// Serves one connection with `pki`'s configuration: completes the handshake, writes one byte
/// and reports what it saw of the client.
async fn serve_one(pki: &Pki) -> (std::net::SocketAddr, tokio::task::JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(pki.server_config().unwrap());
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(conn.alpn_protocol(), Some(pki::ALPN));
        let key = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| pki::ed25519_key(c).expect("an Ed25519 client certificate"));
        tls.write_all(b"!").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        Ok(key)
    });
    (addr, task)
}

/// Connects, completes the handshake and reads the server's byte.
async fn connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    Ok(conn.peer_certificates().unwrap_or_default().to_vec())
}

#[tokio::test]
async fn an_agent_certificate_completes_a_tls13_handshake_and_the_server_sees_its_key() {
    let c = collector();
    let (addr, server) = serve_one(&c.pki).await;
    let (_, public, chain, key) = agent_identity(&c.pki);
    let config = client_config(
        c.pki.server_ca_der(),
        &[&rustls::version::TLS13],
        Some((chain, key)),
    );
    let presented = tokio::time::timeout(LIMIT, connect(addr, config))
        .await
        .unwrap()
        .unwrap();
    let seen = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert_eq!(
        seen,
        Ok(Some(public)),
        "the server identifies the agent by its key"
    );
    // The chain the server presents ends in the CA whose key the token pins: what an agent
    // enrolling without --ca checks.
    assert_eq!(presented.len(), 2);
    assert_eq!(pki::spki_sha256(&presented[1]).unwrap(), c.pki.ca_pin());
}

#[tokio::test]
async fn a_client_without_a_certificate_gets_a_session_the_server_knows_is_anonymous() {
    let c = collector();
    let (addr, server) = serve_one(&c.pki).await;
    let config = client_config(c.pki.server_ca_der(), &[&rustls::version::TLS13], None);
    tokio::time::timeout(LIMIT, connect(addr, config))
        .await
        .unwrap()
        .unwrap();
    let seen = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert_eq!(seen, Ok(None), "no certificate: only enrolment may follow");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let c = collector();
    let other = collector();
    let (addr, server) = serve_one(&c.pki).await;
    // Issued by another collector's CA, for a key of the agent's own.
    let (_, _, chain, key) = agent_identity(&other.pki);
    let config = client_config(
        c.pki.server_ca_der(),
        &[&rustls::version::TLS13],
        Some((chain, key)),
    );
    let client = tokio::time::timeout(LIMIT, connect(addr, config)).await.unwrap();
    assert!(client.is_err(), "the client gets no byte: {client:?}");
    let seen = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    let err = seen.unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("unknown issuer") || err.contains("BadSignature"),
        "{err}"
    );
}

#[tokio::test]
async fn tls12_is_refused() {
    let c = collector();
    let (addr, server) = serve_one(&c.pki).await;
    let (_, _, chain, key) = agent_identity(&c.pki);
    let config = client_config(
        c.pki.server_ca_der(),
        &[&rustls::version::TLS12],
        Some((chain, key)),
    );
    let client = tokio::time::timeout(LIMIT, connect(addr, config)).await.unwrap();
    let err = client.unwrap_err();
    assert!(
        err.to_lowercase().contains("protocol") || err.contains("version"),
        "{err}"
    );
    let seen = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(seen.is_err(), "{seen:?}");
}

#[tokio::test]
async fn a_client_that_trusts_another_ca_refuses_the_server() {
    // What the token's pin protects against, seen from the agent's side: a server whose chain
    // does not lead to the expected CA fails the handshake before any secret is sent.
    let c = collector();
    let other = collector();
    let (addr, server) = serve_one(&c.pki).await;
    let config = client_config(other.pki.server_ca_der(), &[&rustls::version::TLS13], None);
    let client = tokio::time::timeout(LIMIT, connect(addr, config)).await.unwrap();
    let err = client.unwrap_err();
    // Both CAs are named after the same organisation: the signature is what fails.
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(tokio::time::timeout(LIMIT, server)
        .await
        .unwrap()
        .unwrap()
        .is_err());
}
