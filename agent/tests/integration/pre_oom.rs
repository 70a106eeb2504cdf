//! The pre-OOM watcher against real cgroup v1 memory limits (root): a fast leak is
//! reported before the kernel kills it, every time, and the post-mortem names the
//! victim; a slow leak is predicted; a steady container is left alone.

use crate::support::{MIB, TestProc, V1Cgroup, privileged};
use osl_agent::cgroup::CgroupReader;
use osl_agent::proc::ProcReader;
use osl_agent::watch::store::Store;
use osl_agent::watch::{Trends, WatchConfig, Watcher};
use osl_proto::v1::{self, ReportKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(cfg: WatchConfig) -> Self {
        Self::start_with(cfg, Trends::default())
    }

    fn start_with(cfg: WatchConfig, trends: Trends) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 100, 64 << 20).unwrap());
        let cgroups = CgroupReader::new("/proc", None).unwrap();
        let mut watcher = Watcher::new(ProcReader::default(), cgroups, store.clone(), cfg).with_trends(trends);
        watcher.rescan();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = Some(std::thread::spawn(move || watcher.run(flag)));
        Self { stop, thread, store, _dir: dir }
    }

    /// This test's reports: the watcher sees every cgroup on the machine, other
    /// tests' included.
    fn reports(&self, cg: &V1Cgroup, kind: ReportKind) -> Vec<v1::Report> {
        let mut out: Vec<v1::Report> = self
            .store
            .list()
            .into_iter()
            .filter(|s| s.kind == kind as i32 && s.cgroup_path == cg.path())
            .map(|s| self.store.get(&s.id).unwrap())
            .collect();
        out.reverse(); // oldest first
        out
    }

    fn wait_for(&self, cg: &V1Cgroup, kind: ReportKind, within: Duration) -> Vec<v1::Report> {
        let deadline = Instant::now() + within;
        loop {
            let r = self.reports(cg, kind);
            if !r.is_empty() || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fast() -> WatchConfig {
    WatchConfig { poll: Duration::from_millis(100), ..WatchConfig::default() }
}

#[test]
fn a_200_mb_per_second_leak_is_reported_before_the_kill_every_time() {
    if !privileged("a_200_mb_per_second_leak_is_reported_before_the_kill_every_time") {
        return;
    }
    for run in 0..10 {
        let cg = V1Cgroup::create(&format!("leak{run}"), 256 * MIB);
        // Half the runs have a second process; in the others the victim is the
        // container's only one, and its cgroup empties with the kill.
        let bystander = (run % 2 == 1).then(|| TestProc::spawn(&["anon", "0"]));
        let mut leaker = TestProc::spawn(&["anon", "0"]);
        if let Some(b) = &bystander {
            cg.add(b.pid);
        }
        cg.add(leaker.pid);
        // Polls too rare to catch a 1.3 s leak: the kernel's eventfds must.
        let watch = Running::start(WatchConfig { poll: Duration::from_secs(5), ..WatchConfig::default() });
        assert_eq!(leaker.send("grow 200").as_deref(), Some("ok"));
        let status = leaker.wait();
        let died = SystemTime::now();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "run {run}: OOM-killed");

        // The kill's eventfd usually wakes the watcher at once; under load (CI runs
        // every test at once) the post-mortem has come only with the next poll: within
        // one poll is the contract.
        let post = watch.wait_for(&cg, ReportKind::PostMortem, Duration::from_secs(6));
        let pre = watch.reports(&cg, ReportKind::PreOom);
        assert!(!pre.is_empty(), "run {run}: no pre-OOM report");
        let first = &pre[0];
        let path = watch.store.dir().join(format!("{}.json", first.id));
        let written = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(written <= died, "run {run}: the report was on disk before the kill was seen");
        let lead = died.duration_since(written).unwrap_or_default();
        eprintln!(
            "run {run}: first report at {:.1}% by {} ({}), captured in {} us, on disk {:?} before the death was seen; {} reports",
            first.trigger.as_ref().unwrap().usage_pct,
            first.trigger.as_ref().unwrap().event,
            first.trigger.as_ref().unwrap().source,
            first.capture_usec,
            lead,
            pre.len()
        );
        let top = &first.processes[0];
        assert_eq!(top.pid, leaker.pid, "run {run}: the leaker is the top grower: {:?}", first.processes);
        assert!(top.rss_bytes.unwrap() >= 100 * MIB, "run {run}: read while alive: {top:?}");
        let m = first.memory.as_ref().unwrap();
        assert_eq!(m.limit_bytes, Some(256 * MIB));
        let t = first.trigger.as_ref().unwrap();
        assert!(t.usage_pct >= 50.0 && t.usage_pct < 100.0, "{t:?}");
        // The watcher polls only every 5 s, but other tests' cgroups (it watches them
        // all) may wake it: a prediction can come first; a threshold report woken by
        // this cgroup's eventfd must come too.
        let woken =
            pre.iter().filter_map(|r| r.trigger.as_ref()).any(|t| t.event == "threshold" && t.source == "event");
        assert!(
            woken,
            "run {run}: a report woken by the kernel: {:?}",
            pre.iter().map(|r| &r.trigger).collect::<Vec<_>>()
        );
        assert_eq!(m.oom_kill_events, Some(0), "run {run}: captured before the kill");

        assert_eq!(post.len(), 1, "run {run}: one post-mortem");
        let pm = &post[0];
        assert_eq!(pm.victims.iter().map(|v| v.pid).collect::<Vec<_>>(), [leaker.pid], "run {run}");
        assert_eq!(pm.memory.as_ref().unwrap().oom_kill_events, Some(1), "run {run}: exactly one kill");
        assert_eq!(pm.previous_report_id, pre.last().unwrap().id, "run {run}: linked to the last report");
        match &bystander {
            Some(b) => assert_eq!(pm.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [b.pid]),
            None => assert!(pm.processes.is_empty(), "run {run}: the cgroup is empty after the kill"),
        }
        drop(watch);
        drop(bystander);
    }
}

#[test]
fn a_slow_leak_is_predicted_before_the_thresholds() {
    if !privileged("a_slow_leak_is_predicted_before_the_thresholds") {
        return;
    }
    let cg = V1Cgroup::create("slow", 64 * MIB);
    let mut leaker = TestProc::spawn(&["anon", "0"]);
    cg.add(leaker.pid);
    let watch = Running::start(WatchConfig { window: Duration::from_secs(3), ..fast() });
    assert_eq!(leaker.send("grow 5").as_deref(), Some("ok"));
    let pre = watch.wait_for(&cg, ReportKind::PreOom, Duration::from_secs(15));
    assert!(!pre.is_empty(), "no report within 15 s");
    let t = pre[0].trigger.as_ref().unwrap();
    assert_eq!(t.event, "prediction", "{t:?}");
    assert!(t.usage_pct < 80.0, "before the warn threshold: {t:?}");
    assert!((3.0 * MIB as f64..7.0 * MIB as f64).contains(&t.growth_bytes_per_sec), "about 5 MiB/s: {t:?}");
    assert!(t.predicted_oom_in_msec.unwrap() <= 10_000);
}

#[test]
fn a_steady_container_at_70_percent_gets_no_report() {
    if !privileged("a_steady_container_at_70_percent_gets_no_report") {
        return;
    }
    let cg = V1Cgroup::create("steady", 64 * MIB);
    let mut steady = TestProc::spawn(&["anon", "0"]);
    cg.add(steady.pid);
    assert_eq!(steady.send("alloc 45").as_deref(), Some("ok"));
    let watch = Running::start(fast());
    std::thread::sleep(Duration::from_secs(2));
    assert!(watch.reports(&cg, ReportKind::PreOom).is_empty(), "{:?}", watch.store.list());
}

#[test]
fn a_lowered_limit_is_watched_at_its_new_thresholds() {
    if !privileged("a_lowered_limit_is_watched_at_its_new_thresholds") {
        return;
    }
    let cg = V1Cgroup::create("resized", 64 * MIB);
    let mut steady = TestProc::spawn(&["anon", "0"]);
    cg.add(steady.pid);
    assert_eq!(steady.send("alloc 40").as_deref(), Some("ok"));
    let watch = Running::start(WatchConfig { rescan: Duration::from_millis(300), ..fast() });
    std::thread::sleep(Duration::from_secs(1));
    assert!(watch.reports(&cg, ReportKind::PreOom).is_empty(), "about 63%: nothing yet");
    // As an in-place resize does: the same cgroup, a smaller limit (about 83% now).
    std::fs::write(cg.dir.join("memory.limit_in_bytes"), (48 * MIB).to_string()).unwrap();
    let pre = watch.wait_for(&cg, ReportKind::PreOom, Duration::from_secs(5));
    assert!(!pre.is_empty(), "the new limit was noticed");
    let t = pre[0].trigger.as_ref().unwrap();
    assert_eq!((t.event.as_str(), t.limit_bytes), ("threshold", Some(48 * MIB)), "{t:?}");
    assert!(t.usage_pct >= 80.0 && t.usage_pct < 90.0, "{t:?}");
}

/// The crash loop's first half: a process that leaks from the moment it enters a
/// cgroup the watcher has never seen. Discovery is per poll (250 ms), not per rescan
/// (5 s), so the report is on disk before the kill.
#[test]
fn a_leak_from_the_first_moment_in_a_new_cgroup_is_reported_before_the_kill() {
    if !privileged("a_leak_from_the_first_moment_in_a_new_cgroup_is_reported_before_the_kill") {
        return;
    }
    let watch = Running::start(WatchConfig::default());
    for run in 0..10 {
        let cg = V1Cgroup::create(&format!("fresh{run}"), 256 * MIB);
        let mut leaker = TestProc::spawn(&["anon", "0"]);
        let entered = Instant::now();
        cg.add(leaker.pid);
        assert_eq!(leaker.send("grow 200").as_deref(), Some("ok"));
        let status = leaker.wait();
        let died = SystemTime::now();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "run {run}: OOM-killed");
        let lived = entered.elapsed();
        let post = watch.wait_for(&cg, ReportKind::PostMortem, Duration::from_secs(6));
        let pre = watch.reports(&cg, ReportKind::PreOom);
        assert!(!pre.is_empty(), "run {run}: no pre-OOM report in a life of {lived:?}");
        let written = std::fs::metadata(watch.store.dir().join(format!("{}.json", pre[0].id))).unwrap();
        assert!(written.modified().unwrap() <= died, "run {run}: on disk before the kill was seen");
        assert_eq!(post.len(), 1, "run {run}: one post-mortem");
        assert_eq!(post[0].victims.iter().map(|v| v.pid).collect::<Vec<_>>(), [leaker.pid], "run {run}");
        eprintln!(
            "run {run}: lived {lived:?}, {} pre-OOM reports, first at {:.1}%",
            pre.len(),
            pre[0].trigger.as_ref().unwrap().usage_pct
        );
    }
}

