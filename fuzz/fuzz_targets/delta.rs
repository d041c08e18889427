#![no_main]
use picket_proto::{Delta, Limits};
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(Delta::decode(data, Limits::default().max_delta)));
