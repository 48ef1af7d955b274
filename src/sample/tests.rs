//! Every sampler against exact Gaussian-mixture scores (no training).

use super::grid::Grid;
use super::*;
use crate::data::Points;
use crate::metrics::{mode_fractions, mode_means};
use crate::ode::Tolerance;
use crate::process::ProcessConfig;
use crate::target::{ExactScore, GaussianMixture};
use candle_core::{DType, Device};
use rand::SeedableRng;
use std::sync::Arc;

fn vp() -> Arc<dyn Process> {
    Arc::from(ProcessConfig::vp_default().build().expect("vp"))
}

#[allow(clippy::too_many_arguments)]
fn run(
    model: &dyn ScoreModel,
    p: &dyn Process,
    name: &str,
    grid: Grid,
    steps: usize,
    o: &Options,
    x: Tensor,
    seed: u64,
) -> Result<(Tensor, usize)> {
    let ts = grid.times(p, steps)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tr = Trace::default();
    let out = by_name(name)?(model, p, x, &ts, o, &mut rng, &mut tr)?;
    Ok((out, tr.nfe))
}

/// (sampler, grid, steps) budgets at which each recovers the NCSN two-mode mixture.
const BUDGETS: &[(&str, Grid, usize)] = &[
    ("em", Grid::Uniform, 1000),
    ("reverse_diffusion", Grid::Uniform, 1000),
    ("ancestral", Grid::Uniform, 1000),
    ("pc", Grid::Uniform, 500),
    ("euler", Grid::Uniform, 500),
    ("heun", Grid::Uniform, 50),
    ("rk4", Grid::Uniform, 25),
    ("dopri5", Grid::Uniform, 1),
    ("ddim", Grid::LogSnr, 100),
    ("dpm1", Grid::LogSnr, 100),
    ("dpm2", Grid::LogSnr, 20),
    ("dpm3", Grid::LogSnr, 10),
    ("dpmpp_2m", Grid::LogSnr, 20),
    ("dpmpp_3m", Grid::LogSnr, 20),
    ("edm", Grid::Karras(7.0), 20),
];

fn heavy_fraction_and_means(x: &Tensor) -> (f64, Vec<Option<Vec<f64>>>) {
    let v: Vec<f32> = x
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let pts = Points::from_f32(v.len() / 2, 2, &v).unwrap();
    let centres = vec![vec![5.0, 5.0], vec![-5.0, -5.0]];
    (
        mode_fractions(&pts, &centres)[0],
        mode_means(&pts, &centres),
    )
}

/// The NCSN check: heavy-mode fraction within 3 binomial s.d. of 0.8, both mode means within 0.1.
fn assert_two_modes(label: &str, x: &Tensor) {
    let n = x.dims()[0];
    let sd = (0.8 * 0.2 / n as f64).sqrt();
    let (frac, means) = heavy_fraction_and_means(x);
    assert!(
        (frac - 0.8).abs() < 3.0 * sd,
        "{label}: heavy-mode fraction {frac}"
    );
    for (m, c) in means.iter().zip([[5.0, 5.0], [-5.0, -5.0]]) {
        let m = m.as_ref().expect("both modes populated");
        assert!(
            (m[0] - c[0]).abs() < 0.1 && (m[1] - c[1]).abs() < 0.1,
            "{label}: mode mean {m:?} vs {c:?}"
        );
    }
}

#[test]
fn every_sampler_recovers_the_ncsn_two_modes() -> Result<()> {
    let p = vp();
    let model = ExactScore {
        mixture: GaussianMixture::ncsn2(),
        process: p.clone(),
    };
    // 10k samples: the light mode's 2000 points give its mean a standard error of 0.022 (< 0.1 / 4)
    let n = 10_000;
    let o = Options {
        langevin: super::Langevin {
            steps: 10,
            ..Default::default()
        },
        ..Default::default()
    };
    for &(name, grid, steps) in BUDGETS {
        let x_t = prior_sample(
            p.as_ref(),
            n,
            2,
            &mut ChaCha8Rng::seed_from_u64(5),
            &Device::Cpu,
        )?;
        let (x, nfe) = run(&model, p.as_ref(), name, grid, steps, &o, x_t, 9)?;
        assert_two_modes(&format!("{name} ({steps} steps, NFE {nfe})"), &x);
    }
    Ok(())
}

