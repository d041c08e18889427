//! Helpers for Picket's end-to-end tests: they run the real `picket-collector` and
//! `picket-agent` binaries, built by `cargo build` into the same target directory as the tests.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

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

/// Runs `picket-agent import-set --state STATE --trust ANCHOR FILE`.
pub fn import_set(state: &Path, anchor: &Path, file: &Path) -> Output {
    run(
        "picket-agent",
        &["import-set", "--state", s(state), "--trust", s(anchor), s(file)],
    )
}

/// Runs `import-set` and asserts it succeeded; returns stdout.
pub fn import_ok(state: &Path, anchor: &Path, file: &Path) -> String {
    ok(
        "picket-agent",
        &["import-set", "--state", s(state), "--trust", s(anchor), s(file)],
    )
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

/// A signer of arbitrary indicator sets, for tests of kinds a plain list cannot carry (names,
/// globs, processes, command lines). It plays a whole collector with fixed keys: root v1, one
/// channel, and writes the trust anchor and set files the real agent reads.
#[derive(Debug)]
pub struct SetSigner {
    root_key: picket_proto::SigningKey,
    publisher: picket_proto::SigningKey,
    stamper: picket_proto::SigningKey,
    root_bytes: Vec<u8>,
    /// Where the anchor and set files go.
    pub dir: PathBuf,
    version: u64,
}

/// The wall clock in unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl SetSigner {
    /// A signer writing into `dir`.
    pub fn new(dir: &Path) -> SetSigner {
        use picket_proto::{ChannelSpec, PayloadKind, Role, RoleSpec, Root, SigningKey, Tlp};
        let key = |seed: u8, role| SigningKey::from_seed([seed; 32], role).expect("a seed");
        let root_key = key(11, Role::Root);
        let publisher = key(12, Role::Publisher);
        let stamper = key(13, Role::Timestamp);
        let now = unix_now();
        let root = Root {
            version: 1,
            created: now - 60,
            expires: now + 86_400,
            org: "Test Org".into(),
            root: RoleSpec::new(vec![root_key.public()], 1, 400 * 86_400),
            channels: vec![ChannelSpec {
                name: "default".into(),
                publisher: RoleSpec::new(vec![publisher.public()], 1, 30 * 86_400),
                timestamp: RoleSpec::new(vec![stamper.public()], 1, 30 * 86_400),
                max_tlp: Tlp::Amber,
            }],
            tls_ca_pin: None,
        };
        let root_bytes = picket_proto::sign_document(&root, PayloadKind::Root, &[&root_key]);
        let anchor = picket_proto::TrustAnchor {
            org: "Test Org".into(),
            root_version: 1,
            threshold: 1,
            keys: vec![root_key.public()],
        };
        std::fs::write(dir.join("root.pub"), anchor.to_text()).expect("writing root.pub");
        SetSigner {
            root_key,
            publisher,
            stamper,
            root_bytes,
            dir: dir.to_owned(),
            version: 0,
        }
    }

    /// The trust anchor's path.
    pub fn anchor(&self) -> PathBuf {
        self.dir.join("root.pub")
    }

    /// Signs the next set version holding `indicators` and writes it to `name`.
    pub fn write(&mut self, name: &str, indicators: &[picket_proto::Indicator]) -> PathBuf {
        use picket_proto::{Record, Snapshot};
        self.version += 1;
        let records = indicators
            .iter()
            .map(|i| Record::from_indicator(i).expect("a valid indicator"))
            .collect();
        let snapshot = Snapshot::new("default", self.version, records).expect("unique ids");
        let path = self.dir.join(name);
        self.write_snapshot(&path, &snapshot);
        path
    }

    /// Signs `snapshot` as it is (its version becomes the manifest's and the timestamp's) and
    /// writes the set file to `path`. Returns the snapshot's encoded length.
    pub fn write_snapshot(&self, path: &Path, snapshot: &picket_proto::Snapshot) -> usize {
        use picket_proto::{sha256, Content, Manifest, PayloadKind, SetFile, Timestamp, Tlp};
        let _ = &self.root_key;
        let now = unix_now();
        let bytes = snapshot.encode();
        let manifest = Manifest {
            channel: snapshot.channel.clone(),
            version: snapshot.version,
            created: now - 1,
            expires: now + 86_400,
            sha256: sha256(&bytes),
            length: bytes.len() as u64,
            max_tlp: Tlp::Green,
            deltas: Vec::new(),
        };
        let manifest = picket_proto::sign_document(&manifest, PayloadKind::Manifest, &[&self.publisher]);
        let ts = Timestamp {
            channel: snapshot.channel.clone(),
            version: snapshot.version,
            created: now - 1,
            expires: now + 86_400,
            manifest_version: snapshot.version,
            manifest_sha256: sha256(&manifest),
            manifest_length: manifest.len() as u64,
        };
        let ts = picket_proto::sign_document(&ts, PayloadKind::Timestamp, &[&self.stamper]);
        let file = SetFile {
            channel: &snapshot.channel,
            roots: vec![(1, &self.root_bytes)],
            timestamp: &ts,
            manifest: &manifest,
            content: Content::Full(&bytes),
        };
        std::fs::write(path, file.encode()).expect("writing a set file");
        bytes.len()
    }
}

