use super::*;
use crate::process::ProcessConfig;
use crate::target::{ExactScore, GaussianMixture};
use candle_core::Device;
use rand_distr::StandardNormal;
use std::sync::Arc;

const T_MIN: f64 = 1e-5;

fn dopri(tol: f64) -> Options {
    Options {
        solver: Solver::Dopri5(Tolerance {
            rtol: tol,
            atol: tol,
            max_nfe: 100_000,
        }),
        divergence: Divergence::Exact,
        t_min: Some(T_MIN),
    }
}

/// `dopri(1e-5)` with K Rademacher probes per point drawn from `seed`.
fn hutchinson(probes: usize, seed: u64) -> Options {
    Options {
        divergence: Divergence::Hutchinson {
            probes,
            probe: Probe::Rademacher,
            seed,
        },
        ..dopri(1e-5)
    }
}

fn exact(
    mixture: &GaussianMixture,
    process: &str,
    sigma_max: f64,
) -> (ExactScore, Arc<dyn Process>) {
    let p: Arc<dyn Process> = Arc::from(
        ProcessConfig::from_name(process, sigma_max)
            .and_then(|c| c.build())
            .expect("process"),
    );
    let model = ExactScore {
        mixture: mixture.clone(),
        process: p.clone(),
    };
    (model, p)
}

fn to_tensor(x: &Points) -> Tensor {
    Tensor::from_vec(x.data.clone(), (x.n, x.d), &Device::Cpu).expect("tensor")
}

/// Exact log p_{t_min} of the diffused mixture at x: what the ODE likelihood should return.
fn true_log_p(mixture: &GaussianMixture, p: &dyn Process, x: &Points) -> Vec<f64> {
    mixture
        .log_prob_and_score_at(&x.data, p.alpha(T_MIN), p.sigma(T_MIN))
        .expect("log p")
        .0
}

/// Mean absolute errors against the exact log p_{t_min}(x) of (a) the ODE likelihood with the
/// process's prior N(0, prior_std² I) and (b) the identity log p_T(z) + ∫∇·v with the exact
/// diffused p_T, which isolates the solver and the divergence from the prior's mismatch; and NFE.
fn ode_errors(
    mixture: &GaussianMixture,
    process: &str,
    sigma_max: f64,
    n: usize,
) -> (f64, f64, usize) {
    let (model, p) = exact(mixture, process, sigma_max);
    let x = mixture.sample(n, &mut ChaCha8Rng::seed_from_u64(7));
    let out = log_prob(&model, p.as_ref(), &to_tensor(&x), &dopri(1e-5)).expect("log_prob");
    let want = true_log_p(mixture, p.as_ref(), &x);
    let z: Vec<f64> = out.z.flatten_all().and_then(|z| z.to_vec1()).expect("z");
    let t_max = p.t_max();
    let (log_pt, _) = mixture
        .log_prob_and_score_at(&z, p.alpha(t_max), p.sigma(t_max))
        .expect("log p_T");
    let mae = |got: &mut dyn Iterator<Item = f64>| {
        got.zip(&want).map(|(a, b)| (a - b).abs()).sum::<f64>() / n as f64
    };
    let with_prior = mae(&mut out.log_p0.iter().copied());
    let with_exact_pt = mae(&mut log_pt.iter().zip(&out.delta_log_p).map(|(a, b)| a + b));
    (with_prior, with_exact_pt, out.nfe)
}

/// With the exact score of a mixture the ODE likelihood is log p_{t_min}: to 2e-4 nats given the
/// exact p_T (rtol = atol = 1e-5), and to `prior_tol` with the prior, whose mismatch with p_T is
/// of the size α_T·|z·mean| (VP: α_T = 6.6e-3, 1.1e-3 nats on anisotropic3) or |z·mean|/σ_max²
/// (VE, σ_max = 100: 1.7e-3 nats).
fn check_mixture(
    mixture: &GaussianMixture,
    name: &str,
    processes: &[&str],
    n: usize,
    prior_tol: f64,
) {
    for process in processes {
        let (prior, exact_pt, nfe) = ode_errors(mixture, process, 100.0, n);
        eprintln!("{name} {process}: mean |error| {prior:.2e} nats with the prior, {exact_pt:.2e} with exact p_T, NFE {nfe}");
        assert!(
            exact_pt < 2e-4,
            "{process}: mean absolute error {exact_pt} with exact p_T"
        );
        assert!(
            prior < prior_tol,
            "{process}: mean absolute error {prior} with the prior"
        );
    }
}

#[test]
fn exact_score_likelihood_matches_density_2d() {
    let all = ["vp", "subvp", "cosine", "ve"];
    check_mixture(
        &GaussianMixture::anisotropic3(),
        "anisotropic3",
        &all,
        1000,
        2.5e-3,
    );
}

