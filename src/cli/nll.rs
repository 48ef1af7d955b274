//! `tweedie nll`: per-point log-likelihoods of data through the probability-flow ODE, for a
//! trained run or an exact mixture score; mean NLL ± standard error, NFE, and bits/dim for 8-bit data.

use super::source::ModelSource;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::{Parser, ValueEnum};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tweedie::data::{self, Points};
use tweedie::likelihood::{
    self, mean_and_sem, Dequantisation, Divergence, DivergenceModel, Options, Probe, Solver,
};
use tweedie::ode::{Method, Tolerance};
use tweedie::process::Process;
use tweedie::target::{ExactScore, GaussianMixture};
use tweedie::train::checkpoint::Checkpoint;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DivergenceKind {
    /// Exact trace of the score's Jacobian (d forward-mode tangents, or analytic for --target).
    Exact,
    /// Hutchinson–Skilling estimate with --probes probes per point, fixed along the trajectory.
    Hutchinson,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SolverKind {
    /// Adaptive Dormand–Prince 5(4) with --rtol/--atol.
    Dopri5,
    Euler,
    Heun,
    Rk4,
}

/// The probability-flow ODE solve of a log-likelihood: solver, tolerances, divergence, t_min
/// (shared by `nll` and `reweight`).
#[derive(clap::Args)]
pub struct OdeArgs {
    /// How the divergence of the score is computed.
    #[arg(long, value_enum, default_value = "exact")]
    divergence: DivergenceKind,
    /// Hutchinson probes per point.
    #[arg(long, default_value_t = 1)]
    probes: usize,
    /// Distribution of the Hutchinson probes.
    #[arg(long, value_enum, default_value = "rademacher")]
    probe: Probe,
    /// ODE solver.
    #[arg(long, value_enum, default_value = "dopri5")]
    solver: SolverKind,
    /// Steps of a fixed-step solver (uniform in t).
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Relative tolerance of dopri5.
    #[arg(long, default_value_t = 1e-5)]
    rtol: f64,
    /// Absolute tolerance of dopri5.
    #[arg(long, default_value_t = 1e-5)]
    atol: f64,
    /// Give up after this many ODE evaluations (dopri5).
    #[arg(long, default_value_t = 100_000)]
    max_nfe: usize,
    /// Data end of the ODE (score_sde's likelihood default).
    #[arg(long, default_value_t = 1e-5)]
    pub t_min: f64,
}

#[derive(Parser)]
#[command(allow_negative_numbers = true)]
pub struct Args {
    #[command(flatten)]
    model: ModelSource,
    /// Points [n, d] in data coordinates (.npy or .csv); with --dequantise, 8-bit integers. `mnist`:
    /// the 1000 held-out test digits of the shipped split (tweedie::data::mnist::split) as 8-bit
    /// values, dequantised as training reads them (--dequantise=-1,1 unless given).
    #[arg(long)]
    data: PathBuf,
    /// Only the first N points of --data (the first N test digits for `mnist`).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    #[command(flatten)]
    ode: OdeArgs,
    /// Seed of the probes and of the dequantisation noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Treat the data as 8-bit integers 0..=255, dequantise x = LO + (HI − LO)(k + u)/256 with
    /// u ~ U[0,1), and report bits/dim; e.g. --dequantise=-1,1.
    #[arg(long, value_name = "LO,HI", allow_hyphen_values = true)]
    dequantise: Option<String>,
    /// Solve the points in independent chunks of this many, side by side on --threads threads
    /// (0: all points as one state, as score_sde). Default: 512 on the CPU, 0 on CUDA.
    #[arg(long)]
    chunk: Option<usize>,
    /// Threads that solve chunks side by side (default: the number of CPUs). While they do,
    /// candle's own thread pools use one thread each unless CANDLE_NUM_THREADS is set.
    #[arg(long)]
    threads: Option<usize>,
    /// Write the per-point log-likelihoods (nats, data coordinates) here: [n] f32 .npy.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Compute device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
}

impl OdeArgs {
    /// The solve's options; `seed` draws the Hutchinson probes.
    pub fn options(&self, seed: u64) -> Options {
        let solver = match self.solver {
            SolverKind::Dopri5 => Solver::Dopri5(Tolerance {
                rtol: self.rtol,
                atol: self.atol,
                max_nfe: self.max_nfe,
            }),
            SolverKind::Euler => fixed(Method::Euler, self.steps),
            SolverKind::Heun => fixed(Method::Heun, self.steps),
            SolverKind::Rk4 => fixed(Method::Rk4, self.steps),
        };
        let divergence = match self.divergence {
            DivergenceKind::Exact => Divergence::Exact,
            DivergenceKind::Hutchinson => Divergence::Hutchinson {
                probes: self.probes,
                probe: self.probe,
                seed,
            },
        };
        Options {
            solver,
            divergence,
            t_min: Some(self.t_min),
        }
    }
}

/// "LO,HI" (e.g. "-1,1") as a dequantisation range.
fn parse_range(text: &str) -> Result<Dequantisation> {
    let bounds: Vec<f64> = text
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("--dequantise takes LO,HI (e.g. -1,1), got '{text}'"))?;
    match bounds[..] {
        [lo, hi] => Dequantisation::new(lo, hi),
        _ => bail!("--dequantise takes two numbers LO,HI (e.g. -1,1), got '{text}'"),
    }
}

