//! STIX 2.1 patterns: a lexer and a recursive-descent parser into an AST, and the canonical
//! printing of that AST.
//!
//! The grammar is the one of STIX 2.1 Part 5 (the OASIS ANTLR grammar `STIXPattern.g4`, which
//! the reference tools generate their parsers from): keywords are upper case (`AND`, `OR`,
//! `LIKE`, ...), booleans lower case, an object type may hold hyphens and a property may not
//! unless it is quoted (`file:hashes.'SHA-256'`), and the literals are strings with `\'` and `\\`
//! as their only escapes, integers, floats, `true`/`false`, `b'base64'`, `h'hex'` and
//! `t'timestamp'`. Whitespace and `/* */` and `//` comments are skipped.
//!
//! The parser accepts the whole grammar, including the parts Picket does not translate
//! (`FOLLOWEDBY`, qualifiers, `EXISTS`, ordering comparisons), so that translation can say
//! exactly which construct it refused. It is bounded: a pattern longer than
//! [`MAX_PATTERN_BYTES`] or nested deeper than [`MAX_DEPTH`] is an error, never a stack
//! overflow. Printing an AST ([`fmt::Display`]) gives a pattern that parses back to the same
//! AST.

use std::fmt;

/// Longest pattern parsed, in bytes.
pub const MAX_PATTERN_BYTES: usize = 256 << 10;
/// Deepest nesting of `[`, `(` parsed.
pub const MAX_DEPTH: usize = 64;

/// Why a pattern does not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// Byte offset into the pattern where the problem was found.
    pub offset: usize,
    /// What is wrong, without the position: the same for every pattern with the same problem
    /// except for the token it quotes.
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for PatternError {}

/// A whole pattern: one observation expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    /// The top-level observation expression.
    pub root: Observation,
}

/// An observation expression. `AND`, `OR` and `FOLLOWEDBY` chains are kept n-ary; a
/// parenthesised chain of the same operator stays a nested node, so printing is exact.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// `[ comparison ]`: one observation whose objects satisfy the comparison.
    Match(Comparison),
    /// `A AND B ...`: several observations, each matching one operand.
    And(Vec<Observation>),
    /// `A OR B ...`.
    Or(Vec<Observation>),
    /// `A FOLLOWEDBY B ...`.
    FollowedBy(Vec<Observation>),
    /// An observation expression with a qualifier after it.
    Qualified(Box<Observation>, Qualifier),
}

/// A qualifier on an observation expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Qualifier {
    /// `WITHIN n SECONDS`, with the number as written.
    Within(String),
    /// `REPEATS n TIMES`, with the number as written.
    Repeats(String),
    /// `START t'..' STOP t'..'`, with the timestamps as written (without `t'` and `'`).
    StartStop(String, String),
}

impl Qualifier {
    /// The qualifier's keyword: `WITHIN`, `REPEATS` or `START/STOP`.
    pub fn keyword(&self) -> &'static str {
        match self {
            Qualifier::Within(_) => "WITHIN",
            Qualifier::Repeats(_) => "REPEATS",
            Qualifier::StartStop(..) => "START/STOP",
        }
    }
}

/// A comparison expression: what one observation's objects must satisfy.
#[derive(Debug, Clone, PartialEq)]
pub enum Comparison {
    /// All operands hold for the same object.
    And(Vec<Comparison>),
    /// Any operand holds.
    Or(Vec<Comparison>),
    /// One property test.
    Test(Test),
}

/// One property test: `path [NOT] operator operand`, or `EXISTS path`.
#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    /// The object path on the left.
    pub path: ObjectPath,
    /// Whether `NOT` precedes the operator.
    pub negated: bool,
    /// The operator and its operand.
    pub op: Operator,
}

/// A comparison operator with its operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Operator {
    /// `=` (or `==`).
    Eq(Literal),
    /// `!=` (or `<>`).
    Neq(Literal),
    /// `<`.
    Lt(Literal),
    /// `<=`.
    Le(Literal),
    /// `>`.
    Gt(Literal),
    /// `>=`.
    Ge(Literal),
    /// `IN (a, b, ...)`.
    In(Vec<Literal>),
    /// `LIKE 'text'`, with SQL's `%` and `_` wildcards.
    Like(String),
    /// `MATCHES 'regex'`.
    Matches(String),
    /// `ISSUBSET 'cidr'`.
    IsSubset(String),
    /// `ISSUPERSET 'cidr'`.
    IsSuperset(String),
    /// `EXISTS path` (the path is the test's).
    Exists,
}

