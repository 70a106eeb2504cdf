//! Pure parsers for cgroup and PSI files, as the kernel documents them in
//! Documentation/admin-guide/cgroup-v2.rst and cgroup-v1/memory.rst.

use crate::model::PressureLine;
use std::collections::HashMap;

/// v1 reports "no limit" as PAGE_COUNTER_MAX pages: LONG_MAX rounded down to the
/// page size (which differs between machines); no real limit comes near 2^62.
const V1_UNLIMITED_FLOOR: u64 = 1 << 62;

/// A file holding one number.
pub fn single_u64(bytes: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?.trim();
    text.parse().map_err(|_| format!("expected a number, found {:?}", truncate(text)))
}

/// v2 `memory.max`: a number or `max`. `Ok(None)` is unlimited.
pub fn v2_limit(bytes: &[u8]) -> Result<Option<u64>, String> {
    if bytes.trim_ascii() == b"max" { Ok(None) } else { single_u64(bytes).map(Some) }
}

/// v1 `memory.limit_in_bytes`. `Ok(None)` is unlimited.
pub fn v1_limit(bytes: &[u8]) -> Result<Option<u64>, String> {
    single_u64(bytes).map(v1_limit_value)
}

/// A v1 limit value (also `hierarchical_memory_limit` in memory.stat). `None` is unlimited.
pub fn v1_limit_value(v: u64) -> Option<u64> {
    (v < V1_UNLIMITED_FLOOR).then_some(v)
}

/// v1 `cpu.cfs_quota_us`: `-1` is no quota.
pub fn v1_quota(bytes: &[u8]) -> Result<Option<u64>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?.trim();
    match text.parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(v) => u64::try_from(v).map(Some).map_err(|_| format!("negative quota {v}")),
        Err(_) => Err(format!("expected a number, found {:?}", truncate(text))),
    }
}

/// v2 `cpu.max`: `$MAX $PERIOD`, `$MAX` may be `max`. Returns (quota, period).
pub fn v2_cpu_max(bytes: &[u8]) -> Result<(Option<u64>, u64), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut parts = text.split_whitespace();
    let quota = match parts.next() {
        Some("max") => None,
        Some(v) => Some(v.parse().map_err(|_| format!("bad quota {:?}", truncate(v)))?),
        None => return Err("empty".into()),
    };
    let period = parts.next().ok_or("no period")?.parse().map_err(|_| "bad period".to_string())?;
    Ok((quota, period))
}

/// Flat-keyed files (`memory.stat`, `memory.events`, `cpu.stat`, `memory.oom_control`):
/// `key value` per line.
pub fn flat_keyed(bytes: &[u8]) -> Result<HashMap<String, u64>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut map = HashMap::new();
    let mut skipped = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next().and_then(|v| v.parse().ok()), parts.next()) {
            (Some(key), Some(value), None) => {
                map.insert(key.to_string(), value);
            }
            // A line of a shape this version does not know: the rest still counts.
            _ => skipped = Some(line),
        }
    }
    match skipped {
        Some(line) if map.is_empty() => Err(format!("expected 'key value', found {:?}", truncate(line))),
        _ => Ok(map),
    }
}

/// A PSI file: `some avg10=… avg60=… avg300=… total=…` and, except for the
/// system-wide cpu file on old kernels, a `full` line.
pub fn pressure(bytes: &[u8]) -> Result<(Option<PressureLine>, Option<PressureLine>), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let (mut some, mut full) = (None, None);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let kind = parts.next().unwrap_or_default();
        if kind != "some" && kind != "full" {
            continue;
        }
        let mut values = HashMap::new();
        for part in parts {
            let (k, v) =
                part.split_once('=').ok_or_else(|| format!("expected key=value, found {:?}", truncate(part)))?;
            values.insert(k, v);
        }
        let avg = |k: &str| -> Result<f64, String> {
            let v = values.get(k).ok_or_else(|| format!("{kind}: no {k}"))?;
            v.parse::<f64>().ok().filter(|f| f.is_finite()).ok_or_else(|| format!("{kind}: bad {k} {v:?}"))
        };
        let total = values.get("total").ok_or_else(|| format!("{kind}: no total"))?;
        let parsed = PressureLine {
            avg10_pct: avg("avg10")?,
            avg60_pct: avg("avg60")?,
            avg300_pct: avg("avg300")?,
            total_usec: total.parse().map_err(|_| format!("{kind}: bad total {total:?}"))?,
        };
        match kind {
            "some" => some = Some(parsed),
            "full" => full = Some(parsed),
            _ => {} // a kind of line a later kernel may add
        }
    }
    if some.is_none() {
        return Err("no 'some' line".into());
    }
    Ok((some, full))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_v1_and_v2() {
        assert_eq!(v2_limit(b"max\n"), Ok(None));
        assert_eq!(v2_limit(b"268435456\n"), Ok(Some(268435456)));
        assert_eq!(v1_limit(b"9223372036854771712\n"), Ok(None));
        assert_eq!(v1_limit(b"9223372036854710272\n"), Ok(None), "64 KiB pages round LONG_MAX further down");
        assert_eq!(v1_limit(b"134217728\n"), Ok(Some(134217728)));
        assert!(v2_limit(b"lots\n").is_err());
        assert!(single_u64(b"\xff").is_err());
        assert!(single_u64(b"").is_err());
    }

    #[test]
    fn cpu_quota_v1_and_v2() {
        assert_eq!(v1_quota(b"-1\n"), Ok(None));
        assert_eq!(v1_quota(b"50000\n"), Ok(Some(50000)));
        assert!(v1_quota(b"-5\n").is_err());
        assert_eq!(v2_cpu_max(b"max 100000\n"), Ok((None, 100000)));
        assert_eq!(v2_cpu_max(b"25000 100000\n"), Ok((Some(25000), 100000)));
        assert!(v2_cpu_max(b"25000\n").is_err());
        assert!(v2_cpu_max(b"").is_err());
    }

    #[test]
    fn flat_keyed_files() {
        let m = flat_keyed(b"oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").unwrap();
        assert_eq!(m["oom_kill"], 3);
        assert!(flat_keyed(b"anon 12 13\n").is_err());
        assert!(flat_keyed(b"anon\n").is_err());
        assert!(flat_keyed(b"anon x\n").is_err());
        let partly = flat_keyed(b"anon 5\nnew_thing 1 2\nfile 7\n").unwrap();
        assert_eq!((partly["anon"], partly["file"], partly.len()), (5, 7, 2), "an odd line is skipped, not fatal");
    }

    #[test]
    fn pressure_files() {
        let (some, full) = pressure(
            b"some avg10=1.53 avg60=0.87 avg300=0.25 total=123456\nfull avg10=0.50 avg60=0.20 avg300=0.05 total=65432\n",
        )
        .unwrap();
        assert_eq!(some.unwrap().avg10_pct, 1.53);
        assert_eq!(full.unwrap().total_usec, 65432);
        let (some, full) = pressure(b"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        assert!(some.is_some() && full.is_none());
        assert!(pressure(b"some avg10=x avg60=0 avg300=0 total=0\n").is_err());
        assert!(pressure(b"some avg10=NaN avg60=0 avg300=0 total=0\n").is_err());
        assert!(pressure(b"weird avg10=0 avg60=0 avg300=0 total=0\n").is_err(), "no some line");
        let (some, _) = pressure(b"some avg10=1.00 avg60=0 avg300=0 total=5\nweird x\n").unwrap();
        assert_eq!(some.unwrap().total_usec, 5);
        assert!(pressure(b"").is_err());
    }
}
