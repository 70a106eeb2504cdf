//! The programs and the layouts of the maps they share with [`super::Counter`].

use super::asm::*;
use crate::profile::counts::BUCKETS;
use std::os::fd::RawFd;

pub(super) const TARGETS_MAX: u32 = 4096;
pub(super) const THREADS_MAX: u32 = 16384;
pub(super) const OTHERS_MAX: u32 = 32768;
pub(super) const STATS_MAX: u32 = 16384;
pub(super) const ERRNOS_MAX: u32 = 4096;
pub(super) const EPOCHS_MAX: u32 = 16384;
pub(super) const FRESH_MAX: u32 = 4096;
/// Slow-call candidates, a ring (a power of two).
pub(super) const SLOW_SLOTS: u32 = 64;
/// Syscall numbers `fd_syscalls` describes.
pub(super) const NR_MAX: u32 = 512;

// targets: u32 ns-tgid -> u32 epoch slot (1..=EPOCH_SLOTS, or 0: none)
// generation: array[1] of u32, bumped by add_tgids() so that cached "not a target" verdicts
// are re-evaluated.
// Both thread maps are keyed by a u64 thread key (see ThreadKey) and forgotten at task exit.
// threads: target threads -> ThreadValue (a full map costs `lost` events)
pub(super) const THREADS_VALUE: u32 = 32;
pub(super) const T_TID: i16 = 0; // u32 ns tid
pub(super) const T_TGID: i16 = 4; // u32 ns tgid
pub(super) const T_ENTER: i16 = 8; // u64 ktime at sys_enter, 0 = no syscall in flight, UNTIMED
/// T_ENTER of a syscall in flight that is counted but not timed (see `sample`).
pub(super) const UNTIMED: i32 = 1;
pub(super) const T_NR: i16 = 16; // u64 syscall nr in flight
pub(super) const T_SLOT: i16 = 24; // u32 the process's epoch slot (0: none)
pub(super) const T_RAND: i16 = 28; // u32 the thread's xorshift32 state, for sampling (never 0)

// others: LRU cache of threads found not to be targets -> u32 generation of that verdict
// (an evicted entry only costs a new check).

// stats: { u32 tid, u32 nr, i32 fd (-1: none), u32 epoch } -> StatsValue
pub(super) const STATS_KEY: u32 = 16;
/// The fd of a stats key for calls on fds counted after the map filled up.
pub(super) const OVERFLOW_FD: i32 = crate::profile::counts::OVERFLOW_FD;
pub(super) const S_TGID: i16 = 0; // u32, then 4 bytes padding
pub(super) const S_CALLS: i16 = 8;
pub(super) const S_ERRORS: i16 = 16;
pub(super) const S_TOTAL: i16 = 24;
pub(super) const S_MIN: i16 = 32;
pub(super) const S_MAX: i16 = 40;
pub(super) const S_TIMED: i16 = 48; // calls timed (all of them unless sampling)
pub(super) const S_HIST: i16 = 56; // u32 per latency bucket (of the timed calls)
pub(super) const STATS_VALUE: u32 = S_HIST as u32 + 4 * BUCKETS as u32;
// errnos: { u32 nr, u32 errno } -> u64 count
// fd_syscalls: array[NR_MAX] of u32 flags, by syscall nr
pub(super) const FD_ARG0: i32 = 1; // the first argument is an fd
pub(super) const ENDS_ARG0: i32 = 2; // success closes the first argument's fd (close)
pub(super) const ENDS_ARG1: i32 = 4; // success replaces the second argument's fd (dup2, dup3)
// fd_epochs: array[EPOCH_SLOTS * EPOCH_FDS] of u32 closes so far, at (slot - 1) * EPOCH_FDS + fd:
// the epochs of the first processes' low fds, found without hashing (an inlined array lookup)
pub(super) const EPOCH_SLOTS: u32 = 128;
pub(super) const EPOCH_FDS: u32 = 1024;
// epochs: { u32 tgid, i32 fd } -> u32 closes so far, for the others
// fresh: { u32 tgid, i32 fd, u32 epoch } -> u32 (1): fds seen for the first time, drained by
// userspace to name them while they are open
pub(super) const FRESH_KEY: u32 = 12;
// ctl: array[1] of { u64 lost, u64 slow cursor, u64 detail lost }
pub(super) const CTL_VALUE: u32 = 24;
pub(super) const C_LOST: i16 = 0;
pub(super) const C_CURSOR: i16 = 8;
pub(super) const C_DETAIL_LOST: i16 = 16; // errnos and fd epochs not recorded (their map full)
// threshold: array[1] of u64 ns, written by userspace only
// slow: array[SLOW_SLOTS] of SlowValue, written at cursor % SLOW_SLOTS by a call slower
// than the threshold (userspace raises it to the N-th slowest seen)
pub(super) const SLOW_VALUE: u32 = 56;
pub(super) const W_SEQ: i16 = 0; // u64 the cursor value this record was written at, + 1
pub(super) const W_TGID: i16 = 8;
pub(super) const W_TID: i16 = 12;
pub(super) const W_NR: i16 = 16;
pub(super) const W_FD: i16 = 20;
pub(super) const W_EPOCH: i16 = 24;
pub(super) const W_RET: i16 = 32;
pub(super) const W_NS: i16 = 40;
pub(super) const W_ENTER: i16 = 48;

