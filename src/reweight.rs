//! Importance reweighting of model samples towards a Boltzmann density p ∝ exp(−βU), β = 1/kT.
//!
//! Samples x_i ~ q (e.g. probability-flow ODE samples, whose log q(x_i) `likelihood::generate`
//! gives) carry log-weights log w_i = −βU(x_i) − log q(x_i), so that E_q\[w\] = Z = ∫ exp(−βU).
//! From them: the self-normalised weights w̄_i = w_i / Σ_j w_j, the effective sample size
//! ESS = (Σ w)² / Σ w², the estimate log Ẑ = logsumexp(log w) − log n with the delta-method
//! standard error se(log Ẑ) = sd(w) / (√n · mean(w)), and reweighted observables
//! ⟨A⟩ = Σ w̄_i A_i with the self-normalised estimator's delta-method standard error
//! (Σ w̄_i² (A_i − ⟨A⟩)²)^½.
//!
//! log q and U must live on the same space: for particles both are densities on the
//! centre-of-mass-free subspace (log q of the model's N·k − k degrees of freedom), so Ẑ is the
//! partition function over that subspace.

use crate::data::Points;
use crate::likelihood::{self, DivergenceModel, Options};
use crate::metrics::{mean_and_sem, Metric};
use crate::process::Process;
use crate::target::Potential;
use anyhow::{bail, Result};
use candle_core::{DType, Device};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const LOG_Z: &str = "log_z: log Ẑ = logsumexp_i(log w_i) − log n, log w_i = −βU(x_i) − log q(x_i), x_i ~ q; se by the delta method sd(w)/(√n mean(w)); Z = ∫ exp(−βU) over the model's space (the centre-of-mass-free subspace for particles), data units";
const ESS: &str = "ess: effective sample size (Σ_i w_i)² / Σ_i w_i² of the importance weights w_i = exp(−βU(x_i)) / q(x_i)";
const ESS_FRACTION: &str =
    "ess_fraction: ESS / n, 1 when q is the Boltzmann density, → 1/n when one weight dominates";
const MAX_WEIGHT: &str =
    "max_weight: the largest self-normalised weight max_i w_i / Σ_j w_j (≥ 1/n)";
const WEIGHTED: &str = "reweighted mean: Σ_i w̄_i A(x_i) with self-normalised weights w̄_i = w_i / Σ_j w_j; se by the delta method (Σ_i w̄_i² (A(x_i) − mean)²)^½";
const REFERENCE: &str = "reference mean: (1/m) Σ_j A(y_j) over reference configurations y_j of the Boltzmann density (e.g. MCMC data); se = sd/√m";
const UNWEIGHTED: &str = "unweighted mean: (1/n) Σ_i A(x_i) over the model's samples, the model's own expectation; se = sd/√n";

/// The reweighting estimates, each with its definition and sample size.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reweighting {
    pub log_z: Metric,
    pub ess: Metric,
    pub ess_fraction: Metric,
    pub max_weight: Metric,
    /// Samples whose log-weight is −∞ (an infinite energy): weight 0, counted in n.
    pub zero_weights: usize,
    /// The self-normalised weights w̄_i, in sample order.
    #[serde(skip)]
    pub weights: Vec<f64>,
}

