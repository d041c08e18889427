#![no_main]
use picket_proto::{Document, Root};
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(Root::decode(data)));
