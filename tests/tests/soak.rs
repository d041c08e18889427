//! The fault-injection soak (issue 8, item 2), with the real binaries: SIGKILL loops on the
//! agent (while it installs sets and while the daemon spools sightings) and on the collector
//! (while it ingests and while `serve` commits sightings), a full disk under the agent's state
//! directory and the collector's data directory, clock jumps of a year either way, and a
//! collector that goes away several times while its agents keep matching.
//!
//! Invariants under test: a kill at any instant leaves the agent's set the old one or the new
//! one, whole and verifying, and the collector's store holding a whole ingested file or none of
//! it; across every kill and outage each sighting reaches the collector exactly once (one row
//! per file met, none missing, none extra, a batch sent again acknowledged as a duplicate); a
//! full disk fails an install cleanly, keeps the last good set, keeps the spool within its
//! bound, and both recover when space returns; a clock a year off never crashes the agent, a
//! year ahead reports the set stale and refuses sets as expired, a year behind does not take
//! the clock below the newest `created` verified (an expired set stays refused).
//!
//! The tests are `#[ignore]`d so that `cargo test --workspace` does not run them a second time:
//! `soak/run.sh` runs each on its own (`--include-ignored`) and collects the summary line each prints
//! (`soak: CHECK: ...`). `PICKET_SOAK_ITERATIONS` sets the number of kills per kill loop
//! (default 20, the CI smoke; the full soak is 1 000); `PICKET_SOAK_SEED` replays a run's kill
//! delays (the seed is in each summary line). The tests need root (tmpfs mounts) and
//! libfaketime (Debian's `faketime`), which `soak/run.sh` installs; without either they fail
//! loudly rather than pass.
//!
//! SIGKILL tests a crash of the process, not of the machine: the page cache survives it.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use picket_agent::link::{self, tls, Session};
use picket_e2e::{bin, lines, ok, run, s, wait_line, Child, Serve, SetSigner, EICAR, EICAR_SHA256};
use picket_proto::wire::{self, Batch, ClientMsg, ObservedKind, ServerMsg, SightingReport};
use picket_proto::{EnrollToken, Limits, Record, Snapshot, Trusted};

/// A SHA-256 nobody will ever match.
const DECOY: &str = "0000000000000000000000000000000000000000000000000000000000000001";
/// The prefix of the temporary file the agent renames over `set.pkt`.
const SET_TEMP: &str = ".set.pkt.tmp-";

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// Kills per kill loop: `PICKET_SOAK_ITERATIONS`, default 20 (the CI smoke).
fn iterations() -> usize {
    std::env::var("PICKET_SOAK_ITERATIONS")
        .ok()
        .map(|v| v.parse().expect("PICKET_SOAK_ITERATIONS is a number"))
        .unwrap_or(20)
}

/// splitmix64, replayable from a seed.
struct Rng(u64);

impl Rng {
    fn new() -> (Rng, u64) {
        let seed = match std::env::var("PICKET_SOAK_SEED") {
            Ok(v) => v.parse().expect("PICKET_SOAK_SEED is a u64"),
            Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64,
        };
        (Rng(seed), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A duration uniform in [0, max).
    fn upto(&mut self, max: Duration) -> Duration {
        max.mul_f64(self.unit())
    }

    fn sha256_hex(&mut self) -> String {
        (0..4).map(|_| format!("{:016x}", self.next())).collect()
    }
}

/// The summary line `soak/run.sh` collects.
fn summary(check: &str, started: Instant, figures: &str) {
    println!(
        "soak: {check}: {figures}, time {:.1}s, failures 0",
        started.elapsed().as_secs_f64()
    );
}

/// Polls `f` every 100 ms until it gives `Some`, at most `limit`; panics with `what` otherwise.
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        sleep(Duration::from_millis(100));
    }
}

/// `picket-agent status --state DIR --json`, parsed, with the exit status.
fn agent_status(state: &Path) -> (Output, Option<serde_json::Value>) {
    let out = run("picket-agent", &["status", "--state", s(state), "--json"]);
    let v = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| serde_json::from_str(l).ok());
    (out, v)
}

/// The set version `status` reports after re-verifying the stored set (None: no set).
fn status_version(state: &Path, ctx: &str) -> Option<u64> {
    let (out, v) = agent_status(state);
    assert!(
        out.status.success(),
        "{ctx}: status fails: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    v.and_then(|v| v["set_version"].as_u64())
}

/// Names in `dir` starting with `prefix`.
fn names_with(dir: &Path, prefix: &str) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// A tmpfs of `size` mounted on `path`; unmounted on drop. Fails loudly when it cannot mount.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                s(path),
            ])
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "\n\n*** THE FULL-DISK CHECK CANNOT RUN: mounting a {size} tmpfs on {} failed: {}\n\
             *** It needs root (CI runs as root) or CAP_SYS_ADMIN. Not skipped: failed.\n",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }

    /// Fills the file system with `filler` files until a write fails for want of space; returns
    /// the bytes written.
    fn fill(&self) -> u64 {
        let mut total = 0u64;
        for (n, chunk) in [(0, 1 << 16), (1, 4096), (2, 512)] {
            let path = self.path.join(format!("filler-{n}"));
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            let block = vec![0x5au8; chunk];
            loop {
                match f.write(&block) {
                    Ok(0) => break,
                    Ok(k) => total += k as u64,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("filling {}: {e}", path.display()),
                }
                if f.sync_data().is_err() {
                    break;
                }
            }
        }
        total
    }

    /// Removes the filler files.
    fn free(&self) {
        for n in 0..3 {
            let _ = fs::remove_file(self.path.join(format!("filler-{n}")));
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", s(&self.path)]).status();
    }
}

/// A collector: data directory, root key moved offline, and `serve` when started.
struct Live {
    tmp: tempfile::TempDir,
    data: PathBuf,
    serve: Option<Serve>,
    addr: String,
    published: u64,
}

