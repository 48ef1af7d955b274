//! Note 004 at 784 dimensions (issue 21): ISM (exact trace), SSM, FD-SSM and DSM on MNIST with an
//! MLP — cost per step against dimension and sample quality at equal wall-clock time — then the
//! note's two open questions on real data: sample quality against the process, weighting and
//! t_min of DSM, and the learned score near the data manifold (on noised test digits, as σ → 0)
//! and off it (uniform-noise images, smooth blobs), beside the score of the smoothed training set.

use super::{write_doc, write_text};
use crate::config::TrainConfig;
use crate::data::images::Images;
use crate::data::{mnist, Points};
use crate::images::quality::{features_and_classes, frechet_and_floor, sample_values};
use crate::images::train::{accuracy, fit as fit_classifier};
use crate::images::{ClassifierConfig, ClassifierTraining, NoisyClassifier};
use crate::nn::unet::classifier::ClassifierSpec;
use crate::nn::{Arch, Model, ModelConfig};
use crate::objective::{ObjectiveConfig, Probe, Weighting};
use crate::plot;
use crate::process::{Process, ProcessConfig};
use crate::sample::grid::recommended;
use crate::sample::{self, Options, Plan, Trace};
use crate::score::{times, Parameterisation, ScoreModel};
use crate::train::adam::Adam;
use crate::train::engine::Engine;
use crate::train::{fit, DataSource};
use anyhow::{ensure, Result};
use candle_core::{Device, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Settings of the experiment.
pub struct Settings {
    /// Image sides of the cost table (28 / side must be whole): 7, 14, 28 → d = 49, 196, 784.
    pub sides: Vec<usize>,
    /// Seconds of training per objective in the equal-wall-clock comparison (d = 784).
    pub budget: f64,
    /// Seconds each objective is timed for in the cost table (after one warm-up step).
    pub timing: f64,
    /// Optimiser steps per DSM run of the schedule / weighting comparison.
    pub steps: usize,
    pub batch: usize,
    /// Hidden width of the 3-layer MLP.
    pub width: usize,
    pub lr: f64,
    /// Samples per model; the Fréchet distance uses k = min(n, 500).
    pub n: usize,
    /// Euler–Maruyama steps (DDIM gets a tenth, at least 1).
    pub sampler_steps: usize,
    /// Independent trainings per setting (mean ± standard error).
    pub seeds: usize,
    /// A trained classifier run (`tweedie classifier`) to judge with; None trains one.
    pub classifier: Option<PathBuf>,
    /// Steps of the classifier trained when none is given.
    pub classifier_steps: usize,
    /// Points per set in the manifold section.
    pub points: usize,
    pub seed: u64,
    pub quiet: bool,
}

/// Level t of the cost table (cost does not depend on it).
const TIMING_LEVEL: f64 = 0.1;
/// FD-SSM's finite-difference step (pixel units).
const FD_EPS: f64 = 0.01;
/// Times of the manifold section.
const MANIFOLD_TIMES: [f64; 7] = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0];

/// One objective's cost per step at one dimension.
#[derive(Serialize)]
pub struct CostRow {
    pub objective: String,
    /// "fused" (the CPU MLP kernels) or "candle".
    pub engine: String,
    pub d: usize,
    pub ms_per_step: f64,
    pub steps_timed: usize,
    /// ms per step over DSM's on the same engine and dimension.
    pub ratio_to_dsm: f64,
}

/// One objective's sample quality after the same training time.
#[derive(Serialize)]
pub struct QualityRow {
    pub objective: String,
    pub engine: String,
    /// Optimiser steps reached in the budget, per seed.
    pub steps: Vec<usize>,
    /// Fréchet distance of reverse-SDE (Euler–Maruyama) samples, per seed.
    pub fd_sde: Vec<f64>,
    /// The same for DDIM (η = 0) samples.
    pub fd_ode: Vec<f64>,
    /// Share of sample values outside [−1, 1] (SDE samples, first seed).
    pub clipped: f64,
}

/// One DSM setting after the same number of steps.
#[derive(Serialize)]
pub struct ScheduleRow {
    pub setting: String,
    pub wall_seconds: Vec<f64>,
    pub fd_sde: Vec<f64>,
    pub fd_ode: Vec<f64>,
    /// Mean loss over the last 10% of steps (first seed; not comparable across weightings).
    pub final_loss: f64,
}

/// The learned and the smoothed-training-set score on one set of points at one time.
#[derive(Serialize)]
pub struct ManifoldRow {
    /// "test digits", "uniform noise" or "blobs".
    pub set: String,
    pub t: f64,
    pub sigma: f64,
    /// E‖s_θ(x_t, t)‖·σ_t/√d.
    pub norm_theta: f64,
    /// E‖s_emp(x_t, t)‖·σ_t/√d, s_emp the score of the training digits noised to level t.
    pub norm_emp: f64,
    /// E‖σ_t s_θ + ε‖²/d, the DSM target error (the noise ε that made x_t from x0).
    pub target_err_theta: f64,
    /// E‖σ_t s_emp + ε‖²/d.
    pub target_err_emp: f64,
    /// E‖s_θ − s_emp‖ / E‖s_emp‖.
    pub rel_diff_emp: f64,
}

/// The training procedures compared at equal wall-clock.
#[derive(Clone, Copy, PartialEq)]
enum Objective {
    Dsm,
    Ism,
    Ssm,
    FdSsm,
}

