//! The agent's metrics and JSON logs with the real `picket-agent run`: `[metrics] listen` on a
//! loopback port and `textfile` both turned on, both scraped after a scan and parsed with the
//! reference parser (`prometheus_client.parser` from PyPI); `--log-format json` writes one
//! parseable JSON object a line, from the agent and from `picket-collector serve` (its TAXII
//! server and dashboard included); a listen
//! address off loopback is refused at start.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use picket_e2e::{
    bin, eicar_indicator, import_ok, lines, ok, python, s, wait_line, Child, Collector, Serve, SetSigner,
    EICAR,
};

/// Parses exposition text with `prometheus_client.parser.text_string_to_metric_families` into
/// sample name (with its labels, `name{a="b"}`) to value; panics if the parser refuses it.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One plain-HTTP request; the status line and the body.
fn get(addr: &str, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// A state directory with a set matching EICAR, a root holding one EICAR file, and an
/// agent.toml ending in `extra`.
fn agent(tmp: &Path, extra: &str) -> std::path::PathBuf {
    let watched = tmp.join("watched");
    fs::create_dir_all(&watched).unwrap();
    fs::write(watched.join("sample.com"), EICAR).unwrap();
    let state = tmp.join("state");
    let mut signer = SetSigner::new(tmp);
    let v1 = signer.write("v1.pkt", &[eicar_indicator()]);
    import_ok(&state, &signer.anchor(), &v1);
    let config = tmp.join("agent.toml");
    fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n[scan]\nroots = [{watched:?}]\n[processes]\nenabled = false\n[connections]\nenabled = false\n[limits]\ncpu_budget = 0.5\n{extra}",
            state = s(&state),
            watched = s(&watched)
        ),
    )
    .unwrap();
    config
}

