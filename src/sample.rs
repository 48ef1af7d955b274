//! Samplers: reverse-time SDE and probability-flow ODE solvers (score_sde `sampling.py`).
//!
//! Every sampler has the same signature: a `ScoreModel`, the `Process`, the start x_T, a decreasing
//! time grid t_0 = T > … > t_N = t_min, a seeded generator and a `Trace` that counts function
//! evaluations (NFE), checks for NaN and can keep the trajectory.

use crate::process::Process;
use crate::score::{times, ScoreModel};
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Records NFE and (optionally) the states along a trajectory.
#[derive(Default)]
pub struct Trace {
    /// Number of score evaluations so far.
    pub nfe: usize,
    /// Keep (t, x_t) after every step.
    pub keep: bool,
    pub states: Vec<(f64, Tensor)>,
    /// Progress bar advanced once per step.
    pub bar: Option<indicatif::ProgressBar>,
}

impl Trace {
    /// s(x, t), counted, with a NaN check naming the step and time.
    fn score(&mut self, model: &dyn ScoreModel, x: &Tensor, t: f64, step: usize) -> Result<Tensor> {
        self.nfe += 1;
        let s = model.score(x, &times(t, x.dims()[0], x.dtype(), x.device())?)?;
        if !all_finite(&s)? {
            bail!("the score is NaN or infinite at step {step} (t = {t:.6}); the model or step size is unstable");
        }
        Ok(s)
    }

    fn record(&mut self, t: f64, x: &Tensor) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        if self.keep {
            self.states.push((t, x.clone()));
        }
    }
}

fn all_finite(x: &Tensor) -> Result<bool> {
    let s = x
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?;
    Ok(s.is_finite())
}

/// The common signature of every sampler.
pub type Sampler = fn(
    &dyn ScoreModel,
    &dyn Process,
    Tensor,
    &[f64],
    &mut ChaCha8Rng,
    &mut Trace,
) -> Result<Tensor>;

/// Names accepted by `by_name`.
pub const SAMPLERS: &[&str] = &["em", "euler", "heun"];

/// Looks a sampler up by name; an unknown name lists the valid ones.
pub fn by_name(name: &str) -> Result<Sampler> {
    Ok(match name {
        "em" => euler_maruyama,
        "euler" => ode_euler,
        "heun" => ode_heun,
        other => bail!(
            "unknown sampler '{other}'; valid samplers: {}",
            SAMPLERS.join(", ")
        ),
    })
}

/// Uniform grid of `steps` steps from T down to t_min (steps + 1 points).
pub fn uniform_grid(process: &dyn Process, steps: usize) -> Result<Vec<f64>> {
    if steps == 0 {
        bail!("the number of steps must be at least 1");
    }
    let (t0, t1) = (process.t_max(), process.t_min());
    Ok((0..=steps)
        .map(|i| t0 + (t1 - t0) * i as f64 / steps as f64)
        .collect())
}

/// x_T ~ N(0, prior_std² I) with n rows of dimension d (f32).
pub fn prior_sample(
    process: &dyn Process,
    n: usize,
    d: usize,
    rng: &mut ChaCha8Rng,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let s = process.prior_std();
    let v: Vec<f32> = (0..n * d)
        .map(|_| (s * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, rng)) as f32)
        .collect();
    Ok(Tensor::from_vec(v, (n, d), device)?)
}

/// Draws n samples: x_T from the prior, then `sampler` over a uniform grid of `steps` steps.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    model: &dyn ScoreModel,
    process: &dyn Process,
    sampler: &str,
    steps: usize,
    n: usize,
    rng: &mut ChaCha8Rng,
    device: &candle_core::Device,
    trace: &mut Trace,
) -> Result<Tensor> {
    let f = by_name(sampler)?;
    let grid = uniform_grid(process, steps)?;
    if n == 0 {
        bail!("the number of samples must be at least 1");
    }
    let x_t = prior_sample(process, n, model.dim(), rng, device)?;
    trace.record(grid[0], &x_t);
    if let Some(b) = &trace.bar {
        b.set_position(0);
        b.set_length(steps as u64);
    }
    let x = f(model, process, x_t, &grid, rng, trace)?;
    if let Some(b) = &trace.bar {
        b.finish_and_clear();
    }
    Ok(x)
}

fn noise_like(x: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let v: Vec<f32> = (0..x.elem_count())
        .map(|_| StandardNormal.sample(rng))
        .collect();
    Ok(Tensor::from_vec(v, x.shape(), x.device())?.to_dtype(x.dtype())?)
}

/// Probability-flow velocity dx/dt = f(t) x − ½ g(t)² s(x, t) (Song et al. 2021, eq. 13).
fn pf_velocity(
    model: &dyn ScoreModel,
    p: &dyn Process,
    x: &Tensor,
    t: f64,
    step: usize,
    trace: &mut Trace,
) -> Result<Tensor> {
    let s = trace.score(model, x, t, step)?;
    Ok(((x * p.drift_coef(t))? - (s * (0.5 * p.g2(t)))?)?)
}

