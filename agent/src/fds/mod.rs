//! The fd table of a process: /proc/PID/fd (what each fd is), /proc/PID/fdinfo
//! (offset, flags, per-kind detail) and, for sockets, the network namespace's
//! tables. Every fd costs a readlink and an fdinfo read (plus a stat for paths);
//! both directories are opened once and read relative to their descriptors, and
//! a large table is read on several threads.

pub mod fdinfo;
pub mod summary;

use crate::error::{ReadError, read_file_at};
use crate::model::{Fd, FdKind, FdTable, Socket, Unavailable};
use crate::net::SocketTables;
use crate::proc::parse::parse_stat;
use fdinfo::Target;
use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};
use std::ffi::CStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Above this many fds a table is read on several threads: two a core (the work
/// is mostly in the kernel, and threads blocked there leave the core to another).
const PARALLEL_FROM: usize = 512;
const MAX_THREADS: usize = 4;
/// The fds of one process the agent describes in one answer; more are counted
/// only (a process may hold a million, and every request would hold them all).
pub const MAX_FDS_READ: usize = 32 * 1024;

/// Reads the fd table of the process at `pid_dir` (`/proc/PID`); with
/// `start_time_ticks`, only if it is still that process. `sockets` gives the tables
/// of its network namespace: called only if it has a socket, on a thread of its own
/// while the fds are still being read.
pub fn read_table(
    pid_dir: &Path,
    start_time_ticks: Option<u64>,
    sockets: impl Fn() -> Arc<SocketTables> + Sync,
) -> Result<FdTable, ReadError> {
    read_table_with(pid_dir, start_time_ticks, sockets, Detail::default())
}

/// What a read of an fd table fills in.
#[derive(Debug, Clone, Copy)]
pub struct Detail {
    /// Describe at most this many fds (the lowest numbers); count the rest.
    pub cap: usize,
    /// Which fds' fdinfo (offset, flags, per-kind detail) is read. Summaries and
    /// findings need only the link and, for paths, a stat: without fdinfo a read
    /// costs half the syscalls, and half the kernel's dentries (charged to the
    /// agent's cgroup) for /proc/PID/fdinfo/N.
    pub fdinfo: Fdinfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fdinfo {
    None,
    /// Only where fdinfo is the fd's detail (an eventfd's count, an epoll's
    /// watches…): what the default fd table shows.
    DetailKinds,
    All,
}

impl Default for Detail {
    fn default() -> Self {
        Self { cap: MAX_FDS_READ, fdinfo: Fdinfo::All }
    }
}

impl Detail {
    /// What summaries and findings need.
    pub fn summary() -> Self {
        Self { fdinfo: Fdinfo::None, ..Self::default() }
    }

    /// What the default fd table shows.
    pub fn table() -> Self {
        Self { fdinfo: Fdinfo::DetailKinds, ..Self::default() }
    }
}

/// Kinds whose fdinfo is what they are (the rest: offset and flags only).
fn detail_in_fdinfo(kind: FdKind) -> bool {
    matches!(
        kind,
        FdKind::Eventfd | FdKind::Epoll | FdKind::Timerfd | FdKind::Signalfd | FdKind::Inotify | FdKind::Pidfd
    )
}

/// [`read_table`], filling in what `detail` asks for.
pub fn read_table_with(
    pid_dir: &Path,
    start_time_ticks: Option<u64>,
    sockets: impl Fn() -> Arc<SocketTables> + Sync,
    detail: Detail,
) -> Result<FdTable, ReadError> {
    let cap = detail.cap;
    let proc_dir = crate::error::open_dir(pid_dir)?;
    if let Some(expected) = start_time_ticks {
        let stat = read_file_at(&proc_dir, pid_dir, "stat")?;
        let (_, stat) = parse_stat(&stat).map_err(|r| ReadError::parse(pid_dir.join("stat"), r))?;
        if stat.starttime != expected {
            return Err(ReadError::Gone { path: pid_dir.to_path_buf() });
        }
    }
    let fd_dir = open_subdir(&proc_dir, pid_dir, "fd")?;
    let info_dir = match detail.fdinfo {
        Fdinfo::None => None,
        Fdinfo::DetailKinds | Fdinfo::All => Some(open_subdir(&proc_dir, pid_dir, "fdinfo")?),
    };
    let mut numbers = list(&fd_dir, &pid_dir.join("fd"))?;
    numbers.sort_unstable();
    let not_read = numbers.len().saturating_sub(cap);
    numbers.truncate(cap);

    let reader = Reader { fd_dir: &fd_dir, info_dir: info_dir.as_ref(), all_fdinfo: detail.fdinfo == Fdinfo::All };
    let threads = (std::thread::available_parallelism().map_or(1, |n| n.get()) * 2).min(MAX_THREADS);
    let parallel = numbers.len() >= PARALLEL_FROM && threads >= 2;
    let prefetch = Prefetch { started: AtomicBool::new(false), tables: OnceLock::new(), sockets: &sockets };
    let results: Vec<Read> = std::thread::scope(|s| {
        if parallel {
            let chunk = numbers.len().div_ceil(threads);
            let (prefetch, reader) = (&prefetch, &reader);
            let workers: Vec<_> = numbers
                .chunks(chunk)
                .map(|part| s.spawn(move || reader.read_all(part, &|| prefetch.start(s))))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        } else {
            reader.read_all(&numbers, &|| prefetch.start(s))
        }
    });
    // The scope has joined the table reader too.
    let tables = prefetch.tables.into_inner();

    let mut table = FdTable { not_read: not_read as u64, ..FdTable::default() };
    if not_read > 0 {
        table.unavailable.push(Unavailable::new(
            "fds",
            format!("truncated: the first {cap} fds are described, {not_read} more are only counted"),
        ));
    }
    for r in results {
        match r {
            Read::Fd(mut fd) => {
                if let (Some(socket), Some(t)) = (fd.socket.as_mut(), &tables) {
                    socket.entry = t.get(socket.inode).cloned();
                    socket.accept_backlog = t.backlog(socket.inode);
                }
                table.fds.push(*fd);
            }
            Read::Closed => table.closed_during_read += 1,
        }
    }
    if let Some(t) = &tables {
        table.unavailable.extend(t.unavailable.iter().cloned());
    }
    Ok(table)
}

/// Reads the socket tables on a thread of their own, once, when a socket is seen.
struct Prefetch<'a, F> {
    started: AtomicBool,
    tables: OnceLock<Arc<SocketTables>>,
    sockets: &'a F,
}

impl<F: Fn() -> Arc<SocketTables> + Sync> Prefetch<'_, F> {
    fn start<'scope>(&'scope self, s: &'scope std::thread::Scope<'scope, '_>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            s.spawn(move || {
                let _ = self.tables.set((self.sockets)());
            });
        }
    }
}

