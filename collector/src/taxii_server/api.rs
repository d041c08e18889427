//! The TAXII 2.1 server's request core: a parsed request, the member it authenticated as and
//! the objects a community may see in, a response out. No I/O: the shell ([`super`]) reads the
//! objects from the share policy, keeps the object history and `next` tokens, and writes bytes.
//!
//! Invariants: every response but a 401 is for an authenticated member; a member sees an API
//! root only if `[[taxii.member]]` lists its community; a `next` token serves only the member it
//! was issued to, for the collection it was issued for, and authorisation is checked again when
//! it is used.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// The TAXII 2.1 media type: every response body is of this type.
pub const TAXII_MEDIA: &str = "application/taxii+json;version=2.1";
/// The STIX 2.1 media type of the objects served.
pub const STIX_MEDIA: &str = "application/stix+json;version=2.1";
/// The most objects one page holds, whatever `limit` asks.
pub const MAX_PAGE: usize = 100;
/// The one collection of each API root.
pub const COLLECTION_TITLE: &str = "sightings";

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
    /// `GET /<root>/collections/<id>/objects/`.
    Objects(String, String),
    /// `GET /<root>/collections/<id>/manifest/`.
    Manifest(String, String),
    /// `GET /<root>/collections/<id>/objects/<object-id>/`.
    Object(String, String, String),
    /// `GET /<root>/collections/<id>/objects/<object-id>/versions/`.
    Versions(String, String, String),
    /// `GET /<root>/status/<id>/` (under the root named): no status resources exist, since
    /// nothing can be posted.
    Status(String),
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
            | Route::Status(r) => Some(r),
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
/// that names no resource.
pub fn route(target: &str) -> Option<(Route, Vec<(String, String)>)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = path.strip_prefix('/')?.strip_suffix('/')?;
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
        [root, "status", _] => Route::Status(s(root)),
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

/// The collection id of a community's API root: a UUID derived from its name (the same on
/// every start), in the form TAXII asks for.
pub fn collection_id(community: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("picket taxii collection\0{community}").as_bytes(),
    );
    crate::uuid::uuid_text(d.as_ref(), 5)
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
        "description": format!("Sightings shared with community {root}"),
        "versions": [TAXII_MEDIA],
        "max_content_length": 0,
    }))
}

/// The collection resource of community `root`.
pub fn collection(root: &str) -> Value {
    json!({
        "id": collection_id(root),
        "title": COLLECTION_TITLE,
        "description": format!("Sightings shared with community {root}; read-only"),
        "can_read": true,
        "can_write": false,
        "media_types": [STIX_MEDIA],
    })
}

/// The collections resource of community `root`.
pub fn collections(root: &str) -> Response {
    Response::ok(json!({ "collections": [collection(root)] }))
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

/// Reads the query parameters into a [`Filter`]; a 400 names the parameter that is wrong.
/// `allowed` lists the parameters this endpoint takes.
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
}
