//! `tweedie eval`: sample-set metrics against a reference set, or against a target's exact
//! density, as JSON.

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;
use tweedie::data;
use tweedie::metrics;
use tweedie::target::GaussianMixture;

#[derive(Parser)]
pub struct Args {
    /// Samples to judge (.npy or .csv, [n, d]).
    #[arg(long)]
    samples: PathBuf,
    /// Reference samples, e.g. fresh data (.npy or .csv, [m, d]): exact W2, sliced W2, MMD².
    #[arg(long, required_unless_present = "target")]
    reference: Option<PathBuf>,
    /// A target with an exact density (ncsn2, anisotropic3, anisotropic10, gmm40, 8gaussians; in
    /// data units): the samples' cross-entropy E_q[−log p] beside the entropy, and mode fractions.
    #[arg(long)]
    target: Option<String>,
    /// Exact draws for the target's entropy.
    #[arg(long, default_value_t = 100_000)]
    entropy_draws: usize,
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
    x.check_finite(&a.samples.display().to_string())?;
    let mut report = serde_json::Map::new();
    if let Some(reference) = &a.reference {
        let r = data::read_points(reference)?;
        r.check_finite(&reference.display().to_string())?;
        let m = metrics::compare(&x, &r, a.max_points, a.projections, a.seed)?;
        // the reference metrics at the top level, as before there was a target
        if let serde_json::Value::Object(fields) = serde_json::to_value(m)? {
            report.extend(fields);
        }
    }
    if let Some(name) = &a.target {
        let target = GaussianMixture::named(name)?;
        let m = metrics::against_density(&x, &target, a.entropy_draws, a.seed)?;
        report.insert(
            "target".into(),
            serde_json::json!({"name": name, "metrics": m}),
        );
    }
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(p) = a.json {
        tweedie::io::write_atomic_bytes(&p, text.as_bytes())?;
    }
    Ok(())
}
