//! The Fréchet distance between two Gaussians fitted to feature sets (Heusel et al. 2017's FID,
//! in our own classifier's feature space):
//! FD = |μ1 − μ2|² + tr Σ1 + tr Σ2 − 2 tr (Σ1^½ Σ2 Σ1^½)^½,
//! with the symmetric square roots from a cyclic Jacobi eigendecomposition (f64, exact to
//! rounding for the few dozen features a small classifier has).

use anyhow::{bail, Result};

/// Mean \[d\] and unbiased covariance [d × d] (row-major) of n rows of d values (n ≥ 2).
pub fn mean_and_covariance(rows: &[f64], d: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = rows.len().checked_div(d).unwrap_or(0);
    if n < 2 || rows.len() != n * d {
        bail!("a covariance needs at least 2 rows of {d} features, got {n}");
    }
    let mut mean = vec![0.0; d];
    for r in rows.chunks_exact(d) {
        mean.iter_mut().zip(r).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0.0; d * d];
    for r in rows.chunks_exact(d) {
        for i in 0..d {
            let ci = r[i] - mean[i];
            for j in i..d {
                cov[i * d + j] += ci * (r[j] - mean[j]);
            }
        }
    }
    for i in 0..d {
        for j in i..d {
            let v = cov[i * d + j] / (n - 1) as f64;
            cov[i * d + j] = v;
            cov[j * d + i] = v;
        }
    }
    Ok((mean, cov))
}

/// Eigenvalues \[d\] and eigenvectors (column k of the row-major [d × d] result belongs to
/// value k) of a symmetric matrix, by cyclic Jacobi rotations until the off-diagonal mass is
/// negligible.
pub fn symmetric_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; d * d];
    (0..d).for_each(|i| v[i * d + i] = 1.0);
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                // the rotation that zeroes a[p][q] (Golub & Van Loan's symmetric Schur step)
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

/// The symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues
/// from rounding are taken as 0).
pub fn psd_sqrt(a: &[f64], d: usize) -> Vec<f64> {
    let (vals, v) = symmetric_eigen(a, d);
    let roots: Vec<f64> = vals.iter().map(|&l| l.max(0.0).sqrt()).collect();
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            out[i * d + j] = (0..d).map(|k| v[i * d + k] * roots[k] * v[j * d + k]).sum();
        }
    }
    out
}

/// The Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2) in d dimensions (not its square root).
pub fn frechet_distance(mu1: &[f64], cov1: &[f64], mu2: &[f64], cov2: &[f64]) -> f64 {
    let d = mu1.len();
    let mean_term: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b).powi(2)).sum();
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    let s1 = psd_sqrt(cov1, d);
    let product = |a: &[f64], b: &[f64]| {
        let mut out = vec![0.0; d * d];
        for i in 0..d {
            for k in 0..d {
                let aik = a[i * d + k];
                for j in 0..d {
                    out[i * d + j] += aik * b[k * d + j];
                }
            }
        }
        out
    };
    let mut m = product(&product(&s1, cov2), &s1);
    // symmetric up to rounding: symmetrise before the eigendecomposition
    for i in 0..d {
        for j in i + 1..d {
            let avg = 0.5 * (m[i * d + j] + m[j * d + i]);
            m[i * d + j] = avg;
            m[j * d + i] = avg;
        }
    }
    let cross: f64 = symmetric_eigen(&m, d)
        .0
        .iter()
        .map(|l| l.max(0.0).sqrt())
        .sum();
    (mean_term + trace(cov1) + trace(cov2) - 2.0 * cross).max(0.0)
}