/// The engine's crash loop (podman re-creates a restarted container's cgroup at the
/// same path): each life, killed about a second after it starts, gets its own
/// post-mortem naming its victim, with the peak the kernel recorded.
#[test]
fn a_cgroup_recreated_at_the_same_path_gets_a_post_mortem_for_every_kill() {
    if !privileged("a_cgroup_recreated_at_the_same_path_gets_a_post_mortem_for_every_kill") {
        return;
    }
    let watch = Running::start(WatchConfig::default());
    let mut victims = Vec::new();
    let mut path = String::new();
    for life in 0..5 {
        let cg = V1Cgroup::create("crashloop", 64 * MIB);
        path = cg.path();
        let mut leaker = TestProc::spawn(&["anon", "0"]);
        cg.add(leaker.pid);
        assert_eq!(leaker.send("grow 60").as_deref(), Some("ok"));
        let status = leaker.wait();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "life {life}: OOM-killed");
        victims.push(leaker.pid);
        // The post-mortem must be in before the engine removes the cgroup: here at once.
        let deadline = Instant::now() + Duration::from_secs(3);
        while watch.reports(&cg, ReportKind::PostMortem).len() < life + 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(cg);
    }
    let post: Vec<v1::Report> = watch
        .store
        .list()
        .into_iter()
        .rev()
        .filter(|s| s.kind == ReportKind::PostMortem as i32 && s.cgroup_path == path)
        .map(|s| watch.store.get(&s.id).unwrap())
        .collect();
    let named: Vec<Vec<i32>> = post.iter().map(|r| r.victims.iter().map(|v| v.pid).collect()).collect();
    assert_eq!(named, victims.iter().map(|&v| vec![v]).collect::<Vec<_>>(), "one post-mortem per kill");
    // The ring outlives each re-created cgroup: the last post-mortem has seen every life.
    let history = &post.last().unwrap().history;
    assert!(history.len() >= 4, "a sample a second over 5 lives: {}", history.len());
    assert!(history.windows(2).all(|w| w[1].at_unix_ms - w[0].at_unix_ms >= 1000), "{history:?}");
    // Each sample is its second's highest: the lives' peaks near the 64 MiB limit show.
    assert!(history.iter().any(|s| s.working_set_bytes >= 48 * MIB), "the peaks are in it: {history:?}");
    // Each second names its biggest processes (the leakers, as read at the second's
    // first poll: a leaker then holds anything up to its peak) and counts their fds;
    // v1 has no per-cgroup PSI, so none is made up.
    assert!(
        history.iter().any(|s| s.top.first().is_some_and(|t| victims.contains(&t.pid) && t.rss_bytes >= MIB)),
        "a leaker is the biggest: {history:?}"
    );
    assert!(history.iter().any(|s| s.fd_count.is_some_and(|n| n >= 3)), "stdio at least: {history:?}");
    assert!(history.iter().all(|s| s.pressure_some_avg10.is_none()));
    for (life, r) in post.iter().enumerate() {
        let m = r.memory.as_ref().unwrap();
        assert_eq!(m.oom_kill_events, Some(1), "{}: each life's own counter", r.id);
        let crashloop = r.findings.iter().find(|f| f.id == "memory.crashloop_oom");
        match life {
            0 => assert!(crashloop.is_none(), "one kill is no loop"),
            n => {
                let f = crashloop.unwrap_or_else(|| panic!("life {n}: {:?}", r.findings));
                assert!(f.message.starts_with(&format!("OOM-killed {} times in", n + 1)), "{}", f.message);
                assert!(
                    f.message.contains("limit 64.0 MiB") && f.message.contains("killed: osl-testproc"),
                    "{}",
                    f.message
                );
            }
        }
        assert!(m.peak_bytes.is_some_and(|p| p >= 60 * MIB), "{}: the kernel's peak {:?}", r.id, m.peak_bytes);
    }
}

