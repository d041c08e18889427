#![no_main]
// The CSV reader, with the options an operator can set chosen by the input's first two bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| picket_fuzz::csv(data));
