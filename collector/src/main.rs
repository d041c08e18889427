//! `picket-collector`: the command line. Parses arguments, reads the clock and files, and maps
//! errors to exit codes; the work happens in the library.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use picket_collector::datadir::{self, DataDir};
use picket_collector::export;
use picket_collector::ingest::{self, Defaults};
use picket_collector::parse_duration;
use picket_collector::pki::{self, Pki};
use picket_collector::policy::{Candidate, Policy};
use picket_collector::publish::{self, Input};
use picket_collector::rootdoc::{self, Rotation};
use picket_collector::store::Publication;
use picket_proto::{rfc3339, PublicKey, Role, Severity, SigningKey, Snapshot, Tlp};

const EXIT_HELP: &str = "Exit status: 0 success, 2 error (the message on stderr names what failed).";

#[derive(Parser)]
#[command(name = "picket-collector", version, about = "Picket collector: ingest indicators, publish signed sets", after_help = EXIT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How logs on stderr look: text (the classic lines) or json (one object a line, for a log
    /// shipper). PICKET_LOG filters them (e.g. warn; default info).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    log_format: picket_collector::logging::Format,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: configuration, online keys, database, root version 1 and the
    /// trust anchor (root.pub). The root private key is written apart from DIR.
    Init {
        /// The data directory to create.
        #[arg(long)]
        data: PathBuf,
        /// The organisation's name.
        #[arg(long, default_value = "Picket")]
        org: String,
        /// Where to write the root private key (default: beside DIR, as DIR.root-OFFLINE.key).
        #[arg(long)]
        root_key: Option<PathBuf>,
        /// A DNS name or IP address agents use to reach the collector, put into the agent
        /// channel's server certificate beside localhost, 127.0.0.1 and ::1 (repeatable).
        #[arg(long = "tls-name", value_name = "NAME")]
        tls_names: Vec<String>,
    },
    /// Enrolment tokens: each lets agents enrol (and nothing else), a limited number of times,
    /// until it expires.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enrolled agents: list them, revoke one.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Ingest indicator files. Each file is all or nothing: a bad line stores nothing from it.
    Ingest {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The source name to record (default: the file name).
        #[arg(long)]
        source: Option<String>,
        /// TLP for these indicators (default: ingest.default_tlp in picket.toml).
        #[arg(long)]
        tlp: Option<String>,
        /// Read the files as CSV, taking the indicator from this column (a 0-based number or
        /// a header name). Files named *.csv are read as CSV with column 0 by default.
        #[arg(long)]
        csv_column: Option<String>,
        /// The CSV field delimiter (default `,`).
        #[arg(long)]
        csv_delimiter: Option<char>,
        /// Files to ingest.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Compile and sign a new set version on every channel, with deltas from recent versions.
    Publish {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Manifest lifetime, overriding the channel's configuration (e.g. 10m, 30d).
        #[arg(long)]
        lifetime: Option<String>,
        /// Timestamp lifetime, overriding the channel's configuration.
        #[arg(long)]
        timestamp_lifetime: Option<String>,
        /// Publish a new version even when the content has not changed.
        #[arg(long)]
        force: bool,
    },
    /// Re-sign freshness for the current set version (the set version does not change).
    Timestamp {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The channel.
        #[arg(long, default_value = "default")]
        channel: String,
        /// Timestamp lifetime (default: the channel's configuration). Offline sites want days.
        #[arg(long)]
        lifetime: Option<String>,
    },
    /// Write the current signed set, with the root chain it needs, to one file.
    ExportSet {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        /// The channel.
        #[arg(long, default_value = "default")]
        channel: String,
        /// Carry a delta from this set version instead of the full snapshot.
        #[arg(long)]
        since: Option<u64>,
    },
    /// Root documents: made, signed and rotated on an offline machine.
    #[command(subcommand)]
    Root(RootCommand),
    /// Online keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The stored indicators: list, show, search, and what was not supported.
    #[command(subcommand)]
    Indicators(IndicatorsCommand),
    /// The operator's allowlist: values that never reach agents.
    #[command(subcommand)]
    Allowlist(AllowlistCommand),
    /// Registered sources: what to pull, how often, and what they may put on endpoints.
    #[command(subcommand)]
    Source(SourceCommand),
    /// Pull every registered source now (or one), and store what they hold.
    Pull {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
    },
    /// Run the collector: pull sources on their schedules, publish after ingest (batched), and
    /// re-sign freshness before it runs out. Refuses to start if a root private key is readable.
    Serve {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Publish at most this often after changes (e.g. 10s).
        #[arg(long, default_value = "10s")]
        batch: String,
        /// Where the agent channel listens (ADDR:PORT; default: channel.listen in picket.toml,
        /// 0.0.0.0:7443 unless changed). Port 0 picks a free port; the address bound is printed.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<String>,
        /// Also run the TAXII 2.1 server (HTTPS, the channel's certificate) on ADDR:PORT, for
        /// the members in [[taxii.member]]. Port 0 picks a free port; the address is printed.
        #[arg(long, value_name = "ADDR:PORT")]
        http: Option<String>,
    },
    /// Sightings reported by agents, aggregated: one line per indicator with the hosts that saw
    /// it, the total count, first and last seen, the indicator kinds, what it was seen on, and
    /// its false-positive mark. `sightings fp` marks false positives.
    Sightings(SightingsArgs),
    /// Members of the TAXII server (`[[taxii.member]]` in picket.toml): `member add`.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Operators of the dashboard (`serve --http`, https://ADDR:PORT/ui/): `operator add`.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Alarms about agents (quiet, sequence-gap, lagging, clone, spool-dropped): the open ones.
    Alarms {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
        /// Cleared alarms too.
        #[arg(long)]
        all: bool,
    },
    /// Sharing sightings with communities (`[[community]]` in picket.toml).
    #[command(subcommand)]
    Share(ShareCommand),
    /// Prometheus metrics on `serve --http`'s GET /metrics: `metrics token` turns them on.
    #[command(subcommand)]
    Metrics(MetricsCommand),
}

