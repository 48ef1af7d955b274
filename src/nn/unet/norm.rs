//! GroupNorm, optionally followed by SiLU, on channels-last f32 CPU maps as one candle op,
//! forward and backward, samples split over the threads: each pass reads x once for the group
//! statistics and once to write the result, where the composite of candle ops (sums, broadcast
//! subtractions and divisions, the affine map, SiLU) made a full-size tensor per step and more
//! in its backward pass. Statistics are summed in f64.

use super::conv::{on_f32s, over_images, over_new_images};
use crate::nn::contiguous;
use crate::nn::kernels::{bias_act, multiversion, Keep};
use crate::nn::Activation;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// The op on x [n, ..., c] (contiguous), γ \[c\], β \[c\]: y = γ x̂ + β, or SiLU of it when
/// `silu`, x̂ normalised over each sample's positions and each group's c/groups channels.
#[derive(Clone, Copy)]
pub(super) struct NormOp {
    pub groups: usize,
    pub silu: bool,
    pub eps: f64,
}

/// The sizes of one call: samples, positions per sample, channels.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    l: usize,
    c: usize,
}

/// Positions whose sums are taken in f32 before they join the f64 totals.
const BLOCK: usize = 64;

multiversion! {
    /// Per-channel Σ x and Σ x² of one sample x [l, c] added to s1, s2 \[c\].
    pub fn channel_moments(x: &[f32], s1: &mut [f64], s2: &mut [f64]) {
        let c = s1.len();
        let (mut a, mut b) = (vec![0.0f32; c], vec![0.0f32; c]);
        for block in x.chunks(BLOCK * c) {
            a.fill(0.0);
            b.fill(0.0);
            for px in block.chunks_exact(c) {
                for ((a, b), &v) in a.iter_mut().zip(b.iter_mut()).zip(px) {
                    *a += v;
                    *b += v * v;
                }
            }
            s1.iter_mut().zip(&a).for_each(|(s, v)| *s += *v as f64);
            s2.iter_mut().zip(&b).for_each(|(s, v)| *s += *v as f64);
        }
    }
}

multiversion! {
    /// y = a x per channel over x [l, c] (the shift and the activation follow in `bias_act`).
    pub fn scale_channels(y: &mut [f32], x: &[f32], a: &[f32]) {
        let c = a.len();
        for (py, px) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
            for ((o, v), a) in py.iter_mut().zip(px).zip(a) {
                *o = a * v;
            }
        }
    }
}

/// y = a(a x + b) per channel over x [l, c] (a x + b without an activation).
pub fn activate(y: &mut [f32], x: &[f32], (a, b): (&[f32], &[f32]), act: Option<Activation>) {
    scale_channels(y, x, a);
    bias_act(y, b, act, Keep::Value, &mut [], &mut []);
}

multiversion! {
    /// dz ⊙= d (the cotangent through the activation), with per-channel Σ dz into s1 and
    /// Σ dz (x − mean) into s2.
    pub fn cotangent_moments(
        dz: &mut [f32],
        d: &[f32],
        x: &[f32],
        mean: &[f32],
        sums: (&mut [f64], &mut [f64]),
    ) {
        let (s1, s2) = sums;
        let c = mean.len();
        let (mut p, mut q) = (vec![0.0f32; c], vec![0.0f32; c]);
        let blocks = dz.chunks_mut(BLOCK * c).zip(d.chunks(BLOCK * c)).zip(x.chunks(BLOCK * c));
        for ((bz, bd), bx) in blocks {
            p.fill(0.0);
            q.fill(0.0);
            for ((pz, pd), px) in bz.chunks_exact_mut(c).zip(bd.chunks_exact(c)).zip(bx.chunks_exact(c)) {
                for ch in 0..c {
                    let v = pz[ch] * pd[ch];
                    pz[ch] = v;
                    p[ch] += v;
                    q[ch] += v * (px[ch] - mean[ch]);
                }
            }
            s1.iter_mut().zip(&p).for_each(|(s, v)| *s += *v as f64);
            s2.iter_mut().zip(&q).for_each(|(s, v)| *s += *v as f64);
        }
    }
}

