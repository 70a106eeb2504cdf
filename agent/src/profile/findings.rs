//! Verdicts from a syscall profile: error storms (an errno repeated thousands of
//! times), time dominated by futex waits, a syscall rate high enough to cost, a
//! thread whose time goes to one fd, and a syscall with a long latency tail.

use super::summary::{FdStat, Stat, Summary};
use crate::model::FdKind;
use crate::model::{Finding, Severity};
use osl_proto::units::duration_ns;
use std::time::Duration;

/// Errors fewer than this, or rarer than this per second, are noise.
const STORM_MIN_ERRORS: u64 = 100;
const STORM_MIN_PER_SEC: f64 = 50.0;
/// Syscalls per second from which the rate itself is worth a look.
const HIGH_RATE_PER_SEC: f64 = 50_000.0;
const VERY_HIGH_RATE_PER_SEC: f64 = 200_000.0;
/// futex calls per second that mean contention rather than idle waiting.
const CONTENDED_FUTEX_PER_SEC: f64 = 1_000.0;
/// A thread's share of the profile's wall time on one fd that names that fd.
const SLOW_FD_SHARE: f64 = 0.5;
/// A tail: p99 this many times p50, over at least this many calls.
const TAIL_RATIO: u64 = 100;
const TAIL_MIN_CALLS: u64 = 1_000;
/// Syscalls that wait for something by design (a lock, an event, a child, a timer):
/// a long tail there is idle time, not a stall.
const WAITS: &[&str] = &[
    "futex",
    "futex_waitv",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "nanosleep",
    "clock_nanosleep",
    "accept",
    "accept4",
    "wait4",
    "waitid",
    "rt_sigtimedwait",
    "rt_sigsuspend",
    "pause",
    "io_getevents",
    "io_pgetevents",
    "io_uring_enter",
    "sched_yield",
];

