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
pub mod trace;

use crate::process::Process;
use crate::score::ScoreModel;
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use trace::all_finite;
pub use trace::{Callback, Step, Trace};

/// Sampler settings, one typed group per family; each sampler reads its own group.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The adaptive ODE solver (`dopri5`): tolerances and NFE cap.
    pub ode: crate::ode::Tolerance,
    pub ddim: Ddim,
    pub pc: PredictorCorrector,
    pub langevin: Langevin,
    pub edm: Churn,
}

/// DDIM's η: 0 deterministic, 1 ancestral (DDPM) noise (Song, Meng & Ermon 2021, eq. 16).
#[derive(Clone, Debug, Default)]
pub struct Ddim {
    pub eta: f64,
}

/// Predictor–corrector (Song et al. 2021, Alg. 1–2): the predictor (em, reverse_diffusion,
/// ancestral), the Langevin corrector's signal-to-noise ratio and corrector steps per time step.
#[derive(Clone, Debug)]
pub struct PredictorCorrector {
    pub predictor: String,
    pub snr: f64,
    pub corrector_steps: usize,
}

impl Default for PredictorCorrector {
    /// score_sde's defaults: reverse diffusion + one corrector step at snr 0.16.
    fn default() -> Self {
        PredictorCorrector {
            predictor: "reverse_diffusion".into(),
            snr: 0.16,
            corrector_steps: 1,
        }
    }
}

/// Langevin dynamics: annealed base step ε (step ε·σ_t²/σ_{t_min}², NCSN), steps per noise level,
/// and plain Langevin's step δ.
#[derive(Clone, Debug)]
pub struct Langevin {
    pub eps: f64,
    pub steps: usize,
    pub step: f64,
}

impl Default for Langevin {
    fn default() -> Self {
        Langevin {
            eps: 2e-5,
            steps: 10,
            step: 0.01,
        }
    }
}

/// EDM's stochastic Heun: S_churn, S_min, S_max, S_noise (Karras et al. 2022, Alg. 2).
#[derive(Clone, Debug)]
pub struct Churn {
    pub s_churn: f64,
    pub s_min: f64,
    pub s_max: f64,
    pub s_noise: f64,
}

