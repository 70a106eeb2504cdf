//! The cgroup reader: finds a process's memory and cpu cgroups (v1, v2 or a hybrid
//! of both) and reads them, through whichever route reaches them.
//!
//! A sibling container usually has its own mount and cgroup namespace, so its
//! cgroup may not be under the agent's own `/sys/fs/cgroup`. Routes, in order:
//! the configured root (`--cgroup-root`), the agent's own mounts, then the
//! process's own mounts seen through `/proc/PID/root`. The route taken is reported.

pub mod files;
pub mod mounts;

use crate::error::{ReadError, read_file};
use crate::model::{
    CgroupCpu, CgroupLocation, CgroupMembership, CgroupMemory, CgroupRoute, CgroupVersion, Container, Pressure,
    PressureSource, Unavailable,
};
use mounts::{CgroupMount, relative_to};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct CgroupReader {
    proc_root: PathBuf,
    agent_mounts: Vec<CgroupMount>,
    configured_root: Option<PathBuf>,
}

impl CgroupReader {
    /// `proc_root` is where `self/mountinfo`, `PID/mountinfo`, `PID/root` and
    /// `pressure/*` are found (normally `/proc`).
    pub fn new(proc_root: impl Into<PathBuf>, configured_root: Option<PathBuf>) -> Result<Self, ReadError> {
        let proc_root = proc_root.into();
        let path = proc_root.join("self/mountinfo");
        let agent_mounts = mounts::parse_cgroup_mounts(&read_file(&path)?).map_err(|r| ReadError::parse(&path, r))?;
        Ok(Self { proc_root, agent_mounts, configured_root })
    }

    /// The container of a process: its memory and cpu cgroups, read.
    /// `pid` is a process in it, used for the process-root route.
    pub fn read_container(&self, pid: i32, cgroups: &[CgroupMembership]) -> Container {
        let mut c = Container::default();
        let mut process_mounts = None;
        let mut locate = |version, controller: Option<&str>, unavailable: &mut Vec<Unavailable>| {
            let membership = membership_for(cgroups, version, controller)?;
            match self.locate(pid, membership, version, controller, &mut process_mounts) {
                Ok(loc) => Some(loc),
                Err(reason) => {
                    let what = controller.unwrap_or("cgroup2");
                    unavailable.push(Unavailable::new(format!("cgroup.{what}"), reason));
                    None
                }
            }
        };
        let v1_memory = membership_for(cgroups, CgroupVersion::V1, Some("memory")).is_some();
        let v1_cpu = membership_for(cgroups, CgroupVersion::V1, Some("cpu")).is_some();
        // On a hybrid host the v2 cgroup still keeps the process's PSI.
        let psi_dir =
            if v1_memory || v1_cpu { locate(CgroupVersion::V2, None, &mut Vec::new()).map(|l| l.dir) } else { None };
        let memory_version = if v1_memory { CgroupVersion::V1 } else { CgroupVersion::V2 };
        if let Some(loc) = locate(memory_version, Some("memory"), &mut c.unavailable) {
            c.cgroup_path = loc.path.clone();
            c.memory = Some(self.read_memory(loc, psi_dir.as_deref(), &mut c.unavailable));
        }
        if v1_cpu {
            if let Some(loc) = locate(CgroupVersion::V1, Some("cpu"), &mut c.unavailable) {
                let acct = locate(CgroupVersion::V1, Some("cpuacct"), &mut c.unavailable);
                c.cpu = Some(self.read_cpu_v1(loc, acct.as_ref(), psi_dir.as_deref(), &mut c.unavailable));
            }
        } else if let Some(loc) = locate(CgroupVersion::V2, Some("cpu"), &mut c.unavailable) {
            c.cpu = Some(self.read_cpu_v2(loc, &mut c.unavailable));
        }
        if c.cgroup_path.is_empty() {
            let container = membership_for(cgroups, memory_version, Some("memory"))
                .or_else(|| membership_for(cgroups, CgroupVersion::V2, None));
            c.cgroup_path = container.map(|m| m.path.clone()).unwrap_or_default();
        }
        c.id = mounts::container_id(&c.cgroup_path);
        c.pod_uid = mounts::pod_uid(&c.cgroup_path);
        c
    }

