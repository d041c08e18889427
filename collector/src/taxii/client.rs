//! The HTTP shell: ureq over rustls (ring), with the transport rules, size caps and timeouts.
//!
//! Everything here is I/O and error mapping; decisions about what to ask next live in
//! [`Paging`], and decoding lives in `resources`.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use ureq::http::{HeaderValue, Uri};
use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider};

use super::paging::{PageInfo, PageRequest, Paging};
use super::resources::{
    self, error_detail, printable, ApiRoot, Collection, Discovery, Envelope, TAXII_MEDIA_TYPE,
};
use super::{Credentials, Limits, Pulled, TaxiiError};

/// The largest CA file read.
const MAX_CA_FILE: u64 = 1 << 20;
/// How much of an error response is read for its message.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// The largest status resource read (one entry per object of a POST).
const MAX_STATUS: u64 = 16 << 20;
/// How many object ids one presence query names (`match[id]=a,b,…`), so that URLs stay well
/// under the limits servers and proxies put on them.
const IDS_PER_QUERY: usize = 32;

/// A status resource (TAXII 2.1 section 4.3.1): what became of the objects of one POST.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Status {
    /// Its id, for [`Client::status`].
    pub id: String,
    /// `complete` or `pending`.
    pub status: String,
    /// When the server took the request.
    #[serde(default)]
    pub request_timestamp: Option<String>,
    /// How many objects the request held.
    #[serde(default)]
    pub total_count: u64,
    /// How many the server took.
    #[serde(default)]
    pub success_count: u64,
    /// How many it refused.
    #[serde(default)]
    pub failure_count: u64,
    /// How many it has yet to decide.
    #[serde(default)]
    pub pending_count: u64,
    /// The objects taken, when the server lists them.
    #[serde(default)]
    pub successes: Vec<StatusDetails>,
    /// The objects refused, when the server lists them.
    #[serde(default)]
    pub failures: Vec<StatusDetails>,
    /// The objects not decided yet, when the server lists them.
    #[serde(default)]
    pub pendings: Vec<StatusDetails>,
}

impl Status {
    /// Whether the server has decided every object (`status` is `complete`).
    pub fn is_complete(&self) -> bool {
        self.status == "complete"
    }
}

/// One object in a status resource (TAXII 2.1 section 4.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusDetails {
    /// The object's id.
    pub id: String,
    /// The object's version (its `modified`, else `created`), as the server wrote it.
    #[serde(default)]
    pub version: String,
    /// Why it failed, or other news about it, as the server wrote it (untrusted text: pass it
    /// through `printable` before showing it).
    #[serde(default)]
    pub message: Option<String>,
}

/// Decodes a status resource. The caller has already capped `bytes` in size.
pub fn parse_status(bytes: &[u8]) -> Result<Status, String> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("not a TAXII 2.1 status resource (not a JSON object)".to_owned());
    }
    let status: Status = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            format!("not JSON ({e})")
        } else {
            format!("not a TAXII 2.1 status resource ({e})")
        }
    })?;
    if !matches!(status.status.as_str(), "complete" | "pending") {
        return Err(format!(
            "a status resource whose status is {:?}, neither \"complete\" nor \"pending\"",
            printable(&status.status, 40)
        ));
    }
    Ok(status)
}

/// The body of a POST: an envelope holding `objects`.
pub(super) fn envelope_body(objects: &[Value]) -> Vec<u8> {
    // Serializing JSON values cannot fail (no non-string keys, no I/O).
    serde_json::to_vec(&serde_json::json!({ "objects": objects })).unwrap_or_default()
}

