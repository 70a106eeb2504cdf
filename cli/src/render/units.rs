//! Human units for tables: bytes in binary units, percentages, durations.

use humansize::{BINARY, format_size};

pub const NONE: &str = "-";

pub fn bytes(v: Option<u64>) -> String {
    v.map_or_else(|| NONE.to_string(), |b| format_size(b, BINARY.decimal_places(1)))
}

pub fn pct(part: Option<u64>, whole: Option<u64>) -> String {
    match (part, whole) {
        (Some(p), Some(w)) if w > 0 => format!("{:.1}%", p as f64 * 100.0 / w as f64),
        _ => NONE.to_string(),
    }
}

/// CPU time, `ps` style: `0.42s`, `3m07s`, `2h05m`.
pub fn cpu_time(usec: Option<u64>) -> String {
    let Some(usec) = usec else { return NONE.to_string() };
    let secs = usec / 1_000_000;
    if secs < 60 {
        format!("{:.2}s", usec as f64 / 1e6)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

/// An age, kubectl style: `45s`, `12m`, `3h`, `5d`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| NONE.to_string(), |v| v.to_string())
}

/// The first 12 hex digits of a container id, as `docker ps` and `crictl ps` show it.
pub fn short_id(id: &str) -> &str {
    // By characters: an id from a hostile agent need not be hex (nor ASCII).
    id.char_indices().nth(12).map_or(id, |(end, _)| &id[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(Some(64 * 1024 * 1024)), "64 MiB");
        assert_eq!(bytes(Some(1536)), "1.5 KiB");
        assert_eq!(bytes(None), "-");
        assert_eq!(pct(Some(63), Some(64)), "98.4%");
        assert_eq!(pct(Some(1), Some(0)), "-");
        assert_eq!(cpu_time(Some(420_000)), "0.42s");
        assert_eq!(cpu_time(Some(187_000_000)), "3m07s");
        assert_eq!(cpu_time(Some(7_500_000_000)), "2h05m");
        assert_eq!(age(90_000), "1m");
        assert_eq!(short_id("3f2a9c0d1e5b7a8f6c4d"), "3f2a9c0d1e5b");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id("ééééééééééééé"), "éééééééééééé", "not cut inside a character");
    }
}