impl Objective {
    const ALL: [Objective; 4] = [
        Objective::Dsm,
        Objective::Ism,
        Objective::Ssm,
        Objective::FdSsm,
    ];

    fn at(self, t: f64) -> ObjectiveConfig {
        let projection = Probe::Rademacher;
        match self {
            Objective::Dsm => ObjectiveConfig::DsmLevel { t },
            Objective::Ism => ObjectiveConfig::Ism { t },
            Objective::Ssm => ObjectiveConfig::Ssm {
                t,
                projection,
                projections: 1,
                variance_reduced: true,
            },
            Objective::FdSsm => ObjectiveConfig::FdSsm {
                t,
                projection,
                eps: FD_EPS,
            },
        }
    }

    fn name(self) -> &'static str {
        match self {
            Objective::Dsm => "DSM",
            Objective::Ism => "ISM (exact trace)",
            Objective::Ssm => "SSM-VR (1 Rademacher)",
            Objective::FdSsm => "FD-SSM (ε = 0.01)",
        }
    }

    /// The level of one step. DSM's per-level loss ½σ²‖s + ε/σ‖² carries the weight σ_t², so
    /// t ~ U(t_min, T); the Stein losses estimate the unweighted Fisher divergence at t, so t is
    /// drawn from q(t) ∝ σ_t² instead (rejection): both then minimise ∫ σ_t² F_t dt up to constants.
    fn level(self, p: &dyn Process, rng: &mut impl Rng) -> f64 {
        let (lo, hi) = (p.t_min(), p.t_max());
        let top = p.sigma(hi).powi(2).max(p.sigma(lo).powi(2));
        loop {
            let t = lo + (hi - lo) * rng.random::<f64>();
            if self == Objective::Dsm || rng.random::<f64>() * top <= p.sigma(t).powi(2) {
                return t;
            }
        }
    }
}

/// MNIST downsampled by averaging f × f blocks of bytes (rounded).
pub fn downsample(im: &Images, f: usize) -> Result<Images> {
    let [c, h, w] = im.shape;
    ensure!(
        f >= 1 && h.is_multiple_of(f) && w.is_multiple_of(f),
        "cannot downsample {h}×{w} images by {f}"
    );
    let (h2, w2) = (h / f, w / f);
    let mut pixels = Vec::with_capacity(im.n * c * h2 * w2);
    for i in 0..im.n {
        let img = im.image(i);
        for ch in 0..c {
            for y in 0..h2 {
                for x in 0..w2 {
                    let mut sum = 0u32;
                    for dy in 0..f {
                        for dx in 0..f {
                            sum += img[ch * h * w + (y * f + dy) * w + x * f + dx] as u32;
                        }
                    }
                    let k = (f * f) as u32;
                    pixels.push(((sum + k / 2) / k) as u8);
                }
            }
        }
    }
    Images::new(
        im.n,
        [c, h2, w2],
        pixels,
        im.labels.clone(),
        "downsampled MNIST",
    )
}

fn mlp(d: usize, width: usize, process: ProcessConfig, seed: u64) -> Result<Model> {
    Model::new(
        ModelConfig {
            arch: Arch {
                width,
                parameterisation: Parameterisation::V,
                ..Default::default()
            },
            ..ModelConfig::default_for(d, process)
        },
        &mut ChaCha8Rng::seed_from_u64(seed),
        &Device::Cpu,
    )
}

fn train_config(s: &Settings, steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        batch: s.batch,
        lr: s.lr,
        label_dropout: 0.0,
        ..Default::default()
    }
}

/// Trains `net` with one level per step (`Objective::level`) until `max_steps` steps or
/// `seconds` have passed (at least `min_steps`); `engine` None picks the fused engine where it
/// applies. Returns (steps, seconds, the objective's engine name).
#[allow(clippy::too_many_arguments)]
fn train_levels(
    net: &Model,
    objective: Objective,
    source: &DataSource,
    tc: &TrainConfig,
    (min_steps, max_steps, seconds): (usize, usize, f64),
    candle: bool,
    warm_up: bool,
    rng: &mut ChaCha8Rng,
) -> Result<(usize, f64, &'static str)> {
    let p = net.process();
    let first = objective.at(TIMING_LEVEL);
    let mut engine = if candle {
        Engine::Candle {
            adam: Adam::new(net.vars())?,
            ema: Vec::new(),
        }
    } else {
        Engine::new(net, &first, Adam::new(net.vars())?, Vec::new())?
    };
    let mut one = |step: usize, rng: &mut ChaCha8Rng, t: f64| -> Result<()> {
        let batch = source.batch(tc.batch, 1.0, rng, net.device(), None, None)?;
        engine.step(net, &objective.at(t), &batch, rng, tc, step)?;
        Ok(())
    };
    if warm_up {
        one(0, rng, TIMING_LEVEL)?;
    }
    let began = Instant::now();
    let mut steps = 0;
    while steps < max_steps && (steps < min_steps || began.elapsed().as_secs_f64() < seconds) {
        let t = if warm_up {
            TIMING_LEVEL
        } else {
            objective.level(p, rng)
        };
        one(steps + usize::from(warm_up), rng, t)?;
        steps += 1;
    }
    let wall = began.elapsed().as_secs_f64();
    let name = engine.name();
    engine.sync(net)?;
    Ok((steps, wall, name))
}

