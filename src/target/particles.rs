//! Particle systems in the conventions of the diffusion-sampler benchmarks (equivariant flow
//! matching, iDEM): DW-4 (`MultiDoubleWell::dw4`) and LJ-13 (`LennardJones::lj13`). A configuration
//! is a row [x1, y1, (z1,) x2, …] of N particles in k dimensions; both energies are invariant to
//! translation, so they are sampled on the centre-of-mass-free subspace (`Potential::space`).
//! Reference samples and their energy statistics: `data/dw4/`, `data/lj13/`.

use super::potential::{each_row, Potential};
use anyhow::Result;
use rand::{Rng, RngCore};

/// Σ over unordered pairs i < j of φ(r_ij) for one configuration of `n` particles in `k`-D, with the
/// forces −∇ written into `f`; `phi(r²)` returns (φ(r), φ'(r)/r), from the squared distance so that
/// a potential of r² alone (Lennard-Jones) needs no square root and no division by r.
fn pair_sum(x: &[f64], n: usize, k: usize, f: &mut [f64], phi: impl Fn(f64) -> (f64, f64)) -> f64 {
    f.fill(0.0);
    let mut u = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            let mut r2 = 0.0;
            for c in 0..k {
                let v = x[i * k + c] - x[j * k + c];
                r2 += v * v;
            }
            let (p, g) = phi(r2);
            u += p;
            // −∂φ/∂x_i = −φ'(r) (x_i − x_j)/r; x_j gets the opposite
            for c in 0..k {
                let v = g * (x[i * k + c] - x[j * k + c]);
                f[i * k + c] -= v;
                f[j * k + c] += v;
            }
        }
    }
    u
}

/// `dim`, `kt` and `particles` of a system with fields `particles` (N), `dim` (k) and `kt`.
macro_rules! particle_system {
    () => {
        fn dim(&self) -> usize {
            self.particles * self.dim
        }
        fn kt(&self) -> f64 {
            self.kt
        }
        fn particles(&self) -> Option<(usize, usize)> {
            Some((self.particles, self.dim))
        }
    };
}

/// A starting configuration: the particles on a cubic lattice of spacing `spacing` (the first N
/// sites of a grid of side ⌈N^{1/k}⌉), jittered by `jitter`·spacing and centred, so that no two
/// start on top of each other (where LJ's r⁻¹² explodes).
fn lattice(n: usize, k: usize, spacing: f64, jitter: f64, rng: &mut dyn RngCore) -> Vec<f64> {
    let side = (1..).find(|s: &usize| s.pow(k as u32) >= n).unwrap_or(n);
    let mut x = Vec::with_capacity(n * k);
    for i in 0..n {
        let mut rest = i;
        for _ in 0..k {
            let site = (rest % side) as f64;
            rest /= side;
            x.push(spacing * (site + jitter * rng.random_range(-1.0..1.0)));
        }
    }
    crate::process::Space::ComFree {
        particles: n,
        dim: k,
    }
    .project(&mut x);
    x
}

/// N particles in k-D with a double-well pair potential U = Σ_{i<j} a (d_ij − d0)⁴ + b (d_ij − d0)²
/// (bgflow's MultiDoubleWellPotential, c = 0): DW-4 is 4 particles in 2-D, a = 0.9, b = −4, d0 = 4.
#[derive(Clone, Copy, Debug)]
pub struct MultiDoubleWell {
    /// Number of particles N.
    pub particles: usize,
    /// Dimensions k of each particle.
    pub dim: usize,
    /// Quartic coefficient a.
    pub a: f64,
    /// Quadratic coefficient b (negative: two wells in the distance).
    pub b: f64,
    /// Offset d0 of the distance.
    pub d0: f64,
    /// Temperature kT.
    pub kt: f64,
}

