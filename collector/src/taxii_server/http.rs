//! HTTP/1.1 framing for the TAXII server, without I/O: a request head parsed from bytes, and
//! how long its body is. The shell ([`super`]) reads at most [`MAX_HEAD`] bytes of head before
//! calling [`parse_head`], so everything here works on bounded input.
//!
//! Invariant: a request whose body length is not given exactly once, as a plain number, has no
//! trustworthy framing and is refused (no chunked bodies, no two `Content-Length`s that could be
//! read two ways by a proxy in front).

/// The largest request head read (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, as sent (`GET`, `POST`).
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// The headers in order, names as sent, values trimmed.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body's length: `Ok(0)` without one, `Err` with the reason when the framing cannot be
    /// trusted (chunked, a malformed or repeated `Content-Length`).
    pub fn body_length(&self) -> Result<usize, &'static str> {
        if self.header("transfer-encoding").is_some() {
            return Err("a body needs a Content-Length (no Transfer-Encoding)");
        }
        let mut lengths = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        let Some((_, first)) = lengths.next() else {
            return Ok(0);
        };
        if lengths.next().is_some() {
            return Err("Content-Length is given twice");
        }
        if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
            return Err("Content-Length is not a number");
        }
        first.parse().map_err(|_| "Content-Length is too large")
    }
}

/// Parses a request head (the bytes before the blank line, without it); `None` when it is not
/// an HTTP/1.x request head in UTF-8.
pub fn parse_head(head: &[u8]) -> Option<Request> {
    if head.len() > MAX_HEAD {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    if !version.starts_with("HTTP/1.") || first.next().is_some() || method.is_empty() || target.is_empty() {
        return None;
    }
    let mut headers = Vec::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let (k, v) = l.split_once(':')?;
        // A name with white space in it is how request smuggling starts: refused.
        if k.is_empty() || k.bytes().any(|b| b.is_ascii_whitespace()) {
            return None;
        }
        headers.push((k.to_owned(), v.trim().to_owned()));
    }
    Some(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(head: &str, expected: Option<(&str, &str, Result<usize, ()>)>) {
        let got = parse_head(head.as_bytes()).map(|r| {
            let len = r.body_length().map_err(|_| ());
            (r.method, r.target, len)
        });
        let expected = expected.map(|(m, t, l)| (m.to_owned(), t.to_owned(), l));
        assert_eq!(got, expected, "{head:?}");
    }

    #[test]
    fn heads_and_body_lengths() {
        check(
            "GET /taxii2/ HTTP/1.1\r\nHost: x",
            Some(("GET", "/taxii2/", Ok(0))),
        );
        check(
            "POST /a/ HTTP/1.1\r\ncontent-length: 12",
            Some(("POST", "/a/", Ok(12))),
        );
        check(
            "POST /a/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1",
            Some(("POST", "/a/", Err(()))),
        );
        check(
            "POST /a/ HTTP/1.1\r\nContent-Length: -1",
            Some(("POST", "/a/", Err(()))),
        );
        check(
            "POST /a/ HTTP/1.1\r\nContent-Length: 99999999999999999999999",
            Some(("POST", "/a/", Err(()))),
        );
        check(
            "POST /a/ HTTP/1.1\r\nTransfer-Encoding: chunked",
            Some(("POST", "/a/", Err(()))),
        );
        check("GET /a/ HTTP/2\r\n", None);
        check("GET /a/ HTTP/1.1 x\r\n", None);
        check("GET  HTTP/1.1\r\n", None);
        check("GET /a/ HTTP/1.1\r\nContent-Length : 5", None);
        check("GET /a/ HTTP/1.1\r\nno colon", None);
        assert_eq!(parse_head(b"GET /\xff HTTP/1.1"), None);
    }
}
