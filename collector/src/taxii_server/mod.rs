//! The TAXII 2.1 server `serve --http` runs: HTTPS (TLS 1.3, ALPN `http/1.1`, the agent
//! channel's server certificate), HTTP Basic members from `[[taxii.member]]`, one API root per
//! community with two collections:
//!
//! - `sightings` ([`api::collection_id`]), read by the members whose `communities` list the
//!   community: what the share policy lets that community have right now
//!   ([`crate::share::preview`]); nobody writes it.
//! - `contributions` ([`api::contributions_id`]), written by the members whose `contribute`
//!   lists the community: a POST hands the objects to [`crate::share::inbound::accept`], which
//!   stores them and counts their sightings under the member's account (never under the
//!   `created_by_ref` they claim). It answers 202 with a status resource that is complete at
//!   once and stays readable at `{root}/status/{id}/`, by the member that posted only. Nobody
//!   reads it over TAXII.
//!
//! `can_read` and `can_write` are reported for the member asking; discovery lists the API roots
//! the member may read or write, and a stranger learns nothing, not even the communities' names.
//! A POST is checked in the specification's order: 401, 406 (`Accept`), 404 (root, collection),
//! 403 (no write right), 415 (`Content-Type`), 413 (over `max_content_length`, 1 MiB, before the
//! body is read), 400 (not an envelope, or over [`api::MAX_POST_OBJECTS`] objects). An object
//! without a `type` or an `id` is a failure in the status, not a 400.
//!
//! `date_added` is when this server first served that version of an object (strictly
//! increasing, so `added_after` never skips one). The history is kept in the store
//! (`taxii_served`, see [`history`]), loaded when the server starts and written before a new
//! version is served, so after a restart an object keeps its `date_added` and `added_after`
//! does not serve it again as new. An object the policy no longer lets out is no longer served,
//! whatever its history. The store is one connection behind a mutex, used from blocking
//! threads only.
//!
//! Logins: a credential that verified is remembered for five minutes (a keyed hash of the
//! header), so paging costs PBKDF2 once. Otherwise each attempt runs PBKDF2 on a blocking
//! thread, at most [`PBKDF2_AT_ONCE`] at a time; every attempt counts as a failure of its peer
//! (IPv4 address, IPv6 /64) until it succeeds, and a peer with [`LOGIN_FAILURES`] failures
//! within [`LOGIN_WINDOW`] is answered 429 with `Retry-After`, without PBKDF2 ([`limiter`]).
//!
//! The same listener answers two things that are not TAXII: the operator dashboard (`/`
//! and everything under `/ui/`, [`crate::web`], which has its own login and sessions) and
//! `GET /metrics` ([`crate::metrics`], with its bearer token; 404 while metrics are off). No
//! community may be named after those paths ([`RESERVED_ROOTS`]). Every request served is
//! counted in [`crate::metrics::http_request`] under a bounded route label. Browsers offer
//! no Ed25519 signature scheme, so a client that offers none gets the dashboard's ECDSA
//! certificate ([`crate::web::cert`]); every other client gets the collector's own.
//!
//! Invariants: every TAXII response but a 401 or a 429 needs a member whose password verified
//! (PBKDF2, constant time); a member reads only the communities it is listed for and writes
//! only those it may contribute to; a `next` token serves only its member, for its collection,
//! and the member's access is checked again when the token is used; a status resource is
//! shown only to the account that posted it. Requests are small: a head over 16 KiB or a body
//! over 1 MiB is refused before it is read.

pub mod api;
pub mod history;
pub mod http;
pub mod limiter;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::TaxiiMember;
use crate::datadir::DataDir;
use crate::store::Store;
use crate::CollectorError;
use api::{Access, Collection, Detail, Filter, Posted, Response, Route, Version};
use history::Served;
use http::Request;

/// The realm named in `WWW-Authenticate`.
pub const REALM: &str = "picket TAXII";
/// How long a `next` token stays valid.
pub const NEXT_LIFETIME: Duration = Duration::from_secs(600);
/// The most `next` tokens outstanding; the oldest go first.
pub const MAX_NEXT_TOKENS: usize = 4096;
/// Failed logins a peer may have within [`LOGIN_WINDOW`] before it is answered 429.
pub const LOGIN_FAILURES: usize = 10;
/// The window [`LOGIN_FAILURES`] is counted in.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// The most password verifications (PBKDF2) running at once.
pub const PBKDF2_AT_ONCE: usize = 2;
/// The most peers whose failed logins are remembered.
const LOGIN_PEERS: usize = 4096;
/// How long a login waits for a PBKDF2 slot before it is answered 503.
const PBKDF2_QUEUE: Duration = Duration::from_secs(10);
const MAX_BODY: usize = api::MAX_CONTENT_LENGTH;
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// A request head must arrive whole within this, counted from when the server starts waiting
/// for it (so a keep-alive connection idle this long is closed too): a client sending a byte
/// now and then cannot hold a connection.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(20);
/// The most connections served at once; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 2048;
/// The whole body of a request must arrive within this.
const BODY_DEADLINE: Duration = Duration::from_secs(60);
/// After a response that closes the connection, input is read and dropped for at most this
/// long (and [`LINGER_BYTES`]), so the client reads the response instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * MAX_BODY;

/// Paths of the HTTPS listener that are not TAXII API roots: no community may be named so.
pub const RESERVED_ROOTS: &[&str] = &["ui", "metrics", "taxii2"];

/// Where the objects of a community come from: its name and the time (unix seconds) in, the
/// bundle it may receive out. `serve` uses [`crate::share::preview`].
pub type Source = Arc<dyn Fn(&str, i64) -> Result<Value, CollectorError> + Send + Sync>;

/// Salts and stretches `password` for `[[taxii.member]] password_hash`:
/// `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`.
pub fn hash_password(password: &str, iterations: u32) -> Result<String, CollectorError> {
    let iter = NonZeroU32::new(iterations)
        .ok_or_else(|| CollectorError::Refused("password hash: iterations must be at least 1".into()))?;
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| CollectorError::Refused("password hash: no randomness for the salt".into()))?;
    let mut out = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        iter,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    Ok(format!(
        "pbkdf2-sha256${iterations}${}${}",
        hex::encode(salt),
        hex::encode(out)
    ))
}

