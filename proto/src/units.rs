//! Numbers as osl writes them for people, in the agent's findings and the CLI's
//! tables alike.

/// "1.9 s", "2.0 ms", "35 µs", "800 ns".
pub fn duration_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.0} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.1} s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_at_a_glance() {
        let d = super::duration_ns;
        assert_eq!(
            [d(800), d(1023), d(35_400), d(2_049_000), d(1_900_000_000)],
            ["800 ns", "1 µs", "35 µs", "2.0 ms", "1.9 s"]
        );
    }
}