/// A TAXII 2.1 client: one set of credentials, one trust root, one set of limits.
///
/// Transport rules:
/// - `https://` needs a CA file, whose certificates are the only trust roots. No root bundle is
///   compiled in; for a server with a publicly trusted certificate, name the system bundle
///   (`/etc/ssl/certs/ca-certificates.crt`).
/// - `http://` only to a loopback address (`127.0.0.0/8`, `::1`, `localhost`), and never through
///   a proxy: a plain-text request, credentials included, never leaves the host.
/// - Redirects are not followed, so credentials go only where the operator sent them.
pub struct Client {
    agent: ureq::Agent,
    authorization: Option<HeaderValue>,
    has_ca: bool,
    limits: Limits,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("credentials", &self.authorization.as_ref().map(|_| "<set>"))
            .field("has_ca", &self.has_ca)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// One objects response: the envelope and its paging headers.
#[derive(Debug, Clone)]
pub struct ObjectsPage {
    /// The envelope.
    pub envelope: Envelope,
    /// `X-TAXII-Date-Added-First`, as sent.
    pub date_added_first: Option<String>,
    /// `X-TAXII-Date-Added-Last`, as sent.
    pub date_added_last: Option<String>,
    /// The body's size in bytes.
    pub bytes: u64,
}

struct Fetched {
    body: Vec<u8>,
    date_added_first: Option<String>,
    date_added_last: Option<String>,
}

impl Client {
    /// A client with these credentials (HTTP Basic), trusting the certificates in `ca_file`.
    pub fn new(
        credentials: Option<&Credentials>,
        ca_file: Option<&Path>,
        limits: &Limits,
    ) -> Result<Client, TaxiiError> {
        let roots = match ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        let has_ca = !roots.is_empty();
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(limits.connect_timeout))
            .timeout_global(Some(limits.request_timeout))
            .user_agent(concat!("picket-collector/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        let authorization = credentials.map(basic_authorization).transpose()?;
        Ok(Client {
            agent,
            authorization,
            has_ca,
            limits: limits.clone(),
        })
    }

    /// Server discovery (`GET /taxii2/`, or wherever the operator says discovery is).
    pub fn discovery(&self, url: &str) -> Result<Discovery, TaxiiError> {
        let fetched = self.get(url, "TAXII discovery endpoint", self.limits.max_response)?;
        resources::parse_discovery(&fetched.body).map_err(|problem| json_error(url, problem))
    }

    /// An API root's information (`GET {api_root}`).
    pub fn api_root(&self, api_root: &str) -> Result<ApiRoot, TaxiiError> {
        let url = api_root_url(api_root)?;
        let fetched = self.get(&url, "TAXII API root", self.limits.max_response)?;
        resources::parse_api_root(&fetched.body).map_err(|problem| json_error(&url, problem))
    }

    /// The collections of an API root (`GET {api_root}collections/`).
    pub fn collections(&self, api_root: &str) -> Result<Vec<Collection>, TaxiiError> {
        let url = format!("{}collections/", api_root_url(api_root)?);
        let fetched = self.get(&url, "TAXII API root", self.limits.max_response)?;
        resources::parse_collections(&fetched.body).map_err(|problem| json_error(&url, problem))
    }

    /// One page of a collection's objects.
    pub fn objects_page(
        &self,
        api_root: &str,
        collection: &str,
        request: &PageRequest,
    ) -> Result<ObjectsPage, TaxiiError> {
        let url = objects_url(api_root, collection)?;
        self.objects_page_at(&url, collection, request, &[], self.limits.max_response)
    }

    fn objects_page_at(
        &self,
        url: &str,
        collection: &str,
        request: &PageRequest,
        filters: &[(&str, String)],
        cap: u64,
    ) -> Result<ObjectsPage, TaxiiError> {
        let mut query = vec![("limit", request.limit.to_string())];
        query.extend(filters.iter().cloned());
        if let Some(after) = &request.added_after {
            query.push(("added_after", after.clone()));
        }
        if let Some(next) = &request.next {
            query.push(("next", next.clone()));
        }
        let full = format!("{url}?{}", query_string(&query));
        let what = format!("TAXII collection {}", printable(collection, 100));
        let fetched = self.get(&full, &what, cap)?;
        let envelope =
            resources::parse_envelope(&fetched.body).map_err(|problem| json_error(url, problem))?;
        Ok(ObjectsPage {
            envelope,
            date_added_first: fetched.date_added_first,
            date_added_last: fetched.date_added_last,
            bytes: fetched.body.len() as u64,
        })
    }

    /// Every object of a collection added after `bookmark`, across all pages, and the new
    /// bookmark. All or nothing: an error on any page returns no objects and no bookmark.
    pub fn pull_objects(
        &self,
        api_root: &str,
        collection: &str,
        bookmark: Option<&str>,
    ) -> Result<Pulled, TaxiiError> {
        self.pull_matching(api_root, collection, bookmark, &[])
    }

    /// [`pull_objects`](Client::pull_objects), asking the server to filter: `filters` are
    /// `match[…]` parameters (such as `("match[type]", "sighting".into())`), sent unchanged
    /// with every page of the result set, as TAXII 2.1 requires when following `next`.
    pub fn pull_matching(
        &self,
        api_root: &str,
        collection: &str,
        bookmark: Option<&str>,
        filters: &[(&str, String)],
    ) -> Result<Pulled, TaxiiError> {
        let url = objects_url(api_root, collection)?;
        let paging_error = |error| TaxiiError::Paging {
            url: url.clone(),
            error,
        };
        let (mut paging, mut request) =
            Paging::new(bookmark, self.limits.page_size, self.limits.max_pages).map_err(paging_error)?;
        let mut objects = Vec::new();
        let mut bytes = 0u64;
        loop {
            let budget = self.limits.max_pull.saturating_sub(bytes);
            let cap = self.limits.max_response.min(budget);
            let page = match self.objects_page_at(&url, collection, &request, filters, cap) {
                Err(TaxiiError::TooLarge { .. }) if cap < self.limits.max_response => {
                    return Err(TaxiiError::PullTooLarge {
                        url,
                        limit: self.limits.max_pull,
                    })
                }
                // One 404 covers a missing collection and a missing API root: ask which.
                Err(e @ TaxiiError::NotFound { .. }) if paging.pages() == 0 => {
                    return Err(match self.api_root(api_root) {
                        Err(root @ TaxiiError::NotFound { .. }) => root,
                        _ => e,
                    })
                }
                other => other?,
            };
            bytes += page.bytes;
            let info = PageInfo {
                more: page.envelope.more,
                next: page.envelope.next,
                date_added_first: page.date_added_first,
                date_added_last: page.date_added_last,
                objects: page.envelope.objects.len(),
            };
            objects.extend(page.envelope.objects);
            match paging.advance(&info).map_err(paging_error)? {
                Some(next) => request = next,
                None => break,
            }
        }
        Ok(Pulled {
            origin: url,
            objects,
            bookmark: paging.bookmark().map(str::to_owned),
            pages: paging.pages(),
            bytes,
        })
    }

    /// Adds `objects` to a collection (`POST {api_root}collections/{id}/objects/`, TAXII 2.1
    /// section 5.5): one envelope, sent as `application/taxii+json;version=2.1`. The server
    /// answers 202 with a status resource, which may still be `pending`: poll it with
    /// [`status`](Client::status). The caller keeps the body under the API root's
    /// `max_content_length`.
    pub fn post_objects(
        &self,
        api_root: &str,
        collection: &str,
        objects: &[Value],
    ) -> Result<Status, TaxiiError> {
        let url = objects_url(api_root, collection)?;
        let body = envelope_body(objects);
        let what = format!("TAXII collection {}", printable(collection, 100));
        let fetched = self.send(&url, &what, MAX_STATUS.min(self.limits.max_response), Some(&body))?;
        parse_status(&fetched.body).map_err(|problem| json_error(&url, problem))
    }

    /// A status resource (`GET {api_root}status/{id}/`, TAXII 2.1 section 4.3).
    pub fn status(&self, api_root: &str, status_id: &str) -> Result<Status, TaxiiError> {
        if status_id.is_empty() {
            return Err(TaxiiError::Config {
                problem: "the status id is empty".to_owned(),
            });
        }
        let url = format!("{}status/{}/", api_root_url(api_root)?, percent_encode(status_id));
        let what = format!("TAXII status {}", printable(status_id, 100));
        let fetched = self.get(&url, &what, MAX_STATUS.min(self.limits.max_response))?;
        parse_status(&fetched.body).map_err(|problem| json_error(&url, problem))
    }

    /// Which versions of the objects `ids` the collection holds: `(id, version)` pairs as the
    /// server's manifest (`GET {api_root}collections/{id}/manifest/`, TAXII 2.1 section 5.3)
    /// lists them, asked with `match[id]` (a few ids a request, so URLs stay short) and
    /// `match[version]=all`, following `next` across pages. Versions are as the server wrote
    /// them; compare them as timestamps ([`Timestamp`](super::Timestamp)), not as text.
    pub fn versions_present(
        &self,
        api_root: &str,
        collection: &str,
        ids: &[&str],
    ) -> Result<Vec<(String, String)>, TaxiiError> {
        if collection.is_empty() {
            return Err(TaxiiError::Config {
                problem: "the collection id is empty".to_owned(),
            });
        }
        let url = format!(
            "{}collections/{}/manifest/",
            api_root_url(api_root)?,
            percent_encode(collection)
        );
        let what = format!("TAXII collection {}", printable(collection, 100));
        let mut found = Vec::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let filters = [
                ("match[id]", chunk.join(",")),
                ("match[version]", "all".to_owned()),
            ];
            let mut next: Option<String> = None;
            for page in 1.. {
                let mut query = vec![("limit", self.limits.page_size.to_string())];
                query.extend(filters.iter().cloned());
                if let Some(n) = &next {
                    query.push(("next", n.clone()));
                }
                let full = format!("{url}?{}", query_string(&query));
                let fetched = self.get(&full, &what, self.limits.max_response)?;
                let envelope =
                    resources::parse_envelope(&fetched.body).map_err(|problem| json_error(&url, problem))?;
                for record in &envelope.objects {
                    // A manifest record without an id or a version names nothing to match.
                    if let (Some(Value::String(id)), Some(Value::String(version))) =
                        (record.get("id"), record.get("version"))
                    {
                        if chunk.contains(&id.as_str()) {
                            found.push((id.clone(), version.clone()));
                        }
                    }
                }
                match envelope.next.filter(|n| envelope.more && !n.is_empty()) {
                    Some(n) if page < self.limits.max_pages => next = Some(n),
                    Some(_) => {
                        return Err(TaxiiError::Paging {
                            url,
                            error: super::PagingError::TooManyPages { pages: page },
                        })
                    }
                    // `more` without `next` cannot be followed with the same filters: what the
                    // server sent is what is known.
                    None => break,
                }
            }
        }
        Ok(found)
    }

