//! Helpers: spawning osl-testproc children, privilege checks, tolerances.

use osl_agent::snapshot::{Collector, Roots};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub const MIB: u64 = 1024 * 1024;

/// A running osl-testproc; killed (with its forked children) when dropped.
pub struct TestProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub pid: i32,
    /// Pids the child announced (its forked children).
    pub announced: Vec<i32>,
}

impl TestProc {
    pub fn spawn(args: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_osl-testproc"));
        cmd.args(args);
        Self::start(cmd)
    }

    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn osl-testproc");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read ready line");
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("ready"), "osl-testproc said {line:?}");
        let announced = words.map(|w| w.parse().unwrap()).collect();
        let pid = child.id() as i32;
        wait_until_sleeping(pid);
        Self { child, stdin, stdout, pid, announced }
    }

    /// Sends a command line and returns the reply, or None if the child died.
    pub fn send(&mut self, line: &str) -> Option<String> {
        let stdin = self.stdin.as_mut()?;
        writeln!(stdin, "{line}").ok()?;
        let mut reply = String::new();
        match self.stdout.read_line(&mut reply) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                wait_until_sleeping(self.pid);
                Some(reply.trim().to_string())
            }
        }
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.stdin.take();
        self.child.wait().expect("wait")
    }
}

impl Drop for TestProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// After `ready` the child still sets up its stdin buffer: wait until it sleeps
/// in read(2), so its memory no longer changes.
pub fn wait_until_sleeping(pid: i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
        if state == Some("S") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!("pid {pid} did not go to sleep within 5 s");
}

pub fn collector() -> Collector {
    Collector::new(&Roots::default(), true)
}

/// Root-only tests run for sure under CI (which is root) and skip elsewhere
/// with a printed reason.
pub fn privileged(test: &str) -> bool {
    osl_agent::testing::privileged(test, "cgroup v1 memory limits")
}

/// `actual` within `pct` percent of `expected`.
pub fn assert_within(actual: u64, expected: u64, pct: f64, what: &str) {
    let diff = (actual as f64 - expected as f64).abs() / expected as f64 * 100.0;
    assert!(
        diff <= pct,
        "{what}: {actual} bytes ({:.1} MiB) is {diff:.1}% off {expected} ({:.1} MiB), more than {pct}%",
        actual as f64 / MIB as f64,
        expected as f64 / MIB as f64
    );
}

/// A `Key:  N kB` line of /proc/PID/status, read independently of osl.
pub fn status_kb(pid: i32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A fake root (`proc/`, `sys/`…) in a temp dir, filled with literal kernel text.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file, creating its directories.
    pub fn file(&self, rel: &str, content: impl AsRef<[u8]>) -> &Self {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self
    }

    /// A process as the kernel shows it, with `fds` entries under fd/.
    pub fn process(&self, pid: i32, comm: &str, cgroup: &str, fds: usize) -> &Self {
        let p = format!("proc/{pid}");
        self.file(
            &format!("{p}/stat"),
            format!(
                "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 1500 0 2 0 250 50 0 0 20 0 4 0 12345 268435456 60000 \
             18446744073709551615 1 1 0 0 0 0 0 4096 17922 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
            ),
        );
        self.file(&format!("{p}/status"), status_text(pid, comm));
        self.file(&format!("{p}/cmdline"), format!("/usr/bin/{comm}\0--password=hunter2\0"));
        self.file(&format!("{p}/cgroup"), cgroup);
        self.file(&format!("{p}/limits"), LIMITS);
        self.file(&format!("{p}/smaps_rollup"), SMAPS_ROLLUP);
        self.file(&format!("{p}/statm"), "65536 58500 1000 500 0 57750 0\n");
        self.file(&format!("{p}/oom_score"), "667\n");
        self.file(&format!("{p}/oom_score_adj"), "0\n");
        std::fs::create_dir_all(self.path(&format!("{p}/fd"))).unwrap();
        for fd in 0..fds {
            std::os::unix::fs::symlink("/dev/null", self.path(&format!("{p}/fd/{fd}"))).unwrap();
            self.file(&format!("{p}/fdinfo/{fd}"), "pos:\t0\nflags:\t0100002\nmnt_id:\t24\nino:\t5\n");
        }
        self
    }
}

