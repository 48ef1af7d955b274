//! Gaussian mixtures Σ_k w_k N(μ_k, Σ_k) and their exact diffused marginals: log-densities,
//! scores and curvatures at every noise level, and exact samples.

use super::TARGET_NAMES;
use crate::data::Points;
use crate::process::Process;
use anyhow::{bail, Result};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// A mixture Σ_k w_k N(μ_k, Σ_k) in d dimensions (a single Gaussian is K = 1).
#[derive(Clone, Debug)]
pub struct GaussianMixture {
    pub weights: Vec<f64>,
    pub means: Vec<Vec<f64>>,
    /// Row-major d×d covariances.
    pub covs: Vec<Vec<f64>>,
    d: usize,
}

/// Per-point work buffers of `eval_point`, reused across points: component log-weights, the
/// precision-times-offset vectors P_k(x − m_k) (k-major), and L⁻¹(x − m) of one component.
#[derive(Default)]
struct Scratch {
    logits: Vec<f64>,
    prec_diffs: Vec<f64>,
    y: Vec<f64>,
}

/// One component of p_t, factorised: mean α μ, Cholesky factor L of α²Σ + σ²I, log w − ½ log det,
/// and tr P of the precision P = (α²Σ + σ²I)⁻¹.
struct Factor {
    mean: Vec<f64>,
    chol: Vec<f64>,
    log_norm: f64,
    trace_prec: f64,
}

/// Solves L y = b in place (`y` holds b on entry) for a lower-triangular row-major d×d L.
fn forward_solve(l: &[f64], d: usize, y: &mut [f64]) {
    for i in 0..d {
        let s: f64 = (0..i).map(|k| l[i * d + k] * y[k]).sum();
        y[i] = (y[i] - s) / l[i * d + i];
    }
}

/// Maximal runs of equal consecutive times (a component factorisation is reused within a run).
pub(crate) fn time_runs(t: &[f64]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let mut j = i + 1;
        while j < t.len() && t[j] == t[i] {
            j += 1;
        }
        runs.push(i..j);
        i = j;
    }
    runs
}

/// Lower Cholesky factor of a symmetric positive-definite row-major d×d matrix.
fn cholesky(a: &[f64], d: usize) -> Result<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = a[i * d + j] - (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum::<f64>();
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    bail!("covariance is not positive definite (pivot {i} = {s})");
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    Ok(l)
}

