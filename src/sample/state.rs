//! The samplers' flat state: x [n × d] and every intermediate (scores, ε̂, x̂0, noise, history) in
//! f64 buffers allocated once per run and reused by every step. x becomes a tensor only to
//! evaluate the score, since `ScoreModel` works on tensors.

use super::{fill_standard_normals, Trace};
use crate::flat::{copy_values, unflat, values};
use crate::process::Process;
use crate::score::ScoreModel;
use anyhow::Result;
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;

/// The score model on flat states shaped, typed and placed like the sampler's x_T.
pub struct Field<'a> {
    model: &'a dyn ScoreModel,
    process: &'a dyn Process,
    like: Tensor,
}

/// What `Field::predict` returns in place of the score.
#[derive(Clone, Copy, Debug)]
pub enum Prediction {
    /// ε̂ = −σ_t s(x, t).
    Eps,
    /// Tweedie's x̂0 = (x + σ_t² s(x, t))/α_t.
    X0,
}

impl<'a> Field<'a> {
    /// The field, and x_T as the flat state.
    pub fn new(
        model: &'a dyn ScoreModel,
        process: &'a dyn Process,
        x: Tensor,
    ) -> Result<(Self, Vec<f64>)> {
        let state = values(&x)?;
        let field = Field {
            model,
            process,
            like: x,
        };
        Ok((field, state))
    }

    /// A zeroed buffer as long as the state.
    pub fn buffer(&self) -> Vec<f64> {
        vec![0.0; self.like.elem_count()]
    }

    /// Values per row (the data dimension).
    pub fn row_len(&self) -> usize {
        self.like.elem_count() / self.like.dims()[0].max(1)
    }

    /// out ← s(x, t), counted and checked by the trace.
    pub fn score(
        &self,
        x: &[f64],
        t: f64,
        tr: &mut Trace,
        step: usize,
        out: &mut [f64],
    ) -> Result<()> {
        let s = tr.score(self.model, &self.tensor(x)?, t, step)?;
        copy_values(&s, out)
    }

    /// out ← ε̂ or x̂0 at (x, t), from one counted score evaluation.
    pub fn predict(
        &self,
        what: Prediction,
        x: &[f64],
        t: f64,
        tr: &mut Trace,
        step: usize,
        out: &mut [f64],
    ) -> Result<()> {
        self.score(x, t, tr, step, out)?;
        let (a, s) = (self.process.alpha(t), self.process.sigma(t));
        match what {
            Prediction::Eps => lincomb(out, -s, &[]),
            Prediction::X0 => lincomb(out, s * s / a, &[(1.0 / a, x)]),
        }
        Ok(())
    }

    /// The flat state as a tensor like x_T.
    pub fn tensor(&self, x: &[f64]) -> Result<Tensor> {
        unflat(x, &self.like)
    }

    /// `Trace::record` of the state at t (a tensor is built only if the trajectory is kept).
    pub fn record(&self, x: &[f64], t: f64, tr: &mut Trace) -> Result<()> {
        tr.record_with(t, || self.tensor(x))
    }
}

/// out ← a·out + Σ c_i v_i (a = 0: out's old values are not read).
pub fn lincomb(out: &mut [f64], a: f64, terms: &[(f64, &[f64])]) {
    // one vectorised pass per term
    if a == 0.0 {
        out.fill(0.0);
    } else if a != 1.0 {
        out.iter_mut().for_each(|o| *o *= a);
    }
    for &(c, v) in terms {
        out.iter_mut().zip(v).for_each(|(o, v)| *o += c * v);
    }
}

/// out ← out + c·z with z ~ N(0, I) drawn into `z`.
pub fn add_noise(out: &mut [f64], c: f64, z: &mut [f32], rng: &mut ChaCha8Rng) {
    fill_standard_normals(z, rng);
    out.iter_mut()
        .zip(z.iter())
        .for_each(|(o, &z)| *o += c * z as f64);
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
    pub field: Field<'a>,
    pub x: Vec<f64>,
    pub s: Vec<f64>,
    pub z: Vec<f32>,
}

impl<'a> Chain<'a> {
    pub fn new(model: &'a dyn ScoreModel, process: &'a dyn Process, x: Tensor) -> Result<Self> {
        let (field, x) = Field::new(model, process, x)?;
        let (s, z) = (field.buffer(), vec![0.0; x.len()]);
        Ok(Chain { field, x, s, z })
    }

    /// s ← s(x, t).
    pub fn score(&mut self, t: f64, tr: &mut Trace, step: usize) -> Result<()> {
        self.field.score(&self.x, t, tr, step, &mut self.s)
    }

    /// x ← c_x x + c_s s + c_z z with the current s and z.
    pub fn combine(&mut self, u: Update) {
        use rayon::prelude::*;
        const CHUNK: usize = 4096;
        let x = self.x.par_chunks_mut(CHUNK);
        let it = x
            .zip(self.s.par_chunks(CHUNK))
            .zip(self.z.par_chunks(CHUNK));
        it.for_each(|((x, s), z)| {
            let it = x.iter_mut().zip(s).zip(z);
            it.for_each(|((x, s), z)| *x = u.cx * *x + u.cs * s + u.cz * *z as f64);
        });
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
            fill_standard_normals(&mut self.z, rng);
        }
        self.combine(u);
        Ok(())
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
    let mut chain = Chain::new(m, p, x)?;
    for (i, w) in ts.windows(2).enumerate() {
        chain.step(rule(w[0], w[1], i + 2 == ts.len()), w[0], rng, tr, i)?;
        chain.record(w[1], tr)?;
    }
    chain.into_tensor()
}
