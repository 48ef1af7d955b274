//! Every objective: exact parameter gradients (against central finite differences), the loss
//! identities of the notes on a Gaussian mixture with exact scores, and the force target's variance.

use super::diagnostics::{fisher_at, target_variances};
use super::*;
use crate::config::{DataConfig, TrainConfig};
use crate::nn::{Activation, Arch, ModelConfig};
use crate::process::ProcessConfig;
use crate::score::Parameterisation;
use crate::target::{ExactScore, GaussianMixture};
use crate::train::{fit, DataSource};
use candle_core::DType;
use candle_core::Device;
use rand::SeedableRng;
use std::sync::Arc;

fn small_net(param: Parameterisation, activation: Activation, seed: u64) -> Model {
    let arch = Arch {
        width: 16,
        depth: 2,
        activation,
        parameterisation: param,
        embed_dim: 8,
        ..Default::default()
    };
    let cfg = ModelConfig {
        arch,
        ..ModelConfig::default_for(2, ProcessConfig::vp_default())
    };
    Model::new(cfg, &mut ChaCha8Rng::seed_from_u64(seed), &Device::Cpu).expect("net")
}

fn mixture_source() -> DataSource {
    DataSource::open(&DataConfig {
        source: "anisotropic3".into(),
        scale: 1.0,
        forces: None,
        ..DataConfig::default()
    })
    .expect("source")
}

fn truth() -> ExactScore {
    ExactScore {
        mixture: GaussianMixture::anisotropic3(),
        process: Arc::from(ProcessConfig::vp_default().build().expect("vp")),
    }
}

fn all_objectives() -> Vec<ObjectiveConfig> {
    let t = 0.05;
    vec![
        ObjectiveConfig::Dsm {
            weighting: Weighting::Sigma2,
        },
        ObjectiveConfig::Dsm {
            weighting: Weighting::G2,
        },
        ObjectiveConfig::DsmLevel { t },
        ObjectiveConfig::Ncsn { levels: 5 },
        ObjectiveConfig::Esm { t },
        ObjectiveConfig::Ism { t },
        ObjectiveConfig::Ssm {
            t,
            projection: Probe::Rademacher,
            projections: 2,
            variance_reduced: false,
        },
        ObjectiveConfig::Ssm {
            t,
            projection: Probe::Gaussian,
            projections: 1,
            variance_reduced: true,
        },
        ObjectiveConfig::Ssm {
            t,
            projection: Probe::Sphere,
            projections: 1,
            variance_reduced: false,
        },
        ObjectiveConfig::FdSsm {
            t,
            projection: Probe::Rademacher,
            eps: 0.01,
        },
        ObjectiveConfig::Force {
            weighting: Weighting::Sigma2,
        },
        ObjectiveConfig::Mixed {
            weighting: Weighting::One,
        },
    ]
}

