#![no_main]
// The collector's picket.toml: parsed and checked exactly as `Config::load` does, from text.
libfuzzer_sys::fuzz_target!(|text: &str| drop(picket_collector::config::Config::parse(
    text,
    std::path::Path::new("picket.toml")
)));
