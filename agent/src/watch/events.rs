//! Kernel notifications that wake the watcher between polls.
//!
//! cgroup v1 (Documentation/admin-guide/cgroup-v1/memory.rst, "Memory thresholds"
//! and "OOM Control"): an eventfd is registered by writing "<event_fd> <fd of
//! memory.usage_in_bytes> <threshold>" (or "<event_fd> <fd of memory.oom_control>")
//! to `cgroup.event_control`; the kernel signals it when usage crosses the
//! threshold, either way, and when the cgroup hits OOM.
//!
//! cgroup v2 (Documentation/accounting/psi.rst, cgroup-v2.rst): a PSI trigger
//! ("some 200000 2000000": 200 ms of stall in a 2 s window) written to the
//! cgroup's `memory.pressure`, kept open, raises POLLPRI; `memory.events` raises
//! POLLPRI when a counter (high, max, oom, oom_kill) changes, until it is re-read.

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
            // One write() per command: the kernel parses each write as a whole line.
            control.write_all(format!("{} {} {threshold}", efd.as_raw_fd(), usage.as_raw_fd()).as_bytes())?;
            eventfds.push(efd);
            watched.push(usage);
        }
        let oom = File::open(dir.join("memory.oom_control"))?;
        let efd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        control.write_all(format!("{} {}", efd.as_raw_fd(), oom.as_raw_fd()).as_bytes())?;
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

/// The v2 notifications of one cgroup: `memory.events` always, and a PSI trigger
/// on `memory.pressure` when the kernel accepts one.
#[derive(Debug)]
pub struct V2Events {
    events: Option<File>,
    pressure: Option<File>,
}

impl V2Events {
    /// `psi_trigger` is "some|full <stall usec> <window usec>". Fails only if
    /// neither notification can be had.
    pub fn register(dir: &Path, psi_trigger: &str) -> std::io::Result<Self> {
        let events = File::open(dir.join("memory.events"));
        let pressure = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("memory.pressure"))
            .and_then(|mut f| f.write_all(psi_trigger.as_bytes()).map(|()| f));
        match (events, pressure) {
            (Err(e), Err(_)) => Err(e),
            (events, pressure) => Ok(Self { events: events.ok(), pressure: pressure.ok() }),
        }
    }

    pub fn has_psi_trigger(&self) -> bool {
        self.pressure.is_some()
    }

    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.events.iter().chain(self.pressure.iter()).map(AsFd::as_fd)
    }

    /// Re-reads memory.events (which re-arms its POLLPRI); returns whether anything
    /// had fired.
    pub fn drain(&self) -> bool {
        let fired = {
            let mut polls: Vec<PollFd<'_>> =
                self.fds().map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::PRI)).collect();
            let zero = rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 };
            rustix::event::poll(&mut polls, Some(&zero)).is_ok_and(|n| n > 0)
        };
        if let Some(events) = &self.events {
            let mut buf = [0u8; 512];
            let _ = rustix::io::pread(events, &mut buf, 0);
        }
        fired
    }
}

/// Waits for readable v1 eventfds or v2 files raising POLLPRI, up to `timeout`;
/// returns whether any did.
pub fn wait_all(v1: &[BorrowedFd<'_>], v2: &[BorrowedFd<'_>], timeout: Duration) -> bool {
    if v1.is_empty() && v2.is_empty() {
        std::thread::sleep(timeout);
        return false;
    }
    let mut polls: Vec<PollFd<'_>> = v1
        .iter()
        .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
        .chain(v2.iter().map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::PRI)))
        .collect();
    let ts = rustix::time::Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: i64::from(timeout.subsec_nanos()) };
    rustix::event::poll(&mut polls, Some(&ts)).is_ok_and(|n| n > 0)
}

/// A container's kernel notifications, by cgroup version.
#[derive(Debug)]
pub enum Events {
    V1(V1Events),
    V2(V2Events),
}

impl Events {
    /// Resets them; returns whether any had fired.
    pub fn drain(&self) -> bool {
        match self {
            Self::V1(e) => e.drain(),
            Self::V2(e) => e.drain(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_registration_writes_the_psi_trigger() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.events"), "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n").unwrap();
        std::fs::write(dir.path().join("memory.pressure"), "").unwrap();
        let e = V2Events::register(dir.path(), "some 150000 1000000").unwrap();
        assert!(e.has_psi_trigger());
        assert_eq!(std::fs::read_to_string(dir.path().join("memory.pressure")).unwrap(), "some 150000 1000000");
        assert_eq!(e.fds().count(), 2);
        assert!(!e.drain(), "a plain file never raises POLLPRI");
        assert!(V2Events::register(&dir.path().join("missing"), "some 1 1").is_err());
    }

    /// The real kernel (root, the v2 hierarchy): it accepts osl's trigger and
    /// rejects a malformed one; no pressure, no wake-up. (Making the kernel fire
    /// the trigger needs real memory stalls: covered by real clusters only.)
    #[test]
    fn the_kernel_accepts_the_psi_trigger() {
        let unified = Path::new("/sys/fs/cgroup/unified");
        if !rustix::process::geteuid().is_root() || !unified.join("cgroup.procs").exists() {
            assert!(std::env::var("CI").is_err(), "CI is root with a v2 hierarchy and must run this");
            eprintln!("SKIPPED the_kernel_accepts_the_psi_trigger: needs root and /sys/fs/cgroup/unified");
            return;
        }
        let dir = unified.join(format!("osl-psi-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        // Removed also when an assertion fails (declared first: dropped after the fds).
        struct RemoveDir<'a>(&'a Path);
        impl Drop for RemoveDir<'_> {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(self.0);
            }
        }
        let _cleanup = RemoveDir(&dir);
        let ok = V2Events::register(&dir, "some 200000 2000000").unwrap();
        assert!(ok.has_psi_trigger());
        let bad = V2Events::register(&dir, "bogus");
        assert!(bad.as_ref().map_or(true, |b| !b.has_psi_trigger()), "the kernel validates triggers");
        let fds: Vec<_> = ok.fds().collect();
        let start = std::time::Instant::now();
        wait_all(&[], &fds, Duration::from_millis(200));
        assert!(start.elapsed() >= Duration::from_millis(190), "no stall, no wake-up");
        assert!(!ok.drain());
        drop((ok, bad));
        std::fs::remove_dir(&dir).unwrap();
    }
}
