//! Names as strace prints them: syscalls of this machine's architecture
//! (`syscall_0x…` when unknown) and errnos (`ENOENT`, the kernel-internal
//! `ERESTARTSYS` family included).

/// The architecture whose syscall numbers the agent sees.
pub const ARCH: &str = std::env::consts::ARCH;

pub fn syscall(nr: u32) -> String {
    #[cfg(target_arch = "x86_64")]
    let known = syscalls::x86_64::Sysno::new(nr as usize).map(|s| s.name());
    #[cfg(target_arch = "aarch64")]
    let known = syscalls::aarch64::Sysno::new(nr as usize).map(|s| s.name());
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let known: Option<&str> = None;
    known.map_or_else(|| format!("syscall_{nr:#x}"), str::to_string)
}

/// A syscall's number on this architecture, by strace's name.
pub fn syscall_number(name: &str) -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    return name.parse::<syscalls::x86_64::Sysno>().ok().map(|s| s.id() as u32);
    #[cfg(target_arch = "aarch64")]
    return name.parse::<syscalls::aarch64::Sysno>().ok().map(|s| s.id() as u32);
    #[allow(unreachable_code)]
    None
}

/// Syscalls whose first argument is an fd: a profile counts their time by fd.
const FD_FIRST: &[&str] = &[
    "read",
    "write",
    "close",
    "fstat",
    "lseek",
    "ioctl",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "sendfile",
    "connect",
    "accept",
    "accept4",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "bind",
    "listen",
    "getsockname",
    "getpeername",
    "setsockopt",
    "getsockopt",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "ftruncate",
    "fallocate",
    "sync_file_range",
    "syncfs",
    "getdents",
    "getdents64",
    "fchdir",
    "fchmod",
    "fchown",
    "fstatfs",
    "fadvise64",
    "readahead",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_ctl",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "splice",
    "tee",
    "vmsplice",
    "copy_file_range",
    "timerfd_settime",
    "timerfd_gettime",
    "fgetxattr",
    "fsetxattr",
    "flistxattr",
    "fremovexattr",
    "inotify_add_watch",
    "inotify_rm_watch",
    "io_uring_enter",
];

/// The numbers of [`FD_FIRST`] on this architecture (the ones it has).
pub fn fd_first_numbers() -> Vec<u32> {
    FD_FIRST.iter().filter_map(|n| syscall_number(n)).collect()
}

/// Whether syscall `nr` takes an fd as its first argument.
pub fn takes_fd(nr: u32) -> bool {
    static SET: std::sync::OnceLock<std::collections::HashSet<u32>> = std::sync::OnceLock::new();
    SET.get_or_init(|| fd_first_numbers().into_iter().collect()).contains(&nr)
}

/// A syscall that, when it succeeds, ends what its first argument's fd was
/// (`close`), or what its second's was (`dup2`, `dup3`: the fd they replace).
pub fn ends_fd(nr: u32) -> Option<usize> {
    static NRS: std::sync::OnceLock<[Option<u32>; 3]> = std::sync::OnceLock::new();
    let [close, dup2, dup3] = NRS.get_or_init(|| ["close", "dup2", "dup3"].map(syscall_number));
    if Some(nr) == *close {
        Some(0)
    } else if Some(nr) == *dup2 || Some(nr) == *dup3 {
        Some(1)
    } else {
        None
    }
}

pub fn errno(e: u32) -> String {
    // Only ever seen by tracers: a syscall interrupted by a signal, restarted.
    match e {
        512 => return "ERESTARTSYS".into(),
        513 => return "ERESTARTNOINTR".into(),
        514 => return "ERESTARTNOHAND".into(),
        516 => return "ERESTART_RESTARTBLOCK".into(),
        _ => {}
    }
    syscalls::Errno::new(e as i32).name().map_or_else(|| format!("errno_{e}"), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_names() {
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(syscall(110), "getppid");
            assert_eq!(syscall(257), "openat");
            assert_eq!(syscall_number("openat"), Some(257));
        }
        assert_eq!(syscall(0x7ff), "syscall_0x7ff");
        assert_eq!(syscall_number("no_such_call"), None);
        assert_eq!(errno(2), "ENOENT");
        assert_eq!(errno(11), "EAGAIN");
        assert_eq!(errno(512), "ERESTARTSYS");
        assert_eq!(errno(4000), "errno_4000");
        assert!(takes_fd(syscall_number("read").unwrap()) && !takes_fd(syscall_number("openat").unwrap()));
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(fd_first_numbers().len(), FD_FIRST.len(), "every name is one of x86_64's");
            assert_eq!((ends_fd(3), ends_fd(33), ends_fd(0)), (Some(0), Some(1), None));
        }
    }
}
