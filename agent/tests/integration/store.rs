//! The report store under a writer killed at random points (a reader, and the
//! next agent, see whole reports only), under a hostile neighbour sharing its
//! directory (names, symlinks, FIFOs), and on a full disk (a real small tmpfs).

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

// The store's ids, hostile neighbours and full disks.

use crate::support::Fixture;
use osl_agent::kube_events::Notice;
use osl_agent::watch::store::Saved;
use osl_agent::watch::{WatchConfig, Watcher};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A container id as some runtime might write it: upper-case hex.
const UPPER_ID: &str = "3F2A9C0D1E5B7A8F6C4D2E0B9A7C5E3D1F0B8A6C4E2D0F9B7A5C3E1D0F2B4A6C";
const MIB: u64 = 1 << 20;

/// A v2 container `id` with a 256 MiB limit using `working_set_mib` (a fixture
/// root), its cgroup directory, relative to the root.
fn v2_container(id: &str, working_set_mib: u64) -> (Fixture, String) {
    let f = Fixture::new();
    let mount = f.path("sys/fs/cgroup");
    f.file("proc/self/mountinfo", format!("25 1 0:23 / {} rw - cgroup2 cgroup2 rw\n", mount.display()));
    let scope = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{id}.scope"
    );
    f.process(4242, "app", &format!("0::{scope}\n"), 3);
    let dir = format!("sys/fs/cgroup{scope}");
    let inactive = 10 * MIB;
    f.file(&format!("{dir}/cgroup.procs"), "4242\n");
    f.file(&format!("{dir}/memory.current"), format!("{}\n", working_set_mib * MIB + inactive));
    f.file(&format!("{dir}/memory.max"), format!("{}\n", 256 * MIB));
    f.file(
        &format!("{dir}/memory.stat"),
        format!("anon {}\nfile {}\ninactive_file {inactive}\nactive_file 0\n", working_set_mib * MIB, inactive),
    );
    f.file(&format!("{dir}/memory.events"), "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n");
    (f, dir)
}

fn watcher(f: &Fixture, store: &Arc<Store>) -> Watcher {
    let procs = osl_agent::proc::ProcReader::new(f.path("proc"));
    let cgroups = osl_agent::cgroup::CgroupReader::new(f.path("proc"), None).unwrap();
    Watcher::new(procs, cgroups, store.clone(), WatchConfig::default())
}

fn json_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// A report about a container whose id is upper-case hex is named in lower case:
/// the store lists it, and bounds it (before, its file was never listed, never
/// evicted).
#[test]
fn an_upper_case_container_id_makes_a_report_the_store_lists_and_bounds() {
    let (f, dir) = v2_container(UPPER_ID, 220);
    let reports = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(reports.path(), 1, 64 << 20).unwrap());
    let mut watcher = watcher(&f, &store);
    watcher.rescan();
    watcher.tick(); // 220 of 256 MiB: past the 80% warning
    let list = store.list();
    assert_eq!(list.len(), 1, "{list:?} in {:?}", json_files(reports.path()));
    let pre = store.get(&list[0].id).unwrap();
    assert_eq!(pre.kind, v1::ReportKind::PreOom as i32);
    assert!(pre.id.contains("-pre_oom-3f2a9c0d1e5b-"), "{}", pre.id);
    assert_eq!(pre.container_id, UPPER_ID, "the container's own id is kept as it is");
    assert!(pre.not_persisted_reason.is_empty(), "on disk: {}", pre.not_persisted_reason);

    // A kill: the post-mortem is the one report the bound (1) keeps.
    f.file(&format!("{dir}/memory.events"), "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\noom_group_kill 0\n");
    f.file(&format!("{dir}/cgroup.procs"), "");
    std::fs::remove_dir_all(f.path("proc/4242")).unwrap();
    watcher.tick();
    let list = store.list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].kind, v1::ReportKind::PostMortem as i32);
    assert_eq!(json_files(reports.path()), [format!("{}.json", list[0].id)], "the pre-OOM report was evicted");
}

