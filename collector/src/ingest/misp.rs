//! MISP events and feeds: attributes and objects in, indicators out.
//!
//! A MISP event holds attributes (one typed value each, such as an `sha256` or an `ip-dst`) and
//! objects (several attributes that describe one thing, such as a `file`). MISP's `to_ids` flag
//! is the analyst's statement that a value is meant for automated detection; everything else
//! (links, comments, descriptions) is context. Only `to_ids` values become indicators, and every
//! attribute or object that does not become one is listed in [`Batch::unsupported`] with its
//! reason, never dropped silently.
//!
//! What becomes what:
//!
//! - `md5`, `sha1`, `sha256`: a file hash.
//! - `filename|md5`, `filename|sha1`, `filename|sha256`, `malware-sample`: a file hash, without
//!   the name. The hash alone identifies the content; adding the name would miss every renamed
//!   copy, which is exactly what malware does.
//! - `ip-src`, `ip-dst` (an address or a CIDR network), `ip-src|port`, `ip-dst|port`: a remote
//!   address; the port is dropped (a connection to that address on any port is worth reporting).
//! - `filename`: an exact file name. Which sources may put names on endpoints is the source
//!   policy's decision at publish time, not ingest's.
//! - `file` objects: ONE indicator per object, from its `to_ids` md5, sha1, sha256,
//!   size-in-bytes and filename attributes, all of which must hold for the same file. An object
//!   that comes down to one hash (with or without its size) is the plain file-hash indicator,
//!   which is the one encoding of that content; anything more is a compound (`FileAll`). An
//!   object with neither a hash nor a name is unsupported: a size alone would match half a disk.
//! - Other objects (`domain-ip`, `ip-port`, ...): each attribute is taken as if it stood alone,
//!   because MISP's `to_ids` flag is per attribute. File hashes and names in them are
//!   unsupported: in a `pe-section` or `x509` object a hash does not describe a whole file.
//! - `domain`, `hostname`, `url`: unsupported, counted (an endpoint sees addresses, not names).
//! - Anything else: unsupported as `misp: type <t>`.
//!
//! Metadata: the attribute or object `uuid` gives the id (`indicator--<uuid>`); `tlp:` tags give
//! the TLP (an attribute's own tags override the event's; among several, the strictest wins);
//! the event's `threat_level_id` gives the severity; `timestamp` is the modification time;
//! `Orgc` names the creator; `deleted` attributes and objects are revoked; `distribution` is
//! kept with "inherit" resolved.
//!
//! Positions: serde reads the JSON straight into typed structs, and each attribute's value is
//! checked while it is read, so a malformed value (an MD5 that is not 32 hex digits, a `to_ids`
//! that is not a boolean) is reported with the line and column where the attribute ends.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::path::Path;

use picket_proto::{
    FileCondition, Hash, HashKind, Indicator, IpNet, Meta, NamePattern, Observable, Severity, Tlp,
    MAX_CONDITIONS, MAX_TEXT,
};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;

use super::{derived_id, Batch, Defaults, Item, Unsupported, MAX_INGEST_FILE};
use crate::CollectorError;

/// MISP's `distribution` value that means "as the event (or object) above".
const INHERIT: u8 = 5;

/// Whether `text` looks like MISP event JSON: an object with an `Event`, `response`,
/// `Attribute`, `Object`, `Orgc` or `threat_level_id` key, or an array whose first element is
/// one. Reads no further than the first telling key, so it is cheap on MISP files, and it decides
/// on truncated files too, so that their error comes from the MISP parser with a position.
pub fn looks_like_misp(text: &str) -> bool {
    let mut verdict = None;
    let mut de = serde_json::Deserializer::from_str(text);
    // The probe stops the parse with an error as soon as it has decided; the error is moot.
    let _ = Probe {
        verdict: &mut verdict,
        top: true,
    }
    .deserialize(&mut de);
    verdict == Some(true)
}

/// Parses MISP event JSON: `{"Event": {...}}`, a bare event object, `{"response": [...]}` (the
/// REST search output) or an array of events. All or nothing: a malformed value anywhere is an
/// error naming the file, the line and the column.
pub fn parse_event(path: &Path, text: &str, defaults: &Defaults) -> Result<Batch, CollectorError> {
    let events = read_events(path, text)?;
    let mut batch = Batch::default();
    for event in &events {
        convert(event, defaults, &mut batch);
    }
    batch.items = newest_per_id(batch.items);
    Ok(batch)
}

/// Parses a MISP feed's `manifest.json`: the uuids of the events it lists, sorted. Each key
/// must be a UUID, since it names a file next to the manifest (a key such as `../x` must never
/// reach the file system).
pub fn parse_manifest(path: &Path, text: &str) -> Result<Vec<String>, CollectorError> {
    let map: BTreeMap<ManifestKey, IgnoredAny> =
        serde_json::from_str(text).map_err(|e| json_error(path, &e))?;
    Ok(map.into_keys().map(|k| k.0).collect())
}

/// Reads a MISP feed directory: `manifest.json`, then `<uuid>.json` for each event it lists.
/// A thin shell over [`parse_manifest`] and [`parse_event`]: each file is capped at
/// [`MAX_INGEST_FILE`] bytes and must be UTF-8; an event file the manifest names but the
/// directory lacks is an error naming it, as is an event file holding another event. All or
/// nothing, like a single file.
pub fn parse_feed_dir(dir: &Path, defaults: &Defaults) -> Result<Batch, CollectorError> {
    let manifest_path = dir.join("manifest.json");
    let manifest = read_text(&manifest_path)?;
    let mut batch = Batch::default();
    for uuid in parse_manifest(&manifest_path, &manifest)? {
        let path = dir.join(format!("{uuid}.json"));
        let text = read_text(&path).map_err(|e| match e {
            CollectorError::Io { path, error } if error.kind() == io::ErrorKind::NotFound => {
                CollectorError::Io {
                    path,
                    error: io::Error::new(io::ErrorKind::NotFound, "listed in manifest.json, but missing"),
                }
            }
            other => other,
        })?;
        let events = read_events(&path, &text)?;
        let holds = |e: &RawEvent| e.uuid.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(&uuid));
        if !matches!(events.as_slice(), [e] if holds(e)) {
            let held: Vec<&str> = events
                .iter()
                .map(|e| e.uuid.as_deref().unwrap_or("(no uuid)"))
                .collect();
            return Err(CollectorError::Parse {
                path,
                line: 1,
                problem: format!(
                    "manifest.json lists event {uuid}, but this file holds [{}]",
                    held.join(", ")
                ),
            });
        }
        for event in &events {
            convert(event, defaults, &mut batch);
        }
    }
    batch.items = newest_per_id(batch.items);
    Ok(batch)
}

