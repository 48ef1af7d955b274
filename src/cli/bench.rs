//! `tweedie bench`: timings of tweedie's side of the benchmark suite (bench/suite.py runs these
//! beside the PyTorch and JAX references, alternating, and prints the ratios). Each case warms up,
//! times `--repeats` blocks and prints one JSON line: seconds per unit (step, sample set, solve)
//! for every block, the unit's FLOP count where it is known, NFE and the thread count.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use clap::{Parser, Subcommand};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use tweedie::config::TrainConfig;
use tweedie::data::Points;
use tweedie::likelihood::{self, Options as NllOptions};
use tweedie::mcmc::{mala, Options as MalaOptions};
#[cfg(target_arch = "x86_64")]
use tweedie::nn::fused::peak::{peak_gflops, widest_fma};
use tweedie::nn::{Arch, Model, ModelConfig, NetworkKind};
use tweedie::objective::{ObjectiveConfig, Probe, Weighting};
use tweedie::process::{Process, ProcessConfig, Space};
use tweedie::sample::{self, grid::Grid, Plan, Trace};
use tweedie::train::adam::Adam;
use tweedie::train::engine::Engine;
use tweedie::train::{self, DataSource, CHECKPOINT};

#[derive(Parser)]
pub struct Args {
    #[command(subcommand)]
    case: Case,
    /// Timed blocks.
    #[arg(long, default_value_t = 3, global = true)]
    repeats: usize,
}

