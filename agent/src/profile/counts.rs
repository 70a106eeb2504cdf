//! What a syscall profile backend hands back: the same shape from ptrace and eBPF.
//! Times are wall-clock between syscall entry and exit (strace -w semantics).

/// Latency buckets: bucket `i` counts calls of `[2^i, 2^(i+1))` ns (bucket 0 also
/// 0 and 1 ns), the last one everything from 2^39 ns (9 min) up, as bcc's
/// `funclatency` and bpftrace's `hist()` bucket.
pub const BUCKETS: usize = 40;

/// The bucket of a duration.
pub fn bucket(ns: u64) -> usize {
    (63 - (ns | 1).leading_zeros() as usize).min(BUCKETS - 1)
}

/// Calls per latency bucket (see [`BUCKETS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram(pub [u64; BUCKETS]);

impl Default for Histogram {
    fn default() -> Self {
        Self([0; BUCKETS])
    }
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        self.0[bucket(ns)] += 1;
    }

    pub fn add(&mut self, other: &Histogram) {
        for (into, n) in self.0.iter_mut().zip(other.0) {
            *into += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The buckets up to the last non-empty one.
    pub fn used(&self) -> &[u64] {
        &self.0[..self.0.iter().rposition(|&n| n > 0).map_or(0, |i| i + 1)]
    }

    /// The upper bound of the bucket that holds quantile `q`, within [min, max].
    pub fn percentile(&self, q: f64, min: u64, max: u64) -> u64 {
        let total = self.total();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return ((1u64 << (i + 1)) - 1).clamp(min, max.max(min));
            }
        }
        max
    }
}

/// How many of the slowest calls a backend keeps (a request asks for up to this many).
pub const SLOWEST_KEPT: usize = 100;

/// A call shorter than this is never among the slowest: below it a call is not
/// slow, and the eBPF backend would write every call of a busy target to its ring.
pub const SLOW_FLOOR_NS: u64 = 1_000;

/// The fd under which the eBPF backend counts calls on fds once its map is full.
pub const OVERFLOW_FD: i32 = -2;

/// No fd: a syscall whose first argument is not one (or was not read).
pub const NO_FD: i32 = -1;

/// One thread's aggregate for one syscall number on one fd (or [`NO_FD`]).
/// `epoch` tells apart the files an fd number held in turn: it counts the fd's
/// closes during the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallCount {
    pub tgid: u32,
    pub tid: u32,
    pub nr: u32,
    pub fd: i32,
    pub epoch: u32,
    pub calls: u64,
    /// Returns in -4095..=-1, as strace counts errors.
    pub errors: u64,
    pub total_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    /// Calls timed: all of them, unless the backend sampled (then `total_ns` is scaled to
    /// all the calls, and `min_ns`, `max_ns` and `hist` are the timed calls').
    pub timed: u64,
    /// Timed calls per latency bucket.
    pub hist: Histogram,
}

impl Default for SyscallCount {
    fn default() -> Self {
        Self {
            tgid: 0,
            tid: 0,
            nr: 0,
            fd: NO_FD,
            epoch: 0,
            calls: 0,
            errors: 0,
            total_ns: 0,
            min_ns: 0,
            max_ns: 0,
            timed: 0,
            hist: Histogram::default(),
        }
    }
}

impl SyscallCount {
    /// Counts one call.
    pub fn record(&mut self, ret: i64, ns: u64) {
        self.min_ns = if self.calls == 0 { ns } else { self.min_ns.min(ns) };
        self.max_ns = self.max_ns.max(ns);
        self.calls += 1;
        self.timed += 1;
        self.total_ns += ns;
        self.hist.record(ns);
        if is_error(ret) {
            self.errors += 1;
        }
    }
}

pub fn is_error(ret: i64) -> bool {
    (-4095..=-1).contains(&ret)
}

/// How often one syscall failed with one errno (summed over threads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrnoCount {
    pub nr: u32,
    pub errno: u32,
    pub count: u64,
}