impl Operator {
    /// The operator as written in canonical form (`=`, `!=`, `LIKE`, ...).
    pub fn symbol(&self) -> &'static str {
        match self {
            Operator::Eq(_) => "=",
            Operator::Neq(_) => "!=",
            Operator::Lt(_) => "<",
            Operator::Le(_) => "<=",
            Operator::Gt(_) => ">",
            Operator::Ge(_) => ">=",
            Operator::In(_) => "IN",
            Operator::Like(_) => "LIKE",
            Operator::Matches(_) => "MATCHES",
            Operator::IsSubset(_) => "ISSUBSET",
            Operator::IsSuperset(_) => "ISSUPERSET",
            Operator::Exists => "EXISTS",
        }
    }
}

/// An object path: `type:property.sub[0].sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath {
    /// The object type, such as `file` or `ipv4-addr`.
    pub object_type: String,
    /// The steps after the colon; the first is always a [`Step::Key`].
    pub steps: Vec<Step>,
}

impl ObjectPath {
    /// The property names of the path when it has no list index, such as `["hashes", "MD5"]`.
    pub fn keys(&self) -> Option<Vec<&str>> {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Key(k) => Some(k.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// One step of an object path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A property name (written bare or quoted).
    Key(String),
    /// A list index, as written (`0`, `-1`).
    Index(String),
    /// `[*]`: any list element.
    AnyIndex,
}

/// A literal operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// An integer, as written without a leading `+` (the grammar puts no bound on it).
    Int(String),
    /// A floating-point number, as written without a leading `+`.
    Float(String),
    /// A string, unescaped.
    Str(String),
    /// `true` or `false`.
    Bool(bool),
    /// `b'...'`: bytes written in base64.
    Binary(Vec<u8>),
    /// `h'...'`: bytes written in hex.
    Hex(Vec<u8>),
    /// `t'...'`: a timestamp, as written between the quotes.
    Timestamp(String),
}

/// Parses a STIX 2.1 pattern.
pub fn parse_pattern(text: &str) -> Result<Pattern, PatternError> {
    if text.len() > MAX_PATTERN_BYTES {
        return Err(PatternError {
            offset: MAX_PATTERN_BYTES,
            message: format!("longer than {MAX_PATTERN_BYTES} bytes"),
        });
    }
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
        end: text.len(),
    };
    let root = p.observations()?;
    match p.peek() {
        None => Ok(Pattern { root }),
        Some(_) => Err(p.unexpected("the end of the pattern")),
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    And,
    Or,
    Not,
    FollowedBy,
    Like,
    Matches,
    IsSuperset,
    IsSubset,
    Exists,
    Last,
    In,
    Start,
    Stop,
    Seconds,
    Within,
    Repeats,
    Times,
}

const KEYWORDS: [(&str, Keyword); 17] = [
    ("AND", Keyword::And),
    ("OR", Keyword::Or),
    ("NOT", Keyword::Not),
    ("FOLLOWEDBY", Keyword::FollowedBy),
    ("LIKE", Keyword::Like),
    ("MATCHES", Keyword::Matches),
    ("ISSUPERSET", Keyword::IsSuperset),
    ("ISSUBSET", Keyword::IsSubset),
    ("EXISTS", Keyword::Exists),
    ("LAST", Keyword::Last),
    ("IN", Keyword::In),
    ("START", Keyword::Start),
    ("STOP", Keyword::Stop),
    ("SECONDS", Keyword::Seconds),
    ("WITHIN", Keyword::Within),
    ("REPEATS", Keyword::Repeats),
    ("TIMES", Keyword::Times),
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBrack,
    RBrack,
    LParen,
    RParen,
    Colon,
    Dot,
    Comma,
    Star,
    Eq,
    Neq,
    Lt,
    Le,
    Gt,
    Ge,
    Kw(Keyword),
    /// An identifier; `true` when it holds a hyphen (allowed in object types only).
    Ident(String, bool),
    Str(String),
    /// An integer, and whether it was written with a `-`.
    Int(String, bool),
    /// A float, and whether it was written with a `-`.
    Float(String, bool),
    Bool(bool),
    Binary(Vec<u8>),
    Hex(Vec<u8>),
    Timestamp(String),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LBrack => "'['".into(),
            Tok::RBrack => "']'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Colon => "':'".into(),
            Tok::Dot => "'.'".into(),
            Tok::Comma => "','".into(),
            Tok::Star => "'*'".into(),
            Tok::Eq => "'='".into(),
            Tok::Neq => "'!='".into(),
            Tok::Lt => "'<'".into(),
            Tok::Le => "'<='".into(),
            Tok::Gt => "'>'".into(),
            Tok::Ge => "'>='".into(),
            Tok::Kw(k) => {
                let name = KEYWORDS.iter().find(|(_, kw)| kw == k).map_or("?", |(s, _)| *s);
                format!("'{name}'")
            }
            Tok::Ident(s, _) => format!("'{}'", clip(s)),
            Tok::Str(_) => "a string".into(),
            Tok::Int(..) => "an integer".into(),
            Tok::Float(..) => "a number".into(),
            Tok::Bool(_) => "a boolean".into(),
            Tok::Binary(_) => "a binary literal".into(),
            Tok::Hex(_) => "a hex literal".into(),
            Tok::Timestamp(_) => "a timestamp".into(),
        }
    }
}

