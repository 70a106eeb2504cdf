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
    }
}
