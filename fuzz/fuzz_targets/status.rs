//! /proc/PID/status: parsed by procfs-core on a lossy copy; decoded signal masks and capabilities.
#![no_main]
use libfuzzer_sys::fuzz_target;
use osl_agent::{decode, proc::parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(status) = parse::parse_status(data) {
        for mask in [status.sigpnd, status.shdpnd, status.sigblk, status.sigign, status.sigcgt] {
            decode::signal_names(mask);
        }
        let optional = [status.capbnd, status.capamb].into_iter().flatten();
        for caps in [status.capinh, status.capprm, status.capeff].into_iter().chain(optional) {
            decode::capability_names(caps);
        }
    }
});
