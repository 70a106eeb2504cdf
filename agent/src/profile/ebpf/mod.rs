//! In-kernel syscall counting (like `strace -c -w`, by fd, with latency histograms) with
//! hand-assembled eBPF programs.
//!
//! No clang, no libbpf, no kernel headers: small raw-tracepoint programs are assembled
//! instruction by instruction ([`asm`], [`programs`]) and loaded with the raw `bpf(2)`
//! syscall ([`sys`]).
//!
//! # Why this module uses `unsafe`
//!
//! `bpf(2)` has no safe wrapper in `libc`: every command passes a pointer to a prefix of the
//! kernel's `union bpf_attr`, and many of those attrs carry further user pointers (map keys and
//! values, the instruction array, the license string, the verifier log buffer, the tracepoint
//! name) that the kernel reads or writes. The unsafe code is confined to `sys.rs`; its safe
//! wrappers check buffer sizes against the map's key and value sizes, so nothing outside
//! that file can pass a dangling or short buffer. Each `unsafe` block has a `// SAFETY:`
//! comment. The workspace denies `unsafe_code`; this module allows it for `sys` alone.
//!
//! # What the programs do
//!
//! Three raw-tracepoint programs (`BPF_PROG_TYPE_RAW_TRACEPOINT`, license GPL):
//!
//! * `sys_enter` (ctx = `u64 args[]`: `args[0]` = `struct pt_regs *`, `args[1]` = nr). A
//!   thread is identified by a cheap key (see `ThreadKey`: its `pt_regs` address, else its
//!   `task_struct` address). Its first syscall classifies it: `bpf_get_ns_current_pid_tgid`
//!   with the agent's pid namespace, then a lookup of the namespaced tgid in `targets`. A
//!   target gets an entry `{tid, tgid, enter_ns, nr}` in `threads`; a non-target is remembered
//!   in the LRU map `others` with the filter generation (bumped by `add_tgids`, which makes
//!   cached non-targets be checked again). After that, a syscall costs one inlined hash lookup,
//!   plus `bpf_ktime_get_ns` and two stores for a target. `exit`/`exit_group` never return,
//!   so they are skipped (strace -c does not count them either).
//! * `sys_exit` (`args[1]` = return value): for a target thread with a recorded enter, add one
//!   call, its duration and its log2 latency bucket to `stats[{tid, nr, fd, epoch}]`. `fd` is
//!   the first argument (read from the saved `pt_regs`, which a syscall leaves as it found
//!   them) of syscalls that take one (`fd_syscalls`, filled from [`crate::profile::names`]),
//!   else -1; `epoch` counts that fd's successful closes (and dup2/dup3 onto it) so far, so a
//!   reused fd number is another entry. The first call of an entry with an fd puts
//!   `{tgid, fd, epoch}` in `fresh`, for userspace to name the fd while it is open. A return in
//!   -4095..=-1 also counts an error there and in `errnos[{nr, errno}]`. A call slower than
//!   `threshold` is written to the ring `slow`; userspace drains it every 50 ms and raises
//!   `threshold` to the N-th slowest call seen, so after the first moments only the
//!   slowest calls are written. A failed insert (map full) counts in `ctl.lost`.
//! * `sched_process_exit`: deletes the exiting task from `threads` and `others`, so a new task
//!   that reuses its key starts unclassified, and the maps hold live threads only.
//!
//! Counts are exact with many threads on many CPUs: every counter is updated with
//! `BPF_ATOMIC | BPF_ADD`. Only `min_ns`/`max_ns` are best effort (a plain compare-and-store;
//! racing needs two syscalls of the same thread at once, i.e. never in practice), and the
//! slow ring may overwrite a record before it is drained (counted in `slowest_missed`).
//!
//! # Kernel behaviour worth knowing
//!
//! * `bpf_get_ns_current_pid_tgid` only succeeds when the *current task's own* pid namespace is
//!   the given one: a task in a child pid namespace (e.g. a container seen from the host pid
//!   namespace) is not matched through an ancestor namespace. Pass the namespace the target
//!   processes live in and their pids as numbered there.
//! * The helper compares the device against the kernel-internal `dev_t` (`major << 20 | minor`),
//!   while `stat(2)` reports the userspace encoding; [`Counter::attach`] converts.
//! * Syscalls already in flight at attach time (or when a tgid is added) are not counted; nor
//!   is the return of `clone`/`fork` in the child (strace -f counts it in the parent only).
//! * Syscall numbers are the x86_64 ones (`args[1]`), and so are the `pt_regs` offsets of the
//!   arguments; a 32-bit compat syscall reports its i386 number.
//! * Overhead: attaching anything to `sys_enter`/`sys_exit` sends every syscall on the machine
//!   through the tracing slow path. For non-target threads the programs cost one or two
//!   inlined hash lookups per syscall after the first.
//! * Map memory is charged to the agent's memory cgroup: the big hash maps are created with
//!   `BPF_F_NO_PREALLOC`, so they cost what they hold.

