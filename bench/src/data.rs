//! Synthetic data for benchmarks: sets of SHA-256 indicators and trees of files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{ensure, Context, Result};
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
    digest_indicator(id, digest)
}

/// The 68-byte EICAR test file (no trailing newline), as in `tests/lib.rs`.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// EICAR's SHA-256, as in `tests/lib.rs`; [`eicar_indicator`] checks that it is [`EICAR`]'s.
pub const EICAR_SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
/// The id of the EICAR indicator in every benchmark set.
pub const EICAR_ID: &str = "indicator--00000000-0000-4000-8000-00000000e1ca";

/// A SHA-256 indicator (without a size, so every file is hashed) for the EICAR test file.
pub fn eicar_indicator() -> Result<Indicator> {
    let digest = hex::decode(EICAR_SHA256)?;
    ensure!(
        picket_proto::sha256(EICAR).as_slice() == digest.as_slice(),
        "EICAR_SHA256 is not the SHA-256 of EICAR"
    );
    Ok(digest_indicator(EICAR_ID.into(), digest))
}

fn digest_indicator(id: String, digest: Vec<u8>) -> Indicator {
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

/// `n` random SHA-256 indicators from `seed`, then the EICAR indicator.
pub fn sha256_indicators_with_eicar(n: usize, seed: u64) -> Result<Vec<Indicator>> {
    let mut rng = Rng(seed);
    let mut out: Vec<Indicator> = (0..n).map(|_| sha256_indicator(&mut rng)).collect();
    out.push(eicar_indicator()?);
    Ok(out)
}

/// A snapshot (version 1, channel `default`) of `indicators`.
pub fn snapshot_of(indicators: &[Indicator]) -> Result<Snapshot> {
    let records = indicators
        .iter()
        .map(Record::from_indicator)
        .collect::<picket_proto::Result<Vec<_>>>()?;
    Ok(Snapshot::new("default", 1, records)?)
}

/// The sizes of a tree's files.
#[derive(Debug, Clone, Copy)]
pub enum Sizes {
    /// Log-uniform between the two bounds (bytes), as file sizes on a real system roughly are:
    /// as many files between 64 B and 128 B as between 32 KiB and 64 KiB.
    LogUniform(u64, u64),
    /// All files this size.
    Fixed(u64),
}

impl Sizes {
    fn pick(self, rng: &mut Rng) -> u64 {
        match self {
            Sizes::Fixed(n) => n,
            Sizes::LogUniform(lo, hi) => {
                let (lo, hi) = ((lo.max(1)) as f64, (hi.max(lo.max(1))) as f64);
                // 53 random bits as a uniform float in [0, 1).
                let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
                (lo * (hi / lo).powf(u)) as u64
            }
        }
    }
}

/// A tree of files in a temporary directory, with EICAR planted in a few of them.
#[derive(Debug)]
pub struct Tree {
    /// The temporary directory holding the tree, deleted with it.
    _tmp: tempfile::TempDir,
    /// The tree's root.
    pub root: PathBuf,
    /// Regular files in the tree, EICAR files included.
    pub files: u64,
    /// Directories in the tree, the root included.
    pub dirs: u64,
    /// Bytes in all files.
    pub bytes: u64,
    /// The planted EICAR files.
    pub eicars: Vec<PathBuf>,
    /// A time no earlier than the change time of anything in the tree.
    pub written: SystemTime,
}

impl Tree {
    /// Writes `files` files (EICAR among them, in `eicars` places) over about `files / 300`
    /// directories two levels deep (at least 8), then flushes them to disk with `sync` so that
    /// no writeback runs during the measurements. Contents are pseudo-random and distinct.
    pub fn build(files: u64, sizes: Sizes, eicars: u64, seed: u64) -> Result<Tree> {
        ensure!(
            files > 2 * (eicars + 1),
            "{files} files are too few to plant {eicars} EICAR files"
        );
        let tmp = tempfile::tempdir().context("creating a temporary directory")?;
        let root = tmp.path().join("tree");
        let leaves = (files / 300).max(8);
        let fan = 16;
        let leaf = |j: u64| {
            root.join(format!("d{:02}", j / fan))
                .join(format!("s{:02}", j % fan))
        };
        for j in 0..leaves {
            fs::create_dir_all(leaf(j)).with_context(|| format!("creating {}", leaf(j).display()))?;
        }
        let dirs = 1 + leaves.div_ceil(fan) + leaves;
        let mut rng = Rng(seed);
        // Contents: windows of one random pool, each file's number written over its start.
        let pool = rng.bytes(2 << 20);
        let mut buf = Vec::new();
        let mut bytes = 0;
        let mut planted = Vec::new();
        // EICAR goes at evenly spread positions, never the first or last file.
        let plant_every = files / (eicars + 1);
        for i in 0..files {
            let dir = leaf(i % leaves);
            let is_eicar = eicars > 0 && i > 0 && i % plant_every == 0 && (planted.len() as u64) < eicars;
            let (path, content): (PathBuf, &[u8]) = if is_eicar {
                let p = dir.join(format!("invoice-{i}.com"));
                planted.push(p.clone());
                (p, EICAR)
            } else {
                let size = sizes.pick(&mut rng).min(pool.len() as u64) as usize;
                let start = (rng.next() % (pool.len() - size + 1) as u64) as usize;
                buf.clear();
                buf.extend_from_slice(&pool[start..start + size]);
                let tag = i.to_le_bytes();
                let n = tag.len().min(size);
                buf[..n].copy_from_slice(&tag[..n]);
                (
                    dir.join(format!(
                        "f{i:06}.{}",
                        ["dat", "txt", "so", "py", "json"][(i % 5) as usize]
                    )),
                    &buf,
                )
            };
            fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
            bytes += content.len() as u64;
        }
        ensure!(
            planted.len() as u64 == eicars,
            "planted {} EICAR files, not {eicars}",
            planted.len()
        );
        let status = Command::new("sync").status().context("running sync")?;
        ensure!(status.success(), "sync failed");
        Ok(Tree {
            _tmp: tmp,
            root,
            files,
            dirs,
            bytes,
            eicars: planted,
            written: SystemTime::now(),
        })
    }

    /// Reads every file once, so the first timed scan finds the page cache warm.
    pub fn warm(&self) -> Result<()> {
        fn walk(dir: &Path) -> Result<()> {
            for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
                let e = e?;
                if e.file_type()?.is_dir() {
                    walk(&e.path())?;
                } else {
                    fs::read(e.path())?;
                }
            }
            Ok(())
        }
        walk(&self.root)
    }

    /// Sleeps until every file in the tree changed at least `margin` ago (plus a little), so
    /// that the hash cache accepts them (see `picket_agent::cache::RACY_MARGIN`).
    pub fn wait_until_settled(&self, margin: std::time::Duration) {
        let ready = self.written + margin + std::time::Duration::from_millis(100);
        if let Ok(left) = ready.duration_since(SystemTime::now()) {
            std::thread::sleep(left);
        }
    }
}
