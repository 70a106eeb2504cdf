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
            enum_names::report_kind::name_of(r.kind),
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
fn history_line(h: &[v1::MemorySample]) -> Option<String> {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (first, last) = (h.first()?, h.last()?);
    let per_cell = h.len().div_ceil(60);
    let cells: Vec<u64> =
        h.chunks(per_cell).map(|c| c.iter().map(|s| s.working_set_bytes).max().unwrap_or(0)).collect();
    let (lo, hi) = (*cells.iter().min()?, *cells.iter().max()?);
    let bar = |v: u64| BARS[if hi == lo { 0 } else { ((v - lo) * 7 / (hi - lo)) as usize }];
    let secs = (last.at_unix_ms - first.at_unix_ms).max(0) / 1000;
    Some(format!(
        "working set, last {}m{:02}s: {} ({} .. {})\n",
        secs / 60,
        secs % 60,
        cells.iter().map(|&v| bar(v)).collect::<String>(),
        bytes(Some(lo)),
        bytes(Some(hi))
    ))
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
}
