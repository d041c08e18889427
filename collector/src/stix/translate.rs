//! STIX patterns to Picket observables: the subset that an endpoint can match, translated
//! exactly, and a specific [`Reason`] for everything else.
//!
//! # What is translated
//!
//! A pattern is translated when it is one observation expression or an `OR` of them, and each
//! `[ ]` holds comparisons joined by `AND` and `OR` that Picket can express:
//!
//! | STIX | Picket |
//! | --- | --- |
//! | `file:hashes.X = 'hex'` (X is MD5, SHA-1 or SHA-256 in any case, with or without the hyphen) | `FileHash` |
//! | `file:name = 'x'`, `LIKE` without wildcards | exact `FileName` |
//! | `file:name LIKE` with `%` (no `_`), `MATCHES 'text'` or `'^text'` | glob `FileName` |
//! | `file:size = n`, only in an `AND` with a hash or a name | the size of a `FileHash` or a `FileAll` condition |
//! | `process:image_ref.name`, `process:binary_ref.name`, `process:name` (`=`, `LIKE` without wildcards) | `ProcessName` |
//! | `process:image_ref.hashes.X`, `process:binary_ref.hashes.X` | `ProcessHash` |
//! | `process:command_line LIKE '%text%'`, `MATCHES 'text'` | `CommandLine` (a substring) |
//! | `ipv4-addr:value`, `ipv6-addr:value`, `network-traffic:dst_ref.value` (`=` or `ISSUBSET`, an address or a network) | `RemoteAddr` |
//!
//! `IN (a, b, ...)` is the `OR` of `=` over its members. `AND` inside one `[ ]` becomes one
//! compound (`FileAll`, `ProcessAll`) when every comparison is about the same object type;
//! `OR`, inside or between brackets, becomes one observable per branch, after distributing
//! `AND` over `OR` (at most [`MAX_BRANCHES`]). Identical branches are kept once.
//!
//! A pattern with any part Picket cannot express is refused as a whole: translating the rest
//! would match something other than what the pattern says.
//!
//! # Deliberate readings
//!
//! - Hash algorithm names compare case-insensitively (`file:hashes.md5`, `'sha-256'`, `SHA1`),
//!   and hex digests are lower-cased: real feeds write both in every case.
//! - An address compared with `=` to a network (`ipv4-addr:value = '10.0.0.0/8'`) is read as
//!   membership, as the feeds that write it mean; `ISSUBSET` says the same thing explicitly. A
//!   live connection has one remote address, never a network.
//! - `network-traffic:dst_ref.value` becomes a remote address: an agent does not record which
//!   side opened a connection, so it also matches that address as the source of an inbound one.

use std::collections::HashSet;
use std::fmt;

use picket_proto::{
    FileCondition, Hash, HashKind, IpNet, NamePattern, Observable, ProcessCondition, MAX_CONDITIONS, MAX_TEXT,
};

use super::pattern::{parse_pattern, Comparison, Literal, ObjectPath, Observation, Operator, Pattern, Test};

/// Most observables one pattern translates into (its `OR` branches, after distribution).
pub const MAX_BRANCHES: usize = 1024;

/// Why a pattern is not translated. Its text ([`fmt::Display`]) is the reason recorded in
/// [`crate::ingest::Unsupported`], and counted: it names the construct, never a value from the
/// pattern other than an object type, a property path or a hash algorithm's name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The indicator's `pattern_type` is not `stix` (it is Sigma, YARA, Snort, ...).
    PatternType(String),
    /// The pattern does not parse; the message says why.
    Syntax(String),
    /// An object type no endpoint observable corresponds to (`domain-name`, `url`,
    /// `email-message`, `x509-certificate`, ...).
    ObjectType(String),
    /// A property of a known object type that Picket does not match (`file:parent_directory_ref.path`,
    /// `process:pid`, `network-traffic:dst_port`, ...).
    Property(String),
    /// A hash algorithm other than MD5, SHA-1 and SHA-256.
    HashAlgorithm(String),
    /// `NOT` before an operator.
    Not,
    /// An operator Picket cannot express on this property.
    Operator {
        /// The operator (`!=`, `<`, `ISSUPERSET`, `EXISTS`, ...).
        op: &'static str,
        /// The property path.
        path: String,
    },
    /// An operand of the wrong kind (a number where a string is needed, ...).
    Operand {
        /// The property path.
        path: String,
        /// What is needed: `a string`, `an integer`.
        expected: &'static str,
    },
    /// An operand of the right kind whose value Picket cannot use.
    Value {
        /// The property path.
        path: String,
        /// What is wrong with the value.
        problem: String,
    },
    /// A `LIKE` pattern that has no exact Picket equivalent on this property.
    Like {
        /// The property path.
        path: String,
        /// What is unsupported about it.
        problem: &'static str,
    },
    /// A `MATCHES` regular expression that is not plain text (optionally anchored as the
    /// property allows).
    Matches {
        /// The property path.
        path: String,
    },
    /// A comparison that holds for every value (`LIKE '%'`, `MATCHES ''`): not an indicator.
    EveryValue {
        /// The property path.
        path: String,
    },
    /// `AND` between two observation expressions: a correlation of several observations.
    ObservationAnd,
    /// `FOLLOWEDBY`: a sequence of observations.
    FollowedBy,
    /// A qualifier: `WITHIN`, `REPEATS` or `START/STOP`.
    Qualifier(&'static str),
    /// `AND` inside one `[ ]` over different object types (or different objects, such as a
    /// file and a process).
    MixedObjects,
    /// `AND` of two comparisons on one address.
    AddressAnd,
    /// `file:size` without a hash or a name in the same `AND`: it would match every file of
    /// that size.
    SizeAlone,
    /// More comparisons on one object than a compound holds.
    TooManyConditions,
    /// More `OR` branches than [`MAX_BRANCHES`].
    TooManyBranches,
    /// The pattern can match nothing (`IN ()`).
    MatchesNothing,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::PatternType(t) => write!(f, "pattern_type: {t}"),
            Reason::Syntax(m) => write!(f, "pattern: cannot parse: {m}"),
            Reason::ObjectType(t) => write!(f, "pattern: {t} is not matchable on an endpoint"),
            Reason::Property(p) => write!(f, "pattern: {p} is not matchable on an endpoint"),
            Reason::HashAlgorithm(a) => {
                write!(f, "pattern: hash algorithm {a} is not matchable on an endpoint")
            }
            Reason::Not => f.write_str("pattern: NOT is not supported"),
            Reason::Operator { op, path } => write!(f, "pattern: {op} on {path} is not supported"),
            Reason::Operand { path, expected } => write!(f, "pattern: {path} needs {expected}"),
            Reason::Value { path, problem } => write!(f, "pattern: {path} {problem}"),
            Reason::Like { path, problem } => write!(f, "pattern: LIKE {problem} on {path} is not supported"),
            Reason::Matches { path } => {
                write!(f, "pattern: MATCHES on {path} is supported only with plain text")
            }
            Reason::EveryValue { path } => write!(f, "pattern: the comparison on {path} matches every value"),
            Reason::ObservationAnd => f.write_str("pattern: AND between observations is not supported"),
            Reason::FollowedBy => f.write_str("pattern: FOLLOWEDBY is not supported"),
            Reason::Qualifier(q) => write!(f, "pattern: qualifier {q} is not supported"),
            Reason::MixedObjects => {
                f.write_str("pattern: AND of comparisons on different objects is not supported")
            }
            Reason::AddressAnd => f.write_str("pattern: AND of two address comparisons is not supported"),
            Reason::SizeAlone => {
                f.write_str("pattern: file:size without a hash or a name in the same AND is not supported")
            }
            Reason::TooManyConditions => {
                write!(f, "pattern: more than {MAX_CONDITIONS} comparisons on one object")
            }
            Reason::TooManyBranches => write!(f, "pattern: more than {MAX_BRANCHES} OR branches"),
            Reason::MatchesNothing => f.write_str("pattern: matches nothing"),
        }
    }
}

