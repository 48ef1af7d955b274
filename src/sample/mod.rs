//! Samplers: reverse-time SDE, Langevin and probability-flow ODE solvers (score_sde `sampling.py`,
//! k-diffusion `sampling.py`, EDM, DPM-Solver).
//!
//! Every sampler has the same signature: a `ScoreModel`, the `Process`, the start x_T, a decreasing
//! time grid t_0 = T > … > t_N = t_min (see `grid`), the `Options`, a seeded generator and a
//! `Trace` that counts function evaluations (NFE), checks for NaN and can keep the trajectory.
//! Samplers keep their state in buffers that every step reuses (`state`, `crate::ode`): flat on
//! the CPU, tensors on the model's device on a GPU.

pub mod flow;
pub mod grid;
pub mod sde;
mod state;

use crate::process::Process;
use crate::score::{times, tweedie_coefficients, ScoreModel};
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Records NFE and (optionally) the states along a trajectory.
#[derive(Default)]
pub struct Trace {
    /// Number of score evaluations so far.
    pub nfe: usize,
    /// Keep (t, x_t) after every step.
    pub keep: bool,
    pub states: Vec<(f64, Tensor)>,
    /// Progress bar advanced once per step.
    pub bar: Option<indicatif::ProgressBar>,
}

impl Trace {
    /// s(x, t), counted, with a NaN check naming the step and time.
    pub fn score(
        &mut self,
        model: &dyn ScoreModel,
        x: &Tensor,
        t: f64,
        step: usize,
    ) -> Result<Tensor> {
        self.nfe += 1;
        // detach: a trained network's score carries its autograd graph, and each new state would
        // keep every earlier step's graph (and activations) alive
        let s = model
            .score(x, &times(t, x.dims()[0], x.dtype(), x.device())?)?
            .detach();
        if !all_finite(&s)? {
            bail!("the score is NaN or infinite at step {step} (t = {t:.6}); the model or the step size is unstable");
        }
        Ok(s)
    }

    /// Tweedie's denoiser x̂0 = (x + σ_t² s(x, t))/α_t, counted like `score`.
    pub fn denoise(
        &mut self,
        model: &dyn ScoreModel,
        p: &dyn Process,
        x: &Tensor,
        t: f64,
        step: usize,
    ) -> Result<Tensor> {
        let s = self.score(model, x, t, step)?;
        let (c_x, c_s) = tweedie_coefficients(p.alpha(t), p.sigma(t));
        Ok(((x * c_x)? + (s * c_s)?)?)
    }

    /// Called after every step with the new state.
    pub fn record(&mut self, t: f64, x: &Tensor) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        if self.keep {
            self.states.push((t, x.clone()));
        }
    }

    /// `record` for a state kept elsewhere: `x` builds its tensor only if the trajectory is kept.
    pub fn record_with(&mut self, t: f64, x: impl FnOnce() -> Result<Tensor>) -> Result<()> {
        if self.keep {
            self.record(t, &x()?);
        } else if let Some(b) = &self.bar {
            b.inc(1);
        }
        Ok(())
    }
}

fn all_finite(x: &Tensor) -> Result<bool> {
    let s = x
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?;
    Ok(s.is_finite())
}

/// Sampler settings; each sampler reads the fields it needs and ignores the rest.
#[derive(Clone, Debug)]
pub struct Options {
    /// Adaptive ODE: relative and absolute tolerance, NFE cap.
    pub rtol: f64,
    pub atol: f64,
    pub max_nfe: usize,
    /// DDIM: η = 0 deterministic, η = 1 ancestral (DDPM) noise.
    pub eta: f64,
    /// Predictor–corrector: the predictor (em, reverse_diffusion, ancestral), signal-to-noise
    /// ratio of the Langevin corrector and corrector steps per time step.
    pub predictor: String,
    pub snr: f64,
    pub corrector_steps: usize,
    /// Langevin: base step ε (annealed: step ε·σ_t²/σ_{t_min}², NCSN) and steps per noise level.
    pub langevin_eps: f64,
    pub langevin_steps: usize,
    /// Plain Langevin: step δ.
    pub langevin_step: f64,
    /// EDM stochastic Heun: S_churn, S_min, S_max, S_noise (Karras et al. 2022, Alg. 2).
    pub s_churn: f64,
    pub s_min: f64,
    pub s_max: f64,
    pub s_noise: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rtol: 1e-5,
            atol: 1e-5,
            max_nfe: 10_000,
            eta: 0.0,
            predictor: "reverse_diffusion".into(),
            snr: 0.16,
            corrector_steps: 1,
            langevin_eps: 2e-5,
            langevin_steps: 10,
            langevin_step: 0.01,
            s_churn: 0.0,
            s_min: 0.0,
            s_max: f64::INFINITY,
            s_noise: 1.0,
        }
    }
}

