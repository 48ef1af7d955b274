//! Kernel Stein discrepancy: how far samples are from a density known only through its score.
//!
//! KSD²(q, p) = E_{x,y∼q} u_p(x, y) with the Stein kernel
//! u_p(x, y) = s(x)ᵀs(y) k + s(x)ᵀ∇_y k + s(y)ᵀ∇_x k + tr ∇_x∇_y k, s = ∇ log p (Liu, Lee & Jordan
//! 2016; Chwialkowski, Strathmann & Gretton 2016). It is 0 exactly when q = p and needs no
//! normaliser of p and no samples from it: only the score at the samples, so it judges samples
//! against a trained model's score, a target's exact score, or forces F/kT alike. With the IMQ
//! kernel k(x, y) = (c² + ‖x − y‖²)^β, −1 < β < 0, it also detects non-convergence, which the
//! Gaussian kernel does not (Gorham & Mackey 2017, Theorem 8).

use crate::data::Points;
use anyhow::{bail, Result};
use rayon::prelude::*;

/// The inverse multiquadric kernel k(x, y) = (c² + ‖x − y‖²)^β.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Imq {
    /// Scale c > 0, in data units.
    pub c: f64,
    /// Exponent β ∈ (−1, 0).
    pub beta: f64,
}

impl Default for Imq {
    /// c = 1, β = −½, Gorham & Mackey's (2017) choice.
    fn default() -> Self {
        Self { c: 1.0, beta: -0.5 }
    }
}

impl Imq {
    /// The Stein kernel u_p(x, y) for points `x`, `y` with scores `sx`, `sy`.
    ///
    /// With r = x − y and q = c² + ‖r‖²: k = q^β, ∇_x k = 2β q^{β−1} r = −∇_y k and
    /// tr ∇_x∇_y k = −2βd q^{β−1} − 4β(β−1) q^{β−2} ‖r‖², so
    /// u = k sxᵀsy + 2β q^{β−1} (sy − sx)ᵀr + tr ∇_x∇_y k.
    pub fn stein(&self, x: &[f64], y: &[f64], sx: &[f64], sy: &[f64]) -> f64 {
        let (mut r2, mut ss, mut dr) = (0.0, 0.0, 0.0);
        for i in 0..x.len() {
            let r = x[i] - y[i];
            r2 += r * r;
            ss += sx[i] * sy[i];
            dr += (sy[i] - sx[i]) * r;
        }
        let b = self.beta;
        let q = self.c * self.c + r2;
        let k = q.powf(b);
        let (k1, k2) = (k / q, k / (q * q));
        let d = x.len() as f64;
        k * ss + 2.0 * b * k1 * dr - 2.0 * b * d * k1 - 4.0 * b * (b - 1.0) * k2 * r2
    }
}

/// A kernel Stein discrepancy estimate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ksd {
    /// U-statistic KSD² = (1/(n(n−1))) Σ_{i≠j} u_p(x_i, x_j): unbiased, so slightly negative
    /// values are possible when q = p.
    pub ksd2: f64,
    /// Its standard error, from the Hoeffding decomposition (see [`ksd2`]).
    pub se: f64,
    /// Points used.
    pub n: usize,
    /// The kernel.
    pub kernel: Imq,
}

/// What [`Ksd`] reports, in one line.
pub const KSD_DEFINITION: &str = "ksd2: kernel Stein discrepancy squared, U-statistic mean over pairs i != j of the \
Stein kernel u_p(x_i, x_j) built from the IMQ kernel (1 + |x-y|²)^(-1/2) (data units) and the score of p at the samples; \
0 in expectation exactly when the samples come from p, may be slightly negative; ksd2_se: its standard error";

