//! The collector's metrics, and who may read them.
//!
//! Each long-running path records what it did with one call here (a set published, a session
//! refused, a batch stored, an HTTP request served); [`render`] writes every metric in the
//! Prometheus text exposition format 0.0.4, which `serve --http` answers on `GET /metrics`.
//! The registry is a few statics in this file: counters, gauges and one histogram with fixed
//! buckets, each a family of series keyed by label values. It takes no crate and no thread:
//! a record is one short mutex hold, a render reads every family once.
//!
//! Label values come only from fixed sets (`outcome`, `route`, the HTTP status class) or from
//! names the operator wrote in `picket.toml` (channels, sources, communities, upstreams), never
//! from what a peer sent; a family also stops taking new series at [`MAX_SERIES`], so that a bug
//! cannot grow it without bound. Values are escaped as the format asks (`\\`, `\"`, `\n`).
//!
//! # Who may read /metrics
//!
//! Off by default: `GET /metrics` answers 404 until the operator makes a bearer token,
//! `DIR/keys/metrics.token` (one line, readable by its owner only, mode 0600), by hand or with
//! `picket-collector metrics token --data DIR`, which writes a new random one and prints it
//! once. With the file in place, a request is answered only if it carries
//! `Authorization: Bearer <token>`, compared in constant time; the file is read again at each
//! request, so replacing it rotates the token without a restart. A token file that others can
//! read is not used (see [`access`]).
//!
//! Architecture invariant: no metric carries a secret, an indicator, an agent's identity or a
//! path; what a scrape learns is counts and timings per operator-named thing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::datadir::{self, DataDir};
use crate::CollectorError;

/// The bearer token's file name, in `DIR/keys/`.
pub const TOKEN_FILE: &str = "metrics.token";

/// The most series one family holds; updates that would add more are dropped.
pub const MAX_SERIES: usize = 1024;

/// The largest token file read (a token is 64 hex digits).
const TOKEN_FILE_MAX: u64 = 4096;

/// The HTTP latency histogram's upper bounds, in seconds.
const HTTP_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// What kind of metric a family is (the `# TYPE` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// A family of counters or gauges: one value per label set.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl Family {
    const fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &'static [&'static str],
    ) -> Family {
        Family {
            name,
            help,
            kind,
            labels,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    fn update(&self, values: &[&str], f: impl FnOnce(&mut f64)) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}: label count", self.name);
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        if let Some(v) = series.get_mut(&key) {
            f(v);
        } else if series.len() < MAX_SERIES {
            let mut v = 0.0;
            f(&mut v);
            series.insert(key, v);
        }
    }

    fn add(&self, values: &[&str], n: f64) {
        self.update(values, |v| *v += n);
    }

    fn render(&self, out: &mut String) {
        header(
            out,
            self.name,
            self.help,
            if self.kind == Kind::Counter {
                "counter"
            } else {
                "gauge"
            },
        );
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if series.is_empty() && self.labels.is_empty() {
            let _ = writeln!(out, "{} 0", self.name);
        }
        for (values, v) in series.iter() {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.name,
                labels(self.labels, values, None),
                number(*v)
            );
        }
    }
}

