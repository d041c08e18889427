//! The live channel under load: the real `picket-collector serve` (release binary) against many
//! simulated agents that speak the real protocol in this process, through the agent's own client
//! (`picket_agent::link::client`: TCP, mutual TLS 1.3, hello, postcard frames).
//!
//! 1. Set-up: a fresh data directory (`init`, the root key removed as an operator would move it
//!    offline), `ingest` of 10 000 SHA-256 lines, `publish` of version 1, `token create --uses N`,
//!    and `serve --listen 127.0.0.1:0`, whose bound address is read from its first line.
//! 2. Enrolment of N agents (64 at a time), each with its own Ed25519 key; then N mutual-TLS
//!    sessions that each fetch version 1 (a full set file) and stay open.
//! 3. Memory: `serve`'s settled `VmRSS` before enrolment, after it (no session open) and with
//!    the N sessions connected and idle.
//! 4. Publish: two new indicators are ingested, then the clock starts and `publish --force`
//!    runs; every session records when `NewVersion` arrives and when the answer to its
//!    `Fetch { have: 1 }` (the delta) has fully arrived. p50, p99 and max of each, with the
//!    time `publish` itself took. For a few agents the set files (v1, then the delta) go through
//!    `Trusted::update` from the trust anchor, as the agent would install them.
//! 5. Sightings: min(N, 200) sessions send numbered batches of 1 000 distinct sightings, each
//!    keeping one batch in flight, until the total is acknowledged; the rate runs from the first
//!    send to the last `Ack`, and is sustained over the whole phase (500 000 sightings in the
//!    full run). `picket-collector sightings --json` must then account for every
//!    count sent. The baseline inserts the same rows, batch by batch in the same order, straight
//!    into a fresh collector database with one transaction per batch (WAL, `synchronous=FULL`,
//!    the collector's own upsert), in this process.
//!
//! Throughout, `serve`'s CPU time (utime + stime from `/proc/PID/stat`) is read at each phase's
//! start and end, and reported per agent (enrolment, connecting, an idle minute, publish) and
//! per 1 000 sightings, with the whole run's total per agent (`channel-cpu`).
//!
//! Sizes: 10 000 agents by default, `--quick` 1 000 (with 50 000 sightings, under a minute on
//! two cores, which is what CI runs), `--agents N` for another count. The open-file limit of
//! this process is raised to its hard limit (the collector raises its own).
//!
//! Invariant: nothing outlives the run. The `serve` child is killed when its guard drops, every
//! wait on a child, a session or a phase has a deadline, and the runtime (with any session still
//! open) is dropped before the function returns.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use picket_agent::link::tls::{ca_config, ClientIdentity};
use picket_agent::link::{connect, enroll, Enrolment, Session};
use picket_proto::wire::{
    self, Batch, ClientMsg, ErrorCode, Fetch, ObservedKind, ServerMsg, SightingReport, MAX_BATCH_ITEMS,
};
use picket_proto::{Content, EnrollToken, Limits, Outcome, SetFile, TrustAnchor, Trusted};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::data::Rng;
use crate::report;

/// The channel every simulated agent follows.
const CHANNEL: &str = "default";
/// The name the collector's default server certificate carries for loopback.
const SERVER_NAME: &str = "127.0.0.1";
/// Enrolments and connections in flight at once.
const CONCURRENCY: usize = 64;
/// Indicators in set version 1.
const SET_INDICATORS: usize = 10_000;
/// Indicators added before version 2 is published.
const ADDED: usize = 2;
/// Agents whose set files are verified with `Trusted::update`.
const VERIFIED: usize = 4;
/// The most sessions that report sightings.
const REPORTERS: usize = 200;
/// The publish-latency goal for p99, in seconds.
const PUBLISH_GOAL_SECS: f64 = 5.0;
/// The sightings-rate goal, per second.
const INGEST_GOAL: f64 = 50_000.0;

/// How long one enrolment or one connection (with its first fetch) may take.
const PER_AGENT: Duration = Duration::from_secs(120);
/// How long a session waits for the new version after `publish` starts.
const PUBLISH_WAIT: Duration = Duration::from_secs(120);
/// How long a whole phase may take.
const PHASE: Duration = Duration::from_secs(600);
/// How long `serve` may take to bind.
const SERVE_START: Duration = Duration::from_secs(30);
/// How long a one-shot collector command may take.
const COMMAND: Duration = Duration::from_secs(300);

const MIB: f64 = (1 << 20) as f64;

/// How long the sessions are left idle to measure what idle sessions cost in CPU.
const IDLE: Duration = Duration::from_secs(5);