/// Reverse-time SDE, Euler–Maruyama: x ← x − [f x − g² s] h + g √h z, no noise on the last step
/// (score_sde `EulerMaruyamaPredictor`, returning the final mean).
pub fn euler_maruyama(
    model: &dyn ScoreModel,
    p: &dyn Process,
    mut x: Tensor,
    ts: &[f64],
    rng: &mut ChaCha8Rng,
    trace: &mut Trace,
) -> Result<Tensor> {
    for (i, w) in ts.windows(2).enumerate() {
        let (t, h) = (w[0], w[0] - w[1]);
        let s = trace.score(model, &x, t, i)?;
        let drift = ((&x * p.drift_coef(t))? - (s * p.g2(t))?)?;
        x = (x - (drift * h)?)?;
        if i + 2 < ts.len() {
            let z = noise_like(&x, rng)?;
            x = (x + (z * (p.g(t) * h.sqrt()))?)?;
        }
        trace.record(w[1], &x);
    }
    Ok(x)
}

/// Probability-flow ODE, Euler: x ← x + (t_{i+1} − t_i) v(x, t_i).
pub fn ode_euler(
    model: &dyn ScoreModel,
    p: &dyn Process,
    mut x: Tensor,
    ts: &[f64],
    _rng: &mut ChaCha8Rng,
    trace: &mut Trace,
) -> Result<Tensor> {
    for (i, w) in ts.windows(2).enumerate() {
        let v = pf_velocity(model, p, &x, w[0], i, trace)?;
        x = (x + (v * (w[1] - w[0]))?)?;
        trace.record(w[1], &x);
    }
    Ok(x)
}

/// Probability-flow ODE, Heun (explicit trapezoid; EDM Alg. 1 without churn).
pub fn ode_heun(
    model: &dyn ScoreModel,
    p: &dyn Process,
    mut x: Tensor,
    ts: &[f64],
    _rng: &mut ChaCha8Rng,
    trace: &mut Trace,
) -> Result<Tensor> {
    for (i, w) in ts.windows(2).enumerate() {
        let h = w[1] - w[0];
        let v1 = pf_velocity(model, p, &x, w[0], i, trace)?;
        let x_euler = (&x + (&v1 * h)?)?;
        let v2 = pf_velocity(model, p, &x_euler, w[1], i, trace)?;
        x = (x + ((v1 + v2)? * (0.5 * h))?)?;
        trace.record(w[1], &x);
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Points;
    use crate::metrics::{mode_fractions, mode_means};
    use crate::process::ProcessConfig;
    use crate::target::{ExactScore, GaussianMixture};
    use candle_core::Device;
    use rand::SeedableRng;
    use std::sync::Arc;

    /// With the exact NCSN two-mode score under VP, EM (1000 steps) and PF-ODE Heun (50 steps)
    /// recover the 0.8 mode weight (3 binomial s.d.) and both mode means (within 0.1).
    #[test]
    fn exact_score_recovers_ncsn_two_modes() -> Result<()> {
        let process: Arc<dyn Process> = Arc::from(ProcessConfig::vp_default().build()?);
        let model = ExactScore {
            mixture: GaussianMixture::ncsn2(),
            process: process.clone(),
        };
        let n = 4000;
        for (name, steps) in [("em", 1000), ("heun", 50)] {
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let x_t = prior_sample(process.as_ref(), n, 2, &mut rng, &Device::Cpu)?;
            let mut trace = Trace::default();
            let x = by_name(name)?(
                &model,
                process.as_ref(),
                x_t,
                &uniform_grid(process.as_ref(), steps)?,
                &mut rng,
                &mut trace,
            )?;
            let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
            let pts = Points::from_f32(n, 2, &v)?;
            let centres = vec![vec![5.0, 5.0], vec![-5.0, -5.0]];
            let frac = mode_fractions(&pts, &centres)[0];
            let sd = (0.8 * 0.2 / n as f64).sqrt();
            assert!(
                (frac - 0.8).abs() < 3.0 * sd,
                "{name}: heavy-mode fraction {frac}"
            );
            for (m, c) in mode_means(&pts, &centres).iter().zip(&centres) {
                let m = m.as_ref().expect("both modes populated");
                assert!(
                    (m[0] - c[0]).abs() < 0.1 && (m[1] - c[1]).abs() < 0.1,
                    "{name}: mode mean {m:?} vs {c:?}"
                );
            }
            let want_nfe = if name == "heun" { 2 * steps } else { steps };
            assert_eq!(trace.nfe, want_nfe);
        }
        Ok(())
    }

    #[test]
    fn bad_names_and_steps_are_errors() {
        let err = by_name("rk5").map(|_| ()).expect_err("unknown").to_string();
        assert!(err.contains("em, euler, heun"), "{err}");
        let p = ProcessConfig::vp_default().build().expect("vp");
        assert!(uniform_grid(p.as_ref(), 0).is_err());
    }
}
