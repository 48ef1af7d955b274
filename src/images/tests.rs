//! Classifier tests on 1×8×8 images of three classes: shapes and the parameter count, loss
//! decrease on a fixed batch, the checkpoint round trip (and a score run refused), the guidance
//! gradient against central differences in f64, and the sample-quality numbers with their errors.

use super::guidance::{log_prob_gradient, ClassifierGuided};
use super::quality::image_quality;
use super::run::{ClassifierConfig, ClassifierTraining, NoisyClassifier};
use super::train::{fit, noisy_batch, step, train_run, CHECKPOINT_EVERY};
use crate::data::images::Images;
use crate::data::Points;
use crate::nn::unet::classifier::{Classifier, ClassifierSpec};
use crate::process::ProcessConfig;
use crate::score::ScoreModel;
use crate::train::adam::Adam;
use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A 2-level classifier of 8 channels for 3 classes of 1×8×8 images.
fn config(steps: usize) -> ClassifierConfig {
    ClassifierConfig {
        data: "test".into(),
        process: ProcessConfig::vp_default(),
        spec: ClassifierSpec {
            event: vec![1, 8, 8],
            classes: 3,
            channels: 8,
            mults: vec![1, 2],
            embed_dim: 8,
        },
        train: ClassifierTraining {
            steps,
            batch: 12,
            lr: 3e-3,
            warmup: 2,
            log_every: 5,
            ..ClassifierTraining::default()
        },
    }
}

/// n images whose class c (i mod 3) lights rows 2c..2c+2.
fn images(n: usize) -> Result<Images> {
    let mut pixels = Vec::with_capacity(n * 64);
    for i in 0..n {
        let c = i % 3;
        pixels.extend((0..64).map(|k| if k / 8 / 2 == c { 230 } else { 10 }));
    }
    Images::new(
        n,
        [1, 8, 8],
        pixels,
        Some((0..n as u32).map(|i| i % 3).collect()),
        "test",
    )
}

#[test]
fn shapes_and_the_parameter_count() -> Result<()> {
    let cfg = config(1);
    let model = NoisyClassifier::new(cfg.clone(), &Device::Cpu)?;
    let n: usize = model.net.vars().iter().map(|(_, v)| v.elem_count()).sum();
    assert_eq!(Classifier::parameter_count(&cfg.spec), Some(n));
    let x = Tensor::rand(-1f32, 1f32, (5, 64), &Device::Cpu)?;
    let t = Tensor::new(&[0.001f32, 0.2, 0.4, 0.6, 0.9], &Device::Cpu)?;
    let (f, logits) = model.forward(&x, &t)?;
    assert_eq!((f.dims(), logits.dims()), (&[5, 16][..], &[5, 3][..]));
    // wrong row length, wrong time count, a bad spec: errors, not panics
    let e = model.forward(&Tensor::zeros((5, 63), DType::F32, &Device::Cpu)?, &t);
    assert!(e.is_err_and(|e| e.to_string().contains("rows of 63")));
    assert!(model.forward(&x, &t.narrow(0, 0, 2)?).is_err());
    let mut bad = cfg.spec.clone();
    bad.mults = vec![1, 2, 2, 2, 2];
    assert!(bad.check().is_err() && Classifier::parameter_count(&bad).is_none());
    Ok(())
}

#[test]
fn a_few_steps_reduce_the_loss_on_a_fixed_batch() -> Result<()> {
    let model = NoisyClassifier::new(config(1), &Device::Cpu)?;
    let im = images(12)?;
    let rows: Vec<usize> = (0..12).collect();
    let times: Vec<f64> = (0..12).map(|i| 0.001 + 0.02 * i as f64).collect();
    let batch = noisy_batch(
        &model,
        &im,
        &rows,
        &times,
        None,
        &mut ChaCha8Rng::seed_from_u64(1),
        &Device::Cpu,
    )?;
    let mut adam = Adam::new(model.net.vars())?;
    let losses: Vec<f64> = (0..15)
        .map(|_| Ok(step(&model, &mut adam, &batch, 3e-3)?.0))
        .collect::<Result<_>>()?;
    assert!(losses[14] < 0.6 * losses[0], "{losses:?}");
    Ok(())
}

