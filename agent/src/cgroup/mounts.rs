//! Where cgroups are mounted (/proc/PID/mountinfo) and what a cgroup path says
//! about its container.

use crate::model::CgroupVersion;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// A cgroup filesystem mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub version: CgroupVersion,
    /// The cgroup this mount shows at its mount point, relative to the reader's
    /// cgroup namespace (field 4 of mountinfo), unescaped.
    pub root: String,
    pub mount_point: PathBuf,
    /// v1 super options: the controllers (`memory`, `cpu`, `name=systemd`…) and flags.
    pub options: Vec<String>,
}

impl CgroupMount {
    /// Whether this mount holds `controller` (v2 holds every one that is enabled).
    pub fn holds(&self, version: CgroupVersion, controller: Option<&str>) -> bool {
        self.version == version
            && match (version, controller) {
                (CgroupVersion::V1, Some(c)) => self.options.iter().any(|o| o == c),
                _ => true,
            }
    }
}

/// The cgroup mounts in a mountinfo file. Written here rather than taken from
/// procfs-core, which keeps the octal escapes (`\040` for a space) in paths and
/// rejects a file with a non-UTF-8 mount point anywhere in it.
pub fn parse_cgroup_mounts(bytes: &[u8]) -> Result<Vec<CgroupMount>, String> {
    let mut mounts = Vec::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let sep =
            fields.iter().position(|f| *f == b"-").ok_or_else(|| format!("line {}: no ' - ' separator", n + 1))?;
        if sep < 6 || fields.len() < sep + 4 {
            return Err(format!("line {}: too few fields", n + 1));
        }
        let version = match fields[sep + 1] {
            b"cgroup" => CgroupVersion::V1,
            b"cgroup2" => CgroupVersion::V2,
            _ => continue,
        };
        // /proc/PID/cgroup paths are read as text: a mount whose root is not UTF-8
        // cannot match any of them, and is skipped.
        let Ok(root) = String::from_utf8(unescape(fields[3])) else { continue };
        let mount_point = PathBuf::from(OsString::from_vec(unescape(fields[4])));
        let options = String::from_utf8_lossy(fields[sep + 3]).split(',').map(str::to_owned).collect();
        mounts.push(CgroupMount { version, root, mount_point, options });
    }
    Ok(mounts)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal =
            field.get(i + 1..i + 4).filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |acc, c| acc.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// `path` relative to a mount whose root is `root`, if the mount shows it.
/// Never climbs out with `..`.
pub fn relative_to(path: &str, root: &str) -> Option<String> {
    let rest = if root == "/" { path } else { path.strip_prefix(root)? };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None; // "/a/bc" is not under "/a/b"
    }
    let rest = rest.trim_start_matches('/');
    if rest.split('/').any(|c| c == "..") {
        return None;
    }
    Some(rest.to_string())
}

/// The 64-hex container id in a cgroup path, as containerd (`cri-containerd-<id>.scope`,
/// `/kubepods/…/<id>`), CRI-O (`crio-<id>.scope`) and Docker (`docker-<id>.scope`,
/// `/docker/<id>`) name it: the last path component holding a run of exactly 64 hex digits.
pub fn container_id(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|component| {
        let component = component.strip_suffix(".scope").unwrap_or(component);
        component
            .split(['-', '_', ':'])
            .rev()
            .find(|p| p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned)
    })
}

