//! Forward noising processes x_t = α_t x0 + σ_t ε (score_sde's `sde_lib`).
//!
//! Every process here has a linear drift f(x, t) = f(t)·x and a scalar diffusion g(t), so the
//! marginal of a point mass x0 is N(α_t x0, σ_t² I) with
//! α_t = exp(∫₀ᵗ f), σ_t² = α_t² ∫₀ᵗ g²/α_s² ds. Time runs from t_min (data) to T (prior).
//! The log-SNR is λ_t = log(α_t/σ_t) (the DPM-Solver convention).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// A forward SDE dx = f(t) x dt + g(t) dW with closed-form marginal coefficients α_t, σ_t.
pub trait Process: Send + Sync {
    /// Short name ("vp", "ve", "subvp", "cosine").
    fn name(&self) -> &'static str;
    /// Mean coefficient α_t of x_t | x0.
    fn alpha(&self, t: f64) -> f64;
    /// Standard deviation σ_t of x_t | x0.
    fn sigma(&self, t: f64) -> f64;
    /// Drift coefficient f(t), with f(x, t) = f(t)·x.
    fn drift_coef(&self, t: f64) -> f64;
    /// Squared diffusion g(t)².
    fn g2(&self, t: f64) -> f64;
    /// Smallest time used (the data end), e.g. 1e-3 for training and sampling.
    fn t_min(&self) -> f64;
    /// Terminal time T (the prior end).
    fn t_max(&self) -> f64 {
        1.0
    }
    /// Standard deviation of the isotropic Gaussian prior at T (σ_T: the α_T x0 part is dropped).
    fn prior_std(&self) -> f64 {
        self.sigma(self.t_max())
    }
    /// Diffusion g(t).
    fn g(&self, t: f64) -> f64 {
        self.g2(t).sqrt()
    }
    /// Log-SNR λ_t = log(α_t / σ_t), decreasing in t.
    fn lambda(&self, t: f64) -> f64 {
        self.alpha(t).ln() - self.sigma(t).ln()
    }
    /// Inverse of λ_t on [t_min·10⁻³, T] (bisection unless a process knows a closed form).
    fn t_at_lambda(&self, lambda: f64) -> f64 {
        let (mut lo, mut hi) = (0.0_f64.max(self.t_min() * 1e-3), self.t_max());
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if self.lambda(mid) > lambda {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }
    /// The subspace that noise, prior and samples live in (all of R^d unless restricted).
    fn space(&self) -> Space {
        Space::Full
    }
    /// Log-density of the prior N(0, prior_std² I) on the space at a point of dimension x.len()
    /// (lying in the space): its degrees of freedom count, not x.len().
    fn prior_log_prob(&self, x: &[f64]) -> f64 {
        let s2 = self.prior_std().powi(2);
        let d = self.space().dof(x.len()) as f64;
        -0.5 * x.iter().map(|v| v * v).sum::<f64>() / s2
            - 0.5 * d * (2.0 * std::f64::consts::PI * s2).ln()
    }
}

/// The subspace of R^d where a process's noise and prior live.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Space {
    /// All of R^d.
    #[default]
    Full,
    /// N `particles` in `dim` dimensions with zero centre of mass (E(n)-equivariant models: DEM,
    /// EGNN): an event [N, k] with Σ_i x_i = 0, of dimension N·k − k.
    ComFree { particles: usize, dim: usize },
}

impl Space {
    /// Whether this is all of R^d.
    pub fn is_full(&self) -> bool {
        *self == Space::Full
    }

    /// Degrees of freedom of the space in R^d.
    pub fn dof(&self, d: usize) -> usize {
        match *self {
            Space::Full => d,
            Space::ComFree { dim, .. } => d - dim,
        }
    }

    /// Checks that the space fits events of d values.
    pub fn check(&self, d: usize) -> Result<()> {
        if let Space::ComFree { particles, dim } = *self {
            if particles < 2 || dim == 0 || particles * dim != d {
                bail!("a centre-of-mass-free space of {particles} particles in {dim} dimensions needs events of {particles}·{dim} values (at least two particles), not {d}");
            }
        }
        Ok(())
    }

