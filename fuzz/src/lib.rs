//! Support for Picket's fuzz targets: the fixed trust chain that `update` verifies against, and
//! a seed corpus of valid encodings for every target.
//!
//! A fuzzer cannot forge an Ed25519 signature, so random bytes alone never get past the first
//! signature check in [`Trusted::update`]. The seeds are real, validly signed set files (a full
//! set, a newer one, and a delta between them) made from fixed key seeds, so the fuzzer starts
//! from inputs that reach every stage of verification and mutates from there.

#![forbid(unsafe_code)]

use std::sync::OnceLock;

use picket_proto::{
    sha256, sign_document, ChannelSpec, Content, Delta, DeltaRef, Document, Envelope, Hash, HashKind,
    Indicator, IpNet, Limits, Manifest, Meta, Observable, PayloadKind, ProcessCondition, Record, Role,
    RoleSpec, Root, SetFile, Severity, SigningKey, Snapshot, SnapshotView, Timestamp, Tlp, TrustAnchor,
    Trusted,
};

/// The channel every seed set is published on.
const CHANNEL: &str = "default";
/// The wall-clock time `update` verifies at: inside every seed document's lifetime.
const NOW: i64 = 1_000;

/// A real certificate for the `x509` target: Ed25519, self-signed by rcgen, subject CN `fuzz`,
/// valid from 2024-02-29 (a UTCTime) to 2051-01-01 (a GeneralizedTime), so both time forms are
/// in the seed. Made once and kept as hex: this crate does not depend on rcgen.
const CERT_HEX: &str = concat!(
    "308201013081b4a0030201020214231f3443d0add48f8b133ee712d9ee008f856ae5300506032b6570300f310d300b06",
    "035504030c0466757a7a3020170d3234303232393030303030305a180f32303531303130313030303030305a300f310d",
    "300b06035504030c0466757a7a302a300506032b6570032100bfb6723974d0a5808e9ce3dd8d413eb7e18338bd42875a",
    "d74923957bbe6e703fa320301e301c0603551d11041530138211636f6c6c6563746f722e6578616d706c65300506032b",
    "6570034100d5693cbbcc5ae5eeb079f8d02f196a89b26e315108a59d1b70dfb1acfbd5371bb2f27033c91bfa145d0c39",
    "ac779b96af36d66bfe3c0117a796fec55e7f439f0d",
);

/// Feeds `data`, as a set file, to [`Trusted::update`]: once as a first install from the trust
/// anchor, and once on top of the installed version-1 seed set (which is what reaches the
/// delta path).
pub fn update(data: &[u8]) {
    let chain = chain();
    let limits = Limits::default();
    if let Ok(file) = SetFile::decode(data, &limits) {
        let _ = Trusted::update(None, &chain.anchor, &file, NOW, &limits);
        let _ = Trusted::update(Some(&chain.installed), &chain.anchor, &file, NOW, &limits);
    }
}

/// Routes `target` as the TAXII server does, then reads its query parameters into a filter
/// with the parameters its endpoint allows (`api::allowed_params`, the server's own lists) and
/// with every listing parameter, and applies an accepted filter to a small fixed history. An
/// accepted filter asks for a page of 1 to `MAX_PAGE` objects.
pub fn taxii_query(target: &str) {
    use picket_collector::taxii_server::api;
    let Some((route, params)) = api::route(target) else {
        return;
    };
    // The server's own list for this endpoint, and the widest list too (an objects listing's),
    // so that every parameter's decoding is reached from any route.
    let allowed = api::allowed_params(&route);
    let listing = api::allowed_params(&api::Route::Objects(String::new(), String::new()));
    for allowed in [allowed, listing] {
        if let Ok(f) = api::filter(&params, allowed) {
            assert!(
                (1..=api::MAX_PAGE).contains(&f.limit),
                "an accepted filter asks for {} objects",
                f.limit
            );
            let picked = api::select(taxii_history(), &f);
            assert!(
                picked.windows(2).all(|w| w[0].1.added <= w[1].1.added),
                "not in date_added order"
            );
        }
    }
}

/// Two objects, one with two versions: what `taxii_query` selects from.
fn taxii_history(
) -> &'static std::collections::BTreeMap<String, Vec<picket_collector::taxii_server::api::Version>> {
    use picket_collector::taxii_server::api::Version;
    static HISTORY: OnceLock<std::collections::BTreeMap<String, Vec<Version>>> = OnceLock::new();
    HISTORY.get_or_init(|| {
        let version = |added: i64, id: &str, modified: &str| Version {
            added,
            version: modified.to_owned(),
            object: serde_json::json!({
                "type": id.split("--").next().unwrap_or_default(),
                "spec_version": "2.1",
                "id": id,
                "created": "2025-06-01T00:00:00.000Z",
                "modified": modified,
            }),
        };
        let ind = "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f";
        let sig = "sighting--11111111-1111-4111-8111-111111111111";
        [
            (
                ind,
                vec![version(1_748_736_000_000, ind, "2025-06-01T00:00:00.000Z")],
            ),
            (
                sig,
                vec![
                    version(1_748_736_000_001, sig, "2025-06-01T00:00:00.000Z"),
                    version(1_748_822_400_000, sig, "2025-06-02T00:00:00.000Z"),
                ],
            ),
        ]
        .into_iter()
        .map(|(id, v)| (id.to_owned(), v))
        .collect()
    })
}

