//! Single-precision matrix products for the fused MLP. On AVX2+FMA CPUs a register-tiled
//! micro-kernel (6 rows × 16 columns: 12 accumulators, two B loads and six A broadcasts per k,
//! the classic BLIS/Goto shape for 16 ymm registers) walks B in 16-column panels, each packed
//! contiguously (from any strides: Wᵀ is read straight from W) so that it stays in L1 while A's
//! rows stream past; elsewhere the `gemm` crate does the work.

/// The B operand of a product: a matrix read through (row, column) strides, packed panel by
/// panel as the product runs, or one packed beforehand to be reused by many products.
#[derive(Clone, Copy)]
pub enum Rhs<'b> {
    Strided(&'b [f32], (usize, usize)),
    Packed(&'b PackedB),
}

/// B [k × n] packed once into ⌈n/16⌉ contiguous, 64-byte-aligned [k × 16] panels (zero-padded),
/// the micro-kernel's layout; without AVX2 it keeps B row-major for the fallback.
#[derive(Default, Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    buf: Vec<f32>,
    skip: usize,
    panels: bool,
}

impl PackedB {
    /// Repacks `b` [k × n] (strides (b_rs, b_cs)) into this buffer.
    pub fn pack(&mut self, b: &[f32], (b_rs, b_cs): (usize, usize), k: usize, n: usize) {
        assert!(k == 0 || n == 0 || b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
        (self.k, self.n) = (k, n);
        self.panels = cfg!(target_arch = "x86_64") && super::kernels::has_avx2();
        let width = if self.panels { n.div_ceil(NR) * NR } else { n };
        self.buf.resize(k * width + 16, 0.0);
        self.skip = self.buf.as_ptr().align_offset(64).min(16);
        let data = &mut self.buf[self.skip..self.skip + k * width];
        if !self.panels {
            for (p, row) in data.chunks_exact_mut(n.max(1)).enumerate().take(k) {
                for (q, v) in row.iter_mut().enumerate() {
                    *v = b[p * b_rs + q * b_cs];
                }
            }
            return;
        }
        for (pi, panel) in data.chunks_exact_mut(k * NR).enumerate() {
            let j = pi * NR;
            pack_panel(panel, b, (b_rs, b_cs), k, j, NR.min(n - j));
        }
    }

    fn data(&self) -> &[f32] {
        &self.buf[self.skip..]
    }
}

const NR: usize = 16;

/// Below this many columns (an output layer of a few dimensions), with A's rows and B's columns
/// contiguous, a product runs as dot products: a 16-column tile would waste most of its FMAs.
pub const NARROW: usize = 8;

/// Packs B's columns j..j+w (w ≤ 16) into `panel` [k × 16], zero-padded: with B's own row stride
/// (512 bytes at width 128) a panel's rows fall into a few L1 sets and evict each other; packed,
/// they stream through consecutive lines.
fn pack_panel(
    panel: &mut [f32],
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    k: usize,
    j: usize,
    w: usize,
) {
    let panel = &mut panel[..k * NR];
    if b_cs == 1 {
        for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
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
}

/// C [m × n] (row stride `ldc`) = A·B, or C + A·B when `accumulate`. A [m × k] is read through
/// (row, column) strides, so transposes cost nothing; B is `rhs`.
pub fn gemm(
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    ldc: usize,
    a: &[f32],
    a_strides: (usize, usize),
    rhs: Rhs,
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
    let (a_rs, a_cs) = a_strides;
    assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    check_rhs(rhs, k, n);
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2() {
        if let (Rhs::Strided(b, (1, b_cs)), 1, true) = (rhs, a_cs, n < NARROW) {
            // SAFETY: as below.
            return unsafe { avx2::narrow((m, n, k), c, ldc, (a, a_rs), (b, b_cs), accumulate) };
        }
        let store = if accumulate {
            avx2::Store::Add
        } else {
            avx2::Store::Write
        };
        // SAFETY: the CPU has AVX2 and FMA; the asserts bound every access.
        return unsafe { avx2::gemm((m, n, k), c, ldc, (a, a_strides), rhs, store) };
    }
    let (b, (b_rs, b_cs)) = match rhs {
        Rhs::Strided(b, s) => (b, s),
        Rhs::Packed(p) => (p.data(), (p.n, 1)),
    };
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

/// `rhs` holds a [k × n] B (a packed one at least k rows: a product may use its first k).
fn check_rhs(rhs: Rhs, k: usize, n: usize) {
    match rhs {
        Rhs::Strided(b, (b_rs, b_cs)) => assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs),
        Rhs::Packed(p) => assert!(p.k >= k && p.n == n, "packed B is {}×{}", p.k, p.n),
    }
}

/// What a fused product does to each 6 × 16 tile of A·B in registers before storing it, so the
/// element-wise work costs no pass of its own over C.
pub enum Epilogue<'a> {
    /// C = SiLU(A·B + bias), and SiLU'(z) = σ + C(1 − σ) into `d1` [m × n] when given.
    BiasSilu {
        bias: &'a [f32],
        d1: Option<&'a mut [f32]>,
    },
    /// C = (A·B) ⊙ d, d [m × n] (a tangent through an activation: ż ↦ a'(z) ż).
    Scale(&'a [f32]),
}

/// C [m × n] = epilogue(A·B). Returns false, doing nothing, where this path does not apply (no
/// AVX2, or n not a multiple of 16); the caller then runs `gemm` and the element-wise pass.
pub fn gemm_fused(
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    a: &[f32],
    a_strides: (usize, usize),
    rhs: Rhs,
    epilogue: Epilogue,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2() && n.is_multiple_of(16) && m > 0 && k > 0 {
        assert!(c.len() >= m * n);
        assert!(a.len() > (m - 1) * a_strides.0 + (k - 1) * a_strides.1);
        check_rhs(rhs, k, n);
        let store = match epilogue {
            Epilogue::BiasSilu { bias, d1 } => {
                assert!(bias.len() >= n);
                let d1 = match d1 {
                    Some(d) => {
                        assert!(d.len() >= m * n);
                        d.as_mut_ptr()
                    }
                    None => std::ptr::null_mut(),
                };
                avx2::Store::Silu {
                    bias: bias.as_ptr(),
                    d1,
                }
            }
            Epilogue::Scale(d) => {
                assert!(d.len() >= m * n);
                avx2::Store::Scale { d: d.as_ptr() }
            }
        };
        // SAFETY: the CPU has AVX2 and FMA; the asserts bound every access.
        unsafe { avx2::gemm((m, n, k), c, n, (a, a_strides), rhs, store) };
        return true;
    }
    let _ = (m, n, k, c, a, a_strides, rhs, epilogue);
    false
}

/// C [m × n] = (A·B) ⊙ d, d [m × n]: fused into the store where `gemm_fused` applies, else the
/// product and then one element-wise pass.
pub fn gemm_scaled(
    dims: (usize, usize, usize),
    c: &mut [f32],
    a: &[f32],
    a_strides: (usize, usize),
    rhs: Rhs,
    d: &[f32],
) {
    if !gemm_fused(dims, c, a, a_strides, rhs, Epilogue::Scale(d)) {
        let (m, n, _) = dims;
        gemm(dims, c, n, a, a_strides, rhs, false);
        super::kernels::scale_blocks(&mut c[..m * n], d);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::nn::kernels::silu_avx2::{silu8_derivative, silu8xn};
    use std::arch::x86_64::*;

    use super::{pack_panel, Rhs, NR};

    const MR: usize = 6;
    /// Rows of B per pass when it is packed as the product runs: a [256 × 16] panel (16 KiB)
    /// stays in L1 beside A's stream (a weight gradient's k is the block's 512 rows).
    const KC: usize = 256;

    thread_local! {
        /// The current 16-column panel of B, packed [k × 16] (zero-padded past n).
        static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// C [m × n] (+)= A·B for narrow B (n < `NARROW`) as dot products of A's rows (contiguous)
    /// with B's columns (contiguous: B[p, j] at j·b_cs + p), two rows at a time.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn narrow(
        (m, n, k): (usize, usize, usize),
        c: &mut [f32],
        ldc: usize,
        (a, a_rs): (&[f32], usize),
        (b, b_cs): (&[f32], usize),
        accumulate: bool,
    ) {
        let k8 = k - k % 8;
        let hsum = |v: __m256| {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
        };
        let (a, b) = (a.as_ptr(), b.as_ptr());
        for i in (0..m).step_by(2) {
            let rows = if i + 1 < m { 2 } else { 1 };
            for j in 0..n {
                let bj = b.add(j * b_cs);
                // two rows × two accumulators: four independent FMA chains
                let mut acc = [[_mm256_setzero_ps(); 2]; 2];
                let mut tail = [0.0f32; 2];
                let mut p = 0;
                while p + 16 <= k8 {
                    let (b0, b1) = (_mm256_loadu_ps(bj.add(p)), _mm256_loadu_ps(bj.add(p + 8)));
                    for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                        let ar = a.add((i + r) * a_rs + p);
                        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(ar), b0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(_mm256_loadu_ps(ar.add(8)), b1, acc[1]);
                    }
                    p += 16;
                }
                if p < k8 {
                    let b0 = _mm256_loadu_ps(bj.add(p));
                    for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                        let ar = a.add((i + r) * a_rs + p);
                        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(ar), b0, acc[0]);
                    }
                }
                for (r, t) in tail.iter_mut().enumerate().take(rows) {
                    let ar = a.add((i + r) * a_rs);
                    *t = (k8..k).map(|p| *ar.add(p) * *bj.add(p)).sum();
                }
                for r in 0..rows {
                    let v = hsum(_mm256_add_ps(acc[r][0], acc[r][1])) + tail[r];
                    let dst = &mut c[(i + r) * ldc + j];
                    *dst = if accumulate { *dst + v } else { v };
                }
            }
        }
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
        /// C = AB ⊙ d (d laid out like C).
        Scale { d: *const f32 },
    }

