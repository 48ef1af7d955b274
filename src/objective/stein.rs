//! Stein objectives, which need the input-Jacobian J = ∂s/∂x of the network: implicit (Hyvärinen)
//! score matching with the exact trace, sliced score matching (+VR) with vᵀJv, and its
//! finite-difference form. J v comes from forward-mode tangents pushed through the network with
//! ordinary differentiable ops, so one reverse pass gives the exact parameter gradients, second-order
//! terms included (candle's double backward would silently drop them: DESIGN.md).

use super::regression::noise;
use super::{Batch, Projection};
use crate::nn::ScoreNet;
use crate::score::{probes, DivergenceModel};
use anyhow::Result;
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;

/// ISM at level t: mean_n [½‖s(x_t)‖² + tr ∂s/∂x(x_t)], the exact trace of the Jacobian.
pub fn ism(net: &ScoreNet, t: f64, b: &Batch, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let n = b.x0.dims()[0];
    let z = noise(net, &b.x0, vec![t; n], rng)?;
    let (s, div) = net.score_and_divergence(&z.xt, &z.t)?;
    let per_row = ((s.sqr()?.sum(1)? * 0.5)? + div)?;
    Ok(per_row.mean_all()?)
}

/// SSM at level t: mean over samples and projections of vᵀJv + ½(vᵀs)² (VR: + ½‖s‖²).
pub fn ssm(
    net: &ScoreNet,
    t: f64,
    kind: Projection,
    m: usize,
    variance_reduced: bool,
    b: &Batch,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let (n, d) = b.x0.dims2()?;
    let z = noise(net, &b.x0, vec![t; n], rng)?;
    let v = probes(kind, m, n, d, rng, net.dtype(), b.x0.device())?;
    let (s, q) = net.score_and_quadratic_forms(&z.xt, &z.t, &v)?;
    let quad = if variance_reduced {
        (s.sqr()?.sum(1)? * 0.5)?
            .unsqueeze(0)?
            .broadcast_as((m, n))?
            .contiguous()?
    } else {
        (v.broadcast_mul(&s.unsqueeze(0)?)?.sum(2)?.sqr()? * 0.5)?
    };
    Ok((q + quad)?.mean_all()?)
}

/// FD-SSM at level t: u± = vᵀs(x ± εv), loss mean_n [(u₊ − u₋)/(2ε) + ⅛(u₊ + u₋)²]
/// (Pang et al. 2020: both Jacobian and quadratic terms from two forward evaluations, O(ε²) bias).
pub fn fd_ssm(
    net: &ScoreNet,
    t: f64,
    kind: Projection,
    eps: f64,
    b: &Batch,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let (n, d) = b.x0.dims2()?;
    let z = noise(net, &b.x0, vec![t; n], rng)?;
    let v = probes(kind, 1, n, d, rng, net.dtype(), b.x0.device())?.squeeze(0)?;
    let x2 = Tensor::cat(&[(&z.xt + (&v * eps)?)?, (&z.xt - (&v * eps)?)?], 0)?;
    let t2 = Tensor::cat(&[&z.t, &z.t], 0)?;
    let s2 = crate::score::ScoreModel::score(net, &x2, &t2)?;
    let u = (s2 * Tensor::cat(&[&v, &v], 0)?)?.sum(1)?;
    let (up, um) = (u.narrow(0, 0, n)?, u.narrow(0, n, n)?);
    let per_row = (((&up - &um)? / (2.0 * eps))? + ((up + um)?.sqr()? * 0.125)?)?;
    Ok(per_row.mean_all()?)
}
