//! Who is calling. Every container of a pod shares its network namespace, so
//! loopback lets the app container reach the agent as easily as a port-forward
//! does. What tells them apart is who holds the client's socket: a process the
//! agent can see (its PID namespace is the pod's) is a neighbour; a port-forward
//! is dialled by the container runtime on the node, outside the pod's PID
//! namespace, and its socket is held by no process in it.
//!
//! The client socket is found by its 4-tuple in sock_diag (it lives in the same
//! network namespace), then looked for in every visible process's fd table. A
//! table the agent may not read (level basic, another UID) could hide it: when
//! such a process has the socket's owner UID, the caller cannot be told apart and
//! the verdict says so (the server refuses, failing closed). One exception: the
//! PID namespace's init when it is the pod sandbox's (`pause` under Kubernetes,
//! `catatonit` under podman): it only reaps, never dials, and under podman it runs
//! as root, the UID of every port-forward's socket. (A process that is PID 1 and
//! renames itself `pause` could borrow a level-basic agent's UID this way; at the
//! levels with capabilities every table is readable and nothing is exempt.)

use crate::net::diag;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Not held by any process of the agent's PID namespace (a port-forward, or a
    /// client beyond this network namespace).
    Outside,
    /// Held by the agent itself (an in-process client).
    Agent,
    /// Held by a process of the pod.
    Neighbour { pid: i32, comm: String },
    /// Not found, but processes the agent cannot look into could hold it.
    Unverifiable { pids: Vec<i32>, uid: u32 },
    /// The check itself failed (sock_diag unavailable…).
    Unknown { why: String },
}

impl Peer {
    /// Whether a call on this connection may use the agent's privileges.
    pub fn allowed(&self) -> bool {
        matches!(self, Peer::Outside | Peer::Agent)
    }

    /// Why a call was refused, for the client and the log.
    pub fn refusal(&self) -> String {
        match self {
            Peer::Outside | Peer::Agent => String::new(),
            Peer::Neighbour { pid, comm } => format!(
                "this connection comes from pid {pid} ({comm}) inside the pod; the agent serves only callers from \
                 outside it (kubectl port-forward); start the agent with --allow-pod-peers to serve the pod's own \
                 processes"
            ),
            Peer::Unverifiable { pids, uid } => format!(
                "cannot tell whether this connection comes from inside the pod: its socket belongs to uid {uid} and \
                 the agent may not read the fd tables of pids {pids:?} (run the agent at level ptrace, or start it \
                 with --allow-pod-peers)"
            ),
            Peer::Unknown { why } => format!("cannot tell who is calling ({why}); refused"),
        }
    }
}

/// Who holds the client end of the TCP connection from `remote` to `local` (the
/// server's address), among the processes under `proc_root`.
pub fn identify(proc_root: &Path, local: SocketAddr, remote: SocketAddr) -> Peer {
    let sockets = match diag::dump(true) {
        Ok(s) => s,
        Err(e) => return Peer::Unknown { why: format!("sock_diag: {e}") },
    };
    let (local, remote) = (canonical(local), canonical(remote));
    let Some(client) = sockets.iter().find(|s| canonical(s.local) == remote && canonical(s.remote) == local) else {
        return Peer::Outside; // not in this network namespace
    };
    holder(proc_root, client.inode, client.uid)
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Looks for `socket:[inode]` in every process's fd table.
pub fn holder(proc_root: &Path, inode: u64, uid: u32) -> Peer {
    let me = std::process::id() as i32;
    let target = format!("socket:[{inode}]");
    let pids = match crate::proc::ProcReader::new(proc_root).pids() {
        Ok(pids) => pids,
        Err(e) => return Peer::Unknown { why: e.to_string() },
    };
    let mut hidden = Vec::new();
    for pid in pids {
        let dir = proc_root.join(pid.to_string());
        let fds = match std::fs::read_dir(dir.join("fd")) {
            Ok(fds) => fds,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                if owner(&dir) == Some(uid) && !(pid == 1 && is_sandbox_init(&dir)) {
                    hidden.push(pid);
                }
                continue;
            }
            Err(_) => continue, // gone, or a kernel thread
        };
        let holds = fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == &*target));
        if holds {
            if pid == me {
                return Peer::Agent;
            }
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim_end().to_string();
            return Peer::Neighbour { pid, comm };
        }
    }
    if hidden.is_empty() { Peer::Outside } else { Peer::Unverifiable { pids: hidden, uid } }
}

/// The pod sandbox's init: the infra container's process, PID 1 of a pod with
/// a shared PID namespace.
fn is_sandbox_init(dir: &Path) -> bool {
    let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
    matches!(comm.trim_end(), "pause" | "catatonit")
}

/// The real UID of a process (`Uid:` in status, readable by anyone).
fn owner(dir: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_connection_from_this_process_is_the_agent() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, remote) = listener.accept().unwrap();
        assert_eq!(remote, client.local_addr().unwrap());
        assert_eq!(identify(Path::new("/proc"), listener.local_addr().unwrap(), remote), Peer::Agent);
    }

    #[test]
    fn a_socket_no_process_holds_is_outside() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("12/fd")).unwrap();
        std::os::unix::fs::symlink("socket:[1]", root.path().join("12/fd/3")).unwrap();
        assert_eq!(holder(root.path(), 2, 0), Peer::Outside);
        std::fs::write(root.path().join("12/comm"), "app\n").unwrap();
        assert_eq!(holder(root.path(), 1, 0), Peer::Neighbour { pid: 12, comm: "app".into() });
    }

    #[test]
    fn an_unknown_address_is_outside() {
        let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(identify(Path::new("/proc"), local, "127.0.0.1:2".parse().unwrap()), Peer::Outside);
    }

    #[test]
    fn refusals_name_the_neighbour() {
        let n = Peer::Neighbour { pid: 7, comm: "sh".into() };
        assert!(!n.allowed() && n.refusal().contains("pid 7 (sh)"));
        assert!(Peer::Outside.allowed() && Peer::Agent.allowed());
        assert!(!Peer::Unverifiable { pids: vec![1], uid: 0 }.allowed());
    }
}