/// Runs the benchmark with `agents` simulated agents (default 10 000; `quick`: 1 000 agents
/// and 50 000 sightings instead of 500 000).
pub fn run(agents: Option<usize>, quick: bool) -> Result<()> {
    let n = agents.unwrap_or(if quick { 1_000 } else { 10_000 });
    ensure!(n >= VERIFIED, "--agents must be at least {VERIFIED}");
    let total_sightings: usize = if quick { 50_000 } else { 500_000 };
    let run_started = Instant::now();
    let bin = crate::built_bin("picket-collector")?;
    let fds = raise_nofile()?;
    ensure!(
        fds >= n as u64 + 256,
        "the open-file limit is {fds} (hard limit included): too few for {n} sessions; raise it (ulimit -Hn) or pass fewer --agents"
    );
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let mut rng = Rng(51);

    // 1. Set-up.
    let data = init(&bin, tmp.path(), "data", n)?;
    let list = tmp.path().join("v1.txt");
    write_hashes(&list, SET_INDICATORS, &mut rng)?;
    collector(&bin, "ingest", &data, &[list.as_os_str()])?;
    let out = collector(&bin, "publish", &data, &[])?;
    expect(
        &out.stdout,
        &format!("published set version 1 with {SET_INDICATORS} indicators"),
        "publish",
    )?;
    let uses = n.to_string();
    let token = token_create(&bin, &data, &uses)?;
    let anchor_path = data.join("root.pub");
    let anchor = std::fs::read_to_string(&anchor_path)
        .with_context(|| format!("reading {}", anchor_path.display()))?;
    let anchor = TrustAnchor::parse(&anchor).map_err(|e| anyhow!("{}: {e}", anchor_path.display()))?;
    let mut serve = Serve::start(&bin, &data)?;
    let addr: Arc<str> = serve.addr.clone().into();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-agents")
        .build()
        .context("starting the agents' runtime")?;
    let rss_start = serve.settled_rss()?;
    let cpu_start = serve.cpu()?;

    // 2. Enrolment, then N sessions holding version 1.
    let started = Instant::now();
    let token = Arc::new(token);
    let enrolments = rt.block_on(phase("enrolment", {
        let (addr, token) = (addr.clone(), token.clone());
        bounded((0..n).collect(), move |i| {
            let (addr, token) = (addr.clone(), token.clone());
            async move {
                timeout(
                    PER_AGENT,
                    enroll(&addr, SERVER_NAME, &token, None, &machine_id(i), CHANNEL),
                )
                .await
                .map_err(|_| anyhow!("agent {i}: enrolment took more than {PER_AGENT:?}"))?
                .with_context(|| format!("agent {i}: enrolment"))
            }
        })
    }))?;
    let enrol_secs = started.elapsed().as_secs_f64();
    serve.check_alive()?;
    let cpu_enrolled = serve.cpu()?;
    let rss_enrolled = serve.settled_rss()?;
    let cpu_before_connect = serve.cpu()?;

    let started = Instant::now();
    let connected = rt.block_on(phase("connecting", {
        let addr = addr.clone();
        bounded(enrolments.into_iter().enumerate().collect(), move |(i, e)| {
            let addr = addr.clone();
            async move {
                timeout(PER_AGENT, connect_and_fetch(&addr, i, e))
                    .await
                    .map_err(|_| anyhow!("agent {i}: connecting and fetching took more than {PER_AGENT:?}"))?
            }
        })
    }))?;
    let connect_secs = started.elapsed().as_secs_f64();
    let cpu_connected = serve.cpu()?;
    let now = unix_now();
    let limits = Limits::default();
    let mut agents = Vec::with_capacity(n);
    let mut trusted = Vec::new();
    for (agent, v1) in connected {
        if let Some(file) = v1 {
            let set = SetFile::decode(&file, &limits).context("decoding a version 1 set file")?;
            let (t, outcome) = Trusted::update(None, &anchor, &set, now, &limits)
                .map_err(|e| anyhow!("agent {}: version 1 does not verify: {e}", agent.index))?;
            ensure!(
                outcome == Outcome::NewVersion
                    && t.manifest().version == 1
                    && t.snapshot().len() == SET_INDICATORS,
                "agent {}: version 1 verified as version {} with {} indicators",
                agent.index,
                t.manifest().version,
                t.snapshot().len()
            );
            trusted.push((agent.index, t));
        }
        agents.push(agent);
    }
    ensure!(
        trusted.len() == VERIFIED,
        "{} agents verified version 1, not {VERIFIED}",
        trusted.len()
    );
    let timestamp_v1 = trusted[0].1.timestamp().version;
    let indicator_ids: Vec<String> = trusted[0]
        .1
        .snapshot()
        .records()
        .map(|r| r.id.to_owned())
        .collect();
    serve.check_alive()?;
    report(
        "channel-setup",
        &format!(
            "{n} agents: enrolled in {enrol_secs:.2} s ({:.1} ms each, {CONCURRENCY} at a time); connected with mutual TLS \
             and fetched version 1 ({SET_INDICATORS} SHA-256 indicators) in {connect_secs:.2} s",
            enrol_secs * 1e3 / n as f64,
        ),
        None,
    );

    // 3. Memory with every session open and idle, and the CPU idle sessions cost.
    let cpu_idle_start = serve.cpu()?;
    let idle_started = Instant::now();
    std::thread::sleep(IDLE);
    let rss_connected = serve.settled_rss()?;
    let idle_secs = idle_started.elapsed().as_secs_f64();
    let cpu_idle = serve.cpu()? - cpu_idle_start;
    let per_agent = |base: u64| (rss_connected as f64 - base as f64) / n as f64 / 1024.0;
    report(
        "channel-memory",
        &format!(
            "serve VmRSS {:.1} MiB before enrolment, {:.1} MiB after it with no session open, {:.1} MiB with {n} sessions \
             open and idle: {:.1} KiB per connected agent ({:.1} KiB counting enrolment's growth too)",
            rss_start as f64 / MIB,
            rss_enrolled as f64 / MIB,
            rss_connected as f64 / MIB,
            per_agent(rss_enrolled),
            per_agent(rss_start),
        ),
        None,
    );

    // 4. Publish to every connected agent.
    let more = tmp.path().join("v2.txt");
    write_hashes(&more, ADDED, &mut rng)?;
    collector(&bin, "ingest", &data, &[more.as_os_str()])?;
    let verified_ids: Vec<usize> = trusted.iter().map(|(i, _)| *i).collect();
    let waiting: Vec<_> = agents
        .into_iter()
        .map(|a| {
            let keep = verified_ids.contains(&a.index);
            rt.spawn(await_version(a, 2, timestamp_v1, keep))
        })
        .collect();
    let cpu_publish_start = serve.cpu()?;
    let t0 = Instant::now();
    let published = collector(&bin, "publish", &data, &[OsStr::new("--force")])?;
    let publish_secs = t0.elapsed().as_secs_f64();
    expect(
        &published.stdout,
        &format!(
            "published set version 2 with {} indicators",
            SET_INDICATORS + ADDED
        ),
        "publish",
    )?;
    expect(&published.stdout, "deltas from [1", "publish")?;
    let arrived = rt.block_on(phase("publish", async move {
        let mut out = Vec::with_capacity(waiting.len());
        for w in waiting {
            out.push(w.await.context("a session task panicked")??);
        }
        Ok(out)
    }))?;
    let now = unix_now();
    let mut told = Vec::with_capacity(n);
    let mut got = Vec::with_capacity(n);
    let mut agents = Vec::with_capacity(n);
    for a in arrived {
        told.push(a.told.saturating_duration_since(t0).as_secs_f64());
        got.push(a.got.saturating_duration_since(t0).as_secs_f64());
        if let Some(file) = &a.file {
            let prev = trusted
                .iter()
                .find(|(i, _)| *i == a.agent.index)
                .map(|(_, t)| t)
                .context("a verified agent lost its version 1")?;
            let set = SetFile::decode(file, &limits).context("decoding a version 2 set file")?;
            let (t, outcome) = Trusted::update(Some(prev), &anchor, &set, now, &limits).map_err(|e| {
                anyhow!(
                    "agent {}: the delta to version 2 does not verify: {e}",
                    a.agent.index
                )
            })?;
            ensure!(
                outcome == Outcome::NewVersion
                    && t.manifest().version == 2
                    && t.snapshot().len() == SET_INDICATORS + ADDED,
                "agent {}: version 2 verified as version {} with {} indicators",
                a.agent.index,
                t.manifest().version,
                t.snapshot().len()
            );
        }
        agents.push(a.agent);
    }
    let cpu_publish = serve.cpu()? - cpu_publish_start;
    let (told, got) = (Latencies::of(told), Latencies::of(got));
    report(
        "channel-publish",
        &format!(
            "{n} connected agents, {ADDED} indicators added to {SET_INDICATORS}: `publish --force` took {publish_secs:.2} s; \
             from its start, NewVersion p50 {:.2} s, p99 {:.2} s, max {:.2} s; delta fully received p50 {:.2} s, \
             p99 {:.2} s, max {:.2} s (each a delta set file; {VERIFIED} verified with Trusted::update); fan-out from \
             the first NewVersion to the last delta received {:.3} s",
            told.p50, told.p99, told.max, got.p50, got.p99, got.max, got.max - told.min,
        ),
        Some((got.p99 <= PUBLISH_GOAL_SECS, "p99 at most 5 s")),
    );
    serve.check_alive()?;

    // 5. Sightings, against direct SQLite inserts of the same rows.
    // No more sessions than batches: each reporting session sends at least one.
    let reporters = n.min(REPORTERS).min(total_sightings.div_ceil(MAX_BATCH_ITEMS));
    let mut plan = Plan::new(total_sightings, reporters, Arc::new(indicator_ids), now);
    let mut agents = agents.into_iter();
    let reporting: Vec<Agent> = agents.by_ref().take(reporters).collect();
    let idle: Vec<Agent> = agents.collect();
    for (k, a) in reporting.iter().enumerate() {
        ensure!(a.index == k, "the sessions are out of order: {} at {k}", a.index);
        plan.agent_ids.push(a.id.clone());
    }
    // The batches are built before the clock starts.
    let work: Vec<(Agent, Vec<Batch>)> = reporting
        .into_iter()
        .map(|a| {
            let batches = plan.batches_of(a.index);
            (a, batches)
        })
        .collect();
    let cpu_sightings_start = serve.cpu()?;
    let start = Instant::now();
    let handles: Vec<_> = work
        .into_iter()
        .map(|(a, batches)| rt.spawn(report_batches(a, batches)))
        .collect();
    let reported = rt.block_on(phase("sightings", async move {
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await.context("a reporting task panicked")??);
        }
        Ok(out)
    }))?;
    let last_ack = reported.iter().map(|r| r.last_ack).max().unwrap_or(start);
    let secs = last_ack.saturating_duration_since(start).as_secs_f64();
    let throttled: u64 = reported.iter().map(|r| r.throttled).sum();
    let channel_rate = plan.sightings() as f64 / secs;
    let cpu_sightings = serve.cpu()? - cpu_sightings_start;
    let cpu_total = serve.cpu()? - cpu_start;
    let run_secs = run_started.elapsed().as_secs_f64();
    // Close every session before reading the result.
    rt.block_on(async move {
        let sessions: Vec<Agent> = reported.into_iter().map(|r| r.agent).chain(idle).collect();
        drop(sessions);
    });
    drop(rt);
    serve.check_alive()?;
    let (sum, lines) = sightings_total(&bin, &data)?;
    ensure!(
        sum == plan.count_sum(),
        "`sightings --json` counts {sum} sightings over {lines} indicators; the agents sent {} (every batch acknowledged)",
        plan.count_sum()
    );
    drop(serve);
    let per = |cpu: f64| cpu * 1e3 / n as f64;
    report(
        "channel-cpu",
        &format!(
            "serve CPU (utime + stime) per agent: enrolment {:.2} ms, connecting and fetching version 1 {:.2} ms, \
             publish to all {:.3} ms, idle {:.3} ms per agent-minute ({:.2} s over {idle_secs:.1} s for {n} sessions); \
             sightings {:.1} ms per 1 000 ({:.2} s for {}, {:.0} sightings per CPU-second); the whole run {:.2} s of CPU, \
             {:.2} ms per agent, in {run_secs:.1} s wall",
            per(cpu_enrolled - cpu_start),
            per(cpu_connected - cpu_before_connect),
            per(cpu_publish),
            per(cpu_idle) * 60.0 / idle_secs,
            cpu_idle,
            cpu_sightings * 1e6 / plan.sightings() as f64,
            cpu_sightings,
            plan.sightings(),
            plan.sightings() as f64 / cpu_sightings.max(1e-9),
            cpu_total,
            per(cpu_total),
        ),
        None,
    );

    let base_data = init(&bin, tmp.path(), "baseline", n)?;
    let base_secs = baseline(&base_data.join("picket.db"), &plan)?;
    let base_rate = plan.sightings() as f64 / base_secs;
    report(
        "channel-sightings",
        &format!(
            "{} sightings in {} batches of {MAX_BATCH_ITEMS} from {reporters} sessions, one batch in flight each: \
             {secs:.2} s, {channel_rate:.0}/s ({throttled} rate-limited and resent); SQLite directly, one transaction \
             per batch: {base_secs:.2} s, {base_rate:.0}/s; channel/direct {:.2}; `sightings --json` accounts for all {sum} \
             counts ({lines} indicators)",
            plan.sightings(),
            plan.batches,
            channel_rate / base_rate,
        ),
        Some((channel_rate >= INGEST_GOAL, "at least 50 000/s")),
    );
    Ok(())
}

