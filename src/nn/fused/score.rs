//! A `Model` on the fused kernels: raw outputs and tangents on tensors, the score s = A·out + B·x
//! and its quadratic forms in the same pass, and the host path of the likelihood's solver.

use super::FusedMlp;
use crate::flat::with_values;
use crate::flat::Buf;
use crate::nn::Model;
use crate::process::Process;
use crate::score::{pf_coefficients, HostDivergence, ScoreModel};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// The fused kernels on tensors: x, t and the directions v = (v [m, n, d], m) borrowed as f32
/// (copied where they are not contiguous f32 CPU tensors), the raw outputs out [n × o] and
/// tangents [m × n × o] written into fresh buffers, then `then(x, t, v, out, tan)` run while the
/// inputs are still borrowed.
#[allow(clippy::type_complexity)]
fn run<R>(
    f: &FusedMlp,
    x: &Tensor,
    t: &Tensor,
    v: Option<(&Tensor, usize)>,
    then: impl FnOnce(&[f32], &[f32], &[f32], &mut [f32], &[f32]) -> Result<R>,
) -> Result<(Vec<f32>, Vec<f32>, R)> {
    let (n, o, m) = (t.elem_count(), f.out_dim(), v.map_or(0, |(_, m)| m));
    let (mut out, mut tan) = (vec![0f32; n * o], vec![0f32; m * n * o]);
    let no_v = Tensor::zeros(0, DType::F32, x.device())?;
    let r = with_values::<f32, _>(x, |xs| {
        with_values::<f32, _>(t, |ts| {
            with_values::<f32, _>(v.map_or(&no_v, |(v, _)| v), |vs| {
                f.forward_into(xs, ts, v.map(|(_, m)| (vs, m)), &mut out, &mut tan)?;
                then(xs, ts, vs, &mut out, &tan)
            })
        })
    })?;
    Ok((out, tan, r))
}

/// Raw outputs [n, o] at x [n, d], t \[n\] (f32 tensors).
pub fn raw(f: &FusedMlp, x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let (out, _, ()) = run(f, x, t, None, |_, _, _, _, _| Ok(()))?;
    Ok(Tensor::from_vec(
        out,
        (t.elem_count(), f.out_dim()),
        x.device(),
    )?)
}

/// Raw outputs [n, o] and their tangents [m, n, o] along v [m, n, d].
pub fn raw_with_tangents(
    f: &FusedMlp,
    x: &Tensor,
    t: &Tensor,
    v: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (m, n, o) = (v.dims()[0], t.elem_count(), f.out_dim());
    let (out, tan, ()) = run(f, x, t, Some((v, m)), |_, _, _, _, _| Ok(()))?;
    let dev = x.device();
    Ok((
        Tensor::from_vec(out, (n, o), dev)?,
        Tensor::from_vec(tan, (m, n, o), dev)?,
    ))
}

/// The score (and with directions v [m × n × d] the quadratic forms vᵀ J_s v [m × n]): the
/// outputs land in one buffer, become s = A·out + B·x in place with (A, B) computed once per run
/// of equal times, and the forms are summed in the same pass.
pub fn score(
    model: &Model,
    f: &FusedMlp,
    x: &Tensor,
    t: &Tensor,
    v: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    let (n, d, m) = model.check_inputs(x, v)?;
    if t.elem_count() != n {
        bail!("{} times for {n} points", t.elem_count());
    }
    let (s, _, q) = run(f, x, t, v.map(|v| (v, m)), |xs, ts, vs, s, tan| {
        Ok(outputs_to_score(model, xs, ts, (vs, m), s, tan))
    })?;
    let dev = x.device();
    let s = Tensor::from_vec(s, (n, d), dev)?.to_dtype(x.dtype())?;
    let q = v
        .map(|_| Tensor::from_vec(q, (m, n), dev)?.to_dtype(x.dtype()))
        .transpose()?;
    Ok((s, q))
}

