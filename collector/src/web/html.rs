//! HTML for the dashboard, without I/O: the one escape function, the page frame and small
//! helpers that the pages are built from.
//!
//! Architecture invariant: every value that came from outside the code (an agent, a feed, a
//! TAXII member, the configuration, the store) reaches the page through [`escape`] (or
//! [`attr`], which is the same function), so a hostile feed or agent can put text on a page
//! but never markup. Literal markup is written only by this module and the page renderers in
//! `pages`, never assembled from stored values. The pages carry no script at all, and
//! the Content-Security-Policy ([`super::CSP`]) refuses any that an escape bug let in.

/// Escapes `s` for HTML text and for attribute values in double or single quotes: `&`, `<`,
/// `>`, `"` and `'` become character references, and every other character is kept (control
/// characters other than tab and newline become U+FFFD, so a value cannot hide anything
/// from the reader).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// [`escape`], for a value placed inside a double-quoted attribute (the same function: one
/// escape for every context the pages use).
pub fn attr(s: &str) -> String {
    escape(s)
}

/// Percent-encodes `s` for a query value (everything but unreserved characters), so an
/// indicator id can go into a link; the link is then escaped as an attribute as well.
pub fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The sections of the dashboard, in the order the navigation shows them.
pub const SECTIONS: &[(&str, &str)] = &[
    ("/ui/", "Fleet"),
    ("/ui/sightings", "Sightings"),
    ("/ui/sharing", "Sharing"),
    ("/ui/sources", "Sources"),
];

/// Who is looking at a page: the operator's name and the form token of the session.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The operator's name.
    pub operator: String,
    /// The session's CSRF token (hex), put into every form.
    pub csrf: String,
}

/// The hidden field every form carries.
pub fn csrf_field(viewer: &Viewer) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        attr(&viewer.csrf)
    )
}

/// A whole page: `title`, the navigation with `active` marked (a path of [`SECTIONS`]), the
/// operator and the logout form when `viewer` is given, and `body` (markup made by the
/// renderers).
pub fn page(title: &str, active: &str, viewer: Option<&Viewer>, body: &str) -> String {
    let mut nav = String::new();
    if let Some(v) = viewer {
        nav.push_str("<nav>");
        for (path, name) in SECTIONS {
            let class = if *path == active { " class=\"active\"" } else { "" };
            nav.push_str(&format!("<a href=\"{path}\"{class}>{name}</a>"));
        }
        nav.push_str(&format!(
            "<form method=\"post\" action=\"/ui/logout\" class=\"logout\">{}<span>{}</span> \
             <button type=\"submit\">Log out</button></form></nav>",
            csrf_field(v),
            escape(&v.operator)
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Picket</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
         <body><header><span class=\"brand\">Picket</span>{nav}</header><main>{body}</main></body></html>\n",
        escape(title)
    )
}

/// A table: header cells (literal text) and rows of cells (markup made by the caller from
/// escaped values); `empty` (literal) when there are no rows.
pub fn table(headers: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>", escape(empty));
    }
    let mut out = String::from("<table><thead><tr>");
    for h in headers {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            out.push_str(&format!("<td>{cell}</td>"));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A unix time as `YYYY-MM-DD HH:MM:SS UTC`, escaped; `never` for `None`.
pub fn time(t: Option<i64>) -> String {
    match t {
        Some(t) => escape(&picket_proto::rfc3339(t).replace('T', " ").replace('Z', " UTC")),
        None => "never".into(),
    }
}

/// A duration in seconds as a short age (`42 s`, `5 min`, `3 h`, `2 d`).
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// The login page: the form, and `error` (literal text chosen by the server) above it.
pub fn login(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    page(
        "Log in",
        "",
        None,
        &format!(
            "<section class=\"login\"><h1>Operator login</h1>{error}\
             <form method=\"post\" action=\"/ui/login\">\
             <label>Name <input name=\"name\" autocomplete=\"username\" required></label>\
             <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">Log in</button></form></section>"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_values_become_text() {
        let check = |input: &str, expected: &str| assert_eq!(escape(input), expected, "{input:?}");
        check(
            "<script>alert(1)</script>",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
        );
        check(
            "\"><img src=x onerror=alert(1)>",
            "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;",
        );
        check("a'b&c", "a&#39;b&amp;c");
        check("&amp;", "&amp;amp;");
        check(
            "tab\there\nnew\u{0}\u{1b}[31m",
            "tab\there\nnew\u{fffd}\u{fffd}[31m",
        );
        check("ünïcödé ✓", "ünïcödé ✓");
    }

    #[test]
    fn query_values_carry_any_id() {
        assert_eq!(
            query_value("indicator--3f7c/1 &x=<"),
            "indicator--3f7c%2F1%20%26x%3D%3C"
        );
    }

    proptest! {
        /// Whatever the input, the output holds no markup character except inside the five
        /// character references, and unescaping gives back the input (controls aside).
        #[test]
        fn escape_never_lets_markup_through(s in any::<String>()) {
            let out = escape(&s);
            prop_assert!(!out.contains('<') && !out.contains('>'));
            prop_assert!(!out.contains('"') && !out.contains('\''));
            let mut rest = out.as_str();
            while let Some(at) = rest.find('&') {
                rest = &rest[at..];
                let ok = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                    .iter()
                    .find(|r| rest.starts_with(**r));
                prop_assert!(ok.is_some(), "a bare & in {out:?}");
                rest = &rest[1..];
            }
            let back = out
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&");
            let expected: String = s
                .chars()
                .map(|c| if c.is_control() && c != '\t' && c != '\n' { '\u{fffd}' } else { c })
                .collect();
            prop_assert_eq!(back, expected);
        }
    }
}
