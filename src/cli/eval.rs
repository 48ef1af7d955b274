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
    #[arg(long, required_unless_present_any = ["target", "classifier"])]
    reference: Option<PathBuf>,
    /// A classifier run (`tweedie classifier`) for image samples of its data: the share of
    /// class-conditional samples recognised as their class (beside the classifier's test
    /// accuracy) and the Fréchet distance to the test images in its feature space (beside the
    /// floor between two halves of the test images).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// With --classifier: the class each sample was drawn for (.npy of integers, one per
    /// sample). Default: SAMPLES.labels.npy, which `tweedie sample --class` writes.
    #[arg(long, requires = "classifier")]
    labels: Option<PathBuf>,
    /// With --classifier: the classes cycled over the samples instead of --labels, as `tweedie
    /// sample --class` assigns them (e.g. 0,1,2,3,4,5,6,7,8,9).
    #[arg(
        long,
        value_delimiter = ',',
        requires = "classifier",
        conflicts_with = "labels"
    )]
    classes: Option<Vec<u32>>,
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
    if let Some(dir) = &a.classifier {
        let (entries, images) = image_metrics(dir, &a, &x)?;
        described.extend(entries);
        report.insert("images".into(), images);
    }
    report.insert("metrics".into(), described.into());
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(p) = a.json {
        tweedie::io::write_atomic_bytes(&p, text.as_bytes())?;
    }
    Ok(())
}

/// The classifier's sample-quality metrics (named entries) and the details beside them.
fn image_metrics(
    dir: &std::path::Path,
    a: &Args,
    x: &tweedie::data::Points,
) -> Result<(
    serde_json::Map<String, serde_json::Value>,
    serde_json::Value,
)> {
    let model = tweedie::images::NoisyClassifier::load_run(dir, &candle_core::Device::Cpu)?;
    if model.config.data != tweedie::data::mnist::NAME {
        anyhow::bail!(
            "{}: a classifier of '{}' images; eval knows the test images of mnist only",
            dir.display(),
            model.config.data
        );
    }
    let labels = match (&a.classes, &a.labels) {
        (Some(c), _) if c.is_empty() => anyhow::bail!("--classes lists no class"),
        (Some(c), _) => tweedie::images::quality::cycled(c, x.n),
        (None, Some(path)) => data::read_labels(path)?,
        (None, None) => {
            let path = tweedie::images::quality::labels_beside(&a.samples);
            if !path.exists() {
                anyhow::bail!(
                    "{}: no labels beside the samples; give --labels L.npy or --classes 0,1,…",
                    path.display()
                );
            }
            data::read_labels(&path)?
        }
    };
    let (_, test) = data::mnist::split()?;
    let q = tweedie::images::quality::image_quality(&model, x, &labels, &test)?;
    let mut entries = serde_json::Map::new();
    for (name, m) in &q.metrics {
        entries.insert((*name).into(), serde_json::to_value(m)?);
    }
    let details = serde_json::json!({
        "classifier": dir.display().to_string(),
        "classifier_step": model.step,
        "features": q.features,
        "share_clipped": q.clipped,
        "per_class_accuracy": q.per_class_accuracy,
    });
    Ok((entries, details))
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
