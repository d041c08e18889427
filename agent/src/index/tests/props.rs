//! Property tests: on random sets and random inputs, the compiled index agrees with the naive
//! reference matcher, hit for hit (the multiset of (record, what) pairs).
//!
//! Values are drawn from small pools so that collisions are the rule: duplicated digests,
//! names shared by a plain indicator and a compound, overlapping and nested networks, needles
//! inside other needles, digests that share their leading bytes (one radix bucket).

use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::PathBuf;

use picket_proto::{
    FileCondition, Hash, HashKind, Indicator, IpNet, Meta, NamePattern, Observable, ProcessCondition,
    Severity, Tlp,
};
use proptest::prelude::*;

use super::reference;
use crate::index::{Builder, Counts, Digests, FileMeta, Hit, Index, Kinds, ProcessFacts, RecordRef};

const SIZES: [u64; 4] = [0, 1, 68, 4096];
const NAMES: [&str; 8] = [
    "a.exe", "b.txt", "evil", "A.EXE", ".exe", "x y.scr", "ab.txt", "e.l",
];
const NAME_GLOBS: [&str; 9] = [
    "*.exe", "?.txt", "*", "[ab].*", "e*l", "*.EXE", "{a,b}.*", "\\*.exe", "*.t?t",
];
const DIRS: [&str; 5] = ["/tmp", "/tmp/sub", "/home/u", "/home/u/Downloads", "/var/lib/x"];
const PATH_GLOBS: [&str; 11] = [
    "/tmp/*",
    "/tmp/**",
    "**/evil",
    "/home/*/a.exe",
    "/tmp/*/b.txt",
    "*",
    "/home/**/*.exe",
    "**",
    "/tmp/sub/?.txt",
    "/tmp/[!s]*",
    "/home/u/Downloads/*.{exe,scr}",
];
const PROCESS_NAMES: [&str; 4] = ["sh", "bash", "evil", "Evil"];
const EXES: [&str; 3] = ["/bin/sh", "/tmp/evil", "/usr/bin/bash"];
const NEEDLES: [&str; 8] = ["-c", "evil", "ev", "vil", "--x", "a", "il -", "evil.sh"];
const WORDS: [&str; 8] = ["sh", "-c", "evil", "--x", "a", "bash", "vil", "evil.sh"];
const V4: [&str; 5] = ["10.0.0.0", "10.1.2.3", "192.168.1.1", "0.0.0.0", "10.1.255.255"];
const V6: [&str; 5] = ["2001:db8::1", "2001:db8:1::", "::", "fe80::1", "::ffff:10.1.2.3"];

/// Digest number `i` of `kind`: numbers 0 and 1 share their two leading bytes, so they land in
/// one radix bucket whatever the table's size.
fn digest(kind: HashKind, i: u8) -> Vec<u8> {
    let mut v = vec![i; kind.digest_len()];
    v[0] = i / 2;
    v[1] = 0;
    v
}

fn kind() -> impl Strategy<Value = HashKind> {
    prop_oneof![Just(HashKind::Md5), Just(HashKind::Sha1), Just(HashKind::Sha256)]
}

/// A hash from a pool of four per kind.
fn hash() -> impl Strategy<Value = Hash> {
    (kind(), 0u8..4).prop_map(|(kind, i)| Hash {
        kind,
        value: digest(kind, i),
    })
}

fn pick<const N: usize>(pool: [&'static str; N]) -> impl Strategy<Value = String> {
    (0..N).prop_map(move |i| pool[i].to_owned())
}

fn name_pattern() -> impl Strategy<Value = NamePattern> {
    prop_oneof![
        pick(NAMES).prop_map(|text| NamePattern { text, glob: false }),
        pick(NAME_GLOBS).prop_map(|text| NamePattern { text, glob: true }),
    ]
}

fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (0..V4.len(), 0u8..=32).prop_map(|(i, p)| IpNet::parse(&format!("{}/{p}", V4[i]))),
        (0..V6.len(), 0u8..=128).prop_map(|(i, p)| IpNet::parse(&format!("{}/{p}", V6[i]))),
        // Full-length prefixes (single addresses) often, so that exact hits happen.
        (0..V4.len()).prop_map(|i| IpNet::parse(V4[i])),
        (0..V6.len()).prop_map(|i| IpNet::parse(V6[i])),
    ]
    .prop_map(|n| n.expect("the pools hold valid addresses"))
}

fn file_condition() -> impl Strategy<Value = FileCondition> {
    prop_oneof![
        hash().prop_map(FileCondition::Hash),
        (0..SIZES.len()).prop_map(|i| FileCondition::Size(SIZES[i])),
        name_pattern().prop_map(FileCondition::Name),
        pick(PATH_GLOBS).prop_map(FileCondition::Path),
    ]
}

fn process_condition() -> impl Strategy<Value = ProcessCondition> {
    prop_oneof![
        pick(PROCESS_NAMES).prop_map(ProcessCondition::Name),
        pick(EXES).prop_map(ProcessCondition::Path),
        hash().prop_map(ProcessCondition::Hash),
        pick(NEEDLES).prop_map(ProcessCondition::CommandLine),
    ]
}