/// GetReport takes only an id of the store's own format: anything else is an
/// invalid argument, whatever the directory holds.
#[test]
fn ids_not_of_the_stores_format_are_invalid_arguments() {
    let reports = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(reports.path(), 10, 1 << 20).unwrap());
    // Files a neighbour sharing the directory might leave there.
    let planted = v1::Report { id: "evil".into(), ..Default::default() };
    for name in ["evil.json", "1-pre_oom-nope.json", "1-pre_oom-3F2A9C0D1E5B-0.json"] {
        std::fs::write(reports.path().join(name), serde_json::to_vec(&planted).unwrap()).unwrap();
    }
    let good = v1::Report { id: "1700000000000-pre_oom-3f2a9c0d1e5b-0".into(), ..Default::default() };
    assert!(matches!(store.write(&good), Ok(Saved::Disk(_))));
    let agent = osl_agent::Agent::new(&osl_agent::Roots::default()).with_reports(store.clone());
    let listed = agent.list_reports(v1::ListReportsRequest {}).unwrap().reports;
    assert_eq!(listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [good.id.as_str()], "no planted name");
    let long = format!("1700000000000-pre_oom-host-{}", "1".repeat(200));
    for id in [
        "../x",
        "A/B",
        "evil",
        "1-pre_oom-nope",
        "1-pre_oom-3F2A9C0D1E5B-0",
        "1700000000000-pre_oom-3f2a9c0d1e5b-0\0",
        "1700000000000-pre_oom-3f2a9c0d1e5b\0-0",
        long.as_str(),
        &"a".repeat(100),
        "",
    ] {
        let err = agent.get_report(v1::GetReportRequest { id: id.into() }).unwrap_err();
        let status = osl_agent::convert::status_from(&err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{id:?}: {status:?}");
        assert!(status.message().len() < 200, "the message does not echo a long id in full: {}", status.message());
    }
    let missing = agent.get_report(v1::GetReportRequest { id: "1700000000000-pre_oom-host-9".into() }).unwrap_err();
    assert_eq!(osl_agent::convert::status_from(&missing).code(), tonic::Code::NotFound);
    assert_eq!(agent.get_report(v1::GetReportRequest { id: good.id.clone() }).unwrap().report.unwrap().id, good.id);
}

/// A symlink to a file outside the directory and a FIFO, both named like reports:
/// neither is followed, opened blocking or served.
#[test]
fn a_symlink_or_a_fifo_named_like_a_report_is_never_served() {
    let outside = tempfile::tempdir().unwrap();
    let secret_id = "1700000000000-pre_oom-host-1";
    let secret = outside.path().join("secret.json");
    let report = v1::Report { id: secret_id.into(), cgroup_path: "/secret".into(), ..Default::default() };
    std::fs::write(&secret, serde_json::to_vec(&report).unwrap()).unwrap();
    let reports = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(reports.path(), 10, 1 << 20).unwrap());
    std::os::unix::fs::symlink(&secret, reports.path().join(format!("{secret_id}.json"))).unwrap();
    let fifo_id = "1700000000001-post_mortem-host-2";
    let fifo = reports.path().join(format!("{fifo_id}.json"));
    rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
    let real = v1::Report { id: "1700000000002-pre_oom-host-3".into(), ..Default::default() };
    store.write(&real).unwrap();
    let agent = Arc::new(osl_agent::Agent::new(&osl_agent::Roots::default()).with_reports(store));

    // In a thread: a FIFO opened blocking would hang the call for good.
    let (tx, rx) = std::sync::mpsc::channel();
    let a = agent.clone();
    std::thread::spawn(move || {
        let listed = a.list_reports(v1::ListReportsRequest {}).map(|r| r.reports);
        let got: Vec<_> = [secret_id, fifo_id]
            .into_iter()
            .map(|id| a.get_report(v1::GetReportRequest { id: id.into() }).map(|r| r.report.unwrap().cgroup_path))
            .collect();
        let _ = tx.send((listed, got));
    });
    let (listed, got) = rx.recv_timeout(Duration::from_secs(10)).expect("ListReports/GetReport blocked on the FIFO");
    let ids: Vec<String> = listed.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, [real.id.as_str()], "only the regular file is listed");
    for (id, r) in [secret_id, fifo_id].into_iter().zip(got) {
        let err = r.expect_err(&format!("{id} is not served"));
        assert_eq!(osl_agent::convert::status_from(&err).code(), tonic::Code::NotFound, "{id}: {err}");
    }
    assert!(std::fs::read_dir(reports.path()).unwrap().count() == 3, "nothing planted was removed or added");
}

