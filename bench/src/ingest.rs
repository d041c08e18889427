//! The collector's ingest and publish at scale, with the real release binary
//! (`target/release/picket-collector`) on generated files:
//!
//! 1. `ingest` of a STIX 2.1 bundle of 1 M indicators (SHA-256 and some IPv4 patterns), against
//!    the system Python's `json.load` of the same file: only parsing the JSON, none of the
//!    collector's pattern translation or storage, so a floor for any Python ingester;
//! 2. `ingest` of a plain list of 1 M SHA-256 lines (1 % of them repeated), against
//!    `sort -u` of the same file, which does comparable dedupe work;
//! 3. `publish` of those 1 M indicators: time per indicator and the snapshot's size;
//! 4. the size of a delta: in-process (picket_proto) for 1 % churn (1 % removed, 1 % added)
//!    against the full snapshot, and through the CLI for 1 % additions (`export-set --since 1`
//!    against the full `export-set`).
//!
//! Time and peak resident memory of each child process are measured the same way for Picket
//! and for the baselines: wall time from spawn to exit, and the largest `VmHWM` read from
//! `/proc/PID/status` polling every 10 ms. The high-water mark only grows, so the polling can
//! miss at most what the process allocated in its last 10 ms.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use picket_proto::{sha256, Content, Delta, Limits, Record, SetFile, Snapshot};

use crate::data::{sha256_indicator, snapshot, Rng};
use crate::report;

const MIB: f64 = (1 << 20) as f64;

/// One child process run to its end.
#[derive(Debug)]
struct Run {
    /// Wall time from spawn to exit.
    secs: f64,
    /// The largest `VmHWM` seen, in bytes.
    peak: u64,
    /// What it wrote on stdout.
    stdout: String,
}