    fn locate(
        &self,
        pid: i32,
        membership: &CgroupMembership,
        version: CgroupVersion,
        controller: Option<&str>,
        process_mounts: &mut Option<Result<Vec<CgroupMount>, ReadError>>,
    ) -> Result<CgroupLocation, String> {
        let path = &membership.path;
        let found = |(dir, mount_dir): (PathBuf, PathBuf), route| CgroupLocation {
            version,
            path: path.clone(),
            dir,
            mount_dir,
            route,
        };
        if let Some(root) = &self.configured_root
            && let Some(dirs) = configured_dir(root, path, version, controller)
        {
            return Ok(found(dirs, CgroupRoute::ConfiguredRoot));
        }
        if let Some(dirs) = find_dir(Path::new("/"), &self.agent_mounts, path, version, controller) {
            return Ok(found(dirs, CgroupRoute::AgentMount));
        }
        let pid_dir = self.proc_root.join(pid.to_string());
        let mounts = process_mounts.get_or_insert_with(|| {
            let mi = pid_dir.join("mountinfo");
            read_file(&mi).and_then(|b| mounts::parse_cgroup_mounts(&b).map_err(|r| ReadError::parse(&mi, r)))
        });
        match mounts {
            Ok(mounts) => find_dir(&pid_dir.join("root"), mounts, path, version, controller)
                .map(|dirs| found(dirs, CgroupRoute::ProcessRoot))
                .ok_or_else(|| {
                    format!(
                        "cgroup {path} is not visible through the agent's cgroup mounts nor through /proc/{pid}/root"
                    )
                }),
            Err(e) => {
                Err(format!("cgroup {path} is not visible through the agent's cgroup mounts, and {}", e.reason()))
            }
        }
    }

    /// Re-reads a memory cgroup found before (its processes may all be gone).
    pub fn reread_memory(&self, location: CgroupLocation) -> (CgroupMemory, Vec<Unavailable>) {
        let mut unavailable = Vec::new();
        let m = self.read_memory(location, None, &mut unavailable);
        (m, unavailable)
    }

    fn read_memory(
        &self,
        location: CgroupLocation,
        psi_dir: Option<&Path>,
        unavailable: &mut Vec<Unavailable>,
    ) -> CgroupMemory {
        let mut f = Files { dir: &location.dir, unavailable };
        let v1 = location.version == CgroupVersion::V1;
        let mut m = if v1 {
            let stat = f.read("memory.stat", "memory.stat", files::flat_keyed).unwrap_or_default();
            let own_limit = f.read("memory.limit_in_bytes", "memory.limit_bytes", files::v1_limit);
            // The effective limit is the smallest along the path to the root.
            let hierarchical = stat.get("hierarchical_memory_limit").map(|&v| files::v1_limit_value(v));
            let limit_bytes = match (own_limit, hierarchical) {
                (Some(own), Some(h)) => Some(min_limit(own, h)),
                (own, _) => own,
            };
            let oom = f.read("memory.oom_control", "memory.oom_kill_events", files::flat_keyed);
            CgroupMemory {
                usage_bytes: f.read("memory.usage_in_bytes", "memory.usage_bytes", files::single_u64),
                limit_bytes,
                inactive_file_bytes: stat.get("total_inactive_file").copied(),
                anon_bytes: stat.get("total_rss").copied(),
                file_bytes: stat.get("total_cache").copied(),
                shmem_bytes: stat.get("total_shmem").copied(),
                mapped_file_bytes: stat.get("total_mapped_file").copied(),
                kernel_bytes: f.optional("memory.kmem.usage_in_bytes", "memory.kernel_bytes", files::single_u64),
                peak_bytes: f.read("memory.max_usage_in_bytes", "memory.peak_bytes", files::single_u64),
                failcnt: f.read("memory.failcnt", "memory.failcnt", files::single_u64),
                oom_kill_events: oom.as_ref().and_then(|o| o.get("oom_kill").copied()),
                under_oom: oom.as_ref().and_then(|o| o.get("under_oom")).map(|&v| v != 0),
                ..CgroupMemory::at(location.clone())
            }
        } else {
            let stat = f.read("memory.stat", "memory.stat", files::flat_keyed).unwrap_or_default();
            let events = f.read("memory.events", "memory.events", files::flat_keyed).unwrap_or_default();
            CgroupMemory {
                usage_bytes: f.read("memory.current", "memory.usage_bytes", files::single_u64),
                limit_bytes: f
                    .read("memory.max", "memory.limit_bytes", files::v2_limit)
                    .map(|own| min_limit(own, ancestors_limit(&location))),
                inactive_file_bytes: stat.get("inactive_file").copied(),
                anon_bytes: stat.get("anon").copied(),
                file_bytes: stat.get("file").copied(),
                shmem_bytes: stat.get("shmem").copied(),
                mapped_file_bytes: stat.get("file_mapped").copied(),
                kernel_bytes: stat.get("kernel").copied(),
                slab_bytes: stat.get("slab").copied(),
                sock_bytes: stat.get("sock").copied(),
                peak_bytes: f.optional("memory.peak", "memory.peak_bytes", files::single_u64),
                high_events: events.get("high").copied(),
                max_events: events.get("max").copied(),
                oom_events: events.get("oom").copied(),
                oom_kill_events: events.get("oom_kill").copied(),
                ..CgroupMemory::at(location.clone())
            }
        };
        m.working_set_bytes = working_set(m.usage_bytes, m.inactive_file_bytes);
        m.pressure = self.pressure(&location, psi_dir, "memory", unavailable);
        m
    }

