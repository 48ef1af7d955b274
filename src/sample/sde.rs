//! Stochastic samplers: reverse-time SDE predictors, predictor–corrector and Langevin dynamics.
//!
//! One step goes from t to t' < t. Writing the forward transition x_t = a·x_{t'} + G z with
//! a = α_t/α_{t'} and G² = σ_t² − a²σ_{t'}² makes every rule below valid for any process.

use super::{noise_like, Options, Trace};
use crate::process::Process;
use crate::score::ScoreModel;
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;

/// A predictor: one step from t to t_next; `last` asks for the noise-free mean.
type Step = fn(
    &dyn ScoreModel,
    &dyn Process,
    Tensor,
    f64,
    f64,
    bool,
    &mut ChaCha8Rng,
    &mut Trace,
    usize,
) -> Result<Tensor>;

/// (a, G²) of the forward transition t' → t.
fn transition(p: &dyn Process, t: f64, t_next: f64) -> (f64, f64) {
    let a = p.alpha(t) / p.alpha(t_next);
    (
        a,
        (p.sigma(t).powi(2) - a * a * p.sigma(t_next).powi(2)).max(0.0),
    )
}

/// x ← x + noise·z unless this is the last step.
fn add_noise(x: Tensor, std: f64, last: bool, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    if last || std == 0.0 {
        return Ok(x);
    }
    let z = noise_like(&x, rng)?;
    Ok((x + (z * std)?)?)
}

/// Euler–Maruyama on the reverse SDE: x ← x − [f x − g² s] h + g √h z (Song et al. 2021, eq. 6).
#[allow(clippy::too_many_arguments)]
fn em_step(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    t: f64,
    t_next: f64,
    last: bool,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
    i: usize,
) -> Result<Tensor> {
    let h = t - t_next;
    let s = tr.score(m, &x, t, i)?;
    let drift = ((&x * p.drift_coef(t))? - (s * p.g2(t))?)?;
    add_noise((x - (drift * h)?)?, p.g(t) * h.sqrt(), last, rng)
}

/// Reverse diffusion: x ← (2 − a) x + G² s + G z (score_sde `ReverseDiffusionPredictor`).
#[allow(clippy::too_many_arguments)]
fn reverse_diffusion_step(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    t: f64,
    t_next: f64,
    last: bool,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
    i: usize,
) -> Result<Tensor> {
    let (a, g2) = transition(p, t, t_next);
    let s = tr.score(m, &x, t, i)?;
    add_noise(((&x * (2.0 - a))? + (s * g2)?)?, g2.sqrt(), last, rng)
}

/// Ancestral: sample the Gaussian posterior q(x_{t'} | x_t, x̂0): mean (x + G² s)/a, variance
/// G² σ_{t'}²/σ_t² (DDPM, Ho et al. 2020, eq. 7; score_sde `AncestralSamplingPredictor`).
#[allow(clippy::too_many_arguments)]
fn ancestral_step(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    t: f64,
    t_next: f64,
    last: bool,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
    i: usize,
) -> Result<Tensor> {
    let (a, g2) = transition(p, t, t_next);
    let s = tr.score(m, &x, t, i)?;
    let mean = ((x + (s * g2)?)? / a)?;
    add_noise(
        mean,
        (g2 * p.sigma(t_next).powi(2) / p.sigma(t).powi(2)).sqrt(),
        last,
        rng,
    )
}

fn predictor(name: &str) -> Result<Step> {
    Ok(match name {
        "em" => em_step,
        "reverse_diffusion" => reverse_diffusion_step,
        "ancestral" => ancestral_step,
        other => bail!("unknown predictor '{other}'; valid: em, reverse_diffusion, ancestral"),
    })
}

fn run(
    step: Step,
    m: &dyn ScoreModel,
    p: &dyn Process,
    mut x: Tensor,
    ts: &[f64],
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    for (i, w) in ts.windows(2).enumerate() {
        x = step(m, p, x, w[0], w[1], i + 2 == ts.len(), rng, tr, i)?;
        tr.record(w[1], &x);
    }
    Ok(x)
}

