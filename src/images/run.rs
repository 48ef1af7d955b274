//! A classifier run: its settings (`config.toml`), its checkpoint (one safetensors file, written
//! atomically, with the settings and step in the header and the weights under `params.` beside
//! the time embedding's `embed.W`; during training also Adam's moments and the draw's position),
//! and the loaded classifier read under its noising process.

use crate::nn::layers::EMBED_W;
use crate::nn::unet::classifier::{check_times, Classifier, ClassifierSpec};
use crate::process::{Process, ProcessConfig};
use crate::train::adam::Adam;
use crate::train::CHECKPOINT;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// What training needs beyond the weights to go on exactly where it stopped.
pub struct TrainingState {
    pub adam: Adam,
    /// The position (in 32-bit words) of the training draw's ChaCha8 stream.
    pub draw_position: u128,
}

/// Value of the checkpoint's `format` header key.
pub const FORMAT: &str = "tweedie.classifier.v1";
/// The file of the per-noise-level test accuracies in a classifier run folder.
pub const ACCURACY: &str = "accuracy.json";

/// How the classifier is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierTraining {
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate of Adam (linear warm-up, then a half cosine to 0).
    pub lr: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Share of each batch at t = t_min (nearly clean images, the plain classifier); the rest
    /// at t ~ U(t_min, T) (the noisy images guidance reads).
    pub clean_fraction: f64,
    /// Global-norm gradient clipping (0: none).
    pub grad_clip: f64,
    /// Seed of the initialisation, batches, times and noise.
    pub seed: u64,
    /// Steps per line of metrics.jsonl.
    pub log_every: usize,
}

impl Default for ClassifierTraining {
    fn default() -> Self {
        ClassifierTraining {
            steps: 1500,
            batch: 64,
            lr: 3e-3,
            warmup: 20,
            clean_fraction: 0.5,
            grad_clip: 1.0,
            seed: 0,
            log_every: 25,
        }
    }
}

/// Everything that defines a classifier run (`config.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// The labelled images: `mnist` (the shipped digits' fixed 9000/1000 split).
    pub data: String,
    /// The noising process x_t = α_t x0 + σ_t ε the classifier reads (the score runs' process).
    pub process: ProcessConfig,
    pub spec: ClassifierSpec,
    pub train: ClassifierTraining,
}

impl ClassifierConfig {
    /// Checks the values the types cannot.
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        if t.steps == 0 || t.batch == 0 || t.log_every == 0 {
            bail!("the classifier's steps, batch and log interval must be positive");
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            bail!("the learning rate must be a positive number, got {}", t.lr);
        }
        if !(0.0..=1.0).contains(&t.clean_fraction) {
            bail!(
                "the clean fraction is a share of each batch, from 0 to 1, not {}",
                t.clean_fraction
            );
        }
        if !(t.grad_clip.is_finite() && t.grad_clip >= 0.0) {
            bail!(
                "gradient clipping must be 0 (off) or a positive number, not {}",
                t.grad_clip
            );
        }
        self.spec.check()?;
        self.process.build().map(|_| ())
    }

    /// The settings as TOML.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

/// A classifier read under its process: logits and features of noisy images x_t, with the input
/// scaled by c_in(t) = 1/√(α_t² + σ_t²) (1 for VP; unit variance under VE's large σ).
pub struct NoisyClassifier {
    pub net: Classifier,
    pub process: Box<dyn Process>,
    pub config: ClassifierConfig,
    /// The training step the weights are from.
    pub step: usize,
}

