#![no_main]
// What the TAXII server does with a request from anyone: the head parser, the route, Accept and
// Basic credential parsers behind it, and the POST envelope decoder.
use picket_collector::taxii_server::{api, http};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(req) = http::parse_head(data) {
        let _ = (
            req.body_length(),
            api::route(&req.target),
            api::accepts_taxii(req.header("accept")),
        );
        if let Some(cred) = req.header("authorization").and_then(|h| h.get(6..)) {
            drop(api::base64_decode(cred.trim()));
        }
    }
    drop(api::decode_envelope(data));
});
