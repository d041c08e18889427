//! The TAXII 2.1 server's request core: a parsed request, the member it authenticated as and
//! the objects a community may see in, a response out; and the decoding of what a member posts
//! (a TAXII envelope) and the status resource that answers it. No I/O: the shell ([`super`])
//! reads the objects from the share policy, keeps the object history and `next` tokens, stores
//! contributions and statuses, and writes bytes.
//!
//! Invariants: every response but a 401 (or a 429) is for an authenticated member; a member
//! sees an API root only if `[[taxii.member]]` lists its community under `communities` (read)
//! or `contribute` (write), reads only the `sightings` collection and writes only the
//! `contributions` collection, each only where it is listed; a `next` token serves only the
//! member it was issued to, for the collection it was issued for, and authorisation is checked
//! again when it is used. A posted body is decoded only after its length was checked against
//! [`MAX_CONTENT_LENGTH`], and holds at most [`MAX_POST_OBJECTS`] objects.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// The TAXII 2.1 media type: every response body is of this type.
pub const TAXII_MEDIA: &str = "application/taxii+json;version=2.1";
/// The STIX 2.1 media type of the objects served.
pub const STIX_MEDIA: &str = "application/stix+json;version=2.1";
/// The most objects one page holds, whatever `limit` asks.
pub const MAX_PAGE: usize = 100;
/// The title of the collection members read: what the share policy lets the community have.
pub const COLLECTION_TITLE: &str = "sightings";
/// The title of the collection members post their sightings and indicators to.
pub const CONTRIBUTIONS_TITLE: &str = "contributions";
/// The largest request body, in bytes: `max_content_length` of every API root.
pub const MAX_CONTENT_LENGTH: usize = 1024 * 1024;
/// The most objects one POST may carry (a larger envelope is refused whole with 400).
pub const MAX_POST_OBJECTS: usize = 10_000;

/// A response: status, extra headers, and a TAXII JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Headers beside Content-Type and Content-Length.
    pub headers: Vec<(String, String)>,
    /// The body, sent as [`TAXII_MEDIA`].
    pub body: Value,
}

impl Response {
    fn ok(body: Value) -> Response {
        Response {
            status: 200,
            headers: Vec::new(),
            body,
        }
    }

    /// A TAXII error message with `status`.
    pub fn error(status: u16, title: &str, description: impl Into<String>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: json!({
                "title": title,
                "description": description.into(),
                "http_status": status.to_string(),
            }),
        }
    }

    /// 401 with the `WWW-Authenticate` challenge.
    pub fn unauthorised(realm: &str, description: &str) -> Response {
        let mut r = Response::error(401, "Unauthorized", description);
        r.headers.push((
            "WWW-Authenticate".into(),
            format!("Basic realm=\"{realm}\", charset=\"UTF-8\""),
        ));
        r
    }
}

/// One stored version of an object: when this server first served it, and the object.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// `date_added`, in unix milliseconds (strictly increasing across the server's history).
    pub added: i64,
    /// The version: the object's `modified`, else its `created`.
    pub version: String,
    /// The object itself.
    pub object: Value,
}

/// What a route wants from the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /taxii2/`.
    Discovery,
    /// `GET /<root>/`.
    ApiRoot(String),
    /// `GET /<root>/collections/`.
    Collections(String),
    /// `GET /<root>/collections/<id>/`.
    Collection(String, String),
    /// `GET` or `POST /<root>/collections/<id>/objects/`.
    Objects(String, String),
    /// `GET /<root>/collections/<id>/manifest/`.
    Manifest(String, String),
    /// `GET /<root>/collections/<id>/objects/<object-id>/`.
    Object(String, String, String),
    /// `GET /<root>/collections/<id>/objects/<object-id>/versions/`.
    Versions(String, String, String),
    /// `GET /<root>/status/<id>/`: the status resource of an earlier POST.
    Status(String, String),
}

impl Route {
    /// The API root the route is under, if any.
    pub fn root(&self) -> Option<&str> {
        match self {
            Route::Discovery => None,
            Route::ApiRoot(r)
            | Route::Collections(r)
            | Route::Collection(r, _)
            | Route::Objects(r, _)
            | Route::Manifest(r, _)
            | Route::Object(r, _, _)
            | Route::Versions(r, _, _)
            | Route::Status(r, _) => Some(r),
        }
    }

