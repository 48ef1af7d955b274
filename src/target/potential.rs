//! Boltzmann targets p(x) ∝ exp(−U(x)/kT): the `Potential` trait (energy U, force F = −∇U, an
//! explicit temperature kT), the 2-D test surfaces (`DoubleWell`, `MullerBrown`), a mixture as an
//! energy (`MixtureEnergy`) and the registry of named potentials (`named`). The particle systems
//! DW-4 and LJ-13 are in `particles`.
//!
//! The convention, in one place (`Potential::beta`): log p = −βU + const and the score
//! ∇log p = βF with β = 1/kT. Energies and forces themselves never depend on kT.
//!
//! A potential of your own is a small trait impl; `examples/potential.rs` writes one and samples it
//! with MALA (`cargo run --release --example potential`).

use super::particles::{LennardJones, MultiDoubleWell};
use super::GaussianMixture;
use crate::process::Space;
use anyhow::{bail, ensure, Result};
use rand::{Rng, RngCore};
use rand_distr::StandardNormal;

/// A Boltzmann target p ∝ exp(−U/kT): energy U(x) and force F(x) = −∇U(x) for rows of x
/// (row-major \[n, d\]). The score is ∇log p = F/kT (at kT = 1 the force is the score).
///
/// To write one: `dim` and `energy_force` (per row with `each_row`), and `kt` unless it is 1;
/// `examples/potential.rs` does so for a ring and samples it with `mcmc::mala`.
pub trait Potential {
    /// Dimension d of a configuration.
    fn dim(&self) -> usize;

    /// U and F = −∇U at the rows of x (\[n, d\]): energies into `e` (\[n\]), forces into `f` (\[n, d\]).
    /// `check_rows` (or `each_row`) checks the three lengths.
    fn energy_force(&self, x: &[f64], e: &mut [f64], f: &mut [f64]) -> Result<()>;

    /// Temperature kT of p ∝ exp(−U/kT).
    fn kt(&self) -> f64 {
        1.0
    }

    /// β = 1/kT, the one place the convention lives: log p = −βU + const, ∇log p = βF.
    fn beta(&self) -> f64 {
        1.0 / self.kt()
    }

    /// (N particles, k dimensions) when a configuration is N particles in k-D ([x1, y1, x2, …]) whose
    /// density is invariant to translation; sampled on the centre-of-mass-free subspace.
    fn particles(&self) -> Option<(usize, usize)> {
        None
    }

    /// Where the density lives: all of R^d, or the centre-of-mass-free subspace of particles.
    fn space(&self) -> Space {
        match self.particles() {
            Some((particles, dim)) => Space::ComFree { particles, dim },
            None => Space::Full,
        }
    }

    /// U(x) per row, up to an additive constant.
    fn energy(&self, x: &[f64]) -> Result<Vec<f64>> {
        let n = x.len() / self.dim().max(1);
        let (mut e, mut f) = (vec![0.0; n], vec![0.0; x.len()]);
        self.energy_force(x, &mut e, &mut f)?;
        Ok(e)
    }

    /// F(x) = −∇U(x) per row, row-major like x.
    fn force(&self, x: &[f64]) -> Result<Vec<f64>> {
        let n = x.len() / self.dim().max(1);
        let (mut e, mut f) = (vec![0.0; n], vec![0.0; x.len()]);
        self.energy_force(x, &mut e, &mut f)?;
        Ok(f)
    }

    /// The score ∇log p = βF per row.
    fn score(&self, x: &[f64]) -> Result<Vec<f64>> {
        let beta = self.beta();
        Ok(self.force(x)?.into_iter().map(|f| beta * f).collect())
    }

    /// A starting configuration for a sampler's chain: by default N(0, I) on `space()`.
    fn initial(&self, rng: &mut dyn RngCore) -> Vec<f64> {
        let mut x: Vec<f64> = (0..self.dim())
            .map(|_| rng.sample(StandardNormal))
            .collect();
        self.space().project(&mut x);
        x
    }
}

