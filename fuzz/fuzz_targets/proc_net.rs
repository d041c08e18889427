#![no_main]
use picket_agent::host::net::{parse_proc_net, Proto};
libfuzzer_sys::fuzz_target!(|text: &str| drop(parse_proc_net(text, Proto::Tcp)));
