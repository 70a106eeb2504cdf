//! The one conversion layer: domain model → osl.v1 messages, and agent errors →
//! gRPC status codes.

use crate::decode::{capability_names, signal_names};
use crate::error::{AgentError, ReadError};
use crate::fds::fdinfo::flag_names;
use crate::model::{self, CgroupVersion, FdKind, PressureSource, Severity, SocketEntry, TcpState};
use crate::net::parse::{endpoint, netlink_protocol_name, unix_state_name, unix_type_name};
use crate::probe::{Level, Privileges};
use osl_proto::text::escape;
use osl_proto::v1;

pub fn unavailable(u: &model::Unavailable) -> v1::Unavailable {
    v1::Unavailable {
        field: u.field.clone(),
        reason: u.reason.clone(),
        path: u.path.as_ref().map(|p| escape(p.as_os_str().as_encoded_bytes())).unwrap_or_default(),
    }
}

fn unavailable_all(list: &[model::Unavailable]) -> Vec<v1::Unavailable> {
    list.iter().map(unavailable).collect()
}

pub fn process_state(state: char) -> v1::ProcessState {
    use v1::ProcessState as S;
    match state {
        'R' => S::Running,
        'S' => S::Sleeping,
        'D' => S::DiskSleep,
        'Z' => S::Zombie,
        'T' => S::Stopped,
        't' => S::TracingStop,
        'X' | 'x' => S::Dead,
        'I' => S::Idle,
        'P' => S::Parked,
        'W' => S::Waking,
        _ => S::Unspecified,
    }
}

pub fn process(p: &model::Process) -> v1::Process {
    let m = &p.memory;
    v1::Process {
        pid: p.pid,
        start_time_ticks: p.start_time_ticks,
        start_time_unix_ms: p.start_time_unix_ms,
        ppid: p.ppid,
        comm: escape(&p.comm),
        cmdline: p.cmdline.iter().map(|a| escape(a)).collect(),
        cmdline_redacted: p.cmdline_redacted,
        cmdline_truncated: p.cmdline_truncated,
        kernel_thread: p.kernel_thread,
        state: process_state(p.state) as i32,
        uid: p.ids.map(|i| i.uid),
        euid: p.ids.map(|i| i.euid),
        gid: p.ids.map(|i| i.gid),
        egid: p.ids.map(|i| i.egid),
        cpu: Some(v1::ProcessCpu {
            utime_usec: p.cpu.utime_usec,
            stime_usec: p.cpu.stime_usec,
            threads: p.cpu.threads,
            voluntary_ctxt_switches: p.cpu.voluntary_ctxt_switches,
            nonvoluntary_ctxt_switches: p.cpu.nonvoluntary_ctxt_switches,
            minor_faults: p.cpu.minor_faults,
            major_faults: p.cpu.major_faults,
        }),
        memory: Some(v1::ProcessMemory {
            vm_size_bytes: m.vm_size_bytes,
            vm_rss_bytes: m.vm_rss_bytes,
            rss_anon_bytes: m.rss_anon_bytes,
            rss_file_bytes: m.rss_file_bytes,
            rss_shmem_bytes: m.rss_shmem_bytes,
            vm_hwm_bytes: m.vm_hwm_bytes,
            vm_swap_bytes: m.vm_swap_bytes,
            pss_bytes: m.pss_bytes,
            pss_anon_bytes: m.pss_anon_bytes,
            pss_file_bytes: m.pss_file_bytes,
            pss_shmem_bytes: m.pss_shmem_bytes,
            uss_bytes: m.uss_bytes,
            swap_pss_bytes: m.swap_pss_bytes,
        }),
        fds: Some(v1::FdUsage {
            open: p.fds.open,
            soft_limit: p.fds.limit.and_then(|l| l.soft),
            soft_unlimited: p.fds.limit.is_some_and(|l| l.soft.is_none()),
            hard_limit: p.fds.limit.and_then(|l| l.hard),
            hard_unlimited: p.fds.limit.is_some_and(|l| l.hard.is_none()),
        }),
        signals: p.signals.map(|s| v1::Signals {
            pending: signal_names(s.pending),
            blocked: signal_names(s.blocked),
            ignored: signal_names(s.ignored),
            caught: signal_names(s.caught),
        }),
        effective_capabilities: p.capabilities.map(capability_names).unwrap_or_default(),
        tracer_pid: p.tracer_pid,
        cgroup_path: p.container_cgroup().map(|c| escape(c.path.as_bytes())).unwrap_or_default(),
        container_id: p.container_id().unwrap_or_default(),
        container_name: String::new(), // the CLI knows it
        blocked: None,                 // diagnose fills it when asked
        exited_mid_read: p.exited_mid_read,
        unavailable: unavailable_all(&p.unavailable),
        fd_summary: p.fd_summary.as_ref().map(fd_summary),
        fd_trend: p.fd_trend.as_ref().map(fd_trend),
    }
}

