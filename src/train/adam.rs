//! Adam / AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019) and an EMA of the weights, with state
//! that checkpoints can save and restore exactly.

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// Adam moments m, v for each parameter and the number of steps taken.
pub struct Adam {
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// Steps taken so far (bias corrections use step + 1).
    pub step: usize,
}

/// Hyper-parameters of one Adam step.
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Factor applied to every gradient first (global-norm clipping).
    pub grad_scale: f64,
}

/// The gradients of `params` in order; a parameter the loss does not depend on (an energy
/// network's output bias: the score ∇x f ignores it) gets a zero gradient.
pub fn collect_grads(params: &[(String, Var)], grads: &GradStore) -> Result<Vec<Tensor>> {
    params
        .iter()
        .map(|(_, var)| match grads.get(var.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => Ok(var.as_tensor().zeros_like()?),
        })
        .collect()
}

/// Global L2 norm of a list of gradients, accumulated in f64.
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let mut total = 0.0f64;
    for g in grads {
        total += g
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    Ok(total.sqrt())
}

impl Adam {
    /// Zero moments shaped like the parameters.
    pub fn new(params: &[(String, Var)]) -> Result<Self> {
        let zeros = || {
            params
                .iter()
                .map(|(_, p)| Ok(p.as_tensor().zeros_like()?))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Adam {
            m: zeros()?,
            v: zeros()?,
            step: 0,
        })
    }

