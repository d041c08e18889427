#![no_main]
// A batch file of the agent's sightings spool, read back from disk at start-up.
libfuzzer_sys::fuzz_target!(|data: &[u8]| picket_fuzz::spool_batch(data));
