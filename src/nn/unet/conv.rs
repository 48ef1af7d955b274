//! The U-Net's k×k convolution (stride 1, zero padding k/2) on channels-last f32 CPU maps, plus a
//! bias shared or per image (the residual block's time embedding rides on it), as one candle op,
//! forward and backward, on the project's GEMM (`nn::gemm`), images split over the threads. No
//! im2col buffer: each image is copied once into a zero-bordered map of width w + 2r (r = k/2),
//! in which the k horizontally adjacent pixels of a kernel row are k·c contiguous values; so
//! kernel row ky is one product of that map's rows from ky·(w + 2r) (overlapping runs of k·c
//! values, row stride c) with the row's k taps stacked [(k·c) × o], on a grid of h × (w + 2r)
//! output rows whose last 2r columns are discarded (the "shifted GEMM" form of a convolution,
//! k products of depth k·c rather than k² of depth c). The backward pass: dX is the same
//! forward convolution of dY by the flipped, transposed kernel; dW by kernel row, from the
//! bordered map's runs against dY.

use super::winograd::add_pixels;
use crate::nn::contiguous;
use crate::nn::fused::split_rows;
use crate::nn::gemm::{gemm, PackedB, Rhs};
use crate::nn::Activation;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};
use std::mem::MaybeUninit;
use std::ops::Range;

/// The op on x [n, h, w, c] (contiguous), W [o, c, k, k], b \[o\] or [n, o]; result [n, h, w, o].
pub(super) struct ConvOp {
    pub k: usize,
}

/// Sizes of one call.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub o: usize,
    pub k: usize,
}

impl Dims {
    /// The bordered map's width w + 2r.
    fn wp(&self) -> usize {
        self.w + 2 * (self.k / 2)
    }
    /// Rows of the bordered map: (h + 2r)(w + 2r), plus 2r so that the last tap's shifted rows
    /// stay inside.
    fn rows_padded(&self) -> usize {
        let r2 = 2 * (self.k / 2);
        (self.h + r2) * self.wp() + r2
    }
    /// Rows of the output grid h · (w + 2r).
    fn rows_out(&self) -> usize {
        self.h * self.wp()
    }
}

/// The images 0..n in one range per thread (at most n).
fn image_ranges(n: usize) -> Vec<Range<usize>> {
    let k = rayon::current_num_threads().clamp(1, n.max(1));
    (0..k).map(|i| i * n / k..(i + 1) * n / k).collect()
}

/// f(images, part) over the threads: the images (samples) 0..n in one range per thread (at
/// most n), each with its part of `out` (`out.len() / n` values per image); the results in
/// range order.
pub(super) fn over_images<R: Send>(
    out: &mut [f32],
    n: usize,
    f: impl Fn(Range<usize>, &mut [f32]) -> R + Sync,
) -> Vec<R> {
    let ranges = image_ranges(n);
    let size = out.len().checked_div(n).unwrap_or(0);
    let parts = split_rows(out, &ranges, size);
    let f = &f;
    let jobs = ranges
        .into_iter()
        .zip(parts)
        .map(|(images, part)| move || f(images, part))
        .collect();
    crate::pool::run_all(jobs)
}

/// `over_images` on a new buffer of `len` zeros, each thread zeroing its own part first: a
/// full-size output zeroed before the split is a serial pass over memory (with the page faults
/// of its first touch), which the other thread waits out.
pub(super) fn over_new_images<R: Send>(
    len: usize,
    n: usize,
    f: impl Fn(Range<usize>, &mut [f32]) -> R + Sync,
) -> (Vec<f32>, Vec<R>) {
    let ranges = image_ranges(n);
    let size = len.checked_div(n).unwrap_or(0);
    let mut out = Vec::<f32>::with_capacity(len);
    let mut rest = &mut out.spare_capacity_mut()[..len];
    let mut parts = Vec::with_capacity(ranges.len());
    for r in &ranges {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(r.len() * size);
        parts.push(head);
        rest = tail;
    }
    rest.fill(MaybeUninit::new(0.0));
    let f = &f;
    let jobs = ranges
        .into_iter()
        .zip(parts)
        .map(|(images, part)| {
            move || {
                part.fill(MaybeUninit::new(0.0));
                // SAFETY: every value of the part is initialised, and MaybeUninit<f32> has
                // f32's layout
                let part = unsafe { &mut *(part as *mut [MaybeUninit<f32>] as *mut [f32]) };
                f(images, part)
            }
        })
        .collect();
    let results = crate::pool::run_all(jobs);
    // SAFETY: the parts and the remainder cover the first `len` values, all set to zero above
    unsafe { out.set_len(len) };
    (out, results)
}