/// Whether `password` matches `stored` (see [`hash_password`]); constant time in the password.
/// A malformed `stored` matches nothing.
pub fn verify_password(stored: &str, password: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let ["pbkdf2-sha256", iter, salt, hash] = parts.as_slice() else {
        return false;
    };
    let (Some(iter), Ok(salt), Ok(hash)) = (
        iter.parse::<u32>().ok().and_then(NonZeroU32::new),
        hex::decode(salt),
        hex::decode(hash),
    ) else {
        return false;
    };
    ring::pbkdf2::verify(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        iter,
        &salt,
        password.as_bytes(),
        &hash,
    )
    .is_ok()
}

/// Checks `[[taxii.member]]` entries: names unique without `:`, hashes well-formed, each
/// community under `communities` and `contribute` configured, at least one of them given, and
/// a `sector` (if any) in the form of STIX's industry-sector vocabulary (lowercase letters,
/// digits and `-`, at most 64).
pub fn check_members(members: &[TaxiiMember], communities: &[String]) -> Result<(), CollectorError> {
    let mut seen = std::collections::BTreeSet::new();
    for m in members {
        let bad = |why: String| CollectorError::Refused(format!("[[taxii.member]] {:?}: {why}", m.name));
        if m.name.is_empty() || m.name.contains(':') {
            return Err(bad("name must be non-empty and hold no ':'".into()));
        }
        if !seen.insert(&m.name) {
            return Err(bad("configured twice".into()));
        }
        if !m.password_hash.starts_with("pbkdf2-sha256$") || m.password_hash.split('$').count() != 4 {
            return Err(bad(
                "password_hash must be pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>".into(),
            ));
        }
        if m.communities.is_empty() && m.contribute.is_empty() {
            return Err(bad(
                "lists no community: give `communities` (read), `contribute` (write), or both".into(),
            ));
        }
        for (key, list) in [("communities", &m.communities), ("contribute", &m.contribute)] {
            for c in list {
                if !communities.contains(c) {
                    return Err(bad(format!(
                        "{key}: community {c:?} is not a configured [[community]]"
                    )));
                }
            }
        }
        if let Some(s) = &m.sector {
            if s.is_empty()
                || s.len() > 64
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(bad(format!(
                    "sector {s:?}: lowercase letters, digits and '-' only, at most 64 (as `financial-services`)"
                )));
            }
        }
    }
    Ok(())
}

/// One issued `next` token: whose it is, where it pages, and what is left.
#[derive(Debug)]
struct Pending {
    member: String,
    route: Route,
    rest: Vec<(String, Version)>,
    limit: usize,
    expires: std::time::Instant,
}

/// The server's memory: object history per community (a copy of `taxii_served`) and the `next`
/// tokens.
#[derive(Debug, Default)]
struct State {
    /// community → object id → versions (oldest first).
    history: HashMap<String, BTreeMap<String, Vec<Version>>>,
    last_added: i64,
    next: HashMap<String, Pending>,
    next_order: VecDeque<String>,
}

impl State {
    /// The history as the store holds it.
    fn load(store: &Store) -> Result<State, CollectorError> {
        let mut state = State::default();
        for row in store.taxii_served()? {
            let object: Value = serde_json::from_str(&row.body).map_err(|e| {
                CollectorError::Refused(format!(
                    "taxii_served: community {:?}, object {} version {}: the stored body is not JSON: {e}",
                    row.community, row.object_id, row.version
                ))
            })?;
            state.last_added = state.last_added.max(row.added_ms);
            state
                .history
                .entry(row.community)
                .or_default()
                .entry(row.object_id)
                .or_default()
                .push(Version {
                    added: row.added_ms,
                    version: row.version,
                    object,
                });
        }
        for objects in state.history.values_mut() {
            objects.values_mut().for_each(keep_newest);
        }
        Ok(state)
    }
}

/// Drops all but the newest [`history::MAX_VERSIONS`] of one object's versions (by `date_added`),
/// as the store does when it records.
fn keep_newest(versions: &mut Vec<Version>) {
    if versions.len() > history::MAX_VERSIONS {
        versions.sort_by(|a, b| (a.added, &a.version).cmp(&(b.added, &b.version)));
        versions.drain(..versions.len() - history::MAX_VERSIONS);
    }
}

struct Shared {
    /// The data directory (for `/metrics`).
    data: std::path::PathBuf,
    /// The operator dashboard, answering `/` and `/ui/...`.
    dashboard: crate::web::Dashboard,
    members: Vec<TaxiiMember>,
    communities: Vec<String>,
    source: Source,
    state: Mutex<State>,
    /// The store: taken after `state` when both are needed, and only on blocking threads.
    store: Mutex<Store>,
    verified: Mutex<Verified>,
    failures: Mutex<limiter::Failures>,
    pbkdf2: tokio::sync::Semaphore,
}

/// Credentials that verified recently, so that a client paging through a collection pays for
/// PBKDF2 once, not once a page. Keyed by a keyed hash of the whole `Authorization` value
/// (under a key made at start), so the table holds no password and a changed password misses.
struct Verified {
    key: ring::hmac::Key,
    seen: HashMap<[u8; 32], (usize, std::time::Instant)>,
}

/// How long a verified credential is taken without running PBKDF2 again.
const VERIFIED_FOR: Duration = Duration::from_secs(300);
/// Most credentials remembered (the table is emptied when full).
const MAX_VERIFIED: usize = 1024;

impl Verified {
    fn new() -> Result<Verified, CollectorError> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| CollectorError::Refused("TAXII server: no randomness for its key".into()))?;
        Ok(Verified {
            key,
            seen: HashMap::new(),
        })
    }

    fn tag(&self, authorization: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::hmac::sign(&self.key, authorization.as_bytes()).as_ref());
        out
    }
}

