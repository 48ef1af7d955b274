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
        Which::Samplers {
            n,
            budgets,
            seed,
            out,
            quiet,
        } => {
            let rows = experiment::samplers::run(
                &experiment::samplers::Settings {
                    n,
                    budgets,
                    seed,
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
