//! The enrolment commands of the real `picket-collector`: `init --tls-name`, `token create |
//! list | revoke` and `agents list | revoke`.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use picket_collector::pki;
use picket_e2e::{ok, run, s, Collector};
use picket_proto::EnrollToken;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `picket-collector ARGS`, which must exit 2 with `needle` in its stderr.
fn fails_with(args: &[&str], needle: &str) -> std::process::Output {
    let out = run("picket-collector", args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(needle), "{}", stderr(&out));
    out
}

/// The one token `token list --json` shows.
fn only_token(c: &Collector) -> serde_json::Value {
    let listed = ok(
        "picket-collector",
        &["token", "list", "--data", c.data(), "--json"],
    );
    assert_eq!(listed.lines().count(), 1, "{listed}");
    serde_json::from_str(listed.trim()).unwrap()
}

#[test]
fn token_create_prints_one_token_that_pins_the_collector_ca() {
    let c = Collector::init();
    let out = run(
        "picket-collector",
        &[
            "token",
            "create",
            "--data",
            c.data(),
            "--uses",
            "3",
            "--expires",
            "2h",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "the token alone: {text:?}");
    let token = EnrollToken::parse(&text).unwrap();
    let ca = pki::read_certs(&c.data.join("tls/ca.pem")).unwrap();
    assert_eq!(token.ca_pin, pki::spki_sha256(&ca[0]).unwrap());
    // The id, uses and expiry go to stderr, the secret does not.
    let err = stderr(&out);
    assert!(err.contains(&token.id) && err.contains("3 use(s)"), "{err}");
    assert!(!err.contains(&hex::encode(token.secret)), "{err}");

    let row = only_token(&c);
    assert_eq!(row["id"], token.id.as_str());
    assert_eq!(row["uses_left"], 3);
    assert_eq!(row["used"], 0);
    assert_eq!(row["state"], "valid");
    let lifetime = row["expires"].as_i64().unwrap() - row["created"].as_i64().unwrap();
    assert_eq!(lifetime, 2 * 3_600);
}

#[test]
fn token_list_never_shows_the_secret_and_revocation_shows() {
    let c = Collector::init();
    // Without --expires: enrolment.default_token_expiry, 24h.
    let token =
        EnrollToken::parse(&ok("picket-collector", &["token", "create", "--data", c.data()])).unwrap();
    let secret = hex::encode(token.secret);
    for args in [
        vec!["token", "list", "--data", c.data(), "--json"],
        vec!["token", "list", "--data", c.data()],
    ] {
        let listed = ok("picket-collector", &args);
        assert!(listed.contains(&token.id), "{listed}");
        assert!(!listed.contains(&secret), "the secret leaked: {listed}");
    }
    let row = only_token(&c);
    assert_eq!(row["uses_left"], 1, "one use by default");
    assert_eq!(
        row["expires"].as_i64().unwrap() - row["created"].as_i64().unwrap(),
        86_400
    );

    let revoked = ok(
        "picket-collector",
        &["token", "revoke", "--data", c.data(), &token.id],
    );
    assert!(revoked.contains(&token.id), "{revoked}");
    let row = only_token(&c);
    assert_eq!(row["state"], "revoked");
    assert!(row["revoked"].is_i64());
}

#[test]
fn unknown_ids_exit_2_naming_them() {
    let c = Collector::init();
    fails_with(
        &["token", "revoke", "--data", c.data(), "0123456789abcdef"],
        "no token with id \"0123456789abcdef\"",
    );
    fails_with(
        &["agents", "revoke", "--data", c.data(), "ag-0000000000000000"],
        "no agent with id \"ag-0000000000000000\"",
    );
    let out = fails_with(
        &["token", "create", "--data", c.data(), "--expires", "soon"],
        "--expires",
    );
    assert!(stdout(&out).is_empty());

    assert_eq!(
        ok(
            "picket-collector",
            &["agents", "list", "--data", c.data(), "--json"]
        ),
        ""
    );
}

#[test]
fn init_with_tls_names_puts_them_in_the_server_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("collector");
    let said = ok(
        "picket-collector",
        &[
            "init",
            "--data",
            s(&data),
            "--tls-name",
            "picket.example",
            "--tls-name",
            "192.0.2.7",
        ],
    );
    assert!(said.contains("tls/ca.pem"), "{said}");
    let chain = pki::read_certs(&data.join("tls/server.pem")).unwrap();
    for name in ["picket.example", "192.0.2.7", "localhost", "127.0.0.1", "::1"] {
        assert!(pki::valid_for_name(&chain[0], name).unwrap(), "{name}");
    }
    assert!(!pki::valid_for_name(&chain[0], "other.example").unwrap());
    let config = std::fs::read_to_string(data.join("picket.toml")).unwrap();
    assert!(
        config.contains("picket.example") && config.contains("192.0.2.7"),
        "{config}"
    );
    // The pin init prints is the one tokens carry.
    let token =
        EnrollToken::parse(&ok("picket-collector", &["token", "create", "--data", s(&data)])).unwrap();
    assert!(said.contains(&hex::encode(token.ca_pin)), "{said}");

    fails_with(
        &[
            "init",
            "--data",
            s(&tmp.path().join("bad")),
            "--tls-name",
            "not a name",
        ],
        "\"not a name\"",
    );
}
