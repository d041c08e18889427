#![no_main]
// What the TAXII server does with a request from anyone: the head parser, the route and Accept
// parsers behind it, and the POST envelope decoder.
use picket_collector::taxii_server::{api, http};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(req) = http::parse_head(data) {
        let _ = (
            req.body_length(),
            api::route(&req.target),
            api::accepts_taxii(req.header("accept")),
        );
    }
    drop(api::decode_envelope(data));
});