/// At most 24 characters of `s`, for messages.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(24).filter(|c| !c.is_control()).collect();
    if s.chars().count() > 24 {
        out.push_str("...");
    }
    out
}

fn is_space(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\r' | '\n' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn err(&self, at: usize, message: impl Into<String>) -> PatternError {
        PatternError {
            offset: at,
            message: message.into(),
        }
    }

    /// Skips whitespace and comments.
    fn skip(&mut self) -> Result<(), PatternError> {
        loop {
            let rest = self.rest();
            if let Some(c) = rest.chars().next().filter(|&c| is_space(c)) {
                self.pos += c.len_utf8();
            } else if let Some(body) = rest.strip_prefix("/*") {
                match body.find("*/") {
                    Some(end) => self.pos += 2 + end + 2,
                    None => return Err(self.err(self.pos, "unterminated comment")),
                }
            } else if rest.starts_with("//") {
                let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
                self.pos += end;
            } else {
                return Ok(());
            }
        }
    }

    /// A quoted body starting at the opening quote: returns the raw text between the quotes.
    fn quoted(&mut self, what: &str) -> Result<String, PatternError> {
        let start = self.pos;
        self.pos += 1; // the opening quote
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err(start, format!("unterminated {what}")));
            };
            self.pos += c.len_utf8();
            match c {
                '\'' => return Ok(out),
                '\\' => match self.peek() {
                    Some(e @ ('\'' | '\\')) => {
                        self.pos += 1;
                        out.push(e);
                    }
                    _ => {
                        return Err(self.err(
                            self.pos - 1,
                            format!("invalid escape in {what}: only \\' and \\\\ are allowed"),
                        ))
                    }
                },
                c => out.push(c),
            }
        }
    }

    fn number(&mut self) -> Result<Tok, PatternError> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        let mut i = self.pos;
        let sign = match bytes.get(i) {
            Some(b'+') => Some(false),
            Some(b'-') => Some(true),
            _ => None,
        };
        if sign.is_some() {
            i += 1;
        }
        let digits_start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let int_digits = i - digits_start;
        let fraction = bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
        if fraction {
            i += 1;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            self.pos = i;
            let text = self.text[start..i].trim_start_matches('+').to_owned();
            return Ok(Tok::Float(text, sign == Some(true)));
        }
        if int_digits == 0 {
            return Err(self.err(start, format!("unexpected '{}'", &self.text[start..=start])));
        }
        // `0` is a whole literal: `01` is two (and so a syntax error), as in the grammar.
        let end = if bytes[digits_start] == b'0' {
            digits_start + 1
        } else {
            i
        };
        self.pos = end;
        let text = self.text[start..end].trim_start_matches('+').to_owned();
        Ok(Tok::Int(text, sign == Some(true)))
    }

    fn next(&mut self) -> Result<Option<(usize, Tok)>, PatternError> {
        self.skip()?;
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Ok(None);
        };
        let two = |l: &Lexer<'_>, s: &str| l.rest().starts_with(s);
        let (tok, len) = match c {
            '[' => (Tok::LBrack, 1),
            ']' => (Tok::RBrack, 1),
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ':' => (Tok::Colon, 1),
            ',' => (Tok::Comma, 1),
            '*' => (Tok::Star, 1),
            '=' if two(self, "==") => (Tok::Eq, 2),
            '=' => (Tok::Eq, 1),
            '!' if two(self, "!=") => (Tok::Neq, 2),
            '<' if two(self, "<>") => (Tok::Neq, 2),
            '<' if two(self, "<=") => (Tok::Le, 2),
            '<' => (Tok::Lt, 1),
            '>' if two(self, ">=") => (Tok::Ge, 2),
            '>' => (Tok::Gt, 1),
            '.' if self.peek2().is_some_and(|d| d.is_ascii_digit()) => {
                return self.number().map(|t| Some((start, t)))
            }
            '.' => (Tok::Dot, 1),
            '+' | '-' | '0'..='9' => return self.number().map(|t| Some((start, t))),
            '\'' => return self.quoted("string").map(|s| Some((start, Tok::Str(s)))),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let text = self.text;
                let rest = &text[self.pos..];
                let len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .unwrap_or(rest.len());
                let word = &rest[..len];
                if rest[len..].starts_with('\'') && matches!(word, "t" | "h" | "b") {
                    self.pos += 1;
                    let body = self.quoted("literal")?;
                    let tok = match word {
                        "t" => Tok::Timestamp(timestamp_literal(&body).ok_or_else(|| {
                            self.err(
                                start,
                                "invalid timestamp literal: expected t'YYYY-MM-DDTHH:MM:SS[.s]Z'",
                            )
                        })?),
                        "h" => Tok::Hex(hex_literal(&body).ok_or_else(|| {
                            self.err(start, "invalid hex literal: expected pairs of hex digits")
                        })?),
                        _ => Tok::Binary(base64_decode(&body).ok_or_else(|| {
                            self.err(start, "invalid binary literal: expected padded base64")
                        })?),
                    };
                    return Ok(Some((start, tok)));
                }
                let tok = if let Some((_, k)) = KEYWORDS.iter().find(|(s, _)| *s == word) {
                    Tok::Kw(*k)
                } else if word == "true" || word == "false" {
                    Tok::Bool(word == "true")
                } else {
                    Tok::Ident(word.to_owned(), word.contains('-'))
                };
                (tok, len)
            }
            c => return Err(self.err(start, format!("unexpected character {c:?}"))),
        };
        self.pos += len;
        Ok(Some((start, tok)))
    }
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, PatternError> {
    let mut lexer = Lexer { text, pos: 0 };
    let mut out = Vec::new();
    while let Some(t) = lexer.next()? {
        out.push(t);
    }
    Ok(out)
}

