#![no_main]
use picket_proto::{Document, Timestamp};
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(Timestamp::decode(data)));
