//! Exact likelihoods through the probability-flow ODE (Song et al. 2021, §4.3 and App. D.2;
//! score_sde `likelihood.py`), encoding x → z and decoding z → x, and bits per dimension.
//!
//! Along the probability-flow ODE dx/dt = v(x, t) = f(t) x − ½ g(t)² s(x, t) the instantaneous
//! change of variables gives d log p_t(x(t))/dt = −∇·v, so integrating from t_min to T
//!
//!   log p_{t_min}(x) = log p_T(z) + ∫_{t_min}^T ∇·v(x(t), t) dt,  ∇·v = d·f(t) − ½ g(t)² ∇·s,
//!
//! with z = x(T) and p_T replaced by the process's prior N(0, prior_std² I). The state of the solve
//! is one f64 tensor [n, d + 1]: the d coordinates and the running integral of ∇·v. The divergence
//! ∇·s is exact (`DivergenceModel::score_and_divergence`) or the Hutchinson–Skilling estimate
//! mean_k v_kᵀ (∂s/∂x) v_k with K probes per point drawn once and held fixed along the trajectory.

use crate::data::Points;
use crate::flat::{values, Buf};
use crate::nn::fused::score::HostRhs;
use crate::ode::{self, Method, Tolerance};
use crate::process::{Process, Space};
use crate::score::{basis, pf_coefficients, pf_velocity, times, ScoreModel};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use crate::metrics::mean_and_sem;
pub use crate::score::{DivergenceModel, Probe};

/// How ∇·s is computed along the trajectory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Divergence {
    /// The exact trace of the Jacobian.
    Exact,
    /// Hutchinson–Skilling: the mean of vᵀ(∂s/∂x)v over `probes` probes per point, drawn once from
    /// ChaCha8 seeded with `seed` and fixed for the whole solve.
    Hutchinson {
        probes: usize,
        probe: Probe,
        seed: u64,
    },
}

/// The ODE solver.
#[derive(Clone, Copy, Debug)]
pub enum Solver {
    /// Adaptive Dormand–Prince 5(4) (score_sde uses RK45 with rtol = atol = 1e-5).
    Dopri5(Tolerance),
    /// A fixed-step method over `steps` uniform steps in t.
    Fixed { method: Method, steps: usize },
}

/// Options of a likelihood or encoding solve.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub solver: Solver,
    pub divergence: Divergence,
    /// The data end of the solve; `None`: the process's t_min. score_sde's likelihoods use 1e-5.
    pub t_min: Option<f64>,
}

impl Default for Options {
    /// Dopri5 with rtol = atol = 1e-5 (NFE cap 100 000), exact divergence, t_min = 1e-5.
    fn default() -> Self {
        Options {
            solver: Solver::Dopri5(Tolerance {
                rtol: 1e-5,
                atol: 1e-5,
                max_nfe: 100_000,
            }),
            divergence: Divergence::Exact,
            t_min: Some(1e-5),
        }
    }
}

impl Options {
    /// The time span (t_min, T), checked.
    fn span(&self, process: &dyn Process) -> Result<(f64, f64)> {
        let (t0, t1) = (self.t_min.unwrap_or(process.t_min()), process.t_max());
        if !(t0.is_finite() && t0 > 0.0 && t0 < t1) {
            bail!("t_min must be a number in (0, T = {t1}), got {t0}");
        }
        match self.solver {
            Solver::Dopri5(tol) => tol.check()?,
            Solver::Fixed { steps: 0, .. } => {
                bail!("the number of solver steps must be at least 1")
            }
            Solver::Fixed { .. } => {}
        }
        if let Divergence::Hutchinson { probes: 0, .. } = self.divergence {
            bail!("the number of Hutchinson probes must be at least 1");
        }
        Ok((t0, t1))
    }
}

/// The result of `log_prob`, per point in model coordinates.
pub struct LikelihoodOutput {
    /// log p_{t_min}(x) = log_prior + delta_log_p (nats), ≈ log p0(x) for small t_min.
    pub log_p0: Vec<f64>,
    /// log N(z; 0, prior_std² I) of the latent.
    pub log_prior: Vec<f64>,
    /// ∫_{t_min}^T ∇·v dt along the trajectory.
    pub delta_log_p: Vec<f64>,
    /// The latent z = x(T) [n, d], f64.
    pub z: Tensor,
    /// Evaluations of the ODE right-hand side (each one score and one divergence).
    pub nfe: usize,
}

