//! File descriptors against RLIMIT_NOFILE.

use crate::support::TestProc;
use osl_agent::{Agent, Roots};
use osl_proto::v1;

#[test]
fn fds_near_a_lowered_nofile_limit_are_counted_exactly_and_found_critical() {
    let child = TestProc::spawn(&["fds", "60", "64"]);
    let agent = Agent::new(&Roots::default());
    let resp = agent.get_process(v1::GetProcessRequest { pid: child.pid, start_time_ticks: None }).unwrap();
    let fds = resp.process.unwrap().fds.unwrap();
    let on_disk = std::fs::read_dir(format!("/proc/{}/fd", child.pid)).unwrap().count() as u64;
    assert_eq!(on_disk, 63, "60 files + stdin, stdout, stderr");
    assert_eq!(fds.open, Some(63));
    assert_eq!((fds.soft_limit, fds.soft_unlimited), (Some(64), false));
    let f = &resp.findings;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].id, "fd.near_limit");
    assert_eq!(f[0].severity, v1::Severity::Critical as i32);
    assert_eq!(f[0].pid, Some(child.pid));
    assert_eq!(f[0].evidence["open_fds"], "63");
    assert_eq!(f[0].evidence["soft_limit"], "64");
}

#[test]
fn a_process_far_from_its_limit_has_no_fd_finding() {
    let child = TestProc::spawn(&["fds", "10", "1024"]);
    let agent = Agent::new(&Roots::default());
    let resp = agent.get_process(v1::GetProcessRequest { pid: child.pid, start_time_ticks: None }).unwrap();
    assert_eq!(resp.process.unwrap().fds.unwrap().open, Some(13));
    assert!(resp.findings.is_empty(), "{:?}", resp.findings);
}
