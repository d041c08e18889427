//! The host shells against the real kernel: real processes, real sockets, real priorities. Plus
//! table tests for the pure `/proc/net` parser with lines taken from a real machine.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use picket_agent::digest::Kinds;
use picket_agent::host::{
    lower_current_thread, open_exe, parse_proc_net, read_sockets, socket_owners, FileIdentity, Lowered,
    Poller, ProcessInfo, Proto, Socket, SocketState,
};
use proptest::prelude::*;

/// A child process that is killed and reaped when the test ends, pass or fail.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Child {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// Spawns `cmd`, retrying while the executable is busy: a file just written can be held open for
/// writing for an instant by a child another test thread is forking (the fd is inherited until
/// that child's exec closes it), and exec then fails with ETXTBSY.
fn spawn(cmd: &mut Command) -> Child {
    for _ in 0..100 {
        match cmd.spawn() {
            Ok(child) => return exec_done(Child(child)),
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("spawning {cmd:?}: {e}"),
        }
    }
    panic!("spawning {cmd:?}: executable stayed busy");
}

/// Waits until `child` has finished its `execve`. `spawn` returns as soon as the kernel has
/// replaced the child's memory, a moment before it writes the new command line, which
/// `/proc/PID/cmdline` shows empty until then.
fn exec_done(child: Child) -> Child {
    let cmdline = format!("/proc/{}/cmdline", child.pid());
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::read(&cmdline).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "{cmdline} stayed empty");
        std::thread::yield_now();
    }
    child
}