/// Parses and translates a pattern. `Ok` holds one observable per `OR` branch, in pattern
/// order, never empty.
pub fn translate_pattern(text: &str) -> Result<Vec<Observable>, Reason> {
    let pattern = parse_pattern(text).map_err(|e| Reason::Syntax(e.message))?;
    translate(&pattern)
}

/// Translates a parsed pattern (see the module documentation for what is translated).
pub fn translate(pattern: &Pattern) -> Result<Vec<Observable>, Reason> {
    let mut comparisons = Vec::new();
    branches(&pattern.root, &mut comparisons)?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for c in comparisons {
        for conj in dnf(c)? {
            let o = build(conj)?;
            if seen.insert(o.clone()) {
                out.push(o);
                if out.len() > MAX_BRANCHES {
                    return Err(Reason::TooManyBranches);
                }
            }
        }
    }
    if out.is_empty() {
        return Err(Reason::MatchesNothing);
    }
    Ok(out)
}

/// Collects the comparison expressions of an `OR` of observation expressions.
fn branches<'p>(o: &'p Observation, out: &mut Vec<&'p Comparison>) -> Result<(), Reason> {
    match o {
        Observation::Match(c) => out.push(c),
        Observation::Or(items) => {
            for item in items {
                branches(item, out)?;
            }
        }
        Observation::And(_) => return Err(Reason::ObservationAnd),
        Observation::FollowedBy(_) => return Err(Reason::FollowedBy),
        Observation::Qualified(_, q) => return Err(Reason::Qualifier(q.keyword())),
    }
    Ok(())
}

/// The object a comparison is about; an `AND` holds only between comparisons on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Object {
    File,
    Process,
    Ipv4,
    Ipv6,
    Traffic,
}

/// What a property path denotes on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    FileHash(HashKind),
    FileName,
    FileSize,
    ProcessName,
    ProcessHash(HashKind),
    CommandLine,
    Addr(Family),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
    Any,
}

/// One translated comparison.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Atom {
    FileHash(Hash),
    FileName(NamePattern),
    FileSize(u64),
    ProcessName(String),
    ProcessHash(Hash),
    CommandLine(String),
    Addr(IpNet),
}

/// A conjunction of translated comparisons.
type Conj = Vec<(Object, Atom)>;

/// A path as reasons print it: canonical, and clipped.
fn show(path: &ObjectPath) -> String {
    clip(&path.to_string(), 80)
}

fn clip(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().count() > max {
        out.push_str("...");
    }
    out
}

fn hash_kind(name: &str) -> Result<HashKind, Reason> {
    match name.to_ascii_uppercase().as_str() {
        "MD5" => Ok(HashKind::Md5),
        "SHA-1" | "SHA1" => Ok(HashKind::Sha1),
        "SHA-256" | "SHA256" => Ok(HashKind::Sha256),
        _ => Err(Reason::HashAlgorithm(clip(name, 40))),
    }
}

