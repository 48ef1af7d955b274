//! The U-Net's layers on channels-last feature maps [n, h, w, c]: 3×3 and 1×1 convolutions,
//! linear layers, GroupNorm (with SiLU, alone or fused into the convolution after it), nearest 2×
//! upsampling, 2×2 average pooling and the channel concatenation of skips. On f32 CPU maps each
//! runs as the project's own op (`conv`, `winograd`, `norm`, `normconv`, `maps`); elsewhere (f64,
//! CUDA) as a composite of candle ops (convolutions by im2col, broadcasts), which the ops' tests
//! also take as their reference. Variables are made by a `Builder` that either draws them or only
//! counts them (`ModelConfig::parameter_count` walks the same construction).

use crate::nn::layers::{self, TimeEmbedding};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use rand::Rng;

/// GroupNorm's ε (PyTorch's default).
const NORM_EPS: f64 = 1e-5;

/// Creates the network's variables in order (named, PyTorch's default initialisation), or only
/// counts their values when built without a generator.
pub(super) struct Builder<'a, R: Rng> {
    pub vars: Vec<(String, Var)>,
    make: Option<(&'a mut R, &'a Device)>,
    /// Values so far (`None` on overflow).
    pub count: Option<usize>,
    next: usize,
}

impl<'a, R: Rng> Builder<'a, R> {
    /// A builder that draws variables from `rng` on `device`.
    pub fn drawing(rng: &'a mut R, device: &'a Device) -> Self {
        Builder {
            vars: Vec::new(),
            make: Some((rng, device)),
            count: Some(0),
            next: 0,
        }
    }

    /// A builder that only counts values.
    pub fn counting() -> Self {
        Builder {
            vars: Vec::new(),
            make: None,
            count: Some(0),
            next: 0,
        }
    }

