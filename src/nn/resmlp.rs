//! A residual MLP: pre-LayerNorm residual blocks h ← h + W₂ a(W₁ LN(h) + b₁) + b₂ on an input
//! projection of [x, embed(t)] (the toy networks of DEM and EDM's examples), with exact
//! forward-mode tangents through every layer, LayerNorm included.

use super::config::Arch;
use super::layers::{self, affine, weights_methods, Activation, TimeEmbedding, Weights};
use super::network::{Network, Tangents};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

/// LayerNorm's ε (PyTorch's default).
const LN_EPS: f64 = 1e-5;

/// `depth` residual blocks of `width` between an input projection and a normalised output layer.
pub struct ResMlp {
    pub dim: usize,
    pub activation: Activation,
    depth: usize,
    /// input.{weight,bias}; blocks.{i}.{norm,fc1,fc2}.{weight,bias}; output.norm.{weight,bias};
    /// output.{weight,bias}; the time embedding.
    pub w: Weights,
}

/// A LayerNorm's output and what its tangent map needs: ĥ = (h − μ)/s and 1/s per row.
struct Normed {
    out: Tensor,
    hat: Tensor,
    inv_s: Tensor,
}

impl ResMlp {
    /// A new residual MLP with PyTorch's default initialisation (LayerNorm γ = 1, β = 0), drawn
    /// from `rng` (embedding, input layer, blocks, output layer).
    pub fn new(
        dim: usize,
        out: usize,
        arch: &Arch,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Self> {
        let embed = TimeEmbedding::of(arch, rng, device)?;
        let w = arch.width;
        let mut params = Vec::new();
        let mut push_linear = |name: &str, fan_in: usize, fan_out: usize, rng: &mut _| {
            let (wt, b) = layers::linear(fan_in, fan_out, rng, device)?;
            params.push((format!("{name}.weight"), wt));
            params.push((format!("{name}.bias"), b));
            anyhow::Ok(())
        };
        push_linear("input", dim + arch.embed_dim, w, rng)?;
        for i in 0..arch.depth {
            push_linear(&format!("blocks.{i}.fc1"), w, w, rng)?;
            push_linear(&format!("blocks.{i}.fc2"), w, w, rng)?;
        }
        push_linear("output", w, out, rng)?;
        // the norms' γ = 1, β = 0 (no draws), placed before the layer they feed
        let norm = |name: String| -> Result<[(String, Var); 2]> {
            Ok([
                (format!("{name}.weight"), Var::ones(w, DType::F32, device)?),
                (format!("{name}.bias"), Var::zeros(w, DType::F32, device)?),
            ])
        };
        let mut ordered = Vec::with_capacity(params.len() + 2 * (arch.depth + 1));
        let mut it = params.into_iter();
        ordered.extend(it.by_ref().take(2));
        for i in 0..arch.depth {
            ordered.extend(norm(format!("blocks.{i}.norm"))?);
            ordered.extend(it.by_ref().take(4));
        }
        ordered.extend(norm("output.norm".into())?);
        ordered.extend(it);
        Ok(ResMlp {
            dim,
            activation: arch.activation,
            depth: arch.depth,
            w: Weights {
                vars: ordered,
                embed,
            },
        })
    }

    fn p(&self, i: usize) -> &Tensor {
        self.w.vars[i].1.as_tensor()
    }

    /// LayerNorm over features with scale γ and shift β.
    fn norm(&self, h: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Normed> {
        let centred = h.broadcast_sub(&h.mean_keepdim(1)?)?;
        let inv_s = (centred.sqr()?.mean_keepdim(1)? + LN_EPS)?
            .sqrt()?
            .recip()?;
        let hat = centred.broadcast_mul(&inv_s)?;
        let out = hat.broadcast_mul(gamma)?.broadcast_add(beta)?;
        Ok(Normed { out, hat, inv_s })
    }

    /// LayerNorm's tangent map: ḣ ↦ γ ⊙ (ḣ − mean ḣ − ĥ·mean(ĥ ⊙ ḣ))/s, tangents [m, n, w].
    fn norm_tangent(tan: &Tensor, n: &Normed, gamma: &Tensor) -> Result<Tensor> {
        let centred = tan.broadcast_sub(&tan.mean_keepdim(2)?)?;
        let along = tan.broadcast_mul(&n.hat)?.mean_keepdim(2)?;
        let t = centred.broadcast_sub(&along.broadcast_mul(&n.hat)?)?;
        Ok(t.broadcast_mul(&n.inv_s)?.broadcast_mul(gamma)?)
    }

    /// The network, optionally pushing tangents v [m, n, d] forward alongside.
    fn run(&self, x: &Tensor, t: &Tensor, v: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let (n, d) = x.dims2()?;
        let dtype = self.w.embed.w.dtype();
        let h0 = Tensor::cat(&[x.to_dtype(dtype)?, self.w.embed.forward(t)?], 1)?;
        let mut h = affine(&h0, self.p(0), self.p(1))?;
        // a linear map of tangents [m, n, k]: v Wᵀ, no bias
        let lin = |v: &Tensor, w: &Tensor| -> Result<Tensor> { Ok(v.broadcast_matmul(&w.t()?)?) };
        let mut tan = v
            .map(|v| {
                lin(
                    &v.to_dtype(dtype)?,
                    &self.p(0).narrow(1, 0, d)?.contiguous()?,
                )
            })
            .transpose()?;
        let act = |z: &Tensor, tan: &mut Option<Tensor>| -> Result<Tensor> {
            let (a, da) = self.activation.apply_with_derivative(z)?;
            if let Some(v) = tan.as_mut() {
                *v = v.broadcast_mul(&da)?;
            }
            Ok(a)
        };
        for i in 0..self.depth {
            let at = 2 + 6 * i;
            let (gamma, beta) = (self.p(at), self.p(at + 1));
            let normed = self.norm(&h, gamma, beta)?;
            let mut branch = tan
                .as_ref()
                .map(|v| Self::norm_tangent(v, &normed, gamma))
                .transpose()?;
            let z = affine(&normed.out, self.p(at + 2), self.p(at + 3))?;
            branch = branch.map(|v| lin(&v, self.p(at + 2))).transpose()?;
            let a = act(&z, &mut branch)?;
            h = (h + affine(&a, self.p(at + 4), self.p(at + 5))?)?;
            if let (Some(v), Some(b)) = (tan.as_mut(), branch) {
                *v = (&*v + lin(&b, self.p(at + 4))?)?;
            }
        }
        let at = 2 + 6 * self.depth;
        let (gamma, beta) = (self.p(at), self.p(at + 1));
        let normed = self.norm(&h, gamma, beta)?;
        tan = tan
            .map(|v| Self::norm_tangent(&v, &normed, gamma))
            .transpose()?;
        let a = act(&normed.out, &mut tan)?;
        let out = affine(&a, self.p(at + 2), self.p(at + 3))?;
        let tan = tan.map(|v| lin(&v, self.p(at + 2))).transpose()?;
        debug_assert!(tan.as_ref().is_none_or(|t| t.dims()[1] == n));
        Ok((out, tan))
    }
}

impl Network for ResMlp {
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        layers::no_condition(cond, "resmlp")?;
        Ok(self.run(x, t, None)?.0)
    }
    weights_methods!("resmlp");
    fn tangents(&self) -> Option<&dyn Tangents> {
        Some(self)
    }
}

impl Tangents for ResMlp {
    fn forward_with_tangents(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        match self.run(x, t, Some(v))? {
            (out, Some(tan)) => Ok((out, tan)),
            _ => bail!("no tangents came back"),
        }
    }
}