/// One call among the slowest of the profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlowCall {
    pub tgid: u32,
    pub tid: u32,
    pub nr: u32,
    pub fd: i32,
    pub epoch: u32,
    pub ret: i64,
    pub ns: u64,
    /// When it entered, from the start of the profile.
    pub offset_ns: u64,
}

/// What an fd of a process was while the profile saw it, e.g. `pipe:[123]`, a
/// path, or a TCP connection with its state (see [`super::targets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdName {
    pub tgid: u32,
    pub fd: i32,
    pub epoch: u32,
    /// None: closed before it could be read.
    pub kind: Option<crate::model::FdKind>,
    pub target: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub syscalls: Vec<SyscallCount>,
    pub errnos: Vec<ErrnoCount>,
    /// Events seen but not counted (e.g. a kernel map was full); 0 when exact.
    pub lost: u64,
    /// Calls counted whose errno or fd epoch could not be recorded (a map was full).
    pub detail_lost: u64,
    /// The slowest calls, slowest first.
    pub slowest: Vec<SlowCall>,
    /// Slow calls overwritten before they were read (the eBPF backend keeps a
    /// ring of candidates): the slowest list may miss some of these.
    pub slowest_missed: u64,
    pub names: Vec<FdName>,
    /// One call in this many was timed (per thread); 0 or 1: every call.
    pub time_one_in: u32,
}

/// The `n` slowest calls seen, kept as calls come (a min-heap on duration).
#[derive(Debug, Clone)]
pub struct Slowest {
    n: usize,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u64, SlowKey)>>,
}

/// A [`SlowCall`] ordered by duration, then by when it happened.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SlowKey(u32, u32, u32, i32, u32, i64);

impl Slowest {
    pub fn new(n: usize) -> Self {
        Self { n, heap: Default::default() }
    }

    /// A call must be longer than this to enter the list: [`SLOW_FLOOR_NS`] while
    /// the list is not full, then its shortest call.
    pub fn threshold(&self) -> u64 {
        let shortest = if self.heap.len() < self.n { 0 } else { self.heap.peek().map_or(0, |r| r.0.0) };
        shortest.max(SLOW_FLOOR_NS - 1)
    }

    pub fn offer(&mut self, c: SlowCall) {
        if self.n == 0 || c.ns <= self.threshold() {
            return;
        }
        let key = SlowKey(c.tgid, c.tid, c.nr, c.fd, c.epoch, c.ret);
        if self.heap.len() >= self.n {
            self.heap.pop();
        }
        self.heap.push(std::cmp::Reverse((c.ns, c.offset_ns, key)));
    }

    /// Slowest first.
    pub fn to_vec(&self) -> Vec<SlowCall> {
        let mut v: Vec<SlowCall> = self
            .heap
            .iter()
            .map(|std::cmp::Reverse((ns, offset_ns, SlowKey(tgid, tid, nr, fd, epoch, ret)))| SlowCall {
                tgid: *tgid,
                tid: *tid,
                nr: *nr,
                fd: *fd,
                epoch: *epoch,
                ret: *ret,
                ns: *ns,
                offset_ns: *offset_ns,
            })
            .collect();
        v.sort_by(|a, b| b.ns.cmp(&a.ns).then(a.offset_ns.cmp(&b.offset_ns)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two() {
        assert_eq!([0, 1, 2, 3, 4, 1023, 1024].map(bucket), [0, 0, 1, 1, 2, 9, 10]);
        assert_eq!(bucket(20_000_000), 24); // 20 ms: [16.8 ms, 33.6 ms)
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn slowest_keeps_the_n_longest() {
        let mut s = Slowest::new(3);
        assert_eq!(s.threshold(), 999);
        for (i, ns) in [5000, 1000, 9000, 7000, 3000, 9000, 999].into_iter().enumerate() {
            s.offer(SlowCall { ns, offset_ns: i as u64, ..Default::default() });
        }
        let v = s.to_vec();
        assert_eq!(v.iter().map(|c| (c.ns, c.offset_ns)).collect::<Vec<_>>(), [(9000, 2), (9000, 5), (7000, 3)]);
        assert_eq!(s.threshold(), 7000);
    }
}
