//! Table tests for the matching core, the memory bound, and (in `props`) property tests against
//! a naive reference matcher.

#![allow(clippy::unwrap_used)]

mod props;
mod reference;

use std::ffi::OsStr;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use picket_proto::{
    FileCondition, Hash, HashKind, Indicator, IpNet, Meta, NamePattern, Observable, ProcessCondition,
    Severity, Tlp,
};

use super::*;

const EICAR_SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
const EICAR_SHA1: &str = "3395856ce81f2b7382dee72602f798b642f14140";
const EICAR_MD5: &str = "44d88612fea8a8f36de82e1278abb02f";
const OTHER_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000001";

fn ind(observable: Observable) -> Indicator {
    Indicator {
        id: "indicator--t".into(),
        observable,
        meta: Meta {
            confidence: 50,
            severity: Severity::High,
            tlp: Tlp::Green,
            valid_until: None,
            source: "t".into(),
        },
    }
}

fn hash(hex: &str) -> Hash {
    Hash::from_hex(hex).unwrap()
}

fn file_hash(hex: &str, size: Option<u64>) -> Observable {
    Observable::FileHash {
        hash: hash(hex),
        size,
    }
}

fn name(text: &str) -> NamePattern {
    NamePattern {
        text: text.into(),
        glob: false,
    }
}

fn glob(text: &str) -> NamePattern {
    NamePattern {
        text: text.into(),
        glob: true,
    }
}

/// Record offsets in the tables are the indicator's position times 10, so that expected hits
/// can be written as positions.
fn build(set: &[Observable]) -> Index {
    let mut b = Builder::new();
    for (i, o) in set.iter().enumerate() {
        b.add(i as u32 * 10, &ind(o.clone()));
    }
    b.finish()
}

fn positions(mut hits: Vec<Hit>) -> Vec<(u32, What)> {
    hits.sort();
    hits.into_iter().map(|h| (h.record / 10, h.what)).collect()
}

fn digests(hexes: &[&str]) -> Digests {
    let mut d = Digests::default();
    for h in hexes {
        let v = hex::decode(h).unwrap();
        match v.len() {
            16 => d.md5 = Some(v.try_into().unwrap()),
            20 => d.sha1 = Some(v.try_into().unwrap()),
            _ => d.sha256 = Some(v.try_into().unwrap()),
        }
    }
    d
}

fn kinds(md5: bool, sha1: bool, sha256: bool) -> Kinds {
    Kinds { md5, sha1, sha256 }
}

const NONE: Kinds = Kinds {
    md5: false,
    sha1: false,
    sha256: false,
};
const SHA256: Kinds = Kinds {
    md5: false,
    sha1: false,
    sha256: true,
};

/// One file case: the set, the file, the kinds `needed` must name, and the hits (as positions
/// in the set) with the digests given.
struct FileCase {
    what: &'static str,
    set: Vec<Observable>,
    path: &'static str,
    size: u64,
    needed: Kinds,
    digests: Vec<&'static str>,
    hits: Vec<(u32, What)>,
}

fn check_file(c: &FileCase) {
    let ix = build(&c.set);
    assert!(
        ix.rejected().is_empty(),
        "{}: rejected {:?}",
        c.what,
        ix.rejected()
    );
    let path = Path::new(c.path);
    let meta = FileMeta {
        path,
        name: path.file_name().unwrap(),
        size: c.size,
    };
    assert_eq!(ix.needed(&meta), c.needed, "{}: needed", c.what);
    let mut out = Vec::new();
    ix.match_file(&meta, &digests(&c.digests), &mut out);
    assert_eq!(positions(out), c.hits, "{}: hits", c.what);
}

