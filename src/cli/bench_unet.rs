//! `tweedie bench unet-train` and `unet-sample`: the tiny U-Net of `configs/mnist-tiny.toml`
//! (class-conditional, MNIST's [1, 28, 28], ε-prediction, VP) on the shipped digits.
//! `bench/peers/unet_ref.py` is the PyTorch peer (diffusers' `UNet2DModel`, and the same network
//! built from diffusers' blocks).

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tweedie::config::RunConfig;
use tweedie::nn::{Model, ModelConfig};
use tweedie::train::adam::Adam;
use tweedie::train::engine::Engine;
use tweedie::train::{source::drop_labels, DataSource};

use super::bench::timed;

/// The run config the cases use: the repository's `configs/mnist-tiny.toml`, built in.
const CONFIG: &str = include_str!("../../configs/mnist-tiny.toml");

/// The config, the data (the shipped MNIST training split) and a fresh network of the config's
/// seed, as `tweedie train` makes them.
fn setup(dev: &Device) -> Result<(RunConfig, DataSource, Model)> {
    let cfg = RunConfig::from_toml_str(CONFIG)?;
    let source = DataSource::open(&cfg.data)?;
    let mut arch = cfg.model.clone();
    if arch.classes.is_none() {
        arch.classes = Some(source.classes().unwrap_or(0));
    }
    let config = ModelConfig {
        dim: source.dim(),
        event: source.event(),
        space: cfg.data.space,
        arch,
        process: cfg.process.clone(),
    };
    let net = Model::new(config, &mut ChaCha8Rng::seed_from_u64(cfg.train.seed), dev)?;
    Ok((cfg, source, net))
}

/// `steps` DSM training steps per block at `batch` (the config's Adam, warm-up, clipping, EMA
/// and label dropout: `tweedie train`'s loop without logging or checkpoints), `repeats` blocks
/// after one warm-up block.
pub fn train(batch: usize, steps: usize, repeats: usize, threads: usize) -> Result<Value> {
    if batch == 0 || steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    let dev = Device::Cpu;
    let (cfg, source, net) = setup(&dev)?;
    let ema = net
        .vars()
        .iter()
        .map(|(_, p)| Ok(p.as_tensor().copy()?))
        .collect::<Result<Vec<_>>>()?;
    let mut engine = Engine::new(&net, &cfg.objective, Adam::new(net.vars())?, ema)?;
    let t = cfg.train.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut step = 0;
    let mut run = |k: usize| -> Result<()> {
        for _ in 0..k {
            let mut b = source.batch(batch, cfg.data.scale, &mut rng, &dev, None, None)?;
            drop_labels(&mut b, net.null_class(), t.label_dropout, &mut rng)?;
            engine.step(&net, &cfg.objective, &b, &mut rng, &t, step)?;
            step += 1;
        }
        Ok(())
    };
    let blocks = tweedie::pool::warm(|| timed(repeats, || run(steps)))?;
    let secs: Vec<f64> = blocks.iter().map(|s| s / steps as f64).collect();
    Ok(json!({"case": "unet_train", "batch": batch, "steps": steps,
              "params": net.num_params(), "seconds_per_step": secs, "threads": threads}))
}

/// One network evaluation (a sampling NFE: one class-conditional forward pass of `batch` noisy
/// images at random times), `nfe` per block, `repeats` blocks after one warm-up block.
pub fn sample(batch: usize, nfe: usize, repeats: usize, threads: usize) -> Result<Value> {
    if batch == 0 || nfe == 0 {
        bail!("--batch and --nfe must be at least 1");
    }
    let dev = Device::Cpu;
    let (_, source, net) = setup(&dev)?;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let d = source.dim();
    let x = Tensor::randn(0f32, 1.0, (batch, d), &dev)?;
    let t: Vec<f32> = (0..batch).map(|_| rng.random_range(0.001..1.0)).collect();
    let t = Tensor::from_vec(t, batch, &dev)?;
    let labels: Vec<u32> = (0..batch).map(|i| (i % 10) as u32).collect();
    let labels = Tensor::from_vec(labels, batch, &dev)?;
    let blocks = tweedie::pool::warm(|| {
        timed(repeats, || {
            for _ in 0..nfe {
                let out = net.forward_cond(&x, &t, Some(&labels))?;
                if out.dtype() != DType::F32 {
                    bail!("the network's output is not f32");
                }
            }
            Ok(())
        })
    })?;
    let secs: Vec<f64> = blocks.iter().map(|s| s / nfe as f64).collect();
    Ok(json!({"case": "unet_sample", "batch": batch, "nfe": nfe,
              "params": net.num_params(), "seconds_per_step": secs, "threads": threads}))
}
