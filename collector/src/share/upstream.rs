//! A community's upstream TAXII 2.1 collections (`[[community.upstream]]`): pushing what the
//! community may receive to them, and pulling other organisations' sightings from them.
//!
//! [`push`] sends exactly the objects of [`preview`](super::preview)'s bundle, the bytes
//! `share preview` prints, less the object versions the table `pushed` says the upstream
//! already has. Objects go in envelopes under the API root's `max_content_length`; a `pending`
//! status is polled for a bounded time; what the server confirmed is recorded in `pushed`, and
//! what failed is reported and offered again at the next push.
//!
//! [`pull`] asks each upstream for the sightings added since its bookmark (`upstream_bookmarks`)
//! and hands them to [`inbound::accept`](super::inbound::accept) as the account
//! `upstream:<name>`: one organisation towards k, whatever `created_by_ref` the objects claim.
//!
//! Invariants:
//! - Nothing is pushed but the preview's objects, object for object.
//! - An object version reaches an upstream once. Before a batch is sent, and again before it
//!   is sent a second time after a POST whose outcome is unknown (connection dropped, timeout,
//!   5xx, an unreadable answer), the server is asked which of its object versions it holds
//!   (its manifest, `match[id]` and `match[version]=all`); those are recorded as pushed and not
//!   sent. Without read access to the collection there is no asking, so an unknown outcome is
//!   not followed by a resend within the push: the next push offers the objects again.
//! - Objects this collector pushed to any upstream of a community, or would push now, never
//!   come back in as another organisation's sightings.
//! - A pull's bookmark moves only after what it brought was stored. (`accept` is idempotent, so
//!   a crash between the two only pulls the same objects again.)
//!
//! The settings are checked here, when used: a bad `[[community.upstream]]` stops the command
//! with a message naming it and picket.toml. Passwords are read from their files at use and
//! never shown.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::params;
use serde::Serialize;
use serde_json::Value;

use crate::config::UpstreamConfig;
use crate::datadir::DataDir;
use crate::store::{Store, ORG};
use crate::taxii::{self, printable, Client, Credentials, Limits, Status, TaxiiError, Timestamp};
use crate::CollectorError;

/// How often `serve` pulls from and pushes to every upstream.
pub const PERIOD: Duration = Duration::from_secs(60);

/// POSTs of one batch (and GETs of one request) tried before giving up until the next push.
const ATTEMPTS: usize = 3;
/// The wait before each further attempt.
const BACKOFF: [Duration; ATTEMPTS - 1] = [Duration::from_secs(1), Duration::from_secs(4)];
/// How long one upstream's push or pull may take, retries and status polls included; no retry
/// is started that would end after it.
const DEADLINE: Duration = Duration::from_secs(300);
/// How long a `pending` status is polled before its objects are left to the next push.
const STATUS_WAIT: Duration = Duration::from_secs(30);
/// The request body size assumed when the API root states no `max_content_length`.
const DEFAULT_MAX_CONTENT: u64 = 1 << 20;
/// The largest password file read.
const MAX_PASSWORD_FILE: u64 = 64 << 10;
/// The largest response body read from an upstream (a page of sightings, a status).
const MAX_RESPONSE: u64 = 16 << 20;
/// The most body bytes one pull of sightings reads.
const MAX_PULL: u64 = 256 << 20;

/// One `[[community.upstream]]`, checked.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Its name, unique within the community.
    pub name: String,
    /// The API root's URL.
    pub api_root: String,
    /// The collection's id.
    pub collection: String,
    /// Whether the community's objects are pushed there.
    pub push: bool,
    /// Whether sightings are pulled from there.
    pub pull: bool,
    credentials: Option<Credentials>,
    ca: Option<PathBuf>,
}

impl Upstream {
    /// The collection's objects URL, for messages.
    pub fn objects_url(&self) -> String {
        format!(
            "{}/collections/{}/objects/",
            self.api_root.trim_end_matches('/'),
            self.collection
        )
    }