impl MultiDoubleWell {
    /// DW-4 at temperature kT (the benchmark: kT = 1).
    pub fn dw4(kt: f64) -> Self {
        MultiDoubleWell {
            particles: 4,
            dim: 2,
            a: 0.9,
            b: -4.0,
            d0: 4.0,
            kt,
        }
    }
}

impl Potential for MultiDoubleWell {
    particle_system!();
    fn energy_force(&self, x: &[f64], e: &mut [f64], f: &mut [f64]) -> Result<()> {
        let (a, b, d0) = (self.a, self.b, self.d0);
        each_row(x, self.particles * self.dim, e, f, |r, fr| {
            pair_sum(r, self.particles, self.dim, fr, |r2| {
                let d = r2.sqrt();
                let s = d - d0;
                let s2 = s * s;
                (a * s2 * s2 + b * s2, (4.0 * a * s2 * s + 2.0 * b * s) / d)
            })
        })
    }
    /// A lattice of spacing d0 (pairs near their wells), jittered by 0.1·d0.
    fn initial(&self, rng: &mut dyn RngCore) -> Vec<f64> {
        lattice(self.particles, self.dim, self.d0, 0.1, rng)
    }
}

/// A Lennard-Jones cluster in the benchmark's convention: U = Σ over ORDERED pairs i ≠ j of
/// ε[(r_m/r_ij)¹² − 2 (r_m/r_ij)⁶] (twice the usual i < j sum) + h/2 · Σ_i ‖x_i − x̄‖² (a harmonic
/// trap on the centre of mass). LJ-13 is 13 particles in 3-D, ε = r_m = h = 1.
#[derive(Clone, Copy, Debug)]
pub struct LennardJones {
    /// Number of particles N.
    pub particles: usize,
    /// Dimensions k of each particle.
    pub dim: usize,
    /// Well depth ε.
    pub eps: f64,
    /// Distance r_m of the minimum.
    pub rm: f64,
    /// Strength h of the harmonic term.
    pub harmonic: f64,
    /// Temperature kT.
    pub kt: f64,
}

impl LennardJones {
    /// LJ-13 at temperature kT (the benchmark: kT = 1).
    pub fn lj13(kt: f64) -> Self {
        LennardJones {
            particles: 13,
            dim: 3,
            eps: 1.0,
            rm: 1.0,
            harmonic: 1.0,
            kt,
        }
    }
}

impl Potential for LennardJones {
    particle_system!();
    fn energy_force(&self, x: &[f64], e: &mut [f64], f: &mut [f64]) -> Result<()> {
        let (n, k) = (self.particles, self.dim);
        let (eps2, rm, h) = (2.0 * self.eps, self.rm, self.harmonic);
        each_row(x, n * k, e, f, |r, fr| {
            // each unordered pair twice: φ = 2ε[s¹² − 2s⁶], s = r_m/r, φ'(r)/r = 24ε(s⁶ − s¹²)/r²
            let rm2 = rm * rm;
            let pairs = pair_sum(r, n, k, fr, |r2| {
                let s2 = rm2 / r2;
                let s6 = s2 * s2 * s2;
                (
                    eps2 * (s6 * s6 - 2.0 * s6),
                    eps2 * 12.0 * (s6 - s6 * s6) / r2,
                )
            });
            // h/2 Σ‖x_i − x̄‖²: its gradient at x_i is h (x_i − x̄) (the x̄ terms sum to zero)
            let mut trap = 0.0;
            for c in 0..k {
                let mean = (0..n).map(|i| r[i * k + c]).sum::<f64>() / n as f64;
                for i in 0..n {
                    let v = r[i * k + c] - mean;
                    trap += v * v;
                    fr[i * k + c] -= h * v;
                }
            }
            pairs + 0.5 * h * trap
        })
    }
    /// A lattice of spacing r_m (the pair minimum), jittered by 0.05·r_m.
    fn initial(&self, rng: &mut dyn RngCore) -> Vec<f64> {
        lattice(self.particles, self.dim, self.rm, 0.05, rng)
    }
}