/// Reads a file of at most [`MAX_INGEST_FILE`] bytes as UTF-8.
fn read_text(path: &Path) -> Result<String, CollectorError> {
    let file = File::open(path).map_err(CollectorError::io(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_INGEST_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(CollectorError::io(path))?;
    if bytes.len() as u64 > MAX_INGEST_FILE {
        return Err(CollectorError::Parse {
            path: path.to_owned(),
            line: 1,
            problem: format!("more than the {MAX_INGEST_FILE} bytes accepted"),
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        CollectorError::Parse {
            path: path.to_owned(),
            line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
            problem: "not valid UTF-8".into(),
        }
    })
}

/// Reads the events of one file, unwrapping `{"Event": ...}` and `{"response": [...]}`.
fn read_events(path: &Path, text: &str) -> Result<Vec<RawEvent>, CollectorError> {
    let structure = |problem: String| CollectorError::Parse {
        path: path.to_owned(),
        line: 1,
        problem,
    };
    let top: Vec<RawEvent> = if text.trim_start().starts_with('[') {
        let list: Vec<Map<RawEvent>> = serde_json::from_str(text).map_err(|e| json_error(path, &e))?;
        list.into_iter().map(|m| m.0).collect()
    } else {
        let Map(event) = serde_json::from_str(text).map_err(|e| json_error(path, &e))?;
        vec![event]
    };
    let mut out = Vec::with_capacity(top.len());
    for mut event in top {
        match (event.wrapped.take(), event.response.take()) {
            (Some(_), Some(_)) => return Err(structure("both \"Event\" and \"response\" at the top".into())),
            (Some(inner), None) => out.push(bare(*inner).map_err(structure)?),
            (None, Some(list)) => {
                for mut e in list {
                    match e.wrapped.take() {
                        Some(inner) if e.response.is_none() => out.push(bare(*inner).map_err(structure)?),
                        None => out.push(bare(e).map_err(structure)?),
                        Some(_) => return Err(structure("a \"response\" element is not an event".into())),
                    }
                }
            }
            (None, None) => {
                if event.uuid.is_none() && event.attributes.is_empty() && event.objects.is_empty() {
                    return Err(structure(
                        "not a MISP event: no \"Event\", \"uuid\", \"Attribute\" or \"Object\"".into(),
                    ));
                }
                out.push(event);
            }
        }
    }
    Ok(out)
}

/// An event that must not wrap another.
fn bare(event: RawEvent) -> Result<RawEvent, String> {
    if event.wrapped.is_some() || event.response.is_some() {
        return Err("an event wraps another event".into());
    }
    Ok(event)
}

/// A serde_json error as a parse error at its line, with the column in the text.
fn json_error(path: &Path, e: &serde_json::Error) -> CollectorError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    CollectorError::Parse {
        path: path.to_owned(),
        line: e.line().max(1),
        problem: format!("column {}: {message}", e.column()),
    }
}

/// The event-wide values every item inherits.
struct Context<'a> {
    defaults: &'a Defaults,
    event: &'a RawEvent,
    tlp: Option<Tlp>,
    severity: Severity,
}

impl Context<'_> {
    fn item(
        &self,
        id: String,
        observable: Observable,
        tlp: Option<Tlp>,
        modified: Option<i64>,
        distribution: Option<u8>,
        revoked: bool,
    ) -> Item {
        Item {
            indicator: Indicator {
                id,
                observable,
                meta: Meta {
                    confidence: self.defaults.confidence,
                    severity: self.severity,
                    tlp: tlp.or(self.tlp).unwrap_or(self.defaults.tlp),
                    valid_until: None,
                    source: self.defaults.source.clone(),
                },
            },
            modified: modified.or(self.event.timestamp),
            valid_from: None,
            revoked,
            created_by: self
                .event
                .orgc
                .as_ref()
                .and_then(|o| o.name.clone())
                .filter(|n| !n.is_empty()),
            distribution,
        }
    }
}

/// Turns one event into items and unsupported entries.
fn convert(event: &RawEvent, defaults: &Defaults, out: &mut Batch) {
    let cx = Context {
        defaults,
        event,
        tlp: tlp_of(&event.tags),
        severity: match event.threat_level_id {
            Some(1) => Severity::High,
            Some(2) => Severity::Medium,
            Some(3) => Severity::Low,
            _ => defaults.severity,
        },
    };
    let place_of = |what: &str, n: usize| match &event.uuid {
        Some(u) => format!("event {u} {what} {n}"),
        None => format!("{what} {n}"),
    };
    for (n, attr) in event.attributes.iter().enumerate() {
        let distribution = inherit(attr.distribution, event.distribution);
        standalone(
            &cx,
            attr,
            None,
            distribution,
            false,
            || place_of("attribute", n),
            out,
        );
    }
    for (n, object) in event.objects.iter().enumerate() {
        let distribution = inherit(object.distribution, event.distribution);
        if object.name == "file" {
            file_object(&cx, object, distribution, || place_of("object", n), out);
        } else {
            for (m, attr) in object.attributes.iter().enumerate() {
                let distribution = inherit(attr.distribution, distribution);
                let name = shorten(&object.name, 64);
                standalone(
                    &cx,
                    attr,
                    Some((name.as_str(), object.timestamp)),
                    distribution,
                    object.deleted,
                    || format!("{} attribute {m}", place_of("object", n)),
                    out,
                );
            }
        }
    }
}

/// One attribute on its own (at the top of the event, or in an object that is not a `file`).
fn standalone(
    cx: &Context<'_>,
    attr: &Attribute,
    object: Option<(&str, Option<i64>)>,
    distribution: Option<u8>,
    object_deleted: bool,
    place: impl Fn() -> String,
    out: &mut Batch,
) {
    let observable = match &attr.value {
        Value::NotIds => Err("misp: to_ids false".to_owned()),
        Value::Other(reason) => Err(reason.clone()),
        Value::Size(_) => Err(format!("misp: type {}", attr.kind)),
        Value::Hash(_) | Value::Name(_) if object.is_some() => Err(format!(
            "misp: {} in a {} object",
            attr.kind,
            object.map_or("", |o| o.0)
        )),
        Value::Hash(hash) => Ok(Observable::FileHash {
            hash: hash.clone(),
            size: None,
        }),
        Value::Name(name) => Ok(Observable::FileName(NamePattern {
            text: name.clone(),
            glob: false,
        })),
        Value::Addr(net) => Ok(Observable::RemoteAddr(*net)),
    };
    match observable {
        Ok(observable) => {
            let id = attr
                .uuid
                .as_ref()
                .map_or_else(|| derived_id(&observable), |u| format!("indicator--{u}"));
            let modified = attr.timestamp.or(object.and_then(|o| o.1));
            let revoked = attr.deleted || object_deleted;
            out.items
                .push(cx.item(id, observable, attr.tlp, modified, distribution, revoked));
        }
        Err(reason) => out.unsupported.push(Unsupported {
            id: attr
                .uuid
                .as_ref()
                .map_or_else(place, |u| format!("indicator--{u}")),
            reason,
        }),
    }
}

