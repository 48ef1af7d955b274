//! `tweedie experiment`: comparisons on targets with exact answers, written as Markdown, JSON and PNG.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use tweedie::experiment::{
    energy, estimators, forces, mnist, objectives, quality, recipes, samplers, schedules,
};

#[derive(Parser)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

/// Options every experiment shares.
#[derive(clap::Args)]
struct Common {
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder for the .md, .json and .png files.
    #[arg(long, default_value = "docs/experiments")]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The training budget of experiments that train networks.
#[derive(clap::Args)]
struct Budget {
    /// Training steps per network.
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
}

/// The settings of `tweedie experiment mnist` (its --seed, --out and --quiet are `Common`'s).
#[derive(clap::Args)]
struct MnistArgs {
    /// Image sides of the cost table (each divides 28): 7, 14, 28 → d = 49, 196, 784.
    #[arg(long, value_delimiter = ',', default_value = "7,14,28")]
    sides: Vec<usize>,
    /// Seconds of training per objective at equal wall-clock (d = 784).
    #[arg(long, default_value_t = 90.0)]
    budget: f64,
    /// Seconds each objective is timed for in the cost table.
    #[arg(long, default_value_t = 2.0)]
    timing: f64,
    /// Optimiser steps per DSM run of the schedule / weighting comparison.
    #[arg(long, default_value_t = 10_000)]
    steps: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Hidden width of the 3-layer MLP.
    #[arg(long, default_value_t = 256)]
    width: usize,
    /// Learning rate (Adam, constant).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Samples per model (the Fréchet distance uses min(n, 500)).
    #[arg(long, default_value_t = 500)]
    n: usize,
    /// Euler–Maruyama steps per sample (DDIM: a tenth).
    #[arg(long, default_value_t = 500)]
    sampler_steps: usize,
    /// Independent trainings per setting (mean ± standard error).
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// A classifier run (`tweedie classifier`) to judge samples with; without it one is
    /// trained first (--classifier-steps).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Steps of the classifier trained when --classifier is not given.
    #[arg(long, default_value_t = 400)]
    classifier_steps: usize,
    /// Points per set in the manifold section (test digits, uniform noise, blobs).
    #[arg(long, default_value_t = 500)]
    points: usize,
}

#[derive(Subcommand)]
enum Which {
    /// Few-step samplers × time grids × NFE with exact scores, judged by the sample cross-entropy
    /// E_q[−log p] against the entropy and against the converged ODE from the same prior draws.
    Quality {
        /// Mixture targets (gmm40 in model space, x/50).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "anisotropic3,anisotropic10,gmm40"
        )]
        targets: Vec<String>,
        /// Samples per run.
        #[arg(long, default_value_t = 20_000)]
        n: usize,
        /// NFE budgets (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "10,20,40")]
        budgets: Vec<usize>,
        #[command(flatten)]
        common: Common,
    },
    /// Training recipes (ε, v, EDM) × samplers (EM-1000, UniPC-19, each + a Tweedie step) × distilled students
    /// (progressive 4 and 1 steps, consistency) on trained models, by sample cross-entropy.
    Recipes {
        /// Mixture targets (gmm40 trained on x/50).
        #[arg(long, value_delimiter = ',', default_value = "anisotropic10,gmm40")]
        targets: Vec<String>,
        /// Independent trainings per recipe.
        #[arg(long, default_value_t = 2)]
        seeds: usize,
        /// Optimiser steps per training.
        #[arg(long, default_value_t = 20_000)]
        steps: usize,
        /// Samples per evaluation.
        #[arg(long, default_value_t = 20_000)]
        n: usize,
        /// Optimiser steps per progressive-distillation round (consistency: 8×).
        #[arg(long, default_value_t = 1000)]
        iterations: usize,
        #[command(flatten)]
        common: Common,
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
        #[command(flatten)]
        common: Common,
    },
    /// Every score-matching objective with the same data and budget: Fisher divergence to the
    /// exact score, final loss, speed, and a figure of learned vs exact score fields.
    Objectives {
        /// Mixture target with exact scores: anisotropic3, ncsn2, gmm40, 8gaussians.
        #[arg(long, default_value = "anisotropic3")]
        target: String,
        /// Noise level t of the single-level objectives.
        #[arg(long, default_value_t = 0.05)]
        level: f64,
        #[command(flatten)]
        budget: Budget,
        #[command(flatten)]
        common: Common,
    },
    /// Note 000: force, noise and blended regression targets — their variances at each t, and the
    /// Fisher divergence per noise band after training with the same budget (mixtures with exact forces).
    Forces {
        /// Mixture targets with exact forces (gmm40 in model space, x/50).
        #[arg(long, value_delimiter = ',', default_value = "anisotropic3,gmm40")]
        targets: Vec<String>,
        /// Independent trainings per objective (mean ± standard error).
        #[arg(long, default_value_t = 3)]
        seeds: usize,
        #[command(flatten)]
        budget: Budget,
        #[command(flatten)]
        common: Common,
    },
    /// Energy-only training (iDEM) on 2-D targets known exactly: the loss weight, the
    /// estimator's read-out and the target clip against sample quality (anisotropic3's
    /// cross-entropy, the double well's mode share and spread), beside DSM on exact draws.
    Energy {
        /// Optimiser steps per run.
        #[arg(long, default_value_t = 3000)]
        steps: usize,
        /// Importance draws K of the estimator.
        #[arg(long, default_value_t = 200)]
        k: usize,
        /// Samples per run.
        #[arg(long, default_value_t = 4000)]
        n: usize,
        /// Independent trainings per cell (mean ± standard error).
        #[arg(long, default_value_t = 2)]
        seeds: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Note 000's score estimators against the exact score: the training-free posterior-expected
    /// force (force and kernel read-outs) versus K draws and time t, and the single-sample
    /// F(x̂0)/α_t at the exact denoiser (and a run's, with --run).
    Estimators {
        /// Mixture target (gmm40 in model space, x/50).
        #[arg(long, default_value = "gmm40")]
        target: String,
        /// Points per cell.
        #[arg(long, default_value_t = 200)]
        n: usize,
        /// A run trained on the target (`tweedie train --data gmm40 --data-scale 50`, default
        /// VP process): the single-sample estimator also at its Tweedie denoiser.
        #[arg(long)]
        run: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Note 004's open questions: noise schedule × weighting vs consistency and sample quality,
    /// and the learned score's error against the true log-density (low-density regions).
    Schedules {
        /// Samples per model for W2 and mode weights.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[command(flatten)]
        budget: Budget,
        #[command(flatten)]
        common: Common,
    },
    /// Note 004 at 784 dimensions on MNIST with an MLP: ISM (exact trace), SSM, FD-SSM and DSM —
    /// cost per step against dimension and sample quality (Fréchet distance in a classifier's
    /// features) at equal wall-clock; DSM's process, weighting and t_min at equal steps; the
    /// learned score on noised test digits as σ → 0 and off the data.
    Mnist {
        #[command(flatten)]
        args: MnistArgs,
        #[command(flatten)]
        common: Common,
    },
}

impl Budget {
    /// Refuses a budget no experiment can run, before any work.
    fn check(&self) -> Result<()> {
        anyhow::ensure!(
            self.steps > 0 && self.batch > 0 && self.width > 0,
            "--steps, --batch and --width must be at least 1"
        );
        anyhow::ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "--lr must be a positive number, got {}",
            self.lr
        );
        Ok(())
    }
}

