//! The MLP on [x, embed(t)] (score_sde's toy networks, the PyTorch peer's `ScoreMLP`), with
//! forward-mode tangents, energy jets and a fused CPU copy.

use super::config::Arch;
use super::fused::FusedMlp;
use super::layers::{self, affine, weights_methods, Activation, TimeEmbedding, Weights};
use super::network::{EnergyJets, Network, Tangents};
use crate::score::basis;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use rand::Rng;

/// `depth` hidden layers of `width` on [x, embed(t)], then a linear output of `out` columns.
pub struct Mlp {
    /// Input dimension d.
    pub dim: usize,
    pub activation: Activation,
    /// layers.{i}.weight [out, in], layers.{i}.bias \[out\], in order; the time embedding.
    pub w: Weights,
}

impl Mlp {
    /// A new MLP with PyTorch's default initialisation, drawn from `rng` (embedding first).
    pub fn new(
        dim: usize,
        out: usize,
        arch: &Arch,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Self> {
        let embed = TimeEmbedding::of(arch, rng, device)?;
        let mut params = Vec::new();
        let mut fan_in = dim + arch.embed_dim;
        for i in 0..=arch.depth {
            let fan_out = if i == arch.depth { out } else { arch.width };
            let (w, b) = layers::linear(fan_in, fan_out, rng, device)?;
            params.push((format!("layers.{i}.weight"), w));
            params.push((format!("layers.{i}.bias"), b));
            fan_in = fan_out;
        }
        Ok(Mlp {
            dim,
            activation: arch.activation,
            w: Weights {
                vars: params,
                embed,
            },
        })
    }

    /// Layer i's weight, bias and the weight acting on input tangents: layer 0's first d columns
    /// (the time embedding has no x-dependence), the whole weight elsewhere.
    fn layer(&self, i: usize) -> Result<(&Tensor, &Tensor, Tensor)> {
        let (w, b) = (
            self.w.vars[2 * i].1.as_tensor(),
            self.w.vars[2 * i + 1].1.as_tensor(),
        );
        let w_in = if i == 0 {
            w.narrow(1, 0, self.dim)?.contiguous()?
        } else {
            w.clone()
        };
        Ok((w, b, w_in))
    }

    fn dtype(&self) -> DType {
        self.w.embed.w.dtype()
    }

    /// The MLP, optionally pushing tangents v [m, n, d] forward alongside: a linear layer maps a
    /// tangent to v Wᵀ (no bias), an activation to a'(z) ⊙ v.
    fn run(&self, x: &Tensor, t: &Tensor, v: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let (n, d) = x.dims2()?;
        let m = v.map_or(0, |v| v.dims()[0]);
        let mut tan = v
            .map(|v| v.to_dtype(self.dtype())?.reshape((m * n, d)))
            .transpose()?;
        let mut h = Tensor::cat(&[x.to_dtype(self.dtype())?, self.w.embed.forward(t)?], 1)?;
        let layers = self.w.vars.len() / 2;
        for i in 0..layers {
            let (w, b, w_in) = self.layer(i)?;
            h = affine(&h, w, b)?;
            if let Some(v) = tan.as_mut() {
                *v = v.matmul(&w_in.t()?)?;
            }
            if i + 1 < layers {
                let (a, da) = self.activation.apply_with_derivative(&h)?;
                if let Some(v) = tan.as_mut() {
                    let width = da.dims()[1];
                    *v = v
                        .reshape((m, n, width))?
                        .broadcast_mul(&da)?
                        .reshape((m * n, width))?;
                }
                h = a;
            }
        }
        let out_dim = h.dims()[1];
        Ok((h, tan.map(|v| v.reshape((m, n, out_dim))).transpose()?))
    }
}

impl Network for Mlp {
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        layers::no_condition(cond, "mlp")?;
        Ok(self.run(x, t, None)?.0)
    }
    weights_methods!("mlp");
    fn tangents(&self) -> Option<&dyn Tangents> {
        Some(self)
    }
    fn energy(&self) -> Option<&dyn EnergyJets> {
        Some(self)
    }
    fn fused(&self) -> Option<Result<FusedMlp>> {
        Some(FusedMlp::from_mlp(self))
    }
}

impl Tangents for Mlp {
    fn forward_with_tangents(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (out, tan) = self.run(x, t, Some(v))?;
        match tan {
            Some(tan) => Ok((out, tan)),
            None => bail!("no tangents came back"),
        }
    }
}

/// First- and second-order forward-mode tangents: a linear layer maps both to ·Wᵀ (no bias); an
/// activation maps a tangent ż to a'(z)ż and the second-order z̈ to a''(z)ż² + a'(z)z̈. Ordinary
/// differentiable ops: exact parameter gradients.
impl EnergyJets for Mlp {
    fn energy_jets(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (n, d) = x.dims2()?;
        let dtype = self.dtype();
        let m = v.map_or(0, |v| v.dims()[0]);
        // first-order tangents: the d unit vectors (for the gradient), then the m directions v
        let eye = basis(n, d, dtype, x.device())?;
        let dirs = match v {
            Some(v) => Tensor::cat(&[eye, v.to_dtype(dtype)?], 0)?,
            None => eye,
        };
        let k = d + m;
        let mut tan = dirs.reshape((k * n, d))?;
        let mut second: Option<Tensor> = None;
        let mut h = Tensor::cat(&[x.to_dtype(dtype)?, self.w.embed.forward(t)?], 1)?;
        let layers = self.w.vars.len() / 2;
        for i in 0..layers {
            let (w, b, w_in) = self.layer(i)?;
            h = affine(&h, w, b)?;
            tan = tan.matmul(&w_in.t()?)?;
            second = second.map(|s| s.matmul(&w_in.t()?)).transpose()?;
            if i + 1 < layers {
                let (a, da, dda) = self.activation.apply_with_derivatives(&h)?;
                let width = da.dims()[1];
                let t3 = tan.reshape((k, n, width))?;
                if m > 0 {
                    let tv = t3.narrow(0, d, m)?;
                    let mut s2 = tv.sqr()?.broadcast_mul(&dda)?;
                    if let Some(s) = &second {
                        s2 = (s2 + s.reshape((m, n, width))?.broadcast_mul(&da)?)?;
                    }
                    second = Some(s2.reshape((m * n, width))?);
                }
                tan = t3.broadcast_mul(&da)?.reshape((k * n, width))?;
                h = a;
            }
        }
        if h.dims()[1] != 1 {
            bail!(
                "energy jets need a network with one output, this one has {}",
                h.dims()[1]
            );
        }
        let t3 = tan.reshape((k, n))?;
        let grad = t3.narrow(0, 0, d)?.t()?.contiguous()?;
        let q = match (m, second) {
            (0, _) => None,
            (_, Some(s)) => Some(s.reshape((m, n))?),
            // a network without hidden layers is linear: no curvature
            (_, None) => Some(Tensor::zeros((m, n), dtype, x.device())?),
        };
        Ok((h, grad, q))
    }
}
