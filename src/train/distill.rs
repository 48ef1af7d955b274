//! Distillation of a trained run into a few-step sampler (note 003 §8.4): progressive
//! distillation (Salimans & Ho 2022) and consistency distillation (Song et al. 2023). Both train
//! a student copy of the teacher on regressions of its x̂0 (`Engine::step_regression`), with the
//! DSM machinery's inputs x_t = α_t x0 + σ_t ε and the score-space target s* = (α_t x̃ − x_t)/σ_t².

use super::engine::Engine;
use super::DataSource;
use super::{frozen, inference};
use crate::config::TrainConfig;
use crate::flat::values;
use crate::nn::Model;
use crate::objective::regression::{noise, regress, Noised, Regression};
use crate::objective::{ObjectiveConfig, Weighting};
use crate::process::Process;
use crate::sample::grid::Grid;
use crate::score::{denoise, ScoreModel};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Which distillation.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Progressive distillation: a student's one DDIM step matches two of its teacher's, and
    /// the student becomes the next teacher, halving the steps each round (Salimans & Ho 2022).
    Progressive,
    /// Consistency distillation: x̂0_θ(x_{t_k}) matches x̂0_θ⁻ one teacher ODE step later,
    /// with the teacher's x̂0 at t_min as the boundary (Song et al. 2023, Alg. 2; θ⁻ = stop-grad θ as
    /// in Song & Dhariwal 2023).
    Consistency,
}

/// What to distil, and how long.
#[derive(Clone, Debug)]
pub struct DistillConfig {
    pub method: Method,
    /// The student's sampler steps (progressive: halved from `start` down to this).
    pub steps: usize,
    /// Progressive: the teacher's DDIM steps at the start (`steps`·2^k); consistency: the
    /// teacher's grid of N DDIM steps that the consistency condition is enforced on.
    pub start: usize,
    /// Optimiser steps per halving (progressive) or in all (consistency); batch, lr and decay
    /// from `train` (its `steps` is ignored).
    pub iterations: usize,
    /// Consistency: the decay μ of θ⁻'s EMA of the student's weights (Song et al. 2023 use 0.95
    /// on CIFAR-10; 0: θ⁻ = stop-grad θ, as Song & Dhariwal 2023).
    pub target_decay: f64,
    pub train: TrainConfig,
}

/// Consistency distillation's default N: its teacher's DPM-Solver-2 steps (anisotropic10:
/// 16 steps' samples are 0.28 nats over-dispersed, 32 steps' 0.07) against the bootstrapping from
/// the boundary, which takes longer the more steps there are.
pub const CONSISTENCY_GRID: usize = 32;

/// Consistency distillation's default EMA decay μ of θ⁻ (Song et al. 2023 on CIFAR-10; with
/// θ⁻ = θ the anisotropic10 student ended 1 nat further from its teacher).
pub const CONSISTENCY_TARGET_DECAY: f64 = 0.95;

/// The grid every distillation works on: uniform in log-SNR, so that every other point of an
/// N-step grid is the N/2-step grid.
pub const GRID: Grid = Grid::LogSnr;

impl DistillConfig {
    /// The halvings from `start` to `steps` (progressive), checked.
    pub fn rounds(&self) -> Result<Vec<usize>> {
        if self.steps == 0 || self.start < self.steps || self.iterations == 0 {
            bail!(
                "distillation needs 1 ≤ steps ≤ start and iterations ≥ 1 (got steps {}, start {}, iterations {})",
                self.steps,
                self.start,
                self.iterations
            );
        }
        if !(0.0..1.0).contains(&self.target_decay) {
            bail!(
                "the target network's EMA decay must be in [0, 1), got {}",
                self.target_decay
            );
        }
        if self.method == Method::Consistency {
            return Ok(vec![self.start]);
        }
        let (mut n, mut rounds) = (self.start, Vec::new());
        while n > self.steps && n % 2 == 0 {
            rounds.push(n);
            n /= 2;
        }
        if n != self.steps {
            bail!(
                "progressive distillation halves the steps: start = {} must be steps = {} times a power of two",
                self.start,
                self.steps
            );
        }
        Ok(rounds)
    }

