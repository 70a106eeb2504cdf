//! /proc/PID/limits (the `Max open files` row).
#![no_main]
use libfuzzer_sys::fuzz_target;
use osl_agent::proc::parse;

fuzz_target!(|data: &[u8]| {
    let _ = parse::parse_nofile(data);
});