/// A random SPD d×d covariance A Aᵀ/d + 0.2 I (row-major).
fn random_spd(d: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let a: Vec<f64> = (0..d * d).map(|_| rng.sample(StandardNormal)).collect();
    (0..d * d)
        .map(|ij| {
            let (i, j) = (ij / d, ij % d);
            let aat: f64 = (0..d).map(|k| a[i * d + k] * a[j * d + k]).sum();
            aat / d as f64 + if i == j { 0.2 } else { 0.0 }
        })
        .collect()
}

/// Three anisotropic Gaussians in 10 dimensions with random SPD covariances (seed 3).
fn mixture_10d() -> GaussianMixture {
    let d = 10;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let means = (0..3)
        .map(|_| {
            (0..d)
                .map(|_| 1.5 * rng.sample::<f64, _>(StandardNormal))
                .collect()
        })
        .collect();
    let covs = (0..3).map(|_| random_spd(d, &mut rng)).collect();
    GaussianMixture::new(vec![0.5, 0.3, 0.2], means, covs).expect("valid mixture")
}

#[test]
fn exact_score_likelihood_matches_density_10d() {
    check_mixture(
        &mixture_10d(),
        "10-D mixture",
        &["vp", "subvp", "cosine", "ve"],
        300,
        2e-2,
    );
}

/// Hutchinson's estimate is unbiased: over repeated probe draws its mean is within 3 standard
/// errors of the exact-divergence likelihood (same fixed-step trajectory), and its spread falls
/// like 1/√K.
#[test]
fn hutchinson_is_unbiased() {
    let gm = GaussianMixture::anisotropic3();
    let (model, p) = exact(&gm, "vp", 1.0);
    let n = 50;
    let x = to_tensor(&gm.sample(n, &mut ChaCha8Rng::seed_from_u64(5)));
    let solver = Solver::Fixed {
        method: Method::Rk4,
        steps: 40,
    };
    let run = |divergence| {
        let opts = Options {
            solver,
            divergence,
            t_min: Some(T_MIN),
        };
        log_prob(&model, p.as_ref(), &x, &opts)
            .expect("log_prob")
            .log_p0
    };
    let reference = run(Divergence::Exact);
    let repeats = 20;
    for probe in [Probe::Rademacher, Probe::Gaussian] {
        let mut spread = Vec::new();
        for k in [1, 4, 16] {
            // differences to the exact value: independent across points and repeats
            let diffs: Vec<f64> = (0..repeats)
                .flat_map(|r| {
                    let est = run(Divergence::Hutchinson {
                        probes: k,
                        probe,
                        seed: 100 + r,
                    });
                    est.into_iter()
                        .zip(&reference)
                        .map(|(a, b)| a - b)
                        .collect::<Vec<_>>()
                })
                .collect();
            let (mean, se) = mean_and_sem(&diffs);
            let sd = se * (diffs.len() as f64).sqrt();
            eprintln!(
                "{probe:?} K={k:2}: bias {mean:+.4} ± {se:.4} (s.e.), per-point s.d. {sd:.4} nats"
            );
            assert!(
                mean.abs() < 3.0 * se,
                "{probe:?} K={k}: bias {mean} vs s.e. {se}"
            );
            spread.push(sd);
        }
        let ratio = spread[0] / spread[2];
        assert!(
            (2.5..6.5).contains(&ratio),
            "{probe:?}: s.d. K=1 / K=16 = {ratio}, expected ≈ 4"
        );
    }
}

/// decode(encode(x)) = x with tight tolerances, and z has the prior's scale.
#[test]
fn encode_decode_round_trip() {
    let gm = GaussianMixture::anisotropic3();
    for process in ["vp", "ve"] {
        let (model, p) = exact(&gm, process, 20.0);
        let x = to_tensor(&gm.sample(200, &mut ChaCha8Rng::seed_from_u64(9)));
        let opts = dopri(1e-7);
        let (z, nfe_enc) = encode(&model, p.as_ref(), &x, &opts).expect("encode");
        let (back, nfe_dec) = decode(&model, p.as_ref(), &z, &opts).expect("decode");
        let err = (back - &x)
            .and_then(|e| e.abs()?.max_all()?.to_scalar::<f64>())
            .expect("error");
        let z_sd = z
            .sqr()
            .and_then(|v| v.mean_all()?.to_scalar::<f64>())
            .expect("z")
            .sqrt();
        eprintln!(
            "{process}: round-trip max error {err:.2e}, NFE {nfe_enc}+{nfe_dec}, z s.d. {z_sd:.3}"
        );
        assert!(err < 1e-4, "{process}: round trip error {err}");
        let prior = p.prior_std();
        assert!(
            (z_sd / prior - 1.0).abs() < 0.3,
            "{process}: z s.d. {z_sd} vs {prior}"
        );
    }
}