    fn client(&self) -> Result<Client, TaxiiError> {
        let limits = Limits {
            max_response: MAX_RESPONSE,
            max_pull: MAX_PULL,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        Client::new(self.credentials.as_ref(), self.ca.as_deref(), &limits)
    }
}

/// The upstreams of community `community`, checked: names unique and well formed, URLs that
/// the TAXII client accepts (a CA file for `https://`, plain `http://` only to this host),
/// credentials complete and their password files readable. Errors name the upstream and
/// picket.toml.
pub fn upstreams(dir: &DataDir, community: &str) -> Result<Vec<Upstream>, CollectorError> {
    let path = dir.config_path();
    let entry = dir
        .config()
        .communities
        .iter()
        .find(|c| c.name == community)
        .ok_or_else(|| {
            CollectorError::Refused(format!(
                "{}: no [[community]] named {community:?}",
                path.display()
            ))
        })?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for u in &entry.upstream {
        let bad = |problem: String| CollectorError::Config {
            path: path.clone(),
            problem: format!(
                "[[community.upstream]] {:?} of community {community:?}: {problem}",
                printable(&u.name, 80)
            ),
        };
        if u.name.is_empty()
            || !u
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(
                "name: use letters, digits, '-' and '_' only (and at least one)".to_owned(),
            ));
        }
        if !seen.insert(u.name.as_str()) {
            return Err(bad(
                "name: another upstream of this community has the same name; names must be unique".to_owned(),
            ));
        }
        if u.collection.is_empty() {
            return Err(bad("collection: the collection id is empty".to_owned()));
        }
        let ca = u.ca.as_ref().map(|ca| resolve(dir.path(), ca));
        taxii::check_api_root(&u.api_root, ca.is_some()).map_err(|e| bad(format!("api_root: {e}")))?;
        let credentials = credentials(dir.path(), u).map_err(bad)?;
        out.push(Upstream {
            name: u.name.clone(),
            api_root: u.api_root.clone(),
            collection: u.collection.clone(),
            push: u.push,
            pull: u.pull,
            credentials,
            ca,
        });
    }
    Ok(out)
}

/// A path from picket.toml: relative to the data directory, or absolute.
fn resolve(data: &Path, path: &str) -> PathBuf {
    data.join(path)
}

/// The upstream's HTTP Basic credentials: `username`, and the first line of `password_file`.
fn credentials(data: &Path, u: &UpstreamConfig) -> Result<Option<Credentials>, String> {
    let (username, file) = match (&u.username, &u.password_file) {
        (None, None) => return Ok(None),
        (Some(username), Some(file)) => (username, resolve(data, file)),
        (Some(_), None) => return Err("username is set but password_file is not".to_owned()),
        (None, Some(_)) => return Err("password_file is set but username is not".to_owned()),
    };
    let problem = |what: String| format!("password_file {}: {what}", file.display());
    let meta = std::fs::metadata(&file).map_err(|e| problem(e.to_string()))?;
    if meta.len() > MAX_PASSWORD_FILE {
        return Err(problem(format!(
            "larger than {MAX_PASSWORD_FILE} bytes; its first line should be the password"
        )));
    }
    let text = std::fs::read_to_string(&file).map_err(|e| problem(e.to_string()))?;
    let password = text.lines().next().unwrap_or_default().trim_end_matches('\r');
    if password.is_empty() {
        return Err(problem("its first line (the password) is empty".to_owned()));
    }
    Ok(Some(Credentials {
        username: username.clone(),
        password: password.to_owned(),
    }))
}

/// What one push did for one upstream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    /// The upstream's name.
    pub upstream: String,
    /// The collection's objects URL.
    pub url: String,
    /// Objects in the community's bundle now.
    pub offered: usize,
    /// Object versions recorded as pushed by an earlier push, not sent again.
    pub unchanged: usize,
    /// Object versions this push delivered (confirmed by the server's status, or found on the
    /// server after a POST whose answer was lost).
    pub sent: usize,
    /// Object versions the server already held before this push sent them.
    pub already: usize,
    /// Object versions the server had not decided on when the status poll ended; the next push
    /// asks again.
    pub pending: usize,
    /// Further attempts after a failed request.
    pub retries: u32,
    /// Object versions that did not go, and why; the next push offers them again.
    pub failed: Vec<Failed>,
    /// Why the push to this upstream stopped, if it did; the next push goes on from there.
    pub error: Option<String>,
}

