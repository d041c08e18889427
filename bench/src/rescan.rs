//! The hash cache at work: a first scan of a tree of small files (cold cache, warm page cache)
//! against a rescan of the unchanged tree, which should hash nothing and cost about what a
//! plain `find` walk costs. The baseline is `find TREE -printf '%s %T@\n'`, the cheapest
//! program that stats every file, run as a child process on the same tree.
//!
//! A third figure is a rescan under a new set version (another index): the cache is keyed by
//! file identity, not by set, so it must still hash nothing.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, ensure, Context, Result};
use picket_agent::cache::{HashCache, RACY_MARGIN};
use picket_agent::digest::Digests;
use picket_agent::index::{Builder, Hit, Index, RecordRef, What};
use picket_agent::scan::{Options, Report, Scanner, Stats};
use picket_proto::{HashKind, Indicator};

use crate::data::{sha256_indicators_with_eicar, Sizes, Tree};
use crate::report;

/// The tree both `rescan` and `clamav` scan: `quick` gives 5 000 files, else 100 000, of
/// log-uniform sizes between 64 B and 64 KiB (median 2 KiB, mean about 9 KiB), two of them
/// EICAR.
pub fn small_file_tree(quick: bool) -> Result<Tree> {
    let files = if quick { 5_000 } else { 100_000 };
    let t = Instant::now();
    let tree = Tree::build(files, Sizes::LogUniform(64, 64 << 10), 2, 42)?;
    eprintln!(
        "(tree: {} files, {} directories, {:.0} MB, written in {:.1} s)",
        tree.files,
        tree.dirs,
        tree.bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    Ok(tree)
}

/// An index of `indicators` with each one's position in the slice as its record reference, as
/// `LoadedSet` compiles a set (there the reference is a byte offset).
pub fn index_of(indicators: &[Indicator]) -> Result<Index> {
    let mut b = Builder::new();
    for (i, ind) in indicators.iter().enumerate() {
        b.add(RecordRef::try_from(i)?, ind);
    }
    let index = b.finish();
    ensure!(
        index.len() == indicators.len() && index.rejected().is_empty(),
        "the index refused indicators: {:?}",
        index.rejected()
    );
    Ok(index)
}

/// What a scan found: each matching path with the records it matched, and the errors.
#[derive(Debug, Default)]
pub struct Findings {
    /// Path to the records it matched.
    pub found: BTreeMap<PathBuf, Vec<RecordRef>>,
    /// Files or directories that could not be scanned.
    pub errors: Vec<String>,
}

impl Report for Findings {
    fn found(&mut self, path: &Path, hits: &[Hit], _digests: &Digests) {
        let records = self.found.entry(path.to_owned()).or_default();
        for h in hits {
            if h.what == What::FileHash(HashKind::Sha256) {
                records.push(h.record);
            }
        }
    }

    fn error(&mut self, path: &Path, err: &io::Error) {
        self.errors.push(format!("{}: {err}", path.display()));
    }
}

impl Findings {
    /// Checks that exactly the planted EICAR files were found, each by the EICAR indicator (the
    /// last one of the set) alone, and that nothing failed.
    pub fn check(&self, what: &str, tree: &Tree, eicar: RecordRef) -> Result<()> {
        ensure!(self.errors.is_empty(), "{what}: errors: {:?}", self.errors);
        let want: BTreeMap<PathBuf, Vec<RecordRef>> =
            tree.eicars.iter().map(|p| (p.clone(), vec![eicar])).collect();
        ensure!(
            self.found == want,
            "{what}: found {:?}, expected the planted EICAR files {:?}",
            self.found,
            want
        );
        Ok(())
    }
}

fn lock(cache: &Mutex<HashCache>) -> Result<std::sync::MutexGuard<'_, HashCache>> {
    cache
        .lock()
        .map_err(|_| anyhow!("the hash cache lock is poisoned"))
}

/// One complete scan as the daemon runs it: start a cache generation, walk, sweep. Returns the
/// seconds it took, the counters and the findings.
pub fn scan(index: &Index, cache: Option<&Mutex<HashCache>>, root: &Path) -> Result<(f64, Stats, Findings)> {
    let opts = Options::default();
    let mut findings = Findings::default();
    let t = Instant::now();
    if let Some(c) = cache {
        lock(c)?.begin_generation();
    }
    let mut scanner = Scanner::new(index, &opts, cache);
    scanner.scan(&[root.to_owned()], &mut findings);
    if let Some(c) = cache {
        lock(c)?.sweep();
    }
    let secs = t.elapsed().as_secs_f64();
    Ok((secs, scanner.stats, findings))
}

/// Runs `find TREE -printf '%s %T@\n'` and returns the seconds it took, with its output when
/// `capture` is set (else the output goes to `/dev/null`, as when timed).
fn find(root: &Path, capture: bool) -> Result<(f64, Vec<u8>)> {
    let mut cmd = Command::new("find");
    cmd.arg(root).arg("-printf").arg("%s %T@\\n");
    let t = Instant::now();
    let (status, out) = if capture {
        let o = cmd.output().context("running find")?;
        (o.status, o.stdout)
    } else {
        (
            cmd.stdout(Stdio::null()).status().context("running find")?,
            Vec::new(),
        )
    };
    let secs = t.elapsed().as_secs_f64();
    ensure!(status.success(), "find failed: {status}");
    Ok((secs, out))
}

