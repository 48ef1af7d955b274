//! Regression objectives: DSM (continuous, one level, NCSN ladder), explicit score matching and
//! force / target score matching. Each draws x_t = α_t x0 + σ_t ε and a score target s*(x_t), and
//! regresses the network's raw output on the matching output target with weight λ·c(t)², where
//! c(t) turns an output error into a score error, so no 1/σ_t blows up in f32 at small t.

use super::{Batch, Weighting};
use crate::flat::values;
use crate::nn::Model;
use crate::process::Process;
use crate::score::column_of;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// x_t = α_t x0 + σ_t ε at per-row times, on the host (f64, [n × d] row-major): every
/// objective's draw is a few flat loops, with tensors made once for the candle ops that need them.
pub struct Noised {
    pub d: usize,
    pub ts: Vec<f64>,
    /// (α_t, σ_t) of each row, computed once.
    pub coef: Vec<(f64, f64)>,
    pub xt: Vec<f64>,
    pub eps: Vec<f64>,
}

/// Noises a batch at the given per-row times; ε as f32 standard normal draws from the run's
/// generator, in row order.
pub fn noise(net: &Model, x0: &Tensor, ts: Vec<f64>, rng: &mut ChaCha8Rng) -> Result<Noised> {
    let (n, d) = x0.dims2()?;
    let eps: Vec<f64> = (0..n * d)
        .map(|_| StandardNormal.sample(rng))
        .map(|e: f32| e as f64)
        .collect();
    let p = net.process();
    let coef: Vec<(f64, f64)> = ts.iter().map(|&t| (p.alpha(t), p.sigma(t))).collect();
    let mut xt: Vec<f64> = values(x0)?;
    // in a restricted space (particles: zero centre of mass) both x0 and ε are projected onto it
    let mut eps = eps;
    p.space().project(&mut eps);
    p.space().project(&mut xt);
    for ((row, e), &(a, s)) in xt.chunks_exact_mut(d).zip(eps.chunks_exact(d)).zip(&coef) {
        row.iter_mut().zip(e).for_each(|(x, e)| *x = a * *x + s * e);
    }
    Ok(Noised {
        d,
        ts,
        coef,
        xt,
        eps,
    })
}

impl Noised {
    /// x_t [n, d] and t \[n\] as tensors of `dtype` on `device`.
    pub fn tensors(&self, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        let n = self.ts.len();
        let xt = Tensor::from_slice(&self.xt, (n, self.d), device)?.to_dtype(dtype)?;
        let t = Tensor::from_slice(&self.ts, n, device)?.to_dtype(dtype)?;
        Ok((xt, t))
    }
}

/// A regression problem: minimise mean_n w_n ½‖out(x_t, t) − out*‖² over the network's raw output,
/// with out* chosen so that to_score(out*) = s* and w_n = λ(t_n) c(t_n)². Host values (f64).
pub struct Regression {
    /// The inputs: x_t [n × d] at times t \[n\].
    pub z: Noised,
    /// Output-space targets out* [n × d].
    pub target: Vec<f64>,
    /// Per-row weights w \[n\].
    pub weight: Vec<f64>,
    /// Class labels \[n\] of a conditional network's rows (None: the null class ∅).
    pub labels: Option<Tensor>,
    device: Device,
}

impl Regression {
    /// The loss with candle ops (differentiable in the network's parameters).
    pub fn loss(&self, net: &Model) -> Result<Tensor> {
        let (n, dtype, dev) = (self.z.ts.len(), net.dtype(), &self.device);
        let (xt, t) = self.z.tensors(dtype, dev)?;
        let target = Tensor::from_slice(&self.target, (n, self.z.d), dev)?.to_dtype(dtype)?;
        let weight = column_of(self.weight.clone(), dtype, dev)?;
        let out = net.forward_cond(&xt, &t, self.labels.as_ref())?;
        Ok(((out - target)?.sqr()?.broadcast_mul(&weight)?.sum_all()? * (0.5 / n as f64))?)
    }
}

/// The regression of the output on the score target s* [n × d] with weights λ(t) c(t)², c = |A|
/// for s = A·out + B·x (`score_coefficients`).
pub fn regress(
    net: &Model,
    z: Noised,
    s_target: Vec<f64>,
    device: &Device,
    lambda: impl Fn(f64) -> f64,
) -> Result<Regression> {
    let param = net.output_map();
    let mut target = s_target;
    // a score on a restricted space lies in it
    net.process().space().project(&mut target);
    let mut weight = Vec::with_capacity(z.ts.len());
    let rows = target.chunks_exact_mut(z.d).zip(z.xt.chunks_exact(z.d));
    for ((out, x), (&t, &(a, s))) in rows.zip(z.ts.iter().zip(&z.coef)) {
        out.iter_mut()
            .zip(x)
            .for_each(|(o, &x)| *o = param.output_for_score(*o, x, a, s));
        let c = param.score_error_scale(a, s);
        weight.push(lambda(t) * c * c);
    }
    Ok(Regression {
        z,
        target,
        weight,
        labels: None,
        device: device.clone(),
    })
}

