//! The AVX-512 tiles. The main one, 12 rows × 32 columns of C (two adjacent 16-column panels of
//! B) in 24 zmm accumulators, broadcasts each of A's values once for two FMAs. A block's last
//! rows take an R × 32 tile, a last odd panel the 12 × 16 tile (one B load and twelve FMAs with
//! A broadcast from memory, `{1to16}`, per k-step). On a CPU with two 512-bit FMA pipes they
//! double the FLOP rate of the 6 × 16 ymm tile; the epilogue (bias + SiLU or scaling) runs on the
//! same 16-lane vectors.

use std::arch::x86_64::*;

use super::avx2::{store_tile, Store};
use super::NR;

/// Rows per tile.
pub const MR: usize = 12;

/// One k-step: B's row at {b}, A's column at {a}, {a3}, {a6}, {a9} (+ 0, rs, 2·rs each).
macro_rules! z_step {
    ($bz:literal) => {
        concat!(
            "vmovups {",
            $bz,
            "}, zmmword ptr [{b}]\n",
            "vfmadd231ps {c0}, {",
            $bz,
            "}, dword ptr [{a}]{{1to16}}\n",
            "vfmadd231ps {c1}, {",
            $bz,
            "}, dword ptr [{a} + {rs}]{{1to16}}\n",
            "vfmadd231ps {c2}, {",
            $bz,
            "}, dword ptr [{a} + 2*{rs}]{{1to16}}\n",
            "vfmadd231ps {c3}, {",
            $bz,
            "}, dword ptr [{a3}]{{1to16}}\n",
            "vfmadd231ps {c4}, {",
            $bz,
            "}, dword ptr [{a3} + {rs}]{{1to16}}\n",
            "vfmadd231ps {c5}, {",
            $bz,
            "}, dword ptr [{a3} + 2*{rs}]{{1to16}}\n",
            "vfmadd231ps {c6}, {",
            $bz,
            "}, dword ptr [{a6}]{{1to16}}\n",
            "vfmadd231ps {c7}, {",
            $bz,
            "}, dword ptr [{a6} + {rs}]{{1to16}}\n",
            "vfmadd231ps {c8}, {",
            $bz,
            "}, dword ptr [{a6} + 2*{rs}]{{1to16}}\n",
            "vfmadd231ps {c9}, {",
            $bz,
            "}, dword ptr [{a9}]{{1to16}}\n",
            "vfmadd231ps {c10}, {",
            $bz,
            "}, dword ptr [{a9} + {rs}]{{1to16}}\n",
            "vfmadd231ps {c11}, {",
            $bz,
            "}, dword ptr [{a9} + 2*{rs}]{{1to16}}\n",
            "add {a}, {cs}\n",
            "add {a3}, {cs}\n",
            "add {a6}, {cs}\n",
            "add {a9}, {cs}\n",
            "add {b}, {ldb}\n",
        )
    };
}

/// C[0..12, 0..w] ← A·B-panel through `acc`: A[r, p] at a + r·a_rs + p·a_cs (both strides in
/// the address arithmetic, so row- and column-major A take the same loop), B's rows `ldb` apart.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub unsafe fn tile_12x16(
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
    let z = _mm512_setzero_ps();
    let (mut c0, mut c1, mut c2, mut c3, mut c4, mut c5) = (z, z, z, z, z, z);
    let (mut c6, mut c7, mut c8, mut c9, mut c10, mut c11) = (z, z, z, z, z, z);
    // two k-steps per iteration (one branch), an odd k's last step after the loop
    std::arch::asm!(
        "lea {a3}, [{a} + 2*{rs}]",
        "add {a3}, {rs}",
        "lea {a6}, [{a3} + 2*{rs}]",
        "add {a6}, {rs}",
        "lea {a9}, [{a6} + 2*{rs}]",
        "add {a9}, {rs}",
        "mov {h}, {k}",
        "shr {h}, 1",
        "jz 4f",
        ".p2align 5",
        "2:",
        z_step!("b0"),
        z_step!("b1"),
        "dec {h}",
        "jnz 2b",
        "4:",
        "test {k}, 1",
        "jz 3f",
        z_step!("b0"),
        "3:",
        a = inout(reg) a => _,
        a3 = out(reg) _,
        a6 = out(reg) _,
        a9 = out(reg) _,
        rs = in(reg) a_rs * 4,
        cs = in(reg) a_cs * 4,
        b = inout(reg) b => _,
        ldb = in(reg) ldb * 4,
        k = in(reg) k,
        h = out(reg) _,
        b0 = out(zmm_reg) _,
        b1 = out(zmm_reg) _,
        c0 = inout(zmm_reg) c0,
        c1 = inout(zmm_reg) c1,
        c2 = inout(zmm_reg) c2,
        c3 = inout(zmm_reg) c3,
        c4 = inout(zmm_reg) c4,
        c5 = inout(zmm_reg) c5,
        c6 = inout(zmm_reg) c6,
        c7 = inout(zmm_reg) c7,
        c8 = inout(zmm_reg) c8,
        c9 = inout(zmm_reg) c9,
        c10 = inout(zmm_reg) c10,
        c11 = inout(zmm_reg) c11,
        options(nostack, readonly),
    );
    let tile = [
        [c0],
        [c1],
        [c2],
        [c3],
        [c4],
        [c5],
        [c6],
        [c7],
        [c8],
        [c9],
        [c10],
        [c11],
    ];
    store_tile::<__m512, MR, 1>(tile, c, ldc, w, acc)
}

