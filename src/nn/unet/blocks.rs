//! The U-Net's residual block (DDPM's `ResnetBlock`): GroupNorm, SiLU, 3×3 conv, plus a linear
//! map of the (class-and-)time embedding per channel, GroupNorm, SiLU, 3×3 conv, and a residual
//! through a 1×1 conv where the channel count changes. On f32 CPU maps the whole block is one op
//! (`blockop::ResBlockOp`); elsewhere candle's composites.

use super::blockop::ResBlockOp;
use super::layers::{cpu_f32, silu, Builder, Conv, Linear, Norm};
use anyhow::Result;
use candle_core::{Tensor, Var};
use rand::Rng;

/// A residual block from i to o channels.
pub(super) struct ResBlock {
    norm1: Norm,
    conv1: Conv,
    time: Linear,
    norm2: Norm,
    conv2: Conv,
    skip: Option<Linear>,
}

impl ResBlock {
    /// `name`.{norm1, conv1, time, norm2, conv2[, skip]} from i to o channels, with an
    /// embedding of `embed` features.
    pub fn new<R: Rng>(
        b: &mut Builder<R>,
        name: &str,
        i: usize,
        o: usize,
        embed: usize,
    ) -> Result<Self> {
        Ok(ResBlock {
            norm1: b.norm(&format!("{name}.norm1"), i)?,
            conv1: b.conv(&format!("{name}.conv1"), i, o, 3)?,
            time: b.linear(&format!("{name}.time"), embed, o)?,
            norm2: b.norm(&format!("{name}.norm2"), o)?,
            conv2: b.conv(&format!("{name}.conv2"), o, o, 3)?,
            skip: (i != o)
                .then(|| b.linear(&format!("{name}.skip"), i, o))
                .transpose()?,
        })
    }

    /// The block on x [n, h, w, i] with the activated embedding e = SiLU(emb) [n, embed].
    pub fn forward(&self, v: &[(String, Var)], x: &Tensor, e: &Tensor) -> Result<Tensor> {
        let temb = self.time.forward(v, e)?;
        if !cpu_f32(&[x, &temb]) {
            return self.composite(v, x, &temb);
        }
        let mut theta = Vec::new();
        let layers = [
            self.norm1.params(v),
            self.conv1.params(v),
            self.norm2.params(v),
            self.conv2.params(v),
        ];
        for (a, b) in layers
            .into_iter()
            .chain(self.skip.as_ref().map(|s| s.params(v)))
        {
            theta.extend([a.flatten_all()?, b.clone()]);
        }
        let theta = Tensor::cat(&theta, 0)?;
        let op = ResBlockOp::new(
            self.norm1.op(true),
            self.norm2.op(true),
            self.conv1.params(v).0.dims()[0],
            self.skip.is_some(),
        );
        Ok(x.contiguous()?.apply_op3(&temb.contiguous()?, &theta, op)?)
    }

    /// The block as candle's composites (f64, CUDA; the op's reference in tests).
    #[cfg(test)]
    pub fn forward_composite(&self, v: &[(String, Var)], x: &Tensor, e: &Tensor) -> Result<Tensor> {
        self.composite(v, x, &self.time.forward(v, e)?)
    }

    /// The composite block given the embedding's shift temb [n, o].
    fn composite(&self, v: &[(String, Var)], x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let (n, o) = temb.dims2()?;
        let h = self.norm1.forward_composite(v, x)?;
        let h = self.conv1.forward_composite(v, &silu(&h)?)?;
        let h = h.broadcast_add(&temb.reshape((n, 1, 1, o))?)?;
        let h = self.norm2.forward_composite(v, &h)?;
        let h = self.conv2.forward_composite(v, &silu(&h)?)?;
        let skip = match &self.skip {
            Some(s) => s.forward(v, x)?,
            None => x.clone(),
        };
        Ok((skip + h)?)
    }
}
