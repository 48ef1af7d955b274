//! Deterministic samplers of the probability-flow ODE dx/dt = f(t)x − ½g(t)² s(x, t) (Song et al.
//! 2021, eq. 13): generic Runge–Kutta, and the exponential integrators that use its semi-linear form
//! in the log-SNR λ = log(α/σ): DDIM, DPM-Solver(++) and EDM's Heun in σ = e^{−λ}.
//! With h = λ_{t'} − λ_t and y = x/α (the VE-scaled state), exact in the linear part.

use super::{noise_like, Options, Trace};
use crate::ode::{self, Method, Tolerance};
use crate::process::Process;
use crate::score::{pf_velocity, ScoreModel};
use anyhow::Result;
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;

/// Integrates the PF-ODE over the grid with a fixed-step Runge–Kutta method.
fn runge_kutta(
    method: Method,
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    tr: &mut Trace,
) -> Result<Tensor> {
    let tr = RefCell::new(tr);
    let step = std::cell::Cell::new(0);
    let mut f = |x: &Tensor, t: f64| -> Result<Tensor> {
        let s = tr.borrow_mut().score(m, x, t, step.get())?;
        pf_velocity(p, x, &s, t)
    };
    let mut on_step = |i: usize, t: f64, x: &Tensor| -> Result<()> {
        step.set(i + 1);
        tr.borrow_mut().record(t, x);
        Ok(())
    };
    ode::fixed_step(method, &mut f, x, ts, &mut on_step)
}

/// PF-ODE, Euler: x ← x + h v(x, t).
pub fn euler(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    _r: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    runge_kutta(Method::Euler, m, p, x, ts, tr)
}

/// PF-ODE, Heun (explicit trapezoid).
pub fn heun(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    _r: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    runge_kutta(Method::Heun, m, p, x, ts, tr)
}

/// PF-ODE, classical fourth-order Runge–Kutta.
pub fn rk4(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    _r: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    runge_kutta(Method::Rk4, m, p, x, ts, tr)
}

/// PF-ODE, adaptive Dormand–Prince 5(4) from the grid's first to its last time (rtol, atol, NFE cap).
pub fn dopri5(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    o: &Options,
    _r: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let (t0, t1) = (ts[0], ts[ts.len() - 1]);
    let sol = {
        let mut f = |x: &Tensor, t: f64| -> Result<Tensor> {
            let s = tr.score(m, x, t, 0)?;
            pf_velocity(p, x, &s, t)
        };
        ode::dopri5(
            &mut f,
            x,
            t0,
            t1,
            &Tolerance {
                rtol: o.rtol,
                atol: o.atol,
                max_nfe: o.max_nfe,
            },
        )?
    };
    tr.record(t1, &sol.y);
    Ok(sol.y)
}

/// DDIM (Song et al. 2021a, eq. 12): x' = α' x̂0 + √(σ'² − σ_η²) ε̂ + σ_η z,
/// σ_η = η σ' G/σ with G² = σ² − (α/α')²σ'² (η = 0: deterministic; η = 1: DDPM's posterior noise).
pub fn ddim(
    m: &dyn ScoreModel,
    p: &dyn Process,
    mut x: Tensor,
    ts: &[f64],
    o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    for (i, w) in ts.windows(2).enumerate() {
        let (t, tn) = (w[0], w[1]);
        let (a, s, an, sn) = (p.alpha(t), p.sigma(t), p.alpha(tn), p.sigma(tn));
        let eps = tr.eps(m, p, &x, t, i)?;
        let x0 = ((&x - (&eps * s)?)? / a)?;
        let g2 = (s * s - (a / an).powi(2) * sn * sn).max(0.0);
        let last = i + 2 == ts.len();
        let s_eta = if last {
            0.0
        } else {
            o.eta * sn * g2.sqrt() / s
        };
        x = ((x0 * an)? + (eps * (sn * sn - s_eta * s_eta).max(0.0).sqrt())?)?;
        if s_eta > 0.0 {
            x = (&x + (noise_like(&x, rng)? * s_eta)?)?;
        }
        tr.record(tn, &x);
    }
    Ok(x)
}

