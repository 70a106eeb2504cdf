//! For the agent's tests (unit and integration): one rule for tests that need
//! root. They run for sure under CI (which is root) and skip elsewhere with a
//! printed reason; a non-root CI fails them rather than skipping in silence.

/// Whether `test`, which needs root for `why`, may run here.
#[doc(hidden)]
pub fn privileged(test: &str, why: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!ci, "{test} needs root ({why}), and CI must run it");
    eprintln!("SKIPPED {test}: needs root ({why}); CI runs it as root");
    false
}
