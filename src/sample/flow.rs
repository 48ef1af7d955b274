//! Deterministic samplers of the probability-flow ODE dx/dt = f(t)x − ½g(t)² s(x, t) (Song et al.
//! 2021, eq. 13): generic Runge–Kutta, and the exponential integrators that use its semi-linear form
//! in the log-SNR λ = log(α/σ): DDIM, DPM-Solver(++) and EDM's Heun in σ = e^{−λ}.
//! With h = λ_{t'} − λ_t and y = x/α (the VE-scaled state), exact in the linear part. The
//! exponential integrators keep x (or y), ε̂ or x̂0 and their history in buffers that every step
//! reuses (`state`): flat on the CPU, on the device on a GPU.

use super::state::{
    add_noise, lincomb, run, Buf, Noise,
    Prediction::{Eps, X0},
    ScoreField, Update,
};
use super::{Options, Trace};
use crate::ode::{self, Method, Tolerance};
use crate::process::Process;
use crate::score::{pf_velocity, tweedie_coefficients, ScoreModel};
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
                rtol: o.ode.rtol,
                atol: o.ode.atol,
                max_nfe: o.ode.max_nfe,
            },
        )?
    };
    tr.record(t1, &sol.y);
    Ok(sol.y)
}

/// DDIM (Song et al. 2021a, eq. 12): x' = α' x̂0 + √(σ'² − σ_η²) ε̂ + σ_η z with x̂0 = (x + σ² s)/α
/// and ε̂ = −σ s, σ_η = η σ' G/σ, G² = σ² − (α/α')²σ'² (η = 0: deterministic; η = 1: DDPM's
/// posterior noise); as one update in x and s.
fn ddim_rule(p: &dyn Process, t: f64, tn: f64, eta: f64, last: bool) -> Update {
    let (a, s, an, sn) = (p.alpha(t), p.sigma(t), p.alpha(tn), p.sigma(tn));
    let g2 = (s * s - (a / an).powi(2) * sn * sn).max(0.0);
    let s_eta = if last { 0.0 } else { eta * sn * g2.sqrt() / s };
    let c_eps = (sn * sn - s_eta * s_eta).max(0.0).sqrt();
    Update {
        cx: an / a,
        cs: an * s * s / a - c_eps * s,
        cz: s_eta,
    }
}

/// DDIM with `Options::eta`.
pub fn ddim(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    run(
        |t, tn, last| ddim_rule(p, t, tn, o.ddim.eta, last),
        m,
        p,
        x,
        ts,
        rng,
        tr,
    )
}

/// Multistep consistency sampling (Song et al. 2023, Alg. 1): x̂0 = (x + σ_t² s)/α_t at each
/// t_i, re-noised to t_{i+1} as α x̂0 + σ z; the last step returns x̂0. One step from T is the
/// one-step generator of a consistency-distilled run.
pub fn consistency(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let rule = |t, tn, last| {
        let (c_x, c_s) = tweedie_coefficients(p.alpha(t), p.sigma(t));
        let (an, sn) = if last {
            (1.0, 0.0)
        } else {
            (p.alpha(tn), p.sigma(tn))
        };
        Update {
            cx: an * c_x,
            cs: an * c_s,
            cz: sn,
        }
    };
    run(rule, m, p, x, ts, rng, tr)
}

/// (c_x, c_ε) of the first-order DPM-Solver update to λ_t + r h:
/// x_s = (α_s/α_t) x − σ_s (e^{r h} − 1) ε̂ (Lu et al. 2022, eq. 3.7).
fn first_order(p: &dyn Process, t: f64, s: f64) -> (f64, f64) {
    let h = p.lambda(s) - p.lambda(t);
    (p.alpha(s) / p.alpha(t), -p.sigma(s) * h.exp_m1())
}

/// DPM-Solver-1 (Lu et al. 2022, eq. 3.7); identical to DDIM with η = 0.
pub fn dpm_solver_1(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let rule = |t, tn, _| {
        let (cx, ce) = first_order(p, t, tn);
        // ε̂ = −σ_t s
        Update {
            cx,
            cs: -ce * p.sigma(t),
            cz: 0.0,
        }
    };
    run(rule, m, p, x, ts, rng, tr)
}

