//! Pre-OOM reports: the list, and one report.

use super::tables::Grid;
use super::units::{NONE, bytes, opt, short_id};
use osl_proto::{enum_names, v1};

fn when(unix_ms: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    format!("{} ago", super::units::age(now.saturating_sub(unix_ms).max(0) as u64))
}

fn container(id: &str, path: &str) -> String {
    if id.is_empty() { path.to_string() } else { short_id(id).to_string() }
}

pub fn list(resp: &v1::ListReportsResponse, width: Option<u16>) -> String {
    if resp.directory.is_empty() {
        return "The agent's pre-OOM watcher is off: no reports.\n".into();
    }
    if resp.reports.is_empty() {
        return format!("No reports yet (the agent keeps them in {}).\n", resp.directory);
    }
    let mut t = Grid::new(vec!["ID", "KIND", "AGE", "CONTAINER", "TRIGGER", "USE%"], &[5]);
    for r in &resp.reports {
        t.push(vec![
            r.id.clone(),
            enum_names::report_kind::name_of(r.kind)
                + if r.not_persisted_reason.is_empty() { "" } else { " (not persisted)" },
            when(r.created_at_unix_ms),
            container(&r.container_id, &r.cgroup_path),
            r.trigger_event.clone(),
            format!("{:.1}%", r.usage_pct),
        ]);
    }
    t.render(width) + "\n"
}

pub fn detail(r: &v1::Report, wide: bool, width: Option<u16>) -> String {
    let mut out = format!(
        "report {} ({}, {}, captured in {:.1} ms)\ncontainer {}\n",
        r.id,
        enum_names::report_kind::name_of(r.kind),
        when(r.created_at_unix_ms),
        r.capture_usec as f64 / 1000.0,
        container(&r.container_id, &r.cgroup_path)
    );
    if !r.not_persisted_reason.is_empty() {
        out.push_str(&format!("not persisted (in the agent's memory only): {}\n", r.not_persisted_reason));
    }
    if let Some(t) = &r.trigger {
        let eta = t.predicted_oom_in_msec.map(|ms| format!(", limit in {:.1}s at this rate", ms as f64 / 1000.0));
        out.push_str(&format!(
            "trigger: {} ({}), working set {} of {} ({:.1}%), growing {}/s{}\n",
            t.event,
            t.source,
            bytes(t.working_set_bytes),
            bytes(t.limit_bytes),
            t.usage_pct,
            bytes(Some(t.growth_bytes_per_sec.max(0.0) as u64)),
            eta.unwrap_or_default()
        ));
    }
    if let Some(m) = &r.memory {
        out.push_str(&format!(
            "memory: anon {}, file {}, shmem {}, kernel {}; oom kills {}\n",
            bytes(m.anon_bytes),
            bytes(m.file_bytes),
            bytes(m.shmem_bytes),
            bytes(m.kernel_bytes),
            opt(m.oom_kill_events)
        ));
    }
    if let Some(line) = history_line(&r.history) {
        out.push_str(&line);
        out.push_str(&history_extras(&r.history, &r.processes));
    }
    if !r.victims.is_empty() {
        let v: Vec<String> =
            r.victims.iter().map(|p| format!("{} ({}, rss {})", p.pid, p.comm, bytes(p.rss_bytes))).collect();
        out.push_str(&format!("killed: {}\n", v.join(", ")));
    }
    if r.next_victim_pid != 0 {
        let who = r.processes.iter().find(|p| p.pid == r.next_victim_pid);
        let comm = who.map_or("?", |p| p.comm.as_str());
        let score = who.and_then(|p| p.oom_score).map(|s| format!(", oom_score {s}")).unwrap_or_default();
        let adj =
            who.and_then(|p| p.oom_score_adj).filter(|&a| a != 0).map(|a| format!(", adj {a:+}")).unwrap_or_default();
        let group =
            if r.oom_group == Some(true) { "; memory.oom.group: the kill takes the whole container" } else { "" };
        out.push_str(&format!("next OOM victim: {} ({comm}{score}{adj}){group}\n", r.next_victim_pid));
    }
    if !r.previous_report_id.is_empty() {
        out.push_str(&format!("previous report: {}\n", r.previous_report_id));
    }
    out.push('\n');
    let mut t = Grid::new(
        vec!["PID", "GROWTH", "RSS", "ANON", "PSS", "USS", "FDS", "THR", "COMMAND"],
        &[0, 1, 2, 3, 4, 5, 6, 7],
    );
    for p in &r.processes {
        let growth = p.rss_growth_bytes.map_or_else(
            || NONE.to_string(),
            |g| {
                if g < 0 {
                    format!("-{}", bytes(Some(g.unsigned_abs())))
                } else {
                    format!("+{}", bytes(Some(g as u64)))
                }
            },
        );
        let command = if p.cmdline.is_empty() || !wide { p.comm.clone() } else { p.cmdline.join(" ") };
        t.push(vec![
            p.pid.to_string(),
            growth,
            bytes(p.rss_bytes),
            bytes(p.anon_bytes),
            bytes(p.pss_bytes),
            bytes(p.uss_bytes),
            opt(p.fds),
            opt(p.threads),
            command,
        ]);
    }
    out.push_str(&t.render(width));
    out.push('\n');
    out
}