/// Copies `sleep` into `dir` as `name`, with `marker` appended so its hash is unique to the test
/// (bytes after an ELF file's last segment are never loaded). Returns the path and the content.
fn copy_sleep(dir: &Path, name: &str, marker: &str) -> (PathBuf, Vec<u8>) {
    let bytes = sleep_bytes(marker);
    let path = dir.join(name);
    fs::write(&path, &bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    (path, bytes)
}

/// The bytes of `sleep` with `marker` appended.
fn sleep_bytes(marker: &str) -> Vec<u8> {
    let source = ["/bin/sleep", "/usr/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    let mut bytes = fs::read(source).unwrap();
    bytes.extend_from_slice(format!("\npicket test marker {marker} {}\n", std::process::id()).as_bytes());
    bytes
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .unwrap()
}

fn sha256_kind() -> Kinds {
    Kinds {
        sha256: true,
        ..Kinds::default()
    }
}

fn find(list: &[ProcessInfo], pid: u32) -> &ProcessInfo {
    list.iter()
        .find(|p| p.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} not listed"))
}

#[test]
fn host_process_is_listed_with_full_name_exe_cmdline_and_exe_hash() {
    let dir = tempfile::tempdir().unwrap();
    // Longer than the kernel's 15-byte `comm`.
    let name = "picket-sleeper-with-a-long-name";
    let (path, bytes) = copy_sleep(dir.path(), name, "listed");
    let marker = format!("picket-test-marker-{}", std::process::id());
    let child = spawn(Command::new(&path).arg0(&marker).arg("30"));

    let all = Poller::new().snapshot();
    let p = find(&all, child.pid());
    assert_eq!(p.exe.as_deref(), Some(path.as_path()));
    assert_eq!(p.name, name);
    assert_eq!(p.comm, &name[..15]);
    assert_eq!(p.cmdline, format!("{marker} 30"));
    assert!(all.iter().filter(|q| q.cmdline.contains(&marker)).count() == 1);

    let mut exe = open_exe(p).unwrap();
    assert!(!exe.deleted());
    assert_eq!(exe.identity(), FileIdentity::of(&fs::metadata(&path).unwrap()));
    let mut buf = vec![0u8; 64 << 10];
    let digests = exe.hash(sha256_kind(), &mut buf).unwrap().unwrap();
    assert_eq!(digests.sha256, Some(sha256(&bytes)));
    assert_eq!((digests.md5, digests.sha1), (None, None));
    // A second hash of the same open file starts from the beginning again.
    assert_eq!(exe.hash(sha256_kind(), &mut buf).unwrap().unwrap(), digests);
}

#[test]
fn host_deleted_executable_is_hashed_through_proc_exe() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = copy_sleep(dir.path(), "picket-deleted", "deleted");
    let identity = FileIdentity::of(&fs::metadata(&path).unwrap());
    let child = spawn(Command::new(&path).arg("30"));
    fs::remove_file(&path).unwrap();
    assert!(!path.exists());

    let all = Poller::new().snapshot();
    let p = find(&all, child.pid());
    // The path it had, without the kernel's " (deleted)".
    assert_eq!(p.exe.as_deref(), Some(path.as_path()));
    assert_eq!(p.name, "picket-deleted");
    let mut exe = open_exe(p).unwrap();
    assert!(exe.deleted());
    // Unlinking changes the inode's ctime, so only (dev, ino, size) stay the same.
    let now = exe.identity();
    assert_eq!(
        (now.dev, now.ino, now.size),
        (identity.dev, identity.ino, identity.size)
    );
    let digests = exe.hash(sha256_kind(), &mut vec![0u8; 8192]).unwrap().unwrap();
    assert_eq!(digests.sha256, Some(sha256(&bytes)));
}

#[test]
fn host_fileless_executable_run_from_a_memfd_is_hashed() {
    // What fileless malware does: write the program into anonymous memory and execute it from
    // there, leaving no file on any disk.
    let bytes = sleep_bytes("memfd");
    let memfd = rustix::fs::memfd_create("picket-fileless", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let mut writer = fs::File::from(memfd);
    writer.write_all(&bytes).unwrap();
    // Executing a file open for writing fails with ETXTBSY: run it through a read-only descriptor.
    let reader = fs::File::open(format!("/proc/self/fd/{}", writer.as_raw_fd())).unwrap();
    drop(writer);
    let child = spawn(
        Command::new(format!("/proc/self/fd/{}", reader.as_raw_fd()))
            .arg0("innocent")
            .arg("30"),
    );
    drop(reader);

    let all = Poller::new().snapshot();
    let p = find(&all, child.pid());
    assert_eq!(p.exe.as_deref(), Some(Path::new("/memfd:picket-fileless")));
    assert_eq!(p.name, "memfd:picket-fileless");
    assert_eq!(p.cmdline, "innocent 30");
    let mut exe = open_exe(p).unwrap();
    assert!(exe.deleted());
    let digests = exe.hash(sha256_kind(), &mut vec![0u8; 8192]).unwrap().unwrap();
    assert_eq!(digests.sha256, Some(sha256(&bytes)));
}

#[test]
fn host_open_exe_refuses_a_process_whose_pid_was_reused_or_exited() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = copy_sleep(dir.path(), "picket-exited", "exited");
    let mut child = spawn(Command::new(&path).arg("30"));
    let all = Poller::new().snapshot();
    let p = find(&all, child.pid()).clone();

    // Same pid, another start: what a reused pid looks like.
    let reused = ProcessInfo {
        start: p.start + 1,
        ..p.clone()
    };
    assert_eq!(
        open_exe(&reused).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert_eq!(open_exe(&p).unwrap_err().kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn host_poller_reports_a_new_process_once() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = copy_sleep(dir.path(), "picket-poll", "poll");
    let mut poller = Poller::new();
    let first = poller.poll();
    assert!(
        first.iter().any(|p| p.pid == std::process::id()),
        "the first poll returns everything"
    );

    let child = spawn(Command::new(&path).arg("30"));
    let second = poller.poll();
    assert_eq!(second.iter().filter(|p| p.pid == child.pid()).count(), 1);
    assert!(
        !second.iter().any(|p| p.pid == std::process::id()),
        "this process was reported already"
    );
    let third = poller.poll();
    assert!(!third.iter().any(|p| p.pid == child.pid()), "reported twice");

    // A snapshot returns everything and counts as reported.
    let child2 = spawn(Command::new(&path).arg("31"));
    let all = poller.snapshot();
    assert!(all.iter().any(|p| p.pid == child.pid()) && all.iter().any(|p| p.pid == child2.pid()));
    assert!(!poller.poll().iter().any(|p| p.pid == child2.pid()));
}

#[test]
fn host_poller_reports_a_process_again_after_exec() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = copy_sleep(dir.path(), "picket-payload", "exec");
    // A shell that waits for a line on stdin, then execs the payload under the same pid.
    let mut child = spawn(
        Command::new("sh")
            .arg("-c")
            .arg("read line; exec \"$0\" 30")
            .arg(&path)
            .stdin(Stdio::piped()),
    );
    let mut poller = Poller::new();
    let before = find(&poller.poll(), child.pid()).clone();
    assert_ne!(before.exe.as_deref(), Some(path.as_path()));

    child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    // Wait for the exec to complete: the new executable, then the new command line.
    let cmdline = format!("/proc/{}/cmdline", child.pid());
    let expected = format!("{}\x0030\x00", path.display());
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::read(&cmdline).unwrap() != expected.as_bytes() {
        assert!(Instant::now() < deadline, "the shell did not exec the payload");
        std::thread::sleep(Duration::from_millis(5));
    }

    let after = poller.poll();
    let p = find(&after, child.pid());
    assert_eq!(p.start, before.start, "exec keeps the pid and start time");
    assert_eq!(p.exe.as_deref(), Some(path.as_path()));
    assert_eq!(p.name, "picket-payload");
    let digests = open_exe(p)
        .unwrap()
        .hash(sha256_kind(), &mut [0u8; 4096])
        .unwrap()
        .unwrap();
    assert_eq!(digests.sha256, Some(sha256(&bytes)));
    assert!(!poller.poll().iter().any(|p| p.pid == child.pid()));
}

/// Finds the socket from `local` to `remote` in the live list, and checks that this process owns
/// it.
fn assert_listed(proto: Proto, local: SocketAddr, remote: SocketAddr) {
    let sockets = read_sockets().unwrap();
    let found: Vec<&Socket> = sockets
        .iter()
        .filter(|s| s.proto == proto && s.local == local && s.remote == remote)
        .collect();
    assert_eq!(found.len(), 1, "{proto:?} {local} -> {remote} in {sockets:#?}");
    let socket = found[0];
    assert_eq!(socket.state, SocketState::Established);
    assert_ne!(socket.inode, 0);
    // This process, and for an instant any child another test forks (it holds a copy of every
    // descriptor until its exec closes them).
    let owners = socket_owners(&HashSet::from([socket.inode]));
    assert!(owners[&socket.inode].contains(&std::process::id()), "{owners:?}");
    // Listening sockets have no remote address and are left out.
    assert!(!sockets.iter().any(|s| s.remote.ip().is_unspecified()));
}

#[test]
fn host_tcp_connection_over_ipv4_is_listed_with_its_owner() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_server, _) = listener.accept().unwrap();
    assert_listed(
        Proto::Tcp,
        client.local_addr().unwrap(),
        listener.local_addr().unwrap(),
    );
    assert!(!read_sockets()
        .unwrap()
        .iter()
        .any(|s| s.local == listener.local_addr().unwrap() && s.state == SocketState::Listen));
}

