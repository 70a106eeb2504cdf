//! cgroup v1 memory notifications (Documentation/admin-guide/cgroup-v1/memory.rst,
//! "Memory thresholds" and "OOM Control"): an eventfd is registered by writing
//! "<event_fd> <fd of memory.usage_in_bytes> <threshold>" (or "<event_fd> <fd of
//! memory.oom_control>") to `cgroup.event_control`; the kernel then signals it when
//! usage crosses the threshold, either way, and when the cgroup hits OOM.

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// The eventfds of one cgroup, and the files they watch (kept open, as the
/// kernel requires).
#[derive(Debug)]
pub struct V1Events {
    eventfds: Vec<OwnedFd>,
    _watched: Vec<File>,
}

impl V1Events {
    /// Registers a threshold eventfd per value of `usage_thresholds` and one for OOM.
    pub fn register(dir: &Path, usage_thresholds: &[u64]) -> std::io::Result<Self> {
        let mut control = OpenOptions::new().write(true).open(dir.join("cgroup.event_control"))?;
        let mut eventfds = Vec::new();
        let mut watched = Vec::new();
        for &threshold in usage_thresholds {
            let usage = File::open(dir.join("memory.usage_in_bytes"))?;
            let efd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
            writeln!(control, "{} {} {threshold}", efd.as_raw_fd(), usage.as_raw_fd())?;
            eventfds.push(efd);
            watched.push(usage);
        }
        let oom = File::open(dir.join("memory.oom_control"))?;
        let efd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        writeln!(control, "{} {}", efd.as_raw_fd(), oom.as_raw_fd())?;
        eventfds.push(efd);
        watched.push(oom);
        Ok(Self { eventfds, _watched: watched })
    }

    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.eventfds.iter().map(|f| f.as_fd())
    }

    /// Resets the eventfds; returns whether any had fired.
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 8];
        let mut fired = false;
        for fd in &self.eventfds {
            fired |= rustix::io::read(fd, &mut buf).is_ok_and(|n| n == 8);
        }
        fired
    }
}

/// Waits up to `timeout`, returning early if any of `fds` becomes readable.
pub fn wait(fds: &[BorrowedFd<'_>], timeout: Duration) {
    if fds.is_empty() {
        std::thread::sleep(timeout);
        return;
    }
    let mut polls: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, PollFlags::IN)).collect();
    let ts = rustix::time::Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: i64::from(timeout.subsec_nanos()) };
    let _ = rustix::event::poll(&mut polls, Some(&ts));
}
