//! Force-based training against DSM (note 000, issue 20): the variance of the force, noise and
//! blended regression targets at each t, and the Fisher divergence per noise band after training
//! each with the same budget, on mixtures with exact forces and exact diffused scores.

use super::{write_doc, write_text};
use crate::config::{DataConfig, TrainConfig};
use crate::nn::{Arch, Model, ModelConfig};
use crate::objective::diagnostics::{fisher_at, target_variances, TargetVariance};
use crate::objective::{ObjectiveConfig, Weighting};
use crate::process::{Process, ProcessConfig};
use crate::target::ExactScore;
use crate::train::{fit, DataSource};
use anyhow::{bail, Result};
use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

/// Settings of the comparison.
pub struct Settings {
    /// Mixture targets with exact forces (model space: gmm40 is divided by 50).
    pub targets: Vec<String>,
    pub steps: usize,
    pub batch: usize,
    pub width: usize,
    pub lr: f64,
    pub seeds: usize,
    pub quiet: bool,
}

/// Noise bands of the Fisher divergence: low, middle and high t, each a few times averaged.
const BANDS: [(&str, [f64; 3]); 3] = [
    ("low t (0.002–0.02)", [0.002, 0.007, 0.02]),
    ("mid t (0.05–0.2)", [0.05, 0.1, 0.2]),
    ("high t (0.4–0.9)", [0.4, 0.65, 0.9]),
];

/// One objective on one target: Fisher divergence ½E‖s_θ − ∇log p_t‖² per band, mean ± s.e.
/// over seeds.
#[derive(Serialize)]
pub struct Row {
    pub target: String,
    pub objective: String,
    pub fisher: Vec<(f64, f64)>,
}

