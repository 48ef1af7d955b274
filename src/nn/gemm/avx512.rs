//! The AVX-512 tile: 12 rows × 16 columns of C in 12 zmm accumulators, one B load and twelve
//! FMAs with A's values broadcast from memory (`{1to16}`) per k-step. On a CPU with two 512-bit
//! FMA pipes this doubles the FLOP rate of the 6 × 16 ymm tile; the epilogue (bias + SiLU or
//! scaling) runs on the same 16-lane vectors.

use std::arch::x86_64::*;

use super::avx2::{store_tile, Store};

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
#[target_feature(enable = "avx512f,avx2,fma")]
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
