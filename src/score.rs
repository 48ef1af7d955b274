//! The `ScoreModel` trait that samplers, likelihoods and metrics meet at, and the conversions
//! between the score and the other parameterisations (ε, x0, v) in one place.

use crate::process::Process;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

pub use crate::parameterisation::{OutputMap, Parameterisation};

/// Anything that gives s(x, t) ≈ ∇x log p_t(x): exact targets, trained networks, estimators.
/// `Sync`, so that a sampler can run on a pool thread (`pool::warm`).
pub trait ScoreModel: Sync {
    /// Score at x [n, d] and per-row times t \[n\]; returns [n, d] in x's dtype and device.
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor>;
    /// Data dimension d.
    fn dim(&self) -> usize;
}

/// A score model that can also give the divergence of its score ∇·s = tr(∂s/∂x).
pub trait DivergenceModel: ScoreModel {
    /// Score s [n, d] at x [n, d], t \[n\], and the quadratic forms q[k, i] = v_kiᵀ (∂s/∂x)(x_i) v_ki
    /// [m, n] for directions v [m, n, d] (exact Jacobian-vector products, x's dtype).
    fn score_and_quadratic_forms(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)>;

    /// The same on host values, where the model has a host path (the fused CPU network): solvers
    /// with their state in flat buffers then skip the tensor round trip.
    fn host(&self) -> Option<&dyn HostDivergence> {
        None
    }

    /// Score s [n, d] and the exact divergence ∇·s \[n\]; by default the sum of the quadratic forms
    /// of the d unit vectors (d Jacobian-vector products, batched).
    fn score_and_divergence(&self, x: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, d) = x.dims2()?;
        let eye = basis(n, d, x.dtype(), x.device())?;
        let (s, q) = self.score_and_quadratic_forms(x, t, &eye)?;
        Ok((s, q.sum(0)?))
    }
}

/// A divergence model evaluated straight on host buffers, every point at one time t.
pub trait HostDivergence: Sync {
    /// s [n × d] at the points (y, stride): x_i = y[i·stride..i·stride + d], and trace\[i\] =
    /// w Σ_k v_kiᵀ (∂s/∂x)(x_i) v_ki along the directions (v [m × n × d], m, w).
    fn score_and_trace(
        &self,
        points: (&[f64], usize),
        t: f64,
        directions: (&[f32], usize, f64),
        s: &mut [f64],
        trace: &mut [f64],
    ) -> Result<()>;
}

/// The d unit vectors e_j for each of n points, [d, n, d] (exact traces as Σ_j e_jᵀ J e_j).
pub fn basis(n: usize, d: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::eye(d, dtype, device)?
        .unsqueeze(1)?
        .broadcast_as((d, n, d))?
        .contiguous()?)
}

/// Distribution of random probe / projection directions v, all with E[v vᵀ] = I (Hutchinson
/// trace estimates, sliced score matching).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// Independent ±1 entries (the lower-variance choice).
    Rademacher,
    /// Standard normal entries.
    Gaussian,
    /// Uniform on the sphere of radius √d.
    Sphere,
}

/// m probes per point, [m, n, d]: point i's m probes are drawn together, in point order, so a
/// point's probes do not depend on how many points follow it.
pub fn probes(
    kind: Probe,
    m: usize,
    n: usize,
    d: usize,
    rng: &mut ChaCha8Rng,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let mut v = vec![0.0f64; m * n * d];
    for i in 0..n {
        for k in 0..m {
            let row = &mut v[(k * n + i) * d..(k * n + i + 1) * d];
            for e in row.iter_mut() {
                *e = match kind {
                    Probe::Rademacher => {
                        if rng.random::<bool>() {
                            1.0
                        } else {
                            -1.0
                        }
                    }
                    Probe::Gaussian | Probe::Sphere => StandardNormal.sample(rng),
                };
            }
            if kind == Probe::Sphere {
                let norm = row.iter().map(|e| e * e).sum::<f64>().sqrt().max(1e-300);
                row.iter_mut().for_each(|e| *e *= (d as f64).sqrt() / norm);
            }
        }
    }
    Ok(Tensor::from_vec(v, (m, n, d), device)?.to_dtype(dtype)?)
}

/// Per-row [n, 1] columns of f(t) evaluated at the times in t \[n\].
pub fn column(t: &Tensor, dtype: DType, f: impl Fn(f64) -> f64) -> Result<Tensor> {
    let ts: Vec<f64> = crate::flat::values(t)?;
    column_of(ts.into_iter().map(f).collect(), dtype, t.device())
}

