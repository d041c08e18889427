//! The TAXII 2.1 client: pulls a collection's STIX objects with an `added_after` bookmark, and
//! adds objects to a collection (for a community's upstream push, `share::upstream`):
//! [`Client::post_objects`], [`Client::status`] and [`Client::versions_present`], which asks a
//! collection's manifest which object versions it already holds.
//!
//! A pure core under a thin shell, like the rest of the collector:
//! - `paging` ([`Paging`]) decides, from each response's envelope and date headers, what to ask
//!   next and which bookmark to store. No I/O, so it is table-tested and property-tested.
//! - `resources` decodes the TAXII resources (discovery, API root, collections, the objects
//!   envelope: [`parse_envelope`]) and checks media types. No I/O; the envelope decoder has a
//!   fuzz target (`fuzz/fuzz_targets/taxii_envelope.rs`).
//! - `client` ([`Client`]) is the shell: ureq over rustls with ring, HTTP Basic, the operator's CA as the only
//!   trust root, a size cap on every body (checked while reading), timeouts, and one clear error
//!   per way a server can say no.
//!
//! [`pull`] is what a scheduled pull runs: every page of objects added since the bookmark,
//! assembled into one STIX bundle and handed to the STIX parser, with the new bookmark. It is
//! all or nothing: an error on any page returns nothing, and the caller stores the batch and the
//! bookmark in one transaction, so a bookmark never moves past objects that were not stored.
//!
//! Architecture invariant: credentials are never logged, shown or put in a URL; plain-text HTTP
//! never leaves the host; redirects are not followed.

mod client;
mod error;
mod paging;
mod resources;
pub(crate) mod timestamp;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use sha1::{Digest, Sha1};

use crate::ingest::{Batch, Defaults, MAX_INGEST_FILE};
use crate::CollectorError;

pub use client::{base64, parse_status, Client, ObjectsPage, Status, StatusDetails};
pub use error::TaxiiError;
pub use paging::{PageInfo, PageRequest, Paging, PagingError};
pub use resources::{
    check_media_type, error_detail, parse_api_root, parse_collections, parse_discovery, parse_envelope,
    ApiRoot, Collection, Discovery, Envelope, TAXII_MEDIA_TYPE,
};
pub use timestamp::Timestamp;

pub(crate) use resources::printable;

/// Checks a TAXII URL the operator gives (`source add`): http or https, a host, and no
/// credentials inside it.
pub fn check_url(url: &str) -> Result<(), TaxiiError> {
    client::parse_url(url).map(|_| ())
}

/// Checks an API root URL the operator configured for a client with a CA file (`has_ca`) or
/// without: what [`check_url`] checks, no query string, and the transport rules (`https://`
/// needs a CA file; plain `http://` only to this host). So a bad setting stops a command
/// before any request is made.
pub fn check_api_root(url: &str, has_ca: bool) -> Result<(), TaxiiError> {
    let root = client::api_root_url(url)?;
    client::check_transport(&root, has_ca).map(|_| ())
}

/// A TAXII collection to pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxiiSource {
    /// The API root's URL, such as `https://taxii.example.org/api1/`. `https://` needs
    /// `ca_file`; `http://` is accepted only to this host (loopback).
    pub api_root: String,
    /// The collection's id, as `GET {api_root}collections/` lists it.
    pub collection: String,
    /// HTTP Basic credentials, if the server wants them.
    pub credentials: Option<Credentials>,
    /// A PEM file whose certificates are the only roots trusted for the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// Size caps, page size and timeouts.
    pub limits: Limits,
}

impl TaxiiSource {
    /// A source with no credentials, no CA file and the default limits.
    pub fn new(api_root: impl Into<String>, collection: impl Into<String>) -> TaxiiSource {
        TaxiiSource {
            api_root: api_root.into(),
            collection: collection.into(),
            credentials: None,
            ca_file: None,
            limits: Limits::default(),
        }
    }

    /// A client for this source's server.
    pub fn client(&self) -> Result<Client, TaxiiError> {
        Client::new(self.credentials.as_ref(), self.ca_file.as_deref(), &self.limits)
    }
}

/// HTTP Basic credentials. Their `Debug` shows neither part.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (no `:`, as RFC 7617 requires).
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// Limits on what one pull may cost. The defaults suit a large feed on a slow link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Objects asked for per page (`limit`); the server may send fewer.
    pub page_size: u32,
    /// Pages read in one pull before giving up: the bound that makes every pull end.
    pub max_pages: u32,
    /// The largest response body, checked while reading.
    pub max_response: u64,
    /// The most body bytes one pull reads in total, checked while reading: the pull becomes one
    /// bundle, so this matches the largest file `ingest` reads.
    pub max_pull: u64,
    /// Time to connect (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time for one whole request, body included.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            page_size: 1000,
            max_pages: 10_000,
            max_response: 64 << 20,
            max_pull: MAX_INGEST_FILE,
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(300),
        }
    }
}

