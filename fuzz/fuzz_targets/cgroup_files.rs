//! cgroup v1/v2 files, PSI files and /proc/PID/cgroup. The first byte picks the parser.
#![no_main]
use libfuzzer_sys::fuzz_target;
use osl_agent::cgroup::files;
use osl_agent::proc::parse;

fuzz_target!(|data: &[u8]| {
    let Some((&which, text)) = data.split_first() else { return };
    match which % 8 {
        0 => drop(files::single_u64(text)),
        1 => drop(files::v1_limit(text)),
        2 => drop(files::v2_limit(text)),
        3 => drop(files::v1_quota(text)),
        4 => drop(files::v2_cpu_max(text)),
        5 => drop(files::flat_keyed(text)),
        6 => {
            if let Ok((some, full)) = files::pressure(text) {
                assert!(some.is_some());
                for p in [some, full].into_iter().flatten() {
                    assert!(p.avg10_pct.is_finite() && p.avg60_pct.is_finite() && p.avg300_pct.is_finite());
                }
            }
        }
        _ => drop(parse::parse_cgroups(text)),
    }
});