/// The objectives compared, all with λ = σ² and ε-parameterised networks.
fn objectives() -> [(&'static str, ObjectiveConfig); 3] {
    let weighting = Weighting::Sigma2;
    [
        ("dsm", ObjectiveConfig::Dsm { weighting }),
        ("force", ObjectiveConfig::Force { weighting }),
        ("mixed (blend w*)", ObjectiveConfig::Mixed { weighting }),
    ]
}

/// Runs the comparison; writes forces.{md,json} into `out`.
pub fn run(s: &Settings, out: &Path) -> Result<Vec<Row>> {
    super::create_dir(out)?;
    if s.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let process_cfg = ProcessConfig::vp_default();
    let process: Arc<dyn Process> = Arc::from(process_cfg.build()?);
    let bar = crate::progress::bar(s.targets.len() * objectives().len() * s.seeds, 0, s.quiet);
    let mut rows = Vec::new();
    let mut variances: Vec<(String, Vec<TargetVariance>)> = Vec::new();
    for target in &s.targets {
        let scale = if target == "gmm40" { 50.0 } else { 1.0 };
        let source = DataSource::open(&DataConfig {
            source: target.clone(),
            scale,
            ..DataConfig::default()
        })?;
        let Some(mixture) = source.mixture().cloned() else {
            bail!("'{target}' is not a mixture target with exact forces");
        };
        let blend = source.blend(process.as_ref())?;
        let ts: Vec<f64> = BANDS.iter().flat_map(|(_, t)| *t).collect();
        variances.push((
            target.clone(),
            target_variances(&mixture, process.as_ref(), blend.as_ref(), &ts, 20_000, 7)?,
        ));
        let truth = ExactScore {
            mixture,
            process: process.clone(),
        };
        for (name, obj) in objectives() {
            let mut per_seed: Vec<Vec<f64>> = Vec::new();
            for seed in 0..s.seeds as u64 {
                let net = Model::new(
                    ModelConfig {
                        arch: Arch {
                            width: s.width,
                            ..Default::default()
                        },
                        ..ModelConfig::default_for(truth.mixture.dim(), process_cfg.clone())
                    },
                    &mut ChaCha8Rng::seed_from_u64(seed),
                    &Device::Cpu,
                )?;
                let tc = TrainConfig {
                    steps: s.steps,
                    batch: s.batch,
                    lr: s.lr,
                    ..Default::default()
                };
                fit(
                    &net,
                    &obj,
                    &source,
                    Some(&truth),
                    &tc,
                    &mut ChaCha8Rng::seed_from_u64(100 + seed),
                )?;
                per_seed.push(
                    BANDS
                        .iter()
                        .map(|(_, band)| {
                            band.iter()
                                .map(|&t| fisher_at(&net, &truth, t, 4000, 11))
                                .sum::<f64>()
                                / 3.0
                        })
                        .collect(),
                );
                bar.inc(1);
            }
            let fisher = (0..BANDS.len())
                .map(|b| {
                    crate::metrics::mean_and_sem(&per_seed.iter().map(|v| v[b]).collect::<Vec<_>>())
                })
                .collect();
            rows.push(Row {
                target: target.clone(),
                objective: name.into(),
                fisher,
            });
        }
    }
    bar.finish_and_clear();
    write_doc(&out.join("forces.md"), &markdown(s, &rows, &variances))?;
    let json = serde_json::json!({
        "settings": {"targets": s.targets, "steps": s.steps, "batch": s.batch, "width": s.width, "lr": s.lr, "seeds": s.seeds},
        "fisher": rows,
        "target_variances": variances,
        "definitions": {
            "fisher": "½E‖s_θ(x_t, t) − ∇log p_t(x_t)‖² over 4000 fresh exact draws of p_t, averaged over the band's three times; mean and standard error over seeds",
            "target_variances": "E‖target − ∇log p_t(x_t)‖² (summed over coordinates) over 20,000 exact draws: force F(x0)/α_t, dsm −ε/σ_t, blend w*·dsm + (1 − w*)·force",
        }
    });
    write_text(
        &out.join("forces.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    Ok(rows)
}

fn markdown(s: &Settings, rows: &[Row], variances: &[(String, Vec<TargetVariance>)]) -> String {
    let mut md = format!(
        "# Force-based score matching against DSM (note 000)\n\n\
         `tweedie experiment forces --targets {} --steps {} --batch {} --width {} --lr {} --seeds {}`\n\n\
         VP process (β 0.1→20); ε-parameterised 3×{} SiLU MLPs trained with λ = σ² on fresh exact draws of \
         each mixture with their exact forces F = ∇log p0 (gmm40 in model space x/50). Three regression targets \
         for the score at x_t = α_t x0 + σ_t ε: **dsm** −ε/σ_t, **force** F(x0)/α_t, and **mixed**, their \
         minimum-variance blend w*(t)·dsm + (1 − w*(t))·force with w* = E[b·(b − a)]/E‖b − a‖² measured from \
         the data once per run (`src/objective/blend.rs` derives it; all three are unbiased, so they share a \
         minimiser and differ only in gradient noise).\n\n\
         ## Target variances E‖target − ∇log p_t‖² (exact draws, no training)\n\n",
        s.targets.join(","),
        s.steps,
        s.batch,
        s.width,
        s.lr,
        s.seeds,
        s.width
    );
    for (target, v) in variances {
        md.push_str(&format!(
            "**{target}**\n\n| t | force | dsm | blend | w* |\n|---|---|---|---|---|\n"
        ));
        for r in v {
            md.push_str(&format!(
                "| {} | {:.3e} | {:.3e} | {:.3e} | {:.3} |\n",
                r.t,
                r.force,
                r.dsm,
                r.blend.unwrap_or(f64::NAN),
                r.w.unwrap_or(f64::NAN)
            ));
        }
        md.push('\n');
    }
    md.push_str(&format!(
        "## Fisher divergence after {} steps (mean ± s.e. over {} seeds)\n\n| target | objective |",
        s.steps, s.seeds
    ));
    for (b, _) in BANDS {
        md.push_str(&format!(" {b} |"));
    }
    md.push_str("\n|---|---|---|---|---|\n");
    for r in rows {
        md.push_str(&format!("| {} | {} |", r.target, r.objective));
        for (m, se) in &r.fisher {
            md.push_str(&format!(" {m:.4} ± {se:.4} |"));
        }
        md.push('\n');
    }
    md
}
