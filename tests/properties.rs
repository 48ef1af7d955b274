//! Properties that must hold for every input (proptest, modest case counts: seconds in all):
//! α_t² + σ_t² = 1 for the variance-preserving processes, t(λ(t)) = t for every process, mixture
//! scores finite and equal to the gradient of the log-density, sampler outputs finite for finite
//! inputs, and encode/decode round trips of the likelihood's ODE.

use candle_core::{Device, Tensor};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use tweedie::likelihood;
use tweedie::process::{Process, ProcessConfig};
use tweedie::sample::{self, grid::Grid, Options, Plan, Trace};
use tweedie::target::{ExactScore, GaussianMixture};

/// Any of the four processes with parameters drawn around their defaults.
fn any_process() -> impl Strategy<Value = ProcessConfig> {
    prop_oneof![
        (0.01f64..1.0, 1.0f64..40.0).prop_map(|(beta_min, beta_max)| ProcessConfig::Vp {
            beta_min,
            beta_max,
            t_min: 1e-3
        }),
        (0.01f64..1.0, 1.0f64..40.0).prop_map(|(beta_min, beta_max)| ProcessConfig::Subvp {
            beta_min,
            beta_max,
            t_min: 1e-3
        }),
        (0.001f64..0.05).prop_map(|s| ProcessConfig::Cosine {
            s,
            t_min: 1e-3,
            t_max: 0.999
        }),
        (0.001f64..0.1, 1.0f64..100.0).prop_map(|(sigma_min, sigma_max)| ProcessConfig::Ve {
            sigma_min,
            sigma_max,
            t_min: 1e-3
        }),
    ]
}

