//! Helpers shared by the collector's integration tests.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use picket_collector::datadir::DataDir;
use picket_collector::ingest::{parse_file, Defaults};
use picket_proto::{Severity, Tlp};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The Python of the test virtual environment that `test.sh` makes (or `PICKET_PYTHON`),
/// holding the third-party judges. A test that needs it fails with this message rather than
/// passing without it. (tests/lib.rs has the same for the end-to-end crate, which the
/// collector's tests cannot depend on.)
pub fn python() -> PathBuf {
    let path = std::env::var_os("PICKET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    assert!(
        path.exists(),
        "{} is missing: run ./test.sh, which installs the PyPI tools the interop tests need",
        path.display()
    );
    path
}

/// The `kind` subdirectory (`misp`, `stix`) of the shared example data, read in place:
/// `$PICKET_SHARED_DATA/<kind>`, by default `../shared/data/<kind>` next to the workspace. A
/// test that needs it fails, rather than passes, when it is missing.
pub fn shared_data(kind: &str) -> PathBuf {
    let base = std::env::var_os("PICKET_SHARED_DATA").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
        PathBuf::from,
    );
    let dir = base.join(kind);
    assert!(
        dir.is_dir(),
        "{}: the shared {} examples are missing (set PICKET_SHARED_DATA to the shared data directory)",
        dir.display(),
        kind.to_uppercase()
    );
    dir
}

/// Ingests `file` into the store of the data directory `data` as source `source` (TLP:GREEN,
/// confidence 50, medium severity), stored at `at`. Returns the stored indicator ids, in the
/// file's order.
pub fn ingest_file(data: &Path, file: &Path, source: &str, at: i64) -> Vec<String> {
    let defaults = Defaults {
        source: source.into(),
        tlp: Tlp::Green,
        confidence: 50,
        severity: Severity::Medium,
    };
    let batch = parse_file(file, &std::fs::read_to_string(file).unwrap(), &defaults).unwrap();
    let dir = DataDir::open(data).unwrap();
    dir.store().unwrap().upsert_batch(&batch, source, at).unwrap();
    batch.items.iter().map(|i| i.indicator.id.clone()).collect()
}

/// Records in the store of the data directory `data` that this organisation's agent `agent`
/// sighted `indicator` (a file hash, in the file at `location`) seven times, from `first_seen`
/// to `last_seen`, reported at `last_seen` against set version 1.
pub fn record_sighting(
    data: &Path,
    agent: &str,
    indicator: &str,
    location: &str,
    first_seen: i64,
    last_seen: i64,
) {
    let conn = rusqlite::Connection::open(data.join("picket.db")).unwrap();
    conn.execute(
        "INSERT INTO sightings (org, agent, indicator, what, observed, location, first_seen, last_seen,
                                count, set_version, received)
         VALUES (1, ?1, ?2, 'file-hash', 'file', ?3, ?4, ?5, 7, 1, ?5)",
        rusqlite::params![agent, indicator, location, first_seen, last_seen],
    )
    .unwrap();
}

/// Runs the real `picket-collector` binary with `args`; fails the test, showing its output,
/// unless it succeeds. Returns its standard output.
pub fn run_collector(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_picket-collector"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "picket-collector {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The client side of the TAXII server's HTTPS: TLS 1.3 only, ALPN `http/1.1`, trusting only
/// the data directory's CA (`DATA/tls/ca.pem`).
pub fn taxii_client_config(data: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(data.join("tls/ca.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Standard base64 (with padding) of `s`, for HTTP Basic credentials: the collector's own
/// encoder, which its TAXII client uses.
pub fn b64(s: &str) -> String {
    picket_collector::taxii::base64(s.as_bytes())
}