/// An object version a push could not deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failed {
    /// The object's id.
    pub id: String,
    /// Its version (`modified`, else `created`).
    pub version: String,
    /// Why (the server's message, made printable, or ours).
    pub reason: String,
}

/// What one pull did for one upstream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PullReport {
    /// The upstream's name.
    pub upstream: String,
    /// The collection's objects URL.
    pub url: String,
    /// Objects the server sent.
    pub received: usize,
    /// Sightings stored as the account `upstream:<name>` (or already there, identical).
    pub taken: usize,
    /// Sightings that were this collector's own (pushed, or about to be): not taken.
    pub own: usize,
    /// Objects that are not sightings (a server that ignored `match[type]`): not taken.
    pub other: usize,
    /// Sightings refused, and why.
    pub refused: Vec<Refused>,
    /// The bookmark stored after the pull.
    pub bookmark: Option<String>,
    /// Further attempts after a failed request.
    pub retries: u32,
    /// Why the pull failed, if it did; nothing was stored and the bookmark did not move.
    pub error: Option<String>,
}

/// A pulled object `inbound::accept` did not take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refused {
    /// The object's id, made printable.
    pub id: String,
    /// Why.
    pub reason: String,
}

/// One object of the bundle, with its identity for `pushed`.
#[derive(Debug, Clone)]
struct Item {
    id: String,
    version: String,
    object: Value,
}

impl Item {
    fn key(&self) -> (String, VersionKey) {
        (self.id.clone(), VersionKey::of(&self.version))
    }
}

/// A version, compared as a timestamp when it is one (servers write fractions their own way),
/// else as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum VersionKey {
    Time(Timestamp),
    Text(String),
}

impl VersionKey {
    fn of(version: &str) -> VersionKey {
        Timestamp::parse(version).map_or_else(|| VersionKey::Text(version.to_owned()), VersionKey::Time)
    }
}

/// Why one upstream's push or pull stopped.
#[derive(Debug)]
enum Halt {
    /// The store failed: the whole command stops.
    Store(CollectorError),
    /// The upstream failed: reported, and the next upstream goes on.
    Remote(String),
}

impl From<CollectorError> for Halt {
    fn from(e: CollectorError) -> Halt {
        Halt::Store(e)
    }
}

impl From<TaxiiError> for Halt {
    fn from(e: TaxiiError) -> Halt {
        Halt::Remote(e.to_string())
    }
}

/// Pushes community `community`'s bundle as `share preview` shows it at `now` (seconds) to each
/// of its upstreams with `push = true`. One report per upstream; an upstream's failure is in its
/// report, and `Err` means the configuration, the preview or the store failed.
pub fn push(dir: &DataDir, community: &str, now: i64) -> Result<Vec<PushReport>, CollectorError> {
    let targets: Vec<Upstream> = upstreams(dir, community)?
        .into_iter()
        .filter(|u| u.push)
        .collect();
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let preview = super::preview(dir, community, now)?;
    let items = items(&preview.bundle)?;
    let mut store = dir.store()?;
    let mut reports = Vec::new();
    for up in &targets {
        reports.push(push_to(
            &mut store,
            community,
            up,
            &items,
            now.saturating_mul(1000),
        )?);
    }
    Ok(reports)
}

