//! What the fds of a profile are: `/proc/PID/fd/N` read at first sight (an fd
//! may be closed by the end), sockets looked up in their network namespace's
//! tables, so that time on fd 7 reads as time on `tcp 10.0.0.5:40112 ->
//! 10.0.0.9:5432 (ESTABLISHED)`.

use super::counts::FdName;
use crate::fds::fdinfo::{self, Target};
use crate::model::{FdKind, SocketEntry, TcpState};
use crate::net::NetnsCache;
use crate::net::parse::{endpoint, unix_state_name, unix_type_name};
use std::path::Path;

/// What an fd that closed before it could be read is called.
pub const CLOSED: &str = "(closed before the agent read it)";

/// Names each `(tgid, fd, epoch)`. One read of the socket tables per network
/// namespace for the whole batch.
pub fn resolve(proc_root: &Path, fds: &[(u32, i32, u32)]) -> Vec<FdName> {
    let netns = NetnsCache::default();
    fds.iter()
        .map(|&(tgid, fd, epoch)| match name(&proc_root.join(tgid.to_string()), fd, &netns) {
            Some((kind, target)) => FdName { tgid, fd, epoch, kind: Some(kind), target },
            None => FdName { tgid, fd, epoch, kind: None, target: CLOSED.to_string() },
        })
        .collect()
}

/// None: the fd is closed (or unreadable).
fn name(pid_dir: &Path, fd: i32, netns: &NetnsCache) -> Option<(FdKind, String)> {
    let link = pid_dir.join("fd").join(fd.to_string());
    let target = std::fs::read_link(&link).ok()?;
    let bytes = target.as_os_str().as_encoded_bytes();
    let text = String::from_utf8_lossy(bytes).into_owned();
    Some(match fdinfo::classify(bytes).0 {
        Target::Socket(inode) => match netns.tables_for(pid_dir).get(inode) {
            Some(entry) => (FdKind::Socket, socket(entry)),
            None => (FdKind::Socket, text),
        },
        Target::Pipe => (FdKind::Pipe, text),
        Target::Anon(kind) => (kind, text),
        Target::Memfd => (FdKind::Memfd, text),
        Target::Path => {
            // Without sync, as the fd table reads it: a plain stat on a dead NFS or FUSE
            // mount could hang the profile's loop.
            let stat = rustix::fs::statx(
                rustix::fs::CWD,
                &link,
                rustix::fs::AtFlags::STATX_DONT_SYNC,
                rustix::fs::StatxFlags::TYPE,
            );
            let kind = stat.map_or(FdKind::Other, |st| {
                crate::fds::path_kind(rustix::fs::FileType::from_raw_mode(u32::from(st.stx_mode)))
            });
            (kind, text)
        }
    })
}

/// A socket as `ss` would show it, on one line.
pub fn socket(entry: &SocketEntry) -> String {
    match entry {
        SocketEntry::Inet { protocol, local, state: TcpState::Listen, .. } if protocol.is_tcp() => {
            format!("{} {} (LISTEN)", protocol.name(), endpoint(local))
        }
        SocketEntry::Inet { protocol, local, remote, state, .. } if protocol.is_tcp() => {
            let state = state.name().to_uppercase();
            format!("{} {} -> {} ({state})", protocol.name(), endpoint(local), endpoint(remote))
        }
        SocketEntry::Inet { protocol, local, remote, .. } => {
            format!("{} {} -> {}", protocol.name(), endpoint(local), endpoint(remote))
        }
        SocketEntry::Unix { path, socket_type, state, listening } => {
            let path = path.as_deref().map_or("(unnamed)".into(), String::from_utf8_lossy);
            format!("unix {} {path} {}", unix_type_name(*socket_type), unix_state_name(*state, *listening))
        }
        SocketEntry::Netlink { protocol } => {
            format!("netlink {}", crate::net::parse::netlink_protocol_name(*protocol))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn names_what_this_process_holds() {
        let me = std::process::id();
        let file = tempfile::NamedTempFile::new().unwrap();
        let (r, _w) = std::io::pipe().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let fds = [
            (me, file.as_file().as_raw_fd(), 0),
            (me, r.as_raw_fd(), 0),
            (me, client.as_raw_fd(), 0),
            (me, listener.as_raw_fd(), 1),
            (me, 999_999, 2),
        ];
        let names = resolve(Path::new("/proc"), &fds);
        assert_eq!((names[0].kind, names[0].target.as_str()), (Some(FdKind::File), file.path().to_str().unwrap()));
        assert_eq!(names[1].kind, Some(FdKind::Pipe));
        assert!(names[1].target.starts_with("pipe:["), "{}", names[1].target);
        let (c, s) = (client.local_addr().unwrap(), server.local_addr().unwrap());
        assert_eq!(names[2].target, format!("tcp {c} -> {s} (ESTABLISHED)"));
        assert_eq!(names[3].target, format!("tcp {s} (LISTEN)"));
        assert_eq!((names[3].epoch, names[4].kind, names[4].target.as_str()), (1, None, CLOSED));
    }
}
