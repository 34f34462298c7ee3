//! The one way the suite runs work in parallel: rayon's pool, sized once in
//! [`crate::run::prepare_process`], behind three shapes of work.
//!
//! - [`map`] and [`map_owned`]: independent items, with a per-worker state (a directory
//!   handle) or taken by value; results in input order (hashing, scanning);
//! - [`workers`]: `n` workers that take work from a shared queue themselves, for work
//!   with state that must outlive one item (copies flushed a batch at a time, runs of
//!   files of one directory);
//! - [`join`]: two tasks at once (both replicas of a two-way sync).
//!
//! Nothing here touches a disk.

use rayon::prelude::*;

/// The number of worker threads for scanning, hashing and copying: the cores this
/// process may use, at most 8 (beyond that a pass waits on the disk, and every thread
/// adds a malloc arena).
///
/// Asked once: `available_parallelism` reads the affinity mask and the cgroup's CPU
/// quota (a dozen system calls).
pub fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8)
    })
}

/// Sizes rayon's global pool to [`threads`]. Called once, early in `main`; a pool
/// already built (by a test harness) is kept as it is.
pub fn init() {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads())
        .thread_name(|i| format!("worker-{i}"))
        .build_global();
}

/// `f` over `items` in parallel, each worker with its own state from `init` (made again
/// for each share of the items rayon hands out); the results in the items' order.
pub fn map<T, S, R>(
    items: &[T],
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, &T) -> R + Sync + Send,
) -> Vec<R>
where
    T: Sync,
    R: Send,
{
    if items.len() <= 1 {
        let mut state = init();
        return items.iter().map(|t| f(&mut state, t)).collect();
    }
    items.par_iter().map_init(&init, &f).collect()
}

/// `f` over `items`, taken by value, in parallel; the results in the items' order.
pub fn map_owned<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync + Send) -> Vec<R> {
    if items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    items.into_par_iter().map(f).collect()
}

/// Runs `n` workers (at least one, at most [`threads`]) in rayon's pool and returns
/// what each returned. The workers share their work themselves (an atomic counter, a
/// locked queue): a worker that starts late finds less or nothing left, never the same
/// item twice.
pub fn workers<R: Send>(n: usize, worker: impl Fn() -> R + Sync + Send) -> Vec<R> {
    let n = n.clamp(1, threads());
    if n == 1 {
        return vec![worker()];
    }
    (0..n).into_par_iter().map(|_| worker()).collect()
}

/// `a` and `b` at once; returns both results.
pub fn join<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    rayon::join(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn map_keeps_the_order_of_the_items() {
        let items: Vec<u32> = (0..10_000).collect();
        let out = map(&items, || 0u32, |_, x| x * 2);
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
    }

    #[test]
    fn workers_take_every_item_once() {
        let next = AtomicUsize::new(0);
        let total = 5_000;
        let parts = workers(threads() + 3, || {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return mine;
                }
                mine.push(i);
            }
        });
        let mut all: Vec<usize> = parts.into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(all, (0..total).collect::<Vec<_>>());
    }
}
