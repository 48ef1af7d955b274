//! The `tweedie` command line: a thin layer over the library, one file per command.

mod cli;

use clap::Parser;

// glibc's malloc maps and unmaps every activation of more than 128 KiB, page-faulting on each
// score evaluation; mimalloc reuses freed pages (training steps 2× faster here).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // candle asks for its thread count on every matmul, reading RAYON_NUM_THREADS or else counting
    // CPUs through /proc and cgroup files each time; answer once, before any thread exists.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        // One line: the outermost context first, then its causes.
        let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("error: {}", msg.join(": "));
        std::process::exit(1);
    }
}
