//! cgroup v2 and hybrid hosts, from fixture trees in the kernel's real file formats
//! (this machine's memory controller is on v1 only).

use crate::support::{Fixture, MIB};
use osl_agent::model::{CgroupRoute, CgroupVersion, PressureSource, Severity};
use osl_agent::snapshot::{Collector, Roots};
use osl_agent::{findings, model::Filter};

const ID: &str = "3f2a9c0d1e5b7a8f6c4d2e0b9a7c5e3d1f0b8a6c4e2d0f9b7a5c3e1d0f2b4a6c";
const POD_UID: &str = "6f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";

fn scope_path() -> String {
    format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{ID}.scope"
    )
}

/// memory.stat of a v2 cgroup on Linux 6.x (values in bytes).
const MEMORY_STAT: &str = "anon 220200960\nfile 15728640\nkernel 4194304\nkernel_stack 262144\npagetables 1048576\n\
sec_pagetables 0\npercpu 0\nsock 8192\nvmalloc 0\nshmem 1048576\nzswap 0\nzswapped 0\nfile_mapped 5242880\n\
file_dirty 0\nfile_writeback 0\nswapcached 0\nanon_thp 0\nfile_thp 0\nshmem_thp 0\ninactive_anon 220200960\n\
active_anon 1048576\ninactive_file 10485760\nactive_file 5242880\nunevictable 0\nslab_reclaimable 1572864\n\
slab_unreclaimable 1048576\nslab 2621440\nworkingset_refault_anon 0\nworkingset_refault_file 12\n\
workingset_activate_anon 0\nworkingset_activate_file 0\nworkingset_restore_anon 0\nworkingset_restore_file 0\n\
workingset_nodereclaim 0\npgdemote_kswapd 0\npgdemote_direct 0\npgdemote_khugepaged 0\npgscan 0\npgsteal 0\n\
pgscan_kswapd 0\npgscan_direct 0\npgscan_khugepaged 0\npgsteal_kswapd 0\npgsteal_direct 0\npgsteal_khugepaged 0\n\
pgfault 61234\npgmajfault 3\npgrefill 0\npgactivate 12\npgdeactivate 0\npglazyfree 0\npglazyfreed 0\n\
thp_fault_alloc 0\nthp_collapse_alloc 0\nthp_swpout 0\nthp_swpout_fallback 0\n";

fn v2_cgroup_files(f: &Fixture, dir: &str, with_optional: bool) {
    f.file(&format!("{dir}/cgroup.procs"), "4242\n");
    f.file(&format!("{dir}/memory.current"), "241172480\n");
    f.file(&format!("{dir}/memory.max"), if with_optional { "268435456\n" } else { "max\n" });
    f.file(&format!("{dir}/memory.stat"), MEMORY_STAT);
    f.file(&format!("{dir}/memory.events"), "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n");
    f.file(
        &format!("{dir}/memory.pressure"),
        "some avg10=1.50 avg60=0.80 avg300=0.20 total=1234567\nfull avg10=0.50 avg60=0.10 avg300=0.01 total=345678\n",
    );
    f.file(
        &format!("{dir}/cpu.stat"),
        "usage_usec 8000000\nuser_usec 6000000\nsystem_usec 2000000\nnr_periods 1000\nnr_throttled 300\n\
throttled_usec 4500000\nnr_bursts 0\nburst_usec 0\n",
    );
    f.file(
        &format!("{dir}/cpu.pressure"),
        "some avg10=12.00 avg60=8.00 avg300=3.00 total=99999\nfull avg10=6.00 avg60=4.00 avg300=1.00 total=5555\n",
    );
    if with_optional {
        f.file(&format!("{dir}/memory.peak"), "260046848\n");
        f.file(&format!("{dir}/cpu.max"), "50000 100000\n");
    }
}

