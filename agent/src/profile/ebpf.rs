//! In-kernel syscall counting (like `strace -c -w`) with a hand-assembled eBPF program.
//!
//! No clang, no libbpf, no kernel headers: small raw-tracepoint programs are assembled here
//! instruction by instruction and loaded with the raw `bpf(2)` syscall.
//!
//! # Why this module uses `unsafe`
//!
//! `bpf(2)` has no safe wrapper in `libc`: every command passes a pointer to a prefix of the
//! kernel's `union bpf_attr`, and many of those attrs carry further user pointers (map keys and
//! values, the instruction array, the license string, the verifier log buffer, the tracepoint
//! name) that the kernel reads or writes. The unsafe code is confined to [`sys_bpf`] and to
//! turning the descriptors it returns into [`OwnedFd`]s ([`sys_bpf_fd`]); the safe wrappers
//! around them check buffer sizes against the map's key and value sizes, so nothing outside
//! this file can pass a dangling or short buffer. Each `unsafe` block has a `// SAFETY:`
//! comment. The workspace denies `unsafe_code`, so declare this module as
//! `#[allow(unsafe_code)] mod ebpf;` (not with an inner `#![allow]` as well: clippy rejects the
//! duplicated attribute).
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
//!   call and its duration to `stats[{tid, nr}]` (created on first use: lookup, insert with
//!   BPF_NOEXIST, lookup again); a return in -4095..=-1 also counts an error there and in
//!   `errnos[{nr, errno}]`. A failed insert (map full) counts in `lost`.
//! * `sched_process_exit`: deletes the exiting task from `threads` and `others`, so a new task
//!   that reuses its key starts unclassified, and the maps hold live threads only.
//!
//! Counts are exact with many threads on many CPUs: every counter is updated with
//! `BPF_ATOMIC | BPF_ADD`. Only `min_ns`/`max_ns` are best effort (a plain compare-and-store;
//! racing needs two syscalls of the same thread at once, i.e. never in practice).
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
//! * Syscall numbers are the x86_64 ones (`args[1]`); a 32-bit compat syscall reports its i386
//!   number.
//! * Overhead: attaching anything to `sys_enter`/`sys_exit` sends every syscall on the machine
//!   through the tracing slow path. For non-target threads the programs cost one or two
//!   inlined hash lookups per syscall after the first.

use super::counts::{Counts, ErrnoCount, SyscallCount};
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fmt;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub enum BpfError {
    /// EPERM/EACCES from bpf(): names what is missing.
    PermissionDenied(String),
    /// The kernel refused the program; includes the verifier log tail.
    Rejected {
        what: String,
        log: String,
    },
    Io {
        what: String,
        source: io::Error,
    },
}

impl fmt::Display for BpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BpfError::PermissionDenied(msg) => write!(f, "permission denied: {msg}"),
            BpfError::Rejected { what, log } => {
                write!(f, "the kernel rejected {what}; verifier log tail:\n{log}")
            }
            BpfError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for BpfError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BpfError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

const NEEDS: &str = "needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), and bpf() allowed by seccomp";

/// Maps an errno from bpf() to a `BpfError`, naming the missing privilege on EPERM/EACCES.
fn bpf_err(what: &str, e: io::Error) -> BpfError {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => BpfError::PermissionDenied(format!("{what}: {e}; {NEEDS}")),
        _ => BpfError::Io { what: what.to_string(), source: e },
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny BPF assembler
// ---------------------------------------------------------------------------------------------

/// One `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

type Reg = u8;
const R0: Reg = 0;
const R1: Reg = 1;
const R2: Reg = 2;
const R3: Reg = 3;
const R4: Reg = 4;
const R6: Reg = 6;
const R7: Reg = 7;
const R8: Reg = 8;
const R9: Reg = 9;
const R10: Reg = 10; // frame pointer (read-only)

// Instruction classes, sizes, modes, sources.
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_ST: u8 = 0x02;
const BPF_STX: u8 = 0x03;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_DW: u8 = 0x18;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_ATOMIC: u8 = 0xc0;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
// ALU ops.
const BPF_ADD: u8 = 0x00;
const BPF_SUB: u8 = 0x10;
const BPF_MOV: u8 = 0xb0;
// Jump ops.
const BPF_JA: u8 = 0x00;
const BPF_JEQ: u8 = 0x10;
const BPF_JGE: u8 = 0x30;
const BPF_JNE: u8 = 0x50;
const BPF_JSGE: u8 = 0x70;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
const BPF_JLE: u8 = 0xb0;
const BPF_JSLT: u8 = 0xc0;
const BPF_PSEUDO_MAP_FD: u8 = 1;

// Helper ids.
const MAP_LOOKUP_ELEM: i32 = 1;
const MAP_UPDATE_ELEM: i32 = 2;
const MAP_DELETE_ELEM: i32 = 3;
const KTIME_GET_NS: i32 = 5;
const GET_CURRENT_TASK: i32 = 35;
const GET_CURRENT_TASK_BTF: i32 = 158;
const TASK_PT_REGS: i32 = 175;
const GET_NS_CURRENT_PID_TGID: i32 = 120;

const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;

const fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
}

