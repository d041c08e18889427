//! `picket-agent`: the command line. Parses arguments, reads the clock, and maps errors to exit
//! codes; the work happens in the library.

#![forbid(unsafe_code)]

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use picket_agent::matcher::{Digests, FileMatch, Matcher};
use picket_agent::scan::{self, Report};
use picket_agent::store::{self, Imported, StateDir};
use picket_agent::AgentError;
use picket_proto::{rfc3339, Freshness, Limits, SetFile, TrustAnchor, Trusted};

const EXIT_HELP: &str = "Exit status: 0 success (for scan: nothing found), 1 scan found something, 2 error.";

#[derive(Parser)]
#[command(name = "picket-agent", version, about = "Picket endpoint agent", after_help = EXIT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        /// Files and directories to scan.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Show the installed set: version, channel, freshness.
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

fn read_anchor(path: &Path) -> Result<TrustAnchor> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading trust anchor {}", path.display()))?;
    TrustAnchor::parse(&text).with_context(|| format!("trust anchor {}", path.display()))
}

fn run(cli: Cli) -> Result<ExitCode> {
    let limits = Limits::default();
    match cli.command {
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
            let decoded = trusted
                .snapshot()
                .indicators()
                .map_err(|e| anyhow::anyhow!("set version {}: {e}", trusted.manifest().version))?;
            let matcher = Matcher::compile(decoded);
            if matcher.unknown_kinds() > 0 {
                eprintln!(
                    "picket-agent: note: {} indicator(s) of kinds this agent does not know were skipped",
                    matcher.unknown_kinds()
                );
            }
            for (kind, n) in matcher.not_matched() {
                eprintln!("picket-agent: note: {n} {kind} indicator(s) are not matched by a file scan");
            }
            let opts = scan::Options {
                max_file_size,
                one_filesystem: !cross_filesystems,
            };
            let mut out = Printer {
                json,
                found: 0,
                stdout: io::stdout().lock(),
            };
            let stats = scan::scan(&matcher, &paths, &opts, &mut out);
            if io::stderr().is_terminal() || !json {
                eprintln!(
                    "picket-agent: scanned {} files ({} hashed, {} bytes), {} skipped, {} errors, {} finding(s); set version {}",
                    stats.files,
                    stats.hashed,
                    stats.bytes,
                    stats.skipped,
                    stats.errors,
                    out.found,
                    trusted.manifest().version
                );
            }
            Ok(if out.found > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Status { state, json } => {
            let t =
                store::load_set(&state, &limits)?.ok_or_else(|| AgentError::NoSet { path: state.clone() })?;
            let wall = wall_clock();
            let (fresh, detail) = match t.freshness(wall) {
                Freshness::Fresh { until } => (true, format!("fresh until {}", rfc3339(until))),
                Freshness::Stale { what, expired_at } => {
                    (false, format!("stale: {what} expired at {}", rfc3339(expired_at)))
                }
            };
            if json {
                let v = serde_json::json!({
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
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

struct Printer<W: Write> {
    json: bool,
    found: u64,
    stdout: W,
}

impl<W: Write> Report for Printer<W> {
    fn found(&mut self, path: &Path, matches: &[FileMatch<'_>], digests: &Digests) {
        for m in matches {
            self.found += 1;
            let value = match m.kind {
                picket_proto::HashKind::Sha256 => digests.sha256.map(hex::encode),
                picket_proto::HashKind::Sha1 => digests.sha1.map(hex::encode),
                picket_proto::HashKind::Md5 => digests.md5.map(hex::encode),
            }
            .unwrap_or_default();
            let line = if self.json {
                serde_json::json!({
                    "indicator": m.indicator.id,
                    "kind": m.kind.name(),
                    "value": value,
                    "path": path.to_string_lossy(),
                    "severity": m.indicator.meta.severity.to_string(),
                    "tlp": m.indicator.meta.tlp.to_string(),
                    "source": m.indicator.meta.source,
                })
                .to_string()
            } else {
                format!(
                    "FOUND {} {} {} {} [{} {}]",
                    path.display(),
                    m.kind.name(),
                    value,
                    m.indicator.id,
                    m.indicator.meta.severity,
                    m.indicator.meta.tlp
                )
            };
            // A closed stdout (a pager quit early) must not crash the scan.
            let _ = writeln!(self.stdout, "{line}");
        }
    }

    fn error(&mut self, path: &Path, err: &io::Error) {
        eprintln!("picket-agent: {}: {err}", path.display());
    }
}