impl GaussianMixture {
    /// Builds a mixture, checking weights (normalised here), shapes and positive-definiteness.
    pub fn new(weights: Vec<f64>, means: Vec<Vec<f64>>, covs: Vec<Vec<f64>>) -> Result<Self> {
        let k = weights.len();
        if k == 0 || means.len() != k || covs.len() != k {
            bail!(
                "mixture needs as many means and covariances as weights (got {k}, {}, {})",
                means.len(),
                covs.len()
            );
        }
        let d = means[0].len();
        if means.iter().any(|m| m.len() != d) || covs.iter().any(|c| c.len() != d * d) {
            bail!("mixture components must all have dimension {d} (covariances {d}×{d})");
        }
        if weights.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
            bail!("mixture weights must be positive");
        }
        for c in &covs {
            cholesky(c, d)?;
        }
        let total: f64 = weights.iter().sum();
        Ok(Self {
            weights: weights.iter().map(|w| w / total).collect(),
            means,
            covs,
            d,
        })
    }

    /// N(μ, Σ) as a one-component mixture.
    pub fn gaussian(mean: Vec<f64>, cov: Vec<f64>) -> Result<Self> {
        Self::new(vec![1.0], vec![mean], vec![cov])
    }

    /// Isotropic mixture with one standard deviation for every component.
    pub fn isotropic(weights: Vec<f64>, means: Vec<Vec<f64>>, std: f64) -> Result<Self> {
        let d = means.first().map_or(0, |m| m.len());
        let cov: Vec<f64> = (0..d * d)
            .map(|i| if i % (d + 1) == 0 { std * std } else { 0.0 })
            .collect();
        let covs = vec![cov; means.len()];
        Self::new(weights, means, covs)
    }

    /// NCSN's two-mode mixture 0.8·N((5,5), I) + 0.2·N((−5,−5), I) (Song & Ermon 2019, §3.2).
    pub fn ncsn2() -> Self {
        Self::isotropic(vec![0.8, 0.2], vec![vec![5.0, 5.0], vec![-5.0, -5.0]], 1.0)
            .expect("valid constants")
    }

    /// Three anisotropic, correlated 2-D components (a test target with full covariances).
    pub fn anisotropic3() -> Self {
        Self::new(
            vec![0.5, 0.3, 0.2],
            vec![vec![-2.0, 0.0], vec![2.0, 1.5], vec![1.0, -2.5]],
            vec![
                vec![1.0, 0.6, 0.6, 0.5],
                vec![0.3, -0.1, -0.1, 0.8],
                vec![0.6, 0.0, 0.0, 0.1],
            ],
        )
        .expect("valid constants")
    }

    /// A stiff 10-D target: four components whose covariances Q diag(λ) Qᵀ have eigenvalues λ
    /// log-spaced from 0.05 to 1.5 (30×) in rotated frames Q (fixed, from a seeded Gram–Schmidt),
    /// means at ±1.5 along fixed directions, weights 0.4, 0.3, 0.2, 0.1.
    pub fn anisotropic10() -> Self {
        use rand::SeedableRng;
        let d = 10;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(10);
        let mut normal = || -> f64 { rng.sample(StandardNormal) };
        let lambdas: Vec<f64> = (0..d)
            .map(|i| 0.05 * 30f64.powf(i as f64 / (d - 1) as f64))
            .collect();
        let mut means = Vec::new();
        let mut covs = Vec::new();
        for _ in 0..4 {
            // an orthonormal frame: Gram–Schmidt on Gaussian vectors
            let mut q: Vec<Vec<f64>> = Vec::new();
            while q.len() < d {
                let mut v: Vec<f64> = (0..d).map(|_| normal()).collect();
                for u in &q {
                    let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                    v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
                }
                let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
                v.iter_mut().for_each(|a| *a /= norm);
                q.push(v);
            }
            let mut cov = vec![0.0; d * d];
            for (k, u) in q.iter().enumerate() {
                for i in 0..d {
                    for j in 0..d {
                        cov[i * d + j] += lambdas[k] * u[i] * u[j];
                    }
                }
            }
            covs.push(cov);
            let dir: Vec<f64> = (0..d).map(|_| normal()).collect();
            let norm = dir.iter().map(|a| a * a).sum::<f64>().sqrt();
            means.push(dir.iter().map(|a| 1.5 * a / norm).collect());
        }
        Self::new(vec![0.4, 0.3, 0.2, 0.1], means, covs).expect("valid constants")
    }

    /// A named target: ncsn2, anisotropic3, anisotropic10, gmm40 (FAB/iDEM means, std softplus(1)), 8gaussians.
    pub fn named(name: &str) -> Result<Self> {
        match name {
            "ncsn2" => Ok(Self::ncsn2()),
            "anisotropic3" => Ok(Self::anisotropic3()),
            "anisotropic10" => Ok(Self::anisotropic10()),
            "gmm40" => {
                let means = crate::data::gmm40_means()
                    .iter()
                    .map(|m| m.to_vec())
                    .collect::<Vec<_>>();
                Self::isotropic(vec![1.0; means.len()], means, crate::data::GMM40_STD)
            }
            "8gaussians" => {
                let means = (0..8)
                    .map(|k| {
                        let a = k as f64 * std::f64::consts::FRAC_PI_4;
                        vec![4.0 * a.cos() / 1.414, 4.0 * a.sin() / 1.414]
                    })
                    .collect();
                Self::isotropic(vec![1.0; 8], means, 0.5 / 1.414)
            }
            other => bail!(
                "unknown target '{other}'; valid: {}",
                TARGET_NAMES.join(", ")
            ),
        }
    }

    /// The mixture of x·factor: means·factor, covariances·factor².
    pub fn scaled(&self, factor: f64) -> Result<Self> {
        let means = self
            .means
            .iter()
            .map(|m| m.iter().map(|v| v * factor).collect())
            .collect();
        let covs = self
            .covs
            .iter()
            .map(|c| c.iter().map(|v| v * factor * factor).collect())
            .collect();
        Self::new(self.weights.clone(), means, covs)
    }

    /// Data dimension d.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Factorises every component of p_t for coefficients (α, σ).
    fn factors(&self, alpha: f64, sigma: f64) -> Result<Vec<Factor>> {
        let d = self.d;
        self.weights
            .iter()
            .zip(&self.means)
            .zip(&self.covs)
            .map(|((w, m), c)| {
                let cov: Vec<f64> = (0..d * d)
                    .map(|i| {
                        alpha * alpha * c[i] + if i % (d + 1) == 0 { sigma * sigma } else { 0.0 }
                    })
                    .collect();
                let chol = cholesky(&cov, d)?;
                let half_logdet: f64 = (0..d).map(|i| chol[i * d + i].ln()).sum();
                // tr P = ‖L⁻¹‖²_F, column by column
                let mut col = vec![0.0; d];
                let mut trace_prec = 0.0;
                for j in 0..d {
                    col.iter_mut()
                        .enumerate()
                        .for_each(|(i, c)| *c = f64::from(i == j));
                    forward_solve(&chol, d, &mut col);
                    trace_prec += col.iter().map(|c| c * c).sum::<f64>();
                }
                Ok(Factor {
                    mean: m.iter().map(|v| alpha * v).collect(),
                    chol,
                    log_norm: w.ln() - half_logdet - 0.5 * d as f64 * LN_2PI,
                    trace_prec,
                })
            })
            .collect()
    }

    /// log p(x) and ∇ log p(x) for one point under factorised components; `buf` is scratch (3d).
    fn eval_point(
        factors: &[Factor],
        x: &[f64],
        d: usize,
        score: &mut [f64],
        scratch: &mut Scratch,
    ) -> f64 {
        let Scratch {
            logits,
            prec_diffs,
            y,
        } = scratch;
        logits.clear();
        prec_diffs.clear();
        y.resize(d, 0.0);
        for f in factors {
            // y = L⁻¹(x − m), z = L⁻ᵀ y = Σ⁻¹(x − m)
            y.iter_mut()
                .zip(x.iter().zip(&f.mean))
                .for_each(|(y, (x, m))| *y = x - m);
            forward_solve(&f.chol, d, y);
            let quad: f64 = y.iter().map(|v| v * v).sum();
            let start = prec_diffs.len();
            prec_diffs.extend(std::iter::repeat_n(0.0, d));
            let z = &mut prec_diffs[start..];
            for i in (0..d).rev() {
                let s: f64 = (i + 1..d).map(|k| f.chol[k * d + i] * z[k]).sum();
                z[i] = (y[i] - s) / f.chol[i * d + i];
            }
            logits.push(f.log_norm - 0.5 * quad);
        }
        let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
        score.iter_mut().for_each(|s| *s = 0.0);
        for (k, l) in logits.iter().enumerate() {
            let r = (l - mx).exp() / total;
            for i in 0..d {
                score[i] -= r * prec_diffs[k * d + i];
            }
        }
        mx + total.ln()
    }

    /// Exact log p_t(x) and ∇x log p_t(x) for rows of `x` (row-major n×d) at one time's (α, σ).
    pub fn log_prob_and_score_at(
        &self,
        x: &[f64],
        alpha: f64,
        sigma: f64,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let d = self.d;
        if !x.len().is_multiple_of(d) {
            bail!(
                "points have {} values, not a multiple of the mixture's dimension {d}",
                x.len()
            );
        }
        let factors = self.factors(alpha, sigma)?;
        let n = x.len() / d;
        let mut logp = Vec::with_capacity(n);
        let mut score = vec![0.0; x.len()];
        let mut scratch = Scratch::default();
        for i in 0..n {
            logp.push(Self::eval_point(
                &factors,
                &x[i * d..(i + 1) * d],
                d,
                &mut score[i * d..(i + 1) * d],
                &mut scratch,
            ));
        }
        Ok((logp, score))
    }

    /// Exact score s = ∇ log p_t and second-order terms of log p_t at one time's (α, σ) for rows of
    /// `x` (row-major n×d). With P_k the precision of component k of p_t, z_k = P_k(x − α μ_k) and
    /// r_k the responsibilities, the Hessian is H = Σ_k r_k (z_k z_kᵀ − P_k) − s sᵀ, so
    /// - `probes = None`: the Laplacian tr H = Σ_k r_k (‖z_k‖² − tr P_k) − ‖s‖², one per row \[n\];
    /// - `probes = Some(v)`, v row-major [m, n, d]: the forms vᵀ H v = Σ_k r_k ((z_k·v)² − vᵀP_k v)
    ///   − (s·v)² for each probe of each row, [m, n] row-major.
    pub fn score_and_curvature_at(
        &self,
        x: &[f64],
        alpha: f64,
        sigma: f64,
        probes: Option<&[f64]>,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let d = self.d;
        let n = x.len() / d;
        if x.len() != n * d {
            bail!(
                "points have {} values, not a multiple of the mixture's dimension {d}",
                x.len()
            );
        }
        let m = match probes {
            Some(v) if n > 0 && v.len() % (n * d) == 0 => v.len() / (n * d),
            Some(v) => bail!("{} probe values do not fill [m, {n}, {d}]", v.len()),
            None => 1,
        };
        let factors = self.factors(alpha, sigma)?;
        let mut score = vec![0.0; x.len()];
        let mut out = vec![0.0; m * n];
        let mut scratch = Scratch::default();
        let mut buf = vec![0.0; d];
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
        for i in 0..n {
            let s = &mut score[i * d..(i + 1) * d];
            let logp = Self::eval_point(&factors, &x[i * d..(i + 1) * d], d, s, &mut scratch);
            let (logits, pd) = (&scratch.logits, &scratch.prec_diffs);
            let s = &*s;
            let r: Vec<f64> = logits.iter().map(|l| (l - logp).exp()).collect();
            let z = |k: usize| &pd[k * d..(k + 1) * d];
            match probes {
                None => {
                    out[i] = (0..factors.len())
                        .map(|k| r[k] * (dot(z(k), z(k)) - factors[k].trace_prec))
                        .sum::<f64>()
                        - dot(s, s);
                }
                Some(v) => {
                    for p in 0..m {
                        let v = &v[(p * n + i) * d..(p * n + i + 1) * d];
                        let mut q = -dot(s, v).powi(2);
                        for (k, f) in factors.iter().enumerate() {
                            buf.copy_from_slice(v);
                            forward_solve(&f.chol, d, &mut buf);
                            q += r[k] * (dot(z(k), v).powi(2) - dot(&buf, &buf));
                        }
                        out[p * n + i] = q;
                    }
                }
            }
        }
        Ok((score, out))
    }

    /// Exact log p_t(x) and score for per-row times (factorisations are reused across equal times).
    pub fn log_prob_and_score(
        &self,
        process: &dyn Process,
        x: &[f64],
        t: &[f64],
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let d = self.d;
        if x.len() != t.len() * d {
            bail!(
                "{} times for {} points of dimension {d}",
                t.len(),
                x.len() / d.max(1)
            );
        }
        let mut logp = Vec::with_capacity(t.len());
        let mut score = Vec::with_capacity(x.len());
        for r in time_runs(t) {
            let (l, s) = self.log_prob_and_score_at(
                &x[r.start * d..r.end * d],
                process.alpha(t[r.start]),
                process.sigma(t[r.start]),
            )?;
            logp.extend(l);
            score.extend(s);
        }
        Ok((logp, score))
    }

    /// The entropy H = E_p[−log p] from n exact draws of the seeded generator: (estimate, its
    /// standard error).
    pub fn entropy(&self, n: usize, seed: u64) -> Result<(f64, f64)> {
        use rand::SeedableRng;
        let exact = self.sample(n, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let nlp: Vec<f64> = self.log_prob(&exact)?.into_iter().map(|l| -l).collect();
        Ok(crate::metrics::mean_and_sem(&nlp))
    }

    /// Exact log p0(x) of the undiffused mixture.
    pub fn log_prob(&self, x: &Points) -> Result<Vec<f64>> {
        Ok(self.log_prob_and_score_at(&x.data, 1.0, 0.0)?.0)
    }

    /// n exact draws from the mixture.
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Points {
        let d = self.d;
        let chols: Vec<Vec<f64>> = self
            .covs
            .iter()
            .map(|c| cholesky(c, d).expect("checked in new"))
            .collect();
        let cum: Vec<f64> = self
            .weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w;
                Some(*acc)
            })
            .collect();
        let mut data = Vec::with_capacity(n * d);
        for _ in 0..n {
            let u: f64 = rng.random();
            let k = cum
                .iter()
                .position(|c| u < *c)
                .unwrap_or(self.weights.len() - 1);
            let z: Vec<f64> = (0..d).map(|_| StandardNormal.sample(rng)).collect();
            for i in 0..d {
                let lz: f64 = (0..=i).map(|j| chols[k][i * d + j] * z[j]).sum();
                data.push(self.means[k][i] + lz);
            }
        }
        Points {
            n,
            d,
            data,
            event: Vec::new(),
        }
    }
}