multiversion! {
    /// dx = dz ⊙ ca + (x − mean) ⊙ cb + cc per channel, in place over dz.
    pub fn input_cotangent(dx: &mut [f32], x: &[f32], mean: &[f32], coef: (&[f32], &[f32], &[f32])) {
        let (ca, cb, cc) = coef;
        let c = ca.len();
        for (pd, px) in dx.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
            for ch in 0..c {
                pd[ch] = pd[ch] * ca[ch] + (px[ch] - mean[ch]) * cb[ch] + cc[ch];
            }
        }
    }
}

/// One sample's group statistics spread over its channels.
struct Stats {
    /// The group mean of each channel's group.
    mean: Vec<f32>,
    /// 1/√(var + ε) of each channel's group.
    rstd: Vec<f32>,
}

impl NormOp {
    /// The statistics of one sample x [l, c].
    fn stats(&self, x: &[f32], c: usize) -> Stats {
        let (mut s1, mut s2) = (vec![0.0f64; c], vec![0.0f64; c]);
        channel_moments(x, &mut s1, &mut s2);
        let (cg, count) = (c / self.groups, (x.len() / self.groups) as f64);
        let (mut mean, mut rstd) = (vec![0.0f32; c], vec![0.0f32; c]);
        for g in 0..self.groups {
            let m = s1[g * cg..(g + 1) * cg].iter().sum::<f64>() / count;
            let var = (s2[g * cg..(g + 1) * cg].iter().sum::<f64>() / count - m * m).max(0.0);
            mean[g * cg..(g + 1) * cg].fill(m as f32);
            rstd[g * cg..(g + 1) * cg].fill((1.0 / (var + self.eps).sqrt()) as f32);
        }
        Stats { mean, rstd }
    }

    /// The activation after the norm.
    fn act(&self) -> Option<Activation> {
        self.silu.then_some(Activation::Silu)
    }

    /// The per-channel map z = a x + b that the statistics and γ, β make.
    fn affine(st: &Stats, gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let a: Vec<f32> = st.rstd.iter().zip(gamma).map(|(r, g)| r * g).collect();
        let b = beta
            .iter()
            .zip(&a)
            .zip(&st.mean)
            .map(|((b, a), m)| b - a * m)
            .collect();
        (a, b)
    }

    /// Each image's map z = a x + b as [a; b] [n, 2c] (a = γ/σ, b = β − a μ) of x [n, l, c], the
    /// images split over the threads.
    pub fn coefficients(&self, x: &[f32], gamma: &[f32], beta: &[f32], n: usize) -> Vec<f32> {
        let c = gamma.len();
        let size = x.len().checked_div(n).unwrap_or(0);
        let mut ab = vec![0.0f32; n * 2 * c];
        over_images(&mut ab, n, |images, part| {
            for (i, p) in images.zip(part.chunks_exact_mut(2 * c)) {
                let (a, b) =
                    Self::affine(&self.stats(&x[i * size..(i + 1) * size], c), gamma, beta);
                p[..c].copy_from_slice(&a);
                p[c..].copy_from_slice(&b);
            }
        });
        ab
    }

    /// (dx, dγ, dβ) of n images x [n, l, c] from the cotangent g of the op's result.
    pub fn cotangents(
        &self,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        g: &[f32],
        n: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let c = gamma.len();
        let l = x.len() / (n * c).max(1);
        self.backward(x, gamma, beta, g, Dims { n, l, c })
    }

    fn forward(&self, x: &[f32], gamma: &[f32], beta: &[f32], d: Dims) -> Vec<f32> {
        let size = d.l * d.c;
        let (y, _) = over_new_images(x.len(), d.n, |samples, y| {
            for (i, y) in samples.zip(y.chunks_exact_mut(size)) {
                let xi = &x[i * size..(i + 1) * size];
                let (a, b) = Self::affine(&self.stats(xi, d.c), gamma, beta);
                activate(y, xi, (&a, &b), self.act());
            }
        });
        y
    }

