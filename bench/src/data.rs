//! Synthetic data for benchmarks: sets of SHA-256 indicators and trees of files.

use picket_proto::{Hash, HashKind, Indicator, Meta, Observable, Record, Severity, Snapshot, Tlp};

/// A deterministic pseudo-random generator (SplitMix64), so every run sees the same data.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n.div_ceil(8))
            .flat_map(|_| self.next().to_le_bytes())
            .take(n)
            .collect()
    }
}

/// An indicator for a SHA-256 digest, shaped like one ingested from a feed.
pub fn sha256_indicator(rng: &mut Rng) -> Indicator {
    let digest = rng.bytes(32);
    let id = format!("indicator--{}", uuid_like(rng));
    Indicator {
        id,
        observable: Observable::FileHash {
            hash: Hash {
                kind: HashKind::Sha256,
                value: digest,
            },
            size: None,
        },
        meta: Meta {
            confidence: 70,
            severity: Severity::High,
            tlp: Tlp::Green,
            valid_until: None,
            source: "bench-feed".into(),
        },
    }
}

fn uuid_like(rng: &mut Rng) -> String {
    let x = hex::encode(rng.bytes(16));
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// A snapshot of `n` SHA-256 indicators.
pub fn snapshot(n: usize, seed: u64) -> Snapshot {
    let mut rng = Rng(seed);
    let records = (0..n)
        .map(|_| Record::from_indicator(&sha256_indicator(&mut rng)).expect("valid indicator"))
        .collect();
    Snapshot::new("default", 1, records).expect("unique ids")
}
