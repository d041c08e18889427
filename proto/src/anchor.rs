//! The trust anchor an agent starts from: `root.pub`.
//!
//! It pins one root version by its root-role keys and threshold. An agent with no stored state
//! accepts that root version only if the anchor's threshold of those keys signed it, then walks
//! the chain one version at a time. The text form is meant to be read, diffed and pushed by
//! configuration management.

use crate::error::{invalid, malformed, Part, Result};
use crate::keys::PublicKey;

const HEADER: &str = "picket-trust-anchor v1";

/// Root keys, a threshold and the root version they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    /// The organisation, for people reading the file.
    pub org: String,
    /// The root version these keys signed.
    pub root_version: u64,
    /// How many of `keys` must sign that root.
    pub threshold: u8,
    /// The root keys, sorted.
    pub keys: Vec<PublicKey>,
}

impl TrustAnchor {
    /// The text form.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{HEADER}\n# Picket trust anchor: install on every agent; it holds no secret.\norg: {}\nroot-version: {}\nthreshold: {}\n",
            self.org, self.root_version, self.threshold
        );
        for k in &self.keys {
            s.push_str(&format!("key: {k}\n"));
        }
        s
    }

    /// Parses the text form; `#` lines are comments.
    pub fn parse(text: &str) -> Result<TrustAnchor> {
        if text.len() > 64 * 1024 {
            return Err(invalid(Part::Anchor, "larger than 64 KiB"));
        }
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        if lines.next() != Some(HEADER) {
            return Err(malformed(
                Part::Anchor,
                format!("the first line must be {HEADER:?}"),
            ));
        }
        let (mut org, mut version, mut threshold, mut keys) = (String::new(), None, None, Vec::new());
        for (n, line) in lines.enumerate() {
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| malformed(Part::Anchor, format!("line {}: expected key: value", n + 2)))?;
            let v = v.trim();
            match k.trim() {
                "org" => org = v.to_owned(),
                "root-version" => {
                    version = Some(
                        v.parse()
                            .map_err(|e| malformed(Part::Anchor, format!("root-version: {e}")))?,
                    )
                }
                "threshold" => {
                    threshold = Some(
                        v.parse()
                            .map_err(|e| malformed(Part::Anchor, format!("threshold: {e}")))?,
                    )
                }
                "key" => keys.push(PublicKey::parse(v)?),
                other => return Err(malformed(Part::Anchor, format!("unknown field {other:?}"))),
            }
        }
        if org.chars().any(char::is_control) {
            return Err(invalid(Part::Anchor, "org holds a control character"));
        }
        keys.sort();
        keys.dedup();
        let anchor = TrustAnchor {
            org,
            root_version: version.ok_or_else(|| malformed(Part::Anchor, "no root-version line"))?,
            threshold: threshold.ok_or_else(|| malformed(Part::Anchor, "no threshold line"))?,
            keys,
        };
        if anchor.threshold == 0 || usize::from(anchor.threshold) > anchor.keys.len() {
            return Err(invalid(
                Part::Anchor,
                format!("threshold {} with {} key(s)", anchor.threshold, anchor.keys.len()),
            ));
        }
        Ok(anchor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let a = TrustAnchor {
            org: "Example".into(),
            root_version: 1,
            threshold: 1,
            keys: vec![PublicKey([1; 32]), PublicKey([2; 32])],
        };
        assert_eq!(TrustAnchor::parse(&a.to_text()).unwrap(), a);
        assert!(TrustAnchor::parse("nonsense").is_err());
        let zero = a.to_text().replace("threshold: 1", "threshold: 3");
        assert!(TrustAnchor::parse(&zero).is_err());
    }
}
