//! Two engines run the same training step: candle ops with autograd (any device, dtype and
//! objective) and the fused CPU MLP (f32, non-energy networks, every objective but FD-SSM) with a
//! fused Adam/EMA over one flat buffer. The fused engine is chosen wherever it applies;
//! `TWEEDIE_ENGINE=candle` forces candle (for comparisons).

use super::adam::{ema_decay_at, Adam};
use super::{check_finite, optimise, schedule};
use crate::config::TrainConfig;
use crate::flat::values;
use crate::nn::fused::{self, losses};
use crate::nn::{FusedMlp, Model};
use crate::objective::regression::Regression;
use crate::objective::{Batch, ObjectiveConfig};
use anyhow::{Context, Result};
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;

/// The state a checkpoint stores, each list in `Model::vars` order.
pub struct State {
    pub params: Vec<Tensor>,
    pub ema: Vec<Tensor>,
    pub adam_m: Vec<Tensor>,
    pub adam_v: Vec<Tensor>,
}

/// Where the training step runs.
pub enum Engine {
    /// Candle ops; the parameters live in the network's variables.
    Candle { adam: Adam, ema: Vec<Tensor> },
    /// The fused CPU MLP; the parameters live in its flat buffer.
    Fused(Box<Fused>),
}

/// Flat training state of the fused engine.
pub struct Fused {
    mlp: FusedMlp,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Empty when no EMA is kept.
    ema: Vec<f32>,
    grad: Vec<f32>,
    /// Adam steps taken.
    steps: usize,
}

impl Fused {
    /// One draw of the objective's loss and its gradient (into `grad`) on the fused kernels.
    fn loss_and_grad(
        &mut self,
        net: &Model,
        objective: &ObjectiveConfig,
        batch: &Batch,
        rng: &mut ChaCha8Rng,
    ) -> Result<f64> {
        if let Some(r) = objective.regression(net, batch, rng)? {
            return self.regression_grad(net, &r);
        }
        let s = objective
            .stein(net, batch, rng)?
            .context("the fused engine does not run FD-SSM")?;
        let (xs, vs) = (values::<f32>(&s.xt)?, values::<f32>(&s.v)?);
        let ts: Vec<f64> = values(&s.t)?;
        let (p, param) = (net.process(), net.output_map());
        let coef: Vec<(f32, f32)> = ts
            .iter()
            .map(|&t| {
                let (a, b) = param.score_coefficients(p.alpha(t), p.sigma(t));
                (a as f32, b as f32)
            })
            .collect();
        let t32: Vec<f32> = ts.iter().map(|&t| t as f32).collect();
        let m = s.v.dims()[0];
        self.mlp.loss_and_grad_jvp(
            &xs,
            &t32,
            (&vs, m),
            |rows, out, tan, g, gt| losses::stein(s.kind, &coef, &xs, &vs, rows, out, tan, g, gt),
            &mut self.grad,
        )
    }
}

/// ‖g‖ in f64 from eight partial sums: one running sum would wait on every add's latency (37,000
/// dependent adds, about 40 µs per step at batch 512).
fn norm(g: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = g.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| (v as f64).powi(2)).sum();
    for c in chunks {
        acc.iter_mut()
            .zip(c)
            .for_each(|(a, &v)| *a += (v as f64) * (v as f64));
    }
    (acc.iter().sum::<f64>() + tail).sqrt()
}

impl Fused {
    /// A regression's loss and its gradient (into `grad`) on the fused kernels.
    fn regression_grad(&mut self, net: &Model, r: &Regression) -> Result<f64> {
        let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let (mut xs, mut ts) = (f32s(&r.z.xt), f32s(&r.z.ts));
        // EDM: the network sees c_in·x̃ and c_noise
        if let Some((scale, t_in)) = net.input_map(&r.z.ts) {
            for (row, c) in xs.chunks_exact_mut(r.z.d).zip(&scale) {
                row.iter_mut().for_each(|x| *x *= *c as f32);
            }
            ts = f32s(&t_in);
        }
        let (target, weight) = (f32s(&r.target), f32s(&r.weight));
        self.mlp.loss_and_grad(
            &xs,
            &ts,
            |rows, out, g| losses::regression(&target, &weight, rows, out, g),
            &mut self.grad,
        )
    }

    /// Clipped Adam and EMA on the gradient in `grad`; returns (loss, gradient norm, learning rate).
    fn apply(&mut self, loss: f64, t: &TrainConfig, step: usize) -> Result<(f64, f64, f64)> {
        let norm = norm(&self.grad);
        check_finite(loss, norm, step)?;
        let h = schedule(t, step, norm);
        self.steps += 1;
        let ema = (!self.ema.is_empty())
            .then(|| (self.ema.as_mut_slice(), ema_decay_at(t.ema_decay, step)));
        h.apply_flat(
            self.steps,
            (self.mlp.params_mut(), &mut self.m, &mut self.v),
            &self.grad,
            ema,
        );
        Ok((loss, norm, h.lr))
    }
}