/// f on the f32 values of tensors (each made contiguous first); candle's error where one is not
/// an f32 CPU tensor. The ops' backward passes read their inputs and cotangent this way.
pub(super) fn on_f32s<const N: usize, R>(
    ts: [&Tensor; N],
    f: impl FnOnce([&[f32]; N]) -> R,
) -> candle_core::Result<R> {
    let ts = ts
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut values = Vec::with_capacity(N);
    for (storage, layout) in &guards {
        let (Storage::Cpu(cpu), Some((a, b))) = (&**storage, layout.contiguous_offsets()) else {
            candle_core::bail!("the unet's ops run on CPU tensors only");
        };
        values.push(&cpu.as_slice::<f32>()?[a..b]);
    }
    match values.try_into() {
        Ok(values) => Ok(f(values)),
        Err(_) => candle_core::bail!("the unet's ops: {N} tensors expected"),
    }
}

/// θ cut into consecutive parts of the given sizes; `None` when the sizes do not add up to θ's
/// length. The fused ops take their layers' parameters as one flat θ.
pub(super) fn split_params<'a>(theta: &'a [f32], sizes: &[usize]) -> Option<Vec<&'a [f32]>> {
    if theta.len() != sizes.iter().sum::<usize>() {
        return None;
    }
    let mut rest = theta;
    let parts = sizes.iter().map(|&s| {
        let (a, b) = rest.split_at(s);
        rest = b;
        a
    });
    Some(parts.collect())
}

/// What a convolution reads: maps [n, h, w, c], or SiLU(a x + b) of maps x with per-image,
/// per-channel coefficients ab = [a; b] [n, 2c] (a GroupNorm and SiLU, applied as the values are
/// read, so that their result is never stored).
#[derive(Clone, Copy)]
pub(super) enum Input<'a> {
    Map(&'a [f32]),
    Normed { x: &'a [f32], ab: &'a [f32] },
}

impl Input<'_> {
    /// dst ← the values at `from..from + dst.len()` of image i (`image` values each, c channels).
    pub fn read(&self, i: usize, (image, c): (usize, usize), from: usize, dst: &mut [f32]) {
        match *self {
            Input::Map(x) => dst.copy_from_slice(&x[i * image + from..][..dst.len()]),
            Input::Normed { x, ab } => {
                let (a, b) = ab[2 * i * c..2 * (i + 1) * c].split_at(c);
                let src = &x[i * image + from..][..dst.len()];
                super::norm::activate(dst, src, (a, b), Some(Activation::Silu));
            }
        }
    }
}

/// Reads image i of `x` into the interior of the bordered map `xp` (borders untouched).
fn fill_bordered(xp: &mut [f32], x: Input, i: usize, d: Dims) {
    let (r, wp, row) = (d.k / 2, d.wp(), d.w * d.c);
    for y in 0..d.h {
        let at = ((y + r) * wp + r) * d.c;
        x.read(i, (d.h * row, d.c), y * row, &mut xp[at..at + row]);
    }
}

/// Image i's bias: b \[o\] shared, or row i of per-image biases b [n, o].
pub(super) fn bias_of(b: &[f32], i: usize, o: usize) -> &[f32] {
    if b.len() == o {
        b
    } else {
        &b[i * o..(i + 1) * o]
    }
}

/// The taps of W [o, c, k, k] grouped by kernel row: [ky][kx][c'][o'], so that row ky's taps
/// are one B [(k·c) × o] against a run of k·c contiguous values of the bordered map (the k
/// horizontally adjacent pixels of a row are adjacent in memory).
fn row_taps(wt: &[f32], d: Dims) -> Vec<PackedB> {
    let (k, kk, kc) = (d.k, d.k * d.k, d.k * d.c);
    let mut rows = vec![0.0f32; kk * d.c * d.o];
    for oi in 0..d.o {
        for ci in 0..d.c {
            for t in 0..kk {
                rows[(t * d.c + ci) * d.o + oi] = wt[(oi * d.c + ci) * kk + t];
            }
        }
    }
    (0..k)
        .map(|ky| {
            let mut p = PackedB::default();
            p.pack(&rows[ky * kc * d.o..], (d.o, 1), kc, d.o);
            p
        })
        .collect()
}