/// A running TAXII server: its runtime, stopped on drop or by [`Server::stop`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// Starts the server for data directory `data` on `listen` (port 0 picks one), objects from
    /// [`crate::share::preview`], members from `[taxii]`.
    pub fn start(data: &std::path::Path, listen: SocketAddr) -> Result<Server, CollectorError> {
        let dir = DataDir::open(data)?;
        let owned = data.to_owned();
        let source: Source = Arc::new(move |community: &str, now: i64| {
            let dir = DataDir::open(&owned)?;
            Ok(crate::share::preview(&dir, community, now)?.bundle)
        });
        Server::start_with(&dir, listen, source)
    }

    /// [`Server::start`] with the objects from `source`.
    pub fn start_with(dir: &DataDir, listen: SocketAddr, source: Source) -> Result<Server, CollectorError> {
        let cfg = dir.config();
        let communities: Vec<String> = cfg.communities.iter().map(|c| c.name.clone()).collect();
        check_members(&cfg.taxii.members, &communities)
            .map_err(|e| CollectorError::Refused(format!("{}: {e}", dir.config_path().display())))?;
        if let Some(c) = communities.iter().find(|c| RESERVED_ROOTS.contains(&c.as_str())) {
            return Err(CollectorError::Refused(format!(
                "{}: community {c:?}: the HTTPS listener keeps /{c}/ for itself (the dashboard or metrics); rename the community",
                dir.config_path().display()
            )));
        }
        let store = dir.store()?;
        let state = State::load(&store)?;
        let pki = crate::pki::Pki::load(dir)?;
        // The channel's config, with ALPN http/1.1. Client certificates stay optional (as on
        // the channel): an HTTPS client without one is not affected.
        let mut tls = (*pki.server_config()?).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Browsers offer no Ed25519: they get the dashboard's ECDSA certificate instead.
        tls.cert_resolver = crate::web::cert::browser_resolver(
            dir,
            tls.cert_resolver.clone(),
            listen.ip(),
            unix_now_ms() / 1000,
        )?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("picket-taxii")
            .enable_all()
            .build()
            .map_err(|e| CollectorError::Refused(format!("starting the TAXII server's runtime: {e}")))?;
        let listener = {
            let _in_runtime = runtime.enter();
            crate::channel::listener(listen)
                .map_err(|e| CollectorError::Refused(format!("TAXII server: binding {listen}: {e}")))?
        };
        let addr = listener
            .local_addr()
            .map_err(|e| CollectorError::Refused(format!("TAXII server: {listen}: {e}")))?;
        let shared = Arc::new(Shared {
            data: dir.path().to_owned(),
            dashboard: crate::web::Dashboard::new(dir.path())?,
            members: cfg.taxii.members.clone(),
            communities,
            verified: Mutex::new(Verified::new()?),
            source,
            state: Mutex::new(state),
            store: Mutex::new(store),
            failures: Mutex::new(limiter::Failures::new(LOGIN_FAILURES, LOGIN_WINDOW, LOGIN_PEERS)),
            pbkdf2: tokio::sync::Semaphore::new(PBKDF2_AT_ONCE),
        });
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        runtime.spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // Full: closed at once, before any TLS work.
                    drop(tcp);
                    continue;
                };
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(acceptor, tcp, peer, shared).await {
                        tracing::warn!("TAXII {peer}: {e}");
                    }
                    drop(slot);
                });
            }
        });
        Ok(Server {
            addr,
            runtime: Some(runtime),
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving; open connections are dropped.
    pub fn stop(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// One TLS connection: requests read one after another (keep-alive), each answered in full.
async fn connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<(), String> {
    let mut tls = tokio::time::timeout(READ_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let mut buf = Vec::new();
    loop {
        let head_deadline = tokio::time::Instant::now() + HEAD_DEADLINE;
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if buf.len() > http::MAX_HEAD {
                let r = Response::error(
                    431,
                    "Request Header Fields Too Large",
                    "the request head is over 16 KiB",
                );
                write(&mut tls, &r, true).await?;
                linger(&mut tls).await;
                return Ok(());
            }
            let mut chunk = [0u8; 4096];
            let left = head_deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let n = match tokio::time::timeout(READ_TIMEOUT.min(left), tls.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) | Err(_) => return Ok(()),
            };
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head: Vec<u8> = buf.drain(..end + 4).collect();
        let started = std::time::Instant::now();
        let Some(req) = http::parse_head(&head[..end]) else {
            let r = Response::error(400, "Bad Request", "malformed HTTP request");
            write(&mut tls, &r, true).await?;
            crate::metrics::http_request("malformed", r.status, started.elapsed().as_secs_f64());
            linger(&mut tls).await;
            return Ok(());
        };
        let close_asked = req
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let length = match req.body_length() {
            Ok(n) => n,
            Err(why) => {
                write(&mut tls, &Response::error(400, "Bad Request", why), true).await?;
                crate::metrics::http_request("malformed", 400, started.elapsed().as_secs_f64());
                linger(&mut tls).await;
                return Ok(());
            }
        };
        if is_local(&req.target) {
            let Some((reply, route, body_read)) =
                local(&mut tls, &mut buf, &req, length, peer.ip(), &shared).await?
            else {
                return Ok(());
            };
            let close = close_asked || (length > 0 && !body_read);
            write_bytes(
                &mut tls,
                reply.status,
                reply.content_type,
                &reply.headers,
                &reply.body,
                close,
            )
            .await?;
            crate::metrics::http_request(route, reply.status, started.elapsed().as_secs_f64());
            if close {
                linger(&mut tls).await;
                return Ok(());
            }
            continue;
        }
        let (resp, body_read) = if req.method != "GET" && req.method != "POST" {
            let mut r = Response::error(
                405,
                "Method Not Allowed",
                "this server answers GET, and POST to a collection's objects",
            );
            r.headers.push(("Allow".into(), "GET, POST".into()));
            (r, false)
        } else if req.method == "GET" && length > 0 {
            (
                Response::error(400, "Bad Request", "a GET carries no body"),
                false,
            )
        } else {
            match exchange(&mut tls, &mut buf, &req, length, peer.ip(), &shared).await? {
                Some(answer) => answer,
                // The client went away in the middle of its body.
                None => return Ok(()),
            }
        };
        // A body left unread cannot be told from the next request: the connection ends.
        let close = close_asked || (length > 0 && !body_read);
        write(&mut tls, &resp, close).await?;
        crate::metrics::http_request(
            taxii_label(&req.target),
            resp.status,
            started.elapsed().as_secs_f64(),
        );
        if close {
            linger(&mut tls).await;
            return Ok(());
        }
    }
}

/// What a request gets once its head is read and framed: authentication, then the checks and
/// the answer on a blocking thread; for a POST that passes them, its body is read and stored.
/// `Some((response, whether the body was read))`, or `None` when the client left mid-body.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    req: &Request,
    length: usize,
    ip: IpAddr,
    shared: &Arc<Shared>,
) -> Result<Option<(Response, bool)>, String> {
    let member = match authenticate(shared, req, ip).await? {
        Ok(m) => m,
        Err(r) => return Ok(Some((r, false))),
    };
    let (sh, rq) = (shared.clone(), req.clone());
    let step = tokio::task::spawn_blocking(move || handle(&sh, member, &rq, length))
        .await
        .map_err(|e| format!("request handler: {e}"))?;
    let root = match step {
        Step::Answer(r) => return Ok(Some((r, false))),
        Step::Post(root) => root,
    };
    // A client that waits to be asked for the body (curl does, for bodies over 1 KiB) is asked
    // now, once every check that needs no body has passed.
    if req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        && buf.len() < length
    {
        io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|e| format!("writing 100 Continue: {e}"))?;
        io.flush()
            .await
            .map_err(|e| format!("writing 100 Continue: {e}"))?;
    }
    let Some(body) = read_body(io, buf, length).await else {
        return Ok(None);
    };
    let sh = shared.clone();
    let resp = tokio::task::spawn_blocking(move || post_objects(&sh, member, &root, &body))
        .await
        .map_err(|e| format!("request handler: {e}"))?;
    Ok(Some((resp, true)))
}

/// Whether `target` is answered by this listener itself rather than by the TAXII API: the
/// dashboard (`/`, `/ui/...`, see [`crate::web`]) and `/metrics`.
fn is_local(target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    path == "/metrics" || crate::web::is_dashboard(target)
}

/// A bounded metrics label for a TAXII request.
fn taxii_label(target: &str) -> &'static str {
    match api::route(target).map(|(r, _)| r) {
        Some(Route::Discovery) => "taxii_discovery",
        Some(Route::ApiRoot(..)) => "taxii_api_root",
        Some(Route::Collections(..)) | Some(Route::Collection(..)) => "taxii_collections",
        Some(Route::Objects(..)) | Some(Route::Object(..)) => "taxii_objects",
        Some(Route::Manifest(..)) => "taxii_manifest",
        Some(Route::Versions(..)) => "taxii_versions",
        Some(Route::Status(..)) => "taxii_status",
        None => "taxii_unknown",
    }
}