    /// Projects rows of d values onto the space in place: each particle minus the rows' centre.
    pub fn project<T: num_like::Real>(&self, x: &mut [T]) {
        let Space::ComFree { particles, dim } = *self else {
            return;
        };
        // plain index loops: `skip(j).step_by(dim)` iterators cost MALA a fifth of its time
        for row in x.chunks_exact_mut(particles * dim) {
            for j in 0..dim {
                let mut sum = T::ZERO;
                for i in 0..particles {
                    sum = sum + row[i * dim + j];
                }
                let mean = sum / T::from_usize(particles);
                for i in 0..particles {
                    row[i * dim + j] = row[i * dim + j] - mean;
                }
            }
        }
    }

    /// The projection onto the space of every row of d values of x ([n, d], or directions
    /// [m, n, d]), as a tensor of x's shape.
    pub fn project_tensor(&self, x: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        let Space::ComFree { particles, dim } = *self else {
            return Ok(x.clone());
        };
        // rows of d = N·k values under any leading shape ([n, d], directions [m, n, d])
        let rows = x.elem_count() / (particles * dim).max(1);
        let x3 = x.reshape((rows, particles, dim))?;
        Ok(x3.broadcast_sub(&x3.mean_keepdim(1)?)?.reshape(x.shape())?)
    }
}

/// The scalars `Space::project` works on.
pub mod num_like {
    /// f32 or f64.
    pub trait Real:
        Copy
        + std::ops::Add<Output = Self>
        + std::ops::Sub<Output = Self>
        + std::ops::Div<Output = Self>
    {
        const ZERO: Self;
        fn from_usize(n: usize) -> Self;
    }
    impl Real for f32 {
        const ZERO: Self = 0.0;
        fn from_usize(n: usize) -> Self {
            n as f32
        }
    }
    impl Real for f64 {
        const ZERO: Self = 0.0;
        fn from_usize(n: usize) -> Self {
            n as f64
        }
    }
}

/// A process whose noise and prior are restricted to a subspace; its coefficients are the inner
/// process's.
pub struct Restricted {
    pub inner: Box<dyn Process>,
    pub space: Space,
}

impl Process for Restricted {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn alpha(&self, t: f64) -> f64 {
        self.inner.alpha(t)
    }
    fn sigma(&self, t: f64) -> f64 {
        self.inner.sigma(t)
    }
    fn drift_coef(&self, t: f64) -> f64 {
        self.inner.drift_coef(t)
    }
    fn g2(&self, t: f64) -> f64 {
        self.inner.g2(t)
    }
    fn t_min(&self) -> f64 {
        self.inner.t_min()
    }
    fn t_max(&self) -> f64 {
        self.inner.t_max()
    }
    fn prior_std(&self) -> f64 {
        self.inner.prior_std()
    }
    fn t_at_lambda(&self, lambda: f64) -> f64 {
        self.inner.t_at_lambda(lambda)
    }
    fn space(&self) -> Space {
        self.space
    }
}

/// Variance-exploding process: α_t = 1, σ_t = σ_min (σ_max/σ_min)^t (NCSN / score_sde VESDE).
#[derive(Clone, Debug)]
pub struct Ve {
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub t_min: f64,
}

impl Process for Ve {
    fn name(&self) -> &'static str {
        "ve"
    }
    fn alpha(&self, _t: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        self.sigma_min * (self.sigma_max / self.sigma_min).powf(t)
    }
    fn drift_coef(&self, _t: f64) -> f64 {
        0.0
    }
    fn g2(&self, t: f64) -> f64 {
        // d σ_t²/dt
        let s = self.sigma(t);
        2.0 * s * s * (self.sigma_max / self.sigma_min).ln()
    }
    fn t_min(&self) -> f64 {
        self.t_min
    }
    fn prior_std(&self) -> f64 {
        self.sigma_max
    }
    fn t_at_lambda(&self, lambda: f64) -> f64 {
        (-lambda - self.sigma_min.ln()) / (self.sigma_max / self.sigma_min).ln()
    }
}

impl Ve {
    /// Warnings when σ_max is small against the data's spread and offset: the prior N(0, σ_max²)
    /// then misses part of p_T and the probability-flow ODE biases the mode weights.
    pub fn prior_mismatch_warning(&self, max_pairwise_dist: f64, max_norm: f64) -> Option<String> {
        let need = max_pairwise_dist.max(max_norm);
        (self.sigma_max < need).then(|| {
            format!(
                "VE sigma_max = {:.3} is below the data's largest pairwise distance / norm ({:.3}): \
                 the prior N(0, sigma_max²) does not cover p_T and the sampled mode weights will be biased; \
                 set sigma_max >= {:.1} (Song & Ermon 2020, technique 1)",
                self.sigma_max, need, need
            )
        })
    }
}