#[test]
fn training_then_a_checkpoint_round_trip_gives_identical_outputs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut model = NoisyClassifier::new(config(10), &Device::Cpu)?;
    let mut log = Vec::new();
    let losses = fit(&mut model, &images(30)?, Some(&mut log), None, None, None)?;
    assert_eq!((losses.len(), model.step), (10, 10));
    assert_eq!(String::from_utf8(log)?.lines().count(), 2);
    let path = dir.path().join("c.safetensors");
    model.save(&path, None)?;
    let back = NoisyClassifier::load(&path, &Device::Cpu)?;
    assert_eq!((back.step, &back.config), (10, &model.config));
    let x = Tensor::rand(-1f32, 1f32, (3, 64), &Device::Cpu)?;
    let t = Tensor::new(&[0.01f32, 0.5, 0.9], &Device::Cpu)?;
    let (a, b) = (model.forward(&x, &t)?.1, back.forward(&x, &t)?.1);
    assert_eq!(
        a.flatten_all()?.to_vec1::<f32>()?,
        b.flatten_all()?.to_vec1::<f32>()?
    );
    // a score model's checkpoint, a truncated file: one-line errors that say what is wrong
    let score = dir.path().join("score.safetensors");
    let net = crate::nn::Model::new(
        crate::nn::unet::tests::small(),
        &mut ChaCha8Rng::seed_from_u64(0),
        &Device::Cpu,
    )?;
    let weights = || -> Vec<Tensor> {
        net.vars()
            .iter()
            .map(|(_, v)| v.as_tensor().clone())
            .collect()
    };
    crate::train::checkpoint::Checkpoint {
        model: net.config.clone(),
        run: crate::config::RunConfig::default(),
        step: 1,
        rng: crate::train::checkpoint::RngState::of(&ChaCha8Rng::seed_from_u64(0)),
        names: net.vars().iter().map(|(n, _)| n.clone()).collect(),
        params: weights(),
        ema: weights(),
        adam_m: weights(),
        adam_v: weights(),
        buffers: net.buffers(),
    }
    .save(&score)?;
    let e = format!(
        "{:#}",
        NoisyClassifier::load(&score, &Device::Cpu)
            .err()
            .expect("refused")
    );
    assert!(e.contains("not a classifier") && !e.contains('\n'), "{e}");
    let bytes = std::fs::read(&path)?;
    std::fs::write(&path, &bytes[..bytes.len() / 2])?;
    assert!(NoisyClassifier::load(&path, &Device::Cpu).is_err());
    Ok(())
}

/// ∇x Σ log p(y | x, t) by backpropagation against central differences, in f64.
#[test]
fn the_guidance_gradient_matches_central_differences() -> Result<()> {
    let mut model = NoisyClassifier::new(config(1), &Device::Cpu)?;
    model.net.to_dtype(DType::F64)?;
    let dev = Device::Cpu;
    let x = Tensor::rand(-1f64, 1f64, (2, 64), &dev)?;
    let t = Tensor::new(&[0.05f64, 0.4], &dev)?;
    let y = Tensor::new(&[2u32, 0], &dev)?;
    let g = log_prob_gradient(&model, &x, &t, &y)?;
    assert_eq!(g.dtype(), DType::F64);
    let log_p = |x: &Tensor| -> Result<f64> {
        let (_, logits) = model.forward(x, &t)?;
        Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?
            .gather(&y.unsqueeze(1)?, 1)?
            .sum_all()?
            .to_scalar::<f64>()?)
    };
    let (xv, gv) = (
        x.flatten_all()?.to_vec1::<f64>()?,
        g.flatten_all()?.to_vec1::<f64>()?,
    );
    let h = 1e-5;
    for k in [0, 9, 27, 63, 64, 100, 127] {
        let at = |dx: f64| -> Result<f64> {
            let mut v = xv.clone();
            v[k] += dx;
            log_p(&Tensor::from_vec(v, (2, 64), &dev)?)
        };
        let fd = (at(h)? - at(-h)?) / (2.0 * h);
        assert!(
            (fd - gv[k]).abs() < 1e-6 * (1.0 + fd.abs()),
            "{k}: {fd} vs {}",
            gv[k]
        );
    }
    Ok(())
}

/// A score model that returns zeros: the guided score is then w ∇x log p(y | x, t) alone.
struct Zero;
impl ScoreModel for Zero {
    fn score(&self, x: &Tensor, _t: &Tensor) -> Result<Tensor> {
        Ok(x.zeros_like()?)
    }
    fn dim(&self) -> usize {
        64
    }
}

#[test]
fn guidance_adds_the_scaled_gradient_for_cycled_classes() -> Result<()> {
    let dev = Device::Cpu;
    let guided = ClassifierGuided::new(
        Box::new(Zero),
        NoisyClassifier::new(config(1), &dev)?,
        vec![1, 2],
        3.0,
    )?;
    let x = Tensor::rand(-1f32, 1f32, (4, 64), &dev)?;
    let t = Tensor::new(&[0.1f32, 0.2, 0.3, 0.4], &dev)?;
    let y = Tensor::new(&[1u32, 2, 1, 2], &dev)?;
    let want = (log_prob_gradient(&guided.classifier, &x, &t, &y)? * 3.0)?;
    let diff = (guided.score(&x, &t)? - want)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert!(diff < 1e-6);
    // a class the classifier does not know, images of another size
    let cls = || NoisyClassifier::new(config(1), &dev);
    assert!(ClassifierGuided::new(Box::new(Zero), cls()?, vec![3], 1.0).is_err());
    let mlp = crate::nn::Model::new(
        crate::nn::ModelConfig::default_for(2, ProcessConfig::vp_default()),
        &mut ChaCha8Rng::seed_from_u64(0),
        &dev,
    )?;
    let e = ClassifierGuided::new(Box::new(mlp), cls()?, vec![0], 1.0).err();
    assert!(e.is_some_and(|e| e.to_string().contains("shape [1, 8, 8]")));
    Ok(())
}

