//! Time grids t_0 = T > t_1 > … > t_N = t_min for the samplers.

use crate::process::Process;
use anyhow::{bail, Result};

/// How the N steps are spaced between T and t_min.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Grid {
    /// Uniform in t.
    Uniform,
    /// Quadratic in t, denser near the data: t_i = t_min + (T − t_min)(1 − i/N)² (DDIM's "quad").
    Quadratic,
    /// Uniform in the log-SNR λ_t = log(α_t/σ_t) (DPM-Solver's recommendation).
    LogSnr,
    /// EDM's σ_i = (σ_max^{1/ρ} + i/N (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ in σ = e^{−λ} (Karras et al. 2022, eq. 5).
    Karras(f64),
}

/// Names accepted by `Grid::parse`.
pub const GRIDS: &str = "auto, uniform, quadratic, logsnr, karras (ρ = 7), karras:RHO";

/// The grid each sampler was designed for (its `SamplerInfo::grid`): log-SNR for DDIM and
/// DPM-Solver(++) (Lu et al. 2022), Karras ρ = 7 for EDM, uniform in t for the SDE, Langevin and
/// Runge–Kutta samplers (score_sde); uniform for an unknown name.
pub fn recommended(sampler: &str) -> Grid {
    super::info(sampler).map_or(Grid::Uniform, |i| i.grid)
}

impl Grid {
    /// The grid's name as `parse` reads it.
    pub fn name(&self) -> String {
        match self {
            Grid::Uniform => "uniform".into(),
            Grid::Quadratic => "quadratic".into(),
            Grid::LogSnr => "logsnr".into(),
            Grid::Karras(rho) => format!("karras:{rho}"),
        }
    }

    /// Parses `auto` (the sampler's recommended grid), `uniform`, `quadratic`, `logsnr`, `karras` or `karras:RHO`.
    pub fn parse(s: &str, sampler: &str) -> Result<Self> {
        Ok(match s {
            "auto" => recommended(sampler),
            "uniform" => Grid::Uniform,
            "quadratic" => Grid::Quadratic,
            "logsnr" => Grid::LogSnr,
            "karras" => Grid::Karras(7.0),
            other => match other
                .strip_prefix("karras:")
                .and_then(|r| r.parse::<f64>().ok())
            {
                Some(rho) if rho > 0.0 => Grid::Karras(rho),
                _ => bail!("unknown time grid '{other}'; valid: {GRIDS}"),
            },
        })
    }

    /// The N + 1 times of an N-step grid from T to t_min.
    pub fn times(&self, p: &dyn Process, steps: usize) -> Result<Vec<f64>> {
        if steps == 0 {
            bail!("the number of steps must be at least 1");
        }
        let (t_max, t_min) = (p.t_max(), p.t_min());
        let frac = |i: usize| i as f64 / steps as f64;
        let ts: Vec<f64> = match *self {
            Grid::Uniform => (0..=steps)
                .map(|i| t_max + (t_min - t_max) * frac(i))
                .collect(),
            Grid::Quadratic => (0..=steps)
                .map(|i| t_min + (t_max - t_min) * (1.0 - frac(i)).powi(2))
                .collect(),
            Grid::LogSnr => {
                let (l0, l1) = (p.lambda(t_max), p.lambda(t_min));
                (0..=steps)
                    .map(|i| p.t_at_lambda(l0 + (l1 - l0) * frac(i)))
                    .collect()
            }
            Grid::Karras(rho) => {
                let (s0, s1) = ((-p.lambda(t_max)).exp(), (-p.lambda(t_min)).exp());
                let (a, b) = (s0.powf(1.0 / rho), s1.powf(1.0 / rho));
                (0..=steps)
                    .map(|i| p.t_at_lambda(-(a + (b - a) * frac(i)).powf(rho).ln()))
                    .collect()
            }
        };
        // pin the ends exactly (inverse λ is only accurate to ~1e-12)
        let mut ts = ts;
        ts[0] = t_max;
        ts[steps] = t_min;
        check(&ts, p)?;
        Ok(ts)
    }
}

/// A grid must decrease strictly from at most T and end exactly at t_min.
pub fn check(ts: &[f64], p: &dyn Process) -> Result<()> {
    if ts.len() < 2 {
        bail!("a time grid needs at least 2 points");
    }
    if ts.iter().any(|t| !t.is_finite()) || ts.windows(2).any(|w| w[1] >= w[0]) {
        bail!("the time grid must decrease strictly from T to t_min");
    }
    if ts[0] > p.t_max() + 1e-12 {
        bail!(
            "the time grid starts at t = {} beyond T = {}",
            ts[0],
            p.t_max()
        );
    }
    let last = ts[ts.len() - 1];
    if (last - p.t_min()).abs() > 1e-9 {
        bail!(
            "the time grid ends at t = {last} but must reach t_min = {}",
            p.t_min()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessConfig;

    #[test]
    fn grids_span_and_space_as_documented() -> Result<()> {
        for name in ["vp", "ve", "cosine", "subvp"] {
            let p = ProcessConfig::from_name(name, 50.0)?.build()?;
            for g in [
                Grid::Uniform,
                Grid::Quadratic,
                Grid::LogSnr,
                Grid::Karras(7.0),
            ] {
                let ts = g.times(p.as_ref(), 17)?;
                assert_eq!(ts.len(), 18);
                assert_eq!(ts[0], p.t_max());
                assert_eq!(ts[17], p.t_min());
            }
            // log-SNR grid: equal λ increments
            let ts = Grid::LogSnr.times(p.as_ref(), 10)?;
            let dl: Vec<f64> = ts
                .windows(2)
                .map(|w| p.lambda(w[1]) - p.lambda(w[0]))
                .collect();
            for d in &dl {
                assert!((d - dl[0]).abs() < 1e-6 * dl[0].abs(), "{name}: {dl:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn bad_grids_are_errors() {
        let p = ProcessConfig::vp_default().build().unwrap();
        assert!(check(&[1.0, 0.5, 0.1], p.as_ref())
            .unwrap_err()
            .to_string()
            .contains("must reach t_min"));
        assert!(check(&[1.0, 1.0, 1e-3], p.as_ref()).is_err());
        assert!(Grid::parse("karras:-1", "em").is_err());
        assert_eq!(Grid::parse("karras:5", "em").unwrap(), Grid::Karras(5.0));
        assert!(Grid::Uniform.times(p.as_ref(), 0).is_err());
    }
}
