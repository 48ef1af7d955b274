//! The thread pool kept warm through a solver's or a training run's serial steps. A likelihood
//! solve, a sampler or a training run makes hundreds of short parallel regions (an NFE of 1000
//! points takes about 2 ms, a batch-512 training step about 1 ms, an EM step's noise draw far
//! less), and between them the pool's threads fall asleep: on this project's VM a sleeping thread
//! starts its share 50–250 µs late, up to a tenth of the region. `run_all` runs one region and
//! waits for it the same way.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

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
                spin_while(|| running.load(Ordering::Acquire), rayon::yield_now);
            });
        }
        // stops the spinners however `f` ends, a panic included (the scope waits for them)
        let _done = Release(running);
        f()
    })
}

/// `warm(f)` where `on` (a CPU run), plain `f()` otherwise (a GPU run's host thread mostly
/// waits on the device: spinners would only burn cores).
pub fn warm_if<R: Send>(on: bool, f: impl FnOnce() -> R + Send) -> R {
    if on {
        warm(f)
    } else {
        f()
    }
}

/// Runs every job, the first on the pool thread that runs this region and the others wherever
/// the pool takes them, and waits for them by spinning, not sleeping: rayon's join sleeps once
/// its short spin ends, and the thread that finished first would then start the next region a
/// wake-up late. A single job runs on the calling thread.
pub fn run_all<R: Send, F: FnOnce() -> R + Send>(jobs: Vec<F>) -> Vec<R> {
    if jobs.len() < 2 {
        return jobs.into_iter().map(|f| f()).collect();
    }
    let mut out: Vec<Option<R>> = jobs.iter().map(|_| None).collect();
    let left = &AtomicUsize::new(jobs.len() - 1);
    rayon::scope(|s| {
        let mut todo = jobs.into_iter().zip(out.iter_mut());
        let first = todo.next();
        for (job, slot) in todo {
            s.spawn(move |_| {
                // counted down even if the job panics (the scope then re-raises the panic)
                let _done = CountDown(left);
                *slot = Some(job());
            });
        }
        if let Some((job, slot)) = first {
            *slot = Some(job());
        }
        // this region's own jobs only (`yield_local`): a foreign one, such as a warm scope's
        // spinner, would not return until its own scope ends
        spin_while(|| left.load(Ordering::Acquire) > 0, rayon::yield_local);
    });
    // every slot is filled: a panicking job's panic was re-raised by the scope
    out.into_iter().map(|r| r.expect("every job ran")).collect()
}

/// `f(i, chunk)` on each `len`-value chunk of `v` (chunk i starts at i·len) as one `run_all`
/// region.
pub fn for_each_chunk<T: Send>(v: &mut [T], len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let f = &f;
    let jobs = v
        .chunks_mut(len)
        .enumerate()
        .map(|(i, chunk)| move || f(i, chunk))
        .collect();
    run_all(jobs);
}

/// `f(worker, i, item)` on every item, each claimed in order by whichever worker is free next
/// (a worker is per-thread state, such as a workspace): a thread slowed by the shared machine
/// claims fewer items, where a fixed share per thread would leave the others waiting on it.
/// At most one job per worker runs at a time; results come in item order.
pub fn run_claimed<W: Send, T: Send, R: Send>(
    workers: &mut [W],
    items: Vec<T>,
    f: impl Fn(&mut W, usize, T) -> R + Sync,
) -> Vec<R> {
    let n = items.len();
    assert!(
        n == 0 || !workers.is_empty(),
        "items but no workers to run them"
    );
    let queue = Mutex::new(items.into_iter().enumerate());
    let (queue, f) = (&queue, &f);
    let jobs = workers
        .iter_mut()
        .take(n)
        .map(|w| {
            move || {
                let mut done = Vec::new();
                loop {
                    // the guard is dropped before f runs: a `while let` would hold it throughout
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((i, item)) = next else { break };
                    done.push((i, f(w, i, item)));
                }
                done
            }
        })
        .collect();
    let mut out: Vec<(usize, R)> = run_all(jobs).into_iter().flatten().collect();
    out.sort_unstable_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Spins while `busy()`, running pool work through `take` between checks; after a long idle
/// spell it gives the core to the OS between checks (the thread it waits for may need it).
fn spin_while(busy: impl Fn() -> bool, take: fn() -> Option<rayon::Yield>) {
    let mut idle = 0u32;
    while busy() {
        if take() == Some(rayon::Yield::Executed) {
            idle = 0;
        } else if idle < 1 << 12 {
            idle += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Counts a job as done when dropped.
struct CountDown<'a>(&'a AtomicUsize);

impl Drop for CountDown<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// Clears a flag when dropped.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Makes candle's element-wise ops run on the calling thread (`CANDLE_NUM_THREADS=1`) unless the
/// user set CANDLE_NUM_THREADS; call it before any candle op, while the process has one thread.
/// For networks that split their heavy work over the cores themselves (the EGNN's fused edges,
/// with rayon): candle's own pool would spin on the second core against them (an EGNN DW-4
/// forward and backward on 2 cores: 3.3× slower with it).
pub fn serial_candle_ops() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
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

    /// run_claimed hands every item to exactly one worker, returns the values in item order
    /// (inside and outside a warm scope) and passes a panic on.
    #[test]
    fn run_claimed_runs_each_item_once_in_order() {
        let claimed = |workers: &mut [usize]| {
            let items: Vec<u64> = (0..50).collect();
            super::run_claimed(workers, items, |count, i, x| {
                *count += 1;
                (i as u64, x * x)
            })
        };
        let want: Vec<(u64, u64)> = (0..50u64).map(|i| (i, i * i)).collect();
        for warm in [false, true] {
            let mut workers = vec![0usize; 3];
            let got = if warm {
                super::warm(|| claimed(&mut workers))
            } else {
                claimed(&mut workers)
            };
            assert_eq!(got, want);
            assert_eq!(workers.iter().sum::<usize>(), 50);
        }
        assert!(super::run_claimed(&mut [(); 2], Vec::<u8>::new(), |_, _, x| x).is_empty());
        let caught = std::panic::catch_unwind(|| {
            super::run_claimed(&mut [(); 2], (0..8).collect(), |_, i, _: i32| {
                assert!(i != 5, "item 5 fails");
            })
        });
        assert!(caught.is_err());
    }

    /// run_all returns the jobs' values in order, inside and outside a warm scope, with more
    /// jobs than threads and with none; a panicking job's panic reaches the caller (no job left
    /// counted as running, so nothing spins forever).
    #[test]
    fn run_all_returns_values_in_order_and_passes_panics_on() {
        let jobs = |n: u64| {
            (0..n)
                .map(|i| move || (0..=i).sum::<u64>())
                .collect::<Vec<_>>()
        };
        let want: Vec<u64> = (0..9u64).map(|i| i * (i + 1) / 2).collect();
        assert_eq!(super::run_all(jobs(9)), want);
        assert_eq!(super::warm(|| super::run_all(jobs(9))), want);
        assert!(super::run_all(jobs(0)).is_empty());
        let panicking: Vec<Box<dyn FnOnce() -> u8 + Send>> = vec![
            Box::new(|| 1),
            Box::new(|| panic!("job 1 fails")),
            Box::new(|| 3),
        ];
        let caught =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| super::run_all(panicking)));
        assert!(caught.is_err());
    }
}