/// Answers a request for [`is_local`] paths: `/metrics` (GET only, with the bearer token of
/// [`crate::metrics`]; 404 while metrics are off) and the dashboard (GET, and POST of a form of
/// at most [`crate::web::MAX_FORM`] bytes, refused with 413 before it is read). A login takes
/// a PBKDF2 slot first, as TAXII logins do. `Some((reply, route label, whether the body was
/// read))`, or `None` when the client left mid-body.
async fn local<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    req: &Request,
    length: usize,
    ip: IpAddr,
    shared: &Arc<Shared>,
) -> Result<Option<(crate::web::Reply, &'static str, bool)>, String> {
    use crate::web::Reply;
    let path = req.target.split_once('?').map_or(req.target.as_str(), |(p, _)| p);
    let route = if path == "/metrics" {
        "metrics"
    } else {
        crate::web::route_label(&req.target)
    };
    let refuse =
        |status: u16, title: &str, why: &str| Some((Reply::problem(status, title, why), route, false));
    let allowed: &[&str] = if route == "metrics" {
        &["GET"]
    } else {
        &["GET", "POST"]
    };
    if !allowed.contains(&req.method.as_str()) {
        let mut r = Reply::problem(405, "Method not allowed", "this path does not take that method");
        r.headers.push(("Allow".into(), allowed.join(", ")));
        return Ok(Some((r, route, false)));
    }
    if req.method == "GET" && length > 0 {
        return Ok(refuse(400, "Bad request", "a GET carries no body"));
    }
    if route == "metrics" {
        let (data, auth) = (
            shared.data.clone(),
            req.header("authorization").map(str::to_owned),
        );
        let reply = tokio::task::spawn_blocking(move || {
            let access = match DataDir::open(&data) {
                Ok(dir) => crate::metrics::access(&dir, auth.as_deref()),
                Err(e) => {
                    tracing::error!("/metrics: {e}");
                    crate::metrics::Access::Off
                }
            };
            match access {
                crate::metrics::Access::Granted => Reply {
                    status: 200,
                    content_type: crate::metrics::CONTENT_TYPE,
                    headers: vec![("Cache-Control".into(), "no-store".into())],
                    body: crate::metrics::render().into_bytes(),
                },
                crate::metrics::Access::Denied => {
                    let mut r = Reply::problem(401, "Unauthorized", "/metrics needs the bearer token");
                    r.headers.push((
                        "WWW-Authenticate".into(),
                        "Bearer realm=\"picket metrics\"".into(),
                    ));
                    r
                }
                crate::metrics::Access::Off => Reply::problem(
                    404,
                    "Not found",
                    "metrics are off: `picket-collector metrics token` turns them on",
                ),
            }
        })
        .await
        .map_err(|e| format!("/metrics: {e}"))?;
        return Ok(Some((reply, route, false)));
    }
    if length > crate::web::MAX_FORM {
        return Ok(refuse(413, "Too large", "a dashboard form is at most 16 KiB"));
    }
    let body = if length > 0 {
        match read_body(io, buf, length).await {
            Some(b) => b,
            None => return Ok(None),
        }
    } else {
        Vec::new()
    };
    let permit = if crate::web::checks_password(req) {
        match tokio::time::timeout(PBKDF2_QUEUE, shared.pbkdf2.acquire()).await {
            Ok(Ok(p)) => Some(p),
            _ => {
                let mut r = Reply::problem(503, "Busy", "too many logins at once; try again");
                r.headers.push(("Retry-After".into(), "1".into()));
                return Ok(Some((r, route, true)));
            }
        }
    } else {
        None
    };
    let (sh, rq) = (shared.clone(), req.clone());
    let reply =
        tokio::task::spawn_blocking(move || sh.dashboard.handle(&rq, &body, ip, crate::web::Clock::now()))
            .await
            .map_err(|e| format!("dashboard: {e}"))?;
    drop(permit);
    Ok(Some((reply, route, true)))
}

/// Reads a body of `length` bytes (at most [`MAX_BODY`], checked by the caller), starting with
/// what is already in `buf`; `None` if the client stops sending or is too slow.
async fn read_body<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>, length: usize) -> Option<Vec<u8>> {
    let length = length.min(MAX_BODY);
    let deadline = tokio::time::Instant::now() + BODY_DEADLINE;
    while buf.len() < length {
        let mut chunk = [0u8; 16 * 1024];
        let wait = READ_TIMEOUT.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, io.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
    Some(buf.drain(..length).collect())
}

/// After a response that ends the connection: reads and drops what the client still sends,
/// for a bounded time and size, so that closing with unread input does not reset the
/// connection before the client has read the response.
async fn linger<S: AsyncRead + Unpin>(io: &mut S) {
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut drained = 0usize;
    let mut chunk = [0u8; 16 * 1024];
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => return,
        }
    }
}

