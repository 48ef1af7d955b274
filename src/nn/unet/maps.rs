//! The U-Net's data movement on channels-last f32 CPU maps [n, h, w, c] as candle ops of our own:
//! nearest 2× upsampling, 2×2 average pooling and the concatenation of a skip connection's
//! channels. Each is one pass forward and one backward, images split over the threads, where
//! candle's composites reduced their gradients over broadcast axes or accumulated narrowed,
//! strided views (together about a tenth of a training step).

use super::conv::{on_f32s, over_new_images};
use crate::nn::contiguous;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

/// A buffer of n images' values, each image's part filled by f(image, part), the images split
/// over the threads.
fn per_image(len: usize, n: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let size = len.checked_div(n).unwrap_or(0).max(1);
    over_new_images(len, n, |images, part| {
        for (i, o) in images.zip(part.chunks_exact_mut(size)) {
            f(i, o)
        }
    })
    .0
}

/// f on the f32 values of a tensor.
fn on_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    on_f32s([t], |[v]| f(v))
}

/// [n, h, w, c] → [n, 2h, 2w, c], each value copied to its 2×2 block.
pub(super) struct Upsample2;

impl CustomOp1 for Upsample2 {
    fn name(&self) -> &'static str {
        "unet-upsample2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let (n, h, w, c) = l.shape().dims4()?;
        let y = per_image(4 * x.len(), n, |i, y| {
            let xi = &x[i * h * w * c..(i + 1) * h * w * c];
            for (row, out) in xi.chunks_exact(w * c).zip(y.chunks_exact_mut(4 * w * c)) {
                let (top, bottom) = out.split_at_mut(2 * w * c);
                for (px, pair) in row.chunks_exact(c).zip(top.chunks_exact_mut(2 * c)) {
                    pair[..c].copy_from_slice(px);
                    pair[c..].copy_from_slice(px);
                }
                bottom.copy_from_slice(top);
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((n, 2 * h, 2 * w, c))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (n, h, w, c) = x.dims4()?;
        let dx = on_values(g, |g| {
            per_image(g.len() / 4, n, |i, dx| {
                let gi = &g[4 * i * h * w * c..4 * (i + 1) * h * w * c];
                for (out, rows) in dx.chunks_exact_mut(w * c).zip(gi.chunks_exact(4 * w * c)) {
                    let (top, bottom) = rows.split_at(2 * w * c);
                    for (o, (t, b)) in out
                        .chunks_exact_mut(c)
                        .zip(top.chunks_exact(2 * c).zip(bottom.chunks_exact(2 * c)))
                    {
                        for (k, o) in o.iter_mut().enumerate() {
                            *o = t[k] + t[c + k] + b[k] + b[c + k];
                        }
                    }
                }
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// [n, h, w, c] → [n, h/2, w/2, c], each 2×2 block averaged (h, w even).
pub(super) struct Pool2;

impl CustomOp1 for Pool2 {
    fn name(&self) -> &'static str {
        "unet-pool2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let (n, h, w, c) = l.shape().dims4()?;
        if h % 2 != 0 || w % 2 != 0 {
            candle_core::bail!("unet-pool2: a map of {h}×{w} cannot be halved");
        }
        let y = per_image(x.len() / 4, n, |i, y| {
            let xi = &x[i * h * w * c..(i + 1) * h * w * c];
            for (out, rows) in y
                .chunks_exact_mut(w / 2 * c)
                .zip(xi.chunks_exact(2 * w * c))
            {
                let (top, bottom) = rows.split_at(w * c);
                for (o, (t, b)) in out
                    .chunks_exact_mut(c)
                    .zip(top.chunks_exact(2 * c).zip(bottom.chunks_exact(2 * c)))
                {
                    for (k, o) in o.iter_mut().enumerate() {
                        // the composite's order: rows first, then columns
                        *o = ((t[k] + b[k]) + (t[c + k] + b[c + k])) * 0.25;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((n, h / 2, w / 2, c))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (_, _, w, c) = x.dims4()?;
        let dx = on_values(g, |g| {
            let mut dx = vec![0.0f32; 4 * g.len()];
            for (row, out) in g
                .chunks_exact(w / 2 * c)
                .zip(dx.chunks_exact_mut(2 * w * c))
            {
                let (top, bottom) = out.split_at_mut(w * c);
                for (px, pair) in row.chunks_exact(c).zip(top.chunks_exact_mut(2 * c)) {
                    for (k, v) in px.iter().enumerate() {
                        pair[k] = 0.25 * v;
                        pair[c + k] = 0.25 * v;
                    }
                }
                bottom.copy_from_slice(top);
            }
            dx
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// [..., a] and [..., b] → [..., a + b]: the channels of the first map, then the second's.
pub(super) struct CatChannels;

impl CustomOp2 for CatChannels {
    fn name(&self) -> &'static str {
        "unet-cat-channels"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x1, x2) = (
            contiguous(s1, l1, self.name())?,
            contiguous(s2, l2, self.name())?,
        );
        let (d1, d2) = (l1.dims(), l2.dims());
        let r = d1.len();
        if r == 0 || d2.len() != r || d1[..r - 1] != d2[..r - 1] {
            candle_core::bail!("unet-cat-channels: maps {d1:?} and {d2:?}");
        }
        let (a, b, n) = (d1[r - 1], d2[r - 1], d1[0]);
        // positions per image
        let l = x1.len() / (a * n).max(1);
        let y = per_image(x1.len() + x2.len(), n, |i, y| {
            let (p, q) = (
                &x1[i * l * a..(i + 1) * l * a],
                &x2[i * l * b..(i + 1) * l * b],
            );
            for ((o, p), q) in y
                .chunks_exact_mut((a + b).max(1))
                .zip(p.chunks_exact(a.max(1)))
                .zip(q.chunks_exact(b.max(1)))
            {
                o[..a].copy_from_slice(p);
                o[a..].copy_from_slice(q);
            }
        });
        let mut dims = d1.to_vec();
        dims[r - 1] = a + b;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x1: &Tensor,
        x2: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (a, b, n) = (
            x1.dims()[x1.rank() - 1],
            x2.dims()[x2.rank() - 1],
            x1.dims()[0],
        );
        let l = x1.elem_count() / (a * n).max(1);
        // one channel range [from, from + k) of every position of g
        let part = |g: &[f32], from: usize, k: usize| {
            per_image(n * l * k, n, |i, out| {
                let gi = &g[i * l * (a + b)..(i + 1) * l * (a + b)];
                for (o, px) in out
                    .chunks_exact_mut(k.max(1))
                    .zip(gi.chunks_exact((a + b).max(1)))
                {
                    o.copy_from_slice(&px[from..from + k]);
                }
            })
        };
        let (g1, g2) = on_values(g, |g| (part(g, 0, a), part(g, a, b)))?;
        Ok((
            Some(Tensor::from_vec(g1, x1.shape(), x1.device())?),
            Some(Tensor::from_vec(g2, x2.shape(), x2.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::tests::randn;
    use super::super::layers::{cat_channels, pool2, upsample2};
    use anyhow::Result;
    use candle_core::{Tensor, Var};

    /// Σ r ⊙ f(x) and its gradient in x.
    fn value_and_grad(
        f: &dyn Fn(&Tensor) -> Result<Tensor>,
        x: &Var,
        r: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let y = f(x.as_tensor())?;
        let grads = (&y * r)?.sum_all()?.backward()?;
        Ok((y, grads.get(x).expect("a gradient").clone()))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
    }

    /// Upsampling and pooling against the composites of candle ops (which `f64` maps still take),
    /// values and gradients.
    #[test]
    fn resampling_matches_the_composites() -> Result<()> {
        let x = randn(&[2, 6, 4, 5], 1)?;
        let xv = Var::from_tensor(&x)?;
        let x64 = Var::from_tensor(&x.to_dtype(candle_core::DType::F64)?)?;
        type Op = fn(&Tensor) -> anyhow::Result<Tensor>;
        for (name, op, out) in [
            ("upsample", upsample2 as Op, [2, 12, 8, 5]),
            ("pool", pool2 as Op, [2, 3, 2, 5]),
        ] {
            let r = randn(&out, 2)?;
            let (y, g) = value_and_grad(&op, &xv, &r)?;
            let (y64, g64) = value_and_grad(&op, &x64, &r.to_dtype(candle_core::DType::F64)?)?;
            assert_eq!(y.dims(), &out);
            assert!(
                max_diff(&y, &y64.to_dtype(candle_core::DType::F32)?)? < 1e-6,
                "{name}"
            );
            assert!(
                max_diff(&g, &g64.to_dtype(candle_core::DType::F32)?)? < 1e-5,
                "{name}: dx"
            );
        }
        Ok(())
    }

    /// The concatenation against candle's `cat` on the last axis, values and both gradients.
    #[test]
    fn concatenation_matches_candles_cat() -> Result<()> {
        let (a, b) = (
            Var::from_tensor(&randn(&[2, 3, 4, 5], 3)?)?,
            Var::from_tensor(&randn(&[2, 3, 4, 2], 4)?)?,
        );
        let r = randn(&[2, 3, 4, 7], 5)?;
        let ours = cat_channels(&a, &b)?;
        let theirs = Tensor::cat(&[a.as_tensor(), b.as_tensor()], 3)?;
        assert_eq!(max_diff(&ours, &theirs)?, 0.0);
        let g1 = (ours * &r)?.sum_all()?.backward()?;
        let g2 = (theirs * &r)?.sum_all()?.backward()?;
        for v in [&a, &b] {
            assert_eq!(
                max_diff(g1.get(v).expect("ours"), g2.get(v).expect("candle's"))?,
                0.0
            );
        }
        Ok(())
    }
}
