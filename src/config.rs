//! Run configuration: the TOML file of `tweedie train --config`, every key documented, unknown keys
//! rejected by name. Command-line flags override it.

use crate::nn::Arch;
use crate::objective::ObjectiveConfig;
use crate::process::{ProcessConfig, Space};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where training data come from (the `[data]` table).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// A toy name (fresh draws every step: checkerboard, 8gaussians, …), `mnist` (the shipped
    /// digits' 9000 training images, with labels), a folder of PNGs, an IDX images file
    /// (`.gz`, `.idx`, `…-ubyte`) or a `.npy`/`.csv` file.
    pub source: String,
    /// The network sees x / scale (e.g. 50 for gmm40, as iDEM); samples are mapped back.
    pub scale: f64,
    /// Optional `.npy`/`.csv` of per-sample forces F = ∇log p0 = −∇E beside a data file (same shape).
    pub forces: Option<String>,
    /// Optional `.npy` or IDX file of integer class labels, one per point or image of a data file
    /// (for a conditional network).
    pub labels: Option<String>,
    /// Optional named potential (`target::POTENTIAL_NAMES`): the data's forces β F(x) = ∇log p0(x)
    /// computed from its energy U at each data point (instead of a forces file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub potential: Option<String>,
    /// Temperature kT of `potential` (default: the potential's own, 1 for the benchmarks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kt: Option<f64>,
    /// The subspace the data live in: `{ kind = "com_free", particles = N, dim = k }` for
    /// particles [n, N, k] with zero centre of mass (noise, prior and likelihood follow it).
    #[serde(skip_serializing_if = "Space::is_full")]
    pub space: Space,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: "checkerboard".into(),
            scale: 1.0,
            forces: None,
            labels: None,
            potential: None,
            kt: None,
            space: Space::Full,
        }
    }
}

/// The learning rate's shape after the warm-up.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LrDecay {
    /// Constant at the peak.
    #[default]
    None,
    /// Half a cosine from the peak down to 0 at the last step (Loshchilov & Hutter 2017).
    Cosine,
}

/// Optimisation settings (the `[train]` table). Keys a config leaves out come from
/// `TrainConfig::recipe`; `TrainConfig::default()` is the plain library setting.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default = "TrainConfig::recipe", deny_unknown_fields)]
pub struct TrainConfig {
    /// Total optimiser steps.
    pub steps: usize,
    /// Batch size.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps to the peak learning rate (0: none).
    pub warmup: usize,
    /// Learning-rate decay after the warm-up: "none" (constant) or "cosine" (to 0 at the last step).
    pub decay: LrDecay,
    /// Adam β1.
    pub beta1: f64,
    /// Adam β2.
    pub beta2: f64,
    /// Adam ε.
    pub adam_eps: f64,
    /// Decoupled weight decay (AdamW); 0 gives Adam.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (0: no clipping).
    pub grad_clip: f64,
    /// EMA decay of the weights; the effective decay is min(decay, (1+k)/(10+k)) at step k.
    pub ema_decay: f64,
    /// Seed of the run's random generator (initialisation, data, t and ε draws).
    pub seed: u64,
    /// Steps between lines of metrics.jsonl.
    pub log_every: usize,
    /// Steps between checkpoints (a final one is always written).
    pub checkpoint_every: usize,
    /// Symmetries each particle batch is augmented with: "rotate" (a random orthogonal matrix
    /// per sample) and "permute" (a random order of its particles); forces follow. Particle data
    /// only (`data.space` com_free), for potentials invariant to both.
    pub augment: Vec<crate::train::augment::Augment>,
    /// A conditional network's label dropout: the probability that a training row's class is
    /// replaced by the null class ∅, so that one network learns s(x | c) and s(x | ∅).
    pub label_dropout: f64,
}

impl TrainConfig {
    /// The best training recipe (docs/experiments/recipes.md): batch 2048, peak lr 2e-3 with a
    /// half-cosine decay, EMA 0.9999, 20,000 steps.
    pub fn recipe() -> Self {
        TrainConfig {
            steps: 20_000,
            batch: 2048,
            lr: 2e-3,
            decay: LrDecay::Cosine,
            ema_decay: 0.9999,
            log_every: 250,
            checkpoint_every: 5000,
            ..TrainConfig::default()
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 5000,
            batch: 512,
            lr: 1e-3,
            warmup: 0,
            decay: LrDecay::None,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            weight_decay: 0.0,
            grad_clip: 0.0,
            ema_decay: 0.999,
            seed: 0,
            log_every: 100,
            checkpoint_every: 1000,
            augment: Vec::new(),
            label_dropout: 0.1,
        }
    }
}

/// A whole run: data, network, process and optimisation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub data: DataConfig,
    pub model: Arch,
    pub process: ProcessConfig,
    pub objective: ObjectiveConfig,
    pub train: TrainConfig,
    /// The sampler the run is meant for (a distilled student's), used by `tweedie sample`
    /// when none is named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<SampleDefaults>,
}

