//! Checkpoints: one safetensors file with weights, EMA weights and Adam moments, and the run's
//! metadata (format, configs, step, RNG state) as JSON strings in the safetensors header.
//!
//! Tensor names (load in Python with `safetensors.numpy.load_file`): the network's variables under
//! `params.` (the MLP's `params.layers.{i}.weight` [out, in] and `params.layers.{i}.bias` \[out\]),
//! the same under `ema.`, `adam_m.`, `adam_v.`, and the network's fixed buffers under their own
//! names (`embed.W`). Header keys: `format`, `model` (the model spec: ModelConfig JSON, from which
//! any network is rebuilt), `run` (RunConfig JSON), `step`, `rng` (ChaCha8 seed, stream and word
//! position). Version 1 files (the MLP before the network interface) load as they are.
//!
//! Test-only hooks (for the fault-injection tests; never set them otherwise):
//! `TWEEDIE_TEST_PAUSE_IN_CHECKPOINT=SECONDS` sleeps between writing the temporary file and the
//! rename (after saying so on stderr), so that a test can kill the process there;
//! `TWEEDIE_TEST_FAIL_CHECKPOINT_AT_STEP=STEP` makes the checkpoint of that step fail halfway
//! through its write, as a full disk would.

use crate::config::RunConfig;
use crate::nn::ModelConfig;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Value of the `format` header key; bumped on incompatible changes.
pub const FORMAT: &str = "tweedie.checkpoint.v2";
/// Earlier formats that still load: v1 holds the same tensors, for the MLP only.
const READS: [&str; 2] = [FORMAT, "tweedie.checkpoint.v1"];

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
    /// The network's fixed tensors (e.g. `embed.W`), by name.
    pub buffers: Vec<(String, Tensor)>,
}

impl Checkpoint {
    /// Writes the checkpoint atomically: a temporary file in the same folder, synced, then renamed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, &Tensor)> =
            self.buffers.iter().map(|(n, t)| (n.clone(), t)).collect();
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
        let tmp = crate::io::atomic_path(path);
        let written = safetensors::serialize_to_file(tensors, Some(meta), &tmp)
            .with_context(|| format!("{}: cannot write checkpoint", tmp.display()))
            .and_then(|()| test_hooks(&tmp, self.step));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        crate::io::commit(&tmp, path)
            .with_context(|| format!("{}: checkpoint not written", path.display()))
    }

    /// The model spec in a checkpoint's header, read without its tensors.
    pub fn spec(path: &Path) -> Result<ModelConfig> {
        let read = || -> Result<Vec<u8>> {
            let mut f = std::fs::File::open(path).context("cannot read file")?;
            let mut len = [0u8; 8];
            std::io::Read::read_exact(&mut f, &mut len).context("truncated file")?;
            let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let n = header_len(u64::from_le_bytes(len), file_len)?;
            let mut bytes = vec![0u8; 8 + n];
            bytes[..8].copy_from_slice(&len);
            std::io::Read::read_exact(&mut f, &mut bytes[8..]).context("truncated header")?;
            Ok(bytes)
        };
        read()
            .and_then(|b| Self::spec_from_bytes(&b))
            .with_context(|| format!("{}: not a usable tweedie checkpoint", path.display()))
    }

    /// The model spec in the header of a checkpoint's bytes (the whole file, or its first
    /// 8 + header-length bytes).
    pub fn spec_from_bytes(bytes: &[u8]) -> Result<ModelConfig> {
        let len = bytes.get(..8).ok_or_else(|| anyhow!("truncated file"))?;
        let len = u64::from_le_bytes(len.try_into().context("truncated file")?);
        let n = header_len(len, bytes.len() as u64)?;
        let header: serde_json::Value =
            serde_json::from_slice(&bytes[8..8 + n]).context("corrupt header")?;
        let model = header["__metadata__"]["model"]
            .as_str()
            .ok_or_else(|| anyhow!("no tweedie model spec in the header"))?;
        serde_json::from_str(model).context("bad 'model' header")
    }

    /// Reads and checks a checkpoint; every problem is an error that names the file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_inner(path)
            .with_context(|| format!("{}: not a usable tweedie checkpoint", path.display()))
    }

    fn load_inner(path: &Path) -> Result<Self> {
        let buf = std::fs::read(path).context("cannot read file")?;
        Self::from_bytes(&buf)
    }

    /// Reads and checks a checkpoint from the bytes of a file (what `load` does after reading it).
    pub fn from_bytes(buf: &[u8]) -> Result<Self> {
        let (_, header) = safetensors::SafeTensors::read_metadata(buf)
            .map_err(|e| anyhow!("corrupt or truncated safetensors file ({e})"))?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| anyhow!("no tweedie metadata in the header"))?;
        let get = |k: &str| meta.get(k).ok_or_else(|| anyhow!("header lacks key '{k}'"));
        let format = get("format")?;
        if !READS.contains(&format.as_str()) {
            bail!(
                "format '{format}' is not one this tweedie reads ({})",
                READS.join(", ")
            );
        }
        let model: ModelConfig =
            serde_json::from_str(get("model")?).context("bad 'model' header")?;
        let run: RunConfig = serde_json::from_str(get("run")?).context("bad 'run' header")?;
        let step: usize = get("step")?.parse().context("bad 'step' header")?;
        let rng: RngState = serde_json::from_str(get("rng")?).context("bad 'rng' header")?;
        rng.restore().context("bad 'rng' header")?;
        model.check().context("bad 'model' header")?;
        // four copies of the weights are in the file: a spec claiming more is refused before any
        // network is built from it
        match model.parameter_count() {
            Some(n) if n.checked_mul(4).is_some_and(|b| b <= buf.len()) => {}
            _ => bail!(
                "the 'model' header describes a network larger than the file's {} bytes",
                buf.len()
            ),
        }
        let mut all = candle_core::safetensors::load_buffer(buf, &Device::Cpu)
            .map_err(|e| anyhow!("corrupt tensor data ({e})"))?;
        let mut take = |name: &str| {
            all.remove(name)
                .ok_or_else(|| anyhow!("missing tensor '{name}'"))
        };
        // the names come from the network the spec describes
        let spec = crate::nn::Model::new(
            model.clone(),
            &mut <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0),
            &Device::Cpu,
        )
        .context("bad 'model' header")?;
        let names: Vec<String> = spec.vars().iter().map(|(n, _)| n.clone()).collect();
        let buffers = spec
            .buffers()
            .into_iter()
            .map(|(name, _)| Ok((name.clone(), take(&name)?)))
            .collect::<Result<Vec<_>>>()?;
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
            buffers,
        })
    }
}

