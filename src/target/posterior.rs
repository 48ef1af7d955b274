//! Note 000's estimators of the diffused score of a Boltzmann density p0 ∝ exp(−βU), as score
//! models that need no training: the score is the posterior-expected force,
//! ∇log p_t(x_t) = E[βF(x0) | x_t] / α_t, and the posterior p(x0 | x_t) ∝ N(x0; x_t/α_t, σ_t²/α_t² I)·p0(x0)
//! is sampled by self-normalised importance sampling from that Gaussian kernel with K draws,
//! weights w_k ∝ exp(−βU(x0_k)) (iDEM's estimator, Akhound-Sadegh et al. 2024).
//!
//! Two read-outs of the same weighted draws: the force form Σ w_k βF(x0_k) / (α_t Σ w_k), and
//! the kernel (Tweedie) form Σ w_k (α_t x0_k − x_t) / (σ_t² Σ w_k). Both are consistent as K → ∞;
//! the force form has the smaller variance at low noise, the kernel form at high noise (where
//! F/α_t explodes), as for the regression targets of `objective::blend`.

use super::Potential;
use crate::process::Process;
use crate::score::ScoreModel;
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Which read-out of the weighted posterior draws.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Readout {
    /// Σ w_k βF(x0_k) / (α_t Σ w_k): the posterior-expected force (note 000).
    Force,
    /// Σ w_k (α_t x0_k − x_t) / (σ_t² Σ w_k): Tweedie's formula with the posterior mean.
    Kernel,
    /// The force form where α_t > σ_t (low noise), the kernel form elsewhere. A hard switch: a
    /// smooth blend leaves a share ~α_t² of F/α_t at high noise, where the draws reach far out and
    /// a steep potential's forces are enormous.
    Blend,
}

/// The Monte Carlo posterior-expected-force score of a potential under a process.
pub struct PosteriorScore {
    pub potential: Arc<dyn Potential + Send + Sync>,
    pub process: Arc<dyn Process>,
    /// Importance draws per point.
    pub k: usize,
    pub readout: Readout,
    seed: u64,
    calls: AtomicU64,
}

impl PosteriorScore {
    /// The estimator with `k` draws per point; its draws follow `seed` and the call count.
    pub fn new(
        potential: Arc<dyn Potential + Send + Sync>,
        process: Arc<dyn Process>,
        k: usize,
        readout: Readout,
        seed: u64,
    ) -> Result<Self> {
        if k == 0 {
            bail!("the posterior estimator needs at least one importance draw (K ≥ 1)");
        }
        Ok(PosteriorScore {
            potential,
            process,
            k,
            readout,
            seed,
            calls: AtomicU64::new(0),
        })
    }

    /// Continues the draws after `calls` calls to `score` (a resumed training run's: one call
    /// per optimiser step).
    pub fn after_calls(self, calls: u64) -> Self {
        self.calls.store(calls, Ordering::Relaxed);
        self
    }

