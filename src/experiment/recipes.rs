//! Training recipes × samplers × distilled students on trained models, judged by the sample
//! cross-entropy E_q[−log p(x)] against the target's entropy H (issue 23): what each recipe's
//! model loses at 1000-step Euler–Maruyama and at 20 NFE, and what progressive and consistency
//! distillation of the best recipe keep at 4 steps and 1.
//!
//! Every run trains with the same budget (`TrainConfig::recipe`: batch 2048, lr 2e-3 with cosine
//! decay, EMA 0.9999) for `steps` steps; seeds are independent trainings, and each number is the
//! mean over seeds ± its standard error over seeds (over samples for a single seed).

use super::{write_doc, write_text};
use crate::config::{DataConfig, RunConfig, TrainConfig};
use crate::data::Points;
use crate::metrics::mean_and_sem;
use crate::nn::{Arch, Model};
use crate::objective::ObjectiveConfig;
use crate::sample::grid::Grid;
use crate::sample::{self, Options, Plan, Trace};
use crate::score::Parameterisation;
use crate::target::GaussianMixture;
use crate::train::distill::{
    self, DistillConfig, Method, CONSISTENCY_GRID as CD_GRID,
    CONSISTENCY_TARGET_DECAY as CD_TARGET_DECAY,
};
use crate::train::{self, DataSource, TrainOptions};
use anyhow::Result;
use candle_core::{DType, Device};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::Path;

/// Settings of the experiment.
pub struct Settings {
    /// Mixture targets: anisotropic3, anisotropic10, gmm40 (trained on x/50, as iDEM).
    pub targets: Vec<String>,
    /// Independent trainings per recipe.
    pub seeds: usize,
    /// Optimiser steps per training.
    pub steps: usize,
    /// Samples per evaluation.
    pub n: usize,
    /// Distillation: optimiser steps per progressive round (4 rounds 64 → 4... from 256) and
    /// 8× as many for consistency distillation.
    pub iterations: usize,
    pub quiet: bool,
}

/// One recipe × sampler on one target, over seeds.
#[derive(Serialize, Clone)]
pub struct Row {
    pub target: String,
    pub recipe: String,
    pub sampler: String,
    pub nfe: usize,
    /// CE − H per seed, and their mean and standard error.
    pub per_seed: Vec<f64>,
    pub mean: f64,
    pub se: f64,
}

/// The recipes compared: ε-prediction DSM (λ = σ², uniform t), v-prediction DSM, EDM's
/// preconditioning with EDM's training, and with DSM under the importance-sampled likelihood
/// weighting (the default), all on the default recipe's network and budget; and the default on
/// the peer's smaller 3×128 network.
fn recipes() -> Vec<(&'static str, Arch, ObjectiveConfig)> {
    let dsm = ObjectiveConfig::default();
    let with = |parameterisation| Arch {
        parameterisation,
        ..Arch::recipe()
    };
    vec![
        (
            "eps (dsm, λ = σ²)",
            with(Parameterisation::Eps),
            dsm.clone(),
        ),
        ("v (dsm, λ = σ²)", with(Parameterisation::V), dsm),
        (
            "edm (edm objective)",
            Arch::recipe(),
            ObjectiveConfig::edm(),
        ),
        (
            "edm + g2_is, 3×128",
            Arch {
                width: 128,
                depth: 3,
                ..Arch::recipe()
            },
            ObjectiveConfig::recipe(),
        ),
        (
            "edm + g2_is (default)",
            Arch::recipe(),
            ObjectiveConfig::recipe(),
        ),
    ]
}

/// The data scale a target is trained at (gmm40: x/50, as iDEM).
fn scale(target: &str) -> f64 {
    if target == "gmm40" {
        50.0
    } else {
        1.0
    }
}

/// CE − H of n samples of `plan` from `model` (model units) against the target in model units.
fn ce_minus_h(
    model: &Model,
    mixture: &GaussianMixture,
    entropy: f64,
    plan: &Plan,
    n: usize,
    seed: u64,
) -> Result<(f64, f64, usize)> {
    let mut trace = Trace::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = sample::generate(
        model,
        model.process(),
        plan,
        n,
        &mut rng,
        &Device::Cpu,
        &mut trace,
    )?;
    let (rows, d) = x.dims2()?;
    let v: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let nlp: Vec<f64> = mixture
        .log_prob(&Points::new(rows, d, v)?)?
        .into_iter()
        .map(|l| -l)
        .collect();
    let (ce, se) = mean_and_sem(&nlp);
    Ok((ce - entropy, se, trace.nfe))
}

