//! `tweedie train`: flags and/or a TOML config → a run folder with checkpoint, log and config.

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use tweedie::config::RunConfig;
use tweedie::nn::{Activation, Arch, NetworkKind};
use tweedie::objective::{ObjectiveConfig, Weighting};
use tweedie::process::{ProcessConfig, Space};
use tweedie::score::Parameterisation;
use tweedie::train::{self, TrainOptions};

/// Flags override the config file; the resolved config is written to OUT/config.toml.
#[derive(Parser)]
pub struct Args {
    /// TOML run config ([data], [model], [process], [train]; see README). Unknown keys are errors.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data: a toy name (checkerboard, 8gaussians, swissroll, moons, circles, pinwheel, 2spirals,
    /// ncsn2, gmm40), mnist (the shipped digits with labels), a folder of PNGs, an IDX images file
    /// (.gz/.idx) or a .npy/.csv file of shape [n, d]. With --objective idem: none (the model's
    /// own samples, `replay`).
    #[arg(long)]
    data: Option<String>,
    /// Divide the data by this before training (samples are mapped back).
    #[arg(long)]
    data_scale: Option<f64>,
    /// Run folder (checkpoint.safetensors, metrics.jsonl, config.toml). Default: runs/<data>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Noising process: vp (β 0.1→20), subvp, cosine, ve.
    #[arg(long)]
    process: Option<String>,
    /// σ_max of the VE process (should exceed the data's largest pairwise distance).
    #[arg(long, default_value_t = 11.3)]
    sigma_max: f64,
    /// Optimiser steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Seed of the run.
    #[arg(long)]
    seed: Option<u64>,
    /// Network: mlp (fused CPU kernels), resmlp (pre-LayerNorm residual blocks), egnn (DEM's
    /// E(n)-equivariant graph network; needs --com-free) or unet (images; class-conditional).
    #[arg(long, value_enum)]
    network: Option<NetworkKind>,
    /// Hidden width of the network.
    #[arg(long)]
    width: Option<usize>,
    /// Hidden layers (mlp), residual blocks (resmlp) or E_GCL layers (egnn).
    #[arg(long)]
    depth: Option<usize>,
    /// Particles: each point of --data [n, N, k] is N particles in k dimensions, trained with
    /// noise and prior in the zero-centre-of-mass subspace (dimension N·k − k). For flat data
    /// [n, N·k] (e.g. `tweedie mcmc` output) give N: --com-free 4.
    #[arg(long, value_name = "N", num_args = 0..=1)]
    com_free: Option<Option<usize>>,
    /// A named potential (double-well, muller-brown, dw4, lj13, or a mixture target's −log p:
    /// gmm40, anisotropic3, …) whose forces βF = ∇log p0 are computed at every data point, for
    /// force-based objectives (mixed, force), or the energy alone trains from (idem); a particle
    /// potential also sets the zero-centre-of-mass space.
    #[arg(long)]
    potential: Option<String>,
    /// Temperature kT of --potential (default: the potential's own).
    #[arg(long)]
    kt: Option<f64>,
    /// Hidden nonlinearity.
    #[arg(long, value_enum)]
    activation: Option<Activation>,
    /// What the network outputs (converted to the score in one place); edm: Karras et al.'s
    /// preconditioned denoiser (c_skip, c_out, c_in, c_noise with --sigma-data).
    #[arg(long, value_enum)]
    parameterisation: Option<Parameterisation>,
    /// σ_d of the edm parameterisation, in the network's units [default: 0.5, EDM's value;
    /// the data's own std can stall training on symmetric data]
    #[arg(long)]
    sigma_data: Option<f64>,
    /// Objective, e.g. dsm, dsm_level, ncsn, esm, ism, ssm, ssm_vr, fd_ssm, force, mixed, edm, or
    /// idem (energy only: no data, needs --potential; its buffer and K in [objective])
    /// (continuous ones use --weighting; single-level ones --level-t; full control in [objective]).
    /// ism, ssm and ssm_vr need an MLP or ResMLP (the U-Net and EGNN: fd_ssm or dsm).
    #[arg(long)]
    objective: Option<String>,
    /// Weighting λ(t) of continuous objectives (dsm, force, mixed; default sigma2): sigma2 (ε-MSE),
    /// g2 (likelihood weighting), g2_is (likelihood weighting, t importance-sampled ∝ g²/σ²), one.
    #[arg(long, value_enum)]
    weighting: Option<Weighting>,
    /// Time (noise level) of single-level objectives.
    #[arg(long, default_value_t = 0.01)]
    level_t: f64,
    /// Integer class labels, one per point of --data (.npy), for a conditional network.
    #[arg(long)]
    labels: Option<String>,
    /// Per-sample forces F = ∇log p0 (.npy/.csv, same shape as --data) for force / mixed / esm.
    #[arg(long)]
    forces: Option<String>,
    /// Continue from OUT/checkpoint.safetensors exactly where it stopped (config from OUT/config.toml).
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Replace the run already in OUT (without it, a folder holding a checkpoint is refused).
    #[arg(long)]
    overwrite: bool,
    /// Compute device: cpu or cuda (needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: Args) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(a.data.as_deref().map(stem).unwrap_or("checkerboard".into()))
    });
    let mut cfg = match (&a.config, a.resume) {
        (Some(path), _) => RunConfig::from_toml_file(path)?,
        (None, true) => RunConfig::from_toml_file(&out.join("config.toml"))
            .context("--resume needs the run folder's config.toml")?,
        (None, false) => RunConfig::default(),
    };
    let data_given = a.data.is_some();
    if let Some(d) = a.data {
        cfg.data.source = d;
    }
    if let Some(f) = a.forces {
        cfg.data.forces = Some(f);
    }
    if let Some(l) = a.labels {
        cfg.data.labels = Some(l);
    }
    if let Some(o) = &a.objective {
        cfg.objective =
            ObjectiveConfig::from_name(o, a.weighting.unwrap_or(Weighting::Sigma2), a.level_t)?;
        if matches!(cfg.objective, ObjectiveConfig::Idem(_)) && !data_given {
            cfg.data.source = tweedie::train::replay::SOURCE.into();
        }
    } else if let Some(w) = a.weighting {
        // --weighting alone sets the weighting of the configured (continuous) objective
        match &mut cfg.objective {
            ObjectiveConfig::Dsm { weighting }
            | ObjectiveConfig::Force { weighting }
            | ObjectiveConfig::Mixed { weighting } => *weighting = w,
            ObjectiveConfig::Idem(i) => i.weighting = w,
            other => anyhow::bail!(
                "--weighting applies to continuous objectives (dsm, force, mixed, idem), not {}",
                other.name()
            ),
        }
    }
    if let Some(s) = a.data_scale {
        cfg.data.scale = s;
    }
    if let Some(p) = &a.process {
        cfg.process = ProcessConfig::from_name(p, a.sigma_max)?;
    }
    let t = &mut cfg.train;
    a.steps.inspect(|v| t.steps = *v);
    a.batch.inspect(|v| t.batch = *v);
    a.lr.inspect(|v| t.lr = *v);
    a.seed.inspect(|v| t.seed = *v);
    if let Some(particles) = a.com_free {
        cfg.data.space = com_free_space(&cfg.data.source, particles)?;
    }
    if let Some(name) = &a.potential {
        let p = tweedie::target::potential::named(name, a.kt)?;
        cfg.data.potential = Some(name.clone());
        cfg.data.kt = a.kt;
        if let Some((particles, dim)) = p.particles() {
            cfg.data.space = tweedie::process::Space::ComFree { particles, dim };
        }
    } else if a.kt.is_some() {
        anyhow::bail!("--kt sets the temperature of --potential; give the potential too");
    }
    let m = &mut cfg.model;
    a.network.inspect(|v| m.network = *v);
    a.width.inspect(|v| m.width = *v);
    a.depth.inspect(|v| m.depth = *v);
    a.activation.inspect(|v| m.activation = *v);
    a.parameterisation.inspect(|v| m.parameterisation = *v);
    a.sigma_data.inspect(|v| m.sigma_data = Some(*v));

    stein_needs_tangents(&cfg.objective, &cfg.model)?;
    super::prepare_for(cfg.model.network);
    let device = tweedie::device(&a.device)?;
    let bar = tweedie::progress::bar(cfg.train.steps, 0, a.quiet);
    let opts = TrainOptions {
        resume: a.resume,
        overwrite: a.overwrite,
        stop_after: None,
        callback: Some(tweedie::progress::train_callback(bar.clone())),
    };
    let summary = train::train(&cfg, &out, &opts, &device).inspect_err(|_| bar.abandon())?;
    bar.finish();
    eprintln!(
        "trained {} steps in {:.1} s ({:.0} steps/s); final loss {:.4}; checkpoint {}",
        summary.steps,
        summary.wall_seconds,
        summary.steps_per_second,
        summary.final_loss,
        summary.checkpoint.display()
    );
    Ok(())
}

