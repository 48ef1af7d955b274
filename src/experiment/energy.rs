//! Energy-only training (iDEM) against exact answers: which of its settings decide sample
//! quality — the loss weight λ(t), the estimator's read-out and the target clip — on 2-D targets
//! known exactly: anisotropic3 (sample cross-entropy minus entropy) and the tilted double well
//! (its left well's share, exact by quadrature, and the unit spread of y). DSM on exact draws of
//! anisotropic3 with the same network and steps is the reference.

use super::{write_doc, write_text};
use crate::config::{DataConfig, RunConfig, TrainConfig};
use crate::data::Points;
use crate::metrics::mean_and_sem;
use crate::nn::Arch;
use crate::objective::{Idem, ObjectiveConfig, Weighting};
use crate::process::ProcessConfig;
use crate::sample::{generate, grid::Grid, Options, Plan, Trace};
use crate::score::Parameterisation;
use crate::target::posterior::Readout;
use crate::target::{DoubleWell, GaussianMixture};
use crate::train::{self, TrainOptions};
use anyhow::Result;
use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::Path;

/// Settings of the comparison.
pub struct Settings {
    /// Optimiser steps per run.
    pub steps: usize,
    /// Importance draws K of the estimator.
    pub k: usize,
    /// Samples per run (EM, 500 steps, then a Tweedie step).
    pub n: usize,
    /// Independent trainings per cell (mean ± standard error).
    pub seeds: usize,
    pub quiet: bool,
}

/// One setting of energy-only training (or DSM on exact draws, the reference).
struct Variant {
    name: String,
    objective: Option<(Weighting, Readout, f64)>,
}

/// iDEM's own choices (λ = 1, the force read-out, no clip here), tweedie's defaults, and each
/// change alone.
fn variants() -> Vec<Variant> {
    let d = Idem::default();
    let mut v = vec![Variant {
        name: "DSM on exact draws (reference; anisotropic3 only)".into(),
        objective: None,
    }];
    for weighting in [Weighting::One, Weighting::Sigma2] {
        for readout in [Readout::Force, Readout::Blend] {
            for clip in [0.0, d.clip] {
                let lambda = match weighting {
                    Weighting::One => "λ = 1",
                    _ => "λ = σ²",
                };
                let clip_name = if clip > 0.0 {
                    format!("clip {clip}·√dof")
                } else {
                    "no clip".into()
                };
                v.push(Variant {
                    name: format!("{lambda}, {readout:?} read-out, {clip_name}").to_lowercase(),
                    objective: Some((weighting, readout, clip)),
                });
            }
        }
    }
    v
}

/// A cell: the values over the seeds that trained, and how many diverged.
#[derive(Serialize, Default)]
pub struct Cell {
    pub values: Vec<f64>,
    pub diverged: usize,
}

/// One variant on both targets.
#[derive(Serialize)]
pub struct Row {
    pub variant: String,
    /// anisotropic3: cross-entropy minus entropy, nats.
    pub anisotropic3: Cell,
    /// The double well: share of samples with x < 0 (exact `DoubleWell::mode_weights()[0]`).
    pub left_share: Cell,
    /// The double well: standard deviation of y (exact √kT = 1).
    pub y_std: Cell,
}

/// The run config of one variant on one target (the 2-D network and VE process of the unit
/// test, `train::replay`'s).
fn config(target: &str, v: &Variant, s: &Settings, seed: u64) -> RunConfig {
    let (source, potential, objective) = match v.objective {
        None => (
            target.to_string(),
            None,
            ObjectiveConfig::Dsm {
                weighting: Weighting::Sigma2,
            },
        ),
        Some((weighting, readout, clip)) => (
            train::replay::SOURCE.to_string(),
            Some(target.to_string()),
            ObjectiveConfig::Idem(Idem {
                weighting,
                readout,
                clip,
                k: s.k,
                buffer: 2000,
                refresh_every: 50,
                refresh: 500,
                sampler_steps: 50,
            }),
        ),
    };
    RunConfig {
        data: DataConfig {
            source,
            potential,
            ..DataConfig::default()
        },
        model: Arch {
            width: 64,
            depth: 2,
            parameterisation: Parameterisation::Eps,
            ..Arch::default()
        },
        process: ProcessConfig::Ve {
            sigma_min: 0.01,
            sigma_max: 5.0,
            t_min: 1e-3,
        },
        objective,
        train: TrainConfig {
            steps: s.steps,
            batch: 128,
            lr: 3e-3,
            warmup: 50,
            ema_decay: 0.0,
            log_every: s.steps,
            checkpoint_every: s.steps,
            seed,
            ..TrainConfig::recipe()
        },
        sample: None,
    }
}

