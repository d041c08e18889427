#![no_main]
use picket_collector::ingest::{parse_csv, CsvOptions};
libfuzzer_sys::fuzz_target!(|text: &str| drop(parse_csv(
    std::path::Path::new("fuzz.csv"),
    text,
    &CsvOptions::default(),
    &picket_fuzz::list_defaults()
)));
