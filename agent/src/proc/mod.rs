//! The process reader: one process from `<root>/<pid>/…`, every field it can get,
//! with the reason for every one it cannot.

pub mod parse;

use crate::error::{ReadError, open_dir, read_file, read_file_at};
use crate::model::{FdUsage, Ids, Process, ProcessCpu, ProcessMemory, Signals, Unavailable};
use crate::redact::redact_args;
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::path::{Path, PathBuf};

/// A process as the pre-OOM watcher tracks it between captures.
#[derive(Debug, Clone)]
pub struct Brief {
    pub pid: i32,
    pub start_time_ticks: u64,
    pub comm: Vec<u8>,
    pub rss_bytes: u64,
    pub kernel_thread: bool,
    /// Exited, not yet reaped (a zombie): an OOM victim its parent has not waited for.
    pub dead: bool,
    pub cgroups: Vec<crate::model::CgroupMembership>,
}

/// PF_KTHREAD in /proc/PID/stat `flags`.
const PF_KTHREAD: u32 = 0x0020_0000;

#[derive(Debug, Clone)]
pub struct ProcReader {
    root: PathBuf,
    ticks_per_sec: u64,
    boot_time_unix_sec: Option<i64>,
    /// The root is a real procfs, whose /proc/PID/fd reports the fd count as its size.
    is_procfs: bool,
    /// Said after "permission denied": why the kernel refused.
    denied_hint: &'static str,
}

/// Why reading another process's fds or smaps is refused, by what the reader holds.
pub fn denied_hint(has_sys_ptrace: bool) -> &'static str {
    if has_sys_ptrace {
        "the process is not dumpable, or a security module denies ptrace access to it"
    } else {
        "another user's process: the agent needs CAP_SYS_PTRACE"
    }
}

impl Default for ProcReader {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl ProcReader {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let boot_time_unix_sec = read_file(root.join("stat")).ok().and_then(|b| parse::parse_btime(&b));
        const PROC_SUPER_MAGIC: i64 = 0x9fa0;
        // f_type's integer type differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        let is_procfs = rustix::fs::statfs(&root).is_ok_and(|s| s.f_type as i64 == PROC_SUPER_MAGIC);
        let ticks_per_sec = rustix::param::clock_ticks_per_second();
        Self { root, ticks_per_sec, boot_time_unix_sec, is_procfs, denied_hint: denied_hint(false) }
    }