/// Reverse-time SDE with Euler–Maruyama steps; the last step returns the mean.
pub fn euler_maruyama(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    run(em_step, m, p, x, ts, rng, tr)
}

/// Reverse-time SDE with score_sde's reverse-diffusion predictor.
pub fn reverse_diffusion(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    run(reverse_diffusion_step, m, p, x, ts, rng, tr)
}

/// Ancestral sampling through the Gaussian posteriors of the forward process.
pub fn ancestral(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    run(ancestral_step, m, p, x, ts, rng, tr)
}

/// Langevin corrector at t with score_sde's step rule ε = 2a²(snr·‖z‖/‖s‖)² (norms averaged
/// over the batch), x ← x + ε s + √(2ε) z (score_sde `LangevinCorrector`).
#[allow(clippy::too_many_arguments)]
fn langevin_corrector(
    m: &dyn ScoreModel,
    p: &dyn Process,
    mut x: Tensor,
    t: f64,
    t_next: f64,
    o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
    i: usize,
) -> Result<Tensor> {
    let (a, _) = transition(p, t, t_next);
    let mean_norm = |v: &Tensor| -> Result<f64> {
        Ok(v.sqr()?
            .sum(1)?
            .sqrt()?
            .mean_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?)
    };
    for _ in 0..o.corrector_steps {
        let s = tr.score(m, &x, t, i)?;
        let z = noise_like(&x, rng)?;
        let eps = 2.0 * a * a * (o.snr * mean_norm(&z)? / mean_norm(&s)?.max(1e-30)).powi(2);
        x = ((x + (s * eps)?)? + (z * (2.0 * eps).sqrt())?)?;
    }
    Ok(x)
}

/// Predictor–corrector: at each time, Langevin corrector steps then one predictor step (Song et al. 2021, Alg. 1).
pub fn predictor_corrector(
    m: &dyn ScoreModel,
    p: &dyn Process,
    mut x: Tensor,
    ts: &[f64],
    o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let step = predictor(&o.predictor)?;
    for (i, w) in ts.windows(2).enumerate() {
        x = langevin_corrector(m, p, x, w[0], w[1], o, rng, tr, i)?;
        x = step(m, p, x, w[0], w[1], i + 2 == ts.len(), rng, tr, i)?;
        tr.record(w[1], &x);
    }
    Ok(x)
}

/// Plain Langevin dynamics on p_{t_min}: x ← x + δ s + √(2δ) z with δ = `langevin_step`,
/// `langevin_steps` per grid step. Mixes between well-separated modes only by chance, so the
/// mode weights come from the start distribution, not the target (Song & Ermon 2019, §3.2).
pub fn langevin(
    m: &dyn ScoreModel,
    p: &dyn Process,
    mut x: Tensor,
    ts: &[f64],
    o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let t = p.t_min();
    let d = o.langevin_step;
    for i in 0..ts.len() - 1 {
        for _ in 0..o.langevin_steps {
            let s = tr.score(m, &x, t, i)?;
            x = add_noise((x + (s * d)?)?, (2.0 * d).sqrt(), false, rng)?;
        }
        tr.record(ts[i + 1], &x);
    }
    Ok(x)
}

/// Annealed Langevin dynamics over the noise levels t_1 … t_N: at each, `langevin_steps` steps
/// x ← x + (α/2) s + √α z with α = ε σ_t²/σ_{t_min}² (Song & Ermon 2019, Alg. 1).
pub fn annealed_langevin(
    m: &dyn ScoreModel,
    p: &dyn Process,
    mut x: Tensor,
    ts: &[f64],
    o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let s_min2 = p.sigma(p.t_min()).powi(2);
    for (i, &t) in ts.iter().enumerate().skip(1) {
        let step = o.langevin_eps * p.sigma(t).powi(2) / s_min2;
        for _ in 0..o.langevin_steps {
            let s = tr.score(m, &x, t, i)?;
            x = add_noise((x + (s * (0.5 * step))?)?, step.sqrt(), false, rng)?;
        }
        tr.record(t, &x);
    }
    Ok(x)
}