/// Annealed Langevin (NCSN's sampler, with NCSN's VE noise levels: geometric σ, step ∝ σ²) keeps them.
#[test]
fn annealed_langevin_keeps_the_mode_weights() -> Result<()> {
    let p: Arc<dyn Process> = Arc::from(ProcessConfig::from_name("ve", 20.0)?.build()?);
    let model = ExactScore {
        mixture: GaussianMixture::ncsn2(),
        process: p.clone(),
    };
    let n = 10_000;
    let x_t = prior_sample(
        p.as_ref(),
        n,
        2,
        &mut ChaCha8Rng::seed_from_u64(5),
        &Device::Cpu,
    )?;
    let o = Options {
        langevin: super::Langevin {
            steps: 30,
            ..Default::default()
        },
        ..Default::default()
    };
    let (x, nfe) = run(
        &model,
        p.as_ref(),
        "annealed_langevin",
        Grid::Uniform,
        100,
        &o,
        x_t,
        9,
    )?;
    assert_eq!(nfe, 3000);
    assert_two_modes("annealed Langevin", &x);
    Ok(())
}

/// Plain Langevin from the broad prior keeps the start's ~50/50 split: the 0.8 weight is lost.
#[test]
fn plain_langevin_loses_the_mode_weights() -> Result<()> {
    let p = vp();
    let model = ExactScore {
        mixture: GaussianMixture::ncsn2(),
        process: p.clone(),
    };
    let n = 10_000;
    let x_t = prior_sample(
        p.as_ref(),
        n,
        2,
        &mut ChaCha8Rng::seed_from_u64(5),
        &Device::Cpu,
    )?;
    let (x, _) = run(
        &model,
        p.as_ref(),
        "langevin",
        Grid::Uniform,
        100,
        &Options::default(),
        x_t,
        9,
    )?;
    let (frac, _) = heavy_fraction_and_means(&x);
    let sd = (0.8 * 0.2 / n as f64).sqrt();
    assert!(
        (frac - 0.8).abs() > 10.0 * sd,
        "plain Langevin unexpectedly kept the weights: {frac}"
    );
    assert!((frac - 0.5).abs() < 0.1, "plain Langevin split {frac}");
    Ok(())
}

/// PF-ODE endpoint error on a Gaussian target from fixed start points, against an accurate reference.
/// A correlated 2-D Gaussian target under VP with its exact score, and three fixed start points (f64).
fn gaussian_case() -> (Arc<dyn Process>, ExactScore, Tensor) {
    let p = vp();
    let target = GaussianMixture::gaussian(vec![1.0, -0.5], vec![0.5, 0.2, 0.2, 0.3]).unwrap();
    let model = ExactScore {
        mixture: target,
        process: p.clone(),
    };
    let x_t = Tensor::new(&[[1.2f64, -0.3], [-0.7, 0.9], [0.1, 2.0]], &Device::Cpu).unwrap();
    (p, model, x_t)
}

fn endpoint_errors(name: &str, grid: Grid, steps: &[usize]) -> Vec<f64> {
    let (p, model, x_t) = gaussian_case();
    let o = Options {
        ode: Tolerance {
            rtol: 1e-12,
            atol: 1e-12,
            max_nfe: 200_000,
        },
        ..Default::default()
    };
    let (reference, _) = run(
        &model,
        p.as_ref(),
        "dopri5",
        Grid::Uniform,
        1,
        &o,
        x_t.clone(),
        0,
    )
    .unwrap();
    steps
        .iter()
        .map(|&n| {
            let (x, _) = run(&model, p.as_ref(), name, grid, n, &o, x_t.clone(), 0).unwrap();
            (x - &reference)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
                .sqrt()
        })
        .collect()
}

