//! Element-wise CPU kernels of the fused MLP: the epilogues (bias + activation and its
//! derivatives) that run over each GEMM output block while it is still in cache. Element loops are compiled twice, plain and with AVX2+FMA, and the
//! faster one is picked at run time.

use super::Activation;

/// e^x in f32 (Cephes' expf: range reduction by ln 2, degree-6 polynomial, relative error
/// ~1e-7), written with arithmetic only so that loops over it vectorise.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // SAFETY: n is an integer in [−126, 127] after the clamp, so the conversion is exact (and,
    // unlike `as`, vectorises).
    let n: i32 = unsafe { n.to_int_unchecked() };
    y * f32::from_bits(((n + 127) << 23) as u32)
}

/// The logistic function σ(z) = 1/(1 + e^{−z}).
#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z))
}

/// SiLU z σ(z) with its derivatives σ(1 + z(1 − σ)) and σ(1 − σ)(2 + z(1 − 2σ)).
#[inline(always)]
fn silu(z: f32) -> (f32, f32, f32) {
    let s = sigmoid(z);
    let ds = s * (1.0 - s);
    (z * s, s + z * ds, ds * (2.0 + z * (1.0 - 2.0 * s)))
}

/// softplus max(z, 0) + log(1 + e^{−|z|}) with its derivatives σ(z) and σ(1 − σ).
#[inline(always)]
fn softplus(z: f32) -> (f32, f32, f32) {
    let s = sigmoid(z);
    (z.max(0.0) + (-z.abs()).exp().ln_1p(), s, s * (1.0 - s))
}

/// tanh z = 1 − 2/(e^{2z} + 1) with its derivatives 1 − tanh² and −2 tanh (1 − tanh²).
#[inline(always)]
fn tanh(z: f32) -> (f32, f32, f32) {
    let h = 1.0 - 2.0 / (exp(2.0 * z) + 1.0);
    let dh = 1.0 - h * h;
    (h, dh, -2.0 * h * dh)
}

/// a(z), a'(z), a''(z) for one pre-activation.
#[cfg(test)]
fn activation(act: Activation, z: f32) -> (f32, f32, f32) {
    match act {
        Activation::Silu => silu(z),
        Activation::Softplus => softplus(z),
        Activation::Tanh => tanh(z),
    }
}

/// What an epilogue keeps besides a(z): nothing, a'(z), or a'(z) and a''(z).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Keep {
    Value,
    First,
    Second,
}

/// The epilogue for one activation `f` (monomorphic, so the loops vectorise).
#[inline(always)]
fn epilogue(
    z: &mut [f32],
    bias: &[f32],
    keep: Keep,
    d1: &mut [f32],
    d2: &mut [f32],
    f: impl Fn(f32) -> (f32, f32, f32),
) {
    let w = bias.len();
    match keep {
        Keep::Value => {
            for row in z.chunks_exact_mut(w) {
                for (z, b) in row.iter_mut().zip(bias) {
                    *z = f(*z + b).0;
                }
            }
        }
        Keep::First => {
            for (row, r1) in z.chunks_exact_mut(w).zip(d1.chunks_exact_mut(w)) {
                for ((z, b), g1) in row.iter_mut().zip(bias).zip(r1) {
                    let (h, dh, _) = f(*z + b);
                    (*z, *g1) = (h, dh);
                }
            }
        }
        Keep::Second => {
            for ((row, r1), r2) in z
                .chunks_exact_mut(w)
                .zip(d1.chunks_exact_mut(w))
                .zip(d2.chunks_exact_mut(w))
            {
                for (((z, b), g1), g2) in row.iter_mut().zip(bias).zip(r1).zip(r2) {
                    (*z, *g1, *g2) = f(*z + b);
                }
            }
        }
    }
}

/// Whether this CPU has AVX2 and FMA (checked once).
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU has AVX-512F and DQ beside AVX2 and FMA (checked once), and
/// `TWEEDIE_NO_AVX512` is unset: the GEMM then runs its tiles in zmm registers (12 × 32 for the
/// most part).
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            has_avx2()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512dq")
                && std::env::var_os("TWEEDIE_NO_AVX512").is_none()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Defines a function whose body is compiled twice, plain and with AVX2+FMA, and runs the AVX2
/// copy when the CPU has it (the element loops then vectorise eight lanes wide).
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        pub fn $name($($a: $t),*) {
            #[inline(always)]
            fn go($($a: $t),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($a: $t),*) {
                go($($a),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::nn::kernels::has_avx2() {
                // SAFETY: the CPU supports the enabled features.
                return unsafe { avx2($($a),*) };
            }
            go($($a),*)
        }
    };
}
pub(crate) use multiversion;