async fn write<S: AsyncWriteExt + Unpin>(io: &mut S, r: &Response, close: bool) -> Result<(), String> {
    let body = serde_json::to_vec(&r.body).map_err(|e| format!("encoding a response: {e}"))?;
    let mut headers = vec![("Cache-Control".to_owned(), "no-store".to_owned())];
    headers.extend(r.headers.iter().cloned());
    write_bytes(io, r.status, api::TAXII_MEDIA, &headers, &body, close).await
}

/// Writes one response: status, `Content-Type`, `Content-Length`, `headers` as given, and
/// `body`; with `close`, says so and shuts the connection down after it.
async fn write_bytes<S: AsyncWriteExt + Unpin>(
    io: &mut S,
    status: u16,
    content_type: &str,
    headers: &[(String, String)],
    body: &[u8],
    close: bool,
) -> Result<(), String> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    io.write_all(&out)
        .await
        .map_err(|e| format!("writing a response: {e}"))?;
    io.flush().await.map_err(|e| format!("writing a response: {e}"))?;
    if close {
        let _ = io.shutdown().await;
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

fn unauthorised() -> Response {
    Response::unauthorised(
        REALM,
        "this server needs HTTP Basic credentials of a TAXII member",
    )
}

/// The member (its index) the request authenticates as; `Ok(Err(response))` when it does not
/// (401), when its peer failed too often lately (429), or when no PBKDF2 slot came free (503).
/// A credential that verified lately is taken without PBKDF2, even from a peer that is held
/// back, so a member behind the same address as an attacker keeps working.
async fn authenticate(
    shared: &Arc<Shared>,
    req: &Request,
    ip: IpAddr,
) -> Result<Result<usize, Response>, String> {
    let Some(value) = req.header("authorization") else {
        return Ok(Err(unauthorised()));
    };
    let tag = lock(&shared.verified).tag(value);
    if let Some(&(i, at)) = lock(&shared.verified).seen.get(&tag) {
        if at.elapsed() < VERIFIED_FOR {
            return Ok(Ok(i));
        }
    }
    if let Err(wait) = lock(&shared.failures).begin(ip, std::time::Instant::now()) {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut r = Response::error(
            429,
            "Too Many Requests",
            format!(
                "more than {LOGIN_FAILURES} failed logins from this address within {} s; try again in {secs} s",
                LOGIN_WINDOW.as_secs()
            ),
        );
        r.headers.push(("Retry-After".into(), secs.to_string()));
        return Ok(Err(r));
    }
    let permit = match tokio::time::timeout(PBKDF2_QUEUE, shared.pbkdf2.acquire()).await {
        Ok(Ok(p)) => p,
        _ => {
            // Nothing was verified: the attempt is not held against the peer.
            lock(&shared.failures).forgive(ip);
            let mut r = Response::error(503, "Service Unavailable", "too many logins at once; try again");
            r.headers.push(("Retry-After".into(), "1".into()));
            return Ok(Err(r));
        }
    };
    let (sh, v) = (shared.clone(), value.to_owned());
    let found = tokio::task::spawn_blocking(move || verify_basic(&sh, &v))
        .await
        .map_err(|e| format!("password check: {e}"))?;
    drop(permit);
    let Some(i) = found else {
        return Ok(Err(unauthorised()));
    };
    lock(&shared.failures).forgive(ip);
    let mut v = lock(&shared.verified);
    if v.seen.len() >= MAX_VERIFIED {
        v.seen.clear();
    }
    v.seen.insert(tag, (i, std::time::Instant::now()));
    Ok(Ok(i))
}

/// Checks Basic credentials with PBKDF2 (an unknown name costs the same); the member's index.
fn verify_basic(shared: &Shared, value: &str) -> Option<usize> {
    let (scheme, cred) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(api::base64_decode(cred)?).ok()?;
    let (name, password) = decoded.split_once(':')?;
    let index = shared.members.iter().position(|m| m.name == name);
    // An unknown name costs a verification too, so timing does not tell names apart.
    let stored = index
        .and_then(|i| shared.members.get(i))
        .map_or(DUMMY_HASH, |m| m.password_hash.as_str());
    let ok = verify_password(stored, password);
    index.filter(|_| ok)
}

const DUMMY_HASH: &str =
    "pbkdf2-sha256$100000$00000000000000000000000000000000$0000000000000000000000000000000000000000000000000000000000000000";

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What [`handle`] decided.
enum Step {
    /// Answer this.
    Answer(Response),
    /// A POST to the `contributions` collection of this API root that passed every check
    /// made before its body is read.
    Post(String),
}

/// Answers a request of member `index`, or lets a POST's body be read (see [`Step`]). The
/// checks run in the specification's order: 406, 404, 403, then for a POST 415 and 413.
fn handle(shared: &Shared, index: usize, req: &Request, length: usize) -> Step {
    let Some(member) = shared.members.get(index) else {
        return Step::Answer(unauthorised());
    };
    match handle_member(shared, member, req, length) {
        Ok(step) => step,
        Err(r) => Step::Answer(r),
    }
}

/// The access of `member` to API root `root`.
fn access(member: &TaxiiMember, root: &str) -> Access {
    Access {
        read: member.communities.iter().any(|c| c == root),
        write: member.contribute.iter().any(|c| c == root),
    }
}

fn handle_member(
    shared: &Shared,
    member: &TaxiiMember,
    req: &Request,
    length: usize,
) -> Result<Step, Response> {
    if !api::accepts_taxii(req.header("accept")) {
        return Err(Response::error(
            406,
            "Not Acceptable",
            format!("this server answers only in {}", api::TAXII_MEDIA),
        ));
    }
    let Some((route, params)) = api::route(&req.target) else {
        return Err(Response::error(404, "Not Found", "no such TAXII resource"));
    };
    let Some(root) = route.root().map(str::to_owned) else {
        let host = req
            .header("host")
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            })
            .unwrap_or("localhost");
        if req.method != "GET" {
            let mut r = Response::error(405, "Method Not Allowed", "discovery takes only GET");
            r.headers.push(("Allow".into(), "GET".into()));
            return Err(r);
        }
        if !params.is_empty() {
            return Err(Response::error(
                400,
                "Bad Request",
                "discovery takes no query parameters",
            ));
        }
        let roots: Vec<String> = shared
            .communities
            .iter()
            .filter(|c| access(member, c) != Access::default())
            .cloned()
            .collect();
        return Ok(Step::Answer(api::discovery(&format!("https://{host}"), &roots)));
    };
    if !shared.communities.contains(&root) {
        return Err(Response::error(404, "Not Found", format!("no API root {root:?}")));
    }
    let access = access(member, &root);
    if access == Access::default() {
        return Err(Response::error(
            403,
            "Forbidden",
            format!("member {:?} may not use API root {root:?}", member.name),
        ));
    }
    let collection = match route.collection() {
        None => None,
        Some(c) => Some(Collection::of(&root, c).ok_or_else(|| {
            Response::error(
                404,
                "Not Found",
                format!("no collection {c:?} in API root {root:?}"),
            )
        })?),
    };
    if req.method == "POST" {
        return post_checks(member, req, &route, &root, collection, access, length);
    }
    if let Some(c) = collection {
        let allowed = match route {
            Route::Collection(..) => access.can_read(c) || access.can_write(c),
            _ => access.can_read(c),
        };
        if !allowed {
            return Err(Response::error(
                403,
                "Forbidden",
                format!(
                    "member {:?} may not read collection {:?} of API root {root:?} (can_read: false)",
                    member.name,
                    route.collection().unwrap_or_default()
                ),
            ));
        }
    }
    let mut filter = api::filter(&params, api::allowed_params(&route))?;
    Ok(Step::Answer(match &route {
        Route::Discovery => Response::error(404, "Not Found", "no such TAXII resource"),
        Route::ApiRoot(r) => api::api_root(r),
        Route::Collections(r) => api::collections(r, access),
        Route::Collection(r, _) => Response {
            status: 200,
            headers: Vec::new(),
            body: api::collection(r, collection.unwrap_or(Collection::Sightings), access),
        },
        Route::Status(r, id) => status(shared, member, r, id),
        Route::Objects(..) | Route::Manifest(..) | Route::Object(..) | Route::Versions(..) => {
            if let Route::Object(_, _, o) = &route {
                filter.ids = Some(vec![o.clone()]);
            }
            if let Route::Versions(_, _, o) = &route {
                filter.ids = Some(vec![o.clone()]);
                filter.versions = vec!["all".into()];
            }
            page(shared, member, &route, &root, filter)
        }
    }))
}

