//! The dashboard's rules, through [`Dashboard::handle`] on a real data directory: sessions,
//! CSRF refusals, cookie flags, the login limiter, redirects and the security headers.

#![allow(clippy::unwrap_used)]

use super::*;

const HOST: &str = "collector.example:8443";
const PASSWORD: &str = "correct horse battery staple";

struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    dash: Dashboard,
    now: Clock,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    DataDir::init(&data, "Org", Some(&tmp.path().join("root.key")), 1_000).unwrap();
    add_operator(&data, "alice", PASSWORD, 1_000).unwrap();
    let dash = Dashboard::with_limits(&data, 3, Duration::from_secs(60)).unwrap();
    Fixture {
        _tmp: tmp,
        data,
        dash,
        now: Clock::now(),
    }
}

fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {HOST}");
    for (k, v) in headers {
        head.push_str(&format!("\r\n{k}: {v}"));
    }
    crate::taxii_server::http::parse_head(head.as_bytes()).unwrap()
}

const ORIGIN: (&str, &str) = ("Origin", "https://collector.example:8443");
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

impl Fixture {
    fn send(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        self.dash
            .handle(&request(method, target, headers), body.as_bytes(), IP, self.now)
    }

    fn login_as(&self, name: &str, password: &str) -> Reply {
        let body = format!(
            "name={}&password={}",
            html::query_value(name),
            html::query_value(password)
        );
        self.send("POST", "/ui/login", &[ORIGIN, FORM], &body)
    }

    /// Logs in; the cookie header to send and the session's form token.
    fn session(&self) -> (String, String) {
        let r = self.login_as("alice", PASSWORD);
        assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
        let set = r.header("set-cookie").unwrap();
        let value = set.split(';').next().unwrap().to_owned();
        let page = self.send("GET", "/ui/", &[("Cookie", &value)], "");
        assert_eq!(page.status, 200);
        let text = String::from_utf8(page.body).unwrap();
        let at = text.find("name=\"csrf\" value=\"").unwrap() + 19;
        let token = text[at..at + 64].to_owned();
        (value, token)
    }
}

#[test]
fn the_session_cookie_is_host_only_secure_http_only_and_strict() {
    let f = fixture();
    let r = f.login_as("alice", PASSWORD);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/ui/"));
    let cookie = r.header("set-cookie").unwrap();
    let (pair, attrs) = cookie.split_once(';').unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, "__Host-picket");
    assert_eq!(value.len(), 64, "256 bits in hex");
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()));
    let attrs: Vec<&str> = attrs.split(';').map(str::trim).collect();
    for want in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&want), "{want} missing from {cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    // Two logins get two different sessions.
    let again = f.login_as("alice", PASSWORD);
    assert_ne!(again.header("set-cookie"), r.header("set-cookie"));
}

#[test]
fn without_a_session_a_page_sends_to_the_login_and_a_post_is_forbidden() {
    let f = fixture();
    for target in [
        "/ui/",
        "/ui/sightings",
        "/ui/sharing",
        "/ui/sources",
        "/ui/indicator?id=x",
    ] {
        let r = f.send("GET", target, &[], "");
        assert_eq!(r.status, 303, "{target}");
        assert_eq!(r.header("location"), Some("/ui/login"), "{target}");
    }
    let forged = "__Host-picket=".to_owned() + &"ab".repeat(32);
    let r = f.send("GET", "/ui/", &[("Cookie", &forged)], "");
    assert_eq!(r.header("location"), Some("/ui/login"));
    let r = f.send("POST", "/ui/fp", &[ORIGIN, FORM], "id=x&action=undo&csrf=00");
    assert_eq!(r.status, 403);
    // The root and /ui go to the dashboard; the login page and the style sheet need nothing.
    assert_eq!(f.send("GET", "/", &[], "").header("location"), Some("/ui/"));
    assert_eq!(f.send("GET", "/ui/login", &[], "").status, 200);
    assert_eq!(f.send("GET", "/ui/style.css", &[], "").status, 200);
}

