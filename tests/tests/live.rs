//! The live loop with the real binaries on loopback: enrolment, sets pushed to connected agents,
//! sightings reported upstream exactly once through collector restarts and agent kills, and the
//! refusals an attacker meets (revoked agents, expired and used-up tokens).

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use picket_e2e::{bin, lines, ok, run, s, wait_line, Child, Collector, Serve, EICAR, EICAR_SHA256};

/// A collector with its root key moved offline and `serve` running on a loopback port.
struct Live {
    c: Collector,
    serve: Option<Serve>,
    addr: String,
}

impl Live {
    /// Inits a collector, publishes a first set holding `first`, and starts serving.
    fn start(first: &[&str]) -> Live {
        Live::start_with(first, &[])
    }

    /// As [`Live::start`], with `[channel]` keys of picket.toml set to other values first.
    fn start_with(first: &[&str], channel: &[(&str, &str)]) -> Live {
        let c = Collector::init();
        let config = c.data.join("picket.toml");
        let mut text = fs::read_to_string(&config).unwrap();
        for (key, value) in channel {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{key} = ")))
                .unwrap_or_else(|| panic!("no {key} in picket.toml"))
                .to_owned();
            text = text.replace(&line, &format!("{key} = {value}"));
        }
        fs::write(&config, text).unwrap();
        fs::rename(c.root_key(), c.tmp.path().join("offline.key")).unwrap();
        c.ingest_list("first.txt", first);
        c.publish(&[]);
        let mut live = Live {
            c,
            serve: None,
            addr: "127.0.0.1:0".into(),
        };
        live.serve();
        live
    }

    /// Starts `serve` on the address it had (port 0 the first time) and waits until it listens.
    fn serve(&mut self) {
        let serve = Serve::start(self.c.data(), &self.addr, &[]);
        self.addr = serve.channel.clone();
        self.serve = Some(serve);
    }

    /// Kills `serve` (SIGKILL: no goodbye to anyone).
    fn kill_serve(&mut self) {
        self.serve = None;
    }

