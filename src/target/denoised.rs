//! Note 000's single-sample estimator of the diffused score of p0 ∝ exp(−βU): the
//! posterior-expected force E[βF(x0) | x_t]/α_t with its one sample at the Tweedie denoiser of a
//! trained model, βF(x̂0)/α_t, x̂0 = (x_t + σ_t² s_θ(x_t, t))/α_t.
//!
//! Exact when F is linear (a Gaussian p0) and s_θ is the exact score: then E[F(x0) | x_t] =
//! F(E[x0 | x_t]) = F(x̂0). For a nonlinear force it is biased by Jensen's gap
//! E[F(x0) | x_t] − F(E[x0 | x_t]), small where the posterior p(x0 | x_t) is narrow (low noise)
//! or F is nearly linear over it; it reads the trained model through the potential's force.

use super::Potential;
use crate::process::Process;
use crate::score::{tweedie_coefficients, ScoreModel};
use anyhow::{bail, Result};
use candle_core::Tensor;
use std::sync::Arc;

/// βF(x̂0)/α_t with x̂0 the Tweedie denoiser of `model`, as a score model; above a noise level
/// σ_t/α_t > `max_noise` the model's own score s_θ instead (there x̂0 nears the data mean, where
/// particles coincide and a pair force is undefined).
pub struct DenoisedForce {
    /// The trained (or exact) score s_θ whose denoiser gives x̂0.
    pub model: Box<dyn ScoreModel>,
    /// The process s_θ was trained for (α_t, σ_t).
    pub process: Arc<dyn Process>,
    pub potential: Arc<dyn Potential + Send + Sync>,
    /// The noise level σ_t/α_t above which s_θ is used as is (∞: never).
    pub max_noise: f64,
}

impl DenoisedForce {
    /// The estimator at every noise level; the model, the process and the potential must share
    /// dimension and space.
    pub fn new(
        model: Box<dyn ScoreModel>,
        process: Arc<dyn Process>,
        potential: Arc<dyn Potential + Send + Sync>,
    ) -> Result<Self> {
        if model.dim() != potential.dim() {
            bail!(
                "the model has dimension {}, the potential {}",
                model.dim(),
                potential.dim()
            );
        }
        if process.space() != potential.space() {
            bail!(
                "the model lives on {:?} but the potential on {:?}",
                process.space(),
                potential.space()
            );
        }
        Ok(DenoisedForce {
            model,
            process,
            potential,
            max_noise: f64::INFINITY,
        })
    }
}