/// Decodes a MISP feed's `manifest.json`; every uuid it yields names a file next to the
/// manifest, so it must be 36 characters of hex digits and hyphens (no `/`, no `.`).
pub fn misp_feed_manifest(text: &str) {
    let Ok(uuids) = picket_collector::ingest::parse_manifest(std::path::Path::new("manifest.json"), text)
    else {
        return;
    };
    for u in &uuids {
        assert!(
            u.len() == 36 && u.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
            "manifest key {u:?} is not a uuid"
        );
    }
}

/// What the TAXII client does with any body an upstream server sends: each resource decoder
/// (envelope, discovery, API root, collections, status) and the error-message reader. Text
/// from a server that reaches a message must be printable (no control characters that could
/// forge a log line).
pub fn taxii_response(data: &[u8]) {
    use picket_collector::taxii;
    let _ = taxii::parse_envelope(data);
    let _ = taxii::parse_discovery(data);
    let _ = taxii::parse_api_root(data);
    let _ = taxii::parse_collections(data);
    let _ = taxii::parse_status(data);
    if let Some(detail) = taxii::error_detail(data) {
        assert!(
            !detail.chars().any(char::is_control),
            "unprintable error detail {detail:?}"
        );
    }
}

/// The CSV reader with options an operator can set, chosen by the first two bytes (column by
/// index or by name, delimiter, header detection, comment character), on the rest as text.
pub fn csv(data: &[u8]) {
    use picket_collector::ingest::{parse_csv, CsvColumn, CsvOptions};
    let (&[a, b], rest) = data.split_at(data.len().min(2)) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let options = CsvOptions {
        column: match a & 3 {
            0 => CsvColumn::Index(0),
            1 => CsvColumn::Index(usize::from(a >> 2)),
            2 => CsvColumn::Name("sha256".to_owned()),
            _ => CsvColumn::Name(" Indicator ".to_owned()),
        },
        delimiter: [',', ';', '\t', '|'][usize::from(b & 3)],
        has_header: [None, Some(true), Some(false), None][usize::from((b >> 2) & 3)],
        comment: [Some('#'), None, Some(';'), Some('"')][usize::from((b >> 4) & 3)],
    };
    let _ = parse_csv(std::path::Path::new("fuzz.csv"), text, &options, &list_defaults());
}

/// The `/metrics` bearer check on any `Authorization` header: `text` is the token (its first
/// line, as the token file holds one) and the header (the rest). Access is granted only when the
/// header carries that very token, and the right header is always granted.
pub fn metrics_auth(text: &str) {
    use picket_collector::metrics::{judge, Access};
    let (token, header) = text.split_once('\n').unwrap_or((text, ""));
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return; // the token file's reader refuses these, so metrics stay off
    }
    let got = judge(Some(token), Some(header));
    if got == Access::Granted {
        let presented = header.trim().split_once(' ').map(|(_, t)| t.trim());
        assert_eq!(presented, Some(token), "granted for {header:?}");
    } else {
        assert_eq!(got, Access::Denied, "metrics are on, so a wrong header is 401");
    }
    assert_eq!(judge(None, Some(header)), Access::Off);
    assert_eq!(
        judge(Some(token), Some(&format!("Bearer {token}"))),
        Access::Granted
    );
}

/// The number the `spool_batch` seed carries, and that the target asks of every input: a
/// batch file's name says which batch it must hold.
const SPOOL_BATCH: (u64, u64) = (7, 1);

/// Feeds `data` to the spool's batch-file decoder twice: as it is, and with its last 32 bytes
/// replaced by the right SHA-256 of the rest, so that mutations get past the checksum to the
/// decoding and checks behind it. A batch that decodes must encode and decode back to itself.
pub fn spool_batch(data: &[u8]) {
    use picket_agent::spool::{decode_batch, encode_batch};
    let (epoch, seq) = SPOOL_BATCH;
    let _ = decode_batch(data, epoch, seq);
    let Some(split) = data.len().checked_sub(32) else {
        return;
    };
    let mut sealed = data[..split].to_vec();
    sealed.extend_from_slice(&sha256(&sealed));
    if let Ok(batch) = decode_batch(&sealed, epoch, seq) {
        assert_eq!(
            decode_batch(&encode_batch(&batch), epoch, seq).as_ref(),
            Ok(&batch),
            "a decoded batch does not survive re-encoding"
        );
    }
}

/// Feeds `data` to the spool's state-file decoder as it is, and re-sealed (its last 32 bytes
/// replaced by the SHA-256 of the rest) so that mutations reach the body. A state that decodes
/// must encode back to the bytes it came from (one encoding per state).
pub fn spool_state(data: &[u8]) {
    use picket_agent::spool::{decode_state, encode_state};
    let _ = decode_state(data);
    let Some(split) = data.len().checked_sub(32) else {
        return;
    };
    let mut sealed = data[..split].to_vec();
    sealed.extend_from_slice(&sha256(&sealed));
    if let Ok(state) = decode_state(&sealed) {
        assert_eq!(decode_state(&encode_state(&state)), Ok(state), "no round trip");
    }
}

