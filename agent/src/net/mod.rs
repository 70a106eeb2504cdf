//! Socket tables of a network namespace: /proc/PID/net/{tcp,tcp6,udp,udp6,unix,netlink},
//! read once per namespace and looked up by inode.

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
    /// Listener inode → (accept queue, backlog), when the namespace is the agent's own.
    backlogs: Option<HashMap<u64, (u32, u32)>>,
    pub unavailable: Vec<Unavailable>,
}

impl SocketTables {
    /// Reads the tables of the namespace `pid_dir` (`/proc/PID`) is in.
    pub fn read(pid_dir: &Path) -> Self {
        let mut t = Self::default();
        let net = pid_dir.join("net");
        for (name, protocol) in [
            ("tcp", InetProtocol::Tcp),
            ("tcp6", InetProtocol::Tcp6),
            ("udp", InetProtocol::Udp),
            ("udp6", InetProtocol::Udp6),
        ] {
            t.load(&net.join(name), |b| parse::inet_table(b, protocol));
        }
        t.load(&net.join("unix"), parse::unix_table);
        t.load(&net.join("netlink"), parse::netlink_table);
        if same_netns(pid_dir) {
            match diag::listen_backlogs() {
                Ok(b) => t.backlogs = Some(b),
                Err(e) => t.unavailable.push(Unavailable::new("sockets.accept_backlog", format!("sock_diag: {e}"))),
            }
        }
        t
    }

    /// (connections waiting, backlog) of a listener, if sock_diag could be asked.
    pub fn backlog(&self, inode: u64) -> Option<(u32, u32)> {
        self.backlogs.as_ref()?.get(&inode).copied()
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

    pub fn len(&self) -> usize {
        self.by_inode.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_inode.is_empty()
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
