#![no_main]
// What the collector does with every frame an agent (or anyone) sends: cap, decode, check.
use picket_proto::wire::{decode_body, frame_len, ClientMsg, MAX_CLIENT_FRAME};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let header = [data[0], data[1], data[2], data[3]];
    if let Ok(len) = frame_len(header, MAX_CLIENT_FRAME) {
        let body = &data[4..];
        if body.len() >= len {
            if let Ok(msg) = decode_body::<ClientMsg>(&body[..len]) {
                let _ = msg.check();
            }
        }
    }
});