/// The epilogue of a linear layer over a row-major block z [rows × w]: z ← a(z + b) (or z + b when
/// `act` is None), and a'(z + b), a''(z + b) into `d1`, `d2` as `keep` asks.
pub fn bias_act(
    z: &mut [f32],
    bias: &[f32],
    act: Option<Activation>,
    keep: Keep,
    d1: &mut [f32],
    d2: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if act == Some(Activation::Silu) && bias.len().is_multiple_of(8) && has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA; rows are whole multiples of 8 lanes.
        return unsafe { silu_avx2::bias_silu(z, bias, keep, d1, d2) };
    }
    bias_act_auto(z, bias, act, keep, d1, d2)
}

/// SiLU's epilogue as a pass of its own over AVX2 vectors (`simd::silu_xn`).
#[cfg(target_arch = "x86_64")]
pub(crate) mod silu_avx2 {
    use super::Keep;
    use crate::nn::simd::{silu_derivative, silu_xn};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn bias_silu(
        z: &mut [f32],
        bias: &[f32],
        keep: Keep,
        d1: &mut [f32],
        d2: &mut [f32],
    ) {
        assert!(keep < Keep::First || d1.len() >= z.len());
        assert!(keep < Keep::Second || d2.len() >= z.len());
        // z as a run of 8-lane vectors (w is a multiple of 8), four at a time for `silu_xn`'s
        // interleaving; j walks the bias alongside
        let (len, mut i, mut j) = (z.len(), 0, 0);
        while i < len {
            if i + 32 <= len {
                bias_silu_group::<4>(z, bias, keep, d1, d2, i, &mut j);
                i += 32;
            } else {
                bias_silu_group::<1>(z, bias, keep, d1, d2, i, &mut j);
                i += 8;
            }
        }
    }

    /// `bias_silu` on the N vectors of z from offset i, the first with bias offset j (advanced).
    #[inline(always)]
    unsafe fn bias_silu_group<const N: usize>(
        z: &mut [f32],
        bias: &[f32],
        keep: Keep,
        d1: &mut [f32],
        d2: &mut [f32],
        i: usize,
        j: &mut usize,
    ) {
        let mut x = [_mm256_setzero_ps(); N];
        for (k, x) in x.iter_mut().enumerate() {
            let b = _mm256_loadu_ps(bias.as_ptr().add(*j));
            *j = if *j + 8 == bias.len() { 0 } else { *j + 8 };
            *x = _mm256_add_ps(_mm256_loadu_ps(z.as_ptr().add(i + 8 * k)), b);
        }
        let (h, s) = silu_xn(x);
        let (one, two) = (_mm256_set1_ps(1.0), _mm256_set1_ps(2.0));
        for k in 0..N {
            let at = i + 8 * k;
            _mm256_storeu_ps(z.as_mut_ptr().add(at), h[k]);
            if keep >= Keep::First {
                _mm256_storeu_ps(d1.as_mut_ptr().add(at), silu_derivative(h[k], s[k]));
                if keep == Keep::Second {
                    // σ(1 − σ)(2 + z(1 − 2σ))
                    let ds = _mm256_mul_ps(s[k], _mm256_sub_ps(one, s[k]));
                    let t = _mm256_fmadd_ps(x[k], _mm256_fnmadd_ps(two, s[k], one), two);
                    _mm256_storeu_ps(d2.as_mut_ptr().add(at), _mm256_mul_ps(ds, t));
                }
            }
        }
    }
}

multiversion! {
    /// `bias_act` compiled by the auto-vectoriser (every activation).
    pub fn bias_act_auto(
        z: &mut [f32],
        bias: &[f32],
        act: Option<Activation>,
        keep: Keep,
        d1: &mut [f32],
        d2: &mut [f32],
    ) {
    let w = bias.len();
    match act {
        None => {
            for row in z.chunks_exact_mut(w) {
                row.iter_mut().zip(bias).for_each(|(z, b)| *z += b);
            }
        }
        Some(Activation::Silu) => epilogue(z, bias, keep, d1, d2, silu),
        Some(Activation::Softplus) => epilogue(z, bias, keep, d1, d2, softplus),
        Some(Activation::Tanh) => epilogue(z, bias, keep, d1, d2, tanh),
    }
    }
}

multiversion! {
    /// y ⊙= d row-wise, where y holds m stacked blocks [m × rows × w] and d is one block
    /// [rows × w] (a tangent or cotangent through an activation: ż ↦ a'(z) ż).
    pub fn scale_blocks(y: &mut [f32], d: &[f32]) {
        for block in y.chunks_exact_mut(d.len()) {
            block.iter_mut().zip(d).for_each(|(y, d)| *y *= d);
        }
    }
}

multiversion! {
    /// acc\[j\] += Σ_i g[i, j] over the rows of g [rows × acc.len()] (bias gradients).
    pub fn add_column_sums(acc: &mut [f32], g: &[f32]) {
        for row in g.chunks_exact(acc.len()) {
            acc.iter_mut().zip(row).for_each(|(a, g)| *a += g);
        }
    }
}

