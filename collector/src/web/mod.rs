//! The operator dashboard, served by `serve --http` beside the TAXII API (see
//! [`crate::taxii_server`], which hands it every request under `/ui/` and `/`): fleet,
//! sightings with false-positive triage, sharing (preview, what left, what came in) and
//! sources, as server-rendered HTML with no script, no CDN and no inline style.
//!
//! Operators are accounts in the store (`operators`, written by `operator add`), their
//! passwords salted and stretched with PBKDF2 as TAXII members' are. A login (a form POST)
//! runs PBKDF2 under the same per-peer limiter as TAXII logins ([`Failures`]): a peer with too
//! many failures within the window is answered 429 without PBKDF2. A login that succeeds makes
//! a session: 256 random bits in the cookie `__Host-picket` (Secure, HttpOnly,
//! SameSite=Strict, Path=/), kept in this process only under the SHA-256 of the id, ending
//! after [`IDLE`] without use, [`ABSOLUTE`] after login, or at logout.
//!
//! Invariants:
//! - Every page but the login form and the style sheet needs a live session; without one a GET
//!   is sent to the login form and a POST is refused (403).
//! - Every POST (logout, false-positive mark) carries the session's form token in a hidden
//!   field, compared in constant time, and comes from this origin (`Origin`, else `Referer`,
//!   must be `https://<Host>`); the login form, which has no session yet, needs the origin.
//! - No secret ever appears in a URL: credentials and tokens travel in form bodies and the
//!   cookie only, and every response says `Cache-Control: no-store`.
//! - Every response carries the security headers of [`security_headers`]: a
//!   Content-Security-Policy that allows no script at all and styles only from
//!   `/ui/style.css`, `nosniff`, no framing, and no referrer sent to other origins.
//! - Whatever is shown that came from an agent, a feed, a member or the configuration goes
//!   through [`html::escape`].
//! - A form body is at most [`MAX_FORM`] bytes; the shell refuses a longer one before reading.

pub mod cert;
pub mod chart;
pub mod html;
mod pages;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, OptionalExtension};
use subtle::ConstantTimeEq;

use crate::datadir::DataDir;
use crate::store::{Store, ORG};
use crate::taxii_server::http::Request;
use crate::taxii_server::limiter::Failures;
use crate::taxii_server::{hash_password, verify_password, PASSWORD_ITERATIONS};
use crate::CollectorError;
use html::Viewer;

/// The session cookie's name. The `__Host-` prefix makes browsers refuse it unless it is
/// Secure, has `Path=/` and no `Domain`, so no other host or path can plant or read it.
pub const COOKIE: &str = "__Host-picket";
/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after its login, used or not.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// The most sessions kept; the least recently used goes first.
pub const MAX_SESSIONS: usize = 1024;
/// The largest form body taken (login, false-positive reason).
pub const MAX_FORM: usize = 16 * 1024;
/// The Content-Security-Policy of every response.
pub const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// An agent whose last frame is older than this is stale (highlighted on the fleet page).
pub const STALE_AFTER: i64 = 600;

const STYLE: &str = include_str!("style.css");
const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Whether `target` (path and query) is the dashboard's: `/`, `/ui` and everything under
/// `/ui/`.
pub fn is_dashboard(target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// A bounded label for the request's route, for metrics (never the raw path, whose values
/// are unbounded).
pub fn route_label(target: &str) -> &'static str {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    match path {
        "/" | "/ui" => "ui_redirect",
        "/ui/" => "ui_fleet",
        "/ui/login" => "ui_login",
        "/ui/logout" => "ui_logout",
        "/ui/style.css" => "ui_style",
        "/ui/sightings" => "ui_sightings",
        "/ui/indicator" => "ui_indicator",
        "/ui/fp" => "ui_fp",
        "/ui/sharing" => "ui_sharing",
        "/ui/sources" => "ui_sources",
        _ => "ui_other",
    }
}

/// Whether answering `req` may run PBKDF2 (a login attempt): the shell takes a slot of its
/// PBKDF2 semaphore first.
pub fn checks_password(req: &Request) -> bool {
    req.method == "POST" && req.target.split('?').next() == Some("/ui/login")
}

