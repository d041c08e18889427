#![no_main]
use picket_proto::{Limits, Delta};
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(Delta::decode(data, Limits::default().max_delta)));