/// What a pull brought back, before translation.
#[derive(Debug, Clone, PartialEq)]
pub struct Pulled {
    /// The collection's objects URL, for messages.
    pub origin: String,
    /// The STIX objects in the order the server sent them (oldest `date_added` first).
    pub objects: Vec<Map<String, Value>>,
    /// The bookmark to store with them.
    pub bookmark: Option<String>,
    /// How many pages it took.
    pub pages: u32,
    /// How many body bytes it read.
    pub bytes: u64,
}

impl Pulled {
    /// The objects as one STIX 2.1 bundle. Its id is derived from the content, so the same
    /// objects make the same bundle.
    pub fn bundle_json(&self) -> String {
        // Serializing a map of JSON values cannot fail (no non-string keys, no I/O).
        let objects = serde_json::to_string(&self.objects).unwrap_or_else(|_| "[]".to_owned());
        let id = crate::uuid::uuid_text(&Sha1::digest(objects.as_bytes()), 5);
        format!(r#"{{"type":"bundle","id":"bundle--{id}","objects":{objects}}}"#)
    }
}

/// Pulls every object `source` added after `bookmark` (all of them without one), across pages.
pub fn pull_objects(source: &TaxiiSource, bookmark: Option<&str>) -> Result<Pulled, TaxiiError> {
    source
        .client()?
        .pull_objects(&source.api_root, &source.collection, bookmark)
}

/// Pulls `source` once: the objects added after `bookmark`, translated, and the bookmark to
/// store with them (unchanged when nothing new arrived).
pub fn pull(
    source: &TaxiiSource,
    bookmark: Option<&str>,
    defaults: &Defaults,
) -> Result<(Batch, Option<String>), CollectorError> {
    let pulled = pull_objects(source, bookmark)?;
    let batch = translate(&pulled, defaults)?;
    Ok((batch, pulled.bookmark))
}

/// The one step from pulled STIX objects to indicators: the STIX 2.1 bundle parser, the same
/// one `ingest` runs on a bundle file. Its errors name the collection's objects URL.
fn translate(pulled: &Pulled, defaults: &Defaults) -> Result<Batch, CollectorError> {
    if pulled.objects.is_empty() {
        return Ok(Batch::default());
    }
    crate::stix::parse_bundle(Path::new(&pulled.origin), &pulled.bundle_json(), defaults)
}

/// Resolves a URL a server gave (an API root in a discovery response, say) against the URL it
/// came from: absolute URLs stay as they are, `/path` keeps the scheme and host, and anything
/// else is relative to the base's directory.
pub fn resolve(base: &str, reference: &str) -> Result<String, TaxiiError> {
    let base_uri = client::parse_url(base)?;
    let origin = format!(
        "{}://{}",
        base_uri.scheme_str().unwrap_or_default(),
        base_uri.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    // RFC 3986 section 3.1: a scheme is a letter, then letters, digits, `+`, `-` or `.`.
    let has_scheme = reference.split_once(':').is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    let resolved = if has_scheme {
        reference.to_owned()
    } else if let Some(rest) = reference.strip_prefix("//") {
        format!("{}://{rest}", base_uri.scheme_str().unwrap_or_default())
    } else if reference.starts_with('/') {
        format!("{origin}{reference}")
    } else {
        let path = base_uri.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{origin}{dir}{reference}")
    };
    client::parse_url(&resolved)?;
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resolves_api_roots() {
        let base = "https://taxii.example:8443/taxii2/";
        for (reference, want) in [
            ("https://other.example/api1/", "https://other.example/api1/"),
            ("/api1/", "https://taxii.example:8443/api1/"),
            ("api1/", "https://taxii.example:8443/taxii2/api1/"),
            ("//mirror.example/api/", "https://mirror.example/api/"),
        ] {
            assert_eq!(resolve(base, reference).unwrap(), want, "{reference}");
        }
        assert!(resolve(base, "ftp://x/").is_err());
    }

    #[test]
    fn credentials_never_show() {
        let s = TaxiiSource {
            credentials: Some(Credentials {
                username: "analyst".into(),
                password: "hunter2".into(),
            }),
            ..TaxiiSource::new("https://h/api1/", "c")
        };
        let shown = format!("{s:?} {:?}", s.client().map(|c| format!("{c:?}")));
        assert!(
            !shown.contains("hunter2") && !shown.contains("analyst"),
            "{shown}"
        );
    }

    #[test]
    fn bundles_are_stable_and_well_formed() {
        let obj: Map<String, Value> =
            serde_json::from_str(r#"{"type": "indicator", "id": "indicator--1"}"#).unwrap();
        let pulled = Pulled {
            origin: "http://127.0.0.1/api1/collections/c/objects/".into(),
            objects: vec![obj],
            bookmark: None,
            pages: 1,
            bytes: 0,
        };
        let a = pulled.bundle_json();
        assert_eq!(a, pulled.bundle_json());
        let v: Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["type"], "bundle");
        assert_eq!(v["objects"][0]["id"], "indicator--1");
        let id = v["id"].as_str().unwrap();
        assert_eq!(id.len(), "bundle--".len() + 36, "{id}");
    }
}
