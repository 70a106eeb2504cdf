//! Socket tables of a network namespace, read once per namespace and looked up by
//! inode: TCP and UDP through sock_diag when the namespace is the agent's own (fast,
//! and it has listeners' backlogs), through /proc/PID/net/{tcp,tcp6,udp,udp6}
//! otherwise; unix and netlink sockets through /proc/PID/net always.

pub mod diag;
pub mod parse;

use crate::error::{ReadError, read_file};
use crate::model::{InetProtocol, SocketEntry, Unavailable};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct SocketTables {
    by_inode: HashMap<u64, SocketEntry>,
    /// Whether TCP listeners' `tx_queue` is their backlog (sock_diag) or not (/proc).
    pub has_backlogs: bool,
    pub unavailable: Vec<Unavailable>,
}

impl SocketTables {
    /// Reads the tables of the namespace `pid_dir` (`/proc/PID`) is in.
    pub fn read(pid_dir: &Path) -> Self {
        let mut t = Self::default();
        let net = pid_dir.join("net");
        let own = same_netns(pid_dir);
        t.has_backlogs = own;
        for tcp in [true, false] {
            if own {
                match diag::inet_sockets(tcp) {
                    Ok(sockets) => {
                        t.by_inode.extend(sockets);
                        continue;
                    }
                    Err(e) => {
                        t.has_backlogs = false;
                        let why = format!("sock_diag failed ({e}): read /proc/net instead, without backlogs");
                        t.unavailable.push(Unavailable::new("sockets", why));
                    }
                }
            }
            let tables = if tcp {
                [("tcp", InetProtocol::Tcp), ("tcp6", InetProtocol::Tcp6)]
            } else {
                [("udp", InetProtocol::Udp), ("udp6", InetProtocol::Udp6)]
            };
            for (name, protocol) in tables {
                t.load(&net.join(name), |b| parse::inet_table(b, protocol));
            }
        }
        t.load(&net.join("unix"), parse::unix_table);
        t.load(&net.join("netlink"), parse::netlink_table);
        t
    }

    fn load(&mut self, path: &Path, parse: impl Fn(&[u8]) -> Result<Vec<(u64, SocketEntry)>, String>) {
        match read_file(path).and_then(|b| parse(&b).map_err(|r| ReadError::parse(path, r))) {
            Ok(entries) => self.by_inode.extend(entries),
            // A kernel without IPv6 has no tcp6/udp6.
            Err(ReadError::Gone { .. }) if path.ends_with("tcp6") || path.ends_with("udp6") => {}
            Err(e) => self.unavailable.push(Unavailable::from_read("sockets", &e)),
        }
    }

    pub fn get(&self, inode: u64) -> Option<&SocketEntry> {
        self.by_inode.get(&inode)
    }

    /// A listener's accept backlog, when the tables came from sock_diag.
    pub fn backlog(&self, inode: u64) -> Option<u32> {
        match self.get(inode)? {
            SocketEntry::Inet { protocol, state: crate::model::TcpState::Listen, tx_queue, .. }
                if protocol.is_tcp() && self.has_backlogs =>
            {
                Some(*tx_queue)
            }
            _ => None,
        }
    }
}

/// Whether the process is in the agent's own network namespace (sock_diag answers
/// for that one only).
fn same_netns(pid_dir: &Path) -> bool {
    match (std::fs::read_link(pid_dir.join("ns/net")), std::fs::read_link("/proc/self/ns/net")) {
        (Ok(theirs), Ok(ours)) => theirs == ours,
        _ => false,
    }
}

/// Socket tables shared by every process of one network namespace, for one request:
/// a pod's containers share one namespace, so its tables are read once.
#[derive(Debug, Default)]
pub struct NetnsCache {
    tables: Mutex<HashMap<String, Arc<SocketTables>>>,
}

impl NetnsCache {
    pub fn tables_for(&self, pid_dir: &Path) -> Arc<SocketTables> {
        // "net:[4026531840]"; a fixture without ns/ gets tables of its own.
        let key = std::fs::read_link(pid_dir.join("ns/net"))
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_else(|_| pid_dir.to_string_lossy().into_owned());
        let mut tables = self.tables.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tables.entry(key).or_insert_with(|| Arc::new(SocketTables::read(pid_dir))).clone()
    }
}