/// A `file` object: one indicator whose conditions must all hold for the same file.
fn file_object(
    cx: &Context<'_>,
    object: &Object,
    distribution: Option<u8>,
    place: impl Fn() -> String,
    out: &mut Batch,
) {
    let mut conds = Vec::new();
    let mut unmatchable = None;
    let mut tlp = None;
    for attr in object.attributes.iter().filter(|a| !a.deleted) {
        let cond = match &attr.value {
            Value::NotIds => continue,
            Value::Hash(h) => FileCondition::Hash(h.clone()),
            Value::Size(s) => FileCondition::Size(*s),
            Value::Name(n) => FileCondition::Name(NamePattern {
                text: n.clone(),
                glob: false,
            }),
            Value::Addr(_) | Value::Other(_) => {
                unmatchable.get_or_insert_with(|| shorten(&attr.kind, 64));
                continue;
            }
        };
        conds.push(cond);
        tlp = tlp.max(attr.tlp);
    }
    conds.sort();
    conds.dedup();
    let hashes = conds
        .iter()
        .filter(|c| matches!(c, FileCondition::Hash(_)))
        .count();
    let names = conds
        .iter()
        .filter(|c| matches!(c, FileCondition::Name(_)))
        .count();
    let reason = if hashes == 0 && names == 0 {
        Some(
            if unmatchable.is_none() && !conds.iter().any(|c| matches!(c, FileCondition::Size(_))) {
                "misp: to_ids false".to_owned()
            } else {
                "misp: file object without md5, sha1, sha256 or filename".to_owned()
            },
        )
    } else if let (0, Some(kind)) = (hashes, &unmatchable) {
        // Without a hash, leaving out a condition would make the indicator broader than the
        // analyst's: refuse rather than mistranslate. With a hash, the hash is the identity.
        Some(format!(
            "misp: file object without a hash holds {kind}, which is not matchable"
        ))
    } else if names > 1 {
        Some("misp: file object with several file names".to_owned())
    } else if conds.len() > MAX_CONDITIONS {
        Some(format!(
            "misp: file object with more than {MAX_CONDITIONS} conditions"
        ))
    } else {
        None
    };
    let id = object.uuid.as_ref().map(|u| format!("indicator--{u}"));
    if let Some(reason) = reason {
        out.unsupported.push(Unsupported {
            id: id.unwrap_or_else(place),
            reason,
        });
        return;
    }
    let observable = match conds.as_slice() {
        [FileCondition::Hash(hash)] => Observable::FileHash {
            hash: hash.clone(),
            size: None,
        },
        [FileCondition::Hash(hash), FileCondition::Size(size)] => Observable::FileHash {
            hash: hash.clone(),
            size: Some(*size),
        },
        _ => Observable::FileAll(conds),
    };
    let id = id.unwrap_or_else(|| derived_id(&observable));
    let modified = object
        .timestamp
        .or_else(|| object.attributes.iter().filter_map(|a| a.timestamp).max());
    out.items
        .push(cx.item(id, observable, tlp, modified, distribution, object.deleted));
}

/// Keeps one item per id: the newest by `modified`, the later one on a tie.
fn newest_per_id(items: Vec<Item>) -> Vec<Item> {
    let mut by_id: BTreeMap<String, Item> = BTreeMap::new();
    for item in items {
        match by_id.get(&item.indicator.id) {
            Some(old) if old.modified > item.modified => {}
            _ => {
                by_id.insert(item.indicator.id.clone(), item);
            }
        }
    }
    by_id.into_values().collect()
}

/// A distribution that says "inherit" (or nothing) takes its parent's.
fn inherit(own: Option<u8>, parent: Option<u8>) -> Option<u8> {
    match own {
        Some(INHERIT) | None => parent,
        own => own,
    }
}

/// The strictest `tlp:` tag, if any.
fn tlp_of(tags: &[Tag]) -> Option<Tlp> {
    tags.iter()
        .filter_map(|t| {
            let name = t.name.trim();
            let prefix = name.get(..4)?;
            if prefix.eq_ignore_ascii_case("tlp:") {
                Tlp::parse(name)
            } else {
                None
            }
        })
        .max()
}

/// What a `to_ids` attribute's value is, checked when the attribute is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Value {
    /// `to_ids` is false: context, not an indicator.
    #[default]
    NotIds,
    /// A file digest.
    Hash(Hash),
    /// A file name without a path.
    Name(String),
    /// An address or network.
    Addr(IpNet),
    /// A file size.
    Size(u64),
    /// Something Picket does not match, with the reason counted.
    Other(String),
}

/// Checks a `to_ids` value against its type. An error is a malformed value (the whole file is
/// refused); [`Value::Other`] is a well-formed value of a type Picket does not match.
fn classify(kind: &str, value: &str) -> Result<Value, String> {
    let v = value.trim();
    let hash = |hk: HashKind, text: &str| -> Result<Value, String> {
        let digits = hk.digest_len() * 2;
        let text = text.trim();
        if text.len() != digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{kind} value {:?} is not a {} of {digits} hex digits",
                shorten(text, 80),
                hk.name()
            ));
        }
        let hash = Hash::from_hex(&text.to_ascii_lowercase())
            .ok_or_else(|| format!("{kind} value {:?} is not hex", shorten(text, 80)))?;
        Ok(Value::Hash(hash))
    };
    let second = |text: &'_ str| -> Result<String, String> {
        text.rsplit_once('|').map(|(_, h)| h.to_owned()).ok_or_else(|| {
            format!(
                "{kind} value {:?} has no \"|\" between its two parts",
                shorten(text, 80)
            )
        })
    };
    let first = |text: &'_ str| -> Result<String, String> {
        text.rsplit_once('|').map(|(a, _)| a.to_owned()).ok_or_else(|| {
            format!(
                "{kind} value {:?} has no \"|\" between its two parts",
                shorten(text, 80)
            )
        })
    };
    let addr = |text: &str| -> Result<Value, String> {
        IpNet::parse(text.trim()).map(Value::Addr).ok_or_else(|| {
            format!(
                "{kind} value {:?} is not an IP address or CIDR network",
                shorten(text, 80)
            )
        })
    };
    match kind {
        "md5" => hash(HashKind::Md5, v),
        "sha1" => hash(HashKind::Sha1, v),
        "sha256" => hash(HashKind::Sha256, v),
        "filename|md5" | "malware-sample" => hash(HashKind::Md5, &second(v)?),
        "filename|sha1" => hash(HashKind::Sha1, &second(v)?),
        "filename|sha256" => hash(HashKind::Sha256, &second(v)?),
        "ip-src" | "ip-dst" => addr(v),
        "ip-src|port" | "ip-dst|port" => addr(&first(v)?),
        "filename" => {
            if v.is_empty() {
                Err("empty filename".into())
            } else if v.len() > MAX_TEXT {
                Err(format!("a filename of {} bytes (at most {MAX_TEXT})", v.len()))
            } else if v.contains(['/', '\\']) {
                Ok(Value::Other("misp: filename holds a path".into()))
            } else {
                Ok(Value::Name(v.to_owned()))
            }
        }
        "size-in-bytes" => v
            .parse::<u64>()
            .map(Value::Size)
            .map_err(|_| format!("size-in-bytes value {:?} is not a whole number", shorten(v, 80))),
        "domain" | "hostname" | "url" => Ok(Value::Other(format!(
            "misp: {kind} is not matchable on an endpoint"
        ))),
        other => Ok(Value::Other(format!("misp: type {}", shorten(other, 64)))),
    }
}