#[derive(Subcommand)]
enum MetricsCommand {
    /// Write a new bearer token for GET /metrics to DIR/keys/metrics.token (0600, replacing any
    /// older one) and print it once. Without that file /metrics answers 404; a running `serve`
    /// takes the new token at the next request.
    Token {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum ShareCommand {
    /// Print exactly the STIX 2.1 bundle community NAME would receive now (pretty JSON; one
    /// line with --json), and on stderr what was held back and why.
    Preview {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The community's name.
        #[arg(long, value_name = "NAME")]
        community: String,
        /// The bundle on one line.
        #[arg(long)]
        json: bool,
    },
    /// Push community NAME's bundle (exactly what `share preview` prints) to each of its
    /// `[[community.upstream]]` collections with push = true, each object version once; print
    /// per upstream what was sent, what was there already and what failed. Exit 2 if any
    /// upstream or object failed (the next push retries them).
    Push {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The community's name.
        #[arg(long, value_name = "NAME")]
        community: String,
        /// One JSON object a line, one per upstream.
        #[arg(long)]
        json: bool,
    },
    /// Pull the sightings other organisations added to community NAME's upstream collections
    /// with pull = true since the last pull; each upstream counts as one organisation,
    /// `upstream:<name>`. Exit 2 if any upstream failed.
    Pull {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The community's name.
        #[arg(long, value_name = "NAME")]
        community: String,
        /// One JSON object a line, one per upstream.
        #[arg(long)]
        json: bool,
    },
    /// Write community NAME's shared sightings as MISP sighting JSON (an array, each element
    /// the body of one POST /sightings/add), to FILE or stdout.
    MispSightings {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The community's name.
        #[arg(long, value_name = "NAME")]
        community: String,
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Write community NAME's shared indicators as a MISP feed directory (manifest.json and
    /// one event file).
    MispFeed {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The community's name.
        #[arg(long, value_name = "NAME")]
        community: String,
        /// The feed directory (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

// Parsed once at start-up: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum SourceCommand {
    /// Register a source.
    Add {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Its name (recorded with each indicator it brings).
        #[arg(long)]
        name: String,
        /// list, csv, stix, misp (a file), misp-feed (a directory with manifest.json) or taxii.
        #[arg(long)]
        kind: String,
        /// The file, the directory, or the TAXII API root URL.
        #[arg(long)]
        location: String,
        /// The TAXII collection id.
        #[arg(long)]
        collection: Option<String>,
        /// The TAXII user name (HTTP Basic).
        #[arg(long)]
        username: Option<String>,
        /// A file holding the TAXII password (read once, stored in the 0600 database; never on
        /// the command line, which other users can read).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// A PEM CA file: the only roots trusted for the TAXII server's certificate.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// TLP for what it does not mark.
        #[arg(long, default_value = "green")]
        tlp: String,
        /// Confidence (0-100) for what it does not say.
        #[arg(long, default_value_t = 50)]
        confidence: u8,
        /// How often `serve` pulls it.
        #[arg(long, default_value = "1h")]
        every: String,
        /// Trust it to put names, globs, paths and command lines on endpoints.
        #[arg(long)]
        trusted: bool,
        /// How long its indicators stay valid when it does not say (renewed while it still
        /// carries them), e.g. 30d.
        #[arg(long)]
        lifetime: Option<String>,
    },
    /// The registered sources (credentials are never shown).
    List {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Remove a source; its indicators stay, remembering it.
    Remove {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The name.
        name: String,
    },
}

#[derive(Subcommand)]
enum IndicatorsCommand {
    /// Every stored indicator, with whether the next publish includes it and why not, and how
    /// many organisations saw it when any did (this one, and each community account whose
    /// sightings name it).
    List {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
        /// Most confirmed first: sorted by how many organisations saw each indicator.
        #[arg(long)]
        by_organisations: bool,
    },
    /// One indicator in full.
    Show {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// The indicator id.
        id: String,
    },
    /// Indicators whose id, value or source contains TEXT (case-insensitive).
    Search {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
        /// The text.
        text: String,
    },
    /// What sources held that was not turned into indicators, and why.
    Unsupported {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
}

/// `member add ...`.
#[derive(Subcommand)]
enum MemberCommand {
    /// Adds a TAXII member to picket.toml, who may read the `sightings` collection of each
    /// --community and post to the `contributions` collection of each --contribute (at least
    /// one of the two). The password (the first line of --password-file) is stored salted and
    /// stretched (PBKDF2-SHA256), never itself. `serve` reads members when it starts.
    Add {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// A community the member may read (repeat for more).
        #[arg(long, required_unless_present = "contribute")]
        community: Vec<String>,
        /// A community the member may contribute sightings and indicators to (repeat for
        /// more). What it posts counts as one organisation, this member, towards the k.
        #[arg(long)]
        contribute: Vec<String>,
        /// The member organisation's sector, as STIX names it (for example
        /// `financial-services`), for communities with `disclosure = "sector"`.
        #[arg(long)]
        sector: Option<String>,
        /// The member's user name.
        #[arg(long)]
        name: String,
        /// A file whose first line is the password (delete it afterwards).
        #[arg(long)]
        password_file: PathBuf,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Adds an operator who may log in to the dashboard. The password (the first line of
    /// --password-file) is stored salted and stretched (PBKDF2-SHA256) in the database, never
    /// itself. A running `serve` sees the new operator at once.
    Add {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The operator's login name.
        #[arg(long)]
        name: String,
        /// A file whose first line is the password (delete it afterwards).
        #[arg(long)]
        password_file: PathBuf,
    },
}

/// `sightings [--json]`, or `sightings fp ...`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SightingsArgs {
    /// The data directory.
    #[arg(long, required = true)]
    data: Option<PathBuf>,
    /// One JSON object a line: indicator, hosts, organisations (this one and each community
    /// account that saw it), count, first_seen, last_seen (RFC 3339), what, observed,
    /// false_positive (null, or its reason and marked_at).
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Option<SightingsCommand>,
}

#[derive(Subcommand)]
enum SightingsCommand {
    /// Mark INDICATOR a false positive: every publish from now on leaves it out of every
    /// channel's set (so agents stop matching it) until `--undo`. `--list` shows the marks.
    Fp {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Why it is a false positive (shown wherever the mark takes effect; shared with
        /// communities with the mark, so name no person, host or internal address).
        #[arg(long, required_unless_present_any = ["undo", "list"], conflicts_with_all = ["undo", "list"])]
        reason: Option<String>,
        /// Remove the mark: the next publish puts the indicator back.
        #[arg(long, conflicts_with = "list")]
        undo: bool,
        /// List the marks: indicator, reason, when marked.
        #[arg(long)]
        list: bool,
        /// With --list: one JSON object a line (indicator, reason, marked_at in RFC 3339).
        #[arg(long, requires = "list")]
        json: bool,
        /// The indicator id.
        #[arg(required_unless_present = "list", conflicts_with = "list")]
        indicator: Option<String>,
    },
}

#[derive(Subcommand)]
enum AllowlistCommand {
    /// Never publish VALUE (a digest, an address or a network).
    Add {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Why (shown wherever the entry takes effect).
        #[arg(long)]
        reason: String,
        /// The value.
        value: String,
    },
    /// Import a warninglist: a MISP warninglist (JSON with `name` and `list`) or a plain list
    /// (one value a line, `#` comments). Values that are not digests, addresses or networks
    /// (domains, for example) are counted and left out.
    Import {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The file.
        file: PathBuf,
    },
    /// The operator's entries (the built-in ones are listed too).
    List {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Remove an entry.
    Remove {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The value.
        value: String,
    },
}

#[derive(Subcommand)]
enum RootCommand {
    /// Generate a root private key (offline). Prints its public key.
    Keygen {
        /// The key file to write (0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a root document.
    Show {
        /// The root file.
        file: PathBuf,
    },
    /// Write the root in force to a file, to carry to the offline machine.
    Export {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make the next root version from the current one (offline), signed by --sign keys. It
    /// needs the old root threshold and the new one; more signatures can be added with `sign`.
    Rotate {
        /// The current root file.
        #[arg(long)]
        current: PathBuf,
        /// The new root file to write.
        #[arg(long)]
        out: PathBuf,
        /// Root public keys to add (ed25519:<hex>).
        #[arg(long)]
        add_key: Vec<String>,
        /// Root public keys to remove.
        #[arg(long)]
        remove_key: Vec<String>,
        /// The new root threshold.
        #[arg(long)]
        threshold: Option<u8>,
        /// The channel whose online keys change.
        #[arg(long, default_value = "default")]
        channel: String,
        /// New publisher public keys for the channel (replacing the old).
        #[arg(long)]
        publisher: Vec<String>,
        /// New timestamp public keys for the channel (replacing the old).
        #[arg(long)]
        timestamp: Vec<String>,
        /// The new root's lifetime (default 365d).
        #[arg(long)]
        lifetime: Option<String>,
        /// Root private key files to sign with.
        #[arg(long)]
        sign: Vec<PathBuf>,
    },
    /// Add a signature to a root file, in place (offline).
    Sign {
        /// The root private key file.
        #[arg(long)]
        key: PathBuf,
        /// The root file.
        file: PathBuf,
    },
    /// Install a root version made offline; it must chain from the root in force.
    Install {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The root file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token. It alone goes to stdout (hand it to `picket-agent enroll --token-file`);
    /// its id, uses and expiry go to stderr. Only its hash is stored: it cannot be shown again.
    Create {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// How many agents may enrol with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it stays valid (e.g. 1h, 7d; default: enrolment.default_token_expiry in
        /// picket.toml, 24h unless changed).
        #[arg(long)]
        expires: Option<String>,
    },
    /// The tokens: id, created, expires, uses left, used, revoked (never the secret).
    List {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: no agent enrols with it from now on (agents already enrolled stay).
    Revoke {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The token's id (as `token list` shows it).
        #[arg(value_name = "TOKEN-ID")]
        id: String,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// The enrolled agents: id, channel, enrolment, last seen, certificate expiry, revocation,
    /// suspected clones, and what their last heartbeat said.
    List {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an agent: a running `serve` ends its live sessions within a second and refuses
    /// it from then on.
    Revoke {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The agent's id (as `agents list` shows it).
        #[arg(value_name = "AGENT")]
        id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OnlineRole {
    Publisher,
    Timestamp,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a new online key, to be named in the next root by `root rotate`.
    New {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The role.
        #[arg(long, value_enum)]
        role: OnlineRole,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    picket_collector::logging::init(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("picket-collector: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn share_preview(data: &Path, community: &str, json: bool) -> anyhow::Result<()> {
    let dir = DataDir::open(data)?;
    let p = picket_collector::share::preview(&dir, community, now())?;
    let text = if json {
        serde_json::to_string(&p.bundle)?
    } else {
        serde_json::to_string_pretty(&p.bundle)?
    };
    println!("{text}");
    eprintln!(
        "community {community}: {} indicator{} shared, {} held back",
        p.shared,
        if p.shared == 1 { "" } else { "s" },
        p.held.len()
    );
    for (id, why) in &p.held {
        eprintln!("  held {id}: {} ({why})", why.tag());
    }
    if let Some(withheld) = &p.sector_withheld {
        eprintln!("  {withheld}");
    }
    Ok(())
}

/// `share push`: one line (or JSON object) per upstream; exit 2 if any failed.
fn share_push(data: &Path, community: &str, json: bool) -> anyhow::Result<()> {
    let dir = DataDir::open(data)?;
    let reports = picket_collector::share::upstream::push(&dir, community, now())?;
    print_upstream_reports("push", community, &reports, json, |r| {
        let mut text = format!(
            "upstream {} ({}): {} sent, {} already there, {} unchanged, {} failed, {} pending, {} retr{}",
            r.upstream,
            r.url,
            r.sent,
            r.already,
            r.unchanged,
            r.failed.len(),
            r.pending,
            r.retries,
            if r.retries == 1 { "y" } else { "ies" }
        );
        for f in &r.failed {
            text.push_str(&format!("\n  failed {} {}: {}", f.id, f.version, f.reason));
        }
        let failure = match &r.error {
            Some(e) => Some(format!("upstream {} ({}): {e}", r.upstream, r.url)),
            None if !r.failed.is_empty() => Some(format!(
                "upstream {} ({}): {} object{} failed",
                r.upstream,
                r.url,
                r.failed.len(),
                if r.failed.len() == 1 { "" } else { "s" }
            )),
            None => None,
        };
        (text, failure)
    })
}

/// `share pull`: one line (or JSON object) per upstream; exit 2 if any failed.
fn share_pull(data: &Path, community: &str, json: bool) -> anyhow::Result<()> {
    let dir = DataDir::open(data)?;
    let reports = picket_collector::share::upstream::pull(&dir, community, now())?;
    print_upstream_reports("pull", community, &reports, json, |r| {
        let mut text = format!(
            "upstream {} ({}): {} received, {} taken, {} our own, {} refused, bookmark {}",
            r.upstream,
            r.url,
            r.received,
            r.taken,
            r.own,
            r.refused.len(),
            r.bookmark.as_deref().unwrap_or("none")
        );
        for x in &r.refused {
            text.push_str(&format!("\n  refused {}: {}", x.id, x.reason));
        }
        let failure = r
            .error
            .as_ref()
            .map(|e| format!("upstream {} ({}): {e}", r.upstream, r.url));
        (text, failure)
    })
}

/// Prints one report per upstream of `share push` or `share pull` (`verb`): as JSON, or as the
/// text `describe` makes; then fails naming every upstream that `describe` says failed.
fn print_upstream_reports<R: serde::Serialize>(
    verb: &str,
    community: &str,
    reports: &[R],
    json: bool,
    describe: impl Fn(&R) -> (String, Option<String>),
) -> anyhow::Result<()> {
    if reports.is_empty() {
        eprintln!("community {community}: no upstream with {verb} = true");
    }
    let mut failed = Vec::new();
    for r in reports {
        let (text, failure) = describe(r);
        if json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            println!("{text}");
        }
        failed.extend(failure);
    }
    if !failed.is_empty() {
        bail!("share {verb}: {}", failed.join("; "));
    }
    Ok(())
}

fn share_misp_sightings(data: &Path, community: &str, out: Option<&Path>) -> anyhow::Result<()> {
    use picket_collector::share::misp_out;
    let dir = DataDir::open(data)?;
    let export = misp_out::export(&dir, community, &std::collections::BTreeMap::new(), now())?;
    let text = serde_json::to_string_pretty(&misp_out::sightings(&export))?;
    match out {
        Some(path) => fs::write(path, text + "\n").with_context(|| format!("{}", path.display()))?,
        None => println!("{text}"),
    }
    eprintln!(
        "community {community}: {} indicator{} shared",
        export.items.len(),
        if export.items.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

fn share_misp_feed(data: &Path, community: &str, out: &Path) -> anyhow::Result<()> {
    use picket_collector::share::misp_out;
    let dir = DataDir::open(data)?;
    let export = misp_out::export(&dir, community, &std::collections::BTreeMap::new(), now())?;
    let feed = misp_out::feed(&export, now());
    misp_out::write_feed(out, &feed)?;
    let n = feed.event["Event"]["Attribute"].as_array().map_or(0, Vec::len);
    eprintln!(
        "community {community}: event {} with {n} attribute{} in {}",
        feed.uuid,
        if n == 1 { "" } else { "s" },
        out.display()
    );
    Ok(())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn duration(flag: &str, text: &str) -> Result<u64> {
    parse_duration(text)
        .with_context(|| format!("{flag}: {text:?} is not a duration such as 90s, 15m, 12h, 30d"))
}

fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let meta = fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if meta.len() > cap {
        bail!(
            "{}: {} bytes is more than the {} bytes accepted",
            path.display(),
            meta.len(),
            cap
        );
    }
    fs::read(path).with_context(|| format!("{}", path.display()))
}

fn read_key(path: &Path) -> Result<SigningKey> {
    let text = fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    SigningKey::from_file_text(&text).with_context(|| format!("{}", path.display()))
}

fn public_keys(flag: &str, values: &[String]) -> Result<Vec<PublicKey>> {
    values
        .iter()
        .map(|v| PublicKey::parse(v).with_context(|| format!("{flag} {v}")))
        .collect()
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init {
            data,
            org,
            root_key,
            tls_names,
        } => {
            let made = DataDir::init_with_names(&data, &org, root_key.as_deref(), &tls_names, now())?;
            println!("initialised {}", made.data.display());
            let tls = made.data.join(pki::TLS_DIR);
            println!(
                "agent channel CA: {} (pin {}); server certificate {} for localhost, 127.0.0.1, ::1{}",
                tls.join(pki::CA_CERT).display(),
                hex::encode(Pki::own_ca_pin(&tls)?),
                tls.join(pki::SERVER_CERT).display(),
                tls_names.iter().map(|n| format!(", {n}")).collect::<String>()
            );
            println!("trust anchor for agents: {}", made.anchor.display());
            println!(
                "root private key: {}\n  It belongs OFFLINE: move it to offline storage now. `serve` refuses to start while it can read it.",
                made.root_key.display()
            );
            Ok(())
        }
        Command::Ingest {
            data,
            source,
            tlp,
            csv_column,
            csv_delimiter,
            files,
        } => {
            let csv = (csv_column.is_some() || csv_delimiter.is_some()).then(|| ingest::CsvOptions {
                column: match &csv_column {
                    Some(c) => c
                        .parse()
                        .map_or_else(|_| ingest::CsvColumn::Name(c.clone()), ingest::CsvColumn::Index),
                    None => ingest::CsvColumn::Index(0),
                },
                delimiter: csv_delimiter.unwrap_or(','),
                ..ingest::CsvOptions::default()
            });
            let dir = DataDir::open(&data)?;
            let tlp = match tlp {
                Some(t) => Tlp::parse(&t).with_context(|| format!("--tlp {t:?} is not a TLP level"))?,
                None => dir.config().default_tlp(&dir.config_path())?,
            };
            let mut store = dir.store()?;
            let mut failed = 0;
            for file in &files {
                let result = (|| -> Result<_, anyhow::Error> {
                    let defaults = Defaults {
                        source: source.clone().unwrap_or_else(|| {
                            file.file_name()
                                .map_or("list".into(), |n| n.to_string_lossy().into_owned())
                        }),
                        tlp,
                        confidence: dir.config().ingest.default_confidence,
                        severity: Severity::Medium,
                    };
                    let batch = if file.is_dir() {
                        // A MISP feed directory: manifest.json and one file per event.
                        ingest::parse_feed_dir(file, &defaults)?
                    } else {
                        let text = picket_collector::sources::read_text(file)?;
                        match &csv {
                            Some(opts) => ingest::parse_csv(file, &text, opts, &defaults)?,
                            None => ingest::parse_file(file, &text, &defaults)?,
                        }
                    };
                    let up = store.upsert_batch(&batch, &defaults.source, now())?;
                    Ok((batch.items.len(), up, batch.unsupported_by_reason()))
                })();
                match result {
                    Ok((n, up, unsupported)) => {
                        println!(
                            "{}: {n} indicators ({} new, {} updated, {} older than what is stored and kept out)",
                            file.display(),
                            up.added,
                            up.updated,
                            up.older
                        );
                        for (reason, count) in unsupported {
                            println!("  unsupported: {count} x {reason}");
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("picket-collector: error: {e:#}; nothing from this file was stored");
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} file(s) failed", files.len());
            }
            Ok(())
        }
        Command::Publish {
            data,
            lifetime,
            timestamp_lifetime,
            force,
        } => {
            let dir = DataDir::open(&data)?;
            let mut store = dir.store()?;
            let lifetime = lifetime.map(|l| duration("--lifetime", &l)).transpose()?;
            let ts_lifetime = timestamp_lifetime
                .map(|l| duration("--timestamp-lifetime", &l))
                .transpose()?;
            publish_channels(&dir, &mut store, lifetime, ts_lifetime, force, now())
        }
        Command::Timestamp {
            data,
            channel,
            lifetime,
        } => {
            let dir = DataDir::open(&data)?;
            let mut store = dir.store()?;
            let ch = dir.config().channel(&channel, &dir.config_path())?;
            let lifetime = match lifetime {
                Some(l) => duration("--lifetime", &l)?,
                None => ch.timestamp_lifetime,
            };
            restamp(&dir, &mut store, &channel, lifetime, now())
        }
        Command::ExportSet {
            data,
            out,
            channel,
            since,
        } => {
            let dir = DataDir::open(&data)?;
            let store = dir.store()?;
            let (_, chain) = dir.current_root(&store)?;
            let carry = since.map_or(export::Carry::Full, export::Carry::Delta);
            let file = export::latest_set_file(&store, &chain, &channel, carry)?;
            datadir::replace(&out, &file.bytes, 0o600)?;
            println!(
                "wrote {} ({} bytes): set version {}, timestamp version {}, fresh until {}",
                out.display(),
                file.bytes.len(),
                file.version,
                file.timestamp_version,
                rfc3339(file.expires)
            );
            Ok(())
        }
        Command::Keys(KeysCommand::New { data, role }) => {
            let dir = DataDir::open(&data)?;
            let role = match role {
                OnlineRole::Publisher => Role::Publisher,
                OnlineRole::Timestamp => Role::Timestamp,
            };
            let (path, public) = dir.new_online_key(role)?;
            eprintln!(
                "wrote {}; name it in the next root with `root rotate --{role} {public}`",
                path.display()
            );
            println!("{public}");
            Ok(())
        }
        Command::Root(cmd) => root_command(cmd),
        Command::Token(cmd) => token_command(cmd),
        Command::Agents(cmd) => agents_command(cmd),
        Command::Indicators(cmd) => indicators_command(cmd),
        Command::Source(cmd) => source_command(cmd),
        Command::Pull { data, source } => {
            let dir = DataDir::open(&data)?;
            let mut store = dir.store()?;
            let mut failed = 0;
            let sources = store.sources()?;
            if let Some(name) = &source {
                if !sources.iter().any(|s| &s.name == name) {
                    bail!("no source named {name:?}; `source list` shows them");
                }
            }
            for src in sources
                .iter()
                .filter(|s| source.as_ref().is_none_or(|n| n == &s.name))
            {
                match pull_one(&mut store, src, now()) {
                    Ok(summary) => println!("{summary}"),
                    Err(e) => {
                        failed += 1;
                        eprintln!(
                            "picket-collector: error: source {}: {e:#}; nothing from it was stored",
                            src.name
                        );
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} source(s) failed");
            }
            Ok(())
        }
        Command::Serve {
            data,
            batch,
            listen,
            http,
        } => serve(
            &data,
            duration("--batch", &batch)?,
            listen.as_deref(),
            http.as_deref(),
        ),
        Command::Operator(OperatorCommand::Add {
            data,
            name,
            password_file,
        }) => {
            let text = std::fs::read_to_string(&password_file)
                .with_context(|| format!("reading {}", password_file.display()))?;
            let password = text.lines().next().unwrap_or("");
            picket_collector::web::add_operator(&data, &name, password, now())?;
            println!(
                "picket-collector: operator {name:?} added; log in at https://<serve --http address>/ui/"
            );
            Ok(())
        }
        Command::Member(MemberCommand::Add {
            data,
            community,
            contribute,
            sector,
            name,
            password_file,
        }) => {
            let text = std::fs::read_to_string(&password_file)
                .with_context(|| format!("reading {}", password_file.display()))?;
            let password = text.lines().next().unwrap_or("");
            let member = picket_collector::taxii_server::NewMember {
                name: name.clone(),
                communities: community,
                contribute,
                sector,
            };
            picket_collector::taxii_server::add_member(&data, &member, password)?;
            println!("picket-collector: TAXII member {name:?} added (restart serve to apply)");
            Ok(())
        }
        Command::Sightings(args) => match (args.command, args.data) {
            (
                Some(SightingsCommand::Fp {
                    data,
                    reason,
                    undo,
                    list,
                    json,
                    indicator,
                }),
                _,
            ) => false_positive_command(&data, indicator, reason, undo, list, json),
            (None, Some(data)) => sightings(&data, args.json),
            (None, None) => bail!("sightings needs --data DIR"),
        },
        Command::Alarms { data, json, all } => alarms(&data, json, all),
        Command::Metrics(MetricsCommand::Token { data }) => {
            let dir = DataDir::open(&data)?;
            let token = picket_collector::metrics::new_token(&dir)?;
            eprintln!(
                "picket-collector: metrics token written to {} (scrape with Authorization: Bearer <token>)",
                picket_collector::metrics::token_path(&dir).display()
            );
            println!("{token}");
            Ok(())
        }
        Command::Share(ShareCommand::Preview {
            data,
            community,
            json,
        }) => share_preview(&data, &community, json),
        Command::Share(ShareCommand::Push {
            data,
            community,
            json,
        }) => share_push(&data, &community, json),
        Command::Share(ShareCommand::Pull {
            data,
            community,
            json,
        }) => share_pull(&data, &community, json),
        Command::Share(ShareCommand::MispSightings { data, community, out }) => {
            share_misp_sightings(&data, &community, out.as_deref())
        }
        Command::Share(ShareCommand::MispFeed { data, community, out }) => {
            share_misp_feed(&data, &community, &out)
        }
        Command::Allowlist(cmd) => allowlist_command(cmd),
    }
}

/// The publishing policy: the operator's allowlist and what each registered source may send.
fn policy(store: &picket_collector::store::Store) -> Result<Policy> {
    let source_kinds = store
        .sources()?
        .into_iter()
        .map(|s| {
            let kinds = if s.trusted {
                picket_collector::policy::ALL_KINDS
                    .iter()
                    .map(|k| k.to_string())
                    .collect()
            } else {
                s.kinds.into_iter().collect()
            };
            (s.name, kinds)
        })
        .collect();
    Ok(Policy {
        allowlist: store.allowlist()?.into_iter().collect(),
        source_kinds,
        false_positives: store
            .false_positives()?
            .into_iter()
            .map(|(id, why, _)| (id, why))
            .collect(),
    })
}

/// The channel settings used to say whether an indicator would be published.
fn publish_view(dir: &DataDir, store: &picket_collector::store::Store) -> Result<(Policy, Tlp)> {
    let ch = dir.config().channel("default", &dir.config_path())?;
    Ok((policy(store)?, ch.tlp_ceiling))
}

/// Pulls one source and stores what it holds, recording the outcome on the source.
fn pull_one(
    store: &mut picket_collector::store::Store,
    src: &picket_collector::store::Source,
    now: i64,
) -> Result<String> {
    match picket_collector::sources::pull(src) {
        Ok((mut batch, bookmark)) => {
            picket_collector::sources::apply_lifetime(&mut batch, src.lifetime, now);
            let up = store.upsert_batch(&batch, &src.name, now)?;
            store.record_pull(&src.name, now, None, bookmark.as_deref())?;
            let mut line = format!(
                "source {}: {} indicators ({} new, {} updated, {} older kept out), {} unsupported",
                src.name,
                batch.items.len(),
                up.added,
                up.updated,
                up.older,
                batch.unsupported.len()
            );
            for (reason, n) in batch.unsupported_by_reason() {
                line.push_str(&format!("\n  unsupported: {n} x {reason}"));
            }
            Ok(line)
        }
        Err(e) => {
            store.record_pull(&src.name, now, Some(&e.to_string()), None)?;
            Err(e.into())
        }
    }
}

fn source_command(cmd: SourceCommand) -> Result<()> {
    match cmd {
        SourceCommand::Add {
            data,
            name,
            kind,
            location,
            collection,
            username,
            password_file,
            ca,
            tlp,
            confidence,
            every,
            trusted,
            lifetime,
        } => {
            let dir = DataDir::open(&data)?;
            if !picket_collector::sources::KINDS.contains(&kind.as_str()) {
                bail!(
                    "--kind {kind:?}: one of {}",
                    picket_collector::sources::KINDS.join(", ")
                );
            }
            if name.is_empty() || name.chars().any(|c| c.is_control() || c == ',') {
                bail!("--name {name:?}: a name needs at least one character and no commas or control characters");
            }
            if confidence > 100 {
                bail!("--confidence {confidence}: 0 to 100");
            }
            if kind == "taxii" {
                picket_collector::taxii::check_url(&location)?;
            }
            if kind == "taxii" && collection.is_none() {
                bail!("--kind taxii needs --collection ID (`GET <api root>/collections/` lists them)");
            }
            let secret = match &password_file {
                Some(p) => Some(
                    fs::read_to_string(p)
                        .with_context(|| format!("--password-file {}", p.display()))?
                        .trim_end_matches(['\r', '\n'])
                        .to_owned(),
                ),
                None => None,
            };
            let src = picket_collector::store::Source {
                name,
                kind,
                location,
                collection,
                username,
                secret,
                ca_file: ca.map(|p| p.display().to_string()),
                tlp: Tlp::parse(&tlp).with_context(|| format!("--tlp {tlp:?} is not a TLP level"))?,
                confidence,
                schedule: duration("--every", &every)?,
                trusted,
                kinds: picket_collector::policy::DEFAULT_KINDS
                    .iter()
                    .map(|k| k.to_string())
                    .collect(),
                bookmark: None,
                last_pull: None,
                last_error: None,
                lifetime: lifetime.map(|l| duration("--lifetime", &l)).transpose()?,
            };
            dir.store()?.add_source(&src, now())?;
            println!(
                "added source {} ({}, {}); it may put {} on endpoints",
                src.name,
                src.kind,
                src.location,
                if src.trusted {
                    "every kind of indicator".to_owned()
                } else {
                    src.kinds.join(", ")
                }
            );
            Ok(())
        }
        SourceCommand::List { data, json } => {
            let dir = DataDir::open(&data)?;
            for s in dir.store()?.sources()? {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "name": s.name, "kind": s.kind, "location": s.location, "tlp": s.tlp.to_string(),
                            "confidence": s.confidence, "every_seconds": s.schedule, "trusted": s.trusted,
                            "kinds": s.kinds, "credentials": s.secret.is_some(), "last_pull": s.last_pull,
                            "last_error": s.last_error,
                        })
                    );
                } else {
                    let last = match (s.last_pull, &s.last_error) {
                        (None, _) => "never pulled".to_owned(),
                        (Some(t), None) => format!("pulled {}", rfc3339(t)),
                        (Some(t), Some(e)) => format!("FAILED {}: {e}", rfc3339(t)),
                    };
                    println!(
                        "{} {} {} every {}s {}{} ({last})",
                        s.name,
                        s.kind,
                        s.location,
                        s.schedule,
                        s.tlp,
                        if s.trusted { " trusted" } else { "" }
                    );
                }
            }
            Ok(())
        }
        SourceCommand::Remove { data, name } => {
            let dir = DataDir::open(&data)?;
            if !dir.store()?.remove_source(&name)? {
                bail!("no source named {name:?}");
            }
            println!("removed source {name}; its indicators stay, remembering it");
            Ok(())
        }
    }
}

fn indicator_json(
    c: &picket_collector::store::Stored,
    status: &Result<(), picket_collector::policy::Excluded>,
    fp: Option<&(String, i64)>,
) -> serde_json::Value {
    let ind = c.record.indicator().ok().flatten();
    serde_json::json!({
        "id": c.record.id,
        "kind": c.kind,
        "value": c.value,
        "tlp": c.tlp.to_string(),
        "confidence": ind.as_ref().map(|i| i.meta.confidence),
        "severity": ind.as_ref().map(|i| i.meta.severity.to_string()),
        "valid_from": c.valid_from,
        "valid_until": c.valid_until,
        "revoked": c.revoked,
        "modified": c.modified,
        "created_by": c.created_by,
        "sources": c.sources,
        "first_seen": c.first_seen,
        "last_seen": c.last_seen,
        "published": status.is_ok(),
        "excluded": status.as_ref().err().map(ToString::to_string),
        "false_positive": fp.map(|(why, at)| serde_json::json!({"reason": why, "marked_at": rfc3339(*at)})),
    })
}

fn print_indicator(
    c: &picket_collector::store::Stored,
    status: &Result<(), picket_collector::policy::Excluded>,
    fp: Option<&(String, i64)>,
    json: bool,
) {
    if json {
        println!("{}", indicator_json(c, status, fp));
    } else {
        println!("{}", indicator_line(c, status, fp));
    }
}

/// One indicator as `indicators list` and `search` print it, without a newline.
fn indicator_line(
    c: &picket_collector::store::Stored,
    status: &Result<(), picket_collector::policy::Excluded>,
    fp: Option<&(String, i64)>,
) -> String {
    let state = match status {
        Ok(()) => "published".to_owned(),
        Err(why) => format!("left out: {why}"),
    };
    // A mark is shown even when another reason keeps the indicator out first.
    let mark = match (fp, status) {
        (Some(_), Err(picket_collector::policy::Excluded::FalsePositive(_))) | (None, _) => String::new(),
        (Some((why, at)), _) => {
            format!(" [marked a false positive {}: {}]", rfc3339(*at), printable(why))
        }
    };
    format!(
        "{} {} {} [{}] sources {} ({state}){mark}",
        c.record.id,
        c.value,
        c.tlp,
        c.kind,
        c.sources.join(",")
    )
}

/// Who saw an indicator: this organisation (an agent here sighted it) and the community
/// accounts whose sightings name it. Community sightings raise an indicator's priority: a
/// confirmed one goes into the next set one severity step higher.
#[derive(Default)]
struct Seen {
    here: bool,
    elsewhere: picket_collector::share::inbound::Confirmations,
}

impl Seen {
    /// This organisation (if an agent here saw it) and each community account that did.
    fn organisations(&self) -> usize {
        usize::from(self.here) + self.elsewhere.organisations()
    }

    /// `v` (an indicator's JSON) with who saw it: `organisations`, `seen_here`, `communities`
    /// (those whose members saw it), `disputed_by` (community accounts that called it a false
    /// positive), and `published_severity` (raised one step when another organisation saw it).
    fn add_to(&self, mut v: serde_json::Value, c: &picket_collector::store::Stored) -> serde_json::Value {
        let confirmed = self.elsewhere.organisations();
        let published = picket_collector::policy::prioritised(&c.record, confirmed)
            .indicator()
            .ok()
            .flatten()
            .map(|i| i.meta.severity.to_string());
        v["organisations"] = serde_json::json!(self.organisations());
        v["seen_here"] = serde_json::json!(self.here);
        v["communities"] = serde_json::json!(self.elsewhere.communities());
        v["disputed_by"] = serde_json::json!(self.elsewhere.disputed.len());
        v["published_severity"] = serde_json::json!(published);
        v
    }
}

/// Who saw each of `stored` (left out: those no one saw).
fn seen_by(
    dir: &DataDir,
    store: &picket_collector::store::Store,
    stored: &[picket_collector::store::Stored],
) -> Result<BTreeMap<String, Seen>> {
    let mut out: BTreeMap<String, Seen> = BTreeMap::new();
    let wanted: std::collections::BTreeSet<&str> = stored.iter().map(|s| s.record.id.as_str()).collect();
    for s in store.sightings_by_indicator()? {
        if wanted.contains(s.indicator.as_str()) {
            out.entry(s.indicator).or_default().here = true;
        }
    }
    for (id, c) in picket_collector::share::inbound::confirmations(dir, store, stored)? {
        out.entry(id).or_default().elsewhere = c;
    }
    Ok(out)
}

/// [`print_indicator`] for `indicators list`, with who saw it.
fn print_listed(
    c: &picket_collector::store::Stored,
    status: &Result<(), picket_collector::policy::Excluded>,
    fp: Option<&(String, i64)>,
    seen: &Seen,
    json: bool,
) {
    if json {
        println!("{}", seen.add_to(indicator_json(c, status, fp), c));
        return;
    }
    print!("{}", indicator_line(c, status, fp));
    let n = seen.organisations();
    if n > 0 {
        let communities: Vec<&str> = seen.elsewhere.communities().into_iter().collect();
        print!(
            " [seen by {n} organisation{}{}]",
            if n == 1 { "" } else { "s" },
            if communities.is_empty() {
                String::new()
            } else {
                format!(" in {}", printable(&communities.join(",")))
            }
        );
    }
    if !seen.elsewhere.disputed.is_empty() {
        print!(
            " [a false positive to {} community account{}]",
            seen.elsewhere.disputed.len(),
            if seen.elsewhere.disputed.len() == 1 {
                ""
            } else {
                "s"
            }
        );
    }
    println!();
}

/// The false-positive marks, by indicator id: (reason, marked_at).
fn false_positive_map(store: &picket_collector::store::Store) -> Result<BTreeMap<String, (String, i64)>> {
    Ok(store
        .false_positives()?
        .into_iter()
        .map(|(id, why, at)| (id, (why, at)))
        .collect())
}

/// `sightings fp`: mark, unmark or list false positives.
fn false_positive_command(
    data: &Path,
    indicator: Option<String>,
    reason: Option<String>,
    undo: bool,
    list: bool,
    json: bool,
) -> Result<()> {
    let dir = DataDir::open(data)?;
    let mut store = dir.store()?;
    if list {
        for (id, why, at) in store.false_positives()? {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"indicator": id, "reason": why, "marked_at": rfc3339(at)})
                );
            } else {
                println!("{} marked {}: {}", printable(&id), rfc3339(at), printable(&why));
            }
        }
        return Ok(());
    }
    let id = indicator.context("give the indicator id (or --list)")?;
    if undo {
        if store.unmark_false_positive(&id)? {
            println!("{id} is no longer marked a false positive; the next publish puts it back in the sets");
            return Ok(());
        }
        if store.indicator(&id)?.is_none() {
            bail!("no indicator {id:?} is stored (`indicators search` finds ids)");
        }
        bail!("indicator {id} is not marked a false positive (`sightings fp --list` shows the marks)");
    }
    let reason = reason.context("--reason TEXT: say why it is a false positive")?;
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().any(char::is_control) || reason.chars().count() > 500 {
        bail!("--reason: 1 to 500 characters, no control characters");
    }
    let earlier = store.mark_false_positive(&id, reason, now())?;
    match earlier {
        Some(old) => println!(
            "{id} stays marked a false positive, now for: {reason} (was: {old}); the next publish leaves it out of every set"
        ),
        None => println!(
            "marked {id} a false positive ({reason}); the next publish leaves it out of every set"
        ),
    }
    Ok(())
}

fn indicators_command(cmd: IndicatorsCommand) -> Result<()> {
    match cmd {
        IndicatorsCommand::List {
            data,
            json,
            by_organisations,
        } => {
            let dir = DataDir::open(&data)?;
            let store = dir.store()?;
            let (policy, ceiling) = publish_view(&dir, &store)?;
            let fps = false_positive_map(&store)?;
            let now = now();
            let candidates = store.candidates()?;
            let mut seen = seen_by(&dir, &store, &candidates)?;
            let mut listed: Vec<(usize, picket_collector::store::Stored)> = candidates
                .into_iter()
                .map(|c| (seen.get(&c.record.id).map_or(0, Seen::organisations), c))
                .collect();
            if by_organisations {
                // Stable: indicators seen by as many organisations stay in id order.
                listed.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
            }
            for (_, c) in listed {
                let status = policy.decide(&Candidate::of(&c), now, ceiling);
                let s = seen.remove(&c.record.id).unwrap_or_default();
                print_listed(&c, &status, fps.get(&c.record.id), &s, json);
            }
            Ok(())
        }
        IndicatorsCommand::Search { data, json, text } => {
            let dir = DataDir::open(&data)?;
            let store = dir.store()?;
            let (policy, ceiling) = publish_view(&dir, &store)?;
            let fps = false_positive_map(&store)?;
            let now = now();
            let needle = text.to_lowercase();
            for c in store.candidates()? {
                let hay = format!("{} {} {}", c.record.id, c.value, c.sources.join(" ")).to_lowercase();
                if hay.contains(&needle) {
                    let status = policy.decide(&Candidate::of(&c), now, ceiling);
                    print_indicator(&c, &status, fps.get(&c.record.id), json);
                }
            }
            Ok(())
        }
        IndicatorsCommand::Show { data, json, id } => {
            let dir = DataDir::open(&data)?;
            let store = dir.store()?;
            let (policy, ceiling) = publish_view(&dir, &store)?;
            let c = store
                .indicator(&id)?
                .with_context(|| format!("no indicator {id}"))?;
            let status = policy.decide(&Candidate::of(&c), now(), ceiling);
            let fp = store.false_positive(&id)?;
            let seen = seen_by(&dir, &store, std::slice::from_ref(&c))?
                .remove(&c.record.id)
                .unwrap_or_default();
            if json {
                println!("{}", seen.add_to(indicator_json(&c, &status, fp.as_ref()), &c));
            } else {
                let v = seen.add_to(indicator_json(&c, &status, fp.as_ref()), &c);
                if let Some(map) = v.as_object() {
                    for (k, v) in map {
                        println!("{k}: {v}");
                    }
                }
            }
            Ok(())
        }
        IndicatorsCommand::Unsupported { data, json } => {
            let dir = DataDir::open(&data)?;
            for (source, id, reason) in dir.store()?.unsupported()? {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"source": source, "id": id, "reason": reason})
                    );
                } else {
                    println!("{source} {id}: {reason}");
                }
            }
            Ok(())
        }
    }
}

fn allowlist_command(cmd: AllowlistCommand) -> Result<()> {
    match cmd {
        AllowlistCommand::Add { data, reason, value } => {
            let dir = DataDir::open(&data)?;
            let observable = ingest::detect(value.trim()).with_context(|| {
                format!("{value:?} is not an MD5, SHA-1 or SHA-256 digest, an IP address or a CIDR network")
            })?;
            let canonical = ingest::canonical_value(&observable);
            dir.store()?.allow(&canonical, &reason, now())?;
            println!("allowlisted {canonical} ({reason}); it leaves the next published set");
            Ok(())
        }
        AllowlistCommand::Import { data, file } => {
            let dir = DataDir::open(&data)?;
            let text = picket_collector::sources::read_text(&file)?;
            let (name, values) = warninglist(&file, &text)?;
            let mut store = dir.store()?;
            let (mut added, mut skipped) = (0, 0);
            let reason = format!("warninglist: {name}");
            let now = now();
            for v in values {
                match ingest::detect(v.trim()) {
                    Some(o) => {
                        store.allow(&ingest::canonical_value(&o), &reason, now)?;
                        added += 1;
                    }
                    None => skipped += 1,
                }
            }
            println!(
                "{}: {added} values allowlisted as {reason:?}; {skipped} left out (not a digest, address or network)",
                file.display()
            );
            Ok(())
        }
        AllowlistCommand::List { data } => {
            let dir = DataDir::open(&data)?;
            for (value, why) in picket_collector::policy::BUILTIN_ALLOWLIST {
                println!("{value} (built in: {why})");
            }
            for (value, why) in dir.store()?.allowlist()? {
                println!("{value} ({why})");
            }
            Ok(())
        }
        AllowlistCommand::Remove { data, value } => {
            let dir = DataDir::open(&data)?;
            let canonical = ingest::detect(value.trim())
                .map(|o| ingest::canonical_value(&o))
                .unwrap_or(value.clone());
            if !dir.store()?.disallow(&canonical)? {
                bail!("{canonical} is not on the allowlist");
            }
            println!("removed {canonical} from the allowlist");
            Ok(())
        }
    }
}

fn root_command(cmd: RootCommand) -> Result<()> {
    match cmd {
        RootCommand::Keygen { out } => {
            let key = SigningKey::generate(Role::Root)?;
            datadir::write_new(&out, key.to_file_text().as_bytes(), 0o600)?;
            eprintln!("wrote root private key {} (keep it offline)", out.display());
            println!("{}", key.public());
            Ok(())
        }
        RootCommand::Show { file } => {
            let (root, signers) = rootdoc::read_unverified(&read_capped(&file, 1 << 20)?)?;
            println!("root version {} of {:?}", root.version, root.org);
            println!(
                "  created {} expires {}",
                rfc3339(root.created),
                rfc3339(root.expires)
            );
            println!(
                "  root role: threshold {} of {} (lifetime cap {} s)",
                root.root.threshold,
                root.root.keys.len(),
                root.root.max_lifetime
            );
            for k in &root.root.keys {
                println!("    {k}");
            }
            for c in &root.channels {
                println!("  channel {} (TLP ceiling {})", c.name, c.max_tlp);
                for (name, spec) in [("publisher", &c.publisher), ("timestamp", &c.timestamp)] {
                    println!(
                        "    {name}: threshold {} (lifetime cap {} s)",
                        spec.threshold, spec.max_lifetime
                    );
                    for k in &spec.keys {
                        println!("      {k}");
                    }
                }
            }
            println!("  signed by {} key(s):", signers.len());
            for k in signers {
                println!("    {k}");
            }
            Ok(())
        }
        RootCommand::Export { data, out } => {
            let dir = DataDir::open(&data)?;
            let store = dir.store()?;
            let (root, chain) = dir.current_root(&store)?;
            let (_, bytes) = chain
                .iter()
                .find(|(v, _)| *v == root.version)
                .context("root chain")?;
            datadir::write_new(&out, bytes, 0o644)?;
            println!("wrote root version {} to {}", root.version, out.display());
            Ok(())
        }
        RootCommand::Rotate {
            current,
            out,
            add_key,
            remove_key,
            threshold,
            channel,
            publisher,
            timestamp,
            lifetime,
            sign,
        } => {
            let (root, _) = rootdoc::read_unverified(&read_capped(&current, 1 << 20)?)?;
            let rotation = Rotation {
                add_root_keys: public_keys("--add-key", &add_key)?,
                remove_root_keys: public_keys("--remove-key", &remove_key)?,
                threshold,
                channel,
                publisher: public_keys("--publisher", &publisher)?,
                timestamp: public_keys("--timestamp", &timestamp)?,
                lifetime: lifetime.map(|l| duration("--lifetime", &l)).transpose()?,
            };
            let next = rootdoc::rotate(&root, &rotation, now())?;
            let keys = sign.iter().map(|p| read_key(p)).collect::<Result<Vec<_>>>()?;
            if let Some(k) = keys.iter().find(|k| k.role() != Role::Root) {
                bail!("{} is a {} key, not a root key", k.public(), k.role());
            }
            let refs: Vec<&SigningKey> = keys.iter().collect();
            datadir::write_new(&out, &rootdoc::sign(&next, &refs), 0o644)?;
            let old_signed = keys.iter().filter(|k| root.root.allows(&k.public())).count();
            let new_signed = keys.iter().filter(|k| next.root.allows(&k.public())).count();
            println!(
                "wrote root version {} to {}: signed by {old_signed} of the old threshold {} and {new_signed} of the new threshold {}",
                next.version,
                out.display(),
                root.root.threshold,
                next.root.threshold
            );
            if old_signed < usize::from(root.root.threshold) || new_signed < usize::from(next.root.threshold)
            {
                println!(
                    "  more signatures are needed: `picket-collector root sign --key KEY {}`",
                    out.display()
                );
            }
            Ok(())
        }
        RootCommand::Sign { key, file } => {
            let key = read_key(&key)?;
            if key.role() != Role::Root {
                bail!("{} is a {} key, not a root key", key.public(), key.role());
            }
            let signed = rootdoc::add_signature(&read_capped(&file, 1 << 20)?, &key)?;
            datadir::replace(&file, &signed, 0o644)?;
            println!("signed {} with {}", file.display(), key.public());
            Ok(())
        }
        RootCommand::Install { data, file } => {
            let dir = DataDir::open(&data)?;
            let mut store = dir.store()?;
            let root = dir.install_root(&mut store, &read_capped(&file, 1 << 20)?)?;
            println!(
                "installed root version {}; {} now pins it for new agents, and the next published set carries the chain",
                root.version,
                dir.path().join(datadir::ANCHOR).display()
            );
            Ok(())
        }
    }
}

fn token_command(cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create { data, uses, expires } => {
            let dir = DataDir::open(&data)?;
            let lifetime = match expires {
                Some(e) => duration("--expires", &e)?,
                None => dir.config().enrolment(&dir.config_path())?.default_token_expiry,
            };
            if uses == 0 || lifetime == 0 {
                bail!("--uses and --expires must be more than 0");
            }
            let pki = Pki::load(&dir)?;
            let now = now();
            let expires = now.saturating_add(lifetime.min(i64::MAX as u64) as i64);
            let token = dir.store()?.create_token(pki.ca_pin(), uses, now, expires)?;
            eprintln!(
                "token {}: {uses} use(s), expires {}. Pass it to `picket-agent enroll --token-file FILE` (a command line shows in /proc and shell history).",
                token.id,
                rfc3339(expires)
            );
            println!("{}", token.encode());
            Ok(())
        }
        TokenCommand::List { data, json } => {
            let dir = DataDir::open(&data)?;
            let now = now();
            for t in dir.store()?.tokens()? {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": t.id, "created": t.created, "expires": t.expires, "uses_left": t.uses_left,
                            "used": t.used, "revoked": t.revoked, "state": t.state(now),
                        })
                    );
                } else {
                    println!(
                        "{} {}: created {}, expires {}, {} use(s) left, used {}{}",
                        t.id,
                        t.state(now),
                        rfc3339(t.created),
                        rfc3339(t.expires),
                        t.uses_left,
                        t.used,
                        t.revoked
                            .map_or(String::new(), |r| format!(", revoked {}", rfc3339(r)))
                    );
                }
            }
            Ok(())
        }
        TokenCommand::Revoke { data, id } => {
            let dir = DataDir::open(&data)?;
            // A whole token is accepted too; only its id is used (and never echoed).
            let id = match picket_proto::EnrollToken::parse(&id) {
                Ok(t) => t.id,
                Err(_) => id.trim().to_ascii_lowercase(),
            };
            match dir.store()?.revoke_token(&id, now())? {
                Some(t) => {
                    println!(
                        "token {} revoked {}",
                        t.id,
                        rfc3339(t.revoked.unwrap_or_default())
                    );
                    Ok(())
                }
                None => bail!("no token with id {id:?}; `token list` shows them"),
            }
        }
    }
}

fn agents_command(cmd: AgentsCommand) -> Result<()> {
    match cmd {
        AgentsCommand::List { data, json } => {
            let dir = DataDir::open(&data)?;
            for a in dir.store()?.agents()? {
                if json {
                    println!("{}", a.to_json());
                    continue;
                }
                let when = |t: Option<i64>| t.map_or("never".to_owned(), rfc3339);
                // The channel, the heartbeat and what the heartbeat says are the agent's words:
                // no control character of theirs reaches the terminal.
                let mut line = format!(
                    "{} channel {}: enrolled {}, last seen {}, certificate until {}",
                    printable(&a.id),
                    printable(&a.channel),
                    rfc3339(a.enrolled),
                    when(a.last_seen),
                    rfc3339(a.cert_not_after)
                );
                match a.last_heartbeat() {
                    Some(Ok(h)) => line.push_str(&format!(
                        ", agent {}, set version {}, spool depth {}",
                        printable(&h.agent_version),
                        h.set_version.map_or("none".to_owned(), |v| v.to_string()),
                        h.spool_depth
                    )),
                    Some(Err(e)) => line.push_str(&format!(", {}", printable(&e))),
                    None => line.push_str(", no heartbeat yet"),
                }
                if let Some(t) = a.clone_seen {
                    line.push_str(&format!(", CLONE SUSPECTED (another machine {})", rfc3339(t)));
                }
                if let Some(t) = a.revoked {
                    line.push_str(&format!(", REVOKED {}", rfc3339(t)));
                }
                println!("{line}");
            }
            Ok(())
        }
        AgentsCommand::Revoke { data, id } => {
            let dir = DataDir::open(&data)?;
            match dir.store()?.revoke_agent(id.trim(), now())? {
                Some(a) => {
                    println!(
                        "agent {} revoked {}; a running serve ends its sessions within a second",
                        a.id,
                        rfc3339(a.revoked.unwrap_or_default())
                    );
                    Ok(())
                }
                None => bail!("no agent with id {id:?}; `agents list` shows them"),
            }
        }
    }
}

/// Compiles and signs a new set version on every channel whose content changed (or all, with
/// `force`), printing a summary line per channel.
fn publish_channels(
    dir: &DataDir,
    store: &mut picket_collector::store::Store,
    lifetime: Option<u64>,
    timestamp_lifetime: Option<u64>,
    force: bool,
    now: i64,
) -> Result<()> {
    let (root, _) = dir.current_root(store)?;
    if now >= root.expires {
        bail!(
            "root version {} expired at {}; rotate it offline (`root rotate`) before publishing",
            root.version,
            rfc3339(root.expires)
        );
    }
    let publisher = dir.signing_key(Role::Publisher, &root, "default")?;
    let policy = policy(store)?;
    let candidates = store.candidates()?;
    // Community sightings raise the priority of the indicators they confirm.
    let confirmed = picket_collector::share::inbound::confirmations(dir, store, &candidates)?;
    for name in dir.config().channels.keys() {
        let ch = dir.config().channel(name, &dir.config_path())?;
        let manifest_lifetime = lifetime.unwrap_or(ch.manifest_lifetime);
        let ts_lifetime = timestamp_lifetime.unwrap_or(ch.timestamp_lifetime.min(manifest_lifetime));
        let root_channel = root
            .channel(name)
            .with_context(|| format!("channel {name} in picket.toml"))?;
        let ceiling = ch.tlp_ceiling.min(root_channel.max_tlp);
        let mut records = Vec::new();
        let mut max_tlp = Tlp::Clear;
        let mut left_out: BTreeMap<&'static str, usize> = BTreeMap::new();
        for c in &candidates {
            match policy.decide(&Candidate::of(c), now, ceiling) {
                Ok(()) => {
                    max_tlp = max_tlp.max(c.tlp);
                    let others = confirmed.get(&c.record.id).map_or(0, |c| c.organisations());
                    records.push(picket_collector::policy::prioritised(&c.record, others));
                }
                Err(why) => *left_out.entry(why.label()).or_default() += 1,
            }
        }
        let left_out_text = if left_out.is_empty() {
            "none left out".to_owned()
        } else {
            left_out
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let latest = store.latest_set(name)?;
        if let Some(l) = &latest {
            let prev = Snapshot::decode(&l.snapshot, usize::MAX).context("stored snapshot")?;
            let mut sorted = records.clone();
            sorted.sort_by(|a, b| a.id.cmp(&b.id));
            if prev.records == sorted && !force {
                println!(
                    "channel {name}: unchanged, set version {} stays current (use --force to publish anyway)",
                    l.version
                );
                continue;
            }
        }
        let version = latest.as_ref().map_or(1, |l| l.version + 1);
        let previous = store.recent_snapshots(name, 8)?;
        let ts_version = store.latest_timestamp(name)?.map_or(1, |t| t.version + 1);
        let stamper = dir.signing_key(Role::Timestamp, &root, name)?;
        let signer = if name == "default" {
            &publisher
        } else {
            &dir.signing_key(Role::Publisher, &root, name)?
        };
        let n = records.len();
        let out = publish::publish(
            Input {
                channel: name,
                version,
                now,
                records,
                max_tlp,
                previous: &previous,
                manifest_lifetime,
                timestamp_version: ts_version,
                timestamp_lifetime: ts_lifetime,
            },
            &root,
            signer,
            &stamper,
        )?;
        store.insert_publication(&Publication {
            channel: name,
            version,
            created: now,
            snapshot: &out.snapshot,
            manifest: &out.manifest,
            deltas: out.deltas.clone(),
            timestamp: out.timestamp.clone(),
        })?;
        let bases: Vec<String> = out.deltas.iter().map(|(b, _)| b.to_string()).collect();
        println!(
                "channel {name}: published set version {version} with {n} indicators ({left_out_text}; TLP ceiling {ceiling}), {} bytes; deltas from [{}]; fresh until {}, valid until {}",
                out.snapshot.len(),
                bases.join(", "),
                rfc3339(out.timestamp.expires),
                rfc3339(now + manifest_lifetime as i64)
            );
    }
    Ok(())
}

/// Re-signs freshness for the current set version of `channel` (the set version stays).
fn restamp(
    dir: &DataDir,
    store: &mut picket_collector::store::Store,
    channel: &str,
    lifetime: u64,
    now: i64,
) -> Result<()> {
    let (root, _) = dir.current_root(store)?;
    let set = store
        .latest_set(channel)?
        .with_context(|| format!("channel {channel}: nothing published yet; run `publish` first"))?;
    let manifest = publish::read_manifest(&set.manifest)?;
    let version = store.latest_timestamp(channel)?.map_or(1, |t| t.version + 1);
    let key = dir.signing_key(Role::Timestamp, &root, channel)?;
    let ts = publish::stamp(&set.manifest, &manifest, version, now, lifetime, &root, &key)?;
    store.insert_timestamp(channel, &ts)?;
    println!(
        "channel {channel}: timestamp version {version} for set version {}, fresh until {}",
        manifest.version,
        rfc3339(ts.expires)
    );
    Ok(())
}

/// The collector's long-running job: the agent channel (on its own runtime), and on a thread
/// of its own the sync loop: pull sources on their schedules, publish after changes (at most
/// once per `batch` seconds), and re-sign each channel's freshness once half of its timestamp's
/// lifetime has passed, so agents stay fresh when nothing changes.
fn serve(data: &Path, batch: u64, listen: Option<&str>, http: Option<&str>) -> Result<()> {
    picket_collector::metrics::start();
    let dir = DataDir::open(data)?;
    let exposed = dir.readable_root_keys();
    if !exposed.is_empty() {
        let list: Vec<String> = exposed.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "refusing to serve: a root private key is readable from here ({}). Move it to offline storage; the collector needs only its online keys",
            list.join(", ")
        );
    }
    raise_open_files();
    let mut settings = picket_collector::channel::Settings::from_config(dir.config(), &dir.config_path())?;
    if let Some(l) = listen {
        settings.listen = l
            .parse()
            .with_context(|| format!("--listen {l:?}: not an address and port such as 0.0.0.0:7443"))?;
    }
    let server = picket_collector::channel::Server::start(data, settings)?;
    println!(
        "picket-collector: agent channel listening on {}",
        server.local_addr()
    );
    let taxii = match http {
        Some(h) => {
            let addr = h
                .parse()
                .with_context(|| format!("--http {h:?}: not an address and port such as 0.0.0.0:8443"))?;
            let t = picket_collector::taxii_server::Server::start(data, addr)?;
            println!(
                "picket-collector: TAXII 2.1 server listening on https://{}/taxii2/",
                t.local_addr()
            );
            println!(
                "picket-collector: dashboard on https://{}/ui/ (operators: `operator add`)",
                t.local_addr()
            );
            Some(t)
        }
        None => None,
    };
    // Upstream TAXII collections on a thread of their own: a slow or unreachable upstream
    // never holds up the agent channel, the TAXII server or the sync loop.
    let upstream_data = data.to_owned();
    std::thread::Builder::new()
        .name("picket-upstream".into())
        .spawn(move || upstream_loop(&upstream_data))
        .context("starting the upstream thread")?;
    let data = data.to_owned();
    let sync = std::thread::Builder::new()
        .name("picket-sync".into())
        .spawn(move || sync_loop(&data, dir, batch))
        .context("starting the sync thread")?;
    let result = sync
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the sync loop panicked")));
    server.stop();
    if let Some(t) = taxii {
        t.stop();
    }
    result
}

/// Raises the soft limit on open files to the hard limit: every agent session holds a
/// descriptor, and a service manager's usual soft limit (1024) is far below
/// `channel.max_sessions`. A failure is only a warning: the limit then caps the sessions.
fn raise_open_files() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (lim.current, lim.maximum) {
        if soft < hard {
            let raised = Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                eprintln!(
                    "picket-collector: warning: raising the open-file limit from {soft} to {hard}: {e}"
                );
            }
        }
    }
}

/// `serve`'s upstream loop: every `share::upstream::PERIOD`, for each community with
/// `[[community.upstream]]` entries, pull other organisations' sightings, then push what the
/// community may receive (so a sighting that clears k goes out in the same round). Failures are
/// logged with the upstream's name and tried again next round; it never returns.
fn upstream_loop(data: &Path) {
    use picket_collector::metrics;
    use picket_collector::share::upstream;
    loop {
        match DataDir::open(data) {
            Err(e) => tracing::error!("upstream: {e:#}"),
            Ok(dir) => {
                let communities: Vec<String> = dir
                    .config()
                    .communities
                    .iter()
                    .filter(|c| c.upstream.iter().any(|u| u.push || u.pull))
                    .map(|c| c.name.clone())
                    .collect();
                for community in communities {
                    match upstream::pull(&dir, &community, now()) {
                        Err(e) => tracing::error!("community={community} pull: {e:#}"),
                        Ok(reports) => {
                            for r in reports {
                                match &r.error {
                                    Some(e) => {
                                        metrics::share_error(&community, &r.upstream);
                                        tracing::error!(
                                            "community={community} upstream={} url={} pull: {e}",
                                            r.upstream,
                                            r.url
                                        )
                                    }
                                    None if r.taken > 0 || !r.refused.is_empty() => tracing::info!(
                                        "community={community} upstream={} pulled={} taken={} refused={}",
                                        r.upstream,
                                        r.received,
                                        r.taken,
                                        r.refused.len()
                                    ),
                                    None => {}
                                }
                            }
                        }
                    }
                    match upstream::push(&dir, &community, now()) {
                        Err(e) => tracing::error!("community={community} push: {e:#}"),
                        Ok(reports) => {
                            for r in reports {
                                metrics::share_pushed(&community, &r.upstream, r.sent as u64);
                                if r.error.is_some() || !r.failed.is_empty() {
                                    metrics::share_error(&community, &r.upstream);
                                }
                                if let Some(e) = &r.error {
                                    tracing::error!(
                                        "community={community} upstream={} url={} push: {e}",
                                        r.upstream,
                                        r.url
                                    );
                                }
                                for f in &r.failed {
                                    tracing::error!(
                                        "community={community} upstream={} push: {} {}: {}",
                                        r.upstream,
                                        f.id,
                                        f.version,
                                        f.reason
                                    );
                                }
                                if r.sent > 0 || r.already > 0 {
                                    tracing::info!(
                                        "community={community} upstream={} sent={} already={} retries={}",
                                        r.upstream,
                                        r.sent,
                                        r.already,
                                        r.retries
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        std::thread::sleep(upstream::PERIOD);
    }
}

/// `serve`'s sync loop (see [`serve`]); returns only on an error it cannot carry on from.
fn sync_loop(data: &Path, dir: DataDir, batch: u64) -> Result<()> {
    let mut store = dir.store()?;
    println!(
        "picket-collector: serving {} (sources pulled on schedule; publish batched every {batch}s)",
        data.display()
    );
    let mut dirty_since: Option<i64> = None;
    loop {
        let now = now();
        for src in store.sources()? {
            if src.last_pull.is_some_and(|t| now - t < src.schedule as i64) {
                continue;
            }
            match pull_one(&mut store, &src, now) {
                Ok(summary) => {
                    println!("{summary}");
                    dirty_since.get_or_insert(now);
                }
                Err(e) => tracing::error!("source {}: {e:#}; nothing from it was stored", src.name),
            }
        }
        if dirty_since.is_some_and(|t| now - t >= batch as i64) || store.current("default")?.is_none() {
            if let Err(e) = publish_channels(&dir, &mut store, None, None, false, now) {
                tracing::error!("publish: {e:#}");
            }
            dirty_since = None;
        }
        for name in dir.config().channels.keys() {
            let ch = dir.config().channel(name, &dir.config_path())?;
            if let Some(ts) = store.latest_timestamp(name)? {
                let half = (ts.expires - ts.created) / 2;
                if now >= ts.created + half {
                    if let Err(e) = restamp(&dir, &mut store, name, ch.timestamp_lifetime, now) {
                        tracing::error!("timestamp for {name}: {e:#}");
                    }
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// `sightings`: one line (or JSON object) per indicator.
fn sightings(data: &Path, json: bool) -> Result<()> {
    let dir = DataDir::open(data)?;
    let store = dir.store()?;
    let fps = false_positive_map(&store)?;
    let aggregates = store.sightings_by_indicator()?;
    let mut stored = Vec::new();
    for s in &aggregates {
        stored.extend(store.indicator(&s.indicator)?);
    }
    let elsewhere = picket_collector::share::inbound::confirmations(&dir, &store, &stored)?;
    for s in aggregates {
        let fp = fps.get(&s.indicator);
        // This organisation, and each community account whose sightings name it.
        let orgs = 1 + elsewhere.get(&s.indicator).map_or(0, |c| c.organisations());
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "indicator": s.indicator, "hosts": s.hosts, "organisations": orgs, "count": s.count,
                    "first_seen": rfc3339(s.first_seen), "last_seen": rfc3339(s.last_seen),
                    "what": s.what, "observed": s.observed,
                    "false_positive": fp.map(|(why, at)| serde_json::json!({"reason": why, "marked_at": rfc3339(*at)})),
                })
            );
        } else {
            // Agents chose these strings: no control characters reach the terminal.
            println!(
                "{} hosts={} orgs={} count={} first={} last={} what={} observed={}{}",
                printable(&s.indicator),
                s.hosts,
                orgs,
                s.count,
                rfc3339(s.first_seen),
                rfc3339(s.last_seen),
                printable(&s.what.join(",")),
                printable(&s.observed.join(",")),
                fp.map_or_else(String::new, |(why, at)| format!(
                    " FALSE POSITIVE (marked {}: {})",
                    rfc3339(*at),
                    printable(why)
                ))
            );
        }
    }
    Ok(())
}

/// `alarms`: the open alarms (or all), newest first.
fn alarms(data: &Path, json: bool, all: bool) -> Result<()> {
    let dir = DataDir::open(data)?;
    for a in dir.store()?.alarms(all)? {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "agent": a.agent, "kind": a.kind, "detail": a.detail,
                    "raised": rfc3339(a.raised), "cleared": a.cleared.map(rfc3339),
                })
            );
        } else {
            let state = match a.cleared {
                None => "open".to_owned(),
                Some(t) => format!("cleared {}", rfc3339(t)),
            };
            println!(
                "{} {} agent={} {} ({state})",
                rfc3339(a.raised),
                printable(&a.kind),
                printable(&a.agent),
                printable(&a.detail)
            );
        }
    }
    Ok(())
}

/// `text` with control characters replaced, for a terminal: every string an agent chose (or
/// that a stored row holds) goes through it in human-readable output; `--json` output needs
/// nothing, as serde escapes control characters.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A warninglist's name and values: MISP's JSON form (`{"name": ..., "list": [...]}`) or a plain
/// list, one value a line.
fn warninglist(path: &Path, text: &str) -> Result<(String, Vec<String>)> {
    if text.trim_start().starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Misp {
            name: String,
            list: Vec<String>,
        }
        let w: Misp = serde_json::from_str(text).with_context(|| {
            format!(
                "{}: not a MISP warninglist (a JSON object with name and list)",
                path.display()
            )
        })?;
        return Ok((w.name, w.list));
    }
    let name = path
        .file_name()
        .map_or("list".into(), |n| n.to_string_lossy().into_owned());
    let values = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    Ok((name, values))
}