    fn token(&self, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "--data", self.c.data()];
        args.extend_from_slice(extra);
        let out = ok("picket-collector", &args);
        assert_eq!(out.lines().count(), 1, "the token alone: {out}");
        out.trim().to_owned()
    }

    /// Publishes a new set holding `lines` on top of what is there.
    fn publish(&self, name: &str, lines: &[&str]) {
        self.c.ingest_list(name, lines);
        self.c.publish(&[]);
    }

    /// The aggregated sightings, one JSON object per indicator.
    fn sightings(&self) -> Vec<serde_json::Value> {
        let out = ok(
            "picket-collector",
            &["sightings", "--data", self.c.data(), "--json"],
        );
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn agents(&self) -> Vec<serde_json::Value> {
        let out = ok(
            "picket-collector",
            &["agents", "list", "--data", self.c.data(), "--json"],
        );
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Waits (bounded) until `pred` holds of the sightings; returns them.
    fn wait_sightings(
        &self,
        limit: Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.sightings();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "sightings not as expected within {limit:?}: {got:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// An enrolled agent: its state directory, the root it scans, and (when running) the daemon.
struct Agent {
    state: PathBuf,
    root: PathBuf,
    daemon: Option<Child>,
    stderr: Option<Receiver<String>>,
}

impl Agent {
    fn enroll_args(live: &Live, dir: &Path, token: &str) -> (PathBuf, PathBuf, Vec<String>) {
        let state = dir.join("state");
        let root = dir.join("files");
        fs::create_dir_all(&root).unwrap();
        let token_file = dir.join("token");
        fs::write(&token_file, token).unwrap();
        let machine = dir.join("machine-id");
        if !machine.exists() {
            fs::write(&machine, format!("{:032x}\n", rand_u128(dir))).unwrap();
        }
        let args = vec![
            "enroll".into(),
            "--state".into(),
            s(&state).into(),
            "--collector".into(),
            live.addr.clone(),
            "--token-file".into(),
            s(&token_file).into(),
            "--trust".into(),
            s(&live.c.anchor()).into(),
            "--root".into(),
            s(&root).into(),
            "--machine-id-file".into(),
            s(&machine).into(),
        ];
        (state, root, args)
    }

    /// Enrols an agent under `dir` (no `--ca`: the token's pin protects the first contact).
    fn enroll(live: &Live, dir: &Path, token: &str) -> Agent {
        let (state, root, args) = Agent::enroll_args(live, dir, token);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok("picket-agent", &args);
        assert!(state.join("agent.toml").exists());
        Agent {
            state,
            root,
            daemon: None,
            stderr: None,
        }
    }

    fn start(&mut self) {
        let mut child = Command::new(bin("picket-agent"))
            .args(["run", "--config", s(&self.state.join("agent.toml"))])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.stderr = Some(lines(child.stderr.take().unwrap()));
        self.daemon = Some(Child(child));
    }

    fn kill(&mut self) {
        self.daemon = None;
        self.stderr = None;
    }

    fn wait_stderr(&self, needle: &str, limit: Duration) -> String {
        wait_line(self.stderr.as_ref().unwrap(), needle, limit)
    }

    /// The set version the agent has installed, from `status --json`.
    fn set_version(&self) -> Option<u64> {
        let out = run("picket-agent", &["status", "--state", s(&self.state), "--json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
        v["set_version"].as_u64()
    }

    fn wait_version(&self, version: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.set_version() != Some(version) {
            assert!(
                Instant::now() < deadline,
                "agent {} did not reach set version {version} within {limit:?} (has {:?})",
                self.state.display(),
                self.set_version()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Distinct machine ids for the test's agents, without a random number crate.
fn rand_u128(dir: &Path) -> u128 {
    let h = picket_proto::sha256(dir.as_os_str().as_encoded_bytes());
    u128::from_be_bytes(h[..16].try_into().unwrap())
}

/// A SHA-256 nobody will ever match (the first set must hold something).
const DECOY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

/// The (hosts, count) of the one indicator sighted (only the EICAR file is ever met).
fn eicar_count(sightings: &[serde_json::Value]) -> Option<(u64, u64)> {
    assert!(
        sightings.len() <= 1,
        "only one indicator is ever met: {sightings:?}"
    );
    let eicar = sightings.first()?;
    Some((eicar["hosts"].as_u64()?, eicar["count"].as_u64()?))
}

#[test]
fn three_agents_get_a_new_set_in_seconds_and_one_sighting_reaches_the_collector() {
    let live = Live::start(&[DECOY]);
    let token = live.token(&["--uses", "3"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut agents: Vec<Agent> = (0..3)
        .map(|i| {
            let dir = tmp.path().join(format!("agent{i}"));
            fs::create_dir_all(&dir).unwrap();
            Agent::enroll(&live, &dir, &token)
        })
        .collect();
    assert_eq!(live.agents().len(), 3);
    for a in &mut agents {
        a.start();
    }
    for a in &agents {
        a.wait_version(1, Duration::from_secs(20));
    }
    // A new indicator: every connected agent has it within seconds.
    let published = Instant::now();
    live.publish("eicar.txt", &[EICAR_SHA256]);
    for a in &agents {
        a.wait_version(2, Duration::from_secs(10));
    }
    let spread = published.elapsed();
    // One agent meets the file; its sighting is in the collector within 10 s.
    let dropped = Instant::now();
    fs::write(agents[1].root.join("eicar.com"), EICAR).unwrap();
    let got = live.wait_sightings(Duration::from_secs(10), |v| eicar_count(v).is_some());
    let (hosts, count) = eicar_count(&got).unwrap();
    assert_eq!((hosts, count), (1, 1), "{got:?}");
    eprintln!(
        "set v2 on 3 agents {:.2}s after publish returned; sighting at the collector {:.2}s after the file appeared",
        spread.as_secs_f64(),
        dropped.elapsed().as_secs_f64()
    );
}

#[test]
fn sightings_made_while_the_collector_is_down_arrive_exactly_once() {
    let mut live = Live::start(&[EICAR_SHA256]);
    let token = live.token(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = Agent::enroll(&live, tmp.path(), &token);
    agent.start();
    agent.wait_version(1, Duration::from_secs(20));
    live.kill_serve();
    for name in ["a.com", "b.com", "c.com"] {
        fs::write(agent.root.join(name), EICAR).unwrap();
    }
    // The daemon sees them and spools them while the collector is away.
    std::thread::sleep(Duration::from_secs(3));
    live.serve();
    let got = live.wait_sightings(Duration::from_secs(30), |v| {
        eicar_count(v).is_some_and(|(_, count)| count >= 3)
    });
    assert_eq!(eicar_count(&got), Some((1, 3)), "{got:?}");
    // Nothing arrives twice, however long we wait for a resend.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(eicar_count(&live.sightings()), Some((1, 3)));
}

#[test]
fn revoked_agents_and_expired_or_used_up_tokens_are_refused() {
    let live = Live::start(&[DECOY]);
    let tmp = tempfile::tempdir().unwrap();
    // A used-up token: the second enrolment with a one-use token fails.
    let once = live.token(&["--uses", "1"]);
    let mut first = Agent::enroll(&live, &tmp.path().join("a"), &once);
    let (_, _, args) = Agent::enroll_args(&live, &tmp.path().join("b"), &once);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("picket-agent", &args);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("used up"), "{err}");
    let secret = once.split('-').nth(2).unwrap();
    assert!(!err.contains(secret), "the secret is never printed: {err}");
    // An expired token.
    let short = live.token(&["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let (_, _, args) = Agent::enroll_args(&live, &tmp.path().join("c"), &short);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("picket-agent", &args);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expired"), "{err}");
    // A revoked agent: its live session ends at once and it is refused from then on.
    first.start();
    first.wait_version(1, Duration::from_secs(20));
    let id = live.agents()[0]["id"].as_str().unwrap().to_owned();
    ok(
        "picket-collector",
        &["agents", "revoke", "--data", live.c.data(), &id],
    );
    first.wait_stderr("revoked", Duration::from_secs(5));
    let listed = live.agents();
    assert!(listed[0]["revoked"].is_number(), "{listed:?}");
}

#[test]
fn an_agent_killed_while_it_applies_updates_restarts_on_a_valid_set_and_catches_up() {
    let live = Live::start(&[DECOY]);
    let token = live.token(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = Agent::enroll(&live, tmp.path(), &token);
    agent.start();
    agent.wait_version(1, Duration::from_secs(20));
    // Each round publishes a bigger set and kills the agent at a different moment of fetching,
    // verifying and installing it. Whatever the moment, the installed set verifies and is the
    // old version or the new one.
    let mut version = 1;
    for (round, kill_after_ms) in [150u64, 400, 700, 1000].into_iter().enumerate() {
        let lines: Vec<String> = (0..20_000u64)
            .map(|i| format!("{:064x}", (round as u64 + 1) << 32 | i))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        live.c.ingest_list(&format!("round{round}.txt"), &refs);
        live.c.publish(&[]);
        version += 1;
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        agent.kill();
        let out = run("picket-agent", &["status", "--state", s(&agent.state), "--json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "after a kill {kill_after_ms} ms into version {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `status` re-verifies the stored set: it is whole, and never ahead of what was published.
        let held = agent.set_version().expect("a verified set is installed");
        assert!((1..=version).contains(&held), "holds {held} of {version}");
        agent.start();
    }
    agent.wait_version(version, Duration::from_secs(30));
}

/// Copies a directory tree (files and directories only), keeping modes.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    fs::set_permissions(to, fs::metadata(from).unwrap().permissions()).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn an_agent_restored_from_a_vm_snapshot_loses_no_sightings() {
    let live = Live::start(&[EICAR_SHA256]);
    let token = live.token(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = Agent::enroll(&live, tmp.path(), &token);
    agent.start();
    agent.wait_version(1, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while spool_epoch(&agent.state).is_none() {
        assert!(Instant::now() < deadline, "the daemon never wrote its status");
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.kill();
    // The snapshot: the whole state directory as it is now, spool numbering included.
    let snapshot = tmp.path().join("snapshot");
    copy_tree(&agent.state, &snapshot);
    // After the snapshot the host meets a.com; its sighting is reported and acknowledged.
    fs::write(agent.root.join("a.com"), EICAR).unwrap();
    agent.start();
    live.wait_sightings(Duration::from_secs(20), |v| {
        eicar_count(v).is_some_and(|(_, count)| count == 1)
    });
    agent.kill();
    // The VM is rolled back: the spool numbers the next batch exactly as it numbered a.com's,
    // but with other content (b.com). The collector must not drop it as a duplicate.
    fs::remove_file(agent.root.join("a.com")).unwrap();
    fs::remove_dir_all(&agent.state).unwrap();
    copy_tree(&snapshot, &agent.state);
    fs::write(agent.root.join("b.com"), EICAR).unwrap();
    agent.start();
    let got = live.wait_sightings(Duration::from_secs(20), |v| {
        eicar_count(v).is_some_and(|(_, count)| count == 2)
    });
    assert_eq!(eicar_count(&got), Some((1, 2)), "{got:?}");
    // It got there because the agent renumbered under a new epoch when the collector said the
    // number was taken by other content.
    let before = spool_epoch(&snapshot);
    assert!(before.is_some(), "the snapshot's status names its spool epoch");
    let deadline = Instant::now() + Duration::from_secs(10);
    while spool_epoch(&agent.state) == before {
        assert!(Instant::now() < deadline, "the spool kept epoch {before:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The spool epoch `status --json` reports for a state directory.
fn spool_epoch(state: &Path) -> Option<String> {
    let out = run("picket-agent", &["status", "--state", s(state), "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
    v["spool"]["epoch"].as_str().map(str::to_owned)
}

#[test]
fn an_agent_offline_through_more_versions_than_deltas_are_kept_catches_up() {
    let live = Live::start(&[DECOY]);
    let token = live.token(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = Agent::enroll(&live, tmp.path(), &token);
    agent.start();
    agent.wait_version(1, Duration::from_secs(20));
    agent.kill();
    // Ten versions while it is away: deltas are kept from the last eight only, so it needs the
    // full snapshot.
    for v in 0..10u64 {
        live.publish(&format!("v{v}.txt"), &[&format!("{:064x}", 0xabc0 + v)]);
    }
    agent.start();
    agent.wait_version(11, Duration::from_secs(20));
}

/// The daemon's own view of its set, from `status --json`: (set version in force, set error).
fn daemon_set(state: &Path) -> (Option<u64>, Option<String>) {
    let out = run("picket-agent", &["status", "--state", s(state), "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(v) = text
        .lines()
        .next()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    else {
        return (None, None);
    };
    (
        v["daemon"]["set_version"].as_u64(),
        v["daemon"]["set_error"].as_str().map(str::to_owned),
    )
}

/// Regression (security review, finding 1): a set over `limits.memory_limit` stopped the daemon
/// at every start, so the link never ran and no smaller set could ever replace it. Now the
/// daemon stays up on such a set, installs the next one that fits, and refuses (over the
/// channel) one that does not, keeping the one it has.
#[test]
fn an_agent_whose_set_is_over_its_memory_limit_stays_up_and_takes_a_set_that_fits() {
    let many = |tag: u64| -> Vec<String> { (0..500u64).map(|i| format!("{:064x}", tag << 32 | i)).collect() };
    let big = many(7);
    let mut first: Vec<&str> = big.iter().map(String::as_str).collect();
    first.push(DECOY);
    let live = Live::start(&first);
    let token = live.token(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = Agent::enroll(&live, tmp.path(), &token);
    assert_eq!(agent.set_version(), Some(1));
    // 501 digests need about 18 KiB of index; the limit is lowered to 8 KiB.
    let config = agent.state.join("agent.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("{text}\n[limits]\nmemory_limit = \"8KiB\"\n")).unwrap();
    agent.start();
    let line = agent.wait_stderr("is not in force", Duration::from_secs(10));
    assert!(
        line.contains("set version 1") && line.contains("memory limit"),
        "{line}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        if let (None, Some(e)) = daemon_set(&agent.state) {
            break e;
        }
        assert!(Instant::now() < deadline, "no set error in the status");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(error.contains("memory limit"), "{error}");
    // The link runs: the collector sees the agent.
    agent.wait_stderr("connected to", Duration::from_secs(10));

    // The big list is allowlisted: version 2 holds the decoy alone, and the daemon takes it.
    let list = tmp.path().join("allow.txt");
    fs::write(&list, big.join("\n")).unwrap();
    ok(
        "picket-collector",
        &["allowlist", "import", "--data", live.c.data(), s(&list)],
    );
    live.c.publish(&[]);
    agent.wait_version(2, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon_set(&agent.state) != (Some(2), None) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not take set 2: {:?}",
            daemon_set(&agent.state)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Version 3 is over the limit again: refused from the channel, set 2 stays in force.
    let again = many(9);
    let refs: Vec<&str> = again.iter().map(String::as_str).collect();
    live.publish("again.txt", &refs);
    let line = agent.wait_stderr("memory limit", Duration::from_secs(20));
    assert!(
        line.contains(&format!("set version 3 from collector {}", live.addr))
            && line.contains("installed set stays"),
        "{line}"
    );
    assert_eq!(agent.set_version(), Some(2));
    assert_eq!(daemon_set(&agent.state), (Some(2), None));
}

#[test]
fn hosts_enrolling_at_once_behind_one_address_wait_their_turn_and_all_enrol() {
    // One enrolment a second per address: a wave of hosts behind one NAT is paced, and each
    // host waits as the collector asks instead of failing.
    let live = Live::start_with(
        &[DECOY],
        &[("enrolments_per_second", "1"), ("enrolment_burst", "1")],
    );
    let token = live.token(&["--uses", "4"]);
    let tmp = tempfile::tempdir().unwrap();
    let runs: Vec<_> = (0..4)
        .map(|i| {
            let dir = tmp.path().join(format!("host{i}"));
            fs::create_dir_all(&dir).unwrap();
            let (_, _, args) = Agent::enroll_args(&live, &dir, &token);
            std::thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run("picket-agent", &args)
            })
        })
        .collect();
    let outs: Vec<_> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    for out in &outs {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        outs.iter()
            .any(|o| String::from_utf8_lossy(&o.stderr).contains("asks to wait")),
        "at least one host was paced"
    );
    assert_eq!(live.agents().len(), 4);
}
