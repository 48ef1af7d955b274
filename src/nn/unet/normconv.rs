//! GroupNorm, SiLU and the k×k convolution after them as one candle op on channels-last f32 CPU
//! maps: the output layer's norm → conv (the residual blocks fuse the same pairs inside
//! `blockop`). The convolution reads SiLU(a x + b) as it fills its bordered map
//! (`conv::Input::Normed`), so the activation is never stored; the backward pass is the
//! convolution's (dW, db and the cotangent of the activation) followed by the norm's.

use super::conv::{self, on_f32s, Dims, Input};
use super::norm::NormOp;
use crate::nn::contiguous;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// The op on x [n, h, w, c] (contiguous), γβ = [γ; β] [2, c], and W then the bias, flattened
/// [o·c·k² + o]; result [n, h, w, o].
pub(super) struct NormConvOp {
    pub norm: NormOp,
    pub o: usize,
    pub k: usize,
}

impl NormConvOp {
    /// The sizes of a call on x of `dims` with `params` weight-and-bias values.
    fn dims(&self, dims: &[usize], params: usize) -> candle_core::Result<Dims> {
        match *dims {
            [n, h, w, c] if params == self.o * (c * self.k * self.k + 1) => Ok(Dims {
                n,
                h,
                w,
                c,
                o: self.o,
                k: self.k,
            }),
            _ => candle_core::bail!(
                "unet-norm-conv op: {params} weight and bias values for x {dims:?}, {} outputs, k = {}",
                self.o,
                self.k
            ),
        }
    }
}

/// The gradients of conv(SiLU(norm(x))) with respect to x, γ, β, W and the bias.
pub(super) struct NormConvGrads {
    pub dx: Vec<f32>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
    pub dw: Vec<f32>,
    /// Per image [n, o] when asked for, else \[o\].
    pub db: Vec<f32>,
}

/// The gradients of conv(SiLU(norm(x))) from its result's cotangent g: the convolution's
/// backward pass on the normed values (`ab` the norm's coefficients of x), then the norm's.
pub(super) fn backward(
    norm: &NormOp,
    (x, ab): (&[f32], &[f32]),
    (gamma, beta): (&[f32], &[f32]),
    wt: &[f32],
    g: &[f32],
    d: Dims,
    per_image: bool,
) -> NormConvGrads {
    let (dz, dw, db) = conv::backward(Input::Normed { x, ab }, wt, g, d, per_image);
    let (dx, dgamma, dbeta) = norm.cotangents(x, gamma, beta, &dz, d.n);
    NormConvGrads {
        dx,
        dgamma,
        dbeta,
        dw,
        db,
    }
}

impl CustomOp3 for NormConvOp {
    fn name(&self) -> &'static str {
        "unet-norm-conv"
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
        let (x, gb, wb) = (
            contiguous(s1, l1, self.name())?,
            contiguous(s2, l2, self.name())?,
            contiguous(s3, l3, self.name())?,
        );
        let d = self.dims(l1.dims(), wb.len())?;
        if gb.len() != 2 * d.c || d.c % self.norm.groups != 0 {
            candle_core::bail!(
                "unet-norm-conv op: {} scales and shifts for {} channels",
                gb.len(),
                d.c
            );
        }
        let (gamma, beta) = gb.split_at(d.c);
        let ab = self.norm.coefficients(x, gamma, beta, d.n);
        let (wt, bias) = wb.split_at(d.o * d.c * d.k * d.k);
        let y = conv::forward(Input::Normed { x, ab: &ab }, wt, bias, d);
        Ok((CpuStorage::F32(y), Shape::from((d.n, d.h, d.w, d.o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gb: &Tensor,
        wb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.dims(x.dims(), wb.elem_count())?;
        let grads = on_f32s([x, gb, wb, grad], |[xv, gbv, wbv, gv]| {
            let (gamma, beta) = gbv.split_at(d.c);
            let ab = self.norm.coefficients(xv, gamma, beta, d.n);
            let wt = &wbv[..d.o * d.c * d.k * d.k];
            let g = backward(&self.norm, (xv, &ab), (gamma, beta), wt, gv, d, false);
            (g.dx, [g.dgamma, g.dbeta].concat(), [g.dw, g.db].concat())
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(grads.0, x.shape(), dev)?),
            Some(Tensor::from_vec(grads.1, gb.shape(), dev)?),
            Some(Tensor::from_vec(grads.2, wb.shape(), dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::tests::{assert_grads_match, randn};
    use super::super::layers::{silu, Builder};
    use anyhow::Result;
    use candle_core::{Device, Var};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// The fused op against GroupNorm, SiLU and the convolution as candle's composites: values,
    /// and the gradients of x, γ, β, W and the bias; 3×3 and 1×1 kernels, even and odd maps.
    #[test]
    fn values_and_gradients_match_the_composite() -> Result<()> {
        let dev = Device::Cpu;
        for (i, &(n, h, c, o, k)) in [
            (2, 6, 16, 8, 3),
            (3, 7, 8, 16, 3),
            (2, 4, 4, 5, 1),
            (1, 5, 8, 4, 3),
        ]
        .iter()
        .enumerate()
        {
            let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
            let mut b = Builder::drawing(&mut rng, &dev);
            let norm = b.norm("n", c)?;
            let conv = b.conv("c", c, o, k)?;
            // γ, β away from their initial 1 and 0
            for (j, (_, var)) in b.vars.iter().enumerate().take(2) {
                var.set(&((randn(&[c], 40 + j as u64)? * 0.5)? + 1.0)?)?;
            }
            let v = b.vars.clone();
            let x = Var::from_tensor(&((randn(&[n, h, h, c], 7 + i as u64)? * 3.0)? + 1.0)?)?;
            let r = randn(&[n, h, h, o], 11 + i as u64)?;
            let ours = conv.forward_normed(&v, &x, &norm)?;
            let theirs = conv.forward_composite(&v, &silu(&norm.forward_composite(&v, &x)?)?)?;
            let scale = theirs.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5 * scale, "case {i}: values differ by {diff}");
            let g1 = (ours * &r)?.sum_all()?.backward()?;
            let g2 = (theirs * &r)?.sum_all()?.backward()?;
            let vars: Vec<&Var> = vec![&x, &v[0].1, &v[1].1, &v[2].1, &v[3].1];
            assert_grads_match(&g1, &g2, &vars, 1e-4, &format!("case {i}"))?;
        }
        Ok(())
    }

    /// Bad sizes are errors, not panics: a weight-and-bias vector of the wrong length.
    #[test]
    fn mismatched_parameters_are_refused() -> Result<()> {
        let x = randn(&[2, 4, 4, 8], 1)?;
        let gb = randn(&[2, 8], 2)?;
        let wb = randn(&[4 * 8 * 9 + 3], 3)?;
        let op = super::NormConvOp {
            norm: super::NormOp {
                groups: 4,
                silu: true,
                eps: 1e-5,
            },
            o: 4,
            k: 3,
        };
        let err = x.apply_op3(&gb, &wb, op).expect_err("refused");
        assert!(format!("{err}").contains("weight and bias values"), "{err}");
        Ok(())
    }
}
