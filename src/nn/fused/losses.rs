//! The training losses on raw outputs, block by block, as the fused kernels' reverse pass
//! needs them: each returns its block's share of the loss and writes ∂L/∂out (and ∂L/∂tan).
//! Their candle twins, which define them, are `Regression::loss` and `Stein::loss`.

use crate::objective::stein::SteinKind;
use std::ops::Range;

/// mean_n w_n ½‖out_n − out*_n‖² (`Regression::loss`) on rows `rows` of n, with targets
/// [n × o] and weights \[n\]; out and g are the block's [rows × o].
pub fn regression(
    target: &[f32],
    weight: &[f32],
    rows: Range<usize>,
    out: &[f32],
    g: &mut [f32],
) -> f64 {
    let n = weight.len();
    let o = target.len() / n.max(1);
    let mut total = 0.0f64;
    for (i, r) in rows.enumerate() {
        let w = weight[r] / n as f32;
        for j in 0..o {
            let e = out[i * o + j] - target[r * o + j];
            total += (0.5 * w * e * e) as f64;
            g[i * o + j] = w * e;
        }
    }
    total
}

/// A Stein loss (`objective::stein`) on the raw outputs of rows `rows` of n: with
/// s = A·out + B·x (per-row `coef` (A, B)) and J_s v = A·tan + B·v, returns the block's share
/// and writes ∂L/∂out into g [rows × d] and ∂L/∂tan into gt [m × rows × d]. x [n × d] and
/// v [m × n × d] are the whole problem's values; out and tan the block's.
#[allow(clippy::too_many_arguments)]
pub fn stein(
    kind: SteinKind,
    coef: &[(f32, f32)],
    x: &[f32],
    v: &[f32],
    rows: Range<usize>,
    out: &[f32],
    tan: &[f32],
    g: &mut [f32],
    gt: &mut [f32],
) -> f64 {
    let (n, len) = (coef.len(), rows.len());
    let d = x.len() / n.max(1);
    let m = v.len() / (n * d).max(1);
    // weight of each quadratic form: ISM sums them per row, SSM averages over projections
    let wq = match kind {
        SteinKind::Ism => 1.0 / n as f32,
        SteinKind::Ssm { .. } => 1.0 / (m * n) as f32,
    };
    let mut total = 0.0f64;
    let mut s = vec![0.0f32; d];
    for (i, r) in rows.enumerate() {
        let (a, b) = coef[r];
        for j in 0..d {
            s[j] = a * out[i * d + j] + b * x[r * d + j];
        }
        let gi = &mut g[i * d..(i + 1) * d];
        if !matches!(
            kind,
            SteinKind::Ssm {
                variance_reduced: false
            }
        ) {
            let s2: f32 = s.iter().map(|e| e * e).sum();
            total += (0.5 * s2 / n as f32) as f64;
            gi.iter_mut()
                .zip(&s)
                .for_each(|(g, s)| *g = a * s / n as f32);
        } else {
            gi.fill(0.0);
        }
        for k in 0..m {
            let vk = &v[(k * n + r) * d..(k * n + r + 1) * d];
            let tk = &tan[(k * len + i) * d..(k * len + i + 1) * d];
            let gk = &mut gt[(k * len + i) * d..(k * len + i + 1) * d];
            let mut q = 0.0f32;
            for j in 0..d {
                q += vk[j] * (a * tk[j] + b * vk[j]);
                gk[j] = wq * a * vk[j];
            }
            total += (wq * q) as f64;
            if kind
                == (SteinKind::Ssm {
                    variance_reduced: false,
                })
            {
                let vs: f32 = vk.iter().zip(&s).map(|(v, s)| v * s).sum();
                total += (0.5 * wq * vs * vs) as f64;
                gi.iter_mut()
                    .zip(vk)
                    .for_each(|(g, v)| *g += wq * a * vs * v);
            }
        }
    }
    total
}
