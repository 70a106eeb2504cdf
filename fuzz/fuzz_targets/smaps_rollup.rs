//! /proc/PID/smaps_rollup.
#![no_main]
use libfuzzer_sys::fuzz_target;
use osl_agent::proc::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse::parse_smaps_rollup(data) {
        assert!(r.pss.is_some(), "a rollup without Pss is an error, not a value");
    }
});