/// Checks the hand-written snapshot parser against postcard's encoder on `data`: whatever the
/// borrowed view accepts must re-encode to exactly `data`, address each record by its offset,
/// and rebuild the seed delta byte for byte as the owned path does.
pub fn view(data: &[u8]) {
    let Ok(view) = SnapshotView::parse(data, Limits::default().max_snapshot) else {
        return;
    };
    let records = view
        .records()
        .map(|r| {
            assert_eq!(
                view.record_at(r.offset),
                Ok(r),
                "record_at disagrees with records()"
            );
            r.to_record()
        })
        .collect();
    let owned = Snapshot {
        channel: view.channel().to_owned(),
        version: view.version(),
        records,
    };
    assert!(
        owned.encode() == data,
        "the view accepted bytes that are not the canonical encoding"
    );
    let delta = &chain().delta;
    let by_bytes = delta.apply_to_bytes(&view).ok();
    assert!(
        by_bytes == delta.apply(&owned).ok().map(|s| s.encode()),
        "apply_to_bytes disagrees with apply"
    );
}

/// Valid inputs for every target, as `(target, file name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let c = chain();
    let limits = Limits::default();
    let mut out = vec![
        ("anchor", "anchor".to_owned(), c.anchor.to_text().into_bytes()),
        ("root", "v1".to_owned(), c.root.encode()),
        ("snapshot", "v1".to_owned(), c.v1.encode()),
        ("snapshot", "v2".to_owned(), c.v2.encode()),
        ("view", "v1".to_owned(), c.v1.encode()),
        ("view", "v2".to_owned(), c.v2.encode()),
        ("delta", "v1-v2".to_owned(), Delta::between(&c.v1, &c.v2).encode()),
        ("state", "v1".to_owned(), c.installed.encode()),
        (
            "agent_config",
            "full".to_owned(),
            b"state_dir = \"/var/lib/picket-agent\"\n[scan]\nroots = [\"/home\"]\nexclude = [\"/home/x/.cache\"]\nmax_file_size = \"64MiB\"\n[processes]\npoll_interval = \"10s\"\n[limits]\ncpu_budget = 0.05\nmemory_limit = \"256MiB\"\n".to_vec(),
        ),
        (
            "proc_net",
            "tcp".to_owned(),
            b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 20 4 30 10 -1\n".to_vec(),
        ),
        (
            "plain_list",
            "mixed".to_owned(),
            b"# feed\n44d88612fea8a8f36de82e1278abb02f\n198.51.100.7/24 # c2\n2001:db8::1\n".to_vec(),
        ),
        (
            "misp_event",
            "event".to_owned(),
            br#"{"Event": {"uuid": "57c4445b-c548-4654-af0b-4be3950d210f", "timestamp": "1472541011", "distribution": "3", "threat_level_id": "3", "Orgc": {"name": "CIRCL"}, "Tag": [{"name": "tlp:white"}], "Attribute": [{"uuid": "57c4448b-454c-4d17-90d1-4d2f950d210f", "type": "md5", "value": "44d88612fea8a8f36de82e1278abb02f", "to_ids": true}, {"type": "ip-dst|port", "value": "198.51.100.7|443", "to_ids": "1", "Tag": [{"name": "tlp:amber"}]}, {"type": "domain", "value": "evil.example", "to_ids": true}, {"type": "link", "value": "https://example.org", "to_ids": false}], "Object": [{"uuid": "5a3cd5b6-9568-4342-b2ab-4c62950d210f", "name": "file", "distribution": "5", "Attribute": [{"type": "filename", "value": "Bulletin.doc", "to_ids": true}, {"type": "sha1", "value": "3395856ce81f2b7382dee72602f798b642f14140", "to_ids": true}, {"type": "size-in-bytes", "value": 68, "to_ids": true}]}, {"name": "domain-ip", "deleted": true, "Attribute": [{"type": "ip-dst", "value": "2001:db8::/32", "to_ids": true}]}]}}"#.to_vec(),
        ),
        (
            "csv",
            // Two option bytes (0, 0: the defaults) before the text; see `csv`.
            "header".to_owned(),
            b"\x00\x00\xef\xbb\xbf# banner\nsha256,note\r\n275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f,\"say \"\"hi\"\", twice\"\r\n\"198.51.100.7/24\", \"multi\nline\"\n".to_vec(),
        ),
        (
            "stix_bundle",
            "bundle".to_owned(),
            br#"{"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": [{"type": "indicator", "spec_version": "2.1", "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f", "created": "2016-04-06T20:03:48.000Z", "modified": "2016-04-06T20:03:48.000Z", "pattern": "[file:hashes.'SHA-256' = '275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f' AND file:size = 68] OR [ipv4-addr:value ISSUBSET '198.51.100.0/24']", "pattern_type": "stix", "valid_from": "2016-01-01T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z", "confidence": 80, "object_marking_refs": ["marking-definition--f88d31f6-486f-44da-b317-01333bde0b82"]}, {"type": "marking-definition", "id": "marking-definition--22222222-2222-4222-8222-222222222222", "definition_type": "tlp", "definition": {"tlp": "red"}}]}"#.to_vec(),
        ),
        (
            "stix_pattern",
            "compound".to_owned(),
            b"[process:image_ref.name = 'nc' AND process:command_line LIKE '%-e /bin/sh%'] OR [file:name MATCHES '^invoice\\.pdf' OR file:hashes.md5 IN ('44d88612fea8a8f36de82e1278abb02f')] OR [domain-name:value = 'x'] WITHIN 5 SECONDS".to_vec(),
        ),
        (
            "taxii_request",
            "post-head".to_owned(),
            b"POST /isac/collections/0f3c2a8e-1b7d-4c55-9a0e-6d2b8f1e4a70/objects/ HTTP/1.1\r\nHost: collector.example\r\nAuthorization: Basic cGVlcjE6c2VjcmV0\r\nAccept: application/taxii+json;version=2.1\r\nContent-Type: application/taxii+json;version=2.1\r\nContent-Length: 12\r\n\r\n".to_vec(),
        ),
        (
            "taxii_request",
            "envelope".to_owned(),
            br#"{"objects": [{"type": "sighting", "id": "sighting--11111111-1111-4111-8111-111111111111", "modified": "2025-01-01T00:00:00Z", "sighting_of_ref": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"}, 7, {"id": "x"}]}"#.to_vec(),
        ),
        ("inbound_objects", "bundle".to_owned(), br#"{"type":"bundle","id":"bundle--5d0092c5-5f74-4287-9642-33f4c354e56d","objects":[{"type":"sighting","spec_version":"2.1","id":"sighting--11111111-1111-4111-8111-111111111111","created":"2025-06-01T00:00:00.000Z","modified":"2025-06-02T00:00:00.5Z","sighting_of_ref":"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f","count":4,"first_seen":"2025-06-01T00:00:00Z","last_seen":"2025-06-02T00:00:00Z","created_by_ref":"identity--11111111-1111-4111-8111-111111111111"},{"type":"indicator","spec_version":"2.1","id":"indicator--a1111111-1111-4111-8111-111111111111","created":"2025-06-01T00:00:00.000Z","modified":"2025-06-01T00:00:00.000Z","pattern":"[ipv4-addr:value = '198.51.100.7'] OR [file:hashes.'SHA-256' = '275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f']","pattern_type":"stix","valid_from":"2025-06-01T00:00:00Z","object_marking_refs":["marking-definition--e1111111-1111-4111-8111-111111111111"]},{"type":"marking-definition","spec_version":"2.1","id":"marking-definition--e1111111-1111-4111-8111-111111111111","created":"2025-01-01T00:00:00.000Z","definition_type":"tlp","definition":{"tlp":"red"}},{"type":"opinion","spec_version":"2.1","id":"opinion--11111111-1111-4111-8111-111111111111","created":"2025-06-02T00:00:00Z","opinion":"strongly-disagree","object_refs":["indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"]}]}"#.to_vec()),
        ("sightings", "one".to_owned(), {
            let mut t = picket_agent::sightings::Sightings::new(8);
            t.observe("indicator--a", "sha256", picket_agent::sightings::Observed::File("/tmp/x".into()), 1);
            t.encode()
        }),
    ];
    for (name, bytes) in [
        ("full-v1", &c.full_v1),
        ("full-v2", &c.full_v2),
        ("delta-v2", &c.delta_v2),
    ] {
        out.push(("setfile", name.to_owned(), bytes.clone()));
        out.push(("update", name.to_owned(), bytes.clone()));
        // Invariant: the seed files were encoded by `build_chain` and verified there.
        let file = SetFile::decode(bytes, &limits).expect("a seed set file decodes");
        out.push(("envelope", "root".to_owned(), file.roots[0].1.to_vec()));
        out.push(("envelope", format!("timestamp-{name}"), file.timestamp.to_vec()));
        out.push(("envelope", format!("manifest-{name}"), file.manifest.to_vec()));
        let stamp = Envelope::decode(file.timestamp, PayloadKind::Timestamp, 1 << 20);
        let manifest = Envelope::decode(file.manifest, PayloadKind::Manifest, 1 << 20);
        out.push((
            "timestamp",
            name.to_owned(),
            stamp.expect("a seed timestamp decodes").payload.to_vec(),
        ));
        out.push((
            "manifest",
            name.to_owned(),
            manifest.expect("a seed manifest decodes").payload.to_vec(),
        ));
    }
    out.extend(wire_seeds(&c.full_v1));
    out.push(("x509", "ed25519".to_owned(), unhex(CERT_HEX)));
    out.push(("spool_batch", "two".to_owned(), spool_seed()));
    out.extend(collector_seeds());
    out.extend(taxii_response_seeds());
    out.push(("hash_cache", "two".to_owned(), hash_cache_seed()));
    out.push((
        "spool_state",
        "one".to_owned(),
        picket_agent::spool::encode_state(&picket_agent::spool::StateWire {
            epoch: 0x5eed,
            last_seq: 41,
            dropped: 3,
        }),
    ));
    out
}