fn target(path: &ObjectPath) -> Result<(Object, Target), Reason> {
    let keys = path.keys();
    let keys = keys.as_deref();
    let property = || Reason::Property(show(path));
    match path.object_type.as_str() {
        "file" => match keys {
            Some(["hashes", alg]) => Ok((Object::File, Target::FileHash(hash_kind(alg)?))),
            Some(["name"]) => Ok((Object::File, Target::FileName)),
            Some(["size"]) => Ok((Object::File, Target::FileSize)),
            _ => Err(property()),
        },
        "process" => match keys {
            Some(["name"]) | Some(["image_ref" | "binary_ref", "name"]) => {
                Ok((Object::Process, Target::ProcessName))
            }
            Some(["image_ref" | "binary_ref", "hashes", alg]) => {
                Ok((Object::Process, Target::ProcessHash(hash_kind(alg)?)))
            }
            Some(["command_line"]) => Ok((Object::Process, Target::CommandLine)),
            _ => Err(property()),
        },
        "ipv4-addr" => match keys {
            Some(["value"]) => Ok((Object::Ipv4, Target::Addr(Family::V4))),
            _ => Err(property()),
        },
        "ipv6-addr" => match keys {
            Some(["value"]) => Ok((Object::Ipv6, Target::Addr(Family::V6))),
            _ => Err(property()),
        },
        "network-traffic" => match keys {
            Some(["dst_ref", "value"]) => Ok((Object::Traffic, Target::Addr(Family::Any))),
            _ => Err(property()),
        },
        other => Err(Reason::ObjectType(clip(other, 40))),
    }
}

/// The alternatives one test allows (several for `IN`, none for `IN ()`).
fn test_atoms(t: &Test) -> Result<Vec<(Object, Atom)>, Reason> {
    let (object, target) = target(&t.path)?;
    if t.negated {
        return Err(Reason::Not);
    }
    let path = || show(&t.path);
    let atoms = match (target, &t.op) {
        (Target::CommandLine, op @ (Operator::Eq(_) | Operator::In(_))) => {
            return Err(Reason::Operator {
                op: op.symbol(),
                path: path(),
            })
        }
        (_, Operator::Eq(l)) => vec![equal(target, l, &t.path)?],
        (_, Operator::In(set)) => set
            .iter()
            .map(|l| equal(target, l, &t.path))
            .collect::<Result<_, _>>()?,
        (Target::FileName, Operator::Like(s)) => vec![like_file_name(s, &t.path)?],
        (Target::ProcessName, Operator::Like(s)) => {
            if s.contains(['%', '_']) {
                return Err(Reason::Like {
                    path: path(),
                    problem: "with wildcards",
                });
            }
            vec![Atom::ProcessName(text(s, &t.path)?)]
        }
        (Target::CommandLine, Operator::Like(s)) => {
            let inner = s.trim_matches('%');
            if inner.is_empty() && !s.is_empty() {
                return Err(Reason::EveryValue { path: path() });
            }
            if !(s.starts_with('%') && s.ends_with('%')) || inner.contains(['%', '_']) {
                return Err(Reason::Like {
                    path: path(),
                    problem: "other than '%text%'",
                });
            }
            vec![Atom::CommandLine(text(inner, &t.path)?)]
        }
        (Target::FileName, Operator::Matches(re)) => {
            let (start, lit) = plain_regex(re).ok_or_else(|| Reason::Matches { path: path() })?;
            if lit.is_empty() {
                return Err(Reason::EveryValue { path: path() });
            }
            let glob = if start {
                format!("{}*", glob_escape(&lit))
            } else {
                format!("*{}*", glob_escape(&lit))
            };
            vec![Atom::FileName(NamePattern {
                text: text(&glob, &t.path)?,
                glob: true,
            })]
        }
        (Target::CommandLine, Operator::Matches(re)) => match plain_regex(re) {
            Some((_, lit)) if lit.is_empty() => return Err(Reason::EveryValue { path: path() }),
            Some((false, lit)) => vec![Atom::CommandLine(text(&lit, &t.path)?)],
            _ => return Err(Reason::Matches { path: path() }),
        },
        (Target::Addr(family), Operator::IsSubset(s)) => vec![Atom::Addr(address(family, s, &t.path)?)],
        (_, op) => {
            return Err(Reason::Operator {
                op: op.symbol(),
                path: path(),
            })
        }
    };
    Ok(atoms.into_iter().map(|a| (object, a)).collect())
}

/// `path = literal`.
fn equal(target: Target, literal: &Literal, path: &ObjectPath) -> Result<Atom, Reason> {
    let string = || match literal {
        Literal::Str(s) => Ok(s.as_str()),
        _ => Err(Reason::Operand {
            path: show(path),
            expected: "a string",
        }),
    };
    Ok(match target {
        Target::FileHash(kind) => Atom::FileHash(digest(kind, string()?, path)?),
        Target::ProcessHash(kind) => Atom::ProcessHash(digest(kind, string()?, path)?),
        Target::FileName => Atom::FileName(NamePattern {
            text: text(string()?, path)?,
            glob: false,
        }),
        Target::ProcessName => Atom::ProcessName(text(string()?, path)?),
        Target::FileSize => match literal {
            Literal::Int(n) => Atom::FileSize(n.parse::<u64>().map_err(|_| Reason::Value {
                path: show(path),
                problem: "is not a size in bytes".into(),
            })?),
            _ => {
                return Err(Reason::Operand {
                    path: show(path),
                    expected: "an integer",
                })
            }
        },
        Target::Addr(family) => Atom::Addr(address(family, string()?, path)?),
        // Refused by the caller: an exact command line is not a substring.
        Target::CommandLine => {
            return Err(Reason::Operator {
                op: "=",
                path: show(path),
            })
        }
    })
}

/// A text value an indicator can carry.
fn text(s: &str, path: &ObjectPath) -> Result<String, Reason> {
    if s.is_empty() {
        return Err(Reason::Value {
            path: show(path),
            problem: "is empty".into(),
        });
    }
    if s.len() > MAX_TEXT {
        return Err(Reason::Value {
            path: show(path),
            problem: format!("is longer than {MAX_TEXT} bytes"),
        });
    }
    Ok(s.to_owned())
}