/// DPM-Solver-2, single-step with r₁ = ½ (Lu et al. 2022, Alg. 1).
pub fn dpm_solver_2(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    _r: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let r1 = 0.5;
    let (f, mut x) = ScoreField::new(m, p, x)?;
    let (mut e0, mut e1, mut u) = (f.buffer(), f.buffer(), f.buffer());
    for (i, w) in ts.windows(2).enumerate() {
        let (t, tn) = (w[0], w[1]);
        let h = p.lambda(tn) - p.lambda(t);
        let s1 = p.t_at_lambda(p.lambda(t) + r1 * h);
        f.predict(Eps, &x, t, tr, i, &mut e0)?;
        let (ux, ue) = first_order(p, t, s1);
        lincomb(&mut u, 0.0, &[(ux, &x), (ue, &e0)])?;
        f.predict(Eps, &u, s1, tr, i, &mut e1)?;
        // x' = first_order(x, ε̂0) − σ'/(2r₁) (e^h − 1)(ε̂1 − ε̂0)
        let ((cx, ce), c) = (first_order(p, t, tn), p.sigma(tn) / (2.0 * r1) * h.exp_m1());
        lincomb(&mut x, cx, &[(ce + c, &e0), (-c, &e1)])?;
        f.record(&x, tn, tr)?;
    }
    f.tensor(&x)
}

/// DPM-Solver-3, single-step with r₁ = ⅓, r₂ = ⅔ (Lu et al. 2022, Alg. 2).
pub fn dpm_solver_3(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    _r: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let (r1, r2) = (1.0 / 3.0, 2.0 / 3.0);
    let (f, mut x) = ScoreField::new(m, p, x)?;
    let (mut e0, mut e1, mut e2, mut u) = (f.buffer(), f.buffer(), f.buffer(), f.buffer());
    for (i, w) in ts.windows(2).enumerate() {
        let (t, tn) = (w[0], w[1]);
        let (l, h) = (p.lambda(t), p.lambda(tn) - p.lambda(t));
        let (s1, s2) = (p.t_at_lambda(l + r1 * h), p.t_at_lambda(l + r2 * h));
        f.predict(Eps, &x, t, tr, i, &mut e0)?;
        let (ux, ue) = first_order(p, t, s1);
        lincomb(&mut u, 0.0, &[(ux, &x), (ue, &e0)])?;
        f.predict(Eps, &u, s1, tr, i, &mut e1)?;
        // u2 = first_order(x → s2) − c₂ (ε̂1 − ε̂0)
        let c2 = p.sigma(s2) * r2 / r1 * ((r2 * h).exp_m1() / (r2 * h) - 1.0);
        let (ux, ue) = first_order(p, t, s2);
        lincomb(&mut u, 0.0, &[(ux, &x), (ue + c2, &e0), (-c2, &e1)])?;
        f.predict(Eps, &u, s2, tr, i, &mut e2)?;
        // x' = first_order(x → t') − c (ε̂2 − ε̂0)
        let c = p.sigma(tn) / r2 * (h.exp_m1() / h - 1.0);
        let (cx, ce) = first_order(p, t, tn);
        lincomb(&mut x, cx, &[(ce + c, &e0), (-c, &e2)])?;
        f.record(&x, tn, tr)?;
    }
    f.tensor(&x)
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
    // y = x/α; x holds α_t y at the newest t (the recorded and returned state)
    let (f, mut x) = ScoreField::new(m, p, x)?;
    let mut y = x.clone();
    lincomb(&mut y, 1.0 / p.alpha(ts[0]), &[])?;
    let (mut d, mut d_prev) = (f.buffer(), f.buffer());
    let mut h_prev = None;
    for (i, w) in ts.windows(2).enumerate() {
        let (t, tn) = (w[0], w[1]);
        let h = p.lambda(tn) - p.lambda(t);
        lincomb(&mut x, 0.0, &[(p.alpha(t), &y)])?;
        f.predict(X0, &x, t, tr, i, &mut d)?;
        let (c, c_prev) = match h_prev {
            Some(h_prev) => {
                let r = h_prev / h;
                (1.0 + 0.5 / r, -0.5 / r)
            }
            None => (1.0, 0.0),
        };
        let g = -(-h).exp_m1();
        lincomb(&mut y, (-h).exp(), &[(g * c, &d), (g * c_prev, &d_prev)])?;
        std::mem::swap(&mut d, &mut d_prev);
        h_prev = Some(h);
        lincomb(&mut x, 0.0, &[(p.alpha(tn), &y)])?;
        f.record(&x, tn, tr)?;
    }
    f.tensor(&x)
}