/// What an upstream TAXII server answers, one seed per resource `taxii_response` decodes.
fn taxii_response_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    [
        ("envelope", r#"{"more": true, "next": "abc", "objects": [{"type": "sighting", "spec_version": "2.1", "id": "sighting--11111111-1111-4111-8111-111111111111", "created": "2025-06-01T00:00:00.000Z", "modified": "2025-06-02T00:00:00.000Z", "sighting_of_ref": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f", "count": 3}]}"#),
        ("discovery", r#"{"title": "ISAC", "default": "https://isac.example/api1/", "api_roots": ["https://isac.example/api1/", "/api2/"]}"#),
        ("api-root", r#"{"title": "api1", "versions": ["application/taxii+json;version=2.1"], "max_content_length": 10485760}"#),
        ("collections", r#"{"collections": [{"id": "0f3c2a8e-1b7d-4c55-9a0e-6d2b8f1e4a70", "title": "sightings", "can_read": true, "can_write": false, "media_types": ["application/stix+json;version=2.1"]}]}"#),
        ("status", r#"{"id": "3c8f9a1e-7d2b-4e55-8a0e-6d2b8f1e4a70", "status": "complete", "total_count": 2, "success_count": 1, "failure_count": 1, "pending_count": 0, "successes": [{"id": "sighting--11111111-1111-4111-8111-111111111111", "version": "2025-06-02T00:00:00.000Z"}], "failures": [{"id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f", "version": "2025-06-02T00:00:00.000Z", "message": "not allowed"}]}"#),
        ("error", "{\"title\": \"Unauthorized\", \"description\": \"bad\\u001b[31m credentials\", \"http_status\": \"401\"}"),
    ]
    .iter()
    .map(|(name, text)| ("taxii_envelope", (*name).to_owned(), text.as_bytes().to_vec()))
    .collect()
}

/// The entries of a hash cache file of two entries (what `hash_cache` decodes: the bytes
/// between the 5-byte header and the 32-byte checksum).
fn hash_cache_seed() -> Vec<u8> {
    use picket_agent::cache::{HashCache, Identity};
    let mut cache = HashCache::new(16);
    for (ino, full) in [(7u64, true), (9, false)] {
        let id = Identity {
            dev: 2049,
            ino,
            size: 68,
            mtime: 1_000,
            mtime_nsec: 5,
            ctime: 1_000,
            ctime_nsec: 6,
        };
        let digests = picket_agent::digest::Digests {
            md5: full.then_some([1; 16]),
            sha1: full.then_some([2; 20]),
            sha256: Some([3; 32]),
        };
        let hashed_at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(2_000);
        assert!(cache.put(id, &digests, hashed_at), "a settled file is cached");
    }
    let file = cache.encode();
    file[5..file.len() - 32].to_vec()
}

/// Seeds for the collector's query-string, configuration, MISP feed manifest and form targets.
fn collector_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = [
        "/isac/collections/0f3c2a8e-1b7d-4c55-9a0e-6d2b8f1e4a70/objects/?added_after=2025-06-01T00:00:00.000Z&limit=10&match[type]=indicator,sighting&match[version]=all&match[spec_version]=2.1",
        "/isac/collections/0f3c2a8e-1b7d-4c55-9a0e-6d2b8f1e4a70/manifest/?match%5Bid%5D=indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f&next=AAECAwQFBgc%3D",
        "/isac/collections/0f3c2a8e-1b7d-4c55-9a0e-6d2b8f1e4a70/objects/sighting--11111111-1111-4111-8111-111111111111/versions/?added_after=2025-06-01T00:00:00Z&limit=1",
        "/isac/collections/0f3c2a8e-1b7d-4c55-9a0e-6d2b8f1e4a70/objects/indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f/?match[version]=first,2025-06-01T00:00:00.000Z",
        "/taxii2/",
        "/isac/status/3c8f9a1e-7d2b-4e55-8a0e-6d2b8f1e4a70/",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| ("taxii_query", format!("target-{i}"), t.as_bytes().to_vec()))
    .collect();
    out.push((
        "collector_config",
        "full".to_owned(),
        COLLECTOR_CONFIG.as_bytes().to_vec(),
    ));
    out.push((
        "misp_feed_manifest",
        "two".to_owned(),
        br##"{"57c4445b-c548-4654-af0b-4be3950d210f": {"Orgc": {"name": "CIRCL", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"}, "Tag": [{"name": "tlp:white", "colour": "#ffffff"}], "info": "OSINT - test", "date": "2016-08-30", "analysis": 2, "threat_level_id": 3, "timestamp": 1472541011}, "5f3c1d2e-0000-4222-8333-944455556666": {"info": "second", "timestamp": "1700000000"}}"##.to_vec(),
    ));
    out.push((
        "metrics_auth",
        "bearer".to_owned(),
        b"0f3c2a8e1b7d4c559a0e6d2b8f1e4a700f3c2a8e1b7d4c559a0e6d2b8f1e4a70\nBearer 0f3c2a8e1b7d4c559a0e6d2b8f1e4a700f3c2a8e1b7d4c559a0e6d2b8f1e4a70".to_vec(),
    ));
    out.push((
        "web_form",
        "mark".to_owned(),
        b"csrf=9f86d081884c7d659a2feb0ea0b0b4f1&indicator=indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f&reason=false+positive%3A+a+vendor%27s+updater&until=30d".to_vec(),
    ));
    out
}

/// A picket.toml with every section the collector reads: what `collector_config` starts from.
const COLLECTOR_CONFIG: &str = r#"org = "Example Org"
offline_root_key = "/root/picket-root.key"

[ingest]
default_tlp = "green"
default_confidence = 50

[channels.default]
manifest_lifetime = "30d"
timestamp_lifetime = "1d"
tlp_ceiling = "amber"

[tls]
names = ["collector.example", "10.0.0.5"]

[enrolment]
cert_lifetime = "90d"
default_token_expiry = "7d"

[channel]
listen = "0.0.0.0:7443"
max_sessions = 10000
max_sightings_per_agent = 1000

[[community]]
name = "isac"
tlp_ceiling = "amber"
disclosure = "organisation"
sector = "energy"
k = 3
time_bucket = "1d"
count_bands = [1, 10, 100]
delay = "1h"

[[community.upstream]]
name = "hub"
api_root = "https://hub.example/isac/"
collection = "0f3c2a8e-1b7d-4c55-9a0e-6d2b8f1e4a70"
username = "example-org"
password_file = "keys/hub.password"
push = true
pull = true

[[taxii.member]]
name = "peer1"
password_hash = "pbkdf2-sha256$600000$c2FsdHNhbHRzYWx0c2FsdA$00"
communities = ["isac"]
contribute = ["isac"]
sector = "finance"
"#;

/// A batch file of two sightings numbered [`SPOOL_BATCH`], as the spool writes it.
fn spool_seed() -> Vec<u8> {
    use picket_proto::wire::{Batch, ObservedKind, SightingReport};
    let (epoch, seq) = SPOOL_BATCH;
    let report = |indicator: &str, observed, location: Option<&str>| SightingReport {
        indicator: indicator.into(),
        what: "sha256".into(),
        observed,
        location: location.map(Into::into),
        first_seen: 1_700_000_000,
        last_seen: 1_700_000_060,
        count: 2,
        set_version: 1,
    };
    picket_agent::spool::encode_batch(&Batch {
        epoch,
        seq,
        items: vec![
            report("indicator--a", ObservedKind::File, Some("~/Downloads/x.exe")),
            report("indicator--b", ObservedKind::Process, None),
        ],
    })
}

/// The bytes of a hex constant of this file.
fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        // Invariant: only called on the constants above, which are hex digits in pairs.
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("a hex constant"))
        .collect()
}

/// One frame of each message kind the live channel carries.
fn wire_seeds(set_file: &[u8]) -> Vec<(&'static str, String, Vec<u8>)> {
    use picket_proto::wire::*;
    let report = SightingReport {
        indicator: "indicator--a".into(),
        what: "sha256".into(),
        observed: ObservedKind::File,
        location: Some("~/Downloads/x.exe".into()),
        first_seen: 1_700_000_000,
        last_seen: 1_700_000_060,
        count: 2,
        set_version: 1,
    };
    let client = [
        (
            "hello",
            ClientMsg::Hello(Hello {
                min_version: 1,
                max_version: 1,
                agent_version: "0.1.0".into(),
                machine: [1; 32],
            }),
        ),
        (
            "fetch",
            ClientMsg::Fetch(Fetch {
                channel: "default".into(),
                have: Some(1),
                have_timestamp: Some(1),
            }),
        ),
        (
            "report",
            ClientMsg::Report(Batch {
                epoch: 7,
                seq: 1,
                items: vec![report],
            }),
        ),
        (
            "enroll",
            ClientMsg::Enroll(Enroll {
                token_id: "0011223344556677".into(),
                secret: vec![2; 16],
                public_key: [3; 32],
                proof: vec![4; 64],
                machine: [5; 32],
                channel: "default".into(),
            }),
        ),
        ("renew", ClientMsg::Renew),
    ];
    let server = [
        (
            "set",
            ServerMsg::Set {
                version: 1,
                file: set_file.to_vec(),
            },
        ),
        (
            "ack",
            ServerMsg::Ack {
                epoch: 7,
                seq: 1,
                duplicate: false,
            },
        ),
        (
            "new-version",
            ServerMsg::NewVersion {
                channel: "default".into(),
                version: 2,
            },
        ),
        (
            "error",
            ServerMsg::Error(WireError {
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
                retry_after_ms: Some(500),
            }),
        ),
    ];
    let mut out = Vec::new();
    for (name, m) in client {
        out.push(("wire_client", name.to_owned(), encode_frame(&m)));
    }
    for (name, m) in server {
        out.push(("wire_server", name.to_owned(), encode_frame(&m)[4..].to_vec()));
    }
    out.push((
        "token",
        "valid".to_owned(),
        format!("pk1-0011223344556677-{}-{}", "ab".repeat(16), "cd".repeat(32)).into_bytes(),
    ));
    out
}

/// The fixed trust chain: keys from fixed seeds, root version 1, two set versions, and the
/// state an agent holds after installing version 1.
struct Chain {
    anchor: TrustAnchor,
    root: Root,
    v1: Snapshot,
    v2: Snapshot,
    delta: Delta,
    full_v1: Vec<u8>,
    full_v2: Vec<u8>,
    delta_v2: Vec<u8>,
    installed: Trusted,
}

fn chain() -> &'static Chain {
    static CHAIN: OnceLock<Chain> = OnceLock::new();
    CHAIN.get_or_init(build_chain)
}

