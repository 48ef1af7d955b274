//! Training for the experiment: the objectives compared, the MLP, and training one level per step.

use super::Settings;
use crate::config::TrainConfig;
use crate::nn::{Arch, Model, ModelConfig};
use crate::objective::{ObjectiveConfig, Probe};
use crate::process::{Process, ProcessConfig};
use crate::score::Parameterisation;
use crate::train::adam::Adam;
use crate::train::engine::Engine;
use crate::train::DataSource;
use anyhow::Result;
use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// Level t of the cost table (cost does not depend on it).
pub(super) const TIMING_LEVEL: f64 = 0.1;
/// FD-SSM's finite-difference step (pixel units).
pub(super) const FD_EPS: f64 = 0.01;

/// The training procedures compared at equal wall-clock.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Objective {
    Dsm,
    Ism,
    Ssm,
    FdSsm,
}

impl Objective {
    /// Every objective, in the order of the tables.
    pub(super) const ALL: [Objective; 4] = [
        Objective::Dsm,
        Objective::Ism,
        Objective::Ssm,
        Objective::FdSsm,
    ];

    fn at(self, t: f64) -> ObjectiveConfig {
        let projection = Probe::Rademacher;
        match self {
            Objective::Dsm => ObjectiveConfig::DsmLevel { t },
            Objective::Ism => ObjectiveConfig::Ism { t },
            Objective::Ssm => ObjectiveConfig::Ssm {
                t,
                projection,
                projections: 1,
                variance_reduced: true,
            },
            Objective::FdSsm => ObjectiveConfig::FdSsm {
                t,
                projection,
                eps: FD_EPS,
            },
        }
    }

    /// The objective's name in the tables.
    pub(super) fn name(self) -> &'static str {
        match self {
            Objective::Dsm => "DSM",
            Objective::Ism => "ISM (exact trace)",
            Objective::Ssm => "SSM-VR (1 Rademacher)",
            Objective::FdSsm => "FD-SSM (ε = 0.01)",
        }
    }

    /// The level of one step. DSM's per-level loss ½σ²‖s + ε/σ‖² carries the weight σ_t², so
    /// t ~ U(t_min, T); the Stein losses estimate the unweighted Fisher divergence at t, so t is
    /// drawn from q(t) ∝ σ_t² instead (rejection): both then minimise ∫ σ_t² F_t dt up to constants.
    fn level(self, p: &dyn Process, rng: &mut impl Rng) -> f64 {
        let (lo, hi) = (p.t_min(), p.t_max());
        let top = p.sigma(hi).powi(2).max(p.sigma(lo).powi(2));
        loop {
            let t = lo + (hi - lo) * rng.random::<f64>();
            if self == Objective::Dsm || rng.random::<f64>() * top <= p.sigma(t).powi(2) {
                return t;
            }
        }
    }
}

/// The experiment's v-parameterised MLP of hidden width `width` on d dimensions, seeded by `seed`.
pub(super) fn mlp(d: usize, width: usize, process: ProcessConfig, seed: u64) -> Result<Model> {
    Model::new(
        ModelConfig {
            arch: Arch {
                width,
                parameterisation: Parameterisation::V,
                ..Default::default()
            },
            ..ModelConfig::default_for(d, process)
        },
        &mut ChaCha8Rng::seed_from_u64(seed),
        &Device::Cpu,
    )
}

/// The training settings of `s` for `steps` steps (no label dropout).
pub(super) fn train_config(s: &Settings, steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        batch: s.batch,
        lr: s.lr,
        label_dropout: 0.0,
        ..Default::default()
    }
}

/// Trains `net` with one level per step (`Objective::level`) until `max_steps` steps or
/// `seconds` have passed (at least `min_steps`); `engine` None picks the fused engine where it
/// applies. Returns (steps, seconds, the objective's engine name).
#[allow(clippy::too_many_arguments)]
pub(super) fn train_levels(
    net: &Model,
    objective: Objective,
    source: &DataSource,
    tc: &TrainConfig,
    (min_steps, max_steps, seconds): (usize, usize, f64),
    candle: bool,
    warm_up: bool,
    rng: &mut ChaCha8Rng,
) -> Result<(usize, f64, &'static str)> {
    let p = net.process();
    let first = objective.at(TIMING_LEVEL);
    let mut engine = if candle {
        Engine::Candle {
            adam: Adam::new(net.vars())?,
            ema: Vec::new(),
        }
    } else {
        Engine::new(net, &first, Adam::new(net.vars())?, Vec::new())?
    };
    let mut one = |step: usize, rng: &mut ChaCha8Rng, t: f64| -> Result<()> {
        let batch = source.batch(tc.batch, 1.0, rng, net.device(), None, None)?;
        engine.step(net, &objective.at(t), &batch, rng, tc, step)?;
        Ok(())
    };
    if warm_up {
        one(0, rng, TIMING_LEVEL)?;
    }
    let began = Instant::now();
    let mut steps = 0;
    while steps < max_steps && (steps < min_steps || began.elapsed().as_secs_f64() < seconds) {
        let t = if warm_up {
            TIMING_LEVEL
        } else {
            objective.level(p, rng)
        };
        one(steps + usize::from(warm_up), rng, t)?;
        steps += 1;
    }
    let wall = began.elapsed().as_secs_f64();
    let name = engine.name();
    engine.sync(net)?;
    Ok((steps, wall, name))
}
