//! `tweedie sample`: samples from a trained run (its checkpoint) or from an exact mixture score.

use super::source::ModelSource;
use anyhow::{bail, Result};
use clap::Parser;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tweedie::data::{self, Points};
use tweedie::process::Process;
use tweedie::sample::{self, Trace};
use tweedie::score::ScoreModel;
use tweedie::target::{ExactScore, GaussianMixture};
use tweedie::train;

#[derive(Parser)]
pub struct Args {
    #[command(flatten)]
    model: ModelSource,
    /// Sampler: em (reverse SDE, Euler–Maruyama), euler or heun (probability-flow ODE).
    #[arg(long, default_value = "em")]
    sampler: String,
    /// Solver steps (uniform in t from T to t_min).
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Number of samples.
    #[arg(long, short, default_value_t = 2000)]
    n: usize,
    /// Seed of the prior draw and the sampler's noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output .npy file, [n, d] f32, in data coordinates.
    #[arg(long, short, default_value = "samples.npy")]
    out: PathBuf,
    /// Also write a PNG scatter of the samples (2-D only) beside reference data when known.
    #[arg(long)]
    png: Option<PathBuf>,
    /// Compute device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(a: Args) -> Result<()> {
    let device = tweedie::device(&a.device)?;
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    // (model, process, data scale, reference points for the figure)
    let (model, process, scale, reference): (
        Box<dyn ScoreModel>,
        Arc<dyn Process>,
        f64,
        Option<Points>,
    ) = match (&a.model.run, &a.model.target) {
        (Some(run), None) => {
            let (net, ck) = a.model.load_run(run, &device)?;
            let process: Arc<dyn Process> = Arc::from(ck.model.process.build()?);
            let reference = data::TOY_NAMES
                .contains(&ck.run.data.source.as_str())
                .then(|| {
                    data::toy(
                        &ck.run.data.source,
                        a.n,
                        &mut ChaCha8Rng::seed_from_u64(a.seed + 1),
                    )
                })
                .transpose()?;
            (Box::new(net), process, ck.run.data.scale, reference)
        }
        (None, Some(name)) => {
            let mixture = GaussianMixture::named(name)?;
            let process = a.model.target_process()?;
            let reference = Some(mixture.sample(a.n, &mut ChaCha8Rng::seed_from_u64(a.seed + 1)));
            (
                Box::new(ExactScore {
                    mixture,
                    process: process.clone(),
                }),
                process,
                1.0,
                reference,
            )
        }
        _ => bail!(
            "give either --run DIR (a trained model) or --target NAME (an exact mixture score)"
        ),
    };
    let started = Instant::now();
    let mut trace = Trace {
        bar: Some(train::progress_bar(a.steps, 0, false)),
        ..Default::default()
    };
    let x = sample::generate(
        model.as_ref(),
        process.as_ref(),
        &a.sampler,
        a.steps,
        a.n,
        &mut rng,
        &device,
        &mut trace,
    )?;
    let v: Vec<f32> = x
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let pts = Points::from_f32(a.n, model.dim(), &v)?.scaled(scale);
    data::write_npy(&a.out, &pts, false)?;
    eprintln!(
        "{} samples with {} ({} steps, NFE {}) in {:.2} s -> {}",
        a.n,
        a.sampler,
        a.steps,
        trace.nfe,
        started.elapsed().as_secs_f64(),
        a.out.display()
    );
    if let Some(png) = &a.png {
        let title = format!("{} samples ({}, NFE {})", a.n, a.sampler, trace.nfe);
        match &reference {
            Some(r) => {
                tweedie::plot::scatter_panels(png, &[("reference", r), (&title, &pts)], None)?
            }
            None => tweedie::plot::scatter_panels(png, &[(&title, &pts)], None)?,
        }
        eprintln!("figure -> {}", png.display());
    }
    Ok(())
}
