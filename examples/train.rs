//! Train a score model on the "moons" toy from Rust, then sample it and measure the samples.
//!
//! `cargo run --release --example train` (seconds on 2 cores). The run folder (config.toml,
//! metrics.jsonl, checkpoint.safetensors) goes to a temporary directory, removed at the end.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tweedie::config::RunConfig;
use tweedie::data::{self, Points};
use tweedie::sample::{self, grid::Grid, Options, Plan, Trace};
use tweedie::train::{self, TrainOptions, TrainStep};

/// Samples [n, d] (any float dtype) as plain f64 points.
fn to_points(x: &Tensor) -> anyhow::Result<Points> {
    let (n, d) = x.dims2()?;
    Points::new(n, d, x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
}

fn main() -> anyhow::Result<()> {
    let device = Device::Cpu;
    // Every key of the TOML run config has a field here; the defaults are a 3×128 SiLU MLP
    // (ε-prediction), the VP process and denoising score matching with λ(t) = σ_t².
    let mut cfg = RunConfig::default();
    cfg.data.source = "moons".into(); // a toy: fresh draws every step
    cfg.train.steps = 600;
    cfg.train.batch = 256;
    cfg.train.lr = 2e-3;
    cfg.train.log_every = 100;
    cfg.train.checkpoint_every = 600; // a final checkpoint is always written

    let run = std::env::temp_dir().join(format!("tweedie-example-train-{}", std::process::id()));
    // The callback sees every optimiser step; `logged_loss` is set on logging steps.
    let opts = TrainOptions {
        callback: Some(Box::new(|s: &TrainStep| {
            if let Some(loss) = s.logged_loss {
                println!("step {:4}/{}  loss {loss:.4}", s.step, s.total);
            }
        })),
        ..TrainOptions::default()
    };
    let summary = train::train(&cfg, &run, &opts, &device)?;
    println!(
        "trained: {:.0} steps/s, final loss {:.4}",
        summary.steps_per_second, summary.final_loss
    );

    // Load the checkpoint with its EMA weights; the model carries its own process.
    let (model, _checkpoint) = train::load_net(&run.join(train::CHECKPOINT), true, &device)?;
    let n = 1000;
    let plan = Plan {
        sampler: "heun", // probability-flow ODE, Heun's method: 2 score evaluations a step
        grid: Grid::Uniform,
        steps: 50,
        options: Options::default(),
        denoise_final: false,
    };
    let mut trace = Trace::default(); // counts score evaluations (NFE)
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = sample::generate(
        &model,
        model.process(),
        &plan,
        n,
        &mut rng,
        &device,
        &mut trace,
    )?;
    // data.scale is 1 here; with another scale, samples are in model units: multiply by it.
    let samples = to_points(&x)?.scaled(cfg.data.scale);

    // Exact W2 (not squared; optimal assignment) to fresh data, beside the W2 between two fresh
    // data sets of the same size: the floor that finite samples leave even for a perfect model.
    let fresh = data::toy("moons", n, &mut ChaCha8Rng::seed_from_u64(100))?;
    let other = data::toy("moons", n, &mut ChaCha8Rng::seed_from_u64(200))?;
    let w2 = tweedie::metrics::w2_exact(&samples, &fresh)?;
    let floor = tweedie::metrics::w2_exact(&other, &fresh)?;
    println!(
        "heun, 50 steps (NFE {}): W2 to fresh data {w2:.3} ({n} vs {n} points)",
        trace.nfe
    );
    println!("floor: W2 between two fresh data sets {floor:.3} ({n} vs {n} points)");

    std::fs::remove_dir_all(&run)?;
    Ok(())
}