/// DPM-Solver++(3M) (k-diffusion `sample_dpmpp_3m_sde` with η = 0), on y = x/α: the 2M update
/// plus φ₂ d₁ − φ₃ d₂ from the last three denoised values, φ₂ = (e^{−h} − 1)/h + 1, φ₃ = φ₂/h − ½.
/// Third order per step; its first-order first step leaves global order 2, as in k-diffusion.
pub fn dpm_solver_pp_3m(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    _r: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    // y = x/α; x holds α_t y at the newest t (the recorded and returned state)
    let (f, mut x) = ScoreField::new(m, p, x)?;
    let mut y = x.clone();
    lincomb(&mut y, 1.0 / p.alpha(ts[0]), &[])?;
    // x̂0 now, one step back and two steps back, with the steps' h
    let (mut d, mut d1, mut d2) = (f.buffer(), f.buffer(), f.buffer());
    let mut hs: Vec<f64> = Vec::new(); // h of earlier steps, newest last (at most two)
    for (i, w) in ts.windows(2).enumerate() {
        let (t, tn) = (w[0], w[1]);
        let h = p.lambda(tn) - p.lambda(t);
        lincomb(&mut x, 0.0, &[(p.alpha(t), &y)])?;
        f.predict(X0, &x, t, tr, i, &mut d)?;
        lincomb(&mut y, (-h).exp(), &[(-(-h).exp_m1(), &d)])?;
        let phi2 = (-h).exp_m1() / h + 1.0;
        match *hs.as_slice() {
            [h2, h1] => {
                // d1_0 = (d − d1)/r0, d1_1 = (d1 − d2)/r1, then dd1 = d1_0 + (d1_0 − d1_1) r0/(r0 + r1)
                // and dd2 = (d1_0 − d1_1)/(r0 + r1); y += φ₂ dd1 − (φ₂/h − ½) dd2
                let (r0, r1) = (h1 / h, h2 / h);
                let (a, b) = (phi2 * (1.0 + r0 / (r0 + r1)), (phi2 / h - 0.5) / (r0 + r1));
                let k = phi2 * r0 / (r0 + r1);
                // y += (a − b)·d1_0 − (k − b)·d1_1, expanded in d, d1, d2
                let (c0, c1) = (a - b, k - b);
                lincomb(
                    &mut y,
                    1.0,
                    &[(c0 / r0, &d), (-c0 / r0 - c1 / r1, &d1), (c1 / r1, &d2)],
                )?;
            }
            [h1] => {
                let r = h1 / h;
                lincomb(&mut y, 1.0, &[(phi2 / r, &d), (-phi2 / r, &d1)])?;
            }
            _ => {}
        }
        // shift the history: d2 ← d1 ← d
        std::mem::swap(&mut d1, &mut d2);
        std::mem::swap(&mut d, &mut d1);
        hs.push(h);
        if hs.len() > 2 {
            hs.remove(0);
        }
        lincomb(&mut x, 0.0, &[(p.alpha(tn), &y)])?;
        f.record(&x, tn, tr)?;
    }
    f.tensor(&x)
}