#[test]
fn index_matches_files() {
    use What::*;
    let cases = vec![
        FileCase {
            what: "a hash without a size needs its kind for every file, and matches",
            set: vec![file_hash(EICAR_SHA256, None)],
            path: "/a/x",
            size: 12345,
            needed: SHA256,
            digests: vec![EICAR_SHA256],
            hits: vec![(0, FileHash(HashKind::Sha256))],
        },
        FileCase {
            what: "a sized hash needs nothing for a file of another size",
            set: vec![file_hash(EICAR_SHA256, Some(68))],
            path: "/a/x",
            size: 69,
            needed: NONE,
            digests: vec![EICAR_SHA256],
            hits: vec![],
        },
        FileCase {
            what: "a sized hash needs its kind at that size, and matches",
            set: vec![file_hash(EICAR_SHA256, Some(68)), file_hash(EICAR_MD5, Some(70))],
            path: "/a/x",
            size: 68,
            needed: SHA256,
            digests: vec![EICAR_SHA256, EICAR_MD5],
            hits: vec![(0, FileHash(HashKind::Sha256))],
        },
        FileCase {
            what: "one digest in two indicators: both hit, sized and unsized alike",
            set: vec![
                file_hash(EICAR_SHA256, None),
                file_hash(EICAR_SHA256, None),
                file_hash(EICAR_SHA256, Some(68)),
                file_hash(EICAR_SHA256, Some(68)),
                file_hash(EICAR_SHA256, Some(1)),
            ],
            path: "/a/x",
            size: 68,
            needed: SHA256,
            digests: vec![EICAR_SHA256],
            hits: vec![
                (0, FileHash(HashKind::Sha256)),
                (1, FileHash(HashKind::Sha256)),
                (2, FileHash(HashKind::Sha256)),
                (3, FileHash(HashKind::Sha256)),
            ],
        },
        FileCase {
            what: "every kind at once",
            set: vec![
                file_hash(EICAR_MD5, None),
                file_hash(EICAR_SHA1, None),
                file_hash(EICAR_SHA256, None),
            ],
            path: "/a/x",
            size: 68,
            needed: kinds(true, true, true),
            digests: vec![EICAR_MD5, EICAR_SHA1, EICAR_SHA256],
            hits: vec![
                (0, FileHash(HashKind::Md5)),
                (1, FileHash(HashKind::Sha1)),
                (2, FileHash(HashKind::Sha256)),
            ],
        },
        FileCase {
            what: "a digest that was not computed matches nothing",
            set: vec![file_hash(EICAR_SHA256, None)],
            path: "/a/x",
            size: 68,
            needed: SHA256,
            digests: vec![EICAR_MD5],
            hits: vec![],
        },
        FileCase {
            what: "exact names are case-sensitive",
            set: vec![
                Observable::FileName(name("evil.exe")),
                Observable::FileName(name("EVIL.EXE")),
            ],
            path: "/tmp/evil.exe",
            size: 1,
            needed: NONE,
            digests: vec![],
            hits: vec![(0, FileName)],
        },
        FileCase {
            what: "name globs see the name only; path globs the whole path",
            set: vec![
                Observable::FileName(glob("*.exe")),
                Observable::FileName(glob("/tmp/*")),
                Observable::PathGlob("/tmp/*".into()),
                Observable::PathGlob("*.exe".into()),
                Observable::PathGlob("**/*.exe".into()),
            ],
            path: "/tmp/evil.exe",
            size: 1,
            needed: NONE,
            digests: vec![],
            hits: vec![(0, FileName), (2, PathGlob), (4, PathGlob)],
        },
        FileCase {
            what: "compound name and size: both must hold",
            set: vec![
                Observable::FileAll(vec![
                    FileCondition::Name(name("invoice.pdf.exe")),
                    FileCondition::Size(100),
                ]),
                Observable::FileAll(vec![
                    FileCondition::Name(name("invoice.pdf.exe")),
                    FileCondition::Size(101),
                ]),
            ],
            path: "/home/u/invoice.pdf.exe",
            size: 100,
            needed: NONE,
            digests: vec![],
            hits: vec![(0, FileAll)],
        },
        FileCase {
            what: "compound name and hash: the hash is needed once the name holds",
            set: vec![Observable::FileAll(vec![
                FileCondition::Name(name("a.bin")),
                FileCondition::Hash(hash(EICAR_SHA256)),
            ])],
            path: "/x/a.bin",
            size: 68,
            needed: SHA256,
            digests: vec![EICAR_SHA256],
            hits: vec![(0, FileAll)],
        },
        FileCase {
            what: "compound name and hash: nothing is needed when the name differs",
            set: vec![Observable::FileAll(vec![
                FileCondition::Name(name("a.bin")),
                FileCondition::Hash(hash(EICAR_SHA256)),
            ])],
            path: "/x/b.bin",
            size: 68,
            needed: NONE,
            digests: vec![EICAR_SHA256],
            hits: vec![],
        },
        FileCase {
            what: "compound path glob, size and hash: all three",
            set: vec![Observable::FileAll(vec![
                FileCondition::Path("/home/*/Downloads/*.exe".into()),
                FileCondition::Size(68),
                FileCondition::Hash(hash(EICAR_MD5)),
            ])],
            path: "/home/u/Downloads/setup.exe",
            size: 68,
            needed: kinds(true, false, false),
            digests: vec![EICAR_MD5],
            hits: vec![(0, FileAll)],
        },
        FileCase {
            what: "compound path glob does not cross directories with *",
            set: vec![Observable::FileAll(vec![
                FileCondition::Path("/home/*/Downloads/*.exe".into()),
                FileCondition::Hash(hash(EICAR_MD5)),
            ])],
            path: "/home/u/Downloads/sub/setup.exe",
            size: 68,
            needed: NONE,
            digests: vec![EICAR_MD5],
            hits: vec![],
        },
        FileCase {
            what: "compound of hashes alone: needs every kind it names, and all must match",
            set: vec![
                Observable::FileAll(vec![
                    FileCondition::Hash(hash(EICAR_SHA256)),
                    FileCondition::Hash(hash(EICAR_SHA1)),
                ]),
                Observable::FileAll(vec![
                    FileCondition::Hash(hash(EICAR_SHA256)),
                    FileCondition::Hash(hash(OTHER_SHA256)),
                ]),
            ],
            path: "/x/y",
            size: 5,
            needed: kinds(false, true, true),
            digests: vec![EICAR_SHA256, EICAR_SHA1],
            hits: vec![(0, FileAll)],
        },
        FileCase {
            what: "compound of hashes alone: a missing digest is no match",
            set: vec![Observable::FileAll(vec![
                FileCondition::Hash(hash(EICAR_SHA256)),
                FileCondition::Hash(hash(EICAR_SHA1)),
            ])],
            path: "/x/y",
            size: 5,
            needed: kinds(false, true, true),
            digests: vec![EICAR_SHA256],
            hits: vec![],
        },
        FileCase {
            what: "a name shared by a plain indicator and a compound's anchor",
            set: vec![
                Observable::FileName(name("evil")),
                Observable::FileAll(vec![FileCondition::Name(name("evil")), FileCondition::Size(3)]),
                Observable::FileAll(vec![
                    FileCondition::Name(glob("ev*")),
                    FileCondition::Name(name("evil")),
                ]),
            ],
            path: "/evil",
            size: 3,
            needed: NONE,
            digests: vec![],
            hits: vec![(0, FileName), (1, FileAll), (2, FileAll)],
        },
        FileCase {
            what: "contradictory sizes never match",
            set: vec![Observable::FileAll(vec![
                FileCondition::Size(3),
                FileCondition::Size(4),
            ])],
            path: "/x",
            size: 3,
            needed: NONE,
            digests: vec![],
            hits: vec![],
        },
    ];
    for c in &cases {
        check_file(c);
    }
}