#[test]
fn a_post_without_the_right_token_or_from_another_origin_is_refused() {
    let f = fixture();
    let (cookie, token) = f.session();
    let c = ("Cookie", cookie.as_str());
    let check = |headers: &[(&str, &str)], body: &str, status: u16| {
        let r = f.send("POST", "/ui/fp", headers, body);
        assert_eq!(
            r.status,
            status,
            "{headers:?} {body}: {}",
            String::from_utf8_lossy(&r.body)
        );
    };
    let id = "indicator--00000000-0000-4000-8000-000000000000";
    check(&[c, ORIGIN, FORM], &format!("id={id}&action=undo"), 403);
    check(&[c, ORIGIN, FORM], &format!("id={id}&action=undo&csrf="), 403);
    let wrong: String = token.chars().rev().collect();
    check(
        &[c, ORIGIN, FORM],
        &format!("id={id}&action=undo&csrf={wrong}"),
        403,
    );
    check(
        &[c, ORIGIN, FORM],
        &format!("id={id}&action=undo&csrf={}", &token[..63]),
        403,
    );
    // The right token, but from another origin, or from nowhere.
    let body = format!("id={id}&action=undo&csrf={token}");
    check(&[c, ("Origin", "https://evil.example"), FORM], &body, 403);
    check(&[c, ("Origin", "null"), FORM], &body, 403);
    check(&[c, FORM], &body, 403);
    check(&[c, ("Referer", "https://evil.example/ui/"), FORM], &body, 403);
    // The right token from this origin: the undo of an unmarked indicator goes through.
    check(&[c, ORIGIN, FORM], &body, 303);
    check(
        &[
            c,
            ("Referer", "https://collector.example:8443/ui/indicator?id=x"),
            FORM,
        ],
        &body,
        303,
    );
    // The login form itself needs the origin.
    let r = f.send(
        "POST",
        "/ui/login",
        &[("Origin", "https://evil.example"), FORM],
        &format!("name=alice&password={}", html::query_value(PASSWORD)),
    );
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());
}

#[test]
fn logout_ends_the_session() {
    let f = fixture();
    let (cookie, token) = f.session();
    let c = ("Cookie", cookie.as_str());
    let r = f.send("POST", "/ui/logout", &[c, ORIGIN, FORM], &format!("csrf={token}"));
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(
        f.send("GET", "/ui/", &[c], "").header("location"),
        Some("/ui/login")
    );
}

#[test]
fn a_session_ends_when_idle_and_at_its_absolute_limit() {
    let mut f = fixture();
    let (cookie, _) = f.session();
    let c = ("Cookie", cookie.as_str());
    let start = f.now;
    // Used every 20 minutes, it lives until the absolute limit.
    let mut t = start.instant;
    while t + Duration::from_secs(20 * 60) < start.instant + ABSOLUTE {
        t += Duration::from_secs(20 * 60);
        f.now.instant = t;
        assert_eq!(f.send("GET", "/ui/sources", &[c], "").status, 200);
    }
    f.now.instant = start.instant + ABSOLUTE;
    assert_eq!(f.send("GET", "/ui/sources", &[c], "").status, 303);
    // Left alone for the idle time, a new session ends.
    f.now = start;
    let (cookie, _) = f.session();
    f.now.instant = start.instant + IDLE;
    assert_eq!(
        f.send("GET", "/ui/", &[("Cookie", cookie.as_str())], "").status,
        303
    );
}

#[test]
fn failed_logins_are_limited_per_peer_and_a_wrong_password_gets_no_session() {
    let f = fixture();
    for _ in 0..3 {
        let r = f.login_as("alice", "wrong");
        assert_eq!(r.status, 401);
        assert!(r.header("set-cookie").is_none());
        assert!(String::from_utf8_lossy(&r.body).contains("wrong name or password"));
    }
    // The fourth attempt is refused before the password is checked, even the right one.
    let r = f.login_as("alice", PASSWORD);
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert!(r.header("set-cookie").is_none());
    // Another address is not held back, and an unknown name fails like a wrong password.
    let other = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 99));
    let body = format!("name=alice&password={}", html::query_value(PASSWORD));
    let r = f.dash.handle(
        &request("POST", "/ui/login", &[ORIGIN, FORM]),
        body.as_bytes(),
        other,
        f.now,
    );
    assert_eq!(r.status, 303);
    let r = f.dash.handle(
        &request("POST", "/ui/login", &[ORIGIN, FORM]),
        b"name=mallory&password=x",
        other,
        f.now,
    );
    assert_eq!(r.status, 401);
}

#[test]
fn every_response_carries_the_security_headers() {
    let f = fixture();
    let (cookie, _) = f.session();
    let c = ("Cookie", cookie.as_str());
    let replies = [
        f.send("GET", "/", &[], ""),
        f.send("GET", "/ui/login", &[], ""),
        f.send("GET", "/ui/style.css", &[], ""),
        f.send("GET", "/ui/nope", &[c], ""),
        f.login_as("alice", "wrong"),
        f.send("GET", "/ui/", &[c], ""),
        f.send("GET", "/ui/sightings", &[c], ""),
        f.send("GET", "/ui/sharing", &[c], ""),
        f.send("GET", "/ui/sources", &[c], ""),
        f.send("POST", "/ui/fp", &[c, ORIGIN, FORM], "csrf=0"),
    ];
    for r in replies {
        assert_eq!(r.header("content-security-policy"), Some(CSP), "{r:?}");
        assert!(CSP.contains("default-src 'none'") && CSP.contains("frame-ancestors 'none'"));
        assert!(!CSP.contains("script-src"), "no script is allowed at all");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(r.header("referrer-policy").is_some());
        if r.content_type.starts_with("text/html") {
            let text = String::from_utf8(r.body.clone()).unwrap();
            assert!(!text.contains("<script"), "{text}");
            assert!(!text.contains(" style="), "{text}");
        }
    }
}