/// y = conv(x, W) + b for f32 values x [n, h, w, c], W [o, c, k, k], b \[o\] or [n, o]: 3×3
/// kernels by Winograd's F(2×2, 3×3) (`winograd`), others directly.
pub(super) fn forward(x: Input, wt: &[f32], b: &[f32], d: Dims) -> Vec<f32> {
    if d.k == 3 {
        return super::winograd::conv3x3(x, wt, b, d);
    }
    direct(x, wt, b, d)
}

/// `forward` in the direct form (any odd k): per image, one product per kernel row ky,
/// C[h·(w + 2r) × o] += A B_ky with A the bordered map's rows from ky·(w + 2r), k·c values each
/// (overlapping: row stride c).
pub(super) fn direct(x: Input, wt: &[f32], b: &[f32], d: Dims) -> Vec<f32> {
    let (wp, kc) = (d.wp(), d.k * d.c);
    let taps = row_taps(wt, d);
    let image_out = d.h * d.w * d.o;
    let (y, _) = over_new_images(d.n * image_out, d.n, |imgs, out| {
        let mut xp = vec![0.0f32; d.rows_padded() * d.c];
        let mut grid = vec![0.0f32; d.rows_out() * d.o];
        for (i, out) in imgs.zip(out.chunks_exact_mut(image_out)) {
            fill_bordered(&mut xp, x, i, d);
            for (ky, tap) in taps.iter().enumerate() {
                let a = &xp[ky * wp * d.c..];
                let dims = (d.rows_out(), d.o, kc);
                gemm(dims, &mut grid, d.o, a, (d.c, 1), Rhs::Packed(tap), ky > 0);
            }
            let b = bias_of(b, i, d.o);
            for yy in 0..d.h {
                for xx in 0..d.w {
                    let src = &grid[(yy * wp + xx) * d.o..][..d.o];
                    let dst = &mut out[(yy * d.w + xx) * d.o..][..d.o];
                    for ((o, s), bias) in dst.iter_mut().zip(src).zip(b) {
                        *o = s + bias;
                    }
                }
            }
        }
    });
    y
}

/// (dx, dW, db) from the result's cotangent g [n, h, w, o] (dx that of what the convolution
/// read: the normed values for `Input::Normed`); db per image [n, o] when `per_image`, else
/// \[o\].
pub(super) fn backward(
    x: Input,
    wt: &[f32],
    g: &[f32],
    d: Dims,
    per_image: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (dw, db) = weight_gradient(x, g, d, per_image);
    (input_gradient(wt, g, d), dw, db)
}

/// dx from the result's cotangent g: the forward convolution of g by the flipped, transposed
/// kernel W'[c', o', ky, kx] = W[o', c', k−1−ky, k−1−kx].
pub(super) fn input_gradient(wt: &[f32], g: &[f32], d: Dims) -> Vec<f32> {
    let kk = d.k * d.k;
    let mut flipped = vec![0.0f32; wt.len()];
    for oi in 0..d.o {
        for ci in 0..d.c {
            for t in 0..kk {
                flipped[(ci * d.o + oi) * kk + (kk - 1 - t)] = wt[(oi * d.c + ci) * kk + t];
            }
        }
    }
    let transposed = Dims {
        c: d.o,
        o: d.c,
        ..d
    };
    forward(Input::Map(g), &flipped, &vec![0.0; d.c], transposed)
}

/// (dW, db) from the result's cotangent g; db per image [n, o] when `per_image`, else \[o\].
/// 3×3 kernels through Winograd's transforms (`winograd::weight_gradient`), others directly.
pub(super) fn weight_gradient(
    x: Input,
    g: &[f32],
    d: Dims,
    per_image: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (dw, db_images) = if d.k == 3 {
        super::winograd::weight_gradient(x, g, d)
    } else {
        direct_weight_gradient(x, g, d)
    };
    if per_image {
        return (dw, db_images);
    }
    let mut db = vec![0.0f32; d.o];
    add_pixels(&mut db, &db_images);
    (dw, db)
}