/// KSD² of the points `x` against the density whose score at each point is the same row of
/// `scores`, with the kernel `kernel`; O(n²d) time, O(n) memory.
///
/// Standard error: Var U = 4(n−2)/(n(n−1)) ζ₁ + 2/(n(n−1)) ζ₂ with ζ₁ = Var_x E_y u(x, y) and
/// ζ₂ = Var u(x, y) (Hoeffding 1948). ζ₂ is estimated by the variance of u over pairs, ζ₁ by the
/// variance of the row means g_i = (1/(n−1)) Σ_{j≠i} u_ij less the ≈ ζ₂/(n−1) that their own
/// noise adds. At q = p the first term vanishes (a degenerate U-statistic), and the correction
/// keeps the estimate from being √3 times too large there.
pub fn ksd2(x: &Points, scores: &Points, kernel: Imq) -> Result<Ksd> {
    if x.n != scores.n || x.d != scores.d {
        bail!(
            "ksd: {} points of dimension {} but {} scores of dimension {}; give one score per point",
            x.n,
            x.d,
            scores.n,
            scores.d
        );
    }
    if x.n < 3 {
        bail!("ksd: needs at least 3 points (got {})", x.n);
    }
    if !(kernel.c.is_finite() && kernel.c > 0.0 && kernel.beta > -1.0 && kernel.beta < 0.0) {
        bail!(
            "ksd: IMQ kernel needs c > 0 and -1 < beta < 0 (got c = {}, beta = {})",
            kernel.c,
            kernel.beta
        );
    }
    x.check_finite("ksd: points")?;
    scores.check_finite("ksd: scores")?;
    let n = x.n;
    // each row's sum and sum of squares over j != i; every pair is visited twice, which halves
    // nothing but keeps the rows independent for the thread pool
    let rows: Vec<(f64, f64)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let (xi, si) = (x.row(i), scores.row(i));
            let (mut s, mut s2) = (0.0, 0.0);
            for j in (0..n).filter(|&j| j != i) {
                let u = kernel.stein(xi, x.row(j), si, scores.row(j));
                s += u;
                s2 += u * u;
            }
            (s, s2)
        })
        .collect();
    let (nf, pairs) = (n as f64, (n * (n - 1)) as f64);
    let total: f64 = rows.iter().map(|r| r.0).sum();
    let ksd2 = total / pairs;
    let zeta2 = (rows.iter().map(|r| r.1).sum::<f64>() / pairs - ksd2 * ksd2).max(0.0);
    let g: Vec<f64> = rows.iter().map(|r| r.0 / (nf - 1.0)).collect();
    let var_g = g.iter().map(|v| (v - ksd2).powi(2)).sum::<f64>() / (nf - 1.0);
    let zeta1 = (var_g - zeta2 / (nf - 1.0)).max(0.0);
    let var = 4.0 * (nf - 2.0) / pairs * zeta1 + 2.0 / pairs * zeta2;
    Ok(Ksd {
        ksd2,
        se: var.sqrt(),
        n,
        kernel,
    })
}

