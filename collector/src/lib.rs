//! # picket-collector: gathers indicators and publishes signed indicator sets
//!
//! The collector is a set of pure cores under thin shells:
//!
//! - [`ingest`] parses outside data (plain lists today) into normalised indicators. Pure: text
//!   in, typed indicators or an error naming the file and line out.
//! - [`publish`] compiles indicators into a canonical snapshot, a manifest with the deltas on
//!   offer, and a timestamp, and signs them. Pure: keys and the time are arguments.
//! - [`rootdoc`] builds, rotates and signs root documents; it is what the offline `root`
//!   commands run.
//! - [`store`] is the SQLite shell: one narrow interface, so a PostgreSQL backend can follow.
//! - [`datadir`] lays out and opens the data directory: configuration, online keys, trust
//!   anchor, and the check that no root private key is readable from where `serve` runs.
//!
//! Architecture invariant: only the collector holds the online signing keys, and the root
//! private key is never written inside the data directory.

#![forbid(unsafe_code)]

pub mod config;
pub mod datadir;
pub mod ingest;
pub mod publish;
pub mod rootdoc;
pub mod store;

mod error;

pub use error::CollectorError;

/// Parses durations such as `90s`, `15m`, `12h`, `30d`, `2w` into seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&s| s > 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        for (text, want) in [
            ("90s", Some(90)),
            ("15m", Some(900)),
            ("12h", Some(43_200)),
            ("30d", Some(2_592_000)),
            ("2w", Some(1_209_600)),
            ("0s", None),
            ("10", None),
            ("d", None),
            ("5y", None),
        ] {
            assert_eq!(super::parse_duration(text), want, "{text}");
        }
    }
}