    /// The sampler a student of this distillation runs: DDIM (η = 0) or multistep consistency
    /// sampling, `steps` steps on `GRID`.
    pub fn sampler(&self) -> &'static str {
        match self.method {
            Method::Progressive => "ddim",
            Method::Consistency => "consistency",
        }
    }
}

/// One DDIM step (η = 0) per row from t to t', x' = α' x̂0 + σ'(x − α x̂0)/σ, with the model's
/// x̂0 by Tweedie's formula (per-row times; host f64 rows [n × d]).
fn ddim_rows(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: &[f64],
    t: &[f64],
    t_next: &[f64],
) -> Result<Vec<f64>> {
    let x0 = x0_rows(m, p, x, t)?;
    let d = x.len() / t.len();
    let mut out = Vec::with_capacity(x.len());
    for (i, (&t, &tn)) in t.iter().zip(t_next).enumerate() {
        let (a, s, an, sn) = (p.alpha(t), p.sigma(t), p.alpha(tn), p.sigma(tn));
        let row = i * d..(i + 1) * d;
        for (xv, x0v) in x[row.clone()].iter().zip(&x0[row]) {
            out.push(an * x0v + sn * (xv - a * x0v) / s);
        }
    }
    Ok(out)
}

/// One DPM-Solver-2 step per row from t to t' (Lu et al. 2022, Alg. 1 with r = ½): a DDIM step
/// to the log-SNR midpoint s, then x' = (α'/α) x − σ'(e^h − 1) ε̂(u, s), h = λ' − λ; second
/// order, so a coarse grid's trajectory stays on the teacher's ODE (DDIM's 16-step samples are
/// a nat under-dispersed on anisotropic10).
fn dpm2_rows(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: &[f64],
    t: &[f64],
    t_next: &[f64],
) -> Result<Vec<f64>> {
    let mid: Vec<f64> = t
        .iter()
        .zip(t_next)
        .map(|(&a, &b)| p.t_at_lambda(0.5 * (p.lambda(a) + p.lambda(b))))
        .collect();
    let u = ddim_rows(m, p, x, t, &mid)?;
    let u0 = x0_rows(m, p, &u, &mid)?;
    let d = x.len() / t.len();
    let mut out = Vec::with_capacity(x.len());
    for (i, ((&t, &tn), &ts)) in t.iter().zip(t_next).zip(&mid).enumerate() {
        let (a, an, sn) = (p.alpha(t), p.alpha(tn), p.sigma(tn));
        let (a_s, s_s) = (p.alpha(ts), p.sigma(ts));
        let h = p.lambda(tn) - p.lambda(t);
        let row = i * d..(i + 1) * d;
        for ((xv, uv), u0v) in x[row.clone()].iter().zip(&u[row.clone()]).zip(&u0[row]) {
            let eps = (uv - a_s * u0v) / s_s;
            out.push(an / a * xv - sn * h.exp_m1() * eps);
        }
    }
    Ok(out)
}

/// Tweedie's x̂0 = (x + σ_t² s)/α_t per row, on host rows.
fn x0_rows(m: &dyn ScoreModel, p: &dyn Process, x: &[f64], t: &[f64]) -> Result<Vec<f64>> {
    let (n, d) = (t.len(), x.len() / t.len().max(1));
    let dev = candle_core::Device::Cpu;
    let xt = Tensor::from_slice(x, (n, d), &dev)?.to_dtype(DType::F32)?;
    let tt = Tensor::from_slice(t, n, &dev)?.to_dtype(DType::F32)?;
    values(&denoise(m, p, &xt, &tt)?)
}

/// The regression of the student's x̂0 on x̃ at the noised points z, unit-weighted in x0
/// (`weight`·‖x̂0 − x̃‖² is λ(t)‖s − s*‖² with λ = weight·σ⁴/α²).
fn regress_x0(
    student: &Model,
    z: Noised,
    x_tilde: &[f64],
    weight: impl Fn(f64, f64) -> f64,
) -> Result<Regression> {
    let p = student.process();
    let d = z.d;
    let mut target = Vec::with_capacity(z.xt.len());
    for (i, &(a, s)) in z.coef.iter().enumerate() {
        let row = i * d..(i + 1) * d;
        for (xt, xv) in z.xt[row.clone()].iter().zip(&x_tilde[row]) {
            target.push((a * xv - xt) / (s * s));
        }
    }
    let dev = candle_core::Device::Cpu;
    regress(student, z, target, &dev, |t| {
        let (a, s) = (p.alpha(t), p.sigma(t));
        weight(a, s) * s.powi(4) / (a * a)
    })
}