    /// A variable of `shape`: U(±bound), or the constant `fill` when given; its index.
    fn var(
        &mut self,
        name: String,
        shape: &[usize],
        bound: f64,
        fill: Option<f32>,
    ) -> Result<usize> {
        let size = shape.iter().try_fold(1usize, |a, &s| a.checked_mul(s));
        self.count = self.count.zip(size).and_then(|(c, s)| c.checked_add(s));
        if let Some((rng, device)) = &mut self.make {
            let v = match fill {
                Some(f) => Var::from_tensor(
                    &(Tensor::ones(shape, candle_core::DType::F32, device)? * f as f64)?,
                )?,
                None => layers::uniform(shape, bound, *rng, device)?,
            };
            self.vars.push((name, v));
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    /// A linear layer `name`.{weight [o, i], bias \[o\]}, U(±1/√i).
    pub fn linear(&mut self, name: &str, i: usize, o: usize) -> Result<Linear> {
        let bound = 1.0 / (i.max(1) as f64).sqrt();
        Ok(Linear {
            w: self.var(format!("{name}.weight"), &[o, i], bound, None)?,
            b: self.var(format!("{name}.bias"), &[o], bound, None)?,
        })
    }

    /// A k×k convolution `name`.{weight [o, i, k, k], bias \[o\]}, U(±1/√(i k²)).
    pub fn conv(&mut self, name: &str, i: usize, o: usize, k: usize) -> Result<Conv> {
        let bound = 1.0 / ((i * k * k).max(1) as f64).sqrt();
        Ok(Conv {
            w: self.var(format!("{name}.weight"), &[o, i, k, k], bound, None)?,
            b: self.var(format!("{name}.bias"), &[o], bound, None)?,
            k,
        })
    }

    /// A GroupNorm `name`.{weight = 1, bias = 0} over c channels.
    pub fn norm(&mut self, name: &str, c: usize) -> Result<Norm> {
        Ok(Norm {
            gamma: self.var(format!("{name}.weight"), &[c], 0.0, Some(1.0))?,
            beta: self.var(format!("{name}.bias"), &[c], 0.0, Some(0.0))?,
            groups: groups(c),
        })
    }

    /// A table `name`.weight [rows, c] of N(0, 1)-like entries, U(±√3) (unit variance).
    pub fn table(&mut self, name: &str, rows: usize, c: usize) -> Result<usize> {
        self.var(format!("{name}.weight"), &[rows, c], 3f64.sqrt(), None)
    }
}

/// GroupNorm's groups for c channels: 8, or the largest of 4, 2, 1 dividing c.
pub fn groups(c: usize) -> usize {
    [8, 4, 2, 1]
        .into_iter()
        .find(|g| c.is_multiple_of(*g))
        .unwrap_or(1)
}

/// The variable at index i.
pub(super) fn p(vars: &[(String, Var)], i: usize) -> &Tensor {
    vars[i].1.as_tensor()
}

/// x Wᵀ + b over the last axis of x [..., i].
pub(super) struct Linear {
    w: usize,
    b: usize,
}

impl Linear {
    /// (W [o, i], b \[o\]).
    pub fn params<'v>(&self, v: &'v [(String, Var)]) -> (&'v Tensor, &'v Tensor) {
        (p(v, self.w), p(v, self.b))
    }

    /// The layer as a 1×1 convolution over the channels of maps x [n, h, w, i]: on f32 CPU maps
    /// the project's op (whose backward sums the bias gradient in the same pass), elsewhere
    /// `forward`.
    pub fn forward_map(&self, v: &[(String, Var)], x: &Tensor) -> Result<Tensor> {
        let (weight, bias) = (p(v, self.w), p(v, self.b));
        if cpu_f32(&[x, weight, bias]) && x.rank() == 4 {
            let (o, i) = weight.dims2()?;
            return conv_op(x, &weight.reshape((o, i, 1, 1))?, bias, 1);
        }
        self.forward(v, x)
    }

    pub fn forward(&self, v: &[(String, Var)], x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let i = dims[dims.len() - 1];
        let rows = x.elem_count() / i;
        let y = layers::affine(&x.reshape((rows, i))?, p(v, self.w), p(v, self.b))?;
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = y.dims()[1];
        Ok(y.reshape(out)?)
    }
}

/// A k×k convolution (k = 1 or 3, stride 1, zero padding k/2) on [n, h, w, i] → [n, h, w, o].
pub(super) struct Conv {
    w: usize,
    b: usize,
    k: usize,
}

impl Conv {
    /// (W [o, i, k, k], b \[o\]).
    pub fn params<'v>(&self, v: &'v [(String, Var)]) -> (&'v Tensor, &'v Tensor) {
        (p(v, self.w), p(v, self.b))
    }

    /// The convolution: on f32 CPU maps the project's own op (`conv::ConvOp`), elsewhere (f64,
    /// CUDA) the composite of candle ops (`forward_composite`).
    pub fn forward(&self, v: &[(String, Var)], x: &Tensor) -> Result<Tensor> {
        let (weight, bias) = (p(v, self.w), p(v, self.b));
        if cpu_f32(&[x, weight, bias]) {
            return conv_op(x, weight, bias, self.k);
        }
        self.forward_composite(v, x)
    }

    /// The convolution of SiLU(norm(x)): on f32 CPU maps one op (`normconv::NormConvOp`: the
    /// activation is computed as the convolution reads it), elsewhere the composite.
    pub fn forward_normed(&self, v: &[(String, Var)], x: &Tensor, norm: &Norm) -> Result<Tensor> {
        let (weight, bias) = self.params(v);
        let (gamma, beta) = norm.params(v);
        if cpu_f32(&[x, weight, bias, gamma, beta]) {
            let gb = Tensor::stack(&[gamma, beta], 0)?;
            let wb = Tensor::cat(&[weight.flatten_all()?, bias.clone()], 0)?;
            let op = super::normconv::NormConvOp {
                norm: norm.op(true),
                o: weight.dims()[0],
                k: self.k,
            };
            return Ok(x.contiguous()?.apply_op3(&gb, &wb, op)?);
        }
        self.forward(v, &norm.forward_silu(v, x)?)
    }

