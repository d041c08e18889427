//! STIX 2.1 in: bundles (and TAXII envelopes, and lone objects) parsed into indicators.
//!
//! Pure: text in, a [`Batch`] or an error naming the file, the line and the object out. The
//! work is in three parts:
//!
//! - this module reads the JSON: the objects of a bundle, the indicators among them with their
//!   metadata (validity, revocation, confidence, author, TLP markings), and keeps the newest
//!   version of each indicator id;
//! - [`parse_pattern`] parses a STIX pattern into an AST ([`Pattern`]), which prints back to
//!   canonical pattern text;
//! - [`translate`] turns an AST into Picket observables, or gives the [`Reason`] it cannot.
//!
//! The supported subset and every reason are documented for operators in `docs/stix.md`.
//!
//! # What becomes what
//!
//! Only `indicator` objects are ingested; other objects (malware, relationships, identities,
//! sightings, observed data, ...) are read no further than their `type`, except marking
//! definitions, which are read for TLP. An indicator becomes one [`Item`] per branch of its
//! pattern (ids `<stix id>/<n>` when there are several, the plain STIX id when there is one),
//! or, if its pattern is not translatable, one [`Unsupported`] entry with the reason. An
//! indicator is never half-translated.
//!
//! - `valid_from` → [`Item::valid_from`], `valid_until` → [`Meta::valid_until`], `modified` →
//!   [`Item::modified`], `revoked` → [`Item::revoked`], `created_by_ref` → [`Item::created_by`].
//! - `confidence` (0 to 100) → [`Meta::confidence`]; absent, the source's default.
//! - TLP: the strictest TLP among the object's `object_marking_refs`, and among its
//!   `granular_markings` whose selectors cover a property Picket carries (`pattern`,
//!   `valid_until`, ...; a marking on the description only does not travel). TLP 1.0 and 2.0
//!   marking definition ids are known; a bundle may also define its own TLP marking definitions.
//!   No TLP marking: the source's default.
//! - Severity: STIX has none; the source's default.
//! - Several versions of one id (different `modified`): the newest is kept, whatever the order.
//!
//! # Errors
//!
//! A file that is not JSON, or whose structure is not STIX (an `objects` that is not a list, an
//! object without a string `type`, an indicator without an indicator id or a pattern, a
//! property of the wrong type, a timestamp that is not one, a confidence outside 0 to 100) is
//! an error naming the line, the column and the object: ingest is all or nothing per file. A
//! pattern that does not parse is not an error of the file: the indicator is unsupported, with
//! the parser's message as its reason.

mod pattern;
mod timestamp;
mod translate;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use picket_proto::{Indicator, Meta, Tlp};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

pub use pattern::{
    parse_pattern, Comparison, Literal, ObjectPath, Observation, Operator, Pattern, PatternError, Qualifier,
    Step, Test, MAX_DEPTH, MAX_PATTERN_BYTES,
};
pub use translate::{translate, translate_pattern, Reason, MAX_BRANCHES};

use crate::ingest::{Batch, Defaults, Item, Unsupported};
use crate::CollectorError;
use timestamp::{parse_timestamp, Instant};

/// The TLP marking definitions of TLP 1.0 (STIX 2.1's own) and TLP 2.0 (the property
/// extension `extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d`).
pub const TLP_MARKINGS: [(&str, Tlp); 9] = [
    (
        "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
        Tlp::Clear,
    ),
    (
        "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
        Tlp::Green,
    ),
    (
        "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
        Tlp::Amber,
    ),
    (
        "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
        Tlp::Red,
    ),
    (
        "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
        Tlp::Clear,
    ),
    (
        "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
        Tlp::Green,
    ),
    (
        "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
        Tlp::Amber,
    ),
    (
        "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
        Tlp::AmberStrict,
    ),
    (
        "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
        Tlp::Red,
    ),
];

/// The TLP 2.0 property extension's id.
const TLP2_EXTENSION: &str = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d";

/// The indicator properties Picket carries onto endpoints or uses: a granular marking on any
/// of them marks the indicator.
const CARRIED: [&str; 9] = [
    "id",
    "pattern",
    "pattern_type",
    "valid_from",
    "valid_until",
    "confidence",
    "revoked",
    "created_by_ref",
    "modified",
];