/// Loss at the net's current weights, with a fixed batch and a fixed copy of the generator.
fn loss_at(net: &Model, obj: &ObjectiveConfig, batch: &Batch, rng: &ChaCha8Rng) -> f64 {
    obj.loss(net, batch, &mut rng.clone())
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Reverse-mode parameter gradients of every objective equal central finite differences in f64
/// (relative error below 1e-3) on the 4 largest-gradient coordinates of every tensor.
#[test]
fn parameter_gradients_match_finite_differences() {
    let source = mixture_source();
    let truth = truth();
    for (k, obj) in all_objectives().iter().enumerate() {
        for (param, act) in [
            (Parameterisation::Eps, Activation::Silu),
            (Parameterisation::X0, Activation::Tanh),
            (Parameterisation::Score, Activation::Softplus),
            (Parameterisation::Energy, Activation::Silu),
        ] {
            let net = small_net(param, act, k as u64)
                .to_dtype(DType::F64)
                .unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(100 + k as u64);
            let blend = source.blend(net.process()).unwrap();
            let batch = source
                .batch(
                    64,
                    1.0,
                    &mut rng,
                    &Device::Cpu,
                    Some(&truth),
                    blend.as_ref(),
                )
                .unwrap();
            let loss = obj.loss(&net, &batch, &mut rng.clone()).unwrap();
            let grads =
                crate::train::adam::collect_grads(net.vars(), &loss.backward().unwrap()).unwrap();
            for ((name, var), g) in net.vars().iter().zip(&grads) {
                let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
                let mut order: Vec<usize> = (0..g.len()).collect();
                order.sort_by(|a, b| g[*b].abs().total_cmp(&g[*a].abs()));
                let orig = var.as_tensor().copy().unwrap();
                let shape = orig.shape().clone();
                let base: Vec<f64> = orig.flatten_all().unwrap().to_vec1().unwrap();
                let top = g[order[0]].abs();
                for &i in order.iter().take(4).filter(|&&i| g[i].abs() > 0.05 * top) {
                    let h = 1e-5 * base[i].abs().max(0.1);
                    let at = |delta: f64| {
                        let mut v = base.clone();
                        v[i] += delta;
                        var.set(&Tensor::from_vec(v, shape.clone(), &Device::Cpu).unwrap())
                            .unwrap();
                        loss_at(&net, obj, &batch, &rng)
                    };
                    let fd = (at(h) - at(-h)) / (2.0 * h);
                    var.set(&orig).unwrap();
                    let err = (fd - g[i]).abs() / g[i].abs().max(1e-6);
                    assert!(err < 1e-3, "{} {param:?}/{act:?} {name}[{i}]: backprop {} vs finite difference {fd} (rel. err {err:.2e})", obj.name(), g[i]);
                }
            }
        }
    }
}

/// Paired Monte-Carlo estimates of ℓ_A(θ) − ℓ_B(θ) at two parameter settings, R repeats on the
/// same samples: returns (mean, standard error) of [ℓ_A − ℓ_B](θ1) − [ℓ_A − ℓ_B](θ2).
fn identity_gap(
    a: &ObjectiveConfig,
    a_scale: f64,
    b: &ObjectiveConfig,
    batch_size: usize,
) -> (f64, f64) {
    let source = mixture_source();
    let truth = truth();
    let (n1, n2) = (
        small_net(Parameterisation::Eps, Activation::Silu, 1),
        small_net(Parameterisation::Eps, Activation::Silu, 2),
    );
    let reps = 30;
    let blend = source.blend(n1.process()).unwrap();
    let diffs: Vec<f64> = (0..reps)
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + r);
            let batch = source
                .batch(
                    batch_size,
                    1.0,
                    &mut rng,
                    &Device::Cpu,
                    Some(&truth),
                    blend.as_ref(),
                )
                .unwrap();
            let d = |net: &Model| {
                a_scale * loss_at(net, a, &batch, &rng) - loss_at(net, b, &batch, &rng)
            };
            d(&n1) - d(&n2)
        })
        .collect();
    let mean = diffs.iter().sum::<f64>() / reps as f64;
    let var = diffs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (reps - 1) as f64;
    (mean, (var / reps as f64).sqrt())
}

/// ℓ_ESM − ℓ_ISM, ℓ_DSM/σ² − ℓ_ESM(p_σ), ℓ_force − ℓ_DSM are constants (independent of θ), and
/// the SSM expectation equals ISM: each paired gap within 3 standard errors of zero.
#[test]
fn loss_identities_hold() {
    let t = 0.05;
    let sigma2 = ProcessConfig::vp_default()
        .build()
        .unwrap()
        .sigma(t)
        .powi(2);
    let w = Weighting::Sigma2;
    let cases = [
        (
            "ESM − ISM",
            ObjectiveConfig::Esm { t },
            1.0,
            ObjectiveConfig::Ism { t },
        ),
        (
            "DSM/σ² − ESM",
            ObjectiveConfig::DsmLevel { t },
            1.0 / sigma2,
            ObjectiveConfig::Esm { t },
        ),
        (
            "force − DSM",
            ObjectiveConfig::Force { weighting: w },
            1.0,
            ObjectiveConfig::Dsm { weighting: w },
        ),
        (
            "mixed − DSM",
            ObjectiveConfig::Mixed { weighting: w },
            1.0,
            ObjectiveConfig::Dsm { weighting: w },
        ),
        (
            "SSM − ISM",
            ObjectiveConfig::Ssm {
                t,
                projection: Probe::Rademacher,
                projections: 4,
                variance_reduced: false,
            },
            1.0,
            ObjectiveConfig::Ism { t },
        ),
        (
            "SSM-VR − ISM",
            ObjectiveConfig::Ssm {
                t,
                projection: Probe::Gaussian,
                projections: 4,
                variance_reduced: true,
            },
            1.0,
            ObjectiveConfig::Ism { t },
        ),
    ];
    for (label, a, scale, b) in cases {
        let (mean, se) = identity_gap(&a, scale, &b, 2000);
        assert!(
            mean.abs() < 3.0 * se + 1e-4,
            "{label}: θ-dependence {mean:.4e} ± {se:.2e}"
        );
        assert!(
            se > 0.0 || label.contains("VR"),
            "{label}: a gap with no noise cannot test anything"
        );
    }
}

