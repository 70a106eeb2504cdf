//! /proc/PID/fdinfo/N and the link targets of /proc/PID/fd/N. The first line is
//! taken as a link target, the whole input as an fdinfo file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use osl_agent::fds::fdinfo;

fuzz_target!(|data: &[u8]| {
    let target = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let (_, path, _) = fdinfo::classify(target);
    // The path returned is the target itself or a prefix of it (" (deleted)" cut off).
    assert!(target.starts_with(path));
    if let Ok(info) = fdinfo::parse(data) {
        if let Some(flags) = info.flags {
            fdinfo::flag_names(flags);
        }
    }
});