impl Options {
    /// Rejects values no sampler can use.
    pub fn check(&self) -> Result<()> {
        if !(self.rtol > 0.0 && self.atol > 0.0) {
            bail!(
                "rtol and atol must be positive (got {}, {})",
                self.rtol,
                self.atol
            );
        }
        if !(self.eta >= 0.0
            && self.snr > 0.0
            && self.langevin_eps > 0.0
            && self.langevin_step > 0.0
            && self.s_churn >= 0.0
            && self.s_noise >= 0.0)
        {
            bail!("eta, s_churn and s_noise must be >= 0 and snr, langevin_eps > 0");
        }
        if self.langevin_steps == 0 {
            bail!("langevin_steps must be at least 1");
        }
        Ok(())
    }
}

/// The common signature of every sampler.
pub type Sampler = fn(
    &dyn ScoreModel,
    &dyn Process,
    Tensor,
    &[f64],
    &Options,
    &mut ChaCha8Rng,
    &mut Trace,
) -> Result<Tensor>;

/// Every sampler by name, with a one-line description.
pub const SAMPLERS: &[(&str, Sampler, &str)] = &[
    ("em", sde::euler_maruyama, "reverse SDE, Euler–Maruyama"),
    (
        "reverse_diffusion",
        sde::reverse_diffusion,
        "reverse SDE, score_sde reverse-diffusion predictor",
    ),
    (
        "ancestral",
        sde::ancestral,
        "ancestral sampling (DDPM posterior; any process)",
    ),
    (
        "pc",
        sde::predictor_corrector,
        "predictor–corrector: --predictor + Langevin corrector (snr rule)",
    ),
    (
        "langevin",
        sde::langevin,
        "plain Langevin dynamics at t_min (loses mode weights)",
    ),
    (
        "annealed_langevin",
        sde::annealed_langevin,
        "annealed Langevin dynamics over the grid's noise levels (NCSN)",
    ),
    ("euler", flow::euler, "PF-ODE, Euler"),
    ("heun", flow::heun, "PF-ODE, Heun"),
    ("rk4", flow::rk4, "PF-ODE, classical Runge–Kutta 4"),
    (
        "dopri5",
        flow::dopri5,
        "PF-ODE, adaptive Dormand–Prince 5(4) (rtol, atol, max_nfe)",
    ),
    ("ddim", flow::ddim, "DDIM (eta = 0 deterministic)"),
    ("dpm1", flow::dpm_solver_1, "DPM-Solver-1 (= DDIM, eta = 0)"),
    ("dpm2", flow::dpm_solver_2, "DPM-Solver-2, single-step"),
    ("dpm3", flow::dpm_solver_3, "DPM-Solver-3, single-step"),
    (
        "dpmpp_2m",
        flow::dpm_solver_pp_2m,
        "DPM-Solver++(2M), multistep",
    ),
    (
        "dpmpp_3m",
        flow::dpm_solver_pp_3m,
        "DPM-Solver++(3M), multistep",
    ),
    (
        "edm",
        flow::edm_heun,
        "EDM Heun in σ = e^(−λ), optional churn",
    ),
];

/// Names of all samplers, comma-separated.
pub fn sampler_names() -> String {
    SAMPLERS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
}

