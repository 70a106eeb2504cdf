//! The fd table of a process: /proc/PID/fd (what each fd is), /proc/PID/fdinfo
//! (offset, flags, per-kind detail) and, for sockets, the network namespace's
//! tables. Every fd costs a readlink and an fdinfo read (plus a stat for paths);
//! both directories are opened once and read relative to their descriptors, and
//! a large table is read on several threads.

pub mod fdinfo;
pub mod summary;

use crate::error::ReadError;
use crate::model::{Fd, FdKind, FdTable, Socket, Unavailable};
use crate::net::SocketTables;
use fdinfo::Target;
use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::ffi::CStr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Above this many fds a table is read on several threads.
const PARALLEL_FROM: usize = 512;
const MAX_THREADS: usize = 4;

/// Reads the fd table of the process at `pid_dir` (`/proc/PID`). `sockets` gives
/// the tables of its network namespace; it is called only if it has a socket.
pub fn read_table(pid_dir: &Path, sockets: impl Fn() -> Arc<SocketTables> + Sync) -> Result<FdTable, ReadError> {
    let fd_path = pid_dir.join("fd");
    let info_path = pid_dir.join("fdinfo");
    let fd_dir = open_dir(&fd_path)?;
    let info_dir = open_dir(&info_path)?;
    let mut numbers = list(&fd_dir, &fd_path)?;
    numbers.sort_unstable();

    let tables = OnceLock::new();
    let reader = Reader { fd_dir: &fd_dir, info_dir: &info_dir, tables: &tables, sockets: &sockets };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS);
    let results: Vec<Read> = if numbers.len() < PARALLEL_FROM || threads < 2 {
        reader.read_all(&numbers)
    } else {
        let chunk = numbers.len().div_ceil(threads);
        std::thread::scope(|s| {
            let workers: Vec<_> = numbers.chunks(chunk).map(|part| s.spawn(|| reader.read_all(part))).collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        })
    };

    let mut table = FdTable::default();
    for r in results {
        match r {
            Read::Fd(fd) => table.fds.push(*fd),
            Read::Closed => table.closed_during_read += 1,
        }
    }
    if let Some(t) = tables.get() {
        table.unavailable.extend(t.unavailable.iter().cloned());
    }
    Ok(table)
}

fn open_dir(path: &Path) -> Result<OwnedFd, ReadError> {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| ReadError::from_io(path, e.into()))
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

struct Reader<'a, S> {
    fd_dir: &'a OwnedFd,
    info_dir: &'a OwnedFd,
    tables: &'a OnceLock<Arc<SocketTables>>,
    sockets: &'a S,
}

impl<S: Fn() -> Arc<SocketTables> + Sync> Reader<'_, S> {
    fn read_all(&self, numbers: &[i32]) -> Vec<Read> {
        let mut link = vec![0u8; 4096];
        let mut info = Vec::with_capacity(4096);
        numbers.iter().map(|&n| self.read_one(n, &mut link, &mut info)).collect()
    }

    fn read_one(&self, n: i32, link: &mut [u8], info_buf: &mut Vec<u8>) -> Read {
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
            socket: None,
        };
        fd.kind = match class {
            Target::Socket(inode) => {
                let tables = self.tables.get_or_init(|| (self.sockets)());
                let accept_backlog = tables.backlog(inode).map(|(_, backlog)| backlog);
                fd.socket = Some(Socket { inode, entry: tables.get(inode).cloned(), accept_backlog });
                FdKind::Socket
            }
            Target::Pipe => FdKind::Pipe,
            Target::Anon(kind) => kind,
            Target::Memfd => FdKind::Memfd,
            Target::Path => match rustix::fs::statat(self.fd_dir, name, AtFlags::empty()) {
                Ok(st) => {
                    let kind = path_kind(FileType::from_raw_mode(st.st_mode));
                    if kind == FdKind::File {
                        fd.size_bytes = u64::try_from(st.st_size).ok();
                    }
                    kind
                }
                Err(rustix::io::Errno::NOENT) => return Read::Closed,
                Err(_) => FdKind::Other,
            },
        };
        match read_at(self.info_dir, name, info_buf) {
            Ok(()) => fd.info = fdinfo::parse(info_buf).ok(),
            Err(rustix::io::Errno::NOENT) => return Read::Closed,
            Err(_) => {}
        }
        Read::Fd(Box::new(fd))
    }
}

fn path_kind(t: FileType) -> FdKind {
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

/// Reads a small file relative to `dir` into `buf` (reused between calls).
fn read_at(dir: &OwnedFd, name: &CStr, buf: &mut Vec<u8>) -> Result<(), rustix::io::Errno> {
    let file = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        match rustix::io::read(&file, &mut chunk) {
            Ok(0) => return Ok(()),
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
}