fn location(l: &model::CgroupLocation) -> v1::CgroupLocation {
    v1::CgroupLocation {
        version: match l.version {
            CgroupVersion::V1 => v1::CgroupVersion::V1,
            CgroupVersion::V2 => v1::CgroupVersion::V2,
        } as i32,
        path: escape(l.path.as_bytes()),
        dir: escape(l.dir.as_os_str().as_encoded_bytes()),
        route: l.route.as_str().to_string(),
    }
}

fn pressure(p: &model::Pressure) -> v1::Pressure {
    let line = |l: &model::PressureLine| v1::PressureLine {
        avg10_pct: l.avg10_pct,
        avg60_pct: l.avg60_pct,
        avg300_pct: l.avg300_pct,
        total_usec: l.total_usec,
    };
    v1::Pressure {
        source: match p.source {
            PressureSource::Cgroup => "cgroup",
            PressureSource::System => "system",
        }
        .to_string(),
        path: escape(p.path.as_os_str().as_encoded_bytes()),
        some: p.some.as_ref().map(line),
        full: p.full.as_ref().map(line),
    }
}

pub fn container(c: &model::Container) -> v1::Container {
    v1::Container {
        id: c.id.clone().unwrap_or_default(),
        name: String::new(),
        pod_uid: c.pod_uid.clone().unwrap_or_default(),
        pids: c.pids.clone(),
        memory: c.memory.as_ref().map(|m| v1::CgroupMemory {
            location: Some(location(&m.location)),
            usage_bytes: m.usage_bytes,
            limit_bytes: m.limit_bytes.flatten(),
            unlimited: m.limit_bytes == Some(None),
            working_set_bytes: m.working_set_bytes,
            inactive_file_bytes: m.inactive_file_bytes,
            anon_bytes: m.anon_bytes,
            file_bytes: m.file_bytes,
            shmem_bytes: m.shmem_bytes,
            kernel_bytes: m.kernel_bytes,
            slab_bytes: m.slab_bytes,
            sock_bytes: m.sock_bytes,
            mapped_file_bytes: m.mapped_file_bytes,
            peak_bytes: m.peak_bytes,
            high_events: m.high_events,
            max_events: m.max_events,
            oom_events: m.oom_events,
            oom_kill_events: m.oom_kill_events,
            failcnt: m.failcnt,
            under_oom: m.under_oom,
            pressure: m.pressure.as_ref().map(pressure),
        }),
        cpu: c.cpu.as_ref().map(|cpu| v1::CgroupCpu {
            location: Some(location(&cpu.location)),
            quota_usec: cpu.quota_usec.flatten(),
            period_usec: cpu.period_usec,
            unlimited: cpu.quota_usec == Some(None),
            usage_usec: cpu.usage_usec,
            periods: cpu.periods,
            throttled_periods: cpu.throttled_periods,
            throttled_usec: cpu.throttled_usec,
            pressure: cpu.pressure.as_ref().map(pressure),
        }),
        unavailable: unavailable_all(&c.unavailable),
        memory_trend: Vec::new(),
    }
}

pub fn finding(f: &model::Finding) -> v1::Finding {
    v1::Finding {
        id: f.id.to_string(),
        severity: match f.severity {
            Severity::Info => v1::Severity::Info,
            Severity::Warn => v1::Severity::Warn,
            Severity::Critical => v1::Severity::Critical,
        } as i32,
        subject: f.subject.clone(),
        pid: f.pid,
        container_id: f.container_id.clone().unwrap_or_default(),
        message: f.message.clone(),
        evidence: f.evidence.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        next_step: f.next_step.clone(),
    }
}

pub fn findings(list: &[model::Finding]) -> Vec<v1::Finding> {
    list.iter().map(finding).collect()
}