    /// Sets what a "permission denied" is explained with (see [`denied_hint`]).
    pub fn with_denied_hint(mut self, hint: &'static str) -> Self {
        self.denied_hint = hint;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every pid under the root, ascending.
    pub fn pids(&self) -> Result<Vec<i32>, ReadError> {
        let dir = std::fs::read_dir(&self.root).map_err(|e| ReadError::from_io(&self.root, e))?;
        let mut pids: Vec<i32> =
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter(|&p| p > 0).collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// Reads one process. `Err(ReadError::Gone)` when it does not exist (any more);
    /// once stat was read, a process that exits is returned with what was read and
    /// `exited_mid_read` set. Every file is read through one handle on /proc/PID, so
    /// a pid reused meanwhile cannot mix two processes.
    pub fn read(&self, pid: i32) -> Result<Process, ReadError> {
        let path = self.root.join(pid.to_string());
        let dir = open_dir(&path)?;
        let stat = read_file_at(&dir, &path, "stat")?;
        let (comm, stat) = parse::parse_stat(&stat).map_err(|r| ReadError::parse(path.join("stat"), r))?;
        let mut p = Process {
            pid,
            ppid: stat.ppid,
            start_time_ticks: stat.starttime,
            start_time_unix_ms: self
                .boot_time_unix_sec
                .map(|b| b.saturating_mul(1000).saturating_add(self.ticks_to_ms(stat.starttime))),
            comm,
            state: stat.state,
            kernel_thread: stat.flags & PF_KTHREAD != 0,
            cpu: ProcessCpu {
                utime_usec: Some(self.ticks_to_usec(stat.utime)),
                stime_usec: Some(self.ticks_to_usec(stat.stime)),
                threads: u32::try_from(stat.num_threads).ok(),
                minor_faults: Some(stat.minflt),
                major_faults: Some(stat.majflt),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut r =
            Reading { dir: &dir, path: &path, p: &mut p, is_procfs: self.is_procfs, denied_hint: self.denied_hint };
        r.status();
        r.cmdline();
        r.cgroups();
        if r.p.kernel_thread {
            r.p.unavailable.push(Unavailable::new("memory, fds", "kernel thread: it has no user memory or files"));
        } else if r.p.is_zombie() {
            r.p.unavailable
                .push(Unavailable::new("memory.pss_bytes, fds", "zombie: it has released its memory and files"));
        } else {
            r.fds();
            r.smaps_rollup();
        }
        Ok(p)
    }

    /// Reads processes on several threads, in the pids' order.
    pub fn read_many(&self, pids: &[i32]) -> Vec<(i32, Result<Process, ReadError>)> {
        crate::par::map(pids, 16, |&pid| (pid, self.read(pid)))
    }

    /// What the pre-OOM watcher re-reads every few seconds: start time, RSS and
    /// cgroups (two files).
    pub fn read_brief(&self, pid: i32) -> Result<Brief, ReadError> {
        let path = self.root.join(pid.to_string());
        let dir = open_dir(&path)?;
        let (comm, stat) = parse::parse_stat(&read_file_at(&dir, &path, "stat")?)
            .map_err(|r| ReadError::parse(path.join("stat"), r))?;
        let cgroup = read_file_at(&dir, &path, "cgroup")?;
        let cgroups = parse::parse_cgroups(&cgroup).map_err(|r| ReadError::parse(path.join("cgroup"), r))?;
        Ok(Brief {
            pid,
            start_time_ticks: stat.starttime,
            comm,
            rss_bytes: stat.rss.saturating_mul(rustix::param::page_size() as u64),
            kernel_thread: stat.flags & PF_KTHREAD != 0,
            dead: matches!(stat.state, 'Z' | 'X' | 'x') && stat.num_threads <= 1,
            cgroups,
        })
    }

    /// The cheap sample the fd trend needs: (start time, open fds).
    pub fn fd_count(&self, pid: i32) -> Result<(u64, u64), ReadError> {
        let path = self.root.join(pid.to_string());
        let dir = open_dir(&path)?;
        let (_, stat) = parse::parse_stat(&read_file_at(&dir, &path, "stat")?)
            .map_err(|r| ReadError::parse(path.join("stat"), r))?;
        if stat.flags & PF_KTHREAD != 0 {
            return Err(ReadError::Gone { path: path.join("fd") });
        }
        Ok((stat.starttime, count_fds(&dir, &path, self.is_procfs)?))
    }

    /// The pre-OOM ring's per-second look at one process: RSS (statm, one short
    /// read) and open fds (`None` where /proc/PID/fd is not readable).
    pub fn rss_and_fds(&self, pid: i32) -> Result<(u64, Option<u64>), ReadError> {
        let path = self.root.join(pid.to_string());
        let dir = open_dir(&path)?;
        let statm = read_file_at(&dir, &path, "statm")?;
        let pages: u64 = std::str::from_utf8(&statm)
            .ok()
            .and_then(|t| t.split_whitespace().nth(1)?.parse().ok())
            .ok_or_else(|| ReadError::parse(path.join("statm"), "no resident field"))?;
        let fds = count_fds(&dir, &path, self.is_procfs).ok();
        Ok((pages.saturating_mul(rustix::param::page_size() as u64), fds))
    }

    pub fn denied_hint(&self) -> &'static str {
        self.denied_hint
    }

    fn ticks_to_usec(&self, ticks: u64) -> u64 {
        ticks.saturating_mul(1_000_000) / self.ticks_per_sec.max(1)
    }

    fn ticks_to_ms(&self, ticks: u64) -> i64 {
        i64::try_from(ticks.saturating_mul(1000) / self.ticks_per_sec.max(1)).unwrap_or(i64::MAX)
    }
}

/// One process being read: each step records what it got, or why not, and stops
/// reading once the process is gone.
struct Reading<'a> {
    dir: &'a OwnedFd,
    path: &'a Path,
    p: &'a mut Process,
    is_procfs: bool,
    denied_hint: &'static str,
}

impl Reading<'_> {
    fn file(&mut self, name: &str, field: &str) -> Option<(PathBuf, Vec<u8>)> {
        if self.p.exited_mid_read {
            return None;
        }
        match read_file_at(self.dir, self.path, name) {
            Ok(bytes) => Some((self.path.join(name), bytes)),
            Err(e) => {
                self.fail(field, &e);
                None
            }
        }
    }

    /// ENOENT means the process exited only if its stat is gone too; otherwise
    /// this kernel (or fixture) just lacks the file.
    fn still_there(&self) -> bool {
        rustix::fs::statat(self.dir, "stat", rustix::fs::AtFlags::empty()).is_ok()
    }

    fn fail(&mut self, field: &str, e: &ReadError) {
        if e.is_gone() && self.still_there() {
            let mut u = Unavailable::from_read(field, e);
            u.reason = format!("{} is not present on this kernel", e.path().display());
            self.p.unavailable.push(u);
        } else if e.is_gone() {
            self.p.exited_mid_read = true;
            self.p.unavailable.push(Unavailable::new(field, "the process exited while it was being read"));
        } else {
            let mut u = Unavailable::from_read(field, e);
            if matches!(e, ReadError::Denied { .. }) {
                u.reason = format!("{} ({})", u.reason, self.denied_hint);
            }
            self.p.unavailable.push(u);
        }
    }

    fn parsed<T>(&mut self, field: &str, path: &Path, parsed: Result<T, String>) -> Option<T> {
        parsed.map_err(|reason| self.fail(field, &ReadError::parse(path, reason))).ok()
    }

    fn status(&mut self) {
        let Some((path, bytes)) = self.file("status", "status") else {
            return;
        };
        let Some(s) = self.parsed("status", &path, parse::parse_status(&bytes)) else {
            return;
        };
        let kb = |v: Option<u64>| v.and_then(|v| v.checked_mul(1024));
        let p = &mut *self.p;
        p.ids = Some(Ids { uid: s.ruid, euid: s.euid, gid: s.rgid, egid: s.egid });
        p.memory = ProcessMemory {
            vm_size_bytes: kb(s.vmsize),
            vm_rss_bytes: kb(s.vmrss),
            rss_anon_bytes: kb(s.rssanon),
            rss_file_bytes: kb(s.rssfile),
            rss_shmem_bytes: kb(s.rssshmem),
            vm_hwm_bytes: kb(s.vmhwm),
            vm_swap_bytes: kb(s.vmswap),
            ..Default::default()
        };
        p.cpu.voluntary_ctxt_switches = s.voluntary_ctxt_switches;
        p.cpu.nonvoluntary_ctxt_switches = s.nonvoluntary_ctxt_switches;
        p.signals =
            Some(Signals { pending: s.sigpnd | s.shdpnd, blocked: s.sigblk, ignored: s.sigign, caught: s.sigcgt });
        p.capabilities = Some(s.capeff);
        p.tracer_pid = Some(s.tracerpid);
    }

    /// Reads at most [`CMDLINE_READ_BYTES`] (a process's argv may be megabytes,
    /// and every answer carries it), redacts, then keeps [`MAX_CMDLINE_BYTES`].
    fn cmdline(&mut self) {
        if self.p.exited_mid_read {
            return;
        }
        let (bytes, more) = match crate::error::read_file_at_most(self.dir, self.path, "cmdline", CMDLINE_READ_BYTES) {
            Ok(read) => read,
            Err(e) => return self.fail("cmdline", &e),
        };
        let mut args = parse::parse_cmdline(&bytes);
        self.p.cmdline_redacted = redact_args(&mut args);
        self.p.cmdline_truncated = more | truncate_args(&mut args, MAX_CMDLINE_BYTES);
        self.p.cmdline = args;
    }

    fn cgroups(&mut self) {
        let Some((path, bytes)) = self.file("cgroup", "cgroup") else {
            return;
        };
        if let Some(groups) = self.parsed("cgroup", &path, parse::parse_cgroups(&bytes)) {
            self.p.cgroups = groups;
            self.p.container_id = self.p.container_cgroup().and_then(|c| crate::cgroup::mounts::container_id(&c.path));
        }
    }

    fn fds(&mut self) {
        if self.p.exited_mid_read {
            return;
        }
        let open = count_fds(self.dir, self.path, self.is_procfs);
        let limit = self
            .file("limits", "fds.limit")
            .and_then(|(path, bytes)| self.parsed("fds.limit", &path, parse::parse_nofile(&bytes)));
        match open {
            Ok(n) => self.p.fds = FdUsage { open: Some(n), limit },
            Err(e) => {
                self.fail("fds.open", &e);
                self.p.fds = FdUsage { open: None, limit };
            }
        }
    }

    fn smaps_rollup(&mut self) {
        let Some((path, bytes)) = self.file("smaps_rollup", "memory.pss_bytes") else {
            return;
        };
        if bytes.is_empty() {
            // A process that is exiting has no mm any more: the file reads empty.
            self.p.exited_mid_read = true;
            self.p.unavailable.push(Unavailable::new("memory.pss_bytes", "the process exited while it was being read"));
            return;
        }
        let Some(r) = self.parsed("memory.pss_bytes", &path, parse::parse_smaps_rollup(&bytes)) else {
            return;
        };
        let m = &mut self.p.memory;
        (m.pss_bytes, m.pss_anon_bytes, m.pss_file_bytes, m.pss_shmem_bytes) =
            (r.pss, r.pss_anon, r.pss_file, r.pss_shmem);
        (m.uss_bytes, m.swap_pss_bytes) = (r.uss, r.swap_pss);
    }
}

/// Open fds: since Linux 6.2 `stat()` of /proc/PID/fd reports the count as its
/// size (and needs no ptrace access); older kernels report 0 and the directory is
/// counted.
fn count_fds(dir: &OwnedFd, path: &Path, is_procfs: bool) -> Result<u64, ReadError> {
    let err = |e: rustix::io::Errno| ReadError::from_io(path.join("fd"), e.into());
    if is_procfs {
        let st = rustix::fs::statat(dir, "fd", rustix::fs::AtFlags::empty()).map_err(err)?;
        if st.st_size > 0 {
            return Ok(st.st_size as u64);
        }
    }
    let fd_dir = rustix::fs::openat(dir, "fd", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(err)?;
    let entries = rustix::fs::Dir::read_from(&fd_dir).map_err(err)?;
    let names = entries.filter_map(Result::ok);
    Ok(names.filter(|e| e.file_name().to_bytes().first().is_some_and(u8::is_ascii_digit)).count() as u64)
}

/// How much of a command line the agent keeps (argv bytes, NULs not counted).
pub const MAX_CMDLINE_BYTES: usize = 4096;
/// How much of it is read for redaction before that cut.
const CMDLINE_READ_BYTES: usize = 64 * 1024;

/// Keeps the first `max` bytes of `args` (the last kept argument cut short);
/// returns whether anything was cut.
fn truncate_args(args: &mut Vec<Vec<u8>>, max: usize) -> bool {
    let mut left = max;
    for (i, a) in args.iter_mut().enumerate() {
        if a.len() > left {
            a.truncate(left);
            args.truncate(i + 1);
            return true;
        }
        left -= a.len();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `sleep 30` that has finished exec'ing (its cmdline is set).
    fn sleeper() -> std::process::Child {
        let child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        while std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default() != b"sleep\x0030\x00" {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child
    }

    #[test]
    fn a_megabyte_of_argv_is_cut_to_the_cap_and_marked() {
        let big: Vec<String> = (0..16).map(|i| format!("--opt{i}={}", "x".repeat(64 * 1024))).collect();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read x", "sh"])
            .args(&big)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let path = format!("/proc/{}/cmdline", child.id());
        while std::fs::read(&path).unwrap_or_default().len() < 1 << 20 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let p = ProcReader::new("/proc").read(child.id() as i32).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let kept: usize = p.cmdline.iter().map(Vec::len).sum();
        assert_eq!(kept, MAX_CMDLINE_BYTES);
        assert!(p.cmdline_truncated);
        assert_eq!(&p.cmdline[..3], [&b"sh"[..], b"-c", b"read x"]);
        let small = ProcReader::new("/proc").read(std::process::id() as i32).unwrap();
        assert!(!small.cmdline_truncated);
    }

    #[test]
    fn args_are_cut_at_the_byte_cap() {
        let mut args = vec![b"ab".to_vec(), b"cdef".to_vec(), b"g".to_vec()];
        assert!(!truncate_args(&mut args.clone(), 7));
        assert!(truncate_args(&mut args, 4));
        assert_eq!(args, [&b"ab"[..], b"cd"]);
    }

    #[test]
    fn a_process_that_exits_between_reads_is_marked_and_keeps_what_was_read() {
        let mut child = sleeper();
        let path = PathBuf::from(format!("/proc/{}", child.id()));
        let dir = open_dir(&path).unwrap();
        let mut p = Process { pid: child.id() as i32, comm: b"sleep".to_vec(), ..Default::default() };
        let mut r = Reading { dir: &dir, path: &path, p: &mut p, is_procfs: true, denied_hint: denied_hint(true) };
        r.cmdline();
        child.kill().unwrap();
        child.wait().unwrap();
        r.status();
        r.smaps_rollup();
        assert_eq!(p.cmdline, [&b"sleep"[..], b"30"]);
        assert!(p.exited_mid_read);
        assert_eq!(p.unavailable.len(), 1, "reading stops at the first sign of exit: {:?}", p.unavailable);
        assert_eq!(p.unavailable[0].reason, "the process exited while it was being read");
    }

    #[test]
    fn a_reused_pid_is_not_read_through_an_old_handle() {
        let mut child = sleeper();
        let path = PathBuf::from(format!("/proc/{}", child.id()));
        let dir = open_dir(&path).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(read_file_at(&dir, &path, "stat").unwrap_err().is_gone());
    }
}