fn key(byte: u8, role: Role) -> SigningKey {
    // Invariant: every 32-byte string is an Ed25519 seed.
    SigningKey::from_seed([byte; 32], role).expect("a fixed seed is a valid key")
}

fn build_chain() -> Chain {
    let root_key = key(1, Role::Root);
    let publisher = key(2, Role::Publisher);
    let timestamp = key(3, Role::Timestamp);
    let anchor = TrustAnchor {
        org: "Fuzz".into(),
        root_version: 1,
        threshold: 1,
        keys: vec![root_key.public()],
    };
    let root = Root {
        version: 1,
        created: 0,
        expires: 10_000_000,
        org: "Fuzz".into(),
        root: RoleSpec::new(vec![root_key.public()], 1, 10_000_000),
        channels: vec![ChannelSpec {
            name: CHANNEL.into(),
            publisher: RoleSpec::new(vec![publisher.public()], 1, 1_000_000),
            timestamp: RoleSpec::new(vec![timestamp.public()], 1, 100_000),
            max_tlp: Tlp::Amber,
        }],
        tls_ca_pin: Some([7; 32]),
    };
    let root_env = sign_document(&root, PayloadKind::Root, &[&root_key]);

    let v1 = snapshot(
        1,
        &[("indicator--a", 1), ("indicator--b", 2), ("indicator--c", 3)],
    );
    let v2 = snapshot(
        2,
        &[("indicator--b", 2), ("indicator--c", 9), ("indicator--d", 4)],
    );
    let delta_value = Delta::between(&v1, &v2);
    let delta = delta_value.encode();
    let offer = DeltaRef {
        base_version: 1,
        base_sha256: sha256(&v1.encode()),
        sha256: sha256(&delta),
        length: delta.len() as u64,
    };
    let publish = |snap: &Snapshot, deltas: Vec<DeltaRef>, content: Content<'_>| {
        let bytes = snap.encode();
        let manifest = Manifest {
            channel: CHANNEL.into(),
            version: snap.version,
            created: 0,
            expires: 1_000_000,
            sha256: sha256(&bytes),
            length: bytes.len() as u64,
            max_tlp: Tlp::Green,
            deltas,
        };
        let manifest = sign_document(&manifest, PayloadKind::Manifest, &[&publisher]);
        let stamp = Timestamp {
            channel: CHANNEL.into(),
            version: snap.version,
            created: 0,
            expires: 100_000,
            manifest_version: snap.version,
            manifest_sha256: sha256(&manifest),
            manifest_length: manifest.len() as u64,
        };
        let stamp = sign_document(&stamp, PayloadKind::Timestamp, &[&timestamp]);
        SetFile {
            channel: CHANNEL,
            roots: vec![(1, &root_env)],
            timestamp: &stamp,
            manifest: &manifest,
            content,
        }
        .encode()
    };
    let v1_bytes = v1.encode();
    let v2_bytes = v2.encode();
    let full_v1 = publish(&v1, Vec::new(), Content::Full(&v1_bytes));
    let full_v2 = publish(&v2, vec![offer.clone()], Content::Full(&v2_bytes));
    let delta_v2 = publish(&v2, vec![offer], Content::Delta(&delta));

    let limits = Limits::default();
    // Invariant: the chain above is valid at NOW; `update` failing here is a bug in this file.
    let file = SetFile::decode(&full_v1, &limits).expect("the version-1 seed decodes");
    let (installed, _) =
        Trusted::update(None, &anchor, &file, NOW, &limits).expect("the version-1 seed verifies");
    Chain {
        anchor,
        root,
        v1,
        v2,
        delta: delta_value,
        full_v1,
        full_v2,
        delta_v2,
        installed,
    }
}

