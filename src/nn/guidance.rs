//! A conditional model read at given classes: s_θ(x, t | c) as a `ScoreModel` (`Conditioned`),
//! and classifier-free guidance towards them, s = (1 + w) s_θ(x, t | c) − w s_θ(x, t | ∅)
//! (`ClassGuided`, Ho & Salimans 2022), from one network trained with label dropout.

use super::model::Model;
use crate::sample::Guided;
use crate::score::ScoreModel;
use anyhow::{bail, Result};
use candle_core::Tensor;

/// A conditional model read at fixed classes: s_θ(x, t | c_i) for row i, with c_i =
/// classes[i mod k] (one class: every row; pair it with the model itself, s_θ(x, t | ∅), in
/// `sample::Guided` for classifier-free guidance).
pub struct Conditioned<'a> {
    pub model: &'a Model,
    /// The class labels c, cycled over the rows.
    pub classes: &'a [u32],
}

impl ScoreModel for Conditioned<'_> {
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        if self.classes.is_empty() {
            bail!("no class to condition on");
        }
        let n = x.dims()[0];
        let labels: Vec<u32> = self.classes.iter().copied().cycle().take(n).collect();
        let labels = Tensor::from_vec(labels, n, x.device())?;
        self.model.score_cond(x, t, Some(&labels))
    }
    fn dim(&self) -> usize {
        self.model.config.dim
    }
}

/// A conditional model that owns its network, guided towards classes c (cycled over the rows,
/// as `Conditioned`) with weight w.
pub struct ClassGuided {
    pub model: Model,
    pub classes: Vec<u32>,
    /// Guidance weight w (0: s_θ(x, t | c) alone, one network evaluation).
    pub w: f64,
}

impl ClassGuided {
    /// Guidance of `model` towards `classes` with weight `w`: the model must be conditional and
    /// know every class.
    pub fn new(model: Model, classes: Vec<u32>, w: f64) -> Result<Self> {
        let Some(null) = model.null_class() else {
            bail!(
                "the {:?} network takes no class; --class needs a class-conditional run (network = \"unet\" trained on labelled data)",
                model.config.arch.network
            );
        };
        if classes.is_empty() {
            bail!("give at least one class");
        }
        if let Some(&class) = classes.iter().find(|&&c| c >= null) {
            bail!(
                "class {class} is out of range: the run knows {null} classes (0 to {})",
                null as i64 - 1
            );
        }
        if !w.is_finite() {
            bail!("the guidance weight must be a finite number, got {w}");
        }
        Ok(ClassGuided { model, classes, w })
    }
}

impl ScoreModel for ClassGuided {
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let conditional = Conditioned {
            model: &self.model,
            classes: &self.classes,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ModelConfig;
    use crate::process::ProcessConfig;
    use candle_core::Device;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
    }

    #[test]
    fn guidance_mixes_the_conditional_and_null_scores_with_cycled_classes() -> Result<()> {
        let dev = Device::Cpu;
        let net = || {
            Model::new(
                crate::nn::unet::tests::small(),
                &mut ChaCha8Rng::seed_from_u64(5),
                &dev,
            )
        };
        let model = net()?;
        let x = Tensor::rand(-1f32, 1f32, (4, 64), &dev)?;
        let t = Tensor::new(&[0.2f32, 0.4, 0.6, 0.8], &dev)?;
        let labels = Tensor::new(&[0u32, 2, 0, 2], &dev)?;
        let s_c = model.score_cond(&x, &t, Some(&labels))?;
        let s_null = model.score(&x, &t)?;
        let cond = Conditioned {
            model: &model,
            classes: &[0, 2],
        };
        assert_eq!(max_diff(&cond.score(&x, &t)?, &s_c)?, 0.0);
        let guided = ClassGuided::new(net()?, vec![0, 2], 1.5)?;
        let want = ((&s_c * 2.5)? - (&s_null * 1.5)?)?;
        assert!(max_diff(&guided.score(&x, &t)?, &want)? < 1e-4);
        assert!(max_diff(&s_c, &s_null)? > 1e-4);
        // the null class (3) and an unconditional network are refused
        assert!(ClassGuided::new(net()?, vec![3], 1.0).is_err());
        let mlp = Model::new(
            ModelConfig::default_for(2, ProcessConfig::vp_default()),
            &mut ChaCha8Rng::seed_from_u64(0),
            &dev,
        )?;
        let e = ClassGuided::new(mlp, vec![0], 1.0)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("takes no class")));
        Ok(())
    }
}