/// Checks that x holds whole rows of d values and that `e` and `f` fit them; the row count n.
pub fn check_rows(x: &[f64], d: usize, e: &[f64], f: &[f64]) -> Result<usize> {
    ensure!(
        d > 0 && x.len().is_multiple_of(d),
        "configurations have {} values, not a multiple of the potential's dimension {d}",
        x.len()
    );
    let n = x.len() / d;
    ensure!(
        e.len() == n && f.len() == x.len(),
        "energy and force buffers of {} and {} values do not fit {n} configurations of {d}",
        e.len(),
        f.len()
    );
    Ok(n)
}

/// `energy_force` for a potential written one configuration at a time: `row(x_i, f_i)` writes
/// F(x_i) into f_i and returns U(x_i).
pub fn each_row(
    x: &[f64],
    d: usize,
    e: &mut [f64],
    f: &mut [f64],
    row: impl Fn(&[f64], &mut [f64]) -> f64,
) -> Result<()> {
    check_rows(x, d, e, f)?;
    for ((xi, fi), ei) in x.chunks_exact(d).zip(f.chunks_exact_mut(d)).zip(e) {
        *ei = row(xi, fi);
    }
    Ok(())
}

/// A mixture as a Boltzmann target at kT = 1: U = −log p (normalised, so exp(−U) integrates to 1).
impl Potential for GaussianMixture {
    fn dim(&self) -> usize {
        GaussianMixture::dim(self)
    }
    fn energy_force(&self, x: &[f64], e: &mut [f64], f: &mut [f64]) -> Result<()> {
        check_rows(x, GaussianMixture::dim(self), e, f)?;
        let (logp, score) = self.log_prob_and_score_at(x, 1.0, 0.0)?;
        e.iter_mut().zip(logp).for_each(|(e, l)| *e = -l);
        f.copy_from_slice(&score);
        Ok(())
    }
}

/// Names accepted by `named`: the surfaces, the particle systems, and every mixture target
/// (`TARGET_NAMES`) as the energy U = −log p.
pub const POTENTIAL_NAMES: &[&str] = &[
    "double-well",
    "muller-brown",
    "dw4",
    "lj13",
    "gmm40",
    "ncsn2",
    "anisotropic3",
    "anisotropic10",
    "8gaussians",
];

/// The named potential at temperature kT (`None`: its default, 1 except muller-brown's 20).
pub fn named(name: &str, kt: Option<f64>) -> Result<Box<dyn Potential + Send + Sync>> {
    if let Some(kt) = kt {
        check_kt(kt)?;
    }
    let kt1 = kt.unwrap_or(1.0);
    Ok(match name {
        "double-well" => Box::new(DoubleWell {
            kt: kt1,
            ..DoubleWell::default()
        }),
        "muller-brown" => Box::new(MullerBrown {
            kt: kt.unwrap_or(MullerBrown::DEFAULT_KT),
        }),
        mixture if super::TARGET_NAMES.contains(&mixture) => Box::new(MixtureEnergy {
            mixture: GaussianMixture::named(mixture)?,
            kt: kt1,
        }),
        "dw4" => Box::new(MultiDoubleWell::dw4(kt1)),
        "lj13" => Box::new(LennardJones::lj13(kt1)),
        other => bail!(
            "unknown potential '{other}'; valid: {}",
            POTENTIAL_NAMES.join(", ")
        ),
    })
}

/// Refuses a temperature that is not a positive finite number.
pub fn check_kt(kt: f64) -> Result<()> {
    ensure!(
        kt.is_finite() && kt > 0.0,
        "kT must be a positive finite number, not {kt}"
    );
    Ok(())
}

/// A tilted, separable 2-D double well U(x, y) = depth·(x² − 1)² + tilt·x + y²/2: two modes near
/// x = ±1 whose weights differ (tilt > 0 favours x < 0) and are exact by 1-D quadrature
/// (`mode_weights`), a barrier of about `depth` at x = 0.
#[derive(Clone, Copy, Debug)]
pub struct DoubleWell {
    /// Height of the barrier between the wells (at tilt 0).
    pub depth: f64,
    /// Linear tilt along x.
    pub tilt: f64,
    /// Temperature kT.
    pub kt: f64,
}

