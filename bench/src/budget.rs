//! Background scanning under a CPU budget: the real `picket-agent run` with
//! `limits.cpu_budget = 0.10` scanning a large tree, its CPU time read from `/proc/PID/stat`
//! (user + system of every thread) over a window after the first second, as a share of the
//! wall time. The baseline is the same scan with `cpu_budget = 1.0`: the share the scan takes
//! when nothing holds it back, measured over its whole first scan.
//!
//! Every file must be hashed: the set holds SHA-256 indicators without sizes, the state
//! directory is fresh (no `hash-cache.bin`), and the tree is large enough that the budgeted scan
//! is still running when the window closes (checked: no `scan done` line before then). File
//! events are off, so the scan is all the daemon does.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use crate::daemon::{clock_ticks, field, import_set, write_config, Daemon};
use crate::data::{sha256_indicators_with_eicar, snapshot_of, Sizes, Tree};
use crate::report;
use picket_e2e::SetSigner;

/// A daemon scanning `tree` with `budget`, started in a fresh state directory.
fn start(tree: &Tree, budget: f64, tmp: &std::path::Path) -> Result<(Daemon, Instant)> {
    let signer = SetSigner::new(tmp);
    let set = tmp.join("set.pkt");
    let indicators = sha256_indicators_with_eicar(10_000, 3)?;
    signer.write_snapshot(&set, &snapshot_of(&indicators)?);
    let state = tmp.join("state");
    import_set(&state, &signer.anchor(), &set, indicators.len())?;
    ensure!(
        !state.join(picket_agent::cache::CACHE_FILE).exists(),
        "a hash cache in a fresh state directory"
    );
    let config = write_config(tmp, &state, &[&tree.root], &format!("cpu_budget = {budget}"))?;
    let mut daemon = Daemon::start(&config)?;
    daemon.wait_for("set version=", Duration::from_secs(60))?;
    Ok((daemon, Instant::now()))
}

/// The share of one core used between two readings.
fn share(ticks: u64, per_sec: u64, wall: Duration) -> f64 {
    ticks as f64 / per_sec as f64 / wall.as_secs_f64()
}

/// Runs the benchmark: 50 000 files of 64 KiB (`quick`: 6 000 of 128 KiB, and a 3 s window).
pub fn run(quick: bool) -> Result<()> {
    crate::daemon::agent_bin()?;
    let (files, size, window) = if quick {
        (6_000, 128 << 10, Duration::from_secs(3))
    } else {
        (50_000, 64 << 10, Duration::from_secs(10))
    };
    let tree = Tree::build(files, Sizes::Fixed(size), 2, 9)?;
    tree.warm()?;
    let tck = clock_ticks()?;

    // The budgeted scan: skip the first second (start-up and the initial burst), then measure.
    let tmp = tempfile::tempdir()?;
    let (mut daemon, t0) = start(&tree, 0.10, tmp.path())?;
    std::thread::sleep(Duration::from_secs(1).saturating_sub(t0.elapsed()));
    let (c1, w1) = (daemon.cpu_ticks()?, Instant::now());
    std::thread::sleep(window);
    let (c2, w2) = (daemon.cpu_ticks()?, Instant::now());
    daemon.drain();
    ensure!(
        !daemon.has_said("scan done"),
        "the budgeted scan finished inside the window: the tree is too small for this measurement"
    );
    let budgeted = share(c2 - c1, tck, w2 - w1);
    drop(daemon);

    // The unbudgeted baseline: the whole first scan, which must hash every file and find EICAR.
    let tmp = tempfile::tempdir()?;
    let (mut daemon, t0) = start(&tree, 1.0, tmp.path())?;
    let c0 = daemon.cpu_ticks()?;
    let done = daemon.wait_for("scan done", Duration::from_secs(600))?;
    let (c1, w1) = (daemon.cpu_ticks()?, Instant::now());
    let full = share(c1 - c0, tck, w1 - t0);
    let scan_secs = (w1 - t0).as_secs_f64();
    ensure!(
        field(&done, "files") == Some(&files.to_string())
            && field(&done, "hashed") == Some(&files.to_string()),
        "the unbudgeted scan did not hash every file: {done:?}"
    );
    // Sightings are printed as they are found, before the scan ends.
    daemon.drain();
    let mut sighted = Vec::new();
    for line in daemon.sightings() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        ensure!(v["observed"] == "file", "an unexpected sighting {line}");
        sighted.push(v["value"].as_str().unwrap_or_default().to_owned());
    }
    sighted.sort();
    let mut want: Vec<String> = tree.eicars.iter().map(|p| p.display().to_string()).collect();
    want.sort();
    ensure!(
        sighted == want,
        "sightings {sighted:?}, expected the planted EICAR files {want:?}"
    );

    let ok = (0.08..=0.12).contains(&budgeted);
    report(
        "budget",
        &format!(
            "{files} files of {} KiB, all hashed: cpu_budget 0.10 used {:.1} % of one core over {:.0} s; \
             cpu_budget 1.0 used {:.1} % over its whole first scan ({scan_secs:.1} s)",
            size >> 10,
            budgeted * 100.0,
            window.as_secs_f64(),
            full * 100.0,
        ),
        Some((ok, "between 8 and 12 %")),
    );
    Ok(())
}
