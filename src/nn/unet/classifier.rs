//! A noise-conditional image classifier p_φ(y | x_t, t), the U-Net's down path with a head
//! (Dhariwal & Nichol 2021's guidance classifier, smaller): the sinusoidal time embedding through
//! a 2-layer MLP, a 3×3 input convolution, one residual block per level (GroupNorm, SiLU, the
//! time embedding added per channel) with 2×2 average pooling between levels, then GroupNorm,
//! SiLU and a global average pool to the features (the penultimate layer, whose statistics the
//! Fréchet distance compares) and a linear map to the class logits.
//!
//! Input: flattened [n, c·h·w] images (channel-first, as stored) and times t \[n\]; inside, feature
//! maps are channels-last [n, h, w, c], as in the U-Net.

use super::blocks::ResBlock;
use super::layers::{channels_last, pool2, silu, time_mlp, Builder, Conv, Linear, Norm};
use crate::nn::layers::{Embedding, TimeEmbedding, Weights};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The classifier's sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifierSpec {
    /// The image shape [c, h, w].
    pub event: Vec<usize>,
    /// Number of classes (logits).
    pub classes: usize,
    /// Base channel width C; level l has C·mults\[l\] channels, the time embedding 4C features.
    pub channels: usize,
    /// Channel multiplier per level; the image is halved between levels.
    pub mults: Vec<usize>,
    /// Sinusoidal time-embedding features (even).
    pub embed_dim: usize,
}

impl ClassifierSpec {
    /// The default sizes for images `event` and `classes` classes: 16 channels, multipliers
    /// [1, 2, 2] (28 → 14 → 7 on MNIST), a 32-feature time embedding.
    pub fn small(event: &[usize], classes: usize) -> Self {
        ClassifierSpec {
            event: event.to_vec(),
            classes,
            channels: 16,
            mults: vec![1, 2, 2],
            embed_dim: 32,
        }
    }

    /// Checks the sizes against each other and the image shape.
    pub fn check(&self) -> Result<()> {
        let [c, h, w] = self.event[..] else {
            bail!(
                "the classifier takes images: an event shape [c, h, w], not {:?}",
                self.event
            );
        };
        if c == 0 || self.classes < 2 || self.channels == 0 || self.embed_dim < 2 {
            bail!(
                "the classifier needs at least one channel, two classes, a positive width and a \
                 time embedding of at least 2 features (got {c} channels, {} classes, width {}, \
                 embedding {})",
                self.classes,
                self.channels,
                self.embed_dim
            );
        }
        if !self.embed_dim.is_multiple_of(2) {
            bail!(
                "the classifier's time embedding needs an even number of features, not {}",
                self.embed_dim
            );
        }
        if self.mults.is_empty() || self.mults.contains(&0) {
            bail!(
                "the classifier's multipliers must list at least one positive number, got {:?}",
                self.mults
            );
        }
        let scale = 1usize << (self.mults.len() - 1).min(16);
        if h % scale != 0 || w % scale != 0 || h < scale || w < scale {
            bail!(
                "a classifier of {} levels halves the image {} times: its size {h}×{w} must be \
                 divisible by {scale}",
                self.mults.len(),
                self.mults.len() - 1
            );
        }
        Ok(())
    }

    /// Values per image c·h·w.
    pub fn dim(&self) -> usize {
        self.event.iter().product()
    }

    /// The number of features before the head: the last level's channels.
    pub fn features(&self) -> usize {
        self.channels * self.mults.last().copied().unwrap_or(1)
    }
}

/// The number of images n in x, checking that t holds one time per image \[n\].
pub fn check_times(x: &Tensor, t: &Tensor) -> Result<usize> {
    let n = x.dims().first().copied().unwrap_or(0);
    if t.dims() != [n] {
        bail!(
            "the classifier needs one time per image [{n}], got shape {:?}",
            t.dims()
        );
    }
    Ok(n)
}

