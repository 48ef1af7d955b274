//! `tweedie eval`: sample-set metrics against a reference set, as JSON.

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;
use tweedie::data;
use tweedie::metrics;

#[derive(Parser)]
pub struct Args {
    /// Samples to judge (.npy or .csv, [n, d]).
    #[arg(long)]
    samples: PathBuf,
    /// Reference samples, e.g. fresh data (.npy or .csv, [m, d]).
    #[arg(long)]
    reference: PathBuf,
    /// Use the first min(n, m, this) points of each set (exact W2 costs O(k³)).
    #[arg(long, default_value_t = 2000)]
    max_points: usize,
    /// Random projections for the sliced W2.
    #[arg(long, default_value_t = 1000)]
    projections: usize,
    /// Seed of the projections.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if let Some(p) = &a.json {
        tweedie::io::check_parent(p)?;
    }
    let x = data::read_points(&a.samples)?;
    let r = data::read_points(&a.reference)?;
    x.check_finite(&a.samples.display().to_string())?;
    r.check_finite(&a.reference.display().to_string())?;
    let report = metrics::compare(&x, &r, a.max_points, a.projections, a.seed)?;
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(p) = a.json {
        tweedie::io::write_atomic_bytes(&p, text.as_bytes())?;
    }
    Ok(())
}