mod asm;
mod programs;
#[allow(unsafe_code)] // the bpf() syscall: see above
mod sys;

use super::counts::{Counts, ErrnoCount, SlowCall, Slowest, SyscallCount};
use asm::BPF_ANY;
use programs::*;
use std::collections::BTreeMap;
use std::io;
#[cfg(test)]
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
pub use sys::BpfError;
use sys::{BPF_F_NO_PREALLOC, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, Map, bpf_err};

pub use sys::{Refused, try_attach};

/// (st_dev, st_ino) of `/proc/self/ns/pid`: the pid namespace this process sees pids in.
pub fn pidns_of_self() -> io::Result<(u64, u64)> {
    let md = std::fs::metadata("/proc/self/ns/pid")?;
    Ok((md.dev(), md.ino()))
}

/// Converts a userspace `st_dev` (glibc encoding) to the kernel-internal `dev_t`
/// (`major << 20 | minor`) that `bpf_get_ns_current_pid_tgid` compares against.
fn kernel_dev(st_dev: u64) -> u64 {
    let major = ((st_dev >> 8) & 0xfff) | ((st_dev >> 32) & !0xfff);
    let minor = (st_dev & 0xff) | ((st_dev >> 12) & !0xff);
    (major << 20) | minor
}

/// An attached syscall counter. Dropping it detaches the programs and frees the maps.
pub struct Counter {
    /// Raw tracepoint links (sched_process_exit, sys_exit, sys_enter); closing them detaches.
    links: Vec<OwnedFd>,
    progs: Vec<OwnedFd>,
    targets: Map,
    generation: Map,
    #[cfg_attr(not(test), allow(dead_code))] // inspected by the tests
    threads: Map,
    stats: Map,
    errnos: Map,
    epochs: Map,
    fd_epochs: Map,
    /// Each target's epoch slot (see `programs`), by tgid; the number of slots given out.
    slots: Mutex<(std::collections::HashMap<u32, u32>, u32)>,
    fresh: Map,
    ctl: Map,
    threshold: Map,
    slow: Map,
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) at attach, in ns.
    started_ns: u64,
    /// One call in this many is timed.
    sample: u32,
    drained: Mutex<Drained>,
}

