//! Bad input gets a clear error naming the file and the position, and nothing already stored is
//! lost; plus the ingest options operators reach for (CSV columns, warninglists, lifetimes).

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::fs;

use picket_e2e::{ok, run, s, Collector, EICAR_MD5, EICAR_SHA1, EICAR_SHA256};

fn bundle(confidence: &str, hash: &str) -> String {
    format!(
        r#"{{
  "type": "bundle",
  "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
  "objects": [
    {{
      "type": "indicator",
      "spec_version": "2.1",
      "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
      "created": "2026-01-01T00:00:00.000Z",
      "modified": "2026-01-01T00:00:00.000Z",
      "confidence": {confidence},
      "pattern": "[file:hashes.'SHA-256' = '{hash}']",
      "pattern_type": "stix",
      "valid_from": "2026-01-01T00:00:00Z"
    }}
  ]
}}
"#
    )
}

fn stored(c: &Collector) -> String {
    ok(
        "picket-collector",
        &["indicators", "list", "--data", c.data(), "--json"],
    )
}

#[test]
fn malformed_files_are_refused_with_file_and_position_and_the_store_is_unchanged() {
    let c = Collector::init();
    c.ingest_list("good.txt", &[EICAR_MD5, "198.51.100.7"]);
    let before = stored(&c);
    let dir = c.tmp.path();
    let good = bundle("80", EICAR_SHA256);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.json",
            good.as_bytes()[..good.len() / 2].to_vec(),
            "truncated.json:",
        ),
        (
            "wrong-type.json",
            bundle("\"high\"", EICAR_SHA256).into_bytes(),
            "wrong-type.json:",
        ),
        (
            "bad-hex.txt",
            format!("{}\n", "g".repeat(64)).into_bytes(),
            "bad-hex.txt:1: cannot tell what",
        ),
        (
            "utf8.txt",
            [EICAR_SHA1.as_bytes(), b"\n\xff\xfe\n"].concat(),
            "utf8.txt:2: invalid UTF-8 at column 1",
        ),
        (
            "huge-line.txt",
            vec![b'a'; 100_000_000],
            "huge-line.txt:1: line of 100000000 bytes",
        ),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        let out = run("picket-collector", &["ingest", "--data", c.data(), s(&path)]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{name}: {err}");
        assert!(err.contains("nothing from this file was stored"), "{name}: {err}");
        assert_eq!(stored(&c), before, "{name} changed the store");
    }
    // The same bundle, well formed, goes in.
    let path = dir.join("fine.json");
    fs::write(&path, good).unwrap();
    let out = ok("picket-collector", &["ingest", "--data", c.data(), s(&path)]);
    assert!(out.contains("1 indicators (1 new"), "{out}");
}

#[test]
fn csv_columns_warninglists_and_source_lifetimes() {
    let c = Collector::init();
    let csv = c.tmp.path().join("export.tsv");
    fs::write(
        &csv,
        format!("first_seen\tsha256\tfamily\n2026-01-01\t{EICAR_SHA256}\teicar\n"),
    )
    .unwrap();
    let out = ok(
        "picket-collector",
        &[
            "ingest",
            "--data",
            c.data(),
            "--csv-column",
            "sha256",
            "--csv-delimiter",
            "\t",
            s(&csv),
        ],
    );
    assert!(out.contains("1 indicators (1 new"), "{out}");

    let wl = c.tmp.path().join("warninglist.json");
    fs::write(
        &wl,
        format!(r#"{{"name": "Known good", "list": ["{EICAR_SHA256}", "example.org", "192.0.2.0/24"]}}"#),
    )
    .unwrap();
    let out = ok(
        "picket-collector",
        &["allowlist", "import", "--data", c.data(), s(&wl)],
    );
    assert!(
        out.contains("2 values allowlisted as \"warninglist: Known good\"; 1 left out"),
        "{out}"
    );
    let published = c.publish(&[]);
    assert!(
        published.contains("with 0 indicators (1 allowlisted"),
        "{published}"
    );

    // A source whose indicators carry no expiry gets its default lifetime.
    let feed = c.tmp.path().join("feed.txt");
    fs::write(&feed, format!("{EICAR_MD5}\n")).unwrap();
    ok(
        "picket-collector",
        &[
            "source",
            "add",
            "--data",
            c.data(),
            "--name",
            "f",
            "--kind",
            "list",
            "--location",
            s(&feed),
            "--lifetime",
            "7d",
        ],
    );
    ok("picket-collector", &["pull", "--data", c.data()]);
    let listed = ok(
        "picket-collector",
        &["indicators", "search", "--data", c.data(), "--json", EICAR_MD5],
    );
    let v: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    let until = v["valid_until"].as_i64().unwrap();
    let now = picket_e2e::unix_now();
    assert!(
        (now + 7 * 86_400 - until).abs() < 60,
        "valid_until {until}, now {now}"
    );
}

#[test]
fn a_newer_stix_version_replaces_an_older_one_and_never_the_reverse() {
    let c = Collector::init();
    let version = |modified: &str, confidence: &str| {
        bundle(confidence, EICAR_SHA256).replace(
            "\"modified\": \"2026-01-01T00:00:00.000Z\"",
            &format!("\"modified\": \"{modified}\""),
        )
    };
    let ingest = |name: &str, text: String| {
        let path = c.tmp.path().join(name);
        fs::write(&path, text).unwrap();
        ok("picket-collector", &["ingest", "--data", c.data(), s(&path)])
    };
    let confidence = || {
        let shown = ok(
            "picket-collector",
            &[
                "indicators",
                "show",
                "--data",
                c.data(),
                "--json",
                "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
            ],
        );
        serde_json::from_str::<serde_json::Value>(shown.trim()).unwrap()["confidence"]
            .as_u64()
            .unwrap()
    };
    ingest("v2.json", version("2026-02-01T00:00:00.000Z", "60"));
    assert_eq!(confidence(), 60);
    let older = ingest("v1.json", version("2026-01-15T00:00:00.000Z", "10"));
    assert!(
        older.contains("0 updated, 1 older than what is stored and kept out"),
        "{older}"
    );
    assert_eq!(confidence(), 60);
    let newer = ingest("v3.json", version("2026-03-01T00:00:00.000Z", "95"));
    assert!(newer.contains("1 updated"), "{newer}");
    assert_eq!(confidence(), 95);
}