/// The judge: a classifier and the features of the first 2k test digits.
struct Judge {
    model: NoisyClassifier,
    test_features: Vec<f64>,
    k: usize,
    /// Test accuracy at t_min.
    accuracy: f64,
    /// "trained here (…)" or the run folder.
    what: String,
}

impl Judge {
    fn new(s: &Settings, train: &Images, test: &Images) -> Result<Judge> {
        let (model, what) = match &s.classifier {
            Some(dir) => (
                NoisyClassifier::load_run(dir, &Device::Cpu)?,
                format!("the classifier run `{}`", dir.display()),
            ),
            None => {
                let config = ClassifierConfig {
                    data: mnist::NAME.into(),
                    process: ProcessConfig::vp_default(),
                    spec: ClassifierSpec::small(&train.shape, 10),
                    train: ClassifierTraining {
                        steps: s.classifier_steps,
                        clean_fraction: 1.0,
                        seed: s.seed,
                        ..Default::default()
                    },
                };
                let mut model = NoisyClassifier::new(config, &Device::Cpu)?;
                let began = Instant::now();
                fit_classifier(&mut model, train, None, None)?;
                let what = format!(
                    "a classifier trained here: `tweedie classifier`'s network and recipe with {} steps of batch 64 and every image at t = t_min (clean fraction 1), {:.0} s",
                    s.classifier_steps,
                    began.elapsed().as_secs_f64()
                );
                (model, what)
            }
        };
        let t_min = model.process.t_min();
        let accuracy = accuracy(&model, test, &[t_min], s.seed)?[0].accuracy;
        let k = s.n.min(test.n / 2);
        ensure!(k >= 2, "the Fréchet distance needs --n of at least 2");
        let rows: Vec<usize> = (0..2 * k).collect();
        let tx = test.values::<ChaCha8Rng>(&rows, None);
        let (test_features, _) = features_and_classes(&model, &tx, 2 * k)?;
        Ok(Judge {
            model,
            test_features,
            k,
            accuracy,
            what,
        })
    }

    /// (Fréchet distance, floor, share of values clipped) of samples [n, 784].
    fn judge(&self, samples: &Points) -> Result<(f64, f64, f64)> {
        let (x, clipped) = sample_values(&self.model, samples)?;
        let (fs, _) = features_and_classes(&self.model, &x, self.k)?;
        let f = self.model.config.spec.features();
        let (fd, floor) = frechet_and_floor(&fs, &self.test_features, self.k, f)?;
        Ok((fd, floor, clipped))
    }
}

/// Fréchet distances (and clipped share) of reverse-SDE and DDIM samples of `net`, each ending
/// with one Tweedie denoising step.
fn quality(net: Model, s: &Settings, judge: &Judge, seed: u64) -> Result<[(f64, f64); 2]> {
    let net = if crate::nn::fused::enabled() {
        net.for_inference()?
    } else {
        net
    };
    let mut out = [(0.0, 0.0); 2];
    let plans = [
        ("em", s.sampler_steps),
        ("ddim", (s.sampler_steps / 10).max(1)),
    ];
    for (k, (sampler, steps)) in plans.into_iter().enumerate() {
        let plan = Plan {
            sampler,
            grid: recommended(sampler),
            steps,
            options: Options::default(),
            denoise_final: true,
        };
        // a model that sends the sampler to non-finite values scores NaN ("diverged")
        let Ok(x) = sample::generate(
            &net,
            net.process(),
            &plan,
            s.n,
            &mut ChaCha8Rng::seed_from_u64(seed),
            &Device::Cpu,
            &mut Trace::default(),
        ) else {
            out[k] = (f64::NAN, f64::NAN);
            continue;
        };
        let pts = Points::new(s.n, net.dim(), crate::flat::values::<f64>(&x)?)?;
        let (fd, _, clipped) = judge.judge(&pts)?;
        out[k] = (fd, clipped);
    }
    Ok(out)
}

/// Per-step cost of each objective at each side; fused rows first, then candle rows.
fn cost_table(s: &Settings, train: &Images) -> Result<Vec<CostRow>> {
    let mut rows = Vec::new();
    let runs: [(Objective, bool); 6] = [
        (Objective::Dsm, false),
        (Objective::Ism, false),
        (Objective::Ssm, false),
        (Objective::Dsm, true),
        (Objective::Ssm, true),
        (Objective::FdSsm, true),
    ];
    for &side in &s.sides {
        ensure!(
            side >= 1 && train.shape[1].is_multiple_of(side),
            "image side {side} does not divide 28"
        );
        let im = downsample(train, train.shape[1] / side)?;
        let d = im.dim();
        let source = DataSource::Images(Images { labels: None, ..im });
        let tc = train_config(s, usize::MAX);
        let mut dsm = [f64::NAN; 2];
        for (objective, candle) in runs {
            let net = mlp(d, s.width, ProcessConfig::vp_default(), s.seed)?;
            let mut rng = ChaCha8Rng::seed_from_u64(s.seed + 1);
            let (steps, wall, engine) = train_levels(
                &net,
                objective,
                &source,
                &tc,
                (2, 1000, s.timing),
                candle,
                true,
                &mut rng,
            )?;
            let ms = 1e3 * wall / steps as f64;
            if objective == Objective::Dsm {
                dsm[usize::from(candle)] = ms;
            }
            rows.push(CostRow {
                objective: objective.name().into(),
                engine: engine.into(),
                d,
                ms_per_step: ms,
                steps_timed: steps,
                ratio_to_dsm: ms / dsm[usize::from(candle)],
            });
        }
    }
    Ok(rows)
}