/// ISM and SSM train through the score's input-Jacobian, which must reach θ as ordinary
/// differentiable ops: forward-mode tangents (MLP, ResMLP) or an energy's jets. The U-Net and
/// the EGNN have neither; their vᵀJv comes by reverse mode as a value without a graph, so such a
/// run would train nothing (gradient norm 0 at every step). Refused, with what to use instead.
fn stein_needs_tangents(objective: &ObjectiveConfig, model: &Arch) -> Result<()> {
    let name = match objective {
        ObjectiveConfig::Ism { .. } => "ism",
        ObjectiveConfig::Ssm { .. } => "ssm",
        _ => return Ok(()),
    };
    let reverse_only = matches!(model.network, NetworkKind::Unet | NetworkKind::Egnn);
    if reverse_only && model.parameterisation != Parameterisation::Energy {
        anyhow::bail!(
            "objective {name} needs the network's input-Jacobian as differentiable ops (forward-mode tangents), which the {} network does not have: its Jacobian comes by reverse mode and would carry no gradient to the weights, so training would change nothing; use fd_ssm (finite differences of forward passes) or dsm, or network = \"mlp\" / \"resmlp\"",
            format!("{:?}", model.network).to_lowercase()
        );
    }
    Ok(())
}

/// The zero-centre-of-mass space of a particle data file [n, N, k], or of flat data [n, N·k] with
/// N `particles`.
fn com_free_space(source: &str, particles: Option<usize>) -> Result<Space> {
    let x = tweedie::data::read_points(std::path::Path::new(source)).context(
        "--com-free needs a particle data file [n, N, k] (or [n, N·k] with --com-free N)",
    )?;
    match (particles, &x.event_shape()[..]) {
        (Some(n), &[d]) if n > 0 && d % n == 0 => Ok(Space::ComFree { particles: n, dim: d / n }),
        (Some(n), &[d]) => anyhow::bail!(
            "--com-free {n}: {source} holds points of {d} values, not {n} particles of equal dimension"
        ),
        (_, &[particles, dim]) => Ok(Space::ComFree { particles, dim }),
        (_, other) => anyhow::bail!(
            "--com-free needs particle data of shape [n, N, k]; {source} holds points of shape {other:?}"
        ),
    }
}

/// A folder name for a data source: the toy name or the file's stem.
fn stem(source: &str) -> String {
    PathBuf::from(source)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| source.to_string())
}
