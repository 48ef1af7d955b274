//! How continuous objectives draw t: uniform on [t_min, T], or importance-sampled with density
//! q(t) ∝ g(t)²/σ_t² for the likelihood weighting λ = g² (Song et al. 2021b, §5; score_sde's
//! `importance_weighting`), whose per-sample weight λ(t)/(q(t)(T − t_min)) is then ∝ σ_t²:
//! the same expected loss as uniform t with λ = g², with far less variance.

use crate::process::Process;
use rand::Rng;

/// Cells of the tabulated CDF, log-spaced in t (q ∝ 1/t near t_min for VP).
const CELLS: usize = 4096;

/// A density on [t_min, T], drawn by inverting a tabulated CDF; `density` is the density of
/// the draws themselves (piecewise constant on the table's cells), so weights 1/q are exact.
pub struct TimeSampler {
    /// Cell edges t_0 = t_min < … < t_K = T and the CDF at each.
    edges: Vec<f64>,
    cdf: Vec<f64>,
}

impl TimeSampler {
    /// q(t) ∝ g(t)²/σ_t² for `process`.
    pub fn likelihood(process: &dyn Process) -> Self {
        Self::new(process.t_min(), process.t_max(), |t| {
            process.g2(t) / process.sigma(t).powi(2)
        })
    }

    /// q ∝ f on [t0, t1] (f ≥ 0, integrable), tabulated by the trapezoid rule on log-spaced cells.
    pub fn new(t0: f64, t1: f64, f: impl Fn(f64) -> f64) -> Self {
        let (l0, l1) = (t0.ln(), t1.ln());
        let edges: Vec<f64> = (0..=CELLS)
            .map(|i| (l0 + (l1 - l0) * i as f64 / CELLS as f64).exp())
            .collect();
        let mut cdf = vec![0.0; CELLS + 1];
        for i in 0..CELLS {
            let (a, b) = (edges[i], edges[i + 1]);
            cdf[i + 1] = cdf[i] + 0.5 * (f(a) + f(b)) * (b - a);
        }
        let total = cdf[CELLS];
        cdf.iter_mut().for_each(|c| *c /= total);
        TimeSampler { edges, cdf }
    }

    /// One draw: u ~ U(0, 1) mapped through the inverse of the piecewise-linear CDF.
    pub fn sample(&self, rng: &mut impl Rng) -> f64 {
        let u: f64 = rng.random();
        let i = self.cdf.partition_point(|&c| c <= u).clamp(1, CELLS) - 1;
        let (c0, c1) = (self.cdf[i], self.cdf[i + 1]);
        let frac = if c1 > c0 { (u - c0) / (c1 - c0) } else { 0.5 };
        self.edges[i] + frac * (self.edges[i + 1] - self.edges[i])
    }

    /// The density of `sample`'s draws at t (0 outside [t_min, T]).
    pub fn density(&self, t: f64) -> f64 {
        if !(t >= self.edges[0] && t <= self.edges[CELLS]) {
            return 0.0;
        }
        let i = self.edges.partition_point(|&e| e <= t).clamp(1, CELLS) - 1;
        (self.cdf[i + 1] - self.cdf[i]) / (self.edges[i + 1] - self.edges[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessConfig;
    use rand::SeedableRng;

    /// The density integrates to one, draws follow it (their mean matches ∫ t q(t) dt), and the
    /// importance-weighted mean of any h is unbiased: E_q[h(t)/q(t)] = ∫ h dt.
    #[test]
    fn importance_sampled_time_is_a_density_and_unbiased() {
        for name in ["vp", "subvp", "cosine", "ve"] {
            let p = ProcessConfig::from_name(name, 20.0)
                .unwrap()
                .build()
                .unwrap();
            let q = TimeSampler::likelihood(p.as_ref());
            let (t0, t1) = (p.t_min(), p.t_max());
            // ∫ q and ∫ t q over the table's cells, where q is constant
            let (mut mass, mut mean) = (0.0, 0.0);
            for w in q.edges.windows(2) {
                let (a, b) = (w[0], w[1]);
                mass += q.density(0.5 * (a + b)) * (b - a);
                mean += q.density(0.5 * (a + b)) * 0.5 * (b * b - a * a);
            }
            assert!((mass - 1.0).abs() < 1e-9, "{name}: ∫q = {mass}");
            // q ∝ g²/σ²: the ratio is one constant (to the table's resolution)
            let f = |t: f64| p.g2(t) / p.sigma(t).powi(2);
            let ratios: Vec<f64> = (1..50)
                .map(|i| t0 + (t1 - t0) * i as f64 / 50.0)
                .map(|t| q.density(t) / f(t))
                .collect();
            let (lo, hi) = ratios
                .iter()
                .fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
            // (cosine's g² blows up at t → 1, within a few cells of T = 0.999: its table is coarser)
            let tol = if name == "cosine" { 1.1 } else { 1.01 };
            assert!(hi / lo < tol, "{name}: q/f spans [{lo}, {hi}]");
            let k = 200_000;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            let n = 200_000;
            let draws: Vec<f64> = (0..n).map(|_| q.sample(&mut rng)).collect();
            assert!(draws.iter().all(|&t| t >= t0 && t <= t1));
            let (m, se) = crate::metrics::mean_and_sem(&draws);
            assert!(
                (m - mean).abs() < 4.0 * se,
                "{name}: draws' mean {m} ± {se} vs {mean}"
            );
            // unbiased: h(t) = g²(t)(1 + sin² 5t), ∫ h by the same quadrature
            let h = |t: f64| p.g2(t) * (1.0 + (5.0 * t).sin().powi(2));
            let mut exact = 0.0;
            for i in 0..k {
                let (a, b) = (
                    t0 + (t1 - t0) * i as f64 / k as f64,
                    t0 + (t1 - t0) * (i + 1) as f64 / k as f64,
                );
                exact += h(0.5 * (a + b)) * (b - a);
            }
            let w: Vec<f64> = draws.iter().map(|&t| h(t) / q.density(t)).collect();
            let (est, se) = crate::metrics::mean_and_sem(&w);
            assert!(
                (est - exact).abs() < 4.0 * se && se < 0.05 * exact.abs(),
                "{name}: E_q[h/q] = {est} ± {se} vs ∫h = {exact}"
            );
        }
    }
}
