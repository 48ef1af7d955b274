//! Stochastic samplers: reverse-time SDE predictors, predictor–corrector and Langevin dynamics.
//!
//! One step goes from t to t' < t. Writing the forward transition x_t = a·x_{t'} + G z with
//! a = α_t/α_{t'} and G² = σ_t² − a²σ_{t'}² makes every rule below valid for any process.

use super::{fill_standard_normals, Options, Trace};
use crate::flat::{copy_values, unflat, values};
use crate::process::Process;
use crate::score::ScoreModel;
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;

/// One update x ← c_x·x + c_s·s(x, t) + c_z·z with z ~ N(0, I): every rule in this file.
#[derive(Clone, Copy, Debug)]
struct Update {
    cx: f64,
    cs: f64,
    cz: f64,
}

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

/// A chain's state x [n × d] in a flat f64 buffer, beside its score s and noise z: allocated
/// once and reused by every step; x becomes a tensor only to evaluate the score.
struct Chain<'a> {
    model: &'a dyn ScoreModel,
    /// Shape, dtype and device of the caller's x.
    like: Tensor,
    x: Vec<f64>,
    s: Vec<f64>,
    z: Vec<f32>,
}

impl<'a> Chain<'a> {
    fn new(model: &'a dyn ScoreModel, x: Tensor) -> Result<Self> {
        let v = values(&x)?;
        let n = v.len();
        Ok(Chain {
            model,
            like: x,
            x: v,
            s: vec![0.0; n],
            z: vec![0.0; n],
        })
    }

    /// s ← s(x, t), counted and checked by the trace.
    fn score(&mut self, t: f64, tr: &mut Trace, step: usize) -> Result<()> {
        let s = tr.score(self.model, &unflat(&self.x, &self.like)?, t, step)?;
        copy_values(&s, &mut self.s)
    }

    /// z ← N(0, I).
    fn draw(&mut self, rng: &mut ChaCha8Rng) {
        fill_standard_normals(&mut self.z, rng);
    }

    /// x ← c_x x + c_s s + c_z z with the current s and z.
    fn combine(&mut self, u: Update) {
        use rayon::prelude::*;
        const CHUNK: usize = 4096;
        let it = self
            .x
            .par_chunks_mut(CHUNK)
            .zip(self.s.par_chunks(CHUNK))
            .zip(self.z.par_chunks(CHUNK));
        it.for_each(|((x, s), z)| {
            let it = x.iter_mut().zip(s).zip(z);
            it.for_each(|((x, s), z)| *x = u.cx * *x + u.cs * s + u.cz * *z as f64);
        });
    }

    /// One full update at t: s ← s(x, t), z ← N(0, I) unless c_z = 0 (z's old values then
    /// count zero times), then `combine`.
    fn step(
        &mut self,
        u: Update,
        t: f64,
        rng: &mut ChaCha8Rng,
        tr: &mut Trace,
        i: usize,
    ) -> Result<()> {
        self.score(t, tr, i)?;
        if u.cz != 0.0 {
            self.draw(rng);
        }
        self.combine(u);
        Ok(())
    }

    fn record(&self, t: f64, tr: &mut Trace) -> Result<()> {
        tr.record_with(t, || unflat(&self.x, &self.like))
    }

    fn into_tensor(self) -> Result<Tensor> {
        unflat(&self.x, &self.like)
    }
}

/// Predictor steps over the grid.
fn run(
    rule: Rule,
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let mut chain = Chain::new(m, x)?;
    for (i, w) in ts.windows(2).enumerate() {
        chain.step(rule(p, w[0], w[1], i + 2 == ts.len()), w[0], rng, tr, i)?;
        chain.record(w[1], tr)?;
    }
    chain.into_tensor()
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
    run(em_rule, m, p, x, ts, rng, tr)
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
    run(reverse_diffusion_rule, m, p, x, ts, rng, tr)
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
    run(ancestral_rule, m, p, x, ts, rng, tr)
}

/// Mean over the rows of v (each of length d) of their Euclidean norms.
fn mean_row_norm<T: Copy + Into<f64>>(v: &[T], d: usize) -> f64 {
    let norm = |row: &[T]| row.iter().map(|&x| x.into().powi(2)).sum::<f64>().sqrt();
    v.chunks(d).map(norm).sum::<f64>() / (v.len() / d).max(1) as f64
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
    let d = chain.like.elem_count() / chain.like.dims()[0].max(1);
    for _ in 0..o.corrector_steps {
        chain.score(t, tr, i)?;
        chain.draw(rng);
        let (z_norm, s_norm) = (mean_row_norm(&chain.z, d), mean_row_norm(&chain.s, d));
        let eps = 2.0 * a * a * (o.snr * z_norm / s_norm.max(1e-30)).powi(2);
        chain.combine(Update {
            cx: 1.0,
            cs: eps,
            cz: (2.0 * eps).sqrt(),
        });
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
    let rule = predictor(&o.predictor)?;
    let mut chain = Chain::new(m, x)?;
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
    let d = o.langevin_step;
    let u = Update {
        cx: 1.0,
        cs: d,
        cz: (2.0 * d).sqrt(),
    };
    let mut chain = Chain::new(m, x)?;
    for i in 0..ts.len() - 1 {
        for _ in 0..o.langevin_steps {
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
    let mut chain = Chain::new(m, x)?;
    for (i, &t) in ts.iter().enumerate().skip(1) {
        let step = o.langevin_eps * p.sigma(t).powi(2) / s_min2;
        let u = Update {
            cx: 1.0,
            cs: 0.5 * step,
            cz: step.sqrt(),
        };
        for _ in 0..o.langevin_steps {
            chain.step(u, t, rng, tr, i)?;
        }
        chain.record(t, tr)?;
    }
    chain.into_tensor()
}