multiversion! {
    /// Cotangents down through an activation with tangents alongside (gh = G W, gth = Ġ W):
    /// gh ← a' ⊙ gh + a'' ⊙ Σ_k ż_k ⊙ gth_k and gth_k ← a' ⊙ gth_k, for m stacked blocks gth, ż.
    pub fn jvp_cotangents(gh: &mut [f32], gth: &mut [f32], zdot: &[f32], d1: &[f32], d2: &[f32]) {
        gh.iter_mut().zip(d1).for_each(|(g, a)| *g *= a);
        let len = gh.len();
        for (gk, zk) in gth.chunks_exact_mut(len).zip(zdot.chunks_exact(len)) {
            for ((((g, gt), z), a1), a2) in gh.iter_mut().zip(gk.iter_mut()).zip(zk).zip(d1).zip(d2) {
                *g += a2 * z * *gt;
                *gt *= a1;
            }
        }
    }
}

/// (sin x, cos x) in f32 by Cody–Waite reduction to r ∈ [−π/4, π/4] (three-part π/2, accurate
/// for |x| < 10⁴) and Cephes' minimax polynomials; absolute error ~1e-7, and it vectorises.
#[inline(always)]
fn sin_cos(x: f32) -> (f32, f32) {
    let k = (x * std::f32::consts::FRAC_2_PI + 0.5).floor();
    let r = ((x - k * 1.570_312_5) - k * 4.837_513e-4) - k * 7.549_789_4e-8;
    let r2 = r * r;
    let s = r + r * r2 * (-1.666_665_5e-1 + r2 * (8.332_161e-3 + r2 * -1.951_529_6e-4));
    let c =
        1.0 - 0.5 * r2 + r2 * r2 * (4.166_664_6e-2 + r2 * (-1.388_731_6e-3 + r2 * 2.443_315_7e-5));
    // SAFETY: |k| < 2^24 for the documented range, so the conversion is exact.
    let q: i32 = unsafe { k.to_int_unchecked::<i32>() } & 3;
    let (sin, cos) = if q & 1 == 0 { (s, c) } else { (c, s) };
    let sin = if q & 2 == 0 { sin } else { -sin };
    let cos = if (q + 1) & 2 == 0 { cos } else { -cos };
    (sin, cos)
}

multiversion! {
    /// One row's Fourier / sinusoidal features: sin and cos of (t·w_k)·scale for every k.
    pub fn embed_row(t: f32, w: &[f32], scale: f32, sin: &mut [f32], cos: &mut [f32]) {
        for ((w, s), c) in w.iter().zip(sin.iter_mut()).zip(cos.iter_mut()) {
            (*s, *c) = sin_cos((t * w) * scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        for i in -800..=800 {
            let x = i as f32 * 0.1;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            assert!(
                (got - want).abs() <= 3e-7 * want,
                "exp({x}): {got} vs {want}"
            );
        }
    }

    /// The dispatched epilogue (AVX2 intrinsics for SiLU where available) equals the scalar
    /// activation and its derivatives.
    #[test]
    fn epilogues_match_the_scalar_activations() {
        let (rows, w) = (5, 24);
        let bias: Vec<f32> = (0..w).map(|j| 0.1 * j as f32 - 1.0).collect();
        let z0: Vec<f32> = (0..rows * w)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.2)
            .collect();
        for act in [Activation::Silu, Activation::Softplus, Activation::Tanh] {
            let mut z = z0.clone();
            let (mut d1, mut d2) = (vec![0.0; rows * w], vec![0.0; rows * w]);
            bias_act(&mut z, &bias, Some(act), Keep::Second, &mut d1, &mut d2);
            for i in 0..rows * w {
                let (h, g1, g2) = activation(act, z0[i] + bias[i % w]);
                for (got, want) in [(z[i], h), (d1[i], g1), (d2[i], g2)] {
                    assert!(
                        (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                        "{act:?}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn fast_sin_cos_is_accurate() {
        for i in -40_000..=40_000 {
            let x = i as f32 * 0.025;
            let (s, c) = sin_cos(x);
            let (ws, wc) = (x as f64).sin_cos();
            assert!(
                (s as f64 - ws).abs() < 5e-7 && (c as f64 - wc).abs() < 5e-7,
                "sin_cos({x})"
            );
        }
    }

    #[test]
    fn activation_derivatives_match_finite_differences() {
        for act in [Activation::Silu, Activation::Softplus, Activation::Tanh] {
            for z in [-6.0f32, -1.3, -0.2, 0.0, 0.4, 2.2, 7.0] {
                let h = 1e-2f32;
                let (_, d1, d2) = activation(act, z);
                let fd1 = (activation(act, z + h).0 - activation(act, z - h).0) / (2.0 * h);
                let fd2 = (activation(act, z + h).1 - activation(act, z - h).1) / (2.0 * h);
                assert!((d1 - fd1).abs() < 1e-3, "{act:?} a'({z}): {d1} vs {fd1}");
                assert!((d2 - fd2).abs() < 1e-3, "{act:?} a''({z}): {d2} vs {fd2}");
            }
        }
    }
}