/// θ⁻ of consistency distillation: the engine's EMA of the student's weights, for inference.
fn ema_target(student: &Model, engine: &Engine) -> Result<Model> {
    let copy = student.copy()?;
    for ((_, var), w) in copy.vars().iter().zip(engine.ema(student)?) {
        var.set(&w.to_dtype(var.dtype())?)?;
    }
    inference(copy)
}

/// A fresh engine for the student (Adam from zero), keeping an EMA of its weights from the
/// teacher's when `ema` (consistency distillation's θ⁻).
fn engine(student: &Model, ema: bool) -> Result<Engine> {
    let dsm = ObjectiveConfig::Dsm {
        weighting: Weighting::Sigma2,
    };
    let ema0 = if ema {
        student
            .vars()
            .iter()
            .map(|(_, v)| v.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    Engine::new(student, &dsm, super::adam::Adam::new(student.vars())?, ema0)
}

/// The regression of one progressive-distillation batch: at z = x_{t_{2k}} (k uniform over the
/// student's N/2 steps of the teacher's N-step `grid`), the teacher's two DDIM steps give z''
/// at t_{2k+2} and the student's x̂0 regresses on x̃ = (z'' − (σ''/σ) z)/(α'' − (σ''/σ) α), the
/// x0 whose one DDIM step lands on z'', with Salimans & Ho's truncated-SNR weight
/// max(α²/σ², 1) on the x0 error.
pub fn progressive_regression(
    teacher: &dyn ScoreModel,
    student: &Model,
    grid: &[f64],
    x0: &Tensor,
    rng: &mut ChaCha8Rng,
) -> Result<Regression> {
    let p = student.process();
    let (n, half) = (x0.dims()[0], (grid.len() - 1) / 2);
    let ks: Vec<usize> = (0..n).map(|_| rng.random_range(0..half)).collect();
    let at = |j: usize| ks.iter().map(|&k| grid[2 * k + j]).collect::<Vec<f64>>();
    let (t0, t1, t2) = (at(0), at(1), at(2));
    let z = noise(student, x0, t0.clone(), rng)?;
    let z1 = ddim_rows(teacher, p, &z.xt, &t0, &t1)?;
    let z2 = ddim_rows(teacher, p, &z1, &t1, &t2)?;
    let mut x_tilde = Vec::with_capacity(z2.len());
    for (i, (&ta, &tb)) in t0.iter().zip(&t2).enumerate() {
        let (a, s, a2, s2) = (p.alpha(ta), p.sigma(ta), p.alpha(tb), p.sigma(tb));
        let r = s2 / s;
        let row = i * z.d..(i + 1) * z.d;
        for (zv, z2v) in z.xt[row.clone()].iter().zip(&z2[row]) {
            x_tilde.push((z2v - r * zv) / (a2 - r * a));
        }
    }
    regress_x0(student, z, &x_tilde, |a, s| (a * a / (s * s)).max(1.0))
}

/// The regression of one consistency-distillation batch on the teacher's N-step `grid`: at
/// z = x_{t_k} (k uniform), x' is one teacher DPM-Solver-2 step on, and the student's x̂0 regresses on
/// x̃ = x̂0_θ⁻(x', t_{k+1}) with θ⁻ the `target` network (values, no gradient); at the last
/// step x̃ is the teacher's x̂0(x', t_min), the boundary f(x, t_min) = Tweedie's denoiser (Song
/// et al.'s f(x, ε) = x plus the final denoising step `sample --run` takes). Unit weight.
pub fn consistency_regression(
    teacher: &dyn ScoreModel,
    student: &Model,
    target: &dyn ScoreModel,
    grid: &[f64],
    x0: &Tensor,
    rng: &mut ChaCha8Rng,
) -> Result<Regression> {
    let p = student.process();
    let (n, steps) = (x0.dims()[0], grid.len() - 1);
    let ks: Vec<usize> = (0..n).map(|_| rng.random_range(0..steps)).collect();
    let t0: Vec<f64> = ks.iter().map(|&k| grid[k]).collect();
    let t1: Vec<f64> = ks.iter().map(|&k| grid[k + 1]).collect();
    let z = noise(student, x0, t0.clone(), rng)?;
    let x1 = dpm2_rows(teacher, p, &z.xt, &t0, &t1)?;
    let mut x_tilde = x0_rows(target, p, &x1, &t1)?;
    let last: Vec<usize> = (0..n).filter(|&i| ks[i] + 1 == steps).collect();
    if !last.is_empty() {
        let d = z.d;
        let rows: Vec<f64> = last
            .iter()
            .flat_map(|&i| x1[i * d..(i + 1) * d].iter().copied())
            .collect();
        let boundary = x0_rows(teacher, p, &rows, &vec![grid[steps]; last.len()])?;
        for (j, &i) in last.iter().enumerate() {
            x_tilde[i * d..(i + 1) * d].copy_from_slice(&boundary[j * d..(j + 1) * d]);
        }
    }
    regress_x0(student, z, &x_tilde, |_, _| 1.0)
}

/// Builds one batch's regression from the grid, the batch's x0, θ⁻ (when the round keeps one)
/// and the generator.
type BuildRegression<'a> =
    dyn Fn(&[f64], &Tensor, Option<&Model>, &mut ChaCha8Rng) -> Result<Regression> + 'a;

/// Trains `student` for `cfg.iterations` steps on fresh batches of `build`'s regressions on the
/// N-step grid (the engine's weights are synced into the student before each build). With
/// `target_decay` μ, θ⁻ is the EMA θ⁻ ← μθ⁻ + (1 − μ)θ of the student's weights, starting at
/// the teacher's (Song et al. 2023's target network). Returns the losses.
#[allow(clippy::too_many_arguments)]
fn run_round(
    student: &Model,
    n: usize,
    source: &DataSource,
    cfg: &DistillConfig,
    target_decay: Option<f64>,
    rng: &mut ChaCha8Rng,
    on_step: &mut dyn FnMut(usize, f64),
    build: &BuildRegression,
) -> Result<Vec<f64>> {
    let grid = GRID.times(student.process(), n)?;
    let mut engine = engine(student, target_decay.is_some())?;
    let t = TrainConfig {
        steps: cfg.iterations,
        ema_decay: target_decay.unwrap_or(0.0),
        ..cfg.train.clone()
    };
    let mut losses = Vec::with_capacity(cfg.iterations);
    for step in 0..cfg.iterations {
        let b = source.batch(t.batch, 1.0, rng, student.device(), None, None)?;
        engine.sync(student)?;
        let target = match target_decay {
            Some(_) => Some(ema_target(student, &engine)?),
            None => None,
        };
        let reg = build(&grid, &b.x0, target.as_ref(), rng)?;
        let (loss, _, _) = engine.step_regression(student, &reg, &t, step)?;
        losses.push(loss);
        on_step(step, loss);
    }
    engine.sync(student)?;
    Ok(losses)
}

/// Distils `teacher` (frozen) into a student that samples in `cfg.steps` steps with
/// `cfg.sampler()` on `GRID`; `on_step(round, step, loss)` after every optimiser step.
/// Returns the student (with the teacher's weights to start) and every loss.
pub fn distill(
    teacher: &Model,
    source: &DataSource,
    cfg: &DistillConfig,
    rng: &mut ChaCha8Rng,
    on_step: &mut dyn FnMut(usize, usize, f64),
) -> Result<(Model, Vec<f64>)> {
    let rounds = cfg.rounds()?;
    let student = teacher.copy()?;
    let mut losses = Vec::new();
    match cfg.method {
        Method::Consistency => {
            let mut f = |step, loss| on_step(0, step, loss);
            let build = |g: &[f64], x0: &Tensor, ema: Option<&Model>, r: &mut ChaCha8Rng| match ema
            {
                Some(m) => consistency_regression(teacher, &student, m, g, x0, r),
                None => consistency_regression(teacher, &student, &frozen(&student)?, g, x0, r),
            };
            let decay = (cfg.target_decay > 0.0).then_some(cfg.target_decay);
            losses = run_round(&student, cfg.start, source, cfg, decay, rng, &mut f, &build)?;
        }
        Method::Progressive => {
            let mut current: Option<Model> = None;
            for (round, &n) in rounds.iter().enumerate() {
                let t: &dyn ScoreModel = match &current {
                    Some(m) => m,
                    None => teacher,
                };
                let mut f = |step, loss| on_step(round, step, loss);
                let build = |g: &[f64], x0: &Tensor, _: Option<&Model>, r: &mut ChaCha8Rng| {
                    progressive_regression(t, &student, g, x0, r)
                };
                losses.extend(run_round(
                    &student, n, source, cfg, None, rng, &mut f, &build,
                )?);
                // the student of this round teaches the next
                current = Some(frozen(&student)?);
            }
        }
    }
    Ok((student, losses))
}

/// Writes a distilled student as a run folder that every command reads: its checkpoint (the
/// student's weights as both the weights and the EMA), config.toml with the teacher's config
/// and `[sample]` set to the student's sampler, and the losses as metrics.jsonl.
pub fn save(
    student: &Model,
    teacher: &super::checkpoint::Checkpoint,
    cfg: &DistillConfig,
    losses: &[f64],
    dir: &std::path::Path,
) -> Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create run folder", dir.display()))?;
    let mut run = teacher.run.clone();
    run.sample = Some(crate::config::SampleDefaults {
        sampler: cfg.sampler().into(),
        steps: cfg.steps,
        grid: GRID.name(),
    });
    let params: Vec<Tensor> = student
        .vars()
        .iter()
        .map(|(_, v)| v.as_tensor().copy())
        .collect::<candle_core::Result<_>>()?;
    let zeros = params
        .iter()
        .map(|p| p.zeros_like())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let ck = super::checkpoint::Checkpoint {
        model: student.config.clone(),
        run: run.clone(),
        step: losses.len(),
        rng: teacher.rng.clone(),
        names: student.vars().iter().map(|(n, _)| n.clone()).collect(),
        ema: params.clone(),
        params,
        adam_m: zeros.clone(),
        adam_v: zeros,
        buffers: student.buffers(),
    };
    ck.save(&dir.join(super::CHECKPOINT))?;
    crate::io::write_atomic_bytes(&dir.join("config.toml"), run.to_toml()?.as_bytes())?;
    let log: String = losses
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{{\"step\":{},\"loss\":{l}}}\n", i + 1))
        .collect();
    crate::io::write_atomic_bytes(&dir.join(super::METRICS_LOG), log.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataConfig;
    use crate::nn::{Arch, ModelConfig};
    use crate::process::ProcessConfig;
    use crate::target::{ExactScore, GaussianMixture};
    use candle_core::Device;
    use rand::SeedableRng;
    use std::sync::Arc;

    fn teacher() -> ExactScore {
        ExactScore {
            mixture: GaussianMixture::anisotropic3(),
            process: Arc::from(ProcessConfig::vp_default().build().expect("vp")),
        }
    }

    fn student() -> Model {
        let cfg = ModelConfig {
            arch: Arch {
                width: 32,
                depth: 2,
                embed_dim: 8,
                ..Default::default()
            },
            ..ModelConfig::default_for(2, ProcessConfig::vp_default())
        };
        Model::new(cfg, &mut ChaCha8Rng::seed_from_u64(1), &Device::Cpu).expect("net")
    }

    fn batch(n: usize) -> Tensor {
        let source = DataSource::open(&DataConfig {
            source: "anisotropic3".into(),
            ..DataConfig::default()
        })
        .expect("source");
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let b = source.batch(n, 1.0, &mut rng, &Device::Cpu, None, None);
        b.expect("batch").x0
    }

    /// The score target of a regression back in x0: x̃ = (x_t + σ_t² s*)/α_t, from its
    /// output-space target.
    fn x_tilde(student: &Model, r: &Regression) -> Vec<f64> {
        let map = student.output_map();
        let d = r.z.d;
        let mut out = Vec::new();
        for (i, &(a, s)) in r.z.coef.iter().enumerate() {
            let (ca, cb) = map.score_coefficients(a, s);
            for j in 0..d {
                let x = r.z.xt[i * d + j];
                let score = ca * r.target[i * d + j] + cb * x;
                out.push((x + s * s * score) / a);
            }
        }
        out
    }

    /// Progressive distillation's x̃ is where the student's one DDIM step t_{2k} → t_{2k+2}
    /// must start to land on the teacher's two steps (computed again here, independently).
    #[test]
    fn progressive_target_lands_on_the_teachers_two_steps() -> Result<()> {
        let (teacher, student) = (teacher(), student());
        let p = student.process();
        let grid = GRID.times(p, 16)?;
        let r = progressive_regression(
            &teacher,
            &student,
            &grid,
            &batch(64),
            &mut ChaCha8Rng::seed_from_u64(3),
        )?;
        let xt = x_tilde(&student, &r);
        let t2: Vec<f64> =
            r.z.ts
                .iter()
                .map(|t| {
                    let k = grid.iter().position(|g| g == t).expect("a grid time");
                    grid[k + 2]
                })
                .collect();
        let t1: Vec<f64> =
            r.z.ts
                .iter()
                .map(|t| grid[grid.iter().position(|g| g == t).expect("grid") + 1])
                .collect();
        let z1 = ddim_rows(&teacher, p, &r.z.xt, &r.z.ts, &t1)?;
        let z2 = ddim_rows(&teacher, p, &z1, &t1, &t2)?;
        let d = r.z.d;
        let mut worst = 0f64;
        for (i, (&t, &tn)) in r.z.ts.iter().zip(&t2).enumerate() {
            let (a, s, an, sn) = (p.alpha(t), p.sigma(t), p.alpha(tn), p.sigma(tn));
            for j in i * d..(i + 1) * d {
                let landed = an * xt[j] + sn * (r.z.xt[j] - a * xt[j]) / s;
                worst = worst.max((landed - z2[j]).abs() / (1.0 + z2[j].abs()));
            }
        }
        // f32 network inputs and outputs round the teacher's steps
        assert!(
            worst < 1e-4,
            "one student step misses the teacher's two by {worst:e}"
        );
        Ok(())
    }

    /// One solver step x → x' from t to t' on host rows.
    type Step<'a> = dyn Fn(&[f64], f64, f64) -> Result<Vec<f64>> + 'a;

    /// The teacher's DPM-Solver-2 step is second order: its one-step error against a fine
    /// solve falls ≈ 8× (h³) when the step halves, where DDIM's falls ≈ 4× (h²).
    #[test]
    fn the_consistency_teachers_step_is_second_order() -> Result<()> {
        let teacher = teacher();
        let p: &dyn Process = teacher.process.as_ref();
        let x0 = batch(64);
        let n = x0.dims()[0];
        let x: Vec<f64> = x0.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
        let t0 = 0.5;
        let x: Vec<f64> = x.iter().map(|v| p.alpha(t0) * v).collect();
        let error = |step: &Step, t1: f64| -> Result<f64> {
            let got = step(&x, t0, t1)?;
            let mut fine = x.clone();
            let lam: Vec<f64> = (0..=256)
                .map(|k| p.lambda(t0) + (p.lambda(t1) - p.lambda(t0)) * k as f64 / 256.0)
                .collect();
            for w in lam.windows(2) {
                let (a, b) = (p.t_at_lambda(w[0]), p.t_at_lambda(w[1]));
                fine = dpm2_rows(&teacher, p, &fine, &vec![a; n], &vec![b; n])?;
            }
            Ok(got
                .iter()
                .zip(&fine)
                .map(|(g, f)| (g - f).powi(2))
                .sum::<f64>()
                .sqrt())
        };
        let dpm2 = |x: &[f64], a: f64, b: f64| dpm2_rows(&teacher, p, x, &vec![a; n], &vec![b; n]);
        let ddim = |x: &[f64], a: f64, b: f64| ddim_rows(&teacher, p, x, &vec![a; n], &vec![b; n]);
        // steps of h = 0.25 and 0.125 of λ(0.3) − λ(0.5), in the asymptotic range
        let at = |f: f64| p.t_at_lambda(p.lambda(t0) + f * (p.lambda(0.3) - p.lambda(t0)));
        let r2 = error(&dpm2, at(0.25))? / error(&dpm2, at(0.125))?;
        let r1 = error(&ddim, at(0.25))? / error(&ddim, at(0.125))?;
        assert!(r2 > 6.0 && r2 < 11.0, "DPM-Solver-2's error ratio {r2}");
        assert!(r1 > 3.0 && r1 < 5.5, "DDIM's error ratio {r1}");
        Ok(())
    }

    /// At the grid's last step the consistency target is the teacher's Tweedie denoiser at
    /// t_min.
    #[test]
    fn consistency_target_is_the_boundary_at_t_min() -> Result<()> {
        let (teacher, student) = (teacher(), student());
        let p = student.process();
        let grid = GRID.times(p, 2)?;
        let r = consistency_regression(
            &teacher,
            &student,
            &student,
            &grid,
            &batch(200),
            &mut ChaCha8Rng::seed_from_u64(4),
        )?;
        let xt = x_tilde(&student, &r);
        let (d, mut checked) = (r.z.d, 0);
        for (i, &t) in r.z.ts.iter().enumerate() {
            if t != grid[1] {
                continue;
            }
            let rows = &r.z.xt[i * d..(i + 1) * d];
            let x1 = dpm2_rows(&teacher, p, rows, &[t], &[grid[2]])?;
            // Tweedie by hand: x̂0 = (x' + σ² s(x'))/α at t_min
            let (a, sg) = (p.alpha(grid[2]), p.sigma(grid[2]));
            let xs = Tensor::from_slice(&x1, (1, d), &Device::Cpu)?;
            let ts = Tensor::new(&[grid[2]], &Device::Cpu)?;
            let score: Vec<f64> = values(&teacher.score(&xs, &ts)?)?;
            for (j, (x1v, sv)) in x1.iter().zip(&score).enumerate() {
                let want = (x1v + sg * sg * sv) / a;
                assert!((xt[i * d + j] - want).abs() < 1e-4 * (1.0 + want.abs()));
            }
            checked += 1;
        }
        assert!(checked > 50, "only {checked} rows at the last step");
        Ok(())
    }

    /// Steps of either distillation on one fixed batch reduce the student's error on it.
    #[test]
    fn a_distillation_step_reduces_the_students_error_on_a_fixed_batch() -> Result<()> {
        let teacher = teacher();
        for method in [Method::Progressive, Method::Consistency] {
            let student = student();
            let grid = GRID.times(student.process(), 8)?;
            let x0 = batch(256);
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            let r = match method {
                Method::Progressive => {
                    progressive_regression(&teacher, &student, &grid, &x0, &mut rng)?
                }
                Method::Consistency => {
                    consistency_regression(&teacher, &student, &student, &grid, &x0, &mut rng)?
                }
            };
            let t = TrainConfig {
                lr: 3e-3,
                ema_decay: 0.0,
                ..TrainConfig::default()
            };
            let mut e = engine(&student, false)?;
            let first = e.step_regression(&student, &r, &t, 0)?.0;
            let mut last = first;
            for step in 1..40 {
                last = e.step_regression(&student, &r, &t, step)?.0;
            }
            assert!(last < 0.5 * first, "{method:?}: loss {first} -> {last}");
        }
        Ok(())
    }

    /// Halving rounds: 64 → 4 is 64, 32, 16, 8; a start that is not steps·2^k is an error.
    #[test]
    fn progressive_rounds_halve_to_the_students_steps() -> Result<()> {
        let cfg = |start, steps| DistillConfig {
            method: Method::Progressive,
            steps,
            start,
            iterations: 1,
            target_decay: 0.0,
            train: TrainConfig::default(),
        };
        assert_eq!(cfg(64, 4).rounds()?, vec![64, 32, 16, 8]);
        assert_eq!(cfg(4, 4).rounds()?, Vec::<usize>::new());
        assert!(cfg(48, 5).rounds().is_err());
        assert!(cfg(2, 4).rounds().is_err());
        Ok(())
    }
}
