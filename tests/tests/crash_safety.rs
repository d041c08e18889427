//! Crash safety of `picket-agent import-set`, with the real binary and real files: the process is
//! SIGKILLed at random moments while it replaces one set with a newer one, and after every kill
//! `DIR/set.pkt` must still re-verify as the old set or the new one — never torn, never empty,
//! never missing. This pins the architecture invariant stated in `agent/src/store.rs`.
//!
//! SIGKILL tests a crash of the process, not of the machine: the page cache survives it, so this
//! checks the temp-file-then-rename protocol and not the fsyncs that make it survive power loss.
//!
//! Set `PICKET_CRASH_SEED=<n>` to replay a run; the seed is printed in the summary line.

#![forbid(unsafe_code)]

use std::fs;
use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use picket_e2e::{bin, ok, s, Collector};
use picket_proto::{Limits, Trusted};

/// How many times an import is killed while it runs (imports that finish before the signal
/// lands are counted apart and do not count towards this).
const KILLS: usize = 200;
/// Indicators in every version: about 2.5 MB of snapshot, so one import takes measurable time.
const BULK: usize = 25_000;
/// Set versions exported up front; the agent walks v1 -> v2 -> ... -> vN, then starts over.
const VERSIONS: usize = 8;
/// The prefix of the temporary file `write_atomically` renames over `set.pkt`.
const TEMP_PREFIX: &str = ".set.pkt.tmp-";

/// splitmix64: enough randomness for kill delays and fake digests, and replayable from a seed.
struct Rng(u64);

impl Rng {
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

    /// A random SHA-256-shaped hex digest.
    fn sha256_hex(&mut self) -> String {
        (0..4).map(|_| format!("{:016x}", self.next())).collect()
    }
}

fn seed() -> u64 {
    match std::env::var("PICKET_CRASH_SEED") {
        Ok(v) => v.parse().expect("PICKET_CRASH_SEED is a u64"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos() as u64,
    }
}

/// Reads `set.pkt` and says which set it is.
///
/// Every byte image is checked with `Trusted::decode_stored` the first time it is seen; after
/// that, a file byte-for-byte equal to an image that verified is that version. Re-decoding an
/// identical file 200 times would only slow the test down.
#[derive(Debug, Default)]
struct Stored {
    verified: Vec<(u64, Vec<u8>)>,
}

impl Stored {
    /// The installed set's version; `None` when there is no `set.pkt`. Panics if the file is
    /// there but does not verify (torn, empty, garbage).
    fn version(&mut self, state: &Path) -> Option<u64> {
        let path = state.join("set.pkt");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => panic!("reading {}: {e}", path.display()),
        };
        if let Some((v, _)) = self.verified.iter().find(|(_, image)| *image == bytes) {
            return Some(*v);
        }
        let v = Trusted::decode_stored(&bytes, &Limits::default())
            .unwrap_or_else(|e| panic!("{} ({} bytes) does not verify: {e}", path.display(), bytes.len()))
            .manifest()
            .version;
        self.verified.push((v, bytes));
        Some(v)
    }
}

/// Names of temporary set files left in the state directory.
fn temp_files(state: &Path) -> Vec<String> {
    fs::read_dir(state)
        .expect("reading the state directory")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.starts_with(TEMP_PREFIX))
        .collect()
}

/// Imports `file` to completion; returns how long it took.
fn import(state: &Path, anchor: &Path, file: &Path) -> Duration {
    let start = Instant::now();
    ok(
        "picket-agent",
        &["import-set", "--state", s(state), "--trust", s(anchor), s(file)],
    );
    start.elapsed()
}

/// Where a kill landed, judged from what it left on disk.
#[derive(Debug, Default)]
struct Tally {
    /// Old set kept, no temporary file of this process: killed before it began writing.
    before_write: usize,
    /// Old set kept, this process's temporary file left: killed while writing or fsyncing the
    /// temporary file, before the rename.
    before_rename: usize,
    /// New set installed and the process was killed: after the rename (directory fsync, exit).
    after_rename: usize,
    /// The import finished before the signal was sent.
    finished: usize,
}

impl Tally {
    fn killed(&self) -> usize {
        self.before_write + self.before_rename + self.after_rename
    }
}

