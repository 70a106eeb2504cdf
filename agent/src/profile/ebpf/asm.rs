//! A tiny BPF assembler: the instructions the programs use, and labels for jumps.
//! No clang or libbpf: the programs are small enough to write by hand, and a
//! hand-written program needs no compiler on the machine, no BTF relocation
//! and no object file parser.

use std::os::fd::RawFd;

/// One `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

pub(super) type Reg = u8;
pub(super) const R0: Reg = 0;
pub(super) const R1: Reg = 1;
pub(super) const R2: Reg = 2;
pub(super) const R3: Reg = 3;
pub(super) const R4: Reg = 4;
pub(super) const R6: Reg = 6;
pub(super) const R7: Reg = 7;
pub(super) const R8: Reg = 8;
pub(super) const R9: Reg = 9;
pub(super) const R10: Reg = 10; // frame pointer (read-only)

// Instruction classes, sizes, modes, sources.
pub(super) const BPF_LD: u8 = 0x00;
pub(super) const BPF_LDX: u8 = 0x01;
pub(super) const BPF_ST: u8 = 0x02;
pub(super) const BPF_STX: u8 = 0x03;
pub(super) const BPF_JMP: u8 = 0x05;
pub(super) const BPF_ALU: u8 = 0x04; // 32-bit: the upper half of dst is zeroed
pub(super) const BPF_ALU64: u8 = 0x07;
pub(super) const BPF_W: u8 = 0x00;
pub(super) const BPF_DW: u8 = 0x18;
pub(super) const BPF_IMM: u8 = 0x00;
pub(super) const BPF_MEM: u8 = 0x60;
pub(super) const BPF_ATOMIC: u8 = 0xc0;
pub(super) const BPF_K: u8 = 0x00;
pub(super) const BPF_X: u8 = 0x08;
// ALU ops.
pub(super) const BPF_ADD: u8 = 0x00;
pub(super) const BPF_SUB: u8 = 0x10;
pub(super) const BPF_MOV: u8 = 0xb0;
pub(super) const BPF_AND: u8 = 0x50;
pub(super) const BPF_LSH: u8 = 0x60;
pub(super) const BPF_RSH: u8 = 0x70;
pub(super) const BPF_XOR: u8 = 0xa0;
pub(super) const BPF_OR: u8 = 0x40;
/// With BPF_ATOMIC | BPF_ADD: the old value is loaded into src.
pub(super) const BPF_FETCH: i32 = 0x01;
// Jump ops.
pub(super) const BPF_JA: u8 = 0x00;
pub(super) const BPF_JEQ: u8 = 0x10;
pub(super) const BPF_JGT: u8 = 0x20;
pub(super) const BPF_JGE: u8 = 0x30;
pub(super) const BPF_JSET: u8 = 0x40;
pub(super) const BPF_JNE: u8 = 0x50;
pub(super) const BPF_JSGE: u8 = 0x70;
pub(super) const BPF_CALL: u8 = 0x80;
pub(super) const BPF_EXIT: u8 = 0x90;
pub(super) const BPF_JLE: u8 = 0xb0;
pub(super) const BPF_JSLT: u8 = 0xc0;
pub(super) const BPF_PSEUDO_MAP_FD: u8 = 1;

// Helper ids.
pub(super) const MAP_LOOKUP_ELEM: i32 = 1;
pub(super) const MAP_UPDATE_ELEM: i32 = 2;
pub(super) const MAP_DELETE_ELEM: i32 = 3;
pub(super) const KTIME_GET_NS: i32 = 5;
pub(super) const GET_CURRENT_TASK: i32 = 35;
pub(super) const GET_CURRENT_TASK_BTF: i32 = 158;
pub(super) const TASK_PT_REGS: i32 = 175;
pub(super) const GET_NS_CURRENT_PID_TGID: i32 = 120;
pub(super) const PROBE_READ_KERNEL: i32 = 113;

pub(super) const BPF_ANY: u64 = 0;
pub(super) const BPF_NOEXIST: u64 = 1;

pub(super) const fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
}

