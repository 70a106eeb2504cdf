//! Pure parsers for /proc/PID files: bytes in, values or a reason out, never a panic.
//! The well-formed parts are handed to procfs-core; what it cannot do losslessly
//! or safely is done here (each says why).

use crate::model::{CgroupMembership, Rlimit};
use procfs_core::{FromBufRead, FromRead};

pub use procfs_core::process::{Stat, Status};

/// /proc/PID/stat. procfs-core decodes comm lossily, so the comm bytes are cut out
/// here (between the first `(` and the last `)`: comm may itself hold parentheses
/// and spaces) and the rest is parsed by procfs.
pub fn parse_stat(bytes: &[u8]) -> Result<(Vec<u8>, Stat), String> {
    let open = bytes.iter().position(|&b| b == b'(').ok_or("no '(' before comm")?;
    let close = bytes.iter().rposition(|&b| b == b')').ok_or("no ')' after comm")?;
    if close < open {
        return Err("')' before '('".into());
    }
    let comm = bytes[open + 1..close].to_vec();
    // procfs slices the trimmed, lossily decoded line around its parentheses
    // without checking: "PID (comm) S …" must hold there (found by fuzzing:
    // "1 (a) \n" trims to "1 (a)", one byte short of the slice after ") ").
    let text = String::from_utf8_lossy(bytes);
    let line = text.trim().as_bytes();
    let (open, close) = (line.iter().position(|&b| b == b'('), line.iter().rposition(|&b| b == b')'));
    let (Some(open), Some(close)) = (open, close) else { return Err("not 'pid (comm) state …'".into()) };
    if open < 2 || close < open || line[open - 1] != b' ' || line.len() < close + 3 || line[close + 1] != b' ' {
        return Err("not 'pid (comm) state …'".into());
    }
    let stat = Stat::from_read(line).map_err(|e| e.to_string())?;
    Ok((comm, stat))
}

/// /proc/PID/status. Its `Name:` line is the raw comm, which need not be UTF-8
/// and would make procfs reject the whole file; the name is taken from stat
/// instead, so a lossy copy is parsed.
pub fn parse_status(bytes: &[u8]) -> Result<Status, String> {
    let text = String::from_utf8_lossy(bytes);
    Status::from_buf_read(text.as_bytes()).map_err(|e| e.to_string())
}

/// The figures osl takes from /proc/PID/smaps_rollup, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollup {
    pub pss: Option<u64>,
    pub pss_anon: Option<u64>,
    pub pss_file: Option<u64>,
    pub pss_shmem: Option<u64>,
    pub uss: Option<u64>,
    pub swap_pss: Option<u64>,
}

/// `Key:   N kB` lines after a `… [rollup]` header. Parsed here rather than by
/// procfs-core, whose map parser slices header fields (a garbage header panics it)
/// and multiplies without checking.
pub fn parse_smaps_rollup(bytes: &[u8]) -> Result<Rollup, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    if !lines.next().is_some_and(|h| h.ends_with("[rollup]")) {
        return Err("no [rollup] header".into());
    }
    let mut values = std::collections::HashMap::new();
    for line in lines {
        let (key, rest) = line.split_once(':').ok_or_else(|| format!("bad line {line:?}"))?;
        let kb = rest.trim().strip_suffix(" kB").ok_or_else(|| format!("{key}: no kB unit"))?;
        let kb: u64 = kb.trim().parse().map_err(|_| format!("{key}: not a number"))?;
        values.insert(key, kb.checked_mul(1024).ok_or_else(|| format!("{key}: too large"))?);
    }
    let get = |k: &str| values.get(k).copied();
    // USS: pages only this process maps. Hugetlb pages are in neither Rss nor Pss.
    let uss = match (get("Private_Clean"), get("Private_Dirty")) {
        (Some(c), Some(d)) => c.checked_add(d),
        _ => None,
    };
    let rollup = Rollup {
        pss: get("Pss"),
        pss_anon: get("Pss_Anon"),
        pss_file: get("Pss_File"),
        pss_shmem: get("Pss_Shmem"),
        uss,
        swap_pss: get("SwapPss"),
    };
    if rollup.pss.is_none() {
        return Err("no Pss line".into());
    }
    Ok(rollup)
}

/// The `Max open files` line of /proc/PID/limits. Parsed here rather than with
/// procfs-core, whose `Limits` parser indexes columns without checking their
/// count (a short line would panic) and needs every limit to parse.
pub fn parse_nofile(bytes: &[u8]) -> Result<Rlimit, String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().find(|l| l.starts_with("Max open files")).ok_or("no 'Max open files' line")?;
    let mut cols = line["Max open files".len()..].split_whitespace();
    let mut limit = || -> Result<Option<u64>, String> {
        match cols.next() {
            Some("unlimited") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| format!("bad limit {v:?}")),
            None => Err("missing limit column".into()),
        }
    };
    Ok(Rlimit { soft: limit()?, hard: limit()? })
}

/// /proc/PID/cmdline: NUL-separated arguments. A process may rewrite its argv
/// area (setproctitle), leaving spaces instead of NULs: that is kept as one argument.
pub fn parse_cmdline(bytes: &[u8]) -> Vec<Vec<u8>> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
}

