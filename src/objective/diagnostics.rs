//! Diagnostics of objectives against exact answers: Fisher divergence of a model to the exact
//! diffused score, and the variance of the per-sample regression targets.

use crate::data::Points;
use crate::metrics::fisher_divergence;
use crate::objective::Blend;
use crate::process::Process;
use crate::score::{times, ScoreModel};
use crate::target::{ExactScore, GaussianMixture};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// n exact draws x_t = α_t x0 + σ_t ε of p_t (row-major f64) for a mixture under a process.
pub fn draw_pt(truth: &ExactScore, t: f64, n: usize, rng: &mut ChaCha8Rng) -> Points {
    let (a, s) = (truth.process.alpha(t), truth.process.sigma(t));
    let mut x = truth.mixture.sample(n, rng);
    for v in x.data.iter_mut() {
        let e: f64 = StandardNormal.sample(rng);
        *v = a * *v + s * e;
    }
    x
}

fn to_points(t: &Tensor) -> Result<Points> {
    let (n, d) = t.dims2()?;
    Points::new(n, d, crate::flat::values::<f64>(t)?)
}

/// Fisher divergence ½E‖s_model(x_t, t) − ∇log p_t(x_t)‖² on n fresh exact draws of p_t.
pub fn fisher_at(model: &dyn ScoreModel, truth: &ExactScore, t: f64, n: usize, seed: u64) -> f64 {
    let eval = || -> Result<f64> {
        let x = draw_pt(truth, t, n, &mut ChaCha8Rng::seed_from_u64(seed));
        let xt = Tensor::from_vec(x.data.clone(), (n, x.d), &Device::Cpu)?;
        let tt = times(t, n, DType::F64, &Device::Cpu)?;
        let sm = to_points(&model.score(&xt, &tt)?)?;
        let st = to_points(&truth.score(&xt, &tt)?)?;
        Ok(fisher_divergence(&sm, &st))
    };
    eval().unwrap_or(f64::NAN)
}

/// Fisher divergence averaged over a uniform grid of `k` times in [t_min, T].
pub fn fisher_over_t(
    model: &dyn ScoreModel,
    truth: &ExactScore,
    k: usize,
    n: usize,
    seed: u64,
) -> f64 {
    let p = &truth.process;
    let ts: Vec<f64> = (0..k)
        .map(|i| p.t_min() + (p.t_max() - p.t_min()) * (i as f64 + 0.5) / k as f64)
        .collect();
    ts.iter()
        .map(|&t| fisher_at(model, truth, t, n, seed))
        .sum::<f64>()
        / k as f64
}

/// The variances E‖target − ∇log p_t(x_t)‖² (summed over coordinates) of the regression targets
/// at one time t: force F(x0)/α_t, noise −ε/σ_t, and their blend by `Blend` when given.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct TargetVariance {
    pub t: f64,
    pub force: f64,
    pub dsm: f64,
    /// The blend's weight w*(λ_t) of the noise target and its target's variance.
    pub w: Option<f64>,
    pub blend: Option<f64>,
}

/// `TargetVariance` at each of `ts`, from n exact draws of a mixture per time (its exact forces
/// and diffused score), under `process`.
pub fn target_variances(
    mixture: &GaussianMixture,
    process: &dyn Process,
    blend: Option<&Blend>,
    ts: &[f64],
    n: usize,
    seed: u64,
) -> Result<Vec<TargetVariance>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    ts.iter()
        .map(|&t| {
            let (a, s) = (process.alpha(t), process.sigma(t));
            let x0 = mixture.sample(n, &mut rng);
            let eps: Vec<f64> = (0..x0.data.len())
                .map(|_| StandardNormal.sample(&mut rng))
                .collect();
            let xt: Vec<f64> = x0
                .data
                .iter()
                .zip(&eps)
                .map(|(x, e)| a * x + s * e)
                .collect();
            let (_, force) = mixture.log_prob_and_score_at(&x0.data, 1.0, 0.0)?;
            let (_, truth) = mixture.log_prob_and_score_at(&xt, a, s)?;
            let w = blend.map(|b| b.weight((a / s).ln()));
            let var = |w: f64| {
                (0..xt.len())
                    .map(|i| (w * (-eps[i] / s) + (1.0 - w) * force[i] / a - truth[i]).powi(2))
                    .sum::<f64>()
                    / n as f64
            };
            Ok(TargetVariance {
                t,
                force: var(0.0),
                dsm: var(1.0),
                w,
                blend: w.map(var),
            })
        })
        .collect()
}