/// A 2-D mixture of 1–3 components: means in [−5, 5]², covariances [[a, c], [c, b]] positive
/// definite with eigenvalues bounded away from 0.
fn any_mixture() -> impl Strategy<Value = GaussianMixture> {
    prop::collection::vec(
        (
            0.1f64..1.0,
            (-5.0f64..5.0, -5.0f64..5.0),
            (0.1f64..2.0, 0.1f64..2.0, -0.9f64..0.9),
        ),
        1..4,
    )
    .prop_map(|comps| {
        let weights = comps.iter().map(|c| c.0).collect();
        let means = comps.iter().map(|c| vec![c.1 .0, c.1 .1]).collect();
        let covs = comps
            .iter()
            .map(|&(_, _, (a, b, r))| {
                let c = r * (a * b).sqrt();
                vec![a, c, c, b]
            })
            .collect();
        GaussianMixture::new(weights, means, covs).expect("positive definite")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// α_t² + σ_t² = 1 for the variance-preserving processes (VP, cosine), at every t.
    #[test]
    fn vp_keeps_variance(cfg in any_process(), u in 0.0f64..1.0) {
        let p = cfg.build().expect("process");
        let t = p.t_min() + u * (p.t_max() - p.t_min());
        if matches!(cfg, ProcessConfig::Vp { .. } | ProcessConfig::Cosine { .. }) {
            let (a, s) = (p.alpha(t), p.sigma(t));
            prop_assert!((a * a + s * s - 1.0).abs() < 1e-12, "{cfg:?} t {t}: α {a} σ {s}");
        }
        // every process: 0 < σ, 0 < α ≤ 1, all finite
        prop_assert!(p.sigma(t) > 0.0 && p.sigma(t).is_finite());
        prop_assert!(p.alpha(t) > 0.0 && p.alpha(t) <= 1.0);
    }

    /// t(λ(t)) = t for every process on its whole time range.
    #[test]
    fn log_snr_inverts(cfg in any_process(), u in 0.0f64..1.0) {
        let p = cfg.build().expect("process");
        let t = p.t_min() + u * (p.t_max() - p.t_min());
        let back = p.t_at_lambda(p.lambda(t));
        prop_assert!((back - t).abs() < 1e-7 * t.max(1e-3) * 1e3, "{cfg:?}: t {t} -> λ {} -> {back}", p.lambda(t));
    }

    /// The exact score of a diffused mixture is finite everywhere (far from every mode too) and
    /// equals the gradient of its log-density (central differences).
    #[test]
    fn mixture_score_is_the_gradient(
        m in any_mixture(),
        x in (-8.0f64..8.0, -8.0f64..8.0),
        far in (-1e4f64..1e4, -1e4f64..1e4),
        cfg in any_process(),
        u in 0.0f64..1.0,
    ) {
        let p = cfg.build().expect("process");
        let t = p.t_min() + u * (p.t_max() - p.t_min());
        let (a, s) = (p.alpha(t), p.sigma(t));
        let (lp, score) = m.log_prob_and_score_at(&[x.0, x.1, far.0, far.1], a, s).expect("score");
        prop_assert!(lp.iter().chain(&score).all(|v| v.is_finite()), "{lp:?} {score:?}");
        let h = 1e-5;
        for j in 0..2 {
            let mut plus = [x.0, x.1];
            let mut minus = plus;
            plus[j] += h;
            minus[j] -= h;
            let (lpp, _) = m.log_prob_and_score_at(&plus, a, s).expect("lp");
            let (lpm, _) = m.log_prob_and_score_at(&minus, a, s).expect("lp");
            let fd = (lpp[0] - lpm[0]) / (2.0 * h);
            prop_assert!(
                (fd - score[j]).abs() < 1e-4 * (1.0 + score[j].abs()),
                "coordinate {j}: finite difference {fd}, score {}", score[j]
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every sampler gives finite samples from finite inputs, for any process, step count and seed.
    #[test]
    fn samplers_give_finite_samples(
        sampler in prop::sample::select(sample::SAMPLERS.iter().map(|s| s.name).collect::<Vec<_>>()),
        cfg in any_process(),
        m in any_mixture(),
        steps in 2usize..12,
        seed in any::<u64>(),
    ) {
        let process: Arc<dyn Process> = Arc::from(cfg.build().expect("process"));
        let model = ExactScore { mixture: m, process: process.clone() };
        let plan = Plan {
            sampler,
            grid: Grid::parse("auto", sampler).expect("grid"),
            steps,
            options: Options::default(),
            denoise_final: seed % 2 == 0,
        };
        let x = sample::generate(
            &model,
            process.as_ref(),
            &plan,
            16,
            &mut ChaCha8Rng::seed_from_u64(seed),
            &Device::Cpu,
            &mut Trace::default(),
        )
        ;
        // finite samples, or an error that says the state blew up (a Langevin step too large for
        // a process far from the defaults): never non-finite values returned as samples
        match x {
            Ok(x) => {
                let v: Vec<f32> = x.flatten_all().and_then(|x| x.to_vec1()).expect("values");
                prop_assert!(v.iter().all(|v| v.is_finite()), "{sampler} {cfg:?}: {v:?}");
            }
            Err(e) => prop_assert!(format!("{e:#}").contains("unstable"), "{sampler}: {e:#}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// decode(encode(x)) = x along the probability-flow ODE (Dopri5 at rtol = atol = 1e-9), for
    /// points of the data distribution.
    #[test]
    fn encode_decode_round_trip(
        m in any_mixture(),
        seed in any::<u64>(),
        vp in any::<bool>(),
    ) {
        // points drawn from the data distribution: the flow is a diffeomorphism, but a point of
        // negligible density (between narrow modes) maps to an exponentially thin set of z, which
        // no finite tolerance decodes back
        let pts = m.sample(4, &mut ChaCha8Rng::seed_from_u64(seed)).data;
        let cfg = if vp {
            ProcessConfig::vp_default()
        } else {
            ProcessConfig::from_name("ve", 20.0).expect("ve")
        };
        let process: Arc<dyn Process> = Arc::from(cfg.build().expect("process"));
        let model = ExactScore { mixture: m, process: process.clone() };
        let x = Tensor::from_vec(pts.clone(), (4, 2), &Device::Cpu).expect("x");
        let tol = tweedie::ode::Tolerance { rtol: 1e-9, atol: 1e-9, max_nfe: 1_000_000 };
        let opts = likelihood::Options {
            solver: likelihood::Solver::Dopri5(tol),
            ..likelihood::Options::default()
        };
        let (z, _) = likelihood::encode(&model, process.as_ref(), &x, &opts).expect("encode");
        let zs: Vec<f64> = z.flatten_all().and_then(|z| z.to_vec1()).expect("z");
        prop_assert!(zs.iter().all(|v| v.is_finite()));
        let (back, _) = likelihood::decode(&model, process.as_ref(), &z, &opts).expect("decode");
        let back: Vec<f64> = back.flatten_all().and_then(|b| b.to_vec1()).expect("back");
        for (a, b) in pts.iter().zip(&back) {
            prop_assert!((a - b).abs() < 2e-3 * (1.0 + a.abs()), "{pts:?} -> {back:?}");
        }
    }
}
