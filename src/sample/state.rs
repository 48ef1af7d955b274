//! The samplers' state: x [n × d] and every intermediate (scores, ε̂, x̂0, noise, history) in
//! buffers (`flat::Buf`) allocated once per run and reused by every step: flat f64 vectors on the
//! CPU, where x becomes a tensor only to evaluate the score, and tensors on a GPU.

use super::{fill_standard_normals, Trace};
use crate::flat::{device_mean_row_norm, host_mean_row_norm};
pub use crate::flat::{lincomb, Buf};
use crate::process::{Process, Space};
use crate::score::{tweedie_coefficients, ScoreModel};
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::RngCore;
use rand_chacha::ChaCha8Rng;

/// Standard normal noise for one state, in the process's space (projected onto it for
/// particles): drawn on the host (`fill_standard_normals`) or by the device's generator, seeded
/// once from the sampler's rng.
pub struct Noise {
    pub z: NoiseBuf,
    space: Space,
}

/// Where the noise lives.
pub enum NoiseBuf {
    Host(Vec<f32>),
    Device(Tensor),
}

impl Noise {
    /// Noise buffer shaped like `like`, in `space`.
    pub fn like(like: &Buf, rng: &mut ChaCha8Rng, space: Space) -> Result<Self> {
        let z = match like {
            Buf::Host(v) => NoiseBuf::Host(vec![0.0; v.len()]),
            Buf::Device(t) => {
                if !t.device().is_cpu() {
                    t.device().set_seed(rng.next_u64())?;
                }
                NoiseBuf::Device(t.zeros_like()?)
            }
        };
        Ok(Noise { z, space })
    }

    /// z ← P N(0, I), P the projection onto the space (a tensor on the CPU, in tests, from the
    /// seeded host streams).
    pub fn draw(&mut self, rng: &mut ChaCha8Rng) -> Result<()> {
        match &mut self.z {
            NoiseBuf::Host(z) => {
                fill_standard_normals(z, rng);
                self.space.project(z);
            }
            NoiseBuf::Device(z) => {
                *z = if z.device().is_cpu() {
                    let v = super::standard_normals(z.elem_count(), rng);
                    Tensor::from_vec(v, z.shape(), z.device())?.to_dtype(z.dtype())?
                } else {
                    z.randn_like(0.0, 1.0)?
                };
                *z = self.space.project_tensor(z)?;
            }
        }
        Ok(())
    }

    /// Mean over rows (of length d) of their Euclidean norms.
    pub fn mean_row_norm(&self, d: usize) -> Result<f64> {
        match &self.z {
            NoiseBuf::Host(z) => Ok(host_mean_row_norm(z, d)),
            NoiseBuf::Device(z) => device_mean_row_norm(z, d),
        }
    }
}

/// The score model on sampler states shaped, typed and placed like the sampler's x_T.
pub struct ScoreField<'a> {
    model: &'a dyn ScoreModel,
    process: &'a dyn Process,
    like: Tensor,
    /// A zeroed buffer of the state's kind (host or device), cloned for every new buffer.
    zero: Buf,
}

/// What `ScoreField::predict` returns in place of the score.
#[derive(Clone, Copy, Debug)]
pub enum Prediction {
    /// ε̂ = −σ_t s(x, t).
    Eps,
    /// Tweedie's x̂0 = (x + σ_t² s(x, t))/α_t.
    X0,
}

impl<'a> ScoreField<'a> {
    /// The field, and x_T as the state (on the host for a CPU tensor, on its device otherwise).
    pub fn new(
        model: &'a dyn ScoreModel,
        process: &'a dyn Process,
        x: Tensor,
    ) -> Result<(Self, Buf)> {
        let state = Buf::of(&x)?;
        let field = ScoreField {
            model,
            process,
            like: x,
            zero: state.zeros()?,
        };
        Ok((field, state))
    }

    /// A zeroed buffer like the state.
    pub fn buffer(&self) -> Buf {
        self.zero.clone()
    }

    /// Values per row (the data dimension).
    pub fn row_len(&self) -> usize {
        self.like.elem_count() / self.like.dims()[0].max(1)
    }

    /// out ← s(x, t), counted and checked by the trace.
    pub fn score(&self, x: &Buf, t: f64, tr: &mut Trace, step: usize, out: &mut Buf) -> Result<()> {
        out.assign(tr.score(self.model, &self.tensor(x)?, t, step)?)
    }

    /// out ← ε̂ or x̂0 at (x, t), from one counted score evaluation.
    pub fn predict(
        &self,
        what: Prediction,
        x: &Buf,
        t: f64,
        tr: &mut Trace,
        step: usize,
        out: &mut Buf,
    ) -> Result<()> {
        self.score(x, t, tr, step, out)?;
        let (a, s) = (self.process.alpha(t), self.process.sigma(t));
        match what {
            Prediction::Eps => lincomb(out, -s, &[]),
            Prediction::X0 => {
                let (c_x, c_s) = tweedie_coefficients(a, s);
                lincomb(out, c_s, &[(c_x, x)])
            }
        }
    }

