//! Explicit Runge–Kutta integrators for dy/dt = f(y, t), in either time direction: fixed-step Euler,
//! Heun and RK4 over a given grid, and adaptive Dormand–Prince 5(4). The probability-flow samplers
//! and the likelihood both integrate through here. The solvers keep the state and every stage in
//! buffers (`flat::Buf`) allocated once per solve and reused by every step: flat f64 on the CPU,
//! where the state becomes a tensor only to evaluate the right-hand side, tensors on a GPU.

use crate::flat::{lincomb, Buf};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// A fixed-step explicit Runge–Kutta method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Euler, order 1, 1 evaluation per step.
    Euler,
    /// Heun (explicit trapezoid), order 2, 2 evaluations per step.
    Heun,
    /// Classical Runge–Kutta, order 4, 4 evaluations per step.
    Rk4,
}

/// A right-hand side on the solver's state: writes f(y, t) into `out` (as long as y).
pub type Field<'a> = dyn FnMut(&Buf, f64, &mut Buf) -> Result<()> + 'a;

/// Called after each fixed step with (i, t_{i+1}, y_{i+1}).
pub type OnStep<'a> = dyn FnMut(usize, f64, &Buf) -> Result<()> + 'a;

/// A right-hand side on tensors as a `Field`: each evaluation views y as a tensor shaped, typed
/// and placed like `like`, and puts f's result into `out`.
pub fn on_tensors<'a>(
    f: &'a mut dyn FnMut(&Tensor, f64) -> Result<Tensor>,
    like: &Tensor,
) -> impl FnMut(&Buf, f64, &mut Buf) -> Result<()> + 'a {
    let like = like.clone();
    move |y, t, out| {
        let v = f(&y.tensor(&like)?, t)?;
        if v.shape() != like.shape() {
            bail!(
                "the right-hand side has shape {:?}, the state {:?}",
                v.shape(),
                like.shape()
            );
        }
        out.assign(v)
    }
}

/// Integrates over `grid` (monotone, either direction); `on_step(i, t_{i+1}, y)` sees each new state.
pub fn fixed_step(
    method: Method,
    f: &mut dyn FnMut(&Tensor, f64) -> Result<Tensor>,
    y: Tensor,
    grid: &[f64],
    on_step: &mut dyn FnMut(usize, f64, &Tensor) -> Result<()>,
) -> Result<Tensor> {
    let mut state = Buf::of(&y)?;
    let mut field = on_tensors(f, &y);
    let mut seen = |i: usize, t: f64, s: &Buf| on_step(i, t, &s.tensor(&y)?);
    fixed_step_buf(method, &mut field, &mut state, grid, &mut seen)?;
    state.tensor(&y)
}

/// `fixed_step` on the solver's state, in place; four stage buffers serve every step.
pub fn fixed_step_buf(
    method: Method,
    f: &mut Field,
    y: &mut Buf,
    grid: &[f64],
    on_step: &mut OnStep,
) -> Result<()> {
    let stages = match method {
        Method::Euler => 1,
        Method::Heun => 2,
        Method::Rk4 => 4,
    };
    let mut k = (0..stages).map(|_| y.zeros()).collect::<Result<Vec<_>>>()?;
    let mut tmp = y.zeros()?;
    // tmp ← y + c·h·k
    let shifted =
        |tmp: &mut Buf, y: &Buf, k: &Buf, ch: f64| lincomb(tmp, 0.0, &[(1.0, y), (ch, k)]);
    for (i, w) in grid.windows(2).enumerate() {
        let (t, h) = (w[0], w[1] - w[0]);
        // Butcher weights of the stages: y ← y + h Σ b_s k_s
        let b: &[f64] = match method {
            Method::Euler => {
                f(y, t, &mut k[0])?;
                &[1.0]
            }
            Method::Heun => {
                f(y, t, &mut k[0])?;
                shifted(&mut tmp, y, &k[0], h)?;
                f(&tmp, t + h, &mut k[1])?;
                &[0.5, 0.5]
            }
            Method::Rk4 => {
                f(y, t, &mut k[0])?;
                shifted(&mut tmp, y, &k[0], 0.5 * h)?;
                f(&tmp, t + 0.5 * h, &mut k[1])?;
                shifted(&mut tmp, y, &k[1], 0.5 * h)?;
                f(&tmp, t + 0.5 * h, &mut k[2])?;
                shifted(&mut tmp, y, &k[2], h)?;
                f(&tmp, t + h, &mut k[3])?;
                &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0]
            }
        };
        for (s, bs) in b.iter().enumerate() {
            lincomb(y, 1.0, &[(h * bs, &k[s])])?;
        }
        on_step(i, w[1], y)?;
    }
    Ok(())
}

