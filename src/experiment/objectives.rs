//! Every objective on the same data and budget, scored by the Fisher divergence to the exact score.

use super::{write_doc, write_text};
use crate::config::{DataConfig, TrainConfig};
use crate::data::Points;
use crate::nn::{Arch, Model, ModelConfig};
use crate::objective::diagnostics::{fisher_at, fisher_over_t};
use crate::objective::{ObjectiveConfig, Probe, Weighting};
use crate::plot;
use crate::process::{Process, ProcessConfig};
use crate::score::{times, Parameterisation, ScoreModel};
use crate::target::ExactScore;
use crate::train::{fit, DataSource};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

/// Settings of the comparison.
pub struct Settings {
    /// Mixture target (anisotropic3, ncsn2, …).
    pub target: String,
    pub steps: usize,
    pub batch: usize,
    pub width: usize,
    pub lr: f64,
    /// Noise level t of the single-level objectives (and of the figure).
    pub level: f64,
    pub seed: u64,
    pub quiet: bool,
}

/// One objective's result.
#[derive(Serialize)]
pub struct Row {
    pub objective: String,
    /// Fisher divergence ½E‖s_θ − ∇log p_t‖² at the level t (5000 fresh exact draws of p_t).
    pub fisher_at_level: f64,
    /// The same averaged over 10 times spread uniformly over [t_min, T] (continuous objectives only).
    pub fisher_over_t: Option<f64>,
    /// Mean loss over the last 10% of steps.
    pub final_loss: f64,
    pub steps_per_second: f64,
    pub wall_seconds: f64,
}

/// The objectives compared (ε-parameterised nets), then two with energy-parameterised nets.
pub fn objectives(t: f64) -> Vec<(ObjectiveConfig, Parameterisation)> {
    let rad = Probe::Rademacher;
    let eps = [
        ObjectiveConfig::Dsm {
            weighting: Weighting::Sigma2,
        },
        ObjectiveConfig::Dsm {
            weighting: Weighting::G2,
        },
        ObjectiveConfig::Ncsn { levels: 10 },
        ObjectiveConfig::Force {
            weighting: Weighting::Sigma2,
        },
        ObjectiveConfig::Mixed {
            weighting: Weighting::Sigma2,
        },
        ObjectiveConfig::DsmLevel { t },
        ObjectiveConfig::Esm { t },
        ObjectiveConfig::Ism { t },
        ObjectiveConfig::Ssm {
            t,
            projection: rad,
            projections: 1,
            variance_reduced: false,
        },
        ObjectiveConfig::Ssm {
            t,
            projection: rad,
            projections: 1,
            variance_reduced: true,
        },
        ObjectiveConfig::FdSsm {
            t,
            projection: rad,
            eps: 0.01,
        },
    ];
    let energy = [
        ObjectiveConfig::DsmLevel { t },
        ObjectiveConfig::Ssm {
            t,
            projection: rad,
            projections: 1,
            variance_reduced: true,
        },
    ];
    let tag = |p: Parameterisation| move |o: ObjectiveConfig| (o, p);
    eps.into_iter()
        .map(tag(Parameterisation::Eps))
        .chain(energy.into_iter().map(tag(Parameterisation::Energy)))
        .collect()
}

/// A 20×20 grid over the mixture's 1st–99th percentile box (from 4000 draws), 2-D only.
fn grid_over(truth: &ExactScore, t: f64) -> Points {
    let x =
        crate::objective::diagnostics::draw_pt(truth, t, 4000, &mut ChaCha8Rng::seed_from_u64(9));
    let q = |j: usize, f: f64| {
        let mut v: Vec<f64> = (0..x.n).map(|i| x.row(i)[j]).collect();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * f) as usize]
    };
    let (a0, a1, b0, b1) = (q(0, 0.01), q(0, 0.99), q(1, 0.01), q(1, 0.99));
    let m = 20;
    let data = (0..m * m)
        .flat_map(|k| {
            [
                a0 + (a1 - a0) * (k % m) as f64 / (m - 1) as f64,
                b0 + (b1 - b0) * (k / m) as f64 / (m - 1) as f64,
            ]
        })
        .collect();
    Points {
        n: m * m,
        d: 2,
        data,
        event: Vec::new(),
    }
}

fn scores_on(model: &dyn ScoreModel, at: &Points, t: f64) -> Result<Points> {
    let x = Tensor::from_vec(at.data.clone(), (at.n, at.d), &Device::Cpu)?;
    let s = model.score(&x, &times(t, at.n, DType::F64, &Device::Cpu)?)?;
    Points::new(at.n, at.d, crate::flat::values::<f64>(&s)?)
}

