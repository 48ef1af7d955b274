//! Note 000's score estimators against the exact diffused score of a mixture: the training-free
//! Monte Carlo posterior-expected force (`target::posterior`) versus the number of importance
//! draws K and the time t, and the single-sample βF(x̂0)/α_t (`target::DenoisedForce`) at the
//! exact Tweedie denoiser and, given a run, at the run's.

use super::{write_doc, write_text};
use crate::data::Points;
use crate::metrics::fisher_divergence;
use crate::objective::diagnostics::draw_pt;
use crate::process::{Process, ProcessConfig};
use crate::score::ScoreModel;
use crate::target::posterior::{PosteriorScore, Readout};
use crate::target::{DenoisedForce, ExactScore, GaussianMixture};
use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

/// Settings of the comparison.
pub struct Settings {
    /// Mixture target (gmm40 in model space, x/50).
    pub target: String,
    /// Points per (t, K, read-out).
    pub n: usize,
    pub seed: u64,
    /// A run trained on the target (same process and model space) whose Tweedie denoiser the
    /// single-sample estimator also reads.
    pub run: Option<std::path::PathBuf>,
}

const TIMES: [f64; 5] = [0.005, 0.02, 0.1, 0.3, 0.7];
const DRAWS: [usize; 4] = [10, 100, 1000, 10_000];

/// Fisher divergence ½E‖ŝ − ∇log p_t‖² of one read-out with K draws at one time (K = 1 for the
/// single-sample estimator).
#[derive(Serialize)]
pub struct Row {
    pub readout: String,
    pub k: usize,
    pub t: f64,
    pub fisher: f64,
}