fn digest(kind: HashKind, s: &str, path: &ObjectPath) -> Result<Hash, Reason> {
    let digits = kind.digest_len() * 2;
    let bad = || Reason::Value {
        path: show(path),
        problem: format!("is not a {digits}-digit hex digest"),
    };
    if s.len() != digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let value = hex::decode(s).map_err(|_| bad())?;
    Ok(Hash { kind, value })
}

fn address(family: Family, s: &str, path: &ObjectPath) -> Result<IpNet, Reason> {
    let (what, ok): (&str, fn(&IpNet) -> bool) = match family {
        Family::V4 => ("an IPv4 address or network", |n| n.addr.is_ipv4()),
        Family::V6 => ("an IPv6 address or network", |n| n.addr.is_ipv6()),
        Family::Any => ("an IP address or network", |_| true),
    };
    let net = IpNet::parse(s).filter(ok).ok_or_else(|| Reason::Value {
        path: show(path),
        problem: format!("is not {what}"),
    })?;
    if net.prefix == 0 {
        return Err(Reason::Value {
            path: show(path),
            problem: "is a /0 network, which holds every address".into(),
        });
    }
    Ok(net)
}

/// Characters `globset` gives a meaning; each is escaped with `\` to stand for itself.
const GLOB_META: [char; 7] = ['*', '?', '[', ']', '{', '}', '\\'];

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if GLOB_META.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `file:name LIKE`: an exact name without wildcards, a glob with `%` as `*`. `_` (exactly one
/// character) has no glob equivalent: the agent's globs match bytes, and `?` is one byte, not
/// one character of a non-ASCII name.
fn like_file_name(s: &str, path: &ObjectPath) -> Result<Atom, Reason> {
    if s.contains('_') {
        return Err(Reason::Like {
            path: show(path),
            problem: "with '_'",
        });
    }
    if !s.contains('%') {
        return Ok(Atom::FileName(NamePattern {
            text: text(s, path)?,
            glob: false,
        }));
    }
    if s.chars().all(|c| c == '%') {
        return Err(Reason::EveryValue { path: show(path) });
    }
    let mut glob = String::with_capacity(s.len() + 8);
    let mut wildcard = false;
    for c in s.chars() {
        if c == '%' {
            // A run of `%` is one `*`: `**` means something else to a glob.
            if !wildcard {
                glob.push('*');
            }
            wildcard = true;
        } else {
            if GLOB_META.contains(&c) {
                glob.push('\\');
            }
            glob.push(c);
            wildcard = false;
        }
    }
    Ok(Atom::FileName(NamePattern {
        text: text(&glob, path)?,
        glob: true,
    }))
}

/// A regular expression that is plain text: an optional leading `^`, then characters that
/// stand for themselves (metacharacters escaped with `\`). Returns whether it was anchored and
/// the text. A trailing `$` is refused: it also matches before a final newline.
fn plain_regex(re: &str) -> Option<(bool, String)> {
    let (anchored, body) = match re.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, re),
    };
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() => out.push(e),
                _ => return None,
            },
            '.' | '^' | '$' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' => return None,
            c => out.push(c),
        }
    }
    Some((anchored, out))
}

/// Distributes `AND` over `OR`: the comparison as an `OR` of conjunctions.
fn dnf(c: &Comparison) -> Result<Vec<Conj>, Reason> {
    match c {
        Comparison::Test(t) => Ok(test_atoms(t)?.into_iter().map(|a| vec![a]).collect()),
        Comparison::Or(items) => {
            let mut out = Vec::new();
            for item in items {
                out.extend(dnf(item)?);
                if out.len() > MAX_BRANCHES {
                    return Err(Reason::TooManyBranches);
                }
            }
            Ok(out)
        }
        Comparison::And(items) => {
            let mut acc: Vec<Conj> = vec![Vec::new()];
            for item in items {
                let d = dnf(item)?;
                if acc.len().saturating_mul(d.len()) > MAX_BRANCHES {
                    return Err(Reason::TooManyBranches);
                }
                let mut next = Vec::with_capacity(acc.len() * d.len());
                for left in &acc {
                    for right in &d {
                        // Duplicates are dropped as the conjunction grows, and it never grows
                        // past a compound's size: memory stays bounded by the branch count.
                        let mut conj = left.clone();
                        for atom in right {
                            if !conj.contains(atom) {
                                if conj.len() == MAX_CONDITIONS {
                                    return Err(Reason::TooManyConditions);
                                }
                                conj.push(atom.clone());
                            }
                        }
                        next.push(conj);
                    }
                }
                acc = next;
            }
            Ok(acc)
        }
    }
}

/// One conjunction as one observable.
fn build(conj: Conj) -> Result<Observable, Reason> {
    let mut atoms: Vec<(Object, Atom)> = Vec::with_capacity(conj.len());
    for a in conj {
        if !atoms.contains(&a) {
            atoms.push(a);
        }
    }
    let Some(&(object, _)) = atoms.first() else {
        return Err(Reason::MatchesNothing);
    };
    if atoms.iter().any(|(o, _)| *o != object) {
        return Err(Reason::MixedObjects);
    }
    if atoms.len() > MAX_CONDITIONS {
        return Err(Reason::TooManyConditions);
    }
    let atoms: Vec<Atom> = atoms.into_iter().map(|(_, a)| a).collect();
    match object {
        Object::File => file(atoms),
        Object::Process => process(atoms),
        Object::Ipv4 | Object::Ipv6 | Object::Traffic => match <[Atom; 1]>::try_from(atoms) {
            Ok([Atom::Addr(net)]) => Ok(Observable::RemoteAddr(net)),
            _ => Err(Reason::AddressAnd),
        },
    }
}

