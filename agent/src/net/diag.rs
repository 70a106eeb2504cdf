//! TCP and UDP sockets from the kernel's sock_diag netlink interface, as `ss` gets
//! them. Preferred to /proc/net/tcp{,6}, which walks the whole established hash
//! table again for every page it prints (most of a snapshot's time on a node with
//! a large table), and which shows a listener's queue length but not its backlog.
//! It answers for the caller's own network namespace only. Messages are built and
//! read as bytes (no crate speaks inet_diag; the layout is
//! include/uapi/linux/inet_diag.h).

use crate::model::{InetProtocol, SocketEntry};
use std::io;
use std::net::SocketAddr;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Every TCP state (bits 1..=12); UDP sockets report 1 (connected) or 7.
const ALL_STATES: u32 = 0x1ffe;
const NLMSG_HDRLEN: usize = 16;
/// inet_diag_msg: family, state, timer, retrans (4) + inet_diag_sockid (48) +
/// expires, rqueue, wqueue, uid, inode (20).
const INET_DIAG_MSG_LEN: usize = 72;

/// Every TCP or UDP socket (IPv4 and IPv6) in this process's network namespace,
/// by inode. For a TCP listener, `rx_queue` is the accept queue and `tx_queue` the
/// backlog; otherwise they are the unread and unacknowledged bytes.
pub fn inet_sockets(tcp: bool) -> io::Result<Vec<(u64, SocketEntry)>> {
    Ok(dump(tcp)?.into_iter().map(|s| (s.inode, s.entry(tcp))).collect())
}

/// Every TCP or UDP socket (IPv4 and IPv6) of this process's network namespace,
/// as the kernel describes them.
pub fn dump(tcp: bool) -> io::Result<Vec<DiagSocket>> {
    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink};
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let protocol = if tcp { IPPROTO_TCP } else { IPPROTO_UDP };
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        rustix::net::send(&fd, &request(seq, family, protocol), SendFlags::empty())?;
        'recv: loop {
            let n = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty())?.0;
            if n == 0 {
                break;
            }
            for msg in messages(&buf[..n]) {
                match msg {
                    Message::Done => break 'recv,
                    Message::Error(errno) => return Err(io::Error::from_raw_os_error(errno)),
                    Message::Socket(s) => out.push(s),
                    Message::Other => {}
                }
            }
        }
    }
    Ok(out)
}

/// An nlmsghdr and an inet_diag_req_v2 asking for every socket of `family`/`protocol`.
fn request(seq: u32, family: u8, protocol: u8) -> Vec<u8> {
    let len = NLMSG_HDRLEN + 56;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    m.extend_from_slice(&[family, protocol, 0, 0]); // family, protocol, ext, pad
    m.extend_from_slice(&ALL_STATES.to_ne_bytes());
    m.resize(len, 0); // inet_diag_sockid: all zero, match any
    m
}

/// One netlink message of a sock_diag reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Socket(DiagSocket),
    Done,
    Error(i32),
    Other,
}

/// The fields of an inet_diag_msg osl uses.
#[derive(Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub rqueue: u32,
    pub wqueue: u32,
    /// The socket's owner (the fsuid of the process that created it).
    pub uid: u32,
    pub inode: u64,
}

impl DiagSocket {
    pub fn entry(&self, tcp: bool) -> SocketEntry {
        let v6 = self.local.is_ipv6();
        let protocol = match (tcp, v6) {
            (true, false) => InetProtocol::Tcp,
            (true, true) => InetProtocol::Tcp6,
            (false, false) => InetProtocol::Udp,
            (false, true) => InetProtocol::Udp6,
        };
        SocketEntry::Inet {
            protocol,
            local: self.local,
            remote: self.remote,
            state: crate::model::TcpState::from_kernel(self.state),
            tx_queue: self.wqueue,
            rx_queue: self.rqueue,
        }
    }
}