/// The DSM score target −ε/σ_t.
fn dsm_target(z: &Noised) -> Vec<f64> {
    let rows = z.eps.chunks_exact(z.d).zip(&z.coef);
    rows.flat_map(|(e, &(_, s))| e.iter().map(move |e| -e / s))
        .collect()
}

/// The batch noised at times `ts`, regressed on the DSM target with weights λ(t) c(t)².
fn denoising(
    net: &Model,
    b: &Batch,
    ts: Vec<f64>,
    rng: &mut ChaCha8Rng,
    lambda: impl Fn(f64) -> f64,
) -> Result<Regression> {
    let z = noise(net, &b.x0, ts, rng)?;
    let target = dsm_target(&z);
    regress(net, z, target, b.x0.device(), lambda)
}

/// n times of a continuous objective and each one's weight: t ~ U(t_min, T) with weight λ(t), or
/// for `g2_is` t ~ q ∝ g²/σ² with weight g²(t)/(q(t)(T − t_min)), the same expected loss.
fn continuous_times<'a>(
    net: &'a Model,
    weighting: Weighting,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<f64>, Box<dyn Fn(f64) -> f64 + 'a>) {
    let p = net.process();
    if weighting == Weighting::G2Importance {
        let q = net.likelihood_times();
        let ts = (0..n).map(|_| q.sample(rng)).collect();
        let span = p.t_max() - p.t_min();
        return (ts, Box::new(move |t| p.g2(t) / (q.density(t) * span)));
    }
    let ts = (0..n)
        .map(|_| rng.random_range(p.t_min()..p.t_max()))
        .collect();
    (ts, Box::new(move |t| weighting.weight(p, t)))
}

/// Continuous-time DSM with weighting λ(t), t ~ U(t_min, T) (or importance-sampled, `g2_is`).
pub fn dsm(
    net: &Model,
    weighting: Weighting,
    b: &Batch,
    rng: &mut ChaCha8Rng,
) -> Result<Regression> {
    let (ts, lambda) = continuous_times(net, weighting, b.x0.dims()[0], rng);
    denoising(net, b, ts, rng, lambda)
}

/// EDM's training (Karras et al. 2022, §5): ln σ̃ ~ N(P_mean, P_std²) with σ̃ = σ_t/α_t (drawn
/// again where t = λ⁻¹(−ln σ̃) falls outside [t_min, T]), and the loss weighting that makes the
/// network's output error unit-weighted, λ(t) = 1/c(t)²: EDM's λ(σ) = (σ² + σ_d²)/(σσ_d)² on D
/// under its preconditioning.
pub fn edm(
    net: &Model,
    (p_mean, p_std): (f64, f64),
    b: &Batch,
    rng: &mut ChaCha8Rng,
) -> Result<Regression> {
    let ts = (0..b.x0.dims()[0])
        .map(|_| edm_time(net.process(), p_mean, p_std, rng))
        .collect();
    let (p, map) = (net.process(), net.output_map());
    denoising(net, b, ts, rng, |t| {
        map.score_error_scale(p.alpha(t), p.sigma(t)).powi(-2)
    })
}

/// One t with ln(σ_t/α_t) ~ N(P_mean, P_std²) truncated to [t_min, T] (100 tries, then the
/// nearer end).
pub fn edm_time(p: &dyn Process, p_mean: f64, p_std: f64, rng: &mut ChaCha8Rng) -> f64 {
    let mut t = p.t_min();
    for _ in 0..100 {
        let z: f64 = StandardNormal.sample(rng);
        let log_sigma = p_mean + p_std * z;
        t = p.t_at_lambda(-log_sigma);
        if t >= p.t_min() && t <= p.t_max() {
            return t;
        }
    }
    t.clamp(p.t_min(), p.t_max())
}

/// DSM at one level t with λ = σ_t².
pub fn dsm_level(net: &Model, t: f64, b: &Batch, rng: &mut ChaCha8Rng) -> Result<Regression> {
    let ts = vec![t; b.x0.dims()[0]];
    denoising(net, b, ts, rng, |t| net.process().sigma(t).powi(2))
}

