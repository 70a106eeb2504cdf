//! The report store under a writer killed at random points: a reader, and the
//! next agent, see whole reports only.

use osl_agent::watch::store::Store;
use osl_proto::v1;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_DIR: &str = "OSL_TEST_STORE_WRITER_DIR";
const PROCESSES: usize = 5000;

fn big_report(i: u64) -> v1::Report {
    let processes = (0..PROCESSES as i32)
        .map(|pid| v1::ReportProcess {
            pid,
            comm: format!("worker-{pid}"),
            rss_bytes: Some(1 << 20),
            ..Default::default()
        })
        .collect();
    v1::Report { id: format!("{:013}-pre_oom-host-{i}", 1_700_000_000_000u64 + i), processes, ..Default::default() }
}

/// Not a test: the writer process that `a_writer_killed_mid_write_leaves_only_whole_reports` kills.
#[test]
#[ignore = "run by a_writer_killed_mid_write_leaves_only_whole_reports as its child"]
fn store_writer_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let store = Store::open(dir, 10_000, 1 << 40).unwrap();
    let start: u64 = std::env::var("OSL_TEST_STORE_FIRST").unwrap().parse().unwrap();
    for i in start.. {
        store.write(&big_report(i)).unwrap();
        println!("wrote {i}");
    }
}

#[test]
fn a_writer_killed_mid_write_leaves_only_whole_reports() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = 0;
    let mut temp_left = 0;
    let rounds = 10u64;
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["store::store_writer_child", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_DIR, dir.path())
            .env("OSL_TEST_STORE_FIRST", first.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        // The test harness talks first ("running 1 test").
        let mut line = String::new();
        while !line.starts_with("wrote") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the writer died");
        }
        // Kill it the moment its next temp file appears: inside the write (or, if
        // the signal is slower than write + fsync + rename, just after).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !has_temp(dir.path()) && std::time::Instant::now() < deadline {}
        child.kill().unwrap();
        child.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        first += 1 + rest.lines().filter(|l| l.starts_with("wrote")).count() as u64 + 1;
        temp_left += has_temp(dir.path()) as usize;

        // What a reader sees meanwhile, and what the next agent sees.
        let store = Store::open(dir.path(), 10_000, 1 << 40).unwrap();
        let listed = store.list();
        assert!(!listed.is_empty());
        for s in &listed {
            let r = store.get(&s.id).unwrap_or_else(|e| panic!("round {round}: {} unreadable: {e}", s.id));
            assert_eq!(r.processes.len(), PROCESSES, "round {round}: {} is whole", s.id);
        }
        assert!(!has_temp(dir.path()), "the next agent removes what a killed writer left");
    }
    eprintln!(
        "killed {rounds} writers mid-write; {temp_left} left a half-written temp file behind, none of them visible \
         as a report"
    );
    assert!(temp_left > 0, "no kill landed inside a write: the test did not test anything");
}

fn has_temp(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
}