/// Trains one run and draws `n` samples from it (None: training diverged).
fn samples(cfg: &RunConfig, dir: &Path, n: usize, seed: u64) -> Result<Option<Points>> {
    let opts = TrainOptions {
        overwrite: true,
        ..TrainOptions::default()
    };
    if train::train(cfg, dir, &opts, &Device::Cpu).is_err() {
        return Ok(None);
    }
    let (net, _) = train::load_net(&dir.join(train::CHECKPOINT), true, &Device::Cpu)?;
    let plan = Plan {
        sampler: "em",
        grid: Grid::Uniform,
        steps: 500,
        options: Options::default(),
        denoise_final: true,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
    let x = match generate(
        &net,
        net.process(),
        &plan,
        n,
        &mut rng,
        &Device::Cpu,
        &mut Trace::default(),
    ) {
        Ok(x) => x,
        Err(_) => return Ok(None),
    };
    Ok(Some(Points::new(n, 2, crate::flat::values(&x)?)?))
}

/// Runs the comparison (its runs in a temporary folder); writes energy.{md,json} into `out`.
pub fn run(s: &Settings, out: &Path) -> Result<Vec<Row>> {
    super::create_dir(out)?;
    let scratch = tempfile::tempdir()?;
    let a3 = GaussianMixture::named("anisotropic3")?;
    let (entropy, _) = a3.entropy(200_000, 0)?;
    let well = DoubleWell::default();
    let mut rows = Vec::new();
    for (i, v) in variants().into_iter().enumerate() {
        let mut row = Row {
            variant: v.name.clone(),
            anisotropic3: Cell::default(),
            left_share: Cell::default(),
            y_std: Cell::default(),
        };
        for seed in 0..s.seeds as u64 {
            if !s.quiet {
                eprintln!("{} (seed {seed})", v.name);
            }
            let dir = scratch.path().join(format!("a3_{i}_{seed}"));
            match samples(&config("anisotropic3", &v, s, seed), &dir, s.n, seed)? {
                Some(x) => {
                    let nlp: Vec<f64> = a3.log_prob(&x)?.into_iter().map(|l| -l).collect();
                    row.anisotropic3.values.push(mean_and_sem(&nlp).0 - entropy);
                }
                None => row.anisotropic3.diverged += 1,
            }
            if v.objective.is_none() {
                continue;
            }
            let dir = scratch.path().join(format!("dw_{i}_{seed}"));
            match samples(&config("double-well", &v, s, seed), &dir, s.n, seed)? {
                Some(x) => {
                    let left = (0..x.n).filter(|&j| x.row(j)[0] < 0.0).count();
                    row.left_share.values.push(left as f64 / x.n as f64);
                    let y: Vec<f64> = (0..x.n).map(|j| x.row(j)[1]).collect();
                    let m = y.iter().sum::<f64>() / x.n as f64;
                    let var = y.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.n - 1) as f64;
                    row.y_std.values.push(var.sqrt());
                }
                None => {
                    row.left_share.diverged += 1;
                    row.y_std.diverged += 1;
                }
            }
        }
        rows.push(row);
    }
    let cell = |c: &Cell| -> String {
        if c.values.is_empty() && c.diverged == 0 {
            return "–".into();
        }
        let mut t = if c.values.is_empty() {
            String::new()
        } else {
            let (m, se) = mean_and_sem(&c.values);
            if c.values.len() > 1 {
                format!("{m:.3} ± {se:.3}")
            } else {
                format!("{m:.3}")
            }
        };
        if c.diverged > 0 {
            if !t.is_empty() {
                t.push_str("; ");
            }
            t.push_str(&format!("diverged {} of {}", c.diverged, s.seeds));
        }
        t
    };
    let mut md = format!(
        "# Energy-only training (iDEM): which settings matter\n\n\
         `tweedie experiment energy --steps {} --k {} --n {} --seeds {}`\n\n\
         Energy-only training (`objective.kind = \"idem\"`, docs/boltzmann.md) of a 2×64 SiLU MLP \
         (ε-prediction) under VE noise (σ 0.01 → 5), {} steps of batch 128 (lr 3e-3), K = {} importance \
         draws, a buffer of 2000 rows refreshed with 500 EM-50 samples every 50 steps; then {} samples \
         by Euler–Maruyama (500 steps) and a Tweedie step. Each row changes the loss weight λ(t), the \
         estimator's read-out (force: Σw βF/α_t, iDEM's; blend: the kernel form where σ_t > α_t) or the \
         target clip (σ_t‖Ŝ‖ ≤ clip·√dof, noise units). Mean ± standard error over {} independent trainings. \
         Columns: anisotropic3's sample cross-entropy minus its entropy (nats; 0 for exact samples); \
         the tilted double well's left-well share (exact {:.3} by quadrature) and the standard \
         deviation of y (exact 1). \"Diverged\": training stopped on a non-finite loss or the samples \
         were not finite.\n\n\
         | setting | anisotropic3 CE − H | double well: left share | double well: y std |\n|---|---|---|---|\n",
        s.steps,
        s.k,
        s.n,
        s.seeds,
        s.steps,
        s.k,
        s.n,
        s.seeds,
        well.mode_weights()[0],
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.variant,
            cell(&r.anisotropic3),
            cell(&r.left_share),
            cell(&r.y_std)
        ));
    }
    write_doc(&out.join("energy.md"), &md)?;
    let json = serde_json::json!({
        "settings": {"steps": s.steps, "k": s.k, "n": s.n, "seeds": s.seeds},
        "exact": {"left_share": well.mode_weights()[0], "y_std": 1.0, "anisotropic3_entropy": entropy},
        "definitions": {
            "anisotropic3": "mean of -log p(x) over the samples minus the entropy of p (200,000 exact draws), nats",
            "left_share": "share of the double well's samples with x < 0",
            "y_std": "sample standard deviation of the double well's y",
        },
        "rows": rows,
    });
    write_text(
        &out.join("energy.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    Ok(rows)
}