/// Integrates dy/dt = f(y, t) from t0 to t1 on the solver's state; returns the end state and
/// the NFE.
fn integrate(
    f: &mut ode::Field,
    y: Buf,
    t0: f64,
    t1: f64,
    solver: &Solver,
) -> Result<(Buf, usize)> {
    let (y, nfe) = match *solver {
        Solver::Dopri5(tol) => {
            let s = ode::dopri5_buf(f, y, t0, t1, &tol)?;
            (s.y, s.nfe)
        }
        Solver::Fixed { method, steps } => {
            let grid: Vec<f64> = (0..=steps)
                .map(|i| t0 + (t1 - t0) * i as f64 / steps as f64)
                .collect();
            let mut nfe = 0;
            let mut counted = |y: &Buf, t: f64, out: &mut Buf| {
                nfe += 1;
                f(y, t, out)
            };
            let mut y = y;
            ode::fixed_step_buf(method, &mut counted, &mut y, &grid, &mut |_, _, _| Ok(()))?;
            (y, nfe)
        }
    };
    // a NaN or infinity anywhere makes the mean |y| non-finite
    if !y.mean_row_norm(1)?.is_finite() {
        bail!("the probability-flow ODE produced NaN or infinity between t = {t0} and {t1}; the model is unstable there or the solver too coarse");
    }
    Ok((y, nfe))
}

/// Checks x [n, d] against the model and returns it as f64.
fn checked_points(model: &dyn ScoreModel, space: Space, x: &Tensor) -> Result<Tensor> {
    let (_, d) = x.dims2()?;
    if d != model.dim() {
        bail!(
            "points have dimension {d} but the model has dimension {}",
            model.dim()
        );
    }
    let x = x.to_dtype(DType::F64)?;
    if !x.sum_all()?.to_scalar::<f64>()?.is_finite() {
        bail!("points contain NaN or infinite values");
    }
    if space.is_full() {
        return Ok(x);
    }
    // a density on the space is defined on it alone: points off it are an error, not projected
    let on = space.project_tensor(&x)?;
    let off = (&x - &on)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let size = x.abs()?.max_all()?.to_scalar::<f64>()?;
    if off > 1e-4 * (1.0 + size) {
        bail!("points lie off the model's zero-centre-of-mass space (a particle mean of up to {off:.3e}); centre each point's particles (subtract their mean) first");
    }
    Ok(on)
}

/// Probes [m, n, d] (f64) from ChaCha8 seeded with `seed` (see `score::probes`).
pub fn draw_probes(
    m: usize,
    n: usize,
    d: usize,
    probe: Probe,
    seed: u64,
    device: &candle_core::Device,
) -> Result<Tensor> {
    crate::score::probes(
        probe,
        m,
        n,
        d,
        &mut ChaCha8Rng::seed_from_u64(seed),
        DType::F64,
        device,
    )
}

/// log p_{t_min}(x) per point of x [n, d] (model coordinates) by the probability-flow ODE from
/// t_min to T, with the prior of `process` at T. All points are solved as one state.
pub fn log_prob(
    model: &dyn DivergenceModel,
    process: &dyn Process,
    x: &Tensor,
    opts: &Options,
) -> Result<LikelihoodOutput> {
    opts.span(process)?;
    let x = checked_points(model, process.space(), x)?;
    let probes = all_probes(&x, opts, process.space())?;
    solve(model, process, &x, probes.as_ref(), opts)
}

/// The Hutchinson probes [m, n, d] of the points x [n, d] (f64), drawn once for all of them and
/// projected onto the space (E[P v vᵀ P] = P: the estimate is of the trace on the space).
fn all_probes(x: &Tensor, opts: &Options, space: Space) -> Result<Option<Tensor>> {
    let (n, d) = x.dims2()?;
    Ok(match opts.divergence {
        Divergence::Exact => None,
        Divergence::Hutchinson {
            probes,
            probe,
            seed,
        } => Some(space.project_tensor(&draw_probes(probes, n, d, probe, seed, x.device())?)?),
    })
}