pub fn status_text(pid: i32, comm: &str) -> String {
    format!(
        "Name:\t{comm}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\nNgid:\t0\nPid:\t{pid}\nPPid:\t1\nTracerPid:\t0\n\
Uid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nFDSize:\t64\nGroups:\t \nNStgid:\t{pid}\nNSpid:\t{pid}\n\
NSpgid:\t{pid}\nNSsid:\t{pid}\nKthread:\t0\nVmPeak:\t  262144 kB\nVmSize:\t  262144 kB\nVmLck:\t       0 kB\n\
VmPin:\t       0 kB\nVmHWM:\t  240000 kB\nVmRSS:\t  234000 kB\nRssAnon:\t  230000 kB\nRssFile:\t    4000 kB\n\
RssShmem:\t       0 kB\nVmData:\t  231000 kB\nVmStk:\t     132 kB\nVmExe:\t    2000 kB\nVmLib:\t    1500 kB\n\
VmPTE:\t     500 kB\nVmSwap:\t       0 kB\nHugetlbPages:\t       0 kB\nCoreDumping:\t0\nTHP_enabled:\t1\n\
Threads:\t4\nSigQ:\t0/96364\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\t0000000000000000\n\
SigIgn:\t0000000000001000\nSigCgt:\t0000000180004002\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
CapEff:\t0000000000000000\nCapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n\
Seccomp_filters:\t1\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\nvoluntary_ctxt_switches:\t420\n\
nonvoluntary_ctxt_switches:\t17\n"
    )
}

pub const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 1048576              files     \n";

pub const SMAPS_ROLLUP: &str = "55c1e0a00000-7ffd3c5fe000 ---p 00000000 00:00 0                          [rollup]\n\
Rss:              234000 kB\nPss:              232000 kB\nPss_Dirty:        230000 kB\nPss_Anon:         230000 kB\n\
Pss_File:           2000 kB\nPss_Shmem:             0 kB\nShared_Clean:       4000 kB\nShared_Dirty:          0 kB\n\
Private_Clean:         0 kB\nPrivate_Dirty:    230000 kB\nReferenced:       234000 kB\nAnonymous:        230000 kB\n\
KSM:                   0 kB\nLazyFree:              0 kB\nAnonHugePages:         0 kB\nShmemPmdMapped:        0 kB\n\
FilePmdMapped:         0 kB\nShared_Hugetlb:        0 kB\nPrivate_Hugetlb:       0 kB\nSwap:                  0 kB\n\
SwapPss:               0 kB\nLocked:                0 kB\n";

const V1_MEMORY: &str = "/sys/fs/cgroup/memory";

/// A cgroup v1 memory cgroup made for one test; its processes are killed and it is removed on drop.
pub struct V1Cgroup {
    pub dir: PathBuf,
}

impl V1Cgroup {
    pub fn create(name: &str, limit_bytes: u64) -> Self {
        let dir = Path::new(V1_MEMORY).join(format!("osl-test-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        std::fs::write(dir.join("memory.limit_in_bytes"), limit_bytes.to_string()).unwrap();
        Self { dir }
    }

    pub fn add(&self, pid: i32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap()
    }

    pub fn stat(&self, key: &str) -> u64 {
        let stat = self.read("memory.stat");
        let line = stat.lines().find(|l| l.split_whitespace().next() == Some(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// The kernel's own working set, as kubelet computes it from these files.
    pub fn kernel_working_set(&self) -> u64 {
        let usage: u64 = self.read("memory.usage_in_bytes").trim().parse().unwrap();
        usage.saturating_sub(self.stat("total_inactive_file"))
    }

    pub fn path(&self) -> String {
        format!("/{}", self.dir.file_name().unwrap().to_str().unwrap())
    }
}

impl Drop for V1Cgroup {
    fn drop(&mut self) {
        for pid in
            self.read("cgroup.procs").lines().filter_map(|l| l.parse().ok()).filter_map(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