#[test]
fn the_agent_serves_and_writes_metrics_that_prometheus_parses_and_logs_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let textdir = tmp.path().join("textfile_collector");
    fs::create_dir_all(&textdir).unwrap();
    let textfile = textdir.join("picket.prom");
    let config = agent(
        tmp.path(),
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:0\"\ntextfile = {:?}\n",
            s(&textfile)
        ),
    );
    let mut child = Command::new(bin("picket-agent"))
        .args(["run", "--log-format", "json", "--config", s(&config)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let _stdout = lines(child.stdout.take().unwrap());
    let _guard = Child(child);

    // Every log line is one JSON object with the time, the level, the target and the message;
    // the events' fields are keys of their own.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut addr, mut scan) = (None, None);
    let mut seen = Vec::new();
    while addr.is_none() || scan.is_none() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_default();
        let Ok(line) = stderr.recv_timeout(left) else {
            panic!(
                "no metrics address or scan within 30 s; saw:\n{}",
                seen.join("\n")
            );
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "no {key} in {line}");
        }
        let message = v["message"].as_str().unwrap();
        if let Some(rest) = message.strip_prefix("metrics on http://") {
            addr = Some(rest.trim_end_matches("/metrics").to_owned());
        }
        if message == "scan done" {
            assert_eq!(v["level"], "INFO", "{line}");
            assert_eq!(v["set_version"], 1, "{line}");
            assert!(v["files"].as_u64().unwrap() >= 1, "{line}");
            scan = Some(v.clone());
        }
        seen.push(line);
    }
    let addr = addr.unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    // The listener: the metrics after the scan, as Prometheus reads them (the daemon's state
    // reaches them at its next status tick, within a second).
    let deadline = Instant::now() + Duration::from_secs(5);
    let (body, m) = loop {
        let (status, body) = get(&addr, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        let m = parse(&body);
        if m.get("picket_agent_sightings") == Some(&1.0) || Instant::now() > deadline {
            break (body, m);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let v = |name: &str| *m.get(name).unwrap_or_else(|| panic!("no {name} in:\n{body}"));
    assert_eq!(v("picket_agent_scans_total"), 1.0);
    assert_eq!(v("picket_agent_scan_duration_seconds_count"), 1.0);
    assert_eq!(v("picket_agent_scan_duration_seconds_bucket{le=\"+Inf\"}"), 1.0);
    assert!(v("picket_agent_files_scanned_total") >= 1.0);
    assert!(
        v("picket_agent_hash_cache_misses_total") >= 1.0,
        "the first scan hashes"
    );
    assert!(v("picket_agent_bytes_hashed_total") >= EICAR.len() as f64);
    assert!(m.contains_key("picket_agent_hash_cache_hits_total"));
    assert_eq!(v("picket_agent_set_version"), 1.0);
    assert!(v("picket_agent_set_age_seconds") >= 0.0);
    assert_eq!(v("picket_agent_sightings"), 1.0, "the EICAR file was seen");
    assert_eq!(v("picket_agent_link_connected"), 0.0);
    assert_eq!(v("picket_agent_enrolled"), 0.0);
    assert!(m.contains_key("picket_agent_spool_batches"));
    assert!(m.contains_key("picket_agent_spool_bytes"));
    assert!(v("picket_agent_uptime_seconds") > 0.0);

    // Nothing else is served.
    let (status, _) = get(&addr, "GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = get(&addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");

    // The textfile: written after the scan, whole, with no temporary file left beside it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = fs::read_to_string(&textfile).unwrap_or_default();
        if text.contains("picket_agent_scans_total 1\n") {
            break text;
        }
        assert!(Instant::now() < deadline, "no textfile after the scan: {text:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let t = parse(&text);
    assert_eq!(t["picket_agent_scans_total"], 1.0);
    assert_eq!(t["picket_agent_set_version"], 1.0);
    let names: Vec<_> = fs::read_dir(&textdir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("picket.prom")]);
    assert_eq!(
        fs::metadata(&textfile).unwrap().permissions().mode() & 0o777,
        0o644,
        "node_exporter runs as another user"
    );
}

#[test]
fn a_metrics_address_off_loopback_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let config = agent(tmp.path(), "[metrics]\nlisten = \"0.0.0.0:9464\"\n");
    let out = Command::new(bin("picket-agent"))
        .args(["run", "--config", s(&config)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics.listen") && err.contains("not a loopback address"),
        "{err}"
    );
    assert!(err.contains(s(&config)), "the message names the file: {err}");
}

#[test]
fn serve_logs_json_lines_with_the_event_and_its_level() {
    let c = Collector::init();
    let gone = c.tmp.path().join("gone.txt");
    fs::write(&gone, "").unwrap();
    ok(
        "picket-collector",
        &[
            "source",
            "add",
            "--data",
            c.data(),
            "--name",
            "gone",
            "--kind",
            "list",
            "--location",
            s(&gone),
        ],
    );
    fs::remove_file(&gone).unwrap();
    fs::rename(c.root_key(), c.tmp.path().join("offline.key")).unwrap();
    let serve = Serve::start(
        c.data(),
        "127.0.0.1:0",
        &["--http", "127.0.0.1:0", "--log-format", "json"],
    );
    let stderr = &serve.err;
    let line = wait_line(stderr, "source gone", Duration::from_secs(20));
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    assert_eq!(v["level"], "ERROR", "{line}");
    assert_eq!(v["target"], "picket_collector", "{line}");
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains(s(&gone)) && message.contains("nothing from it was stored"),
        "{line}"
    );

    // The TAXII server and the dashboard log the same way: plain HTTP sent to the TLS port is
    // one JSON warning naming the peer, not a bare stderr line.
    let mut plain = TcpStream::connect(serve.https_addr()).unwrap();
    plain
        .write_all(b"GET /taxii2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    drop(plain);
    let line = wait_line(stderr, "TAXII 127.0.0.1:", Duration::from_secs(20));
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    assert_eq!(v["level"], "WARN", "{line}");
    assert!(
        v["target"]
            .as_str()
            .unwrap()
            .starts_with("picket_collector::taxii_server"),
        "{line}"
    );
}
