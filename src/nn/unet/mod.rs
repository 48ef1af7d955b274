//! A U-Net for images (Ho et al. 2020's DDPM network, smaller): residual blocks with GroupNorm,
//! SiLU and the time embedding added per channel, self-attention at chosen resolutions (and in the
//! middle), 2×2 average pooling down and nearest upsampling + 3×3 conv up, with a skip connection
//! from every down block to its up block. Time enters as the configured embedding (`embedding`,
//! `embed_dim`) through a 2-layer MLP to 4C features; a class embedding of `classes` + 1 rows (the
//! last the null class ∅, used when no condition is given) is added to it, so one network gives
//! s(x, t | c) and s(x, t | ∅) (classifier-free guidance; labels are dropped to ∅ in training).
//!
//! Input and output are flattened [n, c·h·w] events (channel-first, as stored); inside, feature
//! maps are channels-last [n, h, w, c], so that convolutions and attention are matmuls.

mod attention;
mod blockop;
mod blocks;
pub mod classifier;
mod conv;
pub(crate) mod layers;
mod maps;
mod norm;
mod normconv;
pub mod spec;
mod winograd;

use super::config::Arch;
use super::layers::{TimeEmbedding, Weights};
use super::network::Network;
use anyhow::{bail, Result};
use attention::Attention;
use blocks::ResBlock;
use candle_core::{DType, Device, Tensor};
use layers::{
    cat_channels, channels_last, p, pool2, silu, time_mlp, upsample2, Builder, Conv, Linear, Norm,
};
use rand::Rng;
pub use spec::{UnetPreset, UnetSpec};

/// One level's residual blocks, each with optional attention.
struct Level {
    blocks: Vec<(ResBlock, Option<Attention>)>,
    /// Down: pool after the level; up: the 3×3 conv after upsampling.
    pool: bool,
    upsample: Option<Conv>,
}

/// The layers, as indices into the variables.
struct Layers {
    time1: Linear,
    time2: Linear,
    class: usize,
    conv_in: Conv,
    down: Vec<Level>,
    mid: (ResBlock, Attention, ResBlock),
    up: Vec<Level>,
    out_norm: Norm,
    out_conv: Conv,
}

/// A residual block `name` from i to o channels at resolution `res`, with attention where the
/// spec lists `res`.
fn block<R: Rng>(
    b: &mut Builder<R>,
    spec: &UnetSpec,
    name: &str,
    i: usize,
    o: usize,
    res: usize,
) -> Result<(ResBlock, Option<Attention>)> {
    let rb = ResBlock::new(b, name, i, o, 4 * spec.channels)?;
    let at = spec
        .attention
        .contains(&res)
        .then(|| Attention::new(b, &format!("{name}.attn"), o))
        .transpose()?;
    Ok((rb, at))
}

impl Layers {
    /// Every layer of a U-Net of `spec` on images of c channels and height h, in a fixed order.
    fn build<R: Rng>(
        b: &mut Builder<R>,
        spec: &UnetSpec,
        c: usize,
        h: usize,
        embed_in: usize,
    ) -> Result<Self> {
        let (ch0, t) = (spec.channels, 4 * spec.channels);
        let time1 = b.linear("time.0", embed_in, t)?;
        let time2 = b.linear("time.2", t, t)?;
        let class = b.table("class", spec.classes + 1, t)?;
        let conv_in = b.conv("conv_in", c, ch0, 3)?;
        let (mut ch, mut res, mut skips) = (ch0, h, Vec::new());
        let last = spec.mults.len() - 1;
        let mut down = Vec::new();
        for (l, m) in spec.mults.iter().enumerate() {
            let mut blocks = Vec::new();
            for k in 0..spec.blocks {
                blocks.push(block(b, spec, &format!("down.{l}.{k}"), ch, ch0 * m, res)?);
                ch = ch0 * m;
                skips.push(ch);
            }
            down.push(Level {
                blocks,
                pool: l < last,
                upsample: None,
            });
            if l < last {
                res /= 2;
            }
        }
        let mid = (
            ResBlock::new(b, "mid.0", ch, ch, t)?,
            Attention::new(b, "mid.attn", ch)?,
            ResBlock::new(b, "mid.1", ch, ch, t)?,
        );
        let mut up = Vec::new();
        for (l, m) in spec.mults.iter().enumerate().rev() {
            let mut blocks = Vec::new();
            for k in 0..spec.blocks {
                let skip = skips.pop().unwrap_or(0);
                blocks.push(block(
                    b,
                    spec,
                    &format!("up.{l}.{k}"),
                    ch + skip,
                    ch0 * m,
                    res,
                )?);
                ch = ch0 * m;
            }
            let upsample = (l > 0)
                .then(|| b.conv(&format!("up.{l}.upsample"), ch, ch, 3))
                .transpose()?;
            up.push(Level {
                blocks,
                pool: false,
                upsample,
            });
            if l > 0 {
                res *= 2;
            }
        }
        Ok(Layers {
            time1,
            time2,
            class,
            conv_in,
            down,
            mid,
            up,
            out_norm: b.norm("out.norm", ch)?,
            out_conv: b.conv("out.conv", ch, c, 3)?,
        })
    }
}

