//! Errors. Every I/O error carries its path; API-level errors map to gRPC codes in
//! one place (`convert::status_from`).

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::{io, path::Path, path::PathBuf};

/// A failure to read or parse one kernel file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// ENOENT / ESRCH: the process (or cgroup) went away, or the file does not exist.
    #[error("{} does not exist (the process or cgroup may have gone)", path.display())]
    Gone { path: PathBuf },
    /// EACCES / EPERM.
    #[error("permission denied reading {}", path.display())]
    Denied { path: PathBuf },
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
}

impl ReadError {
    pub fn from_io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOENT | libc::ESRCH) => Self::Gone { path },
            Some(libc::EACCES | libc::EPERM) => Self::Denied { path },
            _ => Self::Io { path, source },
        }
    }

    pub fn parse(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Self::Parse { path: path.into(), reason: reason.to_string() }
    }

    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Gone { path } | Self::Denied { path } | Self::Io { path, .. } | Self::Parse { path, .. } => path,
        }
    }

    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Gone { .. })
    }

    /// The reason, as one lower-case sentence with its cause chained in.
    pub fn reason(&self) -> String {
        match self {
            Self::Io { source, .. } => format!("{self}: {source}"),
            _ => self.to_string(),
        }
    }
}

/// Errors an API call can end with.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("process {pid} not found")]
    ProcessNotFound { pid: i32 },
    #[error("process {pid} is not the one asked for: its start time is {found}, not {expected} (the pid was reused)")]
    ProcessReused { pid: i32, expected: u64, found: u64 },
    #[error("no process matches {filter}")]
    NothingMatches { filter: String },
    #[error("no report {id}")]
    ReportNotFound { id: String },
    #[error("the pre-OOM watcher is off in this agent (started with --no-watch, or this is --local)")]
    WatcherOff,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("process {pid} is already being profiled ({backend}, for {secs} s): one profile per process at a time")]
    ProfileBusy { pid: i32, backend: &'static str, secs: u64 },
    #[error("{max} profiles are running in this agent already: try again when one ends")]
    TooManyProfiles { max: usize },
    #[error("process {pid} is already traced by pid {tracer_pid} (a debugger or strace): osl does not take it over")]
    AlreadyTraced { pid: i32, tracer_pid: i32 },
    #[error("{0}")]
    BackendUnavailable(String),
    #[error("the profile failed: {0}")]
    Profile(String),
    #[error(transparent)]
    Read(#[from] ReadError),
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// Reads a whole kernel file, mapping the error to [`ReadError`] with its path.
pub fn read_file(path: impl Into<PathBuf>) -> Result<Vec<u8>, ReadError> {
    let path = path.into();
    std::fs::File::open(&path).and_then(read_all).map_err(|e| ReadError::from_io(path, e))
}

/// Opens a /proc or cgroup directory for reading files relative to it: a process
/// directory held open keeps naming that process, so a reused pid cannot mix two
/// processes' files (reads of a dead one fail with ENOENT/ESRCH).
pub fn open_dir(path: &Path) -> Result<OwnedFd, ReadError> {
    rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| ReadError::from_io(path, e.into()))
}

/// Reads `name` relative to `dir` (opened at `dir_path`, which errors name).
pub fn read_file_at(dir: &OwnedFd, dir_path: &Path, name: &str) -> Result<Vec<u8>, ReadError> {
    rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(io::Error::from)
        .and_then(|fd| read_all(std::fs::File::from(fd)))
        .map_err(|e| ReadError::from_io(dir_path.join(name), e))
}

/// The first `max` bytes of a file, and whether there was more.
pub fn read_file_at_most(dir: &OwnedFd, dir_path: &Path, name: &str, max: usize) -> Result<(Vec<u8>, bool), ReadError> {
    rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(io::Error::from)
        .and_then(|fd| read_up_to(std::fs::File::from(fd), max.saturating_add(1)))
        .map(|mut b| {
            let more = b.len() > max;
            b.truncate(max);
            (b, more)
        })
        .map_err(|e| ReadError::from_io(dir_path.join(name), e))
}

/// /proc and cgroup files report a size of 0, so `std::fs::read` would stat the
/// file and then grow its buffer from a 32-byte probe: several syscalls a file.
/// This reads straight into 4 KiB (most such files fit) and doubles from there.
fn read_all(file: std::fs::File) -> io::Result<Vec<u8>> {
    read_up_to(file, usize::MAX)
}

/// [`read_all`], stopping at `max` bytes.
fn read_up_to(mut file: std::fs::File, max: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; 4096.min(max)];
    let mut len = 0;
    while len < max {
        if len == buf.len() {
            buf.resize(buf.len().saturating_mul(2).min(max), 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}
