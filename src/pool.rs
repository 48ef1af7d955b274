//! The thread pool kept warm through a solver's or a training run's serial steps. A likelihood
//! solve, a sampler or a training run makes hundreds of short parallel regions (an NFE of 1000
//! points takes about 2 ms, a batch-512 training step about 1 ms, an EM step's noise draw far less), and between them the pool's threads fall asleep: on this project's VM a
//! sleeping thread starts its share 50–250 µs late, up to a tenth of the region.

use std::sync::atomic::{AtomicBool, Ordering};

/// One warm scope at a time: spinners of two concurrent scopes could each hold up the other's
/// body (a thread spinning for one scope above the suspended body of the other).
static IN_USE: AtomicBool = AtomicBool::new(false);

/// Runs `f` on a pool thread while every other pool thread spins, taking each parallel region's
/// work as soon as it is pushed (`rayon::yield_now`). Falls back to plain `f()` inside the pool,
/// on one thread, or while another warm scope runs.
pub fn warm<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let threads = rayon::current_num_threads();
    if threads < 2
        || rayon::current_thread_index().is_some()
        || IN_USE.swap(true, Ordering::Acquire)
    {
        return f();
    }
    let _free = Release(&IN_USE);
    let running = &AtomicBool::new(true);
    rayon::scope(|s| {
        let body = rayon::current_thread_index();
        for _ in 1..threads {
            s.spawn(move |_| {
                // the body's own thread may pop a spinner while it waits in a join: spinning
                // there would bury the body under a loop that only the body can stop
                if rayon::current_thread_index() == body {
                    return;
                }
                while running.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        // stops the spinners however `f` ends, a panic included (the scope waits for them)
        let _done = Release(running);
        f()
    })
}

/// Clears a flag when dropped.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use rayon::prelude::*;

    /// A warm scope returns f's value, nests (the inner one runs plainly) and lets three
    /// concurrent callers, each running many parallel regions, all finish.
    #[test]
    fn warm_runs_nested_and_concurrent_bodies() {
        let work = || {
            (0..200u64)
                .map(|k| {
                    (0..10_000u64)
                        .into_par_iter()
                        .map(|i| (i * k) % 7)
                        .sum::<u64>()
                })
                .sum::<u64>()
        };
        let want = work();
        assert_eq!(super::warm(work), want);
        assert_eq!(super::warm(|| super::warm(work)), want);
        let got: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3).map(|_| s.spawn(|| super::warm(work))).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("worker"))
                .collect()
        });
        assert_eq!(got, vec![want; 3]);
    }
}
