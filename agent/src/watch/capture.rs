//! A report's capture: the container and its processes read now, ranked by RSS
//! growth, with the findings, the next OOM victim and the minutes before.

use super::{REPORT_SEQ, Watched, store, victim};
use crate::cgroup::CgroupReader;
use crate::convert;
use crate::error::read_file_at;
use crate::findings;
use crate::model::{CgroupVersion, Process};
use crate::proc::{Brief, ProcReader};
use osl_proto::v1;
use rustix::fd::AsRawFd;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

pub(super) fn brief_process(b: &Brief) -> v1::ReportProcess {
    v1::ReportProcess {
        pid: b.pid,
        start_time_ticks: b.start_time_ticks,
        comm: osl_proto::text::escape(&b.comm),
        rss_bytes: Some(b.rss_bytes),
        ..Default::default()
    }
}

/// Reads the container and its processes now; processes are ranked by RSS growth
/// since the watcher last saw them.
pub(super) fn report(
    procs: &ProcReader,
    cgroups: &CgroupReader,
    w: &mut Watched,
    kind: v1::ReportKind,
    trigger: v1::Trigger,
) -> v1::Report {
    let before: HashMap<(i32, u64), u64> =
        w.members.iter().map(|b| ((b.pid, b.start_time_ticks), b.rss_bytes)).collect();
    // The cgroup's processes now, through the held directory (the rescan's list may
    // be seconds old, and after a kill it names the victim).
    let pids: Vec<i32> = w.files.pids().unwrap_or_else(|| w.members.iter().map(|b| b.pid).collect());
    // A victim still exiting, or a pid already reused elsewhere, must not stand for
    // the container: it would be read as another (or no) container.
    let path = w.container.memory.as_ref().map(|m| m.location.path.clone());
    let processes: Vec<Process> = procs
        .read_many(&pids)
        .into_iter()
        .filter_map(|(_, p)| p.ok())
        .filter(|p| p.state != 'Z' && p.state != 'X')
        .filter(|p| path.is_none() || p.container_cgroup().map(|c| &c.path) == path.as_ref())
        .collect();
    let mut container = match processes.first() {
        Some(p) => cgroups.read_container(p.pid, &p.cgroups),
        None => {
            // Nobody left to reach the cgroup through (its path may have led through a
            // member's /proc/PID/root): re-read it through the held directory, via the
            // agent's own /proc/self/fd link to it.
            let mut c = w.container.clone();
            if let Some(m) = &w.container.memory {
                let mut held = m.location.clone();
                held.dir = std::path::PathBuf::from(format!("/proc/self/fd/{}", w.files.dir.as_raw_fd()));
                let (mut memory, unavailable) = cgroups.reread_memory(held);
                memory.location = m.location.clone();
                c.memory = Some(memory);
                c.unavailable = unavailable;
            }
            c
        }
    };
    container.pids = processes.iter().map(|p| p.pid).collect();
    let found = findings::evaluate(&processes, std::slice::from_ref(&container));
    let mut ranked: Vec<v1::ReportProcess> = processes
        .iter()
        .map(|p| {
            let rss = p.memory.vm_rss_bytes;
            let growth = rss.zip(before.get(&(p.pid, p.start_time_ticks))).map(|(now, was)| now as i64 - *was as i64);
            v1::ReportProcess {
                pid: p.pid,
                start_time_ticks: p.start_time_ticks,
                comm: osl_proto::text::escape(&p.comm),
                cmdline: p.cmdline.iter().map(|a| osl_proto::text::escape(a)).collect(),
                rss_bytes: rss,
                anon_bytes: p.memory.rss_anon_bytes,
                pss_bytes: p.memory.pss_bytes,
                uss_bytes: p.memory.uss_bytes,
                rss_growth_bytes: growth.or(rss.map(|r| r as i64)),
                fds: p.fds.open,
                threads: p.cpu.threads,
                ..Default::default()
            }
        })
        .collect();
    ranked.sort_by_key(|p| std::cmp::Reverse(p.rss_growth_bytes.unwrap_or(i64::MIN)));
    let limit = container.memory.as_ref().and_then(|m| m.limit_bytes).flatten();
    let oom: Vec<(i32, victim::OomInputs)> =
        processes.iter().filter_map(|p| Some((p.pid, victim::read(procs.root(), p.pid)?))).collect();
    for p in &mut ranked {
        if let Some((_, i)) = oom.iter().find(|(pid, _)| *pid == p.pid) {
            p.oom_score = i.oom_score.and_then(|s| i32::try_from(s).ok());
            p.oom_score_adj = Some(i.oom_score_adj);
        }
    }
    let page = rustix::param::page_size() as u64;
    let next_victim_pid = limit.and_then(|l| victim::next(&oom, l, page)).unwrap_or(0);
    let oom_group = match container.memory.as_ref().map(|m| m.location.version) {
        Some(CgroupVersion::V2) => read_file_at(&w.files.dir, std::path::Path::new("cgroup"), "memory.oom.group")
            .ok()
            .map(|b| b.trim_ascii() == b"1"),
        _ => None,
    };
    let created_at_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let id =
        store::report_id(created_at_unix_ms, kind, container.id.as_deref(), REPORT_SEQ.fetch_add(1, Ordering::Relaxed));
    let converted = convert::container(&container);
    // Only a fuller view replaces the watched one: after a kill that emptied the
    // container, the re-read may not reach its limit, and without the limit the
    // watcher would stop polling the cgroup (and not notice it re-created).
    if container.memory.as_ref().is_some_and(|m| matches!(m.limit_bytes, Some(Some(_)))) {
        w.container = container;
    }
    v1::Report {
        id,
        kind: kind as i32,
        created_at_unix_ms,
        capture_usec: 0,
        container_id: converted.id.clone(),
        cgroup_path: converted
            .memory
            .as_ref()
            .and_then(|m| m.location.as_ref())
            .map(|l| l.path.clone())
            .unwrap_or_default(),
        trigger: Some(trigger),
        memory: converted.memory,
        processes: ranked,
        findings: convert::findings(&found),
        victims: Vec::new(),
        previous_report_id: String::new(),
        unavailable: converted.unavailable,
        next_victim_pid,
        oom_group,
        history: w.history.to_proto(),
        not_persisted_reason: String::new(),
    }
}
