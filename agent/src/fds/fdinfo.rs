//! Pure parsers for /proc/PID/fdinfo/N and the link targets of /proc/PID/fd/N, as
//! fs/proc/fd.c, fs/eventfd.c, fs/eventpoll.c, fs/timerfd.c, fs/signalfd.c,
//! fs/notify/fdinfo.c and kernel/pid.c print them.

use crate::model::{FdInfo, FdKind, InotifyWatch, Timerfd};

/// What a link target says about the fd, before any stat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Socket(u64),
    Pipe,
    Anon(FdKind),
    Memfd,
    /// A path: its type needs a stat.
    Path,
}

/// Splits " (deleted)" off a path target and classifies it.
pub fn classify(target: &[u8]) -> (Target, &[u8], bool) {
    if let Some(ino) = target.strip_prefix(b"socket:[").and_then(|r| r.strip_suffix(b"]")) {
        let inode = std::str::from_utf8(ino).ok().and_then(|s| s.parse().ok());
        return match inode {
            Some(i) => (Target::Socket(i), target, false),
            None => (Target::Anon(FdKind::Other), target, false),
        };
    }
    if target.starts_with(b"pipe:[") {
        return (Target::Pipe, target, false);
    }
    if let Some(name) = target.strip_prefix(b"anon_inode:") {
        let kind = match name {
            b"[eventfd]" => FdKind::Eventfd,
            b"[eventpoll]" => FdKind::Epoll,
            b"[timerfd]" => FdKind::Timerfd,
            b"[signalfd]" => FdKind::Signalfd,
            b"inotify" => FdKind::Inotify,
            b"[fanotify]" => FdKind::Fanotify,
            b"[pidfd]" => FdKind::Pidfd,
            b"[io_uring]" => FdKind::IoUring,
            _ => FdKind::AnonInode,
        };
        return (Target::Anon(kind), target, false);
    }
    // Since Linux 6.9 pidfds live on pidfs and read "pidfd:[ino]" on some configurations.
    if target.starts_with(b"pidfd:") {
        return (Target::Anon(FdKind::Pidfd), target, false);
    }
    let (path, deleted) = match target.strip_suffix(b" (deleted)") {
        Some(p) => (p, true),
        None => (target, false),
    };
    if path.starts_with(b"/memfd:") {
        return (Target::Memfd, path, deleted);
    }
    (Target::Path, path, deleted)
}

/// The `key:\tvalue` lines of an fdinfo file and the kind-specific ones.
pub fn parse(bytes: &[u8]) -> Result<FdInfo, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut info = FdInfo::default();
    let mut timer = TimerLines::default();
    for line in text.lines() {
        // io_uring and others print lines of their own shape: skip what is not `key: value`.
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        let bad = || format!("bad {key}: {value:?}");
        match key {
            // %lld: negative for /proc/PID/mem and the like, where it is no offset.
            "pos" => info.pos = u64::try_from(value.parse::<i64>().map_err(|_| bad())?).ok(),
            "flags" => info.flags = Some(u32::from_str_radix(value, 8).map_err(|_| bad())?),
            "mnt_id" => info.mnt_id = Some(value.parse().map_err(|_| bad())?),
            "ino" => info.inode = Some(value.parse().map_err(|_| bad())?),
            "eventfd-count" => info.eventfd_count = Some(u64::from_str_radix(value, 16).map_err(|_| bad())?),
            "tfd" => info.epoll_targets.push(epoll_line(line).ok_or_else(bad)?),
            "clockid" => timer.clockid = Some(value.parse().map_err(|_| bad())?),
            "ticks" => timer.ticks = Some(value.parse().map_err(|_| bad())?),
            "it_value" => timer.value = Some(timespec(value).ok_or_else(bad)?),
            "it_interval" => timer.interval = Some(timespec(value).ok_or_else(bad)?),
            "sigmask" => info.signalfd_mask = Some(u64::from_str_radix(value, 16).map_err(|_| bad())?),
            "inotify wd" => info.inotify_watches.push(inotify_line(line).ok_or_else(bad)?),
            "Pid" => info.pidfd_pid = Some(value.parse().map_err(|_| bad())?),
            _ => {}
        }
    }
    if let (Some(clockid), Some(ticks), Some(value_nsec), Some(interval_nsec)) =
        (timer.clockid, timer.ticks, timer.value, timer.interval)
    {
        info.timerfd = Some(Timerfd { clockid, ticks, value_nsec, interval_nsec });
    }
    Ok(info)
}