#[test]
fn ode_solvers_converge_at_their_order() {
    for (name, grid, order, steps) in [
        ("euler", Grid::Uniform, 1.0, [200, 400]),
        ("heun", Grid::Uniform, 2.0, [100, 200]),
        ("rk4", Grid::Uniform, 4.0, [50, 100]),
        ("dpm1", Grid::LogSnr, 1.0, [20, 40]),
        ("dpm2", Grid::LogSnr, 2.0, [10, 20]),
        ("dpm3", Grid::LogSnr, 3.0, [20, 40]),
        ("edm", Grid::Karras(7.0), 2.0, [20, 40]),
        ("dpmpp_2m", Grid::LogSnr, 2.0, [20, 40]),
        // order 3 per step, but the first (first-order) step's O(h²) error is never averaged
        // away: global order 2, as in k-diffusion and Lu et al.'s code (2.4 at 20 → 40 steps)
        ("dpmpp_3m", Grid::LogSnr, 2.0, [160, 320]),
        ("unipc", Grid::LogSnr, 3.0, [20, 40]),
    ] {
        let e = endpoint_errors(name, grid, &steps);
        let slope = (e[0] / e[1]).log2();
        assert!(
            (slope - order).abs() < 0.3,
            "{name}: errors {e:?}, slope {slope} (expected {order})"
        );
    }
}

#[test]
fn ddim_eta0_equals_dpm_solver_1() -> Result<()> {
    let p = vp();
    let model = ExactScore {
        mixture: GaussianMixture::anisotropic3(),
        process: p.clone(),
    };
    let x_t = prior_sample(
        p.as_ref(),
        200,
        2,
        &mut ChaCha8Rng::seed_from_u64(1),
        &Device::Cpu,
    )?
    .to_dtype(DType::F64)?;
    let o = Options::default();
    let (a, _) = run(
        &model,
        p.as_ref(),
        "ddim",
        Grid::LogSnr,
        30,
        &o,
        x_t.clone(),
        0,
    )?;
    let (b, _) = run(&model, p.as_ref(), "dpm1", Grid::LogSnr, 30, &o, x_t, 0)?;
    let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
    assert!(diff < 1e-10, "DDIM(η=0) and DPM-Solver-1 differ by {diff}");
    Ok(())
}

#[test]
fn dopri5_meets_its_tolerance() {
    let fine = endpoint_errors("rk4", Grid::Uniform, &[2000])[0];
    assert!(fine < 1e-9);
    let (p, model, x_t) = gaussian_case();
    let (reference, _) = run(
        &model,
        p.as_ref(),
        "rk4",
        Grid::Uniform,
        2000,
        &Options::default(),
        x_t.clone(),
        0,
    )
    .unwrap();
    for tol in [1e-3, 1e-5, 1e-7] {
        let o = Options {
            ode: Tolerance {
                rtol: tol,
                atol: tol,
                ..Default::default()
            },
            ..Default::default()
        };
        let (x, nfe) = run(
            &model,
            p.as_ref(),
            "dopri5",
            Grid::Uniform,
            1,
            &o,
            x_t.clone(),
            0,
        )
        .unwrap();
        let err = (x - &reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(err < 10.0 * tol, "tol {tol}: error {err} (NFE {nfe})");
    }
}

struct NanBelow(f64);
impl ScoreModel for NanBelow {
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let t0: f64 = t.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
        Ok(if t0 < self.0 {
            (x * f64::NAN)?
        } else {
            x.neg()?
        })
    }
    fn dim(&self) -> usize {
        2
    }
}