    /// θ ← θ − lr·(m̂/(√v̂ + ε) + wd·θ), with m̂, v̂ the bias-corrected moments.
    pub fn update(
        &mut self,
        params: &[(String, Var)],
        grads: &[Tensor],
        h: &AdamStep,
    ) -> Result<()> {
        self.step += 1;
        let c1 = 1.0 - h.beta1.powi(self.step as i32);
        let c2 = 1.0 - h.beta2.powi(self.step as i32);
        for (i, ((_, p), g)) in params.iter().zip(grads).enumerate() {
            // detached: otherwise each moment records the op that made it, and through it every
            // earlier step's moments and gradients (memory grows by the graph every step)
            let g = (g * h.grad_scale)?.detach();
            self.m[i] = ((&self.m[i] * h.beta1)? + (&g * (1.0 - h.beta1))?)?.detach();
            self.v[i] = ((&self.v[i] * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?.detach();
            let denom = ((&self.v[i] / c2)?.sqrt()? + h.eps)?;
            let mut delta = ((&self.m[i] / c1)? / denom)?;
            if h.weight_decay > 0.0 {
                delta = (delta + (p.as_tensor() * h.weight_decay)?)?;
            }
            p.set(&(p.as_tensor() - (delta * h.lr)?)?.detach())?;
        }
        Ok(())
    }
}

impl AdamStep {
    /// One Adam step over flat buffers laid out alike (θ, moments m and v, gradient g), the same
    /// arithmetic as `Adam::update`, and the EMA ema ← d·ema + (1 − d)·θ in the same pass.
    /// `step` counts this step (bias corrections 1 − β^step).
    pub fn apply_flat(
        &self,
        step: usize,
        (theta, m, v): (&mut [f32], &mut [f32], &mut [f32]),
        g: &[f32],
        ema: Option<(&mut [f32], f64)>,
    ) {
        let c1 = (1.0 - self.beta1.powi(step as i32)) as f32;
        let c2 = (1.0 - self.beta2.powi(step as i32)) as f32;
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let (scale, lr, eps, wd) = (
            self.grad_scale as f32,
            self.lr as f32,
            self.eps as f32,
            self.weight_decay as f32,
        );
        // chunks of 8192 values spread over the threads; the EMA follows each chunk's update in
        // the same pass (one fork-join per step, not two)
        const CHUNK: usize = 8192;
        let (ema, d) = match ema {
            Some((e, d)) => (e, d as f32),
            None => (&mut [][..], 1.0),
        };
        let mut emas: Vec<&mut [f32]> = ema.chunks_mut(CHUNK).collect();
        emas.resize_with(theta.len().div_ceil(CHUNK), || &mut []);
        let c = [scale, b1, b2, c1, c2, eps, wd, lr, d];
        let jobs = theta
            .chunks_mut(CHUNK)
            .zip(m.chunks_mut(CHUNK))
            .zip(v.chunks_mut(CHUNK))
            .zip(g.chunks(CHUNK))
            .zip(emas)
            .map(|((((theta, m), v), g), ema)| move || adam_chunk(theta, m, v, g, ema, c))
            .collect();
        crate::pool::run_all(jobs);
    }
}

crate::nn::kernels::multiversion! {
    /// `apply_flat` on one chunk; c = [grad scale, β₁, β₂, 1 − β₁^k, 1 − β₂^k, ε, weight decay,
    /// lr, EMA decay]. Zipped iterators (no indexing) so the loop vectorises.
    pub fn adam_chunk(
        theta: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        g: &[f32],
        ema: &mut [f32],
        c: [f32; 9],
    ) {
        let [scale, b1, b2, c1, c2, eps, wd, lr, d] = c;
        let it = theta.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g);
        it.for_each(|(((theta, m), v), g)| {
            let g = g * scale;
            *m = *m * b1 + g * (1.0 - b1);
            *v = *v * b2 + g * g * (1.0 - b2);
            let delta = (*m / c1) / ((*v / c2).sqrt() + eps) + wd * *theta;
            *theta -= delta * lr;
        });
        ema.iter_mut()
            .zip(theta.iter())
            .for_each(|(e, p)| *e = *e * d + p * (1.0 - d));
    }
}

/// Effective EMA decay at step k: min(decay, (1+k)/(10+k)), so short runs are not dominated by
/// the initial weights (0.999^600 ≈ 0.55; the peer's RESULTS finding 4).
pub fn ema_decay_at(decay: f64, step: usize) -> f64 {
    decay.min((1.0 + step as f64) / (10.0 + step as f64))
}

/// ema ← d·ema + (1 − d)·θ for every parameter.
pub fn ema_update(ema: &mut [Tensor], params: &[(String, Var)], d: f64) -> Result<()> {
    for (e, (_, p)) in ema.iter_mut().zip(params) {
        // detached, as Adam's moments: the product with the variable would be recorded
        *e = ((&*e * d)? + (p.as_tensor() * (1.0 - d))?)?.detach();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One Adam step moves each coordinate by lr·sign(g) (bias-corrected first step).
    #[test]
    fn first_step_is_lr_times_sign() -> Result<()> {
        let p = Var::new(&[1.0f32, -2.0, 0.5], &Device::Cpu)?;
        let params = vec![("p".to_string(), p.clone())];
        let mut adam = Adam::new(&params)?;
        let g = Tensor::new(&[0.3f32, -4.0, 1e-3], &Device::Cpu)?;
        let h = AdamStep {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-12,
            weight_decay: 0.0,
            grad_scale: 1.0,
        };
        adam.update(&params, &[g], &h)?;
        let got: Vec<f32> = p.as_tensor().to_vec1()?;
        for (a, b) in got.iter().zip([0.9f32, -1.9, 0.4]) {
            assert!((a - b).abs() < 1e-5, "{got:?}");
        }
        Ok(())
    }

    /// The moments and the EMA hold values, not graphs: a gradient taken through a variable and
    /// an EMA mixed with one record no op, so memory does not grow step after step (it did,
    /// by every step's graph, before they were detached).
    #[test]
    fn moments_and_ema_record_no_graph() -> Result<()> {
        let p = Var::new(&[1.0f32, -2.0], &Device::Cpu)?;
        let params = vec![("p".to_string(), p.clone())];
        let mut adam = Adam::new(&params)?;
        let mut ema = vec![p.as_tensor().copy()?];
        let h = AdamStep {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            grad_scale: 1.0,
        };
        for _ in 0..3 {
            // a gradient that is itself a function of the variable
            let g = (p.as_tensor() * 2.0)?;
            assert!(g.track_op());
            adam.update(&params, &[g], &h)?;
            ema_update(&mut ema, &params, 0.9)?;
        }
        assert!(!adam.m[0].track_op() && !adam.v[0].track_op() && !ema[0].track_op());
        Ok(())
    }

    /// Adam minimises a quadratic ½‖θ − c‖².
    #[test]
    fn minimises_a_quadratic() -> Result<()> {
        let p = Var::new(&[5.0f32, -3.0], &Device::Cpu)?;
        let params = vec![("p".to_string(), p.clone())];
        let c = Tensor::new(&[1.0f32, 2.0], &Device::Cpu)?;
        let mut adam = Adam::new(&params)?;
        let h = AdamStep {
            lr: 0.05,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            grad_scale: 1.0,
        };
        for _ in 0..2000 {
            let loss = (p.as_tensor() - &c)?.sqr()?.sum_all()?.affine(0.5, 0.0)?;
            let grads = collect_grads(&params, &loss.backward()?)?;
            adam.update(&params, &grads, &h)?;
        }
        let got: Vec<f32> = p.as_tensor().to_vec1()?;
        assert!(
            (got[0] - 1.0).abs() < 1e-2 && (got[1] - 2.0).abs() < 1e-2,
            "{got:?}"
        );
        Ok(())
    }
}
