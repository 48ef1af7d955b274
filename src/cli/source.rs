//! The model a command reads: a trained run (`--run`) or an exact mixture score (`--target`).

use anyhow::Result;
use candle_core::Device;
use std::path::PathBuf;
use std::sync::Arc;
use tweedie::nn::{Model, NetworkKind};
use tweedie::process::{Process, ProcessConfig};
use tweedie::train::{self, checkpoint::Checkpoint, CHECKPOINT};

/// `--run DIR` or `--target NAME --process P`, shared by the commands that evaluate a score.
#[derive(clap::Args)]
pub struct ModelSource {
    /// Run folder of `tweedie train` (uses RUN/checkpoint.safetensors and its process).
    #[arg(long, conflicts_with = "target")]
    pub run: Option<PathBuf>,
    /// Use the exact score of a known mixture instead: ncsn2, anisotropic3, gmm40, 8gaussians.
    #[arg(long)]
    pub target: Option<String>,
    /// Process for --target: vp, subvp, cosine, ve (a run uses the process it was trained with).
    #[arg(long, default_value = "vp")]
    pub process: String,
    /// σ_max for --target with the VE process.
    #[arg(long, default_value_t = 100.0)]
    pub sigma_max: f64,
    /// Use a run's raw weights instead of its EMA weights.
    #[arg(long)]
    pub no_ema: bool,
}

impl ModelSource {
    /// The network of run folder `run` (EMA weights unless --no-ema) and its checkpoint.
    pub fn load_run(&self, run: &std::path::Path, device: &Device) -> Result<(Model, Checkpoint)> {
        let path = run.join(CHECKPOINT);
        // an EGNN splits its heavy work over the cores itself (read from the header alone, before
        // any candle op): candle's own pool would spin against it
        if Checkpoint::spec(&path).is_ok_and(|s| s.arch.network == NetworkKind::Egnn) {
            tweedie::pool::serial_candle_ops();
        }
        train::load_net(&path, !self.no_ema, device)
    }

    /// The process of --process and --sigma-max (for --target).
    pub fn target_process(&self) -> Result<Arc<dyn Process>> {
        Ok(Arc::from(
            ProcessConfig::from_name(&self.process, self.sigma_max)?.build()?,
        ))
    }

    /// The error when neither or both of --run and --target are given.
    pub fn neither() -> anyhow::Error {
        anyhow::anyhow!(
            "give either --run DIR (a trained model) or --target NAME (an exact mixture score)"
        )
    }
}
