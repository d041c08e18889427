//! The indicator model: what an agent can match, and the metadata each indicator carries.
//!
//! Every kind DESIGN.md lists is here, even those the agent does not match yet, so that the set
//! format does not change as the matching engine grows.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{invalid, Part, Result};

/// Longest string an indicator may carry (a name, glob, path or command-line needle).
pub const MAX_TEXT: usize = 4096;
/// Most conditions in one compound indicator.
pub const MAX_CONDITIONS: usize = 16;

/// Traffic Light Protocol level, ordered from least to most restricted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tlp {
    /// TLP:CLEAR (TLP 1.0: WHITE).
    Clear,
    /// TLP:GREEN.
    Green,
    /// TLP:AMBER.
    Amber,
    /// TLP:AMBER+STRICT.
    AmberStrict,
    /// TLP:RED.
    Red,
}

impl Tlp {
    /// Parses `clear`, `white`, `green`, `amber`, `amber+strict` or `red`, in any case, with or
    /// without a `tlp:` prefix.
    pub fn parse(s: &str) -> Option<Tlp> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_prefix("tlp:").unwrap_or(&s);
        Some(match s {
            "clear" | "white" => Tlp::Clear,
            "green" => Tlp::Green,
            "amber" => Tlp::Amber,
            "amber+strict" | "amber-strict" => Tlp::AmberStrict,
            "red" => Tlp::Red,
            _ => return None,
        })
    }
}

impl fmt::Display for Tlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tlp::Clear => "TLP:CLEAR",
            Tlp::Green => "TLP:GREEN",
            Tlp::Amber => "TLP:AMBER",
            Tlp::AmberStrict => "TLP:AMBER+STRICT",
            Tlp::Red => "TLP:RED",
        })
    }
}

/// How bad a match is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        })
    }
}

/// A file hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HashKind {
    /// MD5 (16 bytes).
    Md5,
    /// SHA-1 (20 bytes).
    Sha1,
    /// SHA-256 (32 bytes).
    Sha256,
}

impl HashKind {
    /// The digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashKind::Md5 => 16,
            HashKind::Sha1 => 20,
            HashKind::Sha256 => 32,
        }
    }

    /// The lower-case name used in output (`md5`, `sha1`, `sha256`).
    pub fn name(self) -> &'static str {
        match self {
            HashKind::Md5 => "md5",
            HashKind::Sha1 => "sha1",
            HashKind::Sha256 => "sha256",
        }
    }
}

/// A file digest of a known kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hash {
    /// The algorithm.
    pub kind: HashKind,
    /// The digest; its length matches `kind`.
    pub value: Vec<u8>,
}

impl Hash {
    /// Parses a hex digest, inferring the kind from its length (32, 40 or 64 hex digits).
    pub fn from_hex(text: &str) -> Option<Hash> {
        let kind = match text.len() {
            32 => HashKind::Md5,
            40 => HashKind::Sha1,
            64 => HashKind::Sha256,
            _ => return None,
        };
        let value = hex::decode(text).ok()?;
        Some(Hash { kind, value })
    }

    /// The lower-case hex digest.
    pub fn hex(&self) -> String {
        hex::encode(&self.value)
    }

    fn validate(&self) -> Result<()> {
        if self.value.len() != self.kind.digest_len() {
            return Err(invalid(
                Part::Record,
                format!(
                    "a {} digest is {} bytes, not {}",
                    self.kind.name(),
                    self.kind.digest_len(),
                    self.value.len()
                ),
            ));
        }
        Ok(())
    }
}

/// A file name to match, exactly or as a glob (`*`, `?`, `[...]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamePattern {
    /// The name or glob.
    pub text: String,
    /// Whether `text` is a glob.
    pub glob: bool,
}

/// An IPv4 or IPv6 network; a single address has the full prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IpNet {
    /// The network address, with host bits cleared.
    pub addr: IpAddr,
    /// The prefix length: at most 32 for IPv4, 128 for IPv6.
    pub prefix: u8,
}

impl IpNet {
    /// Parses `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or an IPv6 CIDR, clearing host bits.
    pub fn parse(text: &str) -> Option<IpNet> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        Some(IpNet {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }

    fn validate(&self) -> Result<()> {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix > max || mask(self.addr, self.prefix) != self.addr {
            return Err(invalid(
                Part::Record,
                format!("{self} is not a canonical network"),
            ));
        }
        Ok(())
    }
}

/// Clears the host bits; a prefix beyond the family's length is taken as the full length.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// One comparison inside a compound file indicator; all must hold for the same file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FileCondition {
    /// The file's digest.
    Hash(Hash),
    /// The file's size in bytes.
    Size(u64),
    /// The file's name.
    Name(NamePattern),
    /// A glob over the file's full path.
    Path(String),
}

/// One comparison inside a compound process indicator; all must hold for the same process.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProcessCondition {
    /// The process name.
    Name(String),
    /// The executable's path.
    Path(String),
    /// The executable's digest.
    Hash(Hash),
    /// A substring of the command line.
    CommandLine(String),
}

