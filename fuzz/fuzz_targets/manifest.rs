#![no_main]
use picket_proto::{Document, Manifest};
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(Manifest::decode(data)));
