//! Helpers for Picket's end-to-end tests: they run the real `picket-collector` and
//! `picket-agent` binaries, built by `cargo build` into the same target directory as the tests.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The 68-byte EICAR test file (no trailing newline).
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// EICAR's SHA-256.
pub const EICAR_SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
/// EICAR's SHA-1.
pub const EICAR_SHA1: &str = "3395856ce81f2b7382dee72602f798b642f14140";
/// EICAR's MD5.
pub const EICAR_MD5: &str = "44d88612fea8a8f36de82e1278abb02f";

/// The path of a workspace binary (`picket-collector`, `picket-agent`).
///
/// Tests run from `target/<profile>/deps/`; the binaries sit one level up. The README's test
/// command builds them first.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the end-to-end tests",
        path.display()
    );
    path
}

/// Runs a binary with arguments and returns its output.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"))
}

/// Runs a binary and asserts it exits 0; returns stdout.
pub fn ok(name: &str, args: &[&str]) -> String {
    let out = run(name, args);
    assert!(
        out.status.success(),
        "{name} {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A collector data directory made by `picket-collector init`, inside a temporary directory.
#[derive(Debug)]
pub struct Collector {
    /// The temporary directory holding everything.
    pub tmp: tempfile::TempDir,
    /// The data directory.
    pub data: PathBuf,
}

impl Collector {
    /// Runs `init` in a fresh temporary directory.
    pub fn init() -> Collector {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let data = tmp.path().join("collector");
        ok(
            "picket-collector",
            &["init", "--data", s(&data), "--org", "Test Org"],
        );
        Collector { tmp, data }
    }

    /// The data directory as a string.
    pub fn data(&self) -> &str {
        s(&self.data)
    }

    /// The trust anchor.
    pub fn anchor(&self) -> PathBuf {
        self.data.join("root.pub")
    }

    /// The root private key `init` wrote.
    pub fn root_key(&self) -> PathBuf {
        self.tmp.path().join("collector.root-OFFLINE.key")
    }

    /// Writes a list file and ingests it.
    pub fn ingest_list(&self, name: &str, lines: &[&str]) {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, lines.join("\n")).expect("writing a list");
        ok("picket-collector", &["ingest", "--data", self.data(), s(&p)]);
    }

    /// Publishes (forcing a new version) with extra arguments.
    pub fn publish(&self, extra: &[&str]) -> String {
        let mut args = vec!["publish", "--data", self.data(), "--force"];
        args.extend_from_slice(extra);
        ok("picket-collector", &args)
    }

    /// Exports the current set to `name` in the temporary directory.
    pub fn export(&self, name: &str) -> PathBuf {
        let out = self.tmp.path().join(name);
        ok(
            "picket-collector",
            &["export-set", "--data", self.data(), "--out", s(&out)],
        );
        out
    }
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}
