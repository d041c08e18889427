#![no_main]
// The certificate readings agent and collector make themselves, on bytes nobody vouched for.
use picket_proto::x509;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = (x509::validity(data), x509::ed25519_key(data));
});
