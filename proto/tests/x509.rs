//! Property tests for the certificate readings in `picket_proto::x509`.
//!
//! - **Round trip**: a certificate rcgen makes with any validity period X.509 can express (a
//!   UTCTime from 1950 to 2049, a GeneralizedTime before and after) reads back as exactly that
//!   period, and its Ed25519 key reads back from its SubjectPublicKeyInfo.
//! - **Robustness**: random bytes, and real certificates truncated or with bytes flipped, never
//!   make a reader panic, and whatever validity they yield is a time X.509 can express.
//!
//! The `x509` fuzz target explores the same readers for longer.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use picket_proto::x509::{self, LAST_TIME, MAX_CERT_LEN};
use proptest::collection::vec;
use proptest::prelude::*;
use rcgen::{CertificateParams, KeyPair, PublicKeyData, PKCS_ED25519};

/// 0001-01-01T00:00:00Z in unix seconds.
const YEAR_1: i64 = -62_135_596_800;
/// 0000-01-01T00:00:00Z: the earliest instant a GeneralizedTime can write.
const YEAR_0: i64 = -62_167_219_200;
/// 1950-01-01T00:00:00Z and 2050-01-01T00:00:00Z: where rcgen switches between UTCTime and
/// GeneralizedTime.
const UTC_FROM: i64 = -631_152_000;
const UTC_UNTIL: i64 = 2_524_608_000;

/// Whole-second instants across what X.509 can express, with the edges of the UTCTime range
/// and of the whole range drawn often.
fn instant() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => YEAR_1..=LAST_TIME,
        4 => UTC_FROM..UTC_UNTIL,
        1 => (-2i64..=1).prop_map(|d| UTC_FROM + d),
        1 => (-2i64..=1).prop_map(|d| UTC_UNTIL + d),
        1 => (0i64..=2).prop_map(|d| LAST_TIME - d),
        1 => (0i64..=2).prop_map(|d| YEAR_1 + d),
    ]
}

fn certificate(key: &KeyPair, not_before: i64, not_after: i64) -> Vec<u8> {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let at = |t: i64| {
        let d = Duration::from_secs(t.unsigned_abs());
        if t < 0 {
            epoch - d
        } else {
            epoch + d
        }
    };
    let mut params = CertificateParams::new(vec!["agent.example".to_owned()]).unwrap();
    params.not_before = at(not_before);
    params.not_after = at(not_after);
    params.self_signed(key).unwrap().der().to_vec()
}

/// A real certificate, made once.
fn sample() -> Vec<u8> {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    certificate(&key, 1_700_000_000, 1_800_000_000)
}

/// Runs every reader on `bytes`; whatever they return must be in range.
fn read_all(bytes: &[u8]) {
    if let Some((not_before, not_after)) = x509::validity(bytes) {
        for t in [not_before, not_after] {
            assert!((YEAR_0..=LAST_TIME).contains(&t), "{t} is not an X.509 time");
        }
    }
    if let Some((_, contents, rest)) = x509::tlv(bytes) {
        assert!(
            2 + contents.len() + rest.len() <= bytes.len(),
            "tlv read past its input"
        );
    }
    if let Some(key) = x509::ed25519_key(bytes) {
        assert_eq!(x509::ed25519_spki(&key), bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn a_certificate_s_validity_reads_back_as_written(not_before in instant(), not_after in instant()) {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let der = certificate(&key, not_before, not_after);
        prop_assert_eq!(x509::validity(&der), Some((not_before, not_after)));
        let raw: [u8; 32] = key.public_key_raw().try_into().unwrap();
        prop_assert_eq!(x509::ed25519_spki(&raw), key.subject_public_key_info());
        prop_assert_eq!(x509::ed25519_key(&key.subject_public_key_info()), Some(raw));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        read_all(&bytes);
    }

    #[test]
    fn a_damaged_certificate_never_panics(
        cut in any::<prop::sample::Index>(),
        flips in vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
    ) {
        let der = sample();
        read_all(&der[..cut.index(der.len() + 1)]);
        let mut damaged = der.clone();
        for (at, mask) in flips {
            damaged[at.index(der.len())] ^= mask;
        }
        read_all(&damaged);
    }
}

#[test]
fn a_certificate_larger_than_the_cap_is_not_read() {
    let mut der = sample();
    assert!(x509::validity(&der).is_some());
    der.resize(MAX_CERT_LEN + 1, 0);
    assert_eq!(x509::validity(&der), None);
}
