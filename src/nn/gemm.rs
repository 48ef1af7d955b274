//! Single-precision matrix products for the fused MLP. On AVX2+FMA CPUs a register-tiled
//! micro-kernel (6 rows × 16 columns: 12 accumulators, two B loads and six A broadcasts per k,
//! the classic BLIS/Goto shape for 16 ymm registers) walks B in 16-column panels, each packed
//! contiguously (from any strides: Wᵀ is read straight from W) so that it stays in L1 while A's
//! rows stream past; elsewhere the `gemm` crate does the work.

/// C [m × n] (row stride `ldc`) = A·B, or C + A·B when `accumulate`. A [m × k] and B [k × n] are
/// read through (row, column) strides, so transposes cost nothing (B is packed panel by panel).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    ldc: usize,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    // every index the product touches lies inside the slices
    assert!(c.len() >= (m - 1) * ldc + n);
    if k == 0 {
        if !accumulate {
            (0..m).for_each(|i| c[i * ldc..i * ldc + n].fill(0.0));
        }
        return;
    }
    assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2() {
        let store = if accumulate {
            avx2::Store::Add
        } else {
            avx2::Store::Write
        };
        let (a, b) = ((a, (a_rs, a_cs)), (b, (b_rs, b_cs)));
        // SAFETY: the CPU has AVX2 and FMA; the asserts bound every access.
        return unsafe { avx2::gemm((m, n, k), c, ldc, a, b, store) };
    }
    // SAFETY: the asserts above bound every element gemm reads or writes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// C [m × n] = SiLU(A·B + bias) with the bias and activation applied to each 6 × 16 tile in