/// Path-glob semantics, as `names` documents them.
#[test]
fn index_path_glob_semantics() {
    let check = |pattern: &str, path: &str, expected: bool| {
        let ix = build(&[Observable::PathGlob(pattern.into())]);
        assert!(ix.rejected().is_empty(), "{pattern}");
        let p = Path::new(path);
        let meta = FileMeta {
            path: p,
            name: p.file_name().unwrap_or(OsStr::new("")),
            size: 0,
        };
        let mut out = Vec::new();
        ix.match_file(&meta, &Digests::default(), &mut out);
        assert_eq!(!out.is_empty(), expected, "{pattern} against {path}");
    };
    check("/tmp/*", "/tmp/a", true);
    check("/tmp/*", "/tmp/a/b", false);
    check("/tmp/**", "/tmp/a/b", true);
    check("**/evil.sh", "/x/y/evil.sh", true);
    check("**/evil.sh", "/x/y/notevil.sh", false);
    check("/a/**/b", "/a/b", true);
    check("/a/**/b", "/a/x/y/b", true);
    check("/tmp/?", "/tmp/a", true);
    check("/tmp/?", "/tmp/ab", false);
    check("/tmp/?", "/tmp//", false);
    check("/tmp/[ab]", "/tmp/a", true);
    check("/tmp/[!ab]", "/tmp/a", false);
    check("/tmp/[a-c]x", "/tmp/bx", true);
    check("/tmp/{x,y}.sh", "/tmp/y.sh", true);
    check("/tmp/{x,y}.sh", "/tmp/z.sh", false);
    check("/TMP/*", "/tmp/a", false);
    check("/tmp/\\*", "/tmp/*", true);
    check("/tmp/\\*", "/tmp/a", false);
    check("*", "/tmp/a", false);
    check("*.exe", "/tmp/a.exe", false);
    check("/home/*/Downloads/*.exe", "/home/u/Downloads/a.exe", true);
    check("/home/*/Downloads/*.exe", "/home/u/v/Downloads/a.exe", false);
}

