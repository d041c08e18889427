#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(picket_agent::sightings::Sightings::decode(
    data,
    1 << 16,
    1 << 20
)));