/// `subject`: "pid 42 (java)" or "container 3f2a…"; `pid` when one process.
pub fn evaluate(s: &Summary, elapsed: Duration, subject: &str, pid: Option<i32>) -> Vec<Finding> {
    let secs = elapsed.as_secs_f64().max(0.001);
    let finding = |id, severity, message: String, evidence, next_step: String| Finding {
        id,
        severity,
        subject: subject.to_string(),
        pid,
        container_id: None,
        message,
        evidence,
        next_step,
    };
    let mut out = Vec::new();
    for stat in s.syscalls.iter().filter(|st| storm(st, secs)) {
        let (errno, n) = stat.errnos.first().cloned().unwrap_or_else(|| ("errors".into(), stat.errors));
        out.push(finding(
            "syscall.error_storm",
            Severity::Warn,
            format!(
                "{} failed {} of {} calls ({:.0}/s), {} of them {errno}",
                stat.name,
                stat.errors,
                stat.calls,
                stat.errors as f64 / secs,
                n
            ),
            vec![
                ("syscall", stat.name.clone()),
                ("errors", stat.errors.to_string()),
                ("calls", stat.calls.to_string()),
                ("errno", errno.clone()),
            ],
            storm_advice(&stat.name, &errno),
        ));
    }
    if let Some(futex) = s.get("futex").filter(|f| s.total_ns > 0 && f.total_ns * 2 >= s.total_ns) {
        let share = futex.total_ns as f64 * 100.0 / s.total_ns as f64;
        let rate = futex.calls as f64 / secs;
        let contended = rate >= CONTENDED_FUTEX_PER_SEC;
        out.push(finding(
            "syscall.futex_wait",
            if contended { Severity::Warn } else { Severity::Info },
            if contended {
                format!("{share:.0}% of syscall time is futex, {rate:.0} calls/s: threads contend for locks")
            } else {
                format!(
                    "{share:.0}% of syscall time is futex ({rate:.0} calls/s): threads mostly wait on locks, \
                     condition variables or queues (idle worker pools look like this too)"
                )
            },
            vec![("futex_time_pct", format!("{share:.1}")), ("futex_calls_per_sec", format!("{rate:.0}"))],
            format!(
                "see which threads wait and where with `kubectl osl blocked{}`; a profiler of the runtime \
                 (e.g. a mutex profile) names the lock",
                pid.map(|p| format!(" --pid {p}")).unwrap_or_default()
            ),
        ));
    }
    let rate = s.calls as f64 / secs;
    if rate >= HIGH_RATE_PER_SEC
        && let Some(top) = s.syscalls.iter().max_by_key(|st| st.calls)
    {
        let share = top.calls as f64 * 100.0 / s.calls as f64;
        out.push(finding(
            "syscall.high_rate",
            if rate >= VERY_HIGH_RATE_PER_SEC { Severity::Warn } else { Severity::Info },
            format!("{rate:.0} syscalls per second, {share:.0}% of them {}", top.name),
            vec![("calls_per_sec", format!("{rate:.0}")), ("top_syscall", top.name.clone())],
            "each syscall costs a kernel entry: many small reads or writes want a buffer (BufReader/BufWriter, \
             larger chunks), polling loops want a blocking wait"
                .into(),
        ));
    }
    for t in &s.threads {
        if let Some(f) = t.fds.first().filter(|f| f.total_ns as f64 >= SLOW_FD_SHARE * secs * 1e9) {
            let (severity, why) = slow_fd_reading(f);
            let share = f.total_ns as f64 * 100.0 / (secs * 1e9);
            let syscall = f.syscalls.first().map_or("?", |c| c.0.as_str());
            out.push(finding(
                "syscall.slow_fd",
                severity,
                format!(
                    "thread {} spent {share:.0}% of {} in {syscall}() on {} (fd {}), p99 {}: {why}",
                    t.tid,
                    duration_ns((secs * 1e9) as u64),
                    f.target,
                    f.fd,
                    duration_ns(f.percentile(0.99))
                ),
                vec![
                    ("tid", t.tid.to_string()),
                    ("fd", f.fd.to_string()),
                    ("target", f.target.clone()),
                    ("syscall", syscall.to_string()),
                    ("time_pct", format!("{share:.1}")),
                    ("p99_nsec", f.percentile(0.99).to_string()),
                ],
                format!(
                    "see every fd's time with `kubectl osl strace{} --by fd`, and the slowest calls below it",
                    pid.map(|p| format!(" --pid {p}")).unwrap_or_default()
                ),
            ));
        }
    }
    // Over timed calls (all, unless sampled), and not for waits, whose tail is their point.
    for stat in s.syscalls.iter().filter(|st| st.timed >= TAIL_MIN_CALLS && !WAITS.contains(&st.name.as_str())) {
        let (p50, p99) = (stat.percentile(0.5), stat.percentile(0.99));
        if p50 > 0 && p99 >= TAIL_RATIO * p50 {
            out.push(finding(
                "syscall.tail_latency",
                Severity::Warn,
                format!(
                    "{}: p99 {} is {}× its p50 {} over {} calls: a few calls stall",
                    stat.name,
                    duration_ns(p99),
                    p99 / p50,
                    duration_ns(p50),
                    stat.calls
                ),
                vec![
                    ("syscall", stat.name.clone()),
                    ("p50_nsec", p50.to_string()),
                    ("p99_nsec", p99.to_string()),
                    ("calls", stat.calls.to_string()),
                ],
                format!(
                    "the slowest calls say when and on what; `-o wide` draws the histogram{}",
                    stat.top_fds.first().map(|(t, ..)| format!(" (most of its time: {t})")).unwrap_or_default()
                ),
            ));
        }
    }
    out
}

