//! osl-testproc: a child with known state for osl's integration tests.
//!
//!   osl-testproc anon MIB           touch MIB of anonymous memory
//!   osl-testproc cow CHILDREN MIB   touch MIB, then fork CHILDREN that share it copy-on-write
//!   osl-testproc fds N [NOFILE]     lower RLIMIT_NOFILE to NOFILE, then hold N more fds open
//!   osl-testproc kinds PORT DIR     one fd of every common kind (see `kinds`); TCP to 127.0.0.1:PORT
//!   osl-testproc leak MS NOFILE     open a UDP socket every MS milliseconds, forever
//!   osl-testproc churn              open and close files as fast as it can, forever
//!   osl-testproc blockers           threads named reader, locker and sleeper blocked in
//!                                   read(2) on a pipe, futex(2) on a held mutex and a sleep
//!   osl-testproc many N             hold N fds: 35% files, 30% socketpair ends, 23% pipe ends,
//!                                   12% TCP connection ends (both ends of each connection)
//!   osl-testproc connect PORT       hold one TCP connection to 127.0.0.1:PORT (retried for 60 s
//!                                   until something listens), never reading it; ignores stdin
//!   osl-testproc eat MIBPS          touch MIBPS MiB a second from the start until killed;
//!                                   ignores stdin (for containers, whose stdin is /dev/null)
//!
//! It prints `ready` (with `cow`: `ready PID…`) once its state is in place, then
//! obeys stdin: `alloc MIB` touches more memory and answers `ok`; `grow MIBPS`
//! answers `ok` and then touches MIBPS MiB a second until it is killed; EOF ends it.
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
    let mut owned: Vec<Box<dyn std::any::Any>> = Vec::new();
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
                set_nofile(limit);
            }
            for _ in 0..num(1) {
                files.push(std::fs::File::open("/dev/null").expect("open /dev/null"));
            }
        }
        Some("kinds") => {
            let dir = std::path::PathBuf::from(args.get(2).unwrap_or_else(|| usage()));
            ready.push_str(&kinds(num(1) as u16, &dir, &mut owned));
        }
        Some("leak") => {
            set_nofile(num(2) as u64);
            let every = std::time::Duration::from_millis(num(1) as u64);
            std::thread::spawn(move || {
                let mut sockets = Vec::new();
                loop {
                    if let Ok(s) = std::net::UdpSocket::bind("127.0.0.1:0") {
                        sockets.push(s);
                    }
                    std::thread::sleep(every);
                }
            });
        }
        Some("churn") => {
            std::thread::spawn(|| {
                loop {
                    let opened: Vec<_> = (0..50).filter_map(|_| std::fs::File::open("/dev/null").ok()).collect();
                    drop(opened);
                }
            });
        }
        Some("many") => many(num(1), &mut owned),
        Some("blockers") => blockers(&mut owned),
        Some("connect") => {
            let stream = connect_retrying(num(1) as u16);
            ready.push_str(&format!(" {}", stream.local_addr().expect("local addr").port()));
            owned.push(Box::new(stream));
        }
        Some("eat") => {}
        _ => usage(),
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{ready}").and_then(|()| out.flush()).expect("stdout");
    match args[0].as_str() {
        "connect" => loop {
            std::thread::park();
        },
        "eat" => grow(&mut held, num(1) as u64),
        _ => {}
    }
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        if let Some(mib) = line.strip_prefix("alloc ").and_then(|m| m.trim().parse().ok()) {
            held.push(touch(mib));
            writeln!(out, "ok").and_then(|()| out.flush()).expect("stdout");
        } else if let Some(rate) = line.strip_prefix("grow ").and_then(|m| m.trim().parse::<u64>().ok()) {
            writeln!(out, "ok").and_then(|()| out.flush()).expect("stdout");
            grow(&mut held, rate);
        }
    }
    drop((held, files, owned));
}