impl NoisyClassifier {
    /// A fresh classifier of `config`, drawn from its seed.
    pub fn new(config: ClassifierConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.train.seed);
        Ok(NoisyClassifier {
            net: Classifier::new(config.spec.clone(), &mut rng, device)?,
            process: config.process.build()?,
            config,
            step: 0,
        })
    }

    /// Features [n, F] and logits [n, classes] at x_t [n, d] (x's dtype) and times t \[n\].
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = check_times(x, t)?;
        let c_in: Vec<f64> = t
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
            .iter()
            .map(|&t| 1.0 / self.process.alpha(t).hypot(self.process.sigma(t)))
            .collect();
        let c_in = Tensor::from_vec(c_in, (n, 1), x.device())?.to_dtype(x.dtype())?;
        self.net.forward(&x.broadcast_mul(&c_in)?, t)
    }

    /// Checks that a score run's process (`run`) noises images as the classifier's does (t_min
    /// may differ): guidance reads both at the same x_t and t.
    pub fn check_process(&self, run: &ProcessConfig) -> Result<()> {
        if run.with_t_min(0.0) != self.config.process.with_t_min(0.0) {
            bail!(
                "the classifier was trained under the process {:?}, the run samples {run:?}; \
                 train the classifier with the run's process (--process)",
                self.config.process
            );
        }
        Ok(())
    }

    /// Writes the weights and settings to `path` atomically; with `state`, also what training
    /// needs to go on from here (Adam's moments under `adam.m.`/`adam.v.`, the draw's position).
    pub fn save(&self, path: &Path, state: Option<(&Adam, u128)>) -> Result<()> {
        let buffers = self.net.w.buffers();
        let mut tensors: Vec<(String, &Tensor)> =
            buffers.iter().map(|(n, t)| (n.clone(), t)).collect();
        for (name, v) in self.net.vars() {
            tensors.push((format!("params.{name}"), v.as_tensor()));
        }
        let mut meta: HashMap<String, String> = [
            ("format".to_string(), FORMAT.to_string()),
            ("config".to_string(), serde_json::to_string(&self.config)?),
            ("step".to_string(), self.step.to_string()),
        ]
        .into();
        if let Some((adam, position)) = state {
            for (((name, _), m), v) in self.net.vars().iter().zip(&adam.m).zip(&adam.v) {
                tensors.push((format!("adam.m.{name}"), m));
                tensors.push((format!("adam.v.{name}"), v));
            }
            meta.insert("adam_step".into(), adam.step.to_string());
            meta.insert("draw_position".into(), position.to_string());
        }
        let bytes = safetensors::serialize(tensors, Some(meta))
            .map_err(|e| anyhow!("{}: cannot encode the classifier ({e})", path.display()))?;
        crate::io::write_atomic_bytes(path, &bytes)
    }

    /// Reads a classifier checkpoint; every problem is one error naming the file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "{}: cannot read the classifier checkpoint; train one with `tweedie classifier \
                 --data mnist --out DIR`",
                path.display()
            )
        })?;
        Self::from_bytes(&bytes, device)
            .with_context(|| format!("{}: not a usable tweedie classifier", path.display()))
    }

    /// Reads a classifier from the bytes of its checkpoint.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self> {
        Ok(Self::with_state(bytes, device, false)?.0)
    }

    /// A classifier and, when `state` asks for it and the checkpoint has one, the training
    /// state saved with it.
    fn with_state(
        bytes: &[u8],
        device: &Device,
        state: bool,
    ) -> Result<(Self, Option<TrainingState>)> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| anyhow!("corrupt or truncated safetensors file ({e})"))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).ok_or_else(|| anyhow!("header lacks key '{k}'"));
        match meta.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            Some(f) if f.starts_with("tweedie.checkpoint") => bail!(
                "it holds a score model (tweedie train), not a classifier; train one with \
                 `tweedie classifier --data mnist --out DIR`"
            ),
            other => bail!("format {other:?} is not {FORMAT:?}"),
        }
        let config: ClassifierConfig =
            serde_json::from_str(get("config")?).context("bad 'config' header")?;
        let step: usize = get("step")?.parse().context("bad 'step' header")?;
        config.validate().context("bad 'config' header")?;
        match Classifier::parameter_count(&config.spec) {
            Some(n) if n.checked_mul(4).is_some_and(|b| b <= bytes.len()) => {}
            _ => bail!(
                "the 'config' header describes a network larger than the file's {} bytes",
                bytes.len()
            ),
        }
        let mut all = candle_core::safetensors::load_buffer(bytes, device)
            .map_err(|e| anyhow!("corrupt tensor data ({e})"))?;
        let mut model = NoisyClassifier::new(config, device)?;
        model.step = step;
        let mut take = |name: &str| {
            all.remove(name)
                .ok_or_else(|| anyhow!("missing tensor '{name}'"))
        };
        for (name, var) in model.net.vars() {
            let t = take(&format!("params.{name}"))?;
            if t.dims() != var.dims() {
                bail!(
                    "tensor {name} has shape {:?}, the config implies {:?}",
                    t.dims(),
                    var.dims()
                );
            }
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        let w = take(EMBED_W)?;
        model.net.w.set_buffer(EMBED_W, w, "classifier")?;
        let (true, Some(adam_step), Some(position)) =
            (state, meta.get("adam_step"), meta.get("draw_position"))
        else {
            return Ok((model, None));
        };
        let mut adam = Adam::new(model.net.vars())?;
        adam.step = adam_step.parse().context("bad 'adam_step' header")?;
        for (k, (name, var)) in model.net.vars().iter().enumerate() {
            for (moments, key) in [(&mut adam.m, "m"), (&mut adam.v, "v")] {
                let t = take(&format!("adam.{key}.{name}"))?;
                if t.dims() != var.dims() {
                    bail!(
                        "tensor adam.{key}.{name} has shape {:?}, not {:?}",
                        t.dims(),
                        var.dims()
                    );
                }
                moments[k] = t.to_dtype(var.dtype())?;
            }
        }
        let draw_position = position.parse().context("bad 'draw_position' header")?;
        Ok((
            model,
            Some(TrainingState {
                adam,
                draw_position,
            }),
        ))
    }

    /// The classifier of run folder `dir` (its `checkpoint.safetensors`).
    pub fn load_run(dir: &Path, device: &Device) -> Result<Self> {
        Self::load(&dir.join(CHECKPOINT), device)
    }

    /// The classifier of run folder `dir` with the training state to resume from; an error
    /// naming the file where it has none.
    pub fn load_for_resume(dir: &Path, device: &Device) -> Result<(Self, TrainingState)> {
        let path = dir.join(CHECKPOINT);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "{}: cannot read the checkpoint to resume from",
                path.display()
            )
        })?;
        let (model, state) = Self::with_state(&bytes, device, true)
            .with_context(|| format!("{}: not a usable tweedie classifier", path.display()))?;
        let Some(state) = state else {
            bail!(
                "{}: the checkpoint holds no training state (written before resumable runs); train \
                 afresh with --overwrite",
                path.display()
            );
        };
        Ok((model, state))
    }
}
