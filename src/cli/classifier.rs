//! `tweedie classifier`: trains the noise-conditional image classifier that measures image
//! samples (`tweedie eval --classifier`) and guides their sampling (`tweedie sample
//! --classifier`); writes a run folder and prints the test accuracy at several noise levels.

use anyhow::{bail, Result};
use clap::Parser;
use std::path::PathBuf;
use tweedie::images::train::train_run;
use tweedie::images::{ClassifierConfig, ClassifierTraining, NoisyClassifier};
use tweedie::nn::unet::classifier::{Classifier, ClassifierSpec};
use tweedie::process::ProcessConfig;

/// The classifier reads noisy images x_t = α_t x0 + σ_t ε at time t (the process of the score
/// runs it will guide); at t = t_min it is the plain classifier that sample-quality metrics use.
#[derive(Parser)]
pub struct Args {
    /// Labelled images: mnist (the shipped digits; trained on the 9000 training images, tested
    /// on the 1000 held-out ones of the fixed split).
    #[arg(long, default_value = "mnist")]
    data: String,
    /// Run folder (checkpoint.safetensors, config.toml, metrics.jsonl, accuracy.json).
    #[arg(long)]
    out: PathBuf,
    /// Noising process: vp (β 0.1→20), subvp, cosine, ve; the score runs' process.
    #[arg(long, default_value = "vp")]
    process: String,
    /// σ_max of the VE process.
    #[arg(long, default_value_t = 11.3)]
    sigma_max: f64,
    /// Optimiser steps (default 1500; with --resume, the run's own).
    #[arg(long)]
    steps: Option<usize>,
    /// Images per step.
    #[arg(long, default_value_t = ClassifierTraining::default().batch)]
    batch: usize,
    /// Peak learning rate (Adam; linear warm-up, then a half cosine to 0).
    #[arg(long, default_value_t = ClassifierTraining::default().lr)]
    lr: f64,
    /// Seed of the initialisation, batches, times and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Share of each batch at t = t_min (the plain classifier); the rest at t ~ U(t_min, T).
    #[arg(long, default_value_t = ClassifierTraining::default().clean_fraction)]
    clean_fraction: f64,
    /// Base channel width C (levels of C, 2C, 2C channels).
    #[arg(long, default_value_t = 16)]
    channels: usize,
    /// Replace a run already in OUT.
    #[arg(long)]
    overwrite: bool,
    /// Go on with the run in OUT from its last checkpoint (written every 100 steps) up to its
    /// steps, or to --steps; the other settings are the run's.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Compute device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.data != tweedie::data::mnist::NAME {
        bail!(
            "the classifier trains on labelled images: --data mnist (the shipped digits), not '{}'",
            a.data
        );
    }
    // the classifier is built from the U-Net's blocks
    super::prepare_for(tweedie::nn::NetworkKind::Unet);
    let checkpoint = a.out.join(tweedie::train::CHECKPOINT);
    if checkpoint.exists() && !a.overwrite && !a.resume {
        bail!(
            "{}: the folder already holds a run; go on with it (--resume), choose another --out, or replace it with --overwrite",
            checkpoint.display()
        );
    }
    let (train, test) = tweedie::data::mnist::split()?;
    let device = tweedie::device(&a.device)?;
    let (config, start) = if a.resume {
        let run = NoisyClassifier::load_run(&a.out, &device)?;
        let mut config = run.config;
        a.steps.inspect(|s| config.train.steps = *s);
        (config, run.step)
    } else {
        let mut spec = ClassifierSpec::small(&train.shape, 10);
        spec.channels = a.channels;
        let config = ClassifierConfig {
            data: a.data.clone(),
            process: ProcessConfig::from_name(&a.process, a.sigma_max)?,
            spec,
            train: ClassifierTraining {
                steps: a.steps.unwrap_or(ClassifierTraining::default().steps),
                batch: a.batch,
                lr: a.lr,
                clean_fraction: a.clean_fraction,
                seed: a.seed,
                ..ClassifierTraining::default()
            },
        };
        (config, 0)
    };
    config.validate()?;
    eprintln!(
        "classifier: {} parameters, {} training and {} test images",
        Classifier::parameter_count(&config.spec).unwrap_or(0),
        train.n,
        test.n
    );
    let bar = tweedie::progress::bar(config.train.steps, start, a.quiet);
    let callback = tweedie::progress::train_callback(bar.clone());
    let summary = train_run(
        &config,
        &train,
        &test,
        &a.out,
        a.resume,
        Some(&callback),
        &device,
    )
    .inspect_err(|_| bar.abandon())?;
    bar.finish();
    eprintln!(
        "trained steps {}..{} in {:.1} s; final loss {:.4}; test accuracy at t_min {:.4} ({} images)",
        start,
        summary.steps,
        summary.wall_seconds,
        summary.final_loss,
        summary.test_accuracy,
        summary.n_test
    );
    for l in &summary.levels {
        eprintln!(
            "  t = {:.3} (σ/α = {:.3}): accuracy {:.4}",
            l.t, l.noise, l.accuracy
        );
    }
    eprintln!("run folder {}", a.out.display());
    Ok(())
}