/// Trains every objective with the same budget; writes objectives.{md,json,png} into `out`.
pub fn run(s: &Settings, out: &Path) -> Result<Vec<Row>> {
    super::create_dir(out)?;
    let process_cfg = ProcessConfig::vp_default();
    let process: Arc<dyn Process> = Arc::from(process_cfg.build()?);
    let source = DataSource::open(&DataConfig {
        source: s.target.clone(),
        scale: 1.0,
        forces: None,
        ..DataConfig::default()
    })?;
    let mixture = source
        .mixture()
        .ok_or_else(|| anyhow::anyhow!("'{}' is not a mixture target with exact scores", s.target))?
        .clone();
    let truth = ExactScore {
        mixture,
        process: process.clone(),
    };
    let dim = truth.dim();
    let tc = TrainConfig {
        steps: s.steps,
        batch: s.batch,
        lr: s.lr,
        ..Default::default()
    };
    let bar = crate::progress::bar(objectives(s.level).len(), 0, s.quiet);
    let mut rows = Vec::new();
    let mut fields: Vec<(String, Points)> = Vec::new();
    let grid = (dim == 2).then(|| grid_over(&truth, s.level));
    if let Some(g) = &grid {
        fields.push((
            format!("exact ∇log p_t, t = {}", s.level),
            scores_on(&truth, g, s.level)?,
        ));
    }
    for (obj, parameterisation) in objectives(s.level) {
        obj.check(process.as_ref())?;
        let arch = Arch {
            width: s.width,
            parameterisation,
            ..Default::default()
        };
        let label = if parameterisation == Parameterisation::Energy {
            format!("{}, energy net", obj.name())
        } else {
            obj.name()
        };
        let net = Model::new(
            ModelConfig {
                arch,
                ..ModelConfig::default_for(dim, process_cfg.clone())
            },
            &mut ChaCha8Rng::seed_from_u64(s.seed),
            &Device::Cpu,
        )?;
        let started = std::time::Instant::now();
        let losses = fit(
            &net,
            &obj,
            &source,
            Some(&truth),
            &tc,
            &mut ChaCha8Rng::seed_from_u64(s.seed + 1),
        )?;
        let wall = started.elapsed().as_secs_f64();
        let tail = &losses[losses.len() * 9 / 10..];
        rows.push(Row {
            objective: label.clone(),
            fisher_at_level: fisher_at(&net, &truth, s.level, 5000, s.seed + 2),
            fisher_over_t: obj
                .level()
                .is_none()
                .then(|| fisher_over_t(&net, &truth, 10, 2000, s.seed + 3)),
            final_loss: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
            steps_per_second: s.steps as f64 / wall,
            wall_seconds: wall,
        });
        if let Some(g) = &grid {
            if matches!(
                obj,
                ObjectiveConfig::Dsm {
                    weighting: Weighting::Sigma2
                } | ObjectiveConfig::Ism { .. }
                    | ObjectiveConfig::Force { .. }
            ) || obj.name() == "ssm-vr (rademacher)"
            {
                fields.push((label.clone(), scores_on(&net, g, s.level)?));
            }
        }
        bar.set_message(label);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let mut md = format!(
        "# Score-matching objectives on `{}` with exact scores\n\n\
         Generated by `tweedie experiment objectives --target {} --steps {} --batch {} --width {} --lr {} --level {} --seed {}`. \
         Every objective trains the same MLP (3×{} SiLU, 32 Fourier features, ε-parameterised — or, in the last two rows, \
         energy-parameterised: one scalar output f_θ with s = ∇x f_θ — seed {}) with Adam for the \
         same number of steps on fresh exact draws of the mixture (VP process, β 0.1→20, t_min = 1e-3). Single-level \
         objectives learn ∇log p_t at t = {}. Fisher divergence = ½E‖s_θ(x_t, t) − ∇log p_t(x_t)‖², on 5000 fresh exact \
         draws of p_t at the level t; 'over t' averages it over 10 times spread over [t_min, 1] (2000 draws each; \
         continuous-time objectives only). Losses are not comparable across objectives (different targets).\n\n\
         | objective | Fisher at t = {} | Fisher over t | final loss | steps/s | wall s |\n|---|---|---|---|---|---|\n",
        s.target, s.target, s.steps, s.batch, s.width, s.lr, s.level, s.seed, s.width, s.seed, s.level, s.level
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {:.4} | {} | {:.4} | {:.0} | {:.1} |\n",
            r.objective,
            r.fisher_at_level,
            r.fisher_over_t.map_or("–".into(), |f| format!("{f:.4}")),
            r.final_loss,
            r.steps_per_second,
            r.wall_seconds
        ));
    }
    if !fields.is_empty() {
        md.push_str(&format!(
            "\n![learned and exact score fields at t = {}](objectives.png)\n",
            s.level
        ));
        let panels: Vec<plot::FieldPanel> = fields
            .iter()
            .map(|(t, v)| plot::FieldPanel {
                title: t.as_str(),
                at: grid.as_ref().expect("2-D"),
                vectors: v,
                log_density: None,
            })
            .collect();
        plot::vector_fields(&out.join("objectives.png"), &panels, None)?;
    }
    write_doc(&out.join("objectives.md"), &md)?;
    write_text(
        &out.join("objectives.json"),
        &serde_json::to_string_pretty(&rows)?,
    )?;
    Ok(rows)
}