/// The working set over the minutes before, as a sparkline of at most 60 cells
/// (each the highest sample of its slice: a peak is never averaged away).
pub(crate) fn history_line(h: &[v1::MemorySample]) -> Option<String> {
    let (first, last) = (h.first()?, h.last()?);
    let ws: Vec<u64> = h.iter().map(|s| s.working_set_bytes).collect();
    let (line, lo, hi) = sparkline(&ws, 60)?;
    let secs = (last.at_unix_ms - first.at_unix_ms).max(0) / 1000;
    Some(format!(
        "working set, last {}m{:02}s: {line} ({} .. {})\n",
        secs / 60,
        secs % 60,
        bytes(Some(lo)),
        bytes(Some(hi))
    ))
}

/// What else the ring holds: the container's open fds, its memory pressure, and
/// its biggest process at the first and the last sample.
fn history_extras(h: &[v1::MemorySample], processes: &[v1::ReportProcess]) -> String {
    let mut out = String::new();
    let fds: Option<Vec<u64>> = h.iter().map(|s| s.fd_count.map(u64::from)).collect();
    if let Some((line, lo, hi)) = fds.as_deref().and_then(|f| sparkline(f, 60)) {
        out.push_str(&format!("open fds: {line} ({lo} .. {hi})\n"));
    }
    let psi =
        h.iter().filter_map(|s| s.pressure_some_avg10).fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))));
    if let Some(max) = psi {
        out.push_str(&format!("memory pressure (some avg10): at most {max:.1}%\n"));
    }
    let comm = |pid: i32| processes.iter().find(|p| p.pid == pid).map_or("?", |p| p.comm.as_str());
    if let (Some(a), Some(b)) = (h.first().and_then(|s| s.top.first()), h.last().and_then(|s| s.top.first())) {
        out.push_str(&format!(
            "biggest process: {} ({}) {} at the start, {} ({}) {} at the end\n",
            a.pid,
            comm(a.pid),
            bytes(Some(a.rss_bytes)),
            b.pid,
            comm(b.pid),
            bytes(Some(b.rss_bytes))
        ));
    }
    out
}

/// Bars for `values` in at most `cells` cells, each the highest of its slice, with
/// the low and high the bars span.
pub(crate) fn sparkline(values: &[u64], cells: usize) -> Option<(String, u64, u64)> {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let per_cell = values.len().div_ceil(cells.max(1)).max(1);
    let maxes: Vec<u64> = values.chunks(per_cell).filter_map(|c| c.iter().max().copied()).collect();
    let (lo, hi) = (*maxes.iter().min()?, *maxes.iter().max()?);
    let bar = |v: u64| BARS[if hi == lo { 0 } else { ((v - lo) as u128 * 7 / (hi - lo) as u128) as usize }];
    Some((maxes.iter().map(|&v| bar(v)).collect(), lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sec: i64, mib: u64) -> v1::MemorySample {
        v1::MemorySample { at_unix_ms: sec * 1000, working_set_bytes: mib << 20, ..Default::default() }
    }

    #[test]
    fn the_history_is_a_sparkline_that_keeps_every_peak() {
        // A sawtooth of 600 s: three lives growing to 32 MiB; 600 samples in 60 cells.
        let h: Vec<_> = (0..600).map(|s| at(s, (s as u64 % 200) * 32 / 199)).collect();
        let line = history_line(&h).unwrap();
        assert!(line.starts_with("working set, last 9m59s: "), "{line}");
        assert!(line.ends_with("(1 MiB .. 32 MiB)\n"), "{line}");
        let bars: String = line.chars().filter(|c| ('▁'..='█').contains(c)).collect();
        assert_eq!(bars.chars().count(), 60);
        assert_eq!(bars.matches('█').count(), 3, "each life's peak survives: {bars}");
        assert!(history_line(&[]).is_none());
    }

    #[test]
    fn the_extras_show_fds_pressure_and_the_biggest_process_only_when_read() {
        let mut h: Vec<_> = (0..10).map(|s| at(s, s as u64)).collect();
        assert_eq!(history_extras(&h, &[]), "", "a v1 ring without process columns");
        for (i, s) in h.iter_mut().enumerate() {
            s.fd_count = Some(10 + i as u32);
            s.pressure_some_avg10 = Some(i as f64);
            s.top = vec![v1::ProcessRss { pid: 42, rss_bytes: (i as u64 + 1) << 20 }];
        }
        let procs = [v1::ReportProcess { pid: 42, comm: "leaker".into(), ..Default::default() }];
        let text = history_extras(&h, &procs);
        assert!(text.contains("open fds: ▁▁▂▃▄▄▅▆▇█ (10 .. 19)\n"), "{text}");
        assert!(text.contains("at most 9.0%"), "{text}");
        assert!(text.contains("42 (leaker) 1 MiB at the start, 42 (leaker) 10 MiB at the end"), "{text}");
    }
}