    /// (dx, dγ, dβ) from the result's cotangent g: with dz the cotangent of z = γ x̂ + β, S1 = Σ dz
    /// and S2 = Σ dz (x − μ) per channel, dβ = S1, dγ = S2/σ, and
    /// dx = (dz γ − m1 − x̂ m2)/σ with m1, m2 the group means of γ S1 and γ S2/σ.
    fn backward(
        &self,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        g: &[f32],
        d: Dims,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (size, cg) = (d.l * d.c, d.c / self.groups);
        let count = (size / self.groups) as f64;
        let (dx, sums) = over_new_images(x.len(), d.n, |samples, dx| {
            let (mut dgamma, mut dbeta) = (vec![0.0f64; d.c], vec![0.0f64; d.c]);
            // a'(z) of one sample, and z's value (overwritten by a(z))
            let (mut d1, mut z) = (vec![1.0f32; size], vec![0.0f32; size]);
            for (i, dx) in samples.zip(dx.chunks_exact_mut(size)) {
                let (xi, gi) = (&x[i * size..(i + 1) * size], &g[i * size..(i + 1) * size]);
                let st = self.stats(xi, d.c);
                let (a, b) = Self::affine(&st, gamma, beta);
                let (mut s1, mut s2) = (vec![0.0f64; d.c], vec![0.0f64; d.c]);
                dx.copy_from_slice(gi);
                if self.silu {
                    scale_channels(&mut z, xi, &a);
                    bias_act(&mut z, &b, self.act(), Keep::First, &mut d1, &mut []);
                }
                cotangent_moments(dx, &d1, xi, &st.mean, (&mut s1, &mut s2));
                // dx's coefficient of dz is a = γ/σ
                let (ca, mut cb, mut cc) = (a, vec![0.0f32; d.c], vec![0.0f32; d.c]);
                for grp in 0..self.groups {
                    let chans = grp * cg..(grp + 1) * cg;
                    let r = st.rstd[grp * cg] as f64;
                    let (mut m1, mut m2) = (0.0, 0.0);
                    for ch in chans.clone() {
                        let gm = gamma[ch] as f64;
                        m1 += gm * s1[ch];
                        m2 += gm * r * s2[ch];
                        dgamma[ch] += r * s2[ch];
                        dbeta[ch] += s1[ch];
                    }
                    let (m1, m2) = (m1 / count, m2 / count);
                    cb[chans.clone()].fill((-r * r * m2) as f32);
                    cc[chans.clone()].fill((-r * m1) as f32);
                }
                input_cotangent(dx, xi, &st.mean, (&ca, &cb, &cc));
            }
            (dgamma, dbeta)
        });
        let (mut dgamma, mut dbeta) = (vec![0.0f64; d.c], vec![0.0f64; d.c]);
        for (a, b) in &sums {
            dgamma.iter_mut().zip(a).for_each(|(s, v)| *s += v);
            dbeta.iter_mut().zip(b).for_each(|(s, v)| *s += v);
        }
        let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
        (dx, f32s(dgamma), f32s(dbeta))
    }

    fn dims(&self, dims: &[usize], c_gamma: usize) -> candle_core::Result<Dims> {
        let (n, c) = match dims {
            [n, .., c] if dims.len() >= 2 => (*n, *c),
            _ => candle_core::bail!("unet-norm op: x {dims:?}"),
        };
        if c != c_gamma || self.groups == 0 || c % self.groups != 0 {
            candle_core::bail!(
                "unet-norm op: x {dims:?}, {c_gamma} scales, {} groups",
                self.groups
            );
        }
        let l = dims[1..dims.len() - 1].iter().product();
        Ok(Dims { n, l, c })
    }
}

