//! A centred Gaussian on the process's subspace, diffused exactly: the ground truth for particles
//! with zero centre of mass (noise, prior and likelihood in N·k − k dimensions).

use crate::data::Points;
use crate::process::Process;
use crate::score::{DivergenceModel, ScoreModel};
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::Rng;
use rand_distr::StandardNormal;
use std::sync::Arc;

/// p0 = N(0, s0² P) with P the projection onto `process.space()`, so p_t = N(0, v_t P) with
/// v_t = α_t² s0² + σ_t², score −x/v_t and log p_t(x) = −‖x‖²/(2v_t) − ½ dof log(2π v_t) on the space.
pub struct SubspaceGaussian {
    /// Dimension d of the ambient space (N·k for particles).
    pub dim: usize,
    /// Variance s0² of the data along the space.
    pub var0: f64,
    pub process: Arc<dyn Process>,
}

impl SubspaceGaussian {
    /// v_t = α_t² s0² + σ_t².
    pub fn variance(&self, t: f64) -> f64 {
        let (a, s) = (self.process.alpha(t), self.process.sigma(t));
        a * a * self.var0 + s * s
    }

    /// log p_t at points (rows of d values lying in the space).
    pub fn log_prob(&self, x: &[f64], t: f64) -> Vec<f64> {
        let v = self.variance(t);
        let dof = self.process.space().dof(self.dim) as f64;
        x.chunks_exact(self.dim)
            .map(|r| {
                -0.5 * r.iter().map(|e| e * e).sum::<f64>() / v
                    - 0.5 * dof * (2.0 * std::f64::consts::PI * v).ln()
            })
            .collect()
    }

    /// n exact draws from p0.
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Result<Points> {
        let s0 = self.var0.sqrt();
        let mut x: Vec<f64> = (0..n * self.dim)
            .map(|_| s0 * rng.sample::<f64, _>(StandardNormal))
            .collect();
        self.process.space().project(&mut x);
        Points::new(n, self.dim, x)
    }

    /// −1/v_t per row's time, as an [n, 1] column of x's dtype.
    fn slope(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (_, d) = x.dims2()?;
        if d != self.dim {
            bail!("points have dimension {d}, the Gaussian has {}", self.dim);
        }
        crate::score::column(t, x.dtype(), |t| -1.0 / self.variance(t))
    }
}

impl ScoreModel for SubspaceGaussian {
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let px = self.process.space().project_tensor(x)?;
        Ok(px.broadcast_mul(&self.slope(x, t)?)?)
    }
    fn dim(&self) -> usize {
        self.dim
    }
}

/// J = −P/v_t, so vᵀJv = −‖P v‖²/v_t.
impl DivergenceModel for SubspaceGaussian {
    fn score_and_quadratic_forms(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let pv = self.process.space().project_tensor(v)?;
        let slope = self.slope(x, t)?.squeeze(1)?.unsqueeze(0)?;
        let q = pv.sqr()?.sum(2)?.broadcast_mul(&slope)?;
        Ok((self.score(x, t)?, q))
    }
}
