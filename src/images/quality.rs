//! Sample quality for images, read by a trained classifier at t = t_min (the samples clipped to
//! the pixel range [−1, 1] first, as an image file holds them): (a) the share of
//! class-conditional samples recognised as their class, beside the classifier's own accuracy on
//! the test images, and (b) the Fréchet distance between samples and test images in the
//! classifier's feature space (the global-pooled penultimate layer), beside its floor: the same
//! distance between two halves of the test images.

use super::frechet::frechet_between;
use super::run::NoisyClassifier;
use crate::data::images::Images;
use crate::data::Points;
use crate::metrics::Metric;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The labels file beside a samples file S.npy: S.labels.npy (`tweedie sample --class` writes
/// it, `tweedie eval --classifier` reads it).
pub fn labels_beside(samples: &Path) -> PathBuf {
    let stem = samples
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    samples.with_file_name(format!("{stem}.labels.npy"))
}

/// The class of each of n rows when `classes` is cycled over them (`tweedie sample --class`'s
/// rule: row i has class classes[i mod k]).
pub fn cycled(classes: &[u32], n: usize) -> Vec<u32> {
    classes.iter().copied().cycle().take(n).collect()
}

/// Rows per classifier evaluation.
const CHUNK: usize = 250;

/// One-line definition of the class-accuracy entry.
pub const CLASS_ACCURACY_DEFINITION: &str = "class_accuracy: share of the samples (clipped to \
[-1, 1]) whose classifier arg-max at t = t_min is the class they were drawn for; floor: the classifier's \
accuracy on the test images (what real digits score)";
/// One-line definition of the Fréchet-distance entry.
pub const FRECHET_DEFINITION: &str = "frechet_distance: |μ1-μ2|² + tr Σ1 + tr Σ2 - \
2 tr (Σ1^½ Σ2 Σ1^½)^½ between Gaussians fitted (unbiased covariance) to the classifier's \
penultimate features at t = t_min of the first k samples (clipped to [-1, 1]) and of test \
images 0..k; floor: the \
same between test images k..2k and 0..k";

/// The sample-quality numbers of a set of class-conditional image samples.
#[derive(Debug, Serialize)]
pub struct ImageQuality {
    /// Each number with its definition, sizes and floor.
    pub metrics: Vec<(&'static str, Metric)>,
    /// The share recognised as their class, per class (NaN for a class with no sample).
    pub per_class_accuracy: Vec<f64>,
    /// Features per image (the Fréchet distance's dimension).
    pub features: usize,
    /// The share of sample values outside [−1, 1], clipped before the classifier reads them.
    pub clipped: f64,
}

/// The classifier's features [n × F] (row-major) and arg-max classes of images in data units
/// (pixels in [−1, 1]) at t = t_min.
pub fn features_and_classes(
    model: &NoisyClassifier,
    x: &[f32],
    n: usize,
) -> Result<(Vec<f64>, Vec<u32>)> {
    let d = model.config.spec.dim();
    let device = model.net.w.embed.w.device().clone();
    let t_min = model.process.t_min() as f32;
    let (mut features, mut classes) = (Vec::new(), Vec::new());
    for start in (0..n).step_by(CHUNK) {
        let rows = CHUNK.min(n - start);
        let xb = Tensor::from_slice(&x[start * d..(start + rows) * d], (rows, d), &device)?;
        let t = Tensor::full(t_min, rows, &device)?;
        let (f, logits) = model.forward(&xb, &t)?;
        features.extend(f.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?);
        classes.extend(logits.argmax(1)?.to_vec1::<u32>()?);
    }
    Ok((features, classes))
}

/// The samples' values as images the classifier takes (checked shape), f32, clipped to the
/// pixel range [−1, 1] as an image file would hold them; and the share of values clipped.
pub fn sample_values(model: &NoisyClassifier, samples: &Points) -> Result<(Vec<f32>, f64)> {
    let event = &model.config.spec.event;
    let shape_ok = samples.event.is_empty() || &samples.event == event;
    if samples.d != model.config.spec.dim() || !shape_ok {
        bail!(
            "the samples are of shape {:?}, the classifier takes images of shape {event:?}; \
             judge samples of the data the classifier was trained on",
            samples.event_shape()
        );
    }
    let outside = samples.data.iter().filter(|v| v.abs() > 1.0).count();
    let x = samples
        .data
        .iter()
        .map(|v| v.clamp(-1.0, 1.0) as f32)
        .collect();
    Ok((x, outside as f64 / samples.data.len().max(1) as f64))
}

/// The Fréchet distance between the first k rows of the sample features `fs` and of the test
/// features `ft` (F per row), and its floor: the same between test rows k..2k and 0..k.
pub fn frechet_and_floor(fs: &[f64], ft: &[f64], k: usize, f: usize) -> Result<(f64, f64)> {
    if fs.len() < k * f || ft.len() < 2 * k * f {
        bail!(
            "the Fréchet distance on k = {k} needs k samples and 2k test images, got {} and {}",
            fs.len() / f.max(1),
            ft.len() / f.max(1)
        );
    }
    Ok((
        frechet_between(&fs[..k * f], &ft[..k * f], f)?,
        frechet_between(&ft[k * f..2 * k * f], &ft[..k * f], f)?,
    ))
}

/// The quality of `samples` drawn for the classes `labels` (one per sample), against `test`
/// (labelled images of the classifier's shape); the Fréchet distance on k = min(n, m/2) points.
pub fn image_quality(
    model: &NoisyClassifier,
    samples: &Points,
    labels: &[u32],
    test: &Images,
) -> Result<ImageQuality> {
    let (x, clipped) = sample_values(model, samples)?;
    if labels.len() != samples.n {
        bail!(
            "{} labels for {} samples; give one class per sample (the labels file `tweedie \
             sample --class` wrote beside them)",
            labels.len(),
            samples.n
        );
    }
    let classes = model.config.spec.classes;
    if let Some(l) = labels.iter().find(|&&l| l as usize >= classes) {
        bail!("label {l} is out of range: the classifier knows {classes} classes (0 to {}); give the classes the samples were drawn for", classes - 1);
    }
    let Some(test_labels) = &test.labels else {
        bail!("the test images have no labels");
    };
    let k = samples.n.min(test.n / 2);
    if k < 2 {
        bail!(
            "the Fréchet distance needs at least 2 samples and 4 test images (got {} and {})",
            samples.n,
            test.n
        );
    }
    let (fs, cs) = features_and_classes(model, &x, samples.n)?;
    let rows: Vec<usize> = (0..test.n).collect();
    let tx = test.values::<rand_chacha::ChaCha8Rng>(&rows, None);
    let (ft, ct) = features_and_classes(model, &tx, test.n)?;
    let share = |got: &[u32], want: &[u32]| {
        got.iter().zip(want).filter(|(a, b)| a == b).count() as f64 / want.len().max(1) as f64
    };
    let per_class_accuracy = (0..classes as u32)
        .map(|c| {
            let (mut right, mut all) = (0usize, 0usize);
            for (g, _) in cs.iter().zip(labels).filter(|(_, &l)| l == c) {
                all += 1;
                right += usize::from(*g == c);
            }
            right as f64 / all as f64
        })
        .collect();
    let f = model.config.spec.features();
    let (fd, floor) = frechet_and_floor(&fs, &ft, k, f)?;
    let metrics = vec![
        (
            "class_accuracy",
            Metric {
                value: share(&cs, labels),
                se: None,
                definition: CLASS_ACCURACY_DEFINITION,
                n_samples: Some(samples.n),
                n_reference: Some(test.n),
                floor: Some(share(&ct, test_labels)),
            },
        ),
        (
            "frechet_distance",
            Metric {
                value: fd,
                se: None,
                definition: FRECHET_DEFINITION,
                n_samples: Some(k),
                n_reference: Some(k),
                floor: Some(floor),
            },
        ),
    ];
    Ok(ImageQuality {
        metrics,
        per_class_accuracy,
        features: f,
        clipped,
    })
}
