//! The `tweedie` command line: a thin layer over the library, one file per command.

mod cli;

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
