//! `picket-agent`: the command line. Parses arguments, reads the clock, and maps errors to exit
//! codes; the work happens in the library.

#![forbid(unsafe_code)]

use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use picket_agent::config::{parse_size, Config};
use picket_agent::daemon;
use picket_agent::digest::Digests;
use picket_agent::host;
use picket_agent::index::{Hit, What};
use picket_agent::loaded::LoadedSet;
use picket_agent::scan::{self, Report, Scanner};
use picket_agent::sightings::Observed;
use picket_agent::spool::{self, Spool};
use picket_agent::status::StatusReport;
use picket_agent::store::{self, Imported, StateDir};
use picket_agent::AgentError;
use picket_proto::wire::{Batch, SightingReport};
use picket_proto::{rfc3339, Freshness, Limits, SetFile, TrustAnchor, Trusted};

const EXIT_HELP: &str = "Exit status: 0 success (for scan: nothing found), 1 scan found something, 2 error.";

#[derive(Parser)]
#[command(name = "picket-agent", version, about = "Picket endpoint agent", after_help = EXIT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How logs on stderr look: text (the classic lines) or json (one object a line, for a log
    /// shipper). PICKET_LOG filters them (e.g. warn; default info).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    log_format: picket_agent::logging::Format,
}

#[derive(Subcommand)]
enum Command {
    /// Enrol with a collector: make this host's key, spend an enrolment token, and write a
    /// working DIR/agent.toml (then run `picket-agent run --config DIR/agent.toml`).
    #[command(after_help = EXIT_HELP)]
    Enroll {
        /// The state directory to enrol into (created 0700).
        #[arg(long)]
        state: PathBuf,
        /// The collector's agent channel, HOST:PORT ([IPV6]:PORT).
        #[arg(long)]
        collector: String,
        /// The enrolment token. Other local users can read a command line: prefer --token-file.
        #[arg(long, conflicts_with = "token_file", required_unless_present = "token_file")]
        token: Option<String>,
        /// A file holding the enrolment token, or `-` to read it from standard input.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The trust anchor (`root.pub` from the collector) that sets are verified against.
        #[arg(long)]
        trust: PathBuf,
        /// The collector CA certificate. Without it the collector is trusted through the CA pin
        /// the token carries; with it, its key must match that pin.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// A directory to scan and watch (repeatable), written to `[scan] roots`.
        #[arg(long = "root")]
        roots: Vec<PathBuf>,
        /// The channel whose sets the agent follows.
        #[arg(long, default_value = "default")]
        channel: String,
        /// Read the machine id from this file instead of /etc/machine-id (containers, tests).
        #[arg(long)]
        machine_id_file: Option<PathBuf>,
        /// The name the collector's certificate carries, when it is not the HOST of --collector.
        #[arg(long)]
        server_name: Option<String>,
        /// Replace an enrolment DIR already holds.
        #[arg(long)]
        force: bool,
    },
    /// Verify a signed set file and install it as the agent's current set (offline update).
    #[command(after_help = EXIT_HELP)]
    ImportSet {
        /// The agent's state directory (created 0700 if missing).
        #[arg(long)]
        state: PathBuf,
        /// The trust anchor (`root.pub` from the collector).
        #[arg(long)]
        trust: PathBuf,
        /// The set file made by `picket-collector export-set`.
        file: PathBuf,
    },
    /// Scan files against the installed set, or against a set file verified on the spot.
    #[command(after_help = EXIT_HELP)]
    Scan {
        /// The state directory holding the installed set.
        #[arg(long, conflicts_with = "set", required_unless_present = "set")]
        state: Option<PathBuf>,
        /// A set file to verify and use without installing it (needs --trust).
        #[arg(long, requires = "trust")]
        set: Option<PathBuf>,
        /// The trust anchor for --set.
        #[arg(long)]
        trust: Option<PathBuf>,
        /// Print one JSON object per finding.
        #[arg(long)]
        json: bool,
        /// Exit 2 instead of warning when the installed set is stale.
        #[arg(long)]
        require_fresh: bool,
        /// Files larger than this many bytes are not hashed.
        #[arg(long, default_value_t = 256 << 20)]
        max_file_size: u64,
        /// Descend into other filesystems below a root.
        #[arg(long)]
        cross_filesystems: bool,
        /// Path prefixes not to scan.
        #[arg(long)]
        exclude: Vec<PathBuf>,
        /// Also match running processes and live connections.
        #[arg(long)]
        processes: bool,
        /// The most memory the indicator index may take (e.g. 256MiB).
        #[arg(long, default_value = "1GiB")]
        memory_limit: String,
        /// Files and directories to scan.
        #[arg(required_unless_present = "processes")]
        paths: Vec<PathBuf>,
    },
    /// The daemon: scan, watch, poll processes and connections, record sightings.
    #[command(after_help = EXIT_HELP)]
    Run {
        /// The configuration file (agent.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Show the sightings recorded on this host, or (--outbound) exactly what the agent sends
    /// the collector for them.
    Sightings {
        /// The state directory.
        #[arg(long)]
        state: PathBuf,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
        /// Print the reports that leave the host (redacted, aggregated, times rounded), not the
        /// local records.
        #[arg(long)]
        outbound: bool,
        /// The configuration whose `[sightings] location` applies (default: DIR/agent.toml if
        /// present, else the default `redacted`).
        #[arg(long, requires = "outbound")]
        config: Option<PathBuf>,
    },
    /// Show exactly what this agent sends the collector: the batches waiting in the spool, in
    /// the order and with the numbers (epoch, sequence) and items they are sent with, then the
    /// reports the sightings recorded here make now; with the location mode in force and the
    /// configuration it comes from. Reads only: it needs the daemon stopped (the spool changes
    /// while the daemon sends).
    #[command(after_help = EXIT_HELP)]
    Explain {
        /// The state directory.
        #[arg(long)]
        state: PathBuf,
        /// The configuration whose `[sightings]` and `[collector]` sections apply (default:
        /// DIR/agent.toml if present, else the defaults: location `redacted`, not enrolled).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print one JSON object: config, location, collector, spool (epoch, last_seq,
        /// dropped, batches with epoch, seq, items), sightings.
        #[arg(long)]
        json: bool,
    },
    /// Show the installed set (version, channel, freshness) and what the daemon last reported:
    /// last full scan, spool depth, collector link.
    Status {
        /// The state directory.
        #[arg(long)]
        state: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    picket_agent::logging::init(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("picket-agent: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn wall_clock() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The enrolment token from the command line, a file, or standard input (`-`). Its text is
/// never echoed, not even in an error.
fn read_token(token: Option<String>, file: Option<PathBuf>) -> Result<picket_proto::EnrollToken> {
    const CAP: u64 = 4096;
    let (text, origin) = match (token, file) {
        (Some(t), _) => {
            eprintln!(
                "picket-agent: note: a token on the command line can be read by other local users and stays in shell history; --token-file FILE or --token-file - (standard input) avoid that"
            );
            (t, "--token".to_owned())
        }
        (None, Some(p)) => {
            let mut buf = Vec::new();
            let origin = if p == Path::new("-") {
                std::io::Read::read_to_end(&mut std::io::Read::take(io::stdin().lock(), CAP + 1), &mut buf)
                    .context("reading the token from standard input")?;
                "the token on standard input".to_owned()
            } else {
                let f = std::fs::File::open(&p)
                    .with_context(|| format!("reading the token file {}", p.display()))?;
                std::io::Read::read_to_end(&mut std::io::Read::take(f, CAP + 1), &mut buf)
                    .with_context(|| format!("reading the token file {}", p.display()))?;
                format!("the token file {}", p.display())
            };
            if buf.len() as u64 > CAP {
                anyhow::bail!("{origin} is larger than {CAP} bytes: not an enrolment token");
            }
            (
                String::from_utf8(buf).map_err(|_| anyhow::anyhow!("{origin} is not text"))?,
                origin,
            )
        }
        (None, None) => anyhow::bail!("give --token TOKEN or --token-file FILE (`-` for standard input)"),
    };
    picket_proto::EnrollToken::parse(&text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))
}

fn read_anchor(path: &Path) -> Result<TrustAnchor> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading trust anchor {}", path.display()))?;
    TrustAnchor::parse(&text).with_context(|| format!("trust anchor {}", path.display()))
}

fn run(cli: Cli) -> Result<ExitCode> {
    let limits = Limits::default();
    match cli.command {
        Command::Enroll {
            state,
            collector,
            token,
            token_file,
            trust,
            ca,
            roots,
            channel,
            machine_id_file,
            server_name,
            force,
        } => {
            let opts = picket_agent::enroll::EnrollOptions {
                state,
                token: read_token(token, token_file)?,
                collector,
                server_name,
                trust,
                ca,
                roots,
                channel,
                machine_id_file,
                force,
            };
            let done = picket_agent::enroll::enroll(&opts)?;
            println!(
                "enrolled as agent {} with collector {}; client certificate valid until {}",
                done.agent,
                opts.collector,
                rfc3339(done.not_after)
            );
            match &done.first_set {
                Ok(Some(Imported::NewVersion { to, records, .. })) => {
                    println!("installed set version {to}, {records} indicators")
                }
                Ok(Some(Imported::Refreshed { version } | Imported::AlreadyInstalled { version })) => {
                    println!("set version {version} is installed")
                }
                Ok(None) => println!("the collector has no newer set to install yet"),
                Err(e) => eprintln!(
                    "picket-agent: warning: enrolled, but the first set was not installed: {e}; the daemon keeps asking"
                ),
            }
            println!(
                "wrote {0}; start the agent with: picket-agent run --config {0}",
                done.config.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportSet { state, trust, file } => {
            let anchor = read_anchor(&trust)?;
            let bytes = store::read_capped(&file, limits.max_set_file() as u64)?;
            let dir = StateDir::open(&state)?;
            match dir.import(&anchor, &file, &bytes, wall_clock(), &limits)? {
                Imported::NewVersion { from, to, records } => match from {
                    Some(f) => println!("installed set version {to} (was {f}), {records} indicators"),
                    None => println!("installed set version {to}, {records} indicators"),
                },
                Imported::Refreshed { version } => {
                    println!("set version {version} unchanged; freshness renewed")
                }
                Imported::AlreadyInstalled { version } => {
                    println!("set version {version} is already installed")
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Scan {
            state,
            set,
            trust,
            json,
            require_fresh,
            max_file_size,
            cross_filesystems,
            exclude,
            processes,
            memory_limit,
            paths,
        } => {
            let wall = wall_clock();
            let trusted = match (&state, &set) {
                (Some(dir), _) => {
                    let t = store::load_set(dir, &limits)?
                        .ok_or_else(|| AgentError::NoSet { path: dir.clone() })?;
                    if let Freshness::Stale { what, expired_at } = t.freshness(wall) {
                        if require_fresh {
                            return Err(AgentError::Stale {
                                path: dir.clone(),
                                what,
                                expired_at,
                            }
                            .into());
                        }
                        eprintln!(
                            "picket-agent: warning: the installed set (version {}) is stale: {what} expired at {}; matching with it anyway",
                            t.manifest().version,
                            rfc3339(expired_at)
                        );
                    }
                    t
                }
                (None, Some(file)) => {
                    let trust = trust.as_deref().context("--set needs --trust")?;
                    let anchor = read_anchor(trust)?;
                    let bytes = store::read_capped(file, limits.max_set_file() as u64)?;
                    let parsed = SetFile::decode(&bytes, &limits).map_err(|e| AgentError::Verify {
                        path: file.clone(),
                        error: e,
                    })?;
                    Trusted::update(None, &anchor, &parsed, wall, &limits)
                        .map_err(|e| AgentError::Verify {
                            path: file.clone(),
                            error: e,
                        })?
                        .0
                }
                (None, None) => anyhow::bail!("give --state DIR or --set FILE --trust ROOT"),
            };
            let memory_limit = parse_size(&memory_limit)
                .with_context(|| format!("--memory-limit {memory_limit:?} is not a size such as 256MiB"))?;
            let set = LoadedSet::from_trusted(trusted, memory_limit)?;
            if set.unknown_kinds > 0 {
                eprintln!(
                    "picket-agent: note: {} indicator(s) of kinds this agent does not know were skipped",
                    set.unknown_kinds
                );
            }
            for r in set.index().rejected() {
                eprintln!(
                    "picket-agent: note: indicator at record {} is not matched: {:?}",
                    r.record, r.reason
                );
            }
            let opts = scan::Options {
                max_file_size,
                one_filesystem: !cross_filesystems,
                exclude,
            };
            let mut out = Printer {
                json,
                found: 0,
                set: &set,
                stdout: io::stdout().lock(),
                progress: io::stderr().is_terminal().then(|| Progress {
                    started: Instant::now(),
                    last: Instant::now(),
                }),
            };
            let mut scanner = Scanner::new(set.index(), &opts, None);
            scanner.scan(&paths, &mut out);
            let stats = scanner.stats.clone();
            if processes {
                scan_processes(&set, &mut out);
            }
            if out.progress.is_some() {
                eprint!("\r\x1b[K");
            }
            eprintln!(
                "picket-agent: scanned {} files ({} hashed, {} bytes), {} skipped, {} errors, {} finding(s); set version {}",
                stats.files, stats.hashed, stats.bytes, stats.skipped, stats.errors, out.found, set.version
            );
            Ok(if out.found > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Run { config } => {
            let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!(e))?;
            daemon::run(cfg, &config, Box::new(io::stdout()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sightings {
            state,
            json,
            outbound: true,
            config,
        } => print_outbound(&state, config.as_deref(), json, &limits),
        Command::Sightings { state, json, .. } => {
            let table = daemon::load_sightings(&state, usize::MAX);
            for s in table.iter() {
                let (kind, value) = match &s.observed {
                    Observed::File(p) => ("file", p),
                    Observed::Process(p) => ("process", p),
                    Observed::Connection(a) => ("connection", a),
                };
                if json {
                    let v = serde_json::json!({
                        "indicator": s.indicator, "what": s.what, "observed": kind, "value": value,
                        "first_seen": s.first_seen, "last_seen": s.last_seen, "count": s.count,
                    });
                    println!("{v}");
                } else {
                    println!(
                        "{} {} {kind} {value} first {} last {} count {}",
                        s.indicator,
                        s.what,
                        rfc3339(s.first_seen),
                        rfc3339(s.last_seen),
                        s.count
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { state, config, json } => explain(&state, config.as_deref(), json, &limits),
        Command::Status { state, json } => {
            let daemon = picket_agent::status::read(&state).map_err(|e| anyhow::anyhow!(e))?;
            let wall = wall_clock();
            let Some(t) = store::load_set(&state, &limits)? else {
                // An enrolled daemon waiting for its first set still has a status to show.
                let Some(report) = daemon else {
                    return Err(AgentError::NoSet { path: state }.into());
                };
                if json {
                    let mut v = serde_json::json!({ "set_version": null, "fresh": null });
                    add_daemon_json(&mut v, Some(&report), wall);
                    println!("{v}");
                } else {
                    println!("no indicator set installed yet");
                    print_daemon(Some(&report), wall);
                }
                return Ok(ExitCode::SUCCESS);
            };
            let (fresh, detail) = match t.freshness(wall) {
                Freshness::Fresh { until } => (true, format!("fresh until {}", rfc3339(until))),
                Freshness::Stale { what, expired_at } => {
                    (false, format!("stale: {what} expired at {}", rfc3339(expired_at)))
                }
            };
            if json {
                let mut v = serde_json::json!({
                    "org": t.root().org,
                    "channel": t.manifest().channel,
                    "set_version": t.manifest().version,
                    "timestamp_version": t.timestamp().version,
                    "root_version": t.root().version,
                    "indicators": t.snapshot().len(),
                    "created": t.manifest().created,
                    "fresh": fresh,
                    "expires": t.timestamp().expires.min(t.manifest().expires).min(t.root().expires),
                });
                add_daemon_json(&mut v, daemon.as_ref(), wall);
                println!("{v}");
            } else {
                println!(
                    "org {} channel {} set version {} ({} indicators), root version {}, {detail}",
                    t.root().org,
                    t.manifest().channel,
                    t.manifest().version,
                    t.snapshot().len(),
                    t.root().version
                );
                print_daemon(daemon.as_ref(), wall);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The configuration that applies to `state`: `config`, else `DIR/agent.toml` if present, else
/// none (the defaults).
fn state_config(state: &Path, config: Option<&Path>) -> Result<Option<(PathBuf, Config)>> {
    let default_config = state.join("agent.toml");
    let path = match config {
        Some(p) => p.to_owned(),
        None if default_config.exists() => default_config,
        None => return Ok(None),
    };
    let cfg = Config::load(&path).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some((path, cfg)))
}

/// The reports the sightings recorded in `state` make now, redacted in `mode`.
fn outbound_reports(
    state: &Path,
    mode: picket_agent::redact::Location,
    limits: &Limits,
) -> Result<Vec<SightingReport>> {
    let set_version = store::load_set(state, limits)?.map_or(0, |t| t.manifest().version);
    let table = daemon::load_sightings(state, usize::MAX);
    let redactor = picket_agent::host::accounts::redactor(mode);
    Ok(redactor.outbound(table.iter(), set_version))
}

/// One outbound report as JSON: every field it carries on the wire.
fn report_json(r: &SightingReport) -> serde_json::Value {
    serde_json::json!({
        "indicator": r.indicator, "what": r.what, "observed": r.observed.name(),
        "location": r.location, "first_seen": r.first_seen, "last_seen": r.last_seen,
        "count": r.count, "set_version": r.set_version,
    })
}

/// One outbound report as a line of text: every field it carries on the wire.
fn report_line(r: &SightingReport) -> String {
    format!(
        "{} {} {} {} first {} last {} count {}",
        r.indicator,
        r.what,
        r.observed.name(),
        r.location.as_deref().unwrap_or("-"),
        rfc3339(r.first_seen),
        rfc3339(r.last_seen),
        r.count
    )
}

/// `sightings --outbound`: the reports the agent sends for the sightings recorded here.
fn print_outbound(state: &Path, config: Option<&Path>, json: bool, limits: &Limits) -> Result<ExitCode> {
    let config = state_config(state, config)?;
    let mode = config
        .as_ref()
        .map_or_else(Default::default, |(_, c)| c.sightings.location);
    eprintln!(
        "picket-agent: location = {:?} (from {})",
        mode.name(),
        config
            .as_ref()
            .map_or_else(|| "the default".to_owned(), |(p, _)| p.display().to_string())
    );
    for r in outbound_reports(state, mode, limits)? {
        if json {
            println!("{}", report_json(&r));
        } else {
            println!("{}", report_line(&r));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `explain` found in the spool.
struct Waiting {
    epoch: u64,
    last_seq: u64,
    dropped: u64,
    batches: Vec<Batch>,
}

/// The spool of `state`, read with the daemon's lock held so no daemon starts (or sends)
/// meanwhile; `None` when there is no spool yet. Opening it does what the daemon's start would
/// (damaged files set aside, copies of a crashed renumbering deleted) except dropping batches
/// over `spool_batches`: a command that only explains deletes no sighting.
fn read_spool(state: &Path) -> Result<Option<Waiting>> {
    if !state.join(spool::SPOOL_DIR).is_dir() {
        return Ok(None);
    }
    // The lock `picket-agent run` holds for its whole life (see `daemon::run`).
    let lock_path = state.join("daemon.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("{}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "{}: a daemon is running on this state directory (it holds {}): its spool changes as it sends, so what it sends next cannot be told exactly; stop it first (`picket-agent status` shows the spool depth meanwhile)",
            state.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("{}", lock_path.display()))
        }
    }
    let sp = Spool::open(state, usize::MAX)?;
    let waiting = Waiting {
        epoch: sp.epoch(),
        last_seq: sp.last_seq(),
        dropped: sp.dropped(),
        batches: sp.batches()?,
    };
    drop(lock);
    Ok(Some(waiting))
}

/// `explain`: the spool's batches as they will be sent, then the reports the recorded
/// sightings make now.
fn explain(state: &Path, config: Option<&Path>, json: bool, limits: &Limits) -> Result<ExitCode> {
    if !state.is_dir() {
        anyhow::bail!("{}: no such state directory", state.display());
    }
    let config = state_config(state, config)?;
    let mode = config
        .as_ref()
        .map_or_else(Default::default, |(_, c)| c.sightings.location);
    let collector = config
        .as_ref()
        .and_then(|(_, c)| c.collector.as_ref().map(|c| c.address.clone()));
    let limit = config.as_ref().map(|(_, c)| c.sightings.spool_batches);
    let waiting = read_spool(state)?;
    let reports = outbound_reports(state, mode, limits)?;
    if json {
        let spool = waiting.as_ref().map(|w| {
            serde_json::json!({
                "epoch": w.epoch,
                "last_seq": w.last_seq,
                "dropped": w.dropped,
                "limit": limit,
                "batches": w.batches.iter().map(|b| serde_json::json!({
                    "epoch": b.epoch,
                    "seq": b.seq,
                    "items": b.items.iter().map(report_json).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        });
        let v = serde_json::json!({
            "config": config.as_ref().map(|(p, _)| p.display().to_string()),
            "location": mode.name(),
            "collector": collector,
            "spool": spool,
            "sightings": reports.iter().map(report_json).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "location = {:?} (from {})",
        mode.name(),
        config.as_ref().map_or_else(
            || format!("the default: no {}", state.join("agent.toml").display()),
            |(p, _)| p.display().to_string()
        )
    );
    match &collector {
        Some(a) => println!("collector: {a}"),
        None => println!("collector: none configured: nothing leaves this host; the spool keeps what would"),
    }
    match &waiting {
        None => println!("spool: none yet, nothing waiting"),
        Some(w) => {
            println!(
                "spool: {} batch(es) waiting, epoch {:016x}, last sequence {}, {} sighting(s) dropped so far; sent in this order, exactly as below",
                w.batches.len(),
                w.epoch,
                w.last_seq,
                w.dropped
            );
            if let Some(limit) = limit.filter(|l| w.batches.len() > *l) {
                println!(
                    "  (more than spool_batches = {limit}: the daemon drops the oldest {} when it starts)",
                    w.batches.len() - limit
                );
            }
            for b in &w.batches {
                println!("batch {:016x}/{}: {} item(s)", b.epoch, b.seq, b.items.len());
                for r in &b.items {
                    println!("  {}", report_line(r));
                }
            }
        }
    }
    println!(
        "sightings recorded here: {} report(s); the next report about each carries these values (or newer ones)",
        reports.len()
    );
    for r in &reports {
        println!("  {}", report_line(r));
    }
    Ok(ExitCode::SUCCESS)
}

/// The daemon's part of `status --json`: `daemon`, `last_scan`, `spool`, `collector` (null
/// when no daemon ever wrote a status here).
fn add_daemon_json(v: &mut serde_json::Value, report: Option<&StatusReport>, wall: i64) {
    let Some(r) = report else {
        for key in ["daemon", "last_scan", "spool", "collector"] {
            v[key] = serde_json::Value::Null;
        }
        return;
    };
    v["daemon"] = serde_json::json!({
        "running": r.is_current(wall) && !r.stopped,
        "stopped": r.stopped,
        "pid": r.pid,
        "status_written": r.written,
        "status_age": r.age(wall),
        "agent_version": r.agent_version,
        "set_version": r.set.as_ref().map(|s| s.version),
        "fresh": r.set.as_ref().map(|s| s.fresh),
        "set_error": r.set_error,
        "sightings": r.sightings,
    });
    v["last_scan"] = serde_json::to_value(&r.last_scan).unwrap_or_default();
    v["spool"] = serde_json::to_value(&r.spool).unwrap_or_default();
    v["collector"] = serde_json::to_value(&r.collector).unwrap_or_default();
}

/// The daemon's part of `status`, in words.
fn print_daemon(report: Option<&StatusReport>, wall: i64) {
    let Some(r) = report else {
        println!("daemon: no status file here (the daemon has not run with this state directory)");
        return;
    };
    let age = r.age(wall);
    if r.stopped {
        println!("daemon: stopped at {} (pid {})", rfc3339(r.written), r.pid);
    } else if r.is_current(wall) {
        println!("daemon: running (pid {}, status written {age}s ago)", r.pid);
    } else {
        println!(
            "daemon: not running: its last status is {age}s old (written {}, pid {}); what follows is from then",
            rfc3339(r.written),
            r.pid
        );
    }
    match (&r.set, &r.set_error) {
        (_, Some(e)) => println!(
            "set in force: {}: {e}",
            r.set
                .as_ref()
                .map_or_else(|| "none".to_owned(), |s| format!("version {}", s.version))
        ),
        (Some(s), None) => println!("set in force: version {}", s.version),
        (None, None) => println!("set in force: none yet"),
    }
    match &r.last_scan {
        Some(l) => println!(
            "last full scan: finished {}, {} files, {} hashed, {:.1}s",
            rfc3339(l.finished),
            l.files,
            l.hashed,
            l.millis as f64 / 1000.0
        ),
        None => println!("last full scan: none finished yet"),
    }
    println!(
        "spool: {} batch(es) waiting, {} sighting(s) dropped (epoch {}, last sequence {})",
        r.spool.depth, r.spool.dropped, r.spool.epoch, r.spool.last_seq
    );
    let c = &r.collector;
    if !c.enrolled {
        println!("collector: not enrolled");
        return;
    }
    println!(
        "collector {}: {}, last contact {}{}",
        c.address.as_deref().unwrap_or("?"),
        if c.connected { "connected" } else { "not connected" },
        c.last_contact.map_or_else(|| "never".to_owned(), rfc3339),
        c.last_error
            .as_deref()
            .map_or_else(String::new, |e| format!(", last error: {e}"))
    );
}

struct Progress {
    started: Instant,
    last: Instant,
}

struct Printer<'s, W: Write> {
    json: bool,
    found: u64,
    set: &'s LoadedSet,
    stdout: W,
    progress: Option<Progress>,
}

impl<W: Write> Printer<'_, W> {
    fn print(&mut self, hit: &Hit, kind: &str, value: &str, digest: Option<String>) {
        let ind = match self.set.indicator(hit.record) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("picket-agent: record at {}: {e}", hit.record);
                return;
            }
        };
        self.found += 1;
        let line = if self.json {
            let mut v = serde_json::json!({
                "indicator": ind.id,
                "kind": hit.what.reported_kind(),
                "observed": kind,
                "severity": ind.meta.severity.to_string(),
                "tlp": ind.meta.tlp.to_string(),
                "source": ind.meta.source,
            });
            v[if kind == "file" { "path" } else { kind }] = value.into();
            v["value"] = digest.unwrap_or_else(|| value.to_owned()).into();
            v.to_string()
        } else {
            format!(
                "FOUND {kind} {value} {} {} {} [{} {}]",
                hit.what.reported_kind(),
                digest.unwrap_or_default(),
                ind.id,
                ind.meta.severity,
                ind.meta.tlp
            )
        };
        if self.progress.is_some() {
            eprint!("\r\x1b[K");
        }
        // A closed stdout (a pager quit early) must not crash the scan.
        let _ = writeln!(self.stdout, "{line}");
    }
}

impl<W: Write> Report for Printer<'_, W> {
    fn found(&mut self, path: &Path, hits: &[Hit], digests: &Digests) {
        for h in hits {
            let digest = match h.what {
                What::FileHash(k) => digests.get(k).map(hex::encode),
                _ => None,
            };
            self.print(h, "file", &path.to_string_lossy(), digest);
        }
    }

    fn error(&mut self, path: &Path, err: &io::Error) {
        if self.progress.is_some() {
            eprint!("\r\x1b[K");
        }
        eprintln!("picket-agent: {}: {err}", path.display());
    }

    fn tick(&mut self, stats: &scan::Stats) {
        let Some(p) = self.progress.as_mut() else { return };
        if p.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        p.last = Instant::now();
        let secs = p.started.elapsed().as_secs_f64().max(0.001);
        eprint!(
            "\r\x1b[Kscanning: {} files, {:.1} MB/s, {} errors",
            stats.files,
            stats.bytes as f64 / secs / 1e6,
            stats.errors
        );
    }
}

/// Matches running processes and live connections (for `scan --processes`).
fn scan_processes<W: Write>(set: &LoadedSet, out: &mut Printer<'_, W>) {
    let kinds = set.index().process_kinds();
    let mut buf = vec![0u8; 1 << 20];
    let mut hits = Vec::new();
    for p in host::Poller::new().snapshot() {
        let digests = if kinds.is_empty() {
            None
        } else {
            host::open_exe(&p)
                .ok()
                .and_then(|mut e| e.hash(kinds, &mut buf).ok().flatten())
        };
        hits.clear();
        set.match_process(&p, digests.as_ref(), &mut hits);
        let what = format!(
            "{} (pid {})",
            p.exe.as_ref().map_or(p.name.clone(), |e| e.display().to_string()),
            p.pid
        );
        for h in hits.clone() {
            let digest = match h.what {
                What::ProcessHash(k) => digests.as_ref().and_then(|d| d.get(k)).map(hex::encode),
                _ => None,
            };
            out.print(&h, "process", &what, digest);
        }
    }
    match host::net::read_sockets() {
        Ok(sockets) => {
            for s in sockets {
                hits.clear();
                set.index().match_addr(s.remote.ip(), &mut hits);
                for h in hits.clone() {
                    out.print(&h, "connection", &s.remote.to_string(), None);
                }
            }
        }
        Err(e) => eprintln!("picket-agent: /proc/net: {e}"),
    }
}
