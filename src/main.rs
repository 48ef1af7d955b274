//! The `tweedie` command line: a thin layer over the library, one file per command.

mod cli;

// glibc's malloc maps and unmaps every activation of more than 128 KiB, page-faulting on each
// score evaluation; mimalloc reuses freed pages (training steps 2× faster here).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in v2's `mi_option_e`; libmimalloc-sys names
/// the options around it but not this one): milliseconds before freed memory goes back to the
/// OS, 10 by default, −1 for never.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped for reuse instead of returning it to the OS 10 ms after it is freed.
/// A U-Net step frees and reallocates megabytes of activations and scratch every few
/// milliseconds; returned, each one comes back as fresh pages that the kernel faults in and
/// zeroes (21,000 page faults in 8 tiny-U-Net training steps, 460 with this; 5% of the step).
/// The peak resident memory is the same; it is only not given back until the process ends.
pub fn keep_freed_pages() {
    // SAFETY: setting an option is a plain store mimalloc reads at its next purge.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

fn main() {
    // candle asks for its thread count on every matmul, reading RAYON_NUM_THREADS or else counting
    // CPUs through /proc and cgroup files each time; answer once, before any thread exists.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let args = match cli::parse() {
        Ok(args) => args,
        // --help and --version print as clap does
        Err(e) if !e.use_stderr() => e.exit(),
        // a usage error on one line, as every other error: clap's message and its tips
        Err(e) => {
            let text = e.render().to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("Usage:")
                        && !l.starts_with("For more information")
                })
                .collect();
            eprintln!("{}", parts.join("; "));
            std::process::exit(e.exit_code());
        }
    };
    if let Err(e) = cli::run(args) {
        // One line: the outermost context first, then its causes.
        let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("error: {}", msg.join(": ").replace('\n', "; "));
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    /// Option 15 is the purge delay: its default 10 (ms), its neighbours at theirs (the eager
    /// commit delay 1, NUMA nodes 0), and `keep_freed_pages` sets it to −1.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        use libmimalloc_sys::{
            mi_option_eager_commit_delay, mi_option_get, mi_option_use_numa_nodes,
        };
        // SAFETY: reading options has no preconditions.
        unsafe {
            assert_eq!(mi_option_get(mi_option_eager_commit_delay), 1);
            assert_eq!(mi_option_get(mi_option_use_numa_nodes), 0);
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                assert_eq!(mi_option_get(super::PURGE_DELAY), 10);
            }
            super::keep_freed_pages();
            assert_eq!(mi_option_get(super::PURGE_DELAY), -1);
        }
    }
}
