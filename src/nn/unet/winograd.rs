//! The 3×3 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray 2016, "Fast
//! algorithms for convolutional neural networks"): each 2×2 block of outputs from its 4×4 input
//! patch d as Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A, so that per image the product becomes 16 products
//! [tiles × c]·[c × o] in the transformed domain, 16 multiplications per 4 outputs where the
//! direct form takes 36 (2.25× fewer FLOPs), plus two cheap transforms of additions. The U-Net's
//! forward pass and its input gradient (the same convolution by the flipped kernel) run here.

use super::conv::{bias_of, over_images, over_new_images, Dims, Input};
use crate::nn::gemm::{gemm, PackedB, Rhs};
use crate::nn::kernels::multiversion;

/// The 16 transformed kernels U_ξ = (G g Gᵀ)_ξ, each packed as a product's B [c × o], with
/// G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]] and g = W[o', c'] [3 × 3].
fn kernel_transform(wt: &[f32], c: usize, o: usize) -> Vec<PackedB> {
    let mut u = vec![0.0f32; 16 * c * o];
    // G v for a 3-vector v
    let g3 = |a: f32, b: f32, e: f32| [a, 0.5 * (a + b + e), 0.5 * (a - b + e), e];
    // o' innermost: each of the 16 outputs is written in order
    for ci in 0..c {
        for oi in 0..o {
            let g = &wt[(oi * c + ci) * 9..][..9];
            // the columns of G g, then the rows of (G g) Gᵀ
            let cols: [[f32; 4]; 3] = std::array::from_fn(|j| g3(g[j], g[3 + j], g[6 + j]));
            for i in 0..4 {
                let row = g3(cols[0][i], cols[1][i], cols[2][i]);
                for (j, v) in row.into_iter().enumerate() {
                    u[((i * 4 + j) * c + ci) * o + oi] = v;
                }
            }
        }
    }
    (0..16)
        .map(|xi| {
            let mut p = PackedB::default();
            p.pack(&u[xi * c * o..], (o, 1), c, o);
            p
        })
        .collect()
}

multiversion! {
    #[allow(clippy::needless_range_loop)]
    /// V[tile] = Bᵀ d B for every tile of one image's bordered map xp [hp × wp × c] (tiles tw
    /// per row, at stride 2), Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]];
    /// V [tiles × 16 × c].
    pub fn input_transform(v: &mut [f32], xp: &[f32], wp: usize, tw: usize, c: usize) {
        let tiles = v.len() / (16 * c);
        assert!(tiles == 0 || xp.len() >= (2 * ((tiles - 1) / tw + 1) + 2) * wp * c);
        for (t, vt) in v.chunks_exact_mut(16 * c).enumerate() {
            let base = (2 * (t / tw) * wp + 2 * (t % tw)) * c;
            for ch in 0..c {
                // SAFETY: the tile's 4×4 patch lies inside xp (asserted above: the last tile
                // row ends at row 2·⌈tiles/tw⌉ + 2 ≤ hp), and k·c + ch < 16c = vt.len()
                let d = |r: usize, s: usize| unsafe { *xp.get_unchecked(base + (r * wp + s) * c + ch) };
                let mut rows = [[0.0f32; 4]; 4];
                for (s, col) in rows.iter_mut().enumerate() {
                    let (d0, d1, d2, d3) = (d(0, s), d(1, s), d(2, s), d(3, s));
                    *col = [d0 - d2, d1 + d2, d2 - d1, d1 - d3];
                }
                for i in 0..4 {
                    let (t0, t1, t2, t3) = (rows[0][i], rows[1][i], rows[2][i], rows[3][i]);
                    for (j, x) in [t0 - t2, t1 + t2, t2 - t1, t1 - t3].into_iter().enumerate() {
                        unsafe { *vt.get_unchecked_mut((i * 4 + j) * c + ch) = x };
                    }
                }
            }
        }
    }
}