    /// GETs `url` (checked against the transport rules) and returns a successful TAXII body of
    /// at most `cap` bytes. `what` names the resource for a 404.
    fn get(&self, url: &str, what: &str, cap: u64) -> Result<Fetched, TaxiiError> {
        self.send(url, what, cap, None)
    }

    /// GETs `url`, or POSTs `body` (TAXII 2.1 JSON) to it, under the transport rules, and
    /// returns a successful TAXII body of at most `cap` bytes. `what` names the resource for a
    /// 404.
    fn send(&self, url: &str, what: &str, cap: u64, body: Option<&[u8]>) -> Result<Fetched, TaxiiError> {
        let uri = self.check(url)?;
        let shown = shown(&uri);
        let posting = body.is_some();
        let sent = match body {
            None => {
                let mut request = self.agent.get(url).header("Accept", TAXII_MEDIA_TYPE);
                if let Some(authorization) = &self.authorization {
                    request = request.header("Authorization", authorization.clone());
                }
                if uri.scheme_str() == Some("http") {
                    request = request.config().proxy(None).build();
                }
                request.call()
            }
            Some(body) => {
                let mut request = self
                    .agent
                    .post(url)
                    .header("Accept", TAXII_MEDIA_TYPE)
                    .header("Content-Type", TAXII_MEDIA_TYPE);
                if let Some(authorization) = &self.authorization {
                    request = request.header("Authorization", authorization.clone());
                }
                if uri.scheme_str() == Some("http") {
                    request = request.config().proxy(None).build();
                }
                request.send(body)
            }
        };
        let mut response = sent.map_err(|e| transport(&shown, e))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let content_type = header("content-type");
        let location = header("location");
        let date_added_first = header("x-taxii-date-added-first");
        let date_added_last = header("x-taxii-date-added-last");
        if (200..300).contains(&status) {
            resources::check_media_type(content_type.as_deref()).map_err(|problem| {
                TaxiiError::MediaType {
                    url: shown.clone(),
                    problem,
                }
            })?;
            let body = response
                .body_mut()
                .with_config()
                .limit(cap)
                .read_to_vec()
                .map_err(|e| match e {
                    ureq::Error::BodyExceedsLimit(_) => TaxiiError::TooLarge {
                        url: shown.clone(),
                        limit: cap,
                    },
                    other => transport(&shown, other),
                })?;
            return Ok(Fetched {
                body,
                date_added_first,
                date_added_last,
            });
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ERROR_BODY)
            .read_to_vec()
            .unwrap_or_default();
        let detail = error_detail(&body);
        let colon = |d: &Option<String>| d.as_ref().map(|d| format!(": {d}")).unwrap_or_default();
        Err(match status {
            401 if self.authorization.is_some() => TaxiiError::Unauthorized { url: shown },
            401 => TaxiiError::CredentialsRequired { url: shown },
            // TaxiiError::Forbidden speaks of reading; a refused POST is a refused write.
            403 if posting => TaxiiError::Status {
                url: shown,
                status,
                detail: format!(
                    ": this account may not add objects to the collection{}",
                    detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
                ),
            },
            403 => TaxiiError::Forbidden {
                url: shown,
                detail: colon(&detail),
            },
            404 => TaxiiError::NotFound {
                what: what.to_owned(),
                url: shown,
                detail: colon(&detail),
            },
            406 | 415 => TaxiiError::NotAcceptable {
                url: shown,
                status,
                detail: detail.map(|d| format!(" ({d})")).unwrap_or_default(),
            },
            300..=399 => TaxiiError::Redirected {
                url: shown,
                status,
                location: location
                    .map(|l| printable(l.split('?').next().unwrap_or_default(), 200))
                    .unwrap_or_default(),
            },
            _ => TaxiiError::Status {
                url: shown,
                status,
                detail: colon(&detail),
            },
        })
    }