/// The bundle's objects with their ids and versions.
fn items(bundle: &Value) -> Result<Vec<Item>, CollectorError> {
    let Some(objects) = bundle.get("objects").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    objects
        .iter()
        .map(|o| {
            let text = |k: &str| o.get(k).and_then(Value::as_str);
            let id = text("id").unwrap_or_default();
            // Every object Picket shares has `created`; `modified` when it is versioned.
            let version = text("modified").or_else(|| text("created")).ok_or_else(|| {
                CollectorError::Refused(format!(
                    "the shared object {id:?} has neither modified nor created"
                ))
            })?;
            Ok(Item {
                id: id.to_owned(),
                version: version.to_owned(),
                object: o.clone(),
            })
        })
        .collect()
}

fn push_to(
    store: &mut Store,
    community: &str,
    up: &Upstream,
    items: &[Item],
    now_ms: i64,
) -> Result<PushReport, CollectorError> {
    let mut report = PushReport {
        upstream: up.name.clone(),
        url: up.objects_url(),
        offered: items.len(),
        ..PushReport::default()
    };
    let done: HashSet<(String, VersionKey)> = store
        .pushed_versions(community, &up.name)?
        .iter()
        .map(|(id, version)| (id.clone(), VersionKey::of(version)))
        .collect();
    let todo: Vec<&Item> = items.iter().filter(|i| !done.contains(&i.key())).collect();
    report.unchanged = items.len() - todo.len();
    if todo.is_empty() {
        return Ok(report);
    }
    let mut pusher = Pusher {
        store,
        community,
        up,
        deadline: Instant::now() + DEADLINE,
        now_ms,
        report: &mut report,
    };
    match pusher.run(&todo) {
        Ok(()) => {}
        Err(Halt::Store(e)) => return Err(e),
        Err(Halt::Remote(e)) => report.error = Some(e),
    }
    Ok(report)
}

/// One upstream's push in progress.
struct Pusher<'a> {
    store: &'a mut Store,
    community: &'a str,
    up: &'a Upstream,
    deadline: Instant,
    now_ms: i64,
    report: &'a mut PushReport,
}

