//! Plain lists: one indicator a line, `#` comments, the type detected from the value.
//!
//! Detected without ambiguity: MD5, SHA-1 and SHA-256 hex digests (any case), IPv4 and IPv6
//! addresses and CIDR networks. Anything else is an error naming the line: a word such as
//! `invoice.pdf` could be a file name or a domain, and guessing would put the wrong kind of
//! indicator on every endpoint.

use std::collections::BTreeMap;
use std::path::Path;

use picket_proto::{Hash, Indicator, IpNet, Observable};

use super::{indicator, Defaults};
use crate::CollectorError;

/// Longest line accepted.
const MAX_LINE: usize = 4096;

/// Parses a plain list. Duplicate values collapse into one indicator.
pub fn parse_list(path: &Path, text: &str, defaults: &Defaults) -> Result<Vec<Indicator>, CollectorError> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let err = |problem: String| CollectorError::Parse {
            path: path.to_owned(),
            line: i + 1,
            problem,
        };
        if raw.len() > MAX_LINE {
            return Err(err(format!(
                "line of {} bytes; the limit is {MAX_LINE}",
                raw.len()
            )));
        }
        let line = match raw.find('#') {
            Some(p) => &raw[..p],
            None => raw,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        let observable = detect(line).ok_or_else(|| {
            err(format!(
                "cannot tell what {:?} is: expected an MD5, SHA-1 or SHA-256 hex digest, an IP address or a CIDR network",
                shorten(line)
            ))
        })?;
        let ind = indicator(observable, defaults);
        out.entry(ind.id.clone()).or_insert(ind);
    }
    Ok(out.into_values().collect())
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(80).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// The observable a list value denotes, if it is unambiguous.
pub fn detect(value: &str) -> Option<Observable> {
    if value.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hash = Hash::from_hex(&value.to_ascii_lowercase())?;
        return Some(Observable::FileHash { hash, size: None });
    }
    IpNet::parse(value).map(Observable::RemoteAddr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::{HashKind, Severity, Tlp};

    fn defaults() -> Defaults {
        Defaults {
            source: "list".into(),
            tlp: Tlp::Green,
            confidence: 50,
            severity: Severity::Medium,
        }
    }

    #[test]
    fn detection_table() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "275A021BBFB6489E54D471899F7DB9D1663FC695EC2FE2A2C4538AABF651FD0F",
                Some("file-hash:sha256:275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"),
            ),
            (
                "3395856ce81f2b7382dee72602f798b642f14140",
                Some("file-hash:sha1:3395856ce81f2b7382dee72602f798b642f14140"),
            ),
            (
                "44d88612fea8a8f36de82e1278abb02f",
                Some("file-hash:md5:44d88612fea8a8f36de82e1278abb02f"),
            ),
            ("198.51.100.7", Some("remote-addr:198.51.100.7")),
            ("198.51.100.7/24", Some("remote-addr:198.51.100.0/24")),
            ("2001:DB8::1", Some("remote-addr:2001:db8::1")),
            ("2001:db8::/32", Some("remote-addr:2001:db8::/32")),
            ("abc", None),
            ("44d88612fea8a8f36de82e1278abb02", None),
            ("invoice.pdf", None),
            ("198.51.100.7/33", None),
            ("evil.example.com", None),
        ];
        for (input, want) in cases {
            let got = detect(input).map(|o| super::super::canonical_value(&o));
            assert_eq!(got.as_deref(), *want, "{input}");
        }
    }

    #[test]
    fn comments_blank_lines_and_duplicates() {
        let text = "# EICAR\n\n44d88612fea8a8f36de82e1278abb02f  # md5\n44D88612FEA8A8F36DE82E1278ABB02F\n198.51.100.7\n";
        let got = parse_list(Path::new("feed.txt"), text, &defaults()).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().any(
            |i| matches!(&i.observable, Observable::FileHash { hash, .. } if hash.kind == HashKind::Md5)
        ));
    }

    #[test]
    fn junk_line_names_file_and_line() {
        let text = "44d88612fea8a8f36de82e1278abb02f\n\nnot-an-indicator\n";
        let err = parse_list(Path::new("/feeds/bad.txt"), text, &defaults())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/feeds/bad.txt:3: "), "{err}");
        assert!(err.contains("not-an-indicator"), "{err}");
    }
}
