//! When the watcher writes a pre-OOM report, and which containers it polls fast:
//! pure decisions over a container's recent working set, apart from the loop that
//! polls and the capture that writes.

use super::{WatchConfig, Watched};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A container near its limit is polled every [`super::HOT_POLL`]: at NEAR_PCT or
/// more and, at its growth rate, within NEAR_ETA of the limit, or at NEAR_ALWAYS_PCT
/// or more. A container that sits still at 70% (a JVM's heap, a cache) stays at the
/// normal poll.
const NEAR_PCT: f64 = 50.0;
const NEAR_ETA: Duration = Duration::from_secs(30);
const NEAR_ALWAYS_PCT: f64 = 95.0;

/// Prediction needs this share of the limit used at least (noise below).
pub(super) const PREDICT_FROM_PCT: f64 = 50.0;
pub(super) const HYSTERESIS_PCT: f64 = 5.0;

/// What a poll decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Threshold,
    Prediction { eta: Duration },
}

/// Whether this poll should write a pre-OOM report.
pub fn decide_for(
    samples: &VecDeque<(Instant, u64)>,
    fired: (&mut bool, &mut bool, &mut bool),
    last_report: Option<Instant>,
    now: Instant,
    ws: u64,
    limit: u64,
    cfg: &WatchConfig,
) -> Option<Decision> {
    let (warn, critical, prediction) = fired;
    let pct = ws as f64 * 100.0 / limit as f64;
    if pct < cfg.warn_pct - HYSTERESIS_PCT {
        (*warn, *critical) = (false, false);
    }
    let growth = growth_per_sec(samples);
    if pct < PREDICT_FROM_PCT - HYSTERESIS_PCT || growth <= 0.0 {
        *prediction = false;
    }
    let cooling = last_report.is_some_and(|t| now.duration_since(t) < cfg.cooldown);
    if pct >= cfg.critical_pct && !*critical {
        *critical = true;
        *warn = true;
        // The critical report is never held back: it is the last chance.
        Some(Decision::Threshold)
    } else if pct >= cfg.warn_pct && !*warn {
        *warn = true;
        (!cooling).then_some(Decision::Threshold)
    } else if pct >= PREDICT_FROM_PCT && !*prediction && !*warn && growth > 0.0 {
        let eta_secs = limit.saturating_sub(ws) as f64 / growth;
        if eta_secs < cfg.predict_within.as_secs_f64() {
            *prediction = true;
            (!cooling).then_some(Decision::Prediction { eta: Duration::from_secs_f64(eta_secs.max(0.0)) })
        } else {
            None
        }
    } else {
        None
    }
}

pub(super) fn decide(w: &mut Watched, now: Instant, ws: u64, limit: u64, cfg: &WatchConfig) -> Option<Decision> {
    let last = w.last_report.as_ref().map(|(t, _)| *t);
    decide_for(
        &w.samples,
        (&mut w.fired_warn, &mut w.fired_critical, &mut w.fired_prediction),
        last,
        now,
        ws,
        limit,
        cfg,
    )
}

/// Whether a container is near enough its limit to be polled every [`super::HOT_POLL`].
pub(super) fn near(pct: f64, ws: u64, limit: u64, growth: f64) -> bool {
    let eta_secs = if growth > 0.0 { limit.saturating_sub(ws) as f64 / growth } else { f64::INFINITY };
    pct >= NEAR_ALWAYS_PCT || (pct >= NEAR_PCT && eta_secs < NEAR_ETA.as_secs_f64())
}

/// Least-squares growth of the working set, bytes a second.
pub fn growth_per_sec(samples: &VecDeque<(Instant, u64)>) -> f64 {
    crate::trend::slope_per_sec(samples.iter().copied()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WatchConfig {
        WatchConfig { cooldown: Duration::from_secs(60), predict_within: Duration::from_secs(10), ..Default::default() }
    }

    fn run(points: &[(u64, u64)], limit: u64) -> Vec<Option<Decision>> {
        let t0 = Instant::now();
        let mut samples = VecDeque::new();
        let (mut w, mut c, mut p) = (false, false, false);
        let mut last = None;
        points
            .iter()
            .map(|&(ms, ws)| {
                let now = t0 + Duration::from_millis(ms);
                samples.push_back((now, ws));
                let d = decide_for(&samples, (&mut w, &mut c, &mut p), last, now, ws, limit, &cfg());
                if d.is_some() {
                    last = Some(now);
                }
                d
            })
            .collect()
    }

    #[test]
    fn thresholds_fire_once_and_critical_is_never_held_back() {
        let d = run(&[(0, 70), (1000, 81), (2000, 85), (3000, 91), (4000, 95)], 100);
        assert_eq!(d, [None, Some(Decision::Threshold), None, Some(Decision::Threshold), None]);
    }

    #[test]
    fn a_steady_container_at_70_percent_never_reports() {
        let points: Vec<(u64, u64)> = (0..100).map(|i| (i * 250, 70)).collect();
        assert!(run(&points, 100).iter().all(Option::is_none));
    }

    #[test]
    fn a_fast_rise_is_predicted_before_the_threshold() {
        // 5 units a second from 50: the limit is 10 s away at 50%.
        let points: Vec<(u64, u64)> = (0..8).map(|i| (i * 1000, 40 + 5 * i)).collect();
        let d = run(&points, 100);
        let first = d.iter().position(Option::is_some).unwrap();
        assert!(matches!(d[first], Some(Decision::Prediction { .. })), "{d:?}");
        assert!(points[first].1 < 80, "before the warn threshold: {:?}", points[first]);
    }

    #[test]
    fn cooldown_holds_back_a_second_warning_but_resets_after_a_drop() {
        let d = run(&[(0, 85), (1000, 60), (2000, 85), (70_000, 60), (71_000, 85)], 100);
        assert_eq!(d, [Some(Decision::Threshold), None, None, None, Some(Decision::Threshold)]);
    }

    #[test]
    fn only_a_container_heading_for_its_limit_is_polled_fast() {
        const MIB: u64 = 1 << 20;
        assert!(near(60.0, 60 * MIB, 100 * MIB, 16.0 * MIB as f64), "16 MiB/s, 2.5 s from the limit");
        assert!(!near(70.0, 70 * MIB, 100 * MIB, 0.0), "steady at 70%");
        assert!(!near(70.0, 70 * MIB, 100 * MIB, 0.5 * MIB as f64), "60 s away");
        assert!(!near(40.0, 40 * MIB, 100 * MIB, 60.0 * MIB as f64), "below half");
        assert!(near(96.0, 96 * MIB, 100 * MIB, 0.0), "at the edge, growing or not");
    }

    #[test]
    fn growth_is_a_least_squares_slope() {
        let t0 = Instant::now();
        let s: VecDeque<(Instant, u64)> =
            (0..5).map(|i| (t0 + Duration::from_millis(500 * i), 1000 + 100 * i)).collect();
        assert!((growth_per_sec(&s) - 200.0).abs() < 1e-6);
        assert_eq!(growth_per_sec(&VecDeque::new()), 0.0);
    }
}
