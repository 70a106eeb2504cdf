//! The minutes before: per container, a ring of its memory at [`EVERY`] resolution
//! over the last [`SPAN`], carried by every report. Samples are packed to fixed
//! size (KiB in u32: the kernel counts pages; "none" as MAX) in a fixed-capacity
//! ring: at most [`CAPACITY`] × size_of::<Packed>() bytes a container (~33 KiB),
//! whatever the poll rate or the container's life.

use osl_proto::v1;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub const EVERY: Duration = Duration::from_secs(1);
pub const SPAN: Duration = Duration::from_secs(600);
pub const CAPACITY: usize = (SPAN.as_secs() / EVERY.as_secs()) as usize;
/// Processes per sample, by RSS.
pub const TOP: usize = 3;

/// One sample, as read by the poll.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    pub at_unix_ms: i64,
    pub working_set_bytes: u64,
    pub anon_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
    /// (pid, RSS bytes), biggest first.
    pub top: [Option<(i32, u64)>; TOP],
    pub fd_count: Option<u32>,
    pub pressure_some_avg10: Option<f32>,
}

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Packed {
    at_unix_ms: i64,
    working_set_kib: u32,
    anon_kib: u32,
    file_kib: u32,
    fd_count: u32,
    /// (pid, RSS KiB); pid 0: none.
    top: [(i32, u32); TOP],
    /// avg10 × 100.
    pressure_centi: u16,
}

fn kib(b: u64) -> u32 {
    (b / 1024).min(NONE as u64 - 1) as u32
}

fn unkib(k: u32) -> Option<u64> {
    (k != NONE).then_some(k as u64 * 1024)
}

impl Packed {
    fn pack(s: &Sample) -> Self {
        Self {
            at_unix_ms: s.at_unix_ms,
            working_set_kib: kib(s.working_set_bytes),
            anon_kib: s.anon_bytes.map_or(NONE, kib),
            file_kib: s.file_bytes.map_or(NONE, kib),
            fd_count: s.fd_count.map_or(NONE, |n| n.min(NONE - 1)),
            top: s.top.map(|t| t.map_or((0, 0), |(pid, rss)| (pid, kib(rss)))),
            pressure_centi: s.pressure_some_avg10.map_or(u16::MAX, |p| (p * 100.0).clamp(0.0, 10_000.0) as u16),
        }
    }

    fn to_proto(self) -> v1::MemorySample {
        v1::MemorySample {
            at_unix_ms: self.at_unix_ms,
            working_set_bytes: self.working_set_kib as u64 * 1024,
            anon_bytes: unkib(self.anon_kib),
            file_bytes: unkib(self.file_kib),
            top: self
                .top
                .iter()
                .filter(|(pid, _)| *pid != 0)
                .map(|&(pid, k)| v1::ProcessRss { pid, rss_bytes: k as u64 * 1024 })
                .collect(),
            fd_count: (self.fd_count != NONE).then_some(self.fd_count),
            pressure_some_avg10: (self.pressure_centi != u16::MAX).then(|| self.pressure_centi as f64 / 100.0),
        }
    }
}

#[derive(Debug, Clone)]
pub struct History {
    ring: VecDeque<Packed>,
    last: Option<Instant>,
}

impl Default for History {
    fn default() -> Self {
        Self { ring: VecDeque::with_capacity(CAPACITY), last: None }
    }
}

impl History {
    /// Starts a new sample if the last one is at least [`EVERY`] old; else the last
    /// one becomes `sample`'s values if its working set is higher: each sample is the
    /// highest of its second, so a life shorter than a second still shows its peak.
    pub fn offer(&mut self, now: Instant, sample: Sample) {
        if self.last.is_some_and(|t| now.duration_since(t) < EVERY) {
            if let Some(last) = self.ring.back_mut()
                && kib(sample.working_set_bytes) > last.working_set_kib
            {
                // What this poll did not read (processes, PSI) stays as first read.
                let mut p = Packed { at_unix_ms: last.at_unix_ms, ..Packed::pack(&sample) };
                if sample.top[0].is_none() {
                    p.top = last.top;
                }
                if sample.fd_count.is_none() {
                    p.fd_count = last.fd_count;
                }
                if sample.pressure_some_avg10.is_none() {
                    p.pressure_centi = last.pressure_centi;
                }
                *last = p;
            }
            return;
        }
        if self.ring.len() == CAPACITY {
            self.ring.pop_front();
        }
        self.ring.push_back(Packed::pack(&sample));
        self.last = Some(now);
    }

