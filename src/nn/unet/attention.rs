//! Single-head self-attention over the positions of a feature map (DDPM's `AttnBlock`): GroupNorm,
//! q, k, v by one linear layer, softmax(q kᵀ/√c) v, an output projection and a residual.

use super::layers::{softmax, Builder, Linear, Norm};
use anyhow::Result;
use candle_core::{Tensor, Var};
use rand::Rng;

/// Self-attention on [n, h, w, c].
pub(super) struct Attention {
    norm: Norm,
    qkv: Linear,
    proj: Linear,
}

impl Attention {
    /// `name`.{norm, qkv, proj} over c channels.
    pub fn new<R: Rng>(b: &mut Builder<R>, name: &str, c: usize) -> Result<Self> {
        Ok(Attention {
            norm: b.norm(&format!("{name}.norm"), c)?,
            qkv: b.linear(&format!("{name}.qkv"), c, 3 * c)?,
            proj: b.linear(&format!("{name}.proj"), c, c)?,
        })
    }

    /// x + proj(softmax(q kᵀ/√c) v).
    pub fn forward(&self, v: &[(String, Var)], x: &Tensor) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let y = self.norm.forward(v, x)?.reshape((n, h * w, c))?;
        let qkv = self.qkv.forward(v, &y)?;
        let part = |i: usize| qkv.narrow(2, i * c, c)?.contiguous();
        let (q, k, val) = (part(0)?, part(1)?, part(2)?);
        let att = softmax(&(q.matmul(&k.t()?)? / (c as f64).sqrt())?)?;
        let o = self.proj.forward(v, &att.matmul(&val)?)?;
        Ok((x + o.reshape((n, h, w, c))?)?)
    }
}