/// (dW, db per image [n, o]) in the direct form: per image and kernel row, the bordered map's
/// runs of k·c values against g on the output grid.
pub(super) fn direct_weight_gradient(x: Input, g: &[f32], d: Dims) -> (Vec<f32>, Vec<f32>) {
    let (k, kk, wp, kc) = (d.k, d.k * d.k, d.wp(), d.k * d.c);
    let image_out = d.h * d.w * d.o;
    let mut db_images = vec![0.0f32; d.n * d.o];
    let sums = over_images(&mut db_images, d.n, |imgs, db_part| {
        let mut xp = vec![0.0f32; d.rows_padded() * d.c];
        // g on the output grid, its last 2r columns zero
        let mut gp = vec![0.0f32; d.rows_out() * d.o];
        let mut packed = PackedB::default();
        // dW by kernel row [k][(kx, c') × o]
        let mut dw = vec![0.0f32; k * kc * d.o];
        for (i, db) in imgs.zip(db_part.chunks_exact_mut(d.o)) {
            let gi = &g[i * image_out..(i + 1) * image_out];
            for yy in 0..d.h {
                let row = &gi[yy * d.w * d.o..(yy + 1) * d.w * d.o];
                gp[yy * wp * d.o..][..d.w * d.o].copy_from_slice(row);
                add_pixels(db, row);
            }
            fill_bordered(&mut xp, x, i, d);
            packed.pack(&gp, (d.o, 1), d.rows_out(), d.o);
            for ky in 0..k {
                let a = &xp[ky * wp * d.c..];
                let c = &mut dw[ky * kc * d.o..(ky + 1) * kc * d.o];
                let dims = (kc, d.o, d.rows_out());
                gemm(dims, c, d.o, a, (1, d.c), Rhs::Packed(&packed), true);
            }
        }
        dw
    });
    let mut dw = vec![0.0f32; d.o * d.c * kk];
    for part_w in &sums {
        // [t][c'][o'] → [o'][c'][t]
        for t in 0..kk {
            for ci in 0..d.c {
                for oi in 0..d.o {
                    dw[(oi * d.c + ci) * kk + t] += part_w[(t * d.c + ci) * d.o + oi];
                }
            }
        }
    }
    (dw, db_images)
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "unet-conv"
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
        let (x, w, b) = (
            contiguous(s1, l1, self.name())?,
            contiguous(s2, l2, self.name())?,
            contiguous(s3, l3, self.name())?,
        );
        let d = match (l1.dims(), l2.dims(), l3.dims()) {
            (&[n, h, w, c], &[o, c2, k, k2], b)
                if c == c2 && (b == [o] || b == [n, o]) && k == self.k && k2 == k && k % 2 == 1 =>
            {
                Dims { n, h, w, c, o, k }
            }
            (a, b, c) => candle_core::bail!("unet-conv op: x {a:?}, W {b:?}, b {c:?}"),
        };
        let y = forward(Input::Map(x), w, b, d);
        Ok((CpuStorage::F32(y), Shape::from((d.n, d.h, d.w, d.o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, h, wd, c) = x.dims4()?;
        let o = w.dims4()?.0;
        let d = Dims {
            n,
            h,
            w: wd,
            c,
            o,
            k: self.k,
        };
        // the network's input (noised data) needs no gradient: dx only where x is tracked
        let (gx, gw, gb) = on_f32s([x, w, grad], |[xv, wv, gv]| {
            let dx = x.track_op().then(|| input_gradient(wv, gv, d));
            let (dw, db) = weight_gradient(Input::Map(xv), gv, d, b.rank() == 2);
            (dx, dw, db)
        })?;
        let dev = x.device();
        Ok((
            gx.map(|gx| Tensor::from_vec(gx, x.shape(), dev))
                .transpose()?,
            Some(Tensor::from_vec(gw, w.shape(), dev)?),
            Some(Tensor::from_vec(gb, b.shape(), dev)?),
        ))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::layers::conv_op;
    use anyhow::Result;
    use candle_core::{DType, Device, Tensor, Var};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A tensor of standard normal f32 values of `shape` from `seed`.
    pub(in crate::nn::unet) fn randn(shape: &[usize], seed: u64) -> Result<Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rand_distr::Distribution::<f32>::sample(&rand_distr::StandardNormal, &mut rng))
            .collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }

    /// The gradients of `vars` in two backward passes agree within `rel` of each expected
    /// gradient's largest value (at least 1).
    pub(in crate::nn::unet) fn assert_grads_match(
        ours: &candle_core::backprop::GradStore,
        theirs: &candle_core::backprop::GradStore,
        vars: &[&Var],
        rel: f32,
        what: &str,
    ) -> Result<()> {
        for (j, var) in vars.iter().enumerate() {
            let (a, e) = (
                ours.get(var).expect("ours"),
                theirs.get(var).expect("theirs"),
            );
            let scale = e.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            let diff = max_diff(a, e)?;
            assert!(
                diff < rel * scale,
                "{what}, variable {j}: gradients differ by {diff}"
            );
        }
        Ok(())
    }

    /// candle's own conv2d (channels-first) on the channels-last x, plus the bias \[o\] or
    /// [n, o].
    fn candle_conv(x: &Tensor, w: &Tensor, b: &Tensor, k: usize) -> Result<Tensor> {
        let y = x.permute((0, 3, 1, 2))?.conv2d(w, k / 2, 1, 1, 1)?;
        let b = match b.dims() {
            &[n, o] => b.reshape((n, 1, 1, o))?,
            _ => b.clone(),
        };
        Ok(y.permute((0, 2, 3, 1))?.broadcast_add(&b)?)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
    }

    /// (n, h, w, c, o, k) cases: 3×3 and 1×1, one input or output channel (conv_in, out.conv),
    /// widths that leave partial GEMM tiles.
    const CASES: [(usize, usize, usize, usize, usize, usize); 4] = [
        (3, 5, 6, 4, 7, 3),
        (2, 7, 7, 1, 32, 3),
        (1, 4, 3, 17, 1, 3),
        (2, 3, 5, 6, 5, 1),
    ];

    #[test]
    fn values_and_gradients_match_candles_conv2d() -> Result<()> {
        // each case with a shared bias [o], then with a bias per image [n, o]
        let both = CASES.iter().flat_map(|&c| [(c, false), (c, true)]);
        for (i, ((n, h, w, c, o, k), per_image)) in both.enumerate() {
            let s = 10 * i as u64;
            let x = Var::from_tensor(&randn(&[n, h, w, c], s)?)?;
            let wt = Var::from_tensor(&(randn(&[o, c, k, k], s + 1)? * 0.3)?)?;
            let bias_shape = if per_image { vec![n, o] } else { vec![o] };
            let b = Var::from_tensor(&randn(&bias_shape, s + 2)?)?;
            let r = randn(&[n, h, w, o], s + 3)?;
            let ours = conv_op(&x, &wt, &b, k)?;
            let theirs = candle_conv(&x, &wt, &b, k)?;
            assert_eq!(ours.dims(), &[n, h, w, o]);
            assert!(max_diff(&ours, &theirs)? < 1e-4, "case {i}: values");
            let g1 = (ours * &r)?.sum_all()?.backward()?;
            let g2 = (theirs * &r)?.sum_all()?.backward()?;
            for (name, v) in [("x", &x), ("W", &wt), ("b", &b)] {
                let (a, e) = (g1.get(v).expect("ours"), g2.get(v).expect("candle's"));
                let scale = e.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                assert!(max_diff(a, e)? < 1e-4 * scale, "case {i}: d{name}");
            }
        }
        Ok(())
    }

    /// d/dx and d/dW of Σ r ⊙ conv(x, W) along random directions against central differences
    /// (exact up to rounding: the convolution is linear in each), the sums in f64.
    #[test]
    fn gradients_match_central_differences() -> Result<()> {
        for (i, &(n, h, w, c, o, k)) in CASES.iter().enumerate() {
            let s = 100 + 10 * i as u64;
            let x = randn(&[n, h, w, c], s)?;
            let wt = (randn(&[o, c, k, k], s + 1)? * 0.3)?;
            let b = randn(&[o], s + 2)?;
            let r = randn(&[n, h, w, o], s + 3)?;
            let loss = |x: &Tensor, wt: &Tensor| -> Result<f64> {
                let y = (conv_op(x, wt, &b, k)? * &r)?.to_dtype(DType::F64)?;
                Ok(y.sum_all()?.to_scalar::<f64>()?)
            };
            let (xv, wv) = (Var::from_tensor(&x)?, Var::from_tensor(&wt)?);
            let grads = (conv_op(&xv, &wv, &b, k)? * &r)?.sum_all()?.backward()?;
            let hstep = 0.5;
            for (j, (arg, var)) in [(&x, &xv), (&wt, &wv)].into_iter().enumerate() {
                let dir = randn(arg.dims(), s + 4 + j as u64)?;
                let shifted = |sign: f64| -> Result<f64> {
                    let a = (arg + (&dir * (sign * hstep))?)?;
                    if j == 0 {
                        loss(&a, &wt)
                    } else {
                        loss(&x, &a)
                    }
                };
                let numeric = (shifted(1.0)? - shifted(-1.0)?) / (2.0 * hstep);
                let g = grads.get(var).expect("a gradient");
                let analytic = (g.to_dtype(DType::F64)? * dir.to_dtype(DType::F64)?)?
                    .sum_all()?
                    .to_scalar::<f64>()?;
                assert!(
                    (analytic - numeric).abs() < 1e-4 * (1.0 + numeric.abs()),
                    "case {i}, argument {j}: autograd {analytic} vs central differences {numeric}"
                );
            }
        }
        Ok(())
    }
}