impl Pusher<'_> {
    fn run(&mut self, todo: &[&Item]) -> Result<(), Halt> {
        let client = self.up.client()?;
        let root = self.retrying(|| client.api_root(&self.up.api_root))?;
        let max = root.max_content_length.unwrap_or(DEFAULT_MAX_CONTENT).max(1);
        let (batches, too_large) = batches(todo, max);
        self.report.failed.extend(too_large);
        for batch in batches {
            self.send_batch(&client, batch)?;
        }
        Ok(())
    }

    fn send_batch(&mut self, client: &Client, batch: Vec<&Item>) -> Result<(), Halt> {
        // Ask first: an earlier push may have delivered these without learning so.
        let (readable, mut left) = match self.present(client, &batch) {
            Ok(present) => {
                let (held, left) = split(batch, &present);
                self.report.already += held.len();
                self.record(&held)?;
                (true, left)
            }
            // A write-only collection: nothing to ask (see the module's invariants).
            Err(TaxiiError::Forbidden { .. }) => (false, batch),
            Err(e) => return Err(e.into()),
        };
        let mut attempt = 0;
        while !left.is_empty() {
            let objects: Vec<Value> = left.iter().map(|i| i.object.clone()).collect();
            let error = match client.post_objects(&self.up.api_root, &self.up.collection, &objects) {
                Ok(status) => return self.settle(client, status, left, readable),
                Err(e) => e,
            };
            let unknown = outcome_unknown(&error);
            if !unknown && !refused_for_now(&error) {
                return Err(error.into());
            }
            if unknown && !readable {
                return Err(Halt::Remote(format!(
                    "{error}; whether the server took the objects is unknown, and the collection cannot be \
                     read to find out, so they are not sent again now (the next push offers them again)"
                )));
            }
            attempt += 1;
            let wait = BACKOFF.get(attempt - 1).copied();
            let out_of_time = wait.is_none_or(|w| Instant::now() + w > self.deadline);
            if !out_of_time {
                self.report.retries += 1;
                std::thread::sleep(wait.unwrap_or_default());
            }
            if unknown {
                // Before sending again (or giving up), learn what arrived.
                match self.present(client, &left) {
                    Ok(present) => {
                        let (arrived, rest) = split(left, &present);
                        self.report.sent += arrived.len();
                        self.record(&arrived)?;
                        left = rest;
                    }
                    Err(e) => {
                        return Err(Halt::Remote(format!(
                            "{error}; then asking which objects arrived failed: {e} (nothing is sent \
                             again now; the next push asks again)"
                        )))
                    }
                }
            }
            if out_of_time && !left.is_empty() {
                return Err(Halt::Remote(format!(
                    "{error} (after {attempt} attempt{}; the next push offers the objects again)",
                    if attempt == 1 { "" } else { "s" }
                )));
            }
        }
        Ok(())
    }

    /// Records what a status resource says, polling it while it is `pending` (bounded).
    fn settle(
        &mut self,
        client: &Client,
        status: Status,
        left: Vec<&Item>,
        readable: bool,
    ) -> Result<(), Halt> {
        let status = self.poll(client, status);
        let confirmed = |i: &Item| {
            status.successes.iter().any(|d| {
                d.id == i.id
                    && (d.version.is_empty() || VersionKey::of(&d.version) == VersionKey::of(&i.version))
            })
        };
        // A status may give counts without details: all taken, nothing failed or pending.
        let all_taken = status.is_complete()
            && status.successes.is_empty()
            && status.failure_count == 0
            && status.pending_count == 0
            && status.success_count == left.len() as u64;
        let (taken, mut rest): (Vec<&Item>, Vec<&Item>) =
            left.into_iter().partition(|i| all_taken || confirmed(i));
        self.report.sent += taken.len();
        self.record(&taken)?;
        let failure = |i: &Item| status.failures.iter().find(|d| d.id == i.id);
        if !rest.is_empty() && readable {
            // A failure may only mean the server holds that version already (medallion says
            // "Unable to process object" for an identical object); an object the status does
            // not mention may have arrived all the same. The manifest says which.
            if let Ok(present) = self.present(client, &rest) {
                let (held, still) = split(rest, &present);
                let (before, now): (Vec<&Item>, Vec<&Item>) =
                    held.into_iter().partition(|i| failure(i).is_some());
                self.report.already += before.len();
                self.report.sent += now.len();
                self.record(&before)?;
                self.record(&now)?;
                rest = still;
            }
        }
        for item in rest {
            match failure(item) {
                Some(d) => self.report.failed.push(Failed {
                    id: item.id.clone(),
                    version: item.version.clone(),
                    reason: d.message.as_deref().map_or_else(
                        || "refused by the server (no reason given)".to_owned(),
                        |m| printable(m, 300),
                    ),
                }),
                None => self.report.pending += 1,
            }
        }
        Ok(())
    }

    /// Polls a `pending` status until it is complete, [`STATUS_WAIT`] has passed or the deadline
    /// is near; the last status read.
    fn poll(&mut self, client: &Client, mut status: Status) -> Status {
        let until = (Instant::now() + STATUS_WAIT).min(self.deadline);
        let mut wait = Duration::from_millis(250);
        while !status.is_complete() && Instant::now() + wait < until {
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(5));
            match client.status(&self.up.api_root, &status.id) {
                Ok(s) => status = s,
                Err(e) if outcome_unknown(&e) || refused_for_now(&e) => continue,
                Err(_) => break,
            }
        }
        status
    }

    /// The versions of `items` the server holds, asked with retries.
    fn present(
        &mut self,
        client: &Client,
        items: &[&Item],
    ) -> Result<HashSet<(String, VersionKey)>, TaxiiError> {
        let mut ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let found =
            self.retrying(|| client.versions_present(&self.up.api_root, &self.up.collection, &ids))?;
        Ok(found
            .into_iter()
            .map(|(id, version)| {
                let key = VersionKey::of(&version);
                (id, key)
            })
            .collect())
    }

    /// `request`, tried again after a wait while it fails in a way that may pass (only for
    /// requests that change nothing on the server).
    fn retrying<T>(&mut self, mut request: impl FnMut() -> Result<T, TaxiiError>) -> Result<T, TaxiiError> {
        let mut attempt = 0;
        loop {
            match request() {
                Err(e) if outcome_unknown(&e) || refused_for_now(&e) => {
                    let wait = BACKOFF.get(attempt).copied();
                    match wait {
                        Some(w) if Instant::now() + w < self.deadline => {
                            attempt += 1;
                            self.report.retries += 1;
                            std::thread::sleep(w);
                        }
                        _ => return Err(e),
                    }
                }
                other => return other,
            }
        }
    }

    fn record(&mut self, items: &[&Item]) -> Result<(), CollectorError> {
        self.store
            .record_pushed(self.community, &self.up.name, items, self.now_ms)
    }
}