/// File-name glob semantics, including names that are not UTF-8.
#[test]
fn index_name_glob_semantics() {
    let check = |pattern: &str, file_name: &[u8], expected: bool| {
        let ix = build(&[Observable::FileName(glob(pattern))]);
        let n = OsStr::from_bytes(file_name);
        let path = Path::new("/d").join(n);
        let meta = FileMeta {
            path: &path,
            name: n,
            size: 0,
        };
        let mut out = Vec::new();
        ix.match_file(&meta, &Digests::default(), &mut out);
        assert_eq!(!out.is_empty(), expected, "{pattern} against {:?}", n);
    };
    check("*.exe", b"a.exe", true);
    check("*.exe", b"a.b.exe", true);
    check("*.exe", b".exe", true);
    check("*.exe", b"a.EXE", false);
    check("*.exe", b"a.exe.txt", false);
    check("*.exe", b"\xffevil.exe", true);
    check("?.txt", b"ab.txt", false);
    check("?.txt", b"a.txt", true);
    check("evil*", b"evil", true);
    check("[a-c]*", b"b1", true);
    check("invoice*.pdf.exe", b"invoice_2024.pdf.exe", true);
    check("{setup,install}.exe", b"install.exe", true);
    // An exact name that is not UTF-8 cannot equal an indicator's (UTF-8) text.
    let ix = build(&[Observable::FileName(name("evil"))]);
    let meta = FileMeta {
        path: Path::new("/d/x"),
        name: OsStr::from_bytes(b"evil\xff"),
        size: 0,
    };
    let mut out = Vec::new();
    ix.match_file(&meta, &Digests::default(), &mut out);
    assert!(out.is_empty());
}

struct ProcessCase {
    what: &'static str,
    set: Vec<Observable>,
    name: &'static str,
    exe: Option<&'static str>,
    digests: Option<Vec<&'static str>>,
    cmdline: &'static str,
    hits: Vec<(u32, What)>,
}

fn check_process(c: &ProcessCase) {
    let ix = build(&c.set);
    assert!(
        ix.rejected().is_empty(),
        "{}: rejected {:?}",
        c.what,
        ix.rejected()
    );
    let d = c.digests.as_ref().map(|d| digests(d));
    let facts = ProcessFacts {
        name: c.name,
        exe: c.exe.map(Path::new),
        exe_digests: d.as_ref(),
        cmdline: c.cmdline,
    };
    let mut out = Vec::new();
    ix.match_process(&facts, &mut out);
    assert_eq!(positions(out), c.hits, "{}", c.what);
}