impl Engine {
    /// The fused engine if it applies to `net` and `objective`, else candle; starts from the
    /// given Adam state and EMA (an empty EMA keeps none).
    pub fn new(
        net: &Model,
        objective: &ObjectiveConfig,
        adam: Adam,
        ema: Vec<Tensor>,
    ) -> Result<Self> {
        let Some(mlp) = fused::build(net, Some(objective))? else {
            return Ok(Engine::Candle { adam, ema });
        };
        let flat = |ts: &[Tensor]| -> Result<Vec<f32>> {
            if ts.is_empty() {
                return Ok(Vec::new());
            }
            mlp.from_tensors(ts)
        };
        let (m, v, ema) = (flat(&adam.m)?, flat(&adam.v)?, flat(&ema)?);
        let grad = vec![0.0; mlp.params().len()];
        Ok(Engine::Fused(Box::new(Fused {
            mlp,
            m,
            v,
            ema,
            grad,
            steps: adam.step,
        })))
    }

    /// "fused" or "candle".
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Candle { .. } => "candle",
            Engine::Fused(_) => "fused",
        }
    }

    /// One training step (batch → loss → gradient → clipped Adam → EMA); returns (loss, gradient
    /// norm, learning rate). A non-finite loss or gradient is an error and changes nothing.
    pub fn step(
        &mut self,
        net: &Model,
        objective: &ObjectiveConfig,
        batch: &Batch,
        rng: &mut ChaCha8Rng,
        t: &TrainConfig,
        step: usize,
    ) -> Result<(f64, f64, f64)> {
        match self {
            Engine::Candle { adam, ema } => {
                let loss = objective.loss(net, batch, rng)?;
                optimise(net, adam, ema, &loss, t, step)
            }
            Engine::Fused(f) => {
                let loss = f.loss_and_grad(net, objective, batch, rng)?;
                f.apply(loss, t, step)
            }
        }
    }

    /// One training step on a given regression (targets built outside an objective, as
    /// distillation does); returns (loss, gradient norm, learning rate).
    pub fn step_regression(
        &mut self,
        net: &Model,
        r: &Regression,
        t: &TrainConfig,
        step: usize,
    ) -> Result<(f64, f64, f64)> {
        match self {
            Engine::Candle { adam, ema } => optimise(net, adam, ema, &r.loss(net)?, t, step),
            Engine::Fused(f) => {
                let loss = f.regression_grad(net, r)?;
                f.apply(loss, t, step)
            }
        }
    }

    /// Adam steps taken.
    pub fn steps(&self) -> usize {
        match self {
            Engine::Candle { adam, .. } => adam.step,
            Engine::Fused(f) => f.steps,
        }
    }

    /// The current weights, EMA and Adam moments as tensors on the network's device.
    pub fn state(&self, net: &Model) -> Result<State> {
        Ok(match self {
            Engine::Candle { adam, ema } => State {
                params: net
                    .vars()
                    .iter()
                    .map(|(_, p)| p.as_tensor().clone())
                    .collect(),
                ema: ema.clone(),
                adam_m: adam.m.clone(),
                adam_v: adam.v.clone(),
            },
            Engine::Fused(f) => {
                let dev = net.device();
                State {
                    params: f.mlp.to_tensors(f.mlp.params(), dev)?,
                    ema: self.ema(net)?,
                    adam_m: f.mlp.to_tensors(&f.m, dev)?,
                    adam_v: f.mlp.to_tensors(&f.v, dev)?,
                }
            }
        })
    }

    /// The EMA of the weights as tensors on the network's device (empty when none is kept).
    pub fn ema(&self, net: &Model) -> Result<Vec<Tensor>> {
        Ok(match self {
            Engine::Candle { ema, .. } => ema.clone(),
            Engine::Fused(f) if f.ema.is_empty() => Vec::new(),
            Engine::Fused(f) => f.mlp.to_tensors(&f.ema, net.device())?,
        })
    }

    /// Writes the engine's weights into the network's variables (a no-op for candle).
    pub fn sync(&self, net: &Model) -> Result<()> {
        if let Engine::Fused(f) = self {
            for ((_, var), t) in net
                .vars()
                .iter()
                .zip(f.mlp.to_tensors(f.mlp.params(), net.device())?)
            {
                var.set(&t.to_dtype(var.dtype())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Arch, ModelConfig};
    use crate::objective::Weighting;
    use crate::process::ProcessConfig;
    use crate::score::Parameterisation;
    use crate::target::GaussianMixture;
    use crate::train::DataSource;
    use candle_core::DType;
    use candle_core::Device;
    use rand::SeedableRng;

    /// Four steps of the fused engine (weights, Adam moments, EMA) follow the candle engine: equal
    /// losses to 1e-5 and equal weights and EMA to 1e-4 relative (Adam's first steps move every
    /// weight by about ±lr, so a gradient within rounding of zero may move either way).
    #[test]
    fn fused_engine_follows_the_candle_engine() -> Result<()> {
        let dev = Device::Cpu;
        let source = DataSource::Mixture(GaussianMixture::named("anisotropic3")?);
        let t = TrainConfig {
            batch: 700,
            grad_clip: 0.5,
            warmup: 2,
            weight_decay: 0.01,
            ..TrainConfig::default()
        };
        for (objective, process, param) in [
            (
                ObjectiveConfig::Dsm {
                    weighting: Weighting::Sigma2,
                },
                ProcessConfig::vp_default(),
                Parameterisation::X0,
            ),
            // EDM: the fused engine feeds the network c_in·x̃ and c_noise as candle does
            (
                ObjectiveConfig::Edm {
                    p_mean: -1.2,
                    p_std: 1.2,
                },
                ProcessConfig::vp_default(),
                Parameterisation::Edm,
            ),
            (
                ObjectiveConfig::Dsm {
                    weighting: Weighting::Sigma2,
                },
                ProcessConfig::from_name("ve", 5.0)?,
                Parameterisation::Edm,
            ),
            (
                ObjectiveConfig::Ncsn { levels: 5 },
                ProcessConfig::from_name("ve", 5.0)?,
                Parameterisation::X0,
            ),
            (
                ObjectiveConfig::Ism { t: 0.3 },
                ProcessConfig::vp_default(),
                Parameterisation::X0,
            ),
            (
                ObjectiveConfig::Ssm {
                    t: 0.2,
                    projection: crate::objective::Probe::Rademacher,
                    projections: 2,
                    variance_reduced: false,
                },
                ProcessConfig::from_name("ve", 5.0)?,
                Parameterisation::X0,
            ),
            (
                ObjectiveConfig::Ssm {
                    t: 0.1,
                    projection: crate::objective::Probe::Gaussian,
                    projections: 1,
                    variance_reduced: true,
                },
                ProcessConfig::vp_default(),
                Parameterisation::X0,
            ),
        ] {
            let mut cfg = ModelConfig::default_for(2, process);
            cfg.arch = Arch {
                width: 64,
                parameterisation: param,
                ..Arch::default()
            };
            let net = Model::new(cfg, &mut ChaCha8Rng::seed_from_u64(3), &dev)?;
            let ema0: Vec<Tensor> = net
                .vars()
                .iter()
                .map(|(_, p)| p.as_tensor().copy())
                .collect::<candle_core::Result<_>>()?;
            let run = |fused: bool| -> Result<(Vec<f64>, State)> {
                let copy = Model::new(net.config.clone(), &mut ChaCha8Rng::seed_from_u64(3), &dev)?;
                let mut engine =
                    Engine::new(&copy, &objective, Adam::new(copy.vars())?, ema0.clone())?;
                if !fused {
                    engine = Engine::Candle {
                        adam: Adam::new(copy.vars())?,
                        ema: ema0.clone(),
                    };
                }
                assert_eq!(engine.name(), if fused { "fused" } else { "candle" });
                let mut rng = ChaCha8Rng::seed_from_u64(9);
                let mut losses = Vec::new();
                for step in 0..4 {
                    let batch = source.batch(t.batch, 1.0, &mut rng, &dev, None, None)?;
                    losses.push(
                        engine
                            .step(&copy, &objective, &batch, &mut rng, &t, step)?
                            .0,
                    );
                }
                Ok((losses, engine.state(&copy)?))
            };
            let (lf, sf) = run(true)?;
            let (lc, sc) = run(false)?;
            for (a, b) in lf.iter().zip(&lc) {
                assert!((a - b).abs() < 1e-5 * b.abs(), "losses {lf:?} vs {lc:?}");
            }
            for (what, a, b) in [
                ("weights", &sf.params, &sc.params),
                ("ema", &sf.ema, &sc.ema),
            ] {
                let (mut num, mut den) = (0.0f64, 0.0f64);
                for (x, y) in a.iter().zip(b) {
                    num += (x - y)?
                        .sqr()?
                        .sum_all()?
                        .to_dtype(DType::F64)?
                        .to_scalar::<f64>()?;
                    den += y
                        .sqr()?
                        .sum_all()?
                        .to_dtype(DType::F64)?
                        .to_scalar::<f64>()?;
                }
                let rel = (num / den).sqrt();
                assert!(
                    rel < 1e-4,
                    "{objective:?} {what}: relative difference {rel:e}"
                );
            }
        }
        Ok(())
    }
}
