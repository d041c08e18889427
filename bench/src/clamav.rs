//! A first scan against ClamAV's `clamscan` with the same SHA-256 hashes, on the tree of small
//! files `rescan` uses. Picket scans with a fresh hash cache (a first scan, as the daemon runs
//! it); `clamscan` gets the hashes as a `.hsb` database, ClamAV's format for SHA-1 and SHA-256
//! file hashes: `HASH:SIZE:NAME`, where SIZE may be `*` (any size) only with a minimum
//! functionality level of 73 or higher as a fourth field (docs.clamav.net, "File hash
//! signatures"). Picket's indicators carry no size either, so both hash every file.
//!
//! `clamscan` is given only that database and has the bytecode engine, heuristics, phishing
//! checks and every file-type parser it has a switch for turned off, so it does the same job
//! as Picket (hash each file and look the digest up) and nothing more: its best case. It runs
//! on one thread, as Picket's scanner does. Its start-up (loading the engine and the database)
//! is measured on an empty directory and reported separately.
//!
//! `clamscan` makes and removes a temporary directory for every file it scans (`mkdir`,
//! `chmod`, `rmdir`: strace shows 2 001 `mkdir` calls for 2 000 files). In its default place,
//! `/tmp` on the disk, that costs more than the scan itself here, so it is also run with
//! `--tempdir` on a tmpfs (`/dev/shm`, when there is one): the headline ratio is against the
//! faster of the two.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use picket_agent::cache::{HashCache, RACY_MARGIN};
use picket_agent::index::RecordRef;
use picket_proto::Observable;

use crate::data::{sha256_indicators_with_eicar, Tree};
use crate::report;
use crate::rescan::{index_of, scan, small_file_tree};

/// The name ClamAV reports for the EICAR signature (it adds `.UNOFFICIAL` to names from a
/// database it did not sign).
const EICAR_NAME: &str = "Picket.Bench.EICAR";

/// Options that leave `clamscan` only the hash database's work.
const CLAMSCAN_ARGS: &[&str] = &[
    "--no-summary",
    "--infected",
    "--recursive",
    "--cross-fs=no",
    "--follow-dir-symlinks=0",
    "--follow-file-symlinks=0",
    "--bytecode=no",
    "--heuristic-alerts=no",
    "--phishing-sigs=no",
    "--phishing-scan-urls=no",
    "--scan-mail=no",
    "--scan-pe=no",
    "--scan-elf=no",
    "--scan-ole2=no",
    "--scan-pdf=no",
    "--scan-swf=no",
    "--scan-html=no",
    "--scan-xmldocs=no",
    "--scan-hwp3=no",
    "--scan-onenote=no",
    "--scan-archive=no",
    "--scan-image=no",
    "--scan-image-fuzzy-hash=no",
];

/// Runs `clamscan` with `db` over `target` (with its temporary files in `temp`, if given);
/// returns the seconds and the paths it reported with the signature name each matched.
fn clamscan(db: &Path, target: &Path, temp: Option<&Path>) -> Result<(f64, Vec<(PathBuf, String)>)> {
    let mut cmd = Command::new("clamscan");
    cmd.args(CLAMSCAN_ARGS).arg("--database").arg(db);
    if let Some(t) = temp {
        cmd.arg("--tempdir").arg(t);
    }
    cmd.arg(target);
    let t = Instant::now();
    let out = cmd.output();
    let secs = t.elapsed().as_secs_f64();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "clamscan is not installed: install ClamAV (`apt-get install clamav` on Debian and \
             Ubuntu, `dnf install clamav` on Fedora) and run this benchmark again"
        ),
        Err(e) => return Err(e).context("running clamscan"),
    };
    // 0: nothing found, 1: something found, anything else: an error.
    ensure!(
        matches!(out.status.code(), Some(0 | 1)),
        "clamscan failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = Vec::new();
    for line in text.lines() {
        let rest = line
            .strip_suffix(" FOUND")
            .with_context(|| format!("unexpected clamscan line {line:?}"))?;
        let (path, name) = rest
            .rsplit_once(": ")
            .with_context(|| format!("unexpected clamscan line {line:?}"))?;
        found.push((PathBuf::from(path), name.to_owned()));
    }
    Ok((secs, found))
}

/// Builds the tree and runs the benchmark.
pub fn run(quick: bool) -> Result<()> {
    let tree = small_file_tree(quick)?;
    run_on(&tree, quick)
}

