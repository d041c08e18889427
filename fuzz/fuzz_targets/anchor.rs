#![no_main]
use picket_proto::TrustAnchor;
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(std::str::from_utf8(data).map(TrustAnchor::parse)));
