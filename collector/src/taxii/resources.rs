//! TAXII 2.1 resources as they arrive: discovery, API root, collections and the objects
//! envelope, with their decoders and the media-type check.
//!
//! Pure: bytes in, typed values or a description of what is wrong out. Unknown properties are
//! ignored rather than rejected, because TAXII 2.1 allows custom properties on every resource.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The TAXII 2.1 media type: what Picket asks for and what it accepts.
pub const TAXII_MEDIA_TYPE: &str = "application/taxii+json;version=2.1";

/// The discovery resource (`GET /taxii2/`, TAXII 2.1 section 4.1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Discovery {
    /// The server's name.
    pub title: String,
    /// What the server is.
    #[serde(default)]
    pub description: Option<String>,
    /// Whom to contact.
    #[serde(default)]
    pub contact: Option<String>,
    /// The default API root's URL, if the server names one.
    #[serde(default)]
    pub default: Option<String>,
    /// The API roots' URLs, as the server wrote them (absolute, or relative to the discovery
    /// URL: see [`resolve`](super::resolve)).
    #[serde(default)]
    pub api_roots: Vec<String>,
}

/// An API root's information (`GET {api_root}/`, TAXII 2.1 section 4.2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiRoot {
    /// Its name.
    pub title: String,
    /// What it holds.
    #[serde(default)]
    pub description: Option<String>,
    /// The TAXII versions it speaks, as media types.
    #[serde(default)]
    pub versions: Vec<String>,
    /// The largest request body it accepts, in bytes.
    #[serde(default)]
    pub max_content_length: Option<u64>,
}

/// A collection (`GET {api_root}/collections/`, TAXII 2.1 section 5.2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Collection {
    /// Its id: what a TAXII source names.
    pub id: String,
    /// Its name.
    pub title: String,
    /// What it holds.
    #[serde(default)]
    pub description: Option<String>,
    /// A human-friendly alternative to the id.
    #[serde(default)]
    pub alias: Option<String>,
    /// Whether these credentials may read its objects.
    pub can_read: bool,
    /// Whether these credentials may add objects.
    pub can_write: bool,
    /// The media types of its objects.
    #[serde(default)]
    pub media_types: Vec<String>,
}

#[derive(Deserialize)]
struct Collections {
    #[serde(default)]
    collections: Vec<Collection>,
}

/// The envelope of an objects response (TAXII 2.1). Every property is optional:
/// an empty result may be `{}`, as medallion sends.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Envelope {
    /// Whether the server has more objects for this query.
    #[serde(default)]
    pub more: bool,
    /// The token for the next page, if the server pages that way.
    #[serde(default)]
    pub next: Option<String>,
    /// The STIX objects. Each must be a JSON object; what is inside is the STIX parser's job.
    #[serde(default)]
    pub objects: Vec<Map<String, Value>>,
}

/// Decodes an objects envelope. The caller has already capped `bytes` in size.
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope, String> {
    decode(bytes, "envelope")
}

/// Decodes a discovery resource. The caller has already capped `bytes` in size.
pub fn parse_discovery(bytes: &[u8]) -> Result<Discovery, String> {
    decode(bytes, "discovery resource")
}

/// Decodes an API root resource. The caller has already capped `bytes` in size.
pub fn parse_api_root(bytes: &[u8]) -> Result<ApiRoot, String> {
    decode(bytes, "API root resource")
}

/// Decodes a collections resource. The caller has already capped `bytes` in size.
pub fn parse_collections(bytes: &[u8]) -> Result<Vec<Collection>, String> {
    decode::<Collections>(bytes, "collections resource").map(|c| c.collections)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    // serde would also fill a struct from a JSON array; every TAXII resource is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(format!("not a TAXII 2.1 {what} (a JSON array, not an object)"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            format!("not JSON ({e})")
        } else {
            format!("not a TAXII 2.1 {what} ({e})")
        }
    })
}

/// Checks a response's `Content-Type`: TAXII 2.1 JSON, with `version=2.1` or no version (which
/// TAXII reads as the latest). Returns what is wrong otherwise.
pub fn check_media_type(content_type: Option<&str>) -> Result<(), String> {
    let Some(ct) = content_type else {
        return Err("the response has no Content-Type; a TAXII 2.1 server sends \
                    application/taxii+json;version=2.1"
            .to_owned());
    };
    let mut parts = ct.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    let wrong = || {
        let hint = if essence.eq_ignore_ascii_case("application/vnd.oasis.taxii+json") {
            " (that is TAXII 2.0; Picket speaks TAXII 2.1)"
        } else {
            ""
        };
        format!(
            "the response is {:?}, not {TAXII_MEDIA_TYPE}{hint}",
            printable(ct, 100)
        )
    };
    if !essence.eq_ignore_ascii_case("application/taxii+json") {
        return Err(wrong());
    }
    for param in parts {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("version") && value.trim().trim_matches('"') != "2.1" {
            return Err(wrong());
        }
    }
    Ok(())
}

