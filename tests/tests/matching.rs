//! The agent's matching on real files, processes and connections, with the real binary.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use picket_e2e::{bin, file_sha256, indicator, s, Child, SetSigner, EICAR, EICAR_SHA256};
use picket_proto::{FileCondition, Hash, IpNet, NamePattern, Observable};

fn sha256_of(hex: &str) -> Hash {
    Hash::from_hex(hex).unwrap()
}

/// Runs `cmd`, killing it if it has not finished within `limit` (a hung scan fails the test
/// instead of hanging it).
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}; stderr so far:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn findings(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn scan(set: &Path, anchor: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(bin("picket-agent"));
    cmd.args(["scan", "--json", "--set", s(set), "--trust", s(anchor)])
        .args(extra);
    run_bounded(cmd, Duration::from_secs(60))
}

#[test]
fn files_are_found_by_hash_name_and_path_in_a_hostile_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(root.join("a/b/c/d")).unwrap();
    fs::create_dir_all(root.join("Users/bob/Startup")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    // EICAR deep and renamed, a hard link to it, and a copy outside the root behind a link.
    let deep = root.join("a/b/c/d/quarterly-report.pdf");
    fs::write(&deep, EICAR).unwrap();
    fs::hard_link(&deep, root.join("a/hard-link.bin")).unwrap();
    fs::write(outside.join("eicar.com"), EICAR).unwrap();
    symlink(outside.join("eicar.com"), root.join("link-out-of-root.com")).unwrap();
    symlink(&outside, root.join("dir-link-out")).unwrap();
    // A symlink loop, a FIFO, and a large sparse file above the size limit holding nothing.
    symlink(".", root.join("a/loop")).unwrap();
    symlink(root.join("a/b"), root.join("a/b/c/back-up")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(root.join("a/pipe"))
        .status()
        .unwrap()
        .success());
    let sparse = fs::File::create(root.join("a/big.img")).unwrap();
    sparse.set_len(3 << 30).unwrap();
    // Files matched by name glob, path glob and a compound (name and size).
    fs::write(root.join("a/photo.jpg.locky"), b"ciphertext").unwrap();
    fs::write(root.join("Users/bob/Startup/updater.lnk"), b"lnk").unwrap();
    fs::write(root.join("a/invoice.exe"), EICAR).unwrap();
    fs::write(root.join("a/invoice.exe.txt"), b"not 68 bytes").unwrap();

    let mut signer = SetSigner::new(tmp.path());
    let set = signer.write(
        "set.pkt",
        &[
            indicator(
                "indicator--eicar",
                Observable::FileHash {
                    hash: sha256_of(EICAR_SHA256),
                    size: Some(68),
                },
            ),
            indicator(
                "indicator--locky",
                Observable::FileName(NamePattern {
                    text: "*.locky".into(),
                    glob: true,
                }),
            ),
            indicator(
                "indicator--startup",
                Observable::PathGlob("**/Startup/*.lnk".into()),
            ),
            indicator(
                "indicator--invoice",
                Observable::FileAll(vec![
                    FileCondition::Name(NamePattern {
                        text: "invoice.exe".into(),
                        glob: false,
                    }),
                    FileCondition::Size(68),
                ]),
            ),
        ],
    );
    let out = scan(&set, &signer.anchor(), &["--max-file-size", "1048576", s(&root)]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: BTreeSet<(String, String)> = findings(&out)
        .iter()
        .map(|f| {
            let path = f["path"].as_str().unwrap();
            let rel = Path::new(path).strip_prefix(&root).unwrap().display().to_string();
            (rel, f["indicator"].as_str().unwrap().to_owned())
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("a/b/c/d/quarterly-report.pdf", "indicator--eicar"),
        ("a/hard-link.bin", "indicator--eicar"),
        ("a/invoice.exe", "indicator--eicar"),
        ("a/invoice.exe", "indicator--invoice"),
        ("a/photo.jpg.locky", "indicator--locky"),
        ("Users/bob/Startup/updater.lnk", "indicator--startup"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(got, want);
    let err = String::from_utf8_lossy(&out.stderr);
    // The links, the FIFO and the sparse file were skipped, not followed, read or hashed.
    assert!(err.contains("skipped"), "{err}");
    assert!(
        !err.contains("outside"),
        "nothing outside the root is touched: {err}"
    );
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

#[test]
fn an_unreadable_file_is_reported_and_the_scan_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("locked-dir")).unwrap();
    fs::write(root.join("secret.bin"), EICAR).unwrap();
    fs::set_permissions(root.join("secret.bin"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(root.join("locked-dir"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::write(root.join("visible.com"), EICAR).unwrap();
    let mut signer = SetSigner::new(tmp.path());
    let set = signer.write(
        "set.pkt",
        &[indicator(
            "indicator--eicar",
            Observable::FileHash {
                hash: sha256_of(EICAR_SHA256),
                size: None,
            },
        )],
    );
    for p in [&set, &signer.anchor()] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
    }
    // Root reads everything: run the agent as nobody, as an unprivileged user would.
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin("picket-agent"));
        c
    } else {
        Command::new(bin("picket-agent"))
    };
    cmd.args([
        "scan",
        "--json",
        "--set",
        s(&set),
        "--trust",
        s(&signer.anchor()),
        s(&root),
    ]);
    let out = run_bounded(cmd, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("secret.bin: Permission denied"), "{err}");
    assert!(err.contains("locked-dir: Permission denied"), "{err}");
    assert!(err.contains("2 errors"), "{err}");
    let f = findings(&out);
    assert_eq!(f.len(), 1);
    assert!(f[0]["path"].as_str().unwrap().ends_with("visible.com"));
}

/// Waits until `/proc/PID/cmdline` shows the process has exec'd (spawn returns before that).
fn wait_exec(pid: u32, needle: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("process {pid} never showed {needle:?}");
}

fn unique_sleep(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = fs::read("/bin/sleep").unwrap();
    // Trailing bytes leave an ELF file runnable and give this copy a digest of its own.
    bytes.extend_from_slice(format!("picket-test-{name}-{}", std::process::id()).as_bytes());
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(&bytes).unwrap();
    drop(f);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn processes_are_found_by_executable_hash_name_and_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let running = unique_sleep(tmp.path(), "evil-implant");
    let deleted = unique_sleep(tmp.path(), "vanishing-implant");
    let running_hash = file_sha256(&running);
    let deleted_hash = file_sha256(&deleted);
    let a = Child(Command::new(&running).arg("30").spawn().unwrap());
    let b = Child(Command::new(&deleted).arg("30").spawn().unwrap());
    let marker = format!("picket-marker-{}", std::process::id());
    let c = Child(
        Command::new("sh")
            .args(["-c", &format!("sleep 30; : {marker}")])
            .spawn()
            .unwrap(),
    );
    wait_exec(a.0.id(), "evil-implant");
    wait_exec(b.0.id(), "vanishing-implant");
    wait_exec(c.0.id(), &marker);
    // The malware trick: delete the executable once it runs.
    fs::remove_file(&deleted).unwrap();

    let mut signer = SetSigner::new(tmp.path());
    let set = signer.write(
        "set.pkt",
        &[
            indicator(
                "indicator--running",
                Observable::ProcessHash(sha256_of(&running_hash)),
            ),
            indicator(
                "indicator--deleted",
                Observable::ProcessHash(sha256_of(&deleted_hash)),
            ),
            indicator("indicator--cmdline", Observable::CommandLine(marker.clone())),
            indicator("indicator--name", Observable::ProcessName("evil-implant".into())),
        ],
    );
    let out = scan(&set, &signer.anchor(), &["--processes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let f = findings(&out);
    let has = |id: &str, pid: u32| {
        f.iter().any(|x| {
            x["indicator"] == id
                && x["observed"] == "process"
                && x["process"].as_str().unwrap().contains(&format!("(pid {pid})"))
        })
    };
    assert!(has("indicator--running", a.0.id()), "{f:?}");
    assert!(has("indicator--name", a.0.id()), "{f:?}");
    assert!(
        has("indicator--deleted", b.0.id()),
        "hashed through /proc/PID/exe after deletion: {f:?}"
    );
    assert!(has("indicator--cmdline", c.0.id()), "{f:?}");
    let hash_value = f
        .iter()
        .find(|x| x["indicator"] == "indicator--running")
        .map(|x| x["value"].as_str().unwrap().to_owned());
    assert_eq!(hash_value.as_deref(), Some(running_hash.as_str()));
}

#[test]
fn a_connection_to_an_address_inside_a_cidr_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.77.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = std::net::TcpStream::connect(addr).unwrap();
    let _server = listener.accept().unwrap();
    let mut signer = SetSigner::new(tmp.path());
    let set = signer.write(
        "set.pkt",
        &[
            indicator(
                "indicator--cidr",
                Observable::RemoteAddr(IpNet::parse("127.77.0.0/16").unwrap()),
            ),
            indicator(
                "indicator--other",
                Observable::RemoteAddr(IpNet::parse("198.51.100.0/24").unwrap()),
            ),
        ],
    );
    let out = scan(&set, &signer.anchor(), &["--processes"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = findings(&out);
    assert!(
        f.iter()
            .any(|x| x["indicator"] == "indicator--cidr" && x["connection"] == addr.to_string()),
        "{f:?}"
    );
    assert!(f.iter().all(|x| x["indicator"] != "indicator--other"));
}

#[test]
fn a_set_that_would_not_fit_the_memory_limit_is_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut signer = SetSigner::new(tmp.path());
    let many: Vec<_> = (0..5000u32)
        .map(|i| {
            let digest = picket_proto::sha256(&i.to_le_bytes());
            indicator(
                &format!("indicator--{i:08}"),
                Observable::FileHash {
                    hash: Hash {
                        kind: picket_proto::HashKind::Sha256,
                        value: digest.to_vec(),
                    },
                    size: None,
                },
            )
        })
        .collect();
    let set = signer.write("set.pkt", &many);
    let out = scan(
        &set,
        &signer.anchor(),
        &["--memory-limit", "64KiB", s(tmp.path())],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("over the memory limit of 64 KiB; raise limits.memory_limit"),
        "{err}"
    );
    // With room, the same set loads and scans.
    let out = scan(
        &set,
        &signer.anchor(),
        &["--memory-limit", "16MiB", s(tmp.path())],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