/// Checks the shape `YYYY-MM-DDTHH:MM:SS[.d+]Z` and returns it unchanged.
fn timestamp_literal(body: &str) -> Option<String> {
    let b = body.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let shape = b.len() >= 20
        && (0..4).all(digit)
        && b[4] == b'-'
        && digit(5)
        && digit(6)
        && b[7] == b'-'
        && digit(8)
        && digit(9)
        && b[10] == b'T'
        && digit(11)
        && digit(12)
        && b[13] == b':'
        && digit(14)
        && digit(15)
        && b[16] == b':'
        && digit(17)
        && digit(18);
    if !shape {
        return None;
    }
    let tail = &b[19..];
    let ok = match tail {
        [b'Z'] => true,
        [b'.', frac @ .., b'Z'] => !frac.is_empty() && frac.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    ok.then(|| body.to_owned())
}

fn hex_literal(body: &str) -> Option<Vec<u8>> {
    if !body.len().is_multiple_of(2) || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    hex::decode(body).ok()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Decodes padded base64 as STIX 2.1's grammar writes it: one or more groups of four, padding
/// only in the last.
fn base64_decode(body: &str) -> Option<Vec<u8>> {
    let b = body.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| BASE64.iter().position(|&x| x == c).map(|v| v as u32);
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    let groups = b.len() / 4;
    for (g, chunk) in b.chunks(4).enumerate() {
        let last = g + 1 == groups;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

fn base64_encode(data: &[u8]) -> String {
    crate::taxii::base64(data)
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

struct Parser {
    tokens: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(o, _)| *o)
    }

    fn bump(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn unexpected(&self, expected: &str) -> PatternError {
        let found = self.peek().map_or_else(|| "the end".to_owned(), Tok::describe);
        PatternError {
            offset: self.offset(),
            message: format!("expected {expected}, found {found}"),
        }
    }

    fn expect(&mut self, tok: &Tok, expected: &str) -> Result<(), PatternError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn enter(&mut self) -> Result<(), PatternError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(PatternError {
                offset: self.offset(),
                message: format!("nested deeper than {MAX_DEPTH} levels"),
            });
        }
        Ok(())
    }

    /// Parses `item (KW item)*` into one node, or the single item.
    fn chain<T>(
        &mut self,
        kw: Keyword,
        item: fn(&mut Parser) -> Result<T, PatternError>,
        wrap: fn(Vec<T>) -> T,
    ) -> Result<T, PatternError> {
        let first = item(self)?;
        if self.peek() != Some(&Tok::Kw(kw)) {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat(&Tok::Kw(kw)) {
            items.push(item(self)?);
        }
        Ok(wrap(items))
    }

    fn observations(&mut self) -> Result<Observation, PatternError> {
        self.chain(
            Keyword::FollowedBy,
            Parser::observation_or,
            Observation::FollowedBy,
        )
    }

    fn observation_or(&mut self) -> Result<Observation, PatternError> {
        self.chain(Keyword::Or, Parser::observation_and, Observation::Or)
    }

    fn observation_and(&mut self) -> Result<Observation, PatternError> {
        self.chain(Keyword::And, Parser::observation_qualified, Observation::And)
    }

    fn observation_qualified(&mut self) -> Result<Observation, PatternError> {
        let mut obs = self.observation_atom()?;
        while let Some(q) = self.qualifier()? {
            obs = Observation::Qualified(Box::new(obs), q);
        }
        Ok(obs)
    }

    fn observation_atom(&mut self) -> Result<Observation, PatternError> {
        self.enter()?;
        let obs = if self.eat(&Tok::LBrack) {
            let c = self.comparison_or()?;
            self.expect(&Tok::RBrack, "']'")?;
            Observation::Match(c)
        } else if self.eat(&Tok::LParen) {
            let o = self.observations()?;
            self.expect(&Tok::RParen, "')'")?;
            o
        } else {
            return Err(self.unexpected("'[' or '('"));
        };
        self.depth -= 1;
        Ok(obs)
    }

    fn qualifier(&mut self) -> Result<Option<Qualifier>, PatternError> {
        let q = match self.peek() {
            Some(Tok::Kw(Keyword::Within)) => {
                self.pos += 1;
                let n = match self.bump() {
                    Some(Tok::Int(n, false)) | Some(Tok::Float(n, false)) => n,
                    _ => {
                        self.pos -= 1;
                        return Err(self.unexpected("a positive number of seconds"));
                    }
                };
                self.expect(&Tok::Kw(Keyword::Seconds), "'SECONDS'")?;
                Qualifier::Within(n)
            }
            Some(Tok::Kw(Keyword::Repeats)) => {
                self.pos += 1;
                let n = match self.bump() {
                    Some(Tok::Int(n, false)) => n,
                    _ => {
                        self.pos -= 1;
                        return Err(self.unexpected("a positive integer"));
                    }
                };
                self.expect(&Tok::Kw(Keyword::Times), "'TIMES'")?;
                Qualifier::Repeats(n)
            }
            Some(Tok::Kw(Keyword::Start)) => {
                self.pos += 1;
                let start = self.timestamp()?;
                self.expect(&Tok::Kw(Keyword::Stop), "'STOP'")?;
                let stop = self.timestamp()?;
                Qualifier::StartStop(start, stop)
            }
            _ => return Ok(None),
        };
        Ok(Some(q))
    }

    fn timestamp(&mut self) -> Result<String, PatternError> {
        match self.peek() {
            Some(Tok::Timestamp(t)) => {
                let t = t.clone();
                self.pos += 1;
                Ok(t)
            }
            _ => Err(self.unexpected("a timestamp t'...'")),
        }
    }

    fn comparison_or(&mut self) -> Result<Comparison, PatternError> {
        self.chain(Keyword::Or, Parser::comparison_and, Comparison::Or)
    }

    fn comparison_and(&mut self) -> Result<Comparison, PatternError> {
        self.chain(Keyword::And, Parser::test, Comparison::And)
    }

    fn test(&mut self) -> Result<Comparison, PatternError> {
        if self.eat(&Tok::LParen) {
            self.enter()?;
            let c = self.comparison_or()?;
            self.expect(&Tok::RParen, "')'")?;
            self.depth -= 1;
            return Ok(c);
        }
        if self.eat(&Tok::Kw(Keyword::Exists)) {
            let path = self.path()?;
            return Ok(Comparison::Test(Test {
                path,
                negated: false,
                op: Operator::Exists,
            }));
        }
        let path = self.path()?;
        let negated = self.eat(&Tok::Kw(Keyword::Not));
        let op = match self.bump() {
            Some(Tok::Eq) => Operator::Eq(self.primitive(true)?),
            Some(Tok::Neq) => Operator::Neq(self.primitive(true)?),
            Some(Tok::Lt) => Operator::Lt(self.primitive(false)?),
            Some(Tok::Le) => Operator::Le(self.primitive(false)?),
            Some(Tok::Gt) => Operator::Gt(self.primitive(false)?),
            Some(Tok::Ge) => Operator::Ge(self.primitive(false)?),
            Some(Tok::Kw(Keyword::In)) => Operator::In(self.set()?),
            Some(Tok::Kw(Keyword::Like)) => Operator::Like(self.string()?),
            Some(Tok::Kw(Keyword::Matches)) => Operator::Matches(self.string()?),
            Some(Tok::Kw(Keyword::IsSubset)) => Operator::IsSubset(self.string()?),
            Some(Tok::Kw(Keyword::IsSuperset)) => Operator::IsSuperset(self.string()?),
            _ => {
                self.pos -= 1;
                return Err(self.unexpected("a comparison operator"));
            }
        };
        Ok(Comparison::Test(Test { path, negated, op }))
    }

    fn string(&mut self) -> Result<String, PatternError> {
        match self.peek() {
            Some(Tok::Str(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.unexpected("a string")),
        }
    }

    /// A literal; booleans only where `bools` (equality), as the grammar has it.
    fn primitive(&mut self, bools: bool) -> Result<Literal, PatternError> {
        let lit = match self.peek() {
            Some(Tok::Int(n, _)) => Literal::Int(n.clone()),
            Some(Tok::Float(n, _)) => Literal::Float(n.clone()),
            Some(Tok::Str(s)) => Literal::Str(s.clone()),
            Some(Tok::Bool(b)) if bools => Literal::Bool(*b),
            Some(Tok::Binary(b)) => Literal::Binary(b.clone()),
            Some(Tok::Hex(b)) => Literal::Hex(b.clone()),
            Some(Tok::Timestamp(t)) => Literal::Timestamp(t.clone()),
            _ => return Err(self.unexpected("a literal")),
        };
        self.pos += 1;
        Ok(lit)
    }

    fn set(&mut self) -> Result<Vec<Literal>, PatternError> {
        self.expect(&Tok::LParen, "'('")?;
        let mut out = Vec::new();
        if self.eat(&Tok::RParen) {
            return Ok(out);
        }
        loop {
            out.push(self.primitive(true)?);
            if self.eat(&Tok::RParen) {
                return Ok(out);
            }
            self.expect(&Tok::Comma, "',' or ')'")?;
        }
    }

    fn path(&mut self) -> Result<ObjectPath, PatternError> {
        let object_type = match self.peek() {
            Some(Tok::Ident(s, _)) => s.clone(),
            _ => return Err(self.unexpected("an object type")),
        };
        self.pos += 1;
        self.expect(&Tok::Colon, "':'")?;
        let mut steps = vec![Step::Key(self.key("a property name")?)];
        loop {
            if self.eat(&Tok::Dot) {
                steps.push(Step::Key(self.key("a property name")?));
            } else if self.eat(&Tok::LBrack) {
                let step = match self.bump() {
                    Some(Tok::Int(n, _)) => Step::Index(n),
                    Some(Tok::Star) => Step::AnyIndex,
                    _ => {
                        self.pos -= 1;
                        return Err(self.unexpected("a list index or '*'"));
                    }
                };
                self.expect(&Tok::RBrack, "']'")?;
                steps.push(step);
            } else {
                return Ok(ObjectPath { object_type, steps });
            }
        }
    }

    fn key(&mut self, expected: &str) -> Result<String, PatternError> {
        let k = match self.peek() {
            Some(Tok::Ident(s, false)) | Some(Tok::Str(s)) => s.clone(),
            _ => return Err(self.unexpected(expected)),
        };
        self.pos += 1;
        Ok(k)
    }
}

// ---------------------------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------------------------

/// Writes `s` as a STIX string literal.
fn quote(s: &str, f: &mut impl fmt::Write) -> fmt::Result {
    f.write_char('\'')?;
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char('\'')
}

/// Whether `s` can be written as a bare property name.
fn bare_key(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.iter().any(|(k, _)| *k == s)
        && s != "true"
        && s != "false"
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.object_type)?;
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if bare_key(k) {
                        f.write_str(k)?;
                    } else {
                        quote(k, f)?;
                    }
                }
                Step::Index(n) => write!(f, "[{n}]")?,
                Step::AnyIndex => f.write_str("[*]")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int(n) | Literal::Float(n) => f.write_str(n),
            Literal::Str(s) => quote(s, f),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Binary(b) => write!(f, "b'{}'", base64_encode(b)),
            Literal::Hex(b) => write!(f, "h'{}'", hex::encode(b)),
            Literal::Timestamp(t) => write!(f, "t'{t}'"),
        }
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == Operator::Exists {
            return write!(f, "EXISTS {}", self.path);
        }
        write!(f, "{} ", self.path)?;
        if self.negated {
            f.write_str("NOT ")?;
        }
        write!(f, "{} ", self.op.symbol())?;
        match &self.op {
            Operator::Eq(l)
            | Operator::Neq(l)
            | Operator::Lt(l)
            | Operator::Le(l)
            | Operator::Gt(l)
            | Operator::Ge(l) => write!(f, "{l}"),
            Operator::In(set) => {
                f.write_str("(")?;
                for (i, l) in set.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{l}")?;
                }
                f.write_str(")")
            }
            Operator::Like(s) | Operator::Matches(s) | Operator::IsSubset(s) | Operator::IsSuperset(s) => {
                quote(s, f)
            }
            Operator::Exists => Ok(()),
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (items, kw) = match self {
            Comparison::Test(t) => return write!(f, "{t}"),
            Comparison::And(items) => (items, " AND "),
            Comparison::Or(items) => (items, " OR "),
        };
        for (i, c) in items.iter().enumerate() {
            if i > 0 {
                f.write_str(kw)?;
            }
            match c {
                Comparison::Test(_) => write!(f, "{c}")?,
                _ => write!(f, "({c})")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Qualifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Qualifier::Within(n) => write!(f, "WITHIN {n} SECONDS"),
            Qualifier::Repeats(n) => write!(f, "REPEATS {n} TIMES"),
            Qualifier::StartStop(a, b) => write!(f, "START t'{a}' STOP t'{b}'"),
        }
    }
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (items, kw) = match self {
            Observation::Match(c) => return write!(f, "[{c}]"),
            Observation::Qualified(inner, q) => {
                return match **inner {
                    Observation::Match(_) | Observation::Qualified(..) => write!(f, "{inner} {q}"),
                    _ => write!(f, "({inner}) {q}"),
                }
            }
            Observation::And(items) => (items, " AND "),
            Observation::Or(items) => (items, " OR "),
            Observation::FollowedBy(items) => (items, " FOLLOWEDBY "),
        };
        for (i, o) in items.iter().enumerate() {
            if i > 0 {
                f.write_str(kw)?;
            }
            match o {
                Observation::Match(_) | Observation::Qualified(..) => write!(f, "{o}")?,
                _ => write!(f, "({o})")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Pattern {
        parse_pattern(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// Valid patterns (checked against the reference grammar's parser) print to the canonical
    /// text given, and the canonical text parses to the same AST.
    #[test]
    fn valid_patterns_print_canonically() {
        let cases = [
            ("[file:size = 1]", "[file:size = 1]"),
            ("[ file : size == +1 ]", "[file:size = 1]"),
            ("[file:size = -1]", "[file:size = -1]"),
            ("[file:x[*].y = 1]", "[file:x[*].y = 1]"),
            ("[file:x[-1].y = 1]", "[file:x[-1].y = 1]"),
            ("[file:'name' = 'a']", "[file:name = 'a']"),
            ("[file:hashes.'SHA-256' = 'ab']", "[file:hashes.'SHA-256' = 'ab']"),
            ("[file:hashes.md5 = 'ab']", "[file:hashes.md5 = 'ab']"),
            ("[file:name = 'a\\'b\\\\']", "[file:name = 'a\\'b\\\\']"),
            ("[file:name NOT = 'a']", "[file:name NOT = 'a']"),
            ("[file:name <> 'a']", "[file:name != 'a']"),
            ("[EXISTS file:name]", "[EXISTS file:name]"),
            ("[file:size IN (1,2)]", "[file:size IN (1, 2)]"),
            ("[file:size NOT IN ()]", "[file:size NOT IN ()]"),
            ("[file:x = .5]", "[file:x = .5]"),
            ("[file:x = h'AB']", "[file:x = h'ab']"),
            ("[file:x = b'YQ==']", "[file:x = b'YQ==']"),
            ("[file:x = true]", "[file:x = true]"),
            (
                "[file:x = t'2016-01-01T00:00:00.123Z']",
                "[file:x = t'2016-01-01T00:00:00.123Z']",
            ),
            ("[file:name = 'a' /* c */] // x", "[file:name = 'a']"),
            ("[file:name = 'a'\n]", "[file:name = 'a']"),
            ("[file:name\u{a0}= 'a']", "[file:name = 'a']"),
            ("[file-x:name = 'a']", "[file-x:name = 'a']"),
            (
                "[a:b = 1 AND a:c = 2 OR a:d = 3]",
                "[(a:b = 1 AND a:c = 2) OR a:d = 3]",
            ),
            (
                "[(a:b = 1 OR a:c = 2) AND a:d = 3]",
                "[(a:b = 1 OR a:c = 2) AND a:d = 3]",
            ),
            (
                "[(a:b = 1 OR a:c = 2) OR a:d = 3]",
                "[(a:b = 1 OR a:c = 2) OR a:d = 3]",
            ),
            ("[(a:b = 1)]", "[a:b = 1]"),
            ("([a:b = 1])", "[a:b = 1]"),
            (
                "[a:b = 1] OR [a:c = 2] AND [a:d = 3]",
                "[a:b = 1] OR ([a:c = 2] AND [a:d = 3])",
            ),
            (
                "[a:b = 1] AND [a:c = 2] FOLLOWEDBY [a:d = 3]",
                "([a:b = 1] AND [a:c = 2]) FOLLOWEDBY [a:d = 3]",
            ),
            ("[a:b = 1]WITHIN 5 SECONDS", "[a:b = 1] WITHIN 5 SECONDS"),
            (
                "[a:b = 1] WITHIN 5.5 SECONDS REPEATS 2 TIMES",
                "[a:b = 1] WITHIN 5.5 SECONDS REPEATS 2 TIMES",
            ),
            (
                "([a:b = 1] OR [a:c = 1]) START t'2016-01-01T00:00:00Z' STOP t'2017-01-01T00:00:00Z'",
                "([a:b = 1] OR [a:c = 1]) START t'2016-01-01T00:00:00Z' STOP t'2017-01-01T00:00:00Z'",
            ),
            (
                "[a:b LIKE 'x%' AND a:c MATCHES '^x$']",
                "[a:b LIKE 'x%' AND a:c MATCHES '^x$']",
            ),
            (
                "[ipv4-addr:value ISSUBSET '1.2.3.0/24']",
                "[ipv4-addr:value ISSUBSET '1.2.3.0/24']",
            ),
            ("[a:'AND' = 1]", "[a:'AND' = 1]"),
            (
                "[a:size = 99999999999999999999999999999]",
                "[a:size = 99999999999999999999999999999]",
            ),
        ];
        for (input, canonical) in cases {
            let p = ok(input);
            assert_eq!(p.to_string(), canonical, "{input}");
            assert_eq!(ok(canonical), p, "{input}");
        }
    }

    /// Invalid patterns (rejected by the reference grammar's parser too).
    #[test]
    fn invalid_patterns_are_errors() {
        let cases = [
            ("[file:name = 'a' and file:size = 1]", "expected ']', found 'and'"),
            ("[file:x[01].y = 1]", "expected ']', found an integer"),
            (
                "[file:name = 'a'] within 5 seconds",
                "expected the end of the pattern, found 'within'",
            ),
            (
                "[file:name = 'a'] WITHIN -5 SECONDS",
                "expected a positive number of seconds",
            ),
            ("[NOT file:name = 'a']", "expected an object type, found 'NOT'"),
            ("[file:size = TRUE]", "expected a literal, found 'TRUE'"),
            ("[file:size > true]", "expected a literal, found a boolean"),
            ("[file:name = 'a\\nb']", "invalid escape"),
            ("[file:na-me = 'a']", "expected a property name, found 'na-me'"),
            (
                "[file:hashes.SHA-256 = 'a']",
                "expected a property name, found 'SHA-256'",
            ),
            ("[file:name = \"a\"]", "unexpected character '\"'"),
            ("[file:size = h'abc']", "invalid hex literal"),
            ("[file:x = b'YQ']", "invalid binary literal"),
            ("[file:x = b'']", "invalid binary literal"),
            ("[file:x = t'2016-01-01t00:00:00z']", "invalid timestamp literal"),
            ("[file:size = 5.]", "expected ']', found '.'"),
            ("[file:size = 1e5]", "expected ']', found 'e5'"),
            ("[]", "expected an object type, found ']'"),
            ("[file:name = 'a'] OR", "expected '[' or '(', found the end"),
            ("[file:name = 'a'", "expected ']', found the end"),
            ("[file:name = 'a", "unterminated string"),
            ("[file:name = 'a' /* x", "unterminated comment"),
            ("[file:size = - 1]", "unexpected '-'"),
            ("[1file:a = 'a']", "expected an object type, found an integer"),
            (
                "[a:b = 1] START '2016-01-01T00:00:00Z' STOP t'2017-01-01T00:00:00Z'",
                "expected a timestamp",
            ),
            ("", "expected '[' or '(', found the end"),
        ];
        for (input, want) in cases {
            let err = parse_pattern(input).expect_err(input);
            assert!(err.message.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn nesting_and_length_are_bounded() {
        let deep = format!(
            "{}[a:b = 1]{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(parse_pattern(&deep)
            .unwrap_err()
            .message
            .contains("nested deeper"));
        let deep = format!(
            "[{}a:b = 1{}]",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(parse_pattern(&deep)
            .unwrap_err()
            .message
            .contains("nested deeper"));
        let ok_depth = format!(
            "{}[a:b = 1]{}",
            "(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert!(parse_pattern(&ok_depth).is_ok());
        let long = format!("[a:b = '{}']", "x".repeat(MAX_PATTERN_BYTES));
        assert!(parse_pattern(&long).unwrap_err().message.contains("longer than"));
    }

    #[test]
    fn base64_round_trips() {
        for data in [&b"a"[..], b"ab", b"abc", b"abcd", &[0xff, 0, 0x80]] {
            let text = base64_encode(data);
            assert_eq!(base64_decode(&text).as_deref(), Some(data), "{text}");
        }
        assert_eq!(base64_encode(b"a"), "YQ==");
        assert_eq!(base64_decode("YQ=="), Some(b"a".to_vec()));
        assert_eq!(base64_decode("Y=Q="), None);
        assert_eq!(base64_decode("YQ==YQ=="), None);
    }
}
