//! `tweedie mcmc`: reference samples of a Boltzmann density p ∝ exp(−U/kT) by MALA over many
//! chains, with their forces, energies and convergence diagnostics.

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tweedie::data::{self, Points};
use tweedie::mcmc::{self, Draws, Options};
use tweedie::metrics::mean_and_sem;
use tweedie::target::{named_potential, Potential};

#[derive(Parser)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// The potential U: double-well, muller-brown, gmm40, dw4 or lj13 (see below).
    #[arg(long)]
    potential: String,
    /// Chains run side by side (in parallel).
    #[arg(long, default_value_t = 256)]
    chains: usize,
    /// Steps after burn-in; every chain keeps every --thin-th state, steps/thin draws.
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    /// Steps first, not kept, during which the step size adapts.
    #[arg(long, default_value_t = 1000)]
    burn_in: usize,
    /// Keep every K-th state after burn-in.
    #[arg(long, default_value_t = 10)]
    thin: usize,
    /// Temperature kT of p ∝ exp(−U/kT). Default: the potential's (1; muller-brown 20).
    #[arg(long)]
    kt: Option<f64>,
    /// Step size h of the Langevin proposal (the starting value when adapting).
    #[arg(long, default_value_t = 1e-2)]
    step_size: f64,
    /// Acceptance rate the step size adapts toward during burn-in (0.574: optimal for MALA in
    /// high dimension; take more, e.g. 0.8, for targets with steep walls).
    #[arg(long, default_value_t = 0.574)]
    target_accept: f64,
    /// Keep --step-size fixed (no adaptation during burn-in).
    #[arg(long)]
    no_adapt: bool,
    /// Seed of the chains' random streams and of the default starting states.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Starting states, .npy [m, d] or [m, N, k] (e.g. data/dw4/val_split_DW4.npy): chain c starts
    /// at row c mod m, moved to zero centre of mass for particles. Default: the potential's own (a
    /// jittered lattice for particles, the basins where U < 0 for muller-brown, the box of the
    /// means for gmm40, N(0, I) for double-well).
    #[arg(long)]
    init: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Output folder (created; files in it are replaced). Default: runs/mcmc-<potential>.
    #[arg(long)]
    out: Option<PathBuf>,
}

const AFTER_HELP: &str = "\
Potentials (U; kT = 1 unless said):
  double-well    2-D, U = 2(x² − 1)² + x/2 + y²/2: two wells of exact weights 0.70 / 0.30
  muller-brown   2-D Müller–Brown surface at kT = 20: three basins of about 83 / 11 / 6 %
  gmm40          2-D, U = −log p of the 40-mode Gaussian mixture (modes far apart: chains rarely cross)
  dw4            4 particles in 2-D, Σ_{i<j} 0.9(d − 4)⁴ − 4(d − 4)² (the DW-4 benchmark)
  lj13           13 particles in 3-D, Lennard-Jones over ordered pairs + ½Σ|x_i − x̄|² (LJ-13)

