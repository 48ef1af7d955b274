//! Regression objectives: DSM (continuous, one level, NCSN ladder), explicit score matching and
//! force / target score matching. Each draws x_t = α_t x0 + σ_t ε and a score target s*(x_t), and
//! regresses the network's raw output on the matching output target with weight λ·c(t)², where
//! c(t) turns an output error into a score error, so no 1/σ_t blows up in f32 at small t.

use super::{Batch, Weighting};
use crate::nn::ScoreNet;
use crate::score::{column, column_of};
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Standard normal noise [n, d] (f32) from the run's generator.
pub fn gaussian(
    n: usize,
    d: usize,
    rng: &mut ChaCha8Rng,
    dev: &candle_core::Device,
) -> Result<Tensor> {
    let v: Vec<f32> = (0..n * d).map(|_| StandardNormal.sample(rng)).collect();
    Ok(Tensor::from_vec(v, (n, d), dev)?)
}

/// x_t = α_t x0 + σ_t ε at per-row times, with ε; also the [n, 1] columns α_t, σ_t.
pub struct Noised {
    pub t: Tensor,
    pub ts: Vec<f64>,
    /// (α_t, σ_t) of each row, computed once.
    pub coef: Vec<(f64, f64)>,
    pub xt: Tensor,
    pub eps: Tensor,
    pub alpha: Tensor,
    pub sigma: Tensor,
}

/// Noises a batch at the given per-row times.
pub fn noise(net: &ScoreNet, x0: &Tensor, ts: Vec<f64>, rng: &mut ChaCha8Rng) -> Result<Noised> {
    let (n, d) = x0.dims2()?;
    let eps = gaussian(n, d, rng, x0.device())?.to_dtype(net.dtype())?;
    let t = Tensor::from_vec(ts.clone(), n, x0.device())?.to_dtype(net.dtype())?;
    let p = net.process();
    let coef: Vec<(f64, f64)> = ts.iter().map(|&t| (p.alpha(t), p.sigma(t))).collect();
    let (dtype, dev) = (net.dtype(), x0.device());
    let per_row = |f: fn(&(f64, f64)) -> f64| column_of(coef.iter().map(f).collect(), dtype, dev);
    let (alpha, sigma) = (per_row(|c| c.0)?, per_row(|c| c.1)?);
    let xt = (x0.to_dtype(net.dtype())?.broadcast_mul(&alpha)? + eps.broadcast_mul(&sigma)?)?;
    Ok(Noised {
        t,
        ts,
        coef,
        xt,
        eps,
        alpha,
        sigma,
    })
}

/// A regression problem: minimise mean_n w_n ½‖out(x_t, t) − out*‖² over the network's raw output,
/// with out* chosen so that to_score(out*) = s* and w_n = λ(t_n) c(t_n)².
pub struct Regression {
    /// Inputs x_t [n, d] and times t [n].
    pub xt: Tensor,
    pub t: Tensor,
    /// Output-space targets out* [n, o].
    pub target: Tensor,
    /// Per-row weights w [n, 1].
    pub weight: Tensor,
}

impl Regression {
    /// The loss with candle ops (differentiable in the network's parameters).
    pub fn loss(&self, net: &ScoreNet) -> Result<Tensor> {
        let out = net.forward(&self.xt, &self.t)?;
        let n = self.xt.dims()[0];
        Ok(((out - &self.target)?
            .sqr()?
            .broadcast_mul(&self.weight)?
            .sum_all()?
            * (0.5 / n as f64))?)
    }
}

/// The regression of the output on the score target `s_target` with weights λ(t) c(t)².
pub fn regress(
    net: &ScoreNet,
    z: &Noised,
    s_target: &Tensor,
    lambda: impl Fn(f64) -> f64,
) -> Result<Regression> {
    let param = net.config.arch.parameterisation;
    let weight = z.ts.iter().zip(&z.coef).map(|(&t, &(a, s))| {
        let c = param.score_error_scale(a, s);
        lambda(t) * c * c
    });
    let weight = column_of(weight.collect(), net.dtype(), z.t.device())?;
    let target = param.from_score(s_target, &z.xt, &z.alpha, &z.sigma)?;
    Ok(Regression {
        xt: z.xt.clone(),
        t: z.t.clone(),
        target,
        weight,
    })
}

