//! Single-precision matrix products for the fused MLP. On AVX2+FMA CPUs a register-tiled
//! micro-kernel (6 rows × 16 columns: 12 accumulators, two B loads and six A broadcasts per k,
//! the classic BLIS/Goto shape for 16 ymm registers) walks B in 16-column panels, each packed
//! contiguously (from any strides: Wᵀ is read straight from W) so that it stays in L1 while A's
//! rows stream past. With AVX-512F and DQ, zmm tiles (`avx512`: 12 × 32 over two adjacent
//! panels, R × 32 for a block's last rows, 12 × 16 for a last odd panel) take A in 24-row blocks
//! against every panel instead. Elsewhere the `gemm` crate does the work.

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
    if b_cs == 1 && w == NR {
        // rows as fixed-size arrays: the copies become two vector moves, not `memcpy` calls
        for (p, row) in panel.as_chunks_mut::<NR>().0.iter_mut().enumerate() {
            let src: &[f32; NR] = b[p * b_rs + j..][..NR].try_into().expect("NR values");
            *row = *src;
        }
    } else if b_cs == 1 {
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
    dims: (usize, usize, usize),
    c: &mut [f32],
    ldc: usize,
    a: &[f32],
    a_strides: (usize, usize),
    rhs: Rhs,
    accumulate: bool,
) {
    let wide = super::kernels::has_avx512();
    gemm_on(wide, dims, c, ldc, a, a_strides, rhs, accumulate)
}

/// `gemm` with the AVX-512 tiles (`wide`, where the CPU has them) or without.
#[allow(clippy::too_many_arguments)]
fn gemm_on(
    wide: bool,
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
            let dims = (m, n, k);
            // SAFETY: as below.
            return unsafe {
                if wide {
                    avx512::narrow(dims, c, ldc, (a, a_rs), (b, b_cs), accumulate)
                } else {
                    avx2::narrow(dims, c, ldc, (a, a_rs), (b, b_cs), accumulate)
                }
            };
        }
        let store = if accumulate {
            avx2::Store::Add
        } else {
            avx2::Store::Write
        };
        // SAFETY: the CPU has AVX2 and FMA; the asserts bound every access.
        return unsafe { avx2::gemm((m, n, k), c, ldc, (a, a_strides), rhs, store, wide) };
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

/// What a fused product does to each register tile of A·B before storing it, so the
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
    dims: (usize, usize, usize),
    c: &mut [f32],
    a: &[f32],
    a_strides: (usize, usize),
    rhs: Rhs,
    epilogue: Epilogue,
) -> bool {
    let wide = super::kernels::has_avx512();
    gemm_fused_on(wide, dims, c, a, a_strides, rhs, epilogue)
}

/// `gemm_fused` with the AVX-512 tiles (`wide`, where the CPU has them) or without.
fn gemm_fused_on(
    wide: bool,
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
        unsafe { avx2::gemm((m, n, k), c, n, (a, a_strides), rhs, store, wide) };
        return true;
    }
    let _ = (wide, m, n, k, c, a, a_strides, rhs, epilogue);
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
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests;