/// The report names the process the kernel then kills: the kernel's badness for a
/// cgroup OOM, where oom_score_adj weighs against the limit. /proc/PID/oom_score,
/// scaled to the node's memory, ranks the small process with the adj first.
#[test]
fn the_named_next_victim_is_the_one_the_kernel_kills() {
    if !privileged("the_named_next_victim_is_the_one_the_kernel_kills") {
        return;
    }
    let watch = Running::start(WatchConfig { poll: Duration::from_millis(100), ..WatchConfig::default() });
    for run in 0..10 {
        let cg = V1Cgroup::create(&format!("victim{run}"), 256 * MIB);
        let small = TestProc::spawn(&["anon", "16"]);
        // Raising it needs no capability; +100 is +25.6 MiB against this limit.
        std::fs::write(format!("/proc/{}/oom_score_adj", small.pid), "100").unwrap();
        let mut big = TestProc::spawn(&["anon", "0"]);
        cg.add(small.pid);
        cg.add(big.pid);
        assert_eq!(big.send("grow 200").as_deref(), Some("ok"));
        let status = big.wait();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "run {run}: the big one died");
        let post = watch.wait_for(&cg, ReportKind::PostMortem, Duration::from_secs(6));
        let pre = watch.reports(&cg, ReportKind::PreOom);
        assert!(!pre.is_empty() && post.len() == 1, "run {run}: {} pre, {} post", pre.len(), post.len());
        assert_eq!(post[0].victims.iter().map(|v| v.pid).collect::<Vec<_>>(), [big.pid], "run {run}: killed");
        let last = pre.last().unwrap();
        assert_eq!(last.next_victim_pid, big.pid, "run {run}: named before the kill: {:?}", last.processes);
        let score = |pid| last.processes.iter().find(|p| p.pid == pid).and_then(|p| p.oom_score).unwrap();
        assert!(score(small.pid) > score(big.pid), "run {run}: /proc's oom_score would have named the other");
        assert_eq!(last.oom_group, None, "v1 has no group kill");
        drop(small);
    }
}