/// registers before it is stored (and σ(1 + z(1 − σ)) = SiLU'(z) into `d1` [m × n] when given):
/// the epilogue costs no extra pass over C. Returns false, doing nothing, where this path does
/// not apply (no AVX2, or n not a multiple of 16); the caller then runs `gemm` and the epilogue.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bias_silu(
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    bias: &[f32],
    d1: Option<&mut [f32]>,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2() && n.is_multiple_of(16) && m > 0 && k > 0 {
        assert!(c.len() >= m * n && bias.len() >= n);
        assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
        assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
        let d1 = match d1 {
            Some(d) => {
                assert!(d.len() >= m * n);
                d.as_mut_ptr()
            }
            None => std::ptr::null_mut(),
        };
        let store = avx2::Store::Silu {
            bias: bias.as_ptr(),
            d1,
        };
        let (a, b) = ((a, (a_rs, a_cs)), (b, (b_rs, b_cs)));
        // SAFETY: the CPU has AVX2 and FMA; the asserts bound every access.
        unsafe { avx2::gemm((m, n, k), c, n, a, b, store) };
        return true;
    }
    let _ = (m, n, k, c, a, a_rs, a_cs, b, b_rs, b_cs, bias, d1);
    false
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::nn::kernels::silu_avx2::{silu8, silu8_derivative};
    use std::arch::x86_64::*;

    const MR: usize = 6;
    const NR: usize = 16;

    thread_local! {
        /// The current 16-column panel of B, packed [k × 16] (zero-padded past n).
        static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Packs B's columns j..j+w (w ≤ 16) into a contiguous, 64-byte-aligned [k × 16] panel: with
    /// B's own row stride (512 bytes at width 128) a panel's rows fall into a few L1 sets and
    /// evict each other; packed, they stream through consecutive lines.
    fn pack<'p>(
        buf: &'p mut Vec<f32>,
        b: &[f32],
        (b_rs, b_cs): (usize, usize),
        k: usize,
        j: usize,
        w: usize,
    ) -> &'p [f32] {
        buf.resize(k * NR + 16, 0.0);
        let skip = buf.as_ptr().align_offset(64).min(16);
        let panel = &mut buf[skip..skip + k * NR];
        if b_cs == 1 {
            for p in 0..k {
                let row = &mut panel[p * NR..(p + 1) * NR];
                row[..w].copy_from_slice(&b[p * b_rs + j..p * b_rs + j + w]);
                row[w..].fill(0.0);
            }
        } else {
            // a transposed B (Wᵀ from W): read each of its columns as one contiguous run
            panel.fill(0.0);
            for q in 0..w {
                for p in 0..k {
                    panel[p * NR + q] = b[p * b_rs + (j + q) * b_cs];
                }
            }
        }
        panel
    }

    /// How a finished tile reaches C.
    #[derive(Clone, Copy)]
    pub enum Store {
        /// C = AB.
        Write,
        /// C += AB.
        Add,
        /// C = SiLU(AB + bias), and SiLU' into d1 (laid out like C) unless it is null.
        Silu { bias: *const f32, d1: *mut f32 },
    }

    impl Store {
        /// The same store for the block of C that starts `offset` values and `col` columns on.
        unsafe fn at(self, offset: usize, col: usize) -> Store {
            match self {
                Store::Silu { bias, d1 } => Store::Silu {
                    bias: bias.add(col),
                    d1: if d1.is_null() { d1 } else { d1.add(offset) },
                },
                other => other,
            }
        }
    }

    /// C [m × n] (row stride `ldc`) ← A·B through `store`; A and B with their (row, column)
    /// strides.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm(
        (m, n, k): (usize, usize, usize),
        c: &mut [f32],
        ldc: usize,
        (a, (a_rs, a_cs)): (&[f32], (usize, usize)),
        (b, (b_rs, b_cs)): (&[f32], (usize, usize)),
        store: Store,
    ) {
        let (a, c) = (a.as_ptr(), c.as_mut_ptr());
        // (A packed in 6-row tiles as well measured slower here: its strided copy costs more
        // than the six row streams it replaces)
        PANEL.with_borrow_mut(|buf| {
            for j in (0..n).step_by(NR) {
                let w = NR.min(n - j);
                let st = store.at(j, j);
                // one row tile reads each panel once: packing would cost as much as it saves
                if m <= MR && w == NR && b_cs == 1 {
                    let bp = b.as_ptr().add(j);
                    panel(m, k, a, (a_rs, a_cs), bp, b_rs, c.add(j), ldc, w, st);
                } else {
                    let bp = pack(buf, b, (b_rs, b_cs), k, j, w).as_ptr();
                    panel(m, k, a, (a_rs, a_cs), bp, NR, c.add(j), ldc, w, st);
                }
            }
        });
    }

    /// C[:, 0..w] (+)= A · B-panel for one 16-column panel of B (w ≤ 16 columns kept).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn panel(
        m: usize,
        k: usize,
        a: *const f32,
        (a_rs, a_cs): (usize, usize),
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        w: usize,
        acc: Store,
    ) {
        let mut i = 0;
        while i + MR <= m {
            let (ai, ci) = (a.add(i * a_rs), c.add(i * ldc));
            tile::<MR>(k, ai, (a_rs, a_cs), b, ldb, ci, ldc, w, acc.at(i * ldc, 0));
            i += MR;
        }
        let acc = acc.at(i * ldc, 0);
        let (a, c) = (a.add(i * a_rs), c.add(i * ldc));
        match m - i {
            1 => tile::<1>(k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc),
            2 => tile::<2>(k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc),
            3 => tile::<3>(k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc),
            4 => tile::<4>(k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc),
            5 => tile::<5>(k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc),
            _ => {}
        }
    }

    /// R rows × 16 columns of C in 2R ymm accumulators; only the first w columns are written.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile<const R: usize>(
        k: usize,
        a: *const f32,
        (a_rs, a_cs): (usize, usize),
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        w: usize,
        acc: Store,
    ) {
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        // one k-step as a macro: a closure would not inherit the AVX2 target features
        macro_rules! step {
            ($p:expr) => {{
                let bp = b.add($p * ldb);
                let (b0, b1) = (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)));
                let ap = a.add($p * a_cs);
                for r in 0..R {
                    let x = _mm256_broadcast_ss(&*ap.add(r * a_rs));
                    lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
                    hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
                }
            }};
        }
        let mut p = 0;
        while p + 4 <= k {
            step!(p);
            step!(p + 1);
            step!(p + 2);
            step!(p + 3);
            p += 4;
        }
        while p < k {
            step!(p);
            p += 1;
        }
        for r in 0..R {
            let cp = c.add(r * ldc);
            if w == NR {
                let (mut v0, mut v1) = (lo[r], hi[r]);
                match acc {
                    Store::Write => {}
                    Store::Add => {
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cp));
                        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cp.add(8)));
                    }
                    Store::Silu { bias, d1 } => {
                        let z0 = _mm256_add_ps(v0, _mm256_loadu_ps(bias));
                        let z1 = _mm256_add_ps(v1, _mm256_loadu_ps(bias.add(8)));
                        let (h0, s0) = silu8(z0);
                        let (h1, s1) = silu8(z1);
                        (v0, v1) = (h0, h1);
                        if !d1.is_null() {
                            let dp = d1.add(r * ldc);
                            _mm256_storeu_ps(dp, silu8_derivative(z0, s0));
                            _mm256_storeu_ps(dp.add(8), silu8_derivative(z1, s1));
                        }
                    }
                }
                _mm256_storeu_ps(cp, v0);
                _mm256_storeu_ps(cp.add(8), v1);
            } else {
                // partial panels only come from plain products (`gemm_bias_silu` needs n % 16 = 0)
                let mut row = [0.0f32; NR];
                _mm256_storeu_ps(row.as_mut_ptr(), lo[r]);
                _mm256_storeu_ps(row.as_mut_ptr().add(8), hi[r]);
                let add = matches!(acc, Store::Add);
                for (q, v) in row.iter().enumerate().take(w) {
                    let dst = cp.add(q);
                    *dst = if add { *dst + v } else { *v };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape class (full and partial row tiles and column panels, strided A, accumulate)
    /// against a plain triple loop in f64.
    #[test]
    fn gemm_matches_a_naive_product() {
        for (m, n, k) in [(1, 1, 1), (7, 2, 5), (13, 34, 9), (64, 48, 128), (6, 16, 3)] {
            for transposed_a in [false, true] {
                let a: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.3)
                    .collect();
                let b: Vec<f32> = (0..k * n)
                    .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.2)
                    .collect();
                // A[i][p] at i*k + p, or (transposed storage) at p*m + i
                let (a_rs, a_cs) = if transposed_a { (1, m) } else { (k, 1) };
                let mut c = vec![1.0f32; m * n];
                gemm((m, n, k), &mut c, n, &a, (a_rs, a_cs), &b, (n, 1), true);
                // the same product with B read transposed from Bᵀ [n × k]
                let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
                let mut c2 = vec![1.0f32; m * n];
                gemm((m, n, k), &mut c2, n, &a, (a_rs, a_cs), &bt, (1, k), true);
                assert!(c.iter().zip(&c2).all(|(x, y)| (x - y).abs() < 1e-4));
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = 1.0
                            + (0..k)
                                .map(|p| a[i * a_rs + p * a_cs] as f64 * b[p * n + j] as f64)
                                .sum::<f64>();
                        let got = c[i * n + j] as f64;
                        assert!(
                            (got - want).abs() < 1e-4,
                            "{m}×{n}×{k} [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
