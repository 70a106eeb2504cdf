//! The minutes before: per container, a ring of its memory at [`EVERY`] resolution
//! over the last [`SPAN`], carried by every report. Fixed-size samples in a
//! fixed-capacity ring: at most [`CAPACITY`] × size_of::<Sample>() bytes a container
//! (24 KiB), whatever the poll rate or the container's life.

use osl_proto::v1;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub const EVERY: Duration = Duration::from_secs(1);
pub const SPAN: Duration = Duration::from_secs(600);
pub const CAPACITY: usize = (SPAN.as_secs() / EVERY.as_secs()) as usize;

/// One sample, as read by the poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_unix_ms: i64,
    pub working_set_bytes: u64,
    pub anon_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct History {
    ring: VecDeque<Sample>,
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
                && sample.working_set_bytes > last.working_set_bytes
            {
                *last = Sample { at_unix_ms: last.at_unix_ms, ..sample };
            }
            return;
        }
        if self.ring.len() == CAPACITY {
            self.ring.pop_front();
        }
        self.ring.push_back(sample);
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
        self.ring.capacity() * std::mem::size_of::<Sample>()
    }

    pub fn to_proto(&self) -> Vec<v1::MemorySample> {
        self.ring
            .iter()
            .map(|s| v1::MemorySample {
                at_unix_ms: s.at_unix_ms,
                working_set_bytes: s.working_set_bytes,
                anon_bytes: s.anon_bytes,
                file_bytes: s.file_bytes,
            })
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
        assert!(bound <= 28 * 1024 + 256, "{bound}");
        // An hour polled every 20 ms (the watcher's fastest).
        for i in 0..(3600 * 50) {
            let at = t0 + Duration::from_millis(20 * i);
            h.offer(
                at,
                Sample { at_unix_ms: (20 * i) as i64, working_set_bytes: i, anon_bytes: None, file_bytes: None },
            );
            assert!(h.heap_bytes() <= bound, "grew at sample {i}");
        }
        assert_eq!(h.len(), CAPACITY);
        let p = h.to_proto();
        assert_eq!(p.last().unwrap().at_unix_ms, 3_600_000 - 1000, "the newest kept, one a second");
        assert_eq!(p[0].at_unix_ms, 3_600_000 - 600_000, "ten minutes back");
        assert!(p.windows(2).all(|w| w[1].at_unix_ms - w[0].at_unix_ms == 1000));
        // Each sample is the highest of its second (the working set here is the index).
        assert_eq!(p.last().unwrap().working_set_bytes, 3600 * 50 - 1);
    }
}