/// The DSM score target −ε/σ_t.
fn dsm_target(z: &Noised) -> Result<Tensor> {
    Ok(z.eps.broadcast_div(&z.sigma)?.neg()?)
}

fn uniform_times(net: &ScoreNet, n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let p = net.process();
    (0..n)
        .map(|_| rng.random_range(p.t_min()..p.t_max()))
        .collect()
}

/// Continuous-time DSM with weighting λ(t), t ~ U(t_min, T).
pub fn dsm(
    net: &ScoreNet,
    weighting: Weighting,
    b: &Batch,
    rng: &mut ChaCha8Rng,
) -> Result<Regression> {
    let ts = uniform_times(net, b.x0.dims()[0], rng);
    let z = noise(net, &b.x0, ts, rng)?;
    regress(net, &z, &dsm_target(&z)?, |t| {
        weighting.lambda(net.process(), t)
    })
}

/// DSM at one level t with λ = σ_t².
pub fn dsm_level(net: &ScoreNet, t: f64, b: &Batch, rng: &mut ChaCha8Rng) -> Result<Regression> {
    let z = noise(net, &b.x0, vec![t; b.x0.dims()[0]], rng)?;
    regress(net, &z, &dsm_target(&z)?, |t| {
        net.process().sigma(t).powi(2)
    })
}

/// The NCSN ladder: t_k = t_min + (T − t_min)·k/(L − 1), one random level per sample, λ = σ².
pub fn ncsn(net: &ScoreNet, levels: usize, b: &Batch, rng: &mut ChaCha8Rng) -> Result<Regression> {
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
    let z = noise(net, &b.x0, ts, rng)?;
    regress(net, &z, &dsm_target(&z)?, |t| p.sigma(t).powi(2))
}

/// ESM at level t on the exact score of a known target; without one, on the data's per-sample
/// scores F(x0) at x0 itself (the network conditioned on t; meaningful for t = t_min).
pub fn esm(net: &ScoreNet, t: f64, b: &Batch, rng: &mut ChaCha8Rng) -> Result<Regression> {
    let n = b.x0.dims()[0];
    let mut z = noise(net, &b.x0, vec![t; n], rng)?;
    let target = match (b.truth, &b.force) {
        (Some(truth), _) => truth.score(&z.xt, &z.t)?.to_dtype(net.dtype())?,
        (None, Some(f)) => {
            z.xt = b.x0.to_dtype(net.dtype())?;
            f.to_dtype(net.dtype())?
        }
        (None, None) => bail!("explicit score matching needs known scores: a mixture target as data, or per-sample forces (data.forces)"),
    };
    regress(net, &z, &target, |_| 1.0)
}

/// Force (target) score matching, s* = F(x0)/α_t; with `mixed`, blended with −ε/σ_t by
/// w(t) = σ_t²/(α_t² + σ_t²).
pub fn force(
    net: &ScoreNet,
    weighting: Weighting,
    b: &Batch,
    rng: &mut ChaCha8Rng,
    mixed: bool,
) -> Result<Regression> {
    let Some(f) = &b.force else {
        bail!("force score matching needs per-sample forces F(x0) = ∇log p0(x0): a mixture target as data, or data.forces")
    };
    let ts = uniform_times(net, b.x0.dims()[0], rng);
    let z = noise(net, &b.x0, ts, rng)?;
    let mut target = f.to_dtype(net.dtype())?.broadcast_div(&z.alpha)?;
    if mixed {
        let p = net.process();
        let w = column(&z.t, net.dtype(), |t| {
            p.sigma(t).powi(2) / (p.alpha(t).powi(2) + p.sigma(t).powi(2))
        })?;
        let one_minus = w.affine(-1.0, 1.0)?;
        target = (dsm_target(&z)?.broadcast_mul(&w)? + target.broadcast_mul(&one_minus)?)?;
    }
    regress(net, &z, &target, |t| weighting.lambda(net.process(), t))
}