    /// The collection the route is in, if any.
    pub fn collection(&self) -> Option<&str> {
        match self {
            Route::Collection(_, c)
            | Route::Objects(_, c)
            | Route::Manifest(_, c)
            | Route::Object(_, c, _)
            | Route::Versions(_, c, _) => Some(c),
            _ => None,
        }
    }
}

/// Splits a request target into its route and its decoded query parameters; `None` for a path
/// that names no resource. The specification's URLs end in `/`; one without it names the same
/// resource (taxii2-client asks for a status resource that way).
pub fn route(target: &str) -> Option<(Route, Vec<(String, String)>)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = path.strip_prefix('/')?;
    let path = path.strip_suffix('/').unwrap_or(path);
    let parts: Vec<String> = path.split('/').map(percent_decode).collect::<Option<_>>()?;
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    let s = |x: &str| x.to_owned();
    let r = match p.as_slice() {
        ["taxii2"] => Route::Discovery,
        [root] => Route::ApiRoot(s(root)),
        [root, "collections"] => Route::Collections(s(root)),
        [root, "status", id] => Route::Status(s(root), s(id)),
        [root, "collections", c] => Route::Collection(s(root), s(c)),
        [root, "collections", c, "objects"] => Route::Objects(s(root), s(c)),
        [root, "collections", c, "manifest"] => Route::Manifest(s(root), s(c)),
        [root, "collections", c, "objects", o] => Route::Object(s(root), s(c), s(o)),
        [root, "collections", c, "objects", o, "versions"] => Route::Versions(s(root), s(c), s(o)),
        _ => return None,
    };
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.push((percent_decode(k)?, percent_decode(v)?));
    }
    Some((r, params))
}

/// Decodes `%XX` escapes (and `+` as a space, as in a query string); `None` if malformed or
/// not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Whether an `Accept` header value admits [`TAXII_MEDIA`]: `application/taxii+json` with
/// `version=2.1` or no version, `application/*` or `*/*`. A request without the header
/// accepts anything (RFC 9110).
pub fn accepts_taxii(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return true };
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let kind = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut version = None;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("version") {
                    version = Some(v.trim().trim_matches('"').to_owned());
                }
            }
        }
        match kind.as_str() {
            "*/*" | "application/*" => true,
            "application/taxii+json" => version.is_none_or(|v| v == "2.1"),
            _ => false,
        }
    })
}

/// The id of a community's `sightings` collection: a UUID derived from its name (the same on
/// every start), in the form TAXII asks for.
pub fn collection_id(community: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("picket taxii collection\0{community}").as_bytes(),
    );
    crate::uuid::uuid_text(d.as_ref(), 5)
}

/// The id of a community's `contributions` collection: derived like [`collection_id`] under
/// another label, so the two never meet.
pub fn contributions_id(community: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("picket taxii contributions\0{community}").as_bytes(),
    );
    crate::uuid::uuid_text(d.as_ref(), 5)
}

/// The two collections of each API root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// `sightings`: what the share policy lets the community have; members listed under
    /// `communities` read it; nobody writes it.
    Sightings,
    /// `contributions`: where members listed under `contribute` post sightings and indicators;
    /// nobody reads it over TAXII.
    Contributions,
}

impl Collection {
    /// Which collection of community `root` the id `id` names, if any.
    pub fn of(root: &str, id: &str) -> Option<Collection> {
        if id == collection_id(root) {
            Some(Collection::Sightings)
        } else if id == contributions_id(root) {
            Some(Collection::Contributions)
        } else {
            None
        }
    }
}

/// What one member may do in one API root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    /// The member may read the `sightings` collection.
    pub read: bool,
    /// The member may write the `contributions` collection.
    pub write: bool,
}

impl Access {
    /// `can_read` of `c` for this member.
    pub fn can_read(self, c: Collection) -> bool {
        self.read && c == Collection::Sightings
    }

    /// `can_write` of `c` for this member.
    pub fn can_write(self, c: Collection) -> bool {
        self.write && c == Collection::Contributions
    }
}

/// The discovery resource, listing the API roots of `roots` under `base` (`https://host`).
pub fn discovery(base: &str, roots: &[String]) -> Response {
    let urls: Vec<String> = roots.iter().map(|r| format!("{base}/{r}/")).collect();
    let mut body = json!({
        "title": "Picket",
        "description": "Sightings shared by this Picket collector, one API root per community.",
        "api_roots": urls,
    });
    if let [only] = urls.as_slice() {
        body["default"] = json!(only);
    }
    Response::ok(body)
}