/// At most `max` characters of `s`, marked when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() > max {
        format!("{}...", s.chars().take(max).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// Whether `s` is a UUID in its 8-4-4-4-12 hex form (any case).
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// An event as MISP writes it. `Event` and `response` are the wrappers MISP puts around events;
/// they are fields here so that one parse reads every shape.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawEvent {
    #[serde(rename = "Event", deserialize_with = "object")]
    wrapped: Option<Box<RawEvent>>,
    #[serde(deserialize_with = "optional_list")]
    response: Option<Vec<RawEvent>>,
    #[serde(deserialize_with = "uuid")]
    uuid: Option<String>,
    #[serde(deserialize_with = "int")]
    timestamp: Option<i64>,
    #[serde(deserialize_with = "distribution")]
    distribution: Option<u8>,
    #[serde(deserialize_with = "int")]
    threat_level_id: Option<i64>,
    #[serde(rename = "Orgc", deserialize_with = "object")]
    orgc: Option<Org>,
    #[serde(rename = "Tag", deserialize_with = "list")]
    tags: Vec<Tag>,
    #[serde(rename = "Attribute", deserialize_with = "list")]
    attributes: Vec<Attribute>,
    #[serde(rename = "Object", deserialize_with = "list")]
    objects: Vec<Object>,
}

/// The organisation that created an event.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Org {
    #[serde(deserialize_with = "optional_text")]
    name: Option<String>,
}

/// A tag; only `tlp:` tags mean anything here.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Tag {
    #[serde(deserialize_with = "text")]
    name: String,
}

/// An object: a named group of attributes.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Object {
    #[serde(deserialize_with = "uuid")]
    uuid: Option<String>,
    #[serde(deserialize_with = "text")]
    name: String,
    #[serde(deserialize_with = "int")]
    timestamp: Option<i64>,
    #[serde(deserialize_with = "distribution")]
    distribution: Option<u8>,
    #[serde(deserialize_with = "flag")]
    deleted: bool,
    #[serde(rename = "Attribute", deserialize_with = "list")]
    attributes: Vec<Attribute>,
}

/// An attribute as MISP writes it, before its value is checked.
#[derive(Default, Deserialize)]
#[serde(default)]
struct RawAttribute {
    #[serde(deserialize_with = "uuid")]
    uuid: Option<String>,
    #[serde(rename = "type", deserialize_with = "text")]
    kind: String,
    #[serde(deserialize_with = "text")]
    value: String,
    #[serde(deserialize_with = "flag")]
    to_ids: bool,
    #[serde(deserialize_with = "flag")]
    deleted: bool,
    #[serde(deserialize_with = "int")]
    timestamp: Option<i64>,
    #[serde(deserialize_with = "distribution")]
    distribution: Option<u8>,
    #[serde(rename = "Tag", deserialize_with = "list")]
    tags: Vec<Tag>,
}

/// An attribute with its value checked and its own TLP worked out.
#[derive(Debug, Default)]
struct Attribute {
    uuid: Option<String>,
    kind: String,
    value: Value,
    deleted: bool,
    timestamp: Option<i64>,
    distribution: Option<u8>,
    tlp: Option<Tlp>,
}

impl<'de> Deserialize<'de> for Attribute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Attribute, D::Error> {
        let raw = RawAttribute::deserialize(d)?;
        let value = if raw.to_ids {
            classify(&raw.kind, &raw.value).map_err(|problem| match &raw.uuid {
                Some(u) => de::Error::custom(format!("attribute {u}: {problem}")),
                None => de::Error::custom(problem),
            })?
        } else {
            Value::NotIds
        };
        Ok(Attribute {
            tlp: tlp_of(&raw.tags),
            uuid: raw.uuid,
            kind: raw.kind,
            value,
            deleted: raw.deleted,
            timestamp: raw.timestamp,
            distribution: raw.distribution,
        })
    }
}

/// A manifest key: the uuid of an event, which names its file.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ManifestKey(String);

impl<'de> Deserialize<'de> for ManifestKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ManifestKey, D::Error> {
        let s = String::deserialize(d)?;
        if !is_uuid(&s) {
            return Err(de::Error::custom(format!(
                "manifest key {:?} is not an event uuid",
                shorten(&s, 80)
            )));
        }
        Ok(ManifestKey(s))
    }
}

/// A value that must be a JSON object. serde's derive would also take an array of the fields
/// in order, which no MISP tool writes: that is a wrong type here, and an error. Reading each
/// attribute inside this wrapper is also what puts the position of the attribute's end on an
/// error found in its value.
struct Map<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Map<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Map<T>, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }

        d.deserialize_map(ObjectVisitor(PhantomData)).map(Map)
    }
}

/// An object, or `null` as absent.
fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Map<T>>::deserialize(d)?.map(|m| m.0))
}

/// An array of objects, or `null` as absent.
fn optional_list<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<Map<T>>>::deserialize(d)?.map(|v| v.into_iter().map(|m| m.0).collect()))
}

/// An array of objects; `null` as empty (MISP writes `"Tag": null` as readily as `[]`).
fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(optional_list(d)?.unwrap_or_default())
}

/// A string; MISP exports also write numbers where a string belongs (`"value": 1024`).
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(d.deserialize_any(TextVisitor)?.unwrap_or_default())
}

/// A string, or `null` as absent.
fn optional_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(TextVisitor)
}

/// A uuid, lower-cased; `null` or `""` as absent.
fn uuid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match d.deserialize_any(TextVisitor)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) if is_uuid(&s) => Ok(Some(s.to_ascii_lowercase())),
        Some(s) => Err(de::Error::invalid_value(Unexpected::Str(&s), &"a uuid")),
    }
}

/// A whole number, written as a number or a string of digits; `null` or `""` as absent.
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(IntVisitor)
}

/// A MISP distribution level, 0 to 5.
fn distribution<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    match d.deserialize_any(IntVisitor)? {
        None => Ok(None),
        Some(n) => u8::try_from(n)
            .ok()
            .filter(|&n| n <= INHERIT)
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("distribution {n} is not one of 0 to 5"))),
    }
}