#[derive(Default)]
struct TimerLines {
    clockid: Option<i32>,
    ticks: Option<u64>,
    value: Option<u64>,
    interval: Option<u64>,
}

/// `(sec, nsec)` → nanoseconds.
fn timespec(v: &str) -> Option<u64> {
    let (s, ns) = v.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
    s.trim().parse::<u64>().ok()?.checked_mul(1_000_000_000)?.checked_add(ns.trim().parse().ok()?)
}

/// Space-separated `key: value` or `key:value` pairs after a leading tag.
fn pairs(line: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut words = line.split_whitespace().peekable();
    std::iter::from_fn(move || {
        loop {
            let w = words.next()?;
            if let Some((k, v)) = w.split_once(':') {
                if !v.is_empty() {
                    return Some((k, v));
                }
                return Some((k, words.next()?));
            }
        }
    })
}

/// `tfd:        5 events:       19 data:                5  pos:0 ino:8 sdev:f`
fn epoll_line(line: &str) -> Option<(i32, u32)> {
    let mut fd = None;
    let mut events = None;
    for (k, v) in pairs(line) {
        match k {
            "tfd" => fd = v.parse().ok(),
            "events" => events = u32::from_str_radix(v, 16).ok(),
            _ => {}
        }
    }
    Some((fd?, events?))
}

/// `inotify wd:1 ino:3c4a7 sdev:fe00000 mask:fff ignored_mask:0 …` (hex numbers).
fn inotify_line(line: &str) -> Option<InotifyWatch> {
    let (mut wd, mut inode, mut mask) = (None, None, None);
    for (k, v) in pairs(line.strip_prefix("inotify ")?) {
        match k {
            "wd" => wd = i32::from_str_radix(v, 16).ok(),
            "ino" => inode = u64::from_str_radix(v, 16).ok(),
            "mask" => mask = u32::from_str_radix(v, 16).ok(),
            _ => {}
        }
    }
    Some(InotifyWatch { wd: wd?, inode: inode?, mask: mask? })
}

/// The kernel sets O_LARGEFILE on every 64-bit open; glibc defines it as 0 there,
/// so its kernel value is spelled out.
#[cfg(target_arch = "aarch64")]
const KERNEL_O_LARGEFILE: i32 = 0o400000;
#[cfg(not(target_arch = "aarch64"))]
const KERNEL_O_LARGEFILE: i32 = 0o100000;

