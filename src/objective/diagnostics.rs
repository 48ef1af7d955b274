//! Diagnostics of objectives against exact answers: Fisher divergence of a model to the exact
//! diffused score, and the variance of the per-sample regression targets.

use crate::data::Points;
use crate::metrics::fisher_divergence;
use crate::process::ProcessConfig;
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

/// For each t: (t, E‖F(x0)/α_t − ∇log p_t(x_t)‖², E‖−ε/σ_t − ∇log p_t(x_t)‖²), the variances of the
/// force and noise targets around the true score, on the anisotropic 3-component mixture (VP).
pub fn target_variances(ts: &[f64], n: usize, seed: u64) -> Vec<(f64, f64, f64)> {
    let mixture = GaussianMixture::anisotropic3();
    let process = ProcessConfig::vp_default()
        .build()
        .expect("default VP process");
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
            let (_, force) = mixture
                .log_prob_and_score_at(&x0.data, 1.0, 0.0)
                .expect("valid mixture");
            let (_, truth) = mixture
                .log_prob_and_score_at(&xt, a, s)
                .expect("valid mixture");
            let (mut vf, mut ve) = (0.0, 0.0);
            for i in 0..xt.len() {
                vf += (force[i] / a - truth[i]).powi(2);
                ve += (-eps[i] / s - truth[i]).powi(2);
            }
            (t, vf / n as f64, ve / n as f64)
        })
        .collect()
}