/// Variance-preserving process with linear β(t) = β_min + t(β_max − β_min) (DDPM / score_sde VPSDE).
#[derive(Clone, Debug)]
pub struct Vp {
    pub beta_min: f64,
    pub beta_max: f64,
    pub t_min: f64,
}

impl Vp {
    /// log α_t = −¼ t² (β_max − β_min) − ½ t β_min.
    fn log_alpha(&self, t: f64) -> f64 {
        -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
    }
    fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }
}

impl Process for Vp {
    fn name(&self) -> &'static str {
        "vp"
    }
    fn alpha(&self, t: f64) -> f64 {
        self.log_alpha(t).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        // σ² = 1 − α², computed as −expm1(2 log α) to keep precision at small t.
        (-(2.0 * self.log_alpha(t)).exp_m1()).sqrt()
    }
    fn drift_coef(&self, t: f64) -> f64 {
        -0.5 * self.beta(t)
    }
    fn g2(&self, t: f64) -> f64 {
        self.beta(t)
    }
    fn t_min(&self) -> f64 {
        self.t_min
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
    fn t_at_lambda(&self, lambda: f64) -> f64 {
        // log α = −½ log(1 + e^{−2λ}) = −¼ t² Δβ − ½ t β_min; solve the quadratic for t ≥ 0.
        let log_alpha = -0.5 * (-2.0 * lambda).exp().ln_1p();
        let a = 0.25 * (self.beta_max - self.beta_min);
        let b = 0.5 * self.beta_min;
        let c = log_alpha;
        if a.abs() < 1e-12 {
            return -c / b;
        }
        (-b + (b * b - 4.0 * a * c).sqrt()) / (2.0 * a)
    }
}

/// Sub-VP process of score_sde: same drift as VP, g² = β(t)(1 − e^{−2∫β}), σ_t = 1 − e^{−∫β}.
#[derive(Clone, Debug)]
pub struct SubVp {
    pub vp: Vp,
}

impl Process for SubVp {
    fn name(&self) -> &'static str {
        "subvp"
    }
    fn alpha(&self, t: f64) -> f64 {
        self.vp.alpha(t)
    }
    fn sigma(&self, t: f64) -> f64 {
        -(2.0 * self.vp.log_alpha(t)).exp_m1()
    }
    fn drift_coef(&self, t: f64) -> f64 {
        self.vp.drift_coef(t)
    }
    fn g2(&self, t: f64) -> f64 {
        self.vp.beta(t) * -(4.0 * self.vp.log_alpha(t)).exp_m1()
    }
    fn t_min(&self) -> f64 {
        self.vp.t_min
    }
    fn prior_std(&self) -> f64 {
        self.sigma(self.t_max())
    }
}

/// Variance-preserving process with the cosine schedule of Nichol & Dhariwal (2021):
/// α_t = cos(π/2 · (t+s)/(1+s)) / cos(π/2 · s/(1+s)), σ_t² = 1 − α_t², s = 0.008.
/// T is capped at 0.999 because α → 0 (β → ∞) at t = 1.
#[derive(Clone, Debug)]
pub struct Cosine {
    pub s: f64,
    pub t_min: f64,
    pub t_max: f64,
}

impl Cosine {
    fn phase(&self, t: f64) -> f64 {
        std::f64::consts::FRAC_PI_2 * (t + self.s) / (1.0 + self.s)
    }
}

impl Process for Cosine {
    fn name(&self) -> &'static str {
        "cosine"
    }
    fn alpha(&self, t: f64) -> f64 {
        self.phase(t).cos() / self.phase(0.0).cos()
    }
    fn sigma(&self, t: f64) -> f64 {
        (1.0 - self.alpha(t).powi(2)).max(0.0).sqrt()
    }
    fn drift_coef(&self, t: f64) -> f64 {
        // f = d log α/dt = −(π/2)/(1+s) · tan(phase)
        -std::f64::consts::FRAC_PI_2 / (1.0 + self.s) * self.phase(t).tan()
    }
    fn g2(&self, t: f64) -> f64 {
        // VP: g² = dσ²/dt − 2 f σ² = −2 f (since σ² = 1 − α²).
        -2.0 * self.drift_coef(t)
    }
    fn t_min(&self) -> f64 {
        self.t_min
    }
    fn t_max(&self) -> f64 {
        self.t_max
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
}

