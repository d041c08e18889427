#![no_main]
// What an agent does with every frame from the collector (or from whoever answers in its place).
use picket_proto::wire::{decode_body, ServerMsg};
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(decode_body::<ServerMsg>(data)));
