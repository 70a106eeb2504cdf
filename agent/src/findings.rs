//! Rules that turn numbers into verdicts. Each finding has a stable id, the
//! numbers behind it, and the next step to take.

use crate::model::{Container, Finding, Process, Severity};
use std::collections::BTreeMap;

/// Share of a limit at which a finding is raised.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub warn: f64,
    pub critical: f64,
}

pub const NEAR_LIMIT: Thresholds = Thresholds { warn: 0.85, critical: 0.95 };
/// Share of CFS periods throttled (since the cgroup was created).
pub const THROTTLED: Thresholds = Thresholds { warn: 0.20, critical: 0.50 };
/// Fewer periods than this say nothing about throttling.
const MIN_PERIODS: u64 = 100;

impl Thresholds {
    fn severity(&self, ratio: f64) -> Option<Severity> {
        if ratio >= self.critical {
            Some(Severity::Critical)
        } else if ratio >= self.warn {
            Some(Severity::Warn)
        } else {
            None
        }
    }
}

/// Every finding for these processes and containers, most severe first.
pub fn evaluate(processes: &[Process], containers: &[Container]) -> Vec<Finding> {
    let mut out = Vec::new();
    for c in containers {
        memory_near_limit(c, &mut out);
        oom_killed(c, &mut out);
        cpu_throttled(c, &mut out);
    }
    for p in processes {
        fd_near_limit(p, &mut out);
        fd_leak(p, &mut out);
        close_wait(p, &mut out);
        deleted_files(p, &mut out);
    }
    zombies(processes, &mut out);
    sort(&mut out);
    out
}

pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(b.id)).then(a.subject.cmp(&b.subject)));
}

pub fn process_subject(p: &Process) -> String {
    format!("pid {} ({})", p.pid, osl_proto::text::escape(&p.comm))
}

pub fn container_subject(c: &Container) -> String {
    match &c.id {
        Some(id) => format!("container {}", &id[..12.min(id.len())]),
        None => format!("cgroup {}", osl_proto::text::escape(c.cgroup_path.as_bytes())),
    }
}