pub(super) fn mov64_reg(dst: Reg, src: Reg) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)
}
pub(super) fn mov64_imm(dst: Reg, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
}
pub(super) fn add64_imm(dst: Reg, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm)
}
/// 32-bit `dst = (dst << imm)`, `dst = (dst >> imm)`, `dst ^= src`.
pub(super) fn lsh32_imm(dst: Reg, imm: i32) -> Insn {
    insn(BPF_ALU | BPF_LSH | BPF_K, dst, 0, 0, imm)
}
pub(super) fn rsh32_imm(dst: Reg, imm: i32) -> Insn {
    insn(BPF_ALU | BPF_RSH | BPF_K, dst, 0, 0, imm)
}
pub(super) fn xor32_reg(dst: Reg, src: Reg) -> Insn {
    insn(BPF_ALU | BPF_XOR | BPF_X, dst, src, 0, 0)
}
pub(super) fn or64_imm(dst: Reg, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_OR | BPF_K, dst, 0, 0, imm)
}
pub(super) fn and64_imm(dst: Reg, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_AND | BPF_K, dst, 0, 0, imm)
}
pub(super) fn lsh64_imm(dst: Reg, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_LSH | BPF_K, dst, 0, 0, imm)
}
pub(super) fn rsh64_imm(dst: Reg, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_RSH | BPF_K, dst, 0, 0, imm)
}
pub(super) fn add64_reg(dst: Reg, src: Reg) -> Insn {
    insn(BPF_ALU64 | BPF_ADD | BPF_X, dst, src, 0, 0)
}
pub(super) fn sub64_reg(dst: Reg, src: Reg) -> Insn {
    insn(BPF_ALU64 | BPF_SUB | BPF_X, dst, src, 0, 0)
}
/// `dst = imm` for a full 64-bit immediate (two instruction slots).
pub(super) fn ld_imm64(dst: Reg, imm: u64) -> [Insn; 2] {
    [insn(BPF_LD | BPF_DW | BPF_IMM, dst, 0, 0, imm as u32 as i32), insn(0, 0, 0, 0, (imm >> 32) as u32 as i32)]
}
/// `dst = &map` (the verifier rewrites the fd into a map pointer).
pub(super) fn ld_map_fd(dst: Reg, fd: RawFd) -> [Insn; 2] {
    [insn(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd), insn(0, 0, 0, 0, 0)]
}
/// `dst = *(size *)(src + off)`
pub(super) fn ldx_mem(size: u8, dst: Reg, src: Reg, off: i16) -> Insn {
    insn(BPF_LDX | size | BPF_MEM, dst, src, off, 0)
}
/// `*(size *)(dst + off) = src`
pub(super) fn stx_mem(size: u8, dst: Reg, src: Reg, off: i16) -> Insn {
    insn(BPF_STX | size | BPF_MEM, dst, src, off, 0)
}
/// `*(size *)(dst + off) = imm` (sign-extended to the size)
pub(super) fn st_mem(size: u8, dst: Reg, off: i16, imm: i32) -> Insn {
    insn(BPF_ST | size | BPF_MEM, dst, 0, off, imm)
}
/// `lock *(u64 *)(dst + off) += src`
pub(super) fn atomic_add64(dst: Reg, src: Reg, off: i16) -> Insn {
    insn(BPF_STX | BPF_DW | BPF_ATOMIC, dst, src, off, BPF_ADD as i32)
}
/// `lock *(u32 *)(dst + off) += src`
pub(super) fn atomic_add32(dst: Reg, src: Reg, off: i16) -> Insn {
    insn(BPF_STX | BPF_W | BPF_ATOMIC, dst, src, off, BPF_ADD as i32)
}
/// `src = atomic_fetch_add((u64 *)(dst + off), src)`
pub(super) fn atomic_fetch_add64(dst: Reg, src: Reg, off: i16) -> Insn {
    insn(BPF_STX | BPF_DW | BPF_ATOMIC, dst, src, off, BPF_ADD as i32 | BPF_FETCH)
}
pub(super) fn call(helper: i32) -> Insn {
    insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper)
}
pub(super) fn exit() -> Insn {
    insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}

/// A forward/backward jump target, resolved by [`Asm::finish`].
#[derive(Clone, Copy)]
pub(super) struct Label(usize);

/// Instruction buffer with labels for jumps.
#[derive(Default)]
pub(super) struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    pub(super) fn emit(&mut self, insns: &[Insn]) {
        self.insns.extend_from_slice(insns);
    }
    pub(super) fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    pub(super) fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }
    /// `if dst <op> imm goto l` (64-bit compare; BPF_JA ignores dst/imm).
    pub(super) fn jmp_imm(&mut self, op: u8, dst: Reg, imm: i32, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.insns.push(insn(BPF_JMP | op | BPF_K, dst, 0, 0, imm));
    }
    /// `if dst <op> src goto l`
    pub(super) fn jmp_reg(&mut self, op: u8, dst: Reg, src: Reg, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.insns.push(insn(BPF_JMP | op | BPF_X, dst, src, 0, 0));
    }
    pub(super) fn ja(&mut self, l: Label) {
        self.jmp_imm(BPF_JA, 0, 0, l);
    }
    pub(super) fn finish(mut self) -> Vec<Insn> {
        for &(at, l) in &self.fixups {
            let target = self.labels[l.0].expect("unbound label");
            let off = target as isize - (at as isize + 1);
            self.insns[at].off = i16::try_from(off).expect("jump too far");
        }
        self.insns
    }
}