    /// The convolution as candle ops: im2col by pads, narrows and a concatenation, then one
    /// matmul on [n·h·w, k²c] patches.
    pub fn forward_composite(&self, v: &[(String, Var)], x: &Tensor) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let weight = p(v, self.w);
        let o = weight.dims()[0];
        let k = self.k;
        // [o, i, k, k] → [o, k, k, i]: the patches' (ky, kx, channel) order
        let wm = weight.permute((0, 2, 3, 1))?.reshape((o, k * k * c))?;
        let cols = if k == 1 {
            x.reshape((n * h * w, c))?
        } else {
            let r = k / 2;
            let xp = x.pad_with_zeros(1, r, r)?.pad_with_zeros(2, r, r)?;
            let mut patches = Vec::with_capacity(k * k);
            for ky in 0..k {
                let row = xp.narrow(1, ky, h)?;
                for kx in 0..k {
                    patches.push(row.narrow(2, kx, w)?.contiguous()?);
                }
            }
            Tensor::cat(&patches, 3)?.reshape((n * h * w, k * k * c))?
        };
        Ok(layers::affine(&cols, &wm, p(v, self.b))?.reshape((n, h, w, o))?)
    }
}

/// Whether every tensor is f32 on the CPU (where the project's own ops run).
pub(super) fn cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.dtype() == DType::F32 && t.device().is_cpu())
}

/// A k×k convolution (odd k, stride 1, zero padding k/2) of f32 CPU maps x [n, h, w, c] by
/// W [o, c, k, k] plus b \[o\] or [n, o] on the project's GEMM (`conv::ConvOp`), differentiable.
pub(super) fn conv_op(x: &Tensor, weight: &Tensor, bias: &Tensor, k: usize) -> Result<Tensor> {
    let op = super::conv::ConvOp { k };
    Ok(x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?)
}

/// GroupNorm over [n, ..., c]: each sample's channels in `groups` groups normalised over the
/// positions and the group's channels, then γ, β per channel.
pub(super) struct Norm {
    gamma: usize,
    beta: usize,
    groups: usize,
}

impl Norm {
    /// (γ \[c\], β \[c\]).
    pub fn params<'v>(&self, v: &'v [(String, Var)]) -> (&'v Tensor, &'v Tensor) {
        (p(v, self.gamma), p(v, self.beta))
    }

    /// GroupNorm.
    pub fn forward(&self, v: &[(String, Var)], x: &Tensor) -> Result<Tensor> {
        self.forward_act(v, x, false)
    }

    /// SiLU(GroupNorm(x)).
    pub fn forward_silu(&self, v: &[(String, Var)], x: &Tensor) -> Result<Tensor> {
        self.forward_act(v, x, true)
    }

    /// The op of this norm, with SiLU after it when `act`.
    pub fn op(&self, act: bool) -> super::norm::NormOp {
        super::norm::NormOp {
            groups: self.groups,
            silu: act,
            eps: NORM_EPS,
        }
    }

    /// GroupNorm, then SiLU when `act`: on f32 CPU maps the project's own op (`norm::NormOp`),
    /// elsewhere (f64, CUDA) the composite of candle ops.
    pub fn forward_act(&self, v: &[(String, Var)], x: &Tensor, act: bool) -> Result<Tensor> {
        let (gamma, beta) = (p(v, self.gamma), p(v, self.beta));
        if cpu_f32(&[x, gamma, beta]) {
            let op = self.op(act);
            return Ok(x
                .contiguous()?
                .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?);
        }
        let y = self.forward_composite(v, x)?;
        if act {
            silu(&y)
        } else {
            Ok(y)
        }
    }

    /// GroupNorm as candle ops.
    pub fn forward_composite(&self, v: &[(String, Var)], x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (n, c) = (dims[0], dims[dims.len() - 1]);
        let (g, cg) = (self.groups, c / self.groups);
        let l = x.elem_count() / (n * c);
        let count = (l * cg) as f64;
        let xg = x.reshape((n, l, g, cg))?;
        let mean = (xg.sum_keepdim(3)?.sum_keepdim(1)? / count)?;
        let xc = xg.broadcast_sub(&mean)?;
        let var = (xc.sqr()?.sum_keepdim(3)?.sum_keepdim(1)? / count)?;
        let y = xc
            .broadcast_div(&(var + NORM_EPS)?.sqrt()?)?
            .reshape(dims)?;
        Ok(y.broadcast_mul(p(v, self.gamma))?
            .broadcast_add(p(v, self.beta))?)
    }
}

