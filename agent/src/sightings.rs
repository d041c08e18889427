//! Local sightings: one record per (indicator, observable) with first seen, last seen and count.
//!
//! A rescan that finds the same file again updates its record instead of adding one. The table
//! is bounded: past `max` records the one seen least recently is dropped (and counted), so a
//! noisy indicator cannot grow the agent without limit. This is the agent's own record; what
//! leaves the host is produced from it by the anonymiser (a later issue), never sent as is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a sighting is about on this host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Observed {
    /// A file, by path.
    File(String),
    /// A process, by executable path (or name when the path is unknown).
    Process(String),
    /// A connection, by remote address.
    Connection(String),
}

/// One sighting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    /// The indicator id.
    pub indicator: String,
    /// What matched (`sha256`, `file-name`, `remote-addr`, ...).
    pub what: String,
    /// Where.
    pub observed: Observed,
    /// First seen (unix seconds).
    pub first_seen: i64,
    /// Last seen (unix seconds).
    pub last_seen: i64,
    /// How many times it was seen (once per scan or poll that found it).
    pub count: u64,
}

/// The table of sightings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sightings {
    map: BTreeMap<(String, Observed), Sighting>,
    max: usize,
    dropped: u64,
}

/// Whether an observation was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A new (indicator, observable) pair.
    New,
    /// Seen before; last seen and count updated.
    Again,
}

const MAGIC: [u8; 4] = *b"PKLS";
const FORMAT: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Wire {
    magic: [u8; 4],
    format: u8,
    dropped: u64,
    sightings: Vec<Sighting>,
}

impl Sightings {
    /// An empty table holding at most `max` records.
    pub fn new(max: usize) -> Sightings {
        Sightings {
            map: BTreeMap::new(),
            max: max.max(1),
            dropped: 0,
        }
    }

    /// Records that `indicator` matched `observed` at `now`.
    pub fn observe(&mut self, indicator: &str, what: &str, observed: Observed, now: i64) -> Seen {
        let key = (indicator.to_owned(), observed);
        if let Some(s) = self.map.get_mut(&key) {
            s.last_seen = s.last_seen.max(now);
            s.first_seen = s.first_seen.min(now);
            s.count += 1;
            return Seen::Again;
        }
        if self.map.len() >= self.max {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
                self.dropped += 1;
            }
        }
        let observed = key.1.clone();
        self.map.insert(
            key,
            Sighting {
                indicator: indicator.to_owned(),
                what: what.to_owned(),
                observed,
                first_seen: now,
                last_seen: now,
                count: 1,
            },
        );
        Seen::New
    }

    /// The sightings, ordered by indicator then observable.
    pub fn iter(&self) -> impl Iterator<Item = &Sighting> {
        self.map.values()
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Records dropped to stay within the bound.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            magic: MAGIC,
            format: FORMAT,
            dropped: self.dropped,
            sightings: self.map.values().cloned().collect(),
        };
        // Invariant: strings and integers always serialise.
        postcard::to_allocvec(&wire).expect("encoding sightings cannot fail")
    }

    /// Reads the stored form, refusing more than `cap` bytes before decoding.
    pub fn decode(bytes: &[u8], max: usize, cap: usize) -> Result<Sightings, String> {
        if bytes.len() > cap {
            return Err(format!("{} bytes is over the cap of {cap}", bytes.len()));
        }
        let (w, rest): (Wire, &[u8]) = postcard::take_from_bytes(bytes).map_err(|e| e.to_string())?;
        if !rest.is_empty() || w.magic != MAGIC || w.format != FORMAT {
            return Err("not a Picket sightings file".into());
        }
        let mut out = Sightings::new(max);
        out.dropped = w.dropped;
        for s in w.sightings {
            out.map.insert((s.indicator.clone(), s.observed.clone()), s);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescans_update_instead_of_adding() {
        let mut t = Sightings::new(10);
        let f = || Observed::File("/tmp/x".into());
        assert_eq!(t.observe("i1", "sha256", f(), 100), Seen::New);
        assert_eq!(t.observe("i1", "sha256", f(), 200), Seen::Again);
        assert_eq!(t.observe("i2", "md5", f(), 200), Seen::New);
        assert_eq!(t.len(), 2);
        let s = t.iter().next().unwrap();
        assert_eq!((s.first_seen, s.last_seen, s.count), (100, 200, 2));
    }

    #[test]
    fn bounded_by_dropping_the_least_recently_seen() {
        let mut t = Sightings::new(2);
        t.observe("a", "k", Observed::Connection("198.51.100.1".into()), 1);
        t.observe("b", "k", Observed::Connection("198.51.100.1".into()), 2);
        t.observe("a", "k", Observed::Connection("198.51.100.1".into()), 3);
        t.observe("c", "k", Observed::Connection("198.51.100.1".into()), 4);
        let ids: Vec<&str> = t.iter().map(|s| s.indicator.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(t.dropped(), 1);
    }

    #[test]
    fn round_trip_and_refusals() {
        let mut t = Sightings::new(5);
        t.observe("a", "sha1", Observed::Process("/usr/bin/x".into()), 7);
        let b = t.encode();
        assert_eq!(Sightings::decode(&b, 5, 1 << 20).unwrap(), t);
        assert!(Sightings::decode(&b, 5, 3).is_err());
        assert!(Sightings::decode(&b[..b.len() - 1], 5, 1 << 20).is_err());
    }
}
