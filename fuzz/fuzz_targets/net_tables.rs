//! /proc/net/{tcp,tcp6,udp,udp6,unix,netlink}. The first byte picks the table.
#![no_main]
use libfuzzer_sys::fuzz_target;
use osl_agent::model::{InetProtocol, SocketEntry};
use osl_agent::net::parse;

fuzz_target!(|data: &[u8]| {
    let Some((&which, text)) = data.split_first() else { return };
    let rows = match which % 6 {
        0 => parse::inet_table(text, InetProtocol::Tcp),
        1 => parse::inet_table(text, InetProtocol::Tcp6),
        2 => parse::inet_table(text, InetProtocol::Udp),
        3 => parse::inet_table(text, InetProtocol::Udp6),
        4 => parse::unix_table(text),
        _ => parse::netlink_table(text),
    };
    for (_, entry) in rows.into_iter().flatten() {
        match entry {
            SocketEntry::Inet { local, remote, .. } => {
                parse::endpoint(&local);
                parse::endpoint(&remote);
            }
            SocketEntry::Unix { path, socket_type, state, listening } => {
                // A bound name is kept byte for byte as the kernel wrote it.
                if let Some(p) = path {
                    assert!(text.windows(p.len()).any(|w| w == &p[..]));
                }
                parse::unix_type_name(socket_type);
                parse::unix_state_name(state, listening);
            }
            SocketEntry::Netlink { protocol } => {
                parse::netlink_protocol_name(protocol);
            }
        }
    }
});