impl CustomOp3 for NormOp {
    fn name(&self) -> &'static str {
        "unet-norm"
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
        let (x, gamma, beta) = (
            contiguous(s1, l1, self.name())?,
            contiguous(s2, l2, self.name())?,
            contiguous(s3, l3, self.name())?,
        );
        let d = self.dims(l1.dims(), gamma.len())?;
        if beta.len() != d.c {
            candle_core::bail!("unet-norm op: {} shifts for {} channels", beta.len(), d.c);
        }
        Ok((
            CpuStorage::F32(self.forward(x, gamma, beta, d)),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.dims(x.dims(), gamma.elem_count())?;
        let (gx, gg, gb) = on_f32s([x, gamma, beta, grad], |[xv, gv, bv, dv]| {
            self.backward(xv, gv, bv, dv, d)
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(gx, x.shape(), dev)?),
            Some(Tensor::from_vec(gg, gamma.shape(), dev)?),
            Some(Tensor::from_vec(gb, beta.shape(), dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::tests::{assert_grads_match, randn};
    use super::super::layers::{silu, Builder};
    use anyhow::Result;
    use candle_core::{DType, Device, Tensor, Var};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// The op against the composite of candle ops (values, and the gradients of x, γ and β), with
    /// and without SiLU, on maps and on [n, l, c] rows, γ and β not at their initial 1 and 0.
    #[test]
    fn values_and_gradients_match_the_composite() -> Result<()> {
        let dev = Device::Cpu;
        for (i, shape) in [vec![3, 5, 4, 16], vec![2, 9, 12], vec![2, 3, 3, 6]]
            .iter()
            .enumerate()
        {
            let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
            let mut b = Builder::drawing(&mut rng, &dev);
            let c = shape[shape.len() - 1];
            let norm = b.norm("n", c)?;
            for (k, (_, var)) in b.vars.iter().enumerate() {
                var.set(&((randn(&[c], 50 + k as u64)? * 0.5)? + 1.0)?)?;
            }
            let v = b.vars.clone();
            // an offset and a scale: the statistics are not those of a standard normal
            let x = Var::from_tensor(&((randn(shape, 7 + i as u64)? * 3.0)? + 2.0)?)?;
            let r = randn(shape, 9 + i as u64)?;
            for act in [false, true] {
                let ours = norm.forward_act(&v, &x, act)?;
                let base = norm.forward_composite(&v, &x)?;
                let theirs = if act { silu(&base)? } else { base };
                let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(
                    diff < 1e-4,
                    "shape {shape:?}, silu {act}: values differ by {diff}"
                );
                let g1 = (ours * &r)?.sum_all()?.backward()?;
                let g2 = (theirs * &r)?.sum_all()?.backward()?;
                let what = format!("shape {shape:?}, silu {act}");
                assert_grads_match(&g1, &g2, &[&x, &v[0].1, &v[1].1], 2e-4, &what)?;
            }
        }
        Ok(())
    }

    /// d/dx of Σ r ⊙ SiLU(GroupNorm(x)) along a direction against central differences (f32
    /// values, the sums in f64; a step of 1e-2 on values of size ~3).
    #[test]
    fn the_input_gradient_matches_central_differences() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut b = Builder::drawing(&mut rng, &dev);
        let norm = b.norm("n", 16)?;
        let v = b.vars.clone();
        let x = (randn(&[2, 4, 4, 16], 11)? * 3.0)?;
        let r = randn(&[2, 4, 4, 16], 12)?;
        let dir = randn(&[2, 4, 4, 16], 13)?;
        let loss = |x: &Tensor| -> Result<f64> {
            let y = (norm.forward_silu(&v, x)? * &r)?.to_dtype(DType::F64)?;
            Ok(y.sum_all()?.to_scalar::<f64>()?)
        };
        let xv = Var::from_tensor(&x)?;
        let grads = (norm.forward_silu(&v, &xv)? * &r)?.sum_all()?.backward()?;
        let g = grads.get(&xv).expect("a gradient").to_dtype(DType::F64)?;
        let analytic = (g * dir.to_dtype(DType::F64)?)?
            .sum_all()?
            .to_scalar::<f64>()?;
        let h = 1e-2;
        let numeric = (loss(&(&x + (&dir * h)?)?)? - loss(&(&x - (&dir * h)?)?)?) / (2.0 * h);
        assert!(
            (analytic - numeric).abs() < 2e-3 * (1.0 + numeric.abs()),
            "autograd {analytic} vs central differences {numeric}"
        );
        Ok(())
    }
}
