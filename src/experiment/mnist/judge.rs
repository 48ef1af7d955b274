//! The judge of sample quality: a classifier's Fréchet distance to test digits.

use super::Settings;
use crate::data::images::Images;
use crate::data::{mnist, Points};
use crate::images::quality::{features_and_classes, frechet_and_floor, sample_values};
use crate::images::train::{accuracy, fit as fit_classifier};
use crate::images::{ClassifierConfig, ClassifierTraining, NoisyClassifier};
use crate::nn::unet::classifier::ClassifierSpec;
use crate::nn::Model;
use crate::process::ProcessConfig;
use crate::sample::grid::recommended;
use crate::sample::{self, Options, Plan, Trace};
use crate::score::ScoreModel;
use anyhow::{ensure, Result};
use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// The judge: a classifier and the features of the first 2k test digits.
pub(super) struct Judge {
    /// The classifier whose penultimate features the Fréchet distance compares.
    pub(super) model: NoisyClassifier,
    /// Features of test digits 0..2k.
    pub(super) test_features: Vec<f64>,
    /// Samples per Fréchet distance: min(n, test digits / 2).
    pub(super) k: usize,
    /// Test accuracy at t_min.
    pub(super) accuracy: f64,
    /// "trained here (…)" or the run folder.
    pub(super) what: String,
}

impl Judge {
    /// Loads `s.classifier` or trains one, then reads the test digits' features.
    pub(super) fn new(s: &Settings, train: &Images, test: &Images) -> Result<Judge> {
        let (model, what) = match &s.classifier {
            Some(dir) => (
                NoisyClassifier::load_run(dir, &Device::Cpu)?,
                format!("the classifier run `{}`", dir.display()),
            ),
            None => {
                let config = ClassifierConfig {
                    data: mnist::NAME.into(),
                    process: ProcessConfig::vp_default(),
                    spec: ClassifierSpec::small(&train.shape, 10),
                    train: ClassifierTraining {
                        steps: s.classifier_steps,
                        clean_fraction: 1.0,
                        seed: s.seed,
                        ..Default::default()
                    },
                };
                let mut model = NoisyClassifier::new(config, &Device::Cpu)?;
                let began = Instant::now();
                fit_classifier(&mut model, train, None, None, None, None)?;
                let what = format!(
                    "a classifier trained here: `tweedie classifier`'s network and recipe with {} steps of batch 64 and every image at t = t_min (clean fraction 1), {:.0} s",
                    s.classifier_steps,
                    began.elapsed().as_secs_f64()
                );
                (model, what)
            }
        };
        let t_min = model.process.t_min();
        let accuracy = accuracy(&model, test, &[t_min], s.seed)?[0].accuracy;
        let k = s.n.min(test.n / 2);
        ensure!(k >= 2, "the Fréchet distance needs --n of at least 2");
        let rows: Vec<usize> = (0..2 * k).collect();
        let tx = test.values::<ChaCha8Rng>(&rows, None);
        let (test_features, _) = features_and_classes(&model, &tx, 2 * k)?;
        Ok(Judge {
            model,
            test_features,
            k,
            accuracy,
            what,
        })
    }

    /// (Fréchet distance, floor, share of values clipped) of samples [n, 784].
    fn judge(&self, samples: &Points) -> Result<(f64, f64, f64)> {
        let (x, clipped) = sample_values(&self.model, samples)?;
        let (fs, _) = features_and_classes(&self.model, &x, self.k)?;
        let f = self.model.config.spec.features();
        let (fd, floor) = frechet_and_floor(&fs, &self.test_features, self.k, f)?;
        Ok((fd, floor, clipped))
    }
}

/// Fréchet distances (and clipped share) of reverse-SDE and DDIM samples of `net`, each ending
/// with one Tweedie denoising step.
pub(super) fn quality(
    net: Model,
    s: &Settings,
    judge: &Judge,
    seed: u64,
) -> Result<[(f64, f64); 2]> {
    let net = if crate::nn::fused::enabled() {
        net.for_inference()?
    } else {
        net
    };
    let mut out = [(0.0, 0.0); 2];
    let plans = [
        ("em", s.sampler_steps),
        ("ddim", (s.sampler_steps / 10).max(1)),
    ];
    for (k, (sampler, steps)) in plans.into_iter().enumerate() {
        let plan = Plan {
            sampler,
            grid: recommended(sampler),
            steps,
            options: Options::default(),
            denoise_final: true,
        };
        // a model that sends the sampler to non-finite values scores NaN ("diverged")
        let Ok(x) = sample::generate(
            &net,
            net.process(),
            &plan,
            s.n,
            &mut ChaCha8Rng::seed_from_u64(seed),
            &Device::Cpu,
            &mut Trace::default(),
        ) else {
            out[k] = (f64::NAN, f64::NAN);
            continue;
        };
        let pts = Points::new(s.n, net.dim(), crate::flat::values::<f64>(&x)?)?;
        let (fd, _, clipped) = judge.judge(&pts)?;
        out[k] = (fd, clipped);
    }
    Ok(out)
}