#[test]
fn host_tcp_connection_over_ipv6_is_listed_with_its_owner() {
    let listener = TcpListener::bind("[::1]:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_server, _) = listener.accept().unwrap();
    assert_listed(
        Proto::Tcp,
        client.local_addr().unwrap(),
        listener.local_addr().unwrap(),
    );
}

#[test]
fn host_dual_stack_connection_is_reported_with_ipv4_addresses() {
    // An IPv6 listener on [::] accepts IPv4 clients; the accepted socket is in tcp6 with
    // IPv4-mapped addresses, and is reported with plain IPv4 ones.
    let listener = TcpListener::bind("[::]:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    let local: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(server.local_addr().unwrap().is_ipv6());
    assert_listed(Proto::Tcp, local, client.local_addr().unwrap());
}

#[test]
fn host_connected_udp_sockets_are_listed_with_their_owner() {
    let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
    v4.connect("127.0.0.1:9").unwrap();
    assert_listed(
        Proto::Udp,
        v4.local_addr().unwrap(),
        "127.0.0.1:9".parse().unwrap(),
    );
    let v6 = UdpSocket::bind("[::1]:0").unwrap();
    v6.connect("[::1]:9").unwrap();
    assert_listed(Proto::Udp, v6.local_addr().unwrap(), "[::1]:9".parse().unwrap());
    // An unconnected socket has no remote address and is not listed.
    let unconnected = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = unconnected.local_addr().unwrap();
    assert!(!read_sockets()
        .unwrap()
        .iter()
        .any(|s| s.proto == Proto::Udp && s.local == addr));
}

/// Fields 19 (nice) and 41 (policy) of `/proc/thread-self/stat`.
fn thread_nice_and_policy() -> (i32, u32) {
    let stat = fs::read_to_string("/proc/thread-self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
    // `fields[0]` is field 3.
    (fields[19 - 3].parse().unwrap(), fields[41 - 3].parse().unwrap())
}

const SCHED_IDLE: u32 = 5;

#[test]
fn host_priority_lowers_the_calling_thread_only() {
    std::thread::spawn(|| {
        let (nice, policy) = thread_nice_and_policy();
        assert_ne!((nice, policy), (19, SCHED_IDLE), "already lowered");

        let lowered = lower_current_thread().unwrap();
        assert_eq!(
            lowered,
            Lowered {
                nice: Some(19),
                idle_policy: true,
                io_idle: true,
            }
        );
        // The explicit idle I/O class, read back by util-linux independently of the agent.
        let tid = fs::read_link("/proc/thread-self").unwrap();
        let tid = tid.file_name().unwrap().to_str().unwrap();
        let out = Command::new("ionice").args(["-p", tid]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "idle");
        // Read back independently of the crates that set it.
        assert_eq!(thread_nice_and_policy(), (19, SCHED_IDLE));
        // Again: nothing to lower, and still no error.
        assert_eq!(lower_current_thread().unwrap(), lowered);
        // A thread started from here inherits both.
        let child = std::thread::spawn(thread_nice_and_policy).join().unwrap();
        assert_eq!(child, (19, SCHED_IDLE));
    })
    .join()
    .unwrap();
    // The test harness's thread is untouched.
    assert_ne!(thread_nice_and_policy(), (19, SCHED_IDLE));
}

// Lines below were read from a real Linux 6.x machine's /proc/net files (header lines included);
// the samples are little-endian, as the parser decodes in the host's byte order.

const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1079 1 00000000acbc6542 100 0 0 10 0
   1: 0100007F:8351 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 97710 1 00000000129ec7ac 100 0 0 10 0
   2: 0100007F:84D2 0100007F:8351 01 00000000:00000000 00:00000000 00000000     0        0 97711 2 00000000cd60ebb2 20 0 0 10 -1
   3: 0F02000A:C350 5DB8D822:01BB 06 00000000:00000000 03:00000D62 00000000     0        0 0 3 0000000000000000
   4: 0F02000A:D1A2 08080808:0035 02 00000001:00000000 01:0000007A 00000000  1000        0 424242 1 0000000000000000 100 0 0 10 -1
";

const TCP6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:A9AF 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 97716 1 0000000051abe6b2 100 0 0 10 0
   2: 00000000000000000000000001000000:C80F 00000000000000000000000001000000:AAF2 01 00000000:00000000 00:00000000 00000000     0        0 97715 1 000000007671999f 20 0 0 10 -1
   4: 0000000000000000FFFF00000100007F:A9AF 0000000000000000FFFF00000100007F:9CD2 01 00000000:00000000 00:00000000 00000000     0        0 97718 1 00000000dc1ce832 20 0 0 10 -1
   5: 000080FE00000000FF0000FE010000FE:0016 B80D0120000000000000000001000000:E1D4 08 00000000:00000000 00:00000000 00000000     0        0 5150 1 0000000000000000 20 4 30 10 -1
";

const UDP: &str = "\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 7176: 00000000:ADEF 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99132 2 000000004e72bbd8 0
16044: 0100007F:9093 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 97719 2 00000000620dca3c 0
";

const UDP6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
12253: 00000000000000000000000001000000:C1C4 00000000000000000000000001000000:14E9 01 00000000:00000000 00:00000000 00000000     0        0 97720 2 00000000b1ede0ce 0
";

fn sock(proto: Proto, local: &str, remote: &str, state: SocketState, inode: u64) -> Socket {
    Socket {
        proto,
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        state,
        inode,
    }
}

fn check(text: &str, proto: Proto, expected: &[Socket]) {
    assert_eq!(parse_proc_net(text, proto), expected, "{text}");
}

#[test]
#[cfg(target_endian = "little")]
fn host_parse_proc_net_table() {
    use SocketState::*;
    check(
        TCP,
        Proto::Tcp,
        &[
            sock(
                Proto::Tcp,
                "127.0.0.1:34002",
                "127.0.0.1:33617",
                Established,
                97711,
            ),
            // TIME_WAIT: still a remote address, no longer an owner.
            sock(Proto::Tcp, "10.0.2.15:50000", "34.216.184.93:443", TimeWait, 0),
            sock(Proto::Tcp, "10.0.2.15:53666", "8.8.8.8:53", SynSent, 424242),
        ],
    );
    check(
        TCP6,
        Proto::Tcp,
        &[
            sock(Proto::Tcp, "[::1]:51215", "[::1]:43762", Established, 97715),
            // IPv4-mapped: reported as IPv4.
            sock(
                Proto::Tcp,
                "127.0.0.1:43439",
                "127.0.0.1:40146",
                Established,
                97718,
            ),
            sock(
                Proto::Tcp,
                "[fe80::fe00:ff:fe00:1]:22",
                "[2001:db8::1]:57812",
                CloseWait,
                5150,
            ),
        ],
    );
    check(
        UDP,
        Proto::Udp,
        &[sock(
            Proto::Udp,
            "127.0.0.1:37011",
            "127.0.0.1:53",
            Established,
            97719,
        )],
    );
    check(
        UDP6,
        Proto::Udp,
        &[sock(Proto::Udp, "[::1]:49604", "[::1]:5353", Established, 97720)],
    );
    // The proto is the caller's word; the family comes from the line.
    check(
        UDP,
        Proto::Tcp,
        &[sock(
            Proto::Tcp,
            "127.0.0.1:37011",
            "127.0.0.1:53",
            Established,
            97719,
        )],
    );
}

#[test]
#[cfg(target_endian = "little")]
fn host_parse_proc_net_rejects_malformed_lines() {
    let good =
        "   2: 0100007F:84D2 0100007F:8351 01 00000000:00000000 00:00000000 00000000     0        0 97711 2";
    assert_eq!(parse_proc_net(good, Proto::Tcp).len(), 1);
    for bad in [
        "",
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
        // No colon after the slot, or not a number.
        "   2 0100007F:84D2 0100007F:8351 01 00000000:00000000 00:00000000 00000000     0        0 97711",
        "   x: 0100007F:84D2 0100007F:8351 01 00000000:00000000 00:00000000 00000000     0        0 97711",
        // Address of 7 or 9 digits, not hex, a sign, a short port, a missing port.
        "   2: 100007F:84D2 0100007F:8351 01 00000000:00000000 00:00000000 00000000     0        0 97711",
        "   2: 0100007F:84D2 0100007F0:8351 01 00000000:00000000 00:00000000 00000000     0        0 97711",
        "   2: 0100007F:84D2 0100007G:8351 01 00000000:00000000 00:00000000 00000000     0        0 97711",
        "   2: 0100007F:84D2 +100007F:8351 01 00000000:00000000 00:00000000 00000000     0        0 97711",
        "   2: 0100007F:84D2 0100007F:351 01 00000000:00000000 00:00000000 00000000     0        0 97711",
        "   2: 0100007F:84D2 0100007F:+351 01 00000000:00000000 00:00000000 00000000     0        0 97711",
        "   2: 0100007F:84D2 0100007F 01 00000000:00000000 00:00000000 00000000     0        0 97711",
        // A state that is not hex, an inode that is not decimal, a line cut short.
        "   2: 0100007F:84D2 0100007F:8351 0Z 00000000:00000000 00:00000000 00000000     0        0 97711",
        "   2: 0100007F:84D2 0100007F:8351 01 00000000:00000000 00:00000000 00000000     0        0 9771a",
        "   2: 0100007F:84D2 0100007F:8351 01 00000000:00000000 00:00000000 00000000     0        0",
        // A 32-digit address with a multi-byte character cannot be split into words.
        "   2: 0100007F:84D2 000000000000000000000000000000é:8351 01 0:0 0:0 0 0 0 97711",
    ] {
        assert_eq!(parse_proc_net(bad, Proto::Tcp), [], "{bad:?}");
    }
}

proptest! {
    #[test]
    fn host_parse_proc_net_never_panics(text in "\\PC*") {
        let _ = parse_proc_net(&text, Proto::Tcp);
    }

    #[test]
    fn host_parse_proc_net_never_panics_on_mutated_lines(
        cut in 0usize..300,
        insert in "[0-9A-Fa-f: x\\n]{0,8}",
    ) {
        let mut text = format!("{TCP}{TCP6}");
        let at = text.char_indices().map(|(i, _)| i).nth(cut % text.chars().count()).unwrap_or(0);
        text.insert_str(at, &insert);
        let _ = parse_proc_net(&text, Proto::Udp);
    }
}