impl Live {
    /// Inits a collector under `parent` (a fresh temporary directory when `None`), sets the
    /// `[channel]` keys given, ingests and publishes a first set of `first`.
    fn new(parent: Option<&Path>, first: &[&str], channel: &[(&str, &str)]) -> Live {
        let tmp = tempfile::tempdir().unwrap();
        let data = parent.unwrap_or(tmp.path()).join("collector");
        ok(
            "picket-collector",
            &["init", "--data", s(&data), "--org", "Soak Org"],
        );
        let toml = data.join("picket.toml");
        let mut text = fs::read_to_string(&toml).unwrap();
        for (key, value) in channel {
            let prefix = format!("{key} = ");
            let line = text
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no {key} in picket.toml"))
                .to_owned();
            text = text.replace(&line, &format!("{prefix}{value}"));
        }
        fs::write(&toml, text).unwrap();
        let key = data.parent().unwrap().join("collector.root-OFFLINE.key");
        // Copied, then removed: the data directory may be on another file system (a tmpfs).
        fs::copy(&key, tmp.path().join("offline.key")).unwrap();
        fs::remove_file(&key).unwrap();
        let mut live = Live {
            tmp,
            data,
            serve: None,
            addr: "127.0.0.1:0".into(),
            published: 0,
        };
        live.publish("first.txt", first);
        live
    }

    fn data(&self) -> &str {
        s(&self.data)
    }

    /// Ingests `values` (a list file) and publishes a new version.
    fn publish(&mut self, name: &str, values: &[&str]) {
        let p = self.tmp.path().join(name);
        fs::write(&p, values.join("\n")).unwrap();
        ok("picket-collector", &["ingest", "--data", self.data(), s(&p)]);
        ok("picket-collector", &["publish", "--data", self.data(), "--force"]);
        self.published += 1;
    }

    /// Starts `serve` on its address (port 0 the first time) and waits until it listens.
    fn serve(&mut self) {
        let serve = Serve::start(self.data(), &self.addr, &[]);
        self.addr = serve.channel.clone();
        self.serve = Some(serve);
    }

    /// SIGKILLs `serve`.
    fn kill_serve(&mut self) {
        self.serve = None;
    }

    fn token(&self, uses: u32) -> String {
        ok(
            "picket-collector",
            &[
                "token",
                "create",
                "--data",
                self.data(),
                "--uses",
                &uses.to_string(),
            ],
        )
        .trim()
        .to_owned()
    }

    fn store(&self) -> picket_collector::store::Store {
        picket_collector::datadir::DataDir::open(&self.data)
            .unwrap()
            .store()
            .unwrap()
    }

    /// Every stored sighting row as (agent, location, count).
    fn rows(&self) -> Vec<(String, String, u64)> {
        self.store()
            .sightings()
            .unwrap()
            .into_iter()
            .map(|r| (r.agent, r.location.unwrap_or_default(), r.count))
            .collect()
    }

    /// The indicator id whose value holds `hash`.
    fn indicator_id(&self, hash: &str) -> String {
        self.store()
            .candidates()
            .unwrap()
            .into_iter()
            .find(|c| c.value.contains(hash))
            .unwrap_or_else(|| panic!("{hash} was not ingested"))
            .record
            .id
    }
}

/// An enrolled agent: its state directory, the root it scans, and its daemon when running.
struct Agent {
    state: PathBuf,
    root: PathBuf,
    log: PathBuf,
    daemon: Option<Child>,
    stderr: Option<Receiver<String>>,
}

impl Agent {
    /// Enrols with `picket-agent enroll`, state in `state`, scanning `dir/files`, then tunes
    /// agent.toml for the soak: polls every 2 s, reports count updates every second, keeps at
    /// most `spool_batches` batches, no process or connection polling.
    fn enroll(live: &Live, dir: &Path, state: &Path, token: &str, spool_batches: usize) -> Agent {
        let root = dir.join("files");
        fs::create_dir_all(&root).unwrap();
        let token_file = dir.join("token");
        fs::write(&token_file, token).unwrap();
        let machine = dir.join("machine-id");
        let h = picket_proto::sha256(dir.as_os_str().as_encoded_bytes());
        fs::write(&machine, format!("{}\n", hex::encode(&h[..16]))).unwrap();
        ok(
            "picket-agent",
            &[
                "enroll",
                "--state",
                s(state),
                "--collector",
                &live.addr,
                "--token-file",
                s(&token_file),
                "--trust",
                s(&live.data.join("root.pub")),
                "--root",
                s(&root),
                "--machine-id-file",
                s(&machine),
            ],
        );
        let config = state.join("agent.toml");
        let text = fs::read_to_string(&config)
            .unwrap()
            .replace("poll_interval = \"5m\"", "poll_interval = \"2s\"");
        fs::write(
            &config,
            format!(
                "{text}\n[processes]\nenabled = false\n[connections]\nenabled = false\n\
                 [sightings]\nreport_interval = \"1s\"\nspool_batches = {spool_batches}\n"
            ),
        )
        .unwrap();
        Agent {
            state: state.to_owned(),
            root,
            log: dir.join("daemon.log"),
            daemon: None,
            stderr: None,
        }
    }

    /// Starts the daemon; its log goes to a channel (`watch`) or is appended to `self.log`.
    fn start(&mut self, watch: bool) {
        let mut cmd = Command::new(bin("picket-agent"));
        cmd.args(["run", "--config", s(&self.state.join("agent.toml"))])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if watch {
            cmd.stderr(Stdio::piped());
        } else {
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap();
            cmd.stderr(Stdio::from(log));
        }
        let mut child = cmd.spawn().unwrap();
        self.stderr = child.stderr.take().map(lines);
        self.daemon = Some(Child(child));
    }

    /// SIGKILLs the daemon.
    fn kill(&mut self) {
        self.daemon = None;
        self.stderr = None;
    }

