//! `tweedie demo`: train on a 2-D toy in about a minute, sample with the reverse SDE and the
//! probability-flow ODE, and write samples, figures and metrics into one folder.

use anyhow::{Context, Result};
use clap::Parser;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::PathBuf;
use tweedie::config::RunConfig;
use tweedie::data::{self, Points};
use tweedie::metrics;
use tweedie::plot;
use tweedie::sample::grid::Grid;
use tweedie::sample::{self, Options, Plan, Trace};
use tweedie::train::{self, TrainOptions, CHECKPOINT};

#[derive(Parser)]
pub struct Args {
    /// Toy data set: checkerboard, 8gaussians, swissroll, moons, circles, pinwheel, 2spirals, ncsn2, gmm40.
    #[arg(long, default_value = "checkerboard")]
    dataset: String,
    /// Output folder.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Training steps (the default recipe: EDM's preconditioning, DSM with the importance-sampled
    /// likelihood weighting, batch 2048, Adam 2e-3 with cosine decay, EMA 0.9999, VP) on a 3×128 MLP.
    #[arg(long, default_value_t = 30_000)]
    steps: usize,
    /// Samples drawn, and size of each fresh data set they are compared with.
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Seed of training and sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: Args) -> Result<()> {
    let device = candle_core::Device::Cpu;
    let mut cfg = RunConfig::default();
    cfg.data.source = a.dataset.clone();
    if a.dataset == "gmm40" {
        cfg.data.scale = 50.0;
    }
    cfg.train.steps = a.steps;
    cfg.train.seed = a.seed;
    // the default recipe (docs/experiments/recipes.md) on a 3×128 MLP rather than its 4×256, so
    // that the demo takes about a minute on 2 cores
    cfg.model.width = 128;
    cfg.model.depth = 3;
    cfg.train.log_every = 250;
    cfg.train.checkpoint_every = a.steps.max(1);
    // every setting checked before the first line of progress
    cfg.validate()?;
    data::toy(&a.dataset, 1, &mut ChaCha8Rng::seed_from_u64(0))?;
    anyhow::ensure!(
        a.n >= 2,
        "--n must be at least 2 (samples compared with as many data points)"
    );
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("{}: cannot create the output folder", a.out.display()))?;
    eprintln!(
        "[1/3] training a 3×128 SiLU score MLP on {} for {} steps (VP, EDM preconditioning, DSM with the importance-sampled likelihood weighting, batch 2048) -> {}",
        a.dataset,
        a.steps,
        a.out.display()
    );
    let bar = tweedie::progress::bar(cfg.train.steps, 0, a.quiet);
    let summary = train::train(
        &cfg,
        &a.out,
        &TrainOptions {
            callback: Some(tweedie::progress::train_callback(bar.clone())),
            // the demo's folder is its own: a rerun replaces it
            overwrite: true,
            ..Default::default()
        },
        &device,
    )
    .inspect_err(|_| bar.abandon())?;
    bar.finish();

    eprintln!(
        "[2/3] sampling {} points (reverse SDE, Euler–Maruyama 1000 steps; PF-ODE, UniPC 20 steps; each with a final Tweedie denoising step)",
        a.n
    );
    let (net, _) = train::load_net(&a.out.join(CHECKPOINT), true, &device)?;
    let mut panels: Vec<(String, Points)> = Vec::new();
    let reference = data::toy(&a.dataset, a.n, &mut ChaCha8Rng::seed_from_u64(1_000_003))?;
    let second = data::toy(&a.dataset, a.n, &mut ChaCha8Rng::seed_from_u64(2_000_003))?;
    panels.push((format!("data ({} points)", a.n), second.clone()));
    let mut results = serde_json::Map::new();
    for (sampler, steps) in [("em", 1000), ("unipc", 20)] {
        let mut rng = ChaCha8Rng::seed_from_u64(a.seed + 7);
        let bar = tweedie::progress::bar(steps, 0, a.quiet);
        let mut trace = Trace {
            callback: Some(tweedie::progress::sample_callback(bar.clone(), 0)),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let plan = Plan {
            sampler,
            grid: Grid::parse("auto", sampler)?,
            steps,
            options: Options::default(),
            // as `tweedie sample --run` does
            denoise_final: true,
        };
        let x = sample::generate(
            &net,
            net.process(),
            &plan,
            a.n,
            &mut rng,
            &device,
            &mut trace,
        )?;
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let pts = Points::from_f32(a.n, 2, &v)?.scaled(cfg.data.scale);
        data::write_npy(&a.out.join(format!("samples_{sampler}.npy")), &pts, false)?;
        let m = metrics::compare(&pts, &reference, a.n, 1000, 0)?;
        results.insert(
            sampler.into(),
            json!({"steps": steps, "nfe": trace.nfe, "seconds": secs, "metrics": m}),
        );
        panels.push((format!("{sampler}, NFE {}", trace.nfe), pts));
    }

    eprintln!(
        "[3/3] metrics against {} fresh data points, and the data-vs-data floor",
        a.n
    );
    let floor = metrics::compare(&second, &reference, a.n, 1000, 0)?;
    let support = Support::new(&a.dataset, a.n)?;
    let data_off = support.off(&second)?;
    let mut worst_off: f64 = 0.0;
    for (name, pts) in panels.iter().skip(1) {
        let sampler = name.split(',').next().unwrap_or_default();
        let off = support.off(pts)?;
        worst_off = worst_off.max(off);
        if let Some(r) = results.get_mut(sampler) {
            r["off_support_share"] = json!(off);
        }
    }
    let w2 = |s: &str| results[s]["metrics"]["w2"].as_f64().unwrap_or(f64::NAN);
    let ratio = w2("em").max(w2("unipc")) / floor.w2;
    let pass = worst_off <= OFF_SUPPORT_LIMIT && ratio <= 1.5;
    let verdict = if pass { "PASS" } else { "FAIL" };
    let report = json!({
        "dataset": a.dataset,
        "train": summary,
        "samplers": results,
        "floor_data_vs_data": floor,
        "off_support_share_of_fresh_data": data_off,
        "off_support_definition": support.definition(),
        "w2_ratio_worst_sampler_to_floor": ratio,
        "criterion": format!("both samplers: off-support share <= {OFF_SUPPORT_LIMIT} (the picture's defect: samples where the data has none), and exact W2 (not squared) to {n} fresh data points within 1.5x the W2 between two fresh data sets of {n} points", n = a.n),
        "verdict": verdict,
    });
    let metrics_path = a.out.join("metrics.json");
    tweedie::io::write_atomic_bytes(
        &metrics_path,
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )
    .with_context(|| format!("{}: cannot write", metrics_path.display()))?;
    let refs: Vec<(&str, &Points)> = panels.iter().map(|(t, p)| (t.as_str(), p)).collect();
    let lim = 4.4;
    plot::scatter_panels(
        &a.out.join("samples.png"),
        &refs,
        (a.dataset == "checkerboard").then_some([-lim, lim, -lim, lim]),
    )?;
    super::plot::write_curves(&a.out, &a.out.join("loss.png"))?;
    let score_png = a.out.join("score.png");
    super::plot::write_score_field(&a.out, 0.02, &score_png)?;
    let report = tweedie::report::write(&a.out, None)?;

    println!(
        "tweedie demo on {} ({} training steps, {:.1} s, {:.0} steps/s, final loss {:.4})",
        a.dataset,
        summary.steps,
        summary.wall_seconds,
        summary.steps_per_second,
        summary.final_loss
    );
    println!(
        "against {} fresh data points (data units); off support: {}",
        a.n,
        support.definition()
    );
    println!(
        "  data vs data (floor)   off support {:>5.1}%   W2 = {:.4}",
        100.0 * data_off,
        floor.w2
    );
    for s in ["em", "unipc"] {
        println!(
            "  {:<5} NFE {:<5}        off support {:>5.1}%   W2 = {:.4}  sliced W2 = {:.4}  MMD² = {:.2e}",
            s,
            results[s]["nfe"],
            100.0 * results[s]["off_support_share"].as_f64().unwrap_or(f64::NAN),
            w2(s),
            results[s]["metrics"]["sliced_w2"]
                .as_f64()
                .unwrap_or(f64::NAN),
            results[s]["metrics"]["mmd2"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!(
        "worst off-support share {:.1}% (target <= {:.0}%), worst W2 / floor = {ratio:.3} (target <= 1.5): {verdict}",
        100.0 * worst_off,
        100.0 * OFF_SUPPORT_LIMIT
    );
    println!("wrote {}/{{samples_em.npy, samples_unipc.npy, samples.png, score.png, loss.png, metrics.json, metrics.jsonl, checkpoint.safetensors}}", a.out.display());
    println!("report: {}", report.display());
    Ok(())
}

/// The largest share of samples off the data's support that the demo accepts.
const OFF_SUPPORT_LIMIT: f64 = 0.08;

/// Judges whether points lie on a toy's support: by its exact log-density where known (the
/// checkerboard's is −∞ off its squares), else by the distance to the nearest of many fresh data
/// points against the 99th percentile of that distance for fresh data.
struct Support {
    name: String,
    exact: bool,
    dense: Points,
    threshold: f64,
}

impl Support {
    fn new(name: &str, n: usize) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(3_000_017);
        let dense = data::toy(name, 20 * n.max(1000), &mut rng)?;
        let calib = data::toy(name, n.max(1000), &mut rng)?;
        let exact = data::toy_log_prob(name, &calib).is_some();
        let mut s = Support {
            name: name.into(),
            exact,
            dense,
            threshold: 0.0,
        };
        let scores = s.scores(&calib)?;
        // bounded support: every fresh point is on it; otherwise the 1% tail of fresh data
        let q = if name == "checkerboard" { 0.0 } else { 0.01 };
        s.threshold = metrics::share_below_quantile(&scores, &scores, q)?.1;
        Ok(s)
    }

    /// log p(x), or −(distance to the nearest dense data point).
    fn scores(&self, x: &Points) -> Result<Vec<f64>> {
        Ok(match data::toy_log_prob(&self.name, x) {
            Some(l) if self.exact => l,
            _ => metrics::nearest_distances(x, &self.dense)
                .into_iter()
                .map(|d| -d)
                .collect(),
        })
    }

    /// The share of `x` off the support.
    fn off(&self, x: &Points) -> Result<f64> {
        let s = self.scores(x)?;
        Ok(metrics::share_below_quantile(&s, &[self.threshold], 0.0)?.0)
    }

    fn definition(&self) -> String {
        match (self.exact, self.name.as_str()) {
            (true, "checkerboard") => "share of samples outside the 8 filled squares (exact density 0 there)".into(),
            (true, _) => format!("share of samples whose exact log-density is below the 1st percentile of fresh data's ({:.2} nats)", self.threshold),
            _ => format!("share of samples farther from the nearest of {} fresh data points than 99% of fresh data ({:.3} data units)", self.dense.n, -self.threshold),
        }
    }
}