/// One histogram series: cumulative counts per bucket, the sum and the count.
#[derive(Debug, Clone, Default)]
struct HistogramSeries {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A family of histograms with fixed buckets.
#[derive(Debug)]
struct Histogram {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    labels: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, HistogramSeries>>,
}

impl Histogram {
    fn observe(&self, values: &[&str], x: f64) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        if !series.contains_key(&key) {
            if series.len() >= MAX_SERIES {
                return;
            }
            series.insert(
                key.clone(),
                HistogramSeries {
                    buckets: vec![0; self.bounds.len()],
                    ..Default::default()
                },
            );
        }
        if let Some(s) = series.get_mut(&key) {
            for (count, bound) in s.buckets.iter_mut().zip(self.bounds) {
                if x <= *bound {
                    *count += 1;
                }
            }
            s.sum += x;
            s.count += 1;
        }
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for (values, s) in series.iter() {
            for (count, bound) in s.buckets.iter().zip(self.bounds) {
                let le = number(*bound);
                let _ = writeln!(
                    out,
                    "{}_bucket{} {count}",
                    self.name,
                    labels(self.labels, values, Some(&le))
                );
            }
            let _ = writeln!(
                out,
                "{}_bucket{} {}",
                self.name,
                labels(self.labels, values, Some("+Inf")),
                s.count
            );
            let _ = writeln!(
                out,
                "{}_sum{} {}",
                self.name,
                labels(self.labels, values, None),
                number(s.sum)
            );
            let _ = writeln!(
                out,
                "{}_count{} {}",
                self.name,
                labels(self.labels, values, None),
                s.count
            );
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(
        out,
        "# HELP {name} {}",
        help.replace('\\', "\\\\").replace('\n', "\\n")
    );
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `{a="x",b="y"}`, or nothing when there are no labels.
fn labels(names: &[&str], values: &[String], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// A label value escaped as the text format asks: backslash, double quote and line feed.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers without a fraction, others as Rust prints them.
fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

static SETS_PUBLISHED: Family = Family::new(
    "picket_collector_sets_published_total",
    "Indicator set versions published, per channel.",
    Kind::Counter,
    &["channel"],
);
static AGENTS_CONNECTED: Family = Family::new(
    "picket_collector_agents_connected",
    "Agent sessions open on the channel now.",
    Kind::Gauge,
    &[],
);
static SESSIONS: Family = Family::new(
    "picket_collector_sessions_total",
    "Agent channel sessions, by outcome: opened, or refused (handshake, limits, unknown or revoked agent).",
    Kind::Counter,
    &["outcome"],
);
static SIGHTINGS: Family = Family::new(
    "picket_collector_sightings_ingested_total",
    "Sightings stored from agents' report batches.",
    Kind::Counter,
    &[],
);
static BATCHES: Family = Family::new(
    "picket_collector_report_batches_total",
    "Agents' report batches, by outcome: stored, replayed (already stored once) or refused.",
    Kind::Counter,
    &["outcome"],
);
static SOURCE_PULLS: Family = Family::new(
    "picket_collector_source_pulls_total",
    "Source pulls that finished and were stored, per source.",
    Kind::Counter,
    &["source"],
);
static SOURCE_ERRORS: Family = Family::new(
    "picket_collector_source_errors_total",
    "Source failures, per source and stage: pull (fetching) or ingest (parsing and storing).",
    Kind::Counter,
    &["source", "stage"],
);
static SHARE_PUSHED: Family = Family::new(
    "picket_collector_share_objects_pushed_total",
    "STIX objects pushed to a community's upstream TAXII server.",
    Kind::Counter,
    &["community", "upstream"],
);
static SHARE_ERRORS: Family = Family::new(
    "picket_collector_share_errors_total",
    "Failed exchanges with a community's upstream TAXII server.",
    Kind::Counter,
    &["community", "upstream"],
);
static HTTP: Histogram = Histogram {
    name: "picket_collector_http_request_duration_seconds",
    help: "Requests served on the --http listener, by route and status class, and how long they took.",
    bounds: &HTTP_BUCKETS,
    labels: &["route", "code"],
    series: Mutex::new(BTreeMap::new()),
};

static START: OnceLock<(Instant, f64)> = OnceLock::new();

/// Marks the process start, for the uptime metric; the first call wins. `serve` calls it first
/// thing; otherwise the first record or render does.
pub fn start() {
    START.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        (Instant::now(), wall)
    });
}

/// Records a set version published on `channel`.
pub fn set_published(channel: &str) {
    SETS_PUBLISHED.add(&[channel], 1.0);
}

/// Records an agent session that opened: the count of sessions opened and the gauge of
/// connected agents go up by one, and the gauge comes down when the guard is dropped, however
/// the session ends.
#[must_use = "the session counts as connected while the guard lives"]
pub fn session_opened() -> Connected {
    SESSIONS.add(&["opened"], 1.0);
    AGENTS_CONNECTED.add(&[], 1.0);
    Connected(())
}

/// A session counted as connected; see [`session_opened`].
#[derive(Debug)]
pub struct Connected(());

impl Drop for Connected {
    fn drop(&mut self) {
        AGENTS_CONNECTED.add(&[], -1.0);
    }
}

/// Records a session refused before it opened.
pub fn session_refused() {
    SESSIONS.add(&["refused"], 1.0);
}

/// What became of a report batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// Stored for the first time.
    Stored,
    /// Already stored: acknowledged again, nothing written.
    Replayed,
    /// Refused (malformed, over a limit, from an unknown agent).
    Refused,
}

/// Records a report batch and, when stored, the sightings it carried.
pub fn batch(outcome: Batch, sightings: u64) {
    let label = match outcome {
        Batch::Stored => "stored",
        Batch::Replayed => "replayed",
        Batch::Refused => "refused",
    };
    BATCHES.add(&[label], 1.0);
    if outcome == Batch::Stored {
        SIGHTINGS.add(&[], sightings as f64);
    }
}

/// Records a pull of `source` that was stored.
pub fn source_pulled(source: &str) {
    SOURCE_PULLS.add(&[source], 1.0);
}

/// Where a source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Fetching: the network, the TAXII server, the file.
    Pull,
    /// Parsing and storing what was fetched.
    Ingest,
}

