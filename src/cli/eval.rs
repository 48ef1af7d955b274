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
    /// data units): the samples' cross-entropy E_q[−log p] beside the entropy, mode fractions, and
    /// the kernel Stein discrepancy against the target's exact score.
    #[arg(long)]
    target: Option<String>,
    /// A particle potential (dw4, lj13): the benchmark's metrics against --reference (W2 of
    /// centred coordinates, energy W2, interatomic-distance TV and W2, each with its floor).
    #[arg(long, requires = "reference")]
    potential: Option<String>,
    /// Temperature kT of --potential (default: its own).
    #[arg(long, requires = "potential")]
    kt: Option<f64>,
    /// With --potential, also write energy and interatomic-distance histograms (PNG) into this folder.
    #[arg(long, requires = "potential")]
    figures: Option<PathBuf>,
    /// Exact draws for the target's entropy.
    #[arg(long, default_value_t = 100_000)]
    entropy_draws: usize,
    /// Use the first min(n, m, this) points of each set (exact W2 costs O(k³)); a reference of
    /// at least 2k points also gives each metric's floor between two halves of it. KSD uses the
    /// first min(n, this) samples.
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
    // each number again with its definition, sizes and floor; the flat keys stay for older readers
    let mut described = serde_json::Map::new();
    if let Some(reference) = &a.reference {
        let r = data::read_points(reference)?;
        r.check_finite(&reference.display().to_string())?;
        let m = metrics::against_reference(&x, &r, a.max_points, a.projections, a.seed)?;
        for (name, entry) in m.entries() {
            described.insert(name.into(), serde_json::to_value(entry)?);
        }
        // the reference metrics at the top level, as before there was a target
        if let serde_json::Value::Object(fields) = serde_json::to_value(&m.metrics)? {
            report.extend(fields);
        }
        report.insert("n_samples".into(), m.n_samples.into());
        report.insert("n_reference".into(), m.n_reference.into());
        report.insert("floor".into(), serde_json::to_value(&m.floor)?);
        report.insert("floor_note".into(), m.floor_note.into());
    }
    if let Some(name) = &a.target {
        let target = GaussianMixture::named(name)?;
        let m = metrics::against_density(&x, &target, a.entropy_draws, a.max_points, a.seed)?;
        for (name, entry) in m.entries() {
            described.insert(name.into(), serde_json::to_value(entry)?);
        }
        report.insert(
            "target".into(),
            serde_json::json!({"name": name, "metrics": m}),
        );
    }
    if let (Some(name), Some(reference)) = (&a.potential, &a.reference) {
        let p = tweedie::target::potential::named(name, a.kt)?;
        let r = data::read_points(reference)?;
        let m = metrics::boltzmann::particle_metrics(&x, &r, p.as_ref(), a.max_points)?;
        if let Some(dir) = &a.figures {
            particle_figures(dir, name, &x, &r, p.as_ref())?;
        }
        report.insert(
            "particles".into(),
            serde_json::json!({"potential": name, "metrics": m}),
        );
    }
    report.insert("metrics".into(), described.into());
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(p) = a.json {
        tweedie::io::write_atomic_bytes(&p, text.as_bytes())?;
    }
    Ok(())
}

/// Energy and interatomic-distance histograms of samples over the reference, into `dir`.
fn particle_figures(
    dir: &std::path::Path,
    name: &str,
    x: &tweedie::data::Points,
    r: &tweedie::data::Points,
    p: &dyn tweedie::target::Potential,
) -> Result<()> {
    tweedie::experiment::create_dir(dir)?;
    let k = p.particles().map_or(1, |(_, k)| k);
    let (ex, er) = (p.energy(&x.data)?, p.energy(&r.data)?);
    let (dx, dr) = (x.interatomic_distances(k), r.interatomic_distances(k));
    for (file, label, s, rf) in [
        ("energy.png", "energy U(x)", &ex, &er),
        ("distances.png", "interatomic distance", &dx, &dr),
    ] {
        // the reference's range, as the benchmark's histograms
        let lo = rf.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rf.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let bins = tweedie::plot::Histogram::new(100, Some(lo..hi), &[])?;
        tweedie::plot::histograms(
            &dir.join(file),
            &format!("{name}: {label}"),
            label,
            &[("reference", rf.as_slice()), ("samples", s.as_slice())],
            &bins,
        )?;
    }
    Ok(())
}