/// A TAXII error message's title and description (TAXII 2.1), if the body is one,
/// made safe to print.
pub fn error_detail(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct TaxiiErrorMessage {
        title: Option<String>,
        description: Option<String>,
    }
    let message: TaxiiErrorMessage = serde_json::from_slice(body).ok()?;
    let text = match (message.title, message.description) {
        (Some(t), Some(d)) => format!("{t}: {d}"),
        (Some(t), None) => t,
        (None, Some(d)) => d,
        (None, None) => return None,
    };
    Some(printable(&text, 300))
}

/// `text` with control characters replaced and cut to `max` characters: server-controlled text
/// goes into error messages and logs, where it must not forge lines or flood the terminal.
pub(crate) fn printable(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn media_types() {
        for ok in [
            "application/taxii+json;version=2.1",
            "application/taxii+json; version=2.1",
            "Application/TAXII+JSON;Version=\"2.1\"",
            "application/taxii+json",
            "application/taxii+json;version=2.1;charset=utf-8",
        ] {
            assert_eq!(check_media_type(Some(ok)), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("application/json", "not application/taxii+json;version=2.1"),
            ("text/html; charset=utf-8", "text/html"),
            ("application/taxii+json;version=2.0", "version=2.0"),
            ("application/vnd.oasis.taxii+json; version=2.0", "TAXII 2.0"),
            ("application/stix+json;version=2.1", "stix"),
        ] {
            let e = check_media_type(Some(bad)).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(check_media_type(None).unwrap_err().contains("no Content-Type"));
    }

    #[test]
    fn envelopes() {
        let e =
            parse_envelope(br#"{"more": true, "next": "n1", "objects": [{"id": "x--1"}], "x": 1}"#).unwrap();
        assert!(e.more);
        assert_eq!(e.next.as_deref(), Some("n1"));
        assert_eq!(e.objects.len(), 1);
        // medallion's empty result.
        assert_eq!(parse_envelope(b"{}").unwrap(), Envelope::default());
        for (bad, says) in [
            (&b"<html>"[..], "not JSON"),
            (b"{\"objects\": [", "not JSON"),
            (b"[]", "not a TAXII 2.1 envelope"),
            (b"{\"objects\": [1]}", "not a TAXII 2.1 envelope"),
            (b"{\"more\": \"yes\"}", "not a TAXII 2.1 envelope"),
            (b"\xff\xfe", "not JSON"),
        ] {
            let e = parse_envelope(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn resources() {
        let d = parse_discovery(br#"{"title": "t", "api_roots": ["https://h/api1/", "/api2/"]}"#).unwrap();
        assert_eq!(d.api_roots.len(), 2);
        let r = parse_api_root(
            br#"{"title": "a", "versions": ["application/taxii+json;version=2.1"], "max_content_length": 9}"#,
        )
        .unwrap();
        assert_eq!(r.max_content_length, Some(9));
        let c = parse_collections(
            br#"{"collections": [{"id": "c1", "title": "C", "can_read": true, "can_write": false}]}"#,
        )
        .unwrap();
        assert_eq!(c[0].id, "c1");
        assert!(parse_collections(b"{}").unwrap().is_empty());
        assert!(parse_collections(br#"{"collections": [{"id": "c1"}]}"#).is_err());
    }

    #[test]
    fn error_details_are_printable() {
        assert_eq!(
            error_detail(br#"{"title": "ProcessingError", "description": "Collection 'x' not found."}"#)
                .as_deref(),
            Some("ProcessingError: Collection 'x' not found.")
        );
        assert_eq!(error_detail(b"Unauthorized Access"), None);
        let long = format!(r#"{{"title": "a\nb{}"}}"#, "x".repeat(400));
        let d = error_detail(long.as_bytes()).unwrap();
        assert!(
            d.starts_with("a?b") && d.ends_with('…') && d.chars().count() == 301,
            "{d}"
        );
    }
}