/// Records a failure of `source` at `stage`.
pub fn source_error(source: &str, stage: Stage) {
    SOURCE_ERRORS.add(
        &[source, if stage == Stage::Pull { "pull" } else { "ingest" }],
        1.0,
    );
}

/// Records `objects` STIX objects pushed to `upstream` for `community`.
pub fn share_pushed(community: &str, upstream: &str, objects: u64) {
    SHARE_PUSHED.add(&[community, upstream], objects as f64);
}

/// Records a failed exchange with `upstream` for `community`.
pub fn share_error(community: &str, upstream: &str) {
    SHARE_ERRORS.add(&[community, upstream], 1.0);
}

/// Records one HTTP request served on the `--http` listener: `route` is a fixed label
/// (`taxii_objects`, `taxii_discovery`, `dashboard`, `metrics`, ...), never a raw path;
/// `status` the HTTP status, recorded by class (`2xx`, `4xx`, ...).
pub fn http_request(route: &'static str, status: u16, seconds: f64) {
    let code = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    HTTP.observe(&[route, code], seconds.max(0.0));
}

fn families() -> [&'static Family; 9] {
    [
        &SETS_PUBLISHED,
        &AGENTS_CONNECTED,
        &SESSIONS,
        &SIGHTINGS,
        &BATCHES,
        &SOURCE_PULLS,
        &SOURCE_ERRORS,
        &SHARE_PUSHED,
        &SHARE_ERRORS,
    ]
}

/// The resident set size in bytes, from the `VmRSS` line of `/proc/self/status` (Linux);
/// `None` elsewhere.
fn rss_bytes() -> Option<f64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Renders every collector metric in the Prometheus text exposition format 0.0.4
/// (`Content-Type: text/plain; version=0.0.4; charset=utf-8`).
pub fn render() -> String {
    start();
    let mut out = String::with_capacity(4096);
    for f in families() {
        f.render(&mut out);
    }
    HTTP.render(&mut out);
    if let Some((at, wall)) = START.get() {
        header(
            &mut out,
            "process_start_time_seconds",
            "When the collector process started, Unix time.",
            "gauge",
        );
        let _ = writeln!(out, "process_start_time_seconds {}", number(wall.floor()));
        header(
            &mut out,
            "picket_collector_uptime_seconds",
            "Seconds since the collector process started.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "picket_collector_uptime_seconds {:.3}",
            at.elapsed().as_secs_f64()
        );
    }
    if let Some(rss) = rss_bytes() {
        header(
            &mut out,
            "process_resident_memory_bytes",
            "Resident memory of the collector process.",
            "gauge",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {}", number(rss));
    }
    out
}

/// The content type [`render`]'s text goes out with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether `/metrics` may be answered, and to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No usable token file: metrics are off, answer 404.
    Off,
    /// Metrics are on but the request did not carry the token: answer 401.
    Denied,
    /// The request carried the token.
    Granted,
}

/// `DIR/keys/metrics.token`.
pub fn token_path(dir: &DataDir) -> PathBuf {
    dir.path().join(datadir::KEYS).join(TOKEN_FILE)
}

/// The token in the file, if there is a usable one: present, owner-only, at most 4 KiB, one
/// non-empty line. A file others can read is refused (metrics stay off) rather than trusted.
fn read_token(dir: &DataDir) -> Option<String> {
    let path = token_path(dir);
    let file = fs::File::open(&path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        return None;
    }
    let mut text = String::new();
    file.take(TOKEN_FILE_MAX).read_to_string(&mut text).ok()?;
    let token = text.trim();
    (!token.is_empty() && !token.contains(char::is_whitespace)).then(|| token.to_owned())
}

