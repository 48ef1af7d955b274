//! The training loop: any objective on batches, Adam/AdamW with warm-up and clipping, EMA, a step
//! callback, a JSONL metrics log, atomic checkpoints and exact resume.

pub mod adam;
pub mod augment;
pub mod checkpoint;
pub mod distill;
pub mod engine;
pub mod lock;
pub mod replay;
pub mod source;

use crate::config::RunConfig;
use crate::nn::{Model, ModelConfig};
use crate::objective::ObjectiveConfig;
use crate::process::Process;
use crate::score::ScoreModel;
use crate::target::ExactScore;
use adam::{collect_grads, ema_decay_at, ema_update, global_norm, Adam, AdamStep};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use checkpoint::{Checkpoint, RngState};
use engine::Engine;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
pub use source::DataSource;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// File names inside a run folder.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Metrics log, one JSON object per line.
pub const METRICS_LOG: &str = "metrics.jsonl";

/// Options of one call to `train` that are not part of the run's config.
#[derive(Default)]
pub struct TrainOptions {
    /// Continue from the run folder's checkpoint.
    pub resume: bool,
    /// Replace a run already in the folder (its checkpoint is removed once the new run has
    /// started). Without it (or `resume`), a folder holding a checkpoint is refused.
    pub overwrite: bool,
    /// Stop (as if killed) after this many steps of this call, without a final checkpoint.
    pub stop_after: Option<usize>,
    /// Called after every optimiser step (a progress bar, a report).
    pub callback: Option<crate::sample::Callback<TrainStep>>,
}

/// What the training callback sees after each optimiser step.
#[derive(Clone, Copy, Debug)]
pub struct TrainStep {
    /// Steps done, of `total`.
    pub step: usize,
    pub total: usize,
    /// The step this call started from (0, or a resumed checkpoint's).
    pub start: usize,
    /// This step's loss, and the mean over the logging window when this step wrote a log line.
    pub loss: f64,
    pub logged_loss: Option<f64>,
    pub lr: f64,
    pub grad_norm: f64,
}

/// What a finished run reports.
#[derive(Debug, Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    /// Mean loss over the last logging window.
    pub final_loss: f64,
    pub wall_seconds: f64,
    pub steps_per_second: f64,
    pub checkpoint: PathBuf,
}

#[derive(Serialize)]
struct LogLine {
    step: usize,
    loss: f64,
    lr: f64,
    grad_norm: f64,
    steps_per_sec: f64,
}

/// Rebuilds a network from a checkpoint's weights (EMA weights if `ema`).
pub fn net_from_checkpoint(ck: &Checkpoint, ema: bool, device: &Device) -> Result<Model> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut net = Model::new(ck.model.clone(), &mut rng, device)?;
    let src = if ema { &ck.ema } else { &ck.params };
    for ((name, var), t) in net.vars().iter().zip(src) {
        if var.dims() != t.dims() {
            bail!(
                "tensor {name} has shape {:?}, the model config implies {:?}",
                t.dims(),
                var.dims()
            );
        }
        var.set(&t.to_device(device)?)?;
    }
    for (name, t) in &ck.buffers {
        net.set_buffer(name, t.clone())?;
    }
    Ok(net)
}

/// Loads a checkpoint's network for sampling (EMA weights if `ema`), frozen for inference (on
/// the fused kernels on CPU; `TWEEDIE_ENGINE=candle` keeps candle ops).
pub fn load_net(path: &Path, ema: bool, device: &Device) -> Result<(Model, Checkpoint)> {
    let ck = Checkpoint::load(path)?;
    let net = net_from_checkpoint(&ck, ema, device)
        .with_context(|| format!("{}: weights do not match the model config", path.display()))?;
    Ok((inference(net)?, ck))
}

/// A copy of the model's current weights for inference (on the fused kernels where they apply):
/// a distillation teacher, θ⁻, or the sampler of energy-only training's buffer.
pub fn frozen(m: &Model) -> Result<Model> {
    inference(m.copy()?)
}

