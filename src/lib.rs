//! tweedie: score-based generative modelling.
//!
//! The modules follow the pipeline: `process` (x_t = α_t x0 + σ_t ε, and the space noise and prior
//! live in) → `nn` (networks, and `Model`, which reads any network as a score) → `objective` (score
//! matching) → `train` → `sample` (reverse SDE / probability-flow ODE) → `likelihood` (PF-ODE
//! log p) → `metrics` and `plot`. `target` holds distributions with exact scores and densities,
//! `score` the `ScoreModel` trait that samplers, likelihoods and metrics accept, `data` the data sets
//! and file formats, `config` the TOML run config, `mcmc` Markov chain Monte Carlo from a
//! potential (MALA and its diagnostics), `experiment` the comparisons, `report` the HTML page of a
//! run folder, `progress` the progress bars, `ode` the integrators, `flat` the solvers' buffers,
//! `pool` the warm thread pool and `images` the classifier that measures image samples and guides
//! their sampling.

pub mod config;
pub mod data;
pub mod experiment;
pub mod flat;
pub mod images;
pub mod io;
pub mod likelihood;
pub mod mcmc;
pub mod metrics;
pub mod nn;
pub mod objective;
pub mod ode;
pub mod parameterisation;
pub mod plot;
pub mod pool;
pub mod process;
pub mod progress;
pub mod report;
pub mod reweight;
pub mod sample;
pub mod score;
pub mod target;
pub mod train;

/// The compute device: CPU, or CUDA when built with `--features cuda`.
pub fn device(name: &str) -> anyhow::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" if cfg!(feature = "cuda") => Ok(candle_core::Device::new_cuda(0)?),
        "cuda" => anyhow::bail!("this tweedie was built without CUDA; rebuild with `cargo build --release --features cuda`"),
        other => anyhow::bail!("unknown device '{other}'; valid: cpu, cuda"),
    }
}