#[test]
fn index_matches_processes() {
    use What::*;
    let cases = vec![
        ProcessCase {
            what: "name, path and hash, each exact",
            set: vec![
                Observable::ProcessName("evil".into()),
                Observable::ProcessName("Evil".into()),
                Observable::ProcessPath("/tmp/evil".into()),
                Observable::ProcessPath("/tmp/evil2".into()),
                Observable::ProcessHash(hash(EICAR_SHA256)),
                Observable::ProcessHash(hash(EICAR_SHA256)),
                Observable::FileHash {
                    hash: hash(EICAR_SHA256),
                    size: None,
                },
            ],
            name: "evil",
            exe: Some("/tmp/evil"),
            digests: Some(vec![EICAR_SHA256]),
            cmdline: "evil --now",
            hits: vec![
                (0, ProcessName),
                (2, ProcessPath),
                (4, ProcessHash(HashKind::Sha256)),
                (5, ProcessHash(HashKind::Sha256)),
            ],
        },
        ProcessCase {
            what: "every needle that occurs, overlapping ones too, each once",
            set: vec![
                Observable::CommandLine("evil".into()),
                Observable::CommandLine("evil.sh".into()),
                Observable::CommandLine("il.s".into()),
                Observable::CommandLine("-c".into()),
                Observable::CommandLine("absent".into()),
                Observable::CommandLine("EVIL".into()),
            ],
            name: "sh",
            exe: None,
            digests: None,
            cmdline: "sh -c ./evil.sh; ./evil.sh",
            hits: vec![
                (0, CommandLine),
                (1, CommandLine),
                (2, CommandLine),
                (3, CommandLine),
            ],
        },
        ProcessCase {
            what: "compound name and command line",
            set: vec![
                Observable::ProcessAll(vec![
                    ProcessCondition::Name("powershell.exe".into()),
                    ProcessCondition::CommandLine("-enc".into()),
                ]),
                Observable::ProcessAll(vec![
                    ProcessCondition::Name("powershell.exe".into()),
                    ProcessCondition::CommandLine("-nop".into()),
                ]),
            ],
            name: "powershell.exe",
            exe: None,
            digests: None,
            cmdline: "powershell.exe -enc AAAA",
            hits: vec![(0, ProcessAll)],
        },
        ProcessCase {
            what: "compound path and hash",
            set: vec![Observable::ProcessAll(vec![
                ProcessCondition::Path("/usr/bin/x".into()),
                ProcessCondition::Hash(hash(EICAR_MD5)),
            ])],
            name: "x",
            exe: Some("/usr/bin/x"),
            digests: Some(vec![EICAR_MD5]),
            cmdline: "x",
            hits: vec![(0, ProcessAll)],
        },
        ProcessCase {
            what: "compound of a hash alone needs the executable's digests",
            set: vec![
                Observable::ProcessAll(vec![ProcessCondition::Hash(hash(EICAR_MD5))]),
                Observable::ProcessAll(vec![ProcessCondition::CommandLine("x".into())]),
            ],
            name: "x",
            exe: Some("/usr/bin/x"),
            digests: None,
            cmdline: "x",
            hits: vec![(1, ProcessAll)],
        },
    ];
    for c in &cases {
        check_process(c);
    }
    let ix = build(&[
        Observable::ProcessHash(hash(EICAR_MD5)),
        Observable::ProcessAll(vec![
            ProcessCondition::Name("x".into()),
            ProcessCondition::Hash(hash(EICAR_SHA1)),
        ]),
        Observable::FileHash {
            hash: hash(EICAR_SHA256),
            size: None,
        },
    ]);
    assert_eq!(ix.process_kinds(), kinds(true, true, false));
}

#[test]
fn index_matches_addresses() {
    let net = |s: &str| Observable::RemoteAddr(IpNet::parse(s).unwrap());
    let ix = build(&[
        net("10.0.0.0/8"),
        net("10.1.0.0/16"),
        net("10.1.2.3"),
        net("0.0.0.0/0"),
        net("::/0"),
        net("2001:db8::/32"),
        net("2001:db8::1"),
        net("10.0.0.0/8"),
        net("10.1.2.4/31"),
    ]);
    let check = |ip: &str, expected: &[u32]| {
        let mut out = Vec::new();
        ix.match_addr(ip.parse::<IpAddr>().unwrap(), &mut out);
        let got: Vec<u32> = positions(out).into_iter().map(|(p, _)| p).collect();
        assert_eq!(got, expected, "{ip}");
    };
    check("10.1.2.3", &[0, 1, 2, 3, 7]);
    check("10.1.2.5", &[0, 1, 3, 7, 8]);
    check("10.200.0.1", &[0, 3, 7]);
    check("192.168.0.1", &[3]);
    check("::ffff:10.1.2.3", &[0, 1, 2, 3, 4, 7]);
    check("2001:db8::1", &[4, 5, 6]);
    check("2001:db9::1", &[4]);
    assert!(build(&[]).is_empty());
}

