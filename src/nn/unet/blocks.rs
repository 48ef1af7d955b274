//! The U-Net's residual block (DDPM's `ResnetBlock`): GroupNorm, SiLU, 3×3 conv, plus a linear
//! map of the (class-and-)time embedding per channel, GroupNorm, SiLU, 3×3 conv, and a residual
//! through a 1×1 conv where the channel count changes.

use super::layers::{Builder, Conv, Linear, Norm};
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
        let h = self.conv1.forward_normed(v, x, &self.norm1, Some(&temb))?;
        let h = self.conv2.forward_normed(v, &h, &self.norm2, None)?;
        let skip = match &self.skip {
            Some(s) => s.forward_map(v, x)?,
            None => x.clone(),
        };
        Ok((skip + h)?)
    }
}