/// The force target F(x0)/α_t has lower variance than the noise target −ε/σ_t at small t (TSM's
/// claim; note 000): E‖target − ∇log p_t(x_t)‖², estimated on the exact mixture.
#[test]
fn force_target_has_lower_variance_at_small_t() {
    let p = ProcessConfig::vp_default().build().unwrap();
    let m = crate::target::GaussianMixture::anisotropic3();
    let rows = target_variances(&m, p.as_ref(), None, &[0.01, 0.05, 0.9], 4000, 0).unwrap();
    let (small, large) = (&rows[0], &rows[2]);
    assert!(
        small.force < 0.1 * small.dsm,
        "t = {}: force {:.3e} vs noise {:.3e}",
        small.t,
        small.force,
        small.dsm
    );
    assert!(
        large.force > large.dsm,
        "t = {}: at high noise the noise target should win ({:.3e} vs {:.3e})",
        large.t,
        large.force,
        large.dsm
    );
}

/// A 1500-step fit of every single-level objective at t = 0.2 reaches a Fisher divergence (½E‖s_θ − ∇log p_t‖²,
/// fresh samples) below 0.05 on the anisotropic three-component mixture, where an untrained
/// network is above 1.
#[test]
fn short_fits_reach_a_small_fisher_divergence() {
    let source = mixture_source();
    let truth = truth();
    let t = 0.2;
    let objectives = [
        ObjectiveConfig::DsmLevel { t },
        ObjectiveConfig::Esm { t },
        ObjectiveConfig::Ism { t },
        ObjectiveConfig::Ssm {
            t,
            projection: Probe::Rademacher,
            projections: 1,
            variance_reduced: true,
        },
        ObjectiveConfig::FdSsm {
            t,
            projection: Probe::Rademacher,
            eps: 0.01,
        },
    ];
    let mut results = Vec::new();
    for obj in objectives {
        let net = small_net(Parameterisation::Eps, Activation::Silu, 7);
        let before = fisher_at(&net, &truth, t, 2000, 5);
        let tc = TrainConfig {
            steps: 1500,
            batch: 256,
            lr: 3e-3,
            ..Default::default()
        };
        fit(
            &net,
            &obj,
            &source,
            Some(&truth),
            &tc,
            &mut ChaCha8Rng::seed_from_u64(3),
        )
        .unwrap();
        let after = fisher_at(&net, &truth, t, 2000, 5);
        eprintln!(
            "{}: Fisher divergence {before:.3} -> {after:.4}",
            obj.name()
        );
        results.push((obj.name(), before, after));
    }
    for (name, before, after) in results {
        assert!(
            before > 1.0 && after < 0.05,
            "{name}: Fisher divergence {before:.3} -> {after:.4}"
        );
    }
}

