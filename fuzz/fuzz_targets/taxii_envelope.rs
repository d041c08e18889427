#![no_main]
// What the TAXII client does with any body an upstream server sends: every resource decoder
// (envelope, discovery, API root, collections, status) and the error-message reader.
libfuzzer_sys::fuzz_target!(|data: &[u8]| picket_fuzz::taxii_response(data));