fn pct(ratio: f64) -> String {
    format!("{:.1}", ratio * 100.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn container_finding(c: &Container, id: &'static str, severity: Severity, message: String, next_step: &str) -> Finding {
    Finding {
        id,
        severity,
        subject: container_subject(c),
        pid: None,
        container_id: c.id.clone(),
        message,
        evidence: Vec::new(),
        next_step: next_step.to_string(),
    }
}

fn memory_near_limit(c: &Container, out: &mut Vec<Finding>) {
    let Some(m) = &c.memory else { return };
    let (Some(ws), Some(Some(limit))) = (m.working_set_bytes, m.limit_bytes) else {
        return;
    };
    if limit == 0 {
        return;
    }
    let ratio = ws as f64 / limit as f64;
    let Some(severity) = NEAR_LIMIT.severity(ratio) else {
        return;
    };
    let mut f = container_finding(
        c,
        "memory.near_limit",
        severity,
        format!(
            "working set {} is {}% of the {} memory limit; the kernel OOM-kills at the limit",
            mib(ws),
            pct(ratio),
            mib(limit)
        ),
        "find the biggest processes with `kubectl osl mem` (PSS, anon); if usage keeps growing it is a leak \
         (take a heap profile), otherwise raise resources.limits.memory",
    );
    f.evidence =
        vec![("working_set_bytes", ws.to_string()), ("limit_bytes", limit.to_string()), ("usage_pct", pct(ratio))];
    out.push(f);
}

fn oom_killed(c: &Container, out: &mut Vec<Finding>) {
    let Some(m) = &c.memory else { return };
    let Some(kills) = m.oom_kill_events.filter(|&k| k > 0) else {
        return;
    };
    let mut f = container_finding(
        c,
        "memory.oom_killed",
        Severity::Critical,
        format!("the kernel OOM killer has killed {kills} process(es) in this container's cgroup"),
        "compare the limit with the working set's peak (memory.peak_bytes); find the grower with `kubectl osl mem` \
         and raise the limit or fix the leak; `kubectl describe pod` shows OOMKilled restarts",
    );
    f.evidence = vec![("oom_kill_events", kills.to_string())];
    if let Some(peak) = m.peak_bytes {
        f.evidence.push(("peak_bytes", peak.to_string()));
    }
    if let Some(Some(limit)) = m.limit_bytes {
        f.evidence.push(("limit_bytes", limit.to_string()));
    }
    out.push(f);
}

fn cpu_throttled(c: &Container, out: &mut Vec<Finding>) {
    let Some(cpu) = &c.cpu else { return };
    let (Some(periods), Some(throttled)) = (cpu.periods, cpu.throttled_periods) else {
        return;
    };
    if periods < MIN_PERIODS {
        return;
    }
    let ratio = throttled as f64 / periods as f64;
    let Some(severity) = THROTTLED.severity(ratio) else {
        return;
    };
    let quota = match (cpu.quota_usec, cpu.period_usec) {
        (Some(Some(q)), Some(p)) if p > 0 => {
            format!(" at a quota of {:.2} CPUs", q as f64 / p as f64)
        }
        _ => String::new(),
    };
    let mut f = container_finding(
        c,
        "cpu.throttled",
        severity,
        format!(
            "CPU was throttled in {}% of {periods} scheduling periods{quota}, since the container started",
            pct(ratio)
        ),
        "latency spikes follow throttling: raise resources.limits.cpu (or remove the CPU limit), \
         or reduce the number of busy threads",
    );
    f.evidence = vec![
        ("periods", periods.to_string()),
        ("throttled_periods", throttled.to_string()),
        ("throttled_pct", pct(ratio)),
    ];
    if let Some(usec) = cpu.throttled_usec {
        f.evidence.push(("throttled_usec", usec.to_string()));
    }
    out.push(f);
}

fn fd_near_limit(p: &Process, out: &mut Vec<Finding>) {
    let (Some(open), Some(limit)) = (p.fds.open, p.fds.limit) else { return };
    let Some(soft) = limit.soft.filter(|&s| s > 0) else { return };
    let ratio = open as f64 / soft as f64;
    let Some(severity) = NEAR_LIMIT.severity(ratio) else { return };
    let mut evidence =
        vec![("open_fds", open.to_string()), ("soft_limit", soft.to_string()), ("usage_pct", pct(ratio))];
    let mut trend = String::new();
    if let Some(t) = p.fd_trend.as_ref().filter(|t| t.growing) {
        evidence.push(("slope_per_sec", format!("{:.2}", t.slope_per_sec)));
        if let Some(eta) = t.eta_to_limit_sec {
            evidence.push(("eta_to_limit_sec", eta.to_string()));
            trend = format!("; growing {:.1}/s, the limit is {} away", t.slope_per_sec, duration(eta));
        }
    }
    out.push(Finding {
        id: "fd.near_limit",
        severity,
        subject: process_subject(p),
        pid: Some(p.pid),
        container_id: None,
        message: format!(
            "{open} of {soft} file descriptors open ({}% of RLIMIT_NOFILE){trend}; at the limit open() and accept() \
             fail with EMFILE \"Too many open files\"",
            pct(ratio)
        ),
        evidence,
        next_step: format!(
            "see what is open with `kubectl osl fds --pid {}`: many sockets suggest a connection leak; \
             otherwise raise the limit (ulimit -n / LimitNOFILE)",
            p.pid
        ),
    });
}

/// `90s`, `12m`, `3h`.
fn duration(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

/// A growing fd count this close to the limit is critical.
const LEAK_CRITICAL_ETA_SEC: u64 = 600;

fn fd_leak(p: &Process, out: &mut Vec<Finding>) {
    let Some(t) = p.fd_trend.as_ref().filter(|t| t.growing) else { return };
    let severity = match t.eta_to_limit_sec {
        Some(eta) if eta < LEAK_CRITICAL_ETA_SEC => Severity::Critical,
        _ => Severity::Warn,
    };
    let eta = t
        .eta_to_limit_sec
        .map(|e| format!("; at this rate RLIMIT_NOFILE is reached in {}", duration(e)))
        .unwrap_or_default();
    let now = p
        .fd_summary
        .as_ref()
        .and_then(|s| s.by_kind.first())
        .map(|(kind, n)| format!(" (the most: {n} {})", kind.name()))
        .unwrap_or_default();
    let mut evidence = vec![
        ("first", t.first.to_string()),
        ("last", t.last.to_string()),
        ("window_msec", t.window_msec.to_string()),
        ("slope_per_sec", format!("{:.2}", t.slope_per_sec)),
    ];
    if let Some(e) = t.eta_to_limit_sec {
        evidence.push(("eta_to_limit_sec", e.to_string()));
    }
    out.push(Finding {
        id: "fd.leak",
        severity,
        subject: process_subject(p),
        pid: Some(p.pid),
        container_id: p.container_id(),
        message: format!(
            "open fds rose from {} to {} over {:.1}s ({:.2}/s){now}{eta}",
            t.first,
            t.last,
            t.window_msec as f64 / 1000.0,
            t.slope_per_sec
        ),
        evidence,
        next_step: format!(
            "list them with `kubectl osl fds --pid {}` and look for what accumulates: sockets to one endpoint \
             (a connection pool that never closes), files of one path (a missing close)",
            p.pid
        ),
    });
}

/// CLOSE_WAIT connections: the peer closed, this process never did.
const CLOSE_WAIT: Thresholds = Thresholds { warn: 3.0, critical: 100.0 };

fn close_wait(p: &Process, out: &mut Vec<Finding>) {
    let Some(s) = &p.fd_summary else { return };
    let n = s.tcp_state_count(crate::model::TcpState::CloseWait);
    let Some(severity) = CLOSE_WAIT.severity(n as f64) else { return };
    let (endpoint, to_it) = s.top_close_wait.clone().unwrap_or_default();
    out.push(Finding {
        id: "socket.close_wait",
        severity,
        subject: process_subject(p),
        pid: Some(p.pid),
        container_id: p.container_id(),
        message: format!(
            "{n} TCP connections in CLOSE_WAIT ({to_it} to {endpoint}): the peer closed them and this process \
             never called close(); each holds an fd until it does"
        ),
        evidence: vec![
            ("close_wait", n.to_string()),
            ("top_endpoint", endpoint.clone()),
            ("to_top_endpoint", to_it.to_string()),
        ],
        next_step: format!(
            "find the client code talking to {endpoint} that does not close its connections on EOF or error \
             (`kubectl osl fds --pid {} --state close_wait`)",
            p.pid
        ),
    });
}

/// Deleted files that are still open hold their disk space until closed.
const DELETED_WARN_BYTES: u64 = 1 << 30;

fn deleted_files(p: &Process, out: &mut Vec<Finding>) {
    let Some(s) = p.fd_summary.as_ref().filter(|s| s.deleted_files > 0 && s.deleted_bytes > 0) else { return };
    let severity = if s.deleted_bytes >= DELETED_WARN_BYTES { Severity::Warn } else { Severity::Info };
    out.push(Finding {
        id: "fd.deleted_file",
        severity,
        subject: process_subject(p),
        pid: Some(p.pid),
        container_id: p.container_id(),
        message: format!(
            "{} deleted file(s) still open, holding {} of disk space that `df` counts and `du` does not",
            s.deleted_files,
            mib(s.deleted_bytes)
        ),
        evidence: vec![("deleted_files", s.deleted_files.to_string()), ("deleted_bytes", s.deleted_bytes.to_string())],
        next_step: format!(
            "see them with `kubectl osl fds --pid {} --kind file` (marked deleted); a log rotated without \
             reopening is the usual cause: make the process reopen its logs, or restart it",
            p.pid
        ),
    });
}

fn zombies(processes: &[Process], out: &mut Vec<Finding>) {
    let mut by_parent: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in processes.iter().filter(|p| p.is_zombie()) {
        by_parent.entry(p.ppid).or_default().push(p.pid);
    }
    for (ppid, pids) in by_parent {
        let parent = processes.iter().find(|p| p.pid == ppid);
        let subject = parent.map_or_else(|| format!("pid {ppid}"), process_subject);
        let list = pids.iter().map(i32::to_string).collect::<Vec<_>>().join(", ");
        out.push(Finding {
            id: "process.zombie",
            severity: Severity::Warn,
            subject: subject.clone(),
            pid: Some(ppid),
            container_id: None,
            message: format!("{} zombie child process(es) not reaped by {subject}: {list}", pids.len()),
            evidence: vec![("zombie_pids", list), ("count", pids.len().to_string())],
            next_step: "the parent is not calling wait(); if it is PID 1 of a container, run it under an init \
                        (tini, `shareProcessNamespace` pause, or `--init`); each zombie holds a pid slot"
                .to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CgroupCpu, CgroupLocation, CgroupMemory, CgroupRoute, CgroupVersion, FdUsage, Rlimit};

    fn loc() -> CgroupLocation {
        CgroupLocation {
            version: CgroupVersion::V2,
            path: "/x".into(),
            dir: "/x".into(),
            mount_dir: "/".into(),
            route: CgroupRoute::AgentMount,
        }
    }

    fn container(ws: u64, limit: Option<u64>, kills: u64) -> Container {
        let mut m = CgroupMemory::at(loc());
        m.working_set_bytes = Some(ws);
        m.limit_bytes = Some(limit);
        m.oom_kill_events = Some(kills);
        Container { id: Some("ab".repeat(32)), memory: Some(m), ..Default::default() }
    }

    fn process(pid: i32, open: u64, soft: Option<u64>) -> Process {
        Process {
            pid,
            comm: b"app".to_vec(),
            state: 'S',
            fds: FdUsage { open: Some(open), limit: Some(Rlimit { soft, hard: soft }) },
            ..Default::default()
        }
    }

    fn ids(f: &[Finding]) -> Vec<(&str, Severity)> {
        f.iter().map(|f| (f.id, f.severity)).collect()
    }

    #[test]
    fn memory_thresholds() {
        assert!(evaluate(&[], &[container(84, Some(100), 0)]).is_empty());
        assert_eq!(ids(&evaluate(&[], &[container(85, Some(100), 0)])), [("memory.near_limit", Severity::Warn)]);
        assert_eq!(ids(&evaluate(&[], &[container(95, Some(100), 0)])), [("memory.near_limit", Severity::Critical)]);
        assert!(evaluate(&[], &[container(95, None, 0)]).is_empty(), "unlimited never fires");
        let f = &evaluate(&[], &[container(90, Some(100), 0)])[0];
        assert_eq!(f.subject, "container abababababab");
        assert!(f.message.contains("90.0%"), "{}", f.message);
    }

    #[test]
    fn oom_kills_are_critical_and_sorted_first() {
        let f = evaluate(&[process(7, 90, Some(100))], &[container(10, Some(100), 2)]);
        assert_eq!(ids(&f), [("memory.oom_killed", Severity::Critical), ("fd.near_limit", Severity::Warn)]);
        assert!(f[0].evidence.contains(&("oom_kill_events", "2".to_string())));
    }

    #[test]
    fn fd_thresholds() {
        assert!(evaluate(&[process(1, 84, Some(100))], &[]).is_empty());
        assert_eq!(ids(&evaluate(&[process(1, 63, Some(64))], &[])), [("fd.near_limit", Severity::Critical)]);
        assert!(evaluate(&[process(1, 63, None)], &[]).is_empty(), "unlimited never fires");
    }

    #[test]
    fn zombies_are_grouped_by_parent() {
        let mut parent = process(10, 1, Some(1024));
        parent.comm = b"bash".to_vec();
        let zombie = |pid| Process { pid, ppid: 10, state: 'Z', ..Default::default() };
        let f = evaluate(&[parent, zombie(11), zombie(12)], &[]);
        assert_eq!(ids(&f), [("process.zombie", Severity::Warn)]);
        assert_eq!(f[0].subject, "pid 10 (bash)");
        assert!(f[0].message.starts_with("2 zombie"), "{}", f[0].message);
    }

    #[test]
    fn throttling_needs_enough_periods() {
        let cpu = |periods, throttled| Container {
            cpu: Some(CgroupCpu {
                location: loc(),
                quota_usec: Some(Some(50_000)),
                period_usec: Some(100_000),
                usage_usec: None,
                periods: Some(periods),
                throttled_periods: Some(throttled),
                throttled_usec: None,
                pressure: None,
            }),
            ..Default::default()
        };
        assert!(evaluate(&[], &[cpu(50, 50)]).is_empty());
        assert!(evaluate(&[], &[cpu(1000, 100)]).is_empty());
        assert_eq!(ids(&evaluate(&[], &[cpu(1000, 300)])), [("cpu.throttled", Severity::Warn)]);
        assert_eq!(ids(&evaluate(&[], &[cpu(1000, 600)])), [("cpu.throttled", Severity::Critical)]);
        assert!(evaluate(&[], &[cpu(1000, 600)])[0].message.contains("0.50 CPUs"));
    }
}
