#![no_main]
// The agent's spool state file (epoch, last batch number, drops), read back at start-up.
libfuzzer_sys::fuzz_target!(|data: &[u8]| picket_fuzz::spool_state(data));