/// Whether a request with this `Authorization` header value may read `/metrics`: [`Access::Off`]
/// while there is no usable `DIR/keys/metrics.token`, else [`Access::Granted`] only for
/// `Bearer <token>` (scheme case-insensitive), compared in constant time.
pub fn access(dir: &DataDir, authorization: Option<&str>) -> Access {
    judge(read_token(dir).as_deref(), authorization)
}

/// [`access`] once the token file is read: `token` is its token, `None` while metrics are off.
/// `authorization` comes from anyone (its size is bounded by the HTTP head's cap).
pub fn judge(token: Option<&str>, authorization: Option<&str>) -> Access {
    let Some(token) = token else {
        return Access::Off;
    };
    let Some(header) = authorization else {
        return Access::Denied;
    };
    let header = header.trim();
    let Some((scheme, presented)) = header.split_once(' ') else {
        return Access::Denied;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Access::Denied;
    }
    let presented = presented.trim();
    // Constant time over the bytes; the lengths are compared apart (a token's length is no
    // secret: every token `metrics token` makes is 64 hex digits).
    let same = presented.len() == token.len()
        && bool::from(subtle::ConstantTimeEq::ct_eq(
            presented.as_bytes(),
            token.as_bytes(),
        ));
    if same {
        Access::Granted
    } else {
        Access::Denied
    }
}

/// Whether `/metrics` needs a bearer token and this one is it: true only for
/// [`Access::Granted`]. Use [`access`] to tell "off" (404) from "denied" (401).
pub fn authorised(dir: &DataDir, authorization: Option<&str>) -> bool {
    access(dir, authorization) == Access::Granted
}

/// Whether metrics are on: a usable token file exists.
pub fn enabled(dir: &DataDir) -> bool {
    read_token(dir).is_some()
}

/// Makes a new random token (32 bytes, 64 hex digits), writes it to `DIR/keys/metrics.token`
/// (0600, replacing any older one) and returns it, for `metrics token` to print once.
pub fn new_token(dir: &DataDir) -> Result<String, CollectorError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| CollectorError::Refused("the system random generator failed".into()))?;
    let token = hex::encode(bytes);
    let keys = dir.path().join(datadir::KEYS);
    fs::create_dir_all(&keys).map_err(CollectorError::io(&keys))?;
    datadir::replace(&token_path(dir), format!("{token}\n").as_bytes(), 0o600)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any header from anyone: granted exactly when it is `Bearer` (any case) and the
        /// token, with only blanks around them.
        #[test]
        fn only_the_token_is_granted(
            token in "[0-9a-f]{1,64}",
            header in proptest::option::of(any::<String>()),
        ) {
            let expected = header.as_deref().is_some_and(|h| {
                h.trim()
                    .split_once(' ')
                    .is_some_and(|(s, t)| s.eq_ignore_ascii_case("bearer") && t.trim() == token)
            });
            let got = judge(Some(&token), header.as_deref());
            prop_assert_eq!(got == Access::Granted, expected);
            prop_assert_eq!(judge(None, header.as_deref()), Access::Off);
            let right = format!("bEaReR {token}");
            prop_assert_eq!(judge(Some(&token), Some(&right)), Access::Granted);
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), "a\\nb");
    }

    #[test]
    fn numbers_render_as_the_format_reads_them() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram {
            name: "t_seconds",
            help: "t",
            bounds: &[0.1, 1.0],
            labels: &["route"],
            series: Mutex::new(BTreeMap::new()),
        };
        h.observe(&["a"], 0.05);
        h.observe(&["a"], 0.5);
        h.observe(&["a"], 5.0);
        let mut out = String::new();
        h.render(&mut out);
        assert!(
            out.contains("t_seconds_bucket{route=\"a\",le=\"0.1\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{route=\"a\",le=\"1\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{route=\"a\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("t_seconds_count{route=\"a\"} 3\n"), "{out}");
    }

    #[test]
    fn a_family_stops_growing_at_its_cap() {
        let f = Family::new("t_total", "t", Kind::Counter, &["x"]);
        for i in 0..MAX_SERIES + 10 {
            f.add(&[&i.to_string()], 1.0);
        }
        assert_eq!(
            f.series.lock().unwrap_or_else(|e| e.into_inner()).len(),
            MAX_SERIES
        );
    }
}