/// A POST, after authentication, access to the API root and the collection's existence were
/// checked: only a collection's objects endpoint takes one (405), the member must be able to
/// write the collection (403: only `contributions`, only for `contribute` members), the body
/// must be a TAXII envelope (415) of at most `max_content_length` bytes (413).
fn post_checks(
    member: &TaxiiMember,
    req: &Request,
    route: &Route,
    root: &str,
    collection: Option<Collection>,
    access: Access,
    length: usize,
) -> Result<Step, Response> {
    let (Route::Objects(..), Some(c)) = (route, collection) else {
        let mut r = Response::error(
            405,
            "Method Not Allowed",
            "only a collection's objects endpoint takes a POST",
        );
        r.headers.push(("Allow".into(), "GET".into()));
        return Err(r);
    };
    if !access.can_write(c) {
        let why = match c {
            Collection::Sightings => format!(
                "the sightings collection of API root {root:?} is read-only (can_write: false); \
                 post to its contributions collection"
            ),
            Collection::Contributions => format!(
                "member {:?} may not contribute to API root {root:?} (can_write: false)",
                member.name
            ),
        };
        return Err(Response::error(403, "Forbidden", why));
    }
    let ok_type = req.header("content-type").is_some_and(|t| {
        let mut parts = t.split(';').map(str::trim);
        let kind = parts.next().unwrap_or("");
        kind.eq_ignore_ascii_case("application/taxii+json")
            && parts.any(|p| p.replace(' ', "").eq_ignore_ascii_case("version=2.1"))
    });
    if !ok_type {
        return Err(Response::error(
            415,
            "Unsupported Media Type",
            format!("a POST to objects must be {}", api::TAXII_MEDIA),
        ));
    }
    if length > MAX_BODY {
        return Err(Response::error(
            413,
            "Content Too Large",
            format!("the body is {length} bytes; this API root's max_content_length is {MAX_BODY}"),
        ));
    }
    Ok(Step::Post(root.to_owned()))
}

/// The status resource `id` of API root `root`, if `member` posted it (404 otherwise, whoever
/// else did).
fn status(shared: &Shared, member: &TaxiiMember, root: &str, id: &str) -> Response {
    let found = lock(&shared.store).taxii_status(id, root, &member.name);
    match found {
        Ok(Some(body)) => match serde_json::from_str(&body) {
            Ok(body) => Response {
                status: 200,
                headers: Vec::new(),
                body,
            },
            Err(e) => {
                tracing::error!("TAXII: status {id} of {root:?}: the stored body is not JSON: {e}");
                Response::error(500, "Internal Server Error", "the status could not be read")
            }
        },
        Ok(None) => Response::error(
            404,
            "Not Found",
            format!(
                "no status resource {id:?} of member {:?} in API root {root:?}",
                member.name
            ),
        ),
        Err(e) => {
            tracing::error!("TAXII: status {id} of {root:?}: {e}");
            Response::error(500, "Internal Server Error", "the status could not be read")
        }
    }
}