/// An indicator with test metadata.
pub fn indicator(id: &str, observable: picket_proto::Observable) -> picket_proto::Indicator {
    picket_proto::Indicator {
        id: id.into(),
        observable,
        meta: picket_proto::Meta {
            confidence: 90,
            severity: picket_proto::Severity::High,
            tlp: picket_proto::Tlp::Green,
            valid_until: None,
            source: "test".into(),
        },
    }
}

/// The indicator for the EICAR file's SHA-256 (`indicator--eicar`, any size).
pub fn eicar_indicator() -> picket_proto::Indicator {
    indicator(
        "indicator--eicar",
        picket_proto::Observable::FileHash {
            hash: picket_proto::Hash::from_hex(EICAR_SHA256).expect("EICAR_SHA256 is hex"),
            size: None,
        },
    )
}

/// The SHA-256 of a file, in hex.
pub fn file_sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("reading a file to hash");
    hex::encode(picket_proto::sha256(&bytes))
}

/// A child process that is killed when dropped.
#[derive(Debug)]
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `picket-collector serve` (SIGKILLed when dropped), with its output read line by
/// line as it comes and the addresses it said it listens on.
#[derive(Debug)]
pub struct Serve {
    /// Its standard output, line by line.
    pub out: Receiver<String>,
    /// Its standard error (its log), line by line.
    pub err: Receiver<String>,
    /// The agent channel's `ADDR:PORT`.
    pub channel: String,
    /// With `--http`: `https://ADDR:PORT`, where the TAXII server (`/taxii2/`) and the
    /// dashboard (`/ui/`) are.
    pub https: Option<String>,
    /// The process.
    pub child: Child,
}

impl Serve {
    /// Starts `serve --data DATA --listen LISTEN` with `extra` arguments and waits (20 s at most)
    /// until it says where it listens: the agent channel, and the HTTPS listener when `extra`
    /// holds `--http`.
    pub fn start(data: &str, listen: &str, extra: &[&str]) -> Serve {
        let limit = Duration::from_secs(20);
        let mut child = Command::new(bin("picket-collector"))
            .args(["serve", "--data", data, "--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting picket-collector serve");
        let out = lines(child.stdout.take().expect("piped"));
        let err = lines(child.stderr.take().expect("piped"));
        let child = Child(child);
        let line = wait_line(&out, "agent channel listening on", limit);
        let channel = line.rsplit(' ').next().unwrap_or_default().trim().to_owned();
        let https = extra.contains(&"--http").then(|| {
            let line = wait_line(&out, "TAXII 2.1 server listening on", limit);
            line.split_whitespace()
                .find(|w| w.starts_with("https://"))
                .and_then(|w| w.strip_suffix("/taxii2/"))
                .unwrap_or_else(|| panic!("no https://ADDR/taxii2/ in {line:?}"))
                .to_owned()
        });
        Serve {
            out,
            err,
            channel,
            https,
            child,
        }
    }

    /// The HTTPS listener's `ADDR:PORT` (started with `--http`).
    pub fn https_addr(&self) -> &str {
        self.https
            .as_deref()
            .and_then(|u| u.strip_prefix("https://"))
            .expect("serve was started with --http")
    }
}

/// `picket-agent run --config CONFIG`, the daemon, with its output read line by line as it
/// comes. Killed (SIGKILL) when dropped, unless it exited first.
#[derive(Debug)]
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Its standard output: one JSON sighting a line.
    pub stdout: Receiver<String>,
    /// Its standard error: the log.
    pub stderr: Receiver<String>,
}

