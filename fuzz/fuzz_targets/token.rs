#![no_main]
use picket_proto::EnrollToken;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = EnrollToken::parse(text) {
            assert_eq!(EnrollToken::parse(&t.encode()).ok(), Some(t));
        }
    }
});