/// The API root resource of community `root`.
pub fn api_root(root: &str) -> Response {
    Response::ok(json!({
        "title": root,
        "description": format!("Sightings shared with community {root}, and its members' contributions"),
        "versions": [TAXII_MEDIA],
        "max_content_length": MAX_CONTENT_LENGTH,
    }))
}

/// The resource of collection `c` of community `root`, with `can_read` and `can_write` as they
/// are for the member asking.
pub fn collection(root: &str, c: Collection, access: Access) -> Value {
    let (id, title, description) = match c {
        Collection::Sightings => (
            collection_id(root),
            COLLECTION_TITLE,
            format!("Sightings shared with community {root}"),
        ),
        Collection::Contributions => (
            contributions_id(root),
            CONTRIBUTIONS_TITLE,
            format!("Sightings and indicators that members contribute to community {root}"),
        ),
    };
    json!({
        "id": id,
        "title": title,
        "description": description,
        "can_read": access.can_read(c),
        "can_write": access.can_write(c),
        "media_types": [STIX_MEDIA],
    })
}

/// The collections resource of community `root`: the collections the member may read or
/// write.
pub fn collections(root: &str, access: Access) -> Response {
    let list: Vec<Value> = [Collection::Sightings, Collection::Contributions]
        .into_iter()
        .filter(|&c| access.can_read(c) || access.can_write(c))
        .map(|c| collection(root, c, access))
        .collect();
    let body = if list.is_empty() {
        json!({})
    } else {
        json!({ "collections": list })
    };
    Response::ok(body)
}

/// One object of a POST, as [`decode_envelope`] found it.
#[derive(Debug, Clone, PartialEq)]
pub enum Posted {
    /// A JSON object with a string `type` and `id`: handed to the store.
    Object(Value),
    /// Not an object the server can take: a failure of the status resource.
    Refused(Detail),
}

/// One entry of a status resource's `successes` or `failures` (`status-details`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    /// The object's `id` (empty when it had none).
    pub id: String,
    /// The object's version: `modified`, else `created` (empty when it had neither).
    pub version: String,
    /// Why it failed, or a remark on a success.
    pub message: Option<String>,
}

/// The `id` and version of a posted object, as far as it has them.
pub fn id_and_version(object: &Value) -> (String, String) {
    let text = |k: &str| object.get(k).and_then(Value::as_str);
    (
        text("id").unwrap_or_default().to_owned(),
        text("modified")
            .or_else(|| text("created"))
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Decodes a POST body: a TAXII envelope, a JSON object whose `objects` is an array of at most
/// [`MAX_POST_OBJECTS`] entries. A body that is not one is a 400 naming what is wrong; an entry
/// that is not a JSON object with a string `type` and `id` becomes a [`Posted::Refused`], so it
/// fails alone.
pub fn decode_envelope(body: &[u8]) -> Result<Vec<Posted>, Response> {
    let bad = |why: String| Response::error(400, "Bad Request", why);
    if body.len() > MAX_CONTENT_LENGTH {
        return Err(Response::error(
            413,
            "Content Too Large",
            format!("the body is over {MAX_CONTENT_LENGTH} bytes"),
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "the body is not JSON ({e}); a TAXII envelope is expected"
        ))
    })?;
    let Value::Object(mut envelope) = value else {
        return Err(bad("the body is not a TAXII envelope (a JSON object)".into()));
    };
    let Some(Value::Array(objects)) = envelope.remove("objects") else {
        return Err(bad("the envelope has no \"objects\" array".into()));
    };
    if objects.len() > MAX_POST_OBJECTS {
        return Err(bad(format!(
            "the envelope holds {} objects; at most {MAX_POST_OBJECTS} are taken in one request",
            objects.len()
        )));
    }
    Ok(objects
        .into_iter()
        .map(|o| {
            let (id, version) = id_and_version(&o);
            let refuse = |why: &str| {
                Posted::Refused(Detail {
                    id: id.clone(),
                    version: version.clone(),
                    message: Some(why.to_owned()),
                })
            };
            if !o.is_object() {
                refuse("not a STIX object (a JSON object)")
            } else if !o.get("type").is_some_and(Value::is_string) {
                refuse("the object has no \"type\"")
            } else if !o.get("id").is_some_and(Value::is_string) {
                refuse("the object has no \"id\"")
            } else {
                Posted::Object(o)
            }
        })
        .collect())
}

/// The status resource of a POST that finished at once: `id`, the time it was received
/// (`request_ms`), and what became of each object (`Ok` a success, `Err` a failure). Optional
/// lists are left out when empty (a STIX or TAXII list is never empty when present).
pub fn status_resource(id: &str, request_ms: i64, outcomes: &[Result<Detail, Detail>]) -> Value {
    let detail = |d: &Detail| {
        let mut v = json!({ "id": d.id, "version": d.version });
        if let Some(m) = &d.message {
            v["message"] = json!(m);
        }
        v
    };
    let successes: Vec<Value> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .map(detail)
        .collect();
    let failures: Vec<Value> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .map(detail)
        .collect();
    let mut body = json!({
        "id": id,
        "status": "complete",
        "request_timestamp": timestamp(request_ms),
        "total_count": outcomes.len(),
        "success_count": successes.len(),
        "failure_count": failures.len(),
        "pending_count": 0,
    });
    if !successes.is_empty() {
        body["successes"] = Value::Array(successes);
    }
    if !failures.is_empty() {
        body["failures"] = Value::Array(failures);
    }
    body
}

/// Formats unix milliseconds as a TAXII timestamp (UTC, millisecond precision).
pub fn timestamp(ms: i64) -> String {
    picket_proto::rfc3339_millis(ms)
}

/// Parses a STIX/TAXII timestamp (`YYYY-MM-DDTHH:MM:SS[.fff...]Z`) to unix milliseconds,
/// fractions beyond milliseconds dropped; `None` if malformed. The same parser as the TAXII
/// client's bookmarks.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    crate::taxii::timestamp::Timestamp::parse(s).map(|t| t.unix_millis())
}

