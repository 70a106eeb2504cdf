//! Pure parsers for the socket tables in /proc/net.

use crate::model::{InetProtocol, SocketEntry, TcpState};
use procfs_core::{ExplicitSystemInfo, FromBufReadSI};
use std::net::SocketAddr;

fn system_info() -> ExplicitSystemInfo {
    // Only the byte order matters for address parsing.
    ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    }
}

/// tcp, tcp6, udp and udp6 tables, parsed by procfs-core. UDP states are the
/// kernel's TCP numbers too: 1 (connected) and 7 (unconnected).
pub fn inet_table(bytes: &[u8], protocol: InetProtocol) -> Result<Vec<(u64, SocketEntry)>, String> {
    let text = String::from_utf8_lossy(bytes);
    let si = system_info();
    let entry = |local, remote, state, tx_queue, rx_queue| SocketEntry::Inet {
        protocol,
        local,
        remote,
        state,
        tx_queue,
        rx_queue,
    };
    if protocol.is_tcp() {
        let t = procfs_core::net::TcpNetEntries::from_buf_read(text.as_bytes(), &si).map_err(|e| e.to_string())?;
        Ok(t.0
            .into_iter()
            .map(|e| {
                (
                    e.inode,
                    entry(
                        e.local_address,
                        e.remote_address,
                        TcpState::from_kernel(e.state.to_u8()),
                        e.tx_queue,
                        e.rx_queue,
                    ),
                )
            })
            .collect())
    } else {
        let t = procfs_core::net::UdpNetEntries::from_buf_read(text.as_bytes(), &si).map_err(|e| e.to_string())?;
        Ok(t.0
            .into_iter()
            .map(|e| {
                let state = match e.state {
                    procfs_core::net::UdpState::Established => TcpState::Established,
                    procfs_core::net::UdpState::Close => TcpState::Close,
                };
                (e.inode, entry(e.local_address, e.remote_address, state, e.tx_queue, e.rx_queue))
            })
            .collect())
    }
}

/// `ffff…: RefCount Protocol Flags Type St Inode Path`. Parsed here, not by
/// procfs-core, which cuts paths at the first space and rejects non-UTF-8 ones:
/// the path is everything after the seventh field, as the kernel wrote it.
pub fn unix_table(bytes: &[u8]) -> Result<Vec<(u64, SocketEntry)>, String> {
    const SO_ACCEPTCON: u32 = 1 << 16;
    let mut out = Vec::new();
    let mut skipped = 0;
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate().skip(1).filter(|(_, l)| !l.is_empty()) {
        // A bound name may hold a newline: its tail is a line of its own. Skip it.
        if !line.contains(&b':') || line.iter().filter(|&&b| b == b' ').count() < 6 {
            skipped += 1;
            continue;
        }
        let bad = |what: &str| format!("line {}: bad {what}", n + 1);
        let mut rest = line;
        let mut fields = [&b""[..]; 7];
        for f in &mut fields {
            let start = rest.iter().position(|&b| b != b' ').ok_or_else(|| bad("field count"))?;
            rest = &rest[start..];
            let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            *f = &rest[..end];
            rest = &rest[end..];
        }
        let hex = |f: &[u8], what| {
            std::str::from_utf8(f).ok().and_then(|s| u32::from_str_radix(s, 16).ok()).ok_or_else(|| bad(what))
        };
        let flags = hex(fields[3], "flags")?;
        let socket_type = u16::try_from(hex(fields[4], "type")?).map_err(|_| bad("type"))?;
        let state = u8::try_from(hex(fields[5], "state")?).map_err(|_| bad("state"))?;
        let inode = std::str::from_utf8(fields[6]).ok().and_then(|s| s.parse().ok()).ok_or_else(|| bad("inode"))?;
        let path = rest.strip_prefix(b" ").filter(|p| !p.is_empty()).map(<[u8]>::to_vec);
        out.push((inode, SocketEntry::Unix { path, socket_type, state, listening: flags & SO_ACCEPTCON != 0 }));
    }
    if out.is_empty() && skipped > 0 {
        return Err("no unix socket row".into());
    }
    Ok(out)
}

/// `sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode`.
pub fn netlink_table(bytes: &[u8]) -> Result<Vec<(u64, SocketEntry)>, String> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1).filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(eth), Some(inode)) = (f.get(1), f.get(9)) else {
            return Err(format!("line {}: too few fields", n + 1));
        };
        let protocol = eth.parse().map_err(|_| format!("line {}: bad protocol", n + 1))?;
        let inode = inode.parse().map_err(|_| format!("line {}: bad inode", n + 1))?;
        out.push((inode, SocketEntry::Netlink { protocol }));
    }
    Ok(out)
}

/// `ip:port`, `[v6]:port`; an IPv4-mapped IPv6 address is shown as the IPv4 it is.
pub fn endpoint(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", v6.port()),
            None => format!("[{}]:{}", v6.ip(), v6.port()),
        },
        SocketAddr::V4(v4) => v4.to_string(),
    }
}

pub fn unix_type_name(t: u16) -> &'static str {
    match t {
        1 => "stream",
        2 => "dgram",
        5 => "seqpacket",
        _ => "other",
    }
}