/// Diagnose shows each container's memory over the last minutes, as the watcher
/// sampled it: a process holding 24 MiB reads as such in the served trend.
#[test]
fn diagnose_carries_the_watchers_memory_trend_of_each_container() {
    if !privileged("diagnose_carries_the_watchers_memory_trend_of_each_container") {
        return;
    }
    let trends = Trends::default();
    let cfg = WatchConfig { rescan: Duration::from_secs(1), ..WatchConfig::default() };
    let _watch = Running::start_with(cfg, trends.clone());
    let cg = V1Cgroup::create("trend", 256 * MIB);
    let mut holder = TestProc::spawn(&["anon", "0"]);
    cg.add(holder.pid);
    assert_eq!(holder.send("grow 24").as_deref(), Some("ok"), "charged to the new cgroup");
    let agent = osl_agent::service::Agent::new(&osl_agent::snapshot::Roots::default()).with_trends(trends);
    let filter = v1::Filter { pids: vec![holder.pid], ..Default::default() };
    let deadline = Instant::now() + Duration::from_secs(10);
    let trend = loop {
        let resp = agent.diagnose(v1::DiagnoseRequest { filter: Some(filter.clone()), ..Default::default() }).unwrap();
        let c = resp.containers.iter().find(|c| c.pids.contains(&holder.pid)).expect("the holder's container");
        if c.memory_trend.len() >= 3 || Instant::now() > deadline {
            break c.memory_trend.clone();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(trend.len() >= 3 && trend.len() <= 60, "{trend:?}");
    assert!(trend.windows(2).all(|w| w[1].at_unix_ms > w[0].at_unix_ms), "oldest first: {trend:?}");
    let last = trend.last().unwrap();
    assert!((24 * MIB..64 * MIB).contains(&last.working_set_bytes), "{last:?}");
    let top = last.top.first().expect("the biggest process");
    assert_eq!(top.pid, holder.pid, "{last:?}");
    assert!((24 * MIB..64 * MIB).contains(&top.rss_bytes), "its RSS: {last:?}");
}