/// A POST to a `contributions` collection whose checks passed and whose body was read: decodes
/// the envelope (400), hands its objects to [`crate::share::inbound::accept`], and stores and
/// answers the status resource (202). A store failure is a 500 and leaves no status.
fn post_objects(shared: &Shared, index: usize, root: &str, body: &[u8]) -> Response {
    let Some(member) = shared.members.get(index) else {
        return unauthorised();
    };
    let posted = match api::decode_envelope(body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let failed = |what: String| {
        tracing::error!("TAXII: member {:?} posting to {root:?}: {what}", member.name);
        Response::error(
            500,
            "Internal Server Error",
            "the objects could not be stored; nothing is pending, post them again",
        )
    };
    let Some(id) = random_uuid() else {
        return failed("no randomness for a status id".into());
    };
    let objects: Vec<Value> = posted
        .iter()
        .filter_map(|p| match p {
            Posted::Object(o) => Some(o.clone()),
            Posted::Refused(_) => None,
        })
        .collect();
    let now = unix_now_ms();
    let mut store = lock(&shared.store);
    let outcomes = match crate::share::inbound::accept(&mut store, root, &member.name, &objects, now) {
        Ok(o) => o,
        Err(e) => return failed(e.to_string()),
    };
    if outcomes.len() != objects.len() {
        return failed(format!(
            "{} objects were handed in and {} outcomes came back",
            objects.len(),
            outcomes.len()
        ));
    }
    let mut outcomes = outcomes.into_iter().zip(&objects);
    let details: Vec<Result<Detail, Detail>> = posted
        .iter()
        .filter_map(|p| match p {
            Posted::Refused(d) => Some(Err(d.clone())),
            Posted::Object(_) => outcomes.next().map(|(o, obj)| {
                let (id, version) = api::id_and_version(obj);
                let d = Detail {
                    id: if o.id.is_empty() { id } else { o.id },
                    version: if o.version.is_empty() { version } else { o.version },
                    message: o.error.clone(),
                };
                if o.error.is_some() {
                    Err(d)
                } else {
                    Ok(d)
                }
            }),
        })
        .collect();
    let status = api::status_resource(&id, now, &details);
    if let Err(e) = store.taxii_status_put(&id, root, &member.name, now, &status.to_string()) {
        return failed(e.to_string());
    }
    Response {
        status: 202,
        headers: Vec::new(),
        body: status,
    }
}

/// A random (version 4) UUID; `None` without randomness.
fn random_uuid() -> Option<String> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).ok()?;
    Some(crate::uuid::uuid_text(&b, 4))
}
/// Serves one page of objects, manifest entries or versions.
fn page(shared: &Shared, member: &TaxiiMember, route: &Route, root: &str, filter: Filter) -> Response {
    // The share policy is asked before the lock is taken, so readers do not queue behind the
    // store.
    let bundle = match filter.next {
        Some(_) => None,
        None => match (shared.source)(root, unix_now_ms() / 1000) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!("TAXII: the objects of community {root}: {e}");
                return Response::error(500, "Internal Server Error", "the objects could not be read");
            }
        },
    };
    let mut state = match shared.state.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    let now = std::time::Instant::now();
    let (items, limit) = if let Some(token) = &filter.next {
        // Checked before it is taken: another member's attempt neither uses nor spends it.
        match state.next.get(token) {
            None => return Response::error(400, "Bad Request", "next: unknown or expired token"),
            Some(p) if p.member != member.name => {
                return Response::error(403, "Forbidden", "next: this token was issued to another member")
            }
            Some(p) if &p.route != route || p.expires < now => {
                return Response::error(400, "Bad Request", "next: unknown or expired token")
            }
            Some(_) => {}
        }
        let Some(p) = state.next.remove(token) else {
            return Response::error(400, "Bad Request", "next: unknown or expired token");
        };
        (p.rest, p.limit)
    } else {
        let current = match record(
            &mut state,
            &shared.store,
            root,
            bundle.as_ref().unwrap_or(&Value::Null),
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("TAXII: recording what community {root} is served: {e}");
                return Response::error(500, "Internal Server Error", "the objects could not be recorded");
            }
        };
        (api::select(&current, &filter), filter.limit)
    };
    let mut items = items;
    let rest = if items.len() > limit {
        items.split_off(limit)
    } else {
        Vec::new()
    };
    let next = if rest.is_empty() {
        None
    } else {
        let token = new_token();
        state.next.insert(
            token.clone(),
            Pending {
                member: member.name.clone(),
                route: route.clone(),
                rest,
                limit,
                expires: now + NEXT_LIFETIME,
            },
        );
        state.next_order.push_back(token.clone());
        while state.next_order.len() > MAX_NEXT_TOKENS {
            if let Some(old) = state.next_order.pop_front() {
                state.next.remove(&old);
            }
        }
        Some(token)
    };
    let is_object = matches!(route, Route::Object(..));
    if is_object && items.is_empty() && next.is_none() && filter.next.is_none() {
        return Response::error(404, "Not Found", "no such object in this collection");
    }
    match route {
        Route::Manifest(..) => api::manifest(&items, next),
        Route::Versions(..) => {
            if items.is_empty() && filter.next.is_none() {
                return Response::error(404, "Not Found", "no such object in this collection");
            }
            api::versions(&items, next)
        }
        _ => api::envelope(&items, next),
    }
}

fn new_token() -> String {
    let mut b = [0u8; 16];
    // Without randomness the token is still unique per process (a counter), and it is bound
    // to its member, so guessing one gains nothing.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        b[..8].copy_from_slice(&N.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_be_bytes());
    }
    hex::encode(b)
}

/// Records the objects of `bundle` in the community's history (a version not seen before gets
/// the next `date_added`; one seen before keeps its own) and returns the history of the ids it
/// holds now. What is new or changed is written to the store first: when that fails, nothing
/// is served (and the memory is left as it was), so no `date_added` is ever served that a
/// restart would change.
fn record(
    state: &mut State,
    store: &Mutex<Store>,
    community: &str,
    bundle: &Value,
) -> Result<BTreeMap<String, Vec<Version>>, CollectorError> {
    let objects = bundle
        .get("objects")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let now = unix_now_ms();
    let mut last = state.last_added;
    let mut rows: Vec<(Served, Value)> = Vec::new();
    let mut in_rows: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    let known = state.history.get(community);
    for obj in objects {
        let Some(id) = obj.get("id").and_then(Value::as_str) else {
            continue;
        };
        let version = obj
            .get("modified")
            .or_else(|| obj.get("created"))
            .and_then(Value::as_str)
            .unwrap_or("1970-01-01T00:00:00.000Z");
        let before = known
            .and_then(|h| h.get(id))
            .and_then(|vs| vs.iter().find(|v| v.version == version));
        let added = match before {
            Some(v) if &v.object == obj => continue,
            // The same id and version twice in one bundle: the first is recorded.
            _ if !in_rows.insert((id, version)) => continue,
            Some(v) => v.added,
            None => {
                last = now.max(last + 1);
                last
            }
        };
        rows.push((
            Served {
                community: community.to_owned(),
                object_id: id.to_owned(),
                version: version.to_owned(),
                added_ms: added,
                body: obj.to_string(),
            },
            obj.clone(),
        ));
    }
    if !rows.is_empty() {
        let served: Vec<Served> = rows.iter().map(|(r, _)| r.clone()).collect();
        lock(store).taxii_served_put(&served)?;
    }
    state.last_added = last;
    let hist = state.history.entry(community.to_owned()).or_default();
    for (row, object) in rows {
        let versions = hist.entry(row.object_id).or_default();
        match versions.iter_mut().find(|v| v.version == row.version) {
            Some(v) => v.object = object,
            None => {
                versions.push(Version {
                    added: row.added_ms,
                    version: row.version,
                    object,
                });
                keep_newest(versions);
            }
        }
    }
    let mut current = BTreeMap::new();
    for obj in objects {
        if let Some(id) = obj.get("id").and_then(Value::as_str) {
            if let Some(versions) = hist.get(id) {
                current.insert(id.to_owned(), versions.clone());
            }
        }
    }
    Ok(current)
}

