//! The TAXII 2.1 server `serve --http` runs: HTTPS (TLS 1.3, ALPN `http/1.1`, the agent
//! channel's server certificate), HTTP Basic members from `[[taxii.member]]`, one API root per
//! community with one read-only collection, `sightings`, whose objects are what the share
//! policy lets that community have right now ([`crate::share::preview`]).
//!
//! Discovery requires authentication too, and lists only the API roots the member may read:
//! a stranger learns nothing, not even the communities' names.
//!
//! `date_added` is when this server first served that version of an object (strictly
//! increasing, so `added_after` never skips one). The history is kept in memory: after a
//! restart, objects still shared are served again as newly added (a client sees a duplicate,
//! never a gap). An object the policy no longer lets out is no longer served, whatever its
//! history.
//!
//! Invariants: every response but discovery's 401 needs a member whose password verified
//! (PBKDF2, constant time); a member reads only the communities it is listed for; a `next`
//! token serves only its member, for its collection, and the member's access is checked
//! again when the token is used. Requests are small: a head over 16 KiB or a body over 1 MiB
//! is refused. Nothing can be written yet: a POST to objects is checked like a GET (401, 403,
//! 404, 406), then 415 for a Content-Type other than the TAXII media type, else 403
//! (`can_write` is false).

pub mod api;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config::TaxiiMember;
use crate::datadir::DataDir;
use crate::CollectorError;
use api::{Filter, Response, Route, Version};

/// The realm named in `WWW-Authenticate`.
pub const REALM: &str = "picket TAXII";
/// How long a `next` token stays valid.
pub const NEXT_LIFETIME: Duration = Duration::from_secs(600);
/// The most `next` tokens outstanding; the oldest go first.
pub const MAX_NEXT_TOKENS: usize = 4096;
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(15);

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
/// community configured.
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
        for c in &m.communities {
            if !communities.contains(c) {
                return Err(bad(format!("community {c:?} is not a configured [[community]]")));
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

/// The server's memory: object history per community and the `next` tokens.
#[derive(Debug, Default)]
struct State {
    /// community → object id → versions (oldest first).
    history: HashMap<String, BTreeMap<String, Vec<Version>>>,
    last_added: i64,
    next: HashMap<String, Pending>,
    next_order: VecDeque<String>,
}

struct Shared {
    members: Vec<TaxiiMember>,
    communities: Vec<String>,
    source: Source,
    state: Mutex<State>,
    verified: Mutex<Verified>,
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
        let pki = crate::pki::Pki::load(dir)?;
        // The channel's config, with ALPN http/1.1. Client certificates stay optional (as on
        // the channel): an HTTPS client without one is not affected.
        let mut tls = (*pki.server_config()?).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("picket-taxii")
            .enable_all()
            .build()
            .map_err(|e| CollectorError::Refused(format!("starting the TAXII server's runtime: {e}")))?;
        let listener = runtime
            .block_on(TcpListener::bind(listen))
            .map_err(|e| CollectorError::Refused(format!("TAXII server: binding {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CollectorError::Refused(format!("TAXII server: {listen}: {e}")))?;
        let shared = Arc::new(Shared {
            members: cfg.taxii.members.clone(),
            communities,
            verified: Mutex::new(Verified::new()?),
            source,
            state: Mutex::new(State::default()),
        });
        runtime.spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(acceptor, tcp, shared).await {
                        eprintln!("picket-collector: TAXII {peer}: {e}");
                    }
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

/// A parsed request head.
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    if !version.starts_with("HTTP/1.") || first.next().is_some() {
        return None;
    }
    let mut headers = Vec::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Some(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
    })
}

/// One TLS connection: requests read one after another (keep-alive), each answered in full.
async fn connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    shared: Arc<Shared>,
) -> Result<(), String> {
    let mut tls = tokio::time::timeout(READ_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if buf.len() > MAX_HEAD {
                let r = Response::error(
                    431,
                    "Request Header Fields Too Large",
                    "the request head is over 16 KiB",
                );
                write(&mut tls, &r, true).await?;
                return Ok(());
            }
            let mut chunk = [0u8; 4096];
            let n = match tokio::time::timeout(READ_TIMEOUT, tls.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) | Err(_) => return Ok(()),
            };
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head: Vec<u8> = buf.drain(..end + 4).collect();
        let Some(req) = parse_head(&head[..end]) else {
            write(
                &mut tls,
                &Response::error(400, "Bad Request", "malformed HTTP request"),
                true,
            )
            .await?;
            return Ok(());
        };
        let length = req.header("content-length").map(|l| l.trim().parse::<usize>());
        let chunked = req.header("transfer-encoding").is_some();
        let has_body = chunked
            || length
                .as_ref()
                .is_some_and(|l| l.as_ref().map_or(true, |n| *n > 0));
        let mut close = req
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let resp = if req.method != "GET" && req.method != "POST" {
            close = true;
            let mut r = Response::error(
                405,
                "Method Not Allowed",
                "this server answers GET (and POST, refused)",
            );
            r.headers.push(("Allow".into(), "GET, POST".into()));
            r
        } else if req.method == "GET" && has_body {
            close = true;
            Response::error(400, "Bad Request", "a GET carries no body")
        } else if chunked
            || matches!(length, Some(Err(_)))
            || length
                .as_ref()
                .is_some_and(|l| l.as_ref().is_ok_and(|n| *n > MAX_BODY))
        {
            close = true;
            Response::error(
                400,
                "Bad Request",
                format!("a body needs a Content-Length of at most {MAX_BODY} bytes"),
            )
        } else {
            // A POST's body is read and dropped: no collection can be written (see `handle`).
            let mut want = length.and_then(Result::ok).unwrap_or(0);
            let take = want.min(buf.len());
            buf.drain(..take);
            want -= take;
            while want > 0 {
                let mut chunk = [0u8; 4096];
                let n = match tokio::time::timeout(READ_TIMEOUT, tls.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => return Ok(()),
                };
                let used = n.min(want);
                want -= used;
                buf.extend_from_slice(&chunk[used..n]);
            }
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || handle(&shared, &req))
                .await
                .map_err(|e| format!("request handler: {e}"))?
        };
        write(&mut tls, &resp, close).await?;
        if close {
            return Ok(());
        }
    }
}

async fn write<S: AsyncWriteExt + Unpin>(io: &mut S, r: &Response, close: bool) -> Result<(), String> {
    let body = serde_json::to_vec(&r.body).map_err(|e| format!("encoding a response: {e}"))?;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
        r.status,
        reason(r.status),
        api::TAXII_MEDIA,
        body.len()
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
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
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

/// The member the request authenticates as, if its Basic credentials verify.
fn authenticate<'a>(shared: &'a Shared, req: &Request) -> Option<&'a TaxiiMember> {
    let value = req.header("authorization")?;
    let tag = lock(&shared.verified).tag(value);
    if let Some(&(i, at)) = lock(&shared.verified).seen.get(&tag) {
        if at.elapsed() < VERIFIED_FOR {
            return shared.members.get(i);
        }
    }
    let member = verify_basic(shared, value)?;
    let i = shared.members.iter().position(|m| std::ptr::eq(m, member))?;
    let mut v = lock(&shared.verified);
    if v.seen.len() >= MAX_VERIFIED {
        v.seen.clear();
    }
    v.seen.insert(tag, (i, std::time::Instant::now()));
    Some(member)
}