/// The estimates from log q(x_i) (the sampler's log-density) and log p̃(x_i) = −βU(x_i) (the
/// unnormalised target's); a NaN anywhere, or a non-finite log q, is an error naming the row.
pub fn reweight(log_q: &[f64], log_p_tilde: &[f64]) -> Result<Reweighting> {
    let n = log_q.len();
    if n == 0 || log_p_tilde.len() != n {
        bail!(
            "reweighting needs one log q and one log p̃ per sample (at least one), got {n} and {}",
            log_p_tilde.len()
        );
    }
    if let Some(i) = log_q.iter().position(|v| !v.is_finite()) {
        bail!("sample {i}: its model log-density log q is {}", log_q[i]);
    }
    if let Some(i) = log_p_tilde
        .iter()
        .position(|v| v.is_nan() || *v == f64::INFINITY)
    {
        bail!(
            "sample {i}: its target log-density −βU is {}",
            log_p_tilde[i]
        );
    }
    let log_w: Vec<f64> = log_p_tilde.iter().zip(log_q).map(|(p, q)| p - q).collect();
    let top = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if top == f64::NEG_INFINITY {
        bail!("every sample has infinite energy (weight 0): no estimate of Z");
    }
    // weights relative to the largest: r_i = w_i / max w, so none overflows
    let r: Vec<f64> = log_w.iter().map(|l| (l - top).exp()).collect();
    let (mean_r, sem_r) = mean_and_sem(&r);
    let (sum, sum2) = (r.iter().sum::<f64>(), r.iter().map(|v| v * v).sum::<f64>());
    let ess = sum * sum / sum2;
    let weights: Vec<f64> = r.iter().map(|v| v / sum).collect();
    let metric = |value, se, definition| over_samples(value, se, definition, n);
    Ok(Reweighting {
        log_z: metric(top + mean_r.ln(), Some(sem_r / mean_r), LOG_Z),
        ess: metric(ess, None, ESS),
        ess_fraction: metric(ess / n as f64, None, ESS_FRACTION),
        max_weight: metric(1.0 / sum, None, MAX_WEIGHT),
        zero_weights: log_w.iter().filter(|l| **l == f64::NEG_INFINITY).count(),
        weights,
    })
}

impl Reweighting {
    /// The reweighted mean Σ w̄_i A_i of an observable A (one value per sample) and its
    /// delta-method standard error; samples of weight 0 may hold any value, even infinite.
    pub fn mean(&self, a: &[f64]) -> Result<Metric> {
        if a.len() != self.weights.len() {
            bail!(
                "the observable has {} values for {} samples",
                a.len(),
                self.weights.len()
            );
        }
        let used = || self.weights.iter().zip(a).filter(|(w, _)| **w > 0.0);
        if let Some(i) = used().position(|(_, v)| !v.is_finite()) {
            bail!("a weighted sample's observable is not finite (the {i}-th of weight > 0)");
        }
        let mean: f64 = used().map(|(w, v)| w * v).sum();
        let var: f64 = used().map(|(w, v)| (w * (v - mean)).powi(2)).sum();
        Ok(over_samples(mean, Some(var.sqrt()), WEIGHTED, a.len()))
    }
}

/// A number estimated from n model samples, with its standard error and definition.
fn over_samples(value: f64, se: Option<f64>, definition: &'static str, n: usize) -> Metric {
    Metric {
        value,
        se,
        definition,
        n_samples: Some(n),
        n_reference: None,
        floor: None,
    }
}

/// The plain mean of an observable over the model's samples, (1/n) Σ A_i ± sd/√n.
pub fn unweighted_mean(a: &[f64]) -> Result<Metric> {
    let (value, se) = plain_mean(a, "sample")?;
    Ok(over_samples(value, Some(se), UNWEIGHTED, a.len()))
}

/// The mean of an observable over reference configurations (e.g. MCMC draws of the Boltzmann
/// density), (1/m) Σ A_j ± sd/√m: what the reweighted mean estimates.
pub fn reference_mean(a: &[f64]) -> Result<Metric> {
    let (value, se) = plain_mean(a, "reference row")?;
    Ok(Metric {
        value,
        se: Some(se),
        definition: REFERENCE,
        n_samples: None,
        n_reference: Some(a.len()),
        floor: None,
    })
}

/// Mean and standard error of finite values; an empty set or a non-finite value (named by its
/// row, a `what`) is an error.
fn plain_mean(a: &[f64], what: &str) -> Result<(f64, f64)> {
    if let Some(i) = a.iter().position(|v| !v.is_finite()) {
        bail!("{what} {i}: its observable is {}", a[i]);
    }
    if a.is_empty() {
        bail!("no {what}s to average");
    }
    Ok(mean_and_sem(a))
}