fn observable() -> impl Strategy<Value = Observable> {
    prop_oneof![
        3 => (hash(), proptest::option::of(0..SIZES.len()))
            .prop_map(|(hash, s)| Observable::FileHash { hash, size: s.map(|i| SIZES[i]) }),
        2 => name_pattern().prop_map(Observable::FileName),
        1 => pick(PATH_GLOBS).prop_map(Observable::PathGlob),
        1 => pick(PROCESS_NAMES).prop_map(Observable::ProcessName),
        1 => pick(EXES).prop_map(Observable::ProcessPath),
        2 => hash().prop_map(Observable::ProcessHash),
        2 => pick(NEEDLES).prop_map(Observable::CommandLine),
        3 => net().prop_map(Observable::RemoteAddr),
        2 => proptest::collection::vec(file_condition(), 1..4).prop_map(Observable::FileAll),
        2 => proptest::collection::vec(process_condition(), 1..4).prop_map(Observable::ProcessAll),
    ]
}

fn indicator(observable: Observable) -> Indicator {
    Indicator {
        id: "indicator--x".into(),
        observable,
        meta: Meta {
            confidence: 50,
            severity: Severity::High,
            tlp: Tlp::Green,
            valid_until: None,
            source: "test".into(),
        },
    }
}

/// Digests for an input: per kind absent, or one of a pool of five (four in the sets' pool,
/// one never in a set).
fn digests() -> impl Strategy<Value = Digests> {
    let one = |len: usize| proptest::option::of(0u8..5).prop_map(move |i| i.map(|i| digest_of_len(len, i)));
    (one(16), one(20), one(32)).prop_map(|(md5, sha1, sha256)| Digests {
        md5: md5.map(|v| v.try_into().expect("16 bytes")),
        sha1: sha1.map(|v| v.try_into().expect("20 bytes")),
        sha256: sha256.map(|v| v.try_into().expect("32 bytes")),
    })
}

fn digest_of_len(len: usize, i: u8) -> Vec<u8> {
    let kind = match len {
        16 => HashKind::Md5,
        20 => HashKind::Sha1,
        _ => HashKind::Sha256,
    };
    digest(kind, i)
}

#[derive(Debug, Clone)]
struct FileInput {
    path: PathBuf,
    size: u64,
    digests: Digests,
}

fn file_input() -> impl Strategy<Value = FileInput> {
    let name = prop_oneof![pick(NAMES), "[a-z.]{1,6}"];
    let size = prop_oneof![(0..SIZES.len()).prop_map(|i| SIZES[i]), 0u64..5000];
    (0..DIRS.len(), name, size, digests()).prop_map(|(d, name, size, digests)| FileInput {
        path: PathBuf::from(DIRS[d]).join(name),
        size,
        digests,
    })
}

#[derive(Debug, Clone)]
struct ProcessInput {
    name: String,
    exe: Option<PathBuf>,
    digests: Option<Digests>,
    cmdline: String,
}

fn process_input() -> impl Strategy<Value = ProcessInput> {
    (
        prop_oneof![pick(PROCESS_NAMES), "[a-z]{1,4}"],
        proptest::option::of(pick(EXES).prop_map(PathBuf::from)),
        proptest::option::of(digests()),
        proptest::collection::vec(pick(WORDS), 0..5),
    )
        .prop_map(|(name, exe, digests, words)| ProcessInput {
            name,
            exe,
            digests,
            cmdline: words.join(" "),
        })
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0..V4.len(), any::<u32>(), 0u32..=32).prop_map(|(i, noise, bits)| {
            let base = u32::from(V4[i].parse::<std::net::Ipv4Addr>().expect("pool"));
            let noise = if bits == 32 { 0 } else { noise >> bits };
            IpAddr::V4((base ^ noise).into())
        }),
        (0..V6.len(), any::<u128>(), 0u32..=128).prop_map(|(i, noise, bits)| {
            let base = u128::from(V6[i].parse::<std::net::Ipv6Addr>().expect("pool"));
            let noise = if bits == 128 { 0 } else { noise >> bits };
            IpAddr::V6((base ^ noise).into())
        }),
    ]
}

fn build(set: &[(RecordRef, Indicator)]) -> Index {
    let mut b = Builder::new();
    for (at, ind) in set {
        b.add(*at, ind);
    }
    b.finish()
}

fn sorted(mut v: Vec<Hit>) -> Vec<Hit> {
    v.sort();
    v
}

fn only(kinds: Kinds, d: &Digests) -> Digests {
    Digests {
        md5: d.md5.filter(|_| kinds.md5),
        sha1: d.sha1.filter(|_| kinds.sha1),
        sha256: d.sha256.filter(|_| kinds.sha256),
    }
}

