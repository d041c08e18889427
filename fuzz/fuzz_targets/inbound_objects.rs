#![no_main]
use picket_collector::share::inbound::check_json;
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(check_json(data, "fuzz")));
