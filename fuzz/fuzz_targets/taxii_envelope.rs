#![no_main]
use picket_collector::taxii::parse_envelope;
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(parse_envelope(data)));