/// Touches `rate` MiB a second until the process is killed.
fn grow(held: &mut Vec<Vec<u8>>, rate: u64) -> ! {
    let every = std::time::Duration::from_micros(1_000_000 / rate.max(1));
    let start = std::time::Instant::now();
    for n in 1u32.. {
        held.push(touch(1));
        if let Some(wait) = (every * n).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    unreachable!("grew 4 PiB")
}

fn connect_retrying(port: u16) -> std::net::TcpStream {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() > deadline => panic!("connect to 127.0.0.1:{port}: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

/// Three threads blocked where the blocked-on sampler must find them. The mutex
/// stays locked by this (main) thread for the process's life.
fn blockers(owned: &mut Vec<Box<dyn std::any::Any>>) {
    use std::io::Read;
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new().name(name.into()).spawn(f).expect("thread")
    };
    spawn(
        "reader",
        Box::new(move || {
            let mut buf = [0u8; 1];
            let _ = reader.read(&mut buf);
        }),
    );
    let lock: &'static std::sync::Mutex<()> = Box::leak(Box::new(std::sync::Mutex::new(())));
    let guard = lock.lock().expect("lock");
    spawn("locker", Box::new(move || drop(lock.lock())));
    spawn("sleeper", Box::new(|| std::thread::sleep(std::time::Duration::from_secs(3600))));
    std::mem::forget(guard);
    owned.push(Box::new(writer));
    // Let the threads reach their blocking calls.
    std::thread::sleep(std::time::Duration::from_millis(100));
}

fn set_nofile(limit: u64) {
    let lim = rustix::process::Resource::Nofile;
    let hard = rustix::process::getrlimit(lim).maximum;
    rustix::process::setrlimit(lim, rustix::process::Rlimit { current: Some(limit), maximum: hard })
        .expect("setrlimit");
}

/// One fd of every common kind, in this order: 5 files in DIR (one with a non-UTF-8
/// name, one with a newline, one unlinked after writing 12345 bytes), a pipe, an
/// eventfd (count 5), an epoll watching the eventfd and the pipe's read end, a
/// timerfd (1 s interval), a unix socketpair, a TCP listener, and 4 TCP connections
/// to 127.0.0.1:PORT. Returns " LISTEN_PORT LOCAL_PORT…" for the ready line.
fn kinds(port: u16, dir: &std::path::Path, owned: &mut Vec<Box<dyn std::any::Any>>) -> String {
    use std::ffi::OsStr;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    for name in [&b"a.txt"[..], b"b.log", b"bad\xff.log", b"new\nline.txt"] {
        let f = std::fs::File::create(dir.join(OsStr::from_bytes(name))).expect("create");
        owned.push(Box::new(f));
    }
    let gone = dir.join("gone.tmp");
    let mut f = std::fs::File::create(&gone).expect("create gone.tmp");
    f.write_all(&[7u8; 12345]).expect("write");
    std::fs::remove_file(&gone).expect("unlink");
    owned.push(Box::new(f));
    let (reader, writer) = std::io::pipe().expect("pipe");
    let efd = rustix::event::eventfd(5, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd");
    let epoll = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC).expect("epoll");
    for (fd, n) in [(rustix::fd::AsFd::as_fd(&efd), 1u64), (rustix::fd::AsFd::as_fd(&reader), 2)] {
        rustix::event::epoll::add(
            &epoll,
            fd,
            rustix::event::epoll::EventData::new_u64(n),
            rustix::event::epoll::EventFlags::IN,
        )
        .expect("epoll_ctl");
    }
    let timer =
        rustix::time::timerfd_create(rustix::time::TimerfdClockId::Monotonic, rustix::time::TimerfdFlags::CLOEXEC)
            .expect("timerfd");
    let second = rustix::time::Timespec { tv_sec: 1, tv_nsec: 0 };
    let spec = rustix::time::Itimerspec { it_interval: second, it_value: second };
    rustix::time::timerfd_settime(&timer, rustix::time::TimerfdTimerFlags::empty(), &spec).expect("timerfd_settime");
    let pair = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let mut ready = format!(" {}", listener.local_addr().expect("addr").port());
    owned.push(Box::new((reader, writer, efd, epoll, timer, pair, listener)));
    for _ in 0..4 {
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        ready.push_str(&format!(" {}", c.local_addr().expect("addr").port()));
        owned.push(Box::new(c));
    }
    ready
}

/// N fds of the kinds a busy server holds (the fd benchmark's target).
fn many(n: usize, owned: &mut Vec<Box<dyn std::any::Any>>) {
    set_nofile(n as u64 + 64);
    let files = n * 35 / 100;
    let pairs = n * 30 / 100 / 2;
    let pipes = n * 23 / 100 / 2;
    let conns = (n - files - 2 * pairs - 2 * pipes) / 2;
    for _ in 0..files {
        owned.push(Box::new(std::fs::File::open("/dev/null").expect("open")));
    }
    for _ in 0..pairs {
        owned.push(Box::new(std::os::unix::net::UnixStream::pair().expect("socketpair")));
    }
    for _ in 0..pipes {
        owned.push(Box::new(std::io::pipe().expect("pipe")));
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    for _ in 0..conns {
        let c = std::net::TcpStream::connect(addr).expect("connect");
        let (s, _) = listener.accept().expect("accept");
        owned.push(Box::new((c, s)));
    }
    owned.push(Box::new(listener));
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
    eprintln!(
        "usage: osl-testproc anon MIB | cow CHILDREN MIB | fds N [NOFILE] | kinds PORT DIR | leak MS NOFILE | churn | many N | blockers | connect PORT | eat MIBPS"
    );
    std::process::exit(2)
}
