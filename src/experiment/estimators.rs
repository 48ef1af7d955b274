//! Note 000's training-free score estimators (`target::posterior`) against the exact diffused
//! score of a mixture: Fisher divergence versus the number of importance draws K and the time t.

use super::{write_doc, write_text};
use crate::objective::diagnostics::draw_pt;
use crate::process::{Process, ProcessConfig};
use crate::target::posterior::{PosteriorScore, Readout};
use crate::target::{ExactScore, GaussianMixture};
use anyhow::Result;
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
}

const TIMES: [f64; 5] = [0.005, 0.02, 0.1, 0.3, 0.7];
const DRAWS: [usize; 4] = [10, 100, 1000, 10_000];

/// Fisher divergence ½E‖ŝ − ∇log p_t‖² of one read-out with K draws at one time.
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
            for &t in &TIMES {
                let x = draw_pt(&truth, t, s.n, &mut ChaCha8Rng::seed_from_u64(s.seed + 1));
                let (a, sg) = (process.alpha(t), process.sigma(t));
                let (_, exact) = mixture.log_prob_and_score_at(&x.data, a, sg)?;
                let mut rng = ChaCha8Rng::seed_from_u64(s.seed + 2);
                let mut sq = 0.0;
                for i in 0..x.n {
                    let got = est.estimate(x.row(i), t, &mut rng)?;
                    sq += got
                        .iter()
                        .zip(&exact[i * x.d..(i + 1) * x.d])
                        .map(|(g, e)| (g - e).powi(2))
                        .sum::<f64>();
                }
                rows.push(Row {
                    readout: format!("{readout:?}").to_lowercase(),
                    k,
                    t,
                    fisher: 0.5 * sq / x.n as f64,
                });
            }
        }
    }
    let mut md = format!(
        "# Training-free score estimators (note 000) against the exact score\n\n\
         `tweedie experiment estimators --target {} --n {} --seed {}`\n\n\
         The posterior-expected-force estimator of `target::posterior`: K importance draws from the Gaussian \
         kernel x0 ~ N(x_t/α_t, σ_t²/α_t²), self-normalised weights exp(−U(x0)) with U = −log p0 of the \
         mixture ({}; VP process), read out as the force form Σw F/α_t or the kernel (Tweedie) form \
         Σw (α_t x0 − x_t)/σ_t². Cell: Fisher divergence ½E‖ŝ − ∇log p_t‖² over {} exact draws of p_t \
         (model space), against the exact diffused score.\n\n| read-out | K |",
        s.target,
        s.n,
        s.seed,
        if s.target == "gmm40" { "in model space x/50" } else { "data units" },
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
        "target": s.target, "n": s.n, "seed": s.seed, "rows": rows,
        "definitions": {"fisher": "½E‖ŝ − ∇log p_t‖² over n exact draws of p_t (model space)"},
    });
    write_text(
        &out.join("estimators.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    Ok(rows)
}