/// A boolean, written as `true`/`false`, `0`/`1`, or those as strings; `null` as false.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(FlagVisitor)
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<String>, E> {
        Ok(Some(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Option<String>, E> {
        Ok(Some(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<String>, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<String>, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
}

struct IntVisitor;

impl Visitor<'_> for IntVisitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number or a string of digits")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<i64>, E> {
        Ok(Some(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<i64>, E> {
        i64::try_from(v)
            .map(Some)
            .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<i64>, E> {
        let t = v.trim();
        if t.is_empty() {
            return Ok(None);
        }
        t.parse()
            .map(Some)
            .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<i64>, E> {
        Ok(None)
    }
}

struct FlagVisitor;

impl Visitor<'_> for FlagVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean (true, false, 0 or 1)")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        match v {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        match v {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" => Ok(true),
            "0" | "false" | "" => Ok(false),
            _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// Reads top-level keys until one tells MISP from anything else, then stops the parse.
struct Probe<'a> {
    verdict: &'a mut Option<bool>,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "Event" | "response" | "Attribute" | "Object" | "Orgc" | "threat_level_id" => {
                    *self.verdict = Some(true);
                    return Err(de::Error::custom("decided"));
                }
                // STIX bundles and TAXII envelopes.
                "type" | "objects" | "spec_version" => {
                    *self.verdict = Some(false);
                    return Err(de::Error::custom("decided"));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.top {
            seq.next_element_seed(Probe {
                verdict: self.verdict,
                top: false,
            })?;
        }
        Err(de::Error::custom("decided"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::canonical_value;
    use proptest::prelude::*;
    use serde_json::json;

    const MD5: &str = "44d88612fea8a8f36de82e1278abb02f";
    const SHA1: &str = "3395856ce81f2b7382dee72602f798b642f14140";
    const SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
    const EVENT: &str = "5a3c2fcd-8328-42bb-a95e-4f4402de0b81";

    fn defaults() -> Defaults {
        Defaults {
            source: "misp-test".into(),
            tlp: Tlp::Amber,
            confidence: 60,
            severity: Severity::Medium,
        }
    }

    fn uuid(n: u32) -> String {
        format!("00000000-0000-4000-8000-{n:012}")
    }

    fn attr(n: u32, kind: &str, value: &str, to_ids: bool) -> serde_json::Value {
        json!({"uuid": uuid(n), "type": kind, "value": value, "to_ids": to_ids})
    }

    fn parse_json(v: &serde_json::Value) -> Result<Batch, CollectorError> {
        parse_event(Path::new("/feeds/e.json"), &v.to_string(), &defaults())
    }

    /// The one item or unsupported entry an event with one attribute yields, as text.
    fn one(attribute: serde_json::Value) -> Result<String, String> {
        let batch = parse_json(&json!({"Event": {"uuid": EVENT, "Attribute": [attribute]}}))
            .map_err(|e| e.to_string())?;
        match (batch.items.as_slice(), batch.unsupported.as_slice()) {
            ([item], []) => Ok(canonical_value(&item.indicator.observable)),
            ([], [u]) => Ok(format!("unsupported: {}", u.reason)),
            _ => panic!("{batch:?}"),
        }
    }

    #[test]
    fn attribute_types_table() {
        let cases: &[(&str, &str, bool, Result<String, &str>)] = &[
            ("md5", MD5, true, Ok(format!("file-hash:md5:{MD5}"))),
            (
                "md5",
                &MD5.to_uppercase(),
                true,
                Ok(format!("file-hash:md5:{MD5}")),
            ),
            ("sha1", SHA1, true, Ok(format!("file-hash:sha1:{SHA1}"))),
            ("sha256", SHA256, true, Ok(format!("file-hash:sha256:{SHA256}"))),
            (
                "filename|md5",
                &format!("eicar.com|{MD5}"),
                true,
                Ok(format!("file-hash:md5:{MD5}")),
            ),
            (
                "filename|sha1",
                &format!("a|b.exe|{SHA1}"),
                true,
                Ok(format!("file-hash:sha1:{SHA1}")),
            ),
            (
                "filename|sha256",
                &format!("x.exe|{SHA256}"),
                true,
                Ok(format!("file-hash:sha256:{SHA256}")),
            ),
            (
                "malware-sample",
                &format!("x.zip|{MD5}"),
                true,
                Ok(format!("file-hash:md5:{MD5}")),
            ),
            (
                "ip-dst",
                "198.51.100.7",
                true,
                Ok("remote-addr:198.51.100.7".into()),
            ),
            (
                "ip-src",
                "198.51.100.7/24",
                true,
                Ok("remote-addr:198.51.100.0/24".into()),
            ),
            (
                "ip-dst|port",
                "198.51.100.7|443",
                true,
                Ok("remote-addr:198.51.100.7".into()),
            ),
            (
                "ip-src|port",
                "2001:db8::1|8080",
                true,
                Ok("remote-addr:2001:db8::1".into()),
            ),
            (
                "filename",
                "invoice.pdf.exe",
                true,
                Ok("file-name:FileName(NamePattern { text: \"invoice.pdf.exe\", glob: false })".into()),
            ),
            (
                "filename",
                "C:\\Users\\x\\evil.exe",
                true,
                Ok("unsupported: misp: filename holds a path".into()),
            ),
            (
                "domain",
                "evil.example",
                true,
                Ok("unsupported: misp: domain is not matchable on an endpoint".into()),
            ),
            (
                "hostname",
                "a.evil.example",
                true,
                Ok("unsupported: misp: hostname is not matchable on an endpoint".into()),
            ),
            (
                "url",
                "http://evil.example/x",
                true,
                Ok("unsupported: misp: url is not matchable on an endpoint".into()),
            ),
            (
                "regkey|value",
                "HKLM\\x|y",
                true,
                Ok("unsupported: misp: type regkey|value".into()),
            ),
            (
                "size-in-bytes",
                "68",
                true,
                Ok("unsupported: misp: type size-in-bytes".into()),
            ),
            // Not for detection: context, whatever its type or value.
            (
                "md5",
                "not even hex",
                false,
                Ok("unsupported: misp: to_ids false".into()),
            ),
            (
                "link",
                "https://example.org/report",
                false,
                Ok("unsupported: misp: to_ids false".into()),
            ),
            // Malformed values of indicator types refuse the file.
            (
                "md5",
                SHA1,
                true,
                Err("md5 value \"3395856ce81f2b7382dee72602f798b642f14140\" is not a md5 of 32 hex digits"),
            ),
            (
                "sha256",
                &format!("{}zz", &SHA256[..62]),
                true,
                Err("is not a sha256 of 64 hex digits"),
            ),
            ("sha1", "\u{FFFD}", true, Err("is not a sha1 of 40 hex digits")),
            (
                "filename|md5",
                MD5,
                true,
                Err("has no \"|\" between its two parts"),
            ),
            (
                "ip-dst",
                "198.51.100.300",
                true,
                Err("is not an IP address or CIDR network"),
            ),
            (
                "ip-dst",
                "evil.example",
                true,
                Err("is not an IP address or CIDR network"),
            ),
            ("ip-dst|port", "198.51.100.7:443", true, Err("has no \"|\"")),
            ("filename", "  ", true, Err("empty filename")),
        ];
        for (kind, value, to_ids, want) in cases {
            let got = one(attr(1, kind, value, *to_ids));
            match (&got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{kind} {value}"),
                (Err(g), Err(w)) => {
                    assert!(g.starts_with("/feeds/e.json:1: column "), "{g}");
                    assert!(g.contains(w), "{kind} {value}: {g}");
                    assert!(g.contains(&uuid(1)), "the attribute is named: {g}");
                }
                _ => panic!("{kind} {value}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn tlp_tags_table() {
        let tags = |names: &[&str]| -> Vec<Tag> { names.iter().map(|n| Tag { name: (*n).into() }).collect() };
        let cases: &[(&[&str], Option<Tlp>)] = &[
            (&[], None),
            (&["tlp:white"], Some(Tlp::Clear)),
            (&["TLP:CLEAR"], Some(Tlp::Clear)),
            (
                &["tlp:green", "osint:source-type=\"blog-post\""],
                Some(Tlp::Green),
            ),
            (&["tlp:amber+strict"], Some(Tlp::AmberStrict)),
            (&["tlp:green", "tlp:red", "tlp:amber"], Some(Tlp::Red)),
            // Not TLP tags: a bare colour, another namespace, an unknown level.
            (&["red"], None),
            (&["misp:tlp=\"red\""], None),
            (&["tlp:ex:chr"], None),
            (&["tl"], None),
            (&["é"], None),
        ];
        for (names, want) in cases {
            assert_eq!(tlp_of(&tags(names)), *want, "{names:?}");
        }
    }

    #[test]
    fn event_metadata_reaches_every_item() {
        let event = json!({"Event": {
            "uuid": EVENT,
            "timestamp": "1513948642",
            "distribution": "1",
            "threat_level_id": "1",
            "Orgc": {"name": "CIRCL", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"},
            "Tag": [{"name": "tlp:green"}, {"name": "type:OSINT"}],
            "Attribute": [
                // Inherits everything from the event.
                {"uuid": uuid(1), "type": "md5", "value": MD5, "to_ids": true, "distribution": "5"},
                // Its own tags override the event's (here, less strict), its own time and level.
                {"uuid": uuid(2), "type": "sha1", "value": SHA1, "to_ids": "1", "timestamp": 1600000000,
                 "distribution": 0, "Tag": [{"name": "tlp:clear"}], "deleted": true},
                {"uuid": uuid(3), "type": "ip-dst", "value": "198.51.100.7", "to_ids": 1,
                 "Tag": [{"name": "tlp:amber"}, {"name": "tlp:red"}]}
            ]
        }});
        let batch = parse_json(&event).unwrap();
        assert!(batch.unsupported.is_empty(), "{:?}", batch.unsupported);
        let by_id: BTreeMap<&str, &Item> = batch.items.iter().map(|i| (i.indicator.id.as_str(), i)).collect();
        let a = by_id[format!("indicator--{}", uuid(1)).as_str()];
        assert_eq!(a.indicator.meta.tlp, Tlp::Green);
        assert_eq!(a.indicator.meta.severity, Severity::High);
        assert_eq!(a.indicator.meta.confidence, 60);
        assert_eq!(a.indicator.meta.source, "misp-test");
        assert_eq!(a.modified, Some(1513948642));
        assert_eq!(a.distribution, Some(1));
        assert_eq!(a.created_by.as_deref(), Some("CIRCL"));
        assert!(!a.revoked);
        let b = by_id[format!("indicator--{}", uuid(2)).as_str()];
        assert_eq!(b.indicator.meta.tlp, Tlp::Clear);
        assert_eq!(b.modified, Some(1600000000));
        assert_eq!(b.distribution, Some(0));
        assert!(b.revoked);
        let c = by_id[format!("indicator--{}", uuid(3)).as_str()];
        assert_eq!(c.indicator.meta.tlp, Tlp::Red);
    }

    #[test]
    fn without_tags_or_metadata_the_defaults_apply() {
        let batch = parse_json(&json!({"Attribute": [attr(1, "md5", MD5, true)], "Tag": null})).unwrap();
        let item = &batch.items[0];
        assert_eq!(item.indicator.meta.tlp, Tlp::Amber);
        assert_eq!(item.indicator.meta.severity, Severity::Medium);
        assert_eq!(
            (item.modified, item.distribution, item.created_by.as_deref()),
            (None, None, None)
        );
    }

    #[test]
    fn an_attribute_without_uuid_gets_the_derived_id() {
        let batch =
            parse_json(&json!({"Event": {"Attribute": [{"type": "md5", "value": MD5, "to_ids": true}]}}))
                .unwrap();
        let item = &batch.items[0];
        assert_eq!(item.indicator.id, derived_id(&item.indicator.observable));
    }

    /// What a `file` object becomes, from its attributes.
    fn file_object_outcome(attributes: serde_json::Value) -> String {
        let event = json!({"Event": {"uuid": EVENT, "Object": [
            {"uuid": uuid(9), "name": "file", "timestamp": "7", "Attribute": attributes}
        ]}});
        let batch = parse_json(&event).unwrap();
        match (batch.items.as_slice(), batch.unsupported.as_slice()) {
            ([item], []) => {
                assert_eq!(item.indicator.id, format!("indicator--{}", uuid(9)));
                assert_eq!(item.modified, Some(7));
                canonical_value(&item.indicator.observable)
            }
            ([], [u]) => {
                assert_eq!(u.id, format!("indicator--{}", uuid(9)));
                format!("unsupported: {}", u.reason)
            }
            _ => panic!("{batch:?}"),
        }
    }

    #[test]
    fn file_objects_table() {
        let a = |kind: &str, value: &str| json!({"type": kind, "object_relation": kind, "value": value, "to_ids": true});
        let context = |kind: &str, value: &str| json!({"type": kind, "value": value, "to_ids": false});
        let md5 = Hash::from_hex(MD5).unwrap();
        let sha1 = Hash::from_hex(SHA1).unwrap();
        let name = |t: &str| {
            FileCondition::Name(NamePattern {
                text: t.into(),
                glob: false,
            })
        };
        let all = |c: Vec<FileCondition>| canonical_value(&Observable::FileAll(c));
        let cases: Vec<(serde_json::Value, String)> = vec![
            // One hash is the plain file-hash indicator; with its size, a sized one.
            (
                json!([a("sha1", SHA1), context("text", "Malicious")]),
                format!("file-hash:sha1:{SHA1}"),
            ),
            (
                json!([a("md5", MD5), a("size-in-bytes", "68")]),
                format!("file-hash:md5:{MD5}:68"),
            ),
            // Name and hash: a compound, as existing_event.json's objects are.
            (
                json!([
                    a("filename", "Bulletin.doc"),
                    a("sha1", SHA1),
                    context("text", "Malicious")
                ]),
                all(vec![FileCondition::Hash(sha1.clone()), name("Bulletin.doc")]),
            ),
            // Several hashes of different kinds: all must hold.
            (
                json!([a("md5", MD5), a("sha1", SHA1), a("size-in-bytes", "68")]),
                all(vec![
                    FileCondition::Hash(md5.clone()),
                    FileCondition::Hash(sha1.clone()),
                    FileCondition::Size(68),
                ]),
            ),
            // The same hash twice is one condition.
            (
                json!([a("md5", MD5), a("md5", &MD5.to_uppercase())]),
                format!("file-hash:md5:{MD5}"),
            ),
            // A name and a size without a hash is still a compound.
            (
                json!([a("filename", "evil.exe"), a("size-in-bytes", "68")]),
                all(vec![FileCondition::Size(68), name("evil.exe")]),
            ),
            // With a hash, conditions Picket cannot match (ssdeep, a path) are left out: the hash
            // is the file's identity.
            (
                json!([
                    a("sha1", SHA1),
                    a("ssdeep", "3:a:b"),
                    a("filename", "C:\\x\\evil.exe")
                ]),
                format!("file-hash:sha1:{SHA1}"),
            ),
            // A deleted attribute is no longer part of the object.
            (
                json!([a("sha1", SHA1), {"type": "filename", "value": "old.exe", "to_ids": true, "deleted": true}]),
                format!("file-hash:sha1:{SHA1}"),
            ),
            // Without a hash, leaving a condition out would broaden the indicator: refused.
            (
                json!([a("filename", "evil.exe"), a("ssdeep", "3:a:b")]),
                "unsupported: misp: file object without a hash holds ssdeep, which is not matchable".into(),
            ),
            // A size alone would match every file of that size.
            (
                json!([a("size-in-bytes", "68"), a("sha512", "ab")]),
                "unsupported: misp: file object without md5, sha1, sha256 or filename".into(),
            ),
            (
                json!([context("sha1", SHA1), context("filename", "x")]),
                "unsupported: misp: to_ids false".into(),
            ),
            (json!([]), "unsupported: misp: to_ids false".into()),
            (
                json!([a("filename", "a.exe"), a("filename", "b.exe")]),
                "unsupported: misp: file object with several file names".into(),
            ),
        ];
        for (attributes, want) in cases {
            assert_eq!(file_object_outcome(attributes.clone()), want, "{attributes}");
        }
    }

    #[test]
    fn file_object_metadata() {
        let event = json!({"Event": {"uuid": EVENT, "distribution": "3", "Tag": [{"name": "tlp:green"}], "Object": [
            {"uuid": uuid(1), "name": "file", "distribution": "5", "deleted": "1", "Attribute": [
                {"type": "md5", "value": MD5, "to_ids": true, "timestamp": "11"},
                {"type": "filename", "value": "x.exe", "to_ids": true, "timestamp": "12",
                 "Tag": [{"name": "tlp:amber"}]},
            ]},
            {"uuid": uuid(2), "name": "file", "distribution": 2, "Attribute": [
                {"type": "md5", "value": MD5, "to_ids": true, "Tag": [{"name": "tlp:clear"}]},
            ]},
        ]}});
        let batch = parse_json(&event).unwrap();
        let [first, second] = batch.items.as_slice() else {
            panic!("{batch:?}")
        };
        assert_eq!(first.indicator.meta.tlp, Tlp::Amber);
        assert_eq!(first.distribution, Some(3));
        assert_eq!(first.modified, Some(12));
        assert!(first.revoked);
        assert_eq!(second.indicator.meta.tlp, Tlp::Clear);
        assert_eq!(second.distribution, Some(2));
        assert!(!second.revoked);
    }

    #[test]
    fn other_objects_give_their_attributes_one_by_one() {
        let event = json!({"Event": {"uuid": EVENT, "Object": [
            {"uuid": uuid(1), "name": "domain-ip", "timestamp": "5", "deleted": true, "Attribute": [
                attr(2, "domain", "evil.example", true),
                attr(3, "ip-dst", "198.51.100.7", true),
                attr(4, "text", "resolved on Monday", false),
            ]},
            {"uuid": uuid(5), "name": "pe-section", "Attribute": [attr(6, "md5", MD5, true)]},
        ]}});
        let batch = parse_json(&event).unwrap();
        let [ip] = batch.items.as_slice() else {
            panic!("{batch:?}")
        };
        assert_eq!(ip.indicator.id, format!("indicator--{}", uuid(3)));
        assert_eq!(
            canonical_value(&ip.indicator.observable),
            "remote-addr:198.51.100.7"
        );
        assert_eq!(ip.modified, Some(5));
        assert!(ip.revoked, "the object was deleted");
        let reasons: Vec<(&str, &str)> = batch
            .unsupported
            .iter()
            .map(|u| (u.id.as_str(), u.reason.as_str()))
            .collect();
        let id = |n| format!("indicator--{}", uuid(n));
        assert_eq!(
            reasons,
            vec![
                (id(2).as_str(), "misp: domain is not matchable on an endpoint"),
                (id(4).as_str(), "misp: to_ids false"),
                (id(6).as_str(), "misp: md5 in a pe-section object"),
            ]
        );
    }

    #[test]
    fn every_wrapper_shape_reads() {
        let ev = |n: u32| json!({"uuid": uuid(100 + n), "Attribute": [attr(n, "md5", MD5, true)]});
        let shapes = [
            (json!({"Event": ev(1)}), 1),
            (ev(1), 1),
            (
                json!({"response": [{"Event": ev(1)}, {"Event": ev(2)}, ev(3)]}),
                3,
            ),
            (json!([{"Event": ev(1)}, {"Event": ev(2)}]), 2),
            (json!([]), 0),
            (json!({"Event": {"uuid": EVENT}}), 0),
        ];
        for (shape, n) in shapes {
            let batch = parse_json(&shape).unwrap();
            assert_eq!(batch.items.len(), n, "{shape}");
        }
    }

    #[test]
    fn structural_errors() {
        let cases = [
            (json!({}), "not a MISP event"),
            (json!({"info": "x"}), "not a MISP event"),
            (
                json!({"Event": {"Event": {"uuid": EVENT}}}),
                "wraps another event",
            ),
            (json!({"Event": {"uuid": EVENT}, "response": []}), "both"),
            (json!({"Event": []}), "invalid type: sequence"),
            (
                json!({"Event": {"Attribute": {}}}),
                "invalid type: map, expected a sequence",
            ),
            (
                json!({"Event": {"Attribute": [{"type": "md5", "value": MD5, "to_ids": "maybe"}]}}),
                "a boolean",
            ),
            (
                json!({"Event": {"Attribute": [{"type": ["md5"], "value": MD5}]}}),
                "invalid type: sequence, expected a string",
            ),
            (json!({"Event": {"timestamp": "yesterday"}}), "a whole number"),
            (
                json!({"Event": {"distribution": "7"}}),
                "distribution 7 is not one of 0 to 5",
            ),
            (json!({"Event": {"uuid": "../../etc/passwd"}}), "expected a uuid"),
            (json!({"Event": {"Tag": [{"name": {}}]}}), "expected a string"),
            (json!(["x"]), "invalid type: string"),
            (json!(7), "invalid type: integer"),
        ];
        for (input, want) in cases {
            let err = parse_json(&input).unwrap_err().to_string();
            assert!(err.starts_with("/feeds/e.json:1: "), "{err}");
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn errors_carry_the_line_and_column() {
        let text = format!(
            "{{\n  \"Event\": {{\n    \"Attribute\": [\n      {{\"type\": \"md5\", \"value\": \"{MD5}\", \"to_ids\": true}},\n      {{\"uuid\": \"{}\", \"type\": \"md5\",\n       \"value\": \"xyz\", \"to_ids\": true}}\n    ]\n  }}\n}}\n",
            uuid(2)
        );
        let err = parse_event(Path::new("e.json"), &text, &defaults())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("e.json:6: column "), "{err}");
        assert!(
            err.contains(&format!("attribute {}: md5 value \"xyz\"", uuid(2))),
            "{err}"
        );
        // Truncated: the position is the end of the text.
        let good = text.replace("xyz", MD5);
        assert_eq!(
            parse_event(Path::new("e.json"), &good, &defaults())
                .unwrap()
                .items
                .len(),
            2
        );
        let cut = &good[..good.len() - 8];
        let err = parse_event(Path::new("e.json"), cut, &defaults())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("e.json:7: column "), "{err}");
        assert!(err.contains("EOF"), "{err}");
    }

    #[test]
    fn duplicate_ids_keep_the_newest() {
        let a = |t: &str, v: &str| json!({"uuid": uuid(1), "type": "ip-dst", "value": v, "to_ids": true, "timestamp": t});
        let batch = parse_json(&json!({"Attribute": [a("20", "198.51.100.2"), a("10", "198.51.100.1"), a("30", "198.51.100.3"), a("5", "198.51.100.4")]})).unwrap();
        let [item] = batch.items.as_slice() else {
            panic!("{batch:?}")
        };
        assert_eq!(
            canonical_value(&item.indicator.observable),
            "remote-addr:198.51.100.3"
        );
    }

    #[test]
    fn probe_table() {
        let cases = [
            ("{\"Event\": {}}", true),
            ("{\"Attribute\": []}", true),
            ("{\"id\": \"1\", \"info\": \"x\", \"Object\": []}", true),
            ("{\"response\": []}", true),
            ("[{\"Event\": {\"uuid\": \"x\"}}]", true),
            // Truncated after the telling key: still MISP, so the MISP parser names the position.
            ("{\"Event\": {\"Attribute\": [", true),
            ("{\"type\": \"bundle\", \"Event\": {}}", false),
            ("{\"id\": \"bundle--1\", \"objects\": []}", false),
            ("{\"more\": false, \"objects\": []}", false),
            ("{}", false),
            ("[]", false),
            ("[[{\"Event\": {}}]]", false),
            ("{\"info\": \"x\"", false),
            ("not json", false),
            ("", false),
        ];
        for (text, want) in cases {
            assert_eq!(looks_like_misp(text), want, "{text}");
        }
    }

    #[test]
    fn manifest_keys_must_be_uuids() {
        let path = Path::new("feed/manifest.json");
        let ok = format!("{{\"{}\": {{\"info\": \"a\"}}, \"{}\": {{}}}}", uuid(2), uuid(1));
        assert_eq!(parse_manifest(path, &ok).unwrap(), vec![uuid(1), uuid(2)]);
        let bad = "{\n  \"../../etc/passwd\": {}\n}";
        let err = parse_manifest(path, bad).unwrap_err().to_string();
        assert!(err.starts_with("feed/manifest.json:2: column "), "{err}");
        assert!(err.contains("is not an event uuid"), "{err}");
        assert!(parse_manifest(path, "[]").is_err());
    }

    fn misp_value() -> impl Strategy<Value = serde_json::Value> {
        let kind = prop::sample::select(vec![
            "md5",
            "sha1",
            "sha256",
            "filename|md5",
            "ip-dst",
            "ip-src|port",
            "filename",
            "domain",
            "size-in-bytes",
            "text",
        ]);
        let value = prop::sample::select(vec![
            MD5.to_owned(),
            SHA1.to_owned(),
            format!("x|{SHA256}"),
            "198.51.100.7".to_owned(),
            "198.51.100.7|80".to_owned(),
            "evil.exe".to_owned(),
            "68".to_owned(),
            "".to_owned(),
            "\u{FFFD}".to_owned(),
        ]);
        let flag = prop::sample::select(vec![json!(true), json!(false), json!("1"), json!(0), json!(null)]);
        let tag = prop::sample::select(vec!["tlp:red", "tlp:clear", "tlp:amber+strict", "x"]);
        let attribute = (kind, value, flag.clone(), flag, prop::option::of(tag), 0u32..4).prop_map(
            |(k, v, to_ids, deleted, tag, n)| {
                let mut a =
                    json!({"type": k, "value": v, "to_ids": to_ids, "deleted": deleted, "uuid": uuid(n)});
                if let Some(t) = tag {
                    a["Tag"] = json!([{"name": t}]);
                }
                a
            },
        );
        let attrs = prop::collection::vec(attribute, 0..6);
        let objects = prop::collection::vec(
            (prop::sample::select(vec!["file", "domain-ip"]), attrs.clone())
                .prop_map(|(name, a)| json!({"name": name, "Attribute": a})),
            0..3,
        );
        (attrs, objects).prop_map(|(a, o)| json!({"Event": {"uuid": EVENT, "Attribute": a, "Object": o}}))
    }

    proptest! {
        #[test]
        fn random_text_never_panics(text in "\\PC*") {
            let _ = looks_like_misp(&text);
            let _ = parse_event(Path::new("p.json"), &text, &defaults());
            let _ = parse_manifest(Path::new("manifest.json"), &text);
        }

        #[test]
        fn json_shaped_text_never_panics(text in "[\\[\\]{}\":,0-9a-z \\\\]{0,80}") {
            let _ = looks_like_misp(&text);
            let _ = parse_event(Path::new("p.json"), &text, &defaults());
        }

        /// Generated events: never a panic, every item is a valid record, and every attribute
        /// and object is accounted for (an item or an unsupported entry, or a shared id).
        #[test]
        fn generated_events_are_accounted_for(event in misp_value()) {
            if let Ok(batch) = parse_json(&event) {
                for item in &batch.items {
                    prop_assert!(picket_proto::Record::from_indicator(&item.indicator).is_ok(), "{:?}", item);
                }
                let e = &event["Event"];
                let standalone = e["Attribute"].as_array().map_or(0, Vec::len);
                let objects = e["Object"].as_array().map_or(0, |o| {
                    o.iter().map(|o| if o["name"] == "file" { 1 } else { o["Attribute"].as_array().map_or(0, Vec::len) }).sum()
                });
                // Ids repeat (uuid(0..4)), and only the newest of a repeated id is kept.
                prop_assert!(batch.items.len() + batch.unsupported.len() <= standalone + objects);
                prop_assert!(standalone + objects == 0 || !batch.items.is_empty() || !batch.unsupported.is_empty());
            }
        }
    }
}