/// How bad most of a thread's time on one fd is, and the likely reading.
fn slow_fd_reading(f: &FdStat) -> (Severity, &'static str) {
    let syscall = f.syscalls.first().map_or("", |c| c.0.as_str());
    if syscall.starts_with("epoll") || f.kind == Some(FdKind::Epoll) {
        return (Severity::Info, "it waits for events there (an idle event loop looks like this)");
    }
    if syscall.starts_with("accept") || f.target.contains("(LISTEN)") {
        return (Severity::Info, "it waits for connections");
    }
    match f.kind.unwrap_or(FdKind::Other) {
        FdKind::Socket => (Severity::Warn, "the peer is slow (or the connection idles between requests)"),
        FdKind::File | FdKind::BlockDevice | FdKind::Directory => {
            (Severity::Warn, "the storage is slow: look at the disk, the filesystem and io pressure")
        }
        FdKind::Pipe | FdKind::Fifo => (Severity::Info, "it waits for the process at the other end"),
        _ => (Severity::Info, "it waits there"),
    }
}

fn storm(s: &Stat, secs: f64) -> bool {
    // Waits that time out or lose a race are how futex works.
    let expected = s.name == "futex" || s.errnos.iter().all(|(e, _)| e.starts_with("ERESTART"));
    !expected && s.errors >= STORM_MIN_ERRORS && s.errors as f64 / secs >= STORM_MIN_PER_SEC && s.errors * 2 >= s.calls
}

