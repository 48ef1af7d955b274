//! Training the noise-conditional classifier: each step draws labelled images (dequantised
//! afresh), times (a share at t_min, the rest uniform on [t_min, T]) and noise, forms
//! x_t = α_t x0 + σ_t ε and takes one Adam step on the cross-entropy of the labels, with linear
//! warm-up, a half-cosine decay and global-norm clipping. Accuracy on test images at fixed
//! noise levels; the run folder's checkpoint, log and settings.

use super::run::{ClassifierConfig, NoisyClassifier, TrainingState, ACCURACY};
use crate::data::images::Images;
use crate::train::adam::{collect_grads, global_norm, Adam, AdamStep};
use crate::train::{TrainStep, CHECKPOINT, METRICS_LOG};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Noisy images x_t [n, d], their times t \[n\] and labels \[n\].
pub struct NoisyBatch {
    pub x: Tensor,
    pub t: Tensor,
    pub labels: Tensor,
}

/// The images at `rows` noised to the times `times`: x0 dequantised by `rng` (u = ½ without one:
/// evaluation), ε ~ N(0, I) from `noise`.
pub fn noisy_batch(
    model: &NoisyClassifier,
    images: &Images,
    rows: &[usize],
    times: &[f64],
    dequantise: Option<&mut ChaCha8Rng>,
    noise: &mut ChaCha8Rng,
    device: &Device,
) -> Result<NoisyBatch> {
    let Some(labels) = &images.labels else {
        bail!("the classifier needs labelled images");
    };
    let d = images.dim();
    let mut x = images.values(rows, dequantise);
    for (row, &t) in x.chunks_exact_mut(d).zip(times) {
        let (a, s) = (model.process.alpha(t), model.process.sigma(t));
        for v in row {
            let e: f64 = StandardNormal.sample(noise);
            *v = (a * *v as f64 + s * e) as f32;
        }
    }
    let y: Vec<u32> = rows.iter().map(|&i| labels[i]).collect();
    let n = rows.len();
    Ok(NoisyBatch {
        x: Tensor::from_vec(x, (n, d), device)?,
        t: Tensor::from_vec(times.iter().map(|&t| t as f32).collect(), n, device)?,
        labels: Tensor::from_vec(y, n, device)?,
    })
}

/// Mean cross-entropy of the labels and the share classified right, from logits.
pub fn loss_and_accuracy(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, f64)> {
    let loss = candle_nn::loss::cross_entropy(logits, labels)?;
    let right = logits
        .argmax(1)?
        .eq(labels)?
        .to_dtype(DType::F64)?
        .mean_all()?
        .to_scalar::<f64>()?;
    Ok((loss, right))
}

/// The learning rate at `step`: linear warm-up to the peak, then a half cosine to 0.
fn learning_rate(c: &ClassifierConfig, step: usize) -> f64 {
    let t = &c.train;
    if step < t.warmup {
        return t.lr * (step + 1) as f64 / t.warmup as f64;
    }
    let done = (step - t.warmup) as f64 / t.steps.saturating_sub(t.warmup).max(1) as f64;
    t.lr * 0.5 * (1.0 + (std::f64::consts::PI * done.min(1.0)).cos())
}

/// One Adam step on a batch: (loss, batch accuracy, gradient norm).
pub fn step(
    model: &NoisyClassifier,
    adam: &mut Adam,
    batch: &NoisyBatch,
    lr: f64,
) -> Result<(f64, f64, f64)> {
    let (_, logits) = model.forward(&batch.x, &batch.t)?;
    let (loss, right) = loss_and_accuracy(&logits, &batch.labels)?;
    let loss_val = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let vars = model.net.vars();
    let grads = collect_grads(vars, &loss.backward()?)?;
    let norm = global_norm(&grads)?;
    if !loss_val.is_finite() || !norm.is_finite() {
        bail!("classifier training diverged (loss {loss_val}, gradient norm {norm}); lower --lr");
    }
    let clip = model.config.train.grad_clip;
    let h = AdamStep {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        grad_scale: if clip > 0.0 && norm > clip {
            clip / norm
        } else {
            1.0
        },
    };
    adam.update(vars, &grads, &h)?;
    Ok((loss_val, right, norm))
}

/// The training draw of one batch: rows with replacement, times with the clean share at t_min.
fn draw(model: &NoisyClassifier, n_images: usize, rng: &mut ChaCha8Rng) -> (Vec<usize>, Vec<f64>) {
    let t = &model.config.train;
    let (lo, hi) = (model.process.t_min(), model.process.t_max());
    let rows = (0..t.batch)
        .map(|_| rng.random_range(0..n_images))
        .collect();
    let times = (0..t.batch)
        .map(|_| {
            if rng.random::<f64>() < t.clean_fraction {
                lo
            } else {
                rng.random_range(lo..hi)
            }
        })
        .collect();
    (rows, times)
}