/// Each objective trained for `s.budget` seconds at d = 784, then sampled and judged.
fn equal_time(s: &Settings, source: &DataSource, judge: &Judge) -> Result<Vec<QualityRow>> {
    let mut rows = Vec::new();
    let tc = train_config(s, usize::MAX);
    for objective in Objective::ALL {
        let mut row = QualityRow {
            objective: objective.name().into(),
            engine: String::new(),
            steps: Vec::new(),
            fd_sde: Vec::new(),
            fd_ode: Vec::new(),
            clipped: f64::NAN,
        };
        for k in 0..s.seeds as u64 {
            let seed = s.seed + 100 * k;
            let net = mlp(source.dim(), s.width, ProcessConfig::vp_default(), seed)?;
            let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
            let (steps, _, engine) = train_levels(
                &net,
                objective,
                source,
                &tc,
                (1, usize::MAX, s.budget),
                false,
                false,
                &mut rng,
            )?;
            let [(sde, clipped), (ode, _)] = quality(net, s, judge, seed + 2)?;
            if k == 0 {
                row.clipped = clipped;
            }
            row.engine = engine.into();
            row.steps.push(steps);
            row.fd_sde.push(sde);
            row.fd_ode.push(ode);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The DSM settings of the schedule / weighting comparison: (label, process, weighting).
fn schedule_settings() -> Vec<(&'static str, ProcessConfig, Weighting)> {
    let vp = |t_min| ProcessConfig::Vp {
        beta_min: 0.1,
        beta_max: 20.0,
        t_min,
    };
    vec![
        ("VP, λ = σ², t_min = 1e-3", vp(1e-3), Weighting::Sigma2),
        (
            "VP, likelihood weighting λ = g² (t importance-sampled), t_min = 1e-3",
            vp(1e-3),
            Weighting::G2Importance,
        ),
        ("VP, λ = 1, t_min = 1e-3", vp(1e-3), Weighting::One),
        ("VP, λ = σ², t_min = 1e-5", vp(1e-5), Weighting::Sigma2),
        (
            "VE σ 0.01 → 50, λ = σ², t_min = 1e-3",
            ProcessConfig::Ve {
                sigma_min: 0.01,
                sigma_max: 50.0,
                t_min: 1e-3,
            },
            Weighting::Sigma2,
        ),
    ]
}

/// The schedule / weighting comparison; also returns the first setting's first-seed model.
fn schedules(
    s: &Settings,
    source: &DataSource,
    judge: &Judge,
) -> Result<(Vec<ScheduleRow>, Model)> {
    let mut rows = Vec::new();
    let mut kept = None;
    let tc = train_config(s, s.steps);
    for (label, process, weighting) in schedule_settings() {
        let mut row = ScheduleRow {
            setting: label.into(),
            wall_seconds: Vec::new(),
            fd_sde: Vec::new(),
            fd_ode: Vec::new(),
            final_loss: f64::NAN,
        };
        for k in 0..s.seeds as u64 {
            let seed = s.seed + 100 * k;
            let net = mlp(source.dim(), s.width, process.clone(), seed)?;
            let began = Instant::now();
            let losses = fit(
                &net,
                &ObjectiveConfig::Dsm { weighting },
                source,
                None,
                &tc,
                &mut ChaCha8Rng::seed_from_u64(seed + 1),
            )?;
            row.wall_seconds.push(began.elapsed().as_secs_f64());
            if k == 0 {
                let tail = &losses[losses.len() * 9 / 10..];
                row.final_loss = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
            }
            if kept.is_none() {
                // the manifold section's model: a copy of the weights before sampling freezes them
                let copy = mlp(source.dim(), s.width, process.clone(), seed)?;
                for ((_, a), (_, b)) in copy.vars().iter().zip(net.vars()) {
                    a.set(b.as_tensor())?;
                }
                kept = Some(copy);
            }
            let [(sde, _), (ode, _)] = quality(net, s, judge, seed + 2)?;
            row.fd_sde.push(sde);
            row.fd_ode.push(ode);
        }
        rows.push(row);
    }
    Ok((rows, kept.expect("at least one setting")))
}

/// Smooth blobs in [−1, 1]: −1 + 2·exp(−‖p − c‖²/(2w²)), centre c uniform over the image,
/// width w ~ U(2, 6) pixels.
fn blobs(n: usize, side: usize, rng: &mut impl Rng) -> Vec<f64> {
    let mut out = Vec::with_capacity(n * side * side);
    for _ in 0..n {
        let (cy, cx) = (
            rng.random::<f64>() * side as f64,
            rng.random::<f64>() * side as f64,
        );
        let w = 2.0 + 4.0 * rng.random::<f64>();
        for y in 0..side {
            for x in 0..side {
                let r2 = (y as f64 - cy).powi(2) + (x as f64 - cx).powi(2);
                out.push(-1.0 + 2.0 * (-r2 / (2.0 * w * w)).exp());
            }
        }
    }
    out
}

/// The score of the training points noised to level t, p_t(x) = mean_i N(x; α x_i, σ² I):
/// (α E[x0 | x] − x)/σ² with softmax weights over the training points.
fn empirical_score(
    train: &Tensor,
    sq: &Tensor,
    x: &Tensor,
    alpha: f64,
    sigma: f64,
) -> Result<Tensor> {
    let s2 = sigma * sigma;
    // logits_ij = (2α x·x_j − α²‖x_j‖²)/(2σ²) (the ‖x‖² term cancels in the softmax)
    let cross = (x.matmul(&train.t()?)? * (alpha / s2))?;
    let logits = cross.broadcast_sub(&(sq * (alpha * alpha / (2.0 * s2)))?)?;
    let m = logits.max_keepdim(D::Minus1)?;
    let w = logits.broadcast_sub(&m)?.exp()?;
    let w = w.broadcast_div(&w.sum_keepdim(D::Minus1)?)?;
    let x0 = w.matmul(train)?;
    Ok((((x0 * alpha)? - x)? / s2)?)
}

/// The manifold section: learned and smoothed-training-set scores on noised test digits,
/// uniform-noise images and blobs at each of `MANIFOLD_TIMES`.
fn manifold(s: &Settings, net: &Model, train: &Images, test: &Images) -> Result<Vec<ManifoldRow>> {
    let d = train.dim();
    let all: Vec<usize> = (0..train.n).collect();
    let tr = train.values::<ChaCha8Rng>(&all, None);
    let tr: Vec<f64> = tr.iter().map(|&v| v as f64).collect();
    let train_t = Tensor::from_vec(tr, (train.n, d), &Device::Cpu)?;
    let sq = train_t.sqr()?.sum(1)?.unsqueeze(0)?;
    let m = s.points.min(test.n);
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed + 7);
    let rows: Vec<usize> = (0..m).collect();
    let digits: Vec<f64> = test
        .values(&rows, Some(&mut rng))
        .iter()
        .map(|&v| v as f64)
        .collect();
    let uniform: Vec<f64> = (0..m * d)
        .map(|_| 2.0 * rng.random::<f64>() - 1.0)
        .collect();
    let side = train.shape[1];
    let sets = [
        ("test digits", digits),
        ("uniform noise", uniform),
        ("blobs", blobs(m, side, &mut rng)),
    ];
    let p = net.process();
    let mut out = Vec::new();
    for (name, x0) in &sets {
        for &t in &MANIFOLD_TIMES {
            let t = t.max(p.t_min()).min(p.t_max());
            let (alpha, sigma) = (p.alpha(t), p.sigma(t));
            let eps: Vec<f64> = (0..m * d)
                .map(|_| rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng))
                .collect();
            let xt: Vec<f64> = x0
                .iter()
                .zip(&eps)
                .map(|(x, e)| alpha * x + sigma * e)
                .collect();
            let xt_t = Tensor::from_vec(xt, (m, d), &Device::Cpu)?;
            let theta: Vec<f64> = crate::flat::values(&net.score(
                &xt_t.to_dtype(net.dtype())?,
                &times(t, m, net.dtype(), &Device::Cpu)?,
            )?)?;
            let emp: Vec<f64> =
                crate::flat::values(&empirical_score(&train_t, &sq, &xt_t, alpha, sigma)?)?;
            let (mut nt, mut ne, mut et, mut ee, mut diff) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for i in 0..m {
                let r = i * d..(i + 1) * d;
                let (a, b, e) = (&theta[r.clone()], &emp[r.clone()], &eps[r]);
                let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
                let err = |v: &[f64]| {
                    v.iter()
                        .zip(e)
                        .map(|(s, e)| (sigma * s + e).powi(2))
                        .sum::<f64>()
                };
                nt += norm(a);
                ne += norm(b);
                et += err(a);
                ee += err(b);
                diff += a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).powi(2))
                    .sum::<f64>()
                    .sqrt();
            }
            let (mf, df) = (m as f64, d as f64);
            out.push(ManifoldRow {
                set: name.to_string(),
                t,
                sigma,
                norm_theta: nt / mf * sigma / df.sqrt(),
                norm_emp: ne / mf * sigma / df.sqrt(),
                target_err_theta: et / mf / df,
                target_err_emp: ee / mf / df,
                rel_diff_emp: diff / ne,
            });
        }
    }
    Ok(out)
}