    fn read_cpu_v1(
        &self,
        location: CgroupLocation,
        acct: Option<&CgroupLocation>,
        psi_dir: Option<&Path>,
        u: &mut Vec<Unavailable>,
    ) -> CgroupCpu {
        let mut f = Files { dir: &location.dir, unavailable: u };
        let stat = f.read("cpu.stat", "cpu.stat", files::flat_keyed).unwrap_or_default();
        let mut cpu = CgroupCpu {
            quota_usec: f.read("cpu.cfs_quota_us", "cpu.quota_usec", files::v1_quota),
            period_usec: f.read("cpu.cfs_period_us", "cpu.period_usec", files::single_u64),
            usage_usec: None,
            periods: stat.get("nr_periods").copied(),
            throttled_periods: stat.get("nr_throttled").copied(),
            throttled_usec: stat.get("throttled_time").map(|ns| ns / 1000),
            pressure: None,
            location: location.clone(),
        };
        if let Some(acct) = acct {
            let mut f = Files { dir: &acct.dir, unavailable: u };
            cpu.usage_usec = f.read("cpuacct.usage", "cpu.usage_usec", files::single_u64).map(|ns| ns / 1000);
        }
        cpu.pressure = self.pressure(&location, psi_dir, "cpu", u);
        cpu
    }

    fn read_cpu_v2(&self, location: CgroupLocation, u: &mut Vec<Unavailable>) -> CgroupCpu {
        let mut f = Files { dir: &location.dir, unavailable: u };
        let stat = f.read("cpu.stat", "cpu.stat", files::flat_keyed).unwrap_or_default();
        let max = f.optional("cpu.max", "cpu.quota_usec", files::v2_cpu_max);
        let mut cpu = CgroupCpu {
            quota_usec: max.map(|(q, _)| q),
            period_usec: max.map(|(_, p)| p),
            usage_usec: stat.get("usage_usec").copied(),
            periods: stat.get("nr_periods").copied(),
            throttled_periods: stat.get("nr_throttled").copied(),
            throttled_usec: stat.get("throttled_usec").copied(),
            pressure: None,
            location: location.clone(),
        };
        cpu.pressure = self.pressure(&location, None, "cpu", u);
        cpu
    }

    /// The cgroup's own PSI file on v2 (on a hybrid host, that of the process's v2
    /// cgroup, `psi_dir`); the system's /proc/pressure file when there is none.
    fn pressure(
        &self,
        location: &CgroupLocation,
        psi_dir: Option<&Path>,
        resource: &str,
        u: &mut Vec<Unavailable>,
    ) -> Option<Pressure> {
        let field = format!("{resource}.pressure");
        let file = format!("{resource}.pressure");
        let dir = if location.version == CgroupVersion::V2 { Some(location.dir.as_path()) } else { psi_dir };
        let (source, path) = match dir.map(|d| d.join(&file)).filter(|p| p.exists()) {
            Some(own) => (PressureSource::Cgroup, own),
            None => (PressureSource::System, self.proc_root.join("pressure").join(resource)),
        };
        let parsed = read_file(&path).and_then(|b| files::pressure(&b).map_err(|r| ReadError::parse(&path, r)));
        match parsed {
            Ok((some, full)) => Some(Pressure { source, path, some, full }),
            Err(e) => {
                u.push(Unavailable::from_read(field, &e));
                None
            }
        }
    }
}

/// The line of /proc/PID/cgroup for a controller: a v1 hierarchy holding it, or
/// the v2 line.
fn membership_for<'a>(
    cgroups: &'a [CgroupMembership],
    version: CgroupVersion,
    controller: Option<&str>,
) -> Option<&'a CgroupMembership> {
    cgroups.iter().find(|m| match version {
        CgroupVersion::V2 => m.hierarchy == 0,
        CgroupVersion::V1 => m.hierarchy != 0 && controller.is_some_and(|c| m.controllers.iter().any(|n| n == c)),
    })
}