/// The NCSN ladder: t_k = t_min + (T − t_min)·k/(L − 1), one random level per sample, λ = σ².
pub fn ncsn(net: &Model, levels: usize, b: &Batch, rng: &mut ChaCha8Rng) -> Result<Regression> {
    let p = net.process();
    let level = |k: usize| {
        if levels == 1 {
            p.t_min()
        } else {
            p.t_min() + (p.t_max() - p.t_min()) * k as f64 / (levels - 1) as f64
        }
    };
    let ts = (0..b.x0.dims()[0])
        .map(|_| level(rng.random_range(0..levels)))
        .collect();
    denoising(net, b, ts, rng, |t| p.sigma(t).powi(2))
}

/// ESM at level t on the exact score of a known target; without one, on the data's per-sample
/// scores F(x0) at x0 itself (the network conditioned on t; meaningful for t = t_min).
pub fn esm(net: &Model, t: f64, b: &Batch, rng: &mut ChaCha8Rng) -> Result<Regression> {
    let (n, dev) = (b.x0.dims()[0], b.x0.device());
    let mut z = noise(net, &b.x0, vec![t; n], rng)?;
    let target = match (b.truth, &b.force) {
        (Some(truth), _) => {
            let (xt, t) = z.tensors(DType::F64, dev)?;
            values(&truth.score(&xt, &t)?)?
        }
        (None, Some(f)) => {
            z.xt = values(&b.x0)?;
            values(f)?
        }
        (None, None) => bail!("explicit score matching needs known scores: a mixture target as data, or per-sample forces (data.forces)"),
    };
    regress(net, z, target, dev, |_| 1.0)
}

/// Force (target) score matching, s* = F(x0)/α_t; with `mixed`, blended with −ε/σ_t by the
/// batch's minimum-variance weight w*(λ_t) (`Blend`).
pub fn force(
    net: &Model,
    weighting: Weighting,
    b: &Batch,
    rng: &mut ChaCha8Rng,
    mixed: bool,
) -> Result<Regression> {
    let Some(f) = &b.force else {
        bail!("force score matching needs per-sample forces F(x0) = ∇log p0(x0): a mixture target as data, or data.forces")
    };
    let blend = match (mixed, b.blend) {
        (true, None) => bail!("the mixed objective needs its blend of targets: Blend::estimate from data with forces (the trainer does this)"),
        (_, blend) => blend.filter(|_| mixed),
    };
    let (ts, lambda) = continuous_times(net, weighting, b.x0.dims()[0], rng);
    let z = noise(net, &b.x0, ts, rng)?;
    let mut target: Vec<f64> = values(f)?;
    let dsm = dsm_target(&z);
    let rows = target.chunks_exact_mut(z.d).zip(dsm.chunks_exact(z.d));
    for ((row, dsm), &(a, s)) in rows.zip(&z.coef) {
        // with `mixed`, w*(λ_t) of the DSM target and 1 − w* of F/α
        let w = blend.map_or(0.0, |bl| bl.weight((a / s).ln()));
        for (f, e) in row.iter_mut().zip(dsm) {
            *f = w * e + (1.0 - w) * (*f / a);
        }
    }
    regress(net, z, target, b.x0.device(), lambda)
}

/// Energy-only training (iDEM, Akhound-Sadegh et al. 2024, eq. 9): x_t from the batch's buffer
/// rows at t ~ U(t_min, T), regressed on the batch's estimator Ŝ_K(x_t, t) (`Batch::truth`: the
/// Monte Carlo posterior-expected force), each target row clipped to σ_t‖Ŝ‖ ≤ `clip`·√dof.
pub fn idem(net: &Model, cfg: &super::Idem, b: &Batch, rng: &mut ChaCha8Rng) -> Result<Regression> {
    let Some(estimator) = b.truth else {
        bail!("energy-only training needs the potential's score estimator: give data.potential (the trainer builds it)")
    };
    let (ts, lambda) = continuous_times(net, cfg.weighting, b.x0.dims()[0], rng);
    let z = noise(net, &b.x0, ts, rng)?;
    let (xt, t) = z.tensors(DType::F64, b.x0.device())?;
    let mut target = values(&estimator.score(&xt, &t)?)?;
    if cfg.clip > 0.0 {
        // in noise units: σ_t‖Ŝ‖ ≤ clip·√dof, where DSM's target ε has norm ≈ √dof
        let dof = net.process().space().dof(z.d) as f64;
        let rows = target.chunks_exact_mut(z.d).zip(&z.coef);
        for (row, &(_, sigma)) in rows {
            clip_row(row, cfg.clip * dof.sqrt() / sigma);
        }
    }
    regress(net, z, target, b.x0.device(), lambda)
}

/// Rescales `row` to norm `max` where its norm exceeds it.
pub fn clip_row(row: &mut [f64], max: f64) {
    let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > max {
        row.iter_mut().for_each(|x| *x *= max / norm);
    }
}