/// Everything the page reports.
#[derive(Serialize)]
pub struct Results {
    pub cost: Vec<CostRow>,
    pub equal_time: Vec<QualityRow>,
    pub schedules: Vec<ScheduleRow>,
    pub manifold: Vec<ManifoldRow>,
    pub frechet_floor: f64,
    pub frechet_k: usize,
    pub classifier_accuracy: f64,
    pub wall_seconds: f64,
    /// /proc/loadavg's 1-minute load at the start and the end (other work on the machine).
    pub load: (f64, f64),
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Runs the experiment; writes mnist.{md,json} and mnist_manifold.png into `out`.
pub fn run(s: &Settings, out: &Path) -> Result<Results> {
    ensure!(
        s.seeds >= 1 && s.steps >= 1 && s.batch >= 1 && s.width >= 1 && s.n >= 2,
        "--seeds, --steps, --batch and --width must be at least 1 and --n at least 2"
    );
    ensure!(
        s.budget > 0.0 && s.lr > 0.0 && s.sampler_steps >= 1 && s.points >= 1,
        "--budget, --lr, --sampler-steps and --points must be positive"
    );
    super::create_dir(out)?;
    let began = Instant::now();
    let load0 = load_average();
    let (train, test) = mnist::split()?;
    let bar = crate::progress::bar(5, 0, s.quiet);
    bar.set_message("classifier");
    let judge = Judge::new(s, &train, &test)?;
    bar.inc(1);
    bar.set_message("cost per step");
    let cost = cost_table(s, &train)?;
    bar.inc(1);
    let source = DataSource::Images(Images {
        labels: None,
        ..train.clone()
    });
    bar.set_message("equal wall-clock");
    let equal_time = equal_time(s, &source, &judge)?;
    bar.inc(1);
    bar.set_message("schedules");
    let (schedules, model) = schedules(s, &source, &judge)?;
    bar.inc(1);
    bar.set_message("manifold");
    let manifold = manifold(s, &model, &train, &test)?;
    bar.inc(1);
    bar.finish_and_clear();
    let floor = {
        let f = judge.model.config.spec.features();
        frechet_and_floor(&judge.test_features, &judge.test_features, judge.k, f)?.1
    };
    let results = Results {
        cost,
        equal_time,
        schedules,
        manifold,
        frechet_floor: floor,
        frechet_k: judge.k,
        classifier_accuracy: judge.accuracy,
        wall_seconds: began.elapsed().as_secs_f64(),
        load: (load0, load_average()),
    };
    plot_manifold(&results.manifold, &out.join("mnist_manifold.png"))?;
    write_doc(&out.join("mnist.md"), &report(s, &judge, &results))?;
    write_text(
        &out.join("mnist.json"),
        &serde_json::to_string_pretty(&results)?,
    )?;
    Ok(results)
}

fn plot_manifold(rows: &[ManifoldRow], path: &Path) -> Result<()> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for set in ["test digits", "uniform noise", "blobs"] {
        let of = |f: fn(&ManifoldRow) -> f64| -> Vec<(f64, f64)> {
            rows.iter()
                .filter(|r| r.set == set)
                .map(|r| (r.sigma, f(r)))
                .collect()
        };
        series.push((format!("{set}: learned s_θ"), of(|r| r.norm_theta)));
        series.push((format!("{set}: smoothed training set"), of(|r| r.norm_emp)));
    }
    let sigmas: Vec<f64> = rows
        .iter()
        .filter(|r| r.set == "test digits")
        .map(|r| r.sigma)
        .collect();
    series.push((
        "‖ε‖/σ: the 1/σ law (= 1)".into(),
        sigmas.iter().map(|&s| (s, 1.0)).collect(),
    ));
    let refs: Vec<plot::Series> = series
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    plot::line_plot_axes(
        path,
        &plot::Axes {
            title: "MNIST: E‖s(x_t, t)‖·σ_t/√d against σ_t (VP, DSM λ = σ²)",
            x_label: "σ_t",
            y_label: "E‖s‖·σ_t/√d",
            log_x: true,
            log_y: true,
        },
        &refs,
    )
}