/// Looks a sampler up by name; an unknown name lists the valid ones.
pub fn by_name(name: &str) -> Result<Sampler> {
    match SAMPLERS.iter().find(|s| s.0 == name) {
        Some(s) => Ok(s.1),
        None => bail!(
            "unknown sampler '{name}'; valid samplers: {}",
            sampler_names()
        ),
    }
}

/// x_T ~ N(0, prior_std² I) in the process's space with n rows of dimension d (f32).
pub fn prior_sample(
    process: &dyn Process,
    n: usize,
    d: usize,
    rng: &mut ChaCha8Rng,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let s = process.prior_std() as f32;
    let mut v = standard_normals(n * d, rng);
    v.iter_mut().for_each(|z| *z *= s);
    process.space().project(&mut v);
    Ok(Tensor::from_vec(v, (n, d), device)?)
}

/// n standard normal draws, filled in parallel: chunk c of 8192 comes from stream c of a ChaCha8
/// generator seeded by one draw from `rng`, so the values depend on the seed alone, not on the
/// thread count (a sampler step of 10,000 × d draws would otherwise run on one core).
pub fn standard_normals(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut v = vec![0.0f32; n];
    fill_standard_normals(&mut v, rng);
    v
}

/// `standard_normals` into a buffer the caller reuses.
pub fn fill_standard_normals(v: &mut [f32], rng: &mut ChaCha8Rng) {
    use rand::{RngCore, SeedableRng};
    const CHUNK: usize = 8192;
    let seed = rng.next_u64();
    crate::pool::for_each_chunk(v, CHUNK, |c, out| {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(c as u64);
        out.iter_mut()
            .for_each(|z| *z = StandardNormal.sample(&mut r));
    });
}

/// What `generate` should do.
pub struct Plan<'a> {
    pub sampler: &'a str,
    pub grid: grid::Grid,
    pub steps: usize,
    pub options: Options,
    /// Finish with one Tweedie denoising step x̂0 = (x + σ² s)/α at t_min (+1 NFE).
    pub denoise_final: bool,
}

/// Draws n samples: x_T from the prior, then the planned sampler over its grid.
pub fn generate(
    model: &dyn ScoreModel,
    process: &dyn Process,
    plan: &Plan,
    n: usize,
    rng: &mut ChaCha8Rng,
    device: &candle_core::Device,
    trace: &mut Trace,
) -> Result<Tensor> {
    let f = by_name(plan.sampler)?;
    plan.options.check()?;
    if n == 0 {
        bail!("the number of samples must be at least 1");
    }
    let ts = plan.grid.times(process, plan.steps)?;
    let x_t = prior_sample(process, n, model.dim(), rng, device)?;
    trace.record(ts[0], &x_t);
    if let Some(b) = &trace.bar {
        b.set_position(0);
        b.set_length(plan.steps as u64);
    }
    let opts = &plan.options;
    let mut x = crate::pool::warm_if(device.is_cpu(), || {
        f(model, process, x_t, &ts, opts, rng, trace)
    })?;
    if plan.denoise_final {
        let t_end = ts[ts.len() - 1];
        x = trace.denoise(model, process, &x, t_end, ts.len())?;
    }
    if let Some(b) = &trace.bar {
        b.finish_and_clear();
    }
    if !all_finite(&x)? {
        bail!(
            "the samples contain NaN or infinity after {} steps; try more steps or another sampler",
            plan.steps
        );
    }
    Ok(x)
}

/// Classifier-free guidance: s = (1 + w)·s(x, t, c) − w·s(x, t, ∅) (Ho & Salimans 2022), for any
/// pair of conditional and unconditional score models.
pub struct Guided<'a> {
    pub conditional: &'a dyn ScoreModel,
    pub unconditional: &'a dyn ScoreModel,
    /// Guidance weight w (0: the conditional model alone).
    pub w: f64,
}

impl ScoreModel for Guided<'_> {
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let c = self.conditional.score(x, t)?;
        let u = self.unconditional.score(x, t)?;
        Ok(((c * (1.0 + self.w))? - (u * self.w)?)?)
    }
    fn dim(&self) -> usize {
        self.conditional.dim()
    }
}

#[cfg(test)]
mod tests;
