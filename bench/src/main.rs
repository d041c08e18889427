//! `picket-bench`: Picket's benchmarks. Each one runs Picket and a baseline side by side on the
//! same data in the same run and prints the ratio, so the figures in BENCHMARKS.md do not
//! depend on the machine being the same from one day to the next.
//!
//! Run in release: `cargo run --release -p picket-bench -- all` (or one benchmark by name, and
//! `--quick` for the small smoke sizes CI uses).

#![forbid(unsafe_code)]

mod budget;
mod channel;
mod clamav;
mod daemon;
mod data;
mod delta;
mod hash;
mod ingest;
mod rescan;
mod rss;
mod taxii;

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "picket-bench",
    about = "Picket benchmarks, each against a baseline on the same data"
)]
struct Cli {
    /// Small sizes, for a smoke run.
    #[arg(long, global = true)]
    quick: bool,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// SHA-256 of page-cached large files, one thread, against `openssl dgst -sha256`.
    Hash,
    /// Applying a delta of 10 000 changes to a 1 M-indicator set.
    Delta,
    /// Where the time of a delta apply goes.
    DeltaParts,
    /// A first scan of 100 000 small files against a rescan served by the hash cache, and
    /// against `find`.
    Rescan,
    /// The daemon's resident memory holding 1 M and 10 000 SHA-256 indicators, against the
    /// set's size on disk.
    Rss,
    /// The daemon's CPU share while scanning under a 10 % budget, against a 100 % budget.
    Budget,
    /// A first scan against `clamscan` with the same SHA-256 hashes on the same tree.
    Clamav,
    /// The collector: ingest of a 1 M-indicator STIX bundle against Python's `json.load`, of a
    /// 1 M-line list against `sort -u`, publish, and the size of deltas.
    Ingest,
    /// The live channel: `picket-collector serve` against many simulated agents speaking the
    /// real protocol: publish latency to every connected agent, collector memory per session,
    /// the sightings ingest rate against direct SQLite inserts, and its CPU per agent.
    Channel {
        /// How many agents (default 10 000; `--quick`: 1 000).
        #[arg(long)]
        agents: Option<usize>,
    },
    /// TAXII 2.1 read throughput: full paged reads of the same STIX sightings from
    /// `picket-collector serve --http` and from medallion (PyPI), one client for both.
    Taxii {
        /// How many sightings are served (default 1 000; `--quick`: 300).
        #[arg(long)]
        objects: Option<usize>,
    },
    /// Every benchmark.
    All,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let quick = cli.quick;
    match cli.bench {
        Bench::Hash => hash::run(quick),
        Bench::Delta => delta::run(quick),
        Bench::DeltaParts => delta::parts(),
        Bench::Rescan => rescan::run(quick),
        Bench::Rss => rss::run(quick),
        Bench::Budget => budget::run(quick),
        Bench::Clamav => clamav::run(quick),
        Bench::Ingest => ingest::run(quick),
        Bench::Channel { agents } => channel::run(agents, quick),
        Bench::Taxii { objects } => taxii::run(objects, quick),
        Bench::All => {
            hash::run(quick)?;
            delta::run(quick)?;
            // rescan and clamav share one tree: writing it is the slow part.
            let tree = rescan::small_file_tree(quick)?;
            rescan::run_on(&tree)?;
            clamav::run_on(&tree, quick)?;
            drop(tree);
            rss::run(quick)?;
            budget::run(quick)?;
            ingest::run(quick)?;
            channel::run(None, quick)?;
            taxii::run(None, quick)
        }
    }
}

/// The workspace binary `name` built next to this one (`target/release/NAME`): the benchmarks
/// measure the real release binaries.
pub fn built_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding picket-bench's own path")?;
    let dir = exe.parent().context("picket-bench has no parent directory")?;
    let path = dir.join(name);
    ensure!(
        path.is_file(),
        "{} is missing: build it first with `cargo build --release --bins`",
        path.display()
    );
    Ok(path)
}

/// Prints one result line in the form BENCHMARKS.md quotes.
pub fn report(name: &str, figures: &str, verdict: Option<(bool, &str)>) {
    match verdict {
        Some((ok, target)) => println!(
            "{name}: {figures} [target {target}: {}]",
            if ok { "met" } else { "MISSED" }
        ),
        None => println!("{name}: {figures}"),
    }
}