fn with_records(observables: Vec<Observable>) -> Vec<(RecordRef, Indicator)> {
    observables
        .into_iter()
        .enumerate()
        .map(|(i, o)| (i as u32 * 24 + 7, indicator(o)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn index_agrees_with_reference(
        observables in proptest::collection::vec(observable(), 0..40),
        files in proptest::collection::vec(file_input(), 1..6),
        processes in proptest::collection::vec(process_input(), 1..5),
        addrs in proptest::collection::vec(addr(), 1..6),
    ) {
        let set = with_records(observables);
        let ix = build(&set);
        prop_assert!(ix.rejected().is_empty(), "rejected: {:?}", ix.rejected());
        prop_assert_eq!(ix.len(), set.len());

        for f in &files {
            let meta = FileMeta {
                path: &f.path,
                name: f.path.file_name().unwrap_or(OsStr::new("")),
                size: f.size,
            };
            let needed = ix.needed(&meta);
            prop_assert_eq!(needed, reference::needed(&set, &meta), "needed for {:?}", f);

            let want = sorted(reference::file_hits(&set, &meta, &f.digests));
            let mut got = Vec::new();
            ix.match_file(&meta, &f.digests, &mut got);
            prop_assert_eq!(sorted(got), want.clone(), "hits for {:?}", f);

            // Computing only the kinds `needed` names loses no hit.
            let mut got = Vec::new();
            ix.probe(&meta).match_file(&only(needed, &f.digests), &mut got);
            prop_assert_eq!(sorted(got), want, "hits with only the needed digests for {:?}", f);
        }

        prop_assert_eq!(ix.process_kinds(), reference::process_kinds(&set));
        for p in &processes {
            let facts = ProcessFacts {
                name: &p.name,
                exe: p.exe.as_deref(),
                exe_digests: p.digests.as_ref(),
                cmdline: &p.cmdline,
            };
            let mut got = Vec::new();
            ix.match_process(&facts, &mut got);
            prop_assert_eq!(sorted(got), sorted(reference::process_hits(&set, &facts)), "hits for {:?}", p);
        }

        for &ip in &addrs {
            let mut got = Vec::new();
            ix.match_addr(ip, &mut got);
            prop_assert_eq!(sorted(got), sorted(reference::addr_hits(&set, ip)), "hits for {}", ip);
        }

        let mut counts = Counts::default();
        set.iter().for_each(|(_, ind)| counts.add(&ind.observable));
        prop_assert!(
            Index::estimate_bytes(&counts) >= ix.heap_bytes(),
            "estimate {} below heap {}", Index::estimate_bytes(&counts), ix.heap_bytes()
        );
    }

    /// Address sets alone, larger, with many nested and overlapping networks.
    #[test]
    fn addresses_agree_with_reference(
        nets in proptest::collection::vec(net(), 0..200),
        addrs in proptest::collection::vec(addr(), 1..30),
    ) {
        let set = with_records(nets.into_iter().map(Observable::RemoteAddr).collect());
        let ix = build(&set);
        for &ip in &addrs {
            let mut got = Vec::new();
            ix.match_addr(ip, &mut got);
            prop_assert_eq!(sorted(got), sorted(reference::addr_hits(&set, ip)), "hits for {}", ip);
        }
    }

    /// Hash sets alone, large enough for a many-bit radix index, with random digests as well
    /// as pooled ones, sizes or not.
    #[test]
    fn hashes_agree_with_reference(
        hashes in proptest::collection::vec(
            (kind(), prop_oneof![(0u8..4).prop_map(Some), Just(None)], any::<[u8; 32]>(),
             proptest::option::of(0..SIZES.len())),
            0..600,
        ),
        probes in proptest::collection::vec((any::<usize>(), 0..SIZES.len()), 1..20),
    ) {
        let observables: Vec<Observable> = hashes
            .iter()
            .map(|(kind, pooled, random, size)| {
                let value = match pooled {
                    Some(i) => digest(*kind, *i),
                    None => random[..kind.digest_len()].to_vec(),
                };
                Observable::FileHash { hash: Hash { kind: *kind, value }, size: size.map(|i| SIZES[i]) }
            })
            .collect();
        let set = with_records(observables);
        let ix = build(&set);
        for (pick, size) in probes {
            // Probe with the digests of one indicator of the set (when there is one).
            let mut d = Digests::default();
            if !set.is_empty() {
                if let Observable::FileHash { hash, .. } = &set[pick % set.len()].1.observable {
                    match hash.kind {
                        HashKind::Md5 => d.md5 = hash.value.clone().try_into().ok(),
                        HashKind::Sha1 => d.sha1 = hash.value.clone().try_into().ok(),
                        HashKind::Sha256 => d.sha256 = hash.value.clone().try_into().ok(),
                    }
                }
            }
            let path = PathBuf::from("/f");
            let meta = FileMeta { path: &path, name: OsStr::new("f"), size: SIZES[size] };
            prop_assert_eq!(ix.needed(&meta), reference::needed(&set, &meta));
            let mut got = Vec::new();
            ix.match_file(&meta, &d, &mut got);
            prop_assert_eq!(sorted(got), sorted(reference::file_hits(&set, &meta, &d)));
        }
    }
}