/// The Fréchet distance between the Gaussians fitted to two feature sets of d columns.
pub fn frechet_between(a: &[f64], b: &[f64], d: usize) -> Result<f64> {
    let (m1, c1) = mean_and_covariance(a, d)?;
    let (m2, c2) = mean_and_covariance(b, d)?;
    Ok(frechet_distance(&m1, &c1, &m2, &c2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Σ = Q diag(λ) Qᵀ for a rotation Q of the first two axes by `angle`.
    fn rotated(lambda: &[f64], angle: f64) -> Vec<f64> {
        let d = lambda.len();
        let mut q = vec![0.0; d * d];
        (0..d).for_each(|i| q[i * d + i] = 1.0);
        let (c, s) = (angle.cos(), angle.sin());
        (q[0], q[1], q[d], q[d + 1]) = (c, -s, s, c);
        let mut out = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                out[i * d + j] = (0..d)
                    .map(|k| q[i * d + k] * lambda[k] * q[j * d + k])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn the_eigendecomposition_reconstructs_the_matrix() {
        let a = rotated(&[4.0, 1.0, 0.25, 9.0], 0.7);
        let (vals, _) = symmetric_eigen(&a, 4);
        let mut sorted = vals.clone();
        sorted.sort_by(f64::total_cmp);
        for (got, want) in sorted.iter().zip([0.25, 1.0, 4.0, 9.0]) {
            assert!((got - want).abs() < 1e-12, "{vals:?}");
        }
        // the root squared is the matrix
        let r = psd_sqrt(&a, 4);
        for i in 0..4 {
            for j in 0..4 {
                let sq: f64 = (0..4).map(|k| r[i * 4 + k] * r[k * 4 + j]).sum();
                assert!((sq - a[i * 4 + j]).abs() < 1e-12);
            }
        }
    }

    /// Diagonal (and jointly rotated) covariances: FD = |μ1 − μ2|² + Σ_i (√a_i − √b_i)².
    #[test]
    fn the_distance_matches_the_closed_form_for_commuting_covariances() {
        let (a, b) = ([4.0, 1.0, 0.25], [1.0, 2.0, 0.25]);
        let (mu1, mu2) = ([0.0, 1.0, -1.0], [0.5, 1.0, 1.0]);
        let want = 0.25 + 4.0 + (2.0f64 - 1.0).powi(2) + (1.0 - 2f64.sqrt()).powi(2);
        for angle in [0.0, 0.3, 1.2] {
            let fd = frechet_distance(&mu1, &rotated(&a, angle), &mu2, &rotated(&b, angle));
            assert!((fd - want).abs() < 1e-10, "angle {angle}: {fd} vs {want}");
        }
        assert!(frechet_distance(&mu1, &rotated(&a, 0.3), &mu1, &rotated(&a, 0.3)).abs() < 1e-10);
    }

    /// Non-commuting 2 × 2 covariances: tr √(Σ1 Σ2) = √(tr M + 2√det M) for M = Σ1 Σ2.
    #[test]
    fn the_distance_matches_the_closed_form_for_non_commuting_covariances() {
        let c1 = [2.0, 0.0, 0.0, 0.5];
        let c2 = rotated(&[3.0, 0.2], 0.6);
        let m = [
            c1[0] * c2[0] + c1[1] * c2[2],
            c1[0] * c2[1] + c1[1] * c2[3],
            c1[2] * c2[0] + c1[3] * c2[2],
            c1[2] * c2[1] + c1[3] * c2[3],
        ];
        let (tr, det) = (m[0] + m[3], m[0] * m[3] - m[1] * m[2]);
        let want = 2.5 + 3.2 - 2.0 * (tr + 2.0 * det.sqrt()).sqrt();
        let fd = frechet_distance(&[0.0, 0.0], &c1, &[0.0, 0.0], &c2);
        assert!((fd - want).abs() < 1e-10, "{fd} vs {want}");
    }

    #[test]
    fn the_sample_covariance_is_unbiased_and_small_sets_are_refused() -> Result<()> {
        let (m, c) = mean_and_covariance(&[1.0, 0.0, 3.0, 2.0], 2)?;
        assert_eq!(m, vec![2.0, 1.0]);
        assert_eq!(c, vec![2.0, 2.0, 2.0, 2.0]);
        assert!(mean_and_covariance(&[1.0, 2.0], 2).is_err());
        Ok(())
    }
}