/// A simulated agent: its index in the run, its collector-given id and its open session.
#[derive(Debug)]
struct Agent {
    index: usize,
    id: String,
    session: Session,
}

/// The machine id a simulated agent claims (each a different machine, so none is a clone).
fn machine_id(i: usize) -> String {
    format!("picket-bench-machine-{i:06}")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs one phase under the phase deadline.
async fn phase<T>(what: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
    timeout(PHASE, work)
        .await
        .map_err(|_| anyhow!("the {what} phase took more than {PHASE:?}"))?
}

/// Runs `f` on every item, at most [`CONCURRENCY`] at once, and returns the results in the
/// items' order; the first failure is the error.
async fn bounded<I, T, F, Fut>(items: Vec<I>, f: F) -> Result<Vec<T>>
where
    F: Fn(I) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let mut set = JoinSet::new();
    let n = items.len();
    for (k, item) in items.into_iter().enumerate() {
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .context("the concurrency gate closed")?;
        let work = f(item);
        set.spawn(async move {
            let _permit = permit;
            work.await.map(|t| (k, t))
        });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(done) = set.join_next().await {
        let (k, t) = done.context("a task panicked")??;
        out[k] = Some(t);
    }
    out.into_iter()
        .collect::<Option<Vec<T>>>()
        .context("a task did not report")
}

/// The next answer to a request: `NewVersion` notices are skipped, an error frame is an error.
async fn answer(session: &mut Session, who: usize) -> Result<ServerMsg> {
    loop {
        match session
            .recv()
            .await
            .with_context(|| format!("agent {who}: waiting for an answer"))?
        {
            ServerMsg::NewVersion { .. } => continue,
            ServerMsg::Error(e) => bail!("agent {who}: the collector refused: {e}"),
            other => return Ok(other),
        }
    }
}

/// Connects an enrolled agent with its client certificate and fetches the current set (version
/// 1, a full file). Returns the session and, for the first [`VERIFIED`] agents, the file.
async fn connect_and_fetch(addr: &str, i: usize, e: Enrolment) -> Result<(Agent, Option<Vec<u8>>)> {
    let config = ca_config(
        &CertificateDer::from(e.ca.clone()),
        Some(ClientIdentity {
            cert: CertificateDer::from(e.certificate.clone()),
            key: PrivatePkcs8KeyDer::from(e.key_pkcs8.clone()),
        }),
    )
    .with_context(|| format!("agent {i}: its TLS configuration"))?;
    let machine = wire::machine_hash(&e.public_key, &machine_id(i));
    let mut session = connect(addr, SERVER_NAME, config, machine)
        .await
        .with_context(|| format!("agent {i}: connecting with its certificate"))?;
    ensure!(
        session.welcome().agent.as_deref() == Some(e.agent.as_str()),
        "agent {i}: the collector authenticated the session as {:?}, not {}",
        session.welcome().agent,
        e.agent
    );
    session
        .send(&ClientMsg::Fetch(Fetch {
            channel: CHANNEL.into(),
            have: None,
            have_timestamp: None,
        }))
        .await
        .with_context(|| format!("agent {i}: sending its first fetch"))?;
    let file = match answer(&mut session, i).await? {
        ServerMsg::Set { version: 1, file } => file,
        other => bail!(
            "agent {i}: the first fetch was answered with {}, not set version 1",
            picket_agent::link::client::kind(&other)
        ),
    };
    let set =
        SetFile::decode(&file, &Limits::default()).with_context(|| format!("agent {i}: its set file"))?;
    ensure!(
        matches!(set.content, Content::Full(_)),
        "agent {i}: a first fetch brought no full snapshot"
    );
    let agent = Agent {
        index: i,
        id: e.agent,
        session,
    };
    Ok((agent, (i < VERIFIED).then_some(file)))
}

/// When one agent heard of the new version and had it.
#[derive(Debug)]
struct Arrival {
    agent: Agent,
    /// `NewVersion` decoded.
    told: Instant,
    /// The answer to the fetch fully received.
    got: Instant,
    /// The set file, when this agent's files are verified.
    file: Option<Vec<u8>>,
}

/// Waits for `NewVersion { version }`, then fetches it as an agent on version 1 with timestamp
/// `have_timestamp`; the answer must be a delta.
async fn await_version(mut agent: Agent, version: u64, have_timestamp: u64, keep: bool) -> Result<Arrival> {
    let i = agent.index;
    agent.session.set_read_timeout(PUBLISH_WAIT);
    let told = loop {
        match agent
            .session
            .recv()
            .await
            .with_context(|| format!("agent {i}: waiting for version {version}"))?
        {
            ServerMsg::NewVersion { channel, version: v } if channel == CHANNEL && v >= version => {
                break Instant::now()
            }
            ServerMsg::NewVersion { .. } => continue,
            ServerMsg::Error(e) => bail!("agent {i}: the collector said {e}"),
            other => bail!(
                "agent {i}: {} while waiting for version {version}",
                picket_agent::link::client::kind(&other)
            ),
        }
    };
    agent
        .session
        .set_read_timeout(picket_agent::link::client::READ_TIMEOUT);
    agent
        .session
        .send(&ClientMsg::Fetch(Fetch {
            channel: CHANNEL.into(),
            have: Some(1),
            have_timestamp: Some(have_timestamp),
        }))
        .await
        .with_context(|| format!("agent {i}: fetching version {version}"))?;
    let file = match answer(&mut agent.session, i).await? {
        ServerMsg::Set { version: v, file } if v == version => file,
        other => bail!(
            "agent {i}: fetching version {version} was answered with {}",
            picket_agent::link::client::kind(&other)
        ),
    };
    let got = Instant::now();
    let set =
        SetFile::decode(&file, &Limits::default()).with_context(|| format!("agent {i}: its set file"))?;
    ensure!(
        matches!(set.content, Content::Delta(_)),
        "agent {i}: version {version} came as a full snapshot, not a delta from version 1"
    );
    Ok(Arrival {
        agent,
        told,
        got,
        file: keep.then_some(file),
    })
}

/// min, p50, p99 and max of a list of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Latencies {
    min: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Latencies {
    fn of(mut secs: Vec<f64>) -> Latencies {
        secs.sort_by(f64::total_cmp);
        Latencies {
            min: secs.first().copied().unwrap_or(f64::NAN),
            p50: percentile(&secs, 0.50),
            p99: percentile(&secs, 0.99),
            max: secs.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The nearest-rank percentile `q` (0 < q <= 1) of ascending `sorted`: the smallest value that
/// at least `q` of the values are at or below. NaN for no values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Which batches each reporting session sends: batch `b` (0-based) goes to session
/// `b % reporters` as its sequence number `b / reporters + 1`, so the sessions take turns in
/// the same order the baseline inserts them.
#[derive(Debug, Clone)]
struct Plan {
    batches: usize,
    reporters: usize,
    indicators: Arc<Vec<String>>,
    now: i64,
    /// Filled in once the sessions are known: each reporter's agent id.
    agent_ids: Vec<String>,
}

impl Plan {
    fn new(sightings: usize, reporters: usize, indicators: Arc<Vec<String>>, now: i64) -> Plan {
        Plan {
            batches: sightings.div_ceil(MAX_BATCH_ITEMS),
            reporters,
            indicators,
            now,
            agent_ids: Vec::new(),
        }
    }

    fn sightings(&self) -> usize {
        self.batches * MAX_BATCH_ITEMS
    }

    /// The spool epoch of reporter `r`.
    fn epoch(r: usize) -> u64 {
        0x5eed_0000_0000 + r as u64
    }

    /// How many batches reporter `r` sends.
    fn count_for(&self, r: usize) -> usize {
        (self.batches + self.reporters - 1 - r) / self.reporters
    }

    /// Reporter `r`'s batch number `seq` (from 1): 1 000 sightings whose (indicator, observed,
    /// location) are distinct within the agent, so every one is a new row.
    fn batch(&self, r: usize, seq: u64) -> Batch {
        let ids = &self.indicators;
        let items = (0..MAX_BATCH_ITEMS)
            .map(|j| {
                let k = (r * 7919 + seq as usize * 104_729 + j) % ids.len();
                SightingReport {
                    indicator: ids[k].clone(),
                    what: "sha256".into(),
                    observed: ObservedKind::File,
                    location: Some(format!("/srv/bench/{seq}/{j}.bin")),
                    first_seen: self.now - 3_600 + j as i64,
                    last_seen: self.now,
                    count: 1 + (j % 3) as u64,
                    set_version: 2,
                }
            })
            .collect();
        Batch {
            epoch: Plan::epoch(r),
            seq,
            items,
        }
    }

    fn batches_of(&self, r: usize) -> Vec<Batch> {
        (1..=self.count_for(r) as u64).map(|s| self.batch(r, s)).collect()
    }

    /// The sum of every sighting's count.
    fn count_sum(&self) -> u64 {
        let per_batch: u64 = (0..MAX_BATCH_ITEMS).map(|j| 1 + (j % 3) as u64).sum();
        per_batch * self.batches as u64
    }
}

/// What one reporting session did.
#[derive(Debug)]
struct Reported {
    agent: Agent,
    last_ack: Instant,
    throttled: u64,
}

/// Sends `batches` one at a time, each after the previous one's `Ack`; a `RateLimited` answer
/// is waited out and the batch sent again.
async fn report_batches(mut agent: Agent, batches: Vec<Batch>) -> Result<Reported> {
    let i = agent.index;
    let mut throttled = 0;
    let mut last_ack = Instant::now();
    for batch in batches {
        let (epoch, seq) = (batch.epoch, batch.seq);
        let msg = ClientMsg::Report(batch);
        loop {
            agent
                .session
                .send(&msg)
                .await
                .with_context(|| format!("agent {i}: sending batch {seq}"))?;
            let got = loop {
                match agent
                    .session
                    .recv()
                    .await
                    .with_context(|| format!("agent {i}: waiting for the ack of batch {seq}"))?
                {
                    ServerMsg::NewVersion { .. } => continue,
                    other => break other,
                }
            };
            match got {
                ServerMsg::Ack {
                    epoch: e,
                    seq: s,
                    duplicate: false,
                } if (e, s) == (epoch, seq) => {
                    last_ack = Instant::now();
                    break;
                }
                ServerMsg::Error(e) if e.code == ErrorCode::RateLimited => {
                    throttled += 1;
                    let wait = Duration::from_millis(e.retry_after_ms.unwrap_or(100));
                    tokio::time::sleep(wait).await;
                }
                ServerMsg::Error(e) => bail!("agent {i}: batch {seq} refused: {e}"),
                other => bail!(
                    "agent {i}: batch {seq} answered with {}",
                    picket_agent::link::client::kind(&other)
                ),
            }
        }
    }
    Ok(Reported {
        agent,
        last_ack,
        throttled,
    })
}

/// The baseline: `plan`'s batches inserted straight into the collector database at `db`, in
/// the order the sessions took turns, one transaction per batch with the collector's own
/// statements (the batch row, then the sightings upsert). Returns the seconds taken.
fn baseline(db: &Path, plan: &Plan) -> Result<f64> {
    let conn = rusqlite::Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let batches: Vec<(usize, Batch)> = (0..plan.batches)
        .map(|b| {
            let r = b % plan.reporters;
            (r, plan.batch(r, (b / plan.reporters) as u64 + 1))
        })
        .collect();
    let started = Instant::now();
    for (r, batch) in &batches {
        let agent = plan.agent_ids.get(*r).context("a reporter without an agent id")?;
        let digest = picket_proto::sha256(&wire::encode_frame(&batch.items));
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO report_batches (org, agent, epoch, seq, digest, received, items)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                agent,
                batch.epoch as i64,
                batch.seq as i64,
                &digest[..],
                plan.now,
                batch.items.len() as i64
            ],
        )?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO sightings (org, agent, indicator, what, observed, location, first_seen, last_seen,
                                        count, set_version, received)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (agent, indicator, observed, location) DO UPDATE SET
                     what = excluded.what,
                     first_seen = MIN(first_seen, excluded.first_seen),
                     last_seen = MAX(last_seen, excluded.last_seen),
                     count = MAX(count, excluded.count),
                     set_version = MAX(set_version, excluded.set_version),
                     received = excluded.received",
            )?;
            for s in &batch.items {
                upsert.execute(rusqlite::params![
                    agent,
                    s.indicator,
                    s.what,
                    s.observed.name(),
                    s.location.as_deref().unwrap_or(""),
                    s.first_seen,
                    s.last_seen,
                    s.count as i64,
                    s.set_version as i64,
                    plan.now,
                ])?;
            }
        }
        tx.commit()?;
    }
    let secs = started.elapsed().as_secs_f64();
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM sightings", [], |r| r.get(0))?;
    ensure!(
        rows as usize == plan.sightings(),
        "the baseline database holds {rows} sightings, not {}",
        plan.sightings()
    );
    Ok(secs)
}