/// Raw outputs to scores in place, s = A·out + B·x with (A, B) computed once per run of equal
/// times, and the quadratic forms q [m × n] = vᵀ J_s v = vᵀ(A·J_out v + B·v) from the output
/// tangents along v [m × n × d].
fn outputs_to_score(
    model: &Model,
    xs: &[f32],
    ts: &[f32],
    (vs, m): (&[f32], usize),
    s: &mut [f32],
    tan: &[f32],
) -> Vec<f32> {
    let (n, d) = (ts.len(), model.config.dim);
    let (p, param) = (model.process(), model.output_map());
    let mut q = vec![0f32; m * n];
    // runs of rows at one time (a sampler's whole batch): one (A, B) and flat passes each
    let mut r0 = 0;
    while r0 < n {
        let tr = ts[r0];
        let r1 = r0 + 1 + ts[r0 + 1..].iter().take_while(|&&t| t == tr).count();
        let (a, b) = param.score_coefficients(p.alpha(tr as f64), p.sigma(tr as f64));
        let (a, b) = (a as f32, b as f32);
        for k in 0..m {
            let (at, to) = ((k * n + r0) * d, (k * n + r1) * d);
            let rows = tan[at..to].chunks_exact(d).zip(vs[at..to].chunks_exact(d));
            for (q, (jv, vr)) in q[k * n + r0..k * n + r1].iter_mut().zip(rows) {
                *q = jv.iter().zip(vr).map(|(j, v)| (a * j + b * v) * v).sum();
            }
        }
        let (at, to) = (r0 * d, r1 * d);
        for (o, xv) in s[at..to].iter_mut().zip(&xs[at..to]) {
            *o = a * *o + b * xv;
        }
        r0 = r1;
    }
    q
}

impl HostDivergence for Model {
    fn score_and_trace(
        &self,
        (y, stride): (&[f64], usize),
        t: f64,
        (v, m, w): (&[f32], usize, f64),
        s: &mut [f64],
        trace: &mut [f64],
    ) -> Result<()> {
        let Some(f) = &self.fused else {
            bail!("this network has no host path (the candle engine is selected)");
        };
        let (d, n) = (self.dim(), trace.len());
        if f.out_dim() != d
            || y.len() < n * stride
            || stride < d
            || s.len() != n * d
            || v.len() != m * n * d
        {
            bail!("host buffers do not hold {n} points of dimension {d} and {m} directions");
        }
        let xs: Vec<f32> = y
            .chunks_exact(stride)
            .flat_map(|row| row[..d].iter().map(|&x| x as f32))
            .collect();
        let ts = vec![t as f32; n];
        let (mut out, mut tan) = (vec![0f32; n * d], vec![0f32; m * n * d]);
        f.forward_into(&xs, &ts, Some((v, m)), &mut out, &mut tan)?;
        let q = outputs_to_score(self, &xs, &ts, (v, m), &mut out, &tan);
        s.iter_mut().zip(&out).for_each(|(s, &o)| *s = o as f64);
        self.process().space().project(s);
        for (i, tr) in trace.iter_mut().enumerate() {
            *tr = w * (0..m).map(|k| q[k * n + i] as f64).sum::<f64>();
        }
        Ok(())
    }
}

/// The likelihood's ODE right-hand side on flat host rows [x, ∫∇·v]: [f x − ½g² s, dof·f − ½g² ∇·s],
/// the host twin of `score::pf_velocity` and the divergence, with buffers reused by every call.
pub struct HostRhs<'a> {
    host: &'a dyn HostDivergence,
    process: &'a dyn Process,
    d: usize,
    /// Degrees of freedom of the space (∇·(f x) = dof·f).
    dof: f64,
    /// Directions [m × n × d] and the weight of their forms.
    v: (Vec<f32>, usize, f64),
    s: Vec<f64>,
    div: Vec<f64>,
}

impl<'a> HostRhs<'a> {
    /// The right-hand side for n points of dimension d on a space of `dof` dimensions, the
    /// divergence as w Σ_k v_kᵀ J v_k along directions (v, m, w).
    pub fn new(
        host: &'a dyn HostDivergence,
        process: &'a dyn Process,
        (n, d, dof): (usize, usize, f64),
        v: (Vec<f32>, usize, f64),
    ) -> Self {
        HostRhs {
            host,
            process,
            d,
            dof,
            v,
            s: vec![0.0; n * d],
            div: vec![0.0; n],
        }
    }

    /// out = f(y, t).
    pub fn eval(&mut self, y: &Buf, t: f64, out: &mut Buf) -> Result<()> {
        let d = self.d;
        let (v, m, w) = (&self.v.0, self.v.1, self.v.2);
        self.host
            .score_and_trace((y.host()?, d + 1), t, (v, m, w), &mut self.s, &mut self.div)?;
        let (a, half_g2) = pf_coefficients(self.process, t);
        let rows = y
            .host()?
            .chunks_exact(d + 1)
            .zip(self.s.chunks_exact(d))
            .zip(&self.div);
        for (o, ((y, s), div)) in out.host_mut()?.chunks_exact_mut(d + 1).zip(rows) {
            for j in 0..d {
                o[j] = y[j] * a - s[j] * half_g2;
            }
            o[d] = div * -half_g2 + self.dof * a;
        }
        Ok(())
    }
}
