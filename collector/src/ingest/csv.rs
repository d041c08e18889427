//! CSV: one indicator per record, read from one column, its type detected as in plain lists.
//!
//! The reader follows RFC 4180 (quoted fields, `""` for a quote inside one, line breaks inside
//! quotes, CRLF or LF line ends) with the leniencies that real feeds need: blanks between a
//! delimiter and an opening quote (abuse.ch writes `"a", "b"`), a quote inside an unquoted field
//! taken literally, a UTF-8 byte-order mark, blank lines, and whole-line comments (`#` by
//! default, which is how feeds carry their banners and sometimes their header).
//!
//! It is hand-written rather than the `csv` crate because the few things Picket needs from it
//! are exactly the ones it must control: the line number where each record starts (a quoted
//! field can span lines), a hard cap on a record's size that is enforced before the record is
//! scanned to its end, and comments only at the start of a line.
//!
//! Whether the first record is a header is detected unless the options say: it is a header when
//! its value column does not even look like an attempt at an indicator (a column named `sha256`
//! does not; `198.51.100.300` or a 31-digit hash does, and is an error rather than a header).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use super::{detect, indicator, Batch, Defaults};
use crate::CollectorError;

/// Longest record accepted, in bytes, line breaks inside quotes included.
pub const MAX_RECORD: usize = 64 << 10;

/// Which column holds the indicator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvColumn {
    /// The column at this index, counting from 0.
    Index(usize),
    /// The column with this name in the header row (compared without case or surrounding
    /// blanks). Needs a header row.
    Name(String),
}

/// How to read a CSV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// The column that holds the indicator. Default: the first.
    pub column: CsvColumn,
    /// The field delimiter: an ASCII character other than `"`, CR and LF. Default: `,`.
    pub delimiter: char,
    /// Whether the first record is a header; `None` (the default) detects it.
    pub has_header: Option<bool>,
    /// A line that starts with this character (after blanks) is a comment. Default: `#`.
    pub comment: Option<char>,
}

impl Default for CsvOptions {
    fn default() -> CsvOptions {
        CsvOptions {
            column: CsvColumn::Index(0),
            delimiter: ',',
            has_header: None,
            comment: Some('#'),
        }
    }
}

/// Parses CSV text into indicators, one per record; duplicate values collapse into one. All or
/// nothing: the first bad record is an error naming the file and the line it starts on.
pub fn parse_csv(
    path: &Path,
    text: &str,
    options: &CsvOptions,
    defaults: &Defaults,
) -> Result<Batch, CollectorError> {
    let delimiter = check(options)?;
    let err = |line: usize, problem: String| CollectorError::Parse {
        path: path.to_owned(),
        line,
        problem,
    };
    let mut records = Records {
        text: text.strip_prefix('\u{feff}').unwrap_or(text),
        pos: 0,
        line: 1,
        delimiter,
        comment: options.comment,
    };
    let mut column = match &options.column {
        CsvColumn::Index(i) => Some(*i),
        CsvColumn::Name(_) => None,
    };
    let mut first = true;
    let mut out = BTreeMap::new();
    while let Some(record) = records.next_record().map_err(|(line, p)| err(line, p))? {
        if std::mem::take(&mut first) {
            let header = match (options.has_header, &options.column) {
                (Some(h), _) => h,
                (None, CsvColumn::Name(_)) => true,
                (None, CsvColumn::Index(i)) => {
                    record.fields.get(*i).is_none_or(|v| !looks_like_value(v.trim()))
                }
            };
            if header {
                if let CsvColumn::Name(name) = &options.column {
                    let found = record
                        .fields
                        .iter()
                        .position(|f| f.trim().eq_ignore_ascii_case(name.trim()));
                    column = Some(found.ok_or_else(|| {
                        err(
                            record.line,
                            format!(
                                "the header has no column named {:?} (it has {})",
                                name,
                                record
                                    .fields
                                    .iter()
                                    .map(|f| format!("{:?}", shorten(f.trim())))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    })?);
                }
                continue;
            }
        }
        // `check` refuses a named column without a header, and the header sets it.
        let Some(col) = column else {
            return Err(err(record.line, "no column chosen".into()));
        };
        let Some(value) = record.fields.get(col) else {
            return Err(err(
                record.line,
                format!(
                    "{} field(s); the indicator is in column {col} (counting from 0)",
                    record.fields.len()
                ),
            ));
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(err(
                record.line,
                format!("column {col} (counting from 0) is empty"),
            ));
        }
        let observable = detect(value).ok_or_else(|| {
            err(
                record.line,
                format!(
                    "cannot tell what {:?} is: expected an MD5, SHA-1 or SHA-256 hex digest, an IP address or a CIDR network",
                    shorten(value)
                ),
            )
        })?;
        let ind = indicator(observable, defaults);
        out.entry(ind.id.clone()).or_insert(ind);
    }
    Ok(Batch::of(out.into_values().collect()))
}

/// Checks the options; returns the delimiter as a byte.
fn check(options: &CsvOptions) -> Result<u8, CollectorError> {
    let d = options.delimiter;
    if !d.is_ascii() || matches!(d, '"' | '\r' | '\n') || options.comment == Some(d) {
        return Err(CollectorError::Refused(format!(
            "CSV delimiter {d:?}: it must be an ASCII character other than a quote, CR, LF or the comment character"
        )));
    }
    if options.comment == Some('"') {
        return Err(CollectorError::Refused(
            "CSV comment character '\"' would turn quoted fields into comments".into(),
        ));
    }
    if let (CsvColumn::Name(name), Some(false)) = (&options.column, options.has_header) {
        return Err(CollectorError::Refused(format!(
            "CSV column {name:?} is chosen by name, which needs a header row"
        )));
    }
    // The delimiter is ASCII, so it fits a byte.
    Ok(u8::try_from(u32::from(d)).unwrap_or(b','))
}

/// Whether a value looks like an attempt at an indicator (so a first row holding it is data,
/// not a header): a long run of hex digits, a number, or something made of hex digits, dots,
/// colons and slashes that has a dot or a colon (an address or network).
fn looks_like_value(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && ((b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit))
            || b.iter().all(u8::is_ascii_digit)
            || (b
                .iter()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, b'.' | b':' | b'/'))
                && b.iter().any(|c| matches!(c, b'.' | b':'))))
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(80).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// One record: the line it starts on and its fields, unquoted.
#[derive(Debug)]
struct Record<'a> {
    line: usize,
    fields: Vec<Cow<'a, str>>,
}

