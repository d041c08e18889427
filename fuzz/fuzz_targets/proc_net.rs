#![no_main]
// What the agent reads from /proc, where another process chooses part of the text (its name,
// its addresses): a /proc/net/{tcp,tcp6,udp,udp6} table, and a /proc/PID/stat line.
use picket_agent::host::net::{parse_proc_net, Proto};
libfuzzer_sys::fuzz_target!(|text: &str| {
    drop(parse_proc_net(text, Proto::Tcp));
    drop(parse_proc_net(text, Proto::Udp));
    let _ = picket_agent::host::procs::parse_stat_start(text.as_bytes());
});
