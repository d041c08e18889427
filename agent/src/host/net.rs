//! Live TCP and UDP sockets and their remote addresses, for matching against IP and CIDR
//! indicators.
//!
//! On Linux the kernel lists sockets in `/proc/net/{tcp,tcp6,udp,udp6}`, one per line:
//!
//! ```text
//!   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//!    2: 0100007F:84D2 0100007F:8351 01 00000000:00000000 00:00000000 00000000     0        0 97711 ...
//! ```
//!
//! [`parse_proc_net`] is the pure parser of that text; [`read_sockets`] is the shell that reads
//! the four files; [`socket_owners`] maps socket inodes to the processes holding them.
//!
//! **Network namespaces.** `/proc/net` is a link to `/proc/self/net`, which lists the sockets of
//! the network namespace the *reading thread* is in, and nothing else. A container in its own
//! namespace (Docker, Kubernetes pods, `unshare -n`, systemd's `PrivateNetwork=`) is invisible
//! there, however privileged the agent is. Its sockets are listed in `/proc/PID/net` for any
//! process PID inside it: to cover every namespace, read [`read_sockets_at`] once per distinct
//! namespace, taking one PID per distinct `/proc/PID/ns/net` link target. Socket inodes are
//! unique across namespaces, so [`socket_owners`] works unchanged on the result.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The transport protocol of a socket list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP, from `tcp` and `tcp6`.
    Tcp,
    /// UDP, from `udp` and `udp6`.
    Udp,
}

/// A socket's state, as the kernel's TCP state machine numbers it. UDP sockets use the same
/// numbers: [`Established`](Self::Established) once `connect`ed, [`Close`](Self::Close) otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketState {
    /// `TCP_ESTABLISHED` (1); a connected UDP socket.
    Established,
    /// `TCP_SYN_SENT` (2): connecting.
    SynSent,
    /// `TCP_SYN_RECV` (3).
    SynRecv,
    /// `TCP_FIN_WAIT1` (4).
    FinWait1,
    /// `TCP_FIN_WAIT2` (5).
    FinWait2,
    /// `TCP_TIME_WAIT` (6): closed; the kernel keeps the addresses for a while, with no owner.
    TimeWait,
    /// `TCP_CLOSE` (7); an unconnected UDP socket.
    Close,
    /// `TCP_CLOSE_WAIT` (8).
    CloseWait,
    /// `TCP_LAST_ACK` (9).
    LastAck,
    /// `TCP_LISTEN` (10).
    Listen,
    /// `TCP_CLOSING` (11).
    Closing,
    /// `TCP_NEW_SYN_RECV` (12).
    NewSynRecv,
    /// A number this code does not know.
    Other(u8),
}

impl SocketState {
    /// The state with the kernel's number `n`.
    pub fn from_number(n: u8) -> SocketState {
        match n {
            1 => SocketState::Established,
            2 => SocketState::SynSent,
            3 => SocketState::SynRecv,
            4 => SocketState::FinWait1,
            5 => SocketState::FinWait2,
            6 => SocketState::TimeWait,
            7 => SocketState::Close,
            8 => SocketState::CloseWait,
            9 => SocketState::LastAck,
            10 => SocketState::Listen,
            11 => SocketState::Closing,
            12 => SocketState::NewSynRecv,
            n => SocketState::Other(n),
        }
    }
}

/// One socket with a remote address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Socket {
    /// TCP or UDP.
    pub proto: Proto,
    /// The local address.
    pub local: SocketAddr,
    /// The remote address: never unspecified (`0.0.0.0` or `::`), since sockets without a peer
    /// are left out. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, from a dual-stack socket) is
    /// given as the IPv4 address, so IPv4 indicators match it.
    pub remote: SocketAddr,
    /// The state.
    pub state: SocketState,
    /// The socket's inode, which [`socket_owners`] maps to processes. 0 for a socket no process
    /// holds any more (`TIME_WAIT`).
    pub inode: u64,
}