/// Nearest 2× upsampling [n, h, w, c] → [n, 2h, 2w, c]: on f32 CPU maps our op
/// (`maps::Upsample2`), elsewhere a broadcast (whose backward sums each 2×2 block: candle 0.11's
/// `upsample_nearest2d` backward overwrites rather than accumulates its input's gradient).
pub(super) fn upsample2(x: &Tensor) -> Result<Tensor> {
    if cpu_f32(&[x]) {
        return Ok(x.contiguous()?.apply_op1(super::maps::Upsample2)?);
    }
    let (n, h, w, c) = x.dims4()?;
    Ok(x.reshape((n, h, 1, w, 1, c))?
        .broadcast_as((n, h, 2, w, 2, c))?
        .contiguous()?
        .reshape((n, 2 * h, 2 * w, c))?)
}

/// 2×2 average pooling [n, h, w, c] → [n, h/2, w/2, c] (h, w even): on f32 CPU maps our op
/// (`maps::Pool2`), elsewhere candle's narrows and sums.
pub(super) fn pool2(x: &Tensor) -> Result<Tensor> {
    if cpu_f32(&[x]) {
        return Ok(x.contiguous()?.apply_op1(super::maps::Pool2)?);
    }
    let (n, h, w, c) = x.dims4()?;
    let x = x.reshape((n * h / 2, 2, w / 2, 2 * c))?;
    // the two rows of each block, then the two columns (adjacent c-blocks of the last axis)
    let rows = (x.narrow(1, 0, 1)? + x.narrow(1, 1, 1)?)?.reshape((n * h / 2, w / 2, 2, c))?;
    let s = (rows.narrow(2, 0, 1)? + rows.narrow(2, 1, 1)?)?;
    Ok((s.reshape((n, h / 2, w / 2, c))? * 0.25)?)
}

/// The channels of a and then of b, [..., i] and [..., j] → [..., i + j]: on f32 CPU maps our op
/// (`maps::CatChannels`), elsewhere candle's `cat`.
pub(super) fn cat_channels(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if cpu_f32(&[a, b]) {
        return Ok(a
            .contiguous()?
            .apply_op2(&b.contiguous()?, super::maps::CatChannels)?);
    }
    Ok(Tensor::cat(&[a, b], a.rank() - 1)?)
}

/// Rows of flattened channel-first images x [n, c·h·w] as channels-last maps [n, h, w, c] in
/// `dtype`; `network` names the caller in the error for rows of another length.
pub(super) fn channels_last(
    x: &Tensor,
    event: [usize; 3],
    dtype: DType,
    network: &str,
) -> Result<Tensor> {
    let (n, d) = x.dims2()?;
    let [c, h, w] = event;
    if d != c * h * w {
        bail!(
            "the {network} takes images of shape {event:?} (rows of {}), not rows of {d}",
            c * h * w
        );
    }
    Ok(x.to_dtype(dtype)?
        .reshape((n, c, h, w))?
        .permute((0, 2, 3, 1))?
        .contiguous()?)
}

/// The time embedding's features of t \[n\] through the 2-layer MLP second(SiLU(first(·))).
pub(super) fn time_mlp(
    v: &[(String, Var)],
    embed: &TimeEmbedding,
    (first, second): (&Linear, &Linear),
    t: &Tensor,
) -> Result<Tensor> {
    second.forward(v, &silu(&first.forward(v, &embed.forward(t)?)?)?)
}

/// SiLU.
pub(super) fn silu(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::silu(x)?)
}

/// Softmax over the last axis.
pub(super) fn softmax(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax(x, D::Minus1)?)
}