    impl Store {
        /// The same store for the block of C that starts `offset` values and `col` columns on.
        unsafe fn at(self, offset: usize, col: usize) -> Store {
            match self {
                Store::Silu { bias, d1 } => Store::Silu {
                    bias: bias.add(col),
                    d1: if d1.is_null() { d1 } else { d1.add(offset) },
                },
                Store::Scale { d } => Store::Scale { d: d.add(offset) },
                other => other,
            }
        }
    }

    /// C [m × n] (row stride `ldc`) ← A·B through `store`; A with its (row, column) strides.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm(
        (m, n, k): (usize, usize, usize),
        c: &mut [f32],
        ldc: usize,
        (a, (a_rs, a_cs)): (&[f32], (usize, usize)),
        rhs: Rhs,
        store: Store,
    ) {
        let (a, c) = (a.as_ptr(), c.as_mut_ptr());
        // (A packed in 6-row tiles as well measured slower here: its strided copy costs more
        // than the six row streams it replaces)
        let (b, (b_rs, b_cs)) = match rhs {
            Rhs::Packed(p) => {
                let data = p.data().as_ptr();
                for (pi, j) in (0..n).step_by(NR).enumerate() {
                    let (bp, w) = (data.add(pi * p.k * NR), NR.min(n - j));
                    panel(
                        m,
                        k,
                        a,
                        (a_rs, a_cs),
                        bp,
                        NR,
                        c.add(j),
                        ldc,
                        w,
                        store.at(j, j),
                    );
                }
                return;
            }
            Rhs::Strided(b, s) => (b, s),
        };
        // a long k (a weight gradient's rows) goes in KC-row passes, each adding to C; the fused
        // epilogues need the whole sum at once, and their k is a layer's width
        let kc = if matches!(store, Store::Silu { .. } | Store::Scale { .. }) {
            k
        } else {
            KC
        };
        PANEL.with_borrow_mut(|buf| {
            buf.resize(kc.min(k) * NR + 16, 0.0);
            let skip = buf.as_ptr().align_offset(64).min(16);
            for k0 in (0..k).step_by(kc) {
                let kk = kc.min(k - k0);
                let (a, b) = (a.add(k0 * a_cs), &b[k0 * b_rs..]);
                let store = if k0 == 0 { store } else { Store::Add };
                for j in (0..n).step_by(NR) {
                    let w = NR.min(n - j);
                    let st = store.at(j, j);
                    // one row tile reads each panel once: packing would cost as much as it saves
                    if m <= MR && w == NR && b_cs == 1 {
                        let bp = b.as_ptr().add(j);
                        panel(m, kk, a, (a_rs, a_cs), bp, b_rs, c.add(j), ldc, w, st);
                    } else {
                        let pb = &mut buf[skip..skip + kk * NR];
                        pack_panel(pb, b, (b_rs, b_cs), kk, j, w);
                        panel(
                            m,
                            kk,
                            a,
                            (a_rs, a_cs),
                            pb.as_ptr(),
                            NR,
                            c.add(j),
                            ldc,
                            w,
                            st,
                        );
                    }
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
        // A's layout as a type parameter: row-major six-row tiles take the assembly k loop, and
        // the other tiles' broadcasts get a unit stride known at compile time
        match (a_cs, a_rs) {
            (1, _) => rows::<ROW_MAJOR>(m, k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc),
            (_, 1) => rows::<COL_MAJOR>(m, k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc),
            _ => rows::<STRIDED>(m, k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc),
        }
    }

    const ROW_MAJOR: u8 = 0;
    const COL_MAJOR: u8 = 1;
    const STRIDED: u8 = 2;

    /// `panel`'s row tiles, for one layout of A.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn rows<const L: u8>(
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
            tile::<MR, L>(k, ai, (a_rs, a_cs), b, ldb, ci, ldc, w, acc.at(i * ldc, 0));
            i += MR;
        }
        let acc = acc.at(i * ldc, 0);
        let (a, c) = (a.add(i * a_rs), c.add(i * ldc));
        match m - i {
            1 => tile::<1, L>(k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc),
            2 => tile::<2, L>(k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc),
            3 => tile::<3, L>(k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc),
            4 => tile::<4, L>(k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc),
            5 => tile::<5, L>(k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc),
            _ => {}
        }
    }

    /// R rows × 16 columns of C in 2R ymm accumulators; only the first w columns are written.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile<const R: usize, const L: u8>(
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
        let (a_rs, a_cs) = match L {
            ROW_MAJOR => (a_rs, 1),
            COL_MAJOR => (1, a_cs),
            _ => (a_rs, a_cs),
        };
        if R == MR && L == ROW_MAJOR {
            let (l6, h6) = kernel_6x16(k, a, a_rs, b, ldb);
            for r in 0..R {
                (lo[r], hi[r]) = (l6[r], h6[r]);
            }
            return store_tile(lo, hi, c, ldc, w, acc);
        }
        let row: [*const f32; R] = std::array::from_fn(|r| a.add(r * a_rs));
        // one k-step as a macro: a closure would not inherit the AVX2 target features
        macro_rules! step {
            ($p:expr) => {{
                let bp = b.add($p * ldb);
                let (b0, b1) = (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)));
                for r in 0..R {
                    let x = _mm256_broadcast_ss(&*row[r].add($p * a_cs));
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
        store_tile(lo, hi, c, ldc, w, acc)
    }

    /// One k-step of `kernel_6x16`: B's row at {b} (+ `$b`), A's column at {a}, {a3} (+ `$a`).
    macro_rules! k_step {
        ($b:literal, $a:literal) => {
            concat!(
                "vmovups {b0}, ymmword ptr [{b}",
                $b,
                "]\n",
                "vmovups {b1}, ymmword ptr [{b}",
                $b,
                " + 32]\n",
                "vbroadcastss {x}, dword ptr [{a}",
                $a,
                "]\n",
                "vfmadd231ps {c0}, {b0}, {x}\n",
                "vfmadd231ps {c1}, {b1}, {x}\n",
                "vbroadcastss {y}, dword ptr [{a} + {rs}",
                $a,
                "]\n",
                "vfmadd231ps {c2}, {b0}, {y}\n",
                "vfmadd231ps {c3}, {b1}, {y}\n",
                "vbroadcastss {x}, dword ptr [{a} + 2*{rs}",
                $a,
                "]\n",
                "vfmadd231ps {c4}, {b0}, {x}\n",
                "vfmadd231ps {c5}, {b1}, {x}\n",
                "vbroadcastss {y}, dword ptr [{a3}",
                $a,
                "]\n",
                "vfmadd231ps {c6}, {b0}, {y}\n",
                "vfmadd231ps {c7}, {b1}, {y}\n",
                "vbroadcastss {x}, dword ptr [{a3} + {rs}",
                $a,
                "]\n",
                "vfmadd231ps {c8}, {b0}, {x}\n",
                "vfmadd231ps {c9}, {b1}, {x}\n",
                "vbroadcastss {y}, dword ptr [{a3} + 2*{rs}",
                $a,
                "]\n",
                "vfmadd231ps {c10}, {b0}, {y}\n",
                "vfmadd231ps {c11}, {b1}, {y}\n",
            )
        };
    }

    /// The six-row, row-major tile's k loop in assembly: 12 accumulators, two B registers and two
    /// broadcast registers fill the 16 ymm registers exactly, and each operand pointer advances
    /// once per two k-steps (intrinsics let LLVM spill accumulators or chain the row addresses;
    /// unrolled twice, sampling and training ran 1.07–1.12× faster than one step per iteration).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_6x16(
        k: usize,
        a: *const f32,
        a_rs: usize,
        b: *const f32,
        ldb: usize,
    ) -> ([__m256; 6], [__m256; 6]) {
        let z = _mm256_setzero_ps();
        let (mut c0, mut c1, mut c2, mut c3, mut c4, mut c5) = (z, z, z, z, z, z);
        let (mut c6, mut c7, mut c8, mut c9, mut c10, mut c11) = (z, z, z, z, z, z);
        std::arch::asm!(
            "lea {a3}, [{a} + 2*{rs}]",
            "add {a3}, {rs}",
            "mov {h}, {k}",
            "shr {h}, 1",
            "jz 4f",
            ".p2align 5",
            "2:",
            k_step!("", ""),
            k_step!(" + {ldb}", " + 4"),
            "add {a}, 8",
            "add {a3}, 8",
            "lea {b}, [{b} + 2*{ldb}]",
            "dec {h}",
            "jnz 2b",
            "4:",
            "test {k}, 1",
            "jz 3f",
            k_step!("", ""),
            "3:",
            a = inout(reg) a => _,
            a3 = out(reg) _,
            rs = in(reg) a_rs * 4,
            b = inout(reg) b => _,
            ldb = in(reg) ldb * 4,
            k = in(reg) k,
            h = out(reg) _,
            b0 = out(ymm_reg) _,
            b1 = out(ymm_reg) _,
            x = out(ymm_reg) _,
            y = out(ymm_reg) _,
            c0 = inout(ymm_reg) c0,
            c1 = inout(ymm_reg) c1,
            c2 = inout(ymm_reg) c2,
            c3 = inout(ymm_reg) c3,
            c4 = inout(ymm_reg) c4,
            c5 = inout(ymm_reg) c5,
            c6 = inout(ymm_reg) c6,
            c7 = inout(ymm_reg) c7,
            c8 = inout(ymm_reg) c8,
            c9 = inout(ymm_reg) c9,
            c10 = inout(ymm_reg) c10,
            c11 = inout(ymm_reg) c11,
            options(nostack, readonly),
        );
        ([c0, c2, c4, c6, c8, c10], [c1, c3, c5, c7, c9, c11])
    }

    /// A finished R × 16 tile into C through `acc` (only the first w columns).
    #[inline(always)]
    unsafe fn store_tile<const R: usize>(
        lo: [__m256; R],
        hi: [__m256; R],
        c: *mut f32,
        ldc: usize,
        w: usize,
        acc: Store,
    ) {
        if let (NR, Store::Silu { bias, d1 }) = (w, acc) {
            // the whole tile's 2R vectors at once: one row's two SiLU chains would leave the FMA
            // pipes waiting on their latency
            let (b0, b1) = (_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(8)));
            let (h0, s0) = silu8xn::<R>(std::array::from_fn(|r| _mm256_add_ps(lo[r], b0)));
            let (h1, s1) = silu8xn::<R>(std::array::from_fn(|r| _mm256_add_ps(hi[r], b1)));
            for r in 0..R {
                let cp = c.add(r * ldc);
                _mm256_storeu_ps(cp, h0[r]);
                _mm256_storeu_ps(cp.add(8), h1[r]);
                if !d1.is_null() {
                    let dp = d1.add(r * ldc);
                    _mm256_storeu_ps(dp, silu8_derivative(h0[r], s0[r]));
                    _mm256_storeu_ps(dp.add(8), silu8_derivative(h1[r], s1[r]));
                }
            }
            return;
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
                    Store::Silu { .. } => unreachable!("handled above"),
                    Store::Scale { d } => {
                        let dp = d.add(r * ldc);
                        v0 = _mm256_mul_ps(v0, _mm256_loadu_ps(dp));
                        v1 = _mm256_mul_ps(v1, _mm256_loadu_ps(dp.add(8)));
                    }
                }
                _mm256_storeu_ps(cp, v0);
                _mm256_storeu_ps(cp.add(8), v1);
            } else {
                // partial panels only come from plain products (`gemm_fused` needs n % 16 = 0)
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
        let shapes = [
            (1, 1, 1),
            (7, 2, 5),
            (13, 34, 9),
            (64, 48, 128),
            (6, 16, 3),
            (8, 20, 600),
            (9, 3, 45),
        ];
        for (m, n, k) in shapes {
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
                let a_s = (a_rs, a_cs);
                gemm(
                    (m, n, k),
                    &mut c,
                    n,
                    &a,
                    a_s,
                    Rhs::Strided(&b, (n, 1)),
                    true,
                );
                // the same product with B read transposed from Bᵀ [n × k], and packed beforehand
                let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
                let mut c2 = vec![1.0f32; m * n];
                gemm(
                    (m, n, k),
                    &mut c2,
                    n,
                    &a,
                    a_s,
                    Rhs::Strided(&bt, (1, k)),
                    true,
                );
                assert!(c.iter().zip(&c2).all(|(x, y)| (x - y).abs() < 1e-4));
                let mut packed = PackedB::default();
                packed.pack(&bt, (1, k), k, n);
                let mut c3 = vec![1.0f32; m * n];
                gemm((m, n, k), &mut c3, n, &a, a_s, Rhs::Packed(&packed), true);
                assert!(c.iter().zip(&c3).all(|(x, y)| (x - y).abs() < 1e-4));
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

    /// The fused epilogues equal the plain product followed by the element-wise pass.
    #[test]
    fn fused_epilogues_match_product_then_pass() {
        for (m, n, k) in [(1, 16, 3), (13, 32, 2), (20, 48, 130)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let bt: Vec<f32> = (0..n * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let d: Vec<f32> = (0..m * n).map(|i| (i % 9) as f32 * 0.25 - 1.0).collect();
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.1 - 0.8).collect();
            let mut packed = PackedB::default();
            packed.pack(&bt, (1, k), k, n);
            let rhs = Rhs::Packed(&packed);
            let mut plain = vec![0.0f32; m * n];
            gemm((m, n, k), &mut plain, n, &a, (k, 1), rhs, false);
            let (mut scaled, mut silu, mut d1) =
                (vec![0.0; m * n], vec![0.0; m * n], vec![0.0; m * n]);
            let dims = (m, n, k);
            if !gemm_fused(dims, &mut scaled, &a, (k, 1), rhs, Epilogue::Scale(&d)) {
                return; // no AVX2: callers take the unfused path
            }
            let epilogue = Epilogue::BiasSilu {
                bias: &bias,
                d1: Some(&mut d1),
            };
            assert!(gemm_fused(dims, &mut silu, &a, (k, 1), rhs, epilogue));
            for i in 0..m * n {
                let z = (plain[i] + bias[i % n]) as f64;
                let sig = 1.0 / (1.0 + (-z).exp());
                let want = [
                    plain[i] as f64 * d[i] as f64,
                    z * sig,
                    sig * (1.0 + z * (1.0 - sig)),
                ];
                for (got, want) in [scaled[i], silu[i], d1[i]].into_iter().zip(want) {
                    assert!(
                        (got as f64 - want).abs() < 1e-5,
                        "{m}×{n}×{k} [{i}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