/// The filters of an objects, manifest, object or versions request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `added_after`, unix milliseconds (exclusive).
    pub added_after: Option<i64>,
    /// `limit`, capped at [`MAX_PAGE`].
    pub limit: usize,
    /// `next`: a token from an earlier page.
    pub next: Option<String>,
    /// `match[id]`.
    pub ids: Option<Vec<String>>,
    /// `match[type]`.
    pub types: Option<Vec<String>>,
    /// `match[version]`: `last` (default), `first`, `all`, or timestamps.
    pub versions: Vec<String>,
    /// `match[spec_version]`.
    pub spec_versions: Option<Vec<String>>,
}

/// The query parameters an endpoint takes (TAXII 2.1, 5.1 and 5.3 to 5.6); no others.
pub fn allowed_params(route: &Route) -> &'static [&'static str] {
    match route {
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
    }
}

/// Reads the query parameters into a [`Filter`]; a 400 names the parameter that is wrong.
/// `allowed` lists the parameters this endpoint takes ([`allowed_params`]).
pub fn filter(params: &[(String, String)], allowed: &[&str]) -> Result<Filter, Response> {
    let bad = |k: &str, why: &str| Response::error(400, "Bad Request", format!("query parameter {k}: {why}"));
    let list = |v: &str| v.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>();
    let mut f = Filter {
        limit: MAX_PAGE,
        versions: vec!["last".into()],
        ..Filter::default()
    };
    for (k, v) in params {
        if !allowed.contains(&k.as_str()) {
            return Err(bad(k, "not supported on this endpoint"));
        }
        match k.as_str() {
            "added_after" => {
                f.added_after = Some(parse_timestamp(v).ok_or_else(|| bad(k, "not a timestamp"))?);
            }
            "limit" => {
                let n: usize = v.parse().map_err(|_| bad(k, "not a positive integer"))?;
                if n == 0 {
                    return Err(bad(k, "must be at least 1"));
                }
                f.limit = n.min(MAX_PAGE);
            }
            "next" => f.next = Some(v.clone()),
            "match[id]" => f.ids = Some(list(v)),
            "match[type]" => f.types = Some(list(v)),
            "match[spec_version]" => f.spec_versions = Some(list(v)),
            "match[version]" => {
                let vs = list(v);
                for x in &vs {
                    if !matches!(x.as_str(), "last" | "first" | "all") && parse_timestamp(x).is_none() {
                        return Err(bad(k, "each value must be last, first, all or a timestamp"));
                    }
                }
                f.versions = vs;
            }
            _ => return Err(bad(k, "not supported")),
        }
    }
    Ok(f)
}