impl Common {
    /// The output folder, created now, so that a bad one fails before the experiment runs.
    fn check(&self) -> Result<()> {
        tweedie::experiment::create_dir(&self.out)
    }
}

/// Prints the Markdown table an experiment wrote.
fn show(out: &Path, file: &str) -> Result<()> {
    print!("{}", std::fs::read_to_string(out.join(file))?);
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    match a.which {
        Which::Quality {
            targets,
            n,
            budgets,
            common: c,
        } => {
            quality::run(
                &quality::Settings {
                    targets,
                    n,
                    budgets,
                    seed: c.seed,
                    quiet: c.quiet,
                },
                &c.out,
            )?;
            show(&c.out, "quality.md")
        }
        Which::Recipes {
            targets,
            seeds,
            steps,
            n,
            iterations,
            common: c,
        } => {
            anyhow::ensure!(
                seeds >= 1 && steps >= 1 && n >= 2 && iterations >= 1,
                "--seeds, --steps and --iterations must be at least 1 and --n at least 2"
            );
            c.check()?;
            recipes::run(
                &recipes::Settings {
                    targets,
                    seeds,
                    steps,
                    n,
                    iterations,
                    quiet: c.quiet,
                },
                &c.out,
            )?;
            show(&c.out, "recipes.md")
        }
        Which::Samplers {
            n,
            budgets,
            repeats,
            common: c,
        } => {
            anyhow::ensure!(n >= 2, "--n must be at least 2");
            anyhow::ensure!(repeats >= 1, "--repeats must be at least 1");
            anyhow::ensure!(
                !budgets.is_empty() && budgets.iter().all(|&b| b >= 1),
                "--budgets must be NFE budgets of at least 1, got {budgets:?}"
            );
            c.check()?;
            samplers::run(
                &samplers::Settings {
                    n,
                    budgets,
                    seed: c.seed,
                    repeats,
                    quiet: c.quiet,
                },
                &c.out,
            )?;
            show(&c.out, "samplers.md")
        }
        Which::Objectives {
            target,
            level,
            budget: b,
            common: c,
        } => {
            b.check()?;
            anyhow::ensure!(
                level.is_finite() && level > 0.0 && level <= 1.0,
                "--level must lie in (0, 1], got {level}"
            );
            c.check()?;
            let s = objectives::Settings {
                target,
                steps: b.steps,
                batch: b.batch,
                width: b.width,
                lr: b.lr,
                level,
                seed: c.seed,
                quiet: c.quiet,
            };
            objectives::run(&s, &c.out)?;
            show(&c.out, "objectives.md")
        }
        Which::Energy {
            steps,
            k,
            n,
            seeds,
            common: c,
        } => {
            anyhow::ensure!(
                steps >= 1 && k >= 1 && n >= 3 && seeds >= 1,
                "--steps, --k and --seeds must be at least 1, --n at least 3"
            );
            c.check()?;
            energy::run(
                &energy::Settings {
                    steps,
                    k,
                    n,
                    seeds,
                    quiet: c.quiet,
                },
                &c.out,
            )?;
            show(&c.out, "energy.md")
        }
        Which::Estimators {
            target,
            n,
            run,
            common: c,
        } => {
            anyhow::ensure!(n >= 1, "--n must be at least 1");
            c.check()?;
            estimators::run(
                &estimators::Settings {
                    target,
                    n,
                    seed: c.seed,
                    run,
                },
                &c.out,
            )?;
            show(&c.out, "estimators.md")
        }
        Which::Forces {
            targets,
            seeds,
            budget: b,
            common: c,
        } => {
            b.check()?;
            c.check()?;
            let s = forces::Settings {
                targets,
                steps: b.steps,
                batch: b.batch,
                width: b.width,
                lr: b.lr,
                seeds,
                quiet: c.quiet,
            };
            forces::run(&s, &c.out)?;
            show(&c.out, "forces.md")
        }
        Which::Schedules {
            n,
            budget: b,
            common: c,
        } => {
            b.check()?;
            anyhow::ensure!(n >= 2, "--n must be at least 2");
            c.check()?;
            let s = schedules::Settings {
                steps: b.steps,
                batch: b.batch,
                width: b.width,
                lr: b.lr,
                n,
                seed: c.seed,
                quiet: c.quiet,
            };
            schedules::run(&s, &c.out)?;
            show(&c.out, "schedules.md")
        }
        Which::Mnist { args: m, common: c } => {
            anyhow::ensure!(
                m.budget.is_finite() && m.budget > 0.0 && m.timing.is_finite() && m.timing > 0.0,
                "--budget and --timing must be positive numbers of seconds"
            );
            c.check()?;
            let s = mnist::Settings {
                sides: m.sides,
                budget: m.budget,
                timing: m.timing,
                steps: m.steps,
                batch: m.batch,
                width: m.width,
                lr: m.lr,
                n: m.n,
                sampler_steps: m.sampler_steps,
                seeds: m.seeds,
                classifier: m.classifier,
                classifier_steps: m.classifier_steps,
                points: m.points,
                seed: c.seed,
                quiet: c.quiet,
            };
            mnist::run(&s, &c.out)?;
            show(&c.out, "mnist.md")
        }
    }
}