/// A header length read from a file of `file_len` bytes, checked against it.
fn header_len(len: u64, file_len: u64) -> Result<usize> {
    if len > 100_000_000 || len > file_len.saturating_sub(8) {
        bail!("header of {len} bytes is implausible (the file holds {file_len})");
    }
    Ok(len as usize)
}

/// The test-only hooks of `save` (see the module's documentation), run on the written temporary
/// file before it is moved into place.
fn test_hooks(tmp: &Path, step: usize) -> Result<()> {
    if let Some(secs) = std::env::var("TWEEDIE_TEST_PAUSE_IN_CHECKPOINT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
    {
        eprintln!("test hook: paused in the checkpoint write of step {step}");
        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    }
    if std::env::var("TWEEDIE_TEST_FAIL_CHECKPOINT_AT_STEP")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(step)
    {
        // as a full disk: half the file written, then an error
        let len = std::fs::metadata(tmp).map(|m| m.len()).unwrap_or(0);
        std::fs::OpenOptions::new()
            .write(true)
            .open(tmp)
            .and_then(|f| f.set_len(len / 2))
            .ok();
        bail!(
            "{}: cannot write checkpoint: no space left on device (injected by \
             TWEEDIE_TEST_FAIL_CHECKPOINT_AT_STEP)",
            tmp.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Model, ModelConfig};
    use crate::process::ProcessConfig;
    use rand::SeedableRng;

    /// The spec's parameter count (the loader's bound before it builds a network) is exact.
    #[test]
    fn parameter_count_is_exact() -> Result<()> {
        for network in [crate::nn::NetworkKind::Mlp, crate::nn::NetworkKind::Resmlp] {
            for (depth, energy) in [(1, false), (3, false), (2, true)] {
                let mut cfg = ModelConfig::default_for(3, ProcessConfig::vp_default());
                cfg.arch.network = network;
                cfg.arch.depth = depth;
                cfg.arch.width = 16;
                if energy && network == crate::nn::NetworkKind::Mlp {
                    cfg.arch.parameterisation = crate::score::Parameterisation::Energy;
                }
                let net = Model::new(cfg.clone(), &mut ChaCha8Rng::seed_from_u64(1), &Device::Cpu)?;
                let n: usize = net.vars().iter().map(|(_, v)| v.elem_count()).sum();
                assert_eq!(cfg.parameter_count(), Some(n), "{network:?} depth {depth}");
            }
        }
        let mut huge = ModelConfig::default_for(2, ProcessConfig::vp_default());
        huge.arch.width = usize::MAX / 2;
        assert_eq!(huge.parameter_count(), None);
        Ok(())
    }

    /// An EGNN saved and loaded again (spec → `build_network`, then the weights) computes the
    /// same output, bit for bit.
    #[test]
    fn an_egnn_checkpoint_round_trips() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let space = crate::process::Space::ComFree {
            particles: 3,
            dim: 2,
        };
        let mut cfg = ModelConfig::default_for(6, ProcessConfig::vp_default());
        cfg.event = vec![3, 2];
        cfg.space = space;
        cfg.arch.network = crate::nn::NetworkKind::Egnn;
        cfg.arch.width = 16;
        cfg.arch.depth = 2;
        let net = Model::new(cfg.clone(), &mut ChaCha8Rng::seed_from_u64(5), &Device::Cpu)?;
        let params: Vec<Tensor> = net
            .vars()
            .iter()
            .map(|(_, v)| v.as_tensor().clone())
            .collect();
        let zeros = params
            .iter()
            .map(|p| p.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let path = dir.path().join("egnn.safetensors");
        Checkpoint {
            model: cfg.clone(),
            run: RunConfig::default(),
            step: 3,
            rng: RngState::of(&ChaCha8Rng::seed_from_u64(0)),
            names: net.vars().iter().map(|(n, _)| n.clone()).collect(),
            params: params.clone(),
            ema: params,
            adam_m: zeros.clone(),
            adam_v: zeros,
            buffers: net.buffers(),
        }
        .save(&path)?;
        let ck = Checkpoint::load(&path)?;
        assert_eq!(ck.model, cfg);
        let back = crate::train::net_from_checkpoint(&ck, true, &Device::Cpu)?;
        let x = space.project_tensor(
            &Tensor::arange(0f32, 24.0, &Device::Cpu)?
                .reshape((4, 6))?
                .sin()?,
        )?;
        let t = Tensor::new(&[0.1f32, 0.4, 0.7, 1.0], &Device::Cpu)?;
        let (a, b) = (net.forward(&x, &t)?, back.forward(&x, &t)?);
        assert!(a.abs()?.max_all()?.to_scalar::<f32>()? > 0.0);
        assert_eq!(
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    /// A version-1 file (the MLP before the network interface: no `network`, `event` or `space`
    /// in its model JSON) still loads, with the same tensors; an unknown format is refused.
    #[test]
    fn version_1_checkpoints_still_load() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let cfg = ModelConfig::default_for(2, ProcessConfig::vp_default());
        let net = Model::new(cfg.clone(), &mut ChaCha8Rng::seed_from_u64(1), &Device::Cpu)?;
        let mut model_json: serde_json::Value = serde_json::to_value(&cfg)?;
        model_json["arch"]
            .as_object_mut()
            .map(|a| a.remove("network"));
        let (w, buffers) = (net.vars(), net.buffers());
        let mut tensors: Vec<(String, &Tensor)> = vec![("embed.W".into(), &buffers[0].1)];
        for prefix in ["params", "ema", "adam_m", "adam_v"] {
            for (name, v) in w {
                tensors.push((format!("{prefix}.{name}"), v.as_tensor()));
            }
        }
        let write = |format: &str, path: &Path| -> Result<()> {
            let meta: HashMap<String, String> = [
                ("format".to_string(), format.to_string()),
                ("model".to_string(), model_json.to_string()),
                (
                    "run".to_string(),
                    serde_json::to_string(&RunConfig::default())?,
                ),
                ("step".to_string(), "7".to_string()),
                (
                    "rng".to_string(),
                    serde_json::to_string(&RngState::of(&ChaCha8Rng::seed_from_u64(0)))?,
                ),
            ]
            .into();
            Ok(safetensors::serialize_to_file(
                tensors.clone(),
                Some(meta),
                path,
            )?)
        };
        let v1 = dir.path().join("v1.safetensors");
        write("tweedie.checkpoint.v1", &v1)?;
        let ck = Checkpoint::load(&v1)?;
        assert_eq!((ck.step, ck.model.clone()), (7, cfg.clone()));
        assert_eq!(
            Checkpoint::spec(&v1)?,
            cfg,
            "the spec alone, from the header"
        );
        assert_eq!(ck.names.len(), w.len());
        let same = |a: &Tensor, b: &Tensor| -> Result<bool> {
            Ok(a.flatten_all()?.to_vec1::<f32>()? == b.flatten_all()?.to_vec1::<f32>()?)
        };
        assert!(same(&ck.params[0], w[0].1.as_tensor())?);
        assert!(same(&ck.buffers[0].1, &buffers[0].1)?);
        let v0 = dir.path().join("v0.safetensors");
        write("tweedie.checkpoint.v0", &v0)?;
        let err = format!("{:#}", Checkpoint::load(&v0).err().expect("refused"));
        assert!(err.contains("tweedie.checkpoint.v1"), "{err}");
        Ok(())
    }
}
