//! Reading /proc is many small blocking syscalls, mostly kernel time: spread over
//! the cores it takes a fraction of the wall time.

/// Threads at most, whatever the machine.
const MAX_THREADS: usize = 4;

/// `f` over `items` on up to one thread a core (at most [`MAX_THREADS`]), in order.
/// Fewer than `2 * min_per_thread` items are done on the calling thread.
pub fn map<T: Sync, R: Send>(items: &[T], min_per_thread: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads_for(items.len(), min_per_thread);
    if threads < 2 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let workers: Vec<_> =
            items.chunks(chunk).map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<R>>())).collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// `f` on each of `items`, in place, spread as [`map`] spreads its work.
pub fn for_each_mut<T: Send>(items: &mut [T], min_per_thread: usize, f: impl Fn(&mut T) + Sync) {
    let threads = threads_for(items.len(), min_per_thread);
    if threads < 2 {
        items.iter_mut().for_each(&f);
        return;
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        for part in items.chunks_mut(chunk) {
            s.spawn(move || part.iter_mut().for_each(f));
        }
    });
}

/// Threads for `n` items: one a core, at most [`MAX_THREADS`]; 1 below `2 * min_per_thread`.
fn threads_for(n: usize, min_per_thread: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()).min(MAX_THREADS);
    if n < 2 * min_per_thread.max(1) { 1 } else { cores }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order_at_any_size() {
        for n in [0, 1, 5, 100, 1001] {
            let items: Vec<usize> = (0..n).collect();
            assert_eq!(super::map(&items, 8, |x| x * 2), items.iter().map(|x| x * 2).collect::<Vec<_>>());
            let mut doubled = items.clone();
            super::for_each_mut(&mut doubled, 8, |x| *x *= 2);
            assert_eq!(doubled, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        }
    }
}
