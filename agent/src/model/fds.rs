//! File descriptors, sockets, and how their counts move.

use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FdKind {
    File,
    Directory,
    CharDevice,
    BlockDevice,
    Pipe,
    Fifo,
    Socket,
    Eventfd,
    Epoll,
    Timerfd,
    Signalfd,
    Inotify,
    Fanotify,
    Memfd,
    Pidfd,
    IoUring,
    AnonInode,
    Other,
}

impl FdKind {
    /// The short name, as osl.v1 writes it in JSON (`char_device`, `io_uring`…).
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Directory => "directory",
            Self::CharDevice => "char_device",
            Self::BlockDevice => "block_device",
            Self::Pipe => "pipe",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
            Self::Eventfd => "eventfd",
            Self::Epoll => "epoll",
            Self::Timerfd => "timerfd",
            Self::Signalfd => "signalfd",
            Self::Inotify => "inotify",
            Self::Fanotify => "fanotify",
            Self::Memfd => "memfd",
            Self::Pidfd => "pidfd",
            Self::IoUring => "io_uring",
            Self::AnonInode => "anon_inode",
            Self::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fd {
    pub fd: i32,
    pub kind: FdKind,
    /// readlink of /proc/PID/fd/N, without " (deleted)".
    pub target: Vec<u8>,
    pub deleted: bool,
    pub info: Option<FdInfo>,
    /// Regular files: st_size, and the disk they occupy (st_blocks × 512).
    pub size_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
    pub socket: Option<Socket>,
}

/// /proc/PID/fdinfo/N.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FdInfo {
    pub pos: Option<u64>,
    pub flags: Option<u32>,
    pub mnt_id: Option<u32>,
    pub inode: Option<u64>,
    pub eventfd_count: Option<u64>,
    /// (target fd, event mask)
    pub epoll_targets: Vec<(i32, u32)>,
    pub timerfd: Option<Timerfd>,
    pub signalfd_mask: Option<u64>,
    pub inotify_watches: Vec<InotifyWatch>,
    pub pidfd_pid: Option<i32>,
}

impl FdInfo {
    /// Whether fdinfo said anything beyond pos, flags, mnt_id and ino.
    pub fn has_detail(&self) -> bool {
        self.eventfd_count.is_some()
            || !self.epoll_targets.is_empty()
            || self.timerfd.is_some()
            || self.signalfd_mask.is_some()
            || !self.inotify_watches.is_empty()
            || self.pidfd_pid.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timerfd {
    pub clockid: i32,
    pub ticks: u64,
    pub value_nsec: u64,
    pub interval_nsec: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InotifyWatch {
    pub wd: i32,
    pub inode: u64,
    pub mask: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Socket {
    pub inode: u64,
    /// `None`: the inode is in none of the namespace's tables.
    pub entry: Option<SocketEntry>,
    /// Listeners: the accept backlog (from sock_diag; /proc/net/tcp does not show it).
    pub accept_backlog: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InetProtocol {
    Tcp,
    Tcp6,
    Udp,
    Udp6,
}

impl InetProtocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tcp6 => "tcp6",
            Self::Udp => "udp",
            Self::Udp6 => "udp6",
        }
    }

    pub fn is_tcp(self) -> bool {
        matches!(self, Self::Tcp | Self::Tcp6)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SocketEntry {
    Inet {
        protocol: InetProtocol,
        local: SocketAddr,
        remote: SocketAddr,
        /// UDP sockets use the same numbers: ESTABLISHED when connected, else CLOSE.
        state: TcpState,
        /// Bytes not yet acknowledged; for LISTEN, the backlog (sock_diag) or 0 (/proc).
        tx_queue: u32,
        /// For LISTEN: connections waiting to be accepted; otherwise bytes not yet read.
        rx_queue: u32,
    },
    Unix {
        path: Option<Vec<u8>>,
        socket_type: u16,
        state: u8,
        listening: bool,
    },
    Netlink {
        protocol: u32,
    },
}

/// A TCP socket's state, the kernel's numbers (include/net/tcp_states.h): the one
/// place they are named and mapped (osl.v1's TcpState pins the same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    /// A number this agent does not know (e.g. TCP_BOUND_INACTIVE, 13, of newer kernels).
    Other(u8),
}

impl TcpState {
    const KNOWN: [TcpState; 12] = [
        Self::Established,
        Self::SynSent,
        Self::SynRecv,
        Self::FinWait1,
        Self::FinWait2,
        Self::TimeWait,
        Self::Close,
        Self::CloseWait,
        Self::LastAck,
        Self::Listen,
        Self::Closing,
        Self::NewSynRecv,
    ];

    pub fn from_kernel(n: u8) -> Self {
        match n {
            1..=12 => Self::KNOWN[usize::from(n) - 1],
            n => Self::Other(n),
        }
    }

    pub fn kernel(self) -> u8 {
        match self {
            Self::Other(n) => n,
            known => Self::KNOWN.iter().position(|&s| s == known).map_or(0, |i| i as u8 + 1),
        }
    }

    /// As `ss` prints it, lower-case with underscores.
    pub fn name(self) -> &'static str {
        match self {
            Self::Established => "established",
            Self::SynSent => "syn_sent",
            Self::SynRecv => "syn_recv",
            Self::FinWait1 => "fin_wait1",
            Self::FinWait2 => "fin_wait2",
            Self::TimeWait => "time_wait",
            Self::Close => "close",
            Self::CloseWait => "close_wait",
            Self::LastAck => "last_ack",
            Self::Listen => "listen",
            Self::Closing => "closing",
            Self::NewSynRecv => "new_syn_recv",
            Self::Other(_) => "unknown",
        }
    }
}

/// A process's fd table as read.
#[derive(Debug, Clone, Default)]
pub struct FdTable {
    pub fds: Vec<Fd>,
    /// Listed in /proc/PID/fd but closed before they could be read.
    pub closed_during_read: u64,
    /// Open but not read: beyond [`crate::fds::MAX_FDS_READ`] (counted, not described).
    pub not_read: u64,
    pub unavailable: Vec<super::Unavailable>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FdSummary {
    pub total: u64,
    /// Most first.
    pub by_kind: Vec<(FdKind, u64)>,
    pub by_tcp_state: Vec<(TcpState, u64)>,
    pub top_remotes: Vec<(String, u64)>,
    pub deleted_files: u64,
    pub deleted_bytes: u64,
    pub headroom: Option<u64>,
    pub closed_during_read: u64,
    /// The remote endpoint with the most CLOSE_WAIT connections.
    pub top_close_wait: Option<(String, u64)>,
}

impl FdSummary {
    pub fn tcp_state_count(&self, state: TcpState) -> u64 {
        self.by_tcp_state.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FdTrend {
    pub samples: u32,
    pub window_msec: u64,
    pub first: u64,
    pub last: u64,
    pub slope_per_sec: f64,
    pub growing: bool,
    pub eta_to_limit_sec: Option<u64>,
}