    /// Panics if the daemon has exited.
    fn assert_alive(&mut self, ctx: &str) {
        let d = self.daemon.as_mut().expect("the daemon was started");
        if let Some(status) = d.0.try_wait().unwrap() {
            panic!("{ctx}: the daemon exited ({status:?})");
        }
    }

    /// Drops a copy of EICAR named `name` into the scanned root.
    fn drop_file(&self, name: &str) {
        fs::write(self.root.join(name), EICAR).unwrap();
    }
}

/// Waits until the collector holds, for each agent id, exactly one row per file name in
/// `expected` (matched by the location's last component), then checks nothing more arrives.
/// Returns the total count.
fn settle_rows(live: &Live, expected: &[(String, BTreeSet<String>)], limit: Duration, ctx: &str) -> u64 {
    let check = |rows: &[(String, String, u64)]| -> Result<u64, String> {
        let mut total = 0;
        for (agent, files) in expected {
            let got: Vec<&(String, String, u64)> = rows.iter().filter(|r| &r.0 == agent).collect();
            let names: Vec<String> = got
                .iter()
                .map(|r| r.1.rsplit('/').next().unwrap_or_default().to_owned())
                .collect();
            let distinct: BTreeSet<String> = names.iter().cloned().collect();
            if distinct.len() != names.len() {
                return Err(format!("agent {agent}: a file has two rows: {names:?}"));
            }
            if &distinct != files {
                let missing: Vec<_> = files.difference(&distinct).collect();
                let extra: Vec<_> = distinct.difference(files).collect();
                return Err(format!(
                    "agent {agent}: {} of {} files, missing {missing:?}, extra {extra:?}",
                    distinct.len(),
                    files.len()
                ));
            }
            if let Some(r) = got.iter().find(|r| r.2 == 0) {
                return Err(format!("agent {agent}: a row with count 0: {r:?}"));
            }
            total += got.iter().map(|r| r.2).sum::<u64>();
        }
        let agents: BTreeSet<&String> = expected.iter().map(|e| &e.0).collect();
        if let Some(r) = rows.iter().find(|r| !agents.contains(&r.0)) {
            return Err(format!("a row from an unknown agent: {r:?}"));
        }
        Ok(total)
    };
    let deadline = Instant::now() + limit;
    loop {
        let rows = live.rows();
        match check(&rows) {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "{ctx}: within {limit:?}: {e}"),
        }
        sleep(Duration::from_millis(250));
    }
    // A resend would come within a few report intervals: nothing changes.
    sleep(Duration::from_secs(3));
    check(&live.rows()).unwrap_or_else(|e| panic!("{ctx}: after settling: {e}"))
}

// ---------------------------------------------------------------------------------------------
// 1a. The agent killed while it installs sets (import-set)
// ---------------------------------------------------------------------------------------------