/// The record reader. Delimiters, quotes and line ends are ASCII, so every position it cuts at
/// is a character boundary of the UTF-8 text.
struct Records<'a> {
    text: &'a str,
    pos: usize,
    /// The line `pos` is on, from 1.
    line: usize,
    delimiter: u8,
    comment: Option<char>,
}

/// A parse problem: the line it is on, and what it is.
type Problem = (usize, String);

impl<'a> Records<'a> {
    /// The next record, skipping blank and comment lines; `None` at the end.
    fn next_record(&mut self) -> Result<Option<Record<'a>>, Problem> {
        loop {
            if self.pos >= self.text.len() {
                return Ok(None);
            }
            let rest = &self.text[self.pos..];
            let window = &rest.as_bytes()[..rest.len().min(MAX_RECORD + 1)];
            let eol = window.iter().position(|&c| c == b'\n');
            let physical = &rest[..eol.unwrap_or(window.len())];
            let trimmed = physical.trim();
            let comment = self.comment.is_some_and(|c| trimmed.starts_with(c));
            if !(trimmed.is_empty() || comment) {
                return self.record().map(Some);
            }
            match eol {
                Some(e) => {
                    self.pos += e + 1;
                    self.line += 1;
                }
                None if rest.len() > MAX_RECORD => return Err(too_long(self.line)),
                None => self.pos = self.text.len(),
            }
        }
    }

    /// Reads one record starting at `pos`, which is not a blank or comment line.
    fn record(&mut self) -> Result<Record<'a>, Problem> {
        let text = self.text;
        let b = text.as_bytes();
        let start = self.pos;
        let start_line = self.line;
        // Scans never look past the cap, so a 100 MB line costs no more than a long one.
        let end = b.len().min(start + MAX_RECORD + 1);
        let blank = |c: u8| (c == b' ' || c == b'\t') && c != self.delimiter;
        let mut fields = Vec::new();
        let mut i = start;
        loop {
            let mut j = i;
            while j < end && blank(b[j]) {
                j += 1;
            }
            if j < end && b[j] == b'"' {
                let open_line = self.line;
                let mut owned: Option<String> = None;
                let mut seg = j + 1;
                let field = loop {
                    let Some(q) = b[seg..end].iter().position(|&c| c == b'"').map(|k| seg + k) else {
                        return Err(if end < b.len() {
                            too_long(start_line)
                        } else {
                            (open_line, "a quoted field is not closed".into())
                        });
                    };
                    self.line += b[seg..q].iter().filter(|&&c| c == b'\n').count();
                    if q + 1 < end && b[q + 1] == b'"' {
                        owned.get_or_insert_with(String::new).push_str(&text[seg..=q]);
                        seg = q + 2;
                        continue;
                    }
                    i = q + 1;
                    break match owned {
                        None => Cow::Borrowed(&text[seg..q]),
                        Some(mut s) => {
                            s.push_str(&text[seg..q]);
                            Cow::Owned(s)
                        }
                    };
                };
                fields.push(field);
                while i < end && blank(b[i]) {
                    i += 1;
                }
                match b.get(i) {
                    None => {
                        self.pos = i;
                        break;
                    }
                    Some(&c) if c == self.delimiter => i += 1,
                    Some(b'\n') => {
                        self.pos = i + 1;
                        self.line += 1;
                        break;
                    }
                    Some(b'\r') if b.get(i + 1) == Some(&b'\n') => {
                        self.pos = i + 2;
                        self.line += 1;
                        break;
                    }
                    Some(_) if i >= end => return Err(too_long(start_line)),
                    Some(_) => {
                        return Err((
                            self.line,
                            "a quoted field must be followed by the delimiter or the end of the line".into(),
                        ))
                    }
                }
            } else {
                let stop = b[i..end]
                    .iter()
                    .position(|&c| c == self.delimiter || c == b'\n')
                    .map(|k| i + k);
                match stop {
                    Some(e) if b[e] == b'\n' => {
                        let field = &text[i..e];
                        fields.push(Cow::Borrowed(field.strip_suffix('\r').unwrap_or(field)));
                        self.pos = e + 1;
                        self.line += 1;
                        break;
                    }
                    Some(e) => {
                        fields.push(Cow::Borrowed(&text[i..e]));
                        i = e + 1;
                    }
                    None if end < b.len() || b.len() - start > MAX_RECORD => {
                        return Err(too_long(start_line))
                    }
                    None => {
                        let field = &text[i..];
                        fields.push(Cow::Borrowed(field.strip_suffix('\r').unwrap_or(field)));
                        self.pos = b.len();
                        break;
                    }
                }
            }
        }
        Ok(Record {
            line: start_line,
            fields,
        })
    }
}

