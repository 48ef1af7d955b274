//! Cost per step against dimension, and sample quality at equal wall-clock time.

use super::judge::{quality, Judge};
use super::training::{mlp, train_config, train_levels, Objective};
use super::{downsample, Settings};
use crate::data::images::Images;
use crate::process::ProcessConfig;
use crate::train::DataSource;
use anyhow::{ensure, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// One objective's cost per step at one dimension.
#[derive(Serialize)]
pub struct CostRow {
    pub objective: String,
    /// "fused" (the CPU MLP kernels) or "candle".
    pub engine: String,
    pub d: usize,
    pub ms_per_step: f64,
    pub steps_timed: usize,
    /// ms per step over DSM's on the same engine and dimension.
    pub ratio_to_dsm: f64,
}

/// One objective's sample quality after the same training time.
#[derive(Serialize)]
pub struct QualityRow {
    pub objective: String,
    pub engine: String,
    /// Optimiser steps reached in the budget, per seed.
    pub steps: Vec<usize>,
    /// Fréchet distance of reverse-SDE (Euler–Maruyama) samples, per seed.
    pub fd_sde: Vec<f64>,
    /// The same for DDIM (η = 0) samples.
    pub fd_ode: Vec<f64>,
    /// Share of sample values outside [−1, 1] (SDE samples, first seed).
    pub clipped: f64,
}

/// Per-step cost of each objective at each side; fused rows first, then candle rows.
pub(super) fn cost_table(s: &Settings, train: &Images) -> Result<Vec<CostRow>> {
    let mut rows = Vec::new();
    let runs: [(Objective, bool); 6] = [
        (Objective::Dsm, false),
        (Objective::Ism, false),
        (Objective::Ssm, false),
        (Objective::Dsm, true),
        (Objective::Ssm, true),
        (Objective::FdSsm, true),
    ];
    for &side in &s.sides {
        ensure!(
            side >= 1 && train.shape[1].is_multiple_of(side),
            "image side {side} does not divide 28"
        );
        let im = downsample(train, train.shape[1] / side)?;
        let d = im.dim();
        let source = DataSource::Images(Images { labels: None, ..im });
        let tc = train_config(s, usize::MAX);
        let mut dsm = [f64::NAN; 2];
        for (objective, candle) in runs {
            let net = mlp(d, s.width, ProcessConfig::vp_default(), s.seed)?;
            let mut rng = ChaCha8Rng::seed_from_u64(s.seed + 1);
            let (steps, wall, engine) = train_levels(
                &net,
                objective,
                &source,
                &tc,
                (2, 1000, s.timing),
                candle,
                true,
                &mut rng,
            )?;
            let ms = 1e3 * wall / steps as f64;
            if objective == Objective::Dsm {
                dsm[usize::from(candle)] = ms;
            }
            rows.push(CostRow {
                objective: objective.name().into(),
                engine: engine.into(),
                d,
                ms_per_step: ms,
                steps_timed: steps,
                ratio_to_dsm: ms / dsm[usize::from(candle)],
            });
        }
    }
    Ok(rows)
}

/// Each objective trained for `s.budget` seconds at d = 784, then sampled and judged.
pub(super) fn equal_time(
    s: &Settings,
    source: &DataSource,
    judge: &Judge,
) -> Result<Vec<QualityRow>> {
    let mut rows = Vec::new();
    let tc = train_config(s, usize::MAX);
    for objective in Objective::ALL {
        let mut row = QualityRow {
            objective: objective.name().into(),
            engine: String::new(),
            steps: Vec::new(),
            fd_sde: Vec::new(),
            fd_ode: Vec::new(),
            clipped: f64::NAN,
        };
        for k in 0..s.seeds as u64 {
            let seed = s.seed + 100 * k;
            let net = mlp(source.dim(), s.width, ProcessConfig::vp_default(), seed)?;
            let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
            let (steps, _, engine) = train_levels(
                &net,
                objective,
                source,
                &tc,
                (1, usize::MAX, s.budget),
                false,
                false,
                &mut rng,
            )?;
            let [(sde, clipped), (ode, _)] = quality(net, s, judge, seed + 2)?;
            if k == 0 {
                row.clipped = clipped;
            }
            row.engine = engine.into();
            row.steps.push(steps);
            row.fd_sde.push(sde);
            row.fd_ode.push(ode);
        }
        rows.push(row);
    }
    Ok(rows)
}
