//! The `bpf(2)` syscall: maps, program loads, raw tracepoint attachment. The only
//! file of the ebpf module with `unsafe` (see the module's doc for why).

use super::asm::{Insn, R0, exit, mov64_imm};
use std::ffi::CStr;
use std::fmt;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

pub(super) const NEEDS: &str = "needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), and bpf() allowed by seccomp";

/// Maps an errno from bpf() to a `BpfError`, naming the missing privilege on EPERM/EACCES.
pub(super) fn bpf_err(what: &str, e: io::Error) -> BpfError {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => BpfError::PermissionDenied(format!("{what}: {e}; {NEEDS}")),
        _ => BpfError::Io { what: what.to_string(), source: e },
    }
}

pub(super) const BPF_MAP_CREATE: u32 = 0;
pub(super) const BPF_MAP_LOOKUP_ELEM: u32 = 1;
pub(super) const BPF_MAP_UPDATE_ELEM: u32 = 2;
pub(super) const BPF_MAP_DELETE_ELEM: u32 = 3;
pub(super) const BPF_MAP_GET_NEXT_KEY: u32 = 4;
pub(super) const BPF_PROG_LOAD: u32 = 5;
pub(super) const BPF_RAW_TRACEPOINT_OPEN: u32 = 17;

pub(super) const BPF_MAP_TYPE_HASH: u32 = 1;
pub(super) const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub(super) const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
pub(super) const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
/// A hash map that allocates entries as they are inserted, not all at creation:
/// the kernel charges map memory to the agent's cgroup.
pub(super) const BPF_F_NO_PREALLOC: u32 = 1;

/// `union bpf_attr` for BPF_MAP_CREATE (prefix up to map_name).
#[repr(C)]
#[derive(Default)]
pub(super) struct MapCreateAttr {
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
pub(super) struct MapElemAttr {
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
pub(super) struct ProgLoadAttr {
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
pub(super) struct RawTracepointAttr {
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
pub(super) unsafe fn sys_bpf<T>(cmd: u32, attr: &mut T) -> io::Result<libc::c_long> {
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
pub(super) unsafe fn sys_bpf_fd<T>(cmd: u32, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: the caller upholds sys_bpf's contract.
    let fd = unsafe { sys_bpf(cmd, attr) }?;
    // SAFETY: the kernel just created this descriptor for us; nothing else owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub(super) fn obj_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// A map with its key and value sizes, so that element access can check buffer sizes.
pub(super) struct Map {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl Map {
    pub(super) fn create(name: &str, map_type: u32, key: u32, value: u32, max: u32) -> Result<Map, BpfError> {
        Self::create_with(name, map_type, key, value, max, 0)
    }

    pub(super) fn create_with(
        name: &str,
        map_type: u32,
        key: u32,
        value: u32,
        max: u32,
        map_flags: u32,
    ) -> Result<Map, BpfError> {
        let mut attr = MapCreateAttr {
            map_type,
            map_flags,
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

    pub(super) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(super) fn update(&self, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
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
    pub(super) fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
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
    pub(super) fn keys(&self) -> io::Result<Vec<Vec<u8>>> {
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

    /// Ok(false) if the key was absent.
    pub(super) fn delete(&self, key: &[u8]) -> io::Result<bool> {
        assert!(key.len() == self.key_size);
        let mut attr = MapElemAttr { map_fd: self.raw() as u32, key: key.as_ptr() as u64, ..Default::default() };
        // SAFETY: key is a live buffer of the map's key size, read by the kernel.
        match unsafe { sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// All (key, value) pairs.
    pub(super) fn entries(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
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

pub(super) const LOG_SIZE: usize = 1 << 20;
pub(super) const LOG_TAIL: usize = 4000;

/// One BPF_PROG_LOAD of a raw-tracepoint program, with the verifier log in `log` if given.
pub(super) fn prog_load(name: &str, insns: &[Insn], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
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
pub(super) fn load_program(name: &str, insns: &[Insn]) -> Result<OwnedFd, BpfError> {
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

pub(super) fn attach_raw_tracepoint(tp: &CStr, prog: &OwnedFd) -> Result<OwnedFd, BpfError> {
    raw_tracepoint_open(tp, prog).map_err(|e| bpf_err(&format!("attaching to raw tracepoint {tp:?}"), e))
}

pub(super) fn raw_tracepoint_open(tp: &CStr, prog: &OwnedFd) -> io::Result<OwnedFd> {
    let mut attr =
        RawTracepointAttr { name: tp.as_ptr() as u64, prog_fd: prog.as_raw_fd() as u32, ..Default::default() };
    // SAFETY: name points to a live NUL-terminated string, read by the kernel.
    unsafe { sys_bpf_fd(BPF_RAW_TRACEPOINT_OPEN, &mut attr) }
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

/// Tries, for real, what [`super::Counter::attach`] needs — a map, a raw-tracepoint program,
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

/// Whether a BPF object with this id still exists (BPF_*_GET_FD_BY_ID), for the tests.
#[cfg(test)]
pub(super) fn object_exists(cmd: u32, id: u32) -> bool {
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
