//! SHA-256 of page-cached large files on one thread: Picket's one-pass file hasher against
//! `openssl dgst -sha256` over the same files, the practical limit for SHA-256 on this machine.

use std::fs;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use picket_agent::digest::{hash_file, Kinds};

use crate::data::Rng;
use crate::report;

pub fn run(quick: bool) -> Result<()> {
    let (files, size) = if quick { (2, 32 << 20) } else { (4, 256 << 20) };
    let dir = tempfile::tempdir()?;
    let mut rng = Rng(7);
    let mut paths = Vec::new();
    for i in 0..files {
        let p = dir.path().join(format!("big-{i}.bin"));
        let chunk = rng.bytes(1 << 20);
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            data.extend_from_slice(&chunk);
            let n = data.len();
            data[n - 1] ^= n as u8;
        }
        fs::write(&p, &data)?;
        paths.push(p);
    }
    let total = (files * size) as f64;
    let kinds = Kinds {
        sha256: true,
        ..Kinds::default()
    };
    let mut buf = vec![0u8; 1 << 20];
    // Warm the page cache and check both tools agree.
    let openssl = |paths: &[std::path::PathBuf]| -> Result<String> {
        let out = Command::new("openssl")
            .arg("dgst")
            .arg("-sha256")
            .args(paths)
            .output()
            .context("running openssl (apt-get install openssl)")?;
        ensure!(out.status.success(), "openssl failed");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let reference = openssl(&paths)?;
    for p in &paths {
        let d = hash_file(p, &fs::metadata(p)?, kinds, &mut buf)?.context("file changed")?;
        let hex = hex::encode(d.sha256.context("sha256")?);
        ensure!(
            reference.contains(&hex),
            "digest of {} differs from openssl's",
            p.display()
        );
    }
    let mut best_ours = f64::MAX;
    let mut best_openssl = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for p in &paths {
            hash_file(p, &fs::metadata(p)?, kinds, &mut buf)?;
        }
        best_ours = best_ours.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        openssl(&paths)?;
        best_openssl = best_openssl.min(t.elapsed().as_secs_f64());
    }
    let ratio = best_openssl / best_ours;
    report(
        "hash",
        &format!(
            "SHA-256, {files} page-cached files of {} MiB: picket {:.0} MB/s, openssl {:.0} MB/s, ratio {ratio:.2}",
            size >> 20,
            total / best_ours / 1e6,
            total / best_openssl / 1e6
        ),
        Some((ratio >= 0.85, "ratio at least 0.85")),
    );
    Ok(())
}
