#![no_main]
use picket_proto::{Limits, Trusted};
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(Trusted::decode_stored(data, &Limits::default())));
