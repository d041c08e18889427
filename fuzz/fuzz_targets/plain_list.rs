#![no_main]
use picket_collector::ingest::parse_file;
libfuzzer_sys::fuzz_target!(|text: &str| drop(parse_file(
    std::path::Path::new("fuzz.txt"),
    text,
    &picket_fuzz::list_defaults()
)));
