#![no_main]
use picket_proto::{Limits, SetFile};
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(SetFile::decode(data, &Limits::default())));