/// The dequantisation of `--data mnist`: training reads byte b as (b + u)/128 − 1, which is
/// x = LO + a(k + u) on [−1, 1]; another range would score points the model never saw.
fn mnist_range(given: Option<Dequantisation>) -> Result<Dequantisation> {
    match given {
        None => Dequantisation::new(-1.0, 1.0),
        Some(q) if (q.lo, q.hi) == (-1.0, 1.0) => Ok(q),
        Some(q) => bail!(
            "--data mnist is dequantised to [-1, 1] as in training (x = (b + u)/128 - 1), not [{}, {}]; drop --dequantise or give --dequantise=-1,1",
            q.lo,
            q.hi
        ),
    }
}

/// The held-out test digits of the shipped MNIST split as 8-bit values [1000, 784] (event
/// [1, 28, 28]), in the split's (shuffled) order.
fn mnist_test_bytes() -> Result<Points> {
    let (_, test) = data::mnist::split()?;
    let values = test.pixels.iter().map(|&b| f64::from(b)).collect();
    Points::new(test.n, test.dim(), values)?.with_event(test.event())
}

/// The first `limit` rows of `x` (all of them if it has fewer).
fn first_rows(mut x: Points, limit: usize) -> Result<Points> {
    let n = x.n.min(limit);
    x.data.truncate(n * x.d);
    x.n = n;
    Ok(x)
}

fn fixed(method: Method, steps: usize) -> Solver {
    Solver::Fixed { method, steps }
}

/// The model, its process, the data scale, and the true log-density of data points when known.
type Setup = (
    Box<dyn DivergenceModel + Sync>,
    Arc<dyn Process>,
    f64,
    Box<dyn Fn(&Points) -> Option<Vec<f64>>>,
);

fn setup(a: &Args, device: &candle_core::Device) -> Result<Setup> {
    let source = &a.model;
    Ok(match (&source.run, &source.target) {
        (Some(run), None) => {
            let (net, ck) = source.load_run_exact(run, device)?;
            let process: Arc<dyn Process> = Arc::from(ck.model.process.build_in(ck.model.space)?);
            let toy = ck.run.data.source.clone();
            let truth = move |x: &Points| data::toy_log_prob(&toy, x);
            (Box::new(net), process, ck.run.data.scale, Box::new(truth))
        }
        (None, Some(name)) => {
            let mixture = GaussianMixture::named(name)?;
            let process = source.target_process()?;
            let truth = {
                let m = mixture.clone();
                move |x: &Points| m.log_prob(x).ok()
            };
            let model = ExactScore {
                mixture,
                process: process.clone(),
            };
            (Box::new(model), process, 1.0, Box::new(truth))
        }
        _ => return Err(ModelSource::neither()),
    })
}