/// The layers, as indices into the variables.
struct Layers {
    time1: Linear,
    time2: Linear,
    conv_in: Conv,
    /// One residual block per level; pooling after every level but the last.
    levels: Vec<ResBlock>,
    out_norm: Norm,
    head: Linear,
}

impl Layers {
    /// Every layer of a classifier of `spec`, in a fixed order.
    fn build<R: Rng>(b: &mut Builder<R>, spec: &ClassifierSpec) -> Result<Self> {
        let (ch0, t) = (spec.channels, 4 * spec.channels);
        let time1 = b.linear("time.0", spec.embed_dim, t)?;
        let time2 = b.linear("time.2", t, t)?;
        let conv_in = b.conv("conv_in", spec.event[0], ch0, 3)?;
        let mut ch = ch0;
        let mut levels = Vec::new();
        for (l, m) in spec.mults.iter().enumerate() {
            levels.push(ResBlock::new(b, &format!("down.{l}"), ch, ch0 * m, t)?);
            ch = ch0 * m;
        }
        Ok(Layers {
            time1,
            time2,
            conv_in,
            levels,
            out_norm: b.norm("out.norm", ch)?,
            head: b.linear("head", ch, spec.classes)?,
        })
    }
}

/// The classifier network.
pub struct Classifier {
    pub spec: ClassifierSpec,
    /// The variables in construction order; the time embedding's frequencies.
    pub w: Weights,
    layers: Layers,
}

impl Classifier {
    /// A new classifier of `spec`, PyTorch's default initialisation drawn from `rng`.
    pub fn new(spec: ClassifierSpec, rng: &mut impl Rng, device: &Device) -> Result<Self> {
        spec.check()?;
        let embed = TimeEmbedding::new(Embedding::Sinusoidal, spec.embed_dim, 1.0, rng, device)?;
        let mut b = Builder::drawing(rng, device);
        let layers = Layers::build(&mut b, &spec)?;
        Ok(Classifier {
            spec,
            w: Weights {
                vars: b.vars,
                embed,
            },
            layers,
        })
    }

    /// The number of trainable values of a classifier of `spec` (`None` when invalid).
    pub fn parameter_count(spec: &ClassifierSpec) -> Option<usize> {
        spec.check().ok()?;
        let mut b = Builder::<rand_chacha::ChaCha8Rng>::counting();
        Layers::build(&mut b, spec).ok()?;
        b.count
    }

    /// Trainable variables, named, in a fixed order.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.w.vars
    }

    /// Features [n, F] (after the global average pool) and logits [n, classes] at images
    /// x [n, c·h·w] and times t \[n\], in x's dtype.
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = check_times(x, t)?;
        let (v, l) = (self.w.vars.as_slice(), &self.layers);
        let event = [self.spec.event[0], self.spec.event[1], self.spec.event[2]];
        let x = channels_last(x, event, self.w.embed.w.dtype(), "classifier")?;
        let e = silu(&time_mlp(v, &self.w.embed, (&l.time1, &l.time2), t)?)?;
        let mut hs = l.conv_in.forward(v, &x)?;
        let last = l.levels.len() - 1;
        for (k, rb) in l.levels.iter().enumerate() {
            hs = rb.forward(v, &hs, &e)?;
            if k < last {
                hs = pool2(&hs)?;
            }
        }
        let hs = silu(&l.out_norm.forward(v, &hs)?)?;
        let (_, hh, ww, ch) = hs.dims4()?;
        let features = (hs.reshape((n, hh * ww, ch))?.sum(1)? / (hh * ww) as f64)?;
        let logits = l.head.forward(v, &features)?;
        Ok((features, logits))
    }

    /// The variables and the embedding converted to `dtype` (f64 for gradient checks).
    pub fn to_dtype(&mut self, dtype: DType) -> Result<()> {
        self.w.to_dtype(dtype)
    }
}