/// `import-set` SIGKILLed at random moments while it replaces version v by v+1 (every version
/// signed in-process as the loop needs it, so the walk never starts over): after each kill
/// `set.pkt` verifies as v or v+1, at most the killed import's temporary file is left, and
/// `status` re-verifies the same version.
#[test]
#[ignore = "part of the soak: run by soak/run.sh (its --smoke in CI)"]
fn agent_killed_while_installing_sets_keeps_the_old_or_the_new_set() {
    let started = Instant::now();
    let kills_wanted = iterations();
    let (mut rng, seed) = Rng::new();
    let tmp = tempfile::tempdir().unwrap();
    let signer = SetSigner::new(tmp.path());
    let anchor = signer.anchor();
    let state = tmp.path().join("state");
    // About 2.5 MB of snapshot per version: an import takes long enough to be hit in its middle.
    let bulk: Vec<Record> = (0..25_000)
        .map(|i| {
            let ind = picket_e2e::indicator(
                &format!("indicator--bulk-{i}"),
                picket_proto::Observable::FileHash {
                    hash: picket_proto::Hash::from_hex(&rng.sha256_hex()).unwrap(),
                    size: None,
                },
            );
            Record::from_indicator(&ind).unwrap()
        })
        .collect();
    let file_for = |v: u64| -> PathBuf {
        let path = tmp.path().join(format!("v{v}.set"));
        if !path.exists() {
            let mut records = bulk.clone();
            let extra = picket_e2e::indicator(
                &format!("indicator--v{v:08}"),
                picket_proto::Observable::FileHash {
                    hash: picket_proto::Hash::from_hex(&format!("{v:064x}")).unwrap(),
                    size: None,
                },
            );
            records.push(Record::from_indicator(&extra).unwrap());
            records.sort_by(|a, b| a.id.cmp(&b.id));
            signer.write_snapshot(&path, &Snapshot::new("default", v, records).unwrap());
        }
        path
    };
    let version_on_disk = |ctx: &str| -> u64 {
        let bytes = fs::read(state.join("set.pkt")).unwrap_or_else(|e| panic!("{ctx}: set.pkt: {e}"));
        Trusted::decode_stored(&bytes, &Limits::default())
            .unwrap_or_else(|e| panic!("{ctx}: set.pkt ({} bytes) does not verify: {e}", bytes.len()))
            .manifest()
            .version
    };
    let timed = |v: u64| {
        let t = Instant::now();
        picket_e2e::import_ok(&state, &anchor, &file_for(v));
        t.elapsed()
    };
    timed(1);
    let d = (timed(2) + timed(3)) / 2;
    let mut installed = 3u64;
    let (mut kills, mut old, mut new, mut finished, mut attempts) = (0usize, 0usize, 0usize, 0usize, 0usize);
    // Kills that left the killed import's own temporary file: it was writing the new set.
    let mut mid_write = 0usize;
    let agent = bin("picket-agent");
    while kills < kills_wanted {
        attempts += 1;
        assert!(
            attempts < 10 * kills_wanted + 50,
            "too few imports were hit by the kill"
        );
        let next = installed + 1;
        let file = file_for(next);
        let delay = d.mul_f64(rng.unit());
        let mut child = Command::new(&agent)
            .args([
                "import-set",
                "--state",
                s(&state),
                "--trust",
                s(&anchor),
                s(&file),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        sleep(delay);
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let killed = out.status.signal() == Some(libc::SIGKILL);
        mid_write += usize::from(killed && state.join(format!("{SET_TEMP}{pid}")).exists());
        let ctx =
            format!("seed {seed}, attempt {attempts}, v{next} over v{installed}, killed after {delay:?}");
        assert!(
            killed || out.status.success(),
            "{ctx}: the import failed on its own: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let now = version_on_disk(&ctx);
        assert!(now == installed || now == next, "{ctx}: holds v{now}");
        let temps = names_with(&state, SET_TEMP);
        assert!(temps.len() <= 1, "{ctx}: temporary files pile up: {temps:?}");
        if attempts % 25 == 0 {
            assert_eq!(status_version(&state, &ctx), Some(now), "{ctx}");
        }
        match (killed, now == next) {
            (true, false) => old += 1,
            (true, true) => new += 1,
            (false, _) => finished += 1,
        }
        kills += usize::from(killed);
        installed = now;
    }
    // A last import completes, leaves no temporary file, and status agrees with the disk.
    let last = installed + 1;
    picket_e2e::import_ok(&state, &anchor, &file_for(last));
    assert!(names_with(&state, SET_TEMP).is_empty());
    assert_eq!(status_version(&state, "after the loop"), Some(last));
    assert!(
        old > 0 && new > 0,
        "the kills never straddled an install: old {old}, new {new}"
    );
    summary(
        "agent-set-kill",
        started,
        &format!(
            "iterations {attempts}, kills {kills} (old set kept {old}, of which mid-write {mid_write}; new set installed {new}), \
             finished before the kill {finished}, import ~{:.0}ms, v1 -> v{last}, torn 0, seed {seed}",
            d.as_secs_f64() * 1e3
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// 1b. The daemon killed while it spools sightings and installs pushed sets
// ---------------------------------------------------------------------------------------------

/// An enrolled daemon SIGKILLed again and again: each run finds one more file (a new sighting
/// it saves and spools) and is killed at a random moment of its start, scan and spool writes;
/// every twentieth run first gets a new set published and is killed at a random moment after it
/// connects (while it fetches, verifies and installs). After each kill the stored set verifies
/// and is one that was published; at the end, one daemon left running delivers every file
/// exactly once.
#[test]
#[ignore = "part of the soak: run by soak/run.sh (its --smoke in CI)"]
fn agent_daemon_killed_while_spooling_and_updating_loses_and_doubles_nothing() {
    let started = Instant::now();
    let n = iterations();
    let (mut rng, seed) = Rng::new();
    let mut live = Live::new(None, &[EICAR_SHA256], &[]);
    live.serve();
    let token = live.token(1);
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::enroll(&live, dir.path(), &dir.path().join("state"), &token, 1000);
    let id = live.store().agents().unwrap()[0].id.clone();
    let (mut files, mut updates, mut connected_kills) = (BTreeSet::new(), 0usize, 0usize);
    for i in 0..n {
        let name = format!("f{i:05}.com");
        agent.drop_file(&name);
        files.insert(name);
        let ctx = format!("seed {seed}, run {i}");
        if i % 20 == 19 {
            live.publish(&format!("u{i}.txt"), &[&rng.sha256_hex()]);
            updates += 1;
            agent.start(true);
            let rx = agent.stderr.as_ref().unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(l) if l.contains("connected to") => {
                        connected_kills += 1;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            sleep(rng.upto(Duration::from_millis(300)));
        } else {
            agent.start(false);
            sleep(rng.upto(Duration::from_millis(250)));
        }
        agent.kill();
        let held = status_version(&agent.state, &ctx).unwrap_or_else(|| panic!("{ctx}: no set"));
        assert!(
            (1..=live.published).contains(&held),
            "{ctx}: holds v{held}, published {}",
            live.published
        );
        assert!(
            names_with(&agent.state, SET_TEMP).len() <= 1,
            "{ctx}: temp files pile up"
        );
    }
    agent.start(false);
    let total = settle_rows(
        &live,
        &[(id, files.clone())],
        Duration::from_secs(120),
        &format!("seed {seed}: after {n} kills"),
    );
    let published = live.published;
    wait_for(Duration::from_secs(30), "the last set", || {
        (status_version(&agent.state, "end") == Some(published)).then_some(())
    });
    let (_, v) = agent_status(&agent.state);
    let dropped = v
        .as_ref()
        .map_or(0, |v| v["spool"]["dropped"].as_u64().unwrap_or(0));
    assert_eq!(dropped, 0, "the spool dropped sightings: {v:?}");
    summary(
        "agent-daemon-kill",
        started,
        &format!(
            "iterations {n}, kills {n} ({updates} during set updates, {connected_kills} after the link connected), \
             files {}, rows at the collector {} (count sum {total}), lost 0, doubled 0, set v{published}, seed {seed}",
            files.len(),
            files.len()
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// 2a. The collector killed while it ingests
// ---------------------------------------------------------------------------------------------

/// `picket-collector ingest` of a 10 000-line file SIGKILLed at random moments: after each kill
/// the store opens and holds the base indicators plus all of the file's or none. After a
/// complete ingest the data directory is put back to its base copy so the next file is new.
#[test]
#[ignore = "part of the soak: run by soak/run.sh (its --smoke in CI)"]
fn collector_killed_while_ingesting_keeps_all_of_a_file_or_none() {
    const LINES: usize = 10_000;
    let started = Instant::now();
    let n = iterations();
    let (mut rng, seed) = Rng::new();
    let live = Live::new(None, &[DECOY], &[]);
    let base_copy = live.tmp.path().join("base-copy");
    let copy = |from: &Path, to: &Path| {
        let st = Command::new("cp").args(["-a", s(from), s(to)]).status().unwrap();
        assert!(st.success());
    };
    copy(&live.data, &base_copy);
    let count = |ctx: &str| -> usize {
        let dir = picket_collector::datadir::DataDir::open(&live.data)
            .unwrap_or_else(|e| panic!("{ctx}: the data directory does not open: {e}"));
        let store = dir
            .store()
            .unwrap_or_else(|e| panic!("{ctx}: the store does not open: {e}"));
        store.candidates().unwrap().len()
    };
    let base = count("base");
    let file = live.tmp.path().join("big.txt");
    let new_file = |rng: &mut Rng| {
        let body: Vec<String> = (0..LINES).map(|_| rng.sha256_hex()).collect();
        fs::write(&file, body.join("\n")).unwrap();
    };
    new_file(&mut rng);
    let t = Instant::now();
    ok("picket-collector", &["ingest", "--data", live.data(), s(&file)]);
    let d = t.elapsed();
    assert_eq!(count("first"), base + LINES);
    let reset = || {
        fs::remove_dir_all(&live.data).unwrap();
        copy(&base_copy, &live.data);
    };
    reset();
    new_file(&mut rng);
    let (mut kills, mut none, mut all, mut finished, mut attempts) = (0, 0, 0, 0, 0);
    while kills < n {
        attempts += 1;
        assert!(attempts < 10 * n + 50, "too few ingests were hit by the kill");
        let delay = d.mul_f64(1.2 * rng.unit());
        let mut child = Command::new(bin("picket-collector"))
            .args(["ingest", "--data", live.data(), s(&file)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        sleep(delay);
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let killed = out.status.signal() == Some(libc::SIGKILL);
        let ctx = format!("seed {seed}, attempt {attempts}, killed after {delay:?}");
        assert!(
            killed || out.status.success(),
            "{ctx}: ingest failed on its own: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let held = count(&ctx);
        if held == base {
            none += 1;
        } else if held == base + LINES {
            if killed {
                all += 1;
            } else {
                finished += 1;
            }
            reset();
            new_file(&mut rng);
        } else {
            panic!(
                "{ctx}: the store holds {held} indicators: neither {base} nor {}",
                base + LINES
            );
        }
        kills += usize::from(killed);
    }
    assert!(none > 0, "no kill landed before the commit");
    summary(
        "collector-ingest-kill",
        started,
        &format!(
            "iterations {attempts}, kills {kills} (none of the file {none}, all of it {all}), finished before the kill \
             {finished}, {LINES} lines, ingest ~{:.0}ms, partial 0, seed {seed}",
            d.as_secs_f64() * 1e3
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// 2b. The collector killed while it commits sightings
// ---------------------------------------------------------------------------------------------

/// One simulated agent: sends numbered batches (one new sighting each) one at a time, sends the
/// unacknowledged one again after any failure, as the real spool does.
struct Reporter {
    agent: String,
    config: Arc<tokio_rustls::rustls::ClientConfig>,
    machine: [u8; 32],
    created: AtomicU64,
    acked: AtomicU64,
    duplicates: AtomicU64,
    reconnects: AtomicU64,
}

fn report_of(indicator: &str, agent: &str, seq: u64) -> ClientMsg {
    let seen = picket_e2e::unix_now() / 60 * 60 - 3_600;
    ClientMsg::Report(Batch {
        epoch: 7,
        seq,
        items: vec![SightingReport {
            indicator: indicator.into(),
            what: "sha256".into(),
            observed: ObservedKind::File,
            location: Some(format!("/soak/{agent}/{seq:08}")),
            first_seen: seen,
            last_seen: seen,
            count: 1,
            set_version: 1,
        }],
    })
}

async fn report_loop(r: Arc<Reporter>, addr: String, indicator: String, stop: Arc<AtomicBool>) {
    let mut pending: Option<(u64, ClientMsg)> = None;
    loop {
        let connect = link::connect(&addr, "127.0.0.1", r.config.clone(), r.machine);
        let mut session: Session = match tokio::time::timeout(Duration::from_secs(3), connect).await {
            Ok(Ok(s)) => s,
            _ => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        session.set_read_timeout(Duration::from_secs(5));
        loop {
            if pending.is_none() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let seq = r.created.fetch_add(1, Ordering::SeqCst) + 1;
                pending = Some((seq, report_of(&indicator, &r.agent, seq)));
            }
            let Some((seq, msg)) = &pending else { continue };
            if session.send(msg).await.is_err() {
                break;
            }
            let acked = loop {
                match session.recv().await {
                    Ok(ServerMsg::Ack {
                        epoch: 7,
                        seq: got,
                        duplicate,
                    }) if got == *seq => break Some(duplicate),
                    Ok(ServerMsg::Error(_)) | Err(_) => break None,
                    Ok(_) => {}
                }
            };
            match acked {
                Some(duplicate) => {
                    r.acked.fetch_add(1, Ordering::SeqCst);
                    r.duplicates.fetch_add(u64::from(duplicate), Ordering::SeqCst);
                    pending = None;
                }
                None => break,
            }
        }
        r.reconnects.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `serve` SIGKILLed at random moments while two agents stream sightings batches (each waits
/// for its Ack and sends the batch again after a failure): after the restarts every batch is
/// stored exactly once (one row per batch, count 1) and batches whose Ack the kill lost are
/// acknowledged as duplicates.
#[test]
#[ignore = "part of the soak: run by soak/run.sh (its --smoke in CI)"]
fn collector_killed_while_committing_sightings_stores_each_exactly_once() {
    let started = Instant::now();
    let n = iterations();
    let (mut rng, seed) = Rng::new();
    let mut live = Live::new(
        None,
        &[EICAR_SHA256],
        &[("messages_per_second", "100000"), ("message_burst", "100000")],
    );
    live.serve();
    let indicator = live.indicator_id(EICAR_SHA256);
    let token = live.token(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let reporters: Vec<Arc<Reporter>> = (0..2)
        .map(|i| {
            let token = EnrollToken::parse(&token).unwrap();
            let machine_id = format!("soak-machine-{i}");
            let e = rt
                .block_on(link::enroll(
                    &live.addr,
                    "127.0.0.1",
                    &token,
                    None,
                    &machine_id,
                    "default",
                ))
                .unwrap();
            let identity = tls::ClientIdentity {
                cert: e.certificate.clone().into(),
                key: e.key_pkcs8.clone().into(),
            };
            let ca = e.ca.clone().into();
            Arc::new(Reporter {
                agent: e.agent.clone(),
                config: tls::ca_config(&ca, Some(identity)).unwrap(),
                machine: wire::machine_hash(&e.public_key, &machine_id),
                created: AtomicU64::new(0),
                acked: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = reporters
        .iter()
        .map(|r| {
            rt.spawn(report_loop(
                r.clone(),
                live.addr.clone(),
                indicator.clone(),
                stop.clone(),
            ))
        })
        .collect();
    for _ in 0..n {
        sleep(Duration::from_millis(5) + rng.upto(Duration::from_millis(150)));
        live.kill_serve();
        live.serve();
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), t).await })
            .expect("the reporters finish within a minute of the last restart")
            .unwrap();
    }
    let expected: Vec<(String, BTreeSet<String>)> = reporters
        .iter()
        .map(|r| {
            let created = r.created.load(Ordering::SeqCst);
            assert_eq!(
                r.acked.load(Ordering::SeqCst),
                created,
                "every batch was acknowledged"
            );
            (
                r.agent.clone(),
                (1..=created).map(|q| format!("{q:08}")).collect(),
            )
        })
        .collect();
    let batches: u64 = reporters.iter().map(|r| r.created.load(Ordering::SeqCst)).sum();
    let total = settle_rows(&live, &expected, Duration::from_secs(10), &format!("seed {seed}"));
    assert_eq!(total, batches, "every row has count 1");
    let duplicates: u64 = reporters
        .iter()
        .map(|r| r.duplicates.load(Ordering::SeqCst))
        .sum();
    let reconnects: u64 = reporters
        .iter()
        .map(|r| r.reconnects.load(Ordering::SeqCst))
        .sum();
    summary(
        "collector-serve-kill",
        started,
        &format!(
            "iterations {n}, kills {n}, agents 2, batches {batches} stored once each ({duplicates} sent again after a \
             lost Ack, acknowledged as duplicates), reconnects {reconnects}, lost 0, doubled 0, seed {seed}"
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A full disk
// ---------------------------------------------------------------------------------------------

/// The agent's state directory on a 4 MiB tmpfs, the collector away: the spool stays within
/// `spool_batches`; with the disk full, a pushed set (3 MB) fails to install and the last good
/// set stays and verifies, and the daemon stays up; when space returns, the new set installs
/// and every sighting, including those made while the disk was full, reaches the collector once.
#[test]
#[ignore = "part of the soak: run by soak/run.sh (its --smoke in CI)"]
fn a_full_disk_under_the_agent_keeps_the_last_good_set_and_both_recover() {
    let started = Instant::now();
    let mut live = Live::new(None, &[EICAR_SHA256], &[]);
    live.serve();
    let token = live.token(1);
    let dir = tempfile::tempdir().unwrap();
    let fs_ = Tmpfs::mount(&dir.path().join("mnt"), "4m");
    let mut agent = Agent::enroll(&live, dir.path(), &fs_.path.join("state"), &token, 4);
    let id = live.store().agents().unwrap()[0].id.clone();
    assert_eq!(status_version(&agent.state, "enrolled"), Some(1));
    live.kill_serve();
    agent.start(true);
    wait_line(
        agent.stderr.as_ref().unwrap(),
        "scan done",
        Duration::from_secs(20),
    );
    // The spool's bound: ten sightings, each its own batch, with nobody to send them to.
    let mut files = BTreeSet::new();
    for i in 0..10 {
        let name = format!("s{i:02}.com");
        agent.drop_file(&name);
        files.insert(name);
        sleep(Duration::from_millis(600));
    }
    let spool_dir = agent.state.join("spool");
    let spool = wait_for(Duration::from_secs(10), "the spool's bound", || {
        let (_, v) = agent_status(&agent.state);
        let v = v?;
        let batches = fs::read_dir(&spool_dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.ends_with(".pkt") && n.contains('-') && !n.starts_with('.')
            })
            .count();
        let dropped = v["spool"]["dropped"].as_u64()?;
        (dropped > 0 && batches <= 4).then_some((batches, dropped, v["spool"]["depth"].as_u64()))
    });
    assert!(spool.2.is_some_and(|d| d <= 4), "status depth {:?}", spool.2);

    // The disk fills; three more files are met.
    let filled = fs_.fill();
    for i in 0..3 {
        let name = format!("full{i}.com");
        agent.drop_file(&name);
        files.insert(name);
    }
    sleep(Duration::from_secs(2));
    agent.assert_alive("the disk filled");
    // A new set of 30 000 indicators, which cannot fit in the space acks free.
    let big: Vec<String> = (0..30_000u64)
        .map(|i| format!("{:064x}", 0x50a4_0000_0000u64 | i))
        .collect();
    live.publish("big.txt", &big.iter().map(String::as_str).collect::<Vec<_>>());
    live.serve();
    // The link fetches the new set and fails to install it for want of space.
    let failure = wait_line(
        agent.stderr.as_ref().unwrap(),
        "installed one stays",
        Duration::from_secs(90),
    );
    // Regression (soak finding): this was logged as "refused", as if the set were bad.
    assert!(
        failure.contains("the set could not be installed") && failure.contains("No space left"),
        "{failure}"
    );
    agent.assert_alive("the install failed");
    assert_eq!(
        status_version(&agent.state, "disk full"),
        Some(1),
        "the last good set stays"
    );
    let (_, v) = agent_status(&agent.state);
    assert_eq!(v.as_ref().unwrap()["fresh"], true, "{v:?}");
    assert!(
        names_with(&agent.state, SET_TEMP).is_empty(),
        "a failed install leaves no temp file"
    );

    // Space returns: the set installs and every sighting arrives once.
    fs_.free();
    let published = live.published;
    wait_for(
        Duration::from_secs(60),
        "the new set after space returned",
        || (status_version(&agent.state, "space back") == Some(published)).then_some(()),
    );
    let total = settle_rows(
        &live,
        &[(id, files.clone())],
        Duration::from_secs(60),
        "after space returned",
    );
    agent.assert_alive("the end");

    // The collector's data directory on a full disk: ingest fails with a clear error, and
    // nothing already stored is lost; with space back the same ingest succeeds.
    let cfs = Tmpfs::mount(&dir.path().join("cmnt"), "64m");
    let mut c = Live::new(Some(&cfs.path), &[DECOY], &[]);
    c.publish(
        "base.txt",
        &big[..1000].iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let base = c.store().candidates().unwrap().len();
    let many: Vec<String> = (0..30_000u64)
        .map(|i| format!("{:064x}", 0xc011_0000_0000u64 | i))
        .collect();
    let file = c.tmp.path().join("many.txt");
    fs::write(&file, many.join("\n")).unwrap();
    cfs.fill();
    let out = run("picket-collector", &["ingest", "--data", c.data(), s(&file)]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "ingest on a full disk succeeded?");
    // The error names the database and says the disk is full. Regression (soak finding): it
    // said only "disk I/O error", SQLite's word when the write-ahead log cannot grow.
    assert!(
        err.contains(c.data()) && err.contains("the disk is full"),
        "the error names the database and the full disk: {err}"
    );
    assert_eq!(out.status.code(), Some(2), "{err}");
    cfs.free();
    assert_eq!(
        c.store().candidates().unwrap().len(),
        base,
        "nothing stored was lost"
    );
    ok("picket-collector", &["ingest", "--data", c.data(), s(&file)]);
    assert_eq!(c.store().candidates().unwrap().len(), base + many.len());
    summary(
        "full-disk",
        started,
        &format!(
            "agent: 4 MiB tmpfs, spool bound 4 held {} batch(es) with {} sighting(s) dropped by the bound, \
             filled {} KiB, install of v{published} failed ({}), v1 kept and verifying, v{published} installed \
             after space returned, {} files delivered once (count sum {total}); collector: ingest on a full \
             64 MiB tmpfs refused ({}), {base} indicators kept, ingest after space returned: {}",
            spool.0,
            spool.1,
            filled / 1024,
            failure.trim().chars().take(200).collect::<String>(),
            files.len(),
            err.trim().lines().last().unwrap_or_default().chars().take(240).collect::<String>(),
            base + many.len()
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Clock jumps
// ---------------------------------------------------------------------------------------------

/// libfaketime's preload library (Debian's `faketime` package), or a loud failure.
fn faketime_lib() -> PathBuf {
    let found = fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!(
            "\n\n*** THE CLOCK-JUMP CHECK CANNOT RUN: libfaketime is missing. Install Debian's `faketime` \
             package (soak/run.sh does). Not skipped: failed.\n"
        )
    })
}

/// A command for `name` run under a clock moved by `offset` (libfaketime syntax: `+1y`).
fn faked(name: &str, offset: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin(name));
    cmd.args(args)
        .env("LD_PRELOAD", faketime_lib())
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    cmd
}

fn faked_out(name: &str, offset: &str, args: &[&str]) -> Output {
    faked(name, offset, args).output().unwrap()
}

/// The agent's status and imports under clocks a year ahead and a year behind, and a running
/// daemon whose clock jumps a year forward then a year back.
#[test]
#[ignore = "part of the soak: run by soak/run.sh (its --smoke in CI)"]
fn clock_jumps_of_a_year_keep_freeze_detection_right_and_crash_nothing() {
    let started = Instant::now();
    faketime_lib();
    let mut live = Live::new(None, &[DECOY], &[]);
    let export = |live: &Live, name: &str, offset: &str| -> PathBuf {
        let p = live.tmp.path().join(name);
        let out = faked_out(
            "picket-collector",
            offset,
            &["export-set", "--data", live.data(), "--out", s(&p)],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        p
    };
    let v1 = export(&live, "v1.set", "+0");
    let state = live.tmp.path().join("state");
    let anchor = live.data.join("root.pub");
    picket_e2e::import_ok(&state, &anchor, &v1);
    let status_at = |offset: &str| -> serde_json::Value {
        let out = faked_out(
            "picket-agent",
            offset,
            &["status", "--state", s(&state), "--json"],
        );
        assert!(
            out.status.success(),
            "status with the clock at {offset} fails: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap()
    };
    let import_at = |offset: &str, file: &Path| -> Output {
        faked_out(
            "picket-agent",
            offset,
            &["import-set", "--state", s(&state), "--trust", s(&anchor), s(file)],
        )
    };
    // A year ahead: stale, and said so; a fresh set is refused as expired; nothing crashes.
    let ahead = status_at("+1y");
    assert_eq!(ahead["fresh"], false, "a year ahead the set is stale: {ahead}");
    let text = faked_out("picket-agent", "+1y", &["status", "--state", s(&state)]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("stale"), "{text}");
    live.publish("v2.txt", &[&"2".repeat(64)]);
    let v2 = export(&live, "v2.set", "+0");
    let out = import_at("+1y", &v2);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && out.status.signal().is_none(), "{out:?}");
    assert!(err.contains("expired"), "a year ahead, v2 is expired: {err}");
    assert_eq!(status_at("+0")["set_version"], 1);
    // A year behind: the clock is not taken below the newest `created` verified. The set stays
    // fresh (not "not yet valid"), and a set that expired two days ago (published with the
    // collector's clock three days back) is still refused, though it would look valid a year ago.
    let behind = status_at("-1y");
    assert_eq!(
        behind["fresh"], true,
        "a year behind, the set is what it was: {behind}"
    );
    let v3 = live.tmp.path().join("v3.txt");
    fs::write(&v3, "3".repeat(64)).unwrap();
    ok("picket-collector", &["ingest", "--data", live.data(), s(&v3)]);
    let out = faked_out(
        "picket-collector",
        "-3d",
        &["publish", "--data", live.data(), "--force"],
    );
    assert!(
        out.status.success(),
        "publishing 3 days back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old = export(&live, "v3-old.set", "-3d");
    let out = import_at("-1y", &old);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && out.status.signal().is_none(),
        "an expired set was installed with the clock a year behind: {out:?}"
    );
    assert!(err.contains("expired"), "{err}");
    assert_eq!(status_at("+0")["set_version"], 1);
    // Back to the real clock, v2 installs.
    picket_e2e::import_ok(&state, &anchor, &v2);

    // A running daemon whose clock jumps a year forward, then a year back, then returns.
    let root = live.tmp.path().join("watched");
    fs::create_dir_all(&root).unwrap();
    let config = live.tmp.path().join("agent.toml");
    fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[scan]\nroots = [{:?}]\nrescan_interval = \"1s\"\n[processes]\nenabled = false\n\
             [connections]\nenabled = false\n",
            s(&state),
            s(&root)
        ),
    )
    .unwrap();
    let clock = live.tmp.path().join("faketime.rc");
    fs::write(&clock, "+0\n").unwrap();
    let mut cmd = faked("picket-agent", "+0", &["run", "--config", s(&config)]);
    cmd.env_remove("FAKETIME")
        .env("FAKETIME_TIMESTAMP_FILE", &clock)
        .env("FAKETIME_NO_CACHE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let log = lines(child.stderr.take().unwrap());
    let mut daemon = Child(child);
    wait_line(&log, "scan done", Duration::from_secs(20));
    let mut jumps = 0;
    for offset in ["+1y", "-1y", "+1y", "+0"] {
        fs::write(&clock, format!("{offset}\n")).unwrap();
        jumps += 1;
        // Two rescans under the new clock.
        wait_line(&log, "scan done", Duration::from_secs(20));
        wait_line(&log, "scan done", Duration::from_secs(20));
        if let Some(st) = daemon.0.try_wait().unwrap() {
            panic!("the daemon exited after its clock jumped to {offset}: {st:?}");
        }
        let v = status_at(offset);
        assert_eq!(v["set_version"], 2, "{v}");
        assert_eq!(v["fresh"], offset != "+1y", "clock {offset}: {v}");
    }
    // It still matches, and stops cleanly.
    fs::write(root.join("late.com"), EICAR).unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        if let Some(st) = daemon.0.try_wait().unwrap() {
            break st.code();
        }
        assert!(Instant::now() < deadline, "the daemon did not stop on SIGTERM");
        sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    summary(
        "clock-jump",
        started,
        &format!(
            "status at +1y stale, import at +1y refused as expired, status at -1y fresh (clock floor), \
             a set expired 2 days ago refused at -1y, daemon survived {jumps} jumps (+1y, -1y, +1y, back) \
             and stopped with exit 0, crashes 0"
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Collector outages while agents keep matching
// ---------------------------------------------------------------------------------------------

/// Two enrolled daemons keep running and meeting files while `serve` is SIGKILLed and restarted
/// several times (files met during each outage and between them): afterwards every file is at
/// the collector exactly once.
#[test]
#[ignore = "part of the soak: run by soak/run.sh (its --smoke in CI)"]
fn sightings_made_across_several_collector_outages_arrive_exactly_once() {
    let started = Instant::now();
    let outages = (iterations() / 200).clamp(3, 5);
    let mut live = Live::new(None, &[EICAR_SHA256], &[]);
    live.serve();
    let token = live.token(2);
    let dir = tempfile::tempdir().unwrap();
    let mut agents: Vec<Agent> = (0..2)
        .map(|i| {
            let d = dir.path().join(format!("agent{i}"));
            fs::create_dir_all(&d).unwrap();
            Agent::enroll(&live, &d, &d.join("state"), &token, 1000)
        })
        .collect();
    // Which id is which agent: enrolment writes it into the agent's agent.toml.
    let ids: Vec<String> = live.store().agents().unwrap().into_iter().map(|a| a.id).collect();
    for a in &mut agents {
        a.start(false);
    }
    let mut files: Vec<BTreeSet<String>> = vec![BTreeSet::new(), BTreeSet::new()];
    let mut down_time = Duration::ZERO;
    for o in 0..outages {
        for (i, a) in agents.iter().enumerate() {
            let name = format!("up{o}.com");
            a.drop_file(&name);
            files[i].insert(name);
        }
        sleep(Duration::from_secs(1));
        let down = Instant::now();
        live.kill_serve();
        for k in 0..3 {
            for (i, a) in agents.iter().enumerate() {
                let name = format!("down{o}-{k}.com");
                a.drop_file(&name);
                files[i].insert(name);
            }
            sleep(Duration::from_millis(500));
        }
        live.serve();
        down_time += down.elapsed();
        for a in &mut agents {
            a.assert_alive(&format!("outage {o}"));
        }
    }
    let expected: Vec<(String, BTreeSet<String>)> = agents
        .iter()
        .zip(&files)
        .map(|(a, f)| {
            let text = fs::read_to_string(a.state.join("agent.toml")).unwrap();
            let own = ids
                .iter()
                .find(|id| text.contains(&format!("for agent {id} ")))
                .cloned()
                .unwrap_or_else(|| panic!("the agent id of {}", a.state.display()));
            (own, f.clone())
        })
        .collect();
    let total = settle_rows(&live, &expected, Duration::from_secs(300), "after the outages");
    let per_agent = files[0].len();
    summary(
        "collector-outage",
        started,
        &format!(
            "outages {outages} ({:.1}s down in all), agents 2, files {} ({per_agent} per agent, {} met while the \
             collector was down), rows {} (count sum {total}), lost 0, doubled 0",
            down_time.as_secs_f64(),
            2 * per_agent,
            2 * 3 * outages,
            2 * per_agent
        ),
    );
}