    /// Applies the transport rules to `url`.
    fn check(&self, url: &str) -> Result<Uri, TaxiiError> {
        check_transport(url, self.has_ca)
    }
}

/// Applies the transport rules (see [`Client`]) to `url`, for a client that has a CA file or
/// not.
pub(super) fn check_transport(url: &str, has_ca: bool) -> Result<Uri, TaxiiError> {
    let uri = parse_url(url)?;
    match uri.scheme_str() {
        Some("https") if !has_ca => Err(TaxiiError::Config {
            problem: format!(
                "{} needs a CA file: Picket trusts only the CA its operator names (for a publicly \
                     trusted server, name the system bundle, such as /etc/ssl/certs/ca-certificates.crt)",
                shown(&uri)
            ),
        }),
        Some("https") => Ok(uri),
        Some("http") if uri.host().is_some_and(is_loopback) => Ok(uri),
        _ => Err(TaxiiError::Config {
            problem: format!(
                "{} is plain http to another host: use https (plain http is allowed only to this host)",
                shown(&uri)
            ),
        }),
    }
}

/// Parses a URL the operator or a server gave: http or https, a host, no user name or password
/// in it (credentials belong in the source's settings, where they are stored 0600 and never
/// shown).
pub(super) fn parse_url(url: &str) -> Result<Uri, TaxiiError> {
    let bad = |why: &str| TaxiiError::Config {
        problem: format!("{:?} is not a usable TAXII URL: {why}", for_display(url)),
    };
    let uri: Uri = url.parse().map_err(|_| bad("it does not parse as a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("only http:// and https:// are supported"));
    }
    let authority = uri.authority().ok_or_else(|| bad("it has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad(
            "it carries credentials; give them as the source's user name and password instead",
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(uri)
}

/// A URL that may not parse, made fit for a message: no query string, no user name or password,
/// no control characters.
fn for_display(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let redacted = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://<credentials>@{host}{path}"),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    printable(&redacted, 200)
}

/// The URL as shown in messages: scheme, host, port and path, without the query string.
fn shown(uri: &Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or_default(),
        uri.authority().map(|a| a.as_str()).unwrap_or_default(),
        uri.path()
    )
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The API root URL, checked, ending in `/`, without a query string.
pub(super) fn api_root_url(api_root: &str) -> Result<String, TaxiiError> {
    let uri = parse_url(api_root)?;
    if uri.query().is_some() {
        return Err(TaxiiError::Config {
            problem: format!(
                "the API root {} has a query string; TAXII API roots do not",
                shown(&uri)
            ),
        });
    }
    let mut url = shown(&uri);
    if !url.ends_with('/') {
        url.push('/');
    }
    Ok(url)
}

/// `{api_root}collections/{id}/objects/`.
pub(super) fn objects_url(api_root: &str, collection: &str) -> Result<String, TaxiiError> {
    if collection.is_empty() {
        return Err(TaxiiError::Config {
            problem: "the collection id is empty".to_owned(),
        });
    }
    Ok(format!(
        "{}collections/{}/objects/",
        api_root_url(api_root)?,
        percent_encode(collection)
    ))
}

fn query_string(pairs: &[(&str, String)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    parts.join("&")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(super) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Authorization: Basic …` value (RFC 7617), marked sensitive so that no debug output of
/// the HTTP stack prints it.
fn basic_authorization(credentials: &Credentials) -> Result<HeaderValue, TaxiiError> {
    if credentials.username.contains(':') {
        return Err(TaxiiError::Config {
            problem: "the user name contains ':', which HTTP Basic authentication cannot carry".to_owned(),
        });
    }
    if credentials
        .username
        .chars()
        .chain(credentials.password.chars())
        .any(char::is_control)
    {
        return Err(TaxiiError::Config {
            problem: "the user name or password contains a control character".to_owned(),
        });
    }
    let token = base64(format!("{}:{}", credentials.username, credentials.password).as_bytes());
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| TaxiiError::Config {
        problem: "the credentials cannot be sent in an HTTP header".to_owned(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Standard base64 with padding (RFC 4648 section 4): HTTP Basic credentials, and STIX binary
/// literals.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn read_ca_file(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, TaxiiError> {
    let problem = |problem: String| TaxiiError::CaFile {
        path: path.to_owned(),
        problem,
    };
    let meta = std::fs::metadata(path).map_err(|e| problem(e.to_string()))?;
    if meta.len() > MAX_CA_FILE {
        return Err(problem(format!(
            "larger than {MAX_CA_FILE} bytes; is it a CA certificate file?"
        )));
    }
    let pem = std::fs::read(path).map_err(|e| problem(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => return Err(problem(format!("not valid PEM: {e}"))),
        }
    }
    if certs.is_empty() {
        return Err(problem(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(certs)
}

fn json_error(url: &str, problem: String) -> TaxiiError {
    TaxiiError::Json {
        url: url.split('?').next().unwrap_or_default().to_owned(),
        problem,
    }
}

fn transport(url: &str, error: ureq::Error) -> TaxiiError {
    let tls = |e: &rustls::Error| {
        format!("TLS failed: {e}; is the source's CA file the CA that signed this server's certificate?")
    };
    // rustls's errors during the handshake reach ureq wrapped in an io::Error.
    let wrapped_tls = match &error {
        ureq::Error::Io(e) => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    let problem = match &error {
        _ if wrapped_tls.is_some() => wrapped_tls.map(tls).unwrap_or_default(),
        ureq::Error::Timeout(which) => format!("timed out ({which})"),
        ureq::Error::Rustls(e) => tls(e),
        ureq::Error::Tls(e) => format!("TLS failed: {e}"),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        ureq::Error::ConnectionFailed => "connection failed".to_owned(),
        ureq::Error::Io(e) => format!("connection failed: {e}"),
        other => other.to_string(),
    };
    TaxiiError::Transport {
        url: url.to_owned(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn status_resources() {
        let s = parse_status(
            br#"{"id": "2d086da7-4bdc-4f91-900e-d77486753710", "status": "pending", "total_count": 3,
                 "success_count": 1, "failure_count": 1, "pending_count": 1,
                 "successes": [{"id": "sighting--1", "version": "2024-01-01T00:00:00.000Z"}],
                 "failures": [{"id": "sighting--2", "version": "2024-01-01T00:00:00.000Z", "message": "no"}],
                 "pendings": [{"id": "sighting--3", "version": "2024-01-01T00:00:00.000Z"}],
                 "custom_property": true}"#,
        )
        .unwrap();
        assert!(!s.is_complete());
        assert_eq!((s.successes.len(), s.failures.len(), s.pendings.len()), (1, 1, 1));
        assert_eq!(s.failures[0].message.as_deref(), Some("no"));
        // Counts alone are a status too (the lists are optional).
        let s = parse_status(
            br#"{"id": "x", "status": "complete", "total_count": 0, "success_count": 0,
                                  "failure_count": 0, "pending_count": 0}"#,
        )
        .unwrap();
        assert!(s.is_complete() && s.successes.is_empty());
        for (bad, says) in [
            (&b"[]"[..], "not a JSON object"),
            (b"{\"id\": \"x\"}", "not a TAXII 2.1 status resource"),
            (b"{\"id\": \"x\", \"status\": \"done\"}", "neither"),
            (b"{\"id\": ", "not JSON"),
        ] {
            let e = parse_status(bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        let body = envelope_body(&[serde_json::json!({"id": "x--1"})]);
        assert_eq!(body, br#"{"objects":[{"id":"x--1"}]}"#);
    }

    #[test]
    fn base64_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn authorization_is_basic_and_sensitive() {
        let c = Credentials {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        };
        let v = basic_authorization(&c).unwrap();
        assert_eq!(v.to_str().unwrap(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("QWxh"));
        let colon = Credentials {
            username: "a:b".into(),
            password: "p".into(),
        };
        assert!(basic_authorization(&colon)
            .unwrap_err()
            .to_string()
            .contains("':'"));
    }

    #[test]
    fn urls() {
        assert_eq!(
            api_root_url("https://h.example/api1").unwrap(),
            "https://h.example/api1/"
        );
        assert_eq!(
            api_root_url("http://127.0.0.1:5000/api1/").unwrap(),
            "http://127.0.0.1:5000/api1/"
        );
        assert_eq!(
            objects_url("https://h.example/api1/", "91a7b528-80eb-42ed-a74d-c6fbd5a26116").unwrap(),
            "https://h.example/api1/collections/91a7b528-80eb-42ed-a74d-c6fbd5a26116/objects/"
        );
        assert_eq!(
            objects_url("https://h.example/api1/", "a b/c").unwrap(),
            "https://h.example/api1/collections/a%20b%2Fc/objects/"
        );
        for (bad, says) in [
            ("ftp://h/api1/", "only http"),
            ("https://user:pw@h/api1/", "carries credentials"),
            ("https://user:p@ss@h/api1/", "carries credentials"),
            ("not a url", "does not parse"),
            ("/api1/", "only http"),
            ("https://h/api1/?key=secret", "query string"),
        ] {
            let e = api_root_url(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(
                !e.contains("secret") && !e.contains("user:") && !e.contains("pw"),
                "{e}"
            );
        }
        assert!(objects_url("https://h/api1/", "").is_err());
        assert_eq!(
            query_string(&[
                ("added_after", "2024-01-01T00:00:00.5Z".into()),
                ("next", "a+b=c".into())
            ]),
            "added_after=2024-01-01T00%3A00%3A00.5Z&next=a%2Bb%3Dc"
        );
    }

    #[test]
    fn transport_rules() {
        let limits = Limits::default();
        let plain = Client::new(None, None, &limits).unwrap();
        for ok in [
            "http://127.0.0.1:1/",
            "http://127.9.9.9/",
            "http://[::1]:8/",
            "http://LOCALHOST/",
        ] {
            assert!(plain.check(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("http://192.0.2.1/api1/", "plain http to another host"),
            ("http://taxii.example/", "plain http to another host"),
            ("http://127.0.0.1.example/", "plain http to another host"),
            ("https://taxii.example/api1/", "needs a CA file"),
        ] {
            let e = plain.check(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn ca_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Client::new(None, Some(&empty), &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty.pem") && e.contains("no PEM certificate"), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = Client::new(None, Some(&missing), &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
