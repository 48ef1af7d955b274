//! The residual block as one candle op on channels-last f32 CPU maps: GroupNorm + SiLU fused
//! into conv1 (whose bias carries the embedding's shift per image), the same into conv2, and the
//! residual (x, or its 1×1 convolution) added in the same op. In candle's graph the block is one
//! node instead of four (conv1, conv2, skip, add): the hidden map h, the residual sum and their
//! gradients never pass through candle's serial autograd (a zero tensor plus an addition per
//! gradient), and x's two gradients (through conv1 and through the residual) are summed here.
//! h and the norms' coefficients are kept from the forward pass for the backward.

use super::conv::{self, on_f32s, over_images, split_params, Dims, Input};
use super::norm::NormOp;
use super::normconv;
use super::winograd::add_pixels;
use crate::nn::contiguous;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use std::sync::OnceLock;

/// The op on x [n, h, w, i] (contiguous), the shift s [n, o], and θ = [γ1, β1, W1, b1, γ2, β2,
/// W2, b2] (then [Ws, bs] with a 1×1 skip), each flattened; result [n, h, w, o].
pub(super) struct ResBlockOp {
    pub norm1: NormOp,
    pub norm2: NormOp,
    pub o: usize,
    /// Whether the residual is a 1×1 convolution (i ≠ o) rather than x.
    pub skip: bool,
    /// What the forward pass made that the backward pass reads.
    saved: OnceLock<Saved>,
}

/// The hidden map h [n, h, w, o] and the norms' coefficients [a; b] per image.
struct Saved {
    h: Vec<f32>,
    ab1: Vec<f32>,
    ab2: Vec<f32>,
}

/// θ split into its parameters.
struct Params<'a> {
    g1: &'a [f32],
    b1: &'a [f32],
    w1: &'a [f32],
    bias1: &'a [f32],
    g2: &'a [f32],
    b2: &'a [f32],
    w2: &'a [f32],
    bias2: &'a [f32],
    skip: Option<(&'a [f32], &'a [f32])>,
}

impl ResBlockOp {
    pub fn new(norm1: NormOp, norm2: NormOp, o: usize, skip: bool) -> Self {
        ResBlockOp {
            norm1,
            norm2,
            o,
            skip,
            saved: OnceLock::new(),
        }
    }

    /// The sizes of each parameter of θ for i input channels, in θ's order.
    fn sizes(&self, i: usize) -> Vec<usize> {
        let o = self.o;
        let mut s = vec![i, i, o * i * 9, o, o, o, o * o * 9, o];
        if self.skip {
            s.extend([o * i, o]);
        }
        s
    }

    /// θ's parameters for i input channels; an error when its length does not fit.
    fn params<'a>(&self, theta: &'a [f32], i: usize) -> candle_core::Result<Params<'a>> {
        let parts = split_params(theta, &self.sizes(i));
        let (Some(parts), true) = (parts, i.is_multiple_of(self.norm1.groups)) else {
            candle_core::bail!(
                "unet-resblock op: {} parameter values for {i} → {} channels{}",
                theta.len(),
                self.o,
                if self.skip { " with a 1×1 skip" } else { "" }
            );
        };
        let p = |k: usize| parts.get(k).copied().unwrap_or(&[]);
        Ok(Params {
            g1: p(0),
            b1: p(1),
            w1: p(2),
            bias1: p(3),
            g2: p(4),
            b2: p(5),
            w2: p(6),
            bias2: p(7),
            skip: self.skip.then(|| (p(8), p(9))),
        })
    }

    /// The sizes of conv1 on x of `dims` (conv2: c = o; the skip: k = 1).
    fn dims(&self, dims: &[usize], shift: &[usize]) -> candle_core::Result<Dims> {
        match (dims, shift) {
            (&[n, h, w, c], &[n2, o]) if n2 == n && o == self.o => Ok(Dims {
                n,
                h,
                w,
                c,
                o,
                k: 3,
            }),
            _ => candle_core::bail!("unet-resblock op: x {dims:?}, shift {shift:?}"),
        }
    }
}

/// y += r, images split over the threads.
fn add_into(y: &mut [f32], r: &[f32], n: usize) {
    let size = y.len().checked_div(n).unwrap_or(0);
    over_images(y, n, |images, part| {
        let r = &r[images.start * size..images.end * size];
        part.iter_mut().zip(r).for_each(|(y, r)| *y += r);
    });
}