/// Parses the text of one of `/proc/net/{tcp,tcp6,udp,udp6}`, keeping the sockets with a remote
/// address.
///
/// The header line, sockets without a peer (listening, or unconnected UDP: their remote address
/// is all zeros) and lines that do not parse are left out. IPv4 and IPv6 lines are told apart by
/// the length of the address, so one function serves both files of a protocol.
///
/// Addresses are printed by the kernel as the hex of the address's 32-bit words read in the
/// host's byte order, so this parser decodes them in the host's byte order too: on the
/// little-endian machines Picket runs on, `0100007F` is 127.0.0.1.
pub fn parse_proc_net(text: &str, proto: Proto) -> Vec<Socket> {
    text.lines().filter_map(|line| parse_line(line, proto)).collect()
}

/// Parses one line; `None` for the header, sockets without a peer, and garbage.
fn parse_line(line: &str, proto: Proto) -> Option<Socket> {
    let mut fields = line.split_ascii_whitespace();
    let slot = fields.next()?;
    slot.strip_suffix(':')?.parse::<u64>().ok()?;
    let local = parse_endpoint(fields.next()?)?;
    let remote = parse_endpoint(fields.next()?)?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    // tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout, then the inode.
    let inode = fields.nth(5)?.parse::<u64>().ok()?;
    if remote.ip().is_unspecified() {
        return None;
    }
    Some(Socket {
        proto,
        local,
        remote,
        state: SocketState::from_number(state),
        inode,
    })
}

/// Parses `ADDRESS:PORT`, the address as 8 or 32 hex digits and the port as 4.
fn parse_endpoint(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    if port.len() != 4 || !port.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets)).to_canonical()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The four address bytes that 8 hex digits stand for: the kernel printed the in-memory
/// (network-order) bytes as a host-order `u32`, so the host order turns them back.
fn word(hex: &str) -> Option<[u8; 4]> {
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
}

/// The sockets with a remote address in this thread's network namespace: reads
/// `/proc/self/net/{tcp,tcp6,udp,udp6}`. See the module documentation for other namespaces.
pub fn read_sockets() -> io::Result<Vec<Socket>> {
    read_sockets_at(Path::new("/proc/self/net"))
}

/// The sockets with a remote address listed in `dir`, a `/proc/.../net` directory. A file that
/// does not exist is skipped (a kernel built without IPv6 has no `tcp6`); any other error is
/// returned, with the file's path.
pub fn read_sockets_at(dir: &Path) -> io::Result<Vec<Socket>> {
    let mut out = Vec::new();
    for (name, proto) in [
        ("tcp", Proto::Tcp),
        ("tcp6", Proto::Tcp),
        ("udp", Proto::Udp),
        ("udp6", Proto::Udp),
    ] {
        let path = dir.join(name);
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(with_path(e)),
        };
        // Line by line: a host with a hundred thousand sockets has a file of many megabytes.
        for line in BufReader::new(file).lines() {
            out.extend(parse_line(&line.map_err(with_path)?, proto));
        }
    }
    Ok(out)
}

/// The processes holding each of `inodes`, found by reading the `/proc/PID/fd` links of every
/// process (`socket:[INODE]`). A socket shared across a `fork` has several owners. Processes
/// that exit during the walk, or whose descriptors the agent may not read (another user's,
/// without root), are skipped: their sockets are simply missing from the answer.
pub fn socket_owners(inodes: &HashSet<u64>) -> HashMap<u64, Vec<u32>> {
    socket_owners_at(Path::new("/proc"), inodes)
}

/// [`socket_owners`] over the `/proc` tree at `proc`.
fn socket_owners_at(proc: &Path, inodes: &HashSet<u64>) -> HashMap<u64, Vec<u32>> {
    let mut owners: HashMap<u64, Vec<u32>> = HashMap::new();
    if inodes.is_empty() {
        return owners;
    }
    let Ok(entries) = fs::read_dir(proc) else {
        return owners;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(target.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            if inodes.contains(&inode) {
                let pids = owners.entry(inode).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    owners
}

/// The inode in a descriptor link target of the form `socket:[INODE]`.
fn socket_inode(target: &[u8]) -> Option<u64> {
    let digits = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::socket_inode;

    #[test]
    fn socket_link_targets() {
        let check =
            |target: &str, expected: Option<u64>| assert_eq!(socket_inode(target.as_bytes()), expected);
        check("socket:[97711]", Some(97711));
        check("socket:[0]", Some(0));
        check("pipe:[97711]", None);
        check("socket:[97711", None);
        check("socket:[]", None);
        check("socket:[-1]", None);
        check("/tmp/socket:[1]", None);
        check("anon_inode:[eventpoll]", None);
    }
}
