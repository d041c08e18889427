//! A naive reference matcher: loops over every indicator and evaluates its observable directly,
//! with nothing precomputed. The index must agree with it on every input.

use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::Path;

use globset::GlobBuilder;
use picket_proto::{FileCondition, Hash, Indicator, NamePattern, Observable, ProcessCondition};

use crate::index::{Digests, FileMeta, Hit, Kinds, ProcessFacts, RecordRef, What};

/// The set as the reference sees it: each indicator with its record offset.
pub type Set = [(RecordRef, Indicator)];

fn glob_matches(glob: &str, path_glob: bool, candidate: &Path) -> bool {
    GlobBuilder::new(glob)
        .literal_separator(path_glob)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher().is_match(candidate))
        .unwrap_or(false)
}

fn name_matches(p: &NamePattern, name: &OsStr) -> bool {
    if p.glob {
        glob_matches(&p.text, false, Path::new(name))
    } else {
        name.as_encoded_bytes() == p.text.as_bytes()
    }
}

fn hash_matches(h: &Hash, digests: Option<&Digests>) -> bool {
    digests.and_then(|d| d.get(h.kind)) == Some(&h.value[..])
}

fn file_cond(c: &FileCondition, f: &FileMeta<'_>, d: &Digests) -> bool {
    match c {
        FileCondition::Hash(h) => hash_matches(h, Some(d)),
        FileCondition::Size(s) => *s == f.size,
        FileCondition::Name(p) => name_matches(p, f.name),
        FileCondition::Path(g) => glob_matches(g, true, f.path),
    }
}

/// Every file indicator `f` with digests `d` matches.
pub fn file_hits(set: &Set, f: &FileMeta<'_>, d: &Digests) -> Vec<Hit> {
    let mut out = Vec::new();
    for (record, ind) in set {
        let what = match &ind.observable {
            Observable::FileHash { hash, size } => {
                let ok = hash_matches(hash, Some(d)) && size.is_none_or(|s| s == f.size);
                ok.then_some(What::FileHash(hash.kind))
            }
            Observable::FileName(p) => name_matches(p, f.name).then_some(What::FileName),
            Observable::PathGlob(g) => glob_matches(g, true, f.path).then_some(What::PathGlob),
            Observable::FileAll(conds) => conds.iter().all(|c| file_cond(c, f, d)).then_some(What::FileAll),
            _ => None,
        };
        if let Some(what) = what {
            out.push(Hit {
                record: *record,
                what,
            });
        }
    }
    out
}

/// The digest kinds some file indicator could still match `f` with.
pub fn needed(set: &Set, f: &FileMeta<'_>) -> Kinds {
    let mut k = Kinds::default();
    for (_, ind) in set {
        match &ind.observable {
            Observable::FileHash { hash, size } if size.is_none_or(|s| s == f.size) => k.set(hash.kind),
            Observable::FileAll(conds) => {
                let rest_hold = conds
                    .iter()
                    .filter(|c| !matches!(c, FileCondition::Hash(_)))
                    .all(|c| file_cond(c, f, &Digests::default()));
                if rest_hold {
                    for c in conds {
                        if let FileCondition::Hash(h) = c {
                            k.set(h.kind);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    k
}

fn process_cond(c: &ProcessCondition, p: &ProcessFacts<'_>) -> bool {
    match c {
        ProcessCondition::Name(n) => p.name == n,
        ProcessCondition::Path(x) => p
            .exe
            .is_some_and(|e| e.as_os_str().as_encoded_bytes() == x.as_bytes()),
        ProcessCondition::Hash(h) => hash_matches(h, p.exe_digests),
        ProcessCondition::CommandLine(n) => p.cmdline.contains(n.as_str()),
    }
}

/// Every process indicator `p` matches.
pub fn process_hits(set: &Set, p: &ProcessFacts<'_>) -> Vec<Hit> {
    let mut out = Vec::new();
    for (record, ind) in set {
        let what = match &ind.observable {
            Observable::ProcessName(n) => (p.name == n).then_some(What::ProcessName),
            Observable::ProcessPath(x) => {
                process_cond(&ProcessCondition::Path(x.clone()), p).then_some(What::ProcessPath)
            }
            Observable::ProcessHash(h) => hash_matches(h, p.exe_digests).then_some(What::ProcessHash(h.kind)),
            Observable::CommandLine(n) => p.cmdline.contains(n.as_str()).then_some(What::CommandLine),
            Observable::ProcessAll(conds) => conds
                .iter()
                .all(|c| process_cond(c, p))
                .then_some(What::ProcessAll),
            _ => None,
        };
        if let Some(what) = what {
            out.push(Hit {
                record: *record,
                what,
            });
        }
    }
    out
}

/// The digest kinds process indicators need.
pub fn process_kinds(set: &Set) -> Kinds {
    let mut k = Kinds::default();
    for (_, ind) in set {
        match &ind.observable {
            Observable::ProcessHash(h) => k.set(h.kind),
            Observable::ProcessAll(conds) => {
                for c in conds {
                    if let ProcessCondition::Hash(h) = c {
                        k.set(h.kind);
                    }
                }
            }
            _ => {}
        }
    }
    k
}

/// Every address indicator whose network contains `ip` (or the IPv4 address an IPv4-mapped
/// IPv6 address carries).
pub fn addr_hits(set: &Set, ip: IpAddr) -> Vec<Hit> {
    let mapped = match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    let mut out = Vec::new();
    for (record, ind) in set {
        if let Observable::RemoteAddr(net) = &ind.observable {
            if net.contains(ip) || mapped.is_some_and(|m| net.contains(m)) {
                out.push(Hit {
                    record: *record,
                    what: What::RemoteAddr,
                });
            }
        }
    }
    out
}