impl ScoreModel for DenoisedForce {
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        let s: Vec<f64> = crate::flat::values(&self.model.score(x, t)?)?;
        let (xs, ts): (Vec<f64>, Vec<f64>) = (crate::flat::values(x)?, crate::flat::values(t)?);
        let beta = self.potential.beta();
        let mut out = s.clone();
        let mut x0 = vec![0.0; d];
        for (i, &t) in ts.iter().enumerate() {
            let (a, sigma) = (self.process.alpha(t), self.process.sigma(t));
            if sigma / a > self.max_noise {
                continue;
            }
            let (c_x, c_s) = tweedie_coefficients(a, sigma);
            let row = i * d..(i + 1) * d;
            for ((v, x), s) in x0.iter_mut().zip(&xs[row.clone()]).zip(&s[row.clone()]) {
                *v = c_x * x + c_s * s;
            }
            let f = self.potential.force(&x0)?;
            if let Some(bad) = f.iter().find(|v| !v.is_finite()) {
                bail!("the force at the denoiser x̂0 is {bad} at t = {t} (σ_t/α_t = {:.3}): at high noise x̂0 nears the data mean, where particles coincide; use the model's score there (--tweedie-max-noise)", sigma / a);
            }
            for (o, f) in out[row].iter_mut().zip(&f) {
                *o = beta * f / a;
            }
        }
        let out = Tensor::from_vec(out, (n, d), x.device())?.to_dtype(x.dtype())?;
        // a particle force sums to zero already; projecting keeps the score on the model's space
        self.process.space().project_tensor(&out)
    }
    fn dim(&self) -> usize {
        self.model.dim()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessConfig;
    use crate::target::{ExactScore, GaussianMixture, MixtureEnergy};
    use candle_core::Device;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    /// (estimate, exact score) of `potential` at x_t = α x0 + σ ε for draws x0 of `mixture`
    /// (the Boltzmann density), at time t, with the exact score of `mixture` as the model.
    fn both(
        mixture: &GaussianMixture,
        potential: MixtureEnergy,
        t: f64,
        max_noise: f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let process: Arc<dyn Process> = Arc::from(ProcessConfig::vp_default().build().unwrap());
        let exact = ExactScore {
            mixture: mixture.clone(),
            process: process.clone(),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let x0 = mixture.sample(200, &mut rng);
        let (a, s) = (process.alpha(t), process.sigma(t));
        let xt: Vec<f64> = x0
            .data
            .iter()
            .map(|x| a * x + s * rng.sample::<f64, _>(StandardNormal))
            .collect();
        let x = Tensor::from_vec(xt, (x0.n, x0.d), &Device::Cpu).unwrap();
        let tt = Tensor::full(t, x0.n, &Device::Cpu).unwrap();
        let want: Vec<f64> = crate::flat::values(&exact.score(&x, &tt).unwrap()).unwrap();
        let mut est = DenoisedForce::new(Box::new(exact), process, Arc::new(potential)).unwrap();
        est.max_noise = max_noise;
        let got: Vec<f64> = crate::flat::values(&est.score(&x, &tt).unwrap()).unwrap();
        (got, want)
    }

    /// A Gaussian at kT = 2 (p0 = N(μ, 2Σ), βF(x) = −(2Σ)⁻¹(x − μ), linear) with the exact score
    /// of p0 as the model: x̂0 is the exact posterior mean, so βF(x̂0)/α_t is the exact diffused
    /// score at every noise level.
    #[test]
    fn exact_for_a_gaussian() {
        let (mu, cov) = (
            vec![1.0, -0.5, 0.2],
            vec![1.0, 0.3, 0.0, 0.3, 0.5, 0.1, 0.0, 0.1, 0.8],
        );
        let p0 =
            GaussianMixture::gaussian(mu.clone(), cov.iter().map(|c| 2.0 * c).collect()).unwrap();
        let energy = MixtureEnergy {
            mixture: GaussianMixture::gaussian(mu, cov).unwrap(),
            kt: 2.0,
        };
        for t in [0.01, 0.2, 0.5, 0.9] {
            let (got, want) = both(&p0, energy.clone(), t, f64::INFINITY);
            let err = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
                .fold(0.0, f64::max);
            assert!(err < 1e-9, "t = {t}: relative error {err}");
        }
    }

    /// A mixture's force is nonlinear: F(E[x0 | x_t]) ≠ E[F(x0) | x_t] where the posterior
    /// spans several modes, so the estimate misses the exact score by far more than rounding.
    #[test]
    fn biased_for_a_nonlinear_force() {
        let m = GaussianMixture::named("anisotropic3").unwrap();
        let (got, want) = both(&m, m_energy(&m), 0.5, f64::INFINITY);
        let err: f64 = got.iter().zip(&want).map(|(g, w)| (g - w).powi(2)).sum();
        let norm: f64 = want.iter().map(|w| w * w).sum();
        let rel = (err / norm).sqrt();
        assert!(rel > 0.05, "relative error {rel}");
        // above max_noise the model's (here exact) score is returned as is
        let (got, want) = both(&m, m_energy(&m), 0.5, 0.5);
        assert_eq!(got, want);
    }

    fn m_energy(m: &GaussianMixture) -> MixtureEnergy {
        MixtureEnergy {
            mixture: m.clone(),
            kt: 1.0,
        }
    }
}