/// The continuous-time objectives reach a Fisher divergence averaged over 10 times in [t_min, T]
/// below 0.3 on the anisotropic mixture (NCSN: averaged over two of its 20 levels, as it never sees
/// other times), and the single-level ones below 0.05 at t = 0.2 on NCSN's two-mode mixture (1500
/// steps each; untrained nets are above 1).
#[test]
fn continuous_objectives_and_the_two_mode_mixture() {
    let tc = TrainConfig {
        steps: 1500,
        batch: 256,
        lr: 3e-3,
        ..Default::default()
    };
    let w = Weighting::Sigma2;
    let truth = truth();
    let source = mixture_source();
    let mut failures = Vec::new();
    for obj in [
        ObjectiveConfig::Dsm { weighting: w },
        ObjectiveConfig::Ncsn { levels: 20 },
        ObjectiveConfig::Mixed { weighting: w },
    ] {
        // all noise levels at once need a larger net than one level
        let arch = Arch {
            width: 64,
            depth: 3,
            parameterisation: Parameterisation::Eps,
            embed_dim: 16,
            ..Default::default()
        };
        let cfg = ModelConfig {
            arch,
            ..ModelConfig::default_for(2, ProcessConfig::vp_default())
        };
        let net = Model::new(cfg, &mut ChaCha8Rng::seed_from_u64(7), &Device::Cpu).unwrap();
        let p = ProcessConfig::vp_default().build().unwrap();
        let level = |k: f64| p.t_min() + (p.t_max() - p.t_min()) * k / 19.0;
        let score = |net: &Model| match obj {
            ObjectiveConfig::Ncsn { .. } => {
                0.5 * (fisher_at(net, &truth, level(2.0), 1000, 5)
                    + fisher_at(net, &truth, level(10.0), 1000, 5))
            }
            _ => super::diagnostics::fisher_over_t(net, &truth, 10, 1000, 5),
        };
        let before = score(&net);
        fit(
            &net,
            &obj,
            &source,
            Some(&truth),
            &tc,
            &mut ChaCha8Rng::seed_from_u64(3),
        )
        .unwrap();
        let after = score(&net);
        if !(before > 1.0 && after < 0.3) {
            failures.push(format!(
                "{} (anisotropic3, over t): {before:.3} -> {after:.4}",
                obj.name()
            ));
        }
    }
    let ncsn2 = DataSource::open(&DataConfig {
        source: "ncsn2".into(),
        scale: 1.0,
        forces: None,
        ..DataConfig::default()
    })
    .unwrap();
    let truth2 = ExactScore {
        mixture: GaussianMixture::ncsn2(),
        process: truth.process.clone(),
    };
    let t = 0.2;
    for obj in [
        ObjectiveConfig::DsmLevel { t },
        ObjectiveConfig::Esm { t },
        ObjectiveConfig::Ism { t },
        ObjectiveConfig::Ssm {
            t,
            projection: Probe::Gaussian,
            projections: 1,
            variance_reduced: true,
        },
        ObjectiveConfig::FdSsm {
            t,
            projection: Probe::Rademacher,
            eps: 0.01,
        },
    ] {
        let net = small_net(Parameterisation::Eps, Activation::Silu, 7);
        let before = fisher_at(&net, &truth2, t, 2000, 5);
        fit(
            &net,
            &obj,
            &ncsn2,
            Some(&truth2),
            &tc,
            &mut ChaCha8Rng::seed_from_u64(3),
        )
        .unwrap();
        let after = fisher_at(&net, &truth2, t, 2000, 5);
        if !(before > 1.0 && after < 0.05) {
            failures.push(format!(
                "{} (ncsn2, t = {t}): {before:.3} -> {after:.4}",
                obj.name()
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Importance-sampled time (`g2_is`) estimates the same loss as the likelihood weighting with
/// uniform t, with a smaller variance: means over 400 batches within 4 standard errors.
#[test]
fn importance_sampled_likelihood_weighting_is_unbiased_and_tighter() {
    let net = small_net(Parameterisation::Eps, Activation::Silu, 3);
    let source = mixture_source();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut draws = |w: Weighting| -> Vec<f64> {
        let obj = ObjectiveConfig::Dsm { weighting: w };
        (0..400)
            .map(|_| {
                let b = source
                    .batch(128, 1.0, &mut rng, &Device::Cpu, None, None)
                    .unwrap();
                loss_at(&net, &obj, &b, &rng.clone())
            })
            .collect()
    };
    let (plain, is) = (draws(Weighting::G2), draws(Weighting::G2Importance));
    let (m0, s0) = crate::metrics::mean_and_sem(&plain);
    let (m1, s1) = crate::metrics::mean_and_sem(&is);
    assert!(
        (m0 - m1).abs() < 4.0 * (s0 * s0 + s1 * s1).sqrt(),
        "g2 {m0} ± {s0} vs g2_is {m1} ± {s1}"
    );
    assert!(
        s1 < s0,
        "importance sampling should reduce the spread: {s1} vs {s0}"
    );
}

/// EDM's time draws: ln(σ_t/α_t) follows N(P_mean, P_std²) truncated to the process's
/// [t_min, T] (mean and spread against the truncated normal's, by quadrature), and every draw
/// lies in [t_min, T].
#[test]
fn edm_times_follow_the_truncated_log_normal() -> Result<()> {
    let p = ProcessConfig::vp_default().build()?;
    let (mu, sd) = (-1.2, 1.2);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let n = 20000;
    let logs: Vec<f64> = (0..n)
        .map(|_| {
            let t = regression::edm_time(p.as_ref(), mu, sd, &mut rng);
            assert!(t >= p.t_min() && t <= p.t_max());
            -p.lambda(t)
        })
        .collect();
    let (lo, hi) = (-p.lambda(p.t_min()), -p.lambda(p.t_max()));
    // truncated normal moments by the trapezoid rule
    let (mut z0, mut z1, mut z2) = (0.0, 0.0, 0.0);
    let m = 20000;
    for i in 0..=m {
        let x = lo + (hi - lo) * i as f64 / m as f64;
        let w =
            if i == 0 || i == m { 0.5 } else { 1.0 } * (-(x - mu).powi(2) / (2.0 * sd * sd)).exp();
        z0 += w;
        z1 += w * x;
        z2 += w * x * x;
    }
    let (mean, var) = (z1 / z0, z2 / z0 - (z1 / z0).powi(2));
    let got = logs.iter().sum::<f64>() / n as f64;
    let got_var = logs.iter().map(|l| (l - got).powi(2)).sum::<f64>() / n as f64;
    let se = (var / n as f64).sqrt();
    assert!(
        (got - mean).abs() < 4.0 * se,
        "mean ln σ̃ {got} vs {mean} ± {se}"
    );
    assert!(
        (got_var / var - 1.0).abs() < 0.05,
        "variance {got_var} vs {var}"
    );
    Ok(())
}