fn storm_advice(syscall: &str, errno: &str) -> String {
    match errno {
        "ENOENT" => format!(
            "the process keeps looking for files that are not there (search paths, config probing): \
             `strace -f -e trace={syscall} -p PID` names them"
        ),
        "EAGAIN" => "non-blocking I/O retried without waiting: a busy loop burns CPU; wait for readiness with \
                     epoll/poll instead"
            .into(),
        "ECONNREFUSED" => "connections refused: nothing listens on the peer's port; check the service and its \
                           endpoints"
            .into(),
        "EMFILE" => "out of file descriptors: see `kubectl osl fds` for what is open".into(),
        "EACCES" | "EPERM" => "permission denied again and again: check the file modes, the user and seccomp".into(),
        _ => format!("find the failing call with `strace -f -e trace={syscall} -p PID`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(name: &str, calls: u64, errors: u64, errno: &str, total_ns: u64) -> Stat {
        Stat {
            name: name.into(),
            calls,
            errors,
            errnos: if errors > 0 { vec![(errno.into(), errors)] } else { vec![] },
            total_ns,
            ..Default::default()
        }
    }

    fn summary(syscalls: Vec<Stat>) -> Summary {
        Summary {
            calls: syscalls.iter().map(|s| s.calls).sum(),
            errors: syscalls.iter().map(|s| s.errors).sum(),
            total_ns: syscalls.iter().map(|s| s.total_ns).sum(),
            syscalls,
            ..Default::default()
        }
    }

    #[test]
    fn an_enoent_storm_and_contended_futexes_are_named() {
        let s = summary(vec![
            stat("futex", 20_000, 3_000, "EAGAIN", 900),
            stat("openat", 5_000, 5_000, "ENOENT", 50),
            stat("read", 100, 0, "", 50),
        ]);
        let f = evaluate(&s, Duration::from_secs(4), "pid 9 (app)", Some(9));
        let ids: Vec<&str> = f.iter().map(|f| f.id).collect();
        assert_eq!(ids, ["syscall.error_storm", "syscall.futex_wait"], "futex EAGAIN is no storm");
        assert_eq!(f[0].message, "openat failed 5000 of 5000 calls (1250/s), 5000 of them ENOENT");
        assert!(f[0].next_step.contains("trace=openat"));
        assert_eq!(f[1].severity, Severity::Warn, "5000 futex calls/s: contention");
    }

    fn fd(kind: FdKind, target: &str, syscall: &str, total_ns: u64, hist_at: usize) -> FdStat {
        let mut hist = [0; super::super::counts::BUCKETS];
        hist[hist_at] = 10;
        FdStat {
            tgid: 7,
            fd: 5,
            epoch: 0,
            kind: Some(kind),
            target: target.into(),
            syscalls: vec![(syscall.into(), 10, total_ns)],
            calls: 10,
            errors: 0,
            total_ns,
            min_ns: 1,
            max_ns: u64::MAX,
            timed: 10,
            hist: super::super::counts::Histogram(hist),
        }
    }

    #[test]
    fn a_thread_that_waits_on_one_fd_names_it() {
        let socket = "tcp 10.0.0.7:40112 -> 10.0.0.5:5432 (ESTABLISHED)";
        let thread = |fds| super::super::summary::ThreadStat { tid: 12, tgid: 7, fds, ..Default::default() };
        let mut s = summary(vec![]);
        s.threads = vec![
            thread(vec![fd(FdKind::Socket, socket, "read", 3_900_000_000, 30)]),
            thread(vec![fd(FdKind::Epoll, "anon_inode:[eventpoll]", "epoll_wait", 4_900_000_000, 30)]),
            thread(vec![fd(FdKind::File, "/var/log/app.log", "write", 2_000_000_000, 20)]), // 40%: not named
        ];
        let f = evaluate(&s, Duration::from_secs(5), "pid 7 (app)", Some(7));
        assert_eq!(f.len(), 2, "{f:#?}");
        assert_eq!(
            f[0].message,
            format!(
                "thread 12 spent 78% of 5.0 s in read() on {socket} (fd 5), p99 2.1 s: the peer is slow (or the connection idles between requests)"
            )
        );
        assert_eq!((f[0].id, f[0].severity), ("syscall.slow_fd", Severity::Warn));
        assert!(f[0].next_step.contains("strace --pid 7 --by fd"));
        assert_eq!(f[1].severity, Severity::Info, "an event loop's wait is idle: {}", f[1].message);
    }

    #[test]
    fn a_long_tail_is_named_and_a_narrow_one_is_not() {
        let with = |p99_bucket: usize, calls: u64| {
            let mut st = stat("read", calls, 0, "", 1_000_000);
            st.hist.0[9] = calls - calls / 50; // ~1 µs
            st.hist.0[p99_bucket] = calls / 50; // the top 2%
            (st.min_ns, st.max_ns, st.timed) = (500, u64::MAX, calls);
            summary(vec![st])
        };
        let f = evaluate(&with(20, 10_000), Duration::from_secs(1), "p", None);
        assert_eq!(f.iter().map(|f| f.id).collect::<Vec<_>>(), ["syscall.tail_latency"]);
        assert_eq!(f[0].message, "read: p99 2.1 ms is 2050× its p50 1 µs over 10000 calls: a few calls stall");
        assert!(evaluate(&with(14, 10_000), Duration::from_secs(1), "p", None).is_empty(), "32×: no tail");
        assert!(evaluate(&with(20, 500), Duration::from_secs(1), "p", None).is_empty(), "too few calls");
        let mut wait = with(20, 10_000);
        wait.syscalls[0].name = "epoll_wait".into();
        assert!(evaluate(&wait, Duration::from_secs(1), "p", None).is_empty(), "a wait's tail is idle time");
        let mut sampled = with(20, 10_000);
        sampled.syscalls[0].timed = 900;
        assert!(evaluate(&sampled, Duration::from_secs(1), "p", None).is_empty(), "900 timed calls: too few");
    }

    #[test]
    fn a_quiet_process_has_no_findings_and_a_busy_one_has_its_rate_named() {
        let quiet = summary(vec![stat("openat", 40, 40, "ENOENT", 10), stat("read", 100, 0, "", 90)]);
        assert!(evaluate(&quiet, Duration::from_secs(1), "p", None).is_empty());
        let busy = summary(vec![stat("write", 900_000, 0, "", 10), stat("read", 300_000, 0, "", 10)]);
        let f = evaluate(&busy, Duration::from_secs(4), "p", None);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "syscall.high_rate");
        assert_eq!(f[0].severity, Severity::Warn);
        assert_eq!(f[0].message, "300000 syscalls per second, 75% of them write");
    }
}