fn open_subdir(proc_dir: &OwnedFd, pid_dir: &Path, name: &str) -> Result<OwnedFd, ReadError> {
    rustix::fs::openat(proc_dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| ReadError::from_io(pid_dir.join(name), e.into()))
}

fn list(dir: &OwnedFd, path: &Path) -> Result<Vec<i32>, ReadError> {
    let entries = rustix::fs::Dir::read_from(dir).map_err(|e| ReadError::from_io(path, e.into()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ReadError::from_io(path, e.into()))?;
        if let Some(n) = entry.file_name().to_str().ok().and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    Ok(out)
}

enum Read {
    Fd(Box<Fd>),
    /// Listed, then closed before it was read.
    Closed,
}

struct Reader<'a> {
    fd_dir: &'a OwnedFd,
    info_dir: Option<&'a OwnedFd>,
    /// Every fd's fdinfo, not only the kinds whose detail it is.
    all_fdinfo: bool,
}

impl Reader<'_> {
    /// `want_sockets` is called when a socket is seen (its entry is filled in later).
    fn read_all(&self, numbers: &[i32], want_sockets: &dyn Fn()) -> Vec<Read> {
        let mut link = vec![0u8; 4096];
        let mut info = Vec::with_capacity(4096);
        numbers.iter().map(|&n| self.read_one(n, &mut link, &mut info, want_sockets)).collect()
    }

    fn read_one(&self, n: i32, link: &mut [u8], info_buf: &mut Vec<u8>, want_sockets: &dyn Fn()) -> Read {
        let mut name_buf = itoa_buf(n);
        let name = name_buf.as_cstr();
        let target = match readlink(self.fd_dir, name, link) {
            Ok(t) => t,
            Err(_) => return Read::Closed,
        };
        let (class, path, deleted) = fdinfo::classify(&target);
        let mut fd = Fd {
            fd: n,
            kind: FdKind::Other,
            target: path.to_vec(),
            deleted,
            info: None,
            size_bytes: None,
            disk_bytes: None,
            socket: None,
        };
        fd.kind = match class {
            Target::Socket(inode) => {
                want_sockets();
                fd.socket = Some(Socket { inode, entry: None, accept_backlog: None });
                FdKind::Socket
            }
            Target::Pipe => FdKind::Pipe,
            Target::Anon(kind) => kind,
            Target::Memfd => FdKind::Memfd,
            // statx without sync: a plain stat of a file on a dead NFS or FUSE mount
            // could hang the read.
            Target::Path => match rustix::fs::statx(
                self.fd_dir,
                name,
                AtFlags::STATX_DONT_SYNC,
                StatxFlags::TYPE | StatxFlags::SIZE | StatxFlags::BLOCKS,
            ) {
                Ok(st) => {
                    let kind = path_kind(FileType::from_raw_mode(u32::from(st.stx_mode)));
                    if kind == FdKind::File {
                        fd.size_bytes = Some(st.stx_size);
                        fd.disk_bytes = Some(st.stx_blocks.saturating_mul(512));
                    }
                    kind
                }
                Err(rustix::io::Errno::NOENT) => return Read::Closed,
                Err(_) => FdKind::Other,
            },
        };
        if let Some(info_dir) = self.info_dir.filter(|_| self.all_fdinfo || detail_in_fdinfo(fd.kind)) {
            match read_at(info_dir, name, info_buf) {
                Ok(()) => fd.info = fdinfo::parse(info_buf).ok(),
                Err(rustix::io::Errno::NOENT) => return Read::Closed,
                Err(_) => {}
            }
        }
        Read::Fd(Box::new(fd))
    }
}

