#![no_main]
// A MISP feed's manifest.json: every key it yields must be a UUID, since it names a file.
libfuzzer_sys::fuzz_target!(|text: &str| picket_fuzz::misp_feed_manifest(text));
