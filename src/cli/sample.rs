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
use tweedie::images::{ClassifierGuided, NoisyClassifier};
use tweedie::nn::ClassGuided;
use tweedie::ode::Tolerance;
use tweedie::process::Process;
use tweedie::sample::grid::Grid;
use tweedie::sample::{self, Churn, Ddim, Langevin, Options, Plan, PredictorCorrector, Trace};
use tweedie::score::ScoreModel;
use tweedie::target::posterior::Readout;
use tweedie::target::{DenoisedForce, ExactScore, GaussianMixture};

#[derive(Parser)]
#[command(after_help = sampler_help())]
pub struct Args {
    #[command(flatten)]
    model: ModelSource,
    /// Or sample a named potential's Boltzmann density with no network: note 000's Monte Carlo
    /// score (posterior-expected force by self-normalised importance sampling, --k draws per
    /// point) under --process: double-well, muller-brown, gmm40, dw4, lj13. With --run and
    /// --readout tweedie: the force at the run's denoiser, βF(x̂0)/α_t.
    #[arg(long, conflicts_with = "target")]
    potential: Option<String>,
    /// Temperature kT of --potential (default: the potential's own).
    #[arg(long, requires = "potential")]
    kt: Option<f64>,
    /// Importance draws per point and score evaluation of --potential.
    #[arg(long, default_value_t = 500)]
    k: usize,
    /// Read-out of the --potential estimator: force (Σw βF/α, sharper at low noise), kernel
    /// (Tweedie's Σw (αx0 − x)/σ², sharper at high noise), blend (force at low noise, kernel at
    /// high), or tweedie (with --run: one sample, βF(x̂0)/α_t at x̂0 = (x + σ² s_θ)/α, no draws).
    #[arg(long, value_enum, default_value = "kernel")]
    readout: ReadoutArg,
    /// --readout tweedie: above this noise level σ_t/α_t use the run's own score (at high noise
    /// x̂0 nears the data mean, where particles coincide and pair forces are undefined).
    #[arg(long, default_value_t = f64::INFINITY)]
    tweedie_max_noise: f64,
    /// Sampler (see the list below). Default: a distilled run's own sampler; else em
    /// (Euler–Maruyama) for 200 steps or more, and unipc (UniPC-3 on the log-SNR grid, the most
    /// accurate few-step sampler in docs/experiments/quality.md) below.
    #[arg(long)]
    sampler: Option<String>,
    /// Solver steps N (the grid has N + 1 times from T to t_min; dopri5 ignores it). Default:
    /// a distilled run's own, else 1000.
    #[arg(long)]
    steps: Option<usize>,
    /// Time grid: auto (the sampler's own: logsnr for ddim/dpm*, karras for edm, else uniform),
    /// uniform, quadratic, logsnr, karras (ρ = 7) or karras:RHO.
    #[arg(long, default_value = "auto")]
    grid: String,
    /// Finish with one Tweedie denoising step x̂0 = (x + σ² s)/α at t_min (+1 NFE; score_sde's
    /// noise removal). The default with --run: a trained model stops at t_min carrying noise
    /// σ_{t_min}, which can be as wide as the data's finest scale (gmm40's modes in x/50)
    #[arg(long, conflicts_with = "no_denoise")]
    denoise: bool,
    /// Stop at t_min without the final denoising step (the default for exact and estimated
    /// scores, and for a distilled run's own few-step sampler)
    #[arg(long)]
    no_denoise: bool,
    /// dopri5: relative tolerance.
    #[arg(long, default_value_t = 1e-5)]
    rtol: f64,
    /// dopri5: absolute tolerance.
    #[arg(long, default_value_t = 1e-5)]
    atol: f64,
    /// dopri5: give up after this many score evaluations.
    #[arg(long, default_value_t = 10_000)]
    max_nfe: usize,
    /// ddim: η (0 deterministic, 1 DDPM-like noise).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// pc: predictor (em, reverse_diffusion, ancestral).
    #[arg(long, default_value = "reverse_diffusion")]
    predictor: String,
    /// pc: signal-to-noise ratio of the Langevin corrector.
    #[arg(long, default_value_t = 0.16)]
    snr: f64,
    /// pc: corrector steps per time step.
    #[arg(long, default_value_t = 1)]
    corrector_steps: usize,
    /// annealed_langevin: base step ε (step ε σ_t²/σ_{t_min}²).
    #[arg(long, default_value_t = 2e-5)]
    langevin_eps: f64,
    /// langevin, annealed_langevin: steps per grid step / noise level.
    #[arg(long, default_value_t = 10)]
    langevin_steps: usize,
    /// langevin: step δ.
    #[arg(long, default_value_t = 0.01)]
    langevin_step: f64,
    /// edm: S_churn (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    s_churn: f64,
    /// edm: churn only for σ ≥ S_min.
    #[arg(long, default_value_t = 0.0)]
    s_min: f64,
    /// edm: churn only for σ ≤ S_max.
    #[arg(long, default_value_t = f64::INFINITY)]
    s_max: f64,
    /// edm: S_noise.
    #[arg(long, default_value_t = 1.0)]
    s_noise: f64,
    /// Also write a PNG of the trajectories of the first 200 samples (2-D only).
    #[arg(long)]
    trajectory: Option<PathBuf>,
    /// Sample class C of a class-conditional run (network = "unet" trained on labelled data); a
    /// list C1,C2,… gives sample i the class C_(i mod k) (e.g. 0,1,…,9 for a grid of digits).
    /// The classes are written beside the samples (OUT.labels.npy, for `tweedie eval
    /// --classifier`).
    #[arg(long, value_delimiter = ',')]
    class: Option<Vec<u32>>,
    /// Classifier-free guidance weight w with --class: s = (1 + w) s(x | c) − w s(x | ∅)
    /// (0: the conditional score alone).
    #[arg(long, default_value_t = 0.0, requires = "class")]
    guidance: f64,
    /// Classifier guidance with --class: a classifier run (`tweedie classifier`, trained under
    /// the run's process) adds w ∇x log p(c | x, t) to the score (Dhariwal & Nichol 2021), on
    /// top of --guidance; also steers an unconditional run.
    #[arg(long, requires = "class")]
    classifier: Option<PathBuf>,
    /// The classifier guidance scale w.
    #[arg(long, default_value_t = 1.0, requires = "classifier")]
    classifier_scale: f64,
    /// Number of samples.
    #[arg(long, short, default_value_t = 2000)]
    n: usize,
    /// Draw the samples this many at a time, to bound memory (a tiny U-Net holds about 24 GB
    /// for 1000 MNIST digits at once). Default: 100 for images, all at once otherwise. With
    /// --class, rounded down to a whole number of cycles of the classes
    #[arg(long)]
    batch: Option<usize>,
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
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The model, its process, the data scale, reference points for the figure and one sample's shape.
type Loaded = (
    Box<dyn ScoreModel>,
    Arc<dyn Process>,
    f64,
    Option<Points>,
    Vec<usize>,
);

pub fn run(mut a: Args) -> Result<()> {
    for p in std::iter::once(&a.out).chain(&a.png).chain(&a.trajectory) {
        tweedie::io::check_parent(p)?;
    }
    let device = tweedie::device(&a.device)?;
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    if a.class.is_some() && a.model.run.is_none() {
        bail!("--class samples a class-conditional run: give --run");
    }
    let (model, process, scale, reference, event): Loaded = match (&a.model.run, &a.model.target) {
        (Some(run), None) => {
            let (net, ck) = a.model.load_run(run, &device)?;
            let process: Arc<dyn Process> = Arc::from(ck.model.process.build_in(ck.model.space)?);
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
            let event = ck.model.event_shape();
            let model: Box<dyn ScoreModel> = match (&a.potential, a.readout) {
                (None, _) => match a.class.clone() {
                    Some(c) => class_model(net, c, &a, &ck, &device)?,
                    None => Box::new(net),
                },
                (Some(name), ReadoutArg::Tweedie) => {
                    if ck.run.data.scale != 1.0 {
                        bail!("--readout tweedie needs a run trained in the potential's units (data.scale = 1, not {})", ck.run.data.scale);
                    }
                    let mut estimator = DenoisedForce::new(
                        Box::new(net),
                        process.clone(),
                        Arc::from(tweedie::target::potential::named(name, a.kt)?),
                    )?;
                    if a.tweedie_max_noise.is_nan() || a.tweedie_max_noise <= 0.0 {
                        bail!("--tweedie-max-noise must be a positive number, not {}", a.tweedie_max_noise);
                    }
                    estimator.max_noise = a.tweedie_max_noise;
                    Box::new(estimator)
                }
                (Some(_), other) => bail!(
                    "with --run, --potential takes --readout tweedie (the force at the run's denoiser), not {other:?}"
                ),
            };
            (model, process, ck.run.data.scale, reference, event)
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
                Vec::new(),
            )
        }
        (None, None) if a.potential.is_some() => {
            let name = a.potential.as_deref().unwrap_or_default();
            let potential: Arc<dyn tweedie::target::Potential + Send + Sync> =
                Arc::from(tweedie::target::potential::named(name, a.kt)?);
            let process: Arc<dyn Process> = Arc::from(
                tweedie::process::ProcessConfig::from_name(&a.model.process, a.model.sigma_max)?
                    .build_in(potential.space())?,
            );
            let readout = match a.readout {
                ReadoutArg::Force => Readout::Force,
                ReadoutArg::Kernel => Readout::Kernel,
                ReadoutArg::Blend => Readout::Blend,
                ReadoutArg::Tweedie => bail!("--readout tweedie evaluates the force at a trained model's denoiser: give --run DIR with --potential"),
            };
            let estimator = tweedie::target::posterior::PosteriorScore::new(
                potential,
                process.clone(),
                a.k,
                readout,
                a.seed,
            )?;
            (Box::new(estimator), process, 1.0, None, Vec::new())
        }
        _ => return Err(ModelSource::neither()),
    };
    // a distilled run samples with its own sampler unless another is named
    let own = match &a.model.run {
        Some(run) => {
            tweedie::train::checkpoint::Checkpoint::load(&run.join(tweedie::train::CHECKPOINT))?
                .run
                .sample
                .filter(|_| a.sampler.is_none())
        }
        None => None,
    };
    // a trained run denoises unless told not to; a student's own sampler keeps its NFE
    let denoise = a.denoise || (!a.no_denoise && a.model.run.is_some() && own.is_none());
    if let Some(own) = &own {
        a.steps = a.steps.or(Some(own.steps));
        a.sampler = Some(own.sampler.clone());
        if a.grid == "auto" {
            a.grid = own.grid.clone();
        }
    }
    let steps = a.steps.unwrap_or(1000);
    let sampler = a
        .sampler
        .take()
        .unwrap_or_else(|| default_sampler(steps).into());
    let plan = Plan {
        sampler: &sampler,
        grid: Grid::parse(&a.grid, &sampler)?,
        steps,
        denoise_final: denoise,
        options: Options {
            ode: Tolerance {
                rtol: a.rtol,
                atol: a.atol,
                max_nfe: a.max_nfe,
            },
            ddim: Ddim { eta: a.eta },
            pc: PredictorCorrector {
                predictor: a.predictor.clone(),
                snr: a.snr,
                corrector_steps: a.corrector_steps,
            },
            langevin: Langevin {
                eps: a.langevin_eps,
                steps: a.langevin_steps,
                step: a.langevin_step,
            },
            edm: Churn {
                s_churn: a.s_churn,
                s_min: a.s_min,
                s_max: a.s_max,
                s_noise: a.s_noise,
            },
        },
    };
    let batch = batch_size(&a, event.len())?;
    let chunks = a.n.div_ceil(batch);
    let started = Instant::now();
    let bar = tweedie::progress::bar(steps * chunks, 0, a.quiet);
    let mut trace = Trace {
        keep: a.trajectory.is_some(),
        ..Default::default()
    };
    let mut v: Vec<f32> = Vec::with_capacity(a.n * model.dim());
    for c in 0..chunks {
        // NFE per sample: every chunk takes the same steps
        trace.nfe = 0;
        trace.callback = Some(tweedie::progress::sample_callback(bar.clone(), c * steps));
        let x = sample::generate(
            model.as_ref(),
            process.as_ref(),
            &plan,
            batch.min(a.n - c * batch),
            &mut rng,
            &device,
            &mut trace,
        )?;
        v.extend(
            x.to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    bar.finish_and_clear();
    let pts = Points::from_f32(a.n, model.dim(), &v)?
        .with_event(event)?
        .scaled(scale);
    data::write_npy(&a.out, &pts, false)?;
    if let Some(classes) = &a.class {
        let path = tweedie::images::quality::labels_beside(&a.out);
        data::write_labels(&path, &tweedie::images::quality::cycled(classes, a.n))?;
        eprintln!("classes -> {}", path.display());
    }
    eprintln!(
        "{} samples with {} ({} steps, {} grid, NFE {}) in {:.2} s -> {}",
        a.n,
        sampler,
        steps,
        a.grid,
        trace.nfe,
        started.elapsed().as_secs_f64(),
        a.out.display()
    );
    if let Some(path) = &a.trajectory {
        if model.dim() != 2 {
            bail!(
                "--trajectory draws 2-D data only; these samples have dimension {}",
                model.dim()
            );
        }
        let k = a.n.min(200);
        let mut paths = vec![Vec::new(); k];
        for (_, state) in &trace.states {
            let v: Vec<f64> = state
                .narrow(0, 0, k)?
                .to_dtype(candle_core::DType::F64)?
                .flatten_all()?
                .to_vec1()?;
            for (i, path) in paths.iter_mut().enumerate() {
                path.push((v[2 * i] * scale, v[2 * i + 1] * scale));
            }
        }
        let times: Vec<f64> = trace.states.iter().map(|(t, _)| *t).collect();
        tweedie::plot::trajectories(
            path,
            &format!("{k} trajectories ({sampler}, NFE {})", trace.nfe),
            &paths,
            Some(&times),
        )?;
        eprintln!("trajectories -> {}", path.display());
    }
    if let Some(png) = &a.png {
        let title = format!("{} samples ({sampler}, NFE {})", a.n, trace.nfe);
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

/// Samples per call of the sampler: --batch (with --class, whole cycles of the classes, since
/// every call restarts the cycle), else 100 for images and all at once for vectors.
fn batch_size(a: &Args, event_rank: usize) -> Result<usize> {
    if a.n == 0 {
        bail!("the number of samples (--n) must be at least 1");
    }
    let batch = match a.batch {
        Some(0) => bail!("--batch must be at least 1"),
        Some(b) if a.trajectory.is_some() && b < a.n => {
            bail!("--trajectory follows one batch of samples: leave out --batch or make it ≥ --n")
        }
        Some(b) => b,
        None if event_rank == 3 => 100,
        None => a.n,
    };
    Ok(match &a.class {
        Some(c) if !c.is_empty() => (batch / c.len()).max(1) * c.len(),
        _ => batch,
    })
}

/// The run's network read at `classes`: classifier-free guidance by --guidance (a conditional
/// run), then classifier guidance by --classifier where given (which alone may steer an
/// unconditional run).
fn class_model(
    net: tweedie::nn::Model,
    classes: Vec<u32>,
    a: &Args,
    ck: &tweedie::train::checkpoint::Checkpoint,
    device: &candle_core::Device,
) -> Result<Box<dyn ScoreModel>> {
    let base: Box<dyn ScoreModel> = match &a.classifier {
        Some(_) if net.null_class().is_none() && a.guidance == 0.0 => Box::new(net),
        _ => Box::new(ClassGuided::new(net, classes.clone(), a.guidance)?),
    };
    let Some(dir) = &a.classifier else {
        return Ok(base);
    };
    let classifier = NoisyClassifier::load_run(dir, device)?;
    classifier.check_process(&ck.model.process)?;
    if ck.run.data.scale != 1.0 || ck.model.event_shape() != classifier.config.spec.event {
        bail!(
            "--classifier reads images of shape {:?} in data units; this run models data of shape {:?} scaled by 1/{}",
            classifier.config.spec.event,
            ck.model.event_shape(),
            ck.run.data.scale
        );
    }
    Ok(Box::new(ClassifierGuided::new(
        base,
        classifier,
        classes,
        a.classifier_scale,
    )?))
}

/// `--readout`: the read-outs of note 000's Monte Carlo estimator (`posterior::Readout`), or its
/// single sample at a trained run's denoiser (`target::DenoisedForce`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ReadoutArg {
    /// Σ w_k βF(x0_k) / (α_t Σ w_k): the posterior-expected force.
    Force,
    /// Σ w_k (α_t x0_k − x_t) / (σ_t² Σ w_k): Tweedie's formula with the posterior mean.
    Kernel,
    /// The force form where α_t > σ_t, the kernel form elsewhere.
    Blend,
    /// With --run: βF(x̂0)/α_t at the run's denoiser x̂0 = (x_t + σ_t² s_θ)/α_t, no draws.
    Tweedie,
}

/// The sampler when none is named: the reverse SDE for long runs, UniPC for few steps.
fn default_sampler(steps: usize) -> &'static str {
    if steps >= 200 {
        "em"
    } else {
        "unipc"
    }
}

/// The sampler list for `--help`.
fn sampler_help() -> String {
    let mut s = String::from("Samplers:\n");
    for i in sample::SAMPLERS {
        let nfe = match i.nfe_per_step {
            0 => "adaptive NFE".to_string(),
            k => format!("{k} NFE/step"),
        };
        s.push_str(&format!(
            "  {:<18} {} [{}; {nfe}; grid {}]\n",
            i.name,
            i.summary,
            i.source,
            i.grid.name()
        ));
    }
    s
}
