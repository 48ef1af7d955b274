//! The machine's f32 FMA peak, the yardstick of the fused kernels' share of peak (`tweedie bench peak`).

#[cfg(target_arch = "x86_64")]
use crate::nn::simd::Lanes;
use std::time::Instant;

/// Measured f32 FMA throughput of `threads` threads, GFLOP/s.
pub fn peak_gflops(threads: usize) -> f64 {
    const ITERS: u64 = 200_000_000;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| std::hint::black_box(fma_chains(ITERS)));
        }
    });
    let lanes = widest_fma().1;
    (threads as u64 * ITERS * 12 * 2 * lanes) as f64 / t0.elapsed().as_secs_f64() / 1e9
}

/// The widest f32 FMA this CPU has: (its instruction set's name, lanes per vector).
pub fn widest_fma() -> (&'static str, u64) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return ("avx512", 16);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return ("avx2", 8);
        }
    }
    ("scalar", 8)
}

/// 12 independent FMA chains (enough to cover the FMA latency on two pipes) of `widest_fma`'s
/// vectors; returns their sum to keep them live.
fn fma_chains(iters: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match widest_fma().0 {
        // SAFETY (both): `widest_fma` checked that the CPU has the features.
        "avx512" => return unsafe { fma_chains_avx512(iters) },
        "avx2" => return unsafe { fma_chains_avx2(iters) },
        _ => {}
    }
    let mut acc = [1.0f32; 96];
    for _ in 0..iters {
        acc.iter_mut().for_each(|a| *a = *a * 0.999_999 + 1e-7);
    }
    acc.iter().sum()
}

/// `fma_chains` on vectors V.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn fma_chains_of<V: Lanes>(iters: u64) -> f32 {
    let (b, c) = (V::splat(0.999_999), V::splat(1e-7));
    // twelve named accumulators (an array was not kept in registers)
    let [mut a0, mut a1, mut a2, mut a3, mut a4, mut a5] = [V::splat(1.0); 6];
    let [mut a6, mut a7, mut a8, mut a9, mut a10, mut a11] = [V::splat(2.0); 6];
    for _ in 0..iters {
        a0 = V::fmadd(a0, b, c);
        a1 = V::fmadd(a1, b, c);
        a2 = V::fmadd(a2, b, c);
        a3 = V::fmadd(a3, b, c);
        a4 = V::fmadd(a4, b, c);
        a5 = V::fmadd(a5, b, c);
        a6 = V::fmadd(a6, b, c);
        a7 = V::fmadd(a7, b, c);
        a8 = V::fmadd(a8, b, c);
        a9 = V::fmadd(a9, b, c);
        a10 = V::fmadd(a10, b, c);
        a11 = V::fmadd(a11, b, c);
    }
    let mut sum = V::splat(0.0);
    for a in [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11] {
        sum = V::add(sum, a);
    }
    let mut out = [0.0f32; 16];
    V::store(out.as_mut_ptr(), sum);
    out.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(iters: u64) -> f32 {
    fma_chains_of::<std::arch::x86_64::__m512>(iters)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(iters: u64) -> f32 {
    fma_chains_of::<std::arch::x86_64::__m256>(iters)
}