#[test]
fn a_false_positive_mark_and_its_undo_reach_the_store() {
    let f = fixture();
    let dir = DataDir::open(&f.data).unwrap();
    let mut store = dir.store().unwrap();
    let d = crate::ingest::Defaults {
        source: "<script>alert(1)</script>".into(),
        tlp: picket_proto::Tlp::Green,
        confidence: 50,
        severity: picket_proto::Severity::Medium,
    };
    let batch = crate::ingest::parse_list(Path::new("feed"), "198.51.100.7\n", &d).unwrap();
    store.upsert_indicators(&batch, 1_000).unwrap();
    let id = batch[0].id.clone();
    let (cookie, token) = f.session();
    let c = ("Cookie", cookie.as_str());
    let page = f.send(
        "GET",
        &format!("/ui/indicator?id={}", html::query_value(&id)),
        &[c],
        "",
    );
    let text = String::from_utf8(page.body).unwrap();
    assert!(text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{text}");
    assert!(!text.contains("<script>"));
    let body = format!(
        "csrf={token}&id={}&action=mark&reason=our+scanner+%3Cb%3E",
        html::query_value(&id)
    );
    let r = f.send("POST", "/ui/fp", &[c, ORIGIN, FORM], &body);
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        store.false_positive(&id).unwrap().map(|(why, _)| why),
        Some("our scanner <b>".to_owned())
    );
    let body = format!("csrf={token}&id={}&action=undo", html::query_value(&id));
    assert_eq!(f.send("POST", "/ui/fp", &[c, ORIGIN, FORM], &body).status, 303);
    assert_eq!(store.false_positive(&id).unwrap(), None);
}

#[test]
fn operators_are_unique_and_need_a_password() {
    let f = fixture();
    assert!(add_operator(&f.data, "alice", "x", 1)
        .unwrap_err()
        .to_string()
        .contains("already"));
    assert!(add_operator(&f.data, "bob", "", 1).is_err());
    assert!(add_operator(&f.data, "", "x", 1).is_err());
    add_operator(&f.data, "bob", "x", 1).unwrap();
    let names: Vec<String> = DataDir::open(&f.data)
        .unwrap()
        .store()
        .unwrap()
        .operators()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
}

#[test]
fn forms_decode_and_refuse_broken_escapes() {
    let check = |input: &str, expected: Option<Vec<(&str, &str)>>| {
        let expected = expected.map(|v| {
            v.into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<Vec<_>>()
        });
        assert_eq!(parse_form(input.as_bytes()), expected, "{input:?}");
    };
    check("a=1&b=x+y%21", Some(vec![("a", "1"), ("b", "x y!")]));
    check("a&&b=", Some(vec![("a", ""), ("b", "")]));
    check("a=%zz", None);
    check("a=%4", None);
    check("a=%ff", None);
    check("id=indicator--x%2F1", Some(vec![("id", "indicator--x/1")]));
}

#[test]
fn the_fleet_page_highlights_stale_agents_and_escapes_what_agents_sent() {
    let f = fixture();
    let dir = DataDir::open(&f.data).unwrap();
    let store = dir.store().unwrap();
    let now = f.now.unix;
    for (id, key, last_seen) in [
        ("ag-live0000000000", 1u8, now - 30),
        ("ag-<b>stale</b>00", 2u8, now - STALE_AFTER - 1),
    ] {
        store
            .conn()
            .execute(
                "INSERT INTO agents (org, id, public_key, token, channel, machine, enrolled, cert_not_after, last_seen)
                 VALUES (1, ?1, ?2, 't', 'default', zeroblob(32), ?3, ?4, ?5)",
                params![id, vec![key; 32], now - 100, now + 86_400, last_seen],
            )
            .unwrap();
    }
    let (cookie, _) = f.session();
    let page = f.send("GET", "/ui/", &[("Cookie", cookie.as_str())], "");
    let text = String::from_utf8(page.body).unwrap();
    let row_of = |needle: &str| {
        let at = text
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} not in {text}"));
        let start = text[..at].rfind("<tr").unwrap();
        text[start..at].to_owned()
    };
    assert!(row_of("title=\"ag-live0000000000\"").contains("<tr class=\"\""));
    assert!(row_of("title=\"ag-&lt;b&gt;stale&lt;/b&gt;00\"").contains("<tr class=\"stale\""));
    assert!(!text.contains("<b>stale"), "{text}");
    assert!(
        text.contains("<b>1</b>stale"),
        "the count of stale agents: {text}"
    );
}
