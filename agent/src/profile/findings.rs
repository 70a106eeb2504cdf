//! Verdicts from a syscall profile: error storms (an errno repeated thousands of
//! times), time dominated by futex waits, and a syscall rate high enough to cost.

use super::summary::{Stat, Summary};
use crate::model::{Finding, Severity};
use std::time::Duration;

/// Errors fewer than this, or rarer than this per second, are noise.
const STORM_MIN_ERRORS: u64 = 100;
const STORM_MIN_PER_SEC: f64 = 50.0;
/// Syscalls per second from which the rate itself is worth a look.
const HIGH_RATE_PER_SEC: f64 = 50_000.0;
const VERY_HIGH_RATE_PER_SEC: f64 = 200_000.0;
/// futex calls per second that mean contention rather than idle waiting.
const CONTENDED_FUTEX_PER_SEC: f64 = 1_000.0;

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
    out
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