/// The first mount holding the controller under which `path` exists, as a directory
/// below `base` (`/` for the agent's own mounts, `/proc/PID/root` for a process's).
fn find_dir(
    base: &Path,
    mounts: &[CgroupMount],
    path: &str,
    version: CgroupVersion,
    controller: Option<&str>,
) -> Option<(PathBuf, PathBuf)> {
    mounts.iter().filter(|m| m.holds(version, controller)).find_map(|m| {
        let rel = relative_to(path, &m.root)?;
        let mount_dir = base.join(m.mount_point.strip_prefix("/").unwrap_or(&m.mount_point));
        let dir = mount_dir.join(rel);
        is_cgroup_dir(&dir).then_some((dir, mount_dir))
    })
}

/// A cgroup directory, not just any directory of that name.
fn is_cgroup_dir(dir: &Path) -> bool {
    dir.join("cgroup.procs").exists()
}

/// A configured root laid out like the host's /sys/fs/cgroup: v2 at the top, v1
/// controllers in directories named after them (`memory`, `cpu,cpuacct`).
fn configured_dir(
    root: &Path,
    path: &str,
    version: CgroupVersion,
    controller: Option<&str>,
) -> Option<(PathBuf, PathBuf)> {
    let rel = relative_to(path, "/")?;
    let base = match (version, controller) {
        (CgroupVersion::V1, Some(c)) => std::fs::read_dir(root)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_str().is_some_and(|n| n.split(',').any(|part| part == c)))?
            .path(),
        _ => root.to_path_buf(),
    };
    let dir = base.join(rel);
    is_cgroup_dir(&dir).then_some((dir, base))
}

/// The smallest `memory.max` of the v2 cgroup's ancestors the agent can see (up to
/// its mount's root): a container without a limit of its own is still bound by its
/// pod's. `None` when none of them has one.
fn ancestors_limit(location: &CgroupLocation) -> Option<u64> {
    location
        .dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(&location.mount_dir))
        .filter_map(|a| read_file(a.join("memory.max")).ok().and_then(|b| files::v2_limit(&b).ok()).flatten())
        .min()
}

fn min_limit(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// kubelet's and cAdvisor's working set: usage - inactive_file, floored at 0.
pub fn working_set(usage: Option<u64>, inactive_file: Option<u64>) -> Option<u64> {
    Some(usage?.saturating_sub(inactive_file?))
}

/// Reads files of one cgroup directory, noting every one it cannot read.
struct Files<'a> {
    dir: &'a Path,
    unavailable: &'a mut Vec<Unavailable>,
}

impl Files<'_> {
    fn read<T>(&mut self, name: &str, field: &str, parse: impl Fn(&[u8]) -> Result<T, String>) -> Option<T> {
        self.get(name, field, parse, false)
    }

    /// A file that not every kernel has (memory.peak since 5.19, cpu.max only with
    /// the cpu controller enabled, kmem on v1 kernels that still account it).
    fn optional<T>(&mut self, name: &str, field: &str, parse: impl Fn(&[u8]) -> Result<T, String>) -> Option<T> {
        self.get(name, field, parse, true)
    }

    fn get<T>(
        &mut self,
        name: &str,
        field: &str,
        parse: impl Fn(&[u8]) -> Result<T, String>,
        optional: bool,
    ) -> Option<T> {
        let path = self.dir.join(name);
        let result = read_file(&path).and_then(|b| parse(&b).map_err(|r| ReadError::parse(&path, r)));
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                let mut u = Unavailable::from_read(field, &e);
                if optional && e.is_gone() {
                    u.reason = format!("{name} is not present (this kernel or cgroup does not provide it)");
                }
                self.unavailable.push(u);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_set_floors_at_zero_and_needs_both() {
        assert_eq!(working_set(Some(100), Some(30)), Some(70));
        assert_eq!(working_set(Some(10), Some(30)), Some(0));
        assert_eq!(working_set(None, Some(30)), None);
        assert_eq!(working_set(Some(10), None), None);
    }

    #[test]
    fn effective_limit_is_the_smallest() {
        assert_eq!(min_limit(Some(5), Some(3)), Some(3));
        assert_eq!(min_limit(None, Some(3)), Some(3));
        assert_eq!(min_limit(None, None), None);
    }
}
