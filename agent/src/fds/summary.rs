//! A process's fds at a glance, and pod-wide totals.

use crate::model::{FdKind, FdSummary, FdTable, SocketEntry, TcpState};
use crate::net::parse::endpoint;
use std::collections::HashMap;

const TOP_REMOTES: usize = 5;

pub fn summarize(table: &FdTable, soft_limit: Option<u64>) -> FdSummary {
    let mut kinds: HashMap<FdKind, u64> = HashMap::new();
    let mut states: HashMap<TcpState, u64> = HashMap::new();
    let mut remotes: HashMap<String, u64> = HashMap::new();
    let mut close_wait: HashMap<String, u64> = HashMap::new();
    let mut s = FdSummary {
        total: table.fds.len() as u64 + table.not_read,
        closed_during_read: table.closed_during_read,
        ..Default::default()
    };
    for fd in &table.fds {
        *kinds.entry(fd.kind).or_default() += 1;
        if fd.kind == FdKind::File && fd.deleted {
            s.deleted_files += 1;
            // What the file holds on disk (a sparse file's size overstates it).
            s.deleted_bytes += fd.disk_bytes.or(fd.size_bytes).unwrap_or(0);
        }
        if let Some(SocketEntry::Inet { protocol, remote, state, .. }) =
            fd.socket.as_ref().and_then(|s| s.entry.as_ref())
            && protocol.is_tcp()
        {
            *states.entry(*state).or_default() += 1;
            if *state != TcpState::Listen {
                *remotes.entry(endpoint(remote)).or_default() += 1;
            }
            if *state == TcpState::CloseWait {
                *close_wait.entry(endpoint(remote)).or_default() += 1;
            }
        }
    }
    s.by_kind = most_first(kinds);
    s.by_tcp_state = most_first(states);
    s.top_remotes = most_first(remotes);
    s.top_remotes.truncate(TOP_REMOTES);
    s.top_close_wait = most_first(close_wait).into_iter().next();
    s.headroom = soft_limit.map(|l| l.saturating_sub(s.total));
    s
}

/// Adds one process's summary into pod-wide totals (headroom is per process).
pub fn add(total: &mut FdSummary, one: &FdSummary) {
    total.total += one.total;
    total.deleted_files += one.deleted_files;
    total.deleted_bytes += one.deleted_bytes;
    total.closed_during_read += one.closed_during_read;
    total.by_kind = merge(&total.by_kind, &one.by_kind);
    total.by_tcp_state = merge(&total.by_tcp_state, &one.by_tcp_state);
    total.top_remotes = merge(&total.top_remotes, &one.top_remotes);
    total.top_remotes.truncate(TOP_REMOTES);
}

fn merge<K: Clone + Eq + std::hash::Hash + Ord>(a: &[(K, u64)], b: &[(K, u64)]) -> Vec<(K, u64)> {
    let mut m: HashMap<K, u64> = a.iter().cloned().collect();
    for (k, n) in b {
        *m.entry(k.clone()).or_default() += n;
    }
    most_first(m)
}

fn most_first<K: Ord>(m: HashMap<K, u64>) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Fd, InetProtocol, Socket};

    fn fd(n: i32, kind: FdKind) -> Fd {
        Fd { fd: n, kind, target: vec![], deleted: false, info: None, size_bytes: None, disk_bytes: None, socket: None }
    }

    fn tcp(n: i32, remote: &str, state: TcpState) -> Fd {
        let entry = SocketEntry::Inet {
            protocol: InetProtocol::Tcp,
            local: "127.0.0.1:1000".parse().unwrap(),
            remote: remote.parse().unwrap(),
            state,
            tx_queue: 0,
            rx_queue: 0,
        };
        Fd {
            socket: Some(Socket { inode: n as u64, entry: Some(entry), accept_backlog: None }),
            ..fd(n, FdKind::Socket)
        }
    }

    #[test]
    fn counts_states_remotes_and_deleted_bytes() {
        let mut deleted = fd(3, FdKind::File);
        deleted.deleted = true;
        deleted.size_bytes = Some(4096);
        let table = FdTable {
            fds: vec![
                fd(0, FdKind::CharDevice),
                deleted,
                tcp(4, "10.0.0.1:5432", TcpState::CloseWait),
                tcp(5, "10.0.0.1:5432", TcpState::CloseWait),
                tcp(6, "10.0.0.2:80", TcpState::Established),
                tcp(7, "0.0.0.0:0", TcpState::Listen),
            ],
            closed_during_read: 1,
            not_read: 0,
            unavailable: vec![],
        };
        let s = summarize(&table, Some(64));
        assert_eq!(s.total, 6);
        assert_eq!(s.by_kind, [(FdKind::Socket, 4), (FdKind::File, 1), (FdKind::CharDevice, 1)]);
        assert_eq!(s.by_tcp_state, [(TcpState::CloseWait, 2), (TcpState::Established, 1), (TcpState::Listen, 1)]);
        assert_eq!(s.top_remotes, [("10.0.0.1:5432".to_string(), 2), ("10.0.0.2:80".to_string(), 1)]);
        assert_eq!((s.deleted_files, s.deleted_bytes, s.headroom, s.closed_during_read), (1, 4096, Some(58), 1));
        assert_eq!(s.top_close_wait, Some(("10.0.0.1:5432".to_string(), 2)));
        let mut total = FdSummary::default();
        add(&mut total, &s);
        add(&mut total, &s);
        assert_eq!(total.total, 12);
        assert_eq!(total.by_tcp_state[0], (TcpState::CloseWait, 4));
        assert_eq!(total.headroom, None);
    }
}
