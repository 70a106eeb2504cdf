//! The tables, kubectl style: no borders, upper-case headers, one line a row.

use super::units::{self, NONE, bytes, cpu_time, opt, pct, short_id};
use osl_proto::{enum_names, v1};
use unicode_width::UnicodeWidthStr;

/// Rows of text, rendered kubectl style: no borders, upper-case headers, one line
/// a row. On a terminal the last column (a command line) is cut to fit the width.
pub struct Grid {
    headers: Vec<&'static str>,
    right_aligned: Vec<usize>,
    rows: Vec<Vec<String>>,
}

impl Grid {
    pub fn new(headers: Vec<&'static str>, right_aligned: &[usize]) -> Self {
        Self { headers, right_aligned: right_aligned.to_vec(), rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn render(mut self, width: Option<u16>) -> String {
        let last = self.headers.len().saturating_sub(1);
        if let Some(width) = width {
            let used: usize = (0..last)
                .map(|i| {
                    let cells = self.rows.iter().map(|r| r[i].chars().count());
                    cells.chain([self.headers[i].len()]).max().unwrap_or(0) + GAP
                })
                .sum();
            let room = usize::from(width).saturating_sub(used).max(MIN_LAST_COLUMN);
            for row in &mut self.rows {
                truncate(&mut row[last], room);
            }
        }
        // By hand, not comfy-table: one line a row and no wrapping need only the
        // columns' widths, and this takes under a third of its time on a 17,000-fd table
        // (15 ms against 52 ms, timed on 17,000 seven-column rows).
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let lines = || std::iter::once(&headers).chain(&self.rows);
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| lines().map(|r| r.get(i).map_or(0, |c| c.width())).max().unwrap_or(0))
            .collect();
        let mut out = String::with_capacity(lines().map(|r| r.iter().map(|c| c.len() + GAP).sum::<usize>()).sum());
        for row in lines() {
            let start = out.len();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.width());
                let right = self.right_aligned.contains(&i);
                if right {
                    out.extend(std::iter::repeat_n(' ', pad));
                }
                out.push_str(cell);
                if i != last {
                    out.extend(std::iter::repeat_n(' ', if right { 0 } else { pad } + GAP));
                }
            }
            out.truncate(out[start..].trim_end().len() + start);
            out.push('\n');
        }
        out.pop();
        out
    }
}

/// Spaces between columns, as kubectl prints them.
const GAP: usize = 3;
/// The last column keeps at least this much on a narrow terminal.
const MIN_LAST_COLUMN: usize = 20;

fn truncate(text: &mut String, max_chars: usize) {
    if let Some((cut, _)) = text.char_indices().nth(max_chars.saturating_sub(1))
        && text[cut..].chars().count() > 1
    {
        text.truncate(cut);
        text.push('…');
    }
}

pub fn state_letter(state: i32) -> &'static str {
    use v1::ProcessState as S;
    match v1::ProcessState::try_from(state) {
        Ok(S::Running) => "R",
        Ok(S::Sleeping) => "S",
        Ok(S::DiskSleep) => "D",
        Ok(S::Zombie) => "Z",
        Ok(S::Stopped) => "T",
        Ok(S::TracingStop) => "t",
        Ok(S::Dead) => "X",
        Ok(S::Idle) => "I",
        Ok(S::Parked) => "P",
        Ok(S::Waking) => "W",
        _ => "?",
    }
}

fn command(p: &v1::Process) -> String {
    if p.cmdline.is_empty() { format!("[{}]", p.comm) } else { p.cmdline.join(" ") }
}

fn fds(f: Option<&v1::FdUsage>) -> String {
    let Some(f) = f else { return NONE.into() };
    let limit = match (f.soft_limit, f.soft_unlimited) {
        (Some(l), _) => l.to_string(),
        (None, true) => "unlimited".into(),
        (None, false) => NONE.into(),
    };
    match f.open {
        Some(open) => format!("{open}/{limit}"),
        None => NONE.into(),
    }
}

/// The container's name when the CLI knows it (a pod target), else its short id.
fn container_label(p: &v1::Process) -> String {
    match (p.container_name.as_str(), p.container_id.as_str()) {
        (_, "") => NONE.into(),
        ("", id) => short_id(id).into(),
        (name, _) => name.into(),
    }
}