    /// The state as a tensor like x_T.
    pub fn tensor(&self, x: &Buf) -> Result<Tensor> {
        x.tensor(&self.like)
    }

    /// `Trace::record` of the state at t (a tensor is built only if the trajectory is kept).
    pub fn record(&self, x: &Buf, t: f64, tr: &mut Trace) -> Result<()> {
        tr.record_with(t, || self.tensor(x))
    }
}

/// out ← out + c·z with z ~ N(0, I) drawn into `z`.
pub fn add_noise(out: &mut Buf, c: f64, z: &mut Noise, rng: &mut ChaCha8Rng) -> Result<()> {
    z.draw(rng)?;
    match (out, &z.z) {
        (Buf::Host(out), NoiseBuf::Host(z)) => out
            .iter_mut()
            .zip(z.iter())
            .for_each(|(o, &z)| *o += c * z as f64),
        (out @ Buf::Device(_), NoiseBuf::Device(z)) => {
            lincomb(out, 1.0, &[(c, &Buf::Device(z.clone()))])?
        }
        _ => bail!("state and noise on different devices"),
    }
    Ok(())
}

/// One update x ← c_x·x + c_s·s(x, t) + c_z·z with z ~ N(0, I): the reverse-SDE predictors,
/// Langevin steps, DDIM and first-order DPM-Solver.
#[derive(Clone, Copy, Debug)]
pub struct Update {
    pub cx: f64,
    pub cs: f64,
    pub cz: f64,
}

/// A chain of `Update`s: the state with its score and noise buffers.
pub struct Chain<'a> {
    pub field: ScoreField<'a>,
    pub x: Buf,
    pub s: Buf,
    pub z: Noise,
}

impl<'a> Chain<'a> {
    pub fn new(
        model: &'a dyn ScoreModel,
        process: &'a dyn Process,
        x: Tensor,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        let (field, x) = ScoreField::new(model, process, x)?;
        let (s, z) = (field.buffer(), Noise::like(&x, rng, process.space())?);
        Ok(Chain { field, x, s, z })
    }

    /// s ← s(x, t).
    pub fn score(&mut self, t: f64, tr: &mut Trace, step: usize) -> Result<()> {
        self.field.score(&self.x, t, tr, step, &mut self.s)
    }

    /// x ← c_x x + c_s s + c_z z with the current s and z.
    pub fn combine(&mut self, u: Update) -> Result<()> {
        const CHUNK: usize = 4096;
        match (&mut self.x, &self.s, &self.z.z) {
            (Buf::Host(x), Buf::Host(s), NoiseBuf::Host(z)) => {
                crate::pool::for_each_chunk(x, CHUNK, |i, x| {
                    let at = i * CHUNK..i * CHUNK + x.len();
                    let it = x.iter_mut().zip(&s[at.clone()]).zip(&z[at]);
                    it.for_each(|((x, s), z)| *x = u.cx * *x + u.cs * s + u.cz * *z as f64);
                });
            }
            (Buf::Device(_), _, NoiseBuf::Device(z)) => {
                let z = Buf::Device(z.clone());
                lincomb(&mut self.x, u.cx, &[(u.cs, &self.s), (u.cz, &z)])?;
            }
            _ => bail!("state, score and noise on different devices"),
        }
        Ok(())
    }

    /// One full update at t: s ← s(x, t), z ← N(0, I) unless c_z = 0 (z's old values then count
    /// zero times), then `combine`.
    pub fn step(
        &mut self,
        u: Update,
        t: f64,
        rng: &mut ChaCha8Rng,
        tr: &mut Trace,
        i: usize,
    ) -> Result<()> {
        self.score(t, tr, i)?;
        if u.cz != 0.0 {
            self.z.draw(rng)?;
        }
        self.combine(u)
    }

    pub fn record(&self, t: f64, tr: &mut Trace) -> Result<()> {
        self.field.record(&self.x, t, tr)
    }

    pub fn into_tensor(self) -> Result<Tensor> {
        self.field.tensor(&self.x)
    }
}

/// One `Update` per grid step, `rule(t, t_next, last)` (`last`: the noise-free mean).
pub fn run(
    rule: impl Fn(f64, f64, bool) -> Update,
    m: &dyn ScoreModel,
    p: &dyn Process,
    x: Tensor,
    ts: &[f64],
    rng: &mut ChaCha8Rng,
    tr: &mut Trace,
) -> Result<Tensor> {
    let mut chain = Chain::new(m, p, x, rng)?;
    for (i, w) in ts.windows(2).enumerate() {
        chain.step(rule(w[0], w[1], i + 2 == ts.len()), w[0], rng, tr, i)?;
        chain.record(w[1], tr)?;
    }
    chain.into_tensor()
}