/// Steps between the checkpoints a run folder's training writes (and at its last step).
pub const CHECKPOINT_EVERY: usize = 100;

/// Trains `model` on the labelled `images` up to its configured steps, from step 0 or, with
/// `resume`, from the model's step with the saved Adam state and draw position (the same steps
/// as an uninterrupted run); calls `callback` after each step, writes a line to `log` every
/// `log_every` steps and, with `checkpoint`, the weights and training state there every
/// `CHECKPOINT_EVERY` steps.
pub fn fit(
    model: &mut NoisyClassifier,
    images: &Images,
    mut log: Option<&mut dyn Write>,
    callback: Option<&crate::sample::Callback<TrainStep>>,
    resume: Option<TrainingState>,
    checkpoint: Option<&Path>,
) -> Result<Vec<f64>> {
    if images.shape.as_slice() != model.config.spec.event.as_slice() {
        bail!(
            "the images have shape {:?}, the classifier takes {:?}",
            images.shape,
            model.config.spec.event
        );
    }
    if images.n == 0 {
        bail!("no images to train the classifier on");
    }
    let device = model.net.w.embed.w.device().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(model.config.train.seed.wrapping_add(1));
    let (total, every) = (model.config.train.steps, model.config.train.log_every);
    let (mut adam, start) = match resume {
        Some(state) => {
            rng.set_word_pos(state.draw_position);
            (state.adam, model.step)
        }
        None => (Adam::new(model.net.vars())?, 0),
    };
    if start >= total {
        bail!("the run has {start} steps already; ask for more (--steps) to go on");
    }
    let mut losses = Vec::with_capacity(total - start);
    let (mut window, mut right, mut seen, mut began) = (0.0, 0.0, 0usize, Instant::now());
    for s in start..total {
        let (rows, times) = draw(model, images.n, &mut rng);
        let mut dq = ChaCha8Rng::seed_from_u64(rng.random());
        let batch = noisy_batch(
            model,
            images,
            &rows,
            &times,
            Some(&mut dq),
            &mut rng,
            &device,
        )?;
        let lr = learning_rate(&model.config, s);
        let (loss, acc, norm) = step(model, &mut adam, &batch, lr)?;
        losses.push(loss);
        (window, right, seen) = (window + loss, right + acc, seen + 1);
        model.step = s + 1;
        let logged = (model.step.is_multiple_of(every) || model.step == total).then(|| {
            let k = seen as f64;
            (window / k, right / k, k / began.elapsed().as_secs_f64())
        });
        if let (Some((loss, acc, rate)), Some(w)) = (logged, log.as_deref_mut()) {
            let line = LogLine {
                step: model.step,
                loss,
                batch_accuracy: acc,
                lr,
                grad_norm: norm,
                steps_per_sec: rate,
            };
            writeln!(w, "{}", serde_json::to_string(&line)?)?;
        }
        if logged.is_some() {
            (window, right, seen, began) = (0.0, 0.0, 0, Instant::now());
        }
        if let Some(path) = checkpoint
            .filter(|_| model.step.is_multiple_of(CHECKPOINT_EVERY) || model.step == total)
        {
            model.save(path, Some((&adam, rng.get_word_pos())))?;
        }
        if let Some(c) = callback {
            c(&TrainStep {
                step: model.step,
                total,
                start,
                loss,
                logged_loss: logged.map(|l| l.0),
                lr,
                grad_norm: norm,
            });
        }
    }
    Ok(losses)
}

#[derive(Serialize)]
struct LogLine {
    step: usize,
    loss: f64,
    batch_accuracy: f64,
    lr: f64,
    grad_norm: f64,
    steps_per_sec: f64,
}

/// Test accuracy at one noise level.
#[derive(Clone, Debug, Serialize)]
pub struct LevelAccuracy {
    pub t: f64,
    /// σ_t/α_t, the noise-to-signal ratio at t.
    pub noise: f64,
    pub accuracy: f64,
}

/// The times at which a run reports its test accuracy: t_min, then 0.1, 0.2, 0.3 and 0.5 of
/// the way to T (under VP: σ/α ≈ 0.34, 0.72, 1.24 and 3.4; beyond, little signal is left).
pub fn report_times(model: &NoisyClassifier) -> Vec<f64> {
    let (lo, hi) = (model.process.t_min(), model.process.t_max());
    std::iter::once(lo)
        .chain([0.1, 0.2, 0.3, 0.5].map(|f| lo + f * (hi - lo)))
        .collect()
}