#[test]
fn index_rejects_what_it_cannot_match() {
    let mut b = Builder::new();
    b.add(0, &ind(Observable::FileName(glob("[abc"))));
    b.add(10, &ind(Observable::PathGlob("/tmp/{a,b".into())));
    b.add(
        20,
        &ind(Observable::FileHash {
            hash: Hash {
                kind: HashKind::Sha256,
                value: vec![1; 31],
            },
            size: None,
        }),
    );
    b.add(
        30,
        &ind(Observable::RemoteAddr(IpNet {
            addr: "10.0.0.1".parse().unwrap(),
            prefix: 8,
        })),
    );
    b.add(
        40,
        &ind(Observable::FileAll(vec![
            FileCondition::Name(name("kept-out")),
            FileCondition::Path("[".into()),
        ])),
    );
    b.add(50, &ind(Observable::FileAll(vec![])));
    b.add(60, &ind(Observable::CommandLine(String::new())));
    b.add(70, &ind(Observable::FileName(name("fine"))));
    let ix = b.finish();
    assert_eq!(ix.len(), 1);
    let got: Vec<(u32, Reason)> = ix.rejected().iter().map(|r| (r.record, r.reason)).collect();
    assert_eq!(
        got,
        vec![
            (0, Reason::BadGlob),
            (10, Reason::BadGlob),
            (20, Reason::Invalid),
            (30, Reason::Invalid),
            (40, Reason::BadGlob),
            (50, Reason::Invalid),
            (60, Reason::Invalid),
        ]
    );
    // The refused compound left no key behind.
    let meta = FileMeta {
        path: Path::new("/kept-out"),
        name: OsStr::new("kept-out"),
        size: 0,
    };
    let mut out = Vec::new();
    ix.match_file(&meta, &Digests::default(), &mut out);
    assert!(out.is_empty());
}

/// The split-and-retry compile: a part the library refuses is halved until each piece builds,
/// and an item refused alone is reported by its id.
#[test]
fn index_isolates_what_the_library_refuses() {
    let items: Vec<u32> = (0..10).collect();
    let mut sets = Vec::new();
    let mut failed = Vec::new();
    let mut try_build = |part: &[u32]| (!part.contains(&3) && !part.contains(&7)).then(|| part.to_vec());
    keys::build_split(&items, 0, &mut try_build, &mut sets, &mut failed);
    assert_eq!(failed, vec![3, 7]);
    let covered: Vec<u32> = sets
        .iter()
        .flat_map(|(base, part)| part.iter().map(move |&i| i - base + base))
        .collect();
    assert_eq!(covered, vec![0, 1, 2, 4, 5, 6, 8, 9]);
    assert!(sets.iter().all(|(base, part)| part[0] == *base));
}

/// A tiny deterministic generator (splitmix64), so the memory test needs no random crate.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Memory is a correctness property: 100 000 SHA-256 indicators must cost at most 40 bytes
/// each (the digest, the record offset and the radix index), and the estimate made before
/// building must be exact for such a set.
#[test]
fn index_holds_sha256_in_40_bytes_each() {
    const N: usize = 100_000;
    let mut state = 42;
    let mut obs = Vec::with_capacity(N);
    for _ in 0..N {
        let mut v = Vec::with_capacity(32);
        for _ in 0..4 {
            v.extend_from_slice(&splitmix(&mut state).to_le_bytes());
        }
        obs.push(Observable::FileHash {
            hash: Hash {
                kind: HashKind::Sha256,
                value: v,
            },
            size: None,
        });
    }
    let mut counts = Counts::default();
    obs.iter().for_each(|o| counts.add(o));
    let mut b = Builder::new();
    for (i, o) in obs.iter().enumerate() {
        b.add(i as u32 * 100, &ind(o.clone()));
    }
    let ix = b.finish();
    assert_eq!(ix.len(), N);
    let per_entry = ix.heap_bytes() as f64 / N as f64;
    assert!(per_entry <= 40.0, "{per_entry} bytes per SHA-256 indicator");
    assert_eq!(Index::estimate_bytes(&counts), ix.heap_bytes());
    // And every one of them is found, by its own record.
    let meta = FileMeta {
        path: Path::new("/f"),
        name: OsStr::new("f"),
        size: 1,
    };
    for (i, o) in obs.iter().enumerate().step_by(97) {
        let Observable::FileHash { hash, .. } = o else {
            unreachable!()
        };
        let d = Digests {
            sha256: Some(hash.value.clone().try_into().unwrap()),
            ..Digests::default()
        };
        let mut out = Vec::new();
        ix.match_file(&meta, &d, &mut out);
        assert_eq!(
            out,
            vec![Hit {
                record: i as u32 * 100,
                what: What::FileHash(HashKind::Sha256)
            }]
        );
    }
}