/// Checks Basic credentials with PBKDF2 (an unknown name costs the same).
fn verify_basic<'a>(shared: &'a Shared, value: &str) -> Option<&'a TaxiiMember> {
    let (scheme, cred) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(api::base64_decode(cred)?).ok()?;
    let (name, password) = decoded.split_once(':')?;
    let member = shared.members.iter().find(|m| m.name == name);
    // An unknown name costs a verification too, so timing does not tell names apart.
    let stored = member.map_or(DUMMY_HASH, |m| m.password_hash.as_str());
    let ok = verify_password(stored, password);
    member.filter(|_| ok)
}

const DUMMY_HASH: &str =
    "pbkdf2-sha256$100000$00000000000000000000000000000000$0000000000000000000000000000000000000000000000000000000000000000";

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Answers one GET.
fn handle(shared: &Shared, req: &Request) -> Response {
    let Some(member) = authenticate(shared, req) else {
        return Response::unauthorised(
            REALM,
            "this server needs HTTP Basic credentials of a TAXII member",
        );
    };
    if !api::accepts_taxii(req.header("accept")) {
        return Response::error(
            406,
            "Not Acceptable",
            format!("this server answers only in {}", api::TAXII_MEDIA),
        );
    }
    let Some((route, params)) = api::route(&req.target) else {
        return Response::error(404, "Not Found", "no such TAXII resource");
    };
    let readable: Vec<String> = shared
        .communities
        .iter()
        .filter(|c| member.communities.contains(c))
        .cloned()
        .collect();
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
            return r;
        }
        if !params.is_empty() {
            return Response::error(400, "Bad Request", "discovery takes no query parameters");
        }
        return api::discovery(&format!("https://{host}"), &readable);
    };
    if !shared.communities.contains(&root) {
        return Response::error(404, "Not Found", format!("no API root {root:?}"));
    }
    if !readable.contains(&root) {
        return Response::error(
            403,
            "Forbidden",
            format!("member {:?} may not read API root {root:?}", member.name),
        );
    }
    if let Some(c) = route.collection() {
        if c != api::collection_id(&root) {
            return Response::error(
                404,
                "Not Found",
                format!("no collection {c:?} in API root {root:?}"),
            );
        }
    }
    if req.method == "POST" {
        return post(req, &route, &root);
    }
    let allowed: &[&str] = match &route {
        Route::Objects(..) | Route::Manifest(..) => &[
            "added_after",
            "limit",
            "next",
            "match[id]",
            "match[type]",
            "match[version]",
            "match[spec_version]",
        ],
        Route::Object(..) => &[
            "added_after",
            "limit",
            "next",
            "match[version]",
            "match[spec_version]",
        ],
        Route::Versions(..) => &["added_after", "limit", "next", "match[spec_version]"],
        _ => &[],
    };
    let mut filter = match api::filter(&params, allowed) {
        Ok(f) => f,
        Err(r) => return r,
    };
    match &route {
        Route::Discovery => Response::error(404, "Not Found", "no such TAXII resource"),
        Route::ApiRoot(r) => api::api_root(r),
        Route::Collections(r) => api::collections(r),
        Route::Collection(r, _) => Response {
            status: 200,
            headers: Vec::new(),
            body: api::collection(r),
        },
        Route::Status(_) => Response::error(
            404,
            "Not Found",
            "no such status resource: nothing can be posted here",
        ),
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
    }
}