/// x_{s}(x, ε̂) = (α_s/α_t) x − σ_s (e^{r h} − 1) ε̂: the first-order DPM-Solver update to λ_t + r h.
fn dpm_first_order(p: &dyn Process, x: &Tensor, eps: &Tensor, t: f64, s: f64) -> Result<Tensor> {
    let h = p.lambda(s) - p.lambda(t);
    Ok(((x * (p.alpha(s) / p.alpha(t)))? - (eps * (p.sigma(s) * h.exp_m1()))?)?)
}

/// DPM-Solver-1 (Lu et al. 2022, eq. 3.7); identical to DDIM with η = 0.
pub fn dpm_solver_1(
    m: &dyn ScoreModel,
    p: &dyn Process,
    mut x: Tensor,
    ts: &[f64],
    _o: &Options,
    _r: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    for (i, w) in ts.windows(2).enumerate() {
        let eps = tr.eps(m, p, &x, w[0], i)?;
        x = dpm_first_order(p, &x, &eps, w[0], w[1])?;
        tr.record(w[1], &x);
    }
    Ok(x)
}

/// DPM-Solver-2, single-step with r₁ = ½ (Lu et al. 2022, Alg. 1).
pub fn dpm_solver_2(
    m: &dyn ScoreModel,
    p: &dyn Process,
    mut x: Tensor,
    ts: &[f64],
    _o: &Options,
    _r: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let r1 = 0.5;
    for (i, w) in ts.windows(2).enumerate() {
        let (t, tn) = (w[0], w[1]);
        let h = p.lambda(tn) - p.lambda(t);
        let s1 = p.t_at_lambda(p.lambda(t) + r1 * h);
        let e0 = tr.eps(m, p, &x, t, i)?;
        let u = dpm_first_order(p, &x, &e0, t, s1)?;
        let d1 = (tr.eps(m, p, &u, s1, i)? - &e0)?;
        x = (dpm_first_order(p, &x, &e0, t, tn)?
            - (d1 * (p.sigma(tn) / (2.0 * r1) * h.exp_m1()))?)?;
        tr.record(tn, &x);
    }
    Ok(x)
}

/// DPM-Solver-3, single-step with r₁ = ⅓, r₂ = ⅔ (Lu et al. 2022, Alg. 2).
pub fn dpm_solver_3(
    m: &dyn ScoreModel,
    p: &dyn Process,
    mut x: Tensor,
    ts: &[f64],
    _o: &Options,
    _r: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let (r1, r2) = (1.0 / 3.0, 2.0 / 3.0);
    for (i, w) in ts.windows(2).enumerate() {
        let (t, tn) = (w[0], w[1]);
        let (l, h) = (p.lambda(t), p.lambda(tn) - p.lambda(t));
        let (s1, s2) = (p.t_at_lambda(l + r1 * h), p.t_at_lambda(l + r2 * h));
        let e0 = tr.eps(m, p, &x, t, i)?;
        let u1 = dpm_first_order(p, &x, &e0, t, s1)?;
        let d1 = (tr.eps(m, p, &u1, s1, i)? - &e0)?;
        let c2 = p.sigma(s2) * r2 / r1 * ((r2 * h).exp_m1() / (r2 * h) - 1.0);
        let u2 = (dpm_first_order(p, &x, &e0, t, s2)? - (d1 * c2)?)?;
        let d2 = (tr.eps(m, p, &u2, s2, i)? - &e0)?;
        let c = p.sigma(tn) / r2 * (h.exp_m1() / h - 1.0);
        x = (dpm_first_order(p, &x, &e0, t, tn)? - (d2 * c)?)?;
        tr.record(tn, &x);
    }
    Ok(x)
}

/// DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2; k-diffusion `sample_dpmpp_2m`), on y = x/α:
/// y' = e^{−h} y + (1 − e^{−h}) D, D = (1 + 1/2r) x̂0_i − (1/2r) x̂0_{i−1}, r = h_{i−1}/h_i.
pub fn dpm_solver_pp_2m(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    _r: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let mut y = (x / p.alpha(ts[0]))?;
    let mut prev: Option<(Tensor, f64)> = None;
    for (i, w) in ts.windows(2).enumerate() {
        let (t, tn) = (w[0], w[1]);
        let h = p.lambda(tn) - p.lambda(t);
        let d0 = tr.denoise(m, p, &(&y * p.alpha(t))?, t, i)?;
        let d = match &prev {
            Some((d_prev, h_prev)) => {
                let r = h_prev / h;
                ((&d0 * (1.0 + 0.5 / r))? - (d_prev * (0.5 / r))?)?
            }
            None => d0.clone(),
        };
        y = ((y * (-h).exp())? + (d * -(-h).exp_m1())?)?;
        prev = Some((d0, h));
        tr.record(tn, &(&y * p.alpha(tn))?);
    }
    Ok((y * p.alpha(ts[ts.len() - 1]))?)
}