/// The pod uid in a kubelet cgroup path: `pod<uid>` (cgroupfs driver) or
/// `kubepods-<qos>-pod<uid with _ for ->.slice` (systemd driver).
pub fn pod_uid(path: &str) -> Option<String> {
    path.split('/').find_map(|component| {
        let component = component.strip_suffix(".slice").unwrap_or(component);
        let uid = &component[component.rfind("pod")? + 3..];
        let uid = uid.replace('_', "-");
        let is_uuid = uid.len() == 36
            && uid.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        is_uuid.then_some(uid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &[u8] = b"\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_v1_and_v2_mounts_of_a_hybrid_host() {
        let m = parse_cgroup_mounts(HYBRID).unwrap();
        assert_eq!(m.len(), 4);
        assert!(m[1].holds(CgroupVersion::V1, Some("memory")));
        assert!(!m[0].holds(CgroupVersion::V1, Some("memory")));
        assert!(m[3].holds(CgroupVersion::V2, Some("memory")));
        assert_eq!(m[3].mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn escaped_paths_and_optional_fields() {
        // A container runtime's bind mount of a cgroup with a space and a backslash in its
        // name, with propagation fields before the separator.
        let line = b"1295 1290 0:30 /kubepods/my\\040pod\\134x /sys/fs/cgroup\\040here ro,nosuid shared:5 master:1 - cgroup2 cgroup2 rw,nsdelegate\n";
        let m = parse_cgroup_mounts(line).unwrap();
        assert_eq!(m[0].root, "/kubepods/my pod\\x");
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup here"));
        assert_eq!(m[0].version, CgroupVersion::V2);
        let non_utf8 =
            b"7 1 0:3 / /mnt/\xff rw - ext4 /dev/x rw\n41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_cgroup_mounts(non_utf8).unwrap().len(), 1);
    }

    #[test]
    fn garbage_mountinfo_is_an_error() {
        assert!(parse_cgroup_mounts(b"not a mountinfo line\n").is_err());
        assert!(parse_cgroup_mounts(b"1 2 - cgroup\n").is_err());
        assert!(parse_cgroup_mounts(b"1 2 3 4 5 6 - cgroup src\n").is_err(), "no super options");
        let bad_root = b"1 2 0:1 /\xff /x rw - cgroup2 cgroup2 rw\n41 31 0:38 / /y rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_cgroup_mounts(bad_root).unwrap().len(), 1, "a non-UTF-8 root skips that mount only");
        assert_eq!(parse_cgroup_mounts(b"").unwrap(), vec![]);
    }

    #[test]
    fn relative_paths_never_climb() {
        assert_eq!(relative_to("/kubepods/pod1/abc", "/").as_deref(), Some("kubepods/pod1/abc"));
        assert_eq!(relative_to("/kubepods/pod1/abc", "/kubepods").as_deref(), Some("pod1/abc"));
        assert_eq!(relative_to("/kubepods/pod1/abc", "/kubepods/pod1/abc").as_deref(), Some(""));
        assert_eq!(relative_to("/kubepods/pod10", "/kubepods/pod1"), None);
        assert_eq!(relative_to("/../cri-containerd-x.scope", "/"), None);
        assert_eq!(relative_to("/../sib.scope", "/../sib.scope").as_deref(), Some(""));
    }

    #[test]
    fn container_ids_from_every_runtime() {
        let id = "3f2a9c0d1e5b7a8f6c4d2e0b9a7c5e3d1f0b8a6c4e2d0f9b7a5c3e1d0f2b4a6c";
        for path in [
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7c1b.slice/cri-containerd-{id}.scope"
            ),
            format!("/kubepods/burstable/pod6f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b/{id}"),
            format!("/system.slice/crio-{id}.scope"),
            format!("/system.slice/docker-{id}.scope"),
            format!("/docker/{id}"),
            format!("/../cri-containerd-{id}.scope"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(id), "{path}");
        }
        assert_eq!(container_id("/user.slice/user-1000.slice/session-2.scope"), None);
        assert_eq!(container_id("/"), None);
    }

    #[test]
    fn pod_uids_from_both_cgroup_drivers() {
        let uid = "6f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";
        assert_eq!(pod_uid(&format!("/kubepods/burstable/pod{uid}/abc")).as_deref(), Some(uid));
        let systemd = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/x";
        assert_eq!(pod_uid(systemd).as_deref(), Some(uid));
        assert_eq!(pod_uid("/system.slice/podman.service"), None);
    }
}