impl Default for Churn {
    /// No churn: the deterministic Heun sampler.
    fn default() -> Self {
        Churn {
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
        self.ode.check()?;
        let (pc, l, e) = (&self.pc, &self.langevin, &self.edm);
        if !(self.ddim.eta >= 0.0
            && pc.snr > 0.0
            && l.eps > 0.0
            && l.step > 0.0
            && e.s_churn >= 0.0
            && e.s_noise >= 0.0)
        {
            bail!("eta, s_churn and s_noise must be >= 0 and snr, langevin_eps, langevin_step > 0");
        }
        if l.steps == 0 {
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

/// A sampler and what the CLI, the experiments, `--help` and the README say of it: the one
/// registry of samplers.
#[derive(Clone, Copy)]
pub struct SamplerInfo {
    pub name: &'static str,
    pub run: Sampler,
    /// One line: what it is.
    pub summary: &'static str,
    /// Where its update rule comes from.
    pub source: &'static str,
    /// The grid it was designed for (`--grid auto`).
    pub grid: grid::Grid,
    /// Score evaluations per grid step with the default options (0: adaptive).
    pub nfe_per_step: usize,
    /// Whether it draws noise along the way with the default options (reverse SDE, Langevin; DDIM
    /// with η > 0 and EDM with S_churn > 0 do too).
    pub stochastic: bool,
}

/// Every sampler.
pub const SAMPLERS: &[SamplerInfo] = &[
    SamplerInfo {
        name: "em",
        run: sde::euler_maruyama,
        summary: "reverse SDE, Euler–Maruyama",
        source: "Song et al. 2021, eq. 6",
        grid: grid::Grid::Uniform,
        nfe_per_step: 1,
        stochastic: true,
    },
    SamplerInfo {
        name: "reverse_diffusion",
        run: sde::reverse_diffusion,
        summary: "reverse SDE, score_sde reverse-diffusion predictor",
        source: "Song et al. 2021, eq. 46",
        grid: grid::Grid::Uniform,
        nfe_per_step: 1,
        stochastic: true,
    },
    SamplerInfo {
        name: "ancestral",
        run: sde::ancestral,
        summary: "ancestral sampling (DDPM posterior; any process)",
        source: "Ho et al. 2020, eq. 6–7",
        grid: grid::Grid::Uniform,
        nfe_per_step: 1,
        stochastic: true,
    },
    SamplerInfo {
        name: "pc",
        run: sde::predictor_corrector,
        summary: "predictor–corrector: --predictor + Langevin corrector (snr rule)",
        source: "Song et al. 2021, Alg. 1–2",
        grid: grid::Grid::Uniform,
        nfe_per_step: 2,
        stochastic: true,
    },
    SamplerInfo {
        name: "langevin",
        run: sde::langevin,
        summary: "plain Langevin dynamics at t_min (loses mode weights)",
        source: "Song & Ermon 2019, eq. 4",
        grid: grid::Grid::Uniform,
        nfe_per_step: 1,
        stochastic: true,
    },
    SamplerInfo {
        name: "annealed_langevin",
        run: sde::annealed_langevin,
        summary: "annealed Langevin dynamics over the grid's noise levels (NCSN)",
        source: "Song & Ermon 2019, Alg. 1",
        grid: grid::Grid::Uniform,
        nfe_per_step: 10,
        stochastic: true,
    },
    SamplerInfo {
        name: "euler",
        run: flow::euler,
        summary: "PF-ODE, Euler",
        source: "Song et al. 2021, eq. 13",
        grid: grid::Grid::Uniform,
        nfe_per_step: 1,
        stochastic: false,
    },
    SamplerInfo {
        name: "heun",
        run: flow::heun,
        summary: "PF-ODE, Heun",
        source: "Song et al. 2021, eq. 13; Heun's method",
        grid: grid::Grid::Uniform,
        nfe_per_step: 2,
        stochastic: false,
    },
    SamplerInfo {
        name: "rk4",
        run: flow::rk4,
        summary: "PF-ODE, classical Runge–Kutta 4",
        source: "Song et al. 2021, eq. 13; Kutta 1901",
        grid: grid::Grid::Uniform,
        nfe_per_step: 4,
        stochastic: false,
    },
    SamplerInfo {
        name: "dopri5",
        run: flow::dopri5,
        summary: "PF-ODE, adaptive Dormand–Prince 5(4) (rtol, atol, max_nfe)",
        source: "Dormand & Prince 1980 (score_sde's RK45)",
        grid: grid::Grid::Uniform,
        nfe_per_step: 0,
        stochastic: false,
    },
    SamplerInfo {
        name: "ddim",
        run: flow::ddim,
        summary: "DDIM (eta = 0 deterministic, eta > 0 stochastic)",
        source: "Song, Meng & Ermon 2021, eq. 12",
        grid: grid::Grid::LogSnr,
        nfe_per_step: 1,
        stochastic: false,
    },
    SamplerInfo {
        name: "dpm1",
        run: flow::dpm_solver_1,
        summary: "DPM-Solver-1 (= DDIM, eta = 0)",
        source: "Lu et al. 2022, eq. 3.7",
        grid: grid::Grid::LogSnr,
        nfe_per_step: 1,
        stochastic: false,
    },
    SamplerInfo {
        name: "dpm2",
        run: flow::dpm_solver_2,
        summary: "DPM-Solver-2, single-step",
        source: "Lu et al. 2022, Alg. 4",
        grid: grid::Grid::LogSnr,
        nfe_per_step: 2,
        stochastic: false,
    },
    SamplerInfo {
        name: "dpm3",
        run: flow::dpm_solver_3,
        summary: "DPM-Solver-3, single-step",
        source: "Lu et al. 2022, Alg. 5",
        grid: grid::Grid::LogSnr,
        nfe_per_step: 3,
        stochastic: false,
    },
    SamplerInfo {
        name: "dpmpp_2m",
        run: flow::dpm_solver_pp_2m,
        summary: "DPM-Solver++(2M), multistep",
        source: "Lu et al. 2022b, Alg. 2",
        grid: grid::Grid::LogSnr,
        nfe_per_step: 1,
        stochastic: false,
    },
    SamplerInfo {
        name: "dpmpp_3m",
        run: flow::dpm_solver_pp_3m,
        summary: "DPM-Solver++(3M), multistep",
        source: "Lu et al. 2022b, App. B",
        grid: grid::Grid::LogSnr,
        nfe_per_step: 1,
        stochastic: false,
    },
    SamplerInfo {
        name: "unipc",
        run: flow::unipc,
        summary: "UniPC-3 (bh2): multistep predictor + UniC corrector, 1 NFE per step",
        source: "Zhao et al. 2023, Alg. 2-3",
        grid: grid::Grid::LogSnr,
        nfe_per_step: 1,
        stochastic: false,
    },
    SamplerInfo {
        name: "consistency",
        run: flow::consistency,
        summary: "denoise to x̂0 and re-noise at each step (a consistency-distilled run's sampler)",
        source: "Song et al. 2023, Alg. 1",
        grid: grid::Grid::LogSnr,
        nfe_per_step: 1,
        stochastic: true,
    },
    SamplerInfo {
        name: "edm",
        run: flow::edm_heun,
        summary: "EDM Heun in σ = e^(−λ), optional churn (stochastic)",
        source: "Karras et al. 2022, Alg. 2",
        grid: grid::Grid::Karras(7.0),
        nfe_per_step: 2,
        stochastic: false,
    },
];

/// Names of all samplers, comma-separated.
pub fn sampler_names() -> String {
    SAMPLERS
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Looks a sampler up by name; an unknown name lists the valid ones.
pub fn info(name: &str) -> Result<&'static SamplerInfo> {
    match SAMPLERS.iter().find(|s| s.name == name) {
        Some(s) => Ok(s),
        None => bail!(
            "unknown sampler '{name}'; valid samplers: {}",
            sampler_names()
        ),
    }
}

/// A sampler's update function by name.
pub fn by_name(name: &str) -> Result<Sampler> {
    Ok(info(name)?.run)
}

/// The samplers as a Markdown table (the README's, checked by a test).
pub fn markdown_table() -> String {
    let mut s = String::from(
        "| sampler | what | source | grid | NFE per step | stochastic |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for i in SAMPLERS {
        let nfe = match i.nfe_per_step {
            0 => "adaptive".to_string(),
            k => k.to_string(),
        };
        let stochastic = if i.stochastic { "yes" } else { "no" };
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {nfe} | {stochastic} |\n",
            i.name,
            i.summary,
            i.source,
            i.grid.name()
        ));
    }
    s
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
    let opts = &plan.options;
    let mut x = crate::pool::warm_if(device.is_cpu(), || {
        f(model, process, x_t, &ts, opts, rng, trace)
    })?;
    if plan.denoise_final {
        let t_end = ts[ts.len() - 1];
        x = trace.denoise(model, process, &x, t_end, ts.len())?;
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