/// `todo` in envelopes of at most `max` bytes each, in order; an object too large to go alone
/// fails.
fn batches<'i>(todo: &[&'i Item], max: u64) -> (Vec<Vec<&'i Item>>, Vec<Failed>) {
    // `{"objects":[` and `]}`; each object adds its length and a comma.
    const FRAME: u64 = 14;
    let mut out: Vec<Vec<&Item>> = Vec::new();
    let mut too_large = Vec::new();
    let mut current: Vec<&Item> = Vec::new();
    let mut size = FRAME;
    for &item in todo {
        let len = serde_json::to_vec(&item.object).map_or(u64::MAX, |b| b.len() as u64);
        if FRAME.saturating_add(len) > max {
            too_large.push(Failed {
                id: item.id.clone(),
                version: item.version.clone(),
                reason: format!(
                    "{len} bytes: larger alone than the API root's max_content_length ({max} bytes)"
                ),
            });
            continue;
        }
        if !current.is_empty() && size.saturating_add(len + 1) > max {
            out.push(std::mem::take(&mut current));
            size = FRAME;
        }
        size = size.saturating_add(len + 1);
        current.push(item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    (out, too_large)
}

/// `items` split into those whose version `present` holds, and the rest.
fn split<'i>(
    items: Vec<&'i Item>,
    present: &HashSet<(String, VersionKey)>,
) -> (Vec<&'i Item>, Vec<&'i Item>) {
    items.into_iter().partition(|i| present.contains(&i.key()))
}

/// Whether a failed request may have reached the server and done its work: the connection
/// failed or timed out, the server failed (5xx), or its answer could not be read.
fn outcome_unknown(e: &TaxiiError) -> bool {
    matches!(
        e,
        TaxiiError::Transport { .. }
            | TaxiiError::Json { .. }
            | TaxiiError::TooLarge { .. }
            | TaxiiError::MediaType { .. }
            | TaxiiError::Status {
                status: 500..=599,
                ..
            }
    )
}

/// Whether the server refused a request for now, without doing it (408, 429).
fn refused_for_now(e: &TaxiiError) -> bool {
    matches!(
        e,
        TaxiiError::Status {
            status: 408 | 429,
            ..
        }
    )
}

/// Pulls the sightings each upstream of community `community` with `pull = true` added since
/// its bookmark, and stores them as the account `upstream:<name>` (see
/// [`inbound::accept`](super::inbound::accept)), leaving out this collector's own. `now` is in
/// seconds. One report per upstream; an upstream's failure is in its report, and `Err` means the
/// configuration or the store failed.
pub fn pull(dir: &DataDir, community: &str, now: i64) -> Result<Vec<PullReport>, CollectorError> {
    let sources: Vec<Upstream> = upstreams(dir, community)?
        .into_iter()
        .filter(|u| u.pull)
        .collect();
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    let mut store = dir.store()?;
    // Ours: what any upstream of the community was sent, and what would be sent now (a push may
    // be under way in another process, its POST made and not yet recorded).
    let mut own = store.pushed_ids(community)?;
    let preview = super::preview(dir, community, now)?;
    own.extend(items(&preview.bundle)?.into_iter().map(|i| i.id));
    let mut reports = Vec::new();
    for up in &sources {
        reports.push(pull_from(
            &mut store,
            community,
            up,
            &own,
            now.saturating_mul(1000),
        )?);
    }
    Ok(reports)
}

fn pull_from(
    store: &mut Store,
    community: &str,
    up: &Upstream,
    own: &HashSet<String>,
    now_ms: i64,
) -> Result<PullReport, CollectorError> {
    let mut report = PullReport {
        upstream: up.name.clone(),
        url: up.objects_url(),
        ..PullReport::default()
    };
    let bookmark = store.upstream_bookmark(community, &up.name)?;
    report.bookmark = bookmark.clone();
    let pulled = {
        let deadline = Instant::now() + DEADLINE;
        let mut attempt = 0;
        loop {
            let result = up.client().and_then(|client| {
                client.pull_matching(
                    &up.api_root,
                    &up.collection,
                    bookmark.as_deref(),
                    &[("match[type]", "sighting".to_owned())],
                )
            });
            match result {
                Ok(pulled) => break pulled,
                Err(e) => match BACKOFF.get(attempt) {
                    Some(&w)
                        if (outcome_unknown(&e) || refused_for_now(&e)) && Instant::now() + w < deadline =>
                    {
                        attempt += 1;
                        report.retries += 1;
                        std::thread::sleep(w);
                    }
                    _ => {
                        report.error = Some(e.to_string());
                        return Ok(report);
                    }
                },
            }
        }
    };
    report.received = pulled.objects.len();
    let mut objects = Vec::new();
    for object in pulled.objects {
        let text = |k: &str| {
            object
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        if text("type") != "sighting" {
            report.other += 1;
        } else if own.contains(&text("id")) {
            report.own += 1;
        } else {
            objects.push(Value::Object(object));
        }
    }
    if !objects.is_empty() {
        let account = format!("upstream:{}", up.name);
        let outcomes = super::inbound::accept(store, community, &account, &objects, now_ms)?;
        for o in outcomes {
            match o.error {
                None => report.taken += 1,
                Some(reason) => report.refused.push(Refused {
                    id: printable(&o.id, 120),
                    reason: printable(&reason, 300),
                }),
            }
        }
    }
    if let Some(b) = pulled.bookmark.filter(|b| Some(b) != bookmark.as_ref()) {
        store.set_upstream_bookmark(community, &up.name, &b)?;
        report.bookmark = Some(b);
    }
    Ok(report)
}

impl Store {
    /// The `(object id, version)` pairs recorded as pushed to `upstream` of `community`.
    fn pushed_versions(
        &self,
        community: &str,
        upstream: &str,
    ) -> Result<Vec<(String, String)>, CollectorError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT object_id, version FROM pushed WHERE org = ?1 AND community = ?2 AND upstream = ?3",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG, community, upstream], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The ids of every object pushed to any upstream of `community`.
    fn pushed_ids(&self, community: &str) -> Result<HashSet<String>, CollectorError> {
        let mut stmt = self
            .conn()
            .prepare("SELECT DISTINCT object_id FROM pushed WHERE org = ?1 AND community = ?2")
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG, community], |r| r.get(0))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Records `items` as pushed to `upstream` of `community`, in one transaction.
    fn record_pushed(
        &mut self,
        community: &str,
        upstream: &str,
        items: &[&Item],
        now_ms: i64,
    ) -> Result<(), CollectorError> {
        if items.is_empty() {
            return Ok(());
        }
        let err = self.err();
        let tx = self.tx()?;
        for item in items {
            tx.execute(
                "INSERT OR IGNORE INTO pushed (org, community, upstream, object_id, version, pushed_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![ORG, community, upstream, item.id, item.version, now_ms],
            )
            .map_err(&err)?;
        }
        tx.commit().map_err(&err)
    }

    /// Where pulling from `upstream` of `community` stopped.
    fn upstream_bookmark(&self, community: &str, upstream: &str) -> Result<Option<String>, CollectorError> {
        use rusqlite::OptionalExtension;
        self.conn()
            .query_row(
                "SELECT added_after FROM upstream_bookmarks WHERE org = ?1 AND community = ?2 AND upstream = ?3",
                params![ORG, community, upstream],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    fn set_upstream_bookmark(
        &mut self,
        community: &str,
        upstream: &str,
        added_after: &str,
    ) -> Result<(), CollectorError> {
        self.conn()
            .execute(
                "INSERT INTO upstream_bookmarks (org, community, upstream, added_after) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (org, community, upstream) DO UPDATE SET added_after = excluded.added_after",
                params![ORG, community, upstream, added_after],
            )
            .map_err(self.err())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn item(id: &str, bytes: usize) -> Item {
        Item {
            id: id.into(),
            version: "2024-01-01T00:00:00.000Z".into(),
            object: json!({"id": id, "pad": "x".repeat(bytes)}),
        }
    }

    #[test]
    fn batches_stay_under_max_content_length_and_keep_order() {
        let all: Vec<Item> = (0..7).map(|n| item(&format!("x--{n}"), 100 + n)).collect();
        let big = item("x--big", 5000);
        let mut todo: Vec<&Item> = all.iter().collect();
        todo.insert(3, &big);
        let max = 400;
        let (out, too_large) = batches(&todo, max);
        assert_eq!(too_large.len(), 1);
        assert_eq!(too_large[0].id, "x--big");
        assert!(too_large[0].reason.contains("max_content_length (400 bytes)"));
        let ids: Vec<&str> = out.iter().flatten().map(|i| i.id.as_str()).collect();
        let want: Vec<String> = (0..7).map(|n| format!("x--{n}")).collect();
        assert_eq!(ids, want.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.len() > 1);
        for b in &out {
            let objects: Vec<Value> = b.iter().map(|i| i.object.clone()).collect();
            let body = serde_json::to_vec(&json!({ "objects": objects })).unwrap();
            assert!(body.len() as u64 <= max, "{} > {max}", body.len());
        }
    }

    #[test]
    fn versions_compare_as_times() {
        assert_eq!(
            VersionKey::of("2024-01-01T00:00:00Z"),
            VersionKey::of("2024-01-01T00:00:00.000Z")
        );
        assert_ne!(
            VersionKey::of("2024-01-01T00:00:00.001Z"),
            VersionKey::of("2024-01-01T00:00:00.000Z")
        );
        assert_eq!(VersionKey::of("v1"), VersionKey::Text("v1".into()));
    }

    #[test]
    fn the_unknown_and_the_refused() {
        let status = |status| TaxiiError::Status {
            url: "u".into(),
            status,
            detail: String::new(),
        };
        for (e, unknown, later) in [
            (status(500), true, false),
            (status(503), true, false),
            (status(429), false, true),
            (status(400), false, false),
            (status(413), false, false),
            (
                TaxiiError::Transport {
                    url: "u".into(),
                    problem: "connection reset".into(),
                },
                true,
                false,
            ),
            (TaxiiError::Unauthorized { url: "u".into() }, false, false),
        ] {
            assert_eq!(
                (outcome_unknown(&e), refused_for_now(&e)),
                (unknown, later),
                "{e}"
            );
        }
    }

    #[test]
    fn items_carry_their_versions() {
        let b = json!({"type": "bundle", "objects": [
            {"id": "sighting--1", "created": "2024-01-01T00:00:00.000Z", "modified": "2024-01-02T00:00:00.000Z"},
            {"id": "marking-definition--1", "created": "2022-10-01T00:00:00.000Z"}
        ]});
        let v: Vec<(String, String)> = items(&b)
            .unwrap()
            .into_iter()
            .map(|i| (i.id, i.version))
            .collect();
        assert_eq!(
            v,
            [
                ("sighting--1".into(), "2024-01-02T00:00:00.000Z".into()),
                ("marking-definition--1".into(), "2022-10-01T00:00:00.000Z".into())
            ]
        );
        assert!(items(&json!({"type": "bundle"})).unwrap().is_empty());
        assert!(items(&json!({"objects": [{"id": "x--1"}]})).is_err());
    }
}
