//! Open question 2: the learned score near and off the data manifold, beside the empirical score.

use super::Settings;
use crate::data::images::Images;
use crate::nn::Model;
use crate::plot;
use crate::score::{times, ScoreModel};
use anyhow::Result;
use candle_core::{Device, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::Path;

/// Times of the manifold section.
pub(super) const MANIFOLD_TIMES: [f64; 7] = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0];

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
pub(super) fn manifold(
    s: &Settings,
    net: &Model,
    train: &Images,
    test: &Images,
) -> Result<Vec<ManifoldRow>> {
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

/// The figure of E‖s‖·σ_t/√d against σ_t, learned and smoothed-training-set scores per set.
pub(super) fn plot_manifold(rows: &[ManifoldRow], path: &Path) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