#[test]
fn nan_mid_trajectory_names_step_and_time() {
    let p = vp();
    let x_t = prior_sample(
        p.as_ref(),
        10,
        2,
        &mut ChaCha8Rng::seed_from_u64(1),
        &Device::Cpu,
    )
    .unwrap();
    let err = run(
        &NanBelow(0.5),
        p.as_ref(),
        "heun",
        Grid::Uniform,
        10,
        &Options::default(),
        x_t,
        0,
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(err.contains("step 5") && err.contains("t = 0.4"), "{err}");
}

#[test]
fn bad_names_and_options_are_errors() {
    let err = by_name("rk5").map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("em, reverse_diffusion"), "{err}");
    assert!(Options {
        ode: Tolerance {
            rtol: -1.0,
            ..Default::default()
        },
        ..Default::default()
    }
    .check()
    .is_err());
    let p = vp();
    let model = ExactScore {
        mixture: GaussianMixture::ncsn2(),
        process: p.clone(),
    };
    let x_t = prior_sample(
        p.as_ref(),
        4,
        2,
        &mut ChaCha8Rng::seed_from_u64(1),
        &Device::Cpu,
    )
    .unwrap();
    let o = Options {
        pc: super::PredictorCorrector {
            predictor: "nope".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = run(&model, p.as_ref(), "pc", Grid::Uniform, 3, &o, x_t, 0)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope") && err.contains("ancestral"), "{err}");
}

#[test]
fn guidance_combines_the_two_scores() -> Result<()> {
    let p = vp();
    let c = ExactScore {
        mixture: GaussianMixture::ncsn2(),
        process: p.clone(),
    };
    let u = ExactScore {
        mixture: GaussianMixture::anisotropic3(),
        process: p.clone(),
    };
    let x = Tensor::new(&[[0.3f64, 1.0], [2.0, -1.0]], &Device::Cpu)?;
    let t = Tensor::new(&[0.2f64, 0.2], &Device::Cpu)?;
    let g = Guided {
        conditional: &c,
        unconditional: &u,
        w: 2.0,
    };
    let want = ((c.score(&x, &t)? * 3.0)? - (u.score(&x, &t)? * 2.0)?)?;
    assert!(
        (g.score(&x, &t)? - want)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?
            < 1e-12
    );
    let g0 = Guided {
        conditional: &c,
        unconditional: &u,
        w: 0.0,
    };
    assert!(
        (g0.score(&x, &t)? - c.score(&x, &t)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?
            < 1e-12
    );
    Ok(())
}

/// The GPU path (state, stages, history and noise kept in tensors), run on the CPU: the ODE
/// samplers agree with the flat host path to f32 precision, the stochastic ones recover the modes.
#[test]
fn tensor_state_matches_host_state() -> Result<()> {
    let p = vp();
    let model = ExactScore {
        mixture: GaussianMixture::ncsn2(),
        process: p.clone(),
    };
    let o = Options {
        langevin: super::Langevin {
            steps: 10,
            ..Default::default()
        },
        ..Default::default()
    };
    let prior = |n| {
        prior_sample(
            p.as_ref(),
            n,
            2,
            &mut ChaCha8Rng::seed_from_u64(5),
            &Device::Cpu,
        )
    };
    let tensor = |f: &mut dyn FnMut() -> Result<(Tensor, usize)>| {
        crate::flat::TENSOR_STATE.set(true);
        let out = f();
        crate::flat::TENSOR_STATE.set(false);
        out
    };
    for &(name, grid, steps) in BUDGETS {
        match name {
            // different noise on the two paths: the modes, not the samples, must agree
            "em" | "ancestral" | "pc" => {
                let n = 10_000;
                let (x, nfe) =
                    tensor(&mut || run(&model, p.as_ref(), name, grid, steps, &o, prior(n)?, 9))?;
                assert_two_modes(&format!("{name} with tensor state (NFE {nfe})"), &x);
            }
            // the same `Chain` update as em, with other coefficients
            "reverse_diffusion" => {}
            _ => {
                let n = 500;
                let (host, nfe) = run(&model, p.as_ref(), name, grid, steps, &o, prior(n)?, 9)?;
                let (dev, nfe_dev) =
                    tensor(&mut || run(&model, p.as_ref(), name, grid, steps, &o, prior(n)?, 9))?;
                assert_eq!(nfe, nfe_dev, "{name}");
                let diff = (host - dev)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-3, "{name}: tensor state differs by {diff}");
            }
        }
    }
    Ok(())
}

/// The README's sampler table is the registry's (`SAMPLERS`), so the two cannot drift apart.
#[test]
fn readme_sampler_table_is_the_registry() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table = super::markdown_table();
    assert!(
        readme.contains(&table),
        "README.md's sampler table differs from sample::SAMPLERS; paste:\n{table}"
    );
    assert_eq!(super::SAMPLERS.len(), 19);
}
