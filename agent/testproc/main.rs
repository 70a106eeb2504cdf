//! osl-testproc: a child with known state for osl's integration tests.
//!
//!   osl-testproc anon MIB           touch MIB of anonymous memory
//!   osl-testproc cow CHILDREN MIB   touch MIB, then fork CHILDREN that share it copy-on-write
//!   osl-testproc fds N [NOFILE]     lower RLIMIT_NOFILE to NOFILE, then hold N more fds open
//!
//! It prints `ready` (with `cow`: `ready PID…`) once its state is in place, then
//! obeys stdin: `alloc MIB` touches more memory and answers `ok`; EOF ends it.
//! Not part of the product: the agent image builds `--bin osl-agent` only.

// fork(2) is the only way to make pages shared copy-on-write; it is used before
// any thread exists and the child only sleeps.
#![allow(unsafe_code)]

use std::io::{BufRead, Write};

const MIB: usize = 1024 * 1024;

fn main() {
    // Start from exactly stdin, stdout and stderr: test runners leak descriptors.
    // SAFETY: nothing in this process owns a descriptor above 2 yet.
    unsafe { libc::close_range(3, u32::MAX, 0) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> usize { args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| usage()) };
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut files = Vec::new();
    let mut ready = String::from("ready");
    match args.first().map(String::as_str) {
        Some("anon") => held.push(touch(num(1))),
        Some("cow") => {
            held.push(touch(num(2)));
            for _ in 0..num(1) {
                // SAFETY: single-threaded here; the child calls only async-signal-safe functions.
                match unsafe { libc::fork() } {
                    0 => child_sleeps(),
                    -1 => panic!("fork failed: {}", std::io::Error::last_os_error()),
                    pid => ready.push_str(&format!(" {pid}")),
                }
            }
        }
        Some("fds") => {
            if let Some(limit) = args.get(2).and_then(|a| a.parse::<u64>().ok()) {
                let lim = rustix::process::Resource::Nofile;
                let hard = rustix::process::getrlimit(lim).maximum;
                rustix::process::setrlimit(lim, rustix::process::Rlimit { current: Some(limit), maximum: hard })
                    .expect("setrlimit");
            }
            for _ in 0..num(1) {
                files.push(std::fs::File::open("/dev/null").expect("open /dev/null"));
            }
        }
        _ => usage(),
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{ready}").and_then(|()| out.flush()).expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        if let Some(mib) = line.strip_prefix("alloc ").and_then(|m| m.trim().parse().ok()) {
            held.push(touch(mib));
            writeln!(out, "ok").and_then(|()| out.flush()).expect("stdout");
        }
    }
    drop((held, files));
}

/// MIB of anonymous memory, every page written.
fn touch(mib: usize) -> Vec<u8> {
    let mut v = vec![0u8; mib * MIB];
    for page in v.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(v)
}

fn child_sleeps() -> ! {
    // SAFETY: prctl and pause are async-signal-safe; the child dies with its parent.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        loop {
            libc::pause();
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: osl-testproc anon MIB | cow CHILDREN MIB | fds N [NOFILE]");
    std::process::exit(2)
}