fn mov64_reg(dst: Reg, src: Reg) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)
}
fn mov64_imm(dst: Reg, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
}
fn add64_imm(dst: Reg, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm)
}
fn sub64_reg(dst: Reg, src: Reg) -> Insn {
    insn(BPF_ALU64 | BPF_SUB | BPF_X, dst, src, 0, 0)
}
/// `dst = imm` for a full 64-bit immediate (two instruction slots).
fn ld_imm64(dst: Reg, imm: u64) -> [Insn; 2] {
    [insn(BPF_LD | BPF_DW | BPF_IMM, dst, 0, 0, imm as u32 as i32), insn(0, 0, 0, 0, (imm >> 32) as u32 as i32)]
}
/// `dst = &map` (the verifier rewrites the fd into a map pointer).
fn ld_map_fd(dst: Reg, fd: RawFd) -> [Insn; 2] {
    [insn(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd), insn(0, 0, 0, 0, 0)]
}
/// `dst = *(size *)(src + off)`
fn ldx_mem(size: u8, dst: Reg, src: Reg, off: i16) -> Insn {
    insn(BPF_LDX | size | BPF_MEM, dst, src, off, 0)
}
/// `*(size *)(dst + off) = src`
fn stx_mem(size: u8, dst: Reg, src: Reg, off: i16) -> Insn {
    insn(BPF_STX | size | BPF_MEM, dst, src, off, 0)
}
/// `*(size *)(dst + off) = imm` (sign-extended to the size)
fn st_mem(size: u8, dst: Reg, off: i16, imm: i32) -> Insn {
    insn(BPF_ST | size | BPF_MEM, dst, 0, off, imm)
}
/// `lock *(u64 *)(dst + off) += src`
fn atomic_add64(dst: Reg, src: Reg, off: i16) -> Insn {
    insn(BPF_STX | BPF_DW | BPF_ATOMIC, dst, src, off, BPF_ADD as i32)
}
fn call(helper: i32) -> Insn {
    insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper)
}
fn exit() -> Insn {
    insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}

/// A forward/backward jump target, resolved by [`Asm::finish`].
#[derive(Clone, Copy)]
struct Label(usize);

/// Instruction buffer with labels for jumps.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    fn emit(&mut self, insns: &[Insn]) {
        self.insns.extend_from_slice(insns);
    }
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }
    /// `if dst <op> imm goto l` (64-bit compare; BPF_JA ignores dst/imm).
    fn jmp_imm(&mut self, op: u8, dst: Reg, imm: i32, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.insns.push(insn(BPF_JMP | op | BPF_K, dst, 0, 0, imm));
    }
    /// `if dst <op> src goto l`
    fn jmp_reg(&mut self, op: u8, dst: Reg, src: Reg, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.insns.push(insn(BPF_JMP | op | BPF_X, dst, src, 0, 0));
    }
    fn ja(&mut self, l: Label) {
        self.jmp_imm(BPF_JA, 0, 0, l);
    }
    fn finish(mut self) -> Vec<Insn> {
        for &(at, l) in &self.fixups {
            let target = self.labels[l.0].expect("unbound label");
            let off = target as isize - (at as isize + 1);
            self.insns[at].off = i16::try_from(off).expect("jump too far");
        }
        self.insns
    }
}

// ---------------------------------------------------------------------------------------------
// Map layouts (shared by the programs and read())
// ---------------------------------------------------------------------------------------------

const TARGETS_MAX: u32 = 4096;
const THREADS_MAX: u32 = 16384;
const OTHERS_MAX: u32 = 32768;
const STATS_MAX: u32 = 16384;
const ERRNOS_MAX: u32 = 4096;

// targets: u32 ns-tgid -> u32 (1)
// generation: array[1] of u32, bumped by add_tgids() so that cached "not a target" verdicts
// are re-evaluated.
// Both thread maps are keyed by a u64 thread key (see ThreadKey) and forgotten at task exit.
// threads: target threads -> ThreadValue (a full map costs `lost` events)
const THREADS_VALUE: u32 = 24;
const T_TID: i16 = 0; // u32 ns tid
const T_TGID: i16 = 4; // u32 ns tgid
const T_ENTER: i16 = 8; // u64 ktime at sys_enter, 0 = no syscall in flight
const T_NR: i16 = 16; // u64 syscall nr in flight