/// A plan: `sampler` for `steps` steps on its own grid, then a final Tweedie step if `denoise`.
fn plan(sampler: &'static str, steps: usize, denoise: bool) -> Plan<'static> {
    Plan {
        sampler,
        grid: crate::sample::grid::recommended(sampler),
        steps,
        options: Options::default(),
        denoise_final: denoise,
    }
}

/// Runs the comparison (its runs in a temporary folder); writes recipes.{md,json} into `out`.
pub fn run(s: &Settings, out: &Path) -> Result<Vec<Row>> {
    super::create_dir(out)?;
    // the runs are scratch: only the tables are results
    let scratch = tempfile::tempdir()?;
    // (target, recipe, sampler) -> (nfe, per-seed values, per-sample se of the first seed)
    let mut cells: Vec<(String, String, String, usize, Vec<f64>, f64)> = Vec::new();
    let mut push = |t: &str, r: &str, smp: String, nfe: usize, v: f64, se: f64| match cells
        .iter_mut()
        .find(|c| c.0 == t && c.1 == r && c.2 == smp)
    {
        Some(c) => c.4.push(v),
        None => cells.push((t.into(), r.into(), smp, nfe, vec![v], se)),
    };
    let mut entropies = Vec::new();
    for target in &s.targets {
        let mixture = GaussianMixture::named(target)?.scaled(1.0 / scale(target))?;
        let (entropy, entropy_se) = mixture.entropy(200_000, 0)?;
        entropies.push((target.clone(), entropy, entropy_se));
        for seed in 0..s.seeds as u64 {
            let mut default_model = None;
            for (i, (name, arch, objective)) in recipes().into_iter().enumerate() {
                let cfg = RunConfig {
                    data: DataConfig {
                        source: target.clone(),
                        scale: scale(target),
                        ..DataConfig::default()
                    },
                    model: arch,
                    objective,
                    train: TrainConfig {
                        steps: s.steps,
                        seed,
                        checkpoint_every: s.steps,
                        ..TrainConfig::recipe()
                    },
                    ..RunConfig::default()
                };
                let dir = scratch.path().join(format!("{target}_{i}_{seed}"));
                if !s.quiet {
                    eprintln!("{target} seed {seed}: training {name}");
                }
                let opts = TrainOptions {
                    overwrite: true,
                    ..TrainOptions::default()
                };
                train::train(&cfg, &dir, &opts, &Device::Cpu)?;
                let (model, _) = train::load_net(&dir.join(train::CHECKPOINT), true, &Device::Cpu)?;
                // as `tweedie sample --run` does: the solver, then one Tweedie step at t_min
                for (sampler, steps) in [("em", 1000), ("unipc", 19)] {
                    let p = plan(sampler, steps, true);
                    let (v, se, nfe) = ce_minus_h(&model, &mixture, entropy, &p, s.n, seed)?;
                    push(
                        target,
                        name,
                        format!("{sampler} {steps} + denoise"),
                        nfe,
                        v,
                        se,
                    );
                }
                // the default recipe (the last) is the one distilled
                default_model = Some((model, cfg));
            }
            let Some((teacher, cfg)) = default_model else {
                continue;
            };
            let source = DataSource::open(&cfg.data)?;
            let base = DistillConfig {
                method: Method::Progressive,
                steps: 4,
                start: 256,
                iterations: s.iterations,
                target_decay: 0.0,
                train: TrainConfig {
                    lr: 1e-3,
                    ..cfg.train.clone()
                },
            };
            let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
            let mut quiet = |_: usize, _: usize, _: f64| {};
            if !s.quiet {
                eprintln!("{target} seed {seed}: distilling");
            }
            let (pd4, _) = distill::distill(&teacher, &source, &base, &mut rng, &mut quiet)?;
            let to1 = DistillConfig {
                steps: 1,
                start: 4,
                ..base.clone()
            };
            let (pd1, _) = distill::distill(&pd4, &source, &to1, &mut rng, &mut quiet)?;
            let cd_cfg = DistillConfig {
                method: Method::Consistency,
                steps: 1,
                start: CD_GRID,
                iterations: 8 * s.iterations,
                target_decay: CD_TARGET_DECAY,
                ..base.clone()
            };
            let (cd, _) = distill::distill(&teacher, &source, &cd_cfg, &mut rng, &mut quiet)?;
            let students: [(&str, &Model, &'static str, usize); 4] = [
                ("default → progressive 256→4", &pd4, "ddim", 4),
                ("default → progressive 256→4→1", &pd1, "ddim", 1),
                ("default → consistency (N = 32)", &cd, "consistency", 1),
                ("default → consistency (N = 32)", &cd, "consistency", 2),
            ];
            for (name, student, sampler, steps) in students {
                let mut p = plan(sampler, steps, false);
                p.grid = Grid::LogSnr;
                let (v, se, nfe) = ce_minus_h(student, &mixture, entropy, &p, s.n, seed)?;
                push(target, name, format!("{sampler} {steps}"), nfe, v, se);
            }
        }
    }
    let rows: Vec<Row> = cells
        .into_iter()
        .map(|(target, recipe, sampler, nfe, per_seed, se1)| {
            let (mean, se) = if per_seed.len() > 1 {
                mean_and_sem(&per_seed)
            } else {
                (per_seed[0], se1)
            };
            Row {
                target,
                recipe,
                sampler,
                nfe,
                per_seed,
                mean,
                se,
            }
        })
        .collect();
    write_text(
        &out.join("recipes.json"),
        &serde_json::to_string_pretty(&rows)?,
    )?;
    write_doc(&out.join("recipes.md"), &markdown(s, &entropies, &rows))?;
    Ok(rows)
}

fn markdown(s: &Settings, entropies: &[(String, f64, f64)], rows: &[Row]) -> String {
    let mut md =
        String::from("# Training recipes and distilled students by sample cross-entropy\n\n");
    md += &format!(
        "`tweedie experiment recipes --targets {} --seeds {} --steps {} --n {} --iterations {}`\n\n",
        s.targets.join(","),
        s.seeds,
        s.steps,
        s.n,
        s.iterations
    );
    md += &format!(
        "CE − H: the sample cross-entropy E_q[−log p0(x)] over n = {} samples minus the target's entropy \
         H (200,000 exact draws), nats per point; 0 for exact samples. Each recipe trains the \
         default 4×256 SiLU MLP (one row: 3×128) on fresh exact draws for {} steps (batch 2048, \
         lr 2e-3 with a half-cosine decay, EMA 0.9999; VP, β 0.1 → 20, t_min = 1e-3); gmm40 on \
         x/50 as iDEM. The trained runs sample as `tweedie sample --run` does: the solver to \
         t_min, then one Tweedie denoising step (+1 NFE). \
         Mean over {} independent trainings ± the standard error over them (with one seed: over \
         samples). Students: progressive distillation (Salimans & Ho 2022) of the default recipe's run from \
         its 256-step DDIM on the log-SNR grid, {} optimiser steps per halving, sampled with DDIM; \
         consistency distillation (Song et al. 2023) on a 32-step log-SNR grid of teacher \
         DPM-Solver-2 steps, θ⁻ an EMA (μ = 0.95) of the student, the teacher's x̂0 at t_min as \
         the boundary, {} steps, sampled with the consistency sampler.\n\n",
        s.n,
        s.steps,
        s.seeds,
        s.iterations,
        8 * s.iterations
    );
    for (target, h, h_se) in entropies {
        md += &format!("## {target}\n\nH = {h:.4} ± {h_se:.4} (model units).\n\n");
        md += "| recipe | sampler | NFE | CE − H | per seed |\n| --- | --- | --- | --- | --- |\n";
        for r in rows.iter().filter(|r| &r.target == target) {
            let per: Vec<String> = r.per_seed.iter().map(|v| format!("{v:+.3}")).collect();
            md += &format!(
                "| {} | {} | {} | {:+.3} ± {:.3} | {} |\n",
                r.recipe,
                r.sampler,
                r.nfe,
                r.mean,
                r.se,
                per.join(", ")
            );
        }
        md += "\n";
    }
    md
}