multiversion! {
    #[allow(clippy::needless_range_loop)]
    /// The 2×2 blocks Aᵀ m A + b of every tile of m [tiles × 16 × o] into `blocks`
    /// [tiles × 4 × o], Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]].
    pub fn output_transform(blocks: &mut [f32], m: &[f32], b: &[f32]) {
        let o = b.len();
        for (mt, yt) in m.chunks_exact(16 * o).zip(blocks.chunks_exact_mut(4 * o)) {
            for oi in 0..o {
                // SAFETY: ξ·o + oi < 16o = mt.len() and k·o + oi < 4o = yt.len()
                let at = |xi: usize| unsafe { *mt.get_unchecked(xi * o + oi) };
                // Aᵀ over the rows i, then over the columns j
                let mut r = [[0.0f32; 4]; 2];
                for j in 0..4 {
                    let (m0, m1, m2, m3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
                    r[0][j] = m0 + m1 + m2;
                    r[1][j] = m1 - m2 - m3;
                }
                let bias = b[oi];
                for (a, r) in r.iter().enumerate() {
                    let out = [r[0] + r[1] + r[2] + bias, r[1] - r[2] - r[3] + bias];
                    for (e, v) in out.into_iter().enumerate() {
                        unsafe { *yt.get_unchecked_mut((2 * a + e) * o + oi) = v };
                    }
                }
            }
        }
    }
}

/// y = conv(x, W) + b for f32 values x [n, h, w, c], W [o, c, 3, 3], b \[o\] or [n, o], by
/// F(2×2, 3×3): per image, the map zero-bordered to (2⌈h/2⌉ + 2) × (2⌈w/2⌉ + 2), its tiles
/// transformed, 16 products, the inverse transform.
pub(super) fn conv3x3(x: Input, wt: &[f32], b: &[f32], d: Dims) -> Vec<f32> {
    let (th, tw) = (d.h.div_ceil(2), d.w.div_ceil(2));
    let (hp, wp, tiles) = (2 * th + 2, 2 * tw + 2, th * tw);
    let u = kernel_transform(wt, d.c, d.o);
    let (image_in, image_out) = (d.h * d.w * d.c, d.h * d.w * d.o);
    let (y, _) = over_new_images(d.n * image_out, d.n, |imgs, out| {
        let mut xp = vec![0.0f32; hp * wp * d.c];
        let mut v = vec![0.0f32; tiles * 16 * d.c];
        let mut m = vec![0.0f32; tiles * 16 * d.o];
        let mut blocks = vec![0.0f32; tiles * 4 * d.o];
        let row = d.w * d.c;
        for (i, out) in imgs.zip(out.chunks_exact_mut(image_out)) {
            for yy in 0..d.h {
                let at = ((yy + 1) * wp + 1) * d.c;
                x.read(i, (image_in, d.c), yy * row, &mut xp[at..at + row]);
            }
            input_transform(&mut v, &xp, wp, tw, d.c);
            // product ξ reads V's rows 16c apart and writes M's rows 16o apart
            for (xi, uxi) in u.iter().enumerate() {
                let (a, c) = (&v[xi * d.c..], &mut m[xi * d.o..]);
                let dims = (tiles, d.o, d.c);
                gemm(dims, c, 16 * d.o, a, (16 * d.c, 1), Rhs::Packed(uxi), false);
            }
            output_transform(&mut blocks, &m, bias_of(b, i, d.o));
            // each tile's 2×2 block where it lies inside the image
            for (t, blk) in blocks.chunks_exact(4 * d.o).enumerate() {
                let (ty, tx) = (2 * (t / tw), 2 * (t % tw));
                for (k, px) in blk.chunks_exact(d.o).enumerate() {
                    let (yy, xx) = (ty + k / 2, tx + k % 2);
                    if yy < d.h && xx < d.w {
                        out[(yy * d.w + xx) * d.o..][..d.o].copy_from_slice(px);
                    }
                }
            }
        }
    });
    y
}

multiversion! {
    #[allow(clippy::needless_range_loop)]
    /// dM[tile] = A dY A^T for every tile's 2×2 block of a cotangent gp [2th × 2tw × o] (zero
    /// past the image), A = [[1, 0], [1, 1], [1, −1], [0, −1]]: the cotangent of M in
    /// `output_transform`; dM [tiles × 16 × o].
    pub fn cotangent_transform(dm: &mut [f32], gp: &[f32], tw: usize, o: usize) {
        let row = 2 * tw * o;
        assert!(gp.len() >= dm.len() / 4);
        for (t, mt) in dm.chunks_exact_mut(16 * o).enumerate() {
            let base = 2 * (t / tw) * row + 2 * (t % tw) * o;
            for oi in 0..o {
                // SAFETY: the tile's 2×2 block lies inside gp (asserted: gp has 4 values per
                // tile and channel), and k·o + oi < 16o = mt.len()
                let y = |a: usize, e: usize| unsafe { *gp.get_unchecked(base + a * row + e * o + oi) };
                let cols: [[f32; 4]; 2] = std::array::from_fn(|e| {
                    let (y0, y1) = (y(0, e), y(1, e));
                    [y0, y0 + y1, y0 - y1, -y1]
                });
                for i in 0..4 {
                    let (c0, c1) = (cols[0][i], cols[1][i]);
                    for (j, v) in [c0, c0 + c1, c0 - c1, -c1].into_iter().enumerate() {
                        unsafe { *mt.get_unchecked_mut((i * 4 + j) * o + oi) = v };
                    }
                }
            }
        }
    }
}

/// (dW [o, c, 3, 3], db per image [n, o]) of the 3×3 convolution from its cotangent g [n, h, w, o],
/// by the transpose of F(2×2, 3×3): dU_ξ [c × o] = Σ_tiles V_ξᵀ dM_ξ, then dW = Gᵀ dU G per
/// (o', c'), 16 products of depth `tiles` per image where the direct form takes 9 of depth h·w.
pub(super) fn weight_gradient(x: Input, g: &[f32], d: Dims) -> (Vec<f32>, Vec<f32>) {
    let (th, tw) = (d.h.div_ceil(2), d.w.div_ceil(2));
    let (hp, wp, tiles) = (2 * th + 2, 2 * tw + 2, th * tw);
    let (image_in, image_out) = (d.h * d.w * d.c, d.h * d.w * d.o);
    let mut db = vec![0.0f32; d.n * d.o];
    let mut parts = over_images(&mut db, d.n, |imgs, db_part| {
        let mut xp = vec![0.0f32; hp * wp * d.c];
        let mut gp = vec![0.0f32; 4 * tiles * d.o];
        let mut v = vec![0.0f32; tiles * 16 * d.c];
        let mut dm = vec![0.0f32; tiles * 16 * d.o];
        let mut du = vec![0.0f32; 16 * d.c * d.o];
        let mut packed = PackedB::default();
        let (row_in, row_out) = (d.w * d.c, d.w * d.o);
        for (i, db) in imgs.zip(db_part.chunks_exact_mut(d.o)) {
            let gi = &g[i * image_out..(i + 1) * image_out];
            for yy in 0..d.h {
                let at = ((yy + 1) * wp + 1) * d.c;
                x.read(i, (image_in, d.c), yy * row_in, &mut xp[at..at + row_in]);
                let grow = &gi[yy * row_out..(yy + 1) * row_out];
                gp[yy * 2 * tw * d.o..][..row_out].copy_from_slice(grow);
                add_pixels(db, grow);
            }
            input_transform(&mut v, &xp, wp, tw, d.c);
            cotangent_transform(&mut dm, &gp, tw, d.o);
            for xi in 0..16 {
                packed.pack(&dm[xi * d.o..], (16 * d.o, 1), tiles, d.o);
                let c = &mut du[xi * d.c * d.o..(xi + 1) * d.c * d.o];
                let a = &v[xi * d.c..];
                let dims = (d.c, d.o, tiles);
                gemm(dims, c, d.o, a, (1, 16 * d.c), Rhs::Packed(&packed), true);
            }
        }
        du
    })
    .into_iter();
    let mut du = parts.next().unwrap_or_else(|| vec![0.0; 16 * d.c * d.o]);
    for p in parts {
        du.iter_mut().zip(&p).for_each(|(s, v)| *s += v);
    }
    // Gᵀ v for a 4-vector v: the adjoint of G's rows [1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]
    let gt = |v: [f32; 4]| {
        [
            v[0] + 0.5 * (v[1] + v[2]),
            0.5 * (v[1] - v[2]),
            0.5 * (v[1] + v[2]) + v[3],
        ]
    };
    let mut dw = vec![0.0f32; d.o * d.c * 9];
    for ci in 0..d.c {
        for oi in 0..d.o {
            let du = |xi: usize| du[(xi * d.c + ci) * d.o + oi];
            // Gᵀ over the rows i of dU, then over its columns j
            let rows: [[f32; 3]; 4] =
                std::array::from_fn(|i| gt(std::array::from_fn(|j| du(i * 4 + j))));
            for kx in 0..3 {
                let col = gt(std::array::from_fn(|i| rows[i][kx]));
                for (ky, v) in col.into_iter().enumerate() {
                    dw[(oi * d.c + ci) * 9 + ky * 3 + kx] = v;
                }
            }
        }
    }
    (dw, db)
}

/// db += Σ over the pixels of a run of pixels [.., o].
pub(super) fn add_pixels(db: &mut [f32], pixels: &[f32]) {
    for px in pixels.chunks_exact(db.len()) {
        db.iter_mut().zip(px).for_each(|(s, v)| *s += v);
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::{direct, direct_weight_gradient, tests::randn, Dims, Input};
    use anyhow::Result;

    /// Every value of `ours` within 1e-5 of the largest of `want`.
    fn assert_close(ours: &[f32], want: &[f32], what: &str) {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = ours
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1e-5 * scale, "{what}: error {err} at scale {scale}");
    }

    /// F(2×2, 3×3) against the direct convolution at the U-Net's sizes (even and odd maps, up
    /// to 128 input channels, a bias per image), relative to the result's scale.
    #[test]
    fn winograd_matches_the_direct_convolution() -> Result<()> {
        for (s, (n, h, c, o)) in [
            (2, 28, 32, 32),
            (3, 7, 128, 64),
            (2, 14, 64, 64),
            (1, 5, 3, 17),
        ]
        .into_iter()
        .enumerate()
        {
            let d = Dims {
                n,
                h,
                w: h,
                c,
                o,
                k: 3,
            };
            let s = 10 * s as u64;
            let x = randn(&[n * h * h * c], s)?.to_vec1::<f32>()?;
            let wt = randn(&[o * c * 9], s + 1)?.to_vec1::<f32>()?;
            let b = randn(&[n * o], s + 2)?.to_vec1::<f32>()?;
            let (ours, want) = (
                super::conv3x3(Input::Map(&x), &wt, &b, d),
                direct(Input::Map(&x), &wt, &b, d),
            );
            assert_close(&ours, &want, &format!("{h}×{h}, {c} → {o}"));
        }
        Ok(())
    }

    /// The weight and bias gradients of F(2×2, 3×3) against the direct form's.
    #[test]
    fn winograd_weight_gradient_matches_the_direct_form() -> Result<()> {
        for (s, (n, h, c, o)) in [(2, 28, 32, 32), (3, 7, 64, 64), (2, 5, 3, 17)]
            .into_iter()
            .enumerate()
        {
            let d = Dims {
                n,
                h,
                w: h,
                c,
                o,
                k: 3,
            };
            let s = 10 * s as u64;
            let x = randn(&[n * h * h * c], s)?.to_vec1::<f32>()?;
            let g = randn(&[n * h * h * o], s + 1)?.to_vec1::<f32>()?;
            let (ours, want) = (
                super::weight_gradient(Input::Map(&x), &g, d),
                direct_weight_gradient(Input::Map(&x), &g, d),
            );
            assert_close(&ours.0, &want.0, &format!("{h}×{h}, {c} → {o}: dW"));
            assert_close(&ours.1, &want.1, &format!("{h}×{h}, {c} → {o}: db"));
        }
        Ok(())
    }
}
