//! Convergence diagnostics of draws from several chains, after Vehtari, Gelman, Simpson, Carpenter
//! & Bürkner (2021, "Rank-normalization, folding, and localization: an improved R-hat"), on the
//! draws themselves (no rank normalisation: Stan's `ess_basic` and the classic split R-hat):
//!
//! - `split_rhat`: each chain cut in halves; R̂ = √(var⁺/W), with W the mean within-half variance
//!   and var⁺ = (h−1)/h W + B/h, B/h the variance of the half means (h draws per half). About 1
//!   when the chains agree; above 1.01 is the usual warning.
//! - `ess`: effective sample size on the split chains, M·h/τ̂, with τ̂ = −1 + 2 Σ ρ̂_t from the
//!   multi-chain autocorrelations ρ̂_t = 1 − (W − mean acov_t)/var⁺ (by FFT), summed in pairs
//!   while positive and made monotone (Geyer's initial monotone sequence, 1992).
//!
//! Draws are chain-major: chain c's n draws are `draws[c·n .. (c+1)·n]`. Both return NaN where
//! they are undefined (fewer than 8 draws per chain, or no variation at all).

use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

/// The split chains: each chain's first and last ⌊n/2⌋ draws (the middle one dropped when n is
/// odd), as slices.
fn halves(draws: &[f64], chains: usize) -> Option<Vec<&[f64]>> {
    if chains == 0 || !draws.len().is_multiple_of(chains) {
        return None;
    }
    let n = draws.len() / chains;
    let h = n / 2;
    if h < 4 {
        return None;
    }
    Some(
        draws
            .chunks_exact(n)
            .flat_map(|c| [&c[..h], &c[n - h..]])
            .collect(),
    )
}

/// Mean and unbiased variance of a series.
fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    (
        m,
        x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0),
    )
}

/// (W, var⁺) of equal-length split chains: the mean within-chain variance and the pooled estimate
/// (h−1)/h W + var(means).
fn within_and_pooled(parts: &[&[f64]]) -> (f64, f64) {
    let h = parts[0].len() as f64;
    let stats: Vec<(f64, f64)> = parts.iter().map(|p| mean_var(p)).collect();
    let w = stats.iter().map(|s| s.1).sum::<f64>() / stats.len() as f64;
    let means: Vec<f64> = stats.iter().map(|s| s.0).collect();
    let b_over_h = if means.len() > 1 {
        mean_var(&means).1
    } else {
        0.0
    };
    (w, (h - 1.0) / h * w + b_over_h)
}

/// Split R̂ of one quantity's draws from `chains` chains (chain-major).
pub fn split_rhat(draws: &[f64], chains: usize) -> f64 {
    let Some(parts) = halves(draws, chains) else {
        return f64::NAN;
    };
    let (w, var_plus) = within_and_pooled(&parts);
    if w.is_nan() || w <= 0.0 {
        return f64::NAN;
    }
    (var_plus / w).sqrt()
}

/// Effective sample size of one quantity's draws from `chains` chains (chain-major).
pub fn ess(draws: &[f64], chains: usize) -> f64 {
    let Some(parts) = halves(draws, chains) else {
        return f64::NAN;
    };
    let h = parts[0].len();
    let m = parts.len() as f64;
    let (w, var_plus) = within_and_pooled(&parts);
    if var_plus.is_nan() || var_plus <= 0.0 {
        return f64::NAN;
    }
    let acov = mean_autocovariance(&parts);
    // ρ̂_t at lags 0..h, and Geyer's initial positive sequence: the pairs (ρ̂_t, ρ̂_{t+1}), t even,
    // kept while their sum is positive (as the `posterior` R package writes it)
    let rho = |t: usize| 1.0 - (w - acov[t]) / var_plus;
    let mut r = vec![0.0; h];
    r[0] = 1.0;
    r[1] = rho(1);
    let (mut even, mut odd) = (1.0, r[1]);
    let mut t = 0;
    while t + 5 < h && even + odd > 0.0 {
        t += 2;
        even = rho(t);
        odd = rho(t + 1);
        if even + odd >= 0.0 {
            r[t] = even;
            r[t + 1] = odd;
        }
    }
    let max_t = t;
    if even > 0.0 {
        r[max_t] = even;
    }
    // the initial monotone sequence: no pair larger than the one before
    let mut t = 0;
    while t + 4 <= max_t {
        t += 2;
        let prev = r[t - 2] + r[t - 1];
        if r[t] + r[t + 1] > prev {
            r[t] = prev / 2.0;
            r[t + 1] = prev / 2.0;
        }
    }
    let total = m * h as f64;
    let tau = -1.0 + 2.0 * r[..max_t].iter().sum::<f64>() + r[max_t];
    // Stan's floor: an antithetic chain's ESS is at most n·log10(n)
    total / tau.max(1.0 / total.log10())
}

/// Mean over the series of their autocovariances (divisor h) at lags 0..h, by zero-padded FFT.
fn mean_autocovariance(parts: &[&[f64]]) -> Vec<f64> {
    let h = parts[0].len();
    let size = (2 * h).next_power_of_two();
    let mut planner = FftPlanner::<f64>::new();
    let (fwd, inv) = (
        planner.plan_fft_forward(size),
        planner.plan_fft_inverse(size),
    );
    let mut acc = vec![0.0; h];
    let mut buf = vec![Complex::new(0.0, 0.0); size];
    for p in parts {
        let mean = p.iter().sum::<f64>() / h as f64;
        buf.iter_mut().for_each(|b| *b = Complex::new(0.0, 0.0));
        for (b, v) in buf.iter_mut().zip(p.iter()) {
            b.re = v - mean;
        }
        fwd.process(&mut buf);
        buf.iter_mut()
            .for_each(|b| *b = Complex::new(b.norm_sqr(), 0.0));
        inv.process(&mut buf);
        // rustfft does not normalise: the inverse carries a factor `size`
        for (a, b) in acc.iter_mut().zip(&buf) {
            *a += b.re / (size * h) as f64;
        }
    }
    acc.iter_mut().for_each(|a| *a /= parts.len() as f64);
    acc
}

/// ESS and split R̂ of every coordinate of draws \[chains, n, d\] (chain-major), in parallel over
/// coordinates: (ESS per coordinate, R̂ per coordinate).
pub fn per_coordinate(draws: &[f64], chains: usize, d: usize) -> (Vec<f64>, Vec<f64>) {
    (0..d)
        .into_par_iter()
        .map(|j| {
            let series: Vec<f64> = draws.iter().skip(j).step_by(d.max(1)).copied().collect();
            (ess(&series, chains), split_rhat(&series, chains))
        })
        .unzip()
}