/// The model switched to the fused inference kernels where they are enabled.
pub fn inference(m: Model) -> Result<Model> {
    if crate::nn::fused::enabled() {
        return m.for_inference();
    }
    Ok(m)
}

/// Trains a score network with the configured objective and writes checkpoints into `run_dir`.
pub fn train(
    cfg: &RunConfig,
    run_dir: &Path,
    opts: &TrainOptions,
    device: &Device,
) -> Result<TrainSummary> {
    cfg.validate()?;
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("{}: cannot create run folder", run_dir.display()))?;
    // held until this function returns, on success or error
    let _lock = lock::RunLock::acquire(run_dir)?;
    let ck_path = run_dir.join(CHECKPOINT);
    if !opts.resume && !opts.overwrite && ck_path.exists() {
        bail!(
            "{}: the folder already holds a trained run ({CHECKPOINT}); continue it with --resume, \
             or replace it with --overwrite",
            run_dir.display()
        );
    }
    let idem = match &cfg.objective {
        ObjectiveConfig::Idem(i) => Some(i),
        _ => None,
    };
    let mut source = match idem {
        Some(i) => replay_source(cfg, i, run_dir, opts.resume)?,
        None => DataSource::open(&cfg.data)?,
    };
    // EDM's σ_d, unless given, is EDM's constant 0.5 (written to the run's config), not the
    // data's std: at or near it (2.03 on 8gaussians) training stalls where c_skip·x̃, the best
    // linear denoiser, does all the work (+7.8 nats; 0.5 gives +0.02, toys/recipes.md)
    let resolved;
    let edm = cfg.model.parameterisation == crate::score::Parameterisation::Edm
        || matches!(cfg.objective, ObjectiveConfig::Edm { .. });
    let cfg = match cfg.model.sigma_data {
        None if edm => {
            let mut c = cfg.clone();
            c.model.sigma_data = Some(crate::nn::config::DEFAULT_SIGMA_DATA);
            resolved = c;
            &resolved
        }
        _ => cfg,
    };
    let process: Arc<dyn Process> = Arc::from(cfg.process.build()?);
    if cfg.objective.needs_forces() && !source.has_forces() {
        bail!("objective '{}' needs per-sample forces: train on a mixture target ({}) or give data.forces", cfg.objective.name(), crate::target::TARGET_NAMES.join(", "));
    }
    if source.has_labels() && !cfg.model.network.conditional() {
        if cfg.data.labels.is_some() {
            bail!(
                "data.labels gives class labels, but the {:?} network takes no condition; drop the labels or choose a conditional network",
                cfg.model.network
            );
        }
        // labels that come with the data (mnist) are simply not used
        source = source.without_labels();
    }
    if let (Some(c), Some(k)) = (cfg.model.classes, source.classes()) {
        if k > c {
            bail!("the data have labels up to {}, but model.classes = {c}; raise it or drop it (it defaults to the data's)", k - 1);
        }
    }
    let log_path = run_dir.join(METRICS_LOG);
    let t = &cfg.train;

    let Start {
        net,
        adam,
        ema,
        mut rng,
        step: start,
    } = if opts.resume {
        let s = resumed(cfg, &source, run_dir, device)?;
        truncate_log(&log_path, s.step)?;
        s
    } else {
        let s = fresh(cfg, &source, device)?;
        // the replaced run's files go only once the new run has started
        if ck_path.exists() {
            std::fs::remove_file(&ck_path)
                .with_context(|| format!("{}: cannot remove", ck_path.display()))?;
        }
        let _ = std::fs::remove_file(&log_path);
        s
    };
    if idem.is_none() {
        if let Some(warning) = prior_warning(cfg, &source, &rng)? {
            eprintln!("warning: {warning}");
        }
    }
    crate::io::write_atomic_bytes(&run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())
        .with_context(|| format!("{}: cannot write config", run_dir.display()))?;
    if start >= t.steps {
        bail!(
            "{}: the checkpoint is already at step {start} of {}; raise train.steps to continue",
            ck_path.display(),
            t.steps
        );
    }

    let truth: Option<Box<dyn ScoreModel>> = match (idem, &cfg.data.potential) {
        // the estimator's draws continue where a resumed run's stopped: one call per step
        (Some(i), Some(name)) => Some(Box::new(
            replay::estimator(
                name,
                cfg.data.kt,
                cfg.data.scale,
                process.clone(),
                i,
                t.seed,
            )?
            .after_calls(start as u64),
        )),
        _ => source.mixture().map(|m| {
            Box::new(ExactScore {
                mixture: m.clone(),
                process: process.clone(),
            }) as Box<dyn ScoreModel>
        }),
    };
    let mut engine = Engine::new(&net, &cfg.objective, adam, ema)?;
    let blend = blend_for(&cfg.objective, &source, &net)?;
    let save = |step: usize, rng: &ChaCha8Rng, engine: &Engine, source: &DataSource| {
        let buffer = match (idem, source) {
            (Some(_), DataSource::Points { x, .. }) => Some(x),
            _ => None,
        };
        // the buffer first, the older one removed last: every checkpoint has its buffer
        if let Some(x) = buffer {
            replay::save(run_dir, step, x)?;
        }
        save_checkpoint(&net, cfg, engine, step, rng, &ck_path)?;
        if buffer.is_some() {
            replay::prune(run_dir, step)?;
        }
        Ok::<(), anyhow::Error>(())
    };

    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("{}: cannot open", log_path.display()))?;
    let began = Instant::now();
    // the pool kept warm through a CPU run's steps: a step's parallel regions start at once
    // instead of waiting for sleeping threads to wake (`pool::warm`)
    let (steps, last_loss) = crate::pool::warm_if(device.is_cpu(), || -> Result<(usize, f64)> {
        let (mut window_loss, mut window_n, mut window_start) = (0.0f64, 0usize, Instant::now());
        let mut last_loss = f64::NAN;
        let mut last_saved = start;
        for step in start..t.steps {
            if opts.stop_after.is_some_and(|k| step - start >= k) {
                return Ok((step, last_loss));
            }
            if let (Some(i), DataSource::Points { x, .. }) = (idem, &mut source) {
                if step > 0 && step % i.refresh_every == 0 {
                    engine.sync(&net)?;
                    let rows = replay::draw(&net, i, &mut rng).with_context(|| {
                        format!(
                            "at step {step}; the last good checkpoint is {} (step {last_saved})",
                            ck_path.display()
                        )
                    })?;
                    replay::push(x, &rows, i.buffer);
                }
            }
            let mut batch = source.batch(
                t.batch,
                cfg.data.scale,
                &mut rng,
                device,
                truth.as_deref(),
                blend.as_ref(),
            )?;
            augment::augment_batch(&mut batch, cfg.data.space, &t.augment, &mut rng)?;
            source::drop_labels(&mut batch, net.null_class(), t.label_dropout, &mut rng)?;
            let (loss_val, norm, lr) =
                match engine.step(&net, &cfg.objective, &batch, &mut rng, t, step) {
                    Ok(v) => v,
                    Err(e) => {
                        return Err(e.context(format!(
                            "the last good checkpoint is {} (step {last_saved})",
                            ck_path.display()
                        )));
                    }
                };

            window_loss += loss_val;
            window_n += 1;
            let done = step + 1;
            let mut logged_loss = None;
            if done % t.log_every == 0 || done == t.steps {
                let rate = window_n as f64 / window_start.elapsed().as_secs_f64();
                last_loss = window_loss / window_n as f64;
                let line = LogLine {
                    step: done,
                    loss: last_loss,
                    lr,
                    grad_norm: norm,
                    steps_per_sec: rate,
                };
                writeln!(log, "{}", serde_json::to_string(&line)?)?;
                logged_loss = Some(last_loss);
                (window_loss, window_n, window_start) = (0.0, 0, Instant::now());
            }
            if done % t.checkpoint_every == 0 || done == t.steps {
                save(done, &rng, &engine, &source)?;
                last_saved = done;
            }
            if let Some(c) = &opts.callback {
                c(&TrainStep {
                    step: done,
                    total: t.steps,
                    start,
                    loss: loss_val,
                    logged_loss,
                    lr,
                    grad_norm: norm,
                });
            }
        }
        Ok((t.steps, last_loss))
    })?;
    let wall = began.elapsed().as_secs_f64();
    Ok(TrainSummary {
        steps,
        final_loss: last_loss,
        wall_seconds: wall,
        // a run stopped early (`stop_after`) reports no rate
        steps_per_second: if steps < t.steps {
            f64::NAN
        } else {
            (t.steps - start) as f64 / wall
        },
        checkpoint: ck_path,
    })
}