/// A run stopped part-way (its folder copied at a checkpoint) and resumed from there ends with
/// the weights of the same run done in one go (Adam's moments and the draw's position saved with the weights); resuming
/// with other settings, or with no more steps to take, is refused.
#[test]
fn a_resumed_run_matches_an_uninterrupted_one() -> Result<()> {
    let dev = Device::Cpu;
    let (train, test) = (images(30)?, images(9)?);
    let (whole, parts) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let steps = CHECKPOINT_EVERY + 5;
    // the interrupted run: the folder as it stood after the checkpoint of step CHECKPOINT_EVERY
    let (from, to) = (whole.path().to_path_buf(), parts.path().to_path_buf());
    let snapshot: crate::sample::Callback<crate::train::TrainStep> = Box::new(move |s| {
        if s.step == CHECKPOINT_EVERY {
            for f in [
                crate::train::CHECKPOINT,
                crate::train::METRICS_LOG,
                "config.toml",
            ] {
                std::fs::copy(from.join(f), to.join(f)).expect("copy the run folder");
            }
        }
    });
    let c = config(steps);
    train_run(
        &c,
        &train,
        &test,
        whole.path(),
        false,
        Some(&snapshot),
        &dev,
    )?;
    let summary = train_run(&c, &train, &test, parts.path(), true, None, &dev)?;
    assert_eq!(summary.steps, steps);
    let (a, b) = (
        NoisyClassifier::load_run(whole.path(), &dev)?,
        NoisyClassifier::load_run(parts.path(), &dev)?,
    );
    for ((name, va), (_, vb)) in a.net.vars().iter().zip(b.net.vars()) {
        let (va, vb) = (
            va.flatten_all()?.to_vec1::<f32>()?,
            vb.flatten_all()?.to_vec1::<f32>()?,
        );
        assert_eq!(va, vb, "{name}");
    }
    let log = std::fs::read_to_string(parts.path().join(crate::train::METRICS_LOG))?;
    assert_eq!(log.lines().count(), steps.div_ceil(5));
    let mut other = config(steps + 10);
    other.train.lr = 1e-3;
    let e = train_run(&other, &train, &test, parts.path(), true, None, &dev).err();
    assert!(e.is_some_and(|e| format!("{e:#}").contains("only --steps may change")));
    let e = train_run(
        &config(steps),
        &train,
        &test,
        parts.path(),
        true,
        None,
        &dev,
    )
    .err();
    assert!(e.is_some_and(|e| format!("{e:#}").contains("--steps")));
    Ok(())
}

#[test]
fn sample_quality_numbers_and_their_errors() -> Result<()> {
    let mut model = NoisyClassifier::new(config(40), &Device::Cpu)?;
    fit(&mut model, &images(60)?, None, None, None, None)?;
    let test = images(30)?;
    let real = test.to_points()?;
    let labels: Vec<u32> = (0..30).map(|i| i % 3).collect();
    let q = image_quality(&model, &real, &labels, &test)?;
    let (acc, fd) = (&q.metrics[0].1, &q.metrics[1].1);
    // the test images judged as samples: their accuracy is the floor, their distance small
    assert_eq!(Some(acc.value), acc.floor);
    assert!(acc.value > 0.9, "{acc:?}");
    assert_eq!((fd.n_samples, fd.n_reference), (Some(15), Some(15)));
    assert!(fd.value >= 0.0 && fd.floor.is_some_and(|f| f >= 0.0));
    assert!(q.per_class_accuracy.iter().all(|a| (0.0..=1.0).contains(a)));
    // wrong label count, a label out of range, images of another shape
    let e = image_quality(&model, &real, &labels[..29], &test).err();
    assert!(e.is_some_and(|e| e.to_string().contains("29 labels for 30 samples")));
    let mut bad = labels.clone();
    bad[0] = 3;
    assert!(image_quality(&model, &real, &bad, &test).is_err());
    let wide = Points::new(30, 2, vec![0.0; 60])?;
    let e = image_quality(&model, &wide, &labels, &test).err();
    assert!(e.is_some_and(|e| e.to_string().contains("shape [2]")));
    Ok(())
}
