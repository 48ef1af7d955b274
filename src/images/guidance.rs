//! Classifier guidance (Dhariwal & Nichol 2021): a score model steered towards classes y by a
//! noise-conditional classifier, s(x, t) + w ∇x log p_φ(y | x, t), the gradient by candle's
//! backpropagation to the input. A score wrapper, so every sampler takes it.

use super::run::NoisyClassifier;
use crate::score::ScoreModel;
use anyhow::{anyhow, bail, Result};
use candle_core::{Tensor, Var, D};

/// ∇x Σ_i log p_φ(y_i | x_i, t_i) [n, d] (row i's gradient is its own: the classifier treats
/// every image separately), in x's dtype.
pub fn log_prob_gradient(
    model: &NoisyClassifier,
    x: &Tensor,
    t: &Tensor,
    labels: &Tensor,
) -> Result<Tensor> {
    let dtype = model.net.w.embed.w.dtype();
    let input = Var::from_tensor(&x.to_dtype(dtype)?.detach())?;
    let (_, logits) = model.forward(input.as_tensor(), t)?;
    let log_p = candle_nn::ops::log_softmax(&logits, D::Minus1)?
        .gather(&labels.unsqueeze(1)?, 1)?
        .sum_all()?;
    let grads = log_p.backward()?;
    let g = grads
        .get(input.as_tensor())
        .ok_or_else(|| anyhow!("the classifier's output does not depend on its input"))?;
    Ok(g.to_dtype(x.dtype())?)
}

/// A score model guided towards classes (cycled over the rows, as `nn::Conditioned`) by a
/// classifier with scale w.
pub struct ClassifierGuided {
    pub base: Box<dyn ScoreModel>,
    pub classifier: NoisyClassifier,
    /// The classes y, cycled over the rows.
    pub classes: Vec<u32>,
    /// Guidance scale w (0: the base score alone).
    pub scale: f64,
}

impl ClassifierGuided {
    /// Guidance of `base` towards `classes` by `classifier` with scale `scale`: the classifier
    /// must take the base's images and know every class.
    pub fn new(
        base: Box<dyn ScoreModel>,
        classifier: NoisyClassifier,
        classes: Vec<u32>,
        scale: f64,
    ) -> Result<Self> {
        let spec = &classifier.config.spec;
        if base.dim() != spec.dim() {
            bail!(
                "the classifier takes images of shape {:?} ({} values), the run's samples have \
                 {}; train a classifier on the run's data",
                spec.event,
                spec.dim(),
                base.dim()
            );
        }
        if classes.is_empty() {
            bail!("give at least one class");
        }
        if let Some(c) = classes.iter().find(|&&c| c as usize >= spec.classes) {
            bail!(
                "class {c} is out of range: the classifier knows {} classes (0 to {})",
                spec.classes,
                spec.classes - 1
            );
        }
        if !scale.is_finite() {
            bail!("the classifier scale must be a finite number, got {scale}");
        }
        Ok(ClassifierGuided {
            base,
            classifier,
            classes,
            scale,
        })
    }
}

impl ScoreModel for ClassifierGuided {
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let s = self.base.score(x, t)?;
        if self.scale == 0.0 {
            return Ok(s);
        }
        let n = x.dims()[0];
        let labels = Tensor::from_vec(super::quality::cycled(&self.classes, n), n, x.device())?;
        let g = log_prob_gradient(&self.classifier, x, t, &labels)?;
        Ok((s + (g * self.scale)?)?)
    }
    fn dim(&self) -> usize {
        self.base.dim()
    }
}
