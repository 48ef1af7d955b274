//! The minimum-variance blend of the denoising and force targets (the `mixed` objective).
//!
//! Given x_t = α_t x0 + σ_t ε, two targets are conditionally unbiased for the score ∇log p_t(x_t):
//! the denoising target a = −ε/σ_t (Vincent 2011) and the force target b = F(x0)/α_t with
//! F = ∇log p0 (note 000: the score is the posterior-expected force over α_t). Any blend
//! w a + (1 − w) b with w fixed per noise level is unbiased too, so regressing on it has the same
//! minimiser; only the variance of the target, the noise in every gradient, changes:
//!
//!   V(w) = E‖w a + (1 − w) b − s‖² = w² V_a + (1 − w)² V_b + 2 w (1 − w) C,
//!
//! with V_a, V_b the targets' variances and C their covariance about s. V is a parabola in w with
//! its minimum at w* = (V_b − C)/E‖a − b‖², and since E[s·(b − a) | x_t] = 0 (both unbiased),
//! V_b − C = E[b·(b − a)]: w*(t) = E[b·(b − a)] / E‖b − a‖² needs no score, only data with
//! forces. V(w*) ≤ min(V(0), V(1)) = min(V_b, V_a): the blend never has a noisier target than DSM
//! or than force matching at any t. At low noise a explodes as 1/σ_t and w* → 0 (forces); at
//! high noise b explodes as 1/α_t and w* → 1 (DSM). For x0 ~ N(0, c I) and F = −x0/c the two
//! targets are perfectly anti-correlated and w* = σ_t²/(σ_t² + c α_t²) removes all the variance
//! (target score matching's blend, De Bortoli et al. 2024, is this with c = 1).
//!
//! `Blend::estimate` measures w* on a log-SNR grid from data with forces, once per run.

use crate::data::Points;
use crate::process::Process;
use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// w*(λ) on a grid of log-SNR λ_t = log(α_t/σ_t), increasing; linear in between, constant outside.
#[derive(Clone, Debug)]
pub struct Blend {
    pub lambda: Vec<f64>,
    pub w: Vec<f64>,
}

/// Knots of the log-SNR grid.
const KNOTS: usize = 48;

impl Blend {
    /// Estimates w*(λ) = E[b·(b − a)] / E‖b − a‖² at `KNOTS` log-SNR values spanning the
    /// process's [t_min, T], from data x0 with their forces F(x0) (model space), one noise draw
    /// per point and knot (seeded by `seed`; noise projected onto the process's space).
    pub fn estimate(process: &dyn Process, x0: &Points, force: &Points, seed: u64) -> Result<Self> {
        if (x0.n, x0.d) != (force.n, force.d) || x0.n == 0 {
            bail!(
                "the blend needs as many forces as points (points [{}, {}], forces [{}, {}])",
                x0.n,
                x0.d,
                force.n,
                force.d
            );
        }
        let (lo, hi) = (
            process.lambda(process.t_max()),
            process.lambda(process.t_min()),
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let space = process.space();
        let mut lambda = Vec::with_capacity(KNOTS);
        let mut w = Vec::with_capacity(KNOTS);
        for k in 0..KNOTS {
            let l = lo + (hi - lo) * k as f64 / (KNOTS - 1) as f64;
            let t = process.t_at_lambda(l);
            let (alpha, sigma) = (process.alpha(t), process.sigma(t));
            let (mut num, mut den) = (0.0, 0.0);
            for i in 0..x0.n {
                let mut eps: Vec<f64> =
                    (0..x0.d).map(|_| StandardNormal.sample(&mut rng)).collect();
                space.project(&mut eps);
                for (e, f) in eps.iter().zip(force.row(i)) {
                    let (a, b) = (-e / sigma, f / alpha);
                    num += b * (b - a);
                    den += (b - a) * (b - a);
                }
            }
            lambda.push(l);
            w.push(if den > 0.0 {
                (num / den).clamp(0.0, 1.0)
            } else {
                0.5
            });
        }
        Ok(Blend { lambda, w })
    }

    /// w*(λ) by linear interpolation on the grid (the end values outside it).
    pub fn weight(&self, lambda: f64) -> f64 {
        let l = &self.lambda;
        if lambda <= l[0] {
            return self.w[0];
        }
        let k = l.partition_point(|&x| x < lambda);
        if k >= l.len() {
            return self.w[l.len() - 1];
        }
        let f = (lambda - l[k - 1]) / (l[k] - l[k - 1]);
        self.w[k - 1] + f * (self.w[k] - self.w[k - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessConfig;
    use crate::target::{GaussianMixture, Potential};

    /// Data N(0, c I) with F = −x/c: w* = σ²/(σ² + c α²) at every noise level.
    #[test]
    fn gaussian_blend_is_the_closed_form() {
        let p = ProcessConfig::vp_default().build().unwrap();
        for c in [1.0, 0.25] {
            let g = GaussianMixture::gaussian(
                vec![0.0; 3],
                vec![c, 0.0, 0.0, 0.0, c, 0.0, 0.0, 0.0, c],
            )
            .unwrap();
            let x = g.sample(3000, &mut ChaCha8Rng::seed_from_u64(1));
            let f = Points::new(x.n, 3, x.data.iter().map(|v| -v / c).collect()).unwrap();
            let b = Blend::estimate(p.as_ref(), &x, &f, 2).unwrap();
            for (&l, &w) in b.lambda.iter().zip(&b.w) {
                let t = p.t_at_lambda(l);
                let (a, s) = (p.alpha(t), p.sigma(t));
                let exact = s * s / (s * s + c * a * a);
                assert!((w - exact).abs() < 0.02, "c = {c}, λ = {l}: {w} vs {exact}");
            }
        }
    }

    /// On an anisotropic mixture, the blended target's variance about the exact score is at most
    /// that of either target at every knot (fresh draws, exact diffused score).
    #[test]
    fn blend_is_never_noisier_than_either_target() {
        let p = ProcessConfig::vp_default().build().unwrap();
        let m = GaussianMixture::named("anisotropic3").unwrap();
        let x = m.sample(2000, &mut ChaCha8Rng::seed_from_u64(3));
        let f = Points::new(x.n, x.d, m.force(&x.data).unwrap()).unwrap();
        let b = Blend::estimate(p.as_ref(), &x, &f, 4).unwrap();
        let ts: Vec<f64> = b
            .lambda
            .iter()
            .step_by(4)
            .map(|&l| p.t_at_lambda(l))
            .collect();
        let rows =
            crate::objective::diagnostics::target_variances(&m, p.as_ref(), Some(&b), &ts, 2000, 5)
                .unwrap();
        for r in rows {
            let vw = r.blend.unwrap();
            assert!(
                vw <= 1.02 * r.dsm.min(r.force),
                "t = {}: blend {vw}, DSM {}, force {}",
                r.t,
                r.dsm,
                r.force
            );
        }
    }
}