#[test]
fn sigkill_during_import_leaves_the_old_or_the_new_set() {
    let started = Instant::now();
    let seed = seed();
    let mut rng = Rng(seed);

    // One collector, VERSIONS full set files of about BULK indicators each; each version adds
    // one indicator so that every import is a real old -> new transition of similar size.
    let c = Collector::init();
    let bulk: Vec<String> = (0..BULK).map(|_| rng.sha256_hex()).collect();
    let bulk: Vec<&str> = bulk.iter().map(String::as_str).collect();
    c.ingest_list("bulk.txt", &bulk);
    let files: Vec<PathBuf> = (1..=VERSIONS)
        .map(|v| {
            c.ingest_list(&format!("extra-{v}.txt"), &[&rng.sha256_hex()]);
            c.publish(&[]);
            c.export(&format!("v{v}.set"))
        })
        .collect();
    let anchor = c.anchor();
    let state = c.tmp.path().join("agent-state");
    let mut stored = Stored::default();

    // A clean v1, then two timed transitions: their mean is the import duration D.
    import(&state, &anchor, &files[0]);
    assert_eq!(stored.version(&state), Some(1));
    let d = (import(&state, &anchor, &files[1]) + import(&state, &anchor, &files[2])) / 2;
    assert_eq!(stored.version(&state), Some(3));
    let mut installed = 3u64;
    let setup = started.elapsed();

    let agent = bin("picket-agent");
    let mut tally = Tally::default();
    let mut resets = 0;
    let mut max_temps = 0;
    let mut attempt = 0;
    while tally.killed() < KILLS {
        attempt += 1;
        let next = installed + 1;
        let file = &files[installed as usize];
        let delay = d.mul_f64(1.2 * rng.unit());
        let mut child = Command::new(&agent)
            .args(["import-set", "--state", s(&state), "--trust", s(&anchor), s(file)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning picket-agent");
        let pid = child.id();
        sleep(delay);
        // Until it is waited for, an exited child is a zombie and killing it still succeeds.
        child.kill().expect("sending SIGKILL");
        let out = child.wait_with_output().expect("waiting for picket-agent");
        let killed = out.status.signal() == Some(libc::SIGKILL);
        assert!(
            killed || out.status.success(),
            "attempt {attempt}: import of v{next} failed on its own ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );

        let ctx = format!(
            "attempt {attempt}, killed after {delay:?} (seed {seed}), importing v{next} over v{installed}"
        );
        let now = stored
            .version(&state)
            .unwrap_or_else(|| panic!("{ctx}: set.pkt is missing"));
        let own_temp = state.join(format!("{TEMP_PREFIX}{pid}")).exists();
        match (now, killed) {
            (v, true) if v == installed && !own_temp => tally.before_write += 1,
            (v, true) if v == installed => tally.before_rename += 1,
            (v, true) if v == next && !own_temp => tally.after_rename += 1,
            (v, false) if v == next && !own_temp => tally.finished += 1,
            _ => panic!("{ctx}: stored version {now}, killed {killed}, own temp file left {own_temp}"),
        }
        let temps = temp_files(&state);
        max_temps = max_temps.max(temps.len());
        // Each import cleans up after the ones killed before it, so at most the one just killed
        // has left a temporary file behind. Without that, a crash-looping agent fills its disk.
        assert!(temps.len() <= 1, "{ctx}: temporary files pile up: {temps:?}");

        installed = now;
        if installed as usize == VERSIONS {
            // Out of newer files: start over from an empty state with v1.
            fs::remove_file(state.join("set.pkt")).expect("removing set.pkt");
            import(&state, &anchor, &files[0]);
            assert_eq!(stored.version(&state), Some(1));
            installed = 1;
            resets += 1;
        }
    }

    // One more import, which completes: it leaves no temporary file at all, and the agent
    // reports the version that re-verifies from disk.
    let last = &files[installed as usize - 1];
    import(&state, &anchor, last);
    let temps = temp_files(&state);
    assert!(
        temps.is_empty(),
        "temporary files left after a completed import: {temps:?}"
    );
    let status = ok("picket-agent", &["status", "--state", s(&state), "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status --json is JSON");
    assert_eq!(status["set_version"], installed);
    assert_eq!(stored.version(&state), Some(installed));

    let old = tally.before_write + tally.before_rename;
    let new = tally.after_rename + tally.finished;
    assert_eq!(old + new, attempt);
    assert!(
        old > 0 && new > 0,
        "the kills never straddled an import: {tally:?}"
    );
    println!(
        "crash_safety: seed {seed}, import ~{d:?}, {attempt} imports, {KILLS} killed: old {old} (before write {}, \
         before rename {}), new {new} (after rename {}, finished first {}), {resets} restarts from v1, \
         at most {max_temps} temp file(s) at once; setup {setup:?}, total {:?}",
        tally.before_write,
        tally.before_rename,
        tally.after_rename,
        tally.finished,
        started.elapsed()
    );
}
