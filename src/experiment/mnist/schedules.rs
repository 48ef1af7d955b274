//! Open question 1: sample quality against DSM's process, weighting and t_min at equal steps.

use super::judge::{quality, Judge};
use super::training::{mlp, train_config};
use super::Settings;
use crate::nn::Model;
use crate::objective::{ObjectiveConfig, Weighting};
use crate::process::ProcessConfig;
use crate::train::{fit, DataSource};
use anyhow::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

/// One DSM setting after the same number of steps.
#[derive(Serialize)]
pub struct ScheduleRow {
    pub setting: String,
    pub wall_seconds: Vec<f64>,
    pub fd_sde: Vec<f64>,
    pub fd_ode: Vec<f64>,
    /// Mean loss over the last 10% of steps (first seed; not comparable across weightings).
    pub final_loss: f64,
}

/// The DSM settings of the schedule / weighting comparison: (label, process, weighting).
pub(super) fn schedule_settings() -> Vec<(&'static str, ProcessConfig, Weighting)> {
    let vp = |t_min| ProcessConfig::Vp {
        beta_min: 0.1,
        beta_max: 20.0,
        t_min,
    };
    vec![
        ("VP, λ = σ², t_min = 1e-3", vp(1e-3), Weighting::Sigma2),
        (
            "VP, likelihood weighting λ = g² (t importance-sampled), t_min = 1e-3",
            vp(1e-3),
            Weighting::G2Importance,
        ),
        ("VP, λ = 1, t_min = 1e-3", vp(1e-3), Weighting::One),
        ("VP, λ = σ², t_min = 1e-5", vp(1e-5), Weighting::Sigma2),
        (
            "VE σ 0.01 → 50, λ = σ², t_min = 1e-3",
            ProcessConfig::Ve {
                sigma_min: 0.01,
                sigma_max: 50.0,
                t_min: 1e-3,
            },
            Weighting::Sigma2,
        ),
    ]
}

/// The schedule / weighting comparison; also returns the first setting's first-seed model.
pub(super) fn schedules(
    s: &Settings,
    source: &DataSource,
    judge: &Judge,
) -> Result<(Vec<ScheduleRow>, Model)> {
    let mut rows = Vec::new();
    let mut kept = None;
    let tc = train_config(s, s.steps);
    for (label, process, weighting) in schedule_settings() {
        let mut row = ScheduleRow {
            setting: label.into(),
            wall_seconds: Vec::new(),
            fd_sde: Vec::new(),
            fd_ode: Vec::new(),
            final_loss: f64::NAN,
        };
        for k in 0..s.seeds as u64 {
            let seed = s.seed + 100 * k;
            let net = mlp(source.dim(), s.width, process.clone(), seed)?;
            let began = Instant::now();
            let losses = fit(
                &net,
                &ObjectiveConfig::Dsm { weighting },
                source,
                None,
                &tc,
                &mut ChaCha8Rng::seed_from_u64(seed + 1),
            )?;
            row.wall_seconds.push(began.elapsed().as_secs_f64());
            if k == 0 {
                let tail = &losses[losses.len() * 9 / 10..];
                row.final_loss = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
            }
            if kept.is_none() {
                // the manifold section's model: a copy of the weights before sampling freezes them
                let copy = mlp(source.dim(), s.width, process.clone(), seed)?;
                for ((_, a), (_, b)) in copy.vars().iter().zip(net.vars()) {
                    a.set(b.as_tensor())?;
                }
                kept = Some(copy);
            }
            let [(sde, _), (ode, _)] = quality(net, s, judge, seed + 2)?;
            row.fd_sde.push(sde);
            row.fd_ode.push(ode);
        }
        rows.push(row);
    }
    Ok((rows, kept.expect("at least one setting")))
}