/// A POST, after authentication, access to the API root and the collection were checked: only
/// the objects endpoint takes one, with a TAXII envelope (415 otherwise), and no collection here
/// can be written (403).
fn post(req: &Request, route: &Route, root: &str) -> Response {
    if !matches!(route, Route::Objects(..)) {
        let mut r = Response::error(
            405,
            "Method Not Allowed",
            "only the objects endpoint takes a POST",
        );
        r.headers.push(("Allow".into(), "GET".into()));
        return r;
    }
    let ok_type = req.header("content-type").is_some_and(|t| {
        let mut parts = t.split(';').map(str::trim);
        let kind = parts.next().unwrap_or("");
        kind.eq_ignore_ascii_case("application/taxii+json")
            && parts.any(|p| p.replace(' ', "").eq_ignore_ascii_case("version=2.1"))
    });
    if !ok_type {
        return Response::error(
            415,
            "Unsupported Media Type",
            format!("a POST to objects must be {}", api::TAXII_MEDIA),
        );
    }
    Response::error(
        403,
        "Forbidden",
        format!("the collection of API root {root:?} is read-only (can_write: false)"),
    )
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
                eprintln!("picket-collector: TAXII: the objects of community {root}: {e}");
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
        let current = record(&mut state, root, bundle.as_ref().unwrap_or(&Value::Null));
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
/// the next `date_added`) and returns the history of the ids it holds now.
fn record(state: &mut State, community: &str, bundle: &Value) -> BTreeMap<String, Vec<Version>> {
    let objects = bundle
        .get("objects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut current = BTreeMap::new();
    for obj in objects {
        let Some(id) = obj.get("id").and_then(Value::as_str).map(str::to_owned) else {
            continue;
        };
        let version = obj
            .get("modified")
            .or_else(|| obj.get("created"))
            .and_then(Value::as_str)
            .unwrap_or("1970-01-01T00:00:00.000Z")
            .to_owned();
        let added = (unix_now_ms()).max(state.last_added + 1);
        let hist = state.history.entry(community.to_owned()).or_default();
        let versions: &mut Vec<Version> = hist.entry(id.clone()).or_default();
        match versions.iter_mut().find(|v| v.version == version) {
            Some(v) => v.object = obj,
            None => {
                state.last_added = added;
                versions.push(Version {
                    added,
                    version,
                    object: obj,
                });
            }
        }
        current.insert(id, versions.clone());
    }
    current
}

/// The iterations [`add_member`] stretches a password with.
pub const PASSWORD_ITERATIONS: u32 = 100_000;

/// `member add`: appends a `[[taxii.member]]` to `DIR/picket.toml` for `name`, who may read
/// `communities`, with `password` salted and stretched. Refuses an empty password, a name
/// already there, and a community not configured; the file is re-read afterwards, and put
/// back as it was if it no longer loads.
pub fn add_member(
    data: &std::path::Path,
    name: &str,
    communities: &[String],
    password: &str,
) -> Result<(), CollectorError> {
    let dir = DataDir::open(data)?;
    let path = dir.config_path();
    let refuse = |why: String| CollectorError::Refused(format!("{}: member {name:?}: {why}", path.display()));
    if password.is_empty() {
        return Err(refuse("the password file's first line is empty".into()));
    }
    let cfg = dir.config();
    let configured: Vec<String> = cfg.communities.iter().map(|c| c.name.clone()).collect();
    let mut members = cfg.taxii.members.clone();
    if members.iter().any(|m| m.name == name) {
        return Err(refuse("already a member".into()));
    }
    let member = TaxiiMember {
        name: name.to_owned(),
        password_hash: hash_password(password, PASSWORD_ITERATIONS)?,
        communities: communities.to_vec(),
        contribute: Vec::new(),
        sector: None,
    };
    members.push(member.clone());
    check_members(&members, &configured).map_err(|e| refuse(e.to_string()))?;
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let list: Vec<String> = communities.iter().map(|c| quote(c)).collect();
    let block = format!(
        "\n[[taxii.member]]\nname = {}\npassword_hash = {}\ncommunities = [{}]\n",
        quote(name),
        quote(&member.password_hash),
        list.join(", ")
    );
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

/// Locks `m`; a panic while it was held leaves data that is still usable (a cache).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