/// What an indicator matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Observable {
    /// A file's digest, optionally with its size (files of other sizes need not be hashed).
    FileHash {
        /// The digest.
        hash: Hash,
        /// The size in bytes, if known.
        size: Option<u64>,
    },
    /// A file name, exact or glob.
    FileName(NamePattern),
    /// A glob over a file's full path.
    PathGlob(String),
    /// A process name.
    ProcessName(String),
    /// A process's executable path.
    ProcessPath(String),
    /// A process's executable digest.
    ProcessHash(Hash),
    /// A substring of a process's command line.
    CommandLine(String),
    /// The remote address of a live connection: one address or a CIDR network.
    RemoteAddr(IpNet),
    /// An AND of comparisons on one file.
    FileAll(Vec<FileCondition>),
    /// An AND of comparisons on one process.
    ProcessAll(Vec<ProcessCondition>),
}

impl Observable {
    /// The record kind tag this observable is stored under. Tags are never reused.
    pub fn kind_tag(&self) -> u16 {
        match self {
            Observable::FileHash { .. } => 1,
            Observable::FileName(_) => 2,
            Observable::PathGlob(_) => 3,
            Observable::ProcessName(_) => 4,
            Observable::ProcessPath(_) => 5,
            Observable::ProcessHash(_) => 6,
            Observable::CommandLine(_) => 7,
            Observable::RemoteAddr(_) => 8,
            Observable::FileAll(_) => 9,
            Observable::ProcessAll(_) => 10,
        }
    }

    /// The highest record kind tag this build understands.
    pub const MAX_KNOWN_TAG: u16 = 10;

    /// A short name for the kind, used in output and policy (`file-hash`, `remote-addr`, ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Observable::FileHash { .. } => "file-hash",
            Observable::FileName(_) => "file-name",
            Observable::PathGlob(_) => "path-glob",
            Observable::ProcessName(_) => "process-name",
            Observable::ProcessPath(_) => "process-path",
            Observable::ProcessHash(_) => "process-hash",
            Observable::CommandLine(_) => "command-line",
            Observable::RemoteAddr(_) => "remote-addr",
            Observable::FileAll(_) => "file-all",
            Observable::ProcessAll(_) => "process-all",
        }
    }

    /// Checks the value rules a decoder cannot express: digest lengths, text lengths, canonical
    /// networks, non-empty compounds.
    pub fn validate(&self) -> Result<()> {
        let text = |s: &str| -> Result<()> {
            if s.is_empty() || s.len() > MAX_TEXT {
                return Err(invalid(
                    Part::Record,
                    format!("text of {} bytes (1 to {MAX_TEXT} allowed)", s.len()),
                ));
            }
            Ok(())
        };
        match self {
            Observable::FileHash { hash, .. } | Observable::ProcessHash(hash) => hash.validate(),
            Observable::FileName(n) => text(&n.text),
            Observable::PathGlob(s)
            | Observable::ProcessName(s)
            | Observable::ProcessPath(s)
            | Observable::CommandLine(s) => text(s),
            Observable::RemoteAddr(net) => net.validate(),
            Observable::FileAll(conds) => {
                if conds.is_empty() || conds.len() > MAX_CONDITIONS {
                    return Err(invalid(Part::Record, "a compound needs 1 to 16 conditions"));
                }
                conds.iter().try_for_each(|c| match c {
                    FileCondition::Hash(h) => h.validate(),
                    FileCondition::Size(_) => Ok(()),
                    FileCondition::Name(n) => text(&n.text),
                    FileCondition::Path(p) => text(p),
                })
            }
            Observable::ProcessAll(conds) => {
                if conds.is_empty() || conds.len() > MAX_CONDITIONS {
                    return Err(invalid(Part::Record, "a compound needs 1 to 16 conditions"));
                }
                conds.iter().try_for_each(|c| match c {
                    ProcessCondition::Hash(h) => h.validate(),
                    ProcessCondition::Name(s)
                    | ProcessCondition::Path(s)
                    | ProcessCondition::CommandLine(s) => text(s),
                })
            }
        }
    }
}

/// What every indicator carries besides its observable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Meta {
    /// Confidence, 0 to 100 (STIX's scale).
    pub confidence: u8,
    /// Severity of a match.
    pub severity: Severity,
    /// TLP of the indicator.
    pub tlp: Tlp,
    /// When the indicator stops being valid (unix seconds), if it does.
    pub valid_until: Option<i64>,
    /// The source it came from (a feed name; several are joined with `,`).
    pub source: String,
}

/// An indicator of compromise: a stable id, what it matches, and its metadata.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Indicator {
    /// The stable id, usually the STIX id it came from (`indicator--<uuid>`).
    pub id: String,
    /// What it matches.
    pub observable: Observable,
    /// Its metadata.
    pub meta: Meta,
}