/// Points per independent solve on the CPU with candle ops: chunks side by side, each with
/// single-threaded candle ops, are ~1.9× faster on 2 cores than one joint solve whose ops candle
/// splits over the cores ([1000, 128] activations are too small for that to pay;
/// docs/experiments/likelihood.md). A trained run on the fused kernels is solved whole: the fused
/// MLP splits each evaluation's rows over the cores itself.
const CPU_CHUNK: usize = 512;

/// (chunk, threads) of the solve; with threads > 1 and more than one chunk, candle's thread pools
/// are set to one thread (before any candle op creates them) unless CANDLE_NUM_THREADS is set.
fn parallelism(a: &Args, device: &candle_core::Device, n: usize) -> (usize, usize) {
    // read from the checkpoint's header alone: no candle op may run before the thread pools are set
    let fused_run = a.model.run.as_ref().is_some_and(|run| {
        Checkpoint::spec(&run.join(tweedie::train::CHECKPOINT))
            .is_ok_and(|spec| tweedie::nn::fused::spec_applies(&spec))
    });
    let chunk = a.chunk.unwrap_or(if device.is_cpu() && !fused_run {
        CPU_CHUNK
    } else {
        0
    });
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |t| t.get()));
    // main sets RAYON_NUM_THREADS (gemm's threads) always; CANDLE_NUM_THREADS (the pool of the
    // elementwise ops) only a user sets
    let user_set = std::env::var_os("CANDLE_NUM_THREADS").is_some();
    if chunk > 0 && chunk < n && threads > 1 && !user_set {
        for v in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
            std::env::set_var(v, "1");
        }
    }
    (chunk, threads)
}

