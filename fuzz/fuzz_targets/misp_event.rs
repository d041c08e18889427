#![no_main]
use picket_collector::ingest::parse_event;
libfuzzer_sys::fuzz_target!(|text: &str| drop(parse_event(
    std::path::Path::new("fuzz.json"),
    text,
    &picket_fuzz::list_defaults()
)));