/// Energy-only training's data: the replay buffer saved beside the checkpoint when resuming,
/// else `refresh` draws of the prior. Needs `data.source = "replay"` and `data.potential`.
fn replay_source(
    cfg: &RunConfig,
    i: &crate::objective::Idem,
    run_dir: &Path,
    resume: bool,
) -> Result<DataSource> {
    let Some(name) = &cfg.data.potential else {
        bail!(
            "objective idem trains from an energy alone: name it with data.potential ({})",
            crate::target::POTENTIAL_NAMES.join(", ")
        );
    };
    if cfg.data.source != replay::SOURCE {
        bail!("objective idem draws its data from its own samples: set data.source = \"{}\" (not \"{}\")", replay::SOURCE, cfg.data.source);
    }
    if cfg.data.forces.is_some() || cfg.data.labels.is_some() {
        bail!("objective idem uses no data files: drop data.forces and data.labels");
    }
    let potential = crate::target::potential::named(name, cfg.data.kt)?;
    if potential.space() != cfg.data.space {
        bail!("the potential {name} lives on {:?} but data.space is {:?}: set data.space to the potential's", potential.space(), cfg.data.space);
    }
    let d = potential.dim();
    let x = if resume {
        let step = Checkpoint::load(&run_dir.join(CHECKPOINT))?.step;
        replay::load(&replay::path(run_dir, step), d)?
    } else {
        let process = cfg.process.build()?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.train.seed ^ 0x5eed_b0ff);
        replay::initial(process.as_ref(), i.refresh, d, &mut rng)?
    };
    Ok(DataSource::Points {
        x,
        forces: None,
        labels: None,
    })
}

