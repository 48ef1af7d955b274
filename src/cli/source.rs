//! The model a command reads: a trained run (`--run`) or an exact mixture score (`--target`).

use anyhow::Result;
use candle_core::Device;
use std::path::PathBuf;
use std::sync::Arc;
use tweedie::nn::{Model, NetworkKind};
use tweedie::process::{Process, ProcessConfig};
use tweedie::score::DivergenceModel;
use tweedie::target::{ExactScore, GaussianMixture};
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

/// A model read from `--run` or `--target`, with what the figures and metrics need beside it.
pub struct Loaded {
    pub model: Box<dyn DivergenceModel + Sync>,
    pub process: Arc<dyn Process>,
    /// Data units per model unit (a run's data.scale; 1 for a target).
    pub scale: f64,
    /// The exact data density in data units, when the run's data or the target is a known mixture.
    pub exact: Option<GaussianMixture>,
    /// The run's data source (a toy name or a file) or the target's name.
    pub source: Option<String>,
}

impl ModelSource {
    /// The model of --run (EMA weights unless --no-ema) or --target, with its process and scale.
    pub fn load(&self, device: &Device) -> Result<Loaded> {
        match (&self.run, &self.target) {
            (Some(run), None) => {
                let (net, ck) = self.load_run_exact(run, device)?;
                let process: Arc<dyn Process> =
                    Arc::from(ck.model.process.build_in(ck.model.space)?);
                let source = ck.run.data.source.clone();
                Ok(Loaded {
                    model: Box::new(net),
                    process,
                    scale: ck.run.data.scale,
                    exact: GaussianMixture::named(&source).ok(),
                    source: Some(source),
                })
            }
            (None, Some(name)) => {
                let mixture = GaussianMixture::named(name)?;
                let process = self.target_process()?;
                Ok(Loaded {
                    model: Box::new(ExactScore {
                        mixture: mixture.clone(),
                        process: process.clone(),
                    }),
                    process,
                    scale: 1.0,
                    exact: Some(mixture),
                    source: Some(name.clone()),
                })
            }
            _ => Err(Self::neither()),
        }
    }

    /// The network of run folder `run` (EMA weights unless --no-ema) and its checkpoint.
    pub fn load_run(&self, run: &std::path::Path, device: &Device) -> Result<(Model, Checkpoint)> {
        let path = run.join(CHECKPOINT);
        // the network read from the header alone, before any candle op
        if let Ok(spec) = Checkpoint::spec(&path) {
            super::prepare_for(spec.arch.network);
        }
        train::load_net(&path, !self.no_ema, device)
    }

    /// `load_run` for the commands that take divergences: an EGNN in f64, on candle's ops, whose
    /// input gradients are exact (the fused f32 edge op's are not; `nn::reverse`).
    pub fn load_run_exact(
        &self,
        run: &std::path::Path,
        device: &Device,
    ) -> Result<(Model, Checkpoint)> {
        let (net, ck) = self.load_run(run, device)?;
        let net = if net.config.arch.network == NetworkKind::Egnn {
            net.to_dtype(candle_core::DType::F64)?
        } else {
            net
        };
        Ok((net, ck))
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