pub fn processes(list: &[v1::Process], wide: bool, width: Option<u16>) -> String {
    let mut headers = vec!["PID", "PPID", "UID", "S", "THR", "RSS", "PSS", "USS", "FDS", "CPU", "CONTAINER"];
    if wide {
        headers.extend(["AGE", "VCSW", "NVCSW", "MINFLT", "MAJFLT", "HWM", "SWAP", "SIGCGT", "CAPS"]);
    }
    headers.push("COMMAND");
    let mut t = Grid::new(headers, &[0, 1, 2, 4, 5, 6, 7, 8, 9]);
    for p in list {
        let m = p.memory.unwrap_or_default();
        let c = p.cpu.unwrap_or_default();
        let cpu = c.utime_usec.zip(c.stime_usec).map(|(u, s)| u + s);
        let mut row = vec![
            p.pid.to_string(),
            p.ppid.to_string(),
            opt(p.uid),
            state_letter(p.state).into(),
            opt(c.threads),
            bytes(m.vm_rss_bytes),
            bytes(m.pss_bytes),
            bytes(m.uss_bytes),
            fds(p.fds.as_ref()),
            cpu_time(cpu),
            container_label(p),
        ];
        if wide {
            let sig = p.signals.as_ref().map(|s| s.caught.join(",")).filter(|s| !s.is_empty());
            let caps =
                (!p.effective_capabilities.is_empty()).then(|| p.effective_capabilities.len().to_string() + " caps");
            let now_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            let age = p.start_time_unix_ms.map(|s| units::age(now_ms.saturating_sub(s).max(0) as u64));
            row.extend([
                opt(age),
                opt(c.voluntary_ctxt_switches),
                opt(c.nonvoluntary_ctxt_switches),
                opt(c.minor_faults),
                opt(c.major_faults),
                bytes(m.vm_hwm_bytes),
                bytes(m.vm_swap_bytes),
                opt(sig),
                opt(caps),
            ]);
        }
        row.push(command(p));
        t.push(row);
    }
    t.render(width)
}

pub fn cgroup_label(c: &v1::Container) -> String {
    if !c.id.is_empty() {
        return if c.name.is_empty() { short_id(&c.id).into() } else { format!("{} ({})", c.name, short_id(&c.id)) };
    }
    c.memory.as_ref().and_then(|m| m.location.as_ref()).map_or_else(|| NONE.into(), |l| l.path.clone())
}

fn limit(m: &v1::CgroupMemory) -> String {
    if m.unlimited { "unlimited".into() } else { bytes(m.limit_bytes) }
}

fn cpu_quota(c: Option<&v1::CgroupCpu>) -> String {
    match c {
        Some(c) if c.unlimited => "unlimited".into(),
        Some(v1::CgroupCpu { quota_usec: Some(q), period_usec: Some(p), .. }) if *p > 0 => {
            format!("{:.2} CPU", *q as f64 / *p as f64)
        }
        _ => NONE.into(),
    }
}

fn throttled(c: Option<&v1::CgroupCpu>) -> String {
    c.map_or_else(|| NONE.into(), |c| pct(c.throttled_periods, c.periods))
}

fn psi(p: Option<&v1::Pressure>) -> String {
    let Some(p) = p else { return NONE.into() };
    let some = p.some.as_ref().map_or_else(|| NONE.into(), |l| format!("{:.2}", l.avg10_pct));
    let full = p.full.as_ref().map_or_else(|| NONE.into(), |l| format!("{:.2}", l.avg10_pct));
    let source = if p.source == "system" { " (node)" } else { "" };
    format!("{some}/{full}{source}")
}

fn version(l: Option<&v1::CgroupLocation>) -> String {
    l.map_or_else(|| NONE.into(), |l| enum_names::cgroup_version::name_of(l.version))
}

pub fn containers(list: &[v1::Container], wide: bool, width: Option<u16>) -> String {
    let mut headers = vec![
        "CONTAINER",
        "CGROUP",
        "PIDS",
        "WORKING SET",
        "LIMIT",
        "USE%",
        "OOM KILLS",
        "CPU LIMIT",
        "THROTTLED",
        "MEM PSI 10s",
    ];
    if wide {
        headers.extend(["USAGE", "PEAK", "CPU TIME", "ROUTE"]);
    }
    let mut t = Grid::new(headers, &[2, 3, 4, 5, 6, 7, 8]);
    for c in list {
        let m = c.memory.clone().unwrap_or_default();
        let loc = m.location.as_ref();
        let mut row = vec![
            cgroup_label(c),
            version(loc),
            c.pids.len().to_string(),
            bytes(m.working_set_bytes),
            limit(&m),
            if m.unlimited { NONE.into() } else { pct(m.working_set_bytes, m.limit_bytes) },
            opt(m.oom_kill_events),
            cpu_quota(c.cpu.as_ref()),
            throttled(c.cpu.as_ref()),
            psi(m.pressure.as_ref()),
        ];
        if wide {
            row.extend([
                bytes(m.usage_bytes),
                bytes(m.peak_bytes),
                cpu_time(c.cpu.as_ref().and_then(|c| c.usage_usec)),
                loc.map_or_else(|| NONE.into(), |l| l.route.clone()),
            ]);
        }
        t.push(row);
    }
    t.render(width)
}