/// Writes the engine's state at `step` with the generator's state as the run's checkpoint.
fn save_checkpoint(
    net: &Model,
    cfg: &RunConfig,
    engine: &Engine,
    step: usize,
    rng: &ChaCha8Rng,
    path: &Path,
) -> Result<()> {
    let state = engine.state(net)?;
    Checkpoint {
        model: net.config.clone(),
        run: cfg.clone(),
        step,
        rng: RngState::of(rng),
        names: net.vars().iter().map(|(n, _)| n.clone()).collect(),
        params: state.params,
        ema: state.ema,
        adam_m: state.adam_m,
        adam_v: state.adam_v,
        buffers: net.buffers(),
    }
    .save(path)
}

/// Where a call to `train` starts: the network, the optimiser's state, the EMA, the generator and
/// the step.
struct Start {
    net: Model,
    adam: Adam,
    ema: Vec<Tensor>,
    rng: ChaCha8Rng,
    step: usize,
}

/// A new run: the configured model drawn from the run's seed, Adam at zero, the EMA at the weights.
fn fresh(cfg: &RunConfig, source: &DataSource, device: &Device) -> Result<Start> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.train.seed);
    let mut arch = cfg.model.clone();
    if arch.network.conditional() && arch.classes.is_none() {
        // the checkpoint records the classes the data have (0: unconditional, only ∅)
        arch.classes = Some(source.classes().unwrap_or(0));
    }
    let net = Model::new(
        ModelConfig {
            dim: source.dim(),
            event: source.event(),
            space: cfg.data.space,
            arch,
            process: cfg.process.clone(),
        },
        &mut rng,
        device,
    )?;
    let adam = Adam::new(net.vars())?;
    let ema = net
        .vars()
        .iter()
        .map(|(_, p)| Ok(p.as_tensor().copy()?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Start {
        net,
        adam,
        ema,
        rng,
        step: 0,
    })
}

