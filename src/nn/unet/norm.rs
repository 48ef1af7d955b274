//! GroupNorm, optionally followed by SiLU, on channels-last f32 CPU maps as one candle op,
//! forward and backward, samples split over the threads: each pass reads x once for the group
//! statistics and once to write the result, where the composite of candle ops (sums, broadcast
//! subtractions and divisions, the affine map, SiLU) made a full-size tensor per step and more
//! in its backward pass. Statistics are summed in f64.

use super::conv::image_ranges;
use crate::flat::with_values;
use crate::nn::contiguous;
use crate::nn::fused::split_rows;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// The op on x [n, ..., c] (contiguous), γ \[c\], β \[c\]: y = γ x̂ + β, or SiLU of it when
/// `silu`, x̂ normalised over each sample's positions and each group's c/groups channels.
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

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

impl NormOp {
    /// Each group's (mean, 1/√(var + ε)) of one sample x [l, c].
    fn stats(&self, x: &[f32], c: usize) -> Vec<(f32, f32)> {
        let cg = c / self.groups;
        let mut sum = vec![(0.0f64, 0.0f64); self.groups];
        for px in x.chunks_exact(c) {
            for (s, vals) in sum.iter_mut().zip(px.chunks_exact(cg)) {
                let (a, b) = vals
                    .iter()
                    .fold((0.0f32, 0.0f32), |(a, b), &v| (a + v, b + v * v));
                s.0 += a as f64;
                s.1 += b as f64;
            }
        }
        let count = (x.len() / self.groups) as f64;
        sum.into_iter()
            .map(|(s, s2)| {
                let mean = s / count;
                let var = (s2 / count - mean * mean).max(0.0);
                (mean as f32, (1.0 / (var + self.eps).sqrt()) as f32)
            })
            .collect()
    }

    fn forward(&self, x: &[f32], gamma: &[f32], beta: &[f32], d: Dims) -> Vec<f32> {
        let (size, cg) = (d.l * d.c, d.c / self.groups);
        let mut y = vec![0.0f32; x.len()];
        let ranges = image_ranges(d.n);
        let parts = split_rows(&mut y, &ranges, size);
        let jobs = ranges
            .iter()
            .cloned()
            .zip(parts)
            .map(|(samples, y)| {
                move || {
                    for (i, y) in samples.zip(y.chunks_exact_mut(size)) {
                        let xi = &x[i * size..(i + 1) * size];
                        let st = self.stats(xi, d.c);
                        for (py, px) in y.chunks_exact_mut(d.c).zip(xi.chunks_exact(d.c)) {
                            for (ch, (o, v)) in py.iter_mut().zip(px).enumerate() {
                                let (mean, rstd) = st[ch / cg];
                                let z = (v - mean) * rstd * gamma[ch] + beta[ch];
                                *o = if self.silu { z * sigmoid(z) } else { z };
                            }
                        }
                    }
                }
            })
            .collect();
        crate::pool::run_all(jobs);
        y
    }

    /// (dx, dγ, dβ) from the result's cotangent g.
    fn backward(
        &self,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        g: &[f32],
        d: Dims,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (size, cg) = (d.l * d.c, d.c / self.groups);
        let mut dx = vec![0.0f32; x.len()];
        let ranges = image_ranges(d.n);
        let parts = split_rows(&mut dx, &ranges, size);
        let jobs = ranges
            .iter()
            .cloned()
            .zip(parts)
            .map(|(samples, dx)| {
                move || {
                    let (mut dgamma, mut dbeta) = (vec![0.0f64; d.c], vec![0.0f64; d.c]);
                    // dx̂ = dz γ per value; per group Σ dx̂ and Σ dx̂ x̂
                    let mut dxh = vec![0.0f32; size];
                    for (i, dx) in samples.zip(dx.chunks_exact_mut(size)) {
                        let (xi, gi) = (&x[i * size..(i + 1) * size], &g[i * size..(i + 1) * size]);
                        let st = self.stats(xi, d.c);
                        let mut sums = vec![(0.0f64, 0.0f64); self.groups];
                        let (mut dg, mut db) = (vec![0.0f32; d.c], vec![0.0f32; d.c]);
                        for ((pd, px), pg) in dxh
                            .chunks_exact_mut(d.c)
                            .zip(xi.chunks_exact(d.c))
                            .zip(gi.chunks_exact(d.c))
                        {
                            for ch in 0..d.c {
                                let (mean, rstd) = st[ch / cg];
                                let xh = (px[ch] - mean) * rstd;
                                let mut dz = pg[ch];
                                if self.silu {
                                    let z = xh * gamma[ch] + beta[ch];
                                    let s = sigmoid(z);
                                    dz *= s * (1.0 + z * (1.0 - s));
                                }
                                dg[ch] += dz * xh;
                                db[ch] += dz;
                                pd[ch] = dz * gamma[ch];
                            }
                        }
                        for (pd, px) in dxh.chunks_exact(d.c).zip(xi.chunks_exact(d.c)) {
                            for ch in 0..d.c {
                                let (mean, rstd) = st[ch / cg];
                                let s = &mut sums[ch / cg];
                                s.0 += pd[ch] as f64;
                                s.1 += (pd[ch] * (px[ch] - mean) * rstd) as f64;
                            }
                        }
                        let count = (size / self.groups) as f64;
                        let means: Vec<(f32, f32)> = sums
                            .iter()
                            .map(|&(a, b)| ((a / count) as f32, (b / count) as f32))
                            .collect();
                        for ((o, pd), px) in dx
                            .chunks_exact_mut(d.c)
                            .zip(dxh.chunks_exact(d.c))
                            .zip(xi.chunks_exact(d.c))
                        {
                            for ch in 0..d.c {
                                let (mean, rstd) = st[ch / cg];
                                let (m1, m2) = means[ch / cg];
                                let xh = (px[ch] - mean) * rstd;
                                o[ch] = rstd * (pd[ch] - m1 - xh * m2);
                            }
                        }
                        dgamma
                            .iter_mut()
                            .zip(&dg)
                            .for_each(|(s, v)| *s += *v as f64);
                        dbeta.iter_mut().zip(&db).for_each(|(s, v)| *s += *v as f64);
                    }
                    (dgamma, dbeta)
                }
            })
            .collect();
        let sums = crate::pool::run_all(jobs);
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
        let (gx, gg, gb) = with_values::<f32, _>(x, |xv| {
            with_values::<f32, _>(gamma, |gv| {
                with_values::<f32, _>(beta, |bv| {
                    with_values::<f32, _>(grad, |dv| Ok(self.backward(xv, gv, bv, dv, d)))
                })
            })
        })
        .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))?;
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
    use super::super::conv::tests::randn;
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
                for var in [&x, &v[0].1, &v[1].1] {
                    let (a, e) = (g1.get(var).expect("ours"), g2.get(var).expect("theirs"));
                    let scale = e.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                    let diff = (a - e)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(
                        diff < 2e-4 * scale,
                        "shape {shape:?}, silu {act}: gradients"
                    );
                }
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
