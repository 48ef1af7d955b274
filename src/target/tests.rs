//! Mixtures against their closed forms and finite differences.

use super::*;
use crate::process::Process;
use crate::process::ProcessConfig;
use rand::SeedableRng;

fn processes() -> Vec<Box<dyn Process>> {
    ["vp", "subvp", "cosine", "ve"]
        .iter()
        .map(|n| ProcessConfig::from_name(n, 10.0).unwrap().build().unwrap())
        .collect()
}

/// The score equals the central finite-difference gradient of log p_t at several t.
#[test]
fn score_is_gradient_of_log_density() {
    let gm = GaussianMixture::anisotropic3();
    let pts = [[-1.0, 0.5], [2.5, 1.0], [0.3, -2.0], [4.0, 4.0]];
    for p in processes() {
        for &t in &[p.t_min(), 0.05, 0.3, 0.9] {
            let (a, s) = (p.alpha(t), p.sigma(t));
            for x in pts {
                let (_, sc) = gm.log_prob_and_score_at(&x, a, s).unwrap();
                for i in 0..2 {
                    let h = 1e-5;
                    let mut xp = x;
                    let mut xm = x;
                    xp[i] += h;
                    xm[i] -= h;
                    let fd = (gm.log_prob_and_score_at(&xp, a, s).unwrap().0[0]
                        - gm.log_prob_and_score_at(&xm, a, s).unwrap().0[0])
                        / (2.0 * h);
                    assert!(
                        (fd - sc[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                        "{} t={t} x={x:?}: fd {fd} vs {}",
                        p.name(),
                        sc[i]
                    );
                }
            }
        }
    }
}

/// The Laplacian and the Hessian forms vᵀHv equal central finite differences of the score.
#[test]
fn curvature_matches_finite_differences() {
    let gm = GaussianMixture::anisotropic3();
    let pts = [[-1.0, 0.5], [2.5, 1.0], [0.3, -2.0], [4.0, 4.0]];
    let probes = [[1.0, -1.0], [0.3, 2.0]];
    let h = 1e-5;
    for p in processes() {
        for &t in &[p.t_min(), 0.05, 0.3, 0.9] {
            let (a, s) = (p.alpha(t), p.sigma(t));
            let score = |x: [f64; 2]| gm.log_prob_and_score_at(&x, a, s).unwrap().1;
            // ∂s/∂x · v by central differences
            let jv = |x: [f64; 2], v: [f64; 2]| -> Vec<f64> {
                let (sp, sm) = (
                    score([x[0] + h * v[0], x[1] + h * v[1]]),
                    score([x[0] - h * v[0], x[1] - h * v[1]]),
                );
                sp.iter()
                    .zip(&sm)
                    .map(|(p, m)| (p - m) / (2.0 * h))
                    .collect()
            };
            for x in pts {
                let (_, lap) = gm.score_and_curvature_at(&x, a, s, None).unwrap();
                let fd = jv(x, [1.0, 0.0])[0] + jv(x, [0.0, 1.0])[1];
                let tol = 1e-5 * (1.0 + fd.abs());
                assert!(
                    (lap[0] - fd).abs() < tol,
                    "{} t={t} x={x:?}: Laplacian {} vs fd {fd}",
                    p.name(),
                    lap[0]
                );
                let flat: Vec<f64> = probes.iter().flatten().copied().collect();
                let (_, q) = gm.score_and_curvature_at(&x, a, s, Some(&flat)).unwrap();
                for (k, v) in probes.iter().enumerate() {
                    let fd: f64 = jv(x, *v).iter().zip(v).map(|(a, b)| a * b).sum();
                    let tol = 1e-5 * (1.0 + fd.abs());
                    assert!(
                        (q[k] - fd).abs() < tol,
                        "{} t={t} x={x:?} v={v:?}: {} vs fd {fd}",
                        p.name(),
                        q[k]
                    );
                }
            }
        }
    }
}

/// ∫ p_t = 1 on a fine 2-D grid (midpoint rule), for the data and a diffused marginal.
#[test]
fn density_integrates_to_one() {
    let gm = GaussianMixture::anisotropic3();
    let p = ProcessConfig::vp_default().build().unwrap();
    for &t in &[0.0, 0.2] {
        let (lo, hi, m) = (-9.0, 9.0, 600);
        let h = (hi - lo) / m as f64;
        let mut pts = Vec::with_capacity(2 * m * m);
        for i in 0..m {
            for j in 0..m {
                pts.push(lo + (i as f64 + 0.5) * h);
                pts.push(lo + (j as f64 + 0.5) * h);
            }
        }
        let (a, s) = if t == 0.0 {
            (1.0, 0.0)
        } else {
            (p.alpha(t), p.sigma(t))
        };
        let (lp, _) = gm.log_prob_and_score_at(&pts, a, s).unwrap();
        let mass: f64 = lp.iter().map(|l| l.exp()).sum::<f64>() * h * h;
        assert!((mass - 1.0).abs() < 1e-4, "t={t}: mass {mass}");
    }
}

/// Exact sampling reproduces the mixture's mean and covariance.
#[test]
fn sampling_matches_moments() {
    let gm = GaussianMixture::anisotropic3();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let n = 200_000;
    let x = gm.sample(n, &mut rng);
    let mean = x.mean();
    let want: Vec<f64> = (0..2)
        .map(|i| {
            gm.weights
                .iter()
                .zip(&gm.means)
                .map(|(w, m)| w * m[i])
                .sum()
        })
        .collect();
    for i in 0..2 {
        assert!(
            (mean[i] - want[i]).abs() < 0.02,
            "mean {mean:?} vs {want:?}"
        );
    }
    // E[x xᵀ] = Σ w (Σ_k + μμᵀ)
    let exx: f64 = (0..n).map(|r| x.row(r)[0] * x.row(r)[1]).sum::<f64>() / n as f64;
    let want_xx: f64 = (0..3)
        .map(|k| gm.weights[k] * (gm.covs[k][1] + gm.means[k][0] * gm.means[k][1]))
        .sum();
    assert!((exx - want_xx).abs() < 0.03, "E[xy] {exx} vs {want_xx}");
}

/// The sign convention: for the quadratic energy E(x) = ½ xᵀΣ⁻¹x of N(0, Σ), the force is
/// −∇E = −Σ⁻¹x, equal to the score ∇log p, and to −∇E by finite differences.
#[test]
fn force_is_minus_energy_gradient_and_the_score() {
    let g = GaussianMixture::gaussian(vec![0.0, 0.0], vec![2.0, 0.5, 0.5, 1.0]).unwrap();
    let x = [0.7, -1.3];
    let f = g.force(&x).unwrap();
    // Σ⁻¹ = [[1, −0.5], [−0.5, 2]] / 1.75
    let want = [
        -(0.7 - 0.5 * -1.3) / 1.75,
        -(-0.5 * 0.7 + 2.0 * -1.3) / 1.75,
    ];
    for i in 0..2 {
        assert!(
            (f[i] - want[i]).abs() < 1e-12,
            "force {f:?} vs −Σ⁻¹x {want:?}"
        );
        let h = 1e-6;
        let (mut xp, mut xm) = (x, x);
        xp[i] += h;
        xm[i] -= h;
        let fd = -(g.energy(&xp).unwrap()[0] - g.energy(&xm).unwrap()[0]) / (2.0 * h);
        assert!(
            (fd - f[i]).abs() < 1e-8,
            "−∂E/∂x_{i} {fd} vs force {}",
            f[i]
        );
    }
    let (_, score) = g.log_prob_and_score_at(&x, 1.0, 0.0).unwrap();
    assert_eq!(score, f);
    assert!(f[0] < 0.0, "the force points back towards the mode");
}

#[test]
fn rejects_bad_covariance() {
    assert!(GaussianMixture::gaussian(vec![0.0, 0.0], vec![1.0, 2.0, 2.0, 1.0]).is_err());
    assert!(GaussianMixture::new(vec![1.0], vec![vec![0.0]], vec![vec![1.0], vec![1.0]]).is_err());
}