/// Serializable choice of process, as it appears in configs and checkpoints.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProcessConfig {
    /// VP with linear β(t) (β_min 0.1, β_max 20 as score_sde).
    Vp {
        beta_min: f64,
        beta_max: f64,
        t_min: f64,
    },
    /// Sub-VP with linear β(t).
    Subvp {
        beta_min: f64,
        beta_max: f64,
        t_min: f64,
    },
    /// VP with the cosine schedule.
    Cosine { s: f64, t_min: f64, t_max: f64 },
    /// VE with geometric σ(t).
    Ve {
        sigma_min: f64,
        sigma_max: f64,
        t_min: f64,
    },
}

impl ProcessConfig {
    /// score_sde's VP defaults: β ∈ [0.1, 20], t_min = 1e-3.
    pub fn vp_default() -> Self {
        ProcessConfig::Vp {
            beta_min: 0.1,
            beta_max: 20.0,
            t_min: 1e-3,
        }
    }

    /// Defaults for a process named on the command line; `sigma_max` is used by VE only.
    pub fn from_name(name: &str, sigma_max: f64) -> Result<Self> {
        Ok(match name {
            "vp" => Self::vp_default(),
            "subvp" => ProcessConfig::Subvp {
                beta_min: 0.1,
                beta_max: 20.0,
                t_min: 1e-3,
            },
            "cosine" => ProcessConfig::Cosine {
                s: 0.008,
                t_min: 1e-3,
                t_max: 0.999,
            },
            "ve" => ProcessConfig::Ve {
                sigma_min: 0.01,
                sigma_max,
                t_min: 1e-3,
            },
            other => bail!("unknown process '{other}'; valid: vp, subvp, cosine, ve"),
        })
    }

    /// The same process with another t_min (e.g. 1e-5 for likelihoods).
    pub fn with_t_min(&self, t: f64) -> Self {
        let mut c = self.clone();
        match &mut c {
            ProcessConfig::Vp { t_min, .. }
            | ProcessConfig::Subvp { t_min, .. }
            | ProcessConfig::Cosine { t_min, .. }
            | ProcessConfig::Ve { t_min, .. } => *t_min = t,
        }
        c
    }

    /// The process restricted to `space` (as `build` for all of R^d).
    pub fn build_in(&self, space: Space) -> Result<Box<dyn Process>> {
        let inner = self.build()?;
        Ok(match space {
            Space::Full => inner,
            space => Box::new(Restricted { inner, space }),
        })
    }

