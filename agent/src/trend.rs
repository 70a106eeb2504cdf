//! The fd-count sampler: on a cheap interval the agent records every process's
//! open-fd count (one stat of /proc/PID/fd each, Linux ≥ 6.2) in a bounded history,
//! and reports the slope and, when the count keeps rising, the time until the soft
//! RLIMIT_NOFILE is reached.

use crate::model::FdTrend;
use crate::proc::ProcReader;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A process: pids are reused, so (pid, start time).
type Key = (i32, u64);

#[derive(Debug)]
pub struct FdSampler {
    window: Duration,
    max_samples: usize,
    history: Mutex<HashMap<Key, VecDeque<(Instant, u64)>>>,
}

/// Fewer samples than this say nothing about a trend.
const MIN_SAMPLES: usize = 5;

impl FdSampler {
    /// Keeps at most `max_samples` per process, no older than `window`.
    pub fn new(window: Duration, max_samples: usize) -> Self {
        Self { window, max_samples: max_samples.max(MIN_SAMPLES), history: Mutex::new(HashMap::new()) }
    }

    /// Takes one sample of every process; forgets processes that are gone.
    pub fn sample(&self, procs: &ProcReader) {
        let Ok(pids) = procs.pids() else { return };
        let now = Instant::now();
        let counts: Vec<(Key, u64)> =
            pids.into_iter().filter_map(|pid| procs.fd_count(pid).ok().map(|(start, n)| ((pid, start), n))).collect();
        let alive: std::collections::HashSet<Key> = counts.iter().map(|(k, _)| *k).collect();
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.retain(|key, _| alive.contains(key));
        for (key, n) in counts {
            self.record(history.entry(key).or_default(), now, n);
        }
    }

    fn record(&self, samples: &mut VecDeque<(Instant, u64)>, now: Instant, n: u64) {
        samples.push_back((now, n));
        while samples.len() > self.max_samples || samples.front().is_some_and(|(t, _)| now - *t > self.window) {
            samples.pop_front();
        }
    }

    /// The trend of one process, if enough samples were taken.
    pub fn trend(&self, pid: i32, start_time_ticks: u64, soft_limit: Option<u64>) -> Option<FdTrend> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let samples = history.get(&(pid, start_time_ticks))?;
        trend_of(samples.iter().copied(), soft_limit)
    }
}

/// Least-squares slope of timed values, per second (fd counts here, a working
/// set in the watcher); `None` without two distinct times. Two passes, nothing
/// allocated: the watcher calls it every poll.
pub fn slope_per_sec<I: Iterator<Item = (Instant, u64)> + Clone>(samples: I) -> Option<f64> {
    let t0 = samples.clone().next()?.0;
    let x = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
    let (mut n, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (t, v) in samples.clone() {
        n += 1.0;
        sx += x(t);
        sy += v as f64;
    }
    let (mx, my) = (sx / n, sy / n);
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for (t, v) in samples {
        let dx = x(t) - mx;
        sxx += dx * dx;
        sxy += dx * (v as f64 - my);
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Least-squares slope over the samples; "growing" when the count rose overall and
/// fell in at most one step in ten.
pub fn trend_of(samples: impl Iterator<Item = (Instant, u64)>, soft_limit: Option<u64>) -> Option<FdTrend> {
    let samples: Vec<(Instant, u64)> = samples.collect();
    if samples.len() < MIN_SAMPLES {
        return None;
    }
    let t0 = samples[0].0;
    let slope = slope_per_sec(samples.iter().copied())?;
    let (first, last) = (samples[0].1, samples[samples.len() - 1].1);
    let steps = samples.len() - 1;
    let falls = samples.windows(2).filter(|w| w[1].1 < w[0].1).count();
    #[allow(clippy::int_plus_one)] // "at most one step in ten", as written
    let growing = last > first && slope > 0.0 && falls * 10 <= steps;
    let eta_to_limit_sec = match soft_limit {
        Some(limit) if growing => Some((limit.saturating_sub(last) as f64 / slope).ceil() as u64),
        _ => None,
    };
    Some(FdTrend {
        samples: samples.len() as u32,
        window_msec: (samples[samples.len() - 1].0 - t0).as_millis() as u64,
        first,
        last,
        slope_per_sec: slope,
        growing,
        eta_to_limit_sec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_is_least_squares_and_needs_two_times() {
        let t0 = Instant::now();
        let line = (0..10u64).map(|i| (t0 + Duration::from_millis(500 * i), 100 + 3 * i));
        assert!((slope_per_sec(line).unwrap() - 6.0).abs() < 1e-9, "3 every half second");
        assert_eq!(slope_per_sec([(t0, 1), (t0, 5)].into_iter()), None);
        assert_eq!(slope_per_sec(std::iter::empty()), None);
    }

    fn series(counts: &[u64], step_ms: u64) -> Vec<(Instant, u64)> {
        let t0 = Instant::now();
        counts.iter().enumerate().map(|(i, &n)| (t0 + Duration::from_millis(step_ms * i as u64), n)).collect()
    }

    #[test]
    fn a_steady_rise_is_growing_with_an_eta() {
        let t = trend_of(series(&[10, 12, 14, 16, 18, 20], 1000).into_iter(), Some(100)).unwrap();
        assert!(t.growing);
        assert!((t.slope_per_sec - 2.0).abs() < 1e-9);
        assert_eq!(t.eta_to_limit_sec, Some(40));
        assert_eq!((t.first, t.last, t.samples, t.window_msec), (10, 20, 6, 5000));
    }

    #[test]
    fn flat_falling_or_noisy_counts_are_not_growing() {
        assert!(!trend_of(series(&[10; 8], 1000).into_iter(), Some(100)).unwrap().growing);
        assert!(!trend_of(series(&[20, 18, 16, 14, 12], 1000).into_iter(), None).unwrap().growing);
        let noisy = trend_of(series(&[10, 14, 11, 15, 12, 16], 1000).into_iter(), Some(100)).unwrap();
        assert!(!noisy.growing, "{noisy:?}");
        assert_eq!(noisy.eta_to_limit_sec, None);
        assert!(trend_of(series(&[1, 2, 3], 1000).into_iter(), None).is_none(), "too few samples");
    }

    #[test]
    fn history_is_bounded_by_count_and_age() {
        let s = FdSampler::new(Duration::from_secs(10), 5);
        let mut q = VecDeque::new();
        let t0 = Instant::now();
        for i in 0..20 {
            s.record(&mut q, t0 + Duration::from_secs(i), i);
        }
        assert_eq!(q.len(), 5);
        let s = FdSampler::new(Duration::from_secs(3), 100);
        let mut q = VecDeque::new();
        for i in 0..20 {
            s.record(&mut q, t0 + Duration::from_secs(i), i);
        }
        assert_eq!(q.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [16, 17, 18, 19]);
    }
}
