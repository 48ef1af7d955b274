//! Explicit Runge–Kutta integrators for dy/dt = f(y, t) on a tensor state, in either time direction:
//! fixed-step Euler, Heun and RK4 over a given grid, and adaptive Dormand–Prince 5(4).
//! The probability-flow samplers and the likelihood both integrate through here.

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

/// Integrates over `grid` (monotone, either direction); `on_step(i, t_{i+1}, y)` sees each new state.
pub fn fixed_step(
    method: Method,
    f: &mut dyn FnMut(&Tensor, f64) -> Result<Tensor>,
    mut y: Tensor,
    grid: &[f64],
    on_step: &mut dyn FnMut(usize, f64, &Tensor) -> Result<()>,
) -> Result<Tensor> {
    for (i, w) in grid.windows(2).enumerate() {
        let (t, h) = (w[0], w[1] - w[0]);
        y = match method {
            Method::Euler => (&y + (f(&y, t)? * h)?)?,
            Method::Heun => {
                let k1 = f(&y, t)?;
                let k2 = f(&(&y + (&k1 * h)?)?, t + h)?;
                (&y + ((k1 + k2)? * (0.5 * h))?)?
            }
            Method::Rk4 => {
                let k1 = f(&y, t)?;
                let k2 = f(&(&y + (&k1 * (0.5 * h))?)?, t + 0.5 * h)?;
                let k3 = f(&(&y + (&k2 * (0.5 * h))?)?, t + 0.5 * h)?;
                let k4 = f(&(&y + (&k3 * h)?)?, t + h)?;
                let sum = (k1 + (k2 * 2.0)? + (k3 * 2.0)? + k4)?;
                (&y + (sum * (h / 6.0))?)?
            }
        };
        on_step(i, w[1], &y)?;
    }
    Ok(y)
}

/// Tolerances and limits of the adaptive solver.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
    /// Give up (with an error) after this many evaluations of f.
    pub max_nfe: usize,
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

/// Result of an adaptive solve.
pub struct Solution {
    pub y: Tensor,
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
fn error_norm(e: &Tensor, y0: &Tensor, y1: &Tensor, tol: &Tolerance) -> Result<f64> {
    let scale = ((y0.abs()?.maximum(&y1.abs()?)? * tol.rtol)? + tol.atol)?;
    let r = (e / scale)?
        .to_dtype(DType::F64)?
        .sqr()?
        .mean_all()?
        .to_scalar::<f64>()?;
    Ok(r.sqrt())
}

fn combo(y: &Tensor, ks: &[Tensor], coefs: &[f64], h: f64) -> Result<Tensor> {
    let mut acc = y.clone();
    for (k, c) in ks.iter().zip(coefs) {
        if *c != 0.0 {
            acc = (acc + (k * (c * h))?)?;
        }
    }
    Ok(acc)
}

/// Adaptive Dormand–Prince 5(4) from t0 to t1 (either direction), FSAL, with the standard
/// controller h ← h·clamp(0.9·err^(−1/5), 0.2, 10) and Hairer's initial step.
pub fn dopri5(
    f: &mut dyn FnMut(&Tensor, f64) -> Result<Tensor>,
    y0: Tensor,
    t0: f64,
    t1: f64,
    tol: &Tolerance,
) -> Result<Solution> {
    tol.check()?;
    let dir = (t1 - t0).signum();
    let span = (t1 - t0).abs();
    let mut nfe = 0usize;
    let mut eval = |y: &Tensor, t: f64, nfe: &mut usize| -> Result<Tensor> {
        *nfe += 1;
        f(y, t)
    };
    let mut y = y0;
    let mut t = t0;
    let mut k0 = eval(&y, t, &mut nfe)?;
    // initial step (Hairer, Nørsett & Wanner, II.4)
    let zero = y.zeros_like()?;
    let d0 = error_norm(
        &y,
        &zero,
        &zero,
        &Tolerance {
            rtol: tol.rtol,
            atol: tol.atol,
            max_nfe: 0,
        },
    )?;
    let d1 = error_norm(&k0, &y, &y, tol)?;
    let mut h = if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    }
    .min(span);
    let y1 = (&y + (&k0 * (dir * h))?)?;
    let k1 = eval(&y1, t + dir * h, &mut nfe)?;
    let d2 = error_norm(&(k1 - &k0)?, &y, &y, tol)? / h;
    let h1 = if d1.max(d2) <= 1e-15 {
        (h * 1e-3).max(1e-6)
    } else {
        (0.01 / d1.max(d2)).powf(0.2)
    };
    h = (100.0 * h).min(h1).min(span);
    let (mut accepted, mut rejected) = (0, 0);
    while (t1 - t) * dir > 1e-12 * span.max(1.0) {
        if nfe + 6 > tol.max_nfe {
            bail!("adaptive solver hit its NFE cap ({}) at t = {t:.6} before reaching {t1}; raise the cap or loosen rtol/atol", tol.max_nfe);
        }
        h = h.min((t1 - t).abs());
        let hs = dir * h;
        let mut ks = vec![k0.clone()];
        for s in 1..7 {
            let ys = combo(&y, &ks, A[s], hs)?;
            ks.push(eval(&ys, t + C[s] * hs, &mut nfe)?);
        }
        let y_new = combo(&y, &ks, A[6], hs)?;
        let err_vec = combo(&zero, &ks, &E, hs)?;
        let err = error_norm(&err_vec, &y, &y_new, tol)?;
        if !err.is_finite() {
            bail!("adaptive solver produced NaN or infinity at t = {t:.6}");
        }
        if err <= 1.0 {
            t += hs;
            y = y_new;
            k0 = ks.pop().expect("seven stages");
            accepted += 1;
        } else {
            rejected += 1;
        }
        let factor = if err == 0.0 {
            10.0
        } else {
            (0.9 * err.powf(-0.2)).clamp(0.2, 10.0)
        };
        h *= factor;
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