// others: LRU cache of threads found not to be targets -> u32 generation of that verdict
// (an evicted entry only costs a new check).

// stats: { u32 tid, u32 nr } -> StatsValue
const STATS_KEY: u32 = 8;
const STATS_VALUE: u32 = 48;
const S_TGID: i16 = 0; // u32, then 4 bytes padding
const S_CALLS: i16 = 8;
const S_ERRORS: i16 = 16;
const S_TOTAL: i16 = 24;
const S_MIN: i16 = 32;
const S_MAX: i16 = 40;
// errnos: { u32 nr, u32 errno } -> u64 count
// lost: array[1] of u64

const SYS_EXECVE: i32 = 59;
const SYS_EXIT: i32 = 60;
const SYS_EXIT_GROUP: i32 = 231;
const SYS_EXECVEAT: i32 = 322;

/// File descriptors of the maps, as the programs reference them.
struct MapFds {
    targets: RawFd,
    generation: RawFd,
    threads: RawFd,
    others: RawFd,
    stats: RawFd,
    errnos: RawFd,
    lost: RawFd,
}

/// How the programs identify a thread in `threads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ThreadKey {
    /// The task's `struct pt_regs *` (at the top of its kernel stack): `args[0]` of sys_enter
    /// and sys_exit, free to read; at task exit `bpf_task_pt_regs(bpf_get_current_task_btf())`,
    /// which needs kernel BTF (CONFIG_DEBUG_INFO_BTF).
    Regs,
    /// `bpf_get_current_task()`: one more helper call (~20 ns) per program run, no BTF.
    Task,
}

/// Emits `*(u64 *)(fp + key_off) = this thread's key`; r1 must still be the tracepoint ctx.
fn emit_thread_key(a: &mut Asm, key: ThreadKey, key_off: i16) {
    match key {
        ThreadKey::Regs => a.emit(&[ldx_mem(BPF_DW, R1, R1, 0), stx_mem(BPF_DW, R10, R1, key_off)]),
        ThreadKey::Task => a.emit(&[call(GET_CURRENT_TASK), stx_mem(BPF_DW, R10, R0, key_off)]),
    }
}

/// Emits `r0 = &array_map[0]` using the u32 stack slot at fp+key_off; jumps to `out` if NULL.
fn emit_array_slot0(a: &mut Asm, map: RawFd, key_off: i16, out: Label) {
    a.emit(&[st_mem(BPF_W, R10, key_off, 0)]);
    a.emit(&ld_map_fd(R1, map));
    a.emit(&[mov64_reg(R2, R10), add64_imm(R2, key_off.into()), call(MAP_LOOKUP_ELEM)]);
    a.jmp_imm(BPF_JEQ, R0, 0, out);
}

/// Emits `r0 = map[key at fp+key_off]` (NULL if absent).
fn emit_lookup(a: &mut Asm, map: RawFd, key_off: i16) {
    a.emit(&ld_map_fd(R1, map));
    a.emit(&[mov64_reg(R2, R10), add64_imm(R2, key_off.into()), call(MAP_LOOKUP_ELEM)]);
}