#[derive(Subcommand)]
enum Case {
    /// Training steps on fresh checkerboard batches (Adam lr 1e-3, EMA 0.999), the peer's MLP:
    /// 32 Fourier features (scale 16), depth 3, SiLU, ε-prediction, VP.
    Train {
        #[arg(long, default_value_t = 512)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        width: usize,
        /// dsm, ism or ssm (SSM: one Rademacher projection, variance-reduced; ISM/SSM at t = 0.1).
        #[arg(long, default_value = "dsm")]
        objective: String,
        /// Steps per timed block.
        #[arg(long, default_value_t = 200)]
        steps: usize,
    },
    /// DSM training steps of DEM's EGNN (attention, tanh, recurrent; SiLU; VP; ε-prediction;
    /// Adam lr 1e-3, EMA) on N particles in k dimensions drawn from a standard normal on the
    /// zero-centre-of-mass space. DEM's settings: DW-4 = 4×2, 3 layers; LJ-13 = 13×3, 5 layers;
    /// hidden 128; batch 512 (DEM's num_samples_to_sample_from_buffer).
    TrainEgnn {
        #[arg(long)]
        particles: usize,
        #[arg(long)]
        dim: usize,
        #[arg(long)]
        layers: usize,
        #[arg(long, default_value_t = 128)]
        width: usize,
        #[arg(long, default_value_t = 512)]
        batch: usize,
        /// Steps per timed block.
        #[arg(long, default_value_t = 20)]
        steps: usize,
    },
    /// Draw n samples from a run (EMA weights) with one sampler.
    Sample {
        #[arg(long)]
        run: PathBuf,
        #[arg(long, default_value = "em")]
        sampler: String,
        #[arg(long, default_value_t = 1000)]
        steps: usize,
        #[arg(long, default_value_t = 10_000)]
        n: usize,
    },
    /// PF-ODE log-likelihood of a .npy of points (data coordinates): Dopri5, rtol = atol = 1e-5,
    /// exact divergence, t from 1e-5 (as `tweedie nll`).
    Nll {
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        data: PathBuf,
    },
    /// MALA steps (f64, fixed step size, no burn-in) of --chains chains of a named potential, from
    /// rows of a .npy file (chain c at row c mod m) or the potential's own starting states;
    /// bench/peers/mala_ref.py is the vectorised PyTorch peer.
    Mala {
        #[arg(long, default_value = "dw4")]
        potential: String,
        #[arg(long, default_value_t = 1000)]
        chains: usize,
        /// Steps per timed block.
        #[arg(long, default_value_t = 200)]
        steps: usize,
        #[arg(long, default_value_t = 1e-2)]
        step_size: f64,
        #[arg(long)]
        init: Option<PathBuf>,
    },
    /// DSM training steps of the tiny U-Net of configs/mnist-tiny.toml on the shipped MNIST
    /// digits (class-conditional, label dropout, Adam with warm-up, clipping and EMA);
    /// bench/peers/unet_ref.py is the PyTorch peer.
    UnetTrain {
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Steps per timed block.
        #[arg(long, default_value_t = 5)]
        steps: usize,
    },
    /// Sampling NFEs of the same U-Net: one class-conditional forward pass of --batch images.
    UnetSample {
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Forward passes per timed block.
        #[arg(long, default_value_t = 10)]
        nfe: usize,
    },
    /// Forward and backward time of each layer type of the same U-Net (all its instances at
    /// MNIST's shapes, best of 3): our convolution and GroupNorm ops beside candle's composites.
    UnetLayers {
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
    /// The machine's f32 peak: independent FMA chains of the widest vectors the CPU has (AVX-512
    /// or AVX2) on every thread (and on one).
    Peak,
}

pub fn run(a: Args) -> Result<()> {
    if a.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    // as `tweedie train` and `sample` do for these networks
    match a.case {
        Case::TrainEgnn { .. } => super::prepare_for(NetworkKind::Egnn),
        Case::UnetTrain { .. } | Case::UnetSample { .. } | Case::UnetLayers { .. } => {
            super::prepare_for(NetworkKind::Unet)
        }
        _ => {}
    }
    let threads = rayon::current_num_threads();
    let line = match a.case {
        Case::Train {
            batch,
            width,
            objective,
            steps,
        } => {
            if batch == 0 || width == 0 || steps == 0 {
                bail!("--batch, --width and --steps must be at least 1");
            }
            let mut config = ModelConfig::default_for(2, ProcessConfig::vp_default());
            config.arch = Arch {
                width,
                ..Arch::default()
            };
            let source = DataSource::Toy("checkerboard".into());
            let t = time_training(config, &source, batch, &objective, steps, a.repeats)?;
            json!({"case": "train", "objective": objective, "batch": batch, "width": width,
                   "engine": t.engine, "seconds_per_step": t.seconds,
                   "flops_per_step": t.flops, "threads": threads})
        }
        Case::TrainEgnn {
            particles,
            dim,
            layers,
            width,
            batch,
            steps,
        } => {
            if [particles, dim, layers, width, batch, steps].contains(&0) {
                bail!(
                    "--particles, --dim, --layers, --width, --batch and --steps must be at least 1"
                );
            }
            let d = particles * dim;
            let space = Space::ComFree { particles, dim };
            let mut config = ModelConfig::default_for(d, ProcessConfig::vp_default());
            config.event = vec![particles, dim];
            config.space = space;
            config.arch = Arch {
                network: NetworkKind::Egnn,
                width,
                depth: layers,
                ..Arch::default()
            };
            // 10,000 mean-free standard-normal configurations to draw batches from
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let mut x: Vec<f64> = (0..10_000 * d)
                .map(|_| rng.sample(StandardNormal))
                .collect();
            space.project(&mut x);
            let source = DataSource::Points {
                x: Points::new(10_000, d, x)?.with_event(vec![particles, dim])?,
                forces: None,
                labels: None,
            };
            let t = time_training(config, &source, batch, "dsm", steps, a.repeats)?;
            json!({"case": "train_egnn", "particles": particles, "dim": dim, "layers": layers,
                   "width": width, "batch": batch, "engine": t.engine,
                   "seconds_per_step": t.seconds, "cpu_seconds_per_step": t.cpu_seconds,
                   "threads": threads})
        }
        Case::Sample {
            run,
            sampler,
            steps,
            n,
        } => {
            let (net, process) = load(&run)?;
            let plan = Plan {
                sampler: &sampler,
                grid: Grid::parse("auto", &sampler)?,
                steps,
                options: Default::default(),
                denoise_final: false,
            };
            let mut nfe = 0;
            let secs = timed(a.repeats, || {
                let mut trace = Trace::default();
                let mut rng = ChaCha8Rng::seed_from_u64(0);
                sample::generate(
                    &net,
                    process.as_ref(),
                    &plan,
                    n,
                    &mut rng,
                    &Device::Cpu,
                    &mut trace,
                )?;
                nfe = trace.nfe;
                Ok(())
            })?;
            json!({"case": "sample", "sampler": sampler, "steps": steps, "n": n, "nfe": nfe,
                   "fused": net.is_fused(), "seconds": secs,
                   "flops": nfe as f64 * n as f64 * 2.0 * net.num_params() as f64,
                   "product_flops": nfe as f64 * n as f64 * product_flops_per_row(&net),
                   "threads": threads})
        }
        Case::Nll { run, data } => {
            let (net, process) = load(&run)?;
            let ck = train::checkpoint::Checkpoint::load(&run.join(CHECKPOINT))?;
            let pts = tweedie::data::read_points(&data)?.scaled(1.0 / ck.run.data.scale);
            let x = Tensor::from_vec(pts.data, (pts.n, pts.d), &Device::Cpu)?;
            let mut nfe = 0;
            let secs = timed(a.repeats, || {
                let out = likelihood::log_prob(&net, process.as_ref(), &x, &NllOptions::default())?;
                nfe = out.nfe;
                Ok(())
            })?;
            json!({"case": "nll", "n": pts.n, "nfe": nfe, "fused": net.is_fused(),
                   "seconds": secs, "threads": threads})
        }
        Case::Mala {
            potential,
            chains,
            steps,
            step_size,
            init,
        } => {
            let p = tweedie::target::named_potential(&potential, None)?;
            let init = init
                .map(|path| -> Result<Vec<f64>> {
                    let x = tweedie::data::read_npy(&path)?;
                    if x.d != p.dim() || x.n == 0 {
                        bail!(
                            "{}: rows of {} values, not {}",
                            path.display(),
                            x.d,
                            p.dim()
                        );
                    }
                    Ok((0..chains).flat_map(|c| x.row(c % x.n).to_vec()).collect())
                })
                .transpose()?;
            let o = MalaOptions {
                chains,
                steps,
                burn_in: 0,
                thin: steps,
                step_size,
                adapt: false,
                ..MalaOptions::default()
            };
            let mut acceptance = 0.0;
            let blocks = timed(a.repeats, || {
                acceptance = mala(p.as_ref(), init.as_deref(), &o, None)?.acceptance;
                Ok(())
            })?;
            let secs: Vec<f64> = blocks.iter().map(|s| s / steps as f64).collect();
            json!({"case": "mala", "potential": potential, "chains": chains, "steps": steps,
                   "step_size": step_size, "seconds_per_step": secs, "acceptance": acceptance,
                   "dtype": "float64", "threads": threads})
        }
        Case::UnetTrain { batch, steps } => {
            super::bench_unet::train(batch, steps, a.repeats, threads)?
        }
        Case::UnetSample { batch, nfe } => {
            super::bench_unet::sample(batch, nfe, a.repeats, threads)?
        }
        Case::UnetLayers { batch } => {
            if batch == 0 {
                bail!("--batch must be at least 1");
            }
            let rows: Vec<serde_json::Value> = tweedie::nn::unet::profile::layer_times(batch)?
                .into_iter()
                .map(|(layer, f, b)| json!({"layer": layer, "forward_s": f, "backward_s": b}))
                .collect();
            json!({"case": "unet-layers", "batch": batch, "threads": threads, "layers": rows})
        }
        Case::Peak => {
            let all = peak_gflops(threads);
            let one = peak_gflops(1);
            json!({"case": "peak", "gflops": all, "gflops_one_thread": one, "threads": threads,
                   "isa": widest_fma().0,
                   "how": "12 independent FMA chains of the widest vectors (isa) per thread, 2 flops per lane, 2e8 iterations"})
        }
    };
    println!("{line}");
    Ok(())
}

/// One warm-up call, then `repeats` timed calls of `f`; seconds of each.
pub(super) fn timed(repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    f()?;
    (0..repeats)
        .map(|_| {
            let t0 = Instant::now();
            f()?;
            Ok(t0.elapsed().as_secs_f64())
        })
        .collect()
}

/// FLOPs of one evaluation's matrix products per row at a shared t: 2 Σ fan_in · fan_out, with
/// layer 0 over x's d inputs only (its embedding columns fold into the bias), the least any
/// implementation of this network computes; the suite divides it by the peak for a ceiling.
fn product_flops_per_row(net: &Model) -> f64 {
    let embed = net.config.arch.embed_dim;
    let weights = net
        .vars()
        .iter()
        .filter(|(name, _)| name.ends_with(".weight"));
    let macs: usize = weights
        .enumerate()
        .map(|(i, (_, w))| match w.dims() {
            [out, inp] => out * if i == 0 { inp - embed } else { *inp },
            _ => 0,
        })
        .sum();
    2.0 * macs as f64
}

/// A run's EMA network, frozen for inference, and its process.
fn load(run: &std::path::Path) -> Result<(Model, Box<dyn Process>)> {
    let (net, ck) = train::load_net(&run.join(CHECKPOINT), true, &Device::Cpu)?;
    Ok((net, ck.model.process.build_in(ck.model.space)?))
}

/// Training steps of the network `config` on `source`, timed (FLOPs per step approximated as
/// 6 · batch · parameters, DSM's forward and backward of an MLP).
fn time_training(
    config: ModelConfig,
    source: &DataSource,
    batch: usize,
    objective: &str,
    steps: usize,
    repeats: usize,
) -> Result<Timing> {
    let objective = match objective {
        "dsm" => ObjectiveConfig::Dsm {
            weighting: Weighting::Sigma2,
        },
        "ism" => ObjectiveConfig::Ism { t: 0.1 },
        "ssm" => ObjectiveConfig::Ssm {
            t: 0.1,
            projection: Probe::Rademacher,
            projections: 1,
            variance_reduced: true,
        },
        other => bail!("unknown benchmark objective '{other}'; valid: dsm, ism, ssm"),
    };
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let net = Model::new(config, &mut rng, &dev)?;
    let ema = net
        .vars()
        .iter()
        .map(|(_, p)| Ok(p.as_tensor().copy()?))
        .collect::<Result<Vec<_>>>()?;
    let mut engine = Engine::new(&net, &objective, Adam::new(net.vars())?, ema)?;
    let name = engine.name();
    let t = TrainConfig {
        batch,
        ..TrainConfig::default()
    };
    let mut step = 0;
    let mut run = |k: usize| -> Result<()> {
        for _ in 0..k {
            let b = source.batch(batch, 1.0, &mut rng, &dev, None, None)?;
            engine.step(&net, &objective, &b, &mut rng, &t, step)?;
            step += 1;
        }
        Ok(())
    };
    // as `train::train` does on a CPU: the pool kept warm through the steps; the process's CPU
    // seconds of each call beside (the first call is `timed`'s warm-up)
    let mut cpu = Vec::new();
    let blocks = tweedie::pool::warm(|| {
        run(20)?;
        timed(repeats, || {
            let c0 = process_cpu_seconds();
            run(steps)?;
            cpu.push(
                process_cpu_seconds()
                    .zip(c0)
                    .map(|(c1, c0)| (c1 - c0) / steps as f64),
            );
            Ok(())
        })
    });
    let secs = blocks?.into_iter().map(|s| s / steps as f64).collect();
    let cpu = cpu.into_iter().skip(1).collect::<Option<Vec<f64>>>();
    let flops = 6.0 * batch as f64 * net.num_params() as f64;
    Ok(Timing {
        engine: name,
        seconds: secs,
        cpu_seconds: cpu,
        flops,
    })
}

/// What `time_training` measured.
struct Timing {
    engine: &'static str,
    /// Seconds per step of each timed block.
    seconds: Vec<f64>,
    /// The process's CPU seconds (all threads) per step of each block, where /proc tells them.
    cpu_seconds: Option<Vec<f64>>,
    /// Approximate FLOPs per step.
    flops: f64,
}

/// CPU seconds this process has used (user + system, all threads) from /proc/self/stat, in
/// clock ticks of 1/100 s (Linux's USER_HZ); None where there is no /proc.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // the fields after the command name in parentheses: utime and stime are the 12th and 13th
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}
