//! Distributions with known answers, the ground truth every solver and objective is tested
//! against: Gaussian mixtures with full covariances and their exact diffused marginals
//! p_t = Σ_k w_k N(α_t μ_k, α_t² Σ_k + σ_t² I) under any process (`mixture`), their exact scores
//! as score models (`exact`), Boltzmann targets p ∝ exp(−U/kT) (`Potential`, with the test
//! surfaces and the registry in `potential` and the DW-4 / LJ-13 particle systems in `particles`),
//! note 000's estimators of their diffused scores (`posterior`: Monte Carlo; `denoised`: one
//! sample at a trained model's denoiser) and a Gaussian on the centre-of-mass-free subspace of
//! particles (`subspace`).
//!
//! Computed in f64 on the CPU in plain loops: precision matters more than speed here.
//! (Uses `data::Points` as its plain array.)

pub mod denoised;
pub mod exact;
pub mod mixture;
pub mod particles;
pub mod posterior;
pub mod potential;
pub mod subspace;

pub use denoised::DenoisedForce;
pub use exact::ExactScore;
pub use mixture::GaussianMixture;
pub use particles::{LennardJones, MultiDoubleWell};
pub use potential::{
    named as named_potential, DoubleWell, MixtureEnergy, MullerBrown, Potential, POTENTIAL_NAMES,
};
pub use subspace::SubspaceGaussian;

/// Names accepted by `GaussianMixture::named`.
pub const TARGET_NAMES: &[&str] = &[
    "ncsn2",
    "anisotropic3",
    "anisotropic10",
    "gmm40",
    "8gaussians",
];

#[cfg(test)]
mod potential_tests;
#[cfg(test)]
mod tests;