/// The share of `images` (bin centres, u = ½) classified right at each of `times`, the noise
/// drawn from `seed`, in batches of 500.
pub fn accuracy(
    model: &NoisyClassifier,
    images: &Images,
    times: &[f64],
    seed: u64,
) -> Result<Vec<LevelAccuracy>> {
    let device = model.net.w.embed.w.device().clone();
    let mut noise = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for &t in times {
        let mut right = 0.0;
        for chunk in (0..images.n).collect::<Vec<_>>().chunks(500) {
            let b = noisy_batch(
                model,
                images,
                chunk,
                &vec![t; chunk.len()],
                None,
                &mut noise,
                &device,
            )?;
            let (_, logits) = model.forward(&b.x, &b.t)?;
            right += loss_and_accuracy(&logits, &b.labels)?.1 * chunk.len() as f64;
        }
        out.push(LevelAccuracy {
            t,
            noise: model.process.sigma(t) / model.process.alpha(t),
            accuracy: right / images.n.max(1) as f64,
        });
    }
    Ok(out)
}

/// What a finished classifier run reports (and writes to `accuracy.json`).
#[derive(Debug, Serialize)]
pub struct ClassifierSummary {
    pub steps: usize,
    pub parameters: usize,
    pub final_loss: f64,
    pub wall_seconds: f64,
    /// Test images the accuracies are measured on.
    pub n_test: usize,
    /// The accuracy on the test images at t_min (the plain classifier).
    pub test_accuracy: f64,
    /// The accuracy at each of `report_times`.
    pub levels: Vec<LevelAccuracy>,
    pub definition: &'static str,
}

/// One-line definition of the classifier run's accuracies.
pub const ACCURACY_DEFINITION: &str = "test_accuracy: share of the held-out test images (pixel \
bin centres) whose arg-max logit is their label at t = t_min; levels: the same at x_t = α_t x0 + \
σ_t ε for each t (noise = σ_t/α_t), one fixed noise draw";

/// Trains a classifier of `config` on `train`, measures it on `test`, and writes the run folder
/// `dir` (config.toml, metrics.jsonl, checkpoint.safetensors, accuracy.json). With `resume`, goes
/// on from the folder's checkpoint (its weights, Adam state and draw position) up to `config`'s
/// steps, appending to its log; the rest of `config` must be the run's.
pub fn train_run(
    config: &ClassifierConfig,
    train: &Images,
    test: &Images,
    dir: &Path,
    resume: bool,
    callback: Option<&crate::sample::Callback<TrainStep>>,
    device: &Device,
) -> Result<ClassifierSummary> {
    config.validate()?;
    let (mut model, state) = if resume {
        let (mut model, state) = NoisyClassifier::load_for_resume(dir, device)?;
        let mut same = model.config.clone();
        same.train.steps = config.train.steps;
        if &same != config {
            bail!(
                "{}: the run's settings differ from the ones given (only --steps may change on --resume)",
                dir.display()
            );
        }
        model.config.train.steps = config.train.steps;
        (model, Some(state))
    } else {
        (NoisyClassifier::new(config.clone(), device)?, None)
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create run folder", dir.display()))?;
    crate::io::write_atomic_bytes(&dir.join("config.toml"), config.to_toml()?.as_bytes())?;
    let log_path = dir.join(METRICS_LOG);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(resume)
        .write(true)
        .truncate(!resume)
        .open(&log_path)
        .with_context(|| format!("{}: cannot open", log_path.display()))?;
    let began = Instant::now();
    let checkpoint = dir.join(CHECKPOINT);
    let losses = fit(
        &mut model,
        train,
        Some(&mut log),
        callback,
        state,
        Some(&checkpoint),
    )?;
    let wall = began.elapsed().as_secs_f64();
    let levels = accuracy(&model, test, &report_times(&model), config.train.seed)?;
    let k = config.train.log_every.min(losses.len()).max(1);
    let summary = ClassifierSummary {
        steps: model.step,
        parameters: model.net.vars().iter().map(|(_, v)| v.elem_count()).sum(),
        final_loss: losses[losses.len() - k..].iter().sum::<f64>() / k as f64,
        wall_seconds: wall,
        n_test: test.n,
        test_accuracy: levels.first().map_or(f64::NAN, |l| l.accuracy),
        levels,
        definition: ACCURACY_DEFINITION,
    };
    crate::io::write_atomic_bytes(
        &dir.join(ACCURACY),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    Ok(summary)
}