/// `sightings --json`: the sum of the counts and the number of lines.
fn sightings_total(bin: &Path, data: &Path) -> Result<(u64, usize)> {
    let out = collector(bin, "sightings", data, &[OsStr::new("--json")])?;
    let mut sum = 0u64;
    let mut lines = 0;
    for line in out.stdout.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("`sightings --json` printed {line:?}"))?;
        sum += v["count"]
            .as_u64()
            .with_context(|| format!("no count in {line:?}"))?;
        lines += 1;
    }
    Ok((sum, lines))
}

/// Raises this process's soft limit on open files to the hard limit (children inherit it) and
/// returns the soft limit now in force.
pub(crate) fn raise_nofile() -> Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (lim.current, lim.maximum) {
        if soft < hard {
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(hard),
                    maximum: Some(hard),
                },
            )
            .context("raising the open-file limit to the hard limit")?;
        }
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// What a finished child wrote.
#[derive(Debug)]
pub(crate) struct Output {
    /// Its standard output.
    pub stdout: String,
}

/// Reads a pipe to its end on a thread of its own.
pub(crate) fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            // A read error keeps what was read; the exit status is what is checked.
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `picket-collector SUB --data DATA ARGS...` to its end (killed after [`COMMAND`]); a
/// failure exit is an error carrying its stderr.
pub(crate) fn collector(bin: &Path, sub: &str, data: &Path, args: &[&OsStr]) -> Result<Output> {
    let mut cmd = Command::new(bin);
    cmd.args(sub.split(' ')).arg("--data").arg(data).args(args);
    run_child(&mut cmd, &format!("picket-collector {sub}"))
}

