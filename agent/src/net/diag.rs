//! The accept backlog of listening TCP sockets, which /proc/net/tcp does not show
//! (for a listener it prints the queue's length, not its size): asked of the
//! kernel's sock_diag netlink interface, as `ss -l` does. It answers for the
//! caller's own network namespace only. Messages are built and read as bytes
//! (no crate speaks inet_diag; the layout is include/uapi/linux/inet_diag.h).

use std::collections::HashMap;
use std::io;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u32 = 10;
const NLMSG_HDRLEN: usize = 16;
/// inet_diag_msg: family, state, timer, retrans (4) + inet_diag_sockid (48) +
/// expires, rqueue, wqueue, uid, inode (20).
const INET_DIAG_MSG_LEN: usize = 72;

/// inode → (connections waiting to be accepted, the accept backlog) for every
/// listening TCP socket (IPv4 and IPv6) in this process's network namespace.
pub fn listen_backlogs() -> io::Result<HashMap<u64, (u32, u32)>> {
    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink};
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 32 * 1024];
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        rustix::net::send(&fd, &request(seq, family), SendFlags::empty())?;
        'recv: loop {
            let n = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty())?.0;
            for msg in messages(&buf[..n]) {
                match msg {
                    Message::Done => break 'recv,
                    Message::Error(errno) => return Err(io::Error::from_raw_os_error(errno)),
                    Message::Socket { inode, rqueue, wqueue } => {
                        out.insert(inode, (rqueue, wqueue));
                    }
                    Message::Other => {}
                }
            }
            if n == 0 {
                break;
            }
        }
    }
    Ok(out)
}

/// An nlmsghdr and an inet_diag_req_v2 asking for every TCP listener of `family`.
fn request(seq: u32, family: u8) -> Vec<u8> {
    let len = NLMSG_HDRLEN + 56;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    m.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]); // family, protocol, ext, pad
    m.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes()); // states
    m.resize(len, 0); // inet_diag_sockid: all zero, match any
    m
}

#[derive(Debug, PartialEq, Eq)]
enum Message {
    Socket { inode: u64, rqueue: u32, wqueue: u32 },
    Done,
    Error(i32),
    Other,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits a datagram into netlink messages (each aligned to 4 bytes).
fn messages(mut b: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDRLEN {
        let Some(len) = u32_at(b, 0).map(|l| l as usize).filter(|&l| l >= NLMSG_HDRLEN && l <= b.len()) else {
            break;
        };
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let body = &b[NLMSG_HDRLEN..len];
        out.push(match kind {
            NLMSG_DONE => Message::Done,
            NLMSG_ERROR => Message::Error(u32_at(body, 0).map_or(libc::EIO, |e| -(e as i32))),
            SOCK_DIAG_BY_FAMILY if body.len() >= INET_DIAG_MSG_LEN => Message::Socket {
                rqueue: u32_at(body, 56).unwrap_or(0),
                wqueue: u32_at(body, 60).unwrap_or(0),
                inode: u64::from(u32_at(body, 68).unwrap_or(0)),
            },
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
    fn a_real_listener_has_its_backlog() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&listener)))
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("socket:[")
            .trim_end_matches(']')
            .parse::<u64>()
            .unwrap();
        let backlogs = listen_backlogs().unwrap();
        let (queue, backlog) = backlogs[&inode];
        assert_eq!(queue, 0);
        assert!(backlog > 0, "std listens with a backlog: {backlog}");
    }

    #[test]
    fn messages_are_split_and_truncation_is_safe() {
        let mut socket = vec![0u8; NLMSG_HDRLEN + INET_DIAG_MSG_LEN];
        socket[0..4].copy_from_slice(&((NLMSG_HDRLEN + INET_DIAG_MSG_LEN) as u32).to_ne_bytes());
        socket[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        socket[NLMSG_HDRLEN + 56..NLMSG_HDRLEN + 60].copy_from_slice(&2u32.to_ne_bytes());
        socket[NLMSG_HDRLEN + 60..NLMSG_HDRLEN + 64].copy_from_slice(&128u32.to_ne_bytes());
        socket[NLMSG_HDRLEN + 68..NLMSG_HDRLEN + 72].copy_from_slice(&4242u32.to_ne_bytes());
        let mut done = vec![0u8; 20];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        let both = [socket.clone(), done].concat();
        assert_eq!(messages(&both), [Message::Socket { inode: 4242, rqueue: 2, wqueue: 128 }, Message::Done]);
        for cut in 0..both.len() {
            let _ = messages(&both[..cut]);
        }
        let mut lying = socket;
        lying[0..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(messages(&lying).is_empty());
    }
}
