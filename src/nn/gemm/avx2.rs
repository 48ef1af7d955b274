//! The AVX2 + FMA products: B in 16-column panels, 6 × 16 register tiles (the k loop in
//! assembly for row-major A), and the bias + SiLU or scaling epilogue applied to each tile.

use crate::nn::simd::{silu_derivative, silu_xn, Lanes};
use std::arch::x86_64::*;

use super::{avx512, pack_panel, Rhs, NR};

const MR: usize = 6;
/// Rows of B per pass when it is packed as the product runs: a [256 × 16] panel (16 KiB)
/// stays in L1 beside A's stream (a weight gradient's k is the block's 512 rows).
const KC: usize = 256;

thread_local! {
    /// B as 16-column panels, each packed [k × 16] (zero-padded past n).
    static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A block of a column-major A's rows, copied [k × MC] (`row_blocks`).
    static BLOCK_A: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `narrow_on` in ymm registers.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn narrow(
    dims: (usize, usize, usize),
    c: &mut [f32],
    ldc: usize,
    a: (&[f32], usize),
    b: (&[f32], usize),
    accumulate: bool,
) {
    narrow_on::<__m256>(dims, c, ldc, a, b, accumulate)
}

/// C [m × n] (+)= A·B for narrow B (n < `NARROW`) as dot products of A's rows (contiguous) with
/// B's columns (B[p, j] at j·b_cs + p), four rows × two columns at a time: each chunk of A and of
/// B is loaded once for all eight FMA chains, and a partial load takes k's tail.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(super) unsafe fn narrow_on<V: Lanes>(
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    ldc: usize,
    (a, a_rs): (&[f32], usize),
    (b, b_cs): (&[f32], usize),
    accumulate: bool,
) {
    const R: usize = 4;
    let (a, b, c, l) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), V::LANES);
    // a macro, not a closure: a closure would not inherit the caller's target features
    macro_rules! load {
        ($p:expr, $at:expr) => {
            if $at + l <= k {
                V::load($p.add($at))
            } else {
                V::load_first($p.add($at), k - $at)
            }
        };
    }
    for i in (0..m).step_by(R) {
        let rows = R.min(m - i);
        for j in (0..n).step_by(2) {
            let cols = 2.min(n - j);
            let mut acc = [[V::splat(0.0); 2]; R];
            // a missing row or column reads the last one again, and is not stored
            let mut ar = [a; R];
            for r in 0..R {
                ar[r] = a.add((i + r.min(rows - 1)) * a_rs);
            }
            let bc = [b.add(j * b_cs), b.add((j + cols - 1) * b_cs)];
            for at in (0..k).step_by(l) {
                let bv = [load!(bc[0], at), load!(bc[1], at)];
                for r in 0..R {
                    let x = load!(ar[r], at);
                    acc[r][0] = V::fmadd(x, bv[0], acc[r][0]);
                    acc[r][1] = V::fmadd(x, bv[1], acc[r][1]);
                }
            }
            for r in 0..rows {
                for q in 0..cols {
                    let (dst, v) = (c.add((i + r) * ldc + j + q), V::sum(acc[r][q]));
                    *dst = if accumulate { *dst + v } else { v };
                }
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
    /// C = SiLU(AB + bias), and SiLU' into d1 (laid out like C) unless it is null; a null bias:
    /// the tile's accumulators started from it.
    Silu { bias: *const f32, d1: *mut f32 },
    /// C = AB ⊙ d (d laid out like C).
    Scale { d: *const f32 },
}

impl Store {
    /// The same store for the block of C that starts `offset` values and `col` columns on.
    pub(super) unsafe fn at(self, offset: usize, col: usize) -> Store {
        match self {
            Store::Silu { bias, d1 } => Store::Silu {
                bias: if bias.is_null() { bias } else { bias.add(col) },
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
    (a, a_strides): (&[f32], (usize, usize)),
    rhs: Rhs,
    store: Store,
    wide: bool,
) {
    let (a, c) = (a.as_ptr(), c.as_mut_ptr());
    // (A packed in 6-row tiles measured slower for the AVX2 tiles: its strided copy costs more
    // than the six row streams it replaces; `row_blocks` copies only a column-major A, for the
    // AVX-512 tiles)
    let (b, (b_rs, b_cs)) = match rhs {
        Rhs::Packed(p) => {
            let b = (p.data().as_ptr(), NR, p.k * NR);
            return row_blocks((m, n, k), a, a_strides, b, c, ldc, store, wide);
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
    let panels = n.div_ceil(NR);
    PANEL.with_borrow_mut(|buf| {
        buf.resize(kc.min(k) * NR * panels + 16, 0.0);
        let skip = buf.as_ptr().align_offset(64).min(16);
        for k0 in (0..k).step_by(kc) {
            let kk = kc.min(k - k0);
            let (a, b) = (a.add(k0 * a_strides.1), &b[k0 * b_rs..]);
            let store = if k0 == 0 { store } else { Store::Add };
            // one row tile reads each panel once: packing would cost as much as it saves
            if m <= MR && n.is_multiple_of(NR) && b_cs == 1 {
                let b = (b.as_ptr(), b_rs, NR);
                row_blocks((m, n, kk), a, a_strides, b, c, ldc, store, wide);
                continue;
            }
            let pb = &mut buf[skip..skip + kk * NR * panels];
            for (pi, j) in (0..n).step_by(NR).enumerate() {
                let panel = &mut pb[pi * kk * NR..(pi + 1) * kk * NR];
                pack_panel(panel, b, (b_rs, b_cs), kk, j, NR.min(n - j));
            }
            let b = (pb.as_ptr(), NR, kk * NR);
            row_blocks((m, n, kk), a, a_strides, b, c, ldc, store, wide);
        }
    });
}

/// Rows of A per block with the AVX-512 tiles: each block meets every panel of B while its rows
/// (24 × k floats) stay in L1, and B's panels stream past as single contiguous runs.
const MC: usize = 24;

/// C ← A·B through `store`, B as panels of 16 columns (panel p at b + p·panel_step, its rows
/// `ldb` apart), MC rows of A at a time against all of them (all m rows at once for AVX2).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn row_blocks(
    (m, n, k): (usize, usize, usize),
    a: *const f32,
    (a_rs, a_cs): (usize, usize),
    (b, ldb, panel_step): (*const f32, usize, usize),
    c: *mut f32,
    ldc: usize,
    store: Store,
    wide: bool,
) {
    // the AVX2 tiles ran 1.08× slower in blocks (DPM-Solver++), the AVX-512 tiles 1.05–1.12× faster
    let mc = if wide { MC } else { m };
    // a column-major A (a weight gradient's Gᵀ) with a long column stride puts a block's k lines
    // into a few L1 sets (a 1 KiB stride: 4 of 64), which evict each other before the next panel
    // comes: copy the block to a contiguous [k × mc] first
    let copy_a = wide && a_rs == 1 && a_cs > mc;
    BLOCK_A.with_borrow_mut(|buf| {
        if copy_a {
            buf.resize(k * mc, 0.0);
        }
        for i0 in (0..m).step_by(mc) {
            let (mi, ci) = (mc.min(m - i0), c.add(i0 * ldc));
            let (ai, strides) = if copy_a {
                for (p, row) in buf.chunks_exact_mut(mc).enumerate().take(k) {
                    let src = a.add(i0 + p * a_cs);
                    if mi == MC {
                        // a fixed-size copy: vector moves, not a `memcpy` call per k
                        std::ptr::copy_nonoverlapping(
                            src as *const [f32; MC],
                            row.as_mut_ptr() as *mut [f32; MC],
                            1,
                        );
                    } else {
                        row[..mi].copy_from_slice(std::slice::from_raw_parts(src, mi));
                    }
                }
                (buf.as_ptr(), (1, mc))
            } else {
                (a.add(i0 * a_rs), (a_rs, a_cs))
            };
            // with AVX-512, full panels in pairs: 12 × 32 tiles, then one R × 32 tile for the
            // block's last R < 12 rows; a last odd panel as below
            let (mut pi, full) = (0, mi - mi % avx512::MR);
            while wide && (pi + 2) * NR <= n {
                let (bp, j) = (b.add(pi * panel_step), pi * NR);
                for i in (0..full).step_by(avx512::MR) {
                    let (aij, cij) = (ai.add(i * strides.0), ci.add(i * ldc + j));
                    let st = store.at((i0 + i) * ldc + j, j);
                    avx512::tile_12x32(k, aij, strides, (bp, ldb, panel_step), cij, ldc, st);
                }
                if mi > full {
                    let (ar, cr) = (ai.add(full * strides.0), ci.add(full * ldc + j));
                    let st = store.at((i0 + full) * ldc + j, j);
                    let b = (bp, ldb, panel_step);
                    avx512::rows_x32(mi - full, k, ar, strides, b, cr, ldc, st);
                }
                pi += 2;
            }
            for (pi, j) in (pi..n.div_ceil(NR)).map(|p| (p, p * NR)) {
                let (bp, w, st) = (
                    b.add(pi * panel_step),
                    NR.min(n - j),
                    store.at(i0 * ldc + j, j),
                );
                panel(mi, k, ai, strides, bp, ldb, ci.add(j), ldc, w, st, wide);
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
    wide: bool,
) {
    // A's layout as a type parameter: row-major six-row tiles take the assembly k loop, and
    // the other tiles' broadcasts get a unit stride known at compile time
    match (a_cs, a_rs) {
        (1, _) => rows::<ROW_MAJOR>(m, k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc, wide),
        (_, 1) => rows::<COL_MAJOR>(m, k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc, wide),
        _ => rows::<STRIDED>(m, k, a, (a_rs, a_cs), b, ldb, c, ldc, w, acc, wide),
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
    wide: bool,
) {
    let mut i = 0;
    if wide {
        // 12-row tiles in zmm registers (any layout of A), then the rest as below
        while i + avx512::MR <= m {
            let (ai, ci) = (a.add(i * a_rs), c.add(i * ldc));
            let st = acc.at(i * ldc, 0);
            avx512::tile_12x16(k, ai, (a_rs, a_cs), b, ldb, ci, ldc, w, st);
            i += avx512::MR;
        }
    }
    while i + MR <= m {
        let (ai, ci) = (a.add(i * a_rs), c.add(i * ldc));
        tile::<MR, L>(k, ai, (a_rs, a_cs), b, ldb, ci, ldc, w, acc.at(i * ldc, 0));
        i += MR;
    }
    if i == m {
        // (no pointer past the rows: `add` must stay inside the slices)
        return;
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
    let (a_rs, a_cs) = match L {
        ROW_MAJOR => (a_rs, 1),
        COL_MAJOR => (1, a_cs),
        _ => (a_rs, a_cs),
    };
    // each row's two 8-lane halves
    let mut t = [[_mm256_setzero_ps(); 2]; R];
    if R == MR && L == ROW_MAJOR {
        let t6 = kernel_6x16(k, a, a_rs, b, ldb);
        t.copy_from_slice(&t6[..R]);
        return store_tile(t, c, ldc, w, acc);
    }
    let row: [*const f32; R] = std::array::from_fn(|r| a.add(r * a_rs));
    // one k-step as a macro: a closure would not inherit the AVX2 target features
    macro_rules! step {
        ($p:expr) => {{
            let bp = b.add($p * ldb);
            let (b0, b1) = (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)));
            for r in 0..R {
                let x = _mm256_broadcast_ss(&*row[r].add($p * a_cs));
                t[r][0] = _mm256_fmadd_ps(x, b0, t[r][0]);
                t[r][1] = _mm256_fmadd_ps(x, b1, t[r][1]);
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
    store_tile(t, c, ldc, w, acc)
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
) -> [[__m256; 2]; 6] {
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
    [[c0, c1], [c2, c3], [c4, c5], [c6, c7], [c8, c9], [c10, c11]]
}

/// A finished R × 16 tile of C, each row P vectors of V (P·V::LANES = 16), into C through `acc`
/// (only the first w columns): the AVX2 tiles' and the AVX-512 tiles' one store.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(super) unsafe fn store_tile<V: Lanes, const R: usize, const P: usize>(
    t: [[V; P]; R],
    c: *mut f32,
    ldc: usize,
    w: usize,
    acc: Store,
) {
    let l = V::LANES;
    if let (NR, Store::Silu { bias, d1 }) = (w, acc) {
        // a column of R vectors at once: one row's chains would leave the FMA pipes waiting on
        // their latency
        for p in 0..P {
            let mut z = [t[0][p]; R];
            for r in 0..R {
                z[r] = t[r][p];
            }
            if !bias.is_null() {
                let b = V::load(bias.add(p * l));
                for z in &mut z {
                    *z = V::add(*z, b);
                }
            }
            let (h, s) = silu_xn::<V, R>(z);
            for r in 0..R {
                V::store(c.add(r * ldc + p * l), h[r]);
                if !d1.is_null() {
                    V::store(d1.add(r * ldc + p * l), silu_derivative(h[r], s[r]));
                }
            }
        }
        return;
    }
    for r in 0..R {
        let cp = c.add(r * ldc);
        if w == NR {
            for p in 0..P {
                let (q, mut v) = (cp.add(p * l), t[r][p]);
                match acc {
                    Store::Write => {}
                    Store::Add => v = V::add(v, V::load(q)),
                    Store::Silu { .. } => unreachable!("handled above"),
                    Store::Scale { d } => v = V::mul(v, V::load(d.add(r * ldc + p * l))),
                }
                V::store(q, v);
            }
        } else {
            // partial panels only come from plain products (`gemm_fused` needs n % 16 = 0)
            let mut row = [0.0f32; NR];
            for p in 0..P {
                V::store(row.as_mut_ptr().add(p * l), t[r][p]);
            }
            let add = matches!(acc, Store::Add);
            for (q, v) in row.iter().enumerate().take(w) {
                let dst = cp.add(q);
                *dst = if add { *dst + v } else { *v };
            }
        }
    }
}