    /// Whether the next offer starts a new sample.
    pub fn due(&self, now: Instant) -> bool {
        self.last.is_none_or(|t| now.duration_since(t) >= EVERY)
    }

    /// When the last sample was kept.
    pub fn last_sampled(&self) -> Option<Instant> {
        self.last
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The bytes the ring holds, allocated capacity included.
    pub fn heap_bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<Packed>()
    }

    pub fn to_proto(&self) -> Vec<v1::MemorySample> {
        self.ring.iter().map(|p| p.to_proto()).collect()
    }

    /// At most `points` samples, each the one with the highest working set of its
    /// slice of the ring (a peak is never averaged away), oldest first.
    pub fn trend(&self, points: usize) -> Vec<v1::MemorySample> {
        let (len, per) = (self.ring.len(), self.ring.len().div_ceil(points.max(1)).max(1));
        (0..len)
            .step_by(per)
            .filter_map(|i| self.ring.range(i..(i + per).min(len)).max_by_key(|p| p.working_set_kib))
            .map(|p| p.to_proto())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_at_a_fast_poll_stays_within_its_bound_and_keeps_the_last_ten_minutes() {
        let t0 = Instant::now();
        let mut h = History::default();
        let bound = h.heap_bytes();
        assert!(bound <= 34 * 1024, "{bound}");
        // An hour polled every 20 ms (the watcher's fastest).
        for i in 0..(3600 * 50) {
            let at = t0 + Duration::from_millis(20 * i);
            h.offer(
                at,
                Sample {
                    at_unix_ms: (20 * i) as i64,
                    working_set_bytes: i << 10,
                    top: [Some((7, 1 << 20)), None, None],
                    fd_count: Some(9),
                    ..Default::default()
                },
            );
            assert!(h.heap_bytes() <= bound, "grew at sample {i}");
        }
        assert_eq!(h.len(), CAPACITY);
        let p = h.to_proto();
        assert_eq!(p.last().unwrap().at_unix_ms, 3_600_000 - 1000, "the newest kept, one a second");
        assert_eq!(p[0].at_unix_ms, 3_600_000 - 600_000, "ten minutes back");
        assert!(p.windows(2).all(|w| w[1].at_unix_ms - w[0].at_unix_ms == 1000));
        // Each sample is the highest of its second (the working set here is the index).
        assert_eq!(p.last().unwrap().working_set_bytes, (3600 * 50 - 1) << 10);
        assert_eq!(p[0].top, [v1::ProcessRss { pid: 7, rss_bytes: 1 << 20 }]);
        assert_eq!((p[0].fd_count, p[0].anon_bytes, p[0].pressure_some_avg10), (Some(9), None, None));
        let trend = h.trend(60);
        assert_eq!(trend.len(), 60);
        assert_eq!(trend.last().unwrap().working_set_bytes, (3600 * 50 - 1) << 10, "the slice's peak");
    }

    #[test]
    fn packing_keeps_what_was_read_and_what_was_not() {
        let s = Sample {
            at_unix_ms: 5,
            working_set_bytes: 3 << 30,
            anon_bytes: Some(1 << 30),
            file_bytes: Some(0),
            top: [Some((10, 2 << 30)), Some((11, 4096)), None],
            fd_count: None,
            pressure_some_avg10: Some(12.34),
        };
        let p = Packed::pack(&s).to_proto();
        assert_eq!((p.working_set_bytes, p.anon_bytes, p.file_bytes), (3 << 30, Some(1 << 30), Some(0)));
        assert_eq!(p.top.iter().map(|t| (t.pid, t.rss_bytes)).collect::<Vec<_>>(), [(10, 2 << 30), (11, 4096)]);
        assert_eq!(p.fd_count, None);
        assert!((p.pressure_some_avg10.unwrap() - 12.34).abs() < 0.01);
    }
}
