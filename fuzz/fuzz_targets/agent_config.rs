#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| drop(picket_agent::config::Config::parse(text, "fuzz.toml")));