/// A run continued exactly from its folder's checkpoint, which must match the config and data.
fn resumed(cfg: &RunConfig, source: &DataSource, run_dir: &Path, device: &Device) -> Result<Start> {
    let ck_path = run_dir.join(CHECKPOINT);
    let ck = Checkpoint::load(&ck_path)?;
    if ck.model.dim != source.dim() {
        bail!(
            "{}: checkpoint is for {}-D data but {} has dimension {}",
            ck_path.display(),
            ck.model.dim,
            cfg.data.source,
            source.dim()
        );
    }
    if ck.run.model != cfg.model
        || ck.run.process != cfg.process
        || ck.model.space != cfg.data.space
    {
        bail!("{}: the checkpoint's model, process or space differs from the config; resume with the config in {}", ck_path.display(), run_dir.join("config.toml").display());
    }
    let net = net_from_checkpoint(&ck, false, device)?;
    let to_dev = |v: &[Tensor]| {
        v.iter()
            .map(|x| Ok(x.to_device(device)?))
            .collect::<Result<Vec<_>>>()
    };
    let adam = Adam {
        m: to_dev(&ck.adam_m)?,
        v: to_dev(&ck.adam_v)?,
        step: ck.step,
    };
    Ok(Start {
        net,
        adam,
        ema: to_dev(&ck.ema)?,
        rng: ck.rng.restore()?,
        step: ck.step,
    })
}

/// For VE: warns when σ_max is small against the spread of 2000 data points (model space).
/// Draws from a copy of the generator so that the run's random stream is unchanged.
fn prior_warning(cfg: &RunConfig, source: &DataSource, rng: &ChaCha8Rng) -> Result<Option<String>> {
    let crate::process::ProcessConfig::Ve {
        sigma_min,
        sigma_max,
        t_min,
    } = cfg.process
    else {
        return Ok(None);
    };
    let mut pts = source.points(2000, cfg.data.scale, &mut rng.clone())?;
    // on a restricted space (particles) the process only ever sees the projected data
    cfg.data.space.project(&mut pts.data);
    let d = pts.d;
    let rows: Vec<&[f64]> = (0..pts.n.min(2000)).map(|i| pts.row(i)).collect();
    let dist = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(u, v)| (u - v).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let zero = vec![0.0f64; d];
    let max_norm = rows.iter().map(|r| dist(r, &zero)).fold(0.0, f64::max);
    let max_pair = rows
        .iter()
        .flat_map(|a| rows.iter().map(move |b| (a, b)))
        .map(|(a, b)| dist(a, b))
        .fold(0.0, f64::max);
    Ok(crate::process::Ve {
        sigma_min,
        sigma_max,
        t_min,
    }
    .prior_mismatch_warning(max_pair, max_norm))
}

/// One optimisation step on `loss`: backward, global-norm clipping, Adam(W) with linear warm-up,
/// EMA. Returns (loss, gradient norm, learning rate); a non-finite loss or gradient is an error
/// and leaves the weights untouched.
pub fn optimise(
    net: &Model,
    adam: &mut Adam,
    ema: &mut [Tensor],
    loss: &Tensor,
    t: &crate::config::TrainConfig,
    step: usize,
) -> Result<(f64, f64, f64)> {
    let loss_val = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    let grads = collect_grads(net.vars(), &loss.backward()?)?;
    let norm = global_norm(&grads)?;
    check_finite(loss_val, norm, step)?;
    let h = schedule(t, step, norm);
    adam.update(net.vars(), &grads, &h)?;
    ema_update(ema, net.vars(), ema_decay_at(t.ema_decay, step))?;
    Ok((loss_val, norm, h.lr))
}

