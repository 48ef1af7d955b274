//! `tweedie reweight`: probability-flow ODE samples of a model, each with its log-density, weighted
//! towards a potential's Boltzmann density exp(−βU): ESS, log Z and the reweighted mean energy
//! beside the model's own and a reference set's, as JSON.

use super::nll::OdeArgs;
use super::source::ModelSource;
use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use tweedie::data;
use tweedie::reweight::{flow_reweighting, reference_mean, unweighted_mean};

#[derive(Parser)]
pub struct Args {
    #[command(flatten)]
    model: ModelSource,
    /// The potential whose Boltzmann density p ∝ exp(−U/kT) the samples are weighted towards:
    /// double-well, muller-brown, gmm40, dw4, lj13 (its space must be the model's).
    #[arg(long)]
    potential: String,
    /// Temperature kT of --potential (default: its own).
    #[arg(long)]
    kt: Option<f64>,
    /// Number of samples.
    #[arg(long, short, default_value_t = 500)]
    n: usize,
    /// Seed of the prior draws (and of Hutchinson probes).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Reference configurations of the Boltzmann density (.npy or .csv, e.g. MCMC data): their
    /// mean energy beside the reweighted one.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// The solve that gives each sample with its log q. Keep the exact divergence: Hutchinson's
    /// noise in log q biases log Ẑ (E[exp(noise)] > 1).
    #[command(flatten)]
    ode: OdeArgs,
    /// Write the samples here ([n, d] f32 .npy, data coordinates).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Compute device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress spinner.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: Args) -> Result<()> {
    for p in a.out.iter().chain(&a.json) {
        tweedie::io::check_parent(p)?;
    }
    let potential = tweedie::target::potential::named(&a.potential, a.kt)?;
    let reference = a
        .reference
        .as_ref()
        .map(|path| -> Result<(String, Vec<f64>)> {
            let name = path.display().to_string();
            let r = data::read_points(path)?;
            r.check_finite(&name)?;
            if r.d != potential.dim() {
                bail!(
                    "{name}: configurations of {} values, the potential has {}",
                    r.d,
                    potential.dim()
                );
            }
            let energy = potential.energy(&r.data).with_context(|| name.clone())?;
            Ok((name, energy))
        })
        .transpose()?;
    let device = tweedie::device(&a.device)?;
    let loaded = a.model.load(&device)?;
    let opts = a.ode.options(a.seed);
    let started = Instant::now();
    let spinner = tweedie::progress::spinner(
        "solving the probability-flow ODE with the divergence for all samples",
        a.quiet,
    );
    let f = flow_reweighting(
        loaded.model.as_ref(),
        loaded.process.as_ref(),
        potential.as_ref(),
        loaded.scale,
        a.n,
        a.seed,
        &opts,
        &device,
    )
    .inspect_err(|_| spinner.abandon())?;
    spinner.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let r = &f.reweighting;
    let weighted = r.mean(&f.energy)?;
    let plain = unweighted_mean(&f.energy)?;
    let pm = |m: &tweedie::metrics::Metric| format!("{:.4} ± {:.4}", m.value, m.se.unwrap_or(0.0));
    eprintln!(
        "{} samples, NFE {}, {seconds:.1} s: ESS {:.1} ({:.2}% of n), log Z {}, <U> reweighted {}, unweighted {}",
        a.n,
        f.nfe,
        r.ess.value,
        100.0 * r.ess_fraction.value,
        pm(&r.log_z),
        pm(&weighted),
        pm(&plain),
    );
    let mut metrics = json!({
        "log_z": r.log_z, "ess": r.ess, "ess_fraction": r.ess_fraction,
        "max_weight": r.max_weight,
        "mean_energy_reweighted": weighted, "mean_energy_unweighted": plain,
    });
    if let Some((name, energy)) = &reference {
        let m = reference_mean(energy)?;
        eprintln!("<U> of the reference {name}: {}", pm(&m));
        metrics["mean_energy_reference"] = json!(m);
    }
    let space = loaded.process.space();
    let report = json!({
        "potential": a.potential, "kt": potential.kt(), "beta": potential.beta(),
        "n": a.n, "seed": a.seed, "nfe": f.nfe, "seconds": seconds,
        "dof": space.dof(potential.dim()),
        "space": format!("{space:?}"),
        "zero_weights": r.zero_weights,
        "reference": reference.as_ref().map(|(name, _)| name.clone()),
        "t_min": a.ode.t_min, "divergence": format!("{:?}", opts.divergence),
        "solver": format!("{:?}", opts.solver),
        "units": "log Z in nats, over the model's space (dof degrees of freedom) in data units; energies in the potential's units",
        "metrics": metrics,
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(p) = &a.out {
        data::write_npy(p, &f.samples, false)?;
        eprintln!("samples -> {}", p.display());
    }
    if let Some(p) = &a.json {
        tweedie::io::write_atomic_bytes(p, text.as_bytes())
            .with_context(|| format!("{}: cannot write", p.display()))?;
    }
    Ok(())
}