/// Applies the filters (all but `limit` and `next`) to the history of the objects currently
/// shared (`by_id`: each id's versions, oldest first) and returns the matching versions in
/// `date_added` order.
pub fn select(by_id: &BTreeMap<String, Vec<Version>>, f: &Filter) -> Vec<(String, Version)> {
    let mut out = Vec::new();
    for (id, versions) in by_id {
        if f.ids.as_ref().is_some_and(|ids| !ids.contains(id)) {
            continue;
        }
        let kind = id.split_once("--").map_or("", |(t, _)| t);
        if f.types.as_ref().is_some_and(|ts| !ts.iter().any(|t| t == kind)) {
            continue;
        }
        let mut chosen: Vec<&Version> = Vec::new();
        for (i, v) in versions.iter().enumerate() {
            let last = i + 1 == versions.len();
            let pick = f.versions.iter().any(|want| match want.as_str() {
                "all" => true,
                "last" => last,
                "first" => i == 0,
                ts => parse_timestamp(ts).is_some() && parse_timestamp(ts) == parse_timestamp(&v.version),
            });
            if pick {
                chosen.push(v);
            }
        }
        for v in chosen {
            let spec = v
                .object
                .get("spec_version")
                .and_then(Value::as_str)
                .unwrap_or("2.1");
            if f.spec_versions
                .as_ref()
                .is_some_and(|s| !s.iter().any(|x| x == spec))
            {
                continue;
            }
            if f.added_after.is_some_and(|t| v.added <= t) {
                continue;
            }
            out.push((id.clone(), v.clone()));
        }
    }
    out.sort_by_key(|(_, v)| v.added);
    out
}

/// Adds `X-TAXII-Date-Added-First` and `-Last` for a non-empty page.
pub fn date_headers(resp: &mut Response, page: &[(String, Version)]) {
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        resp.headers
            .push(("X-TAXII-Date-Added-First".into(), timestamp(first.1.added)));
        resp.headers
            .push(("X-TAXII-Date-Added-Last".into(), timestamp(last.1.added)));
    }
}

/// An envelope of `page`, with `more` and `next`.
pub fn envelope(page: &[(String, Version)], next: Option<String>) -> Response {
    let mut body = json!({ "more": next.is_some() });
    if !page.is_empty() {
        body["objects"] = Value::Array(page.iter().map(|(_, v)| v.object.clone()).collect());
    }
    if let Some(n) = next {
        body["next"] = json!(n);
    }
    let mut r = Response::ok(body);
    date_headers(&mut r, page);
    r
}

/// A manifest of `page`, with `more` and `next`.
pub fn manifest(page: &[(String, Version)], next: Option<String>) -> Response {
    let mut body = json!({ "more": next.is_some() });
    if !page.is_empty() {
        body["objects"] = Value::Array(
            page.iter()
                .map(|(id, v)| {
                    json!({
                        "id": id,
                        "date_added": timestamp(v.added),
                        "version": v.version,
                        "media_type": STIX_MEDIA,
                    })
                })
                .collect(),
        );
    }
    if let Some(n) = next {
        body["next"] = json!(n);
    }
    let mut r = Response::ok(body);
    date_headers(&mut r, page);
    r
}

/// The versions resource of one object, with `more` and `next`.
pub fn versions(page: &[(String, Version)], next: Option<String>) -> Response {
    let mut body = json!({ "more": next.is_some() });
    if !page.is_empty() {
        body["versions"] = Value::Array(page.iter().map(|(_, v)| json!(v.version)).collect());
    }
    if let Some(n) = next {
        body["next"] = json!(n);
    }
    let mut r = Response::ok(body);
    date_headers(&mut r, page);
    r
}