/// `VmHWM` of a running process, in bytes; `None` once it has gone (or turned zombie, when
/// the field disappears).
fn vm_hwm(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Runs `cmd` to its end, timing it and polling its peak resident memory every 10 ms. Stdout
/// is captured unless `discard_stdout`; stderr is captured for the error message. A failure
/// exit is an error.
fn measure(cmd: &mut Command, what: &str, discard_stdout: bool) -> Result<Run> {
    cmd.stdin(Stdio::null())
        .stdout(if discard_stdout {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let pid = child.id();
    let read_all = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                // A read error leaves what was read; the exit status is what is checked.
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read_all(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = read_all(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(hwm) = vm_hwm(pid) {
            peak = peak.max(hwm);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let secs = started.elapsed().as_secs_f64();
    let stdout = out
        .join()
        .map_err(|_| anyhow::anyhow!("the stdout reader panicked"))?;
    let stderr = err
        .join()
        .map_err(|_| anyhow::anyhow!("the stderr reader panicked"))?;
    ensure!(status.success(), "{what} failed ({status}): {stdout}{stderr}");
    ensure!(peak > 0, "{what}: no VmHWM was read before it exited");
    Ok(Run { secs, peak, stdout })
}

/// A fresh collector data directory in `dir`.
fn init(bin: &Path, dir: &Path) -> Result<PathBuf> {
    let data = dir.join("data");
    let out = Command::new(bin)
        .arg("init")
        .arg("--data")
        .arg(&data)
        .args(["--org", "bench"])
        .output()
        .context("running picket-collector init")?;
    ensure!(
        out.status.success(),
        "picket-collector init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(data)
}

/// A `picket-collector` command on the data directory `data`.
fn collector(bin: &Path, sub: &str, data: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(sub).arg("--data").arg(data);
    cmd
}

/// Checks an ingest summary line: `FILE: N indicators (N new, 0 updated, ...)`, nothing
/// unsupported.
fn check_ingest(stdout: &str, n: usize) -> Result<()> {
    let want = format!(": {n} indicators ({n} new, 0 updated, 0 older");
    ensure!(
        stdout.contains(&want) && !stdout.contains("unsupported"),
        "ingest said {stdout:?}, expected {want:?} and nothing unsupported"
    );
    Ok(())
}

/// A random RFC 4122 version 4 UUID.
fn uuid4(rng: &mut Rng) -> String {
    let mut b = rng.bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// Writes a STIX 2.1 bundle of `n` indicators, one object a line: nine in ten are SHA-256
/// file hashes, one in ten an IPv4 address (distinct, from 45.0.0.0 up), each with its own
/// id and timestamps. Returns the file's size.
fn write_stix(path: &Path, n: usize, rng: &mut Rng) -> Result<u64> {
    let mut w = BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    writeln!(
        w,
        "{{\"type\": \"bundle\", \"id\": \"bundle--{}\", \"objects\": [",
        uuid4(rng)
    )?;
    for i in 0..n {
        let pattern = if i % 10 == 9 {
            let ip = 0x2d00_0000u32 + i as u32;
            format!("[ipv4-addr:value = '{}']", std::net::Ipv4Addr::from(ip))
        } else {
            format!("[file:hashes.'SHA-256' = '{}']", hex::encode(rng.bytes(32)))
        };
        // Timestamps spread over 2025, to the millisecond.
        let t = i as u64 * 31 % 31_536_000;
        let (day, s) = (t / 86_400, t % 86_400);
        let (month, mday) = (day / 31 % 12 + 1, day % 28 + 1);
        let stamp = format!(
            "2025-{month:02}-{mday:02}T{:02}:{:02}:{:02}.{:03}Z",
            s / 3600,
            s / 60 % 60,
            s % 60,
            i % 1000
        );
        writeln!(
            w,
            "{{\"type\": \"indicator\", \"spec_version\": \"2.1\", \"id\": \"indicator--{}\", \
             \"created\": \"{stamp}\", \"modified\": \"{stamp}\", \"name\": \"bench indicator {i}\", \
             \"indicator_types\": [\"malicious-activity\"], \"pattern\": \"{pattern}\", \
             \"pattern_type\": \"stix\", \"pattern_version\": \"2.1\", \"valid_from\": \"{stamp}\", \
             \"confidence\": 80}}{}",
            uuid4(rng),
            if i + 1 < n { "," } else { "" }
        )?;
    }
    writeln!(w, "]}}")?;
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all().map(|()| f))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(std::fs::metadata(path)?.len())
}

/// Writes a plain list of `n` distinct random SHA-256 digests, one a line, plus `repeats` of
/// them again at evenly spread places. Returns the file's size.
fn write_list(path: &Path, n: usize, repeats: usize, rng: &mut Rng) -> Result<u64> {
    let mut w = BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    let every = n.checked_div(repeats).unwrap_or(usize::MAX).max(1);
    for i in 0..n {
        let last = hex::encode(rng.bytes(32));
        writeln!(w, "{last}")?;
        if i % every == every - 1 {
            writeln!(w, "{last}")?;
        }
    }
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all().map(|()| f))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(std::fs::metadata(path)?.len())
}

/// The value of `word` followed by a number in `text`, such as `562` in `..., 562 bytes`.
fn number_before(text: &str, word: &str) -> Option<u64> {
    let end = text.find(word)?;
    text[..end].split_whitespace().last()?.parse().ok()
}

/// Runs `export-set` (with `--since` if given) and returns the file's bytes.
fn export(bin: &Path, data: &Path, out: &Path, since: Option<u64>) -> Result<Vec<u8>> {
    let mut cmd = collector(bin, "export-set", data);
    cmd.arg("--out").arg(out);
    if let Some(v) = since {
        cmd.arg("--since").arg(v.to_string());
    }
    measure(&mut cmd, "picket-collector export-set", false)?;
    std::fs::read(out).with_context(|| format!("reading {}", out.display()))
}

/// Runs the benchmark at 1 M indicators (`quick`: 20 000).
pub fn run(quick: bool) -> Result<()> {
    let bin = crate::built_bin("picket-collector")?;
    let n = if quick { 20_000 } else { 1_000_000 };
    let churn = n / 100;
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let mut rng = Rng(11);

    // 1. A STIX bundle against Python's json.load.
    let stix = tmp.path().join("bundle.json");
    let stix_bytes = write_stix(&stix, n, &mut rng)?;
    let data = init(&bin, &tmp.path().join("stix"))?;
    let pk = measure(
        collector(&bin, "ingest", &data).arg(&stix),
        "picket-collector ingest (STIX)",
        false,
    )?;
    check_ingest(&pk.stdout, n)?;
    let py = measure(
        Command::new("/usr/bin/python3")
            .args(["-c", "import json,sys; json.load(open(sys.argv[1]))"])
            .arg(&stix),
        "python3 json.load",
        false,
    )?;
    report(
        "ingest-stix",
        &format!(
            "{n} STIX 2.1 indicators ({:.0} MB bundle): Picket {:.2} s ({:.1} µs/indicator), peak RSS {:.0} MiB; \
             python3 json.load {:.2} s, peak RSS {:.0} MiB; time Picket/python {:.2}, peak RSS Picket/python {:.2}",
            stix_bytes as f64 / 1e6,
            pk.secs,
            pk.secs * 1e6 / n as f64,
            pk.peak as f64 / MIB,
            py.secs,
            py.peak as f64 / MIB,
            pk.secs / py.secs,
            pk.peak as f64 / py.peak as f64,
        ),
        None,
    );
    std::fs::remove_file(&stix)?;
    std::fs::remove_dir_all(tmp.path().join("stix"))?;

    // 2. A plain list against sort -u.
    let list = tmp.path().join("list.txt");
    let list_bytes = write_list(&list, n, churn, &mut rng)?;
    let data = init(&bin, &tmp.path().join("list"))?;
    let pk = measure(
        collector(&bin, "ingest", &data).arg(&list),
        "picket-collector ingest (list)",
        false,
    )?;
    check_ingest(&pk.stdout, n)?;
    // Byte order, as the collector compares; GNU sort's own thread count (both cores).
    let sort = measure(
        Command::new("sort").env("LC_ALL", "C").arg("-u").arg(&list),
        "sort -u",
        true,
    )?;
    let unique = measure(
        Command::new("sort").env("LC_ALL", "C").arg("-u").arg(&list),
        "sort -u (check)",
        false,
    )?
    .stdout
    .lines()
    .count();
    ensure!(unique == n, "sort -u kept {unique} lines, not {n}");
    report(
        "ingest-list",
        &format!(
            "{} SHA-256 lines, {n} distinct ({:.0} MB): Picket {:.2} s ({:.1} µs/line), peak RSS {:.0} MiB; \
             LC_ALL=C sort -u {:.2} s, peak RSS {:.0} MiB; time Picket/sort {:.2}, peak RSS Picket/sort {:.2}",
            n + churn,
            list_bytes as f64 / 1e6,
            pk.secs,
            pk.secs * 1e6 / (n + churn) as f64,
            pk.peak as f64 / MIB,
            sort.secs,
            sort.peak as f64 / MIB,
            pk.secs / sort.secs,
            pk.peak as f64 / sort.peak as f64,
        ),
        None,
    );

    // 3. Publish of what the list brought.
    let publish = measure(
        &mut collector(&bin, "publish", &data),
        "picket-collector publish",
        false,
    )?;
    let want = format!("published set version 1 with {n} indicators (none left out");
    ensure!(
        publish.stdout.contains(&want),
        "publish said {:?}, expected {want:?}",
        publish.stdout
    );
    let snapshot_bytes = number_before(&publish.stdout, "bytes;")
        .with_context(|| format!("no snapshot size in {:?}", publish.stdout))?;
    report(
        "publish",
        &format!(
            "{n} indicators: {:.2} s ({:.1} µs/indicator), peak RSS {:.0} MiB; snapshot {:.1} MB ({:.0} B/indicator)",
            publish.secs,
            publish.secs * 1e6 / n as f64,
            publish.peak as f64 / MIB,
            snapshot_bytes as f64 / 1e6,
            snapshot_bytes as f64 / n as f64,
        ),
        None,
    );

    // 4a. 1 % additions through the CLI: export-set --since 1 against the full export-set.
    let full_v1 = export(&bin, &data, &tmp.path().join("v1.pkt"), None)?;
    let more = tmp.path().join("more.txt");
    write_list(&more, churn, 0, &mut rng)?;
    let add = measure(
        collector(&bin, "ingest", &data).arg(&more),
        "picket-collector ingest (1 % more)",
        false,
    )?;
    check_ingest(&add.stdout, churn)?;
    let publish2 = measure(
        &mut collector(&bin, "publish", &data),
        "picket-collector publish (v2)",
        false,
    )?;
    let want = format!("published set version 2 with {} indicators", n + churn);
    ensure!(
        publish2.stdout.contains(&want) && publish2.stdout.contains("deltas from [1]"),
        "publish said {:?}, expected {want:?} with a delta from 1",
        publish2.stdout
    );
    let full_v2 = export(&bin, &data, &tmp.path().join("v2.pkt"), None)?;
    let delta_file = export(&bin, &data, &tmp.path().join("d12.pkt"), Some(1))?;
    let limits = Limits::default();
    let Content::Full(snap_v2) = SetFile::decode(&full_v2, &limits)?.content else {
        anyhow::bail!("export-set without --since wrote a delta");
    };
    let snap_v2 = Snapshot::decode(snap_v2, usize::MAX)?;
    ensure!(
        snap_v2.records.len() == n + churn,
        "the exported v2 holds {} records, not {}",
        snap_v2.records.len(),
        n + churn
    );
    let Content::Delta(d12) = SetFile::decode(&delta_file, &limits)?.content else {
        anyhow::bail!("export-set --since 1 wrote a full snapshot");
    };
    let d12_len = d12.len();
    let d12 = Delta::decode(d12, usize::MAX)?;
    ensure!(
        (d12.base_version, d12.version, d12.remove.len(), d12.upsert.len()) == (1, 2, 0, churn),
        "the exported delta goes {} -> {} with {} removals and {} upserts, expected 1 -> 2 with 0 and {churn}",
        d12.base_version,
        d12.version,
        d12.remove.len(),
        d12.upsert.len()
    );
    report(
        "delta-cli",
        &format!(
            "{churn} additions to {n} indicators (ingest {:.2} s, publish v2 {:.2} s): export-set --since 1 \
             {:.0} KB (delta {:.0} KB) vs full export-set {:.1} MB (v1 {:.1} MB); delta file/full file {:.4}",
            add.secs,
            publish2.secs,
            delta_file.len() as f64 / 1e3,
            d12_len as f64 / 1e3,
            full_v2.len() as f64 / 1e6,
            full_v1.len() as f64 / 1e6,
            delta_file.len() as f64 / full_v2.len() as f64,
        ),
        None,
    );
    drop(tmp);

    // 4b. 1 % churn in-process: 1 % of the records replaced by new ones.
    let base = snapshot(n, 12);
    let mut rng = Rng(13);
    let mut records: Vec<Record> = base
        .records
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 100 != 99)
        .map(|(_, r)| r.clone())
        .collect();
    let removed = n - records.len();
    for _ in 0..removed {
        records.push(Record::from_indicator(&sha256_indicator(&mut rng))?);
    }
    let next = Snapshot::new("default", 2, records)?;
    let base_bytes = base.encode();
    let next_bytes = next.encode();
    let delta = Delta::between(&base, &next);
    ensure!(
        (delta.remove.len(), delta.upsert.len()) == (removed, removed),
        "the delta removes {} and upserts {}, expected {removed} each",
        delta.remove.len(),
        delta.upsert.len()
    );
    let delta_bytes = delta.encode();
    let rebuilt = Delta::decode(&delta_bytes, usize::MAX)?.apply(&base)?.encode();
    ensure!(
        sha256(&rebuilt) == sha256(&next_bytes),
        "applying the delta does not give the new snapshot"
    );
    report(
        "delta-churn",
        &format!(
            "{removed} of {n} indicators replaced: delta {:.0} KB vs snapshot {:.1} MB ({:.0} B/indicator); \
             delta/snapshot {:.4} ({:.0} B per change)",
            delta_bytes.len() as f64 / 1e3,
            base_bytes.len() as f64 / 1e6,
            base_bytes.len() as f64 / n as f64,
            delta_bytes.len() as f64 / base_bytes.len() as f64,
            delta_bytes.len() as f64 / (2 * removed) as f64,
        ),
        None,
    );
    Ok(())
}
