//! /proc/PID/mountinfo (the cgroup mounts), and the cgroup path helpers run on
//! what it yields: relative_to, container_id, pod_uid.
#![no_main]
use libfuzzer_sys::fuzz_target;
use osl_agent::cgroup::mounts;
use osl_agent::model::CgroupVersion;

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    if let Ok(found) = mounts::parse_cgroup_mounts(data) {
        assert!(found.len() <= lines);
        for m in &found {
            m.holds(CgroupVersion::V1, Some("memory"));
            m.holds(CgroupVersion::V2, None);
        }
    }
    // The same bytes as a cgroup path and a mount root: the helpers never climb out
    // and only ever return well-formed ids.
    let text = String::from_utf8_lossy(data);
    let (path, root) = text.split_once('\n').unwrap_or((&text, "/"));
    if let Some(rel) = mounts::relative_to(path, root) {
        assert!(!rel.split('/').any(|c| c == ".."));
        assert!(!rel.starts_with('/'));
    }
    if let Some(id) = mounts::container_id(path) {
        assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    if let Some(uid) = mounts::pod_uid(path) {
        assert_eq!(uid.len(), 36);
    }
});
