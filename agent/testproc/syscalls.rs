//! A syscall profile's target with exact counts: `osl-syscalls [GETPPID OPENAT]`;
//! or a benchmark's: `osl-syscalls pipes FDS N` (see [`pipes`]).
//!
//! Prints `ready PID`, then obeys stdin lines:
//! - `go`: 4 threads (created at startup) together make exactly GETPPID (2000) `getppid`
//!   and OPENAT (500) `openat` of a nonexistent path (ENOENT), then it prints `done`;
//! - `sigs`: prints `usr1 N rt M`, the numbers of SIGUSR1 and SIGRTMIN handled so far;
//! - `exec`: a non-leader thread execs `/bin/sh`, which prints `execed` and exits 0 at stdin EOF;
//! - `fdio N M K MS PATH`: fills a pipe with N bytes, writes M bytes to the file PATH and opens
//!   it, connects a TCP socket to a listener whose peer thread answers each byte after MS
//!   milliseconds, prints `fdio PIPE FILE TCP` (the fd numbers), and on the next line (`run`)
//!   reads the pipe N times and the file M times a byte at a time, then K times writes a byte
//!   to the socket and reads the answer, and prints `done`.
//!
//! Exits 0 at stdin EOF.

#![allow(clippy::unwrap_used)] // test code: an unwrap that fails is a test that fails
#![allow(unsafe_code)] // raw syscalls and signal handlers: that is the point of it

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

const THREADS: usize = 4;

static USR1: AtomicU64 = AtomicU64::new(0);
static RTMIN: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    let counter = if sig == libc::SIGUSR1 { &USR1 } else { &RTMIN };
    counter.fetch_add(1, Ordering::Relaxed);
}

fn work(getppid: usize, openat: usize) {
    let path = c"/nonexistent/osl-ptrace-workload";
    let per_thread = getppid / THREADS;
    let open_every = getppid / openat;
    for i in 0..per_thread {
        // SAFETY: getppid takes no arguments.
        unsafe { libc::syscall(libc::SYS_getppid) };
        if i % open_every == 0 {
            // SAFETY: openat reads a valid NUL-terminated path.
            let ret = unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY) };
            assert_eq!(ret, -1);
            assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENOENT));
        }
    }
}

/// `osl-syscalls pipes FDS N`: opens FDS pipes, prints `ready`, waits for a line on stdin,
/// then N times writes a byte to one pipe and reads it back, going round the pipes (2N
/// syscalls on 2×FDS fds), and prints `done SECONDS`.
fn pipes(fds: usize, n: usize) {
    use std::io::{Read, Write};
    let mut pipes: Vec<_> = (0..fds).map(|_| std::io::pipe().expect("a pipe")).collect();
    println!("ready");
    std::io::stdin().read_line(&mut String::new()).unwrap();
    let start = std::time::Instant::now();
    let mut byte = [0u8; 1];
    for i in 0..n {
        let (r, w) = &mut pipes[i % fds];
        w.write_all(b"x").unwrap();
        r.read_exact(&mut byte).unwrap();
    }
    println!("done {:.6}", start.elapsed().as_secs_f64());
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("pipes") {
        let arg = |i: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).expect("pipes FDS N");
        return pipes(arg(2), arg(3));
    }
    let arg = |i: usize, default: usize| std::env::args().nth(i).map_or(default, |a| a.parse().expect("a count"));
    let (getppid, openat) = (arg(1, 2000), arg(2, 500));
    assert!(
        getppid.is_multiple_of(THREADS)
            && openat > 0
            && getppid.is_multiple_of(openat)
            && (getppid / THREADS).is_multiple_of(getppid / openat)
    );
    for sig in [libc::SIGUSR1, libc::SIGRTMIN()] {
        // SAFETY: the handler only touches atomics; SA_RESTART keeps reads on stdin going.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
        }
    }
    let start = Arc::new(Barrier::new(THREADS + 1));
    let mut workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                work(getppid, openat);
            })
        })
        .collect();

    let mut out = std::io::stdout();
    writeln!(out, "ready {}", std::process::id()).unwrap();
    out.flush().unwrap();
    let mut fdio_work: Option<Box<dyn FnOnce()>> = None;
    for line in std::io::stdin().lock().lines() {
        match line.unwrap().trim() {
            "go" if !workers.is_empty() => {
                start.wait();
                workers.drain(..).for_each(|w| w.join().unwrap());
                writeln!(out, "done").unwrap();
            }
            "sigs" => {
                writeln!(out, "usr1 {} rt {}", USR1.load(Ordering::Relaxed), RTMIN.load(Ordering::Relaxed)).unwrap()
            }
            cmd if cmd.starts_with("fdio ") => fdio_work = Some(fdio(cmd, &mut out)),
            "run" => {
                if let Some(work) = fdio_work.take() {
                    work();
                    writeln!(out, "done").unwrap();
                }
            }
            "exec" => {
                thread::spawn(|| {
                    let sh = c"/bin/sh";
                    let script = c"echo execed; read x; exit 0";
                    let argv = [c"sh".as_ptr(), c"-c".as_ptr(), script.as_ptr(), std::ptr::null()];
                    // SAFETY: NUL-terminated strings and a NULL-terminated argv, all 'static.
                    unsafe { libc::execv(sh.as_ptr(), argv.as_ptr()) };
                    panic!("execv: {}", std::io::Error::last_os_error());
                });
            }
            _ => {}
        }
        out.flush().unwrap();
    }
}

/// Sets up `fdio` and returns its work, for `run`.
fn fdio(cmd: &str, out: &mut std::io::Stdout) -> Box<dyn FnOnce()> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
    let num = |i: usize| -> usize { args[i].parse().expect("a count") };
    let (n, m, k, ms, path) = (num(0), num(1), num(2), num(3) as u64, args[4]);
    let (mut pipe_r, mut pipe_w) = std::io::pipe().unwrap();
    pipe_w.write_all(&vec![b'p'; n]).unwrap();
    std::fs::write(path, vec![b'f'; m]).unwrap();
    let mut file = std::fs::File::open(path).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    thread::spawn(move || {
        let mut byte = [0u8; 1];
        while peer.read(&mut byte).is_ok_and(|n| n == 1) {
            thread::sleep(std::time::Duration::from_millis(ms));
            peer.write_all(b"a").unwrap();
        }
    });
    writeln!(out, "fdio {} {} {}", pipe_r.as_raw_fd(), file.as_raw_fd(), tcp.as_raw_fd()).unwrap();
    Box::new(move || {
        let mut byte = [0u8; 1];
        for _ in 0..n {
            pipe_r.read_exact(&mut byte).unwrap();
        }
        for _ in 0..m {
            file.read_exact(&mut byte).unwrap();
        }
        for _ in 0..k {
            tcp.write_all(b"q").unwrap();
            tcp.read_exact(&mut byte).unwrap();
        }
    })
}
