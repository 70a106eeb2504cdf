//! /proc/PID/stat (comm cut out by hand, the rest by procfs-core) and /proc/stat's btime.
#![no_main]
use libfuzzer_sys::fuzz_target;
use osl_agent::proc::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok((comm, _stat)) = parse::parse_stat(data) {
        // comm is what lies between the first '(' and the last ')'.
        let open = data.iter().position(|&b| b == b'(').unwrap();
        assert_eq!(&data[open + 1..open + 1 + comm.len()], &comm[..]);
    }
    parse::parse_btime(data);
});
