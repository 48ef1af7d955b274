//! A mixture's exact diffused score as a `ScoreModel` (and its exact divergence).

use super::mixture::time_runs;
use super::GaussianMixture;
use crate::process::Process;
use crate::score::{DivergenceModel, ScoreModel};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use std::sync::Arc;

/// The exact score of a mixture diffused by a process, as a `ScoreModel`.
pub struct ExactScore {
    pub mixture: GaussianMixture,
    pub process: Arc<dyn Process>,
}

impl ScoreModel for ExactScore {
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (n, d, xs, ts) = self.inputs(x, t)?;
        let (_, s) = self
            .mixture
            .log_prob_and_score(self.process.as_ref(), &xs, &ts)?;
        Ok(Tensor::from_vec(s, (n, d), x.device())?.to_dtype(x.dtype())?)
    }
    fn dim(&self) -> usize {
        self.mixture.dim()
    }
}

impl ExactScore {
    /// (n, d, x, t) as f64 vectors, checking x's dimension against the mixture's.
    fn inputs(&self, x: &Tensor, t: &Tensor) -> Result<(usize, usize, Vec<f64>, Vec<f64>)> {
        let (n, d) = x.dims2()?;
        if d != self.mixture.dim() {
            bail!(
                "points have dimension {d}, the mixture has {}",
                self.mixture.dim()
            );
        }
        let xs: Vec<f64> = crate::flat::values(x)?;
        let ts: Vec<f64> = t.to_dtype(DType::F64)?.to_vec1()?;
        Ok((n, d, xs, ts))
    }

    /// Score [n, d] and `score_and_curvature_at` per row time: Laplacian \[n\] or probe forms [m, n].
    fn curvature(
        &self,
        x: &Tensor,
        t: &Tensor,
        probes: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (n, d, xs, ts) = self.inputs(x, t)?;
        let pv: Option<Vec<f64>> = probes.map(crate::flat::values::<f64>).transpose()?;
        let m = pv.as_ref().map_or(1, |v| v.len() / (n * d).max(1));
        let (mut score, mut curv) = (vec![0.0; n * d], vec![0.0; m * n]);
        for r in time_runs(&ts) {
            let sub: Option<Vec<f64>> = pv.as_ref().map(|v| {
                (0..m)
                    .flat_map(|p| {
                        v[(p * n + r.start) * d..(p * n + r.end) * d]
                            .iter()
                            .copied()
                    })
                    .collect()
            });
            let p = self.process.as_ref();
            let (s, c) = self.mixture.score_and_curvature_at(
                &xs[r.start * d..r.end * d],
                p.alpha(ts[r.start]),
                p.sigma(ts[r.start]),
                sub.as_deref(),
            )?;
            score[r.start * d..r.end * d].copy_from_slice(&s);
            for (p, chunk) in c.chunks(r.len()).enumerate() {
                curv[p * n + r.start..p * n + r.end].copy_from_slice(chunk);
            }
        }
        let dev = x.device();
        let score = Tensor::from_vec(score, (n, d), dev)?.to_dtype(x.dtype())?;
        let curv = Tensor::from_vec(curv, m * n, dev)?;
        let curv = if probes.is_some() {
            curv.reshape((m, n))?
        } else {
            curv
        };
        Ok((score, curv.to_dtype(x.dtype())?))
    }
}

/// Analytic: the Laplacian and Hessian forms of log p_t (`GaussianMixture::score_and_curvature_at`).
impl DivergenceModel for ExactScore {
    fn score_and_quadratic_forms(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (m, n, d) = v.dims3()?;
        if (n, d) != x.dims2()? {
            bail!("probes have shape [{m}, {n}, {d}], points {:?}", x.dims());
        }
        self.curvature(x, t, Some(v))
    }
    fn score_and_divergence(&self, x: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)> {
        self.curvature(x, t, None)
    }
}