/// The U-Net on images [c, h, w], flattened.
pub struct UNet {
    /// The image shape [c, h, w].
    event: [usize; 3],
    pub spec: UnetSpec,
    /// The variables in construction order; the time embedding's frequencies.
    pub w: Weights,
    layers: Layers,
}

impl UNet {
    /// A new U-Net of the sizes `arch` gives for images `event` [c, h, w], PyTorch's default
    /// initialisation drawn from `rng` (the time embedding first).
    pub fn new(event: &[usize], arch: &Arch, rng: &mut impl Rng, device: &Device) -> Result<Self> {
        let spec = UnetSpec::of(arch, event)?;
        let embed = TimeEmbedding::of(arch, rng, device)?;
        let mut b = Builder::drawing(rng, device);
        let layers = Layers::build(&mut b, &spec, event[0], event[1], arch.embed_dim)?;
        Ok(UNet {
            event: [event[0], event[1], event[2]],
            spec,
            w: Weights {
                vars: b.vars,
                embed,
            },
            layers,
        })
    }

    /// The number of trainable values of the U-Net `arch` gives for `event` (`None` when the
    /// sizes are invalid or overflow), counted by the same construction without allocating.
    pub fn parameter_count(event: &[usize], arch: &Arch) -> Option<usize> {
        let spec = UnetSpec::of(arch, event).ok()?;
        let mut b = Builder::<rand_chacha::ChaCha8Rng>::counting();
        Layers::build(&mut b, &spec, event[0], event[1], arch.embed_dim).ok()?;
        b.count
    }

    /// The class index of each row: the condition's labels (each < classes, or = classes for ∅),
    /// or ∅ for every row without one.
    fn labels(&self, cond: Option<&Tensor>, n: usize, device: &Device) -> Result<Tensor> {
        let null = self.spec.classes as u32;
        let Some(c) = cond else {
            return Ok(Tensor::full(null, n, device)?);
        };
        if c.dims() != [n] {
            bail!(
                "the unet's condition has shape {:?}, expected one label per row [{n}]",
                c.dims()
            );
        }
        let c = c.to_dtype(DType::U32)?.to_device(device)?;
        if let Some(&bad) = c.to_vec1::<u32>()?.iter().find(|&&l| l > null) {
            bail!(
                "class label {bad} is out of range: the network knows {} classes (0 to {}) and the null class {null}; set model.classes",
                self.spec.classes,
                self.spec.classes as i64 - 1
            );
        }
        Ok(c)
    }
}

impl Network for UNet {
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        let (v, l) = (self.w.vars.as_slice(), &self.layers);
        let x = channels_last(x, self.event, self.w.embed.w.dtype(), "unet")?;
        let emb = time_mlp(v, &self.w.embed, (&l.time1, &l.time2), t)?;
        let labels = self.labels(cond, n, x.device())?;
        let e = silu(&(emb + p(v, l.class).index_select(&labels, 0)?)?)?;
        let mut hs = l.conv_in.forward(v, &x)?;
        let mut skips = Vec::new();
        for level in &l.down {
            for (rb, at) in &level.blocks {
                hs = rb.forward(v, &hs, &e)?;
                if let Some(a) = at {
                    hs = a.forward(v, &hs)?;
                }
                skips.push(hs.clone());
            }
            if level.pool {
                hs = pool2(&hs)?;
            }
        }
        hs = l.mid.0.forward(v, &hs, &e)?;
        hs = l.mid.1.forward(v, &hs)?;
        hs = l.mid.2.forward(v, &hs, &e)?;
        for level in &l.up {
            for (rb, at) in &level.blocks {
                let Some(skip) = skips.pop() else {
                    bail!("the unet's skip connections ran out");
                };
                hs = rb.forward(v, &cat_channels(&hs, &skip)?, &e)?;
                if let Some(a) = at {
                    hs = a.forward(v, &hs)?;
                }
            }
            if let Some(conv) = &level.upsample {
                hs = conv.forward(v, &upsample2(&hs)?)?;
            }
        }
        let out = l.out_conv.forward_normed(v, &hs, &l.out_norm)?;
        Ok(out.permute((0, 3, 1, 2))?.contiguous()?.reshape((n, d))?)
    }

    super::layers::weights_methods!("unet");
}

pub mod profile;
#[cfg(test)]
pub(crate) mod tests;