/// KSD² with the default IMQ kernel (c = 1, β = −½).
pub fn ksd2_imq(x: &Points, scores: &Points) -> Result<Ksd> {
    ksd2(x, scores, Imq::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::GaussianMixture;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn exact(n: usize, seed: u64) -> (GaussianMixture, Points) {
        let p = GaussianMixture::gaussian(vec![0.3, -0.2], vec![1.0, 0.4, 0.4, 0.8]).unwrap();
        let x = p.sample(n, &mut ChaCha8Rng::seed_from_u64(seed));
        (p, x)
    }

    fn score(p: &GaussianMixture, x: &Points) -> Points {
        let s = p.log_prob_and_score_at(&x.data, 1.0, 0.0).unwrap().1;
        Points::new(x.n, x.d, s).unwrap()
    }

    /// Exact samples with their own score: KSD² within 3 s.e. of 0. Samples shifted by +0.5 in
    /// every coordinate, judged by the unshifted score: many s.e. above 0.
    #[test]
    fn ksd_is_zero_for_exact_samples_and_large_for_shifted_ones() {
        let (p, x) = exact(1500, 1);
        let k = ksd2_imq(&x, &score(&p, &x)).unwrap();
        assert_eq!(k.n, 1500);
        assert!(k.ksd2.abs() < 3.0 * k.se, "{k:?}");
        let mut y = x.clone();
        y.data.iter_mut().for_each(|v| *v += 0.5);
        let shifted = ksd2_imq(&y, &score(&p, &y)).unwrap();
        assert!(shifted.ksd2 > 6.0 * shifted.se, "{shifted:?}");
        assert!(shifted.ksd2 > 10.0 * k.ksd2.abs(), "{shifted:?} vs {k:?}");
    }

    /// The reported s.e. matches the spread of KSD² over independent replicates, both at q = p
    /// (degenerate U-statistic) and away from it.
    #[test]
    fn ksd_standard_error_matches_replicates() {
        for shift in [0.0, 0.3] {
            let (mut vals, mut ses) = (Vec::new(), Vec::new());
            for seed in 0..150 {
                let (p, mut x) = exact(150, 100 + seed);
                x.data.iter_mut().for_each(|v| *v += shift);
                let k = ksd2_imq(&x, &score(&p, &x)).unwrap();
                vals.push(k.ksd2);
                ses.push(k.se);
            }
            let (mean, sem) = crate::metrics::mean_and_sem(&vals);
            let sd = sem * (vals.len() as f64).sqrt();
            let se = ses.iter().sum::<f64>() / ses.len() as f64;
            assert!(
                (0.75..1.33).contains(&(se / sd)),
                "shift {shift}: mean s.e. {se} vs replicate s.d. {sd} (mean {mean})"
            );
            if shift == 0.0 {
                assert!(mean.abs() < 3.0 * sem, "mean {mean} ± {sem}");
            }
        }
    }

    /// The closed-form Stein kernel against one built independently from k by central finite
    /// differences, and the estimator against a brute-force U-statistic over all pairs.
    #[test]
    fn ksd_matches_finite_differences_and_brute_force() {
        let kern = Imq { c: 0.7, beta: -0.4 };
        let k = |x: &[f64], y: &[f64]| {
            let r2: f64 = x.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum();
            (kern.c * kern.c + r2).powf(kern.beta)
        };
        let h = 1e-4;
        let bump = |v: &[f64], i: usize, e: f64| {
            let mut w = v.to_vec();
            w[i] += e;
            w
        };
        // u = sxᵀsy k + sxᵀ∇_y k + syᵀ∇_x k + Σ_i ∂²k/∂x_i∂y_i, each derivative by differences
        let stein_fd = |x: &[f64], y: &[f64], sx: &[f64], sy: &[f64]| {
            let d = x.len();
            let mut u = sx.iter().zip(sy).map(|(a, b)| a * b).sum::<f64>() * k(x, y);
            for i in 0..d {
                let dx = (k(&bump(x, i, h), y) - k(&bump(x, i, -h), y)) / (2.0 * h);
                let dy = (k(x, &bump(y, i, h)) - k(x, &bump(y, i, -h))) / (2.0 * h);
                let dxy = (k(&bump(x, i, h), &bump(y, i, h))
                    - k(&bump(x, i, h), &bump(y, i, -h))
                    - k(&bump(x, i, -h), &bump(y, i, h))
                    + k(&bump(x, i, -h), &bump(y, i, -h)))
                    / (4.0 * h * h);
                u += sx[i] * dy + sy[i] * dx + dxy;
            }
            u
        };
        let (p, x) = exact(7, 9);
        let x = x.scaled(1.3);
        // any scores will do for the identity; take a wrong one to exercise every term
        let s = score(&p, &x.scaled(0.5));
        let mut total = 0.0;
        for i in 0..x.n {
            for j in 0..x.n {
                if i != j {
                    let fd = stein_fd(x.row(i), x.row(j), s.row(i), s.row(j));
                    let cf = kern.stein(x.row(i), x.row(j), s.row(i), s.row(j));
                    assert!((fd - cf).abs() < 1e-6 * (1.0 + cf.abs()), "{fd} vs {cf}");
                    total += fd;
                }
            }
        }
        let brute = total / (x.n * (x.n - 1)) as f64;
        let got = ksd2(&x, &s, kern).unwrap();
        assert!(
            (got.ksd2 - brute).abs() < 1e-6 * (1.0 + brute.abs()),
            "{got:?} vs {brute}"
        );
        assert!(got.se > 0.0);

        assert!(ksd2_imq(&x, &Points::new(2, 2, vec![0.0; 4]).unwrap()).is_err());
        let bad = Imq { c: 1.0, beta: 0.5 };
        assert!(ksd2(&x, &s, bad).is_err());
        let mut nan = s.clone();
        nan.data[3] = f64::NAN;
        assert!(ksd2_imq(&x, &nan).is_err());
    }
}