pub(crate) fn run_child(cmd: &mut Command, what: &str) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + COMMAND;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {COMMAND:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = out
        .join()
        .map_err(|_| anyhow!("{what}: the stdout reader panicked"))?;
    let stderr = err
        .join()
        .map_err(|_| anyhow!("{what}: the stderr reader panicked"))?;
    ensure!(status.success(), "{what} failed ({status}): {stdout}{stderr}");
    Ok(Output { stdout })
}

/// `token create --uses N`: the token alone on stdout.
fn token_create(bin: &Path, data: &Path, uses: &str) -> Result<EnrollToken> {
    let out = collector(
        bin,
        "token create",
        data,
        &[OsStr::new("--uses"), OsStr::new(uses)],
    )?;
    // The secret is never printed: a parse error names the problem only.
    EnrollToken::parse(out.stdout.trim())
        .map_err(|e| anyhow!("`picket-collector token create` printed something else than a token: {e}"))
}

/// Fails unless `stdout` contains `want`.
fn expect(stdout: &str, want: &str, what: &str) -> Result<()> {
    ensure!(stdout.contains(want), "{what} said {stdout:?}, expected {want:?}");
    Ok(())
}

/// A fresh data directory `dir/name`, its root private key removed (as an operator moves it
/// offline: `serve` refuses to start while it can read one).
pub(crate) fn init(bin: &Path, dir: &Path, name: &str, agents: usize) -> Result<PathBuf> {
    let data = dir.join(name);
    let mut cmd = Command::new(bin);
    cmd.arg("init").arg("--data").arg(&data).args(["--org", "bench"]);
    run_child(&mut cmd, "picket-collector init")?;
    // Every simulated agent connects from 127.0.0.1, where a real fleet comes from many
    // addresses: the per-address limits on unauthenticated connections and enrolments would
    // pace the set-up, which is not what is measured. Everything else keeps its default.
    let config = data.join("picket.toml");
    let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
    let mut raised = text.clone();
    // Every session at once, with room for the enrolments and the bench's own checks.
    let sessions = (agents + 256).max(10_000).to_string();
    for (key, value) in [
        ("max_sessions", sessions.as_str()),
        ("max_handshakes_per_ip", "4096"),
        ("max_enrolling", "1024"),
        ("enrolments_per_second", "100000"),
        ("enrolment_burst", "100000"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .with_context(|| format!("no {key} in {}", config.display()))?;
        raised = raised.replace(line, &format!("{key} = {value}"));
    }
    std::fs::write(&config, raised).with_context(|| format!("writing {}", config.display()))?;
    let key = dir.join(format!("{name}.root-OFFLINE.key"));
    std::fs::remove_file(&key).with_context(|| format!("removing the root key {}", key.display()))?;
    Ok(data)
}

/// Writes `n` random SHA-256 digests, one a line.
pub(crate) fn write_hashes(path: &Path, n: usize, rng: &mut Rng) -> Result<()> {
    let mut w = BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    for _ in 0..n {
        writeln!(w, "{}", hex::encode(rng.bytes(32)))?;
    }
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// A field of `/proc/PID/status` in bytes (`VmRSS:  1234 kB`).
pub(crate) fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status(&text, field).with_context(|| format!("no {field} in {path}"))
}

fn parse_status(text: &str, field: &str) -> Option<u64> {
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`, 100 on every Linux the kernel ABI
/// allows user space to see).
const USER_HZ: f64 = 100.0;

/// utime + stime in seconds from the text of `/proc/PID/stat`.
fn parse_cpu(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: fields are counted
    // from the last `)`. utime and stime are fields 14 and 15, so the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// `picket-collector serve` on a loopback port; killed when dropped.
#[derive(Debug)]
struct Serve {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Serve {
    /// Starts `serve --listen 127.0.0.1:0` and waits for the line naming the bound address.
    fn start(bin: &Path, data: &Path) -> Result<Serve> {
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting picket-collector serve")?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        // The guard exists from here: any error below kills the child.
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut serve = Serve {
            child,
            addr: String::new(),
            stderr: tail.clone(),
        };
        let (tx, rx) = mpsc::channel();
        if let Some(out) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    // After start-up nobody listens; the pipe is still drained.
                    let _ = tx.send(line);
                }
            });
        }
        if let Some(err) = stderr {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == 20 {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            });
        }
        let deadline = Instant::now() + SERVE_START;
        const SAYS: &str = "picket-collector: agent channel listening on ";
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix(SAYS) {
                        serve.addr = addr.trim().to_owned();
                        return Ok(serve);
                    }
                }
                Err(RecvTimeoutError::Timeout) if left > Duration::ZERO => serve.check_alive()?,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("picket-collector serve did not say where it listens within {SERVE_START:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    serve.check_alive()?;
                    bail!("picket-collector serve closed its stdout without saying where it listens");
                }
            }
        }
    }

    /// Fails, with the end of its stderr, if `serve` has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            // Give the stderr reader a moment to take the last lines.
            std::thread::sleep(Duration::from_millis(100));
            let tail = self
                .stderr
                .lock()
                .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
                .unwrap_or_default();
            bail!("picket-collector serve exited ({status}): {tail}");
        }
        Ok(())
    }

    /// CPU seconds (user and system) `serve` has used so far.
    fn cpu(&mut self) -> Result<f64> {
        self.check_alive()?;
        let path = format!("/proc/{}/stat", self.child.id());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_cpu(&text).with_context(|| format!("no utime and stime in {path}: {text:?}"))
    }

    /// `VmRSS` once it has settled: three readings 200 ms apart within 1 % (or after 10 s).
    fn settled_rss(&mut self) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut readings: Vec<u64> = Vec::new();
        loop {
            self.check_alive()?;
            readings.push(status_bytes(self.child.id(), "VmRSS")?);
            let last3 = &readings[readings.len().saturating_sub(3)..];
            if let (3, Some(&lo), Some(&hi)) = (last3.len(), last3.iter().min(), last3.iter().max()) {
                if (hi - lo) as f64 <= hi as f64 * 0.01 || Instant::now() > deadline {
                    return Ok(readings[readings.len() - 1]);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let secs: Vec<f64> = (1..=1000).map(|i| i as f64).collect();
        assert_eq!(percentile(&secs, 0.50), 500.0);
        assert_eq!(percentile(&secs, 0.99), 990.0);
        assert_eq!(percentile(&secs, 1.0), 1000.0);
        // Few values: p99 of 50 is the largest, p50 the 25th.
        let few: Vec<f64> = (1..=50).map(|i| i as f64).collect();
        assert_eq!(percentile(&few, 0.99), 50.0);
        assert_eq!(percentile(&few, 0.50), 25.0);
        assert_eq!(percentile(&[3.0], 0.5), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
        let l = Latencies::of(vec![0.3, 0.1, 0.2]);
        assert_eq!((l.min, l.p50, l.p99, l.max), (0.1, 0.2, 0.3, 0.3));
    }

    #[test]
    fn status_fields_in_bytes() {
        let text = "Name:\tpicket-collector\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status(text, "VmRSS"), Some(10 << 20));
        assert_eq!(parse_status(text, "VmHWM"), Some(20 << 20));
        assert_eq!(parse_status(text, "VmSwap"), None);
        assert_eq!(parse_status("VmRSSX: 1 kB\n", "VmRSS"), None);
    }

    #[test]
    fn cpu_seconds_from_proc_stat() {
        let stat = "4242 (picket (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 9 0 12345 0";
        assert_eq!(parse_cpu(stat), Some(3.25));
        assert_eq!(parse_cpu("4242 (x) S 1 2"), None);
    }

    #[test]
    fn every_batch_goes_to_one_reporter_and_rows_are_distinct() {
        let ids: Vec<String> = (0..10).map(|i| format!("indicator--{i}")).collect();
        let plan = Plan::new(7_000, 3, Arc::new(ids), 1_700_000_000);
        assert_eq!(plan.batches, 7);
        assert_eq!(
            (0..3).map(|r| plan.count_for(r)).collect::<Vec<_>>(),
            vec![3, 2, 2]
        );
        let mut keys = std::collections::HashSet::new();
        let mut sum = 0;
        for r in 0..3 {
            for b in plan.batches_of(r) {
                assert_eq!(b.epoch, Plan::epoch(r));
                assert!(ClientMsg::Report(b.clone()).check().is_ok());
                for s in b.items {
                    sum += s.count;
                    assert!(keys.insert((r, s.indicator, s.location)));
                }
            }
        }
        assert_eq!(keys.len(), plan.sightings());
        assert_eq!(sum, plan.count_sum());
    }
}
