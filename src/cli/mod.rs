//! Command definitions; each command lives in its own file.

mod bench;
mod bench_unet;
mod classifier;
mod demo;
mod distill;
mod eval;
mod experiment;
mod mcmc;
mod nll;
mod plot;
mod report;
mod reweight;
mod sample;
mod source;
mod train;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// tweedie: score-based generative modelling — train score models with denoising score matching,
/// sample them with reverse-SDE and probability-flow-ODE solvers, and measure the samples.
#[derive(Parser)]
#[command(name = "tweedie", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a score network (any objective; DSM by default) on a toy or a .npy/.csv data set; writes a run folder.
    Train(train::Args),
    /// Draw samples from a trained run or from an exact mixture score; writes .npy (and PNG).
    Sample(sample::Args),
    /// Distil a trained run into a 1–4 step sampler (progressive or consistency distillation); writes a run folder.
    Distill(distill::Args),
    /// Train a noise-conditional image classifier p(y | x_t, t) on the MNIST digits: it measures image samples (eval --classifier: class accuracy, Fréchet distance) and guides sampling (sample --classifier).
    Classifier(classifier::Args),
    /// Judge a sample set against a reference set (exact W2, sliced W2, MMD², with floors), a target (cross-entropy, KSD) or, for images, a classifier (class accuracy, Fréchet distance) as JSON.
    Eval(eval::Args),
    /// Per-point log-likelihoods (NLL ± s.e., bits/dim) through the probability-flow ODE.
    Nll(nll::Args),
    /// Weight probability-flow samples (each with its log-density) towards exp(−U/kT): ESS, log Z, reweighted mean energy (JSON).
    Reweight(reweight::Args),
    /// Sample p ∝ exp(−U/kT) (DW-4, LJ-13, 2-D surfaces) by MALA on many chains: draws, forces, energies, ESS, R-hat.
    Mcmc(mcmc::Args),
    /// Comparisons with exact answers (samplers: W2 vs NFE) as Markdown, JSON and PNG.
    Experiment(experiment::Args),
    /// Figures: samples over data, score fields, log-densities, training curves, histograms, image grids (PNG).
    Plot(plot::Args),
    /// Train on a 2-D toy for about a minute, sample, and write samples, figures and metrics.
    Demo(demo::Args),
    /// Write one self-contained HTML page of a run folder: config, training curve, figures, metrics.
    Report(report::Args),
    /// Time one benchmark case (JSON); bench/suite.py runs them beside PyTorch and JAX.
    Bench(bench::Args),
}

/// Parses the command line. Every option that takes a value reads a negative number as a value
/// (`--lr -1`), so that the setting's own check, not the parser, rejects it.
pub fn parse() -> Result<Cli, clap::Error> {
    fn numbers(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| {
            if a.get_action().takes_values() {
                a.allow_negative_numbers(true)
            } else {
                a
            }
        })
        .mut_subcommands(numbers)
    }
    let matches = numbers(Cli::command()).try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

/// Set-up for a network, before any thread or candle op. The EGNN's fused edges and the U-Net's
/// ops split the batch over the cores themselves, and candle's own element-wise pool would spin
/// against them (a tiny U-Net step on 2 busy cores: 6.5 s with it, 2.3 s without); a U-Net step
/// frees and reallocates megabytes every few milliseconds (`keep_freed_pages`).
pub fn prepare_for(network: tweedie::nn::NetworkKind) {
    use tweedie::nn::NetworkKind::{Egnn, Unet};
    if matches!(network, Egnn | Unet) {
        tweedie::pool::serial_candle_ops();
    }
    if network == Unet {
        crate::keep_freed_pages();
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Sample(a) => sample::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Classifier(a) => classifier::run(a),
        Command::Distill(a) => distill::run(a),
        Command::Plot(a) => plot::run(a),
        Command::Nll(a) => nll::run(a),
        Command::Mcmc(a) => mcmc::run(a),
        Command::Reweight(a) => reweight::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Experiment(a) => experiment::run(a),
        Command::Report(a) => report::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