pub fn run(a: Args) -> Result<()> {
    for p in a.out.iter().chain(&a.json) {
        tweedie::io::check_parent(p)?;
    }
    let device = tweedie::device(&a.device)?;
    let opts = a.ode.options(a.seed);
    let mut quant = a.dequantise.as_deref().map(parse_range).transpose()?;
    let name = a.data.display().to_string();
    let mut x = if a.data.as_os_str() == data::mnist::NAME {
        quant = Some(mnist_range(quant)?);
        mnist_test_bytes()?
    } else {
        data::read_points(&a.data)?
    };
    if let Some(limit) = a.limit {
        if limit == 0 {
            bail!("--limit must be at least 1");
        }
        x = first_rows(x, limit)?;
    }
    if x.n == 0 {
        bail!("{name}: no points");
    }
    x.check_finite(&name)?;
    if let Some(q) = &quant {
        x = q
            .dequantise(&x, &mut ChaCha8Rng::seed_from_u64(a.seed))
            .with_context(|| name.clone())?;
    }
    let (chunk, threads) = parallelism(&a, &device, x.n);
    let (model, process, scale, truth) = setup(&a, &device)?;
    if x.d != model.dim() {
        bail!(
            "{name}: points have dimension {} but the model has dimension {}",
            x.d,
            model.dim()
        );
    }
    let started = Instant::now();
    let xm = Tensor::from_vec(x.scaled(1.0 / scale).data, (x.n, x.d), &device)?;
    // one joint solve reports nothing until it ends: a spinner with the elapsed time there
    let bar = if chunk == 0 {
        tweedie::progress::spinner("solving the probability-flow ODE for all points", a.quiet)
    } else {
        tweedie::progress::bar(x.n, 0, a.quiet)
    };
    let done = |k: usize| bar.set_position(k as u64);
    let out = if chunk == 0 {
        likelihood::log_prob(model.as_ref(), process.as_ref(), &xm, &opts)
    } else {
        likelihood::log_prob_chunked(
            model.as_ref(),
            process.as_ref(),
            &xm,
            &opts,
            chunk,
            threads,
            Some(&done),
        )
    }
    .inspect_err(|_| bar.abandon())?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    // data coordinates: log p_data(x) = log p_model(x / scale) − dof log scale (dof = d, or N·k − k
    // on the zero-centre-of-mass space)
    let shift = process.space().dof(x.d) as f64 * scale.ln();
    let log_p: Vec<f64> = out.log_p0.iter().map(|l| l - shift).collect();
    let nll: Vec<f64> = log_p.iter().map(|l| -l).collect();
    let (mean, sem) = mean_and_sem(&nll);
    println!(
        "NLL {mean:.4} ± {sem:.4} nats per point (mean ± s.e., {} points of dimension {}, data coordinates, t_min {}), NFE {}{}, {seconds:.2} s",
        x.n, x.d, a.ode.t_min, out.nfe,
        if chunk > 0 && chunk < x.n { format!(" (largest of {} chunks of ≤ {chunk} on {threads} threads)", x.n.div_ceil(chunk)) } else { String::new() }
    );
    let mut report = json!({
        "n": x.n, "dim": x.d, "nll_mean": mean, "nll_sem": sem, "nfe": out.nfe, "seconds": seconds,
        "units": "nats per point, data coordinates (log p_data(x) = log p_model(x/scale) - dof log scale; dof = d, or N*k - k for centre-of-mass-free particles)",
        "data_scale": scale, "t_min": a.ode.t_min, "divergence": format!("{:?}", opts.divergence),
        "solver": format!("{:?}", opts.solver),
        "chunk": chunk, "threads": threads,
        "nfe_meaning": "evaluations of the ODE right-hand side of the joint solve, or the largest of any chunk's solve",
    });
    if let Some(true_lp) = truth(&x).filter(|v| v.iter().all(|l| l.is_finite())) {
        let (true_mean, true_sem) = mean_and_sem(&true_lp.iter().map(|l| -l).collect::<Vec<_>>());
        let mae = log_p
            .iter()
            .zip(&true_lp)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / x.n as f64;
        println!(
            "true NLL of the same points {true_mean:.4} ± {true_sem:.4} nats; mean |log p_model − log p_true| {mae:.2e} nats"
        );
        report["true_nll_mean"] = json!(true_mean);
        report["true_nll_sem"] = json!(true_sem);
        report["mean_abs_error"] = json!(mae);
    }
    if let Some(q) = &quant {
        let bpd: Vec<f64> = log_p.iter().map(|l| q.bits_per_dim(*l, x.d)).collect();
        let (b, b_sem) = mean_and_sem(&bpd);
        let offset = 8.0 - (q.hi - q.lo).log2();
        println!(
            "bits/dim {b:.4} ± {b_sem:.4} = −(log p(x) + D ln a)/(D ln 2) = NLL/(D ln 2) + {offset:.4}, a = (HI − LO)/256 = {} for x = LO + a(k + u) in [{}, {}] (uniform dequantisation; an upper bound on the discrete code length)",
            q.scale(), q.lo, q.hi
        );
        report["bits_per_dim"] = json!(b);
        report["bits_per_dim_sem"] = json!(b_sem);
        report["bits_per_dim_definition"] = json!(format!(
            "-(log p(x) + D ln a)/(D ln 2) = NLL/(D ln 2) + {offset}, x = LO + a(k + u), a = (HI - LO)/256 = {}, u ~ U[0,1), [LO, HI] = [{}, {}]",
            q.scale(), q.lo, q.hi
        ));
    }
    if let Some(p) = &a.out {
        data::write_npy_f32_1d(p, &log_p)?;
        eprintln!("per-point log-likelihoods -> {}", p.display());
    }
    if let Some(p) = &a.json {
        tweedie::io::write_atomic_bytes(p, serde_json::to_string_pretty(&report)?.as_bytes())
            .with_context(|| format!("{}: cannot write", p.display()))?;
    }
    Ok(())
}