/// Per-row values as an [n, 1] column of `dtype` on `device`.
pub fn column_of(v: Vec<f64>, dtype: DType, device: &candle_core::Device) -> Result<Tensor> {
    let n = v.len();
    Ok(Tensor::from_vec(v, (n, 1), device)?.to_dtype(dtype)?)
}

/// Tweedie's formula as coefficients: x̂0 = E[x0 | x_t] = (x_t + σ_t² s)/α_t = c_x x_t + c_s s
/// with (c_x, c_s) = (1/α_t, σ_t²/α_t).
pub fn tweedie_coefficients(alpha: f64, sigma: f64) -> (f64, f64) {
    (1.0 / alpha, sigma * sigma / alpha)
}

/// Tweedie's formula: x̂0 = E[x0 | x_t] = (x_t + σ_t² s(x_t, t))/α_t, per row's time.
pub fn denoise(
    model: &dyn ScoreModel,
    process: &dyn Process,
    x: &Tensor,
    t: &Tensor,
) -> Result<Tensor> {
    let s = model.score(x, t)?;
    let ts: Vec<f64> = crate::flat::values(t)?;
    let (c_x, c_s): (Vec<f64>, Vec<f64>) = ts
        .into_iter()
        .map(|t| tweedie_coefficients(process.alpha(t), process.sigma(t)))
        .unzip();
    let (c_x, c_s) = (
        column_of(c_x, x.dtype(), x.device())?,
        column_of(c_s, x.dtype(), x.device())?,
    );
    Ok((x.broadcast_mul(&c_x)? + s.broadcast_mul(&c_s)?)?)
}

/// The probability-flow ODE's coefficients (f(t), ½ g(t)²): dx/dt = f x − ½ g² s, and its
/// divergence d·f − ½ g² ∇·s (Song et al. 2021, eq. 13).
pub fn pf_coefficients(process: &dyn Process, t: f64) -> (f64, f64) {
    (process.drift_coef(t), 0.5 * process.g2(t))
}

/// Probability-flow velocity dx/dt = f(t) x − ½ g(t)² s (Song et al. 2021, eq. 13).
pub fn pf_velocity(process: &dyn Process, x: &Tensor, s: &Tensor, t: f64) -> Result<Tensor> {
    let (f, half_g2) = pf_coefficients(process, t);
    Ok(((x * f)? - (s * half_g2)?)?)
}

/// A \[n\] tensor filled with time t.
pub fn times(t: f64, n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::full(t, n, device)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tweedie's formula on an exact Gaussian score equals the posterior mean
    /// E[x0 | x_t] = μ + α s0² (x_t − α μ)/(α² s0² + σ²), per row's time.
    #[test]
    fn denoise_is_the_gaussian_posterior_mean() -> Result<()> {
        use crate::process::Vp;
        use crate::target::{ExactScore, GaussianMixture};
        let (mu, s0sq) = ([1.5, -0.5], [0.7, 2.0]);
        let vp = Vp {
            beta_min: 0.1,
            beta_max: 20.0,
            t_min: 1e-3,
        };
        let model = ExactScore {
            mixture: GaussianMixture::gaussian(mu.to_vec(), vec![s0sq[0], 0.0, 0.0, s0sq[1]])?,
            process: std::sync::Arc::new(vp.clone()),
        };
        let dev = Device::Cpu;
        let x = Tensor::new(&[[0.3f64, -1.2], [2.0, 0.5], [-3.0, 4.0]], &dev)?;
        let ts = [0.05, 0.4, 0.9];
        let got: Vec<f64> =
            crate::flat::values(&denoise(&model, &vp, &x, &Tensor::new(&ts, &dev)?)?)?;
        let xs: Vec<f64> = crate::flat::values(&x)?;
        for (i, &t) in ts.iter().enumerate() {
            let (a, s) = (vp.alpha(t), vp.sigma(t));
            for j in 0..2 {
                let want =
                    mu[j] + a * s0sq[j] * (xs[2 * i + j] - a * mu[j]) / (a * a * s0sq[j] + s * s);
                let err = (got[2 * i + j] - want).abs();
                assert!(err < 1e-10, "t {t} [{j}]: {} vs {want}", got[2 * i + j]);
            }
        }
        Ok(())
    }
}
