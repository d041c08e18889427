#![no_main]
use picket_proto::{Limits, Snapshot};
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(Snapshot::decode(data, Limits::default().max_snapshot)));