/// Whether `text` is a STIX document: a JSON object whose `type` is `bundle`, or a lone STIX
/// object (its `id` is `<type>--...`). Reads no further than it must, and tolerates a document
/// that breaks off later (so that a truncated bundle reaches [`parse_bundle`] and gets an error
/// with its position).
pub fn is_stix(text: &str) -> bool {
    let mut head = Head::default();
    let mut de = serde_json::Deserializer::from_str(text);
    // An early stop is an error by design: what was seen is in `head`.
    let _ = HeadSeed(&mut head).deserialize(&mut de);
    match head.kind.as_deref() {
        Some("bundle") => true,
        Some(t) => head
            .id
            .as_deref()
            .and_then(|id| id.strip_prefix(t))
            .is_some_and(|rest| rest.starts_with("--")),
        None => false,
    }
}

#[derive(Default)]
struct Head {
    kind: Option<String>,
    id: Option<String>,
}

struct HeadSeed<'h>(&'h mut Head);

impl<'de> DeserializeSeed<'de> for HeadSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeadSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "type" => self.0.kind = Some(map.next_value()?),
                "id" => self.0.id = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            if self.0.kind.as_deref() == Some("bundle") || (self.0.kind.is_some() && self.0.id.is_some()) {
                return Err(de::Error::custom("enough"));
            }
        }
        Ok(())
    }
}

/// The top of a document: a bundle (`type` and `objects`), a TAXII envelope (`objects`), or a
/// lone object (`type`).
#[derive(Deserialize)]
struct Top<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    objects: Option<&'a RawValue>,
}

/// The properties of an object Picket reads, each kept as the raw JSON it was written as, so
/// that an error can name its line and nothing is converted for objects that are skipped.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    modified: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pattern: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pattern_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    valid_from: Option<&'a RawValue>,
    #[serde(borrow, default)]
    valid_until: Option<&'a RawValue>,
    #[serde(borrow, default)]
    revoked: Option<&'a RawValue>,
    #[serde(borrow, default)]
    confidence: Option<&'a RawValue>,
    #[serde(borrow, default)]
    created_by_ref: Option<&'a RawValue>,
    #[serde(borrow, default)]
    object_marking_refs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    granular_markings: Option<&'a RawValue>,
    #[serde(borrow, default)]
    definition_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    definition: Option<&'a RawValue>,
    #[serde(borrow, default)]
    extensions: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Granular {
    #[serde(default)]
    marking_ref: Option<String>,
    #[serde(default)]
    selectors: Vec<String>,
}

/// One indicator object, read and checked.
#[derive(Debug)]
struct Parsed {
    id: String,
    modified: Option<Instant>,
    valid_from: Option<Instant>,
    valid_until: Option<Instant>,
    revoked: bool,
    confidence: Option<u8>,
    created_by: Option<String>,
    pattern: String,
    pattern_type: Option<String>,
    markings: Vec<String>,
}

/// Where errors point: the file, and the text that every raw value borrows from.
struct Ctx<'t> {
    path: &'t Path,
    text: &'t str,
}