pub fn snapshot(s: &model::Snapshot, agent: v1::AgentInfo) -> v1::DiagnoseResponse {
    v1::DiagnoseResponse {
        agent: Some(agent),
        taken_at_unix_ms: s.taken_at_unix_ms,
        capture_usec: s.capture_usec,
        processes: s.processes.iter().map(process).collect(),
        containers: s.containers.iter().map(container).collect(),
        findings: findings(&s.findings),
        unavailable: unavailable_all(&s.unavailable),
        fd_totals: Some(fd_summary(&s.fd_totals)),
    }
}

/// The agent's description of itself; `own` is the agent process as read from /proc/self.
pub fn agent_info(privileges: &Privileges, own: Option<&model::Process>, uptime_msec: u64) -> v1::AgentInfo {
    v1::AgentInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id() as i32,
        level: match privileges.level {
            Level::Basic => v1::PrivilegeLevel::Basic,
            Level::Ptrace => v1::PrivilegeLevel::Ptrace,
            Level::Ebpf => v1::PrivilegeLevel::Ebpf,
        } as i32,
        capabilities: capability_names(privileges.capabilities),
        limitations: unavailable_all(&privileges.limitations),
        rss_bytes: own.and_then(|p| p.memory.vm_rss_bytes),
        cpu_usec: own.and_then(|p| Some(p.cpu.utime_usec? + p.cpu.stime_usec?)),
        uptime_msec: Some(uptime_msec),
    }
}

/// The kernel's TCP states are osl.v1's by number (tested below); an unknown one is unspecified.
pub fn tcp_state(s: TcpState) -> v1::TcpState {
    match s {
        TcpState::Other(_) => v1::TcpState::Unspecified,
        known => v1::TcpState::try_from(i32::from(known.kernel())).unwrap_or(v1::TcpState::Unspecified),
    }
}

pub fn fd_kind(k: FdKind) -> v1::FdKind {
    use v1::FdKind as K;
    match k {
        FdKind::File => K::File,
        FdKind::Directory => K::Directory,
        FdKind::CharDevice => K::CharDevice,
        FdKind::BlockDevice => K::BlockDevice,
        FdKind::Pipe => K::Pipe,
        FdKind::Fifo => K::Fifo,
        FdKind::Socket => K::Socket,
        FdKind::Eventfd => K::Eventfd,
        FdKind::Epoll => K::Epoll,
        FdKind::Timerfd => K::Timerfd,
        FdKind::Signalfd => K::Signalfd,
        FdKind::Inotify => K::Inotify,
        FdKind::Fanotify => K::Fanotify,
        FdKind::Memfd => K::Memfd,
        FdKind::Pidfd => K::Pidfd,
        FdKind::IoUring => K::IoUring,
        FdKind::AnonInode => K::AnonInode,
        FdKind::Other => K::Other,
    }
}

pub fn fd(f: &model::Fd) -> v1::Fd {
    let info = f.info.as_ref();
    v1::Fd {
        fd: f.fd,
        kind: fd_kind(f.kind) as i32,
        target: escape(&f.target),
        deleted: f.deleted,
        pos_bytes: info.and_then(|i| i.pos),
        flags: info
            .and_then(|i| i.flags)
            .map(|fl| flag_names(fl).into_iter().map(str::to_owned).collect())
            .unwrap_or_default(),
        mnt_id: info.and_then(|i| i.mnt_id),
        inode: info.and_then(|i| i.inode),
        size_bytes: f.size_bytes,
        socket: f.socket.as_ref().map(socket),
        detail: info.filter(|i| i.has_detail()).map(|i| v1::FdDetail {
            eventfd_count: i.eventfd_count,
            epoll_targets: i.epoll_targets.iter().map(|&(fd, events)| v1::EpollTarget { fd, events }).collect(),
            timerfd_clockid: i.timerfd.map(|t| t.clockid),
            timerfd_interval_nsec: i.timerfd.map(|t| t.interval_nsec),
            timerfd_value_nsec: i.timerfd.map(|t| t.value_nsec),
            timerfd_ticks: i.timerfd.map(|t| t.ticks),
            signalfd_signals: i.signalfd_mask.map(signal_names).unwrap_or_default(),
            inotify_watches: i
                .inotify_watches
                .iter()
                .map(|w| v1::InotifyWatch { wd: w.wd, inode: w.inode, mask: w.mask })
                .collect(),
            pidfd_pid: i.pidfd_pid,
        }),
    }
}