/// One k-step of `tile_12x32`: B's rows at {b} and {b} + {ps} (two adjacent panels), A's column
/// at {a}, {a3}, {a6}, {a9} (+ 0, rs, 2·rs each), each value broadcast once for both halves.
macro_rules! w_step {
    ($r:literal, $x:literal, $c0:literal, $c1:literal) => {
        concat!(
            "vbroadcastss {",
            $x,
            "}, dword ptr [",
            $r,
            "]\n",
            "vfmadd231ps {",
            $c0,
            "}, {b0}, {",
            $x,
            "}\n",
            "vfmadd231ps {",
            $c1,
            "}, {b1}, {",
            $x,
            "}\n",
        )
    };
}

macro_rules! wide_step {
    () => {
        concat!(
            "vmovups {b0}, zmmword ptr [{b}]\n",
            "vmovups {b1}, zmmword ptr [{b} + {ps}]\n",
            w_step!("{a}", "x", "c0", "d0"),
            w_step!("{a} + {rs}", "y", "c1", "d1"),
            w_step!("{a} + 2*{rs}", "x", "c2", "d2"),
            w_step!("{a3}", "y", "c3", "d3"),
            w_step!("{a3} + {rs}", "x", "c4", "d4"),
            w_step!("{a3} + 2*{rs}", "y", "c5", "d5"),
            w_step!("{a6}", "x", "c6", "d6"),
            w_step!("{a6} + {rs}", "y", "c7", "d7"),
            w_step!("{a6} + 2*{rs}", "x", "c8", "d8"),
            w_step!("{a9}", "y", "c9", "d9"),
            w_step!("{a9} + {rs}", "x", "c10", "d10"),
            w_step!("{a9} + 2*{rs}", "y", "c11", "d11"),
            "add {a}, {cs}\n",
            "add {a3}, {cs}\n",
            "add {a6}, {cs}\n",
            "add {a9}, {cs}\n",
            "add {b}, {ldb}\n",
        )
    };
}

/// The start of a 32-column tile's two columns of accumulators, and the store that finishes
/// them: a SiLU epilogue's bias (one add fewer per vector; the store then gets a null bias,
/// "already added"), zero otherwise. Every 32-column tile starts so, so a row's result does not
/// depend on which tile its position in the block gives it.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn start(acc: Store) -> (__m512, __m512, Store) {
    match acc {
        Store::Silu { bias, d1 } if !bias.is_null() => {
            let (l, r) = (_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(NR)));
            (
                l,
                r,
                Store::Silu {
                    bias: std::ptr::null(),
                    d1,
                },
            )
        }
        _ => (_mm512_setzero_ps(), _mm512_setzero_ps(), acc),
    }
}

