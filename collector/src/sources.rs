//! Pulling from registered sources: the shell that reads a source's file, directory or TAXII
//! collection and hands the text to the pure parsers in [`crate::ingest`].

use std::path::{Path, PathBuf};

use picket_proto::Severity;

use crate::ingest::{self, Batch, Defaults, MAX_INGEST_FILE};
use crate::metrics::{self, Stage};
use crate::store::Source;
use crate::taxii::{self, Credentials, TaxiiSource};
use crate::CollectorError;

/// The source kinds `source add` accepts.
pub const KINDS: &[&str] = &["list", "csv", "stix", "misp", "misp-feed", "taxii"];

/// The metadata defaults a source gives what it does not mark itself.
pub fn defaults(src: &Source) -> Defaults {
    Defaults {
        source: src.name.clone(),
        tlp: src.tlp,
        confidence: src.confidence,
        severity: Severity::Medium,
    }
}

/// Reads a file for ingest: refuses one over [`MAX_INGEST_FILE`] before reading it, and names the
/// line of the first invalid UTF-8.
pub fn read_text(path: &Path) -> Result<String, CollectorError> {
    let meta = std::fs::metadata(path).map_err(CollectorError::io(path))?;
    if meta.len() > MAX_INGEST_FILE {
        return Err(CollectorError::Parse {
            path: path.to_owned(),
            line: 1,
            problem: format!(
                "{} bytes is more than the {MAX_INGEST_FILE} bytes accepted",
                meta.len()
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(CollectorError::io(path))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = 1 + bytes[..valid].iter().filter(|&&b| b == b'\n').count();
        let column = 1 + valid
            - bytes[..valid]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
        CollectorError::Parse {
            path: path.to_owned(),
            line,
            problem: format!("invalid UTF-8 at column {column}"),
        }
    })
}

/// Gives every item without a valid_until the source's default lifetime from `now`.
pub fn apply_lifetime(batch: &mut Batch, lifetime: Option<u64>, now: i64) {
    if let Some(l) = lifetime {
        for item in &mut batch.items {
            if item.indicator.meta.valid_until.is_none() {
                item.indicator.meta.valid_until = Some(now.saturating_add(l as i64));
            }
        }
    }
}

/// Pulls `src` once: its batch, and the new TAXII bookmark if it moved.
pub fn pull(src: &Source) -> Result<(Batch, Option<String>), CollectorError> {
    let defaults = defaults(src);
    let path = Path::new(&src.location);
    match src.kind.as_str() {
        "list" | "csv" | "stix" | "misp" => {
            let text = read_text(path).inspect_err(|_| metrics::source_error(&src.name, Stage::Pull))?;
            let batch = ingest::parse_file(path, &text, &defaults)
                .inspect_err(|_| metrics::source_error(&src.name, Stage::Ingest))?;
            metrics::source_pulled(&src.name);
            Ok((batch, None))
        }
        "misp-feed" => {
            let batch = ingest::parse_feed_dir(path, &defaults)
                .inspect_err(|_| metrics::source_error(&src.name, Stage::Ingest))?;
            metrics::source_pulled(&src.name);
            Ok((batch, None))
        }
        "taxii" => {
            let source = TaxiiSource {
                credentials: src.username.clone().map(|username| Credentials {
                    username,
                    password: src.secret.clone().unwrap_or_default(),
                }),
                ca_file: src.ca_file.as_ref().map(PathBuf::from),
                ..TaxiiSource::new(&src.location, src.collection.clone().unwrap_or_default())
            };
            let (batch, bookmark) = taxii::pull(&source, src.bookmark.as_deref(), &defaults)
                .inspect_err(|_| metrics::source_error(&src.name, Stage::Pull))?;
            metrics::source_pulled(&src.name);
            Ok((batch, bookmark))
        }
        other => Err(CollectorError::Refused(format!(
            "source {}: pulling a {other} source is not supported by this build",
            src.name
        ))),
    }
}
