//! Distributions with known answers, the ground truth every solver and objective is tested
//! against: Gaussian mixtures with full covariances and their exact diffused marginals
//! p_t = Σ_k w_k N(α_t μ_k, α_t² Σ_k + σ_t² I) under any process (`mixture`), their exact scores
//! as score models (`exact`), Boltzmann targets (`Potential`) and a Gaussian on the
//! centre-of-mass-free subspace of particles (`subspace`).
//!
//! Computed in f64 on the CPU in plain loops: precision matters more than speed here.
//! (Uses `data::Points` as its plain array.)

pub mod exact;
pub mod mixture;
pub mod subspace;

use anyhow::Result;

pub use exact::ExactScore;
pub use mixture::GaussianMixture;
pub use subspace::SubspaceGaussian;

/// Names accepted by `GaussianMixture::named`.
pub const TARGET_NAMES: &[&str] = &[
    "ncsn2",
    "anisotropic3",
    "anisotropic10",
    "gmm40",
    "8gaussians",
];

/// A Boltzmann target p ∝ exp(−E): energy E(x) and force F(x) = −∇E(x) for rows of x (row-major).
/// At temperature 1 the force is the score: F = ∇log p.
pub trait Potential {
    /// Dimension d of a configuration.
    fn dim(&self) -> usize;
    /// E(x) per row, up to an additive constant.
    fn energy(&self, x: &[f64]) -> Result<Vec<f64>>;
    /// F(x) = −∇E(x) per row, row-major like x.
    fn force(&self, x: &[f64]) -> Result<Vec<f64>>;
}

#[cfg(test)]
mod tests;