fn socket(s: &model::Socket) -> v1::Socket {
    let mut out = v1::Socket { inode: s.inode, ..Default::default() };
    match &s.entry {
        None => {
            out.note = "not in this network namespace's tcp, udp, unix or netlink tables \
                        (a raw, packet or other-family socket, or one of another namespace)"
                .into()
        }
        Some(SocketEntry::Inet { protocol, local, remote, state, tx_queue, rx_queue }) => {
            out.protocol = protocol.name().into();
            out.local = endpoint(local);
            out.remote = endpoint(remote);
            if protocol.is_tcp() {
                out.tcp_state = tcp_state(*state) as i32;
                if *state == TcpState::Listen {
                    out.accept_queue = Some(*rx_queue);
                    out.accept_backlog = s.accept_backlog;
                } else {
                    out.send_queue_bytes = Some(*tx_queue);
                    out.recv_queue_bytes = Some(*rx_queue);
                }
            } else {
                out.udp_state = if *state == TcpState::Established { "established" } else { "unconnected" }.into();
                out.send_queue_bytes = Some(*tx_queue);
                out.recv_queue_bytes = Some(*rx_queue);
            }
        }
        Some(SocketEntry::Unix { path, socket_type, state, listening }) => {
            out.protocol = "unix".into();
            out.unix_path = path.as_deref().map(escape).unwrap_or_default();
            out.unix_type = unix_type_name(*socket_type).into();
            out.unix_state = unix_state_name(*state, *listening).into();
        }
        Some(SocketEntry::Netlink { protocol }) => {
            out.protocol = "netlink".into();
            out.note = format!("netlink {}", netlink_protocol_name(*protocol));
        }
    }
    out
}

pub fn fd_summary(s: &model::FdSummary) -> v1::FdSummary {
    let count = |name: &str, count: u64| v1::Count { name: name.to_string(), count };
    v1::FdSummary {
        total: s.total,
        by_kind: s.by_kind.iter().map(|(k, n)| count(k.name(), *n)).collect(),
        by_tcp_state: s.by_tcp_state.iter().map(|(st, n)| count(st.name(), *n)).collect(),
        top_remotes: s.top_remotes.iter().map(|(r, n)| v1::Endpoint { remote: r.clone(), connections: *n }).collect(),
        deleted_files: s.deleted_files,
        deleted_bytes: s.deleted_bytes,
        headroom: s.headroom,
        closed_during_read: s.closed_during_read,
    }
}

pub fn fd_trend(t: &model::FdTrend) -> v1::FdTrend {
    v1::FdTrend {
        samples: t.samples,
        window_msec: t.window_msec,
        first: t.first,
        last: t.last,
        slope_per_sec: t.slope_per_sec,
        growing: t.growing,
        eta_to_limit_sec: t.eta_to_limit_sec,
    }
}

fn most_first(m: &std::collections::BTreeMap<String, u32>) -> Vec<v1::Count> {
    let mut v: Vec<v1::Count> =
        m.iter().map(|(name, n)| v1::Count { name: name.clone(), count: u64::from(*n) }).collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    v
}

fn thread_samples(tid: i32, comm: &[u8], t: &crate::blocked::Tally) -> v1::ThreadSamples {
    v1::ThreadSamples {
        tid,
        comm: escape(comm),
        samples: t.samples,
        running: t.running,
        by_syscall: most_first(&t.by_syscall),
        by_wchan: most_first(&t.by_wchan),
    }
}

pub fn blocked(s: &crate::blocked::Sampled, agent: v1::AgentInfo) -> v1::SampleBlockedResponse {
    v1::SampleBlockedResponse {
        agent: Some(agent),
        samples: s.samples,
        duration_msec: s.duration.as_millis() as u64,
        total: Some(thread_samples(0, b"", &s.total)),
        threads: s.threads.iter().map(|(tid, (comm, t))| thread_samples(*tid, comm, t)).collect(),
        unavailable: unavailable_all(&s.unavailable),
        exited: s.exited,
    }
}

fn time_count((name, calls, ns): &(String, u64, u64)) -> v1::TimeCount {
    v1::TimeCount { name: name.clone(), calls: *calls, total_nsec: *ns }
}