/// `struct pt_regs` offsets on x86_64: the first two syscall arguments.
const REGS_DI: i32 = 112;
const REGS_SI: i32 = 104;

pub(super) const SYS_EXECVE: i32 = 59;
pub(super) const SYS_EXIT: i32 = 60;
pub(super) const SYS_EXIT_GROUP: i32 = 231;
pub(super) const SYS_EXECVEAT: i32 = 322;

/// File descriptors of the maps, as the programs reference them.
pub(super) struct MapFds {
    pub(super) targets: RawFd,
    pub(super) generation: RawFd,
    pub(super) threads: RawFd,
    pub(super) others: RawFd,
    pub(super) stats: RawFd,
    pub(super) errnos: RawFd,
    pub(super) fd_syscalls: RawFd,
    pub(super) epochs: RawFd,
    pub(super) fd_epochs: RawFd,
    pub(super) fresh: RawFd,
    pub(super) ctl: RawFd,
    pub(super) threshold: RawFd,
    pub(super) slow: RawFd,
}

/// How the programs identify a thread in `threads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ThreadKey {
    /// The task's `struct pt_regs *` (at the top of its kernel stack): `args[0]` of sys_enter
    /// and sys_exit, free to read; at task exit `bpf_task_pt_regs(bpf_get_current_task_btf())`,
    /// which needs kernel BTF (CONFIG_DEBUG_INFO_BTF).
    Regs,
    /// `bpf_get_current_task()`: one more helper call (~20 ns) per program run, no BTF.
    Task,
}

/// Emits `*(u64 *)(fp + key_off) = this thread's key`; r1 must still be the tracepoint ctx.
pub(super) fn emit_thread_key(a: &mut Asm, key: ThreadKey, key_off: i16) {
    match key {
        ThreadKey::Regs => a.emit(&[ldx_mem(BPF_DW, R1, R1, 0), stx_mem(BPF_DW, R10, R1, key_off)]),
        ThreadKey::Task => a.emit(&[call(GET_CURRENT_TASK), stx_mem(BPF_DW, R10, R0, key_off)]),
    }
}

/// Emits `r0 = &array_map[0]` using the u32 stack slot at fp+key_off; jumps to `out` if NULL.
pub(super) fn emit_array_slot0(a: &mut Asm, map: RawFd, key_off: i16, out: Label) {
    a.emit(&[st_mem(BPF_W, R10, key_off, 0)]);
    a.emit(&ld_map_fd(R1, map));
    a.emit(&[mov64_reg(R2, R10), add64_imm(R2, key_off.into()), call(MAP_LOOKUP_ELEM)]);
    a.jmp_imm(BPF_JEQ, R0, 0, out);
}

/// Emits `map[key at fp+key_off] = value at fp+value_off` with `flags` (BPF_ANY, BPF_NOEXIST).
fn emit_update(a: &mut Asm, map: RawFd, key_off: i16, value_off: i16, flags: u64) {
    a.emit(&ld_map_fd(R1, map));
    a.emit(&[
        mov64_reg(R2, R10),
        add64_imm(R2, key_off.into()),
        mov64_reg(R3, R10),
        add64_imm(R3, value_off.into()),
        mov64_imm(R4, flags as i32),
        call(MAP_UPDATE_ELEM),
    ]);
}

