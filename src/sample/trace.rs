//! What a sampler reports as it runs: `Trace` counts score evaluations (NFE), checks them for
//! NaN, can keep the trajectory, and tells a step callback (k-diffusion's `callback`) of each step.

use crate::process::Process;
use crate::score::{times, tweedie_coefficients, ScoreModel};
use anyhow::{bail, Result};
use candle_core::Tensor;

/// What a sampler's step callback sees after each step (k-diffusion's `callback`): step i
/// (0: x_T), its time t and the score evaluations so far.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub i: usize,
    pub t: f64,
    pub nfe: usize,
}

/// An observer of a sampling or training loop (a progress bar, a report, a library user's hook).
pub type Callback<S> = Box<dyn Fn(&S) + Send + Sync>;

/// Records NFE and (optionally) the states along a trajectory, and tells a callback of each step.
#[derive(Default)]
pub struct Trace {
    /// Number of score evaluations so far.
    pub nfe: usize,
    /// Keep (t, x_t) after every step.
    pub keep: bool,
    pub states: Vec<(f64, Tensor)>,
    /// Called after every step.
    pub callback: Option<Callback<Step>>,
    /// Steps recorded so far.
    pub recorded: usize,
}

impl Trace {
    /// s(x, t), counted, with a NaN check naming the step and time.
    pub fn score(
        &mut self,
        model: &dyn ScoreModel,
        x: &Tensor,
        t: f64,
        step: usize,
    ) -> Result<Tensor> {
        self.nfe += 1;
        // detach: a trained network's score carries its autograd graph, and each new state would
        // keep every earlier step's graph (and activations) alive
        let s = model
            .score(x, &times(t, x.dims()[0], x.dtype(), x.device())?)?
            .detach();
        if !all_finite(&s)? {
            bail!("the score is NaN or infinite at step {step} (t = {t:.6}); the model or the step size is unstable");
        }
        Ok(s)
    }

    /// Tweedie's denoiser x̂0 = (x + σ_t² s(x, t))/α_t, counted like `score`.
    pub fn denoise(
        &mut self,
        model: &dyn ScoreModel,
        p: &dyn Process,
        x: &Tensor,
        t: f64,
        step: usize,
    ) -> Result<Tensor> {
        let s = self.score(model, x, t, step)?;
        let (c_x, c_s) = tweedie_coefficients(p.alpha(t), p.sigma(t));
        Ok(((x * c_x)? + (s * c_s)?)?)
    }

    /// Called after every step with the new state.
    pub fn record(&mut self, t: f64, x: &Tensor) {
        if self.keep {
            self.states.push((t, x.clone()));
        }
        self.tell(t);
    }

    /// `record` for a state kept elsewhere: `x` builds its tensor only if the trajectory is kept.
    pub fn record_with(&mut self, t: f64, x: impl FnOnce() -> Result<Tensor>) -> Result<()> {
        if self.keep {
            self.states.push((t, x()?));
        }
        self.tell(t);
        Ok(())
    }

    /// Step `recorded` is done: tell the callback.
    fn tell(&mut self, t: f64) {
        if let Some(c) = &self.callback {
            c(&Step {
                i: self.recorded,
                t,
                nfe: self.nfe,
            });
        }
        self.recorded += 1;
    }
}

pub(crate) fn all_finite(x: &Tensor) -> Result<bool> {
    let s = x
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?;
    Ok(s.is_finite())
}
