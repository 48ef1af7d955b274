//! Markov chain Monte Carlo from a `Potential`: MALA over many chains at once (`mala`) and the
//! diagnostics of its draws, effective sample size and split R̂ (`diagnostics`). Reference samples
//! for Boltzmann targets without exact draws (`tweedie mcmc`), and the ground truth a diffusion
//! sampler of the same potential is judged against.

pub mod diagnostics;
pub mod mala;

pub use diagnostics::{ess, per_coordinate, split_rhat};
pub use mala::{mala, Draws, Options};

/// Where a run is, for a progress bar: after step `step` of `total` (burn-in included; told every
/// step while the step size adapts, every few steps after), with step size h and the chains' mean
/// acceptance probability of that step.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Steps done, burn-in included.
    pub step: usize,
    /// Steps in all, burn-in included.
    pub total: usize,
    /// The step size h of this step.
    pub step_size: f64,
    /// The chains' mean acceptance probability at this step.
    pub acceptance: f64,
}

#[cfg(test)]
mod tests;