/// Runs the comparison; writes estimators.{md,json} into `out`.
pub fn run(s: &Settings, out: &Path) -> Result<Vec<Row>> {
    super::create_dir(out)?;
    let mut mixture = GaussianMixture::named(&s.target)?;
    if s.target == "gmm40" {
        mixture = mixture.scaled(1.0 / 50.0)?;
    }
    let process: Arc<dyn Process> = Arc::from(ProcessConfig::vp_default().build()?);
    let truth = ExactScore {
        mixture: mixture.clone(),
        process: process.clone(),
    };
    // the same exact draws of p_t, and their exact scores, for every row
    let draws: Vec<(Points, Points)> = TIMES
        .iter()
        .map(|&t| {
            let x = draw_pt(&truth, t, s.n, &mut ChaCha8Rng::seed_from_u64(s.seed + 1));
            let (_, exact) =
                mixture.log_prob_and_score_at(&x.data, process.alpha(t), process.sigma(t))?;
            let exact = Points::new(x.n, x.d, exact)?;
            Ok((x, exact))
        })
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for readout in [Readout::Force, Readout::Kernel] {
        for &k in &DRAWS {
            let est = PosteriorScore::new(
                Arc::new(mixture.clone()),
                process.clone(),
                k,
                readout,
                s.seed,
            )?;
            for (&t, (x, exact)) in TIMES.iter().zip(&draws) {
                let mut rng = ChaCha8Rng::seed_from_u64(s.seed + 2);
                let got = (0..x.n)
                    .map(|i| est.estimate(x.row(i), t, &mut rng))
                    .collect::<Result<Vec<_>>>()?
                    .concat();
                rows.push(Row {
                    readout: format!("{readout:?}").to_lowercase(),
                    k,
                    t,
                    fisher: fisher_divergence(&Points::new(x.n, x.d, got)?, exact),
                });
            }
        }
    }
    let mut denoisers: Vec<(String, Box<dyn ScoreModel>)> = vec![(
        "single-sample, exact x̂0".into(),
        Box::new(ExactScore {
            mixture: mixture.clone(),
            process: process.clone(),
        }),
    )];
    if let Some(run) = &s.run {
        denoisers.push(("single-sample, run's x̂0".into(), run_model(run, &s.target)?));
    }
    let cpu = candle_core::Device::Cpu;
    for (name, model) in denoisers {
        let est = DenoisedForce::new(model, process.clone(), Arc::new(mixture.clone()))?;
        for (&t, (x, exact)) in TIMES.iter().zip(&draws) {
            // all points in one call: the network sees one batch per time
            let xt = candle_core::Tensor::from_slice(&x.data, (x.n, x.d), &cpu)?;
            let tt = crate::score::times(t, x.n, candle_core::DType::F64, &cpu)?;
            let got = crate::flat::values(&est.score(&xt, &tt)?)?;
            rows.push(Row {
                readout: name.clone(),
                k: 1,
                t,
                fisher: fisher_divergence(&Points::new(x.n, x.d, got)?, exact),
            });
        }
    }
    let mut md = format!(
        "# Training-free score estimators (note 000) against the exact score\n\n\
         `tweedie experiment estimators --target {} --n {} --seed {}{}`\n\n\
         The posterior-expected-force estimator of `target::posterior`: K importance draws from the Gaussian \
         kernel x0 ~ N(x_t/α_t, σ_t²/α_t²), self-normalised weights exp(−U(x0)) with U = −log p0 of the \
         mixture ({}; VP process), read out as the force form Σw F/α_t or the kernel (Tweedie) form \
         Σw (α_t x0 − x_t)/σ_t². The single-sample estimator F(x̂0)/α_t (note 000 with its one sample at \
         the posterior mean; `target::DenoisedForce`, K = 1) at the exact Tweedie denoiser \
         x̂0 = (x_t + σ_t² ∇log p_t)/α_t (its error is Jensen's gap E[F(x0) | x_t] − F(E[x0 | x_t]) alone){}. \
         Cell: Fisher divergence ½E‖ŝ − ∇log p_t‖² over {} exact draws of p_t \
         (model space), against the exact diffused score.\n\n| read-out | K |",
        s.target,
        s.n,
        s.seed,
        s.run.as_ref().map_or(String::new(), |r| format!(" --run {}", r.display())),
        if s.target == "gmm40" { "in model space x/50" } else { "data units" },
        s.run.as_ref().map_or(String::new(), |r| format!(
            " and at the denoiser of the trained run `{}` (its EMA weights: `tweedie train --data {} --data-scale 50`, the default recipe)",
            r.display(), s.target
        )),
        s.n
    );
    for t in TIMES {
        md.push_str(&format!(" t = {t} |"));
    }
    md.push_str("\n|---|---|---|---|---|---|---|\n");
    for chunk in rows.chunks(TIMES.len()) {
        md.push_str(&format!("| {} | {} |", chunk[0].readout, chunk[0].k));
        for r in chunk {
            md.push_str(&format!(" {:.3e} |", r.fisher));
        }
        md.push('\n');
    }
    write_doc(&out.join("estimators.md"), &md)?;
    let json = serde_json::json!({
        "target": s.target, "n": s.n, "seed": s.seed, "run": s.run, "rows": rows,
        "definitions": {"fisher": "½E‖ŝ − ∇log p_t‖² over n exact draws of p_t (model space)"},
    });
    write_text(
        &out.join("estimators.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    Ok(rows)
}

/// A run's EMA network as a score model, refused unless it was trained on `target` in the
/// experiment's model space (gmm40: x/50) under the default VP process.
fn run_model(run: &Path, target: &str) -> Result<Box<dyn ScoreModel>> {
    let (net, ck) = crate::train::load_net(
        &run.join(crate::train::CHECKPOINT),
        true,
        &candle_core::Device::Cpu,
    )?;
    let scale = if target == "gmm40" { 50.0 } else { 1.0 };
    if ck.run.data.source != target
        || ck.run.data.scale != scale
        || ck.run.process != ProcessConfig::vp_default()
    {
        bail!(
            "{}: the run was trained on {} at scale {} under {:?}; the experiment needs {target} at scale {scale} under the default VP process",
            run.display(), ck.run.data.source, ck.run.data.scale, ck.run.process
        );
    }
    Ok(Box::new(net))
}