fn file(atoms: Vec<Atom>) -> Result<Observable, Reason> {
    let conds: Vec<FileCondition> = atoms
        .into_iter()
        .filter_map(|a| match a {
            Atom::FileHash(h) => Some(FileCondition::Hash(h)),
            Atom::FileName(n) => Some(FileCondition::Name(n)),
            Atom::FileSize(s) => Some(FileCondition::Size(s)),
            _ => None,
        })
        .collect();
    if conds.iter().all(|c| matches!(c, FileCondition::Size(_))) {
        return Err(Reason::SizeAlone);
    }
    Ok(match conds.as_slice() {
        [FileCondition::Hash(h)] => Observable::FileHash {
            hash: h.clone(),
            size: None,
        },
        [FileCondition::Hash(h), FileCondition::Size(s)]
        | [FileCondition::Size(s), FileCondition::Hash(h)] => Observable::FileHash {
            hash: h.clone(),
            size: Some(*s),
        },
        [FileCondition::Name(n)] => Observable::FileName(n.clone()),
        _ => Observable::FileAll(conds),
    })
}

fn process(atoms: Vec<Atom>) -> Result<Observable, Reason> {
    let mut conds: Vec<ProcessCondition> = atoms
        .into_iter()
        .filter_map(|a| match a {
            Atom::ProcessName(n) => Some(ProcessCondition::Name(n)),
            Atom::ProcessHash(h) => Some(ProcessCondition::Hash(h)),
            Atom::CommandLine(c) => Some(ProcessCondition::CommandLine(c)),
            _ => None,
        })
        .collect();
    Ok(if conds.len() == 1 {
        match conds.remove(0) {
            ProcessCondition::Name(n) => Observable::ProcessName(n),
            ProcessCondition::Hash(h) => Observable::ProcessHash(h),
            ProcessCondition::CommandLine(c) => Observable::CommandLine(c),
            ProcessCondition::Path(p) => Observable::ProcessPath(p),
        }
    } else {
        Observable::ProcessAll(conds)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "44d88612fea8a8f36de82e1278abb02f";
    const SHA1: &str = "3395856ce81f2b7382dee72602f798b642f14140";
    const SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";

    fn hash(hex: &str) -> Hash {
        Hash::from_hex(hex).unwrap()
    }

    fn fh(hex: &str) -> Observable {
        Observable::FileHash {
            hash: hash(hex),
            size: None,
        }
    }

    fn name(text: &str) -> Observable {
        Observable::FileName(NamePattern {
            text: text.into(),
            glob: false,
        })
    }

    fn glob(text: &str) -> Observable {
        Observable::FileName(NamePattern {
            text: text.into(),
            glob: true,
        })
    }

    fn addr(text: &str) -> Observable {
        Observable::RemoteAddr(IpNet::parse(text).unwrap())
    }

    /// Translates `pattern` and compares the result, or the reason's text, with `expected`.
    fn check(pattern: &str, expected: Result<Vec<Observable>, &str>) {
        let got = translate_pattern(pattern).map_err(|r| r.to_string());
        assert_eq!(got, expected.map_err(str::to_owned), "{pattern}");
        if let Ok(observables) = &got {
            for o in observables {
                o.validate().unwrap_or_else(|e| panic!("{pattern}: {o:?}: {e}"));
            }
        }
    }

    #[test]
    fn hashes_in_every_spelling() {
        for spelling in ["MD5", "md5", "'MD5'", "'md5'", "Md5"] {
            check(&format!("[file:hashes.{spelling} = '{MD5}']"), Ok(vec![fh(MD5)]));
        }
        for spelling in ["'SHA-1'", "'sha-1'", "SHA1", "sha1"] {
            check(
                &format!("[file:hashes.{spelling} = '{SHA1}']"),
                Ok(vec![fh(SHA1)]),
            );
        }
        for spelling in ["'SHA-256'", "'sha-256'", "SHA256", "sha256", "'Sha-256'"] {
            check(
                &format!("[file:hashes.{spelling} = '{SHA256}']"),
                Ok(vec![fh(SHA256)]),
            );
        }
        check(
            &format!("[file:hashes.MD5 = '{}']", MD5.to_uppercase()),
            Ok(vec![fh(MD5)]),
        );
        check(
            &format!("[process:image_ref.hashes.'SHA-256' = '{SHA256}']"),
            Ok(vec![Observable::ProcessHash(hash(SHA256))]),
        );
        check(
            &format!("[process:binary_ref.hashes.md5 = '{MD5}']"),
            Ok(vec![Observable::ProcessHash(hash(MD5))]),
        );
    }

    #[test]
    fn supported_forms() {
        let table: Vec<(String, Vec<Observable>)> = vec![
            ("[file:name = 'CBricksDoc']".into(), vec![name("CBricksDoc")]),
            ("[file:name LIKE 'evil.exe']".into(), vec![name("evil.exe")]),
            ("[file:name LIKE '%.exe']".into(), vec![glob("*.exe")]),
            ("[file:name LIKE 'in%%voice%']".into(), vec![glob("in*voice*")]),
            ("[file:name LIKE '[a]{b}*?\\\\%']".into(), vec![glob("\\[a\\]\\{b\\}\\*\\?\\\\*")]),
            ("[file:name MATCHES 'invoice\\\\.pdf']".into(), vec![glob("*invoice.pdf*")]),
            ("[file:name MATCHES '^setup']".into(), vec![glob("setup*")]),
            ("[file:name IN ('a', 'b', 'a')]".into(), vec![name("a"), name("b")]),
            (
                format!("[file:hashes.MD5 = '{MD5}' AND file:size = 68]"),
                vec![Observable::FileHash {
                    hash: hash(MD5),
                    size: Some(68),
                }],
            ),
            (
                format!("[file:size = 68 AND file:hashes.MD5 = '{MD5}']"),
                vec![Observable::FileHash {
                    hash: hash(MD5),
                    size: Some(68),
                }],
            ),
            (
                "[file:name = 'eicar.com' AND file:size = 68]".into(),
                vec![Observable::FileAll(vec![
                    FileCondition::Name(NamePattern {
                        text: "eicar.com".into(),
                        glob: false,
                    }),
                    FileCondition::Size(68),
                ])],
            ),
            (
                format!("[file:hashes.MD5 = '{MD5}' AND file:hashes.'SHA-1' = '{SHA1}' AND file:size = 68]"),
                vec![Observable::FileAll(vec![
                    FileCondition::Hash(hash(MD5)),
                    FileCondition::Hash(hash(SHA1)),
                    FileCondition::Size(68),
                ])],
            ),
            (
                format!("[file:hashes.MD5 = '{MD5}' AND file:hashes.MD5 = '{MD5}']"),
                vec![fh(MD5)],
            ),
            (
                format!("[file:hashes.MD5 IN ('{MD5}', '{}')]", MD5.replace('4', "a")),
                vec![fh(MD5), fh(&MD5.replace('4', "a"))],
            ),
            (
                "[process:image_ref.name = 'powershell.exe']".into(),
                vec![Observable::ProcessName("powershell.exe".into())],
            ),
            ("[process:name = 'nc']".into(), vec![Observable::ProcessName("nc".into())]),
            ("[process:binary_ref.name LIKE 'nc']".into(), vec![Observable::ProcessName("nc".into())]),
            (
                "[process:command_line LIKE '%-enc %']".into(),
                vec![Observable::CommandLine("-enc ".into())],
            ),
            (
                "[process:command_line MATCHES 'curl http\\\\://']".into(),
                vec![Observable::CommandLine("curl http://".into())],
            ),
            (
                format!(
                    "[process:name = 'nc' AND process:command_line LIKE '%-e%' AND process:image_ref.hashes.MD5 = '{MD5}']"
                ),
                vec![Observable::ProcessAll(vec![
                    ProcessCondition::Name("nc".into()),
                    ProcessCondition::CommandLine("-e".into()),
                    ProcessCondition::Hash(hash(MD5)),
                ])],
            ),
            ("[ipv4-addr:value = '10.0.0.0']".into(), vec![addr("10.0.0.0")]),
            ("[ipv4-addr:value = '223.166.0.0/15']".into(), vec![addr("223.166.0.0/15")]),
            ("[ipv4-addr:value = '10.1.2.3/8']".into(), vec![addr("10.0.0.0/8")]),
            ("[ipv4-addr:value ISSUBSET '198.51.100.0/24']".into(), vec![addr("198.51.100.0/24")]),
            ("[ipv4-addr:value ISSUBSET '198.51.100.7']".into(), vec![addr("198.51.100.7")]),
            ("[ipv6-addr:value = '2001:DB8::1']".into(), vec![addr("2001:db8::1")]),
            ("[ipv6-addr:value ISSUBSET '2001:db8::/32']".into(), vec![addr("2001:db8::/32")]),
            ("[network-traffic:dst_ref.value = '198.51.100.7']".into(), vec![addr("198.51.100.7")]),
            ("[network-traffic:dst_ref.value ISSUBSET '2001:db8::/32']".into(), vec![addr("2001:db8::/32")]),
            (
                "[ipv4-addr:value IN ('198.51.100.7', '203.0.113.0/24')]".into(),
                vec![addr("198.51.100.7"), addr("203.0.113.0/24")],
            ),
            (
                "[ipv4-addr:value = '198.51.100.7'] OR [ipv4-addr:value = '198.51.100.8']".into(),
                vec![addr("198.51.100.7"), addr("198.51.100.8")],
            ),
            (
                "[ipv4-addr:value = '198.51.100.7' OR ipv4-addr:value = '198.51.100.7']".into(),
                vec![addr("198.51.100.7")],
            ),
            (
                format!("([file:hashes.MD5 = '{MD5}'] OR ([file:name = 'a'] OR [ipv4-addr:value = '10.0.0.1']))"),
                vec![fh(MD5), name("a"), addr("10.0.0.1")],
            ),
            (
                format!("[file:size = 68 AND (file:hashes.MD5 = '{MD5}' OR file:name = 'a')]"),
                vec![
                    Observable::FileHash {
                        hash: hash(MD5),
                        size: Some(68),
                    },
                    Observable::FileAll(vec![
                        FileCondition::Size(68),
                        FileCondition::Name(NamePattern {
                            text: "a".into(),
                            glob: false,
                        }),
                    ]),
                ],
            ),
            (
                "[file:name IN () OR file:name = 'a']".into(),
                vec![name("a")],
            ),
        ];
        for (pattern, want) in table {
            check(&pattern, Ok(want));
        }
    }

    /// Every reason, with a pattern that gives it.
    #[test]
    fn unsupported_reasons() {
        let long = "x".repeat(MAX_TEXT + 1);
        let many = (0..17)
            .map(|i| format!("file:size = {i}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let branches = (0..=MAX_BRANCHES)
            .map(|i| format!("file:size = {i}"))
            .collect::<Vec<_>>()
            .join(" OR ");
        // Large enough to exhaust memory if conjunctions were built before they were bounded.
        let huge = (0..5000)
            .map(|i| format!("file:size = {i}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let dup = vec!["file:size = 1"; 5000].join(" AND ");
        let names = (0..=MAX_BRANCHES)
            .map(|i| format!("file:name = 'n{i}'"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let wide = (0..11)
            .map(|_| "(file:name = 'a' OR file:name = 'b')")
            .collect::<Vec<_>>()
            .join(" AND ");
        let distinct = (0..=MAX_BRANCHES)
            .map(|i| format!("[ipv4-addr:value = '10.{}.{}.1']", i / 256, i % 256))
            .collect::<Vec<_>>()
            .join(" OR ");
        let table: Vec<(String, &str)> = vec![
            (
                "[file:name = 'a' and file:size = 1]".into(),
                "pattern: cannot parse: expected ']', found 'and'",
            ),
            (
                "[domain-name:value = 'example.com']".into(),
                "pattern: domain-name is not matchable on an endpoint",
            ),
            (
                "[url:value = 'http://x4z9arb.cn/4712/']".into(),
                "pattern: url is not matchable on an endpoint",
            ),
            (
                "[email-message:subject MATCHES '^[IMPORTANT] Please Review Before']".into(),
                "pattern: email-message is not matchable on an endpoint",
            ),
            (
                format!("[file:hashes.MD5 = '{MD5}' OR email-message:subject = 'y']"),
                "pattern: email-message is not matchable on an endpoint",
            ),
            (
                "[File:name = 'a']".into(),
                "pattern: File is not matchable on an endpoint",
            ),
            (
                "[file:parent_directory_ref.path = '/tmp']".into(),
                "pattern: file:parent_directory_ref.path is not matchable on an endpoint",
            ),
            (
                "[file:Name = 'a']".into(),
                "pattern: file:Name is not matchable on an endpoint",
            ),
            (
                "[process:pid = 4]".into(),
                "pattern: process:pid is not matchable on an endpoint",
            ),
            (
                "[process:arguments[*] = 'a']".into(),
                "pattern: process:arguments[*] is not matchable on an endpoint",
            ),
            (
                "[network-traffic:src_ref.value = '10.0.0.1']".into(),
                "pattern: network-traffic:src_ref.value is not matchable on an endpoint",
            ),
            (
                "[file:hashes.'SHA-512' = 'ab']".into(),
                "pattern: hash algorithm SHA-512 is not matchable on an endpoint",
            ),
            (
                "[file:hashes.ssdeep = 'ab']".into(),
                "pattern: hash algorithm ssdeep is not matchable on an endpoint",
            ),
            ("[file:name NOT = 'a']".into(), "pattern: NOT is not supported"),
            (
                "[file:name != 'a']".into(),
                "pattern: != on file:name is not supported",
            ),
            (
                "[file:size > 1 AND file:name = 'a']".into(),
                "pattern: > on file:size is not supported",
            ),
            (
                "[file:size <= 1 AND file:name = 'a']".into(),
                "pattern: <= on file:size is not supported",
            ),
            (
                "[EXISTS file:name]".into(),
                "pattern: EXISTS on file:name is not supported",
            ),
            (
                "[ipv4-addr:value ISSUPERSET '10.0.0.1']".into(),
                "pattern: ISSUPERSET on ipv4-addr:value is not supported",
            ),
            (
                "[file:name ISSUBSET '10.0.0.0/8']".into(),
                "pattern: ISSUBSET on file:name is not supported",
            ),
            (
                "[ipv4-addr:value LIKE '10.%']".into(),
                "pattern: LIKE on ipv4-addr:value is not supported",
            ),
            (
                format!("[file:hashes.MD5 LIKE '{MD5}']"),
                "pattern: LIKE on file:hashes.MD5 is not supported",
            ),
            (
                "[process:name MATCHES '^nc$']".into(),
                "pattern: MATCHES on process:name is not supported",
            ),
            (
                "[process:command_line = 'nc -e /bin/sh']".into(),
                "pattern: = on process:command_line is not supported",
            ),
            (
                "[process:command_line IN ('a')]".into(),
                "pattern: IN on process:command_line is not supported",
            ),
            ("[file:name = 5]".into(), "pattern: file:name needs a string"),
            (
                "[file:hashes.MD5 = h'00']".into(),
                "pattern: file:hashes.MD5 needs a string",
            ),
            (
                "[file:size = '68' AND file:name = 'a']".into(),
                "pattern: file:size needs an integer",
            ),
            (
                "[ipv4-addr:value = 167772161]".into(),
                "pattern: ipv4-addr:value needs a string",
            ),
            (
                "[file:hashes.MD5 = 'abc']".into(),
                "pattern: file:hashes.MD5 is not a 32-digit hex digest",
            ),
            (
                format!("[file:hashes.'SHA-256' = '{MD5}']"),
                "pattern: file:hashes.'SHA-256' is not a 64-digit hex digest",
            ),
            (
                format!("[file:hashes.MD5 = '0x{}']", &MD5[2..]),
                "pattern: file:hashes.MD5 is not a 32-digit hex digest",
            ),
            (
                "[file:size = -1 AND file:name = 'a']".into(),
                "pattern: file:size is not a size in bytes",
            ),
            (
                "[file:size = 99999999999999999999 AND file:name = 'a']".into(),
                "pattern: file:size is not a size in bytes",
            ),
            ("[file:name = '']".into(), "pattern: file:name is empty"),
            (
                format!("[file:name = '{long}']"),
                "pattern: file:name is longer than 4096 bytes",
            ),
            (
                "[ipv4-addr:value = '2001:db8::1']".into(),
                "pattern: ipv4-addr:value is not an IPv4 address or network",
            ),
            (
                "[ipv6-addr:value = '10.0.0.1']".into(),
                "pattern: ipv6-addr:value is not an IPv6 address or network",
            ),
            (
                "[ipv4-addr:value = '10.1']".into(),
                "pattern: ipv4-addr:value is not an IPv4 address or network",
            ),
            (
                "[network-traffic:dst_ref.value = 'example.com']".into(),
                "pattern: network-traffic:dst_ref.value is not an IP address or network",
            ),
            (
                "[ipv4-addr:value ISSUBSET '0.0.0.0/0']".into(),
                "pattern: ipv4-addr:value is a /0 network, which holds every address",
            ),
            (
                "[file:name LIKE 'a_b']".into(),
                "pattern: LIKE with '_' on file:name is not supported",
            ),
            (
                "[process:image_ref.name LIKE 'power%']".into(),
                "pattern: LIKE with wildcards on process:image_ref.name is not supported",
            ),
            (
                "[process:command_line LIKE 'nc%']".into(),
                "pattern: LIKE other than '%text%' on process:command_line is not supported",
            ),
            (
                "[process:command_line LIKE '%a_b%']".into(),
                "pattern: LIKE other than '%text%' on process:command_line is not supported",
            ),
            (
                "[file:name MATCHES '^Final Report.+\\\\.exe$']".into(),
                "pattern: MATCHES on file:name is supported only with plain text",
            ),
            (
                "[file:name MATCHES '^a$']".into(),
                "pattern: MATCHES on file:name is supported only with plain text",
            ),
            (
                "[file:name MATCHES 'a\\\\d']".into(),
                "pattern: MATCHES on file:name is supported only with plain text",
            ),
            (
                "[process:command_line MATCHES '^nc']".into(),
                "pattern: MATCHES on process:command_line is supported only with plain text",
            ),
            (
                "[file:name LIKE '%%']".into(),
                "pattern: the comparison on file:name matches every value",
            ),
            (
                "[file:name MATCHES '^']".into(),
                "pattern: the comparison on file:name matches every value",
            ),
            (
                "[process:command_line LIKE '%']".into(),
                "pattern: the comparison on process:command_line matches every value",
            ),
            (
                "[process:command_line MATCHES '']".into(),
                "pattern: the comparison on process:command_line matches every value",
            ),
            (
                "[file:name = 'a'] AND [file:name = 'b']".into(),
                "pattern: AND between observations is not supported",
            ),
            (
                "[file:name = 'a'] FOLLOWEDBY [file:name = 'b']".into(),
                "pattern: FOLLOWEDBY is not supported",
            ),
            (
                "[file:name = 'a'] WITHIN 5 SECONDS".into(),
                "pattern: qualifier WITHIN is not supported",
            ),
            (
                "[file:name = 'a'] REPEATS 2 TIMES".into(),
                "pattern: qualifier REPEATS is not supported",
            ),
            (
                "[file:name = 'a'] START t'2016-01-01T00:00:00Z' STOP t'2017-01-01T00:00:00Z'".into(),
                "pattern: qualifier START/STOP is not supported",
            ),
            (
                "[file:name = 'a'] OR ([file:name = 'b'] AND [file:name = 'c'])".into(),
                "pattern: AND between observations is not supported",
            ),
            (
                "[file:name = 'a' AND process:name = 'b']".into(),
                "pattern: AND of comparisons on different objects is not supported",
            ),
            (
                "[ipv4-addr:value = '10.0.0.1' AND network-traffic:dst_ref.value = '10.0.0.1']".into(),
                "pattern: AND of comparisons on different objects is not supported",
            ),
            (
                "[x509-certificate:issuer = 'CN=WEBMAIL' AND x509-certificate:serial_number = '4c']".into(),
                "pattern: x509-certificate is not matchable on an endpoint",
            ),
            (
                "[ipv4-addr:value = '10.0.0.1' AND ipv4-addr:value = '10.0.0.2']".into(),
                "pattern: AND of two address comparisons is not supported",
            ),
            (
                "[file:size = 68]".into(),
                "pattern: file:size without a hash or a name in the same AND is not supported",
            ),
            (
                "[file:name = 'a' OR file:size = 68]".into(),
                "pattern: file:size without a hash or a name in the same AND is not supported",
            ),
            (
                format!("[file:name = 'a' AND {many}]"),
                "pattern: more than 16 comparisons on one object",
            ),
            (format!("[{branches}]"), "pattern: more than 1024 OR branches"),
            (
                format!("[{huge} AND ({names})]"),
                "pattern: more than 16 comparisons on one object",
            ),
            (
                format!("[{dup} AND ({names})]"),
                "pattern: more than 1024 OR branches",
            ),
            (format!("[{wide}]"), "pattern: more than 1024 OR branches"),
            (distinct, "pattern: more than 1024 OR branches"),
            ("[file:name IN ()]".into(), "pattern: matches nothing"),
        ];
        for (pattern, reason) in table {
            check(&pattern, Err(reason));
        }
        assert_eq!(
            Reason::PatternType("yara".into()).to_string(),
            "pattern_type: yara"
        );
    }

    #[test]
    fn plain_regexes() {
        let cases: &[(&str, Option<(bool, &str)>)] = &[
            ("abc", Some((false, "abc"))),
            ("^abc", Some((true, "abc"))),
            ("a\\.b\\-c\\/d", Some((false, "a.b-c/d"))),
            ("a b#c", Some((false, "a b#c"))),
            ("日本", Some((false, "日本"))),
            ("a.b", None),
            ("a$", None),
            ("a\\d", None),
            ("a\\", None),
            ("(a)", None),
            ("a|b", None),
            ("a{2}", None),
            ("a]", None),
        ];
        for (re, want) in cases {
            let got = plain_regex(re);
            assert_eq!(got.as_ref().map(|(a, s)| (*a, s.as_str())), *want, "{re}");
        }
    }
}