/// A tmpfs of `size` mounted for one test, unmounted when dropped (a failed
/// assertion included).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (the test skips, saying why) without root, unless under CI.
    fn mount(test: &str, size: &str) -> Option<Self> {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "osl-test-tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                let root = rustix::process::geteuid().is_root();
                assert!(!ci && !root, "{test}: cannot mount a tmpfs ({why}), and as root or under CI it must");
                eprintln!("SKIPPED {test}: needs root to mount a small tmpfs ({why}); CI runs it as root");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is left with a file (until ENOSPC).
    fn fill(&self) {
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let page = [0x55u8; 4096];
        while std::io::Write::write(&mut f, &page).is_ok_and(|n| n > 0) {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(self.dir.path()).status().is_ok_and(|s| s.success());
        if !ok {
            let lazy = Command::new("umount").arg("-l").arg(self.dir.path()).status();
            eprintln!("umount {} failed; lazy umount: {lazy:?}", self.dir.path().display());
        }
    }
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// The log lines a closure's tracing events make on this thread.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (out, text)
}

/// The disk is full (a real 16 KiB tmpfs, filled up): the critical report cannot
/// be written. It leaves no temp file, is served from memory marked as not
/// persisted, logged at WARN with the reason, and still announced as an Event.
#[test]
fn a_critical_report_the_full_disk_refuses_is_served_from_memory_and_announced() {
    let test = "a_critical_report_the_full_disk_refuses_is_served_from_memory_and_announced";
    let Some(disk) = Tmpfs::mount(test, "16k") else { return };
    let store = Arc::new(Store::open(disk.path(), 10, 1 << 20).unwrap());
    disk.fill();
    let (f, _) = v2_container(UPPER_ID, 240); // 240 of 256 MiB: 93.8%, past the critical 90%
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Notice>(8);
    let mut watcher = watcher(&f, &store).with_notify(tx);
    watcher.rescan();
    let ((), log) = logged(|| watcher.tick());

    assert_eq!(temp_files(disk.path()), Vec::<String>::new(), "the failed write's temp file is removed");
    assert_eq!(json_files(disk.path()), Vec::<String>::new());
    let agent = osl_agent::Agent::new(&osl_agent::Roots::default()).with_reports(store.clone());
    let listed = agent.list_reports(v1::ListReportsRequest {}).unwrap().reports;
    assert_eq!(listed.len(), 1, "{listed:?}\n{log}");
    let s = &listed[0];
    assert!(s.usage_pct >= 90.0, "the critical report: {s:?}");
    assert!(s.not_persisted_reason.contains("No space left on device"), "{s:?}");
    let r = agent.get_report(v1::GetReportRequest { id: s.id.clone() }).unwrap().report.unwrap();
    assert_eq!(r.not_persisted_reason, s.not_persisted_reason);
    assert_eq!(r.processes.first().map(|p| p.pid), Some(4242), "the whole report");
    let warn = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("not persisted"))
        .unwrap_or_else(|| panic!("no WARN line: {log}"));
    assert!(warn.contains(&s.id) && warn.contains("No space left on device"), "{warn}");
    let notice = rx.try_recv().expect("the Event is posted all the same");
    assert_eq!(notice.reason, "PreOOM");
    assert!(notice.message.contains(&s.id), "{}", notice.message);
}

/// Deleting the older reports makes room: the new one is persisted.
#[test]
fn a_full_disk_makes_room_by_deleting_the_oldest_reports() {
    let test = "a_full_disk_makes_room_by_deleting_the_oldest_reports";
    let Some(disk) = Tmpfs::mount(test, "16k") else { return };
    let store = Store::open(disk.path(), 10, 1 << 20).unwrap();
    // About 6 KB each: two pages.
    let report = |id: &str| v1::Report { id: id.into(), cgroup_path: "x".repeat(6000), ..Default::default() };
    let (old, new) = ("1700000000000-pre_oom-host-0", "1700000000001-pre_oom-host-1");
    assert!(matches!(store.write(&report(old)), Ok(Saved::Disk(_))));
    disk.fill();
    let (saved, log) = logged(|| store.write(&report(new)));
    let saved = saved.unwrap();
    assert!(matches!(saved, Saved::Disk(_)), "{saved:?}\n{log}");
    assert_eq!(json_files(disk.path()), [format!("{new}.json")], "the oldest made room");
    assert_eq!(temp_files(disk.path()), Vec::<String>::new());
    let listed = store.list();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].not_persisted_reason.is_empty(), "{:?}", listed[0]);
    assert!(log.contains("oldest report deleted to make room"), "{log}");
}

/// A report bigger than the store's byte bound (--max-report-bytes) is refused
/// and logged: before, it was written, and every other report evicted for it.
#[test]
fn a_report_over_the_byte_bound_is_refused_not_written_then_evicted() {
    let reports = tempfile::tempdir().unwrap();
    let store = Store::open(reports.path(), 10, 4000).unwrap();
    let report = |id: &str, pad| v1::Report { id: id.into(), cgroup_path: "x".repeat(pad), ..Default::default() };
    let kept = "1700000000000-pre_oom-3f2a9c0d1e5b-0";
    store.write(&report(kept, 100)).unwrap();
    let big = "1700000000001-pre_oom-3f2a9c0d1e5b-1";
    let (written, log) = logged(|| store.write(&report(big, 5000)));
    assert!(written.is_err(), "{written:?}");
    assert_eq!(store.list().into_iter().map(|s| s.id).collect::<Vec<_>>(), [kept], "nothing evicted for it");
    assert_eq!(json_files(reports.path()), [format!("{kept}.json")]);
    assert_eq!(temp_files(reports.path()), Vec::<String>::new());
    assert!(log.contains("WARN") && log.contains(big) && log.contains("--max-report-bytes"), "{log}");
}