impl Ctx<'_> {
    /// The 1-based line and byte column where `part` (a slice of the text) starts.
    fn position(&self, part: &str) -> (usize, usize) {
        let offset = (part.as_ptr() as usize)
            .saturating_sub(self.text.as_ptr() as usize)
            .min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = offset - before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
        (line, column)
    }

    fn error(&self, part: &str, problem: String) -> CollectorError {
        let (line, column) = self.position(part);
        CollectorError::Parse {
            path: self.path.to_owned(),
            line,
            problem: format!("{problem} (column {column})"),
        }
    }

    /// A serde_json error found while reading `part`, placed in the whole text.
    fn json_error(&self, part: &str, e: &serde_json::Error, context: &str) -> CollectorError {
        let (base_line, base_column) = self.position(part);
        let (line, column) = match e.line() {
            0 => (base_line, base_column),
            1 => (base_line, base_column + e.column().saturating_sub(1)),
            l => (base_line + l - 1, e.column()),
        };
        let message = e.to_string();
        let message = message
            .rfind(" at line ")
            .map_or(message.as_str(), |i| &message[..i]);
        CollectorError::Parse {
            path: self.path.to_owned(),
            line,
            problem: format!("{context}{message} (column {column})"),
        }
    }

    /// Reads one property as `T`; `context` names the object and the property.
    fn field<T: de::DeserializeOwned>(&self, raw: &RawValue, context: &str) -> Result<T, CollectorError> {
        serde_json::from_str(raw.get()).map_err(|e| self.json_error(raw.get(), &e, context))
    }

    fn time(&self, raw: Option<&RawValue>, id: &str, name: &str) -> Result<Option<Instant>, CollectorError> {
        let Some(raw) = raw else { return Ok(None) };
        let text: String = self.field(raw, &format!("{id}: {name}: "))?;
        parse_timestamp(&text).map(Some).ok_or_else(|| {
            self.error(
                raw.get(),
                format!("{id}: {name}: {:?} is not a STIX timestamp", clip(&text)),
            )
        })
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() > 64 {
        format!("{}...", s.chars().take(64).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// Whether `s` is `indicator--` and a UUID.
fn is_indicator_id(s: &str) -> bool {
    let Some(uuid) = s.strip_prefix("indicator--") else {
        return false;
    };
    uuid.len() == 36
        && uuid.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Parses a STIX 2.1 (or 2.0) bundle, a TAXII 2.1 envelope (`{"objects": [...]}`), or one lone
/// STIX object. See the module documentation for what is read and what becomes what.
pub fn parse_bundle(path: &Path, text: &str, defaults: &Defaults) -> Result<Batch, CollectorError> {
    let ctx = Ctx { path, text };
    if !text.trim_start().starts_with('{') {
        return Err(ctx.error(
            text.trim_start(),
            "not a STIX document: expected a JSON object".into(),
        ));
    }
    let top: Top<'_> = serde_json::from_str(text).map_err(|e| ctx.json_error(text, &e, "bundle: "))?;
    let kind: Option<String> = top.kind.map(|raw| ctx.field(raw, "bundle: type: ")).transpose()?;
    let objects: Vec<&RawValue> = match (kind.as_deref(), top.objects) {
        (Some("bundle") | None, Some(raw)) => {
            serde_json::from_str(raw.get()).map_err(|e| ctx.json_error(raw.get(), &e, "bundle: objects: "))?
        }
        (Some("bundle"), None) => Vec::new(),
        (Some(_), _) => vec![serde_json::from_str(text).map_err(|e| ctx.json_error(text, &e, ""))?],
        (None, None) => {
            return Err(ctx.error(
                text.trim_start(),
                "not a STIX document: no \"type\" and no \"objects\"".into(),
            ))
        }
    };

    // First pass: check every object, remember the newest version of each indicator id (by
    // its place in the file) and the bundle's own TLP definitions. Only the ids are kept, most
    // borrowed from the text, so that a large bundle costs little beyond its items.
    let mut tlp_defs: HashMap<String, Tlp> = HashMap::new();
    let mut newest: HashMap<Cow<'_, str>, (usize, Option<Instant>)> = HashMap::new();
    let mut order: Vec<Cow<'_, str>> = Vec::new();
    for (i, raw) in objects.iter().enumerate() {
        let fields = object(&ctx, i, raw)?;
        let Some(kind_raw) = fields.kind else {
            return Err(ctx.error(raw.get(), format!("objects[{i}]: no \"type\"")));
        };
        let kind: String = ctx.field(kind_raw, &format!("objects[{i}]: type: "))?;
        match kind.as_str() {
            "indicator" => {
                let p = indicator(&ctx, i, raw, &fields)?;
                let key = fields.id.and_then(borrowed).unwrap_or(Cow::Owned(p.id));
                match newest.get_mut(&key) {
                    None => {
                        order.push(key.clone());
                        newest.insert(key, (i, p.modified));
                    }
                    Some(kept) if p.modified > kept.1 => *kept = (i, p.modified),
                    Some(_) => {}
                }
            }
            "marking-definition" => {
                if let Some((id, tlp)) = tlp_definition(&fields) {
                    tlp_defs.insert(id, tlp);
                }
            }
            _ => {}
        }
    }

    // Second pass: the kept version of each id, in the order the ids first appeared.
    let mut batch = Batch::default();
    for id in &order {
        let Some((i, raw)) = newest.get(id).and_then(|&(i, _)| Some((i, *objects.get(i)?))) else {
            continue;
        };
        let p = indicator(&ctx, i, raw, &object(&ctx, i, raw)?)?;
        let observables = match p.pattern_type.as_deref() {
            Some(t) if !t.eq_ignore_ascii_case("stix") => Err(Reason::PatternType(clip(t))),
            _ => translate_pattern(&p.pattern),
        };
        let observables = match observables {
            Ok(o) => o,
            Err(reason) => {
                batch.unsupported.push(Unsupported {
                    id: p.id.clone(),
                    reason: reason.to_string(),
                });
                continue;
            }
        };
        let meta = Meta {
            confidence: p.confidence.unwrap_or(defaults.confidence),
            severity: defaults.severity,
            tlp: tlp(&p.markings, &tlp_defs).unwrap_or(defaults.tlp),
            valid_until: p.valid_until.map(|t| t.secs),
            source: defaults.source.clone(),
        };
        let several = observables.len() > 1;
        for (n, observable) in observables.into_iter().enumerate() {
            let id = if several {
                format!("{}/{n}", p.id)
            } else {
                p.id.clone()
            };
            batch.items.push(Item {
                modified: p.modified.map(|t| t.secs),
                valid_from: p.valid_from.map(|t| t.secs),
                revoked: p.revoked,
                created_by: p.created_by.clone(),
                ..Item::new(Indicator {
                    id,
                    observable,
                    meta: meta.clone(),
                })
            });
        }
    }
    Ok(batch)
}

/// Reads the properties of `objects[i]`.
fn object<'a>(ctx: &Ctx<'_>, i: usize, raw: &'a RawValue) -> Result<Fields<'a>, CollectorError> {
    if !raw.get().starts_with('{') {
        return Err(ctx.error(raw.get(), format!("objects[{i}]: not a JSON object")));
    }
    serde_json::from_str(raw.get()).map_err(|e| ctx.json_error(raw.get(), &e, &format!("objects[{i}]: ")))
}

/// A JSON string, borrowed from the text when it holds no escape.
fn borrowed(raw: &RawValue) -> Option<Cow<'_, str>> {
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(raw.get()).ok().map(Cow::Owned),
    }
}

/// Reads and checks one indicator object.
fn indicator(ctx: &Ctx<'_>, i: usize, raw: &RawValue, f: &Fields<'_>) -> Result<Parsed, CollectorError> {
    let Some(id_raw) = f.id else {
        return Err(ctx.error(raw.get(), format!("objects[{i}]: an indicator without an \"id\"")));
    };
    let id: String = ctx.field(id_raw, &format!("objects[{i}]: id: "))?;
    if !is_indicator_id(&id) {
        return Err(ctx.error(
            id_raw.get(),
            format!(
                "objects[{i}]: {:?} is not an indicator id (indicator--<uuid>)",
                clip(&id)
            ),
        ));
    }
    let at = |name: &str| format!("{id}: {name}: ");
    let Some(pattern_raw) = f.pattern else {
        return Err(ctx.error(raw.get(), format!("{id}: an indicator without a \"pattern\"")));
    };
    let pattern: String = ctx.field(pattern_raw, &at("pattern"))?;
    let pattern_type: Option<String> = f
        .pattern_type
        .map(|r| ctx.field(r, &at("pattern_type")))
        .transpose()?;
    let revoked: Option<bool> = f.revoked.map(|r| ctx.field(r, &at("revoked"))).transpose()?;
    let confidence =
        match f.confidence {
            None => None,
            Some(r) => {
                let c: i64 = ctx.field(r, &at("confidence"))?;
                Some(u8::try_from(c).ok().filter(|c| *c <= 100).ok_or_else(|| {
                    ctx.error(r.get(), format!("{id}: confidence: {c} is outside 0 to 100"))
                })?)
            }
        };
    let created_by: Option<String> = f
        .created_by_ref
        .map(|r| ctx.field(r, &at("created_by_ref")))
        .transpose()?;
    let mut markings: Vec<String> = f
        .object_marking_refs
        .map(|r| ctx.field(r, &at("object_marking_refs")))
        .transpose()?
        .unwrap_or_default();
    if let Some(r) = f.granular_markings {
        let granular: Vec<Granular> = ctx.field(r, &at("granular_markings"))?;
        markings.extend(
            granular
                .into_iter()
                .filter(|g| g.selectors.iter().any(|s| CARRIED.contains(&s.as_str())))
                .filter_map(|g| g.marking_ref),
        );
    }
    Ok(Parsed {
        modified: ctx.time(f.modified, &id, "modified")?,
        valid_from: ctx.time(f.valid_from, &id, "valid_from")?,
        valid_until: ctx.time(f.valid_until, &id, "valid_until")?,
        revoked: revoked.unwrap_or(false),
        confidence,
        created_by,
        pattern,
        pattern_type,
        markings,
        id,
    })
}

/// A TLP marking definition in the bundle: TLP 1.0 style (`definition_type: "tlp"`,
/// `definition: {"tlp": "amber"}`) or TLP 2.0 style (the property extension's `tlp_2_0`).
/// Anything else, or anything malformed, is not a TLP definition: markings are read only to
/// restrict, never to fail a file.
fn tlp_definition(f: &Fields<'_>) -> Option<(String, Tlp)> {
    let id: String = serde_json::from_str(f.id?.get()).ok()?;
    let definition_type: Option<String> = f.definition_type.and_then(|r| serde_json::from_str(r.get()).ok());
    if definition_type.as_deref() == Some("tlp") {
        let definition: serde_json::Value = serde_json::from_str(f.definition?.get()).ok()?;
        return Some((id, Tlp::parse(definition.get("tlp")?.as_str()?)?));
    }
    let extensions: serde_json::Value = serde_json::from_str(f.extensions?.get()).ok()?;
    let level = extensions.get(TLP2_EXTENSION)?.get("tlp_2_0")?.as_str()?;
    Some((id, Tlp::parse(level)?))
}

/// The strictest TLP among `refs`: the well-known ids first, then the bundle's own definitions.
fn tlp(refs: &[String], defined: &HashMap<String, Tlp>) -> Option<Tlp> {
    refs.iter()
        .filter_map(|r| {
            TLP_MARKINGS
                .iter()
                .find(|(id, _)| id == r)
                .map(|(_, t)| *t)
                .or_else(|| defined.get(r).copied())
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::{IpNet, Observable, Severity};

    fn defaults() -> Defaults {
        Defaults {
            source: "feed".into(),
            tlp: Tlp::Green,
            confidence: 50,
            severity: Severity::Medium,
        }
    }

    fn parse(text: &str) -> Result<Batch, String> {
        parse_bundle(Path::new("/feeds/b.json"), text, &defaults()).map_err(|e| e.to_string())
    }

    fn indicator_json(id: &str, extra: &str) -> String {
        format!(
            r#"{{"type": "indicator", "spec_version": "2.1", "id": "{id}", "created": "2020-01-01T00:00:00Z",
                "modified": "2020-01-01T00:00:00Z", "pattern": "[ipv4-addr:value = '198.51.100.7']",
                "pattern_type": "stix", "valid_from": "2020-01-01T00:00:00Z"{extra}}}"#
        )
    }

    fn bundle(objects: &[String]) -> String {
        format!(
            r#"{{"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": [{}]}}"#,
            objects.join(",\n")
        )
    }

    const ID: &str = "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f";

    #[test]
    fn metadata_is_carried() {
        let text = bundle(&[indicator_json(
            ID,
            r#", "valid_until": "2030-01-01T00:00:00.5Z", "revoked": true, "confidence": 85,
               "created_by_ref": "identity--f431f809-377b-45e0-aa1c-6a4751cae5ff",
               "object_marking_refs": ["marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
                                       "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da"]"#,
        )]);
        let batch = parse(&text).unwrap();
        assert!(batch.unsupported.is_empty());
        let [item] = batch.items.as_slice() else {
            panic!("{batch:?}")
        };
        assert_eq!(item.indicator.id, ID);
        assert_eq!(
            item.indicator.observable,
            Observable::RemoteAddr(IpNet::parse("198.51.100.7").unwrap())
        );
        assert_eq!(item.indicator.meta.confidence, 85);
        assert_eq!(item.indicator.meta.tlp, Tlp::Amber);
        assert_eq!(item.indicator.meta.severity, Severity::Medium);
        assert_eq!(item.indicator.meta.source, "feed");
        assert_eq!(item.indicator.meta.valid_until, Some(1_893_456_000));
        assert_eq!(item.valid_from, Some(1_577_836_800));
        assert_eq!(item.modified, Some(1_577_836_800));
        assert!(item.revoked);
        assert_eq!(
            item.created_by.as_deref(),
            Some("identity--f431f809-377b-45e0-aa1c-6a4751cae5ff")
        );
    }

    #[test]
    fn defaults_fill_what_is_absent() {
        let batch = parse(&bundle(&[indicator_json(ID, "")])).unwrap();
        let meta = &batch.items[0].indicator.meta;
        assert_eq!(
            (meta.confidence, meta.tlp, meta.valid_until),
            (50, Tlp::Green, None)
        );
        assert!(!batch.items[0].revoked);
        assert_eq!(batch.items[0].created_by, None);
    }

    #[test]
    fn tlp_table() {
        let cases: &[(&str, Tlp)] = &[
            (
                r#"["marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9"]"#,
                Tlp::Clear,
            ),
            (
                r#"["marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487"]"#,
                Tlp::Clear,
            ),
            (
                r#"["marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"]"#,
                Tlp::Green,
            ),
            (
                r#"["marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421"]"#,
                Tlp::Amber,
            ),
            (
                r#"["marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003"]"#,
                Tlp::AmberStrict,
            ),
            (
                r#"["marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1"]"#,
                Tlp::Red,
            ),
            (
                r#"["marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed"]"#,
                Tlp::Red,
            ),
            (
                r#"["marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9", "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003", "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da"]"#,
                Tlp::AmberStrict,
            ),
            // Not TLP: the default.
            (
                r#"["marking-definition--d81f86b9-975b-4c0b-875e-810c5ad45a4f"]"#,
                Tlp::Green,
            ),
            // The bundle's own TLP definitions, 1.0 and 2.0 style.
            (
                r#"["marking-definition--11111111-1111-4111-8111-111111111111"]"#,
                Tlp::Red,
            ),
            (
                r#"["marking-definition--22222222-2222-4222-8222-222222222222"]"#,
                Tlp::AmberStrict,
            ),
        ];
        let own = [
            r#"{"type": "marking-definition", "id": "marking-definition--11111111-1111-4111-8111-111111111111",
                "definition_type": "tlp", "definition": {"tlp": "red"}}"#
                .to_owned(),
            format!(
                r#"{{"type": "marking-definition", "id": "marking-definition--22222222-2222-4222-8222-222222222222",
                    "extensions": {{"{TLP2_EXTENSION}": {{"extension_type": "property-extension", "tlp_2_0": "amber+strict"}}}}}}"#
            ),
            r#"{"type": "marking-definition", "id": "marking-definition--d81f86b9-975b-4c0b-875e-810c5ad45a4f",
                "definition_type": "statement", "definition": {"statement": "Copyright"}}"#
                .to_owned(),
        ];
        for (refs, want) in cases {
            let mut objects = vec![indicator_json(ID, &format!(r#", "object_marking_refs": {refs}"#))];
            objects.extend(own.iter().cloned());
            let batch = parse(&bundle(&objects)).unwrap();
            assert_eq!(batch.items[0].indicator.meta.tlp, *want, "{refs}");
        }
    }

    #[test]
    fn granular_markings_count_when_they_cover_what_is_carried() {
        let granular = r#", "granular_markings": [
            {"marking_ref": "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed", "selectors": ["description"]},
            {"marking_ref": "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82", "selectors": ["pattern"]},
            {"lang": "en", "selectors": ["name"]}]"#;
        let batch = parse(&bundle(&[indicator_json(ID, granular)])).unwrap();
        assert_eq!(batch.items[0].indicator.meta.tlp, Tlp::Amber);
    }

    #[test]
    fn the_newest_version_wins_in_any_order() {
        let old = indicator_json(ID, "").replace("198.51.100.7", "198.51.100.1");
        let new = indicator_json(ID, "")
            .replace(
                "\"modified\": \"2020-01-01T00:00:00Z\"",
                "\"modified\": \"2020-01-01T00:00:00.001Z\"",
            )
            .replace("198.51.100.7", "198.51.100.2");
        let want = Observable::RemoteAddr(IpNet::parse("198.51.100.2").unwrap());
        for objects in [[old.clone(), new.clone()], [new.clone(), old.clone()]] {
            let batch = parse(&bundle(&objects)).unwrap();
            let [item] = batch.items.as_slice() else {
                panic!("{batch:?}")
            };
            assert_eq!(item.indicator.observable, want);
            assert_eq!(item.modified, Some(1_577_836_800));
        }
        // A newer version that is unsupported replaces a supported one.
        let newer = new.replace("ipv4-addr:value", "domain-name:value");
        let batch = parse(&bundle(&[old, newer])).unwrap();
        assert!(batch.items.is_empty());
        assert_eq!(batch.unsupported.len(), 1);
    }

    #[test]
    fn branches_get_numbered_ids() {
        let text = bundle(&[indicator_json(ID, "").replace(
            "[ipv4-addr:value = '198.51.100.7']",
            "[ipv4-addr:value = '198.51.100.7'] OR [ipv6-addr:value = '2001:db8::1']",
        )]);
        let batch = parse(&text).unwrap();
        let ids: Vec<&str> = batch.items.iter().map(|i| i.indicator.id.as_str()).collect();
        assert_eq!(ids, [format!("{ID}/0"), format!("{ID}/1")]);
    }

    #[test]
    fn unsupported_indicators_are_listed() {
        let objects = [
            indicator_json(ID, "").replace("\"stix\"", "\"yara\""),
            indicator_json("indicator--00000000-0000-4000-8000-000000000001", "")
                .replace("ipv4-addr:value", "url:value"),
            indicator_json("indicator--00000000-0000-4000-8000-000000000002", "")
                .replace("[ipv4-addr:value = '198.51.100.7']", "[ipv4-addr:value = '198.51.100.7'"),
            r#"{"type": "malware", "id": "malware--00000000-0000-4000-8000-000000000003", "confidence": "high"}"#
                .to_owned(),
        ];
        let batch = parse(&bundle(&objects)).unwrap();
        assert!(batch.items.is_empty());
        let reasons: Vec<(&str, &str)> = batch
            .unsupported
            .iter()
            .map(|u| (u.id.as_str(), u.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (ID, "pattern_type: yara"),
                (
                    "indicator--00000000-0000-4000-8000-000000000001",
                    "pattern: url is not matchable on an endpoint"
                ),
                (
                    "indicator--00000000-0000-4000-8000-000000000002",
                    "pattern: cannot parse: expected ']', found the end"
                ),
            ]
        );
    }

    #[test]
    fn stix_20_indicators_without_pattern_type_are_stix() {
        let text = r#"{"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "spec_version": "2.0",
            "objects": [{"type": "indicator", "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
            "labels": ["malicious-activity"], "pattern": "[process:name = 'nc']", "valid_from": "2017-01-01T00:00:00Z"}]}"#;
        let batch = parse(text).unwrap();
        assert_eq!(
            batch.items[0].indicator.observable,
            Observable::ProcessName("nc".into())
        );
    }

    #[test]
    fn envelopes_and_lone_objects() {
        let envelope = format!(r#"{{"more": false, "objects": [{}]}}"#, indicator_json(ID, ""));
        assert_eq!(parse(&envelope).unwrap().items.len(), 1);
        assert_eq!(parse(&indicator_json(ID, "")).unwrap().items.len(), 1);
        let campaign =
            r#"{"type": "campaign", "id": "campaign--0c7b5b88-8ff7-4a4d-aa9d-feb398cd0061", "name": "x"}"#;
        assert_eq!(parse(campaign).unwrap(), Batch::default());
        assert_eq!(
            parse(r#"{"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d"}"#).unwrap(),
            Batch::default()
        );
    }

    /// Malformed input: an error naming the file, the line, the column and the object.
    #[test]
    fn errors_name_the_line_and_the_object() {
        let cases: Vec<(String, &str)> = vec![
            ("{\"type\": \"bundle\",\n \"objects\": [".into(), "/feeds/b.json:2: bundle: EOF while parsing"),
            ("[1, 2]".into(), "/feeds/b.json:1: not a STIX document: expected a JSON object (column 1)"),
            ("\n\n  7".into(), "/feeds/b.json:3: not a STIX document: expected a JSON object (column 3)"),
            ("{\"hello\": 1}".into(), "/feeds/b.json:1: not a STIX document"),
            (
                "{\"type\": \"bundle\", \"objects\": {}}".into(),
                "/feeds/b.json:1: bundle: objects: invalid type: map, expected a sequence (column 31)",
            ),
            (bundle(&["7".into()]), "/feeds/b.json:1: objects[0]: not a JSON object"),
            (bundle(&["[\"indicator\"]".into()]), "/feeds/b.json:1: objects[0]: not a JSON object"),
            (bundle(&["{\"id\": \"x\"}".into()]), "/feeds/b.json:1: objects[0]: no \"type\""),
            (bundle(&["{\"type\": 5}".into()]), "/feeds/b.json:1: objects[0]: type: invalid type: integer"),
            (
                bundle(&["{\"type\": \"x\"}".into(), indicator_json("indicator--x", "")]),
                "/feeds/b.json:2: objects[1]: \"indicator--x\" is not an indicator id",
            ),
            (
                bundle(&[indicator_json(ID, "").replace("\"pattern\":", "\"pattern_x\":")]),
                "an indicator without a \"pattern\"",
            ),
            (
                bundle(&[indicator_json(ID, ", \"confidence\": \"high\"")]),
                "/feeds/b.json:3: indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f: confidence: invalid type: string \"high\", expected i64 (column 98)",
            ),
            (
                bundle(&[indicator_json(ID, ", \"confidence\": 101")]),
                "confidence: 101 is outside 0 to 100",
            ),
            (
                bundle(&[indicator_json(ID, ", \"revoked\": \"no\"")]),
                "revoked: invalid type: string \"no\", expected a boolean",
            ),
            (
                bundle(&[indicator_json(ID, ", \"valid_until\": \"tomorrow\"")]),
                "valid_until: \"tomorrow\" is not a STIX timestamp",
            ),
            (
                bundle(&[indicator_json(ID, ", \"object_marking_refs\": \"x\"")]),
                "object_marking_refs: invalid type: string \"x\", expected a sequence",
            ),
            (
                bundle(&[indicator_json(ID, "").replace("\"pattern\": \"[", "\"pattern\": 5, \"x\": \"[")]),
                "pattern: invalid type: integer `5`, expected a string",
            ),
            (
                bundle(&[indicator_json(ID, ", \"id\": \"again\"")]),
                "objects[0]: duplicate field `id`",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).expect_err(&text);
            assert!(err.contains(want), "{text}\n  got: {err}\n want: {want}");
        }
    }

    #[test]
    fn sniffing() {
        let cases: &[(&str, bool)] = &[
            (r#"{"type": "bundle", "objects": []}"#, true),
            (r#"{"id": "bundle--1", "type": "bundle", "objects": [{"#, true),
            (r#"{"objects": [], "type": "bundle"}"#, true),
            (r#"{"type": "campaign", "id": "campaign--0c7b5b88"}"#, true),
            (r#"{"type": "campaign", "id": "indicator--0c7b5b88"}"#, false),
            (r#"{"type": "FeatureCollection", "features": []}"#, false),
            (r#"{"Event": {"info": "x"}}"#, false),
            (r#"{"response": [{"Event": {}}]}"#, false),
            (r#"[{"type": "bundle"}]"#, false),
            (r#"{"type": 5}"#, false),
            ("", false),
            ("{", false),
        ];
        for (text, want) in cases {
            assert_eq!(is_stix(text), *want, "{text}");
        }
    }

    #[test]
    fn indicator_ids() {
        assert!(is_indicator_id("indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"));
        assert!(is_indicator_id("indicator--8E2E2D2B-17D4-4CBF-938F-98EE46B3CD3F"));
        assert!(!is_indicator_id("indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3"));
        assert!(!is_indicator_id("malware--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"));
        assert!(!is_indicator_id(
            "indicator--8e2e2d2b_17d4-4cbf-938f-98ee46b3cd3f"
        ));
        assert!(!is_indicator_id(
            "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cdéf"
        ));
    }
}
