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
use tweedie::train::{self, TrainOptions, CHECKPOINT, METRICS_LOG};

#[derive(Parser)]
pub struct Args {
    /// Toy data set: checkerboard, 8gaussians, swissroll, moons, circles, pinwheel, 2spirals, ncsn2, gmm40.
    #[arg(long, default_value = "checkerboard")]
    dataset: String,
    /// Output folder.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Training steps (batch 512, Adam 1e-3, VP process, 3×128 SiLU MLP).
    #[arg(long, default_value_t = 4000)]
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
        "[1/3] training a 3×128 SiLU score MLP on {} for {} steps (VP, DSM with λ = σ²) -> {}",
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
        "[2/3] sampling {} points (reverse SDE, Euler–Maruyama 1000 steps; PF-ODE Heun 100 steps)",
        a.n
    );
    let (net, _) = train::load_net(&a.out.join(CHECKPOINT), true, &device)?;
    let mut panels: Vec<(String, Points)> = Vec::new();
    let reference = data::toy(&a.dataset, a.n, &mut ChaCha8Rng::seed_from_u64(1_000_003))?;
    let second = data::toy(&a.dataset, a.n, &mut ChaCha8Rng::seed_from_u64(2_000_003))?;
    panels.push((format!("data ({} points)", a.n), second.clone()));
    let mut results = serde_json::Map::new();
    for (sampler, steps) in [("em", 1000), ("heun", 100)] {
        let mut rng = ChaCha8Rng::seed_from_u64(a.seed + 7);
        let bar = tweedie::progress::bar(steps, 0, a.quiet);
        let mut trace = Trace {
            callback: Some(tweedie::progress::sample_callback(bar.clone())),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let plan = Plan {
            sampler,
            grid: Grid::Uniform,
            steps,
            options: Options::default(),
            denoise_final: false,
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
    let w2 = |s: &str| results[s]["metrics"]["w2"].as_f64().unwrap_or(f64::NAN);
    let best = w2("em").min(w2("heun"));
    let ratio = best / floor.w2;
    let verdict = if ratio <= 1.5 { "PASS" } else { "FAIL" };
    let report = json!({
        "dataset": a.dataset,
        "train": summary,
        "samplers": results,
        "floor_data_vs_data": floor,
        "w2_ratio_best_sampler_to_floor": ratio,
        "criterion": "exact W2 (not squared) of the best sampler to fresh data within 1.5x the W2 between two fresh data sets of the same size",
        "verdict": verdict,
    });
    let metrics_path = a.out.join("metrics.json");
    tweedie::io::write_atomic_bytes(
        &metrics_path,
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )
    .with_context(|| format!("{}: cannot write", metrics_path.display()))?;
    let refs: Vec<(&str, &Points)> = panels.iter().map(|(t, p)| (t.as_str(), p)).collect();
    plot::scatter_panels(&a.out.join("samples.png"), &refs, None)?;
    plot_loss(&a.out)?;

    println!(
        "tweedie demo on {} ({} training steps, {:.1} s, {:.0} steps/s, final loss {:.4})",
        a.dataset,
        summary.steps,
        summary.wall_seconds,
        summary.steps_per_second,
        summary.final_loss
    );
    println!(
        "exact W2 to {} fresh data points (data units, exact optimal assignment):",
        a.n
    );
    println!("  data vs data (floor)      W2 = {:.4}", floor.w2);
    for s in ["em", "heun"] {
        println!(
            "  {:<4} NFE {:<5}           W2 = {:.4}  sliced W2 = {:.4}  MMD² = {:.2e}",
            s,
            results[s]["nfe"],
            w2(s),
            results[s]["metrics"]["sliced_w2"]
                .as_f64()
                .unwrap_or(f64::NAN),
            results[s]["metrics"]["mmd2"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!("best W2 / floor = {ratio:.3} (target <= 1.5): {verdict}");
    println!("wrote {}/{{samples_em.npy, samples_heun.npy, samples.png, loss.png, metrics.json, metrics.jsonl, checkpoint.safetensors}}", a.out.display());
    Ok(())
}

/// Loss curve from the run's metrics log.
fn plot_loss(dir: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(dir.join(METRICS_LOG))?;
    let pts: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_f64()?, v["loss"].as_f64()?)))
        .collect();
    plot::line_plot(
        &dir.join("loss.png"),
        "DSM training loss",
        "step",
        "loss (mean over 100 steps)",
        &[("loss", pts)],
        true,
    )
}
