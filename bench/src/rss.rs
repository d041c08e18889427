//! The daemon's resident memory holding a large set: the real `picket-agent run`, with a set of
//! generated SHA-256 indicators imported into a fresh state directory, no scan roots and no
//! process or connection polling, so what it holds is the compiled set and its own runtime.
//! Resident memory (`VmRSS`) is read once the set is loaded and the (empty) first scan is done
//! and the figure has settled; the peak (`VmHWM`) shows what loading cost on the way. The
//! baseline is the set's size on disk (the state file), which a naive agent would hold.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::daemon::{field, import_set, write_config, Daemon};
use crate::data::snapshot;
use crate::report;
use picket_e2e::SetSigner;

const MIB: f64 = (1 << 20) as f64;

/// One measurement.
#[derive(Debug)]
struct Measured {
    rss: u64,
    hwm: u64,
    index_bytes: u64,
    state_file: u64,
    load_secs: f64,
}

fn measure(n: usize) -> Result<Measured> {
    let tmp = tempfile::tempdir()?;
    let signer = SetSigner::new(tmp.path());
    let set = tmp.path().join("set.pkt");
    signer.write_snapshot(&set, &snapshot(n, 7));
    let state = tmp.path().join("state");
    import_set(&state, &signer.anchor(), &set, n)?;
    std::fs::remove_file(&set)?;
    let state_file = std::fs::metadata(state.join("set.pkt"))
        .context("the imported state file")?
        .len();
    let config = write_config(tmp.path(), &state, &[], "")?;
    let started = Instant::now();
    let mut daemon = Daemon::start(&config)?;
    let line = daemon.wait_for("set version=", Duration::from_secs(300))?;
    let load_secs = started.elapsed().as_secs_f64();
    ensure!(
        field(&line, "indicators") == Some(&n.to_string()) && field(&line, "unknown_kinds") == Some("0"),
        "the daemon loaded {line:?}, expected {n} indicators of known kinds"
    );
    let index_bytes: u64 = field(&line, "index_bytes")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no index_bytes in {line:?}"))?;
    // No roots: the first scan finds nothing and saves an empty cache at once.
    let done = daemon.wait_for("scan done", Duration::from_secs(60))?;
    ensure!(
        field(&done, "files") == Some("0"),
        "a scan with no roots: {done:?}"
    );
    // Settled: three readings 200 ms apart within 1 % of each other (or 10 s).
    let mut readings = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        readings.push(daemon.status_bytes("VmRSS")?);
        let last3 = &readings[readings.len().saturating_sub(3)..];
        let (lo, hi) = (last3.iter().min(), last3.iter().max());
        if let (true, Some(&lo), Some(&hi)) = (last3.len() == 3, lo, hi) {
            if (hi - lo) as f64 <= hi as f64 * 0.01 || Instant::now() > deadline {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss = readings.last().copied().unwrap_or_default();
    let hwm = daemon.status_bytes("VmHWM")?;
    daemon.drain();
    ensure!(
        daemon.sightings().next().is_none(),
        "sightings with no roots and no polling"
    );
    Ok(Measured {
        rss,
        hwm,
        index_bytes,
        state_file,
        load_secs,
    })
}

/// Runs the benchmark: 1 M and 10 000 indicators (`quick`: 100 000, without a target, and
/// 10 000).
pub fn run(quick: bool) -> Result<()> {
    crate::daemon::agent_bin()?;
    let cases: &[(usize, Option<u64>)] = if quick {
        &[(100_000, None), (10_000, Some(16))]
    } else {
        &[(1_000_000, Some(64)), (10_000, Some(16))]
    };
    for &(n, target_mib) in cases {
        let m = measure(n)?;
        let figures = format!(
            "{n} SHA-256 indicators: RSS {:.1} MiB (peak {:.1} MiB) = {:.0} B/indicator; index {:.1} MiB \
             ({:.0} B/indicator); state file on disk {:.1} MiB, RSS/state file {:.2}; loaded in {:.1} s",
            m.rss as f64 / MIB,
            m.hwm as f64 / MIB,
            m.rss as f64 / n as f64,
            m.index_bytes as f64 / MIB,
            m.index_bytes as f64 / n as f64,
            m.state_file as f64 / MIB,
            m.rss as f64 / m.state_file as f64,
            m.load_secs,
        );
        let target = target_mib.map(|t| format!("RSS at most {t} MiB"));
        report(
            &format!("rss-{n}"),
            &figures,
            target
                .as_deref()
                .zip(target_mib)
                .map(|(text, t)| (m.rss <= t << 20, text)),
        );
    }
    Ok(())
}