impl Default for DoubleWell {
    /// depth 2, tilt 0.5, kT 1: a barrier of 2 kT that MALA crosses every few hundred steps,
    /// mode weights 0.704 / 0.296.
    fn default() -> Self {
        DoubleWell {
            depth: 2.0,
            tilt: 0.5,
            kt: 1.0,
        }
    }
}

impl DoubleWell {
    /// The energy along x, u(x) = depth·(x² − 1)² + tilt·x, and its derivative.
    fn along_x(&self, x: f64) -> (f64, f64) {
        let w = x * x - 1.0;
        (
            self.depth * w * w + self.tilt * x,
            4.0 * self.depth * x * w + self.tilt,
        )
    }

    /// Exact weights (P(x < 0), P(x > 0)) of the two wells under p ∝ exp(−U/kT): the marginal of x
    /// is ∝ exp(−u(x)/kT), integrated by composite Simpson on a range outside which it is below
    /// e^−60 of its peak.
    pub fn mode_weights(&self) -> [f64; 2] {
        let beta = 1.0 / self.kt;
        let u = |x: f64| self.along_x(x).0;
        let grid =
            |a: f64, b: f64, n: usize| (0..=n).map(move |i| a + (b - a) * i as f64 / n as f64);
        // the peak of the density, and where it has fallen by e^60
        let umin = grid(-3.0, 3.0, 6000).map(u).fold(f64::INFINITY, f64::min);
        let mut l = 2.0;
        while beta * (u(l).min(u(-l)) - umin) < 60.0 {
            l *= 1.5;
        }
        let simpson = |a: f64, b: f64| {
            let n = 20_000;
            let h = (b - a) / n as f64;
            let w = |i: usize| match i {
                0 => 1.0,
                i if i == n => 1.0,
                i if i % 2 == 1 => 4.0,
                _ => 2.0,
            };
            (0..=n)
                .map(|i| w(i) * (-beta * (u(a + h * i as f64) - umin)).exp())
                .sum::<f64>()
                * h
                / 3.0
        };
        let (left, right) = (simpson(-l, 0.0), simpson(0.0, l));
        [left / (left + right), right / (left + right)]
    }
}

impl Potential for DoubleWell {
    fn dim(&self) -> usize {
        2
    }
    fn kt(&self) -> f64 {
        self.kt
    }
    fn energy_force(&self, x: &[f64], e: &mut [f64], f: &mut [f64]) -> Result<()> {
        each_row(x, 2, e, f, |r, fr| {
            let (u, du) = self.along_x(r[0]);
            fr[0] = -du;
            fr[1] = -r[1];
            u + 0.5 * r[1] * r[1]
        })
    }
}

/// The Müller–Brown surface U(x, y) = Σ_k A_k exp(a_k (x − x0_k)² + b_k (x − x0_k)(y − y0_k) +
/// c_k (y − y0_k)²) (Müller & Brown 1979): three minima, A ≈ (−0.558, 1.442) at U = −146.7,
/// B ≈ (0.623, 0.028) at −108.2 and C ≈ (−0.050, 0.467) at −80.8.
#[derive(Clone, Copy, Debug)]
pub struct MullerBrown {
    /// Temperature kT.
    pub kt: f64,
}

impl MullerBrown {
    const A: [f64; 4] = [-200.0, -100.0, -170.0, 15.0];
    const LA: [f64; 4] = [-1.0, -1.0, -6.5, 0.7];
    const LB: [f64; 4] = [0.0, 0.0, 11.0, 0.6];
    const LC: [f64; 4] = [-10.0, -10.0, -6.5, 0.7];
    const X0: [f64; 4] = [1.0, 0.0, -0.5, -1.0];
    const Y0: [f64; 4] = [0.0, 0.5, 1.5, 1.0];

