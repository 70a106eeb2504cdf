//! The fd table, lsof style, and fd summaries.

use super::tables::Grid;
use super::units::{NONE, bytes, opt};
use osl_proto::{enum_names, v1};

/// What an fd is, in one cell: a path, or a socket with its endpoints and state.
fn target(fd: &v1::Fd) -> String {
    let deleted = if fd.deleted { " (deleted)" } else { "" };
    let Some(s) = &fd.socket else { return format!("{}{deleted}", fd.target) };
    match s.protocol.as_str() {
        "" => format!("{} ({})", fd.target, s.note),
        "unix" => {
            let path = if s.unix_path.is_empty() { "(unnamed)" } else { &s.unix_path };
            format!("unix {} {path} {}", s.unix_type, s.unix_state)
        }
        "netlink" => s.note.clone(),
        proto if s.tcp_state == v1::TcpState::Listen as i32 => {
            format!("{proto} {} LISTEN (accept queue {}/{})", s.local, opt(s.accept_queue), opt(s.accept_backlog))
        }
        proto if proto.starts_with("tcp") => {
            let state = enum_names::tcp_state::name_of(s.tcp_state).to_uppercase();
            format!("{proto} {} -> {} {state}", s.local, s.remote)
        }
        proto => format!("{proto} {} -> {} {}", s.local, s.remote, s.udp_state),
    }
}

/// fdinfo detail for -o wide.
fn detail(fd: &v1::Fd) -> String {
    let mut parts = Vec::new();
    let Some(d) = &fd.detail else { return NONE.into() };
    if let Some(c) = d.eventfd_count {
        parts.push(format!("count={c}"));
    }
    if !d.epoll_targets.is_empty() {
        let fds: Vec<String> = d.epoll_targets.iter().map(|t| format!("{}:{:#x}", t.fd, t.events)).collect();
        parts.push(format!("watches={}", fds.join(",")));
    }
    if let Some(i) = d.timerfd_interval_nsec {
        parts.push(format!("interval={:.3}s ticks={}", i as f64 / 1e9, opt(d.timerfd_ticks)));
    }
    if !d.signalfd_signals.is_empty() {
        parts.push(format!("signals={}", d.signalfd_signals.join(",")));
    }
    if !d.inotify_watches.is_empty() {
        parts.push(format!("watches={}", d.inotify_watches.len()));
    }
    if let Some(pid) = d.pidfd_pid {
        parts.push(format!("pid={pid}"));
    }
    if let Some(s) = &fd.socket
        && let (Some(tx), Some(rx)) = (s.send_queue_bytes, s.recv_queue_bytes)
    {
        parts.push(format!("sendq={tx} recvq={rx}"));
    }
    if parts.is_empty() { NONE.into() } else { parts.join(" ") }
}

pub fn table(fds: &[v1::Fd], wide: bool, width: Option<u16>) -> String {
    let mut headers = vec!["FD", "KIND"];
    if wide {
        headers.extend(["FLAGS", "POS", "SIZE", "DETAIL"]);
    }
    headers.push("TARGET");
    let mut t = Grid::new(headers, &[0]);
    for fd in fds {
        let mut row = vec![fd.fd.to_string(), enum_names::fd_kind::name_of(fd.kind)];
        if wide {
            let flags = fd.flags.iter().map(|f| f.trim_start_matches("O_")).collect::<Vec<_>>().join("|");
            row.extend([flags, opt(fd.pos_bytes), bytes(fd.size_bytes), detail(fd)]);
        }
        row.push(target(fd));
        t.push(row);
    }
    t.render(width)
}

/// `63 fds: 20 socket, 5 file, 2 pipe…; tcp: 3 close_wait, 1 established`.
pub fn summary_line(s: &v1::FdSummary) -> String {
    let list = |c: &[v1::Count]| c.iter().map(|c| format!("{} {}", c.count, c.name)).collect::<Vec<_>>().join(", ");
    let mut line = format!("{} fds", s.total);
    if !s.by_kind.is_empty() {
        line.push_str(&format!(": {}", list(&s.by_kind)));
    }
    if !s.by_tcp_state.is_empty() {
        line.push_str(&format!("; tcp: {}", list(&s.by_tcp_state)));
    }
    if s.deleted_files > 0 {
        line.push_str(&format!("; {} deleted file(s) holding {}", s.deleted_files, bytes(Some(s.deleted_bytes))));
    }
    line
}

fn trend_line(t: &v1::FdTrend) -> String {
    let eta = t.eta_to_limit_sec.map(|e| format!(", limit in {e}s")).unwrap_or_default();
    let verdict = if t.growing { "growing" } else { "not growing" };
    format!(
        "{verdict}: {} -> {} over {:.1}s ({:+.2}/s, {} samples){eta}",
        t.first,
        t.last,
        t.window_msec as f64 / 1000.0,
        t.slope_per_sec,
        t.samples
    )
}

/// The lines under an fd table: summary, headroom, remotes, trend.
pub fn process_lines(p: &v1::Process) -> String {
    let mut out = String::new();
    if let Some(s) = &p.fd_summary {
        out.push_str(&format!("summary: {}\n", summary_line(s)));
        let limit = p.fds.as_ref().and_then(|f| f.soft_limit);
        if let (Some(h), Some(l)) = (s.headroom, limit) {
            out.push_str(&format!("limit: {} of {l} used, {h} left (soft RLIMIT_NOFILE)\n", s.total));
        }
        if !s.top_remotes.is_empty() {
            let r: Vec<String> = s.top_remotes.iter().map(|e| format!("{} ({})", e.remote, e.connections)).collect();
            out.push_str(&format!("top remotes: {}\n", r.join(", ")));
        }
        if s.closed_during_read > 0 {
            out.push_str(&format!("{} fd(s) closed while the table was read\n", s.closed_during_read));
        }
    }
    if let Some(t) = &p.fd_trend {
        out.push_str(&format!("trend: {}\n", trend_line(t)));
    }
    out
}

/// One row per process in `diagnose`.
pub fn summaries(processes: &[v1::Process], wide: bool, width: Option<u16>) -> String {
    let mut t = Grid::new(vec!["PID", "FDS", "LIMIT", "TREND", "KINDS", "TCP"], &[0, 1, 2]);
    let list = |c: &[v1::Count], n: usize| {
        let mut items: Vec<String> = c.iter().take(n).map(|c| format!("{} {}", c.count, c.name)).collect();
        if c.len() > n {
            items.push("…".into());
        }
        if items.is_empty() { NONE.to_string() } else { items.join(", ") }
    };
    let n = if wide { usize::MAX } else { 3 };
    for p in processes {
        let Some(s) = &p.fd_summary else { continue };
        let limit = p.fds.as_ref().and_then(|f| f.soft_limit);
        let trend = p.fd_trend.as_ref().map_or_else(
            || NONE.to_string(),
            |t| if t.growing { format!("{:+.1}/s", t.slope_per_sec) } else { "steady".into() },
        );
        t.push(vec![
            p.pid.to_string(),
            s.total.to_string(),
            opt(limit),
            trend,
            list(&s.by_kind, n),
            list(&s.by_tcp_state, n),
        ]);
    }
    t.render(width)
}