fn fd_stat(f: &crate::profile::summary::FdStat, elapsed_ns: u64) -> v1::FdStat {
    v1::FdStat {
        pid: f.tgid as i32,
        fd: f.fd,
        kind: f.kind.map_or(v1::FdKind::Unspecified, fd_kind) as i32,
        target: f.target.clone(),
        syscalls: f.syscalls.iter().map(time_count).collect(),
        calls: f.calls,
        errors: f.errors,
        total_nsec: f.total_ns,
        min_nsec: f.min_ns,
        max_nsec: f.max_ns,
        p50_nsec: f.percentile(0.5),
        p99_nsec: f.percentile(0.99),
        latency_buckets: f.hist.used().to_vec(),
        timed: f.timed,
        wall_pct: if elapsed_ns == 0 { 0.0 } else { f.total_ns as f64 * 100.0 / elapsed_ns as f64 },
    }
}

fn slow_call(s: &crate::profile::summary::Slow) -> v1::SlowCall {
    let c = &s.call;
    v1::SlowCall {
        tid: c.tid as i32,
        pid: c.tgid as i32,
        syscall: s.syscall.clone(),
        fd: c.fd,
        target: s.target.clone().unwrap_or_default(),
        duration_nsec: c.ns,
        result: c.ret,
        errno: if crate::profile::counts::is_error(c.ret) {
            crate::profile::names::errno((-c.ret) as u32)
        } else {
            String::new()
        },
        offset_nsec: c.offset_ns,
    }
}

fn syscall_stat(s: &crate::profile::summary::Stat, grand_total_ns: u64) -> v1::SyscallStat {
    v1::SyscallStat {
        latency_buckets: s.hist.used().to_vec(),
        timed: s.timed,
        p50_nsec: s.percentile(0.5),
        p99_nsec: s.percentile(0.99),
        top_fds: s.top_fds.iter().map(time_count).collect(),
        name: s.name.clone(),
        number: s.nr,
        calls: s.calls,
        errors: s.errors,
        errnos: s.errnos.iter().map(|(name, count)| v1::Count { name: name.clone(), count: *count }).collect(),
        total_nsec: s.total_ns,
        min_nsec: s.min_ns,
        max_nsec: s.max_ns,
        time_pct: if grand_total_ns == 0 { 0.0 } else { s.total_ns as f64 * 100.0 / grand_total_ns as f64 },
    }
}

/// A finished profile. `comm(pid, tid)` names threads (empty when gone).
pub struct ProfileParts<'a> {
    pub outcome: &'a crate::profile::Outcome,
    pub summary: &'a crate::profile::summary::Summary,
    pub backend: crate::profile::Backend,
    pub backend_reason: String,
    pub threads: bool,
    pub findings: Vec<model::Finding>,
}

pub fn syscall_profile(
    p: ProfileParts,
    comm: impl Fn(i32, i32) -> Vec<u8>,
    agent: v1::AgentInfo,
) -> v1::SyscallProfile {
    let s = p.summary;
    let secs = p.outcome.elapsed.as_secs_f64();
    let elapsed_ns = p.outcome.elapsed.as_nanos() as u64;
    v1::SyscallProfile {
        agent: Some(agent),
        backend: match p.backend {
            crate::profile::Backend::Ebpf => v1::ProfileBackend::Ebpf,
            crate::profile::Backend::Ptrace => v1::ProfileBackend::Ptrace,
        } as i32,
        backend_reason: p.backend_reason,
        pids: p.outcome.pids.clone(),
        duration_msec: p.outcome.elapsed.as_millis() as u64,
        calls: s.calls,
        errors: s.errors,
        total_nsec: s.total_ns,
        calls_per_sec: if secs > 0.0 { s.calls as f64 / secs } else { 0.0 },
        syscalls: s.syscalls.iter().map(|st| syscall_stat(st, s.total_ns)).collect(),
        threads: if p.threads {
            s.threads
                .iter()
                .map(|t| v1::ThreadProfile {
                    tid: t.tid as i32,
                    pid: t.tgid as i32,
                    comm: escape(&comm(t.tgid as i32, t.tid as i32)),
                    calls: t.calls,
                    errors: t.errors,
                    total_nsec: t.total_ns,
                    syscalls: t.syscalls.iter().map(|st| syscall_stat(st, t.total_ns)).collect(),
                    fds: t.fds.iter().map(|f| fd_stat(f, elapsed_ns)).collect(),
                })
                .collect()
        } else {
            Vec::new()
        },
        partial: p.outcome.partial.is_some(),
        partial_reason: p.outcome.partial.clone().unwrap_or_default(),
        lost_events: s.lost,
        findings: findings(&p.findings),
        unavailable: Vec::new(),
        arch: crate::profile::names::ARCH.into(),
        fds: s.fds.iter().map(|f| fd_stat(f, elapsed_ns)).collect(),
        slowest: s.slowest.iter().map(slow_call).collect(),
        slowest_missed: s.slowest_missed,
        time_one_in: s.time_one_in,
        lost_detail: s.detail_lost,
    }
}

