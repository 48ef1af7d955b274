//! A conditional model read at one class: s_θ(x, t | c) as a `ScoreModel` (`Conditioned`), and
//! classifier-free guidance at that class, s = (1 + w) s_θ(x, t | c) − w s_θ(x, t | ∅)
//! (`ClassGuided`, Ho & Salimans 2022), from one network trained with label dropout.

use super::model::Model;
use crate::sample::Guided;
use crate::score::ScoreModel;
use anyhow::{bail, Result};
use candle_core::Tensor;

/// A conditional model read at one fixed class c: s_θ(x, t | c) for every row (pair it with the
/// model itself, s_θ(x, t | ∅), in `sample::Guided` for classifier-free guidance).
pub struct Conditioned<'a> {
    pub model: &'a Model,
    /// The class label c.
    pub class: u32,
}

impl ScoreModel for Conditioned<'_> {
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let labels = Tensor::full(self.class, x.dims()[0], x.device())?;
        self.model.score_cond(x, t, Some(&labels))
    }
    fn dim(&self) -> usize {
        self.model.config.dim
    }
}

/// A conditional model that owns its network, guided towards class c with weight w.
pub struct ClassGuided {
    pub model: Model,
    pub class: u32,
    /// Guidance weight w (0: s_θ(x, t | c) alone, one network evaluation).
    pub w: f64,
}

impl ClassGuided {
    /// Guidance of `model` towards `class` with weight `w`: the model must be conditional and
    /// know the class.
    pub fn new(model: Model, class: u32, w: f64) -> Result<Self> {
        let Some(null) = model.null_class() else {
            bail!(
                "the {:?} network takes no class; --class needs a class-conditional run (network = \"unet\" trained on labelled data)",
                model.config.arch.network
            );
        };
        if class >= null {
            bail!(
                "class {class} is out of range: the run knows {null} classes (0 to {})",
                null as i64 - 1
            );
        }
        if !w.is_finite() {
            bail!("the guidance weight must be a finite number, got {w}");
        }
        Ok(ClassGuided { model, class, w })
    }
}

impl ScoreModel for ClassGuided {
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let conditional = Conditioned {
            model: &self.model,
            class: self.class,
        };
        if self.w == 0.0 {
            return conditional.score(x, t);
        }
        Guided {
            conditional: &conditional,
            unconditional: &self.model,
            w: self.w,
        }
        .score(x, t)
    }
    fn dim(&self) -> usize {
        self.model.config.dim
    }
}