/// UniPC-3 (Zhao et al. 2023, Alg. 2–3, variant bh2, data prediction; `uni_pc.py`), on y = x/α:
/// the predictor y' = e^{−h} y + (1 − e^{−h})(x̂0 + Σ_k ρ_k D_k) from the last p ≤ 3 denoised
/// values (D_k = (x̂0_k − x̂0)/r_k, ρ solving R ρ = b), then the corrector UniC: the same update with
/// the new x̂0 at the predicted point, reused as the next step's history (no extra NFE). Lower
/// orders at the start and the end; the last step skips the corrector.
pub fn unipc(
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    _o: &Options,
    _r: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    const ORDER: usize = 3;
    let n = ts.len() - 1;
    let (f, mut x) = ScoreField::new(m, p, x)?;
    let mut y = x.clone();
    lincomb(&mut y, 1.0 / p.alpha(ts[0]), &[])?;
    let mut y_pred = f.buffer();
    // the denoised values at the last (at most ORDER) times, newest last, with their λ; `spare`
    // recycles the buffer of the value that leaves the history
    let mut hist: Vec<(f64, Buf)> = Vec::new();
    let mut spare = f.buffer();
    lincomb(&mut x, 0.0, &[(p.alpha(ts[0]), &y)])?;
    f.predict(X0, &x, ts[0], tr, 0, &mut spare)?;
    hist.push((p.lambda(ts[0]), std::mem::replace(&mut spare, f.buffer())));
    for (i, &t) in ts.iter().enumerate().skip(1) {
        let lam = p.lambda(t);
        let order = ORDER.min(hist.len()).min(n + 1 - i);
        let k = hist.len();
        let h = lam - hist[k - 1].0;
        // r_j = (λ_j − λ_0)/h for the j-th older value
        let rks: Vec<f64> = (1..order)
            .map(|j| (hist[k - 1 - j].0 - hist[k - 1].0) / h)
            .collect();
        let (rho_p, rho_c) = unipc_coefficients(&rks, h);
        let (decay, g) = ((-h).exp(), -(-h).exp_m1());
        // out ← e^{−h} out + g [(1 − Σ ρ_j/r_j − ρ_t) x̂0 + Σ (ρ_j/r_j) x̂0_j + ρ_t x̂0_t]
        let update = |out: &mut Buf, rho: &[f64], new: Option<(f64, &Buf)>| -> Result<()> {
            let mut parts: Vec<(f64, &Buf)> = rks
                .iter()
                .zip(rho)
                .enumerate()
                .map(|(j, (r, rho))| (g * rho / r, &hist[k - 2 - j].1))
                .collect();
            let rest = 1.0 - parts.iter().map(|c| c.0).sum::<f64>() / g - new.map_or(0.0, |n| n.0);
            parts.push((g * rest, &hist[k - 1].1));
            parts.extend(new.map(|(rho_t, buf)| (g * rho_t, buf)));
            lincomb(out, decay, &parts)
        };
        // predictor from y into y_pred
        lincomb(&mut y_pred, 0.0, &[(1.0, &y)])?;
        update(&mut y_pred, &rho_p, None)?;
        if i == n {
            std::mem::swap(&mut y, &mut y_pred);
        } else {
            // x̂0 at the predicted point, then the corrector on y (the value joins the history)
            lincomb(&mut x, 0.0, &[(p.alpha(t), &y_pred)])?;
            f.predict(X0, &x, t, tr, i, &mut spare)?;
            let (rho, rho_t) = rho_c.split_at(rho_c.len() - 1);
            update(&mut y, rho, Some((rho_t[0], &spare)))?;
            let oldest = (hist.len() == ORDER).then(|| hist.remove(0).1);
            let next = match oldest {
                Some(buf) => buf,
                None => f.buffer(),
            };
            hist.push((lam, std::mem::replace(&mut spare, next)));
        }
        lincomb(&mut x, 0.0, &[(p.alpha(t), &y)])?;
        f.record(&x, t, tr)?;
    }
    f.tensor(&x)
}