pub fn unix_state_name(state: u8, listening: bool) -> &'static str {
    match (listening, state) {
        (true, _) => "listening",
        (_, 1) => "unconnected",
        (_, 2) => "connecting",
        (_, 3) => "connected",
        (_, 4) => "disconnecting",
        _ => "unknown",
    }
}

pub fn netlink_protocol_name(p: u32) -> &'static str {
    match p {
        0 => "route",
        4 => "sock_diag",
        6 => "xfrm",
        9 => "audit",
        10 => "fib_lookup",
        12 => "netfilter",
        15 => "kobject_uevent",
        16 => "generic",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_rows_with_listen_backlog_and_close_wait() {
        // This kernel's /proc/net/tcp: a listener (backlog 128, 2 waiting) and a CLOSE_WAIT.
        let text = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000080:00000002 00:00000000 00000000     0        0 43210 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:A2C4 0100007F:1F90 08 00000000:00000000 00:00000000 00000000  1000        0 43211 1 0000000000000000 20 4 30 10 -1\n";
        let rows = inet_table(text, InetProtocol::Tcp).unwrap();
        let SocketEntry::Inet { local, state, tx_queue, rx_queue, .. } = &rows[0].1 else { panic!() };
        assert_eq!((rows[0].0, endpoint(local).as_str(), *state), (43210, "127.0.0.1:8080", TcpState::Listen));
        assert_eq!((*tx_queue, *rx_queue), (128, 2));
        let SocketEntry::Inet { remote, state, .. } = &rows[1].1 else { panic!() };
        assert_eq!((endpoint(remote).as_str(), *state), ("127.0.0.1:8080", TcpState::CloseWait));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_shown_plainly() {
        let text = b"  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 20 4 30 10 -1\n\
   1: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5556 1 0000000000000000 100 0 0 10 0\n";
        let rows = inet_table(text, InetProtocol::Tcp6).unwrap();
        let SocketEntry::Inet { local, remote, .. } = &rows[0].1 else { panic!() };
        assert_eq!((endpoint(local).as_str(), endpoint(remote).as_str()), ("127.0.0.1:8080", "127.0.0.1:54321"));
        let SocketEntry::Inet { local, .. } = &rows[1].1 else { panic!() };
        assert_eq!(endpoint(local), "[::1]:22");
    }

    #[test]
    fn udp_states() {
        let text = b"   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  123: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0\n";
        let rows = inet_table(text, InetProtocol::Udp).unwrap();
        assert!(matches!(rows[0].1, SocketEntry::Inet { state: TcpState::Close, .. }));
    }

    #[test]
    fn unix_paths_with_spaces_abstract_names_and_bytes() {
        let text = b"Num       RefCount Protocol Flags    Type St Inode Path\n\
ffff8f3a0e0a9c00: 00000002 00000000 00010000 0001 01 18534 /run/my app/sock\n\
ffff8f3a0e0a9c01: 00000003 00000000 00000000 0001 03 21430\n\
ffff8f3a0e0a9c02: 00000002 00000000 00000000 0002 01 22 @abstract\xff\n";
        let rows = unix_table(text).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            (
                18534,
                SocketEntry::Unix {
                    path: Some(b"/run/my app/sock".to_vec()),
                    socket_type: 1,
                    state: 1,
                    listening: true
                }
            )
        );
        assert_eq!(rows[1], (21430, SocketEntry::Unix { path: None, socket_type: 1, state: 3, listening: false }));
        assert!(matches!(&rows[2].1, SocketEntry::Unix { path: Some(p), socket_type: 2, .. } if p == b"@abstract\xff"));
        assert!(unix_table(b"header\nffff: 1 2\n").is_err());
        let newline_in_name = b"Num RefCount Protocol Flags Type St Inode Path\n\
ffff01: 00000002 00000000 00010000 0001 01 77 /run/a\nb.sock\n\
ffff02: 00000002 00000000 00000000 0001 03 78\n";
        let rows = unix_table(newline_in_name).unwrap();
        assert_eq!(
            rows.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [77, 78],
            "a name with a newline spoils nothing else"
        );
        assert!(unix_table(b"header\nffff: 1 0 zz 0001 01 5\n").is_err());
    }

    #[test]
    fn netlink_rows() {
        let text = b"sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n\
ffff8f3a01b8e000 0   4195573    00000000 0        0        0     2        0        23918\n";
        assert_eq!(netlink_table(text).unwrap(), [(23918, SocketEntry::Netlink { protocol: 0 })]);
        assert!(netlink_table(b"h\nffff 0 1\n").is_err());
    }

    #[test]
    fn garbage_tables_are_errors_not_panics() {
        for p in [InetProtocol::Tcp, InetProtocol::Udp6] {
            assert!(inet_table(b"h\n 0: zz:zz 00:00 01 0:0 0 0 0 0 5\n", p).is_err());
            assert!(inet_table(b"h\n 0: 100007F:1F90 00000000:0000 0A 0:0 0 0 0 0 5\n", p).is_err());
            assert!(inet_table(b"h\n 0:\n", p).is_err());
        }
    }
}