/// Emits `r0 = map[key at fp+key_off]` (NULL if absent).
pub(super) fn emit_lookup(a: &mut Asm, map: RawFd, key_off: i16) {
    a.emit(&ld_map_fd(R1, map));
    a.emit(&[mov64_reg(R2, R10), add64_imm(R2, key_off.into()), call(MAP_LOOKUP_ELEM)]);
}

/// Emits `lost[0] += 1; goto out` using the u32 stack slot at fp+key_off.
pub(super) fn emit_lost(a: &mut Asm, lost: RawFd, key_off: i16, out: Label) {
    emit_array_slot0(a, lost, key_off, out);
    a.emit(&[mov64_imm(R1, 1), atomic_add64(R0, R1, 0)]);
    a.ja(out);
}

/// The `sys_enter` program: record `{ktime, nr}` in the thread's entry if it is a target.
///
/// Fast path (thread already classified): inlined hash lookups, and for a target
/// `bpf_ktime_get_ns`. Slow path (first syscall of a thread, or a non-target after
/// add_tgids): `bpf_get_ns_current_pid_tgid` and the `targets` lookup, then cache the verdict.
///
/// Registers: r7 = nr, r8 = cached verdict, r9 = generation.
/// Stack: fp-8 thread key, fp-16 u32 array key, fp-24 pidns_info, fp-56..fp-24 new entry.
///
/// `sample` (a power of two): time one syscall in `sample` of each thread, chosen at random,
/// and mark the others UNTIMED, so that they are counted without two reads of the clock (~60 ns each here).
pub(super) fn enter_program(key: ThreadKey, pidns: (u64, u64), m: &MapFds, sample: u32) -> Vec<Insn> {
    assert!(sample.is_power_of_two());
    let mut a = Asm::default();
    let [out, slow, record, lost] = [(); 4].map(|_| a.label());
    // r7 = args[1] = nr. exit/exit_group never return: strace -c does not count them either.
    a.emit(&[ldx_mem(BPF_DW, R7, R1, 8)]);
    a.jmp_imm(BPF_JEQ, R7, SYS_EXIT, out);
    a.jmp_imm(BPF_JEQ, R7, SYS_EXIT_GROUP, out);
    emit_thread_key(&mut a, key, -8);
    emit_lookup(&mut a, m.threads, -8);
    a.jmp_imm(BPF_JNE, R0, 0, record);
    // A cached "not a target": still valid unless add_tgids() bumped the generation.
    emit_lookup(&mut a, m.others, -8);
    a.jmp_imm(BPF_JEQ, R0, 0, slow);
    a.emit(&[mov64_reg(R8, R0)]);
    emit_array_slot0(&mut a, m.generation, -16, out);
    a.emit(&[ldx_mem(BPF_W, R1, R0, 0), ldx_mem(BPF_W, R2, R8, 0)]);
    a.jmp_reg(BPF_JEQ, R1, R2, out);

    a.bind(slow);
    // Read the generation before the targets, so a concurrent add_tgids() forces a recheck.
    emit_array_slot0(&mut a, m.generation, -16, out);
    a.emit(&[ldx_mem(BPF_W, R9, R0, 0)]);
    a.emit(&ld_imm64(R1, pidns.0));
    a.emit(&ld_imm64(R2, pidns.1));
    a.emit(&[mov64_reg(R3, R10), add64_imm(R3, -24), mov64_imm(R4, 8), call(GET_NS_CURRENT_PID_TGID)]);
    let other = a.label();
    a.jmp_imm(BPF_JNE, R0, 0, other); // not in our pid namespace
    emit_lookup(&mut a, m.targets, -20);
    a.jmp_imm(BPF_JEQ, R0, 0, other);
    // A target: threads[key] = { tid, tgid, 0, 0, slot }, then record this syscall in it.
    a.emit(&[
        ldx_mem(BPF_W, R1, R0, 0),
        stx_mem(BPF_W, R10, R1, -56 + T_SLOT),
        ldx_mem(BPF_W, R1, R10, -24),
        stx_mem(BPF_W, R10, R1, -56 + T_TID),
        mov64_reg(R2, R1),
        or64_imm(R2, 1),
        stx_mem(BPF_W, R10, R2, -56 + T_RAND), // seeded with the tid, made odd: never 0
        ldx_mem(BPF_W, R1, R10, -20),
        stx_mem(BPF_W, R10, R1, -56 + T_TGID),
        st_mem(BPF_DW, R10, -56 + T_ENTER, 0),
        st_mem(BPF_DW, R10, -56 + T_NR, 0),
    ]);
    emit_update(&mut a, m.threads, -8, -56, BPF_ANY);
    emit_lookup(&mut a, m.threads, -8);
    a.jmp_imm(BPF_JEQ, R0, 0, lost); // threads is full

    a.bind(record); // r0 = the target thread's entry
    a.emit(&[mov64_reg(R8, R0), stx_mem(BPF_DW, R8, R7, T_NR)]);
    if sample > 1 {
        // At random, not every N-th call: a thread whose calls repeat with a period (dd's
        // read, write, read…) would otherwise always time the same syscall. A per-thread
        // xorshift32 in the entry: a few ALU instructions, where bpf_get_prandom_u32 is a call.
        let timed = a.label();
        a.emit(&[ldx_mem(BPF_W, R1, R8, T_RAND)]);
        for (shift, left) in [(13, true), (17, false), (5, true)] {
            a.emit(&[
                mov64_reg(R2, R1),
                if left { lsh32_imm(R2, shift) } else { rsh32_imm(R2, shift) },
                xor32_reg(R1, R2),
            ]);
        }
        a.emit(&[stx_mem(BPF_W, R8, R1, T_RAND), and64_imm(R1, sample as i32 - 1)]);
        a.jmp_imm(BPF_JEQ, R1, 0, timed);
        a.emit(&[st_mem(BPF_DW, R8, T_ENTER, UNTIMED)]);
        a.ja(out);
        a.bind(timed);
    }
    a.emit(&[call(KTIME_GET_NS), stx_mem(BPF_DW, R8, R0, T_ENTER)]);
    a.ja(out);

    a.bind(other); // others[key] = generation (LRU: never full)
    a.emit(&[stx_mem(BPF_W, R10, R9, -16)]);
    emit_update(&mut a, m.others, -8, -16, BPF_ANY);
    a.ja(out);
    a.bind(lost);
    emit_lost(&mut a, m.ctl, -16, out);
    a.bind(out);
    a.emit(&[mov64_imm(R0, 0), exit()]);
    a.finish()
}