impl Daemon {
    /// Starts the daemon on `config`.
    pub fn start(config: &Path) -> Daemon {
        let mut child = Command::new(bin("picket-agent"))
            .args(["run", "--config", s(config)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting picket-agent run");
        let stdout = lines(child.stdout.take().expect("stdout is piped"));
        let stderr = lines(child.stderr.take().expect("stderr is piped"));
        Daemon {
            child: Child(child),
            stdout,
            stderr,
        }
    }

    /// Sends `signal` (`TERM`, `HUP`) to the daemon with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.0.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits at most `limit` for the daemon to exit, and returns how it did.
    pub fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.0.try_wait().expect("polling the daemon") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// The Python of the test virtual environment that `test.sh` makes, holding the third-party
/// judges (stix2-matcher, stix2-validator, medallion, taxii2-client). A test that needs one
/// fails with this message rather than passing without it.
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

/// The lines a child writes to `r`, as they come, on a channel (a thread reads them).
pub fn lines(r: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits, at most `limit`, for a line containing `needle`; panics with the lines seen if none
/// comes.
pub fn wait_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str, limit: std::time::Duration) -> String {
    let deadline = std::time::Instant::now() + limit;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!(
        "no line with {needle:?} within {limit:?}; saw:\n{}",
        seen.join("\n")
    );
}

/// `len` random characters of `[a-z0-9]` after `prefix`, from the kernel's random source: a
/// name no test data or system file holds by chance (a privacy canary).
pub fn random_name(prefix: &str, len: usize) -> String {
    use std::io::Read;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // Bytes of 252 (= 7 * 36) and above are skipped, so every character is equally likely;
    // four bytes a character leave plenty to spare (about one byte in sixty is skipped).
    let mut bytes = vec![0u8; 4 * len + 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    let mut out = String::from(prefix);
    out.extend(
        bytes
            .iter()
            .filter(|b| **b < 252)
            .take(len)
            .map(|b| ALPHABET[usize::from(b % 36)] as char),
    );
    assert_eq!(out.len(), prefix.len() + len, "too few random bytes under 252");
    out
}

/// Whether `needle` occurs in `haystack` in any case (ASCII case folding).
pub fn contains_ci(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.to_ascii_lowercase().into_bytes();
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(&needle))
}

/// How [`on_host`] enters its namespaces: as root, new UTS and mount namespaces; otherwise a
/// user namespace too, mapping the caller to root inside it.
fn namespace_prefix() -> &'static [&'static str] {
    static PREFIX: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        const AS_ROOT: &[&str] = &["--uts", "--mount"];
        const AS_USER: &[&str] = &["--user", "--map-root-user", "--uts", "--mount"];
        let root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(2) == Some("0"))
            })
            .unwrap_or(false);
        let order: &[&'static [&'static str]] = if root { &[AS_ROOT, AS_USER] } else { &[AS_USER] };
        let mut tried = Vec::new();
        for prefix in order {
            // The probe does what `on_host` does: a host name, and a bind mount over /home.
            let probe = Command::new("unshare")
                .args(*prefix)
                .args(["sh", "-c", "hostname picket-probe && mount --bind /tmp /home"])
                .output();
            match probe {
                Ok(out) if out.status.success() => return prefix,
                Ok(out) => tried.push(format!(
                    "unshare {}: {}",
                    prefix.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => tried.push(format!("unshare {}: {e}", prefix.join(" "))),
            }
        }
        panic!(
            "this test plays several hosts, each in its own UTS and mount namespace (its own host \
             name, its own /home), and cannot here: run it as root, or where unprivileged user \
             namespaces are allowed. Tried:\n{}",
            tried.join("\n")
        );
    })
}

/// Whether [`on_host`] runs as the real root (so it can give home directories to other users).
pub fn on_host_as_root() -> bool {
    !namespace_prefix().contains(&"--user")
}

/// A command that runs `program args` as if on another machine: in new UTS and mount
/// namespaces whose host name is `host` and whose `/home` is `home` bind-mounted (the mount
/// stays private to the namespace), with nothing of either in its environment. `unshare`
/// runs without `--fork` and the shell `exec`s, so the process started *is* `program`: killing
/// it (as [`Child`] does on drop) leaves nothing behind. Panics with what was tried when this
/// machine allows neither the root nor the user-namespace form.
pub fn on_host(host: &str, home: &Path, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(namespace_prefix())
        .args([
            "sh",
            "-c",
            r#"hostname "$PICKET_HOST" && mount --bind "$PICKET_HOME" /home && unset PICKET_HOST PICKET_HOME && exec "$@""#,
            "sh",
        ])
        .arg(program)
        .args(args)
        .env("PICKET_HOST", host)
        .env("PICKET_HOME", home);
    cmd
}