/// Probability-flow ODE samples of a model with their log-densities and energies, reweighted
/// towards a potential's Boltzmann density.
pub struct FlowReweighting {
    /// The samples x_i = scale · x_model, data coordinates.
    pub samples: Points,
    /// log q(x_i) in data coordinates: log q_model(x_i/scale) − dof · ln scale.
    pub log_q: Vec<f64>,
    /// U(x_i).
    pub energy: Vec<f64>,
    /// The weights w_i = exp(−βU(x_i)) / q(x_i) and their estimates.
    pub reweighting: Reweighting,
    /// Evaluations of the ODE's right-hand side (score and divergence).
    pub nfe: usize,
}

/// n samples of `model` (data units = `scale` model units) by the probability-flow ODE from
/// prior draws of ChaCha8 `seed` (`likelihood::generate` with `opts`), with log q and U of each
/// and the importance weights towards exp(−βU). The model's space and the potential's must agree:
/// both densities are then on the same space (the centre-of-mass-free subspace for particles).
#[allow(clippy::too_many_arguments)]
pub fn flow_reweighting(
    model: &dyn DivergenceModel,
    process: &dyn Process,
    potential: &dyn Potential,
    scale: f64,
    n: usize,
    seed: u64,
    opts: &Options,
    device: &Device,
) -> Result<FlowReweighting> {
    let d = model.dim();
    if potential.dim() != d {
        bail!(
            "the model has dimension {d}, the potential {}",
            potential.dim()
        );
    }
    if potential.space() != process.space() {
        bail!(
            "the model lives on {:?} but the potential on {:?}: their densities would be on different spaces",
            process.space(),
            potential.space()
        );
    }
    if n == 0 {
        bail!("reweighting needs at least one sample");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let z = crate::sample::prior_sample(process, n, d, &mut rng, device)?;
    let (x, out) = likelihood::generate(model, process, &z, opts)?;
    let x: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let samples = Points::new(n, d, x)?.scaled(scale);
    let shift = process.space().dof(d) as f64 * scale.ln();
    let log_q: Vec<f64> = out.log_p0.iter().map(|l| l - shift).collect();
    let energy = potential.energy(&samples.data)?;
    let beta = potential.beta();
    let log_p: Vec<f64> = energy.iter().map(|u| -beta * u).collect();
    Ok(FlowReweighting {
        reweighting: reweight(&log_q, &log_p)?,
        samples,
        log_q,
        energy,
        nfe: out.nfe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    /// q = N(0, I_d), p̃ = c·exp(−‖x‖²/(2s²)) with s² = 0.8, d = 10: Z = c (2π s²)^{d/2}, the
    /// ESS fraction tends to (s √(2 − s²))^d = 0.96^5 (E_q[w]² / E_q[w²]), and ⟨‖x‖²/(2s²)⟩_p =
    /// d/2 = 5 where q's own mean is d/(2s²) = 6.25. A huge c (e^800) checks that nothing overflows.
    #[test]
    fn gaussian_weights_recover_z_ess_and_the_mean() {
        let (n, d, s2) = (200_000, 10usize, 0.8);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        let (mut log_q, mut log_p, mut u) = (vec![], vec![], vec![]);
        let log_c = 800.0;
        for _ in 0..n {
            let r2: f64 = (0..d)
                .map(|_| {
                    let e: f64 = StandardNormal.sample(&mut rng);
                    e * e
                })
                .sum();
            log_q.push(-0.5 * r2 - 0.5 * d as f64 * ln2pi);
            u.push(r2 / (2.0 * s2));
            log_p.push(log_c - r2 / (2.0 * s2));
        }
        let r = reweight(&log_q, &log_p).unwrap();
        let log_z = log_c + 0.5 * d as f64 * (ln2pi + f64::ln(s2));
        let se = r.log_z.se.unwrap();
        assert!(se > 0.0 && se < 0.01, "{se}");
        assert!(
            (r.log_z.value - log_z).abs() < 3.0 * se,
            "log Z {} ± {se} vs {log_z}",
            r.log_z.value
        );
        // the ESS fraction's own spread at n = 2·10⁵ with bounded weights is ~0.001
        let ess = (s2.sqrt() * (2.0 - s2).sqrt()).powi(d as i32);
        assert!(
            (r.ess_fraction.value - ess).abs() < 0.005,
            "ESS fraction {} vs {ess}",
            r.ess_fraction.value
        );
        assert!((r.ess.value / n as f64 - r.ess_fraction.value).abs() < 1e-12);
        let m = r.mean(&u).unwrap();
        let m_se = m.se.unwrap();
        assert!((m.value - 5.0).abs() < 3.0 * m_se, "{m:?}");
        let plain = unweighted_mean(&u).unwrap();
        assert!(
            (plain.value - 6.25).abs() < 3.0 * plain.se.unwrap(),
            "{plain:?}"
        );
        assert!((plain.value - m.value).abs() > 30.0 * m_se);
        assert!((r.weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    /// Equal weights: ESS = n, log Ẑ = log w exactly with se 0; an infinite energy is a zero
    /// weight, a NaN is an error naming the sample.
    #[test]
    fn edge_cases() {
        let r = reweight(&[0.0; 4], &[-2.0; 4]).unwrap();
        assert_eq!(
            (r.ess.value, r.log_z.value, r.log_z.se),
            (4.0, -2.0, Some(0.0))
        );
        let r = reweight(&[0.0; 3], &[0.0, f64::NEG_INFINITY, 0.0]).unwrap();
        assert_eq!((r.ess.value, r.zero_weights), (2.0, 1));
        assert!((r.log_z.value - (2.0f64 / 3.0).ln()).abs() < 1e-12);
        let m = r.mean(&[1.0, f64::INFINITY, 3.0]).unwrap();
        // w̄ = (½, 0, ½): se² = (½·(1 − 2))² + (½·(3 − 2))² = ½
        assert_eq!(m.value, 2.0);
        assert!((m.se.unwrap() - 0.5f64.sqrt()).abs() < 1e-12);
        let err = reweight(&[0.0, f64::NAN], &[0.0, 0.0]).unwrap_err();
        assert!(err.to_string().contains("sample 1"), "{err}");
        assert!(reweight(&[0.0], &[0.0, 1.0]).is_err());
        assert!(reweight(&[], &[]).is_err());
        assert!(reweight(&[0.0], &[f64::NEG_INFINITY]).is_err());
    }
}

/// End to end: probability-flow samples of exact scores of a *wrong* Gaussian, reweighted towards
/// a potential whose Z and ⟨U⟩ are known in closed form.
#[cfg(test)]
mod flow_tests {
    use super::*;
    use crate::process::{ProcessConfig, Space};
    use crate::target::SubspaceGaussian;
    use crate::target::{potential::each_row, ExactScore, GaussianMixture, MixtureEnergy};
    use std::sync::Arc;

    /// dopri5 at rtol = atol = 1e-5, exact divergence, t_min = 1e-5.
    fn opts() -> Options {
        Options::default()
    }

    /// |estimate − truth| < 3 se, and the se small enough for that to mean something.
    fn within(what: &str, m: &Metric, truth: f64, max_se: f64) {
        let se = m.se.unwrap();
        assert!(se > 0.0 && se < max_se, "{what}: se {se}");
        assert!(
            (m.value - truth).abs() < 3.0 * se,
            "{what}: {} ± {se} vs {truth}",
            m.value
        );
    }

    /// Full space, kT = 2: U = −log N(x; μ, Σ) so p ∝ N^{1/2} = N(μ, 2Σ) with
    /// Z = (2π)^{d/4} 2^{d/2} |Σ|^{1/4} and ⟨U⟩ = d + ½ log((2π)^d |Σ|); the model is the exact
    /// score of N(μ, 3Σ), 1.5× too wide, whose own mean energy is d/2 higher.
    #[test]
    fn flow_samples_reweight_to_a_tempered_gaussian() {
        let (mu, cov) = (vec![1.0, -0.5], vec![1.0, 0.3, 0.3, 0.5]);
        let det: f64 = 1.0 * 0.5 - 0.09;
        let d = 2.0;
        let wide =
            GaussianMixture::gaussian(mu.clone(), cov.iter().map(|c| 3.0 * c).collect()).unwrap();
        let process: Arc<dyn Process> = Arc::from(ProcessConfig::vp_default().build().unwrap());
        let model = ExactScore {
            mixture: wide,
            process: process.clone(),
        };
        let potential = MixtureEnergy {
            mixture: GaussianMixture::gaussian(mu, cov).unwrap(),
            kt: 2.0,
        };
        let f = flow_reweighting(
            &model,
            process.as_ref(),
            &potential,
            1.0,
            2000,
            3,
            &opts(),
            &Device::Cpu,
        )
        .unwrap();
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        let log_z = d / 4.0 * ln2pi + d / 2.0 * 2f64.ln() + 0.25 * det.ln();
        let mean_u = d + 0.5 * (d * ln2pi + det.ln());
        let r = &f.reweighting;
        within("log Z", &r.log_z, log_z, 0.02);
        within("<U>", &r.mean(&f.energy).unwrap(), mean_u, 0.1);
        let plain = unweighted_mean(&f.energy).unwrap();
        within("model's <U>", &plain, mean_u + d / 2.0, 0.1);
        assert!(
            r.ess_fraction.value > 0.8 && r.ess_fraction.value < 0.95,
            "{r:?}"
        );
    }

    /// U = ‖x‖²/2 of 4 particles in 2-D, on the centre-of-mass-free subspace (dof = 6).
    struct Harmonic;
    impl Potential for Harmonic {
        fn dim(&self) -> usize {
            8
        }
        fn energy_force(&self, x: &[f64], e: &mut [f64], f: &mut [f64]) -> Result<()> {
            each_row(x, 8, e, f, |x, f| {
                f.iter_mut().zip(x).for_each(|(f, x)| *f = -x);
                0.5 * x.iter().map(|v| v * v).sum::<f64>()
            })
        }
        fn particles(&self) -> Option<(usize, usize)> {
            Some((4, 2))
        }
    }

    /// On the subspace: Z = (2π)^{dof/2} and ⟨U⟩ = dof/2 with dof = 6 (not 8: log q must be the
    /// subspace density), from flow samples of N(0, 2P) whose log q is checked against its closed
    /// form; a model on all of R^8 is refused.
    #[test]
    fn flow_samples_reweight_on_the_centre_of_mass_free_subspace() {
        let space = Space::ComFree {
            particles: 4,
            dim: 2,
        };
        let process: Arc<dyn Process> =
            Arc::from(ProcessConfig::vp_default().build_in(space).unwrap());
        let model = SubspaceGaussian {
            dim: 8,
            var0: 2.0,
            process: process.clone(),
        };
        let o = opts();
        let f = flow_reweighting(
            &model,
            process.as_ref(),
            &Harmonic,
            1.0,
            2000,
            4,
            &o,
            &Device::Cpu,
        )
        .unwrap();
        let exact = model.log_prob(&f.samples.data, 1e-5);
        let worst = f
            .log_q
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-3, "log q off its closed form by {worst}");
        let dof = 6.0;
        let r = &f.reweighting;
        within(
            "log Z",
            &r.log_z,
            dof / 2.0 * (2.0 * std::f64::consts::PI).ln(),
            0.05,
        );
        within("<U>", &r.mean(&f.energy).unwrap(), dof / 2.0, 0.15);
        // scaled data units: the same answers (x = 2 x_model, log q shifted by dof·ln 2)
        let scaled = SubspaceGaussian {
            dim: 8,
            var0: 0.5,
            process: process.clone(),
        };
        let g = flow_reweighting(
            &scaled,
            process.as_ref(),
            &Harmonic,
            2.0,
            2000,
            4,
            &o,
            &Device::Cpu,
        )
        .unwrap();
        assert!((g.reweighting.log_z.value - r.log_z.value).abs() < 1e-3);
        let full: Arc<dyn Process> = Arc::from(ProcessConfig::vp_default().build().unwrap());
        let err = flow_reweighting(
            &model,
            full.as_ref(),
            &Harmonic,
            1.0,
            10,
            0,
            &o,
            &Device::Cpu,
        );
        assert!(err.is_err());
    }
}
