//! A watched cgroup's poll files, opened once through its held directory and
//! re-read with one `pread` at offset 0 each poll. cgroupfs files are seq_files: a
//! read from offset 0 regenerates them, and a read fills the buffer unless it
//! reaches the end, so a short read is the whole file. One syscall a file instead
//! of four (openat, read, the read that sees EOF, close): measured here 1.6 µs
//! against 8 µs for `memory.usage_in_bytes`. A removed cgroup's files read ENODEV.

use crate::error::read_file_at;
use crate::model::CgroupVersion;
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::io;
use std::path::Path;

#[derive(Debug)]
pub struct HeldFile(OwnedFd);

impl HeldFile {
    pub fn open(dir: &OwnedFd, name: &str) -> io::Result<Self> {
        Ok(Self(rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?))
    }

    pub fn read(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        let mut len = 0;
        loop {
            match rustix::io::pread(&self.0, &mut buf[len..], len as u64) {
                Ok(n) => len += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            if len < buf.len() {
                break;
            }
            buf.resize(buf.len() * 2, 0);
        }
        buf.truncate(len);
        Ok(buf)
    }
}

/// The files one poll reads, by cgroup version.
#[derive(Debug)]
pub struct PollFiles {
    /// The cgroup's directory (an O_PATH fd): what a rename or a new cgroup at the
    /// same path cannot swap under us.
    pub dir: OwnedFd,
    pub version: CgroupVersion,
    /// memory.usage_in_bytes (v1), memory.current (v2).
    pub usage: HeldFile,
    pub stat: HeldFile,
    /// memory.oom_control (v1), memory.events (v2): the OOM-kill counter.
    pub oom: Option<HeldFile>,
    /// memory.limit_in_bytes (v1), memory.max (v2): a change means a resize.
    pub limit: Option<HeldFile>,
    /// memory.pressure (v2 only: v1 has no per-cgroup PSI).
    pub pressure: Option<HeldFile>,
}

impl PollFiles {
    pub fn open(dir: OwnedFd, version: CgroupVersion) -> io::Result<Self> {
        let (usage, oom, limit) = match version {
            CgroupVersion::V1 => ("memory.usage_in_bytes", "memory.oom_control", "memory.limit_in_bytes"),
            CgroupVersion::V2 => ("memory.current", "memory.events", "memory.max"),
        };
        Ok(Self {
            version,
            usage: HeldFile::open(&dir, usage)?,
            stat: HeldFile::open(&dir, "memory.stat")?,
            oom: HeldFile::open(&dir, oom).ok(),
            limit: HeldFile::open(&dir, limit).ok(),
            pressure: match version {
                CgroupVersion::V1 => None,
                CgroupVersion::V2 => HeldFile::open(&dir, "memory.pressure").ok(),
            },
            dir,
        })
    }

    /// The cgroup's processes (pids in the agent's namespace); `None` once removed.
    /// Opened afresh each time: unlike the memory files, a held cgroup.procs keeps
    /// the list its first read built (it is a pidlist cached per open file).
    pub fn pids(&self) -> Option<Vec<i32>> {
        let bytes = read_file_at(&self.dir, Path::new("cgroup"), "cgroup.procs").ok()?;
        Some(String::from_utf8_lossy(&bytes).lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// `some avg10` of memory.pressure, in percent.
    pub fn pressure_some_avg10(&self) -> Option<f64> {
        let bytes = self.pressure.as_ref()?.read().ok()?;
        let text = String::from_utf8_lossy(&bytes);
        let some = text.lines().find(|l| l.starts_with("some "))?;
        some.split_whitespace().find_map(|f| f.strip_prefix("avg10="))?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::open_dir;

    #[test]
    fn a_held_file_rereads_from_the_start_and_grows_past_its_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.stat");
        std::fs::write(&path, "anon 1\n").unwrap();
        let d = open_dir(dir.path()).unwrap();
        let f = HeldFile::open(&d, "memory.stat").unwrap();
        assert_eq!(f.read().unwrap(), b"anon 1\n");
        let big = "x".repeat(10_000);
        std::fs::write(&path, &big).unwrap();
        assert_eq!(f.read().unwrap(), big.as_bytes());
    }

    #[test]
    fn v2_pressure_is_read_from_its_some_line() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("memory.current", "1\n"),
            ("memory.stat", "anon 1\n"),
            ("cgroup.procs", "7\n9\n"),
            (
                "memory.pressure",
                "some avg10=12.50 avg60=3.00 avg300=0.50 total=123\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=9\n",
            ),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let files = PollFiles::open(open_dir(dir.path()).unwrap(), CgroupVersion::V2).unwrap();
        assert_eq!(files.pressure_some_avg10(), Some(12.5));
        assert_eq!(files.pids(), Some(vec![7, 9]));
        assert!(files.oom.is_none() && files.limit.is_none(), "absent files are optional");
    }

    /// The kernel's side of the bargain: a cgroupfs file held open re-reads fresh
    /// values, and reads ENODEV once the cgroup is removed.
    #[test]
    fn a_real_cgroup_file_rereads_and_fails_once_removed() {
        let v1 = std::path::Path::new("/sys/fs/cgroup/memory");
        if !rustix::process::geteuid().is_root() || !v1.join("memory.usage_in_bytes").exists() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root on a v1 memory hierarchy");
            eprintln!("skipped: needs root and the v1 memory hierarchy");
            return;
        }
        let path = v1.join(format!("osl-held-{}", std::process::id()));
        std::fs::create_dir(&path).unwrap();
        let files = PollFiles::open(open_dir(&path).unwrap(), CgroupVersion::V1).unwrap();
        let limit = files.limit.as_ref().unwrap();
        assert_ne!(limit.read().unwrap(), b"67108864\n");
        std::fs::write(path.join("memory.limit_in_bytes"), "64M").unwrap();
        assert_eq!(limit.read().unwrap(), b"67108864\n", "the held fd reads the kernel's new value");
        assert_eq!(files.pids(), Some(vec![]));
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(path.join("cgroup.procs"), child.id().to_string()).unwrap();
        assert_eq!(files.pids(), Some(vec![child.id() as i32]));
        child.kill().unwrap();
        child.wait().unwrap();
        for _ in 0..100 {
            if std::fs::remove_dir(&path).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(files.pids(), None, "a removed cgroup's file reads ENODEV");
        assert_eq!(files.usage.read().unwrap_err().raw_os_error(), Some(rustix::io::Errno::NODEV.raw_os_error()));
    }
}