/// The benchmark on a tree already built: the best of three rounds (`quick`: one).
pub fn run_on(tree: &Tree, quick: bool) -> Result<()> {
    const RANDOM: usize = 10_000;
    let set = sha256_indicators_with_eicar(RANDOM, 1)?;
    let eicar = RecordRef::try_from(RANDOM)?;
    let index = index_of(&set)?;
    // The same hashes as a ClamAV database, any size (`*`, which needs level 73).
    let tmp = tempfile::tempdir()?;
    let db = tmp.path().join("picket-bench.hsb");
    let mut text = String::new();
    for (i, ind) in set.iter().enumerate() {
        let Observable::FileHash { hash, size: None } = &ind.observable else {
            bail!("indicator {} is not a SHA-256 without a size", ind.id);
        };
        let name = if i == RANDOM {
            EICAR_NAME.to_owned()
        } else {
            format!("Picket.Bench.Random{i}")
        };
        writeln!(text, "{}:*:{name}:73", hex::encode(&hash.value))?;
    }
    std::fs::write(&db, text).with_context(|| format!("writing {}", db.display()))?;
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty)?;

    tree.warm()?;
    tree.wait_until_settled(RACY_MARGIN);
    let want: BTreeSet<(PathBuf, String)> = tree
        .eicars
        .iter()
        .map(|p| (p.clone(), format!("{EICAR_NAME}.UNOFFICIAL")))
        .collect();
    // A tmpfs for clamscan's temporary directories, when the machine has one.
    let shm = Path::new("/dev/shm");
    let tmpfs = if shm.is_dir() {
        Some(tempfile::tempdir_in(shm).context("creating a directory in /dev/shm")?)
    } else {
        None
    };
    let temps: Vec<Option<&Path>> = match &tmpfs {
        Some(d) => vec![None, Some(d.path())],
        None => vec![None],
    };
    let mut best_picket = f64::MAX;
    let mut best_clam = vec![f64::MAX; temps.len()];
    let mut best_startup = f64::MAX;
    for _ in 0..if quick { 1 } else { 3 } {
        let cache = Mutex::new(HashCache::new(2_000_000));
        let (secs, stats, findings) = scan(&index, Some(&cache), &tree.root)?;
        findings.check("picket", tree, eicar)?;
        ensure!(
            stats.hashed == tree.files,
            "picket hashed {} of {} files",
            stats.hashed,
            tree.files
        );
        best_picket = best_picket.min(secs);

        for (best, &temp) in best_clam.iter_mut().zip(&temps) {
            let (secs, found) = clamscan(&db, &tree.root, temp)?;
            let found: BTreeSet<(PathBuf, String)> = found.into_iter().collect();
            ensure!(
                found == want,
                "clamscan found {found:?}, expected the planted EICAR files {want:?}"
            );
            *best = best.min(secs);
        }
        let (secs, found) = clamscan(&db, &empty, temps.last().copied().flatten())?;
        ensure!(found.is_empty(), "clamscan found {found:?} in an empty directory");
        best_startup = best_startup.min(secs);
    }
    let clam = best_clam.iter().copied().fold(f64::MAX, f64::min);
    let ratio = clam / best_picket;
    let walk = clam - best_startup;
    let tmpfs_note = match best_clam.get(1) {
        Some(t) => format!(
            "clamscan {:.0} ms with its temporary directories on tmpfs, {:.0} ms in /tmp",
            t * 1e3,
            best_clam[0] * 1e3
        ),
        None => format!(
            "clamscan {:.0} ms (no /dev/shm for its temporary directories)",
            clam * 1e3
        ),
    };
    report(
        "clamav",
        &format!(
            "first scan of {} files ({:.0} MB), {} SHA-256 hashes of any size: picket {:.0} ms ({:.1} µs/file), \
             {tmpfs_note} (start-up {:.0} ms, {:.1} µs/file scanning); \
             clamscan/picket {ratio:.1}x ({:.1}x without its start-up)",
            tree.files,
            tree.bytes as f64 / 1e6,
            RANDOM + 1,
            best_picket * 1e3,
            best_picket * 1e6 / tree.files as f64,
            best_startup * 1e3,
            walk * 1e6 / tree.files as f64,
            walk / best_picket,
        ),
        Some((ratio > 1.0, "picket faster than clamscan")),
    );
    Ok(())
}