/// Each container's working set over the last minutes, from the agent's watcher:
/// one sparkline a container; empty when no container has a trend (--local).
pub fn memory_trends(list: &[v1::Container]) -> String {
    let mut out = String::new();
    for c in list.iter().filter(|c| !c.memory_trend.is_empty()) {
        if let Some(line) = super::reports::history_line(&c.memory_trend) {
            let now = c.memory_trend.last().map(|s| s.working_set_bytes);
            out.push_str(&format!("{}: {}", cgroup_label(c), line.trim_end()));
            out.push_str(&format!(", now {}\n", bytes(now)));
        }
    }
    out
}

pub fn container_memory(list: &[v1::Container], wide: bool, width: Option<u16>) -> String {
    let mut headers = vec![
        "CONTAINER",
        "WORKING SET",
        "LIMIT",
        "USE%",
        "ANON",
        "FILE",
        "INACTIVE FILE",
        "SHMEM",
        "KERNEL",
        "PEAK",
        "OOM KILLS",
        "PSI 10s",
    ];
    if wide {
        headers.extend(["SOCK", "SLAB", "FAILCNT", "MAX EVENTS", "DIR"]);
    }
    let mut t = Grid::new(headers, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    for c in list {
        let m = c.memory.clone().unwrap_or_default();
        let mut row = vec![
            cgroup_label(c),
            bytes(m.working_set_bytes),
            limit(&m),
            if m.unlimited { NONE.into() } else { pct(m.working_set_bytes, m.limit_bytes) },
            bytes(m.anon_bytes),
            bytes(m.file_bytes),
            bytes(m.inactive_file_bytes),
            bytes(m.shmem_bytes),
            bytes(m.kernel_bytes),
            bytes(m.peak_bytes),
            opt(m.oom_kill_events),
            psi(m.pressure.as_ref()),
        ];
        if wide {
            row.extend([
                bytes(m.sock_bytes),
                bytes(m.slab_bytes),
                opt(m.failcnt),
                opt(m.max_events),
                m.location.as_ref().map_or_else(|| NONE.into(), |l| l.dir.clone()),
            ]);
        }
        t.push(row);
    }
    t.render(width)
}

pub fn process_memory(list: &[v1::Process], wide: bool, width: Option<u16>) -> String {
    let mut headers = vec!["PID", "RSS", "ANON", "FILE", "SHMEM", "PSS", "USS", "SWAP", "HWM", "CONTAINER"];
    if wide {
        headers.extend(["VSZ", "PSS ANON", "PSS FILE", "PSS SHMEM"]);
    }
    headers.push("COMMAND");
    let mut t = Grid::new(headers, &[0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let mut sorted: Vec<&v1::Process> =
        list.iter().filter(|p| p.memory.as_ref().is_some_and(|m| m.vm_rss_bytes.is_some())).collect();
    sorted.sort_by_key(|p| std::cmp::Reverse(p.memory.as_ref().and_then(|m| m.pss_bytes.or(m.vm_rss_bytes))));
    for p in sorted {
        let m = p.memory.unwrap_or_default();
        let mut row = vec![
            p.pid.to_string(),
            bytes(m.vm_rss_bytes),
            bytes(m.rss_anon_bytes),
            bytes(m.rss_file_bytes),
            bytes(m.rss_shmem_bytes),
            bytes(m.pss_bytes),
            bytes(m.uss_bytes),
            bytes(m.vm_swap_bytes),
            bytes(m.vm_hwm_bytes),
            container_label(p),
        ];
        if wide {
            row.extend([
                bytes(m.vm_size_bytes),
                bytes(m.pss_anon_bytes),
                bytes(m.pss_file_bytes),
                bytes(m.pss_shmem_bytes),
            ]);
        }
        row.push(command(p));
        t.push(row);
    }
    t.render(width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_container_with_a_trend_gets_a_sparkline_and_its_latest_value() {
        let sample = |sec: i64, mib: u64| v1::MemorySample {
            at_unix_ms: sec * 1000,
            working_set_bytes: mib << 20,
            ..Default::default()
        };
        let with = v1::Container {
            id: "a".repeat(64),
            name: "app".into(),
            memory_trend: (0..120).map(|s| sample(s, 10 + s as u64)).collect(),
            ..Default::default()
        };
        let without = v1::Container { id: "b".repeat(64), ..Default::default() };
        let text = memory_trends(&[with, without]);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("app (aaaaaaaaaaaa): working set, last 1m59s: ▁"), "{text}");
        // Two seconds a cell, each its higher: the first cell reads 11 MiB.
        assert!(text.ends_with("(11 MiB .. 129 MiB), now 129 MiB\n"), "{text}");
        assert_eq!(memory_trends(&[]), "");
    }
}