/// Decodes standard base64 (with padding); `None` if malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let chunks: Vec<&[u8]> = s.as_bytes().chunks(4).collect();
    for (i, c) in chunks.iter().enumerate() {
        let pad = c.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks.len()) {
            return None;
        }
        let mut n = 0u32;
        for &b in &c[..4 - pad] {
            n = (n << 6) | val(b)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let ms = 1_750_000_000_123;
        assert_eq!(timestamp(ms), "2025-06-15T15:06:40.123Z");
        assert_eq!(parse_timestamp(&timestamp(ms)), Some(ms));
        assert_eq!(parse_timestamp("2025-06-15T15:06:40Z"), Some(ms - 123));
        assert_eq!(parse_timestamp("2025-06-15T15:06:40.123456Z"), Some(ms));
        assert_eq!(parse_timestamp("2025-06-15 15:06:40Z"), None);
    }

    #[test]
    fn accept_and_base64() {
        assert!(accepts_taxii(Some("application/taxii+json;version=2.1")));
        assert!(accepts_taxii(Some("application/taxii+json")));
        assert!(!accepts_taxii(Some("application/taxii+json;version=2.0")));
        assert!(!accepts_taxii(Some("application/json")));
        assert_eq!(base64_decode("YWxpY2U6cHc=").as_deref(), Some(&b"alice:pw"[..]));
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YQ="), None);
    }

    #[test]
    fn routes_with_and_without_the_trailing_slash() {
        let status = Some(Route::Status("isac".into(), "abc".into()));
        assert_eq!(route("/isac/status/abc/").map(|r| r.0), status);
        assert_eq!(route("/isac/status/abc").map(|r| r.0), status);
        assert_eq!(route("/taxii2").map(|r| r.0), Some(Route::Discovery));
        assert_eq!(route("/isac//").map(|r| r.0), None);
        assert_eq!(route("/").map(|r| r.0), None);
        assert_eq!(route("").map(|r| r.0), None);
    }

    #[test]
    fn the_two_collections_have_distinct_ids() {
        assert_ne!(collection_id("isac"), contributions_id("isac"));
        assert_eq!(
            Collection::of("isac", &contributions_id("isac")),
            Some(Collection::Contributions)
        );
        assert_eq!(Collection::of("other", &contributions_id("isac")), None);
    }

    fn check_envelope(body: &str, expected: Result<Vec<Option<&str>>, u16>) {
        let got = decode_envelope(body.as_bytes())
            .map(|v| {
                v.iter()
                    .map(|p| match p {
                        Posted::Object(o) => o["id"].as_str().map(|_| "ok"),
                        Posted::Refused(d) => d.message.as_deref().map(|_| "refused"),
                    })
                    .collect::<Vec<_>>()
            })
            .map_err(|r| r.status);
        assert_eq!(got, expected, "{body}");
    }

    #[test]
    fn envelopes() {
        check_envelope(r#"{"objects": []}"#, Ok(vec![]));
        check_envelope(
            r#"{"more": false, "objects": [{"type": "sighting", "id": "sighting--1"}, {"id": "x--1"},
               {"type": "x"}, 7]}"#,
            Ok(vec![
                Some("ok"),
                Some("refused"),
                Some("refused"),
                Some("refused"),
            ]),
        );
        check_envelope(r#"{"type": "bundle"}"#, Err(400));
        check_envelope(r#"{"objects": {}}"#, Err(400));
        check_envelope(r#"[{"objects": []}]"#, Err(400));
        check_envelope("{\"objects\": [", Err(400));
        check_envelope("", Err(400));
        let many = format!("{{\"objects\": [{}]}}", vec!["1"; MAX_POST_OBJECTS + 1].join(","));
        check_envelope(&many, Err(400));
        let big = format!(
            "{{\"objects\": [], \"x\": \"{}\"}}",
            "a".repeat(MAX_CONTENT_LENGTH)
        );
        check_envelope(&big, Err(413));
    }

    #[test]
    fn a_status_resource_counts_what_it_lists() {
        let ok = |id: &str| {
            Ok(Detail {
                id: id.into(),
                version: "2025-01-01T00:00:00.000Z".into(),
                message: None,
            })
        };
        let s = status_resource(
            "0f1e",
            1_750_000_000_123,
            &[
                ok("sighting--a"),
                Err(Detail {
                    id: String::new(),
                    version: String::new(),
                    message: Some("no id".into()),
                }),
                ok("indicator--b"),
            ],
        );
        assert_eq!(s["status"], "complete");
        assert_eq!(s["request_timestamp"], "2025-06-15T15:06:40.123Z");
        assert_eq!(
            (s["total_count"].as_u64(), s["success_count"].as_u64()),
            (Some(3), Some(2))
        );
        assert_eq!(
            (s["failure_count"].as_u64(), s["pending_count"].as_u64()),
            (Some(1), Some(0))
        );
        assert_eq!(s["successes"][1]["id"], "indicator--b");
        assert!(s["successes"][0].get("message").is_none());
        assert_eq!(s["failures"][0]["message"], "no id");
        assert!(s.get("pendings").is_none());
    }
}