/// Emits "r0 = map[key at fp+key_off], creating it from the value at fp+init_off if missing";
/// jumps to `lost` if that fails (map full).
pub(super) fn emit_get_or_create(a: &mut Asm, map: RawFd, key_off: i16, init_off: i16, lost: Label) {
    let have = a.label();
    emit_lookup(a, map, key_off);
    a.jmp_imm(BPF_JNE, R0, 0, have);
    // Insert; EEXIST from a racing CPU is fine, the second lookup finds its entry.
    emit_update(a, map, key_off, init_off, BPF_NOEXIST);
    emit_lookup(a, map, key_off);
    a.jmp_imm(BPF_JEQ, R0, 0, lost);
    a.bind(have);
}

/// The `sys_exit` program: account the call recorded by `sys_enter` in `stats` (and `errnos`),
/// keyed by the fd it was on (and that fd's epoch) for syscalls whose first argument is one;
/// bump the epoch of an fd a successful close/dup2/dup3 ended; offer the call to the slow ring.
///
/// Registers: r6 = return value, r7 = duration, r8 = nr, r9 = stats value (then scratch).
/// Stack:
///   fp-8 thread key; fp-24..-8 stats key {tid, nr, fd, epoch}; fp-32 errno key;
///   fp-40 u32 array key; fp-48 epochs key {tgid, fd}; fp-64..-52 fresh key {tgid, fd, epoch};
///   fp-72 argument read by probe_read_kernel; fp-80 zero (initial u64/u32 values);
///   fp-88 fd_syscalls flags; fp-96 enter ktime; fp-104 the pt_regs pointer; fp-112 the
///   process's epoch slot; fp-120 1 if this call is timed; fp-(120+STATS_VALUE)..-120 initial
///   stats value.
pub(super) fn exit_program(key: ThreadKey, m: &MapFds) -> Vec<Insn> {
    const INIT: i16 = -120 - STATS_VALUE as i16;
    let mut a = Asm::default();
    let [out, lost, read_fd, skip_min, skip_max, no_fd, keyed, counted, slow] = [(); 9].map(|_| a.label());
    let [detail_lost, close_failed] = [(); 2].map(|_| a.label());
    a.emit(&[
        ldx_mem(BPF_DW, R6, R1, 8), // r6 = args[1] = return value
        ldx_mem(BPF_DW, R2, R1, 0), // args[0] = the task's pt_regs
        stx_mem(BPF_DW, R10, R2, -104),
    ]);
    emit_thread_key(&mut a, key, -8);
    emit_lookup(&mut a, m.threads, -8);
    a.jmp_imm(BPF_JEQ, R0, 0, out); // not a target
    a.emit(&[ldx_mem(BPF_DW, R7, R0, T_ENTER)]);
    a.jmp_imm(BPF_JEQ, R7, 0, out); // no enter seen (in flight at attach, or a fork child)
    a.emit(&[
        stx_mem(BPF_DW, R10, R7, -96),
        ldx_mem(BPF_W, R1, R0, T_SLOT),
        stx_mem(BPF_DW, R10, R1, -112),
        st_mem(BPF_DW, R0, T_ENTER, 0),
        ldx_mem(BPF_DW, R8, R0, T_NR),
        ldx_mem(BPF_W, R1, R0, T_TID), // stats key = { tid, nr, fd, epoch }
        stx_mem(BPF_W, R10, R1, -24),
        stx_mem(BPF_W, R10, R8, -20),
        st_mem(BPF_W, R10, -16, -1),
        st_mem(BPF_W, R10, -12, 0),
        ldx_mem(BPF_W, R1, R0, T_TGID), // tgid: initial stats value, epochs and fresh keys
        stx_mem(BPF_W, R10, R1, INIT + S_TGID),
        stx_mem(BPF_W, R10, R1, -48),
        stx_mem(BPF_W, R10, R1, -64),
        st_mem(BPF_W, R10, INIT + S_TGID + 4, 0),
        st_mem(BPF_DW, R10, INIT + S_CALLS, 0),
        st_mem(BPF_DW, R10, INIT + S_ERRORS, 0),
        st_mem(BPF_DW, R10, INIT + S_TOTAL, 0),
        st_mem(BPF_DW, R10, INIT + S_MIN, -1), // u64::MAX
        st_mem(BPF_DW, R10, INIT + S_MAX, 0),
        st_mem(BPF_DW, R10, INIT + S_TIMED, 0),
        st_mem(BPF_W, R10, -44, -1), // no fd until one is read
        st_mem(BPF_W, R10, -60, -1),
        st_mem(BPF_W, R10, -56, 0),
        st_mem(BPF_DW, R10, -80, 0),
        st_mem(BPF_DW, R10, -88, 0),
    ]);
    for i in 0..(BUCKETS as i16 / 2) {
        a.emit(&[st_mem(BPF_DW, R10, INIT + S_HIST + 8 * i, 0)]);
    }
    // r7 = the duration, or 0 for a call counted but not timed.
    let [untimed, timed_done] = [(); 2].map(|_| a.label());
    a.jmp_imm(BPF_JEQ, R7, UNTIMED, untimed);
    a.emit(&[call(KTIME_GET_NS), sub64_reg(R0, R7), mov64_reg(R7, R0), st_mem(BPF_DW, R10, -120, 1)]);
    a.ja(timed_done);
    a.bind(untimed);
    a.emit(&[mov64_imm(R7, 0), st_mem(BPF_DW, R10, -120, 0)]);
    a.bind(timed_done);
    // A successful execve from a non-leader thread takes over the leader's tid: forget the
    // thread so that its next syscall classifies it again.
    let forget = a.label();
    a.jmp_imm(BPF_JEQ, R8, SYS_EXECVE, forget);
    a.jmp_imm(BPF_JEQ, R8, SYS_EXECVEAT, forget);
    a.ja(no_fd);
    a.bind(forget);
    a.jmp_imm(BPF_JNE, R6, 0, no_fd);
    a.emit(&ld_map_fd(R1, m.threads));
    a.emit(&[mov64_reg(R2, R10), add64_imm(R2, -8), call(MAP_DELETE_ELEM)]);

    // Does this syscall take an fd? (fd_syscalls[nr] & FD_ARG0)
    a.bind(no_fd);
    a.emit(&[stx_mem(BPF_W, R10, R8, -40)]);
    a.emit(&ld_map_fd(R1, m.fd_syscalls));
    a.emit(&[mov64_reg(R2, R10), add64_imm(R2, -40), call(MAP_LOOKUP_ELEM)]);
    a.jmp_imm(BPF_JEQ, R0, 0, keyed); // nr beyond the table
    a.emit(&[ldx_mem(BPF_W, R1, R0, 0), stx_mem(BPF_DW, R10, R1, -88)]);
    a.jmp_imm(BPF_JSET, R1, FD_ARG0, read_fd);
    a.ja(keyed);
    a.bind(read_fd);
    emit_read_arg(&mut a, REGS_DI);
    a.jmp_imm(BPF_JNE, R0, 0, keyed); // unreadable: no fd rather than fd 0
    a.emit(&[ldx_mem(BPF_W, R1, R10, -72)]); // the low 32 bits, zero-extended: an int fd
    a.jmp_imm(BPF_JGT, R1, i32::MAX, keyed); // negative: no fd
    a.emit(&[stx_mem(BPF_W, R10, R1, -16), stx_mem(BPF_W, R10, R1, -44), stx_mem(BPF_W, R10, R1, -60)]);
    emit_epoch(&mut a, m, None);
    let epoch_zero = a.label();
    a.jmp_imm(BPF_JEQ, R0, 0, epoch_zero);
    a.emit(&[ldx_mem(BPF_W, R1, R0, 0), stx_mem(BPF_W, R10, R1, -12)]);
    a.bind(epoch_zero);
    a.emit(&[ldx_mem(BPF_W, R1, R10, -12), stx_mem(BPF_W, R10, R1, -56)]);

    a.bind(keyed);
    let have = a.label();
    emit_lookup(&mut a, m.stats, -24);
    a.jmp_imm(BPF_JNE, R0, 0, have);
    // A new entry. Insert; EEXIST from a racing CPU is fine, the second lookup finds its entry.
    emit_update(&mut a, m.stats, -24, INIT, BPF_NOEXIST);
    // A new fd (or an fd number's new epoch): tell userspace to name it.
    let fresh_done = a.label();
    a.emit(&[ldx_mem(BPF_W, R1, R10, -16)]); // zero-extended: -1 (no fd) is above i32::MAX
    a.jmp_imm(BPF_JGT, R1, i32::MAX, fresh_done);
    a.emit(&[mov64_imm(R1, 1), stx_mem(BPF_W, R10, R1, -72)]);
    emit_update(&mut a, m.fresh, -64, -72, BPF_ANY);
    a.bind(fresh_done);
    emit_lookup(&mut a, m.stats, -24);
    a.jmp_imm(BPF_JNE, R0, 0, have);
    // The map is full. A call with an fd still counts, under {tid, nr, OVERFLOW_FD, 0}: the
    // number of those keys is bounded by threads × syscalls, not by fds opened.
    a.emit(&[ldx_mem(BPF_W, R1, R10, -16)]);
    a.jmp_imm(BPF_JGT, R1, i32::MAX, lost); // no fd: the call itself is lost
    a.emit(&[st_mem(BPF_W, R10, -16, OVERFLOW_FD), st_mem(BPF_W, R10, -12, 0)]);
    emit_get_or_create(&mut a, m.stats, -24, INIT, lost);
    a.bind(have);
    a.emit(&[mov64_reg(R9, R0), mov64_imm(R1, 1), atomic_add64(R9, R1, S_CALLS)]);
    let not_timed = a.label();
    a.emit(&[ldx_mem(BPF_DW, R1, R10, -120)]);
    a.jmp_imm(BPF_JEQ, R1, 0, not_timed);
    a.emit(&[atomic_add64(R9, R7, S_TOTAL), atomic_add64(R9, R1, S_TIMED)]);
    // min/max: best effort, a plain load-compare-store (not atomic against other CPUs; the
    // entry belongs to one thread, which is in one syscall at a time, so races need tid reuse).
    a.emit(&[ldx_mem(BPF_DW, R1, R9, S_MIN)]);
    a.jmp_reg(BPF_JLE, R1, R7, skip_min);
    a.emit(&[stx_mem(BPF_DW, R9, R7, S_MIN)]);
    a.bind(skip_min);
    a.emit(&[ldx_mem(BPF_DW, R1, R9, S_MAX)]);
    a.jmp_reg(BPF_JGE, R1, R7, skip_max);
    a.emit(&[stx_mem(BPF_DW, R9, R7, S_MAX)]);
    a.bind(skip_max);
    emit_histogram(&mut a);
    a.bind(not_timed);
    // An error is a return in -4095..=-1.
    let ok = a.label();
    a.jmp_imm(BPF_JSGE, R6, 0, ok);
    a.jmp_imm(BPF_JSLT, R6, -4095, ok);
    a.emit(&[
        mov64_imm(R1, 1),
        atomic_add64(R9, R1, S_ERRORS),
        stx_mem(BPF_W, R10, R8, -32), // errno key = { nr, -ret }
        mov64_imm(R1, 0),
        sub64_reg(R1, R6),
        stx_mem(BPF_W, R10, R1, -28),
    ]);
    emit_get_or_create(&mut a, m.errnos, -32, -80, detail_lost);
    a.emit(&[mov64_imm(R1, 1), atomic_add64(R0, R1, 0)]);
    // A close that fails other than with EBADF has closed the fd all the same (close(2)).
    a.emit(&[ldx_mem(BPF_DW, R1, R10, -88)]);
    a.jmp_imm(BPF_JSET, R1, ENDS_ARG0, close_failed);
    a.ja(slow);
    a.bind(close_failed);
    a.jmp_imm(BPF_JEQ, R6, -libc::EBADF, slow);
    a.ja(counted);

    // Success: a close ends the fd in its first argument, a dup2/dup3 the one in its second.
    a.bind(ok);
    a.emit(&[ldx_mem(BPF_DW, R1, R10, -88)]);
    let ends1 = a.label();
    a.jmp_imm(BPF_JSET, R1, ENDS_ARG1, ends1);
    a.jmp_imm(BPF_JSET, R1, ENDS_ARG0, counted); // the fd (and -44) was read above
    a.ja(slow);
    a.bind(ends1);
    emit_read_arg(&mut a, REGS_SI);
    a.jmp_imm(BPF_JNE, R0, 0, slow);
    a.emit(&[ldx_mem(BPF_W, R1, R10, -72), stx_mem(BPF_W, R10, R1, -44)]);
    a.bind(counted);
    emit_epoch(&mut a, m, Some(detail_lost));
    a.emit(&[mov64_imm(R1, 1), atomic_add32(R0, R1, 0)]);

    // A call slower than the threshold goes to the ring: slot = cursor++ % SLOW_SLOTS.
    a.bind(slow);
    emit_array_slot0(&mut a, m.threshold, -40, out);
    a.emit(&[ldx_mem(BPF_DW, R1, R0, 0)]);
    a.jmp_reg(BPF_JGE, R1, R7, out);
    emit_array_slot0(&mut a, m.ctl, -40, out);
    a.emit(&[mov64_imm(R9, 1), atomic_fetch_add64(R0, R9, C_CURSOR), mov64_reg(R1, R9)]);
    a.emit(&[and64_imm(R1, SLOW_SLOTS as i32 - 1), stx_mem(BPF_W, R10, R1, -40)]);
    a.emit(&ld_map_fd(R1, m.slow));
    a.emit(&[mov64_reg(R2, R10), add64_imm(R2, -40), call(MAP_LOOKUP_ELEM)]);
    a.jmp_imm(BPF_JEQ, R0, 0, out);
    a.emit(&[
        st_mem(BPF_DW, R0, W_SEQ, 0), // first: a record being rewritten is no record
        ldx_mem(BPF_W, R1, R10, -64),
        stx_mem(BPF_W, R0, R1, W_TGID),
        ldx_mem(BPF_W, R1, R10, -24),
        stx_mem(BPF_W, R0, R1, W_TID),
        stx_mem(BPF_W, R0, R8, W_NR),
        ldx_mem(BPF_W, R1, R10, -16),
        stx_mem(BPF_W, R0, R1, W_FD),
        ldx_mem(BPF_W, R1, R10, -12),
        stx_mem(BPF_W, R0, R1, W_EPOCH),
        stx_mem(BPF_DW, R0, R6, W_RET),
        stx_mem(BPF_DW, R0, R7, W_NS),
        ldx_mem(BPF_DW, R1, R10, -96),
        stx_mem(BPF_DW, R0, R1, W_ENTER),
        add64_imm(R9, 1),
        stx_mem(BPF_DW, R0, R9, W_SEQ), // last: a record is whole once its seq is
    ]);
    a.ja(out);
    a.bind(lost);
    emit_lost(&mut a, m.ctl, -40, out);
    // The call is counted, but its errno or an fd's epoch could not be (a map was full).
    a.bind(detail_lost);
    emit_array_slot0(&mut a, m.ctl, -40, out);
    a.emit(&[mov64_imm(R1, 1), atomic_add64(R0, R1, C_DETAIL_LOST)]);
    a.ja(slow);
    a.bind(out);
    a.emit(&[mov64_imm(R0, 0), exit()]);
    a.finish()
}