/// Reads every file under `root` once (open, read, close) without hashing, and returns the
/// seconds: the floor under any first scan, which must at least read what it hashes.
fn read_all(root: &Path) -> Result<f64> {
    fn walk(dir: &Path, buf: &mut [u8]) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                walk(&path, buf)?;
            } else {
                let mut f = std::fs::File::open(&path)?;
                while f.read(buf)? > 0 {}
            }
        }
        Ok(())
    }
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    walk(root, &mut buf)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Builds the tree and runs the benchmark.
pub fn run(quick: bool) -> Result<()> {
    let tree = small_file_tree(quick)?;
    run_on(&tree)
}

/// The benchmark on a tree already built.
pub fn run_on(tree: &Tree) -> Result<()> {
    const RANDOM: usize = 10_000;
    let first_set = sha256_indicators_with_eicar(RANDOM, 1)?;
    let next_set = sha256_indicators_with_eicar(RANDOM, 2)?;
    let eicar = RecordRef::try_from(RANDOM)?;
    let index = index_of(&first_set)?;
    let next_index = index_of(&next_set)?;
    tree.warm()?;
    // find must see every directory and file: one line each.
    let (_, out) = find(&tree.root, true)?;
    let lines = out.iter().filter(|&&b| b == b'\n').count() as u64;
    ensure!(
        lines == tree.files + tree.dirs,
        "find printed {lines} lines for {} files and {} directories",
        tree.files,
        tree.dirs
    );
    tree.wait_until_settled(RACY_MARGIN);

    let files = tree.files;
    // First scans: each with a fresh cache; the last one's cache is kept for the rescans.
    let mut best_first = f64::MAX;
    let mut kept = None;
    for _ in 0..3 {
        let cache = Mutex::new(HashCache::new(2_000_000));
        let (secs, stats, findings) = scan(&index, Some(&cache), &tree.root)?;
        findings.check("first scan", tree, eicar)?;
        ensure!(
            stats.files == files && stats.hashed == files && stats.cached == 0 && stats.bytes == tree.bytes,
            "first scan: {stats:?}, expected {files} files hashed ({} bytes)",
            tree.bytes
        );
        ensure!(
            lock(&cache)?.len() as u64 == files,
            "the cache took {} of {files} files: was the tree older than RACY_MARGIN?",
            lock(&cache)?.len()
        );
        best_first = best_first.min(secs);
        kept = Some(cache);
    }
    let cache = kept.context("no first scan ran")?;
    let mut best_rescan = f64::MAX;
    let mut best_find = f64::MAX;
    for _ in 0..5 {
        let (secs, stats, findings) = scan(&index, Some(&cache), &tree.root)?;
        findings.check("rescan", tree, eicar)?;
        ensure!(
            stats.files == files && stats.hashed == 0 && stats.cached == files,
            "rescan: {stats:?}, expected all {files} files from the cache"
        );
        best_rescan = best_rescan.min(secs);
        best_find = best_find.min(find(&tree.root, false)?.0);
    }
    let mut best_read = f64::MAX;
    for _ in 0..3 {
        best_read = best_read.min(read_all(&tree.root)?);
    }
    let mut best_next = f64::MAX;
    for _ in 0..3 {
        let (secs, stats, findings) = scan(&next_index, Some(&cache), &tree.root)?;
        findings.check("rescan under a new set", tree, eicar)?;
        ensure!(
            stats.files == files && stats.hashed == 0 && stats.cached == files,
            "rescan under a new set: {stats:?}, expected all {files} files from the cache"
        );
        best_next = best_next.min(secs);
    }
    let speedup = best_first / best_rescan;
    let vs_find = best_rescan / best_find;
    let us = |s: f64| s * 1e6 / files as f64;
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    report(
        "rescan",
        &format!(
            "{files} files ({:.0} MB, {} dirs), {} SHA-256 indicators: first scan {:.0} ms ({:.1} µs/file, {:.0} MB/s), \
             rescan {:.0} ms ({:.2} µs/file, 0 hashed, {files} cache hits), find {:.0} ms ({:.2} µs/file), \
             reading every file without hashing {:.0} ms ({:.1} µs/file); first/rescan {speedup:.1}x (first/find, \
             the most any rescan could reach, {:.1}x), rescan/find {vs_find:.2}; \
             rescan under a new set version {:.0} ms, 0 hashed",
            tree.bytes as f64 / 1e6,
            tree.dirs,
            RANDOM + 1,
            best_first * 1e3,
            us(best_first),
            tree.bytes as f64 / best_first / 1e6,
            best_rescan * 1e3,
            us(best_rescan),
            best_find * 1e3,
            us(best_find),
            best_read * 1e3,
            us(best_read),
            best_first / best_find,
            best_next * 1e3,
        ),
        Some((
            speedup >= 20.0 && vs_find <= 2.0,
            &format!(
                "first/rescan at least 20x ({}) and rescan at most 2x find ({})",
                verdict(speedup >= 20.0),
                verdict(vs_find <= 2.0)
            ),
        )),
    );
    Ok(())
}