/// A snapshot with one indicator of several kinds per id, so that record decoding is reached.
fn snapshot(version: u64, items: &[(&str, u8)]) -> Snapshot {
    let records = items
        .iter()
        .map(|(id, b)| {
            let observable = match b % 3 {
                0 => Observable::RemoteAddr(IpNet::parse("192.0.2.0/24").expect("a literal network parses")),
                1 => Observable::FileHash {
                    hash: Hash {
                        kind: HashKind::Sha256,
                        value: vec![*b; 32],
                    },
                    size: Some(u64::from(*b) * 100),
                },
                _ => Observable::ProcessAll(vec![
                    ProcessCondition::Name("evil".into()),
                    ProcessCondition::CommandLine("--payload".into()),
                ]),
            };
            let ind = Indicator {
                id: (*id).to_owned(),
                observable,
                meta: Meta {
                    confidence: 90,
                    severity: Severity::High,
                    tlp: Tlp::Green,
                    valid_until: None,
                    source: "fuzz".into(),
                },
            };
            Record::from_indicator(&ind).expect("a fixed indicator is valid")
        })
        .collect();
    Snapshot::new(CHANNEL, version, records).expect("fixed ids are unique")
}

/// Defaults for the plain-list target.
pub fn list_defaults() -> picket_collector::ingest::Defaults {
    picket_collector::ingest::Defaults {
        source: "fuzz".into(),
        tlp: picket_proto::Tlp::Green,
        confidence: 50,
        severity: picket_proto::Severity::Medium,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds are what makes `update` reach past signature checks: they must all verify.
    #[test]
    fn seed_set_files_verify() {
        let c = chain();
        let limits = Limits::default();
        for bytes in [&c.full_v1, &c.full_v2] {
            let file = SetFile::decode(bytes, &limits).unwrap();
            Trusted::update(None, &c.anchor, &file, NOW, &limits).unwrap();
        }
        let file = SetFile::decode(&c.delta_v2, &limits).unwrap();
        let (t, _) = Trusted::update(Some(&c.installed), &c.anchor, &file, NOW, &limits).unwrap();
        assert_eq!(t.snapshot().to_snapshot(), c.v2);
        // The differential check holds on the seeds themselves.
        view(&c.v1.encode());
        view(&c.v2.encode());
    }

    /// The seeds of the `x509` and `spool_batch` targets are what those decoders accept whole.
    #[test]
    fn the_certificate_and_spool_batch_seeds_decode() {
        let cert = unhex(CERT_HEX);
        assert_eq!(
            picket_proto::x509::validity(&cert),
            Some((1_709_164_800, 2_556_144_000))
        );
        let (epoch, seq) = SPOOL_BATCH;
        let batch = picket_agent::spool::decode_batch(&spool_seed(), epoch, seq).unwrap();
        assert_eq!(batch.items.len(), 2);
        spool_batch(&spool_seed());
    }

    /// Every target in fuzz_targets/ starts from at least one seed.
    #[test]
    fn every_target_has_a_seed() {
        let seeded: std::collections::BTreeSet<&str> = seeds().iter().map(|(t, _, _)| *t).collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets");
        let mut targets = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let target = name.strip_suffix(".rs").unwrap();
            assert!(
                seeded.contains(target),
                "fuzz target {target} has no seed in seeds()"
            );
            targets += 1;
        }
        assert!(targets >= 34, "{targets} targets");
    }

    /// The seeds of the TAXII client's decoders and of the hash cache decode, and the CSV seed
    /// (its option bytes the defaults) gives its two indicators.
    #[test]
    fn the_taxii_response_hash_cache_and_csv_seeds_decode() {
        use picket_collector::taxii;
        let by = |name: &str| {
            taxii_response_seeds()
                .into_iter()
                .find(|(_, n, _)| n == name)
                .unwrap()
                .2
        };
        assert_eq!(taxii::parse_envelope(&by("envelope")).unwrap().objects.len(), 1);
        assert_eq!(
            taxii::parse_discovery(&by("discovery")).unwrap().api_roots.len(),
            2
        );
        taxii::parse_api_root(&by("api-root")).unwrap();
        assert_eq!(taxii::parse_collections(&by("collections")).unwrap().len(), 1);
        assert_eq!(taxii::parse_status(&by("status")).unwrap().failure_count, 1);
        let detail = taxii::error_detail(&by("error")).unwrap();
        assert!(detail.starts_with("Unauthorized: bad"), "{detail}");
        for (_, _, bytes) in taxii_response_seeds() {
            taxii_response(&bytes);
        }
        let cache = picket_agent::cache::decode_body(&hash_cache_seed(), 16).unwrap();
        assert_eq!(cache.len(), 2);
        let csv_seed = seeds().into_iter().find(|(t, _, _)| *t == "csv").unwrap().2;
        let text = std::str::from_utf8(&csv_seed[2..]).unwrap();
        let batch = picket_collector::ingest::parse_csv(
            std::path::Path::new("seed.csv"),
            text,
            &picket_collector::ingest::CsvOptions::default(),
            &list_defaults(),
        )
        .unwrap();
        assert_eq!(batch.items.len(), 2);
        csv(&csv_seed);
    }

    /// The collector seeds are accepted whole, so the fuzzer starts past the first error.
    #[test]
    fn the_collector_seeds_are_accepted() {
        let cfg =
            picket_collector::config::Config::parse(COLLECTOR_CONFIG, std::path::Path::new("picket.toml"))
                .unwrap();
        assert_eq!(cfg.communities[0].upstream[0].name, "hub");
        assert_eq!(cfg.taxii.members[0].name, "peer1");
        for (target, name, bytes) in collector_seeds() {
            let text = std::str::from_utf8(&bytes).unwrap();
            match target {
                "taxii_query" => {
                    use picket_collector::taxii_server::api;
                    let (_, params) = api::route(text).unwrap();
                    let all = api::allowed_params(&api::Route::Objects(String::new(), String::new()));
                    api::filter(&params, all).unwrap();
                    taxii_query(text);
                }
                "misp_feed_manifest" => {
                    let uuids =
                        picket_collector::ingest::parse_manifest(std::path::Path::new("m"), text).unwrap();
                    assert_eq!(uuids.len(), 2, "{name}");
                }
                "web_form" => assert_eq!(picket_collector::web::parse_form(&bytes).unwrap().len(), 4),
                "metrics_auth" => {
                    let (token, header) = text.split_once('\n').unwrap();
                    assert_eq!(
                        picket_collector::metrics::judge(Some(token), Some(header)),
                        picket_collector::metrics::Access::Granted
                    );
                    metrics_auth(text);
                }
                _ => {}
            }
        }
    }
}