/// Emits `r0 = &epoch of the fd at fp-44` of the process whose tgid is at fp-48 and slot at
/// fp-112: in `fd_epochs` for a slot and a low fd, else in `epochs` (NULL if absent there, or
/// created when `create` gives the label to jump to if that fails).
fn emit_epoch(a: &mut Asm, m: &MapFds, create: Option<Label>) {
    let [hash, done] = [(); 2].map(|_| a.label());
    a.emit(&[ldx_mem(BPF_DW, R2, R10, -112), ldx_mem(BPF_W, R1, R10, -44)]);
    a.jmp_imm(BPF_JEQ, R2, 0, hash);
    a.jmp_imm(BPF_JGE, R1, EPOCH_FDS as i32, hash);
    a.emit(&[
        add64_imm(R2, -1),
        lsh64_imm(R2, EPOCH_FDS.trailing_zeros() as i32),
        add64_reg(R2, R1),
        stx_mem(BPF_W, R10, R2, -40),
    ]);
    a.emit(&ld_map_fd(R1, m.fd_epochs));
    a.emit(&[mov64_reg(R2, R10), add64_imm(R2, -40), call(MAP_LOOKUP_ELEM)]);
    a.ja(done);
    a.bind(hash);
    match create {
        Some(lost) => emit_get_or_create(a, m.epochs, -48, -80, lost),
        None => emit_lookup(a, m.epochs, -48),
    }
    a.bind(done);
    if let Some(lost) = create {
        a.jmp_imm(BPF_JEQ, R0, 0, lost);
    }
}

