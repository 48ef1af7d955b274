//! Stein objectives, which need the input-Jacobian J = ∂s/∂x of the network: implicit (Hyvärinen)
//! score matching with the exact trace, sliced score matching (+VR) with vᵀJv, and its
//! finite-difference form. J v comes from forward-mode tangents pushed through the network with
//! ordinary differentiable ops, so one reverse pass gives the exact parameter gradients, second-order
//! terms included (candle's double backward would silently drop them: DESIGN.md).

use super::regression::noise;
use super::{Batch, Probe};
use crate::nn::Model;
use crate::score::{basis, probes, DivergenceModel};
use anyhow::Result;
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;

/// One draw of a Stein objective: x_t [n, d] at times t \[n\] and directions v [m, n, d] (ISM: the
/// d unit vectors; SSM: m random projections).
pub struct Stein {
    pub xt: Tensor,
    pub t: Tensor,
    pub v: Tensor,
    pub kind: SteinKind,
}

/// Which Stein loss: ISM sums vᵀJv over the basis; SSM averages it over the projections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SteinKind {
    /// mean_n [½‖s‖² + Σ_j e_jᵀ J e_j].
    Ism,
    /// mean_{k,n} [v_kᵀ J v_k + ½(v_kᵀ s)²], or with `variance_reduced` + ½‖s‖² instead.
    Ssm { variance_reduced: bool },
}

/// ISM at level t: mean_n [½‖s(x_t)‖² + tr ∂s/∂x(x_t)], the exact trace of the Jacobian.
pub fn ism(net: &Model, t: f64, b: &Batch, rng: &mut ChaCha8Rng) -> Result<Stein> {
    let (n, d) = b.x0.dims2()?;
    let (xt, t) = noise(net, &b.x0, vec![t; n], rng)?.tensors(net.dtype(), b.x0.device())?;
    Ok(Stein {
        v: basis(n, d, net.dtype(), b.x0.device())?,
        xt,
        t,
        kind: SteinKind::Ism,
    })
}

/// SSM at level t: mean over samples and projections of vᵀJv + ½(vᵀs)² (VR: + ½‖s‖²).
pub fn ssm(
    net: &Model,
    t: f64,
    kind: Probe,
    m: usize,
    variance_reduced: bool,
    b: &Batch,
    rng: &mut ChaCha8Rng,
) -> Result<Stein> {
    let (n, d) = b.x0.dims2()?;
    let (xt, t) = noise(net, &b.x0, vec![t; n], rng)?.tensors(net.dtype(), b.x0.device())?;
    Ok(Stein {
        v: probes(kind, m, n, d, rng, net.dtype(), b.x0.device())?,
        xt,
        t,
        kind: SteinKind::Ssm { variance_reduced },
    })
}

impl Stein {
    /// The loss with candle ops (differentiable in the network's parameters).
    pub fn loss(&self, net: &Model) -> Result<Tensor> {
        let (m, n, _) = self.v.dims3()?;
        let (s, q) = net.score_and_quadratic_forms(&self.xt, &self.t, &self.v)?;
        let half_s2 = (s.sqr()?.sum(1)? * 0.5)?;
        Ok(match self.kind {
            SteinKind::Ism => (half_s2 + q.sum(0)?)?.mean_all()?,
            SteinKind::Ssm {
                variance_reduced: true,
            } => (q + half_s2.unsqueeze(0)?.broadcast_as((m, n))?)?.mean_all()?,
            SteinKind::Ssm {
                variance_reduced: false,
            } => {
                let vs = self.v.broadcast_mul(&s.unsqueeze(0)?)?.sum(2)?;
                (q + (vs.sqr()? * 0.5)?)?.mean_all()?
            }
        })
    }
}

/// FD-SSM at level t: u± = vᵀs(x ± εv), loss mean_n [(u₊ − u₋)/(2ε) + ⅛(u₊ + u₋)²]
/// (Pang et al. 2020: both Jacobian and quadratic terms from two forward evaluations, O(ε²) bias).
pub fn fd_ssm(
    net: &Model,
    t: f64,
    kind: Probe,
    eps: f64,
    b: &Batch,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let (n, d) = b.x0.dims2()?;
    let (xt, tt) = noise(net, &b.x0, vec![t; n], rng)?.tensors(net.dtype(), b.x0.device())?;
    let v = probes(kind, 1, n, d, rng, net.dtype(), b.x0.device())?.squeeze(0)?;
    let v = net.process().space().project_tensor(&v)?;
    let x2 = Tensor::cat(&[(&xt + (&v * eps)?)?, (&xt - (&v * eps)?)?], 0)?;
    let t2 = Tensor::cat(&[&tt, &tt], 0)?;
    let s2 = crate::score::ScoreModel::score(net, &x2, &t2)?;
    let u = (s2 * Tensor::cat(&[&v, &v], 0)?)?.sum(1)?;
    let (up, um) = (u.narrow(0, 0, n)?, u.narrow(0, n, n)?);
    let per_row = (((&up - &um)? / (2.0 * eps))? + ((up + um)?.sqr()? * 0.125)?)?;
    Ok(per_row.mean_all()?)
}