/// What a path's file type makes an fd.
pub fn path_kind(t: FileType) -> FdKind {
    match t {
        FileType::RegularFile => FdKind::File,
        FileType::Directory => FdKind::Directory,
        FileType::CharacterDevice => FdKind::CharDevice,
        FileType::BlockDevice => FdKind::BlockDevice,
        FileType::Fifo => FdKind::Fifo,
        _ => FdKind::Other,
    }
}

fn readlink(dir: &OwnedFd, name: &CStr, buf: &mut [u8]) -> Result<Vec<u8>, rustix::io::Errno> {
    let len = rustix::fs::readlinkat_raw(dir, name, &mut *buf)?;
    if len < buf.len() {
        return Ok(buf[..len].to_vec());
    }
    // Longer than PATH_MAX: cannot happen for a real path, but do not truncate.
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Reads an fdinfo file relative to `dir` into `buf` (reused between calls).
/// fdinfo is a single-record seq_file: a read returns all of it that fits, so a
/// read shorter than the buffer is the whole file and the EOF read is skipped
/// (17,000 fds: 17,000 syscalls fewer).
fn read_at(dir: &OwnedFd, name: &CStr, buf: &mut Vec<u8>) -> Result<(), rustix::io::Errno> {
    let file = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        match rustix::io::read(&file, &mut chunk) {
            Ok(n) if n < chunk.len() => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// A decimal fd number as a NUL-terminated name, without allocating.
struct NameBuf {
    bytes: [u8; 12],
    len: usize,
}

impl NameBuf {
    fn as_cstr(&mut self) -> &CStr {
        CStr::from_bytes_with_nul(&self.bytes[..=self.len]).unwrap_or(c"")
    }
}

fn itoa_buf(mut n: i32) -> NameBuf {
    let mut digits = [0u8; 11];
    let mut i = digits.len();
    n = n.max(0);
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut bytes = [0u8; 12];
    let len = digits.len() - i;
    bytes[..len].copy_from_slice(&digits[i..]);
    NameBuf { bytes, len }
}

/// Why a table could not be read, for the process's `unavailable` list.
pub fn unavailable(e: &ReadError, denied_hint: &str) -> Unavailable {
    let mut u = Unavailable::from_read("fds", e);
    if matches!(e, ReadError::Denied { .. }) {
        u.reason = format!("{} ({denied_hint})", u.reason);
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_names() {
        for n in [0, 7, 10, 65535, i32::MAX] {
            assert_eq!(itoa_buf(n).as_cstr().to_str().unwrap(), n.to_string());
        }
    }

    #[test]
    fn a_table_beyond_the_cap_is_counted_and_marked() {
        let held: Vec<std::fs::File> = (0..100).map(|_| std::fs::File::open("/dev/null").unwrap()).collect();
        let me = Path::new("/proc/self");
        let full = read_table(me, None, || Arc::new(SocketTables::default())).unwrap();
        let sockets = || Arc::new(SocketTables::default());
        let capped = read_table_with(me, None, sockets, Detail { cap: 64, fdinfo: Fdinfo::None }).unwrap();
        assert!(capped.fds.iter().all(|fd| fd.info.is_none()));
        assert!(full.fds.iter().all(|fd| fd.info.is_some()));
        assert_eq!(capped.fds.len(), 64);
        let total = capped.fds.len() as u64 + capped.not_read;
        assert!(total.abs_diff(full.fds.len() as u64) <= 2, "{total} vs {}", full.fds.len()); // other tests' fds
        assert_eq!(summary::summarize(&capped, None).total, total);
        assert!(capped.unavailable.iter().any(|u| u.field == "fds" && u.reason.starts_with("truncated")));
        assert!(full.unavailable.iter().all(|u| u.field != "fds"));
        drop(held);
    }
}