/// A run's own sampler: name, steps and grid (`tweedie distill` writes it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SampleDefaults {
    pub sampler: String,
    pub steps: usize,
    pub grid: String,
}

impl Default for RunConfig {
    /// The best recipe (docs/experiments/recipes.md): EDM's preconditioning (`Arch::recipe`),
    /// DSM with the importance-sampled likelihood weighting (`ObjectiveConfig::recipe`) and
    /// `TrainConfig::recipe`, on VP.
    fn default() -> Self {
        RunConfig {
            data: DataConfig::default(),
            model: Arch::recipe(),
            process: ProcessConfig::vp_default(),
            objective: ObjectiveConfig::recipe(),
            train: TrainConfig::recipe(),
            sample: None,
        }
    }
}

impl RunConfig {
    /// Reads a TOML config; an unknown key is an error naming the key and the file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read config", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("{}: invalid config", path.display()))
    }

    /// Parses a TOML config from text.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        // toml's message can span lines: one line, as every error
        toml::from_str(text).map_err(|e| {
            let lines: Vec<&str> = e.message().lines().map(str::trim).collect();
            anyhow::anyhow!("{}", lines.join("; "))
        })
    }

    /// The config as TOML (written beside every run).
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// Checks values that the types cannot.
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        let checks = [
            (t.steps > 0, "train.steps must be positive"),
            (t.batch > 0, "train.batch must be positive"),
            (
                t.lr.is_finite() && t.lr > 0.0,
                "train.lr must be a positive number",
            ),
            (
                (0.0..1.0).contains(&t.beta1) && (0.0..1.0).contains(&t.beta2),
                "train.beta1 and train.beta2 must lie in [0, 1)",
            ),
            (t.adam_eps > 0.0, "train.adam_eps must be positive"),
            (
                t.weight_decay >= 0.0 && t.grad_clip >= 0.0,
                "train.weight_decay and train.grad_clip must be >= 0",
            ),
            (
                (0.0..1.0).contains(&t.ema_decay),
                "train.ema_decay must lie in [0, 1)",
            ),
            (
                t.log_every > 0 && t.checkpoint_every > 0,
                "train.log_every and train.checkpoint_every must be positive",
            ),
            (
                (0.0..=1.0).contains(&t.label_dropout),
                "train.label_dropout must lie in [0, 1]",
            ),
            (
                self.data.scale.is_finite() && self.data.scale > 0.0,
                "data.scale must be a positive number",
            ),
        ];
        for (ok, msg) in checks {
            anyhow::ensure!(ok, "{msg}");
        }
        anyhow::ensure!(
            t.augment.is_empty() || !self.data.space.is_full(),
            "train.augment rotates and permutes particles: it needs data.space with kind = \"com_free\""
        );
        self.objective.check(self.process.build()?.as_ref())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = RunConfig::from_toml_str("[train]\nstepz = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("stepz"), "{err}");
        let err = RunConfig::from_toml_str("[modle]\nwidth = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("modle"), "{err}");
        let err = RunConfig::from_toml_str(
            "[process]\nkind = \"vp\"\nbeta_min = 0.1\nbeta_max = 20.0\nt_min = 0.001\nbeta = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("beta"), "{err}");
    }

    #[test]
    fn round_trips_and_defaults() -> Result<()> {
        let c = RunConfig::from_toml_str("[train]\nsteps = 10\n[model]\nwidth = 64\n")?;
        assert_eq!(c.train.steps, 10);
        assert_eq!(c.model.width, 64);
        assert_eq!(c.model.depth, Arch::recipe().depth);
        let back = RunConfig::from_toml_str(&c.to_toml()?)?;
        assert_eq!(back, c);
        c.validate()?;
        Ok(())
    }

    /// `train.augment` reads as a list of symmetries, survives the round trip, names an unknown
    /// one, and is refused without particles.
    #[test]
    fn augment_options() -> Result<()> {
        use crate::train::augment::Augment;
        let toml = "[data.space]\nkind = \"com_free\"\nparticles = 4\ndim = 2\n[train]\naugment = [\"rotate\", \"permute\"]\n";
        let c = RunConfig::from_toml_str(toml)?;
        assert_eq!(c.train.augment, vec![Augment::Rotate, Augment::Permute]);
        assert_eq!(RunConfig::from_toml_str(&c.to_toml()?)?, c);
        let err = RunConfig::from_toml_str("[train]\naugment = [\"flip\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("flip"), "{err}");
        let full = RunConfig::from_toml_str("[train]\naugment = [\"rotate\"]\n")?;
        assert!(full
            .validate()
            .unwrap_err()
            .to_string()
            .contains("com_free"));
        Ok(())
    }
}
