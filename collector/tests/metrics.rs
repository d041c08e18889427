//! The collector's metrics as a Prometheus server would read them: real activity in-process
//! (sources pulled, a set signed, refused connections on the real agent channel, HTTP requests
//! recorded through the API the dashboard uses), the text rendered, and parsed by the reference
//! parser (`prometheus_client.parser` from PyPI); and who may read `/metrics`.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use picket_collector::channel::{Server, Settings};
use picket_collector::datadir::DataDir;
use picket_collector::metrics::{self, Access};
use picket_collector::publish::{self, Input};
use picket_proto::{Role, Tlp};

use common::run_collector;

/// One sample: its name, labels and value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses exposition text with `prometheus_client.parser.text_string_to_metric_families`:
/// family name to (type, samples). Panics (the test fails) if the parser refuses the text.
fn parse(text: &str) -> BTreeMap<String, (String, Vec<Sample>)> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = [f.type, [[s.name, s.labels, s.value] for s in f.samples]]
print(json.dumps(out))
"#;
    let mut child = Command::new(common::python())
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
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(name, f)| {
            let samples = f[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = s[1]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect();
                    (s[0].as_str().unwrap().to_owned(), labels, s[2].as_f64().unwrap())
                })
                .collect();
            (name.clone(), (f[0].as_str().unwrap().to_owned(), samples))
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`, or 0 when there is none.
fn value(families: &BTreeMap<String, (String, Vec<Sample>)>, name: &str, labels: &[(&str, &str)]) -> f64 {
    families
        .values()
        .flat_map(|(_, samples)| samples)
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .sum()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A data directory made by the real binary, with three sources: a good list, a list with a
/// bad line, and a file that is not there.
fn data_dir(tmp: &Path) -> PathBuf {
    let data = tmp.join("collector");
    let d = data.to_str().unwrap();
    run_collector(&["init", "--data", d, "--org", "Metrics Org"]);
    let good = tmp.join("good.txt");
    std::fs::write(&good, format!("{}\n", "ab".repeat(32))).unwrap();
    let bad = tmp.join("bad.txt");
    std::fs::write(&bad, "this is not an indicator at all\n").unwrap();
    let gone = tmp.join("gone.txt");
    std::fs::write(&gone, "").unwrap();
    for (name, path) in [("good", &good), ("bad", &bad), ("gone", &gone)] {
        run_collector(&[
            "source",
            "add",
            "--data",
            d,
            "--name",
            name,
            "--kind",
            "list",
            "--location",
            path.to_str().unwrap(),
        ]);
    }
    std::fs::remove_file(&gone).unwrap();
    data
}

#[test]
fn metrics_move_with_real_activity_and_parse_with_the_reference_parser() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let dir = DataDir::open(&data).unwrap();
    let store = dir.store().unwrap();

    // Sources: one pulled, one failing to parse, one failing to read.
    for src in store.sources().unwrap() {
        let _ = picket_collector::sources::pull(&src);
    }

    // A set signed on the default channel.
    let (root, _) = dir.current_root(&store).unwrap();
    let publisher = dir.signing_key(Role::Publisher, &root, "default").unwrap();
    let stamper = dir.signing_key(Role::Timestamp, &root, "default").unwrap();
    publish::publish(
        Input {
            channel: "default",
            version: 1,
            now: now(),
            records: Vec::new(),
            max_tlp: Tlp::Clear,
            previous: &[],
            manifest_lifetime: 86_400,
            timestamp_version: 1,
            timestamp_lifetime: 3_600,
        },
        &root,
        &publisher,
        &stamper,
    )
    .unwrap();
    drop(store);

    // The real agent channel: a connection that closes before its TLS handshake is refused.
    let mut settings = Settings::from_config(dir.config(), &dir.config_path()).unwrap();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(&data, settings).unwrap();
    drop(std::net::TcpStream::connect(server.local_addr()).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics::render().contains("picket_collector_sessions_total{outcome=\"refused\"} 1") {
        assert!(
            Instant::now() < deadline,
            "no refused session counted:\n{}",
            metrics::render()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();

    // What the dashboard records for each request it serves.
    metrics::http_request("taxii_objects", 200, 0.003);
    metrics::http_request("taxii_objects", 200, 0.2);
    metrics::http_request("taxii_objects", 401, 0.0001);
    metrics::http_request("metrics", 200, 0.001);

    let families = parse(&metrics::render());
    for (family, kind) in [
        ("picket_collector_sets_published", "counter"),
        ("picket_collector_agents_connected", "gauge"),
        ("picket_collector_sessions", "counter"),
        ("picket_collector_sightings_ingested", "counter"),
        ("picket_collector_report_batches", "counter"),
        ("picket_collector_source_pulls", "counter"),
        ("picket_collector_source_errors", "counter"),
        ("picket_collector_share_objects_pushed", "counter"),
        ("picket_collector_share_errors", "counter"),
        ("picket_collector_http_request_duration_seconds", "histogram"),
        ("picket_collector_uptime_seconds", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        let got = families.get(family).map(|f| f.0.as_str());
        assert_eq!(
            got,
            Some(kind),
            "family {family}: {:?}",
            families.keys().collect::<Vec<_>>()
        );
    }
    let v = |name: &str, labels: &[(&str, &str)]| value(&families, name, labels);
    assert_eq!(
        v("picket_collector_sets_published_total", &[("channel", "default")]),
        1.0
    );
    assert_eq!(
        v("picket_collector_source_pulls_total", &[("source", "good")]),
        1.0
    );
    assert_eq!(
        v(
            "picket_collector_source_errors_total",
            &[("source", "bad"), ("stage", "ingest")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "picket_collector_source_errors_total",
            &[("source", "gone"), ("stage", "pull")]
        ),
        1.0
    );
    assert_eq!(
        v("picket_collector_source_errors_total", &[("source", "good")]),
        0.0
    );
    assert_eq!(
        v("picket_collector_sessions_total", &[("outcome", "refused")]),
        1.0
    );
    assert_eq!(v("picket_collector_agents_connected", &[]), 0.0);
    let objects = [("route", "taxii_objects"), ("code", "2xx")];
    assert_eq!(
        v("picket_collector_http_request_duration_seconds_count", &objects),
        2.0
    );
    let le = |bound: &str| {
        let mut l = objects.to_vec();
        l.push(("le", bound));
        v("picket_collector_http_request_duration_seconds_bucket", &l)
    };
    assert_eq!(le("0.005"), 1.0, "one request under 5 ms");
    assert_eq!(le("0.25"), 2.0, "both under 250 ms");
    assert_eq!(le("+Inf"), 2.0);
    assert!((v("picket_collector_http_request_duration_seconds_sum", &objects) - 0.203).abs() < 1e-9);
    assert_eq!(
        v(
            "picket_collector_http_request_duration_seconds_count",
            &[("route", "taxii_objects"), ("code", "4xx")]
        ),
        1.0
    );
    assert!(v("process_resident_memory_bytes", &[]) > 0.0);
}

#[test]
fn operator_names_in_labels_are_escaped_so_the_text_still_parses() {
    let community = "a \"quoted\" \\ name\nwith a line feed";
    metrics::share_pushed(community, "upstream-1", 7);
    metrics::share_error(community, "upstream-1");
    let families = parse(&metrics::render());
    let labels = [("community", community), ("upstream", "upstream-1")];
    assert_eq!(
        value(&families, "picket_collector_share_objects_pushed_total", &labels),
        7.0
    );
    assert_eq!(
        value(&families, "picket_collector_share_errors_total", &labels),
        1.0
    );
}

#[test]
fn metrics_are_off_until_a_token_file_exists_and_need_that_token() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("collector");
    DataDir::init(&data, "Metrics Org", Some(&tmp.path().join("root.key")), now()).unwrap();
    let dir = DataDir::open(&data).unwrap();
    assert_eq!(metrics::access(&dir, None), Access::Off);
    assert_eq!(metrics::access(&dir, Some("Bearer anything")), Access::Off);
    assert!(!metrics::enabled(&dir));

    // The command writes the token (0600) and prints it once on stdout.
    let printed = run_collector(&["metrics", "token", "--data", data.to_str().unwrap()]);
    let token = printed.trim();
    assert_eq!(token.len(), 64, "{printed:?}");
    let path = metrics::token_path(&dir);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);

    assert!(metrics::enabled(&dir));
    assert!(metrics::authorised(&dir, Some(&format!("Bearer {token}"))));
    assert!(metrics::authorised(&dir, Some(&format!("bearer {token}"))));
    for refused in [
        None,
        Some(String::new()),
        Some(token.to_owned()),
        Some(format!("Basic {token}")),
        Some(format!("Bearer {}", &token[..63])),
        Some(format!("Bearer {token}0")),
        Some("Bearer ".to_owned() + &"0".repeat(64)),
    ] {
        assert_eq!(
            metrics::access(&dir, refused.as_deref()),
            Access::Denied,
            "{refused:?}"
        );
    }

    // A new token replaces the old one at once, without a restart.
    let again = run_collector(&["metrics", "token", "--data", data.to_str().unwrap()]);
    assert_ne!(again.trim(), token);
    assert!(!metrics::authorised(&dir, Some(&format!("Bearer {token}"))));
    assert!(metrics::authorised(
        &dir,
        Some(&format!("Bearer {}", again.trim()))
    ));

    // A token file others can read is not used: metrics are off rather than open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        metrics::access(&dir, Some(&format!("Bearer {}", again.trim()))),
        Access::Off
    );
}
