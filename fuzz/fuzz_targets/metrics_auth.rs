#![no_main]
// The collector's `/metrics` bearer check on any Authorization header (and any token).
libfuzzer_sys::fuzz_target!(|text: &str| picket_fuzz::metrics_auth(text));