/// DPM-Solver++(3M) (k-diffusion `sample_dpmpp_3m_sde` with η = 0), on y = x/α: the 2M update
/// plus φ₂ d₁ − φ₃ d₂ from the last three denoised values, φ₂ = (e^{−h} − 1)/h + 1, φ₃ = φ₂/h − ½.
pub fn dpm_solver_pp_3m(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    _r: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let mut y = (x / p.alpha(ts[0]))?;
    let mut hist: Vec<(Tensor, f64)> = Vec::new(); // (x̂0, h) of earlier steps, newest last
    for (i, w) in ts.windows(2).enumerate() {
        let (t, tn) = (w[0], w[1]);
        let h = p.lambda(tn) - p.lambda(t);
        let d = tr.denoise(m, p, &(&y * p.alpha(t))?, t, i)?;
        y = ((&y * (-h).exp())? + (&d * -(-h).exp_m1())?)?;
        let phi2 = (-h).exp_m1() / h + 1.0;
        match hist.as_slice() {
            [.., (d2, h2), (d1, h1)] => {
                let (r0, r1) = (h1 / h, h2 / h);
                let d1_0 = ((&d - d1)? / r0)?;
                let d1_1 = ((d1 - d2)? / r1)?;
                let diff = (&d1_0 - &d1_1)?;
                let dd1 = (&d1_0 + (&diff * (r0 / (r0 + r1)))?)?;
                let dd2 = (diff / (r0 + r1))?;
                y = ((y + (dd1 * phi2)?)? - (dd2 * (phi2 / h - 0.5))?)?;
            }
            [(d1, h1)] => {
                let dd = ((&d - d1)? / (h1 / h))?;
                y = (y + (dd * phi2)?)?;
            }
            [] => {}
        }
        hist.push((d, h));
        if hist.len() > 2 {
            hist.remove(0);
        }
        tr.record(tn, &(&y * p.alpha(tn))?);
    }
    Ok((y * p.alpha(ts[ts.len() - 1]))?)
}

/// EDM's stochastic Heun sampler (Karras et al. 2022, Alg. 2) on y = x/α with σ = e^{−λ}:
/// churn γ = min(S_churn/N, √2 − 1) for S_min ≤ σ ≤ S_max, then a Heun step of dy/dσ = (y − D)/σ.
pub fn edm_heun(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let sigma = |t: f64| (-p.lambda(t)).exp();
    let n = (ts.len() - 1) as f64;
    let mut y = (x / p.alpha(ts[0]))?;
    for (i, w) in ts.windows(2).enumerate() {
        let (t, tn) = (w[0], w[1]);
        let (s, sn) = (sigma(t), sigma(tn));
        let gamma = if (o.s_min..=o.s_max).contains(&s) {
            (o.s_churn / n).min(2f64.sqrt() - 1.0)
        } else {
            0.0
        };
        let (t_hat, s_hat) = if gamma > 0.0 {
            let th = p.t_at_lambda(-(s * (1.0 + gamma)).ln());
            (th, sigma(th))
        } else {
            (t, s)
        };
        if s_hat > s {
            y = (&y + (noise_like(&y, rng)? * ((s_hat * s_hat - s * s).sqrt() * o.s_noise))?)?;
        }
        let mut slope = |y: &Tensor, t: f64, s: f64| -> Result<Tensor> {
            let d = tr.denoise(m, p, &(y * p.alpha(t))?, t, i)?;
            Ok(((y - d)? / s)?)
        };
        let d1 = slope(&y, t_hat, s_hat)?;
        let y_euler = (&y + (&d1 * (sn - s_hat))?)?;
        let d2 = slope(&y_euler, tn, sn)?;
        y = (&y + ((d1 + d2)? * (0.5 * (sn - s_hat)))?)?;
        tr.record(tn, &(&y * p.alpha(tn))?);
    }
    Ok((y * p.alpha(ts[ts.len() - 1]))?)
}
