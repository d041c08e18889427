#![no_main]
// The dashboard's form and query-string decoder, on any request body.
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(picket_collector::web::parse_form(data)));