/// `log_prob` over independent solves of consecutive chunks of at most `chunk` points, run on
/// `threads` threads; the results do not depend on `threads`. Hutchinson probes are
/// drawn for all points at once, as in `log_prob`, so a point's probes do not depend on `chunk`.
/// Each solve adapts its own steps; `nfe` is the largest NFE of any chunk. Per-chunk solves differ
/// from one joint solve by the solver tolerance only. `done`, if given, is called with the number
/// of points solved after each chunk (for progress bars).
pub fn log_prob_chunked(
    model: &(dyn DivergenceModel + Sync),
    process: &dyn Process,
    x: &Tensor,
    opts: &Options,
    chunk: usize,
    threads: usize,
    done: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<LikelihoodOutput> {
    if chunk == 0 {
        bail!("the chunk size must be at least 1");
    }
    opts.span(process)?;
    let x = checked_points(model, process.space(), x)?;
    let probes = all_probes(&x, opts, process.space())?;
    let n = x.dims()[0];
    let starts: Vec<usize> = (0..n).step_by(chunk).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let solved = std::sync::atomic::AtomicUsize::new(0);
    let solve_chunk = |k: usize| -> Result<LikelihoodOutput> {
        let (start, len) = (starts[k], chunk.min(n - starts[k]));
        let v = probes
            .as_ref()
            .map(|v| v.narrow(1, start, len))
            .transpose()?;
        let out = solve(model, process, &x.narrow(0, start, len)?, v.as_ref(), opts);
        let total = solved.fetch_add(len, std::sync::atomic::Ordering::Relaxed) + len;
        if let Some(f) = done {
            f(total);
        }
        out
    };
    let mut parts: Vec<(usize, Result<LikelihoodOutput>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.clamp(1, starts.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if k >= starts.len() {
                            return done;
                        }
                        done.push((k, solve_chunk(k)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a likelihood worker panicked"))
            .collect()
    });
    parts.sort_by_key(|(k, _)| *k);
    let parts: Vec<LikelihoodOutput> = parts.into_iter().map(|(_, r)| r).collect::<Result<_>>()?;
    let zs: Vec<&Tensor> = parts.iter().map(|p| &p.z).collect();
    Ok(LikelihoodOutput {
        z: Tensor::cat(&zs, 0)?,
        nfe: parts.iter().map(|p| p.nfe).max().unwrap_or(0),
        log_p0: parts.iter().flat_map(|p| p.log_p0.clone()).collect(),
        log_prior: parts.iter().flat_map(|p| p.log_prior.clone()).collect(),
        delta_log_p: parts.iter().flat_map(|p| p.delta_log_p.clone()).collect(),
    })
}

/// One joint solve of the points x [n, d] (f64, checked) with their probes [m, n, d] if any.
fn solve(
    model: &dyn DivergenceModel,
    process: &dyn Process,
    x: &Tensor,
    probes: Option<&Tensor>,
    opts: &Options,
) -> Result<LikelihoodOutput> {
    let (t0, t1) = opts.span(process)?;
    let (y, nfe) = solve_between(model, process, x, probes, opts, t0, t1)?;
    finish(process, y, x.dims2()?.1, nfe)
}

/// PF-ODE samples with their log-densities: latents z [n, d] of the prior (on the process's
/// space) decoded T → t_min while ∫∇·v dt runs beside them, so each x = x(t_min) comes with
/// log q(x) = log p_T(z) + ∫_{t_min}^T ∇·v dt, the density of the samples the flow makes (one
/// solve, not a sample and a separate likelihood solve). `z` in the output is the latent.
pub fn generate(
    model: &dyn DivergenceModel,
    process: &dyn Process,
    z: &Tensor,
    opts: &Options,
) -> Result<(Tensor, LikelihoodOutput)> {
    let (t0, t1) = opts.span(process)?;
    let z = checked_points(model, process.space(), z)?;
    let probes = all_probes(&z, opts, process.space())?;
    let (y, nfe) = solve_between(model, process, &z, probes.as_ref(), opts, t1, t0)?;
    let d = z.dims2()?.1;
    let x = y.narrow(1, 0, d)?.contiguous()?;
    // the running integral went from T down to t_min: its end value is −∫_{t_min}^T ∇·v dt
    let delta_log_p: Vec<f64> = y
        .narrow(1, d, 1)?
        .flatten_all()?
        .to_vec1::<f64>()?
        .into_iter()
        .map(|v| -v)
        .collect();
    Ok((x, output(process, z, delta_log_p, nfe)?))
}

/// Solves the augmented state [x, ∫∇·v dt] from `from` to `to` (either direction) starting at
/// x [n, d] (f64) with a zero integral; the end state [n, d + 1] and the NFE.
fn solve_between(
    model: &dyn DivergenceModel,
    process: &dyn Process,
    x: &Tensor,
    probes: Option<&Tensor>,
    opts: &Options,
    t0: f64,
    t1: f64,
) -> Result<(Tensor, usize)> {
    let (n, d) = x.dims2()?;
    let (space, dev) = (process.space(), x.device().clone());
    // ∇·(f x) = dof·f on the space
    let dof = space.dof(d) as f64;
    let y0 = Tensor::cat(&[x, &Tensor::zeros((n, 1), DType::F64, &dev)?], 1)?;
    let state = Buf::of(&y0)?;
    if let (Some(host), Buf::Host(_)) = (model.host(), &state) {
        // the fused network on the flat state: no tensors per evaluation
        let (v, m, w) = match probes {
            // P e_j for the d unit vectors: tr(P J P), the trace over the space
            None => (
                space.project_tensor(&basis(n, d, DType::F32, &dev)?)?,
                d,
                1.0,
            ),
            Some(v) => (
                v.to_dtype(DType::F32)?,
                v.dims()[0],
                1.0 / v.dims()[0] as f64,
            ),
        };
        let mut host_rhs = HostRhs::new(host, process, (n, d, dof), (values::<f32>(&v)?, m, w));
        let mut rhs = |y: &Buf, t: f64, out: &mut Buf| host_rhs.eval(y, t, out);
        let solver = opts.solver;
        let (y, nfe) = crate::pool::warm(move || integrate(&mut rhs, state, t0, t1, &solver))?;
        return Ok((y.tensor(&y0)?, nfe));
    }
    // on a restricted space the exact divergence takes the directions P e_j (made once)
    let on_space = (probes.is_none() && !space.is_full())
        .then(|| space.project_tensor(&basis(n, d, DType::F64, &dev)?))
        .transpose()?;
    let mut rhs = |y: &Tensor, t: f64| -> Result<Tensor> {
        let xt = y.narrow(1, 0, d)?;
        let tt = times(t, n, DType::F64, &dev)?;
        let (s, div_s) = match (probes, &on_space) {
            (None, None) => model.score_and_divergence(&xt, &tt)?,
            (None, Some(e)) => {
                let (s, q) = model.score_and_quadratic_forms(&xt, &tt, e)?;
                (s, q.sum(0)?)
            }
            (Some(v), _) => {
                let (s, q) = model.score_and_quadratic_forms(&xt, &tt, v)?;
                (s, q.mean(0)?)
            }
        };
        // detached: a network's outputs carry its autograd graph (its weights are `Var`s), which
        // the solver's state would otherwise keep alive from every earlier stage
        let (s, div_s) = (
            s.detach().to_dtype(DType::F64)?,
            div_s.detach().to_dtype(DType::F64)?,
        );
        let (a, half_g2) = pf_coefficients(process, t);
        let div_v = div_s.affine(-half_g2, dof * a)?;
        Ok(Tensor::cat(
            &[pf_velocity(process, &xt, &s, t)?, div_v.unsqueeze(1)?],
            1,
        )?)
    };
    let (y, nfe) = integrate(
        &mut ode::on_tensors(&mut rhs, &y0),
        state,
        t0,
        t1,
        &opts.solver,
    )?;
    Ok((y.tensor(&y0)?, nfe))
}

/// The likelihood from the end state [n, d + 1] of a solve: z and ∫∇·v dt per point.
fn finish(process: &dyn Process, y: Tensor, d: usize, nfe: usize) -> Result<LikelihoodOutput> {
    let z = y.narrow(1, 0, d)?.contiguous()?;
    let delta_log_p: Vec<f64> = y.narrow(1, d, 1)?.flatten_all()?.to_vec1()?;
    output(process, z, delta_log_p, nfe)
}

/// The likelihood of points whose latents are z [n, d] (f64) and ∫_{t_min}^T ∇·v dt `delta_log_p`.
fn output(
    process: &dyn Process,
    z: Tensor,
    delta_log_p: Vec<f64>,
    nfe: usize,
) -> Result<LikelihoodOutput> {
    let d = z.dims2()?.1;
    let zs: Vec<f64> = z.flatten_all()?.to_vec1()?;
    let log_prior: Vec<f64> = zs.chunks(d).map(|r| process.prior_log_prob(r)).collect();
    let log_p0 = log_prior
        .iter()
        .zip(&delta_log_p)
        .map(|(a, b)| a + b)
        .collect();
    Ok(LikelihoodOutput {
        log_p0,
        log_prior,
        delta_log_p,
        z,
        nfe,
    })
}

/// Transports points along the probability-flow ODE from t0 to t1; returns them (f64) and the NFE.
fn transport(
    model: &dyn ScoreModel,
    process: &dyn Process,
    x: &Tensor,
    t0: f64,
    t1: f64,
    solver: &Solver,
) -> Result<(Tensor, usize)> {
    let x = checked_points(model, process.space(), x)?;
    let (n, dev) = (x.dims()[0], x.device().clone());
    let mut rhs = |y: &Tensor, t: f64| -> Result<Tensor> {
        let s = model.score(y, &times(t, n, DType::F64, &dev)?)?.detach();
        pf_velocity(process, y, &s.to_dtype(DType::F64)?, t)
    };
    let field = &mut ode::on_tensors(&mut rhs, &x);
    let (y, nfe) = integrate(field, Buf::of(&x)?, t0, t1, solver)?;
    Ok((y.tensor(&x)?, nfe))
}

/// Encodes x [n, d] into its latent z = x(T) (t_min → T); returns z (f64) and the NFE.
pub fn encode(
    model: &dyn ScoreModel,
    process: &dyn Process,
    x: &Tensor,
    opts: &Options,
) -> Result<(Tensor, usize)> {
    let (t0, t1) = opts.span(process)?;
    transport(model, process, x, t0, t1, &opts.solver)
}

/// Decodes latents z [n, d] back to data (T → t_min) with the same solver; returns x (f64), NFE.
pub fn decode(
    model: &dyn ScoreModel,
    process: &dyn Process,
    z: &Tensor,
    opts: &Options,
) -> Result<(Tensor, usize)> {
    let (t0, t1) = opts.span(process)?;
    transport(model, process, z, t1, t0, &opts.solver)
}

/// Uniform dequantisation of 8-bit data into [lo, hi]^D and the bits per dimension it implies.
///
/// Pixels k ∈ {0, …, 255}^D become y = k + u, u ~ U[0, 1)^D, and the data coordinates
/// x = lo + a·y with a = (hi − lo)/256 (e.g. [−1, 1]: x = 2(k + u)/256 − 1, a = 1/128). The
/// density of y is p_Y(y) = p_X(x)·a^D, and by Jensen the discrete model
/// P(k) = ∫_{[0,1)^D} p_Y(k + u) du satisfies −log₂ P(k) ≤ −E_u log p_Y(k + u)/ln 2, so
///
///   bits/dim = −(log p_X(x) + D ln a)/(D ln 2) = −log p_X(x)/(D ln 2) + 8 − log₂(hi − lo),
///
/// an upper bound on the discrete code length: +7 for [−1, 1], +8 for [0, 1]. A density uniform on
/// [lo, hi]^D gives exactly 8 bits/dim.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dequantisation {
    pub lo: f64,
    pub hi: f64,
}

impl Dequantisation {
    /// Checks lo < hi (finite).
    pub fn new(lo: f64, hi: f64) -> Result<Self> {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            bail!("the dequantisation range needs finite lo < hi, got [{lo}, {hi}]");
        }
        Ok(Dequantisation { lo, hi })
    }

    /// The scale a = (hi − lo)/256 of the map y ∈ [0, 256) ↦ x.
    pub fn scale(&self) -> f64 {
        (self.hi - self.lo) / 256.0
    }

    /// x = lo + a(k + u) with u ~ U[0, 1) from `rng`; every k must be an integer in 0..=255.
    pub fn dequantise(&self, k: &Points, rng: &mut impl Rng) -> Result<Points> {
        if let Some(pos) = k
            .data
            .iter()
            .position(|v| !(v.fract() == 0.0 && (0.0..=255.0).contains(v)))
        {
            bail!(
                "8-bit data must be integers in 0..=255; row {}, column {} is {}",
                pos / k.d.max(1),
                pos % k.d.max(1),
                k.data[pos]
            );
        }
        let a = self.scale();
        let data = k
            .data
            .iter()
            .map(|v| self.lo + a * (v + rng.random::<f64>()))
            .collect();
        Points::new(k.n, k.d, data)
    }

    /// Bits per dimension −(log p_X(x) + D ln a)/(D ln 2) of one point of dimension D whose
    /// dequantised log-density in data coordinates is `log_p`.
    pub fn bits_per_dim(&self, log_p: f64, dim: usize) -> f64 {
        let d = dim as f64;
        -(log_p + d * self.scale().ln()) / (d * std::f64::consts::LN_2)
    }
}

#[cfg(test)]
mod tests;