/// Emits `*(u64 *)(fp-72) = *(u64 *)(regs + off)` with bpf_probe_read_kernel (zero on failure),
/// where the pt_regs pointer was saved at fp-104.
fn emit_read_arg(a: &mut Asm, off: i32) {
    a.emit(&[
        mov64_reg(R1, R10),
        add64_imm(R1, -72),
        mov64_imm(R2, 8),
        ldx_mem(BPF_DW, R3, R10, -104),
        add64_imm(R3, off),
        call(PROBE_READ_KERNEL),
    ]);
}

/// Emits `hist[log2(r7)] += 1` in the stats value at r9: a binary search for the highest
/// set bit (no loops), clamped to the last bucket.
fn emit_histogram(a: &mut Asm) {
    a.emit(&[mov64_reg(R1, R7), mov64_imm(R2, 0)]);
    for shift in [32, 16, 8, 4, 2, 1] {
        let smaller = a.label();
        a.emit(&[mov64_reg(R3, R1), rsh64_imm(R3, shift)]);
        a.jmp_imm(BPF_JEQ, R3, 0, smaller);
        a.emit(&[mov64_reg(R1, R3), add64_imm(R2, shift)]);
        a.bind(smaller);
    }
    let fits = a.label();
    a.jmp_imm(BPF_JLE, R2, BUCKETS as i32 - 1, fits);
    a.emit(&[mov64_imm(R2, BUCKETS as i32 - 1)]);
    a.bind(fits);
    a.emit(&[lsh64_imm(R2, 2), mov64_reg(R3, R9), add64_reg(R3, R2), mov64_imm(R1, 1), atomic_add32(R3, R1, S_HIST)]);
}

/// The `sched_process_exit` program: forget the exiting task, so that a new task reusing its
/// key (kernel stack or `task_struct` address) is classified afresh.
pub(super) fn task_exit_program(key: ThreadKey, m: &MapFds) -> Vec<Insn> {
    let mut a = Asm::default();
    match key {
        ThreadKey::Regs => {
            a.emit(&[call(GET_CURRENT_TASK_BTF), mov64_reg(R1, R0), call(TASK_PT_REGS), stx_mem(BPF_DW, R10, R0, -8)])
        }
        ThreadKey::Task => emit_thread_key(&mut a, key, -8),
    }
    for map in [m.threads, m.others] {
        a.emit(&ld_map_fd(R1, map));
        a.emit(&[mov64_reg(R2, R10), add64_imm(R2, -8), call(MAP_DELETE_ELEM)]);
    }
    a.emit(&[mov64_imm(R0, 0), exit()]);
    a.finish()
}
