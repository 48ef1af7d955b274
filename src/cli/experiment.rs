//! `tweedie experiment`: comparisons on targets with exact answers, written as Markdown, JSON and PNG.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tweedie::experiment;

#[derive(Parser)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// Note 004's open questions: noise schedule × weighting vs consistency and sample quality,
    /// and the learned score's error against the true log-density (low-density regions).
    Schedules {
        /// Training steps per cell.
        #[arg(long, default_value_t = 3000)]
        steps: usize,
        /// Batch size.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Hidden width (3 layers).
        #[arg(long, default_value_t = 64)]
        width: usize,
        /// Learning rate.
        #[arg(long, default_value_t = 2e-3)]
        lr: f64,
        /// Samples per model for W2 and mode weights.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output folder.
        #[arg(long, default_value = "docs/experiments")]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Every score-matching objective with the same data and budget: Fisher divergence to the
    /// exact score, final loss, speed, and a figure of learned vs exact score fields.
    Objectives {
        /// Mixture target with exact scores: anisotropic3, ncsn2, gmm40, 8gaussians.
        #[arg(long, default_value = "anisotropic3")]
        target: String,
        /// Training steps per objective.
        #[arg(long, default_value_t = 3000)]
        steps: usize,
        /// Batch size.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Hidden width (3 layers).
        #[arg(long, default_value_t = 64)]
        width: usize,
        /// Learning rate.
        #[arg(long, default_value_t = 2e-3)]
        lr: f64,
        /// Noise level t of the single-level objectives.
        #[arg(long, default_value_t = 0.05)]
        level: f64,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output folder.
        #[arg(long, default_value = "docs/experiments")]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Every sampler at several NFE budgets on the 40-mode mixture with exact scores: W2 vs NFE.
    Samplers {
        /// Samples per run (and size of the exact reference set).
        #[arg(long, default_value_t = 2000)]
        n: usize,
        /// NFE budgets (comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "10,20,50,100,200,500,1000"
        )]
        budgets: Vec<usize>,
        /// Independent repeats per cell (mean ± standard error).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output folder for samplers.md, samplers.json, samplers.png.
        #[arg(long, default_value = "docs/experiments")]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

pub fn run(a: Args) -> Result<()> {
    match a.which {
        Which::Schedules {
            steps,
            batch,
            width,
            lr,
            n,
            seed,
            out,
            quiet,
        } => {
            let s = experiment::schedules::Settings {
                steps,
                batch,
                width,
                lr,
                n,
                seed,
                quiet,
            };
            experiment::schedules::run(&s, &out)?;
            print!("{}", std::fs::read_to_string(out.join("schedules.md"))?);
            Ok(())
        }
        Which::Objectives {
            target,
            steps,
            batch,
            width,
            lr,
            level,
            seed,
            out,
            quiet,
        } => {
            let s = experiment::objectives::Settings {
                target,
                steps,
                batch,
                width,
                lr,
                level,
                seed,
                quiet,
            };
            experiment::objectives::run(&s, &out)?;
            print!("{}", std::fs::read_to_string(out.join("objectives.md"))?);
            Ok(())
        }
        Which::Samplers {
            n,
            budgets,
            repeats,
            seed,
            out,
            quiet,
        } => {
            let rows = experiment::samplers::run(
                &experiment::samplers::Settings {
                    n,
                    budgets,
                    seed,
                    repeats,
                    quiet,
                },
                &out,
            )?;
            println!(
                "{} runs; table -> {}",
                rows.len(),
                out.join("samplers.md").display()
            );
            print!("{}", std::fs::read_to_string(out.join("samplers.md"))?);
            Ok(())
        }
    }
}