/// The iterations [`add_member`] stretches a password with.
pub const PASSWORD_ITERATIONS: u32 = 100_000;

/// Who [`add_member`] adds.
#[derive(Debug, Clone, Default)]
pub struct NewMember {
    /// The user name.
    pub name: String,
    /// The communities whose `sightings` it may read.
    pub communities: Vec<String>,
    /// The communities whose `contributions` it may post to.
    pub contribute: Vec<String>,
    /// Its organisation's sector (for `disclosure = "sector"`).
    pub sector: Option<String>,
}

/// `member add`: appends a `[[taxii.member]]` to `DIR/picket.toml` for `member`, with
/// `password` salted and stretched. Refuses an empty password, a name already there, a member
/// with no community to read or contribute to, a community not configured and a malformed
/// sector ([`check_members`]); the file is re-read afterwards, and put back as it was if it no
/// longer loads.
pub fn add_member(data: &std::path::Path, member: &NewMember, password: &str) -> Result<(), CollectorError> {
    let dir = DataDir::open(data)?;
    let path = dir.config_path();
    let name = &member.name;
    let refuse = |why: String| CollectorError::Refused(format!("{}: member {name:?}: {why}", path.display()));
    if password.is_empty() {
        return Err(refuse("the password file's first line is empty".into()));
    }
    let cfg = dir.config();
    let configured: Vec<String> = cfg.communities.iter().map(|c| c.name.clone()).collect();
    let mut members = cfg.taxii.members.clone();
    if members.iter().any(|m| &m.name == name) {
        return Err(refuse("already a member".into()));
    }
    let entry = TaxiiMember {
        name: name.clone(),
        password_hash: hash_password(password, PASSWORD_ITERATIONS)?,
        communities: member.communities.clone(),
        contribute: member.contribute.clone(),
        sector: member.sector.clone(),
    };
    members.push(entry.clone());
    check_members(&members, &configured).map_err(|e| refuse(e.to_string()))?;
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let list = |l: &[String]| l.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
    let mut block = format!(
        "\n[[taxii.member]]\nname = {}\npassword_hash = {}\ncommunities = [{}]\n",
        quote(name),
        quote(&entry.password_hash),
        list(&entry.communities)
    );
    if !entry.contribute.is_empty() {
        block.push_str(&format!("contribute = [{}]\n", list(&entry.contribute)));
    }
    if let Some(s) = &entry.sector {
        block.push_str(&format!("sector = {}\n", quote(s)));
    }
    let before = std::fs::read_to_string(&path).map_err(|e| refuse(format!("reading: {e}")))?;
    std::fs::write(&path, format!("{before}{block}")).map_err(|e| refuse(format!("writing: {e}")))?;
    if let Err(e) = DataDir::open(data) {
        let _ = std::fs::write(&path, before);
        return Err(refuse(format!(
            "the file no longer loads, so it was left as it was: {e}"
        )));
    }
    Ok(())
}

/// Locks `m`; a panic while it was held leaves data that is still usable (a cache, or a
/// connection whose transaction was rolled back when it unwound).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sighting(modified: u32) -> Value {
        json!({
            "type": "sighting",
            "spec_version": "2.1",
            "id": "sighting--11111111-1111-4111-8111-111111111111",
            "created": "2026-01-01T00:00:00.000Z",
            "modified": format!("2026-01-01T00:{:02}:{:02}.000Z", modified / 60, modified % 60),
            "sighting_of_ref": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
        })
    }

    /// A sighting that changes for a long time keeps only its newest versions, in the memory
    /// of a running server and in the store a restarted one loads, and the same ones in both.
    #[test]
    fn a_long_sighted_objects_history_keeps_only_its_newest_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Mutex::new(Store::open(&dir.path().join("p.db")).unwrap());
        let other = json!({
            "type": "identity", "spec_version": "2.1",
            "id": "identity--22222222-2222-4222-8222-222222222222",
            "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
            "name": "x", "identity_class": "organization",
        });
        let mut state = State::default();
        let total = history::MAX_VERSIONS as u32 + 10;
        let mut current = BTreeMap::new();
        for m in 0..total {
            let bundle = json!({"type": "bundle", "objects": [sighting(m), other.clone()]});
            current = record(&mut state, &store, "isac", &bundle).unwrap();
        }
        let id = "sighting--11111111-1111-4111-8111-111111111111";
        let kept: Vec<String> = current[id].iter().map(|v| v.version.clone()).collect();
        let newest: Vec<String> = (total - history::MAX_VERSIONS as u32..total)
            .map(|m| sighting(m)["modified"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kept, newest, "the running server keeps the newest versions");
        assert_eq!(current["identity--22222222-2222-4222-8222-222222222222"].len(), 1);

        let restarted = State::load(&lock(&store)).unwrap();
        let loaded: Vec<String> = restarted.history["isac"][id]
            .iter()
            .map(|v| v.version.clone())
            .collect();
        assert_eq!(loaded, newest, "the store keeps the same versions");
        let added: Vec<i64> = current[id].iter().map(|v| v.added).collect();
        let added_loaded: Vec<i64> = restarted.history["isac"][id].iter().map(|v| v.added).collect();
        assert_eq!(added, added_loaded, "date_added survives the restart");
        assert_eq!(
            lock(&store).taxii_served().unwrap().len(),
            history::MAX_VERSIONS + 1
        );
    }
}