/// Uniform on [lo, hi]^D is 8 bits/dim; a model uniform on one dequantisation cell is 0.
#[test]
fn bits_per_dim_known_answers() {
    for (lo, hi) in [(-1.0, 1.0), (0.0, 1.0), (0.0, 256.0)] {
        let q = Dequantisation::new(lo, hi).expect("range");
        let dim = 3072;
        let uniform = -(dim as f64) * (hi - lo).ln();
        assert!((q.bits_per_dim(uniform, dim) - 8.0).abs() < 1e-12);
        let one_cell = -(dim as f64) * q.scale().ln();
        assert!(q.bits_per_dim(one_cell, dim).abs() < 1e-12);
        // the offset for [−1, 1] is +7, for [0, 1] +8
        let offset = q.bits_per_dim(0.0, dim);
        assert!((offset - (8.0 - (hi - lo).log2())).abs() < 1e-12);
    }
    // a Gaussian N(0, σ²) per pixel in [0, 1] coordinates: bpd = (½ log 2πeσ² )/ln 2 + 8 in expectation
    let q = Dequantisation::new(0.0, 1.0).expect("range");
    let sigma: f64 = 0.1;
    let expected_log_p =
        -0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * sigma * sigma).ln();
    let want = -expected_log_p / std::f64::consts::LN_2 + 8.0;
    assert!((q.bits_per_dim(expected_log_p, 1) - want).abs() < 1e-12);
}

#[test]
fn dequantisation_checks_its_input() {
    let q = Dequantisation::new(-1.0, 1.0).expect("range");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let k = Points::new(2, 2, vec![0.0, 255.0, 17.0, 128.0]).expect("points");
    let x = q.dequantise(&k, &mut rng).expect("dequantise");
    for (xi, ki) in x.data.iter().zip(&k.data) {
        let cell = -1.0 + ki / 128.0;
        assert!(
            *xi >= cell && *xi < cell + 1.0 / 128.0,
            "{xi} not in cell of {ki}"
        );
    }
    let bad = Points::new(1, 2, vec![3.5, 1.0]).expect("points");
    assert!(q.dequantise(&bad, &mut rng).is_err());
    assert!(Dequantisation::new(1.0, -1.0).is_err());
}

#[test]
fn bad_input_is_an_error() {
    let gm = GaussianMixture::anisotropic3();
    let (model, p) = exact(&gm, "vp", 1.0);
    let x = Tensor::new(&[[0.0f64, f64::NAN]], &Device::Cpu).expect("x");
    let err = log_prob(&model, p.as_ref(), &x, &dopri(1e-5))
        .err()
        .expect("NaN");
    assert!(err.to_string().contains("NaN"), "{err}");
    let x3 = Tensor::zeros((2, 3), DType::F64, &Device::Cpu).expect("x");
    let err = log_prob(&model, p.as_ref(), &x3, &dopri(1e-5))
        .err()
        .expect("dim");
    assert!(err.to_string().contains("dimension 3"), "{err}");
    let x = Tensor::zeros((2, 2), DType::F64, &Device::Cpu).expect("x");
    assert!(log_prob(&model, p.as_ref(), &x, &dopri(-1.0)).is_err());
    let mut late = dopri(1e-5);
    late.t_min = Some(2.0);
    assert!(log_prob(&model, p.as_ref(), &x, &late).is_err());
}

/// A network's outputs carry its autograd graph (its weights are `Var`s); the solves must cut it
/// so that the state does not keep every earlier stage alive (memory grew with the NFE: 5 GB for
/// 1000 points, and most of the time went to page faults).
#[test]
fn solves_do_not_keep_the_network_graph() {
    use crate::nn::{Model, ModelConfig};
    let vp = ProcessConfig::vp_default();
    let p = vp.build().expect("process");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let net = Model::new(ModelConfig::default_for(2, vp), &mut rng, &Device::Cpu).expect("net");
    let x = Tensor::new(&[[0.1f64, -0.3], [0.5, 0.2]], &Device::Cpu).expect("x");
    let fixed = Options {
        solver: Solver::Fixed {
            method: Method::Heun,
            steps: 4,
        },
        ..Options::default()
    };
    let out = log_prob(&net, p.as_ref(), &x, &fixed).expect("log p");
    assert!(
        !out.z.track_op(),
        "the latent still holds the network's graph"
    );
    let (z, _) = encode(&net, p.as_ref(), &x, &fixed).expect("encode");
    assert!(
        !z.track_op(),
        "the encoding still holds the network's graph"
    );
}