/// Emits `lost[0] += 1; goto out` using the u32 stack slot at fp+key_off.
fn emit_lost(a: &mut Asm, lost: RawFd, key_off: i16, out: Label) {
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
/// Stack: fp-8 thread key, fp-16 u32 array key, fp-24 pidns_info, fp-48..fp-24 new entry.
fn enter_program(key: ThreadKey, pidns: (u64, u64), m: &MapFds) -> Vec<Insn> {
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
    // A target: threads[key] = { tid, tgid, 0, 0 }, then record this syscall in it.
    a.emit(&[
        ldx_mem(BPF_W, R1, R10, -24),
        stx_mem(BPF_W, R10, R1, -48 + T_TID),
        ldx_mem(BPF_W, R1, R10, -20),
        stx_mem(BPF_W, R10, R1, -48 + T_TGID),
        st_mem(BPF_DW, R10, -48 + T_ENTER, 0),
        st_mem(BPF_DW, R10, -48 + T_NR, 0),
    ]);
    a.emit(&ld_map_fd(R1, m.threads));
    a.emit(&[
        mov64_reg(R2, R10),
        add64_imm(R2, -8),
        mov64_reg(R3, R10),
        add64_imm(R3, -48),
        mov64_imm(R4, BPF_ANY as i32),
        call(MAP_UPDATE_ELEM),
    ]);
    emit_lookup(&mut a, m.threads, -8);
    a.jmp_imm(BPF_JEQ, R0, 0, lost); // threads is full

    a.bind(record); // r0 = the target thread's entry
    a.emit(&[mov64_reg(R8, R0), stx_mem(BPF_DW, R8, R7, T_NR), call(KTIME_GET_NS), stx_mem(BPF_DW, R8, R0, T_ENTER)]);
    a.ja(out);

    a.bind(other); // others[key] = generation (LRU: never full)
    a.emit(&[stx_mem(BPF_W, R10, R9, -16)]);
    a.emit(&ld_map_fd(R1, m.others));
    a.emit(&[
        mov64_reg(R2, R10),
        add64_imm(R2, -8),
        mov64_reg(R3, R10),
        add64_imm(R3, -16),
        mov64_imm(R4, BPF_ANY as i32),
        call(MAP_UPDATE_ELEM),
    ]);
    a.ja(out);
    a.bind(lost);
    emit_lost(&mut a, m.lost, -16, out);
    a.bind(out);
    a.emit(&[mov64_imm(R0, 0), exit()]);
    a.finish()
}

/// Emits "r0 = map[key at fp+key_off], creating it from the value at fp+init_off if missing";
/// jumps to `lost` if that fails (map full).
fn emit_get_or_create(a: &mut Asm, map: RawFd, key_off: i16, init_off: i16, lost: Label) {
    let have = a.label();
    emit_lookup(a, map, key_off);
    a.jmp_imm(BPF_JNE, R0, 0, have);
    // Insert; EEXIST from a racing CPU is fine, the second lookup finds its entry.
    a.emit(&ld_map_fd(R1, map));
    a.emit(&[
        mov64_reg(R2, R10),
        add64_imm(R2, key_off.into()),
        mov64_reg(R3, R10),
        add64_imm(R3, init_off.into()),
        mov64_imm(R4, BPF_NOEXIST as i32),
        call(MAP_UPDATE_ELEM),
    ]);
    emit_lookup(a, map, key_off);
    a.jmp_imm(BPF_JEQ, R0, 0, lost);
    a.bind(have);
}

/// The `sys_exit` program: account the call recorded by `sys_enter` in `stats` (and `errnos`).
///
/// Registers: r6 = return value, r7 = duration, r8 = nr, r9 = stats value.
/// Stack: fp-8 threads key, fp-16 stats key, fp-24 errno key, fp-32 u32 array key,
/// fp-80..fp-32 stats initial value, fp-88 errno initial value.
fn exit_program(key: ThreadKey, m: &MapFds) -> Vec<Insn> {
    let mut a = Asm::default();
    let [out, lost, stats, skip_min, skip_max] = [(); 5].map(|_| a.label());
    a.emit(&[ldx_mem(BPF_DW, R6, R1, 8)]); // r6 = args[1] = return value
    emit_thread_key(&mut a, key, -8);
    emit_lookup(&mut a, m.threads, -8);
    a.jmp_imm(BPF_JEQ, R0, 0, out); // not a target
    a.emit(&[ldx_mem(BPF_DW, R7, R0, T_ENTER)]);
    a.jmp_imm(BPF_JEQ, R7, 0, out); // no enter seen (in flight at attach, or a fork child)
    a.emit(&[
        st_mem(BPF_DW, R0, T_ENTER, 0),
        ldx_mem(BPF_DW, R8, R0, T_NR),
        ldx_mem(BPF_W, R1, R0, T_TID), // stats key = { tid, nr }
        stx_mem(BPF_W, R10, R1, -16),
        stx_mem(BPF_W, R10, R8, -12),
        ldx_mem(BPF_W, R1, R0, T_TGID), // initial stats value
        stx_mem(BPF_W, R10, R1, -80 + S_TGID),
        st_mem(BPF_W, R10, -76, 0),
        st_mem(BPF_DW, R10, -80 + S_CALLS, 0),
        st_mem(BPF_DW, R10, -80 + S_ERRORS, 0),
        st_mem(BPF_DW, R10, -80 + S_TOTAL, 0),
        st_mem(BPF_DW, R10, -80 + S_MIN, -1), // u64::MAX
        st_mem(BPF_DW, R10, -80 + S_MAX, 0),
        call(KTIME_GET_NS),
        sub64_reg(R0, R7),
        mov64_reg(R7, R0),
    ]);
    // A successful execve from a non-leader thread takes over the leader's tid: forget the
    // thread so that its next syscall classifies it again.
    let forget = a.label();
    a.jmp_imm(BPF_JEQ, R8, SYS_EXECVE, forget);
    a.jmp_imm(BPF_JEQ, R8, SYS_EXECVEAT, forget);
    a.ja(stats);
    a.bind(forget);
    a.jmp_imm(BPF_JNE, R6, 0, stats);
    a.emit(&ld_map_fd(R1, m.threads));
    a.emit(&[mov64_reg(R2, R10), add64_imm(R2, -8), call(MAP_DELETE_ELEM)]);

    a.bind(stats);
    emit_get_or_create(&mut a, m.stats, -16, -80, lost);
    a.emit(&[mov64_reg(R9, R0), mov64_imm(R1, 1), atomic_add64(R9, R1, S_CALLS), atomic_add64(R9, R7, S_TOTAL)]);
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
    // An error is a return in -4095..=-1.
    a.jmp_imm(BPF_JSGE, R6, 0, out);
    a.jmp_imm(BPF_JSLT, R6, -4095, out);
    a.emit(&[
        mov64_imm(R1, 1),
        atomic_add64(R9, R1, S_ERRORS),
        stx_mem(BPF_W, R10, R8, -24), // errno key = { nr, -ret }
        mov64_imm(R1, 0),
        sub64_reg(R1, R6),
        stx_mem(BPF_W, R10, R1, -20),
        st_mem(BPF_DW, R10, -88, 0),
    ]);
    emit_get_or_create(&mut a, m.errnos, -24, -88, lost);
    a.emit(&[mov64_imm(R1, 1), atomic_add64(R0, R1, 0)]);
    a.ja(out);
    a.bind(lost);
    emit_lost(&mut a, m.lost, -32, out);
    a.bind(out);
    a.emit(&[mov64_imm(R0, 0), exit()]);
    a.finish()
}

/// The `sched_process_exit` program: forget the exiting task, so that a new task reusing its
/// key (kernel stack or `task_struct` address) is classified afresh.
fn task_exit_program(key: ThreadKey, m: &MapFds) -> Vec<Insn> {
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

// ---------------------------------------------------------------------------------------------
// The bpf() syscall
// ---------------------------------------------------------------------------------------------

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_GET_NEXT_KEY: u32 = 4;
const BPF_PROG_LOAD: u32 = 5;
const BPF_RAW_TRACEPOINT_OPEN: u32 = 17;

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// `union bpf_attr` for BPF_MAP_CREATE (prefix up to map_name).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for BPF_MAP_*_ELEM and BPF_MAP_GET_NEXT_KEY.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    /// `value`, or `next_key` for BPF_MAP_GET_NEXT_KEY.
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for BPF_PROG_LOAD (prefix up to prog_name).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// `union bpf_attr` for BPF_RAW_TRACEPOINT_OPEN.
#[repr(C)]
#[derive(Default)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// Calls `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// `T` must be a `#[repr(C)]` prefix of `union bpf_attr` for `cmd`, and every pointer stored
/// in it must point to memory that is valid for the access `cmd` makes (of the size the kernel
/// derives from the map or the other attr fields) for the duration of the call.
unsafe fn sys_bpf<T>(cmd: u32, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: per this function's contract, `attr` and the pointers inside it are valid; the
    // kernel copies at most size_of::<T>() bytes of attr and zero-fills the rest of its union.
    let r =
        unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr as *mut T, size_of::<T>() as libc::c_uint) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// Like [`sys_bpf`], for a command that returns a new file descriptor.
///
/// # Safety
/// As for [`sys_bpf`]; and `cmd` must be a command that returns a new descriptor on success.
unsafe fn sys_bpf_fd<T>(cmd: u32, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: the caller upholds sys_bpf's contract.
    let fd = unsafe { sys_bpf(cmd, attr) }?;
    // SAFETY: the kernel just created this descriptor for us; nothing else owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn obj_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// A map with its key and value sizes, so that element access can check buffer sizes.
struct Map {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl Map {
    fn create(name: &str, map_type: u32, key: u32, value: u32, max: u32) -> Result<Map, BpfError> {
        let mut attr = MapCreateAttr {
            map_type,
            key_size: key,
            value_size: value,
            max_entries: max,
            map_name: obj_name(name),
            ..Default::default()
        };
        // SAFETY: MapCreateAttr is the BPF_MAP_CREATE prefix of bpf_attr and holds no pointers.
        let fd = unsafe { sys_bpf_fd(BPF_MAP_CREATE, &mut attr) }
            .map_err(|e| bpf_err(&format!("creating BPF map {name}"), e))?;
        Ok(Map { fd, key_size: key as usize, value_size: value as usize })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
        assert!(key.len() == self.key_size && value.len() == self.value_size);
        let mut attr = MapElemAttr {
            map_fd: self.raw() as u32,
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            flags,
            ..Default::default()
        };
        // SAFETY: key and value are live buffers of exactly the map's key and value sizes;
        // the kernel only reads them.
        unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(drop)
    }

    /// Ok(false) if the key is absent.
    fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        assert!(key.len() == self.key_size && value.len() == self.value_size);
        let mut attr = MapElemAttr {
            map_fd: self.raw() as u32,
            key: key.as_ptr() as u64,
            value: value.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: key is a live buffer of the map's key size (read), value a live, exclusively
        // borrowed buffer of the map's value size (written; not a per-CPU map).
        match unsafe { sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// All keys, via BPF_MAP_GET_NEXT_KEY from a NULL key. (A key deleted during the walk
    /// restarts it from the beginning; `stats` and `errnos` are never deleted from.)
    fn keys(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut next = vec![0u8; self.key_size];
            let mut attr = MapElemAttr {
                map_fd: self.raw() as u32,
                key: keys.last().map_or(0, |k| k.as_ptr() as u64),
                value: next.as_mut_ptr() as u64,
                ..Default::default()
            };
            // SAFETY: key is NULL (start) or a live buffer of the key size (read); next_key is
            // a live, exclusively borrowed buffer of the key size (written).
            match unsafe { sys_bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
                Ok(_) => keys.push(next),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
                Err(e) => return Err(e),
            }
        }
    }

    /// All (key, value) pairs.
    fn entries(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for key in self.keys()? {
            let mut value = vec![0u8; self.value_size];
            if self.lookup(&key, &mut value)? {
                out.push((key, value));
            }
        }
        Ok(out)
    }
}

const LOG_SIZE: usize = 1 << 20;
const LOG_TAIL: usize = 4000;

/// One BPF_PROG_LOAD of a raw-tracepoint program, with the verifier log in `log` if given.
fn prog_load(name: &str, insns: &[Insn], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    const LICENSE: &CStr = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        prog_name: obj_name(name),
        ..Default::default()
    };
    if let Some(log) = log {
        attr.log_level = 1;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    // SAFETY: insns points to insn_cnt live instructions and license to a NUL-terminated
    // string (both read); log_buf, when set, is a live, exclusively borrowed buffer of
    // log_size bytes (written).
    unsafe { sys_bpf_fd(BPF_PROG_LOAD, &mut attr) }
}

/// Loads a raw-tracepoint program; on failure loads it again with the verifier log enabled,
/// to explain the rejection.
fn load_program(name: &str, insns: &[Insn]) -> Result<OwnedFd, BpfError> {
    let what = format!("BPF program {name} ({} instructions)", insns.len());
    let first = match prog_load(name, insns, None) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; LOG_SIZE];
    let second = match prog_load(name, insns, Some(&mut log)) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]);
    let text = text.trim_end();
    if first.raw_os_error() == Some(libc::EPERM) || text.is_empty() {
        return Err(bpf_err(&format!("loading {what}"), second));
    }
    let start = text.len().saturating_sub(LOG_TAIL);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    Err(BpfError::Rejected { what: format!("{what}: {first}"), log: text[start..].to_string() })
}

fn attach_raw_tracepoint(tp: &CStr, prog: &OwnedFd) -> Result<OwnedFd, BpfError> {
    raw_tracepoint_open(tp, prog).map_err(|e| bpf_err(&format!("attaching to raw tracepoint {tp:?}"), e))
}

fn raw_tracepoint_open(tp: &CStr, prog: &OwnedFd) -> io::Result<OwnedFd> {
    let mut attr =
        RawTracepointAttr { name: tp.as_ptr() as u64, prog_fd: prog.as_raw_fd() as u32, ..Default::default() };
    // SAFETY: name points to a live NUL-terminated string, read by the kernel.
    unsafe { sys_bpf_fd(BPF_RAW_TRACEPOINT_OPEN, &mut attr) }
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

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

/// Where a trial of what the counter needs stopped, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What was being tried: "creating a BPF map", "loading a BPF program", …
    pub step: &'static str,
    pub errno: i32,
    /// Whether bpf() reaches the kernel's own bpf code at all: an unknown command gets
    /// EINVAL there. False: something answered before it, i.e. a seccomp filter (or a
    /// kernel without the bpf syscall).
    pub reaches_kernel: bool,
}

/// Tries, for real, what [`Counter::attach`] needs — a map, a raw-tracepoint program,
/// an attachment to `sys_enter` — with a one-entry map and a two-instruction program
/// that does nothing, each closed at once. Capabilities alone cannot answer this: a
/// seccomp profile or an LSM may refuse bpf() to a process that has CAP_BPF.
pub fn try_attach() -> Result<(), Refused> {
    let refused = |step, e: io::Error| Refused {
        step,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
        reaches_kernel: bpf_reaches_kernel(),
    };
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_name: obj_name("osl_probe"),
        ..Default::default()
    };
    // SAFETY: MapCreateAttr is the BPF_MAP_CREATE prefix of bpf_attr and holds no pointers.
    let map = unsafe { sys_bpf_fd(BPF_MAP_CREATE, &mut attr) }.map_err(|e| refused("creating a BPF map", e))?;
    drop(map);
    let noop = [mov64_imm(R0, 0), exit()];
    let prog = prog_load("osl_probe", &noop, None).map_err(|e| refused("loading a BPF program", e))?;
    let link =
        raw_tracepoint_open(c"sys_enter", &prog).map_err(|e| refused("attaching to raw tracepoint sys_enter", e))?;
    drop(link);
    Ok(())
}

/// bpf() with a command no kernel has: EINVAL from the kernel's own dispatch, or the
/// errno of whatever answered first.
fn bpf_reaches_kernel() -> bool {
    const NO_SUCH_COMMAND: u32 = 0x7fff_ffff;
    let mut attr = MapCreateAttr::default();
    // SAFETY: an all-zero attr with no pointers; the kernel rejects the command unread.
    let r = unsafe { sys_bpf(NO_SUCH_COMMAND, &mut attr) };
    matches!(r, Err(e) if e.raw_os_error() == Some(libc::EINVAL))
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
    lost: Map,
}

impl Counter {
    /// Counts syscalls of every thread whose thread-group id, numbered in the pid namespace `pidns`
    /// (the (st_dev, st_ino) of e.g. /proc/self/ns/pid — the agent sees namespaced pids), is in `tgids`.
    pub fn attach(pidns: (u64, u64), tgids: &[u32]) -> Result<Counter, BpfError> {
        Counter::attach_with(ThreadKey::Regs, pidns, tgids).or_else(|e| match e {
            BpfError::PermissionDenied(_) => Err(e),
            _ => Counter::attach_with(ThreadKey::Task, pidns, tgids), // e.g. no kernel BTF
        })
    }

    fn attach_with(key: ThreadKey, pidns: (u64, u64), tgids: &[u32]) -> Result<Counter, BpfError> {
        let pidns = (kernel_dev(pidns.0), pidns.1);
        let targets = Map::create("osl_targets", BPF_MAP_TYPE_HASH, 4, 4, TARGETS_MAX)?;
        let generation = Map::create("osl_generation", BPF_MAP_TYPE_ARRAY, 4, 4, 1)?;
        let threads = Map::create("osl_threads", BPF_MAP_TYPE_HASH, 8, THREADS_VALUE, THREADS_MAX)?;
        let others = Map::create("osl_others", BPF_MAP_TYPE_LRU_HASH, 8, 4, OTHERS_MAX)?;
        let stats = Map::create("osl_stats", BPF_MAP_TYPE_HASH, STATS_KEY, STATS_VALUE, STATS_MAX)?;
        let errnos = Map::create("osl_errnos", BPF_MAP_TYPE_HASH, 8, 8, ERRNOS_MAX)?;
        let lost = Map::create("osl_lost", BPF_MAP_TYPE_ARRAY, 4, 8, 1)?;
        let fds = MapFds {
            targets: targets.raw(),
            generation: generation.raw(),
            threads: threads.raw(),
            others: others.raw(),
            stats: stats.raw(),
            errnos: errnos.raw(),
            lost: lost.raw(),
        };
        let enter = load_program("osl_sys_enter", &enter_program(key, pidns, &fds))?;
        let exit = load_program("osl_sys_exit", &exit_program(key, &fds))?;
        let task_exit = load_program("osl_task_exit", &task_exit_program(key, &fds))?;
        let mut counter =
            Counter { links: Vec::new(), progs: Vec::new(), targets, generation, threads, stats, errnos, lost };
        counter.add_tgids(tgids)?;
        // Task exit first (no stale thread entries), then sys_exit (so that every recorded
        // enter has its exit program in place), then sys_enter. Drop detaches in reverse.
        counter.links.push(attach_raw_tracepoint(c"sched_process_exit", &task_exit)?);
        counter.links.push(attach_raw_tracepoint(c"sys_exit", &exit)?);
        counter.links.push(attach_raw_tracepoint(c"sys_enter", &enter)?);
        counter.progs = vec![enter, exit, task_exit];
        Ok(counter)
    }

    /// Adds processes to the filter while attached (e.g. new processes of a container).
    pub fn add_tgids(&self, tgids: &[u32]) -> Result<(), BpfError> {
        for &tgid in tgids {
            self.targets
                .update(&tgid.to_ne_bytes(), &1u32.to_ne_bytes(), BPF_ANY)
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

    /// The aggregate so far; may be called repeatedly while attached (progress), and once more at the end.
    pub fn read(&self) -> Result<Counts, BpfError> {
        let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        let u64_at = |b: &[u8], at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap());
        let stats = self.stats.entries().map_err(|e| bpf_err("reading the BPF stats map", e))?;
        let mut syscalls: Vec<SyscallCount> = stats
            .iter()
            .map(|(k, v)| SyscallCount {
                tid: u32_at(k, 0),
                nr: u32_at(k, 4),
                tgid: u32_at(v, S_TGID as usize),
                calls: u64_at(v, S_CALLS as usize),
                errors: u64_at(v, S_ERRORS as usize),
                total_ns: u64_at(v, S_TOTAL as usize),
                min_ns: u64_at(v, S_MIN as usize),
                max_ns: u64_at(v, S_MAX as usize),
            })
            .filter(|s| s.calls > 0) // an entry caught between creation and its first add
            .collect();
        syscalls.sort_by_key(|s| (s.tid, s.nr));
        syscalls.dedup_by_key(|s| (s.tid, s.nr));

        let mut errnos = BTreeMap::new();
        for (k, v) in self.errnos.entries().map_err(|e| bpf_err("reading the BPF errno map", e))? {
            errnos.insert((u32_at(&k, 0), u32_at(&k, 4)), u64_at(&v, 0));
        }
        let errnos = errnos
            .into_iter()
            .filter(|&(_, count)| count > 0)
            .map(|((nr, errno), count)| ErrnoCount { nr, errno, count })
            .collect();

        let mut lost = [0u8; 8];
        self.lost.lookup(&0u32.to_ne_bytes(), &mut lost).map_err(|e| bpf_err("reading the BPF lost counter", e))?;
        Ok(Counts { syscalls, errnos, lost: u64::from_ne_bytes(lost) })
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
        let m = MapFds { targets: 3, generation: 4, threads: 5, others: 6, stats: 7, errnos: 8, lost: 9 };
        for key in [ThreadKey::Regs, ThreadKey::Task] {
            let enter = enter_program(key, (4, 5), &m).len();
            let exit = exit_program(key, &m).len();
            let task_exit = task_exit_program(key, &m).len();
            println!("{key:?}: sys_enter {enter}, sys_exit {exit}, sched_process_exit {task_exit} insns");
            assert!(enter < 128 && exit < 128 && task_exit < 20);
        }
    }

    const BPF: &str = "loading BPF programs: CAP_BPF and CAP_PERFMON";

    #[test]
    fn rejected_program_carries_the_verifier_log() {
        if !crate::testing::privileged("rejected_program_carries_the_verifier_log", BPF) {
            return;
        }
        // r0 is never set before exit.
        match load_program("osl_bad", &[exit()]) {
            Err(BpfError::Rejected { what, log }) => {
                assert!(what.contains("osl_bad"), "{what}");
                assert!(log.contains("R0 !read_ok"), "{log}");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    fn gettid() -> u32 {
        // SAFETY: gettid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_gettid) as u32 }
    }

    /// `field:\tvalue` from /proc/self/fdinfo/<fd>.
    fn fdinfo(fd: &OwnedFd, field: &str) -> u32 {
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()));
        let text = text.unwrap();
        let line = text.lines().find(|l| l.starts_with(&format!("{field}:")));
        line.unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Whether a BPF object with this id still exists (BPF_*_GET_FD_BY_ID).
    fn object_exists(cmd: u32, id: u32) -> bool {
        #[repr(C)]
        struct IdAttr {
            id: u32,
            next_id: u32,
            open_flags: u32,
        }
        let mut attr = IdAttr { id, next_id: 0, open_flags: 0 };
        // SAFETY: IdAttr is the BPF_*_GET_FD_BY_ID prefix of bpf_attr and holds no pointers.
        match unsafe { sys_bpf_fd(cmd, &mut attr) } {
            Ok(_fd) => true,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
                false
            }
        }
    }

    /// Thread-exit cleanup: entries of `threads` whose ns tid is `tid`.
    fn thread_entries(counter: &Counter, tid: u32) -> usize {
        let entries = counter.threads.entries().unwrap();
        entries.iter().filter(|(_, v)| v[..4] == tid.to_ne_bytes()).count()
    }

    fn counts_a_thread_and_forgets_it_at_exit(key: ThreadKey) {
        let me = std::process::id();
        let counter = Counter::attach_with(key, pidns_of_self().unwrap(), &[me]).unwrap();
        let worker = std::thread::spawn(|| {
            for _ in 0..100 {
                // SAFETY: getppid has no arguments and cannot fail.
                unsafe { libc::syscall(libc::SYS_getppid) };
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
    fn drop_detaches() {
        if !crate::testing::privileged("drop_detaches", BPF) {
            return;
        }
        const BPF_PROG_GET_FD_BY_ID: u32 = 13;
        const BPF_LINK_GET_FD_BY_ID: u32 = 30;
        let counter = Counter::attach(pidns_of_self().unwrap(), &[std::process::id()]).unwrap();
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
