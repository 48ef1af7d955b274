//! Single-precision matrix products for the fused MLP. On AVX2+FMA CPUs a register-tiled
//! micro-kernel (6 rows × 16 columns: 12 accumulators, two B loads and six A broadcasts per k,
//! the classic BLIS/Goto shape for 16 ymm registers) walks B in 16-column panels, each packed
//! contiguously so that it stays in L1 while A's rows stream past; elsewhere the `gemm` crate
//! does the work.

/// C [m × n] (row stride `ldc`) = A·B, or C + A·B when `accumulate`. A [m × k] is read through
/// (row, column) strides; B [k × n] must have unit column stride (row stride `ldb`).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    ldc: usize,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    ldb: usize,
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
    assert!(b.len() >= (k - 1) * ldb + n);
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA; the asserts bound every access.
        return unsafe { avx2::gemm((m, n, k), c, ldc, a, (a_rs, a_cs), b, ldb, accumulate) };
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
            1,
            ldb as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
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
        ldb: usize,
        k: usize,
        j: usize,
        w: usize,
    ) -> &'p [f32] {
        buf.resize(k * NR + 16, 0.0);
        let skip = buf.as_ptr().align_offset(64).min(16);
        let panel = &mut buf[skip..skip + k * NR];
        for p in 0..k {
            let row = &mut panel[p * NR..(p + 1) * NR];
            row[..w].copy_from_slice(&b[p * ldb + j..p * ldb + j + w]);
            row[w..].fill(0.0);
        }
        panel
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm(
        (m, n, k): (usize, usize, usize),
        c: &mut [f32],
        ldc: usize,
        a: &[f32],
        (a_rs, a_cs): (usize, usize),
        b: &[f32],
        ldb: usize,
        accumulate: bool,
    ) {
        let (a, c) = (a.as_ptr(), c.as_mut_ptr());
        // (A packed in 6-row tiles as well measured slower here: its strided copy costs more
        // than the six row streams it replaces)
        PANEL.with_borrow_mut(|buf| {
            for j in (0..n).step_by(NR) {
                let w = NR.min(n - j);
                // one row tile reads each panel once: packing would cost as much as it saves
                if m <= MR && w == NR {
                    let bp = b.as_ptr().add(j);
                    panel(m, k, a, (a_rs, a_cs), bp, ldb, c.add(j), ldc, w, accumulate);
                } else {
                    let bp = pack(buf, b, ldb, k, j, w).as_ptr();
                    panel(m, k, a, (a_rs, a_cs), bp, NR, c.add(j), ldc, w, accumulate);
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
        acc: bool,
    ) {
        let mut i = 0;
        while i + MR <= m {
            let (ai, ci) = (a.add(i * a_rs), c.add(i * ldc));
            tile::<MR>(k, ai, (a_rs, a_cs), b, ldb, ci, ldc, w, acc);
            i += MR;
        }
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
        acc: bool,
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
                if acc {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cp));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cp.add(8)));
                }
                _mm256_storeu_ps(cp, v0);
                _mm256_storeu_ps(cp.add(8), v1);
            } else {
                let mut row = [0.0f32; NR];
                _mm256_storeu_ps(row.as_mut_ptr(), lo[r]);
                _mm256_storeu_ps(row.as_mut_ptr().add(8), hi[r]);
                for (q, v) in row.iter().enumerate().take(w) {
                    let dst = cp.add(q);
                    *dst = if acc { *dst + v } else { *v };
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
                gemm((m, n, k), &mut c, n, &a, (a_rs, a_cs), &b, n, true);
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
