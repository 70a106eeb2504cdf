//! A NETLINK_SOCK_DIAG reply datagram (binary, from the kernel).
#![no_main]
use libfuzzer_sys::fuzz_target;
use osl_agent::net::diag::{Message, messages};

fuzz_target!(|data: &[u8]| {
    let msgs = messages(data);
    // Every message has at least a 16-byte header, so there are at most len/16.
    assert!(msgs.len() <= data.len() / 16);
    for m in msgs {
        if let Message::Socket(s) = m {
            s.entry(true);
            s.entry(false);
        }
    }
});