/// A fused network's host path (score and trace straight from the flat state) gives the tensor
/// path's log p, z and NFE, with the exact divergence and with Hutchinson probes.
#[test]
fn network_host_path_matches_tensor_path() {
    use crate::nn::{Model, ModelConfig};
    let vp = ProcessConfig::vp_default();
    let p = vp.build().expect("process");
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let net = Model::new(ModelConfig::default_for(2, vp), &mut rng, &Device::Cpu)
        .and_then(Model::for_inference)
        .expect("net");
    assert!(net.host().is_some(), "the CPU network has no host path");
    let x = to_tensor(&GaussianMixture::anisotropic3().sample(100, &mut rng));
    for opts in [dopri(1e-5), hutchinson(2, 5)] {
        let host = log_prob(&net, p.as_ref(), &x, &opts).expect("host");
        crate::flat::TENSOR_STATE.set(true);
        let tensors = log_prob(&net, p.as_ref(), &x, &opts);
        crate::flat::TENSOR_STATE.set(false);
        let tensors = tensors.expect("tensor path");
        assert_eq!(host.nfe, tensors.nfe, "{:?}", opts.divergence);
        let worst = host
            .log_p0
            .iter()
            .zip(&tensors.log_p0)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-6,
            "{:?}: log p differs by {worst}",
            opts.divergence
        );
        let dz = (&host.z - tensors.z)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(dz.to_scalar::<f64>().unwrap() < 1e-6);
        // three solves at once on the host path: one keeps the pool warm (`pool::warm`), the
        // others run cold, and all finish with the joint solve's values to its tolerance
        let chunked = log_prob_chunked(&net, p.as_ref(), &x, &opts, 30, 3, None).expect("chunked");
        let mean = host
            .log_p0
            .iter()
            .zip(&chunked.log_p0)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / 100.0;
        assert!(
            mean < 1e-3,
            "{:?}: chunked vs joint {mean}",
            opts.divergence
        );
    }
}

/// Chunked solves give the same log-likelihoods for any thread count, agree with one joint solve
/// to the solver's tolerance, and draw a point's Hutchinson probes as the joint solve does.
#[test]
fn chunked_solves_match_the_joint_solve() {
    let gm = GaussianMixture::anisotropic3();
    let (model, p) = exact(&gm, "vp", 1.0);
    let x = to_tensor(&gm.sample(150, &mut ChaCha8Rng::seed_from_u64(5)));
    for opts in [dopri(1e-5), hutchinson(1, 7)] {
        let joint = log_prob(&model, p.as_ref(), &x, &opts).expect("joint");
        let one = log_prob_chunked(&model, p.as_ref(), &x, &opts, 40, 1, None).expect("1 thread");
        let three =
            log_prob_chunked(&model, p.as_ref(), &x, &opts, 40, 3, None).expect("3 threads");
        assert_eq!(one.log_p0, three.log_p0, "{:?}", opts.divergence);
        assert_eq!(one.log_p0.len(), 150);
        // rtol = atol = 1e-5 bound an RMS over all points of a solve, so single points may differ
        // by a few 1e-3 between solves with different steps (the CLI test's mean error is < 3e-3)
        let diffs: Vec<f64> = joint
            .log_p0
            .iter()
            .zip(&one.log_p0)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let (mean, worst) = (
            diffs.iter().sum::<f64>() / diffs.len() as f64,
            diffs.iter().copied().fold(0.0, f64::max),
        );
        assert!(
            mean < 1e-3 && worst < 1e-2,
            "{:?}: chunked vs joint mean {mean}, max {worst}",
            opts.divergence
        );
        assert_eq!(one.z.dims(), &[150, 2]);
    }
    assert!(log_prob_chunked(&model, p.as_ref(), &x, &dopri(1e-5), 0, 2, None).is_err());
}

/// The GPU path (the ODE state and stages kept in tensors), run on the CPU: the same log p, z and
/// NFE as the flat host path.
#[test]
fn tensor_state_matches_host_state() {
    let mixture = GaussianMixture::anisotropic3();
    let (model, p) = exact(&mixture, "vp", 100.0);
    let x = to_tensor(&mixture.sample(200, &mut ChaCha8Rng::seed_from_u64(7)));
    let host = log_prob(&model, p.as_ref(), &x, &dopri(1e-5)).expect("host");
    crate::flat::TENSOR_STATE.set(true);
    let dev = log_prob(&model, p.as_ref(), &x, &dopri(1e-5));
    crate::flat::TENSOR_STATE.set(false);
    let dev = dev.expect("tensor state");
    assert_eq!(host.nfe, dev.nfe);
    let worst = host
        .log_p0
        .iter()
        .zip(&dev.log_p0)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-9, "log p differs by {worst}");
    let dz = (host.z - dev.z).unwrap().abs().unwrap().max_all().unwrap();
    assert!(dz.to_scalar::<f64>().unwrap() < 1e-9);
}
