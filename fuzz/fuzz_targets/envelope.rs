#![no_main]
use picket_proto::{Envelope, PayloadKind};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for kind in [PayloadKind::Root, PayloadKind::Timestamp, PayloadKind::Manifest] {
        let _ = Envelope::decode(data, kind, 1 << 20);
    }
});