/// What userspace has taken from the slow ring so far.
struct Drained {
    cursor: u64,
    slowest: Slowest,
    missed: u64,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A sampled total, scaled to all the calls: the timed calls' mean times the calls (0 when
/// none was timed).
fn scaled(total: u64, calls: u64, timed: u64) -> u64 {
    if timed == 0 { 0 } else { (u128::from(total) * u128::from(calls) / u128::from(timed)) as u64 }
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Counter {
    /// Counts syscalls of every thread whose thread-group id, numbered in the pid namespace `pidns`
    /// (the (st_dev, st_ino) of e.g. /proc/self/ns/pid — the agent sees namespaced pids), is in `tgids`.
    /// `sample` (a power of two, at most 64): time one syscall in `sample` of each thread and
    /// scale the times; counts stay exact.
    pub fn attach(pidns: (u64, u64), tgids: &[u32], sample: u32) -> Result<Counter, BpfError> {
        Counter::attach_with(ThreadKey::Regs, pidns, tgids, sample).or_else(|e| match e {
            BpfError::PermissionDenied(_) => Err(e),
            _ => Counter::attach_with(ThreadKey::Task, pidns, tgids, sample), // e.g. no kernel BTF
        })
    }

    fn attach_with(key: ThreadKey, pidns: (u64, u64), tgids: &[u32], sample: u32) -> Result<Counter, BpfError> {
        if !cfg!(target_arch = "x86_64") {
            // The programs read syscall arguments at x86_64's pt_regs offsets.
            return Err(BpfError::PermissionDenied(format!(
                "the ebpf backend reads x86_64 registers; this agent is built for {}",
                std::env::consts::ARCH
            )));
        }
        let pidns = (kernel_dev(pidns.0), pidns.1);
        let hash =
            |name, key, value, max| Map::create_with(name, BPF_MAP_TYPE_HASH, key, value, max, BPF_F_NO_PREALLOC);
        let targets = Map::create("osl_targets", BPF_MAP_TYPE_HASH, 4, 4, TARGETS_MAX)?;
        let generation = Map::create("osl_generation", BPF_MAP_TYPE_ARRAY, 4, 4, 1)?;
        let threads = hash("osl_threads", 8, THREADS_VALUE, THREADS_MAX)?;
        let others = Map::create("osl_others", BPF_MAP_TYPE_LRU_HASH, 8, 4, OTHERS_MAX)?;
        let stats = hash("osl_stats", STATS_KEY, STATS_VALUE, STATS_MAX)?;
        let errnos = hash("osl_errnos", 8, 8, ERRNOS_MAX)?;
        let fd_syscalls = Map::create("osl_fd_syscalls", BPF_MAP_TYPE_ARRAY, 4, 4, NR_MAX)?;
        let epochs = hash("osl_epochs", 8, 4, EPOCHS_MAX)?;
        let fd_epochs = Map::create("osl_fd_epochs", BPF_MAP_TYPE_ARRAY, 4, 4, EPOCH_SLOTS * EPOCH_FDS)?;
        let fresh = hash("osl_fresh", FRESH_KEY, 4, FRESH_MAX)?;
        let ctl = Map::create("osl_ctl", BPF_MAP_TYPE_ARRAY, 4, CTL_VALUE, 1)?;
        let threshold = Map::create("osl_threshold", BPF_MAP_TYPE_ARRAY, 4, 8, 1)?;
        let slow = Map::create("osl_slow", BPF_MAP_TYPE_ARRAY, 4, SLOW_VALUE, SLOW_SLOTS)?;
        let mut flags = vec![0u32; NR_MAX as usize];
        for nr in super::names::fd_first_numbers() {
            flags[nr as usize] |= FD_ARG0 as u32;
        }
        for nr in 0..NR_MAX {
            match super::names::ends_fd(nr) {
                Some(0) => flags[nr as usize] |= ENDS_ARG0 as u32,
                Some(_) => flags[nr as usize] |= ENDS_ARG1 as u32,
                None => {}
            }
        }
        for (nr, f) in flags.iter().enumerate().filter(|(_, f)| **f != 0) {
            fd_syscalls
                .update(&(nr as u32).to_ne_bytes(), &f.to_ne_bytes(), BPF_ANY)
                .map_err(|e| bpf_err("filling the BPF fd syscall table", e))?;
        }
        let fds = MapFds {
            targets: targets.raw(),
            generation: generation.raw(),
            threads: threads.raw(),
            others: others.raw(),
            stats: stats.raw(),
            errnos: errnos.raw(),
            fd_syscalls: fd_syscalls.raw(),
            epochs: epochs.raw(),
            fd_epochs: fd_epochs.raw(),
            fresh: fresh.raw(),
            ctl: ctl.raw(),
            threshold: threshold.raw(),
            slow: slow.raw(),
        };
        let enter = sys::load_program("osl_sys_enter", &enter_program(key, pidns, &fds, sample))?;
        let exit = sys::load_program("osl_sys_exit", &exit_program(key, &fds))?;
        let task_exit = sys::load_program("osl_task_exit", &task_exit_program(key, &fds))?;
        drop(fd_syscalls); // the programs hold it
        let drained = Drained { cursor: 0, slowest: Slowest::new(super::counts::SLOWEST_KEPT), missed: 0 };
        let mut counter = Counter {
            links: Vec::new(),
            progs: Vec::new(),
            targets,
            generation,
            threads,
            stats,
            errnos,
            epochs,
            fd_epochs,
            slots: Mutex::new((std::collections::HashMap::new(), 0)),
            fresh,
            ctl,
            threshold,
            slow,
            started_ns: monotonic_ns(),
            sample,
            drained: Mutex::new(drained),
        };
        counter.add_tgids(tgids)?;
        counter.set_threshold(super::counts::SLOW_FLOOR_NS - 1)?;
        // Task exit first (no stale thread entries), then sys_exit (so that every recorded
        // enter has its exit program in place), then sys_enter. Drop detaches in reverse.
        counter.links.push(sys::attach_raw_tracepoint(c"sched_process_exit", &task_exit)?);
        counter.links.push(sys::attach_raw_tracepoint(c"sys_exit", &exit)?);
        counter.links.push(sys::attach_raw_tracepoint(c"sys_enter", &enter)?);
        counter.progs = vec![enter, exit, task_exit];
        Ok(counter)
    }

    /// Adds processes to the filter while attached (e.g. new processes of a container).
    pub fn add_tgids(&self, tgids: &[u32]) -> Result<(), BpfError> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for &tgid in tgids {
            let given = slots.1;
            let slot = match slots.0.get(&tgid) {
                Some(&slot) => slot,
                None if given < EPOCH_SLOTS => {
                    slots.1 += 1;
                    slots.0.insert(tgid, given + 1);
                    given + 1
                }
                None => 0,
            };
            self.targets
                .update(&tgid.to_ne_bytes(), &slot.to_ne_bytes(), BPF_ANY)
                .map_err(|e| bpf_err(&format!("adding tgid {tgid} to the BPF filter"), e))?;
        }
        // Threads already seen and cached as "not a target" must be checked again.
        let key = 0u32.to_ne_bytes();
        let mut generation = [0u8; 4];
        self.generation
            .lookup(&key, &mut generation)
            .and_then(|_| {
                let next = u32::from_ne_bytes(generation).wrapping_add(1);
                self.generation.update(&key, &next.to_ne_bytes(), BPF_ANY)
            })
            .map_err(|e| bpf_err("bumping the BPF filter generation", e))
    }

    /// The fds seen for the first time since the last call: (tgid, fd, epoch).
    pub fn take_fresh(&self) -> Vec<(u32, i32, u32)> {
        let keys = self.fresh.keys().unwrap_or_default();
        keys.iter()
            .filter(|k| self.fresh.delete(k).is_ok())
            .map(|k| (u32_at(k, 0), u32_at(k, 4) as i32, u32_at(k, 8)))
            .collect()
    }

    /// How many times `fd` of `tgid` has been closed so far.
    pub fn epoch(&self, tgid: u32, fd: i32) -> u32 {
        let slot = self.slots.lock().unwrap_or_else(|e| e.into_inner()).0.get(&tgid).copied();
        let mut value = [0u8; 4];
        let found = match slot {
            Some(slot) if (0..EPOCH_FDS as i32).contains(&fd) => {
                let index = (slot - 1) * EPOCH_FDS + fd as u32;
                self.fd_epochs.lookup(&index.to_ne_bytes(), &mut value)
            }
            _ => self.epochs.lookup(&[tgid.to_ne_bytes(), fd.to_ne_bytes()].concat(), &mut value),
        };
        match found {
            Ok(true) => u32::from_ne_bytes(value),
            _ => 0,
        }
    }

    /// Takes the slow calls written since the last call into the list of the slowest, and
    /// raises the kernel's threshold to the shortest call on that list once it is full.
    pub fn drain_slow(&self) -> Result<(), BpfError> {
        let mut ctl = [0u8; CTL_VALUE as usize];
        let key0 = 0u32.to_ne_bytes();
        self.ctl.lookup(&key0, &mut ctl).map_err(|e| bpf_err("reading the BPF control map", e))?;
        let cursor = u64_at(&ctl, C_CURSOR as usize);
        let mut d = self.drained.lock().unwrap_or_else(|e| e.into_inner());
        if cursor == d.cursor {
            return Ok(());
        }
        let slots = u64::from(SLOW_SLOTS);
        let from = d.cursor.max(cursor.saturating_sub(slots));
        d.missed += from - d.cursor;
        let (mut record, mut again) = ([0u8; SLOW_VALUE as usize], [0u8; SLOW_VALUE as usize]);
        let mut taken = cursor;
        for seq in from..cursor {
            let slot = ((seq % slots) as u32).to_ne_bytes();
            let read = |into: &mut [u8]| self.slow.lookup(&slot, into).map(drop);
            read(&mut record)
                .and_then(|()| read(&mut again))
                .map_err(|e| bpf_err("reading the BPF slow-call ring", e))?;
            let written = u64_at(&record, W_SEQ as usize);
            if written < seq + 1 || record != again {
                // Still being written (the writer clears the seq first): take it next time.
                taken = seq;
                break;
            }
            if written > seq + 1 {
                d.missed += 1; // overwritten by a later lap
                continue;
            }
            let enter = u64_at(&record, W_ENTER as usize);
            d.slowest.offer(SlowCall {
                tgid: u32_at(&record, W_TGID as usize),
                tid: u32_at(&record, W_TID as usize),
                nr: u32_at(&record, W_NR as usize),
                fd: u32_at(&record, W_FD as usize) as i32,
                epoch: u32_at(&record, W_EPOCH as usize),
                ret: u64_at(&record, W_RET as usize) as i64,
                ns: u64_at(&record, W_NS as usize),
                offset_ns: enter.saturating_sub(self.started_ns),
            });
        }
        d.cursor = taken;
        self.set_threshold(d.slowest.threshold())
    }

    fn set_threshold(&self, ns: u64) -> Result<(), BpfError> {
        let key0 = 0u32.to_ne_bytes();
        self.threshold
            .update(&key0, &ns.to_ne_bytes(), BPF_ANY)
            .map_err(|e| bpf_err("writing the BPF slow threshold", e))
    }

    /// The aggregate so far; may be called repeatedly while attached (progress), and once more at the end.
    pub fn read(&self) -> Result<Counts, BpfError> {
        let stats = self.stats.entries().map_err(|e| bpf_err("reading the BPF stats map", e))?;
        let mut syscalls: Vec<SyscallCount> = stats
            .iter()
            .map(|(k, v)| {
                let mut hist = [0u64; super::counts::BUCKETS];
                for (i, h) in hist.iter_mut().enumerate() {
                    *h = u64::from(u32_at(v, S_HIST as usize + 4 * i));
                }
                let (calls, timed) = (u64_at(v, S_CALLS as usize), u64_at(v, S_TIMED as usize));
                let (min_ns, max_ns) = match timed {
                    0 => (0, 0),
                    _ => (u64_at(v, S_MIN as usize), u64_at(v, S_MAX as usize)),
                };
                SyscallCount {
                    tid: u32_at(k, 0),
                    nr: u32_at(k, 4),
                    fd: u32_at(k, 8) as i32,
                    epoch: u32_at(k, 12),
                    tgid: u32_at(v, S_TGID as usize),
                    calls,
                    errors: u64_at(v, S_ERRORS as usize),
                    total_ns: scaled(u64_at(v, S_TOTAL as usize), calls, timed),
                    min_ns,
                    max_ns,
                    timed,
                    hist: super::counts::Histogram(hist),
                }
            })
            .filter(|s| s.calls > 0) // an entry caught between creation and its first add
            .collect();
        syscalls.sort_by_key(|s| (s.tid, s.nr, s.fd, s.epoch));
        syscalls.dedup_by_key(|s| (s.tid, s.nr, s.fd, s.epoch));

        let mut errnos = BTreeMap::new();
        for (k, v) in self.errnos.entries().map_err(|e| bpf_err("reading the BPF errno map", e))? {
            errnos.insert((u32_at(&k, 0), u32_at(&k, 4)), u64_at(&v, 0));
        }
        let errnos = errnos
            .into_iter()
            .filter(|&(_, count)| count > 0)
            .map(|((nr, errno), count)| ErrnoCount { nr, errno, count })
            .collect();

        let mut ctl = [0u8; CTL_VALUE as usize];
        self.ctl.lookup(&0u32.to_ne_bytes(), &mut ctl).map_err(|e| bpf_err("reading the BPF lost counter", e))?;
        let d = self.drained.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Counts {
            syscalls,
            errnos,
            lost: u64_at(&ctl, C_LOST as usize),
            detail_lost: u64_at(&ctl, C_DETAIL_LOST as usize),
            slowest: d.slowest.to_vec(),
            slowest_missed: d.missed,
            names: Vec::new(),
            time_one_in: self.sample,
        })
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        // Closing the raw tracepoint links detaches the programs; the programs and maps are
        // freed when their last descriptor (the fields below) is closed.
        while let Some(link) = self.links.pop() {
            drop(link);
        }
        self.progs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_encoding() {
        assert_eq!(kernel_dev(4), 4); // major 0, small minor: both encodings agree
        assert_eq!(kernel_dev((8 << 8) | 1), (8 << 20) | 1);
        assert_eq!(kernel_dev(0x1230_0045), 0x12345); // major 0, minor 0x12345
    }

    #[test]
    fn program_sizes() {
        let m = MapFds {
            targets: 3,
            generation: 4,
            threads: 5,
            others: 6,
            stats: 7,
            errnos: 8,
            fd_syscalls: 9,
            epochs: 10,
            fd_epochs: 15,
            fresh: 11,
            ctl: 12,
            threshold: 13,
            slow: 14,
        };
        for key in [ThreadKey::Regs, ThreadKey::Task] {
            let enter = enter_program(key, (4, 5), &m, 8).len();
            let exit = exit_program(key, &m).len();
            let task_exit = task_exit_program(key, &m).len();
            println!("{key:?}: sys_enter {enter}, sys_exit {exit}, sched_process_exit {task_exit} insns");
            assert!(enter < 128 && exit < 400 && task_exit < 20);
        }
    }

    const BPF: &str = "loading BPF programs: CAP_BPF and CAP_PERFMON";

    #[test]
    fn rejected_program_carries_the_verifier_log() {
        if !crate::testing::privileged("rejected_program_carries_the_verifier_log", BPF) {
            return;
        }
        // r0 is never set before exit.
        match sys::load_program("osl_bad", &[asm::exit()]) {
            Err(BpfError::Rejected { what, log }) => {
                assert!(what.contains("osl_bad"), "{what}");
                assert!(log.contains("R0 !read_ok"), "{log}");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    fn gettid() -> u32 {
        nix::unistd::gettid().as_raw() as u32
    }

    /// `field:\tvalue` from /proc/self/fdinfo/<fd>.
    fn fdinfo(fd: &OwnedFd, field: &str) -> u32 {
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()));
        let text = text.unwrap();
        let line = text.lines().find(|l| l.starts_with(&format!("{field}:")));
        line.unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    use sys::object_exists;

    /// Thread-exit cleanup: entries of `threads` whose ns tid is `tid`.
    fn thread_entries(counter: &Counter, tid: u32) -> usize {
        let entries = counter.threads.entries().unwrap();
        entries.iter().filter(|(_, v)| v[..4] == tid.to_ne_bytes()).count()
    }

    fn counts_a_thread_and_forgets_it_at_exit(key: ThreadKey) {
        let me = std::process::id();
        let counter = Counter::attach_with(key, pidns_of_self().unwrap(), &[me], 1).unwrap();
        let worker = std::thread::spawn(|| {
            for _ in 0..100 {
                nix::unistd::getppid(); // glibc makes the syscall each time
            }
            gettid()
        });
        let tid = worker.join().unwrap();
        let counts = counter.read().unwrap();
        let calls = counts.syscalls.iter().find(|s| s.tid == tid && s.nr == 110);
        assert_eq!(calls.map(|s| (s.tgid, s.calls, s.errors)), Some((me, 100, 0)));
        assert_eq!(counts.lost, 0);
        // This thread is still alive and counted; the worker's entry went with it.
        assert_eq!(thread_entries(&counter, gettid()), 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while thread_entries(&counter, tid) != 0 {
            assert!(std::time::Instant::now() < deadline, "exited thread still cached");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn regs_key_counts_and_forgets() {
        if crate::testing::privileged("regs_key_counts_and_forgets", BPF) {
            counts_a_thread_and_forgets_it_at_exit(ThreadKey::Regs);
        }
    }

    #[test]
    fn task_key_counts_and_forgets() {
        if crate::testing::privileged("task_key_counts_and_forgets", BPF) {
            counts_a_thread_and_forgets_it_at_exit(ThreadKey::Task);
        }
    }

    #[test]
    fn counts_by_fd_with_epochs_histograms_and_the_slowest() {
        use std::io::{Read, Write};
        if !crate::testing::privileged("counts_by_fd_with_epochs_histograms_and_the_slowest", BPF) {
            return;
        }
        let me = std::process::id();
        let (mut r, mut w) = std::io::pipe().unwrap();
        w.write_all(&[7; 50]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [1; 30]).unwrap();
        std::fs::write(dir.path().join("b"), [2; 20]).unwrap();
        let counter = Counter::attach(pidns_of_self().unwrap(), &[me], 1).unwrap();
        let (pipe_fd, path) = (r.as_raw_fd(), dir.path().to_path_buf());
        let worker = std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            for _ in 0..50 {
                r.read_exact(&mut byte).unwrap();
            }
            let mut a = std::fs::File::open(path.join("a")).unwrap();
            let a_fd = a.as_raw_fd();
            for _ in 0..30 {
                a.read_exact(&mut byte).unwrap();
            }
            drop(a);
            let mut b = std::fs::File::open(path.join("b")).unwrap();
            assert_eq!(b.as_raw_fd(), a_fd, "the lowest free fd is reused");
            for _ in 0..20 {
                b.read_exact(&mut byte).unwrap();
            }
            // Above the fds whose epochs live in the array: the hash map's.
            let high = rustix::io::fcntl_dupfd_cloexec(&b, 1500).unwrap();
            let mut high = std::fs::File::from(high);
            for _ in 0..5 {
                let _ = high.read(&mut byte).unwrap();
            }
            let high_fd = high.as_raw_fd();
            drop(high);
            std::thread::sleep(std::time::Duration::from_millis(20));
            (gettid(), a_fd, high_fd)
        });
        let (tid, file_fd, high_fd) = worker.join().unwrap();
        counter.drain_slow().unwrap();
        let mut fresh = counter.take_fresh();
        fresh.sort();
        let counts = counter.read().unwrap();
        let read_nr = crate::profile::names::syscall_number("read").unwrap();
        let calls = |fd: i32, epoch: u32| {
            let c = counts.syscalls.iter().find(|c| (c.tid, c.nr, c.fd, c.epoch) == (tid, read_nr, fd, epoch));
            c.map(|c| (c.calls, c.hist.total()))
        };
        assert_eq!(calls(pipe_fd, 0), Some((50, 50)));
        // The fd number may have been used (and closed) before: count from its epoch then.
        let first = counts.syscalls.iter().find(|c| c.tid == tid && c.nr == read_nr && c.fd == file_fd);
        let e = first.expect("reads on the file").epoch;
        assert_eq!(calls(file_fd, e), Some((30, 30)));
        assert_eq!(calls(file_fd, e + 1), Some((20, 20)), "after the close, the same number is another file");
        assert_eq!(counter.epoch(me, file_fd), e + 2, "b was closed too");
        assert!(high_fd >= EPOCH_FDS as i32);
        let first_high = counts.syscalls.iter().find(|c| c.tid == tid && c.nr == read_nr && c.fd == high_fd);
        let e_high = first_high.expect("reads on the high fd").epoch;
        assert_eq!(calls(high_fd, e_high), Some((5, 5)));
        assert_eq!(counter.epoch(me, high_fd), e_high + 1, "closed: through the hash map");
        assert!(fresh.contains(&(me, pipe_fd, 0)) && fresh.contains(&(me, file_fd, e + 1)), "{fresh:?}");
        assert!(counter.take_fresh().is_empty(), "taken once");
        let nanosleep = crate::profile::names::syscall_number("clock_nanosleep").unwrap();
        // Among the slowest: the worker's sleep (with the main thread's join waiting for it, and
        // whatever a busy machine made slow).
        let slept = counts.slowest.iter().find(|c| c.tid == tid && c.nr == nanosleep);
        let slept = slept.unwrap_or_else(|| panic!("{:?}", counts.slowest));
        assert!(slept.ns >= 20_000_000 && slept.fd == -1, "{slept:?}");
        assert!(counts.slowest.windows(2).all(|w| w[0].ns >= w[1].ns));
        assert!(counts.slowest.iter().all(|c| c.ns >= crate::profile::counts::SLOW_FLOOR_NS && c.offset_ns > 0));
        assert_eq!(counts.lost, 0);
    }

    #[test]
    fn sampled_timing_counts_every_call_and_times_one_in_eight_at_random() {
        if !crate::testing::privileged("sampled_timing_counts_every_call_and_times_one_in_eight_at_random", BPF) {
            return;
        }
        let me = std::process::id();
        let counter = Counter::attach(pidns_of_self().unwrap(), &[me], 8).unwrap();
        let worker = std::thread::spawn(|| {
            // Alternating, as dd's read and write do: a period that must not hide either.
            for _ in 0..800 {
                nix::unistd::getppid();
                nix::unistd::getpgrp();
            }
            gettid()
        });
        let tid = worker.join().unwrap();
        let counts = counter.read().unwrap();
        for nr in [110, 111] {
            let c = counts.syscalls.iter().find(|s| s.tid == tid && s.nr == nr).expect("counted");
            assert_eq!(c.calls, 800, "every call counted");
            // One call in 8 at random: 100 expected, sd 9.4.
            assert!((60..=140).contains(&c.timed), "{c:?}");
            assert_eq!(c.hist.total(), c.timed);
            assert!(c.total_ns > 0 && c.min_ns <= c.max_ns && c.max_ns > 0, "{c:?}");
        }
        assert_eq!(counts.time_one_in, 8);
    }

    #[test]
    fn drop_detaches() {
        if !crate::testing::privileged("drop_detaches", BPF) {
            return;
        }
        const BPF_PROG_GET_FD_BY_ID: u32 = 13;
        const BPF_LINK_GET_FD_BY_ID: u32 = 30;
        let counter = Counter::attach(pidns_of_self().unwrap(), &[std::process::id()], 1).unwrap();
        let links: Vec<u32> = counter.links.iter().map(|l| fdinfo(l, "link_id")).collect();
        let progs: Vec<u32> = counter.progs.iter().map(|p| fdinfo(p, "prog_id")).collect();
        assert_eq!((links.len(), progs.len()), (3, 3));
        assert!(links.iter().all(|&id| object_exists(BPF_LINK_GET_FD_BY_ID, id)));
        assert!(progs.iter().all(|&id| object_exists(BPF_PROG_GET_FD_BY_ID, id)));
        drop(counter);
        // Links go at once; programs after an RCU grace period.
        assert!(links.iter().all(|&id| !object_exists(BPF_LINK_GET_FD_BY_ID, id)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while progs.iter().any(|&id| object_exists(BPF_PROG_GET_FD_BY_ID, id)) {
            assert!(std::time::Instant::now() < deadline, "programs still loaded");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
