#![no_main]
use picket_collector::stix::translate_pattern;
libfuzzer_sys::fuzz_target!(|text: &str| drop(translate_pattern(text)));
