//! Tunes glibc's malloc for a process with a hard memory limit (the chart's 64
//! MiB). By default glibc gives each thread that allocates an arena of its own
//! (up to eight a core) and keeps what a thread frees in that arena for reuse;
//! and after a large block is freed it raises its mmap threshold (up to 32 MiB),
//! so later large blocks come from the arenas and stay there too. The agent
//! reads on many short-lived threads (a large fd table on four, a snapshot's
//! processes on sixteen), so one request after another, each on other threads,
//! grew its RSS by the size of a snapshot each (12 → 24 → 31 → 36 MiB for four
//! sequential Diagnose calls of a 17,000-fd pod), and fifty clients got it
//! OOM-killed. Two arenas and a fixed 128 KiB mmap threshold (large blocks are
//! mapped and unmapped, never retained) keep it flat; free memory at the top of
//! a heap beyond 256 KiB goes back to the kernel.
//!
//! This is the only `unsafe` outside the kernel interfaces: `mallopt(3)` has no
//! safe wrapper in libc, nix or rustix.

/// Call before any other thread is started.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets malloc parameters (integers); it is called before
    // the runtime starts threads, and an unknown parameter is reported by its
    // return value, not undefined behaviour.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024);
    }
}
