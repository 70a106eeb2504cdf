//! Real cgroup v1 memory limits (root): limit, working set, findings, OOM kill.

use crate::support::{MIB, TestProc, V1Cgroup, assert_within, collector, privileged};
use osl_agent::model::{CgroupRoute, CgroupVersion, PressureSource, Severity};
use std::path::Path;

#[test]
fn v1_limit_working_set_findings_and_oom_kill() {
    if !privileged("v1_limit_working_set_findings_and_oom_kill") {
        return;
    }
    let cg = V1Cgroup::create("limit", 128 * MIB);
    let sleeper = TestProc::spawn(&["anon", "0"]);
    let mut hog = TestProc::spawn(&["anon", "0"]);
    cg.add(sleeper.pid);
    cg.add(hog.pid);
    assert_eq!(hog.send("alloc 100").as_deref(), Some("ok"));

    let c = collector();
    let read = |pids: &[i32]| {
        let procs: Vec<_> = pids.iter().map(|&p| c.process(p, None).unwrap()).collect();
        let (containers, unavailable) = c.containers(&procs);
        assert!(unavailable.is_empty(), "{unavailable:?}");
        assert_eq!(containers.len(), 1, "both processes share one cgroup");
        let findings = osl_agent::findings::evaluate(&procs, &containers);
        (containers.into_iter().next().unwrap(), findings)
    };

    let (container, findings) = read(&[hog.pid, sleeper.pid]);
    let m = container.memory.as_ref().unwrap();
    assert_eq!(m.location.version, CgroupVersion::V1);
    assert_eq!(m.location.route, CgroupRoute::AgentMount);
    assert_eq!(m.location.path, cg.path());
    assert_eq!(m.location.dir, cg.dir);
    assert_eq!(m.limit_bytes, Some(Some(128 * MIB)), "limit exact");
    let ws = m.working_set_bytes.unwrap();
    assert_within(ws, cg.kernel_working_set(), 5.0, "working set vs the kernel's");
    assert_within(ws, 100 * MIB, 10.0, "working set vs 100 MiB held");
    assert!(m.anon_bytes.unwrap() >= 100 * MIB, "total_rss {:?}", m.anon_bytes);
    assert_eq!(m.oom_kill_events, Some(0));
    assert_eq!(m.under_oom, Some(false));
    // v1 has no per-cgroup PSI; on this hybrid host the process's v2 cgroup has it.
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", hog.pid)).unwrap();
    let v2_path = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap().trim_start_matches('/');
    let pressure = m.pressure.as_ref().unwrap();
    let expected = Path::new("/sys/fs/cgroup/unified").join(v2_path).join("memory.pressure");
    assert_eq!((pressure.source, pressure.path.clone()), (PressureSource::Cgroup, expected));
    assert_eq!(container.pids.len(), 2);
    // ~79% of the limit: below the 85% warning.
    assert!(findings.iter().all(|f| f.id != "memory.near_limit"), "{findings:?}");

    assert_eq!(hog.send("alloc 12").as_deref(), Some("ok"));
    let (_, findings) = read(&[hog.pid, sleeper.pid]);
    let near: Vec<_> = findings.iter().filter(|f| f.id == "memory.near_limit").collect();
    assert_eq!(near.len(), 1, "{findings:?}");
    assert_eq!(near[0].severity, Severity::Warn, "{}", near[0].message);

    // Past the limit: the kernel kills the biggest process in the cgroup.
    assert_eq!(hog.send("alloc 64"), None, "the hog must be OOM-killed");
    let status = hog.wait();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status:?}");
    let (container, findings) = read(&[sleeper.pid]);
    let m = container.memory.as_ref().unwrap();
    assert_eq!(m.oom_kill_events, Some(1), "exactly one OOM kill");
    assert!(m.failcnt.unwrap() > 0);
    let oom: Vec<_> = findings.iter().filter(|f| f.id == "memory.oom_killed").collect();
    assert_eq!(oom.len(), 1, "{findings:?}");
    assert_eq!(oom[0].severity, Severity::Critical);
    assert!(oom[0].evidence.contains(&("oom_kill_events", "1".to_string())));
    assert_eq!(findings[0].id, "memory.oom_killed", "the most severe comes first");
}