Writes to OUT: positions.npy [C·n, d] (f32, chain-major: chain c's n draws are rows c·n..(c+1)·n),
forces.npy [C·n, d] (F = −∇U, not divided by kT), energies.npy [C·n] and summary.json (acceptance,
step size, ESS and split R-hat, energy mean ± s.e., the settings; each field defined in it).

Example: tweedie mcmc --potential dw4 --chains 512 --steps 5000 --thin 10 --out runs/dw4";

/// What the summary's fields mean.
const DEFINITIONS: &[(&str, &str)] = &[
    ("acceptance", "share of MALA proposals accepted after burn-in, over all chains"),
    ("burn_in_acceptance", "the same during burn-in (null without burn-in)"),
    ("step_size", "the step size h of the kept phase: y = x + h F/kT + sqrt(2h) xi"),
    ("draws", "kept draws in all, chains x draws_per_chain (rows of positions.npy)"),
    ("ess_coordinates_min", "smallest effective sample size over the d coordinates (multi-chain, split chains, Geyer's initial monotone sequence)"),
    ("ess_coordinates_median", "median effective sample size over the d coordinates"),
    ("ess_energy", "effective sample size of the energy U"),
    ("rhat_max", "largest split R-hat over the coordinates and the energy (about 1 when the chains agree; > 1.01 warns; ESS and R-hat are null with fewer than 8 draws per chain)"),
    ("energy_mean", "mean of U over the kept draws"),
    ("energy_se", "its standard error, s.d./sqrt(ess_energy)"),
    ("seconds", "wall time of the sampling (burn-in included), without the diagnostics and the files"),
    ("chain_steps_per_second", "chains x (burn_in + steps) / seconds"),
];

pub fn run(a: Args) -> Result<()> {
    let p = named_potential(&a.potential, a.kt)?;
    let o = Options {
        chains: a.chains,
        steps: a.steps,
        burn_in: a.burn_in,
        thin: a.thin,
        step_size: a.step_size,
        target_accept: a.target_accept,
        adapt: !a.no_adapt,
        seed: a.seed,
    };
    o.check()?;
    let init = a
        .init
        .as_deref()
        .map(|path| starting_states(path, p.as_ref(), a.chains))
        .transpose()?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/mcmc-{}", a.potential)));
    tweedie::experiment::create_dir(&out)?;

    let total = o.burn_in + o.steps;
    let bar = tweedie::progress::bar(total, 0, a.quiet);
    let started = Instant::now();
    let run = mcmc::mala(
        p.as_ref(),
        init.as_deref(),
        &o,
        Some(&tweedie::progress::mcmc_callback(bar.clone())),
    )
    .inspect_err(|_| bar.abandon())?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();

    let summary = summarise(&a, p.as_ref(), &o, &run, seconds, &out);
    let n = run.chains * run.draws;
    let shaped = |v: Vec<f64>| Points::new(n, run.dim, v);
    data::write_npy(&out.join("positions.npy"), &shaped(run.positions)?, false)?;
    data::write_npy(&out.join("forces.npy"), &shaped(run.forces)?, false)?;
    data::write_npy_f32_1d(&out.join("energies.npy"), &run.energies)?;
    let text = serde_json::to_string_pretty(&summary)?;
    tweedie::io::write_atomic_bytes(&out.join("summary.json"), text.as_bytes())?;
    eprintln!(
        "{n} draws ({} chains × {}) of {} at kT {} in {seconds:.2} s: acceptance {:.3}, h {:.3e}, \
         ESS min {:.0} (energy {:.0}), R-hat max {:.3}, energy {:.4} ± {:.4} -> {}",
        run.chains,
        run.draws,
        a.potential,
        p.kt(),
        run.acceptance,
        run.step_size,
        summary["ess_coordinates_min"].as_f64().unwrap_or(f64::NAN),
        summary["ess_energy"].as_f64().unwrap_or(f64::NAN),
        summary["rhat_max"].as_f64().unwrap_or(f64::NAN),
        summary["energy_mean"].as_f64().unwrap_or(f64::NAN),
        summary["energy_se"].as_f64().unwrap_or(f64::NAN),
        out.display()
    );
    Ok(())
}

/// One starting state per chain from a .npy file: chain c at row c mod m, every used row checked
/// (width, finite values, finite energy) with the file and the row in the error.
fn starting_states(path: &Path, p: &dyn Potential, chains: usize) -> Result<Vec<f64>> {
    let name = path.display().to_string();
    let x = data::read_npy(path)?;
    let d = p.dim();
    if x.d != d {
        let needs = match p.particles() {
            Some((n, k)) => format!("{n} particles × {k} dimensions = {d} values"),
            None => format!("{d} values"),
        };
        bail!(
            "{name}: rows of {} values (shape {:?}), but the potential needs {needs} per row",
            x.d,
            x.event_shape()
        );
    }
    ensure!(x.n > 0, "{name}: no rows");
    let used = Points::new(x.n.min(chains), d, x.data[..x.n.min(chains) * d].to_vec())?;
    used.check_finite(&name)?;
    let mut centred = used.data.clone();
    p.space().project(&mut centred);
    let energies = p.energy(&centred).with_context(|| name.clone())?;
    if let Some(r) = energies.iter().position(|e| !e.is_finite()) {
        bail!(
            "{name}: row {r} has energy {} under this potential; start elsewhere",
            energies[r]
        );
    }
    Ok((0..chains)
        .flat_map(|c| centred[(c % used.n) * d..][..d].iter().copied())
        .collect())
}

/// The summary: diagnostics, energy estimate, settings and definitions.
fn summarise(
    a: &Args,
    p: &dyn Potential,
    o: &Options,
    run: &Draws,
    seconds: f64,
    out: &Path,
) -> serde_json::Value {
    let (ess, rhat) = mcmc::per_coordinate(&run.positions, run.chains, run.dim);
    let mut sorted: Vec<f64> = ess.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    let (ess_min, ess_median) = match sorted.len() {
        0 => (f64::NAN, f64::NAN),
        k => (sorted[0], sorted[k / 2]),
    };
    let ess_energy = mcmc::ess(&run.energies, run.chains);
    let rhat_max = rhat
        .iter()
        .chain([&mcmc::split_rhat(&run.energies, run.chains)])
        .copied()
        .fold(f64::NAN, f64::max);
    let (energy_mean, sem) = mean_and_sem(&run.energies);
    // the iid s.e. rescaled to the energy's ESS
    let energy_se = sem * (run.energies.len() as f64 / ess_energy).sqrt();
    let definitions: serde_json::Map<String, serde_json::Value> = DEFINITIONS
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "potential": a.potential,
        "kt": p.kt(),
        "dim": run.dim,
        "particles": p.particles(),
        "chains": run.chains,
        "draws_per_chain": run.draws,
        "draws": run.chains * run.draws,
        "acceptance": run.acceptance,
        "burn_in_acceptance": run.burn_in_acceptance,
        "step_size": run.step_size,
        "ess_coordinates_min": ess_min,
        "ess_coordinates_median": ess_median,
        "ess_energy": ess_energy,
        "rhat_max": rhat_max,
        "energy_mean": energy_mean,
        "energy_se": energy_se,
        "seconds": seconds,
        "chain_steps_per_second": (o.chains * (o.burn_in + o.steps)) as f64 / seconds,
        "settings": {
            "chains": o.chains, "steps": o.steps, "burn_in": o.burn_in, "thin": o.thin,
            "step_size": o.step_size, "target_accept": o.target_accept, "adapt": o.adapt,
            "seed": o.seed, "init": a.init.as_ref().map(|p| p.display().to_string()),
            "out": out.display().to_string(),
            "adaptation": "one step size for all chains, Robbins-Monro on log h toward target_accept during burn-in, averaged over its second half, then fixed",
        },
        "definitions": definitions,
    })
}