    /// The default kT = 20: the basins then hold about 83 %, 11 % and 6 % of the mass (A, B, C, by
    /// grid quadrature), so all three matter; the barriers are about 1.8 kT (B–C) and 5.3 kT (A–C),
    /// which MALA crosses within thousands of steps; and almost all mass (all but ~10⁻³) lies in
    /// the usual plotting box [−2, 1.6] × [−0.6, 2.6]. At kT = 10 (β = 0.1) B and C together hold
    /// under 3 % and A–C crossings take ~e^10.6 attempts.
    pub const DEFAULT_KT: f64 = 20.0;
}

impl Potential for MullerBrown {
    fn dim(&self) -> usize {
        2
    }
    fn kt(&self) -> f64 {
        self.kt
    }
    fn energy_force(&self, x: &[f64], e: &mut [f64], f: &mut [f64]) -> Result<()> {
        each_row(x, 2, e, f, |r, fr| {
            let (mut u, mut gx, mut gy) = (0.0, 0.0, 0.0);
            for k in 0..4 {
                let (dx, dy) = (r[0] - Self::X0[k], r[1] - Self::Y0[k]);
                let (a, b, c) = (Self::LA[k], Self::LB[k], Self::LC[k]);
                let term = Self::A[k] * (a * dx * dx + b * dx * dy + c * dy * dy).exp();
                u += term;
                gx += term * (2.0 * a * dx + b * dy);
                gy += term * (b * dx + 2.0 * c * dy);
            }
            fr[0] = -gx;
            fr[1] = -gy;
            u
        })
    }
    /// Uniform on the part of [−1.5, 1.2] × [−0.5, 2] where U < 0 (the three basins and the
    /// passes between them), by rejection: the box's corners reach U ≈ 2000, where the forces are
    /// so steep that a MALA chain started there is rejected for thousands of steps.
    fn initial(&self, rng: &mut dyn RngCore) -> Vec<f64> {
        loop {
            let x = [rng.random_range(-1.5..1.2), rng.random_range(-0.5..2.0)];
            let (mut e, mut f) = ([0.0], [0.0; 2]);
            if self.energy_force(&x, &mut e, &mut f).is_ok() && e[0] < 0.0 {
                return x.to_vec();
            }
        }
    }
}

/// A Gaussian mixture as an energy U = −log p, sampled at kT (p^{1/kT}); gmm40 in the registry.
#[derive(Clone, Debug)]
pub struct MixtureEnergy {
    /// The mixture p.
    pub mixture: GaussianMixture,
    /// Temperature kT.
    pub kt: f64,
}

impl Potential for MixtureEnergy {
    fn dim(&self) -> usize {
        self.mixture.dim()
    }
    fn kt(&self) -> f64 {
        self.kt
    }
    fn energy_force(&self, x: &[f64], e: &mut [f64], f: &mut [f64]) -> Result<()> {
        self.mixture.energy_force(x, e, f)
    }
    /// Uniform over the box of the component means (local samplers rarely cross between distant
    /// modes: start chains spread over all of them).
    fn initial(&self, rng: &mut dyn RngCore) -> Vec<f64> {
        (0..self.mixture.dim())
            .map(|j| {
                let (lo, hi) = self
                    .mixture
                    .means
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), m| {
                        (lo.min(m[j]), hi.max(m[j]))
                    });
                if hi > lo {
                    rng.random_range(lo..hi)
                } else {
                    lo
                }
            })
            .collect()
    }
}

/// A potential read in model space y = x / scale (`data.scale`): U(scale·y), force scale·F(scale·y),
/// so that ∇_y log p(scale·y) = scale·βF is the model-space score.
pub struct Scaled {
    pub inner: Box<dyn Potential + Send + Sync>,
    pub scale: f64,
}

impl Potential for Scaled {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn kt(&self) -> f64 {
        self.inner.kt()
    }
    fn particles(&self) -> Option<(usize, usize)> {
        self.inner.particles()
    }
    fn energy_force(&self, x: &[f64], e: &mut [f64], f: &mut [f64]) -> Result<()> {
        if self.scale == 1.0 {
            return self.inner.energy_force(x, e, f);
        }
        let data: Vec<f64> = x.iter().map(|v| v * self.scale).collect();
        self.inner.energy_force(&data, e, f)?;
        f.iter_mut().for_each(|v| *v *= self.scale);
        Ok(())
    }
}
