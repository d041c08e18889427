#![no_main]
// What the TAXII server does with a request target from anyone: route it (path segments and
// percent-decoded query parameters), then read the parameters into a filter as each endpoint
// would, with that endpoint's allowed parameters.
libfuzzer_sys::fuzz_target!(|target: &str| picket_fuzz::taxii_query(target));