    /// Checks the parameters and builds the process.
    pub fn build(&self) -> Result<Box<dyn Process>> {
        let positive = |name: &str, v: f64| -> Result<()> {
            if !(v.is_finite() && v > 0.0) {
                bail!("process parameter {name} must be a positive number, got {v}");
            }
            Ok(())
        };
        Ok(match *self {
            ProcessConfig::Vp {
                beta_min,
                beta_max,
                t_min,
            }
            | ProcessConfig::Subvp {
                beta_min,
                beta_max,
                t_min,
            } => {
                positive("beta_min", beta_min)?;
                positive("beta_max", beta_max)?;
                positive("t_min", t_min)?;
                if beta_max < beta_min || t_min >= 1.0 {
                    bail!("process needs beta_min <= beta_max and t_min < 1");
                }
                let vp = Vp {
                    beta_min,
                    beta_max,
                    t_min,
                };
                if matches!(self, ProcessConfig::Vp { .. }) {
                    Box::new(vp)
                } else {
                    Box::new(SubVp { vp })
                }
            }
            ProcessConfig::Cosine { s, t_min, t_max } => {
                positive("s", s)?;
                positive("t_min", t_min)?;
                if !(t_max > t_min && t_max < 1.0) {
                    bail!("cosine process needs t_min < t_max < 1 (α vanishes at t = 1), got t_max = {t_max}");
                }
                Box::new(Cosine { s, t_min, t_max })
            }
            ProcessConfig::Ve {
                sigma_min,
                sigma_max,
                t_min,
            } => {
                positive("sigma_min", sigma_min)?;
                positive("sigma_max", sigma_max)?;
                positive("t_min", t_min)?;
                if sigma_max <= sigma_min {
                    bail!("VE process needs sigma_min < sigma_max");
                }
                Box::new(Ve {
                    sigma_min,
                    sigma_max,
                    t_min,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    fn all() -> Vec<Box<dyn Process>> {
        ["vp", "subvp", "cosine", "ve"]
            .iter()
            .map(|n| ProcessConfig::from_name(n, 5.0).unwrap().build().unwrap())
            .collect()
    }

    /// Euler–Maruyama of dx = f x dt + g dW from a point mass matches N(α_t x0, σ_t²).
    #[test]
    fn forward_sde_matches_marginals() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let x0 = 1.5;
        let n_paths = 20_000;
        for p in all() {
            for &t_end in &[0.1, 0.4, 0.9] {
                let steps = 2000;
                let dt = t_end / steps as f64;
                let mut xs = vec![x0; n_paths];
                for i in 0..steps {
                    let t = (i as f64 + 0.5) * dt;
                    let (f, g) = (p.drift_coef(t), p.g(t));
                    for x in xs.iter_mut() {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        *x += f * *x * dt + g * dt.sqrt() * z;
                    }
                }
                let mean = xs.iter().sum::<f64>() / n_paths as f64;
                let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n_paths - 1) as f64;
                // A point mass at t = 0 gains σ_t² − α_t² σ_0²: VE's σ_0 = σ_min is the floor
                // that score_sde's VE perturbation kernel N(x0, σ_t²) includes; the others have σ_0 = 0.
                let (a, s) = (
                    p.alpha(t_end),
                    (p.sigma(t_end).powi(2) - (p.alpha(t_end) * p.sigma(0.0)).powi(2)).sqrt(),
                );
                let se_mean = s / (n_paths as f64).sqrt();
                let se_var = s * s * (2.0 / n_paths as f64).sqrt();
                assert!(
                    (mean - a * x0).abs() < 4.0 * se_mean + 2e-3,
                    "{} t={t_end}: mean {mean} vs {}",
                    p.name(),
                    a * x0
                );
                assert!(
                    (var - s * s).abs() < 4.0 * se_var + 2e-3 * s * s,
                    "{} t={t_end}: var {var} vs {}",
                    p.name(),
                    s * s
                );
            }
        }
    }

    /// g² = dσ²/dt − 2 f σ² and f = d log α/dt, checked by finite differences.
    #[test]
    fn coefficients_are_consistent() {
        for p in all() {
            for &t in &[0.05, 0.3, 0.7, 0.95] {
                let h = 1e-6;
                let dlog_a = (p.alpha(t + h).ln() - p.alpha(t - h).ln()) / (2.0 * h);
                let ds2 = (p.sigma(t + h).powi(2) - p.sigma(t - h).powi(2)) / (2.0 * h);
                let f = p.drift_coef(t);
                assert!(
                    (dlog_a - f).abs() < 1e-5 * (1.0 + f.abs()),
                    "{} f at {t}",
                    p.name()
                );
                let g2 = ds2 - 2.0 * f * p.sigma(t).powi(2);
                assert!(
                    (g2 - p.g2(t)).abs() < 1e-4 * (1.0 + g2.abs()),
                    "{} g2 at {t}: {g2} vs {}",
                    p.name(),
                    p.g2(t)
                );
            }
        }
    }

    #[test]
    fn lambda_inverse_round_trips() {
        for p in all() {
            for &t in &[p.t_min(), 0.01, 0.3, 0.8, p.t_max()] {
                let back = p.t_at_lambda(p.lambda(t));
                assert!((back - t).abs() < 1e-7, "{}: t={t} back={back}", p.name());
            }
        }
    }

    #[test]
    fn ve_warns_on_small_sigma_max() {
        let ve = Ve {
            sigma_min: 0.01,
            sigma_max: 5.0,
            t_min: 1e-3,
        };
        assert!(ve.prior_mismatch_warning(14.0, 7.0).is_some());
        assert!(ve.prior_mismatch_warning(4.0, 3.0).is_none());
    }

    #[test]
    fn bad_parameters_are_errors() {
        let bad = ProcessConfig::Ve {
            sigma_min: 1.0,
            sigma_max: 0.5,
            t_min: 1e-3,
        };
        assert!(bad.build().is_err());
        assert!(ProcessConfig::from_name("vpp", 1.0).is_err());
    }
}