/// UniPC's ρ of the predictor (p − 1 values) and the corrector (p values) for the ratios r_k of
/// the p − 1 older points, with hh = −h, B(h) = e^{hh} − 1 (bh2): R ρ = b, R_ik = r_k^{i−1} (r_p = 1),
/// b_i = i!·φ_i(hh)/B(h) with φ_1 = (e^{hh} − 1)/hh − 1, φ_{i+1} = φ_i/hh − 1/(i + 1)!.
fn unipc_coefficients(rks: &[f64], h: f64) -> (Vec<f64>, Vec<f64>) {
    let p = rks.len() + 1;
    let hh = -h;
    let b_h = hh.exp_m1();
    let mut rs: Vec<f64> = rks.to_vec();
    rs.push(1.0);
    let (mut phi, mut fact) = (hh.exp_m1() / hh - 1.0, 1.0);
    let mut b = Vec::with_capacity(p);
    for i in 1..=p {
        b.push(phi * fact / b_h);
        fact *= (i + 1) as f64;
        phi = phi / hh - 1.0 / fact;
    }
    let r = |rows: usize| -> Vec<Vec<f64>> {
        (0..rows)
            .map(|i| rs[..rows].iter().map(|r| r.powi(i as i32)).collect())
            .collect()
    };
    let rho_p = match p {
        1 => Vec::new(),
        2 => vec![0.5],
        _ => solve(r(p - 1), b[..p - 1].to_vec()),
    };
    let rho_c = if p == 1 { vec![0.5] } else { solve(r(p), b) };
    (rho_p, rho_c)
}

/// The solution of a small dense system A x = b (Gaussian elimination, partial pivoting).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let piv = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap_or(c);
        a.swap(c, piv);
        b.swap(c, piv);
        let (top, rest) = a.split_at_mut(c + 1);
        let pivot = &top[c];
        for (r, row) in rest.iter_mut().enumerate() {
            let f = row[c] / pivot[c];
            row.iter_mut()
                .zip(pivot)
                .skip(c)
                .for_each(|(x, p)| *x -= f * p);
            b[c + 1 + r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    x
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
    // y = x/α; x holds α_t y at the newest t (the recorded and returned state)
    let (f, mut x) = ScoreField::new(m, p, x)?;
    let mut y = x.clone();
    lincomb(&mut y, 1.0 / p.alpha(ts[0]), &[])?;
    let (mut den, mut d1, mut d2, mut y_euler) = (f.buffer(), f.buffer(), f.buffer(), f.buffer());
    let mut z = Noise::like(&y, rng, p.space())?;
    for (i, w) in ts.windows(2).enumerate() {
        let (t, tn) = (w[0], w[1]);
        let (s, sn) = (sigma(t), sigma(tn));
        let c = &o.edm;
        let gamma = if (c.s_min..=c.s_max).contains(&s) {
            (c.s_churn / n).min(2f64.sqrt() - 1.0)
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
            add_noise(
                &mut y,
                (s_hat * s_hat - s * s).sqrt() * c.s_noise,
                &mut z,
                rng,
            )?;
        }
        // slope ← (y − D(α y, t))/σ
        let mut slope = |y: &Buf, t: f64, s: f64, out: &mut Buf| -> Result<()> {
            lincomb(&mut x, 0.0, &[(p.alpha(t), y)])?;
            f.predict(X0, &x, t, tr, i, &mut den)?;
            lincomb(out, 0.0, &[(1.0 / s, y), (-1.0 / s, &den)])?;
            Ok(())
        };
        slope(&y, t_hat, s_hat, &mut d1)?;
        lincomb(&mut y_euler, 0.0, &[(1.0, &y), (sn - s_hat, &d1)])?;
        slope(&y_euler, tn, sn, &mut d2)?;
        lincomb(
            &mut y,
            1.0,
            &[(0.5 * (sn - s_hat), &d1), (0.5 * (sn - s_hat), &d2)],
        )?;
        lincomb(&mut x, 0.0, &[(p.alpha(tn), &y)])?;
        f.record(&x, tn, tr)?;
    }
    f.tensor(&x)
}