fn system_psi(f: &Fixture) {
    f.file(
        "proc/pressure/memory",
        "some avg10=0.10 avg60=0.05 avg300=0.00 total=100\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=10\n",
    );
    f.file(
        "proc/pressure/cpu",
        "some avg10=0.20 avg60=0.10 avg300=0.00 total=200\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    );
}

fn collector(f: &Fixture) -> Collector {
    Collector::new(&Roots { proc: f.path("proc"), cgroup: None }, true)
}

#[test]
fn pure_v2_host_through_an_escaped_mount_point() {
    let f = Fixture::new();
    // The host's cgroup2 mount sits under a directory with a space: mountinfo escapes it.
    let mount = f.path("host root/sys/fs/cgroup");
    let escaped = mount.to_str().unwrap().replace(' ', "\\040");
    f.file(
        "proc/self/mountinfo",
        format!(
            "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
             25 22 0:23 / {escaped} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
        ),
    );
    system_psi(&f);
    f.process(4242, "app", &format!("0::{}\n", scope_path()), 7);
    v2_cgroup_files(&f, &format!("host root/sys/fs/cgroup{}", scope_path()), true);

    let snap = collector(&f).snapshot(&Filter::default(), None).unwrap();
    assert_eq!(snap.processes.len(), 1);
    let p = &snap.processes[0];
    assert_eq!(p.fds.open, Some(7), "a fixture's fd dir is counted, not stat'ed");
    assert_eq!(p.memory.pss_bytes, Some(232000 * 1024));
    assert_eq!(p.cmdline, [&b"/usr/bin/app"[..], b"--password=<redacted>"]);
    assert!(p.cmdline_redacted);
    assert_eq!(p.container_id().as_deref(), Some(ID));

    assert_eq!(snap.containers.len(), 1);
    let c = &snap.containers[0];
    assert!(c.unavailable.is_empty(), "{:?}", c.unavailable);
    assert_eq!(c.id.as_deref(), Some(ID));
    assert_eq!(c.pod_uid.as_deref(), Some(POD_UID));
    assert_eq!(c.pids, [4242]);
    let m = c.memory.as_ref().unwrap();
    assert_eq!(m.location.version, CgroupVersion::V2);
    assert_eq!(m.location.route, CgroupRoute::AgentMount);
    assert_eq!(m.location.dir, mount.join(scope_path().trim_start_matches('/')));
    assert_eq!(m.usage_bytes, Some(241172480));
    assert_eq!(m.limit_bytes, Some(Some(256 * MIB)));
    assert_eq!(m.inactive_file_bytes, Some(10485760));
    assert_eq!(m.working_set_bytes, Some(241172480 - 10485760));
    assert_eq!((m.anon_bytes, m.file_bytes, m.shmem_bytes), (Some(220200960), Some(15728640), Some(1048576)));
    assert_eq!((m.kernel_bytes, m.slab_bytes, m.sock_bytes), (Some(4194304), Some(2621440), Some(8192)));
    assert_eq!(m.peak_bytes, Some(260046848));
    assert_eq!((m.max_events, m.oom_events, m.oom_kill_events), (Some(12), Some(2), Some(1)));
    let psi = m.pressure.as_ref().unwrap();
    assert_eq!(psi.source, PressureSource::Cgroup);
    assert_eq!(psi.some.unwrap().avg10_pct, 1.5);
    assert_eq!(psi.full.unwrap().total_usec, 345678);
    let cpu = c.cpu.as_ref().unwrap();
    assert_eq!((cpu.quota_usec, cpu.period_usec), (Some(Some(50000)), Some(100000)));
    assert_eq!((cpu.usage_usec, cpu.periods, cpu.throttled_periods), (Some(8000000), Some(1000), Some(300)));
    assert_eq!(cpu.throttled_usec, Some(4500000));
    assert_eq!(cpu.pressure.as_ref().unwrap().some.unwrap().avg10_pct, 12.0);

    // 220 MiB of 256 MiB (85.9%), one OOM kill, 30% of periods throttled.
    let ids: Vec<_> = snap.findings.iter().map(|f| (f.id, f.severity)).collect();
    assert_eq!(
        ids,
        [
            ("memory.oom_killed", Severity::Critical),
            ("cpu.throttled", Severity::Warn),
            ("memory.near_limit", Severity::Warn)
        ]
    );
    assert_eq!(snap.findings[0].container_id.as_deref(), Some(ID));
}

#[test]
fn missing_optional_files_are_absent_with_reasons_and_max_is_unlimited() {
    let f = Fixture::new();
    let mount = f.path("sys/fs/cgroup");
    f.file("proc/self/mountinfo", format!("25 1 0:23 / {} rw - cgroup2 cgroup2 rw\n", mount.display()));
    system_psi(&f);
    f.process(7, "app", &format!("0::{}\n", scope_path()), 3);
    v2_cgroup_files(&f, &format!("sys/fs/cgroup{}", scope_path()), false);
    let snap = collector(&f).snapshot(&Filter::default(), None).unwrap();
    let c = &snap.containers[0];
    let m = c.memory.as_ref().unwrap();
    assert_eq!(m.limit_bytes, Some(None), "memory.max = max is unlimited");
    assert_eq!(m.peak_bytes, None);
    let cpu = c.cpu.as_ref().unwrap();
    assert_eq!(cpu.quota_usec, None, "no cpu.max: the cpu controller is not enabled");
    let fields: Vec<_> = c.unavailable.iter().map(|u| u.field.as_str()).collect();
    assert_eq!(fields, ["memory.peak_bytes", "cpu.quota_usec"]);
    assert!(c.unavailable[0].reason.contains("not present"), "{}", c.unavailable[0].reason);
    assert!(snap.findings.iter().all(|f| f.id != "memory.near_limit"), "unlimited never fires");
}

#[test]
fn a_sibling_outside_the_agents_cgroup_namespace_is_read_through_its_own_root() {
    let f = Fixture::new();
    // The agent's own cgroup namespace root is its own container: the sibling is at "/../…".
    let agent_mount = f.path("agent/sys/fs/cgroup");
    std::fs::create_dir_all(&agent_mount).unwrap();
    f.file("proc/self/mountinfo", format!("30 1 0:26 / {} ro,nosuid - cgroup2 cgroup2 rw\n", agent_mount.display()));
    system_psi(&f);
    let sibling_path = format!("/../cri-containerd-{ID}.scope");
    f.process(4242, "app", &format!("0::{sibling_path}\n"), 3);
    f.file(
        "proc/4242/mountinfo",
        format!("1290 1280 0:26 {sibling_path} /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw\n"),
    );
    v2_cgroup_files(&f, "proc/4242/root/sys/fs/cgroup", true);
    let snap = collector(&f).snapshot(&Filter::default(), None).unwrap();
    let c = &snap.containers[0];
    let m = c.memory.as_ref().unwrap();
    assert_eq!(m.location.route, CgroupRoute::ProcessRoot);
    assert_eq!(m.location.dir, f.path("proc/4242/root/sys/fs/cgroup"));
    assert_eq!(m.location.path, sibling_path);
    assert_eq!(m.working_set_bytes, Some(241172480 - 10485760));
    assert_eq!(c.id.as_deref(), Some(ID));
    assert_eq!(c.cpu.as_ref().unwrap().location.route, CgroupRoute::ProcessRoot);
}

#[test]
fn a_configured_root_is_tried_first() {
    let f = Fixture::new();
    f.file("proc/self/mountinfo", "30 1 0:26 / /nonexistent ro - cgroup2 cgroup2 rw\n");
    system_psi(&f);
    f.process(9, "app", &format!("0::{}\n", scope_path()), 3);
    v2_cgroup_files(&f, &format!("node-cgroup{}", scope_path()), true);
    let roots = Roots { proc: f.path("proc"), cgroup: Some(f.path("node-cgroup")) };
    let snap = Collector::new(&roots, true).snapshot(&Filter::default(), None).unwrap();
    let m = snap.containers[0].memory.as_ref().unwrap();
    assert_eq!(m.location.route, CgroupRoute::ConfiguredRoot);
    assert_eq!(m.limit_bytes, Some(Some(256 * MIB)));
}

#[test]
fn hybrid_host_reads_memory_and_cpu_from_v1_and_psi_from_the_system() {
    let f = Fixture::new();
    let base = f.path("sys/fs/cgroup");
    let b = base.display();
    f.file(
        "proc/self/mountinfo",
        format!(
            "31 23 0:28 / {b} rw,relatime - tmpfs tmpfs rw,mode=755\n\
             32 31 0:29 / {b}/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / {b}/memory rw,relatime - cgroup cgroup rw,memory\n\
             41 31 0:38 / {b}/unified rw,relatime - cgroup2 cgroup2 rw\n"
        ),
    );
    system_psi(&f);
    let path = format!("/kubepods/burstable/pod{POD_UID}/{ID}");
    f.process(77, "java", &format!("12:memory:{path}\n11:cpu,cpuacct:{path}\n1:name=systemd:{path}\n0::/\n"), 3);
    let mem = format!("sys/fs/cgroup/memory{path}");
    f.file(&format!("{mem}/cgroup.procs"), "77\n");
    // The process's v2 cgroup (the root here) keeps memory PSI; cpu PSI falls back to the node's.
    f.file("sys/fs/cgroup/unified/cgroup.procs", "77\n");
    f.file(
        "sys/fs/cgroup/unified/memory.pressure",
        "some avg10=2.00 avg60=1.00 avg300=0.50 total=777\nfull avg10=1.00 avg60=0.50 avg300=0.25 total=333\n",
    );
    // This machine's real v1 formats.
    f.file(&format!("{mem}/memory.usage_in_bytes"), "104857600\n");
    // No limit of its own: the pod's, above it, binds (hierarchical_memory_limit).
    f.file(&format!("{mem}/memory.limit_in_bytes"), "9223372036854771712\n");
    f.file(&format!("{mem}/memory.max_usage_in_bytes"), "110000000\n");
    f.file(&format!("{mem}/memory.failcnt"), "0\n");
    f.file(&format!("{mem}/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n");
    f.file(&format!("{mem}/memory.kmem.usage_in_bytes"), "1048576\n");
    f.file(
        &format!("{mem}/memory.stat"),
        "cache 1000\nrss 2000\nrss_huge 0\nshmem 0\nmapped_file 3000\ndirty 0\nwriteback 0\nswap 0\n\
pgpgin 30000\npgpgout 5000\npgfault 31000\npgmajfault 0\ninactive_anon 4000\nactive_anon 0\n\
inactive_file 5000\nactive_file 6000\nunevictable 0\nhierarchical_memory_limit 134217728\n\
hierarchical_memsw_limit 9223372036854771712\ntotal_cache 4194304\ntotal_rss 100663296\ntotal_rss_huge 0\n\
total_shmem 0\ntotal_mapped_file 1048576\ntotal_dirty 0\ntotal_writeback 0\ntotal_swap 0\ntotal_pgpgin 30000\n\
total_pgpgout 5000\ntotal_pgfault 31000\ntotal_pgmajfault 0\ntotal_inactive_anon 100663296\ntotal_active_anon 0\n\
total_inactive_file 2097152\ntotal_active_file 2097152\ntotal_unevictable 0\n",
    );
    let cpu = format!("sys/fs/cgroup/cpu,cpuacct{path}");
    f.file(&format!("{cpu}/cgroup.procs"), "77\n");
    f.file(&format!("{cpu}/cpu.cfs_quota_us"), "-1\n");
    f.file(&format!("{cpu}/cpu.cfs_period_us"), "100000\n");
    f.file(&format!("{cpu}/cpu.stat"), "nr_periods 0\nnr_throttled 0\nthrottled_time 0\nnr_bursts 0\nburst_time 0\n");
    f.file(&format!("{cpu}/cpuacct.usage"), "158694458997\n");

    let snap = collector(&f).snapshot(&Filter::default(), None).unwrap();
    let c = &snap.containers[0];
    assert!(c.unavailable.is_empty(), "{:?}", c.unavailable);
    let m = c.memory.as_ref().unwrap();
    assert_eq!(m.location.version, CgroupVersion::V1);
    assert_eq!(m.limit_bytes, Some(Some(128 * MIB)), "the pod's limit, from hierarchical_memory_limit");
    assert_eq!(m.working_set_bytes, Some(104857600 - 2097152), "usage - total_inactive_file, not inactive_file");
    assert_eq!((m.anon_bytes, m.file_bytes, m.kernel_bytes), (Some(100663296), Some(4194304), Some(1048576)));
    assert_eq!(m.sock_bytes, None, "v1 has no sock figure");
    let psi = m.pressure.as_ref().unwrap();
    assert_eq!(
        (psi.source, psi.path.clone()),
        (PressureSource::Cgroup, f.path("sys/fs/cgroup/unified/memory.pressure"))
    );
    assert_eq!(psi.some.unwrap().total_usec, 777);
    let cpu = c.cpu.as_ref().unwrap();
    let cpu_psi = cpu.pressure.as_ref().unwrap();
    assert_eq!((cpu_psi.source, cpu_psi.path.clone()), (PressureSource::System, f.path("proc/pressure/cpu")));
    assert_eq!(cpu.location.version, CgroupVersion::V1);
    assert_eq!(cpu.quota_usec, Some(None), "-1 is no quota");
    assert_eq!(cpu.usage_usec, Some(158694458));
    assert_eq!(c.id.as_deref(), Some(ID));
    assert_eq!(c.pod_uid.as_deref(), Some(POD_UID));
    assert!(findings::evaluate(&snap.processes, &snap.containers).is_empty(), "78%: no finding");
}

#[test]
fn a_v2_container_without_a_limit_is_bound_by_its_pod() {
    let f = Fixture::new();
    let mount = f.path("sys/fs/cgroup");
    f.file("proc/self/mountinfo", format!("25 1 0:23 / {} rw - cgroup2 cgroup2 rw\n", mount.display()));
    system_psi(&f);
    f.process(7, "app", &format!("0::{}\n", scope_path()), 3);
    v2_cgroup_files(&f, &format!("sys/fs/cgroup{}", scope_path()), false); // memory.max = max
    let pod = scope_path().rsplit_once('/').unwrap().0.to_string();
    f.file(&format!("sys/fs/cgroup{pod}/memory.max"), "268435456\n");
    f.file("sys/fs/cgroup/kubepods.slice/memory.max", "1073741824\n");
    let snap = collector(&f).snapshot(&Filter::default(), None).unwrap();
    let m = snap.containers[0].memory.as_ref().unwrap();
    assert_eq!(m.limit_bytes, Some(Some(256 * MIB)), "the smallest memory.max on the way up");
    assert!(snap.findings.iter().any(|f| f.id == "memory.near_limit"), "{:?}", snap.findings);
}

/// The pre-OOM watcher on a v2 container (a fixture: this host's memory controller
/// is v1): the report names the next victim and says the kill takes the whole
/// container (memory.oom.group, Kubernetes ≥ 1.28), the ring carries the cgroup's
/// PSI, and a kill counted in memory.events gets a post-mortem saying the same.
#[test]
fn the_watcher_on_v2_reads_the_group_kill_the_pressure_and_memory_events() {
    use osl_agent::watch::{WatchConfig, Watcher, store::Store};
    use osl_proto::v1::ReportKind;
    let f = Fixture::new();
    let mount = f.path("sys/fs/cgroup");
    f.file("proc/self/mountinfo", format!("25 1 0:23 / {} rw - cgroup2 cgroup2 rw\n", mount.display()));
    system_psi(&f);
    f.process(4242, "app", &format!("0::{}\n", scope_path()), 5);
    let dir = format!("sys/fs/cgroup{}", scope_path());
    v2_cgroup_files(&f, &dir, true);
    f.file(&format!("{dir}/memory.oom.group"), "1\n");
    let reports = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(reports.path(), 100, 64 << 20).unwrap());
    let procs = osl_agent::proc::ProcReader::new(f.path("proc"));
    let cgroups = osl_agent::cgroup::CgroupReader::new(f.path("proc"), None).unwrap();
    let mut watcher = Watcher::new(procs, cgroups, store.clone(), WatchConfig::default());
    watcher.rescan();
    // Arming wrote the PSI trigger into memory.pressure: the kernel keeps a trigger
    // apart from the file's text, a fixture file does not, so it is written back.
    assert!(
        std::fs::read_to_string(f.path(&format!("{dir}/memory.pressure"))).unwrap().starts_with("some 200000 2000000")
    );
    f.file(
        &format!("{dir}/memory.pressure"),
        "some avg10=1.50 avg60=0.80 avg300=0.20 total=1234567\nfull avg10=0.50 avg60=0.10 avg300=0.01 total=345678\n",
    );
    // 220 MiB of 256 MiB: past the 80% warning.
    watcher.tick();
    let list = store.list();
    assert_eq!(list.len(), 1, "{list:?}");
    let pre = store.get(&list[0].id).unwrap();
    assert_eq!(pre.kind, ReportKind::PreOom as i32);
    assert_eq!(pre.oom_group, Some(true));
    assert_eq!(pre.next_victim_pid, 4242);
    let sample = pre.history.last().expect("the ring's first second");
    assert_eq!(sample.pressure_some_avg10, Some(1.5), "memory.pressure some avg10");
    assert_eq!(sample.fd_count, Some(5));
    assert_eq!(sample.top.first().map(|t| (t.pid, t.rss_bytes)), Some((4242, 58500 * 4096)));

    // The kernel kills the group: memory.events counts it, the process is gone.
    f.file(&format!("{dir}/memory.events"), "low 0\nhigh 0\nmax 13\noom 3\noom_kill 2\noom_group_kill 1\n");
    f.file(&format!("{dir}/cgroup.procs"), "");
    std::fs::remove_dir_all(f.path("proc/4242")).unwrap();
    watcher.tick();
    let post: Vec<_> = store.list().into_iter().filter(|s| s.kind == ReportKind::PostMortem as i32).collect();
    assert_eq!(post.len(), 1, "one kill, one post-mortem");
    let post = store.get(&post[0].id).unwrap();
    assert_eq!(post.oom_group, Some(true));
    assert_eq!(post.victims.iter().map(|v| v.pid).collect::<Vec<_>>(), [4242]);
    assert_eq!(post.memory.as_ref().and_then(|m| m.oom_kill_events), Some(2));
    assert_eq!(post.memory.as_ref().and_then(|m| m.peak_bytes), Some(260046848), "memory.peak");
}