/// /proc/PID/cgroup: `hierarchy-id:controllers:path` per line; v2 is `0::/path`.
pub fn parse_cgroups(bytes: &[u8]) -> Result<Vec<CgroupMembership>, String> {
    let text = String::from_utf8_lossy(bytes);
    let groups = procfs_core::ProcessCGroups::from_buf_read(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(groups
        .0
        .into_iter()
        .map(|g| CgroupMembership { hierarchy: g.hierarchy, controllers: g.controllers, path: g.pathname })
        .collect())
}

/// `btime` (boot time, seconds since the epoch) from /proc/stat.
pub fn parse_btime(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &[u8] = b"4242 (my (odd) \xff name) S 1 4242 4242 0 -1 4194560 1234 0 5 0 250 75 0 0 20 0 7 0 9876543 1234567 890 18446744073709551615 1 1 0 0 0 0 0 4096 17922 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_keeps_odd_comm_bytes() {
        let (comm, stat) = parse_stat(STAT).unwrap();
        assert_eq!(comm, b"my (odd) \xff name");
        assert_eq!((stat.ppid, stat.state, stat.num_threads), (1, 'S', 7));
        assert_eq!((stat.utime, stat.stime, stat.minflt, stat.majflt), (250, 75, 1234, 5));
        assert_eq!(stat.starttime, 9876543);
    }

    #[test]
    fn stat_garbage_is_an_error() {
        for bad in [
            &b""[..],
            b"garbage",
            b"1 (x",
            b"1 x) S",
            b"1 (x) S not numbers at all",
            b")(",
            b"\xff\xfe",
            b"1 (x)",
            b"(x) S 1",
            b"1 (x)S 1",
            b"1(x) S 1",
            // Found by fuzzing: procfs trims the line, then slices past its end.
            b"1 (a) \n",
            include_bytes!("../../../fuzz/regressions/stat/trimmed-short-tail"),
        ] {
            assert!(parse_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nofile_limits() {
        let limits = b"Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            64                   1048576              files     \n";
        assert_eq!(parse_nofile(limits).unwrap(), Rlimit { soft: Some(64), hard: Some(1048576) });
        let unlimited = b"Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_nofile(unlimited).unwrap(), Rlimit { soft: None, hard: None });
        assert!(parse_nofile(b"Max open files\n").is_err());
        assert!(parse_nofile(b"Max open files x y files\n").is_err());
        assert!(parse_nofile(b"").is_err());
    }

    #[test]
    fn cmdline_split() {
        assert_eq!(parse_cmdline(b"java\0-Xmx1g\0\0x\0"), [&b"java"[..], b"-Xmx1g", b"", b"x"]);
        assert_eq!(parse_cmdline(b"nginx: worker process"), [&b"nginx: worker process"[..]]);
        assert!(parse_cmdline(b"").is_empty());
    }

    #[test]
    fn smaps_rollup_pss_and_uss() {
        let text = b"5585e445c000-7ffcd6380000 ---p 00000000 00:00 0                          [rollup]\n\
Rss:                1708 kB\nPss:                 767 kB\nPss_Dirty:           108 kB\nPss_Anon:            108 kB\n\
Pss_File:            659 kB\nPss_Shmem:             0 kB\nShared_Clean:       1492 kB\nShared_Dirty:          0 kB\n\
Private_Clean:       108 kB\nPrivate_Dirty:       108 kB\nReferenced:         1708 kB\nAnonymous:           108 kB\n\
Private_Hugetlb:       0 kB\nSwap:                  0 kB\nSwapPss:               0 kB\nLocked:                0 kB\n";
        let r = parse_smaps_rollup(text).unwrap();
        assert_eq!(r.pss, Some(767 * 1024));
        assert_eq!(r.pss_file, Some(659 * 1024));
        assert_eq!(r.uss, Some(216 * 1024));
        for bad in [
            &b""[..],
            b"not a map\n",
            b"0-1 ---p 0 00:00 0 /SYSV12\nPss: 1 kB\n",
            b"0-1 ---p 0 00:00 0 [rollup]\nPss: 99999999999999999999 kB\n",
            b"0-1 ---p 0 00:00 0 [rollup]\nPss: 18446744073709551615 kB\n",
            b"0-1 ---p 0 00:00 0 [rollup]\nRss: 1 kB\n",
            b"0-1 ---p 0 00:00 0 [rollup]\nPss 1\n",
        ] {
            assert!(parse_smaps_rollup(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cgroup_lines_hybrid_and_v2() {
        let hybrid = b"12:memory:/kubepods/burstable/pod1/abc\n4:cpu,cpuacct:/kubepods/burstable/pod1/abc\n1:name=systemd:/x\n0::/\n";
        let g = parse_cgroups(hybrid).unwrap();
        assert_eq!(g.len(), 4);
        assert_eq!(g[0].controllers, ["memory"]);
        assert_eq!(g[1].controllers, ["cpu", "cpuacct"]);
        assert_eq!(g[3], CgroupMembership { hierarchy: 0, controllers: vec![], path: "/".into() });
        let v2 = parse_cgroups(b"0::/../cri-containerd-3f.scope\n").unwrap();
        assert_eq!(v2[0].path, "/../cri-containerd-3f.scope");
        assert!(parse_cgroups(b"x:y\n").is_err());
    }

    #[test]
    fn btime() {
        assert_eq!(parse_btime(b"cpu  1 2 3\nbtime 1764270000\nprocesses 5\n"), Some(1764270000));
        assert_eq!(parse_btime(b"cpu 1\n"), None);
    }
}