    /// The estimate at one point x_t (length d) and time t, from draws of `rng`.
    pub fn estimate(&self, x: &[f64], t: f64, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
        let (d, k) = (x.len(), self.k);
        let (a, s) = (self.process.alpha(t), self.process.sigma(t));
        let space = self.potential.space();
        let mut x0 = vec![0.0; k * d];
        for row in x0.chunks_exact_mut(d) {
            let mut e: Vec<f64> = (0..d).map(|_| StandardNormal.sample(rng)).collect();
            space.project(&mut e);
            for ((v, xi), ei) in row.iter_mut().zip(x).zip(&e) {
                *v = (xi + s * ei) / a;
            }
        }
        let (mut u, mut f) = (vec![0.0; k], vec![0.0; k * d]);
        self.potential.energy_force(&x0, &mut u, &mut f)?;
        let beta = self.potential.beta();
        // log-weights −βU; a draw whose energy or force overflowed has weight 0
        let logw: Vec<f64> = (0..k)
            .map(|j| {
                let fj = &f[j * d..(j + 1) * d];
                if u[j].is_finite() && fj.iter().all(|v| v.is_finite()) {
                    -beta * u[j]
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        let top = logw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !top.is_finite() {
            bail!("every importance draw at t = {t} has an infinite or NaN energy or force: the noise reaches far outside the potential's range (try a VE process with a smaller σ_max)");
        }
        // weights relative to the largest, so that none overflows
        let w: Vec<f64> = logw.iter().map(|l| (l - top).exp()).collect();
        let total: f64 = w.iter().sum();
        let kernel_share = match self.readout {
            Readout::Force => 0.0,
            Readout::Kernel => 1.0,
            Readout::Blend => {
                if a > s {
                    0.0
                } else {
                    1.0
                }
            }
        };
        let mut out = vec![0.0; d];
        for (j, &wj) in w.iter().enumerate().filter(|(_, w)| **w > 0.0) {
            let (r, fj) = (&x0[j * d..(j + 1) * d], &f[j * d..(j + 1) * d]);
            for i in 0..d {
                let force = if kernel_share < 1.0 {
                    beta * fj[i] / a
                } else {
                    0.0
                };
                let kernel = (a * r[i] - x[i]) / (s * s);
                out[i] += wj * ((1.0 - kernel_share) * force + kernel_share * kernel);
            }
        }
        out.iter_mut().for_each(|v| *v /= total);
        space.project(&mut out);
        Ok(out)
    }
}

impl ScoreModel for PosteriorScore {
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        {
            let (n, d) = x.dims2()?;
            if d != self.potential.dim() {
                bail!(
                    "points have dimension {d}, the potential {}",
                    self.potential.dim()
                );
            }
            let xs: Vec<f64> = crate::flat::values(x)?;
            let ts: Vec<f64> = crate::flat::values(t)?;
            let call = self.calls.fetch_add(1, Ordering::Relaxed);
            let rows: Vec<Vec<f64>> = (0..n)
                .into_par_iter()
                .map(|i| {
                    // one stream per (call, row): the draws do not depend on the thread count
                    let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                    rng.set_stream(call.wrapping_mul(1 << 32).wrapping_add(i as u64));
                    self.estimate(&xs[i * d..(i + 1) * d], ts[i], &mut rng)
                })
                .collect::<Result<_>>()?;
            let flat: Vec<f64> = rows.into_iter().flatten().collect();
            Ok(Tensor::from_vec(flat, (n, d), x.device())?.to_dtype(x.dtype())?)
        }
    }
    fn dim(&self) -> usize {
        self.potential.dim()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessConfig;
    use crate::target::GaussianMixture;

    /// On a mixture (its energy −log p, kT = 1), both read-outs converge to the exact diffused
    /// score where their variance is moderate: with K = 4000 draws the force form within 10% at
    /// low and middle noise, the kernel form at middle and high noise (the force form's F/α_t
    /// explodes as α_t → 0, the kernel form's 1/σ_t² as σ_t → 0).
    #[test]
    fn posterior_estimates_converge_to_the_exact_score() {
        let m = GaussianMixture::named("anisotropic3").unwrap();
        let p: Arc<dyn Process> = Arc::from(ProcessConfig::vp_default().build().unwrap());
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x0 = m.sample(20, &mut rng);
        for (readout, ts) in [(Readout::Force, [0.02, 0.2]), (Readout::Kernel, [0.2, 0.6])] {
            let est =
                PosteriorScore::new(Arc::new(m.clone()), p.clone(), 4000, readout, 2).unwrap();
            for t in ts {
                let (a, s) = (p.alpha(t), p.sigma(t));
                let (mut err, mut norm) = (0.0, 0.0);
                for i in 0..x0.n {
                    let xt: Vec<f64> = x0
                        .row(i)
                        .iter()
                        .map(|v| {
                            a * v
                                + s * {
                                    let e: f64 = StandardNormal.sample(&mut rng);
                                    e
                                }
                        })
                        .collect();
                    let (_, exact) = m.log_prob_and_score_at(&xt, a, s).unwrap();
                    let got = est.estimate(&xt, t, &mut rng).unwrap();
                    err += got
                        .iter()
                        .zip(&exact)
                        .map(|(g, e)| (g - e).powi(2))
                        .sum::<f64>();
                    norm += exact.iter().map(|e| e * e).sum::<f64>();
                }
                let rel = (err / norm).sqrt();
                assert!(rel < 0.1, "{readout:?}, t = {t}: relative error {rel}");
            }
        }
    }

    /// The force read-out is the sharper one at low noise, the kernel read-out at high noise.
    #[test]
    fn readouts_trade_variance_across_noise_levels() {
        let m = GaussianMixture::named("anisotropic3").unwrap();
        let p: Arc<dyn Process> = Arc::from(ProcessConfig::vp_default().build().unwrap());
        let x0 = m.sample(1, &mut ChaCha8Rng::seed_from_u64(5));
        let spread = |readout, t: f64| {
            let est = PosteriorScore::new(Arc::new(m.clone()), p.clone(), 16, readout, 3).unwrap();
            let xt: Vec<f64> = x0.data.iter().map(|v| p.alpha(t) * v).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(6);
            let draws: Vec<Vec<f64>> = (0..200)
                .map(|_| est.estimate(&xt, t, &mut rng).unwrap())
                .collect();
            let mean: Vec<f64> = (0..x0.d)
                .map(|j| draws.iter().map(|d| d[j]).sum::<f64>() / 200.0)
                .collect();
            draws
                .iter()
                .map(|d| {
                    d.iter()
                        .zip(&mean)
                        .map(|(a, b)| (a - b).powi(2))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / 200.0
        };
        assert!(spread(Readout::Force, 0.01) < spread(Readout::Kernel, 0.01));
        assert!(spread(Readout::Kernel, 0.9) < spread(Readout::Force, 0.9));
    }
}