impl CustomOp3 for ResBlockOp {
    fn name(&self) -> &'static str {
        "unet-resblock"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, s, theta) = (
            contiguous(s1, l1, self.name())?,
            contiguous(s2, l2, self.name())?,
            contiguous(s3, l3, self.name())?,
        );
        let d1 = self.dims(l1.dims(), l2.dims())?;
        let p = self.params(theta, d1.c)?;
        let d2 = Dims { c: d1.o, ..d1 };
        let ab1 = self.norm1.coefficients(x, p.g1, p.b1, d1.n);
        // conv1's bias per image: b1 + s
        let bias1: Vec<f32> = s
            .chunks_exact(d1.o)
            .flat_map(|si| si.iter().zip(p.bias1).map(|(s, b)| s + b))
            .collect();
        let h = conv::forward(Input::Normed { x, ab: &ab1 }, p.w1, &bias1, d1);
        let ab2 = self.norm2.coefficients(&h, p.g2, p.b2, d1.n);
        let mut y = conv::forward(Input::Normed { x: &h, ab: &ab2 }, p.w2, p.bias2, d2);
        match p.skip {
            Some((ws, bs)) => {
                let r = conv::forward(Input::Map(x), ws, bs, Dims { k: 1, ..d1 });
                add_into(&mut y, &r, d1.n);
            }
            None => add_into(&mut y, x, d1.n),
        }
        // a second forward pass of the same node (not made by candle) keeps the first's values
        let _ = self.saved.set(Saved { h, ab1, ab2 });
        Ok((CpuStorage::F32(y), Shape::from((d1.n, d1.h, d1.w, d1.o))))
    }

    /// dθ by the chain back through conv2 and norm2, conv1 and norm1, and the residual; ds is
    /// conv1's bias gradient per image.
    fn bwd(
        &self,
        x: &Tensor,
        s: &Tensor,
        theta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(sv) = self.saved.get() else {
            candle_core::bail!("unet-resblock op: backward pass without a forward pass on the CPU");
        };
        let d1 = self.dims(x.dims(), s.dims())?;
        let d2 = Dims { c: d1.o, ..d1 };
        let grads = on_f32s([x, theta, grad], |[xv, tv, g]| {
            let p = self.params(tv, d1.c)?;
            let (h, two) = ((&sv.h[..], &sv.ab2[..]), (p.g2, p.b2));
            let g2 = normconv::backward(&self.norm2, h, two, p.w2, g, d2, false);
            let (x1, one) = ((xv, &sv.ab1[..]), (p.g1, p.b1));
            let g1 = normconv::backward(&self.norm1, x1, one, p.w1, &g2.dx, d1, true);
            // conv1's bias gradient per image is the shift's
            let mut dbias1 = vec![0.0f32; d1.o];
            add_pixels(&mut dbias1, &g1.db);
            let (mut dx, ds) = (g1.dx, g1.db);
            let dtheta = [
                g1.dgamma, g1.dbeta, g1.dw, dbias1, g2.dgamma, g2.dbeta, g2.dw, g2.db,
            ];
            let mut dtheta = dtheta.concat();
            match p.skip {
                Some((ws, _)) => {
                    let d = Dims { k: 1, ..d1 };
                    let (dxs, dws, dbs) = conv::backward(Input::Map(xv), ws, g, d, false);
                    add_into(&mut dx, &dxs, d1.n);
                    dtheta.extend(dws);
                    dtheta.extend(dbs);
                }
                None => add_into(&mut dx, g, d1.n),
            }
            Ok::<_, candle_core::Error>((dx, ds, dtheta))
        })??;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(grads.0, x.shape(), dev)?),
            Some(Tensor::from_vec(grads.1, s.shape(), dev)?),
            Some(Tensor::from_vec(grads.2, theta.shape(), dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::blocks::ResBlock;
    use super::super::conv::tests::{assert_grads_match, randn};
    use super::super::layers::Builder;
    use anyhow::Result;
    use candle_core::{Device, Var};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// The block as one op against the same block as candle's composites (GroupNorm, SiLU,
    /// im2col convolutions, the broadcast shift, the residual sum): values, and the gradients of
    /// x, the embedding and every parameter; with a 1×1 skip (i ≠ o) and without, odd and even
    /// maps, one image and several.
    #[test]
    fn values_and_gradients_match_the_composite() -> Result<()> {
        let dev = Device::Cpu;
        for (case, &(n, h, i, o)) in [(2, 6, 8, 16), (3, 5, 16, 16), (2, 7, 16, 8), (1, 5, 8, 8)]
            .iter()
            .enumerate()
        {
            let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
            let mut b = Builder::drawing(&mut rng, &dev);
            let block = ResBlock::new(&mut b, "rb", i, o, 12)?;
            // γ, β away from their initial 1 and 0
            for (j, (name, var)) in b.vars.iter().enumerate() {
                if name.contains("norm") {
                    let len = var.elem_count();
                    var.set(&((randn(&[len], 50 + j as u64)? * 0.5)? + 1.0)?)?;
                }
            }
            let v = b.vars.clone();
            let x = Var::from_tensor(&((randn(&[n, h, h, i], 7 + case as u64)? * 2.0)? + 0.5)?)?;
            let e = Var::from_tensor(&randn(&[n, 12], 9 + case as u64)?)?;
            let r = randn(&[n, h, h, o], 11 + case as u64)?;
            let ours = block.forward(&v, &x, &e)?;
            let theirs = block.forward_composite(&v, &x, &e)?;
            let scale = theirs.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5 * scale, "case {case}: values differ by {diff}");
            let g1 = (ours * &r)?.sum_all()?.backward()?;
            let g2 = (theirs * &r)?.sum_all()?.backward()?;
            let mut vars: Vec<&Var> = vec![&x, &e];
            vars.extend(v.iter().map(|(_, var)| var));
            assert_grads_match(&g1, &g2, &vars, 1e-4, &format!("case {case}"))?;
        }
        Ok(())
    }

    /// A parameter vector of the wrong length is an error, not a panic.
    #[test]
    fn mismatched_parameters_are_refused() -> Result<()> {
        let norm = super::NormOp {
            groups: 4,
            silu: true,
            eps: 1e-5,
        };
        let op = super::ResBlockOp::new(norm, norm, 8, true);
        let x = randn(&[2, 4, 4, 8], 1)?;
        let s = randn(&[2, 8], 2)?;
        let theta = randn(&[100], 3)?;
        let err = x.apply_op3(&s, &theta, op).expect_err("refused");
        assert!(format!("{err}").contains("parameter values"), "{err}");
        Ok(())
    }
}
