#![no_main]
use picket_collector::stix::parse_bundle;
libfuzzer_sys::fuzz_target!(|text: &str| drop(parse_bundle(
    std::path::Path::new("fuzz.json"),
    text,
    &picket_fuzz::list_defaults()
)));