/// inet_diag_msg: family, state, timer, retrans (0..4); sockid: sport, dport
/// (big-endian, 4..8), src[4] (8..24), dst[4] (24..40), if, cookie (40..52);
/// expires, rqueue, wqueue, uid, inode (52..72).
fn diag_socket(body: &[u8]) -> Option<DiagSocket> {
    let family = *body.first()?;
    let port = |at: usize| Some(u16::from_be_bytes(body.get(at..at + 2)?.try_into().ok()?));
    let addr = |at: usize, port: u16| -> Option<SocketAddr> {
        Some(match i32::from(family) {
            libc::AF_INET => SocketAddr::from((<[u8; 4]>::try_from(body.get(at..at + 4)?).ok()?, port)),
            libc::AF_INET6 => SocketAddr::from((<[u8; 16]>::try_from(body.get(at..at + 16)?).ok()?, port)),
            _ => return None,
        })
    };
    Some(DiagSocket {
        local: addr(8, port(4)?)?,
        remote: addr(24, port(6)?)?,
        state: *body.get(1)?,
        rqueue: u32_at(body, 56)?,
        wqueue: u32_at(body, 60)?,
        uid: u32_at(body, 64)?,
        inode: u64::from(u32_at(body, 68)?),
    })
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits a datagram into netlink messages (each aligned to 4 bytes); a
/// truncated or malformed tail is dropped.
pub fn messages(mut b: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDRLEN {
        let Some(len) = u32_at(b, 0).map(|l| l as usize).filter(|&l| l >= NLMSG_HDRLEN && l <= b.len()) else {
            break;
        };
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let body = &b[NLMSG_HDRLEN..len];
        out.push(match kind {
            NLMSG_DONE => Message::Done,
            // nlmsgerr.error is a negative errno; anything else is no errno (found by fuzzing:
            // i32::MIN overflowed the negation).
            NLMSG_ERROR => Message::Error(
                u32_at(body, 0).and_then(|e| (e as i32).checked_neg()).filter(|&e| e > 0).unwrap_or(libc::EIO),
            ),
            SOCK_DIAG_BY_FAMILY if body.len() >= INET_DIAG_MSG_LEN => {
                diag_socket(body).map_or(Message::Other, Message::Socket)
            }
            _ => Message::Other,
        });
        b = &b[len.next_multiple_of(4).min(b.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_sockets_with_states_addresses_and_backlog() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let udp = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let inode = |fd: i32| -> u64 {
            let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
            link.to_string_lossy().trim_start_matches("socket:[").trim_end_matches(']').parse().unwrap()
        };
        use std::os::fd::AsRawFd;
        let tcp = inet_sockets(true).unwrap();
        let find = |list: &[(u64, SocketEntry)], i: u64| list.iter().find(|(n, _)| *n == i).map(|(_, e)| e.clone());
        let Some(SocketEntry::Inet { protocol, local, state, tx_queue, rx_queue, .. }) =
            find(&tcp, inode(listener.as_raw_fd()))
        else {
            panic!("listener missing")
        };
        assert_eq!(
            (protocol, local, state, rx_queue),
            (InetProtocol::Tcp, listener.local_addr().unwrap(), crate::model::TcpState::Listen, 1)
        );
        assert!(tx_queue > 0, "the backlog: {tx_queue}");
        let Some(SocketEntry::Inet { remote, state, .. }) = find(&tcp, inode(client.as_raw_fd())) else { panic!() };
        assert_eq!((remote, state), (listener.local_addr().unwrap(), crate::model::TcpState::Established));
        let udp_list = inet_sockets(false).unwrap();
        let Some(SocketEntry::Inet { protocol, local, state, .. }) = find(&udp_list, inode(udp.as_raw_fd())) else {
            panic!("udp missing")
        };
        assert_eq!(
            (protocol, local, state),
            (InetProtocol::Udp6, udp.local_addr().unwrap(), crate::model::TcpState::Close)
        );
    }

    #[test]
    fn messages_are_split_and_truncation_is_safe() {
        let mut socket = vec![0u8; NLMSG_HDRLEN + INET_DIAG_MSG_LEN];
        socket[0..4].copy_from_slice(&((NLMSG_HDRLEN + INET_DIAG_MSG_LEN) as u32).to_ne_bytes());
        socket[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        socket[NLMSG_HDRLEN] = libc::AF_INET as u8;
        socket[NLMSG_HDRLEN + 1] = 10;
        socket[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 6].copy_from_slice(&8080u16.to_be_bytes());
        socket[NLMSG_HDRLEN + 8..NLMSG_HDRLEN + 12].copy_from_slice(&[127, 0, 0, 1]);
        socket[NLMSG_HDRLEN + 56..NLMSG_HDRLEN + 60].copy_from_slice(&2u32.to_ne_bytes());
        socket[NLMSG_HDRLEN + 60..NLMSG_HDRLEN + 64].copy_from_slice(&128u32.to_ne_bytes());
        socket[NLMSG_HDRLEN + 64..NLMSG_HDRLEN + 68].copy_from_slice(&65532u32.to_ne_bytes());
        socket[NLMSG_HDRLEN + 68..NLMSG_HDRLEN + 72].copy_from_slice(&4242u32.to_ne_bytes());
        let mut done = vec![0u8; 20];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        let both = [socket.clone(), done].concat();
        let expected = DiagSocket {
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "0.0.0.0:0".parse().unwrap(),
            state: 10,
            rqueue: 2,
            wqueue: 128,
            uid: 65532,
            inode: 4242,
        };
        assert_eq!(messages(&both), [Message::Socket(expected), Message::Done]);
        for cut in 0..both.len() {
            let _ = messages(&both[..cut]);
        }
        let mut lying = socket;
        lying[0..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(messages(&lying).is_empty());
    }

    #[test]
    fn an_error_message_without_a_negative_errno_is_eio() {
        let error = |code: i32| {
            let mut m = vec![0u8; NLMSG_HDRLEN + 4];
            m[0..4].copy_from_slice(&((NLMSG_HDRLEN + 4) as u32).to_ne_bytes());
            m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
            m[NLMSG_HDRLEN..].copy_from_slice(&code.to_ne_bytes());
            messages(&m)
        };
        assert_eq!(error(-libc::EPERM), [Message::Error(libc::EPERM)]);
        // A regression input of fuzz/regressions/sock_diag: i32::MIN panicked the negation.
        for odd in [i32::MIN, 0, 5] {
            assert_eq!(error(odd), [Message::Error(libc::EIO)], "{odd}");
        }
        let found = include_bytes!("../../../fuzz/regressions/sock_diag/negate-overflow");
        assert!(messages(found).contains(&Message::Error(libc::EIO)), "{:?}", messages(found));
    }
}
