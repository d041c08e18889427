//! How Picket's programs log: `tracing` events, written to stderr. The agent and the collector
//! both install it (`picket_agent::logging`, `picket_collector::logging`), each under its name.
//! Built with the `logging` feature only, so the fuzz targets and other users of the contract do
//! not pull `tracing-subscriber` in.
//!
//! Two formats, chosen with `--log-format`:
//!
//! - `text` (the default) keeps the lines the programs always wrote, so that people and
//!   scripts reading them see no change: `picket-agent: error: channel: ...`, with
//!   `warning: ` for warnings and no tag for information, then the event's fields as
//!   ` key=value`.
//! - `json` writes one JSON object a line: `timestamp` (RFC 3339, UTC), `level`, `target`,
//!   `message` and each field under its own key, for a log shipper.
//!
//! `PICKET_LOG` chooses what is written, in `tracing-subscriber`'s `EnvFilter` syntax
//! (`warn`, `info`, `picket_agent::link=debug`, `picket_collector::channel=debug`); the default
//! is `info`.
//!
//! Invariant: one event is one line in either format. Control characters in a message or a
//! field (a peer's text can reach a log) are escaped in `text`, and JSON escapes them itself,
//! so no event can forge another line. No secret is ever logged: callers log names and counts,
//! never passwords, keys or tokens.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The environment variable holding the level filter.
pub const FILTER_ENV: &str = "PICKET_LOG";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `PROGRAM: warning: message key=value`, as the programs always wrote.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!("log format {other:?}: expected text or json")),
        }
    }
}

/// Installs the process's log writer for `program` (`picket-agent`): stderr, in `format`,
/// filtered by `PICKET_LOG` (default `info`; a filter that does not parse falls back to `info`
/// and says so). A second call does nothing, so tests that run `main`'s code twice do not fail.
pub fn init(program: &'static str, format: Format) {
    let (filter, bad) = match std::env::var(FILTER_ENV) {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new("info"),
                Some(format!("{FILTER_ENV}={spec:?}: {e}; logging at info")),
            ),
        },
        _ => (EnvFilter::new("info"), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let installed = match format {
        Format::Text => builder.event_format(Text { program }).try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if let (Ok(()), Some(bad)) = (installed, bad) {
        tracing::warn!("{bad}");
    }
}

/// The `text` format: `PROGRAM: [error: |warning: ]message key=value ...`.
#[derive(Debug)]
struct Text {
    program: &'static str,
}

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let tag = match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            Level::DEBUG => "debug: ",
            Level::TRACE => "trace: ",
            Level::INFO => "",
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        w.write_str(self.program)?;
        w.write_str(": ")?;
        w.write_str(tag)?;
        w.write_str(&fields.message)?;
        w.write_str(&fields.rest)?;
        w.write_char('\n')
    }
}

/// An event's message then its fields, as one line.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Fields {
    fn push(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            escape_into(&mut self.message, value);
        } else {
            self.rest.push(' ');
            self.rest.push_str(field.name());
            self.rest.push('=');
            escape_into(&mut self.rest, value);
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, &format!("{value:?}"));
    }
}

/// Appends `value` with control characters written as escapes (`\n`, `\u{1b}`).
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_start_a_new_line() {
        let mut out = String::new();
        escape_into(&mut out, "a\nb\u{1b}[31m");
        assert_eq!(out, "a\\nb\\u{1b}[31m");
    }

    #[test]
    fn formats_parse_and_others_are_refused() {
        assert_eq!("json".parse::<Format>(), Ok(Format::Json));
        assert_eq!("text".parse::<Format>(), Ok(Format::Text));
        assert!("xml".parse::<Format>().is_err());
    }
}