fn too_long(line: usize) -> Problem {
    (
        line,
        format!("a record of more than {MAX_RECORD} bytes; the limit is {MAX_RECORD}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::canonical_value;
    use picket_proto::{Severity, Tlp};
    use proptest::prelude::*;

    const MD5: &str = "44d88612fea8a8f36de82e1278abb02f";
    const SHA1: &str = "3395856ce81f2b7382dee72602f798b642f14140";

    fn defaults() -> Defaults {
        Defaults {
            source: "csv".into(),
            tlp: Tlp::Green,
            confidence: 50,
            severity: Severity::Medium,
        }
    }

    /// Records as (line, fields).
    type Lines = Vec<(usize, Vec<String>)>;
    /// A parse outcome: the items' canonical values, or an error's expected text.
    type Outcome<'a> = Result<Vec<String>, &'a str>;

    /// Reads every record of `text` with the reader alone.
    fn records(text: &str, delimiter: u8) -> Result<Lines, Problem> {
        let mut r = Records {
            text,
            pos: 0,
            line: 1,
            delimiter,
            comment: Some('#'),
        };
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push((rec.line, rec.fields.into_iter().map(Cow::into_owned).collect()));
        }
        Ok(out)
    }

    #[test]
    fn reader_table() {
        type Want<'a> = Result<Vec<(usize, Vec<&'a str>)>, (usize, &'a str)>;
        let cases: &[(&str, Want<'_>)] = &[
            ("a,b,c\n", Ok(vec![(1, vec!["a", "b", "c"])])),
            ("a,b,c", Ok(vec![(1, vec!["a", "b", "c"])])),
            (
                "a,b\r\nc,d\r\n",
                Ok(vec![(1, vec!["a", "b"]), (2, vec!["c", "d"])]),
            ),
            ("a,,\n", Ok(vec![(1, vec!["a", "", ""])])),
            ("\"a,b\",c\n", Ok(vec![(1, vec!["a,b", "c"])])),
            ("\"say \"\"hi\"\"\",x\n", Ok(vec![(1, vec!["say \"hi\"", "x"])])),
            ("\"\"\"\"\n", Ok(vec![(1, vec!["\""])])),
            ("\"\",x\n", Ok(vec![(1, vec!["", "x"])])),
            // A quoted line break: the next record starts on line 3.
            (
                "\"two\nlines\",x\ny,z\n",
                Ok(vec![(1, vec!["two\nlines", "x"]), (3, vec!["y", "z"])]),
            ),
            (
                "\"crlf\r\ninside\"\r\nnext\r\n",
                Ok(vec![(1, vec!["crlf\r\ninside"]), (3, vec!["next"])]),
            ),
            // abuse.ch style: a blank before the opening quote and after the closing one.
            ("\"a\", \"b\" ,c\n", Ok(vec![(1, vec!["a", "b", "c"])])),
            // A quote inside an unquoted field is taken literally.
            ("ab\"c,d\n", Ok(vec![(1, vec!["ab\"c", "d"])])),
            // Blank and comment lines are skipped but counted.
            (
                "# banner\n\n   \na\n  # indented comment\nb\n",
                Ok(vec![(4, vec!["a"]), (6, vec!["b"])]),
            ),
            // A '#' inside a record is data.
            ("a#b,c\n", Ok(vec![(1, vec!["a#b", "c"])])),
            ("\"open\nnever closed\n", Err((1, "not closed"))),
            ("x\n\"ab\"c\n", Err((2, "must be followed by"))),
            ("", Ok(vec![])),
        ];
        for (input, want) in cases {
            let got = records(input, b',');
            let want: Result<Lines, (usize, &str)> = want.clone().map(|v| {
                v.into_iter()
                    .map(|(l, f)| (l, f.into_iter().map(String::from).collect()))
                    .collect()
            });
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{input:?}"),
                (Err((gl, gp)), Err((wl, wp))) => {
                    assert_eq!(gl, wl, "{input:?}: {gp}");
                    assert!(gp.contains(wp), "{input:?}: {gp}");
                }
                _ => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn tab_delimiter_keeps_tabs_as_delimiters() {
        let got = records("a\t\"b\"\t c\n", b'\t').unwrap();
        assert_eq!(got, vec![(1, vec!["a".into(), "b".into(), " c".into()])]);
    }

    fn parse(text: &str, options: &CsvOptions) -> Result<Vec<String>, String> {
        parse_csv(Path::new("/feeds/f.csv"), text, options, &defaults())
            .map(|b| {
                b.items
                    .iter()
                    .map(|i| canonical_value(&i.indicator.observable))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parse_table() {
        let by_name = |n: &str| CsvOptions {
            column: CsvColumn::Name(n.into()),
            ..CsvOptions::default()
        };
        let col = |i: usize| CsvOptions {
            column: CsvColumn::Index(i),
            ..CsvOptions::default()
        };
        let md5 = format!("file-hash:md5:{MD5}");
        let sha1 = format!("file-hash:sha1:{SHA1}");
        let ip = "remote-addr:198.51.100.7".to_owned();
        let cases: Vec<(String, CsvOptions, Outcome<'_>)> = vec![
            // A detected header, and a value column that is not the first.
            (
                format!("date,md5\n2024-01-01,{MD5}\n2024-01-02,{}\n", MD5.to_uppercase()),
                col(1),
                Ok(vec![md5.clone()]),
            ),
            // No header: the first row is data.
            (
                format!("{MD5},x\n198.51.100.7,y\n"),
                col(0),
                Ok(vec![md5.clone(), ip.clone()]),
            ),
            // By name, any case, in quotes, with a BOM and a banner.
            (
                format!("\u{feff}# feed banner\n\"First Seen\",\"SHA1_Hash\"\n\"2024\", \"{SHA1}\"\n"),
                by_name("sha1_hash"),
                Ok(vec![sha1.clone()]),
            ),
            (
                "a;b\nx;198.51.100.7\n".into(),
                CsvOptions {
                    delimiter: ';',
                    ..col(1)
                },
                Ok(vec![ip.clone()]),
            ),
            // has_header forced on a header that looks like data.
            (
                format!("{MD5}\n198.51.100.7\n"),
                CsvOptions {
                    has_header: Some(true),
                    ..col(0)
                },
                Ok(vec![ip.clone()]),
            ),
            // A first row that is a broken indicator is an error, not a header.
            (
                "44d88612fea8a8f36de82e1278abb0\n".into(),
                col(0),
                Err(":1: cannot tell"),
            ),
            ("198.51.100.300,x\n".into(), col(0), Err(":1: cannot tell")),
            (format!("h\n{MD5}\nnot-a-hash\n"), col(0), Err(":3: cannot tell")),
            (format!("h,v\nx,{MD5}\ny\n"), col(1), Err(":3: 1 field(s)")),
            (
                format!("h,v\nx,{MD5}\ny, \n"),
                col(1),
                Err(":3: column 1 (counting from 0) is empty"),
            ),
            (
                "a,b\n1,2\n".into(),
                by_name("md5"),
                Err(":1: the header has no column named \"md5\""),
            ),
            // The line of a record after a quoted line break.
            (
                format!("h,note\n{MD5},\"multi\nline\"\nbad,x\n"),
                col(0),
                Err(":4: cannot tell"),
            ),
            ("".into(), col(0), Ok(vec![])),
            ("# only comments\n".into(), col(0), Ok(vec![])),
        ];
        for (text, options, want) in cases {
            let got = parse(&text, &options);
            match (&got, &want) {
                (Ok(g), Ok(w)) => {
                    let mut w = w.clone();
                    w.sort();
                    let mut g = g.clone();
                    g.sort();
                    assert_eq!(g, w, "{text:?}");
                }
                (Err(g), Err(w)) => {
                    assert!(g.starts_with("/feeds/f.csv:"), "{g}");
                    assert!(g.contains(w), "{text:?}: {g}");
                }
                _ => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn bad_options_are_refused() {
        for options in [
            CsvOptions {
                delimiter: '"',
                ..CsvOptions::default()
            },
            CsvOptions {
                delimiter: '#',
                ..CsvOptions::default()
            },
            CsvOptions {
                delimiter: 'é',
                ..CsvOptions::default()
            },
            CsvOptions {
                column: CsvColumn::Name("md5".into()),
                has_header: Some(false),
                ..CsvOptions::default()
            },
        ] {
            let err = parse_csv(Path::new("f.csv"), "x\n", &options, &defaults()).unwrap_err();
            assert!(matches!(err, CollectorError::Refused(_)), "{options:?}: {err}");
        }
    }

    #[test]
    fn a_100_mb_line_is_refused_without_reading_it_all() {
        let mut text = format!("{MD5}\n");
        text.push_str(&"a".repeat(100 << 20));
        text.push('\n');
        let err = parse(&text, &CsvOptions::default()).unwrap_err();
        assert!(
            err.contains(":2: a record of more than"),
            "{}",
            &err[..err.len().min(200)]
        );
        // The same inside an unclosed quote, and on a comment line.
        let quoted = format!("\"{}", "a".repeat(MAX_RECORD + 10));
        assert!(parse(&quoted, &CsvOptions::default())
            .unwrap_err()
            .contains(":1: a record of more than"));
        let comment = format!("#{}\n{MD5}\n", "a".repeat(MAX_RECORD + 10));
        assert!(parse(&comment, &CsvOptions::default())
            .unwrap_err()
            .contains(":1: a record of more than"));
    }

    #[test]
    fn a_record_at_the_limit_is_read() {
        let pad = "x".repeat(MAX_RECORD - MD5.len() - 1);
        let text = format!("{MD5},{pad}\n{MD5},{pad}");
        assert_eq!(parse(&text, &CsvOptions::default()).unwrap().len(), 1);
        let over = format!("{MD5},{pad}x");
        assert!(parse(&over, &CsvOptions::default()).is_err());
    }

    proptest! {
        #[test]
        fn random_text_never_panics(text in "\\PC*", delim in prop::sample::select(vec![',', ';', '\t', '|'])) {
            let options = CsvOptions { delimiter: delim, ..CsvOptions::default() };
            let _ = parse_csv(Path::new("p.csv"), &text, &options, &defaults());
        }

        #[test]
        fn csv_shaped_text_never_panics(
            text in "([\"a-f0-9.,;:\\r\\n# ]|44d88612fea8a8f36de82e1278abb02f|\"\"){0,60}",
            col in 0usize..3,
            header in prop::option::of(any::<bool>()),
        ) {
            let options = CsvOptions { column: CsvColumn::Index(col), has_header: header, ..CsvOptions::default() };
            let _ = parse_csv(Path::new("p.csv"), &text, &options, &defaults());
        }

        /// Quoting any field and writing it back with the RFC's rules reads back the same fields.
        #[test]
        fn quoted_fields_round_trip(fields in prop::collection::vec("[^\"]{0,8}|\"{1,3}|[a\",\r\n]{0,6}", 1..5)) {
            let line: Vec<String> = fields.iter().map(|f| format!("\"{}\"", f.replace('"', "\"\""))).collect();
            let text = format!("{}\r\n", line.join(","));
            let got = records(&text, b',').unwrap();
            prop_assert_eq!(got.len(), 1);
            prop_assert_eq!(&got[0].1, &fields);
        }
    }
}