/// open(2) flags as fdinfo shows them (octal there), by name. The access mode is
/// always first.
pub fn flag_names(flags: u32) -> Vec<&'static str> {
    let flags = flags as i32;
    let mut names = vec![match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        _ => "O_RDWR",
    }];
    // O_SYNC includes O_DSYNC's bit: name it once.
    let named: &[(i32, &str)] = &[
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_NOCTTY, "O_NOCTTY"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_SYNC, "O_SYNC"),
        (libc::O_ASYNC, "O_ASYNC"),
        (libc::O_DIRECT, "O_DIRECT"),
        (KERNEL_O_LARGEFILE, "O_LARGEFILE"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_NOATIME, "O_NOATIME"),
        (libc::O_CLOEXEC, "O_CLOEXEC"),
        (libc::O_PATH, "O_PATH"),
    ];
    let mut seen = 0;
    for &(bit, name) in named {
        if bit != 0 && flags & bit == bit && seen & bit != bit {
            names.push(name);
            seen |= bit;
        }
    }
    if flags & libc::O_DSYNC == libc::O_DSYNC && seen & libc::O_DSYNC == 0 {
        names.push("O_DSYNC");
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(classify(b"socket:[43210]").0, Target::Socket(43210));
        assert_eq!(classify(b"pipe:[74835]").0, Target::Pipe);
        assert_eq!(classify(b"anon_inode:[eventpoll]").0, Target::Anon(FdKind::Epoll));
        assert_eq!(classify(b"anon_inode:inotify").0, Target::Anon(FdKind::Inotify));
        assert_eq!(classify(b"anon_inode:[io_uring]").0, Target::Anon(FdKind::IoUring));
        assert_eq!(classify(b"anon_inode:bpf-map").0, Target::Anon(FdKind::AnonInode));
        assert_eq!(classify(b"/memfd:my buf (deleted)"), (Target::Memfd, &b"/memfd:my buf"[..], true));
        assert_eq!(classify(b"/var/log/x.log (deleted)"), (Target::Path, &b"/var/log/x.log"[..], true));
        assert_eq!(classify(b"/data/a\nb\xff"), (Target::Path, &b"/data/a\nb\xff"[..], false));
        assert_eq!(classify(b"socket:[nope]").0, Target::Anon(FdKind::Other));
    }

    #[test]
    fn fdinfo_of_each_kind() {
        let eventfd = parse(b"pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\neventfd-count:                a\neventfd-id: 1\neventfd-semaphore: 0\n").unwrap();
        assert_eq!(
            (eventfd.pos, eventfd.flags, eventfd.mnt_id, eventfd.inode),
            (Some(0), Some(0o2000002), Some(17), Some(1038))
        );
        assert_eq!(eventfd.eventfd_count, Some(10));
        let epoll = parse(b"pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\ntfd:        5 events:       1f data:                5  pos:0 ino:120cd sdev:f\ntfd:        3 events:       19 data:                3  pos:0 ino:40e sdev:10\n").unwrap();
        assert_eq!(epoll.epoll_targets, [(5, 0x1f), (3, 0x19)]);
        let timer = parse(b"pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\nclockid: 1\nticks: 3\nsettime flags: 00\nit_value: (0, 999745208)\nit_interval: (1, 500)\n").unwrap();
        assert_eq!(
            timer.timerfd,
            Some(Timerfd { clockid: 1, ticks: 3, value_nsec: 999745208, interval_nsec: 1_000_000_500 })
        );
        let sig = parse(b"pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\nsigmask:\t0000000000004002\n").unwrap();
        assert_eq!(sig.signalfd_mask, Some(0x4002));
        let ino = parse(b"pos:\t0\nflags:\t00\nmnt_id:\t17\nino:\t1038\ninotify wd:1a ino:3c4a7 sdev:fe00000 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000\n").unwrap();
        assert_eq!(ino.inotify_watches, [InotifyWatch { wd: 0x1a, inode: 0x3c4a7, mask: 0xfff }]);
        let pidfd = parse(b"pos:\t0\nflags:\t02000002\nmnt_id:\t4\nino:\t82228\nPid:\t-1\nNSpid:\t-1\n").unwrap();
        assert_eq!(pidfd.pidfd_pid, Some(-1));
    }

    #[test]
    fn garbage_fdinfo_is_an_error() {
        for bad in [&b"flags:\t09\n"[..], b"pos:\tx\n", b"tfd: x events: 1\n", b"it_value: (1 2)\n", b"\xff"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(b"").unwrap(), FdInfo::default());
        let uring =
            parse(b"pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1\nSqMask:\t0x3\nSQEs:\t0\n  op=1, task_works=0\n")
                .unwrap();
        assert_eq!(uring.flags, Some(0o2000002), "odd lines are skipped");
        assert_eq!(parse(b"pos:\t-4096\nflags:\t02\n").unwrap().pos, None, "a negative pos is no offset");
    }

    #[test]
    fn open_flags() {
        assert_eq!(flag_names(0o2004002), ["O_RDWR", "O_NONBLOCK", "O_CLOEXEC"]);
        assert_eq!(flag_names(0o100000), ["O_RDONLY", "O_LARGEFILE"]);
        assert_eq!(flag_names(0o4010001), ["O_WRONLY", "O_SYNC"]);
        assert_eq!(flag_names(0o10001), ["O_WRONLY", "O_DSYNC"]);
        assert_eq!(flag_names(0o2002), ["O_RDWR", "O_APPEND"]);
    }
}