/// The one mapping from agent errors to gRPC status codes.
pub fn status_from(err: &AgentError) -> tonic::Status {
    use tonic::Status;
    let msg = err.to_string();
    match err {
        AgentError::ProcessNotFound { .. }
        | AgentError::ProcessReused { .. }
        | AgentError::NothingMatches { .. }
        | AgentError::ReportNotFound { .. } => Status::not_found(msg),
        AgentError::InvalidArgument(_) => Status::invalid_argument(msg),
        AgentError::WatcherOff | AgentError::ProfileBusy { .. } | AgentError::AlreadyTraced { .. } => {
            Status::failed_precondition(msg)
        }
        AgentError::TooManyProfiles { .. } => Status::resource_exhausted(msg),
        AgentError::BackendUnavailable(_) => Status::permission_denied(msg),
        AgentError::Profile(_) => Status::internal(msg),
        AgentError::Read(ReadError::Denied { .. }) => Status::permission_denied(msg),
        AgentError::Read(ReadError::Gone { .. }) => Status::not_found(msg),
        AgentError::Read(ReadError::Parse { .. }) => Status::internal(msg),
        // The agent is there and answering: a failed read is its own error, not
        // "unavailable" (which clients take as "cannot reach the agent").
        AgentError::Read(e @ ReadError::Io { .. }) => Status::internal(e.reason()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn tcp_states_are_the_kernels_numbers_and_osl_v1s_names() {
        for n in 1..=12u8 {
            let state = TcpState::from_kernel(n);
            assert_eq!(state.kernel(), n);
            assert_eq!(tcp_state(state) as i32, i32::from(n));
            assert_eq!(osl_proto::enum_names::tcp_state::name_of(i32::from(n)), state.name());
        }
        assert_eq!(TcpState::from_kernel(10), TcpState::Listen);
        assert_eq!(TcpState::from_kernel(8), TcpState::CloseWait);
        let bound_inactive = TcpState::from_kernel(13);
        assert_eq!((bound_inactive.kernel(), bound_inactive.name()), (13, "unknown"));
        assert_eq!(tcp_state(bound_inactive), v1::TcpState::Unspecified);
    }

    #[test]
    fn status_codes() {
        use tonic::Code;
        let code = |e: AgentError| status_from(&e).code();
        assert_eq!(code(AgentError::ProcessNotFound { pid: 1 }), Code::NotFound);
        assert_eq!(code(AgentError::ProcessReused { pid: 1, expected: 1, found: 2 }), Code::NotFound);
        assert_eq!(code(AgentError::InvalidArgument("x".into())), Code::InvalidArgument);
        assert_eq!(code(ReadError::Denied { path: PathBuf::from("/proc/1/fd") }.into()), Code::PermissionDenied);
        assert_eq!(code(ReadError::parse("/proc/1/stat", "bad").into()), Code::Internal);
        let io = ReadError::from_io("/proc/1/stat", std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(code(io.into()), Code::Internal);
        assert_eq!(code(ReadError::Gone { path: PathBuf::from("/proc/1") }.into()), Code::NotFound);
        let s = status_from(&AgentError::ProcessNotFound { pid: 4242 });
        assert_eq!(s.message(), "process 4242 not found");
    }

    #[test]
    fn non_utf8_comm_is_escaped_on_the_wire() {
        let p = model::Process { pid: 1, comm: b"a\nb\xff".to_vec(), state: 'Z', ..Default::default() };
        let v = process(&p);
        assert_eq!(v.comm, "a\\nb\\xff");
        assert_eq!(v.state, v1::ProcessState::Zombie as i32);
    }
}
