//! Processes that vanish mid-read, unreadable and garbage kernel files: partial
//! results with reasons, never an error for the whole snapshot, never a panic.

use crate::support::{Fixture, collector};
use osl_agent::error::AgentError;
use osl_agent::model::Filter;
use osl_agent::snapshot::{Collector, Roots};
use std::sync::atomic::{AtomicBool, Ordering};

fn fixture_collector(f: &Fixture) -> Collector {
    Collector::new(&Roots { proc: f.path("proc"), cgroup: None }, false)
}

#[test]
fn vanished_and_garbage_processes_are_skipped_or_marked() {
    let f = Fixture::new();
    f.file("proc/self/mountinfo", "");
    f.process(100, "exits", "0::/\n", 3);
    std::fs::remove_file(f.path("proc/100/status")).unwrap(); // gone after stat was read
    std::fs::remove_file(f.path("proc/100/smaps_rollup")).unwrap();
    std::fs::create_dir_all(f.path("proc/101")).unwrap(); // gone before its first read
    f.process(102, "badstat", "0::/\n", 3);
    f.file("proc/102/stat", "102 (badstat) S not-a-number\n");
    f.process(103, "badstatus", "0::/\n", 3);
    f.file("proc/103/status", b"Name:\tbadstatus\nState:\tgarbage\x00\xff\n");
    f.process(104, "badlimits", "0::/\n", 3);
    f.file("proc/104/limits", "Max open files\n");
    f.file("proc/104/smaps_rollup", b"\x7fELF\x02\x01");

    let snap = fixture_collector(&f).snapshot(&Filter::default(), None).unwrap();
    let pids: Vec<i32> = snap.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [100, 103, 104]);

    // Files missing while the process's stat is still there: absent on this kernel,
    // not an exit (a real exit mid-read is tested in proc::tests).
    let missing = &snap.processes[0];
    assert!(!missing.exited_mid_read);
    assert_eq!(missing.comm, b"exits");
    let fields: Vec<&str> = missing.unavailable.iter().map(|u| u.field.as_str()).collect();
    assert_eq!(fields, ["status", "memory.pss_bytes"]);
    assert!(
        missing.unavailable[0].reason.ends_with("status is not present on this kernel"),
        "{:?}",
        missing.unavailable
    );
    assert_eq!(missing.fds.open, Some(3), "the other files are still read");

    let stat_error = snap.unavailable.iter().find(|u| u.field == "pid 102").expect("pid 102 reported");
    assert_eq!(stat_error.path.as_deref(), Some(f.path("proc/102/stat").as_path()));
    assert!(stat_error.reason.starts_with("cannot parse"), "{}", stat_error.reason);

    let bad_status = &snap.processes[1];
    assert!(!bad_status.exited_mid_read);
    let u = bad_status.unavailable.iter().find(|u| u.field == "status").expect("status reported");
    assert_eq!(u.path.as_deref(), Some(f.path("proc/103/status").as_path()));
    assert_eq!(bad_status.memory.pss_bytes, Some(232000 * 1024), "the other files are still read");

    let bad_limits = &snap.processes[2];
    let fields: Vec<&str> = bad_limits.unavailable.iter().map(|u| u.field.as_str()).collect();
    assert_eq!(fields, ["fds.limit", "memory.pss_bytes"]);
    assert_eq!(bad_limits.fds.open, Some(3));
    assert_eq!(bad_limits.fds.limit, None);
}

#[test]
fn unknown_and_reused_pids_are_not_found() {
    let f = Fixture::new();
    f.file("proc/self/mountinfo", "");
    f.process(5, "app", "0::/\n", 3);
    let c = fixture_collector(&f);
    assert!(matches!(c.process(999, None), Err(AgentError::ProcessNotFound { pid: 999 })));
    assert!(matches!(c.process(5, Some(1)), Err(AgentError::ProcessReused { pid: 5, expected: 1, found: 12345 })));
    assert!(c.process(5, Some(12345)).is_ok());
    let only_missing = Filter { pids: vec![999], ..Default::default() };
    assert!(matches!(c.snapshot(&only_missing, None), Err(AgentError::ProcessNotFound { pid: 999 })));
    let some_missing = Filter { pids: vec![5, 999], ..Default::default() };
    let snap = c.snapshot(&some_missing, None).unwrap();
    assert_eq!(snap.processes.len(), 1);
    assert_eq!(snap.unavailable[0].field, "pid 999");
    let no_container = Filter { container_id: Some("abc".into()), ..Default::default() };
    assert!(matches!(c.snapshot(&no_container, None), Err(AgentError::NothingMatches { .. })));
}

#[test]
fn snapshots_survive_processes_starting_and_exiting_underneath() {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let children: Vec<_> = (0..8).filter_map(|_| std::process::Command::new("true").spawn().ok()).collect();
                for mut c in children {
                    let _ = c.wait();
                }
            }
        });
        let c = collector();
        for _ in 0..30 {
            let snap = c.snapshot(&Filter::default(), None).expect("a snapshot never fails because a process exits");
            assert!(snap.processes.iter().any(|p| p.pid == std::process::id() as i32));
        }
        stop.store(true, Ordering::Relaxed);
    });
}
