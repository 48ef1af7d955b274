//! Checkpoints: one safetensors file with weights, EMA weights and Adam moments, and the run's
//! metadata (format, configs, step, RNG state) as JSON strings in the safetensors header.
//!
//! Tensor names (load in Python with `safetensors.numpy.load_file`): `params.layers.{i}.weight`
//! [out, in] and `params.layers.{i}.bias` [out], the same under `ema.`, `adam_m.`, `adam_v.`, and the
//! fixed embedding frequencies `embed.W`. Header keys: `format`, `model` (ModelConfig JSON), `run`
//! (RunConfig JSON), `step`, `rng` (ChaCha8 seed, stream and word position).

use crate::config::RunConfig;
use crate::nn::ModelConfig;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Value of the `format` header key; bumped on incompatible changes.
pub const FORMAT: &str = "tweedie.checkpoint.v1";

/// Exact state of the ChaCha8 generator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RngState {
    pub seed: [u8; 32],
    pub stream: u64,
    /// Word position as a decimal string (u128 does not fit JSON numbers).
    pub word_pos: String,
}

impl RngState {
    /// Captures a generator's state.
    pub fn of(rng: &ChaCha8Rng) -> Self {
        RngState {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// Rebuilds the generator exactly.
    pub fn restore(&self) -> Result<ChaCha8Rng> {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(
            self.word_pos
                .parse()
                .map_err(|_| anyhow!("bad RNG word position '{}'", self.word_pos))?,
        );
        Ok(rng)
    }
}

/// Everything a run needs to continue exactly where it stopped.
pub struct Checkpoint {
    pub model: ModelConfig,
    pub run: RunConfig,
    pub step: usize,
    pub rng: RngState,
    /// Parameter names in the network's order.
    pub names: Vec<String>,
    pub params: Vec<Tensor>,
    pub ema: Vec<Tensor>,
    pub adam_m: Vec<Tensor>,
    pub adam_v: Vec<Tensor>,
    pub embed_w: Tensor,
}

impl Checkpoint {
    /// Writes the checkpoint atomically: a temporary file in the same folder, synced, then renamed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, &Tensor)> = vec![("embed.W".into(), &self.embed_w)];
        for (prefix, list) in [
            ("params", &self.params),
            ("ema", &self.ema),
            ("adam_m", &self.adam_m),
            ("adam_v", &self.adam_v),
        ] {
            for (name, t) in self.names.iter().zip(list.iter()) {
                tensors.push((format!("{prefix}.{name}"), t));
            }
        }
        let meta: HashMap<String, String> = [
            ("format".to_string(), FORMAT.to_string()),
            ("model".to_string(), serde_json::to_string(&self.model)?),
            ("run".to_string(), serde_json::to_string(&self.run)?),
            ("step".to_string(), self.step.to_string()),
            ("rng".to_string(), serde_json::to_string(&self.rng)?),
        ]
        .into();
        let tmp = tmp_path(path);
        safetensors::serialize_to_file(tensors, Some(meta), &tmp)
            .with_context(|| format!("{}: cannot write checkpoint", tmp.display()))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("{}: cannot sync", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("{}: cannot move checkpoint into place", path.display()))?;
        Ok(())
    }

    /// Reads and checks a checkpoint; every problem is an error that names the file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_inner(path)
            .with_context(|| format!("{}: not a usable tweedie checkpoint", path.display()))
    }

    fn load_inner(path: &Path) -> Result<Self> {
        let buf = std::fs::read(path).context("cannot read file")?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&buf)
            .map_err(|e| anyhow!("corrupt or truncated safetensors file ({e})"))?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| anyhow!("no tweedie metadata in the header"))?;
        let get = |k: &str| meta.get(k).ok_or_else(|| anyhow!("header lacks key '{k}'"));
        let format = get("format")?;
        if format != FORMAT {
            bail!("format '{format}' is not {FORMAT}");
        }
        let model: ModelConfig =
            serde_json::from_str(get("model")?).context("bad 'model' header")?;
        let run: RunConfig = serde_json::from_str(get("run")?).context("bad 'run' header")?;
        let step: usize = get("step")?.parse().context("bad 'step' header")?;
        let rng: RngState = serde_json::from_str(get("rng")?).context("bad 'rng' header")?;
        let mut all = candle_core::safetensors::load_buffer(&buf, &Device::Cpu)
            .map_err(|e| anyhow!("corrupt tensor data ({e})"))?;
        let mut take = |name: &str| {
            all.remove(name)
                .ok_or_else(|| anyhow!("missing tensor '{name}'"))
        };
        let embed_w = take("embed.W")?;
        let n_layers = model.arch.depth + 1;
        let names: Vec<String> = (0..n_layers)
            .flat_map(|i| [format!("layers.{i}.weight"), format!("layers.{i}.bias")])
            .collect();
        let mut lists: [Vec<Tensor>; 4] = Default::default();
        for (list, prefix) in lists.iter_mut().zip(["params", "ema", "adam_m", "adam_v"]) {
            for name in &names {
                list.push(take(&format!("{prefix}.{name}"))?);
            }
        }
        let [params, ema, adam_m, adam_v] = lists;
        Ok(Checkpoint {
            model,
            run,
            step,
            rng,
            names,
            params,
            ema,
            adam_m,
            adam_v,
            embed_w,
        })
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}