/// "m ± se" over seeds (just m for one).
fn mean_se(v: &[f64], digits: usize) -> String {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return format!("{m:.digits$}");
    }
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    format!("{m:.digits$} ± {:.digits$}", (var / n).sqrt())
}

fn report(s: &Settings, judge: &Judge, r: &Results) -> String {
    let sides: Vec<String> = s.sides.iter().map(|x| x.to_string()).collect();
    let classifier = match &s.classifier {
        Some(dir) => format!(" --classifier {}", dir.display()),
        None => format!(" --classifier-steps {}", s.classifier_steps),
    };
    let mut md = format!(
        "# Note 004 at 784 dimensions: score matching on MNIST\n\n\
         Generated by `tweedie experiment mnist --sides {} --budget {} --timing {} --steps {} --batch {} --width {} --lr {} --n {} \
         --sampler-steps {} --seeds {} --points {}{} --seed {}` in {:.0} s (1-minute load average {:.1} at the start, \
         {:.1} at the end, on a machine with {} cores: other work shared it, so times are upper bounds).\n\n\
         Data: the shipped MNIST digits' fixed split (9000 training, 1000 test), pixels in [−1, 1] with uniform \
         dequantisation afresh per batch. Network everywhere: a 3×{} SiLU MLP (32 Fourier features of t), \
         v-parameterised (v̂ ≈ α_t ε − σ_t x0, ε̂ = (σ_t x + α_t v̂)/(α_t² + σ_t²), s = −ε̂/σ_t; ε-prediction needs ε̂ ≈ x at large t, an identity on 784 dimensions that a width-256 MLP cannot represent: in a trial its samples diverged, FD ≈ 18), Adam at a constant learning rate {}, batch {}, no EMA; VP process \
         (β 0.1 → 20, t_min = 1e-3) unless a row says otherwise. Sample quality: the Fréchet distance (FD) in the \
         32 penultimate features of a noise-conditional MNIST classifier read at t_min, between k = {} samples \
         (clipped to [−1, 1]) and test digits 0..k; its floor — test digits k..2k against 0..k — is **{:.3}**. The \
         judge is {}; its test accuracy at t_min is {:.3}. Samples are unconditional (no class accuracy): \
         Euler–Maruyama with {} steps (\"SDE\") and DDIM η = 0 with {} steps on the log-SNR grid (\"ODE\"), \
         each finished with one Tweedie denoising step; the same starting noise for every model. \
         NaN: the sampler met a non-finite score (the model sent it off to infinity).\n",
        sides.join(","),
        s.budget,
        s.timing,
        s.steps,
        s.batch,
        s.width,
        s.lr,
        s.n,
        s.sampler_steps,
        s.seeds,
        s.points,
        classifier,
        s.seed,
        r.wall_seconds,
        r.load.0,
        r.load.1,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        s.width,
        s.lr,
        s.batch,
        r.frechet_k,
        r.frechet_floor,
        judge.what,
        r.classifier_accuracy,
        s.sampler_steps,
        (s.sampler_steps / 10).max(1),
    );
    md.push_str(&format!(
        "\n## Cost per step against dimension\n\n\
         MNIST averaged down to 7×7, 14×14 and 28×28 (d = 49, 196, 784). One training step (batch {}, the MLP \
         above with input d) of each objective at the level t = {}: DSM at one level (Vincent 2011); ISM \
         (Hyvärinen 2005) with the exact trace Σ_j e_jᵀ(∂s/∂x)e_j from d forward-mode tangents; SSM with the \
         variance-reduced loss and one Rademacher projection (one tangent); FD-SSM (Pang et al. 2020) from \
         s(x ± εv), two extra evaluations, ε = {}. The fused engine (the project's CPU MLP kernels with \
         exact forward-mode tangents) runs DSM, ISM and SSM; it has no FD-SSM, so DSM, SSM and FD-SSM are \
         also timed on candle's ops. Each row: one warm-up step, then steps for at least {} s (at least 2).\n\n\
         | objective | engine | d | ms / step | steps timed | × DSM (same engine) |\n|---|---|---|---|---|---|\n",
        s.batch, TIMING_LEVEL, FD_EPS, s.timing
    ));
    for c in &r.cost {
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} | {} | {:.1} |\n",
            c.objective, c.engine, c.d, c.ms_per_step, c.steps_timed, c.ratio_to_dsm
        ));
    }
    md.push_str(&format!(
        "\n## Sample quality at equal wall-clock time (d = 784)\n\n\
         Each objective trains the MLP for {} s of wall-clock time (seeds {}), one noise level per step. DSM draws \
         t ~ U(t_min, 1) and its per-level loss ½σ_t²‖s + ε/σ_t‖² carries the weight σ_t²; the Stein objectives \
         (ISM, SSM, FD-SSM) estimate the unweighted Fisher divergence F_t = ½E‖s − ∇log p_t‖² (up to a constant) \
         at their level, so their level is drawn from q(t) ∝ σ_t² instead: all four then minimise the same \
         ∫ σ_t² F_t dt up to constants and differ only in the estimator's cost and variance. ESM is impossible \
         here: no true score of MNIST is known.\n\n\
         | objective | engine | steps in {} s | FD SDE | FD ODE | values clipped (SDE) |\n|---|---|---|---|---|---|\n",
        s.budget,
        s.seeds,
        s.budget
    ));
    for q in &r.equal_time {
        let steps: Vec<f64> = q.steps.iter().map(|&x| x as f64).collect();
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1}% |\n",
            q.objective,
            q.engine,
            mean_se(&steps, 0),
            mean_se(&q.fd_sde, 3),
            mean_se(&q.fd_ode, 3),
            100.0 * q.clipped
        ));
    }
    md.push_str(&format!(
        "\n## Open question 1: σ-schedule and weighting (DSM, equal steps)\n\n\
         Continuous-time DSM, E_t λ(t)·½‖s(x_t, t) + ε/σ_t‖² with t ~ U(t_min, 1) per sample, {} steps of batch {} \
         for every setting (seeds {}). Losses are not comparable across weightings.\n\n\
         | setting | wall s | FD SDE | FD ODE | final loss |\n|---|---|---|---|---|\n",
        s.steps, s.batch, s.seeds
    ));
    for q in &r.schedules {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.4} |\n",
            q.setting,
            mean_se(&q.wall_seconds, 0),
            mean_se(&q.fd_sde, 3),
            mean_se(&q.fd_ode, 3),
            q.final_loss
        ));
    }
    md.push_str(&format!(
        "\n## Open question 2: the learned score near and off the data manifold\n\n\
         The first setting's model (VP, λ = σ², t_min = 1e-3, first seed) at x_t = α_t x0 + σ_t ε for {} points of \
         each set: **test digits** (dequantised, never trained on), **uniform noise** images (every pixel \
         U(−1, 1): far from the digits) and smooth **blobs** (−1 + 2·exp(−‖p − c‖²/2w²), centre uniform, width \
         2–6 pixels: image-like, not digits). Beside the learned score s_θ, s_emp is the score of the 9000 \
         training digits (bin centres) noised to the same level, p_t(x) = mean_i N(x; α_t x_i, σ_t² I): the exact \
         minimiser of DSM on this finite training set, which memorises (at small σ it points to the nearest \
         training digit). Columns: E‖s‖·σ_t/√d — 1 is the 1/σ law the theory predicts for x_t near the data \
         (‖ε‖/σ_t = √d/σ_t); near a k-dimensional manifold the true score keeps only the normal part of the \
         noise, ‖s‖ ≈ √(d − k)/σ_t, so slightly below 1; E‖σ_t s + ε‖²/d, the DSM target error (its expectation \
         is the irreducible part of DSM's loss; for data on a k-dimensional manifold the true score gives k/d as \
         σ → 0); and E‖s_θ − s_emp‖/E‖s_emp‖. Off the data the true score of p_t grows like dist/σ_t², faster \
         than 1/σ_t: there E‖s_emp‖σ_t/√d ≫ 1.\n\n\
         | set | t | σ_t | E‖s_θ‖σ/√d | E‖s_emp‖σ/√d | E‖σs_θ + ε‖²/d | E‖σs_emp + ε‖²/d | ‖s_θ − s_emp‖ / ‖s_emp‖ |\n\
         |---|---|---|---|---|---|---|---|\n",
        s.points.min(1000)
    ));
    for m in &r.manifold {
        md.push_str(&format!(
            "| {} | {} | {:.4} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            m.set,
            m.t,
            m.sigma,
            m.norm_theta,
            m.norm_emp,
            m.target_err_theta,
            m.target_err_emp,
            m.rel_diff_emp
        ));
    }
    md.push_str(
        "\n![E‖s‖σ/√d against σ, learned and smoothed-training-set scores](mnist_manifold.png)\n",
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_averages_blocks() {
        let im = Images::new(1, [1, 2, 4], vec![0, 2, 10, 10, 4, 255, 10, 11], None, "t").unwrap();
        let half = downsample(&im, 2).unwrap();
        assert_eq!(half.shape, [1, 1, 2]);
        // (0 + 2 + 4 + 255)/4 = 65.25 → 65; (10 + 10 + 10 + 11)/4 = 10.25 → 10
        assert_eq!(half.pixels, vec![65, 10]);
        assert!(downsample(&im, 3).is_err());
    }

    #[test]
    fn empirical_score_of_one_point_is_the_gaussian_score() {
        let train = Tensor::new(&[[1.0f64, -2.0]], &Device::Cpu).unwrap();
        let sq = train.sqr().unwrap().sum(1).unwrap().unsqueeze(0).unwrap();
        let x = Tensor::new(&[[0.5f64, 0.5]], &Device::Cpu).unwrap();
        let s: Vec<f64> =
            crate::flat::values(&empirical_score(&train, &sq, &x, 0.8, 0.5).unwrap()).unwrap();
        // (α x0 − x)/σ² = ((0.8, −1.6) − (0.5, 0.5))/0.25
        assert!(
            (s[0] - 1.2).abs() < 1e-12 && (s[1] + 8.4).abs() < 1e-12,
            "{s:?}"
        );
    }

    /// Every section on tiny settings: finite numbers, every JSON key, the page and the figure.
    #[test]
    fn the_experiment_runs_on_tiny_settings() {
        let out = std::env::temp_dir().join(format!("tweedie-mnist-exp-{}", std::process::id()));
        let s = Settings {
            sides: vec![7],
            budget: 0.2,
            timing: 0.05,
            steps: 3,
            batch: 8,
            width: 16,
            lr: 1e-3,
            n: 8,
            sampler_steps: 10,
            seeds: 1,
            classifier: None,
            classifier_steps: 2,
            points: 4,
            seed: 0,
            quiet: true,
        };
        let r = run(&s, &out).unwrap();
        assert_eq!(r.cost.len(), 6);
        assert!(r.cost.iter().all(|c| c.ms_per_step > 0.0 && c.d == 49));
        // ISM's exact trace pushes 49 tangents, SSM one
        let ism = &r.cost[1];
        assert!(ism.objective.starts_with("ISM") && ism.ratio_to_dsm > 1.0);
        assert_eq!(r.equal_time.len(), 4);
        assert!(r
            .equal_time
            .iter()
            .all(|q| q.steps[0] >= 1 && q.fd_sde[0].is_finite() && q.fd_ode[0].is_finite()));
        assert_eq!(r.schedules.len(), schedule_settings().len());
        assert!(r.schedules.iter().all(|q| q.fd_sde[0].is_finite()));
        assert_eq!(r.manifold.len(), 3 * MANIFOLD_TIMES.len());
        for m in &r.manifold {
            for v in [
                m.norm_theta,
                m.norm_emp,
                m.target_err_theta,
                m.target_err_emp,
                m.rel_diff_emp,
            ] {
                assert!(v.is_finite() && v >= 0.0, "{m:?}", m = m.set);
            }
        }
        // noised test digits at the largest level: the smoothed training set's score is nearly
        // the prior's, −x/σ², so its norm·σ/√d is close to 1
        let top = r
            .manifold
            .iter()
            .find(|m| m.set == "test digits" && m.t == 1.0)
            .unwrap();
        assert!((top.norm_emp - 1.0).abs() < 0.2, "{}", top.norm_emp);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("mnist.json")).unwrap())
                .unwrap();
        for key in [
            "cost",
            "equal_time",
            "schedules",
            "manifold",
            "frechet_floor",
            "classifier_accuracy",
        ] {
            assert!(json.get(key).is_some(), "mnist.json lacks {key}");
        }
        let md = std::fs::read_to_string(out.join("mnist.md")).unwrap();
        assert!(md.contains("Produced at") && md.contains("| test digits |"));
        assert!(out.join("mnist_manifold.png").exists());
        std::fs::remove_dir_all(&out).unwrap();
    }
}