/// Tolerances and limits of the adaptive solver.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
    /// Give up (with an error) after this many evaluations of f.
    pub max_nfe: usize,
}

impl Default for Tolerance {
    /// rtol = atol = 1e-5 (score_sde's), at most 10,000 evaluations.
    fn default() -> Self {
        Tolerance {
            rtol: 1e-5,
            atol: 1e-5,
            max_nfe: 10_000,
        }
    }
}

impl Tolerance {
    /// Rejects non-positive or non-finite tolerances.
    pub fn check(&self) -> Result<()> {
        if !(self.rtol.is_finite() && self.rtol > 0.0 && self.atol.is_finite() && self.atol > 0.0) {
            bail!(
                "rtol and atol must be positive numbers (got rtol = {}, atol = {})",
                self.rtol,
                self.atol
            );
        }
        if self.max_nfe < 8 {
            bail!("the NFE cap must be at least 8 (got {})", self.max_nfe);
        }
        Ok(())
    }
}

/// Result of an adaptive solve: the end state (shaped like the start) and the solver's counts.
pub struct Solution<Y = Tensor> {
    pub y: Y,
    pub nfe: usize,
    pub accepted: usize,
    pub rejected: usize,
}

// Dormand & Prince (1980) 5(4) tableau; B5 is the 5th-order solution, E = B5 − B4 its error weights.
const C: [f64; 7] = [0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];
const A: [&[f64]; 7] = [
    &[],
    &[1.0 / 5.0],
    &[3.0 / 40.0, 9.0 / 40.0],
    &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
    &[
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
    ],
    &[
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
    ],
    &[
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
    ],
];
const E: [f64; 7] = [
    35.0 / 384.0 - 5179.0 / 57600.0,
    0.0,
    500.0 / 1113.0 - 7571.0 / 16695.0,
    125.0 / 192.0 - 393.0 / 640.0,
    -2187.0 / 6784.0 + 92097.0 / 339200.0,
    11.0 / 84.0 - 187.0 / 2100.0,
    -1.0 / 40.0,
];

/// RMS of e / (atol + rtol·max(|y0|, |y1|)) over all elements (Hairer–Nørsett–Wanner II.4).
fn error_norm(e: &Buf, y0: &Buf, y1: &Buf, rtol: f64, atol: f64) -> Result<f64> {
    if let Buf::Device(e) = e {
        let scale = y0.device()?.abs()?.maximum(&y1.device()?.abs()?)?;
        let r = (e / scale.affine(rtol, atol)?)?.to_dtype(DType::F64)?;
        return Ok(r.sqr()?.mean_all()?.to_scalar::<f64>()?.sqrt());
    }
    let (e, y0, y1) = (e.host()?, y0.host()?, y1.host()?);
    let sum: f64 = e
        .iter()
        .zip(y0.iter().zip(y1))
        .map(|(e, (a, b))| (e / (atol + rtol * a.abs().max(b.abs()))).powi(2))
        .sum();
    Ok((sum / e.len().max(1) as f64).sqrt())
}

/// out ← y + h Σ_s c_s k_s.
fn combo(out: &mut Buf, y: &Buf, ks: &[Buf], coefs: &[f64], h: f64) -> Result<()> {
    let mut terms = vec![(1.0, y)];
    terms.extend(coefs.iter().zip(ks).map(|(c, k)| (c * h, k)));
    lincomb(out, 0.0, &terms)
}

/// Adaptive Dormand–Prince 5(4) from t0 to t1 (either direction), FSAL, with the standard
/// controller h ← h·clamp(0.9·err^(−1/5), 0.2, 10) (no growth right after a rejection) and
/// Hairer's initial step: scipy's RK45 step for step.
pub fn dopri5(
    f: &mut dyn FnMut(&Tensor, f64) -> Result<Tensor>,
    y0: Tensor,
    t0: f64,
    t1: f64,
    tol: &Tolerance,
) -> Result<Solution> {
    let state = Buf::of(&y0)?;
    let sol = dopri5_buf(&mut on_tensors(f, &y0), state, t0, t1, tol)?;
    Ok(Solution {
        y: sol.y.tensor(&y0)?,
        nfe: sol.nfe,
        accepted: sol.accepted,
        rejected: sol.rejected,
    })
}

