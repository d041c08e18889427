//! Applying a delta of 10 000 changes to a 1 M-indicator set, as an agent does on update:
//! decode the delta, merge it into the installed snapshot bytes, and hash the result to check it
//! against the manifest. The baseline is rebuilding the same snapshot from owned records and
//! encoding it (what a naive agent would do).

use std::time::Instant;

use anyhow::Result;
use picket_proto::{sha256, Delta, Record, Snapshot, SnapshotView};

use crate::data::{sha256_indicator, snapshot, Rng};
use crate::report;

pub fn run(quick: bool) -> Result<()> {
    let (n, changes) = if quick {
        (100_000, 1_000)
    } else {
        (1_000_000, 10_000)
    };
    let base = snapshot(n, 1);
    let mut next = base.clone();
    next.version = 2;
    // Half the changes remove existing indicators, half add new ones.
    let mut rng = Rng(2);
    let step = n / (changes / 2);
    let mut i = 0;
    next.records.retain(|_| {
        i += 1;
        i % step != 0
    });
    for _ in 0..changes / 2 {
        next.records
            .push(Record::from_indicator(&sha256_indicator(&mut rng))?);
    }
    let next = Snapshot::new("default", 2, next.records)?;
    let base_bytes = base.encode();
    let delta_bytes = Delta::between(&base, &next).encode();
    let want = sha256(&next.encode());

    let mut best_warm = f64::MAX;
    let mut buf = Vec::new();
    let mut best_apply = f64::MAX;
    let mut best_full = f64::MAX;
    let mut best_naive = f64::MAX;
    for _ in 0..5 {
        let view = SnapshotView::parse(&base_bytes, usize::MAX)?;
        let t = Instant::now();
        Delta::decode(&delta_bytes, usize::MAX)?.apply_into(&view, &mut buf)?;
        best_warm = best_warm.min(t.elapsed().as_secs_f64());
        anyhow::ensure!(
            sha256(&buf) == want,
            "the rebuilt snapshot does not hash to the target"
        );
        let t = Instant::now();
        let delta = Delta::decode(&delta_bytes, usize::MAX)?;
        let rebuilt = delta.apply_to_bytes(&view)?;
        let applied = t.elapsed().as_secs_f64();
        let ok = sha256(&rebuilt) == want;
        let full = t.elapsed().as_secs_f64();
        anyhow::ensure!(ok, "the rebuilt snapshot does not hash to the target");
        best_apply = best_apply.min(applied);
        best_full = best_full.min(full);

        let t = Instant::now();
        let owned = Snapshot::decode(&base_bytes, usize::MAX)?;
        let delta = Delta::decode(&delta_bytes, usize::MAX)?;
        let naive = delta.apply(&owned)?.encode();
        best_naive = best_naive.min(t.elapsed().as_secs_f64());
        anyhow::ensure!(sha256(&naive) == want, "the naive rebuild differs");
    }
    report(
        "delta",
        &format!(
            "{changes} changes on {n} indicators ({} MB snapshot, {} KB delta): apply into a reused buffer {:.1} ms, into fresh memory {:.1} ms, fresh + SHA-256 check {:.1} ms; naive owned rebuild {:.1} ms ({:.1}x the reused-buffer apply)",
            base_bytes.len() / 1_000_000,
            delta_bytes.len() / 1000,
            best_warm * 1e3,
            best_apply * 1e3,
            best_full * 1e3,
            best_naive * 1e3,
            best_naive / best_warm
        ),
        Some((best_warm * 1e3 <= 50.0, "apply at most 50 ms")),
    );
    Ok(())
}

/// Where the time of an apply goes (for tuning; `picket-bench delta-parts`).
pub fn parts() -> Result<()> {
    let base = snapshot(1_000_000, 1);
    let bytes = base.encode();
    for _ in 0..3 {
        let t = Instant::now();
        let view = SnapshotView::parse(&bytes, usize::MAX)?;
        let parse = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let n = view.records().count();
        let iter = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let mut v: Vec<u8> = Vec::with_capacity(bytes.len());
        v.extend_from_slice(&bytes);
        let copy = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let mut w: Vec<u8> = Vec::with_capacity(bytes.len());
        w.extend_from_slice(&v);
        let copy2 = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        w.copy_from_slice(&v);
        let copy_warm = t.elapsed().as_secs_f64() * 1e3;
        println!("parse {parse:.1} ms, iterate {n} records {iter:.1} ms, copy into new {copy:.1} ms, again {copy2:.1} ms, warm copy {copy_warm:.1} ms");
    }
    Ok(())
}
