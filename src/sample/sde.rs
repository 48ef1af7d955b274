//! Stochastic samplers: reverse-time SDE predictors, predictor–corrector and Langevin dynamics.
//!
//! One step goes from t to t' < t. Writing the forward transition x_t = a·x_{t'} + G z with
//! a = α_t/α_{t'} and G² = σ_t² − a²σ_{t'}² makes every rule below valid for any process.

use super::state::{run, Chain, Update};
use super::{Options, Trace};
use crate::process::Process;
use crate::score::ScoreModel;
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;

/// A predictor: the update from t to t_next; `last` asks for the noise-free mean.
type Rule = fn(&dyn Process, f64, f64, bool) -> Update;

/// (a, G²) of the forward transition t' → t.
fn transition(p: &dyn Process, t: f64, t_next: f64) -> (f64, f64) {
    let a = p.alpha(t) / p.alpha(t_next);
    (
        a,
        (p.sigma(t).powi(2) - a * a * p.sigma(t_next).powi(2)).max(0.0),
    )
}

/// The noise scale, or none on the last step.
fn noise(std: f64, last: bool) -> f64 {
    if last {
        0.0
    } else {
        std
    }
}

/// Euler–Maruyama on the reverse SDE: x ← x − [f x − g² s] h + g √h z (Song et al. 2021, eq. 6).
fn em_rule(p: &dyn Process, t: f64, t_next: f64, last: bool) -> Update {
    let h = t - t_next;
    Update {
        cx: 1.0 - p.drift_coef(t) * h,
        cs: p.g2(t) * h,
        cz: noise(p.g(t) * h.sqrt(), last),
    }
}

/// Reverse diffusion: x ← (2 − a) x + G² s + G z (score_sde `ReverseDiffusionPredictor`).
fn reverse_diffusion_rule(p: &dyn Process, t: f64, t_next: f64, last: bool) -> Update {
    let (a, g2) = transition(p, t, t_next);
    Update {
        cx: 2.0 - a,
        cs: g2,
        cz: noise(g2.sqrt(), last),
    }
}

/// Ancestral: sample the Gaussian posterior q(x_{t'} | x_t, x̂0): mean (x + G² s)/a, variance
/// G² σ_{t'}²/σ_t² (DDPM, Ho et al. 2020, eq. 7; score_sde `AncestralSamplingPredictor`).
fn ancestral_rule(p: &dyn Process, t: f64, t_next: f64, last: bool) -> Update {
    let (a, g2) = transition(p, t, t_next);
    Update {
        cx: 1.0 / a,
        cs: g2 / a,
        cz: noise(
            (g2 * p.sigma(t_next).powi(2) / p.sigma(t).powi(2)).sqrt(),
            last,
        ),
    }
}

fn predictor(name: &str) -> Result<Rule> {
    Ok(match name {
        "em" => em_rule,
        "reverse_diffusion" => reverse_diffusion_rule,
        "ancestral" => ancestral_rule,
        other => bail!("unknown predictor '{other}'; valid: em, reverse_diffusion, ancestral"),
    })
}

/// `state::run` with one predictor rule.
fn with_rule(
    rule: Rule,
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    run(|t, tn, last| rule(p, t, tn, last), m, p, x, ts, rng, tr)
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
    with_rule(em_rule, m, p, x, ts, rng, tr)
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
    with_rule(reverse_diffusion_rule, m, p, x, ts, rng, tr)
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
    with_rule(ancestral_rule, m, p, x, ts, rng, tr)
}

/// Langevin corrector at t with score_sde's step rule ε = 2a²(snr·‖z‖/‖s‖)² (norms averaged
/// over the batch), x ← x + ε s + √(2ε) z (score_sde `LangevinCorrector`).
#[allow(clippy::too_many_arguments)]
fn langevin_corrector(
    chain: &mut Chain,
    p: &dyn Process,
    t: f64,
    t_next: f64,
    o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
    i: usize,
) -> Result<()> {
    let (a, _) = transition(p, t, t_next);
    let d = chain.field.row_len();
    for _ in 0..o.pc.corrector_steps {
        chain.score(t, tr, i)?;
        chain.z.draw(rng)?;
        let (z_norm, s_norm) = (chain.z.mean_row_norm(d)?, chain.s.mean_row_norm(d)?);
        let eps = 2.0 * a * a * (o.pc.snr * z_norm / s_norm.max(1e-30)).powi(2);
        chain.combine(Update {
            cx: 1.0,
            cs: eps,
            cz: (2.0 * eps).sqrt(),
        })?;
    }
    Ok(())
}

/// Predictor–corrector: at each time, Langevin corrector steps then one predictor step (Song et al. 2021, Alg. 1).
pub fn predictor_corrector(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let rule = predictor(&o.pc.predictor)?;
    let mut chain = Chain::new(m, p, x, rng)?;
    for (i, w) in ts.windows(2).enumerate() {
        langevin_corrector(&mut chain, p, w[0], w[1], o, rng, tr, i)?;
        chain.step(rule(p, w[0], w[1], i + 2 == ts.len()), w[0], rng, tr, i)?;
        chain.record(w[1], tr)?;
    }
    chain.into_tensor()
}

/// Plain Langevin dynamics on p_{t_min}: x ← x + δ s + √(2δ) z with δ = `langevin_step`,
/// `langevin_steps` per grid step. Mixes between well-separated modes only by chance, so the
/// mode weights come from the start distribution, not the target (Song & Ermon 2019, §3.2).
pub fn langevin(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let t = p.t_min();
    let d = o.langevin.step;
    let u = Update {
        cx: 1.0,
        cs: d,
        cz: (2.0 * d).sqrt(),
    };
    let mut chain = Chain::new(m, p, x, rng)?;
    for i in 0..ts.len() - 1 {
        for _ in 0..o.langevin.steps {
            chain.step(u, t, rng, tr, i)?;
        }
        chain.record(ts[i + 1], tr)?;
    }
    chain.into_tensor()
}

/// Annealed Langevin dynamics over the noise levels t_1 … t_N: at each, `langevin_steps` steps
/// x ← x + (α/2) s + √α z with α = ε σ_t²/σ_{t_min}² (Song & Ermon 2019, Alg. 1).
pub fn annealed_langevin(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let s_min2 = p.sigma(p.t_min()).powi(2);
    let mut chain = Chain::new(m, p, x, rng)?;
    for (i, &t) in ts.iter().enumerate().skip(1) {
        let step = o.langevin.eps * p.sigma(t).powi(2) / s_min2;
        let u = Update {
            cx: 1.0,
            cs: 0.5 * step,
            cz: step.sqrt(),
        };
        for _ in 0..o.langevin.steps {
            chain.step(u, t, rng, tr, i)?;
        }
        chain.record(t, tr)?;
    }
    chain.into_tensor()
}
