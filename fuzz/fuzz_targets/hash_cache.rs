#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(picket_agent::cache::decode_body(data, 1 << 16)));