/// A non-finite loss or gradient norm stops training with an error that says what to change.
fn check_finite(loss: f64, norm: f64, step: usize) -> Result<()> {
    if !loss.is_finite() || !norm.is_finite() {
        bail!("training diverged at step {step} (loss {loss}, gradient norm {norm}); lower train.lr or set train.grad_clip");
    }
    Ok(())
}

/// Adam's hyper-parameters at `step`: linear warm-up of the learning rate, then its decay;
/// global-norm clipping.
fn schedule(t: &crate::config::TrainConfig, step: usize, norm: f64) -> AdamStep {
    let warm = if t.warmup > 0 {
        ((step + 1) as f64 / t.warmup as f64).min(1.0)
    } else {
        1.0
    };
    let decay = match t.decay {
        crate::config::LrDecay::None => 1.0,
        crate::config::LrDecay::Cosine => {
            let span = t.steps.saturating_sub(t.warmup).max(1) as f64;
            let done = (step.saturating_sub(t.warmup) as f64 / span).min(1.0);
            0.5 * (1.0 + (std::f64::consts::PI * done).cos())
        }
    };
    let lr = t.lr * warm * decay;
    let grad_scale = if t.grad_clip > 0.0 && norm > t.grad_clip {
        t.grad_clip / norm
    } else {
        1.0
    };
    AdamStep {
        lr,
        beta1: t.beta1,
        beta2: t.beta2,
        eps: t.adam_eps,
        weight_decay: t.weight_decay,
        grad_scale,
    }
}

/// Trains `net` in memory (no files, no EMA kept): for tests and experiments. Returns the losses.
pub fn fit(
    net: &Model,
    objective: &ObjectiveConfig,
    source: &DataSource,
    truth: Option<&dyn ScoreModel>,
    t: &crate::config::TrainConfig,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f64>> {
    let mut engine = Engine::new(net, objective, Adam::new(net.vars())?, Vec::new())?;
    let no_ema = crate::config::TrainConfig {
        ema_decay: 0.0,
        ..t.clone()
    };
    let mut losses = Vec::with_capacity(t.steps);
    let blend = blend_for(objective, source, net)?;
    for step in 0..t.steps {
        let mut batch = source.batch(t.batch, 1.0, rng, net.device(), truth, blend.as_ref())?;
        augment::augment_batch(&mut batch, net.config.space, &t.augment, rng)?;
        source::drop_labels(&mut batch, net.null_class(), t.label_dropout, rng)?;
        losses.push(engine.step(net, objective, &batch, rng, &no_ema, step)?.0);
    }
    engine.sync(net)?;
    Ok(losses)
}

/// The blend of targets the `mixed` objective needs, measured once from the data; None for others.
fn blend_for(
    objective: &ObjectiveConfig,
    source: &DataSource,
    net: &Model,
) -> Result<Option<crate::objective::Blend>> {
    if !matches!(objective, ObjectiveConfig::Mixed { .. }) {
        return Ok(None);
    }
    source.blend(net.process())
}

/// Drops log lines past `step` so a resumed run's log has no duplicates.
fn truncate_log(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    crate::io::write_atomic_bytes(path, out.as_bytes())
        .with_context(|| format!("{}: cannot rewrite", path.display()))
}

#[cfg(test)]
mod tests {
    use super::schedule;
    use crate::config::{LrDecay, TrainConfig};

    #[test]
    fn learning_rate_warms_up_then_follows_a_half_cosine() {
        let t = TrainConfig {
            steps: 110,
            warmup: 10,
            lr: 2.0,
            decay: LrDecay::Cosine,
            ..Default::default()
        };
        let lr = |step| schedule(&t, step, 1.0).lr;
        assert!((lr(0) - 0.2).abs() < 1e-12);
        assert!((lr(9) - 2.0).abs() < 1e-12);
        // halfway through the decay: half the peak; the last step: 0
        assert!((lr(60) - 1.0).abs() < 1e-12);
        assert!(lr(110).abs() < 1e-12);
        let flat = TrainConfig {
            decay: LrDecay::None,
            ..t
        };
        assert_eq!(schedule(&flat, 100, 1.0).lr, 2.0);
    }
}
