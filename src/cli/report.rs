//! `tweedie report`: one self-contained HTML page of a run folder (config, training curve,
//! figures, metrics with their definitions, sample files).

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
pub struct Args {
    /// Run folder (of `tweedie train` or `tweedie demo`: has config.toml or metrics.jsonl).
    #[arg(long)]
    run: PathBuf,
    /// Where to write the page [default: RUN/report.html].
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let out = tweedie::report::write(&a.run, a.out.as_deref())?;
    println!("wrote {}", out.display());
    Ok(())
}