/// `dopri5` on the solver's state: the seven stages, the trial state and the error live in
/// buffers allocated once and reused by every step.
pub fn dopri5_buf(
    f: &mut Field,
    mut y: Buf,
    t0: f64,
    t1: f64,
    tol: &Tolerance,
) -> Result<Solution<Buf>> {
    tol.check()?;
    let (rtol, atol) = (tol.rtol, tol.atol);
    let dir = (t1 - t0).signum();
    let span = (t1 - t0).abs();
    let mut nfe = 0usize;
    let mut ks = (0..7).map(|_| y.zeros()).collect::<Result<Vec<_>>>()?;
    let (mut ys, mut err_vec) = (y.zeros()?, y.zeros()?);
    let mut t = t0;
    nfe += 1;
    f(&y, t, &mut ks[0])?;
    // initial step (Hairer, Nørsett & Wanner, II.4)
    let d0 = error_norm(&y, &y, &y, rtol, atol)?;
    let d1 = error_norm(&ks[0], &y, &y, rtol, atol)?;
    let mut h = if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    }
    .min(span);
    combo(&mut ys, &y, &ks[..1], &[1.0], dir * h)?;
    nfe += 1;
    f(&ys, t + dir * h, &mut ks[1])?;
    lincomb(&mut err_vec, 0.0, &[(1.0, &ks[1]), (-1.0, &ks[0])])?;
    let d2 = error_norm(&err_vec, &y, &y, rtol, atol)? / h;
    let h1 = if d1.max(d2) <= 1e-15 {
        (h * 1e-3).max(1e-6)
    } else {
        (0.01 / d1.max(d2)).powf(0.2)
    };
    h = (100.0 * h).min(h1).min(span);
    let (mut accepted, mut rejected) = (0, 0);
    // a step retried after a rejection may not grow on acceptance (Hairer's DOPRI5, scipy's RK45)
    let mut retried = false;
    let mut y_new = y.zeros()?;
    while (t1 - t) * dir > 1e-12 * span.max(1.0) {
        if nfe + 6 > tol.max_nfe {
            bail!("adaptive solver hit its NFE cap ({}) at t = {t:.6} before reaching {t1}; raise the cap or loosen rtol/atol", tol.max_nfe);
        }
        h = h.min((t1 - t).abs());
        let hs = dir * h;
        for s in 1..7 {
            combo(&mut ys, &y, &ks[..s], A[s], hs)?;
            nfe += 1;
            f(&ys, t + C[s] * hs, &mut ks[s])?;
        }
        combo(&mut y_new, &y, &ks[..6], A[6], hs)?;
        let errs: Vec<_> = E.iter().zip(&ks).map(|(e, k)| (e * hs, k)).collect();
        lincomb(&mut err_vec, 0.0, &errs)?;
        let err = error_norm(&err_vec, &y, &y_new, rtol, atol)?;
        if !err.is_finite() {
            bail!("adaptive solver produced NaN or infinity at t = {t:.6}");
        }
        let factor = if err == 0.0 {
            10.0
        } else {
            (0.9 * err.powf(-0.2)).clamp(0.2, 10.0)
        };
        if err <= 1.0 {
            t += hs;
            std::mem::swap(&mut y, &mut y_new);
            // first same as last: the 7th stage is f at the new state
            ks.swap(0, 6);
            accepted += 1;
            h *= if retried { factor.min(1.0) } else { factor };
            retried = false;
        } else {
            rejected += 1;
            h *= factor;
            retried = true;
        }
        if h < 1e-14 * span {
            bail!("adaptive solver step size underflow at t = {t:.6}");
        }
    }
    Ok(Solution {
        y,
        nfe,
        accepted,
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// y' = −2 t y on [0, 1] (y = e^{−t²}), plus y' = cos t: endpoint error against the exact solution.
    fn endpoint_error(method: Method, steps: usize) -> f64 {
        let y0 = Tensor::new(&[1.0f64, 0.0], &Device::Cpu).unwrap();
        let mut f = |y: &Tensor, t: f64| -> Result<Tensor> {
            let v: Vec<f64> = y.to_vec1()?;
            Ok(Tensor::new(&[-2.0 * t * v[0], t.cos()], &Device::Cpu)?)
        };
        let grid: Vec<f64> = (0..=steps).map(|i| i as f64 / steps as f64).collect();
        let y = fixed_step(method, &mut f, y0, &grid, &mut |_, _, _| Ok(())).unwrap();
        let v: Vec<f64> = y.to_vec1().unwrap();
        ((v[0] - (-1.0f64).exp()).powi(2) + (v[1] - 1f64.sin()).powi(2)).sqrt()
    }

    #[test]
    fn fixed_step_methods_converge_at_their_order() {
        for (m, order) in [
            (Method::Euler, 1.0),
            (Method::Heun, 2.0),
            (Method::Rk4, 4.0),
        ] {
            let (e1, e2) = (endpoint_error(m, 16), endpoint_error(m, 32));
            let slope = (e1 / e2).log2();
            assert!((slope - order).abs() < 0.25, "{m:?}: slope {slope}");
        }
    }

    #[test]
    fn dopri5_meets_tolerance_both_directions() {
        for (t0, t1) in [(0.0f64, 2.0f64), (2.0, 0.0)] {
            let y0v = (-(t0 * t0)).exp();
            let y0 = Tensor::new(&[y0v], &Device::Cpu).unwrap();
            let mut f = |y: &Tensor, t: f64| -> Result<Tensor> { Ok((y * (-2.0 * t))?) };
            let tol = Tolerance {
                rtol: 1e-8,
                atol: 1e-10,
                max_nfe: 10_000,
            };
            let s = dopri5(&mut f, y0, t0, t1, &tol).unwrap();
            let got: Vec<f64> = s.y.to_vec1().unwrap();
            let want = (-(t1 * t1)).exp();
            assert!(
                (got[0] - want).abs() < 1e-7,
                "{t0}->{t1}: {} vs {want}",
                got[0]
            );
            assert!(s.nfe < 1000, "nfe {}", s.nfe);
        }
    }

    /// The same steps as scipy's `solve_ivp(method="RK45")`, the reference's solver (score_sde's
    /// likelihood): its nfev (scipy 1.17.1) on y' = (−2ty₀, cos t + λ(y₁ − sin t)) from
    /// y(t₀) = (100 e^{−t₀²}, sin t₀), both directions, two tolerances, and λ = −50 (a fast
    /// relaxation: the initial step binds). Another initial step or step-size rule changes these.
    #[test]
    fn dopri5_takes_scipys_steps() {
        for (lambda, (t0, t1), tol, scipy_nfev) in [
            (0.0, (0.0f64, 2.0f64), 1e-5, 98),
            (0.0, (0.0, 2.0), 1e-8, 260),
            (0.0, (2.0, 0.0), 1e-5, 80),
            (0.0, (2.0, 0.0), 1e-8, 254),
            (-50.0, (0.0, 2.0), 1e-5, 308),
            (-50.0, (0.0, 2.0), 1e-8, 1052),
        ] {
            let y0 = Tensor::new(&[100.0 * (-(t0 * t0)).exp(), t0.sin()], &Device::Cpu).unwrap();
            let mut f = |y: &Tensor, t: f64| -> Result<Tensor> {
                let v: Vec<f64> = y.to_vec1()?;
                let y1 = t.cos() + lambda * (v[1] - t.sin());
                Ok(Tensor::new(&[-2.0 * t * v[0], y1], &Device::Cpu)?)
            };
            let tol = Tolerance {
                rtol: tol,
                atol: tol,
                max_nfe: 10_000,
            };
            let s = dopri5(&mut f, y0, t0, t1, &tol).unwrap();
            assert_eq!(
                s.nfe, scipy_nfev,
                "λ = {lambda}, {t0}->{t1} at {}",
                tol.rtol
            );
        }
    }

    #[test]
    fn bad_tolerances_and_caps_are_errors() {
        let y0 = Tensor::new(&[1.0f64], &Device::Cpu).unwrap();
        let mut f = |y: &Tensor, _t: f64| -> Result<Tensor> { Ok(y.clone()) };
        assert!(dopri5(
            &mut f,
            y0.clone(),
            0.0,
            1.0,
            &Tolerance {
                rtol: -1.0,
                atol: 1e-5,
                max_nfe: 100
            }
        )
        .is_err());
        let e = dopri5(
            &mut f,
            y0,
            0.0,
            50.0,
            &Tolerance {
                rtol: 1e-12,
                atol: 1e-12,
                max_nfe: 20,
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("NFE cap"), "{e}");
    }
}
