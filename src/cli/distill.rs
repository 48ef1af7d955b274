//! `tweedie distill`: a trained run → a few-step student run (progressive or consistency
//! distillation) that `sample`, `eval`, `nll` and `plot` read like any run.

use anyhow::{bail, Result};
use clap::Parser;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use tweedie::config::TrainConfig;
use tweedie::train::distill::{self, DistillConfig, Method};
use tweedie::train::{DataSource, CHECKPOINT};

/// The student samples with DDIM (progressive) or consistency sampling in --steps steps on the
/// log-SNR grid; `tweedie sample --run OUT` uses that sampler when none is named.
#[derive(Parser)]
pub struct Args {
    /// The teacher: a run folder of `tweedie train` (its EMA weights and its data).
    #[arg(long)]
    run: PathBuf,
    /// progressive (Salimans & Ho 2022: halve the DDIM steps round by round) or consistency
    /// (Song et al. 2023: one model from any noise level to x̂0).
    #[arg(long, value_enum, default_value = "progressive")]
    method: Method,
    /// The student's sampler steps (1 to 4 for few-step sampling).
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Progressive: the teacher's DDIM steps at the start (--steps times a power of two;
    /// default 64); consistency: the N teacher DPM-Solver-2 steps the consistency condition is
    /// enforced on (default 32).
    #[arg(long)]
    start: Option<usize>,
    /// Optimiser steps per halving (progressive) or in all (consistency).
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Consistency: the decay μ of the target network θ⁻'s EMA of the student's weights
    /// (0: θ⁻ is the student's current weights, without gradient).
    #[arg(long, default_value_t = distill::CONSISTENCY_TARGET_DECAY)]
    target_decay: f64,
    /// Batch size (default: the teacher's).
    #[arg(long)]
    batch: Option<usize>,
    /// Learning rate, decayed by a half cosine over each round (default: 1e-3).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Seed of the batches and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output run folder (refused if it holds a run, unless --overwrite).
    #[arg(long)]
    out: PathBuf,
    /// Replace a run already in --out.
    #[arg(long)]
    overwrite: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.out.join(CHECKPOINT).exists() && !a.overwrite {
        bail!(
            "{}: the folder already holds a run; choose another --out or pass --overwrite",
            a.out.display()
        );
    }
    let device = candle_core::Device::Cpu;
    let (teacher, ck) = tweedie::train::load_net(&a.run.join(CHECKPOINT), true, &device)?;
    let source = DataSource::open(&ck.run.data)?;
    let cfg = DistillConfig {
        method: a.method,
        steps: a.steps,
        start: a.start.unwrap_or(match a.method {
            Method::Progressive => 64,
            Method::Consistency => distill::CONSISTENCY_GRID,
        }),
        iterations: a.iterations,
        target_decay: a.target_decay,
        train: TrainConfig {
            batch: a.batch.unwrap_or(ck.run.train.batch),
            lr: a.lr,
            decay: tweedie::config::LrDecay::Cosine,
            warmup: 0,
            ..ck.run.train.clone()
        },
    };
    let rounds = cfg.rounds()?;
    let total = rounds.len() * cfg.iterations;
    let bar = tweedie::progress::bar(total, 0, a.quiet);
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let start = std::time::Instant::now();
    let mut on_step = |round: usize, step: usize, loss: f64| {
        bar.set_position((round * cfg.iterations + step + 1) as u64);
        if step.is_multiple_of(50) {
            bar.set_message(format!("round {} loss {loss:.4}", round + 1));
        }
    };
    let (student, losses) = distill::distill(&teacher, &source, &cfg, &mut rng, &mut on_step)
        .inspect_err(|_| bar.abandon())?;
    bar.finish();
    distill::save(&student, &ck, &cfg, &losses, &a.out)?;
    eprintln!(
        "{:?} distillation ({} rounds × {} steps) in {:.1} s; the student samples with {} in {} steps -> {}",
        a.method,
        rounds.len(),
        cfg.iterations,
        start.elapsed().as_secs_f64(),
        cfg.sampler(),
        cfg.steps,
        a.out.display()
    );
    Ok(())
}
