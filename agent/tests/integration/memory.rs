//! Memory of real processes: anonymous pages, and pages shared copy-on-write.

use crate::support::{MIB, TestProc, assert_within, collector, status_kb};

#[test]
fn touched_anonymous_memory_shows_as_rss_anon_and_pss() {
    let child = TestProc::spawn(&["anon", "64"]);
    let p = collector().process(child.pid, None).unwrap();
    let m = &p.memory;
    assert!(p.unavailable.is_empty(), "{:?}", p.unavailable);
    assert_within(m.rss_anon_bytes.unwrap(), 64 * MIB, 5.0, "RssAnon");
    assert_within(m.pss_bytes.unwrap(), 64 * MIB, 5.0, "PSS");
    let (uss, pss, rss) = (m.uss_bytes.unwrap(), m.pss_bytes.unwrap(), m.vm_rss_bytes.unwrap());
    assert!(uss <= pss && pss <= rss, "USS {uss} <= PSS {pss} <= RSS {rss}");
    // The same numbers the kernel shows, exactly (the child is idle).
    assert_eq!(m.vm_rss_bytes, Some(status_kb(child.pid, "VmRSS")));
    assert_eq!(m.rss_anon_bytes, Some(status_kb(child.pid, "RssAnon")));
    assert_eq!(p.comm, b"osl-testproc");
    assert_eq!(p.cmdline, [env!("CARGO_BIN_EXE_osl-testproc").as_bytes(), b"anon", b"64"]);
}

#[test]
fn copy_on_write_pages_are_split_in_pss_among_their_sharers() {
    let family = TestProc::spawn(&["cow", "3", "100"]);
    assert_eq!(family.announced.len(), 3);
    let c = collector();
    for pid in std::iter::once(family.pid).chain(family.announced.iter().copied()) {
        let p = c.process(pid, None).unwrap();
        let m = &p.memory;
        // Each process maps all 100 MiB; four processes share them, so each is charged a quarter.
        assert_within(m.vm_rss_bytes.unwrap(), 100 * MIB, 10.0, &format!("RSS of pid {pid}"));
        assert_within(m.pss_bytes.unwrap(), 25 * MIB, 10.0, &format!("PSS of pid {pid}"));
        assert!(m.uss_bytes.unwrap() < 5 * MIB, "USS of pid {pid}: {:?}", m.uss_bytes);
        if pid != family.pid {
            assert_eq!(p.ppid, family.pid);
        }
    }
}