/// C[0..12, 0..32] ← A·B for two adjacent full panels of B (the second `panel_step` floats after
/// the first), 24 accumulators: each broadcast of A feeds two FMAs, so a k-step issues 14 loads
/// for 24 FMAs where two 12 × 16 tiles issue 26.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub unsafe fn tile_12x32(
    k: usize,
    a: *const f32,
    (a_rs, a_cs): (usize, usize),
    (b, ldb, panel_step): (*const f32, usize, usize),
    c: *mut f32,
    ldc: usize,
    acc: Store,
) {
    let (zl, zr, acc) = start(acc);
    let [mut c0, mut c1, mut c2, mut c3, mut c4, mut c5] = [zl; 6];
    let [mut c6, mut c7, mut c8, mut c9, mut c10, mut c11] = [zl; 6];
    let [mut d0, mut d1, mut d2, mut d3, mut d4, mut d5] = [zr; 6];
    let [mut d6, mut d7, mut d8, mut d9, mut d10, mut d11] = [zr; 6];
    std::arch::asm!(
        "lea {a3}, [{a} + 2*{rs}]",
        "add {a3}, {rs}",
        "lea {a6}, [{a3} + 2*{rs}]",
        "add {a6}, {rs}",
        "lea {a9}, [{a6} + 2*{rs}]",
        "add {a9}, {rs}",
        "shr {h}, 1",
        "jz 4f",
        ".p2align 5",
        "2:",
        wide_step!(),
        wide_step!(),
        "dec {h}",
        "jnz 2b",
        "4:",
        "test {k1}, 1",
        "jz 3f",
        wide_step!(),
        "3:",
        a = inout(reg) a => _,
        a3 = out(reg) _,
        a6 = out(reg) _,
        a9 = out(reg) _,
        rs = in(reg) a_rs * 4,
        cs = in(reg) a_cs * 4,
        b = inout(reg) b => _,
        ps = in(reg) panel_step * 4,
        ldb = in(reg) ldb * 4,
        k1 = in(reg) k,
        h = inout(reg) k => _,
        b0 = out(zmm_reg) _,
        b1 = out(zmm_reg) _,
        x = out(zmm_reg) _,
        y = out(zmm_reg) _,
        c0 = inout(zmm_reg) c0,
        c1 = inout(zmm_reg) c1,
        c2 = inout(zmm_reg) c2,
        c3 = inout(zmm_reg) c3,
        c4 = inout(zmm_reg) c4,
        c5 = inout(zmm_reg) c5,
        c6 = inout(zmm_reg) c6,
        c7 = inout(zmm_reg) c7,
        c8 = inout(zmm_reg) c8,
        c9 = inout(zmm_reg) c9,
        c10 = inout(zmm_reg) c10,
        c11 = inout(zmm_reg) c11,
        d0 = inout(zmm_reg) d0,
        d1 = inout(zmm_reg) d1,
        d2 = inout(zmm_reg) d2,
        d3 = inout(zmm_reg) d3,
        d4 = inout(zmm_reg) d4,
        d5 = inout(zmm_reg) d5,
        d6 = inout(zmm_reg) d6,
        d7 = inout(zmm_reg) d7,
        d8 = inout(zmm_reg) d8,
        d9 = inout(zmm_reg) d9,
        d10 = inout(zmm_reg) d10,
        d11 = inout(zmm_reg) d11,
        options(nostack, readonly),
    );
    let left = [
        [c0],
        [c1],
        [c2],
        [c3],
        [c4],
        [c5],
        [c6],
        [c7],
        [c8],
        [c9],
        [c10],
        [c11],
    ];
    let right = [
        [d0],
        [d1],
        [d2],
        [d3],
        [d4],
        [d5],
        [d6],
        [d7],
        [d8],
        [d9],
        [d10],
        [d11],
    ];
    store_tile::<__m512, MR, 1>(left, c, ldc, NR, acc);
    store_tile::<__m512, MR, 1>(right, c.add(NR), ldc, NR, acc.at(NR, NR));
}

/// C[0..R, 0..32] ← A·B for two adjacent full panels, R < 12 rows (a block's rows left after its
/// 12-row tiles) in 2R zmm accumulators: at R ≥ 4 that is enough independent FMA chains to
/// cover the FMA latency, where the 8-lane tiles ran these rows at half the rate.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn tile_rx32<const R: usize>(
    k: usize,
    a: *const f32,
    (a_rs, a_cs): (usize, usize),
    (b, ldb, panel_step): (*const f32, usize, usize),
    c: *mut f32,
    ldc: usize,
    acc: Store,
) {
    let (zl, zr, acc) = start(acc);
    let mut t = [[zl, zr]; R];
    for p in 0..k {
        let bp = b.add(p * ldb);
        let (b0, b1) = (_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(panel_step)));
        let ap = a.add(p * a_cs);
        for r in 0..R {
            let x = _mm512_set1_ps(*ap.add(r * a_rs));
            t[r][0] = _mm512_fmadd_ps(x, b0, t[r][0]);
            t[r][1] = _mm512_fmadd_ps(x, b1, t[r][1]);
        }
    }
    let (mut left, mut right) = ([[t[0][0]]; R], [[t[0][1]]; R]);
    for r in 0..R {
        (left[r], right[r]) = ([t[r][0]], [t[r][1]]);
    }
    store_tile::<__m512, R, 1>(left, c, ldc, NR, acc);
    store_tile::<__m512, R, 1>(right, c.add(NR), ldc, NR, acc.at(NR, NR));
}

/// `tile_rx32` for the `rows` (< 12) rows of A at `a`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn rows_x32(
    rows: usize,
    k: usize,
    a: *const f32,
    a_strides: (usize, usize),
    b: (*const f32, usize, usize),
    c: *mut f32,
    ldc: usize,
    acc: Store,
) {
    let tile = match rows {
        0 => return,
        1 => tile_rx32::<1>,
        2 => tile_rx32::<2>,
        3 => tile_rx32::<3>,
        4 => tile_rx32::<4>,
        5 => tile_rx32::<5>,
        6 => tile_rx32::<6>,
        7 => tile_rx32::<7>,
        8 => tile_rx32::<8>,
        9 => tile_rx32::<9>,
        10 => tile_rx32::<10>,
        11 => tile_rx32::<11>,
        _ => unreachable!("a 12-row tile's rows go to tile_12x32"),
    };
    tile(k, a, a_strides, b, c, ldc, acc)
}

/// `avx2::narrow_on` in zmm registers.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub unsafe fn narrow(
    dims: (usize, usize, usize),
    c: &mut [f32],
    ldc: usize,
    a: (&[f32], usize),
    b: (&[f32], usize),
    accumulate: bool,
) {
    super::avx2::narrow_on::<__m512>(dims, c, ldc, a, b, accumulate)
}