/// A response, before the shell frames it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// Every other header (the security headers included).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type,
            headers: security_headers(),
            body: body.into(),
        }
    }

    fn html(status: u16, page: String) -> Reply {
        Reply::new(status, HTML, page)
    }

    fn redirect(location: &str) -> Reply {
        let mut r = Reply::new(303, TEXT, format!("see {location}\n"));
        r.headers.push(("Location".into(), location.to_owned()));
        r
    }

    /// A short page saying what went wrong (`title` and `message` are escaped).
    pub fn problem(status: u16, title: &str, message: &str) -> Reply {
        let body = format!(
            "<h1>{}</h1><p>{}</p><p><a href=\"/ui/\">Back to the dashboard</a></p>",
            html::escape(title),
            html::escape(message)
        );
        Reply::html(status, html::page(title, "", None, &body))
    }

    /// The value of header `name` (case-insensitive), for tests and the shell.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The headers every dashboard response carries.
pub fn security_headers() -> Vec<(String, String)> {
    [
        ("Content-Security-Policy", CSP),
        ("X-Content-Type-Options", "nosniff"),
        // `same-origin`, not `no-referrer`: under `no-referrer` Chromium sends `Origin: null`
        // with the dashboard's own form posts, and the origin check would have to accept
        // "null", which a sandboxed attacker frame sends too. Other origins get no referrer.
        ("Referrer-Policy", "same-origin"),
        ("X-Frame-Options", "DENY"),
        ("Cache-Control", "no-store"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The time a request is answered at: wall clock for what is shown, monotonic for sessions.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix seconds.
    pub unix: i64,
    /// The monotonic clock.
    pub instant: Instant,
}

impl Clock {
    /// Now.
    pub fn now() -> Clock {
        Clock {
            unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            instant: Instant::now(),
        }
    }
}

struct Session {
    operator: String,
    csrf: [u8; 32],
    created: Instant,
    used: Instant,
}

/// The dashboard of one data directory: its sessions and its login limiter.
pub struct Dashboard {
    data: PathBuf,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    failures: Mutex<Failures>,
    pseudonym_key: ring::hmac::Key,
    rng: SystemRandom,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

/// A stretched password that matches nothing, so an unknown operator costs a login as much
/// as a known one.
const DUMMY_HASH: &str =
    "pbkdf2-sha256$100000$00000000000000000000000000000000$0000000000000000000000000000000000000000000000000000000000000000";

impl Dashboard {
    /// The dashboard of data directory `data`, with the TAXII server's login limits.
    pub fn new(data: &Path) -> Result<Dashboard, CollectorError> {
        Dashboard::with_limits(
            data,
            crate::taxii_server::LOGIN_FAILURES,
            crate::taxii_server::LOGIN_WINDOW,
        )
    }

    /// [`Dashboard::new`] with `failures` failed logins per peer allowed within `window`.
    pub fn with_limits(data: &Path, failures: usize, window: Duration) -> Result<Dashboard, CollectorError> {
        DataDir::open(data)?;
        let rng = SystemRandom::new();
        let pseudonym_key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| CollectorError::Refused("dashboard: no randomness for its keys".into()))?;
        Ok(Dashboard {
            data: data.to_owned(),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(Failures::new(failures, window, 4096)),
            pseudonym_key,
            rng,
        })
    }

    /// Answers one request of the dashboard (see [`is_dashboard`]) from peer `ip`; `body` is
    /// the request's body, already read (at most [`MAX_FORM`] bytes, checked by the shell).
    pub fn handle(&self, req: &Request, body: &[u8], ip: IpAddr, now: Clock) -> Reply {
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        match (req.method.as_str(), path) {
            ("GET", "/" | "/ui") => return Reply::redirect("/ui/"),
            ("GET", "/ui/style.css") => return Reply::new(200, "text/css; charset=utf-8", STYLE),
            ("GET", "/ui/login") => {
                return match self.session(req, now) {
                    Some(_) => Reply::redirect("/ui/"),
                    None => Reply::html(200, html::login(None)),
                }
            }
            ("POST", "/ui/login") => return self.login(req, body, ip, now),
            _ => {}
        }
        let Some(viewer) = self.session(req, now) else {
            return if req.method == "GET" {
                Reply::redirect("/ui/login")
            } else {
                Reply::problem(403, "Forbidden", "this form needs a session: log in again")
            };
        };
        if req.method == "POST" {
            let form = match self.checked_form(req, body, &viewer) {
                Ok(f) => f,
                Err(r) => return r,
            };
            return match path {
                "/ui/logout" => self.logout(req),
                "/ui/fp" => self.false_positive(&form, &viewer, now),
                _ => Reply::problem(404, "Not found", "no such form"),
            };
        }
        if req.method != "GET" {
            let mut r = Reply::problem(405, "Method not allowed", "the dashboard answers GET and POST");
            r.headers.push(("Allow".into(), "GET, POST".into()));
            return r;
        }
        let params = parse_form(query.as_bytes()).unwrap_or_default();
        let rendered = match path {
            "/ui/" => self.with_store(|dir, store| pages::fleet(dir, store, now.unix)),
            "/ui/sightings" => self.with_store(|_, store| pages::sightings(store, now.unix)),
            "/ui/indicator" => {
                let Some(id) = field(&params, "id") else {
                    return Reply::problem(400, "Bad request", "give the indicator: ?id=");
                };
                self.with_store(|dir, store| {
                    pages::indicator(dir, store, id, &viewer, &|agent| self.pseudonym(agent))
                })
            }
            "/ui/sharing" => self.with_store(|dir, store| pages::sharing(dir, store, now.unix)),
            "/ui/sources" => self.with_store(|_, store| pages::sources(store, now.unix)),
            _ => return Reply::problem(404, "Not found", "no such page"),
        };
        match rendered {
            Ok(Some((title, body))) => {
                let active = match path {
                    "/ui/indicator" => "/ui/sightings",
                    p => p,
                };
                Reply::html(200, html::page(&title, active, Some(&viewer), &body))
            }
            Ok(None) => Reply::problem(404, "Not found", "no such indicator is stored"),
            Err(e) => {
                tracing::error!("dashboard: {path}: {e}");
                Reply::problem(
                    500,
                    "Error",
                    "the page could not be made; the collector's log says why",
                )
            }
        }
    }

    fn with_store<T>(
        &self,
        f: impl FnOnce(&DataDir, &Store) -> Result<T, CollectorError>,
    ) -> Result<T, CollectorError> {
        let dir = DataDir::open(&self.data)?;
        let store = dir.store()?;
        f(&dir, &store)
    }

    /// A host's pseudonym on the dashboard: 8 hex digits of an HMAC of its agent id under a
    /// key made when the dashboard started, so the page tells hosts apart without showing
    /// their ids.
    fn pseudonym(&self, agent: &str) -> String {
        let tag = ring::hmac::sign(&self.pseudonym_key, agent.as_bytes());
        format!("host-{}", hex::encode(&tag.as_ref()[..4]))
    }

    /// The operator of the request's live session (touched now), if any.
    fn session(&self, req: &Request, now: Clock) -> Option<Viewer> {
        let id = cookie(req)?;
        let key = session_key(&id)?;
        let mut sessions = lock(&self.sessions);
        let s = sessions.get_mut(&key)?;
        if now.instant.saturating_duration_since(s.used) >= IDLE
            || now.instant.saturating_duration_since(s.created) >= ABSOLUTE
        {
            sessions.remove(&key);
            return None;
        }
        s.used = s.used.max(now.instant);
        Some(Viewer {
            operator: s.operator.clone(),
            csrf: hex::encode(s.csrf),
        })
    }

    /// The form of a POST made in a session: same origin, form-encoded, the session's token.
    fn checked_form(
        &self,
        req: &Request,
        body: &[u8],
        viewer: &Viewer,
    ) -> Result<Vec<(String, String)>, Reply> {
        if !same_origin(req) {
            return Err(Reply::problem(
                403,
                "Forbidden",
                "this form was not sent from this dashboard (Origin or Referer)",
            ));
        }
        let form = form_body(req, body)?;
        let sent = field(&form, "csrf").unwrap_or("");
        let ok: bool =
            sent.len() == viewer.csrf.len() && bool::from(sent.as_bytes().ct_eq(viewer.csrf.as_bytes()));
        if !ok {
            return Err(Reply::problem(
                403,
                "Forbidden",
                "the form's token does not match this session: reload the page and try again",
            ));
        }
        Ok(form)
    }

    fn login(&self, req: &Request, body: &[u8], ip: IpAddr, now: Clock) -> Reply {
        if !same_origin(req) {
            return Reply::problem(
                403,
                "Forbidden",
                "this form was not sent from this dashboard (Origin or Referer)",
            );
        }
        let form = match form_body(req, body) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let (Some(name), Some(password)) = (field(&form, "name"), field(&form, "password")) else {
            return Reply::html(400, html::login(Some("give a name and a password")));
        };
        if let Err(wait) = lock(&self.failures).begin(ip, now.instant) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut r = Reply::html(
                429,
                html::login(Some(&format!(
                    "too many failed logins from this address; try again in {secs} s"
                ))),
            );
            r.headers.push(("Retry-After".into(), secs.to_string()));
            return r;
        }
        let stored = match self.with_store(|_, store| store.operator_hash(name)) {
            Ok(s) => s,
            Err(e) => {
                lock(&self.failures).forgive(ip);
                tracing::error!("dashboard: login: {e}");
                return Reply::problem(500, "Error", "the operators could not be read");
            }
        };
        // An unknown name costs a verification too, so timing does not tell names apart.
        let ok = verify_password(stored.as_deref().unwrap_or(DUMMY_HASH), password) && stored.is_some();
        if !ok {
            tracing::warn!("dashboard: failed login from {ip}");
            return Reply::html(401, html::login(Some("wrong name or password")));
        }
        lock(&self.failures).forgive(ip);
        let mut id = [0u8; 32];
        let mut csrf = [0u8; 32];
        if self.rng.fill(&mut id).is_err() || self.rng.fill(&mut csrf).is_err() {
            return Reply::problem(503, "Unavailable", "no randomness for a session; try again");
        }
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| {
            now.instant.saturating_duration_since(s.used) < IDLE
                && now.instant.saturating_duration_since(s.created) < ABSOLUTE
        });
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| *k);
            if let Some(k) = oldest {
                sessions.remove(&k);
            }
        }
        sessions.insert(
            sha256(&id),
            Session {
                operator: name.to_owned(),
                csrf,
                created: now.instant,
                used: now.instant,
            },
        );
        let mut r = Reply::redirect("/ui/");
        r.headers.push((
            "Set-Cookie".into(),
            format!(
                "{COOKIE}={}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                hex::encode(id),
                ABSOLUTE.as_secs()
            ),
        ));
        r
    }

    fn logout(&self, req: &Request) -> Reply {
        if let Some(key) = cookie(req).as_deref().and_then(session_key) {
            lock(&self.sessions).remove(&key);
        }
        let mut r = Reply::redirect("/ui/login");
        r.headers.push((
            "Set-Cookie".into(),
            format!("{COOKIE}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        ));
        r
    }

    /// `POST /ui/fp`: `id`, `action` (`mark` with a `reason`, or `undo`), as `sightings fp`.
    fn false_positive(&self, form: &[(String, String)], viewer: &Viewer, now: Clock) -> Reply {
        let Some(id) = field(form, "id") else {
            return Reply::problem(400, "Bad request", "the form names no indicator");
        };
        let back = format!("/ui/indicator?id={}", html::query_value(id));
        let result = match field(form, "action") {
            Some("undo") => self.with_store(|dir, _| {
                let mut store = dir.store()?;
                store.unmark_false_positive(id).map(|_| ())
            }),
            Some("mark") => {
                let reason = field(form, "reason").unwrap_or("").trim();
                if reason.is_empty() || reason.chars().any(char::is_control) || reason.chars().count() > 500 {
                    return Reply::problem(
                        400,
                        "Bad request",
                        "the reason is 1 to 500 characters, without control characters",
                    );
                }
                self.with_store(|dir, _| {
                    let mut store = dir.store()?;
                    store.mark_false_positive(id, reason, now.unix).map(|_| ())
                })
            }
            _ => return Reply::problem(400, "Bad request", "action is mark or undo"),
        };
        match result {
            Ok(()) => {
                tracing::info!(
                    "dashboard: operator {:?} changed the false-positive mark of {id}",
                    viewer.operator
                );
                Reply::redirect(&back)
            }
            Err(e) => {
                tracing::warn!("dashboard: false positive {id}: {e}");
                Reply::problem(400, "Refused", &e.to_string())
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    out
}

/// The table key of a cookie value: the SHA-256 of the 32 bytes it encodes, so a memory dump
/// of the table holds no usable session id. `None` for a value of the wrong shape.
fn session_key(cookie: &str) -> Option<[u8; 32]> {
    let id = hex::decode(cookie).ok()?;
    (id.len() == 32).then(|| sha256(&id))
}

/// The session cookie's value, from any `Cookie` header.
fn cookie(req: &Request) -> Option<String> {
    req.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Whether the request says it comes from a page of this origin: `Origin` (or, without it,
/// `Referer`) must be `https://<Host>`. Neither is refused: browsers send `Origin` with every
/// POST.
fn same_origin(req: &Request) -> bool {
    let Some(host) = req.header("host").filter(|h| !h.is_empty()) else {
        return false;
    };
    let origin = format!("https://{host}");
    match req.header("origin") {
        Some(o) => o == origin,
        None => req
            .header("referer")
            .is_some_and(|r| r == origin || r.starts_with(&format!("{origin}/"))),
    }
}

/// The fields of a form-encoded POST body; a reply (415, 400) if it is not one.
fn form_body(req: &Request, body: &[u8]) -> Result<Vec<(String, String)>, Reply> {
    let form_type = req.header("content-type").is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|k| k.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    });
    if !form_type {
        return Err(Reply::problem(
            415,
            "Unsupported media type",
            "a form is application/x-www-form-urlencoded",
        ));
    }
    if body.len() > MAX_FORM {
        return Err(Reply::problem(413, "Too large", "the form is over 16 KiB"));
    }
    parse_form(body).ok_or_else(|| Reply::problem(400, "Bad request", "the form is not well-formed UTF-8"))
}

/// Decodes `application/x-www-form-urlencoded` (also a query string); `None` if a value is
/// not UTF-8 once decoded or has a broken `%` escape.
pub fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    fn decode(s: &[u8]) -> Option<String> {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = s.get(i + 1..i + 3)?;
                    let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                    out.push(v);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    }
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.iter().position(|b| *b == b'=') {
                Some(at) => (&p[..at], &p[at + 1..]),
                None => (p, &b""[..]),
            };
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

/// The first value of field `name`.
fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `operator add`: stores operator `name` of data directory `data` with `password` salted and
/// stretched (PBKDF2, as TAXII members). Refuses an empty password, a name that is empty,
/// longer than 64 characters or holds a control character, and a name already there.
pub fn add_operator(data: &Path, name: &str, password: &str, now: i64) -> Result<(), CollectorError> {
    let dir = DataDir::open(data)?;
    let refuse = |why: &str| CollectorError::Refused(format!("operator {name:?}: {why}"));
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(refuse("a name is 1 to 64 characters, without control characters"));
    }
    if password.is_empty() {
        return Err(refuse("the password file's first line is empty"));
    }
    let hash = hash_password(password, PASSWORD_ITERATIONS)?;
    let mut store = dir.store()?;
    if !store.add_operator(name, &hash, now)? {
        return Err(refuse("already an operator"));
    }
    Ok(())
}

impl Store {
    /// Adds an operator with a stretched password; `false` if the name is taken.
    pub fn add_operator(
        &mut self,
        name: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<bool, CollectorError> {
        let n = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO operators (org, name, password_hash, created) VALUES (?1, ?2, ?3, ?4)",
                params![ORG, name, password_hash, now],
            )
            .map_err(self.err())?;
        Ok(n == 1)
    }

    /// The stretched password of operator `name`.
    pub fn operator_hash(&self, name: &str) -> Result<Option<String>, CollectorError> {
        self.conn()
            .query_row(
                "SELECT password_hash FROM operators WHERE org = ?1 AND name = ?2",
                params![ORG, name],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// The operators' names and when each was added.
    pub fn operators(&self) -> Result<Vec<(String, i64)>, CollectorError> {
        let mut stmt = self
            .conn()
            .prepare("SELECT name, created FROM operators WHERE org = ?1 ORDER BY name")
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}

#[cfg(test)]
mod tests;
