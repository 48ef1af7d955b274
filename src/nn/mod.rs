//! Score networks: an MLP on [x, embed(t)] whose output is read through a `Parameterisation`.

pub mod fused;
pub mod gemm;
pub(crate) mod kernels;
#[cfg(target_arch = "x86_64")]
pub mod simd;

use crate::flat::with_values;
use crate::process::{Process, ProcessConfig};
use crate::score::{basis, column, DivergenceModel, HostDivergence, Parameterisation, ScoreModel};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
pub use fused::FusedMlp;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// Hidden-layer nonlinearity.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Silu,
    Softplus,
    Tanh,
}

impl Activation {
    fn apply(&self, z: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Silu => candle_nn::ops::silu(z)?,
            // softplus(z) = max(z, 0) + log(1 + e^{−|z|}), stable for large |z|
            Activation::Softplus => (z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?,
            Activation::Tanh => z.tanh()?,
        })
    }

    /// The activation and its first two derivatives at z: silu'' = σ(1 − σ)(2 + z(1 − 2σ)),
    /// softplus'' = σ(1 − σ), tanh'' = −2 tanh (1 − tanh²).
    fn apply_with_derivatives(&self, z: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (h, dh) = self.apply_with_derivative(z)?;
        let ddh = match self {
            Activation::Silu | Activation::Softplus => {
                let sig = candle_nn::ops::sigmoid(z)?;
                let s1 = (&sig * sig.affine(-1.0, 1.0)?)?;
                match self {
                    Activation::Silu => (s1 * ((z * sig.affine(-2.0, 1.0)?)? + 2.0)?)?,
                    _ => s1,
                }
            }
            Activation::Tanh => (&h * dh.affine(-2.0, 0.0)?)?,
        };
        Ok((h, dh, ddh))
    }

    /// The activation and its derivative at z: silu' = σ(z)(1 + z(1 − σ(z))), softplus' = σ(z),
    /// tanh' = 1 − tanh².
    fn apply_with_derivative(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.apply(z)?;
        let dh = match self {
            Activation::Silu => {
                let sig = candle_nn::ops::sigmoid(z)?;
                let one_minus = sig.affine(-1.0, 1.0)?;
                (&sig * ((z * one_minus)? + 1.0)?)?
            }
            Activation::Softplus => candle_nn::ops::sigmoid(z)?,
            Activation::Tanh => h.sqr()?.affine(-1.0, 1.0)?,
        };
        Ok((h, dh))
    }
}

/// Time embedding of t ∈ [t_min, T].
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Embedding {
    /// [sin 2πWt, cos 2πWt] with fixed W ~ N(0, scale²) (score_sde's GaussianFourierProjection).
    Fourier,
    /// Transformer-style [sin(1000 t ω_k), cos(1000 t ω_k)], ω_k = 10000^{−k/K} (DDPM).
    Sinusoidal,
}

/// Architecture of the MLP family (the `[model]` table of a run config).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Arch {
    /// Hidden width.
    pub width: usize,
    /// Number of hidden layers.
    pub depth: usize,
    pub activation: Activation,
    pub embedding: Embedding,
    /// Number of embedding features (even).
    pub embed_dim: usize,
    /// Standard deviation of the Fourier frequencies.
    pub fourier_scale: f64,
    pub parameterisation: Parameterisation,
}

impl Default for Arch {
    /// The peer's network: 32 Fourier features (scale 16), 3×128 SiLU, ε-prediction.
    fn default() -> Self {
        Arch {
            width: 128,
            depth: 3,
            activation: Activation::Silu,
            embedding: Embedding::Fourier,
            embed_dim: 32,
            fourier_scale: 16.0,
            parameterisation: Parameterisation::Eps,
        }
    }
}

/// Everything needed to rebuild a score network; stored in every checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Data dimension d.
    pub dim: usize,
    pub arch: Arch,
    pub process: ProcessConfig,
}

impl ModelConfig {
    /// The default architecture for data of dimension `dim` under `process`.
    pub fn default_for(dim: usize, process: ProcessConfig) -> Self {
        ModelConfig {
            dim,
            arch: Arch::default(),
            process,
        }
    }

    fn check(&self) -> Result<()> {
        let a = &self.arch;
        if self.dim == 0 || a.width == 0 || a.depth == 0 {
            bail!("model dim, width and depth must be positive");
        }
        if a.embed_dim == 0 || !a.embed_dim.is_multiple_of(2) {
            bail!(
                "model embed_dim must be a positive even number, got {}",
                a.embed_dim
            );
        }
        Ok(())
    }
}

/// An MLP score network s_θ(x, t) with its process (needed to turn outputs into scores).
pub struct ScoreNet {
    pub config: ModelConfig,
    /// Trainable parameters in a fixed order: layers.{i}.weight [out, in], layers.{i}.bias [out].
    pub params: Vec<(String, Var)>,
    /// Fixed embedding frequencies [embed_dim/2] ("embed.W", saved but not trained).
    pub embed_w: Tensor,
    process: Box<dyn Process>,
    device: Device,
    /// Compute dtype: f32 for training and sampling; f64 for exact gradient checks.
    dtype: DType,
    /// Frozen fused copy of the weights that inference runs on (see `for_inference`).
    fused: Option<FusedMlp>,
}

impl ScoreNet {
    /// New network with PyTorch's default initialisation U(±1/√fan_in), drawn from `rng`.
    pub fn new(config: ModelConfig, rng: &mut impl Rng, device: &Device) -> Result<Self> {
        config.check()?;
        let half = config.arch.embed_dim / 2;
        let w: Vec<f32> = match config.arch.embedding {
            Embedding::Fourier => (0..half)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(rng);
                    (z * config.arch.fourier_scale) as f32
                })
                .collect(),
            Embedding::Sinusoidal => (0..half)
                .map(|k| 10000f64.powf(-(k as f64) / half as f64) as f32)
                .collect(),
        };
        let embed_w = Tensor::from_vec(w, half, device)?;
        let mut params = Vec::new();
        let mut fan_in = config.dim + config.arch.embed_dim;
        for i in 0..=config.arch.depth {
            let out = if i == config.arch.depth {
                // an energy network outputs one scalar f_θ(x, t)
                if config.arch.parameterisation == Parameterisation::Energy {
                    1
                } else {
                    config.dim
                }
            } else {
                config.arch.width
            };
            let bound = 1.0 / (fan_in as f64).sqrt();
            let mut uniform = |len: usize| -> Vec<f32> {
                (0..len)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect()
            };
            let weight = Tensor::from_vec(uniform(out * fan_in), (out, fan_in), device)?;
            let bias = Tensor::from_vec(uniform(out), out, device)?;
            params.push((format!("layers.{i}.weight"), Var::from_tensor(&weight)?));
            params.push((format!("layers.{i}.bias"), Var::from_tensor(&bias)?));
            fan_in = out;
        }
        let process = config.process.build()?;
        Ok(ScoreNet {
            config,
            params,
            embed_w,
            process,
            device: device.clone(),
            dtype: DType::F32,
            fused: None,
        })
    }

    /// The network frozen for inference: on the CPU in f32, a non-energy network then runs on the
    /// fused kernels (`FusedMlp`), with the same numbers and no autograd graph. Later changes to
    /// `params` are not seen by the fused copy.
    pub fn for_inference(mut self) -> Result<Self> {
        let fusable = self.device.is_cpu()
            && self.dtype == DType::F32
            && self.config.arch.parameterisation != Parameterisation::Energy;
        self.fused = if fusable {
            Some(FusedMlp::from_net(&self)?)
        } else {
            None
        };
        Ok(self)
    }

    /// Whether inference runs on the fused CPU kernels.
    pub fn is_fused(&self) -> bool {
        self.fused.is_some()
    }

    /// The process the network was trained for.
    pub fn process(&self) -> &dyn Process {
        self.process.as_ref()
    }

    /// The same network computing in `dtype` (parameters converted; f64 for gradient checks).
    pub fn to_dtype(mut self, dtype: DType) -> Result<Self> {
        for (_, v) in self.params.iter_mut() {
            *v = Var::from_tensor(&v.as_tensor().to_dtype(dtype)?)?;
        }
        self.embed_w = self.embed_w.to_dtype(dtype)?;
        self.dtype = dtype;
        self.fused = None;
        Ok(self)
    }

    /// Compute dtype of the parameters.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Embedding features [n, embed_dim] of times t [n].
    fn embed(&self, t: &Tensor) -> Result<Tensor> {
        let t = t.to_dtype(self.dtype)?.unsqueeze(1)?;
        let scale = match self.config.arch.embedding {
            Embedding::Fourier => 2.0 * std::f64::consts::PI,
            Embedding::Sinusoidal => 1000.0,
        };
        let proj = t
            .broadcast_mul(&self.embed_w.unsqueeze(0)?)?
            .affine(scale, 0.0)?;
        Ok(Tensor::cat(&[proj.sin()?, proj.cos()?], 1)?)
    }

    /// Raw network output (in the configured parameterisation) for x [n, d] and t [n]; for an
    /// energy network, ∇x f_θ (d forward-mode tangents).
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        if self.config.arch.parameterisation == Parameterisation::Energy {
            return Ok(self.energy_jets(x, t, None)?.1);
        }
        Ok(self.run(x, t, None)?.0)
    }

    /// The scalar f_θ(x, t) [n] of an energy network (−energy: the score is its gradient).
    pub fn energy(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        if self.config.arch.parameterisation != Parameterisation::Energy {
            bail!(
                "this network predicts a vector ({:?}), not an energy",
                self.config.arch.parameterisation
            );
        }
        Ok(self.run(x, t, None)?.0.squeeze(1)?)
    }

    /// For an energy network: f [n, 1], ∇x f [n, d] and, for directions v [m, n, d], the second
    /// directional derivatives vᵀ(∇²f)v [m, n], by first- and second-order forward-mode tangents:
    /// a linear layer maps both to ·Wᵀ (no bias); an activation maps a tangent ż to a'(z)ż and the
    /// second-order z̈ to a''(z)ż² + a'(z)z̈. Ordinary differentiable ops: exact parameter gradients.
    pub fn energy_jets(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (n, d) = x.dims2()?;
        let m = v.map_or(0, |v| v.dims()[0]);
        // first-order tangents: the d unit vectors (for the gradient), then the m directions v
        let eye = basis(n, d, self.dtype, x.device())?;
        let dirs = match v {
            Some(v) => Tensor::cat(&[eye, v.to_dtype(self.dtype)?], 0)?,
            None => eye,
        };
        let k = d + m;
        let mut tan = dirs.reshape((k * n, d))?;
        let mut second: Option<Tensor> = None;
        let mut h = Tensor::cat(&[x.to_dtype(self.dtype)?, self.embed(t)?], 1)?;
        let layers = self.params.len() / 2;
        for i in 0..layers {
            let (w, b, w_in) = self.layer(i, d)?;
            h = h.matmul(&w.t()?)?.broadcast_add(b)?;
            tan = tan.matmul(&w_in.t()?)?;
            second = second.map(|s| s.matmul(&w_in.t()?)).transpose()?;
            if i + 1 < layers {
                let (a, da, dda) = self.config.arch.activation.apply_with_derivatives(&h)?;
                let width = da.dims()[1];
                let t3 = tan.reshape((k, n, width))?;
                if m > 0 {
                    let tv = t3.narrow(0, d, m)?;
                    let mut s2 = tv.sqr()?.broadcast_mul(&dda)?;
                    if let Some(s) = &second {
                        s2 = (s2 + s.reshape((m, n, width))?.broadcast_mul(&da)?)?;
                    }
                    second = Some(s2.reshape((m * n, width))?);
                }
                tan = t3.broadcast_mul(&da)?.reshape((k * n, width))?;
                h = a;
            }
        }
        let t3 = tan.reshape((k, n))?;
        let grad = t3.narrow(0, 0, d)?.t()?.contiguous()?;
        let q = match (m, second) {
            (0, _) => None,
            (_, Some(s)) => Some(s.reshape((m, n))?),
            // a network without hidden layers is linear: no curvature
            (_, None) => Some(Tensor::zeros((m, n), self.dtype, x.device())?),
        };
        Ok((h, grad, q))
    }

    /// Raw output [n, d] and its forward-mode tangents J·v [m, n, d] along directions v [m, n, d],
    /// J = ∂out/∂x at fixed t (exact, not finite differences): a linear layer maps a tangent to
    /// v Wᵀ (no bias; the time embedding has no x-dependence, so only W's first d columns act on
    /// the input tangent) and an activation to act'(z) ⊙ v.
    pub fn forward_with_tangents(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (out, tan) = self.run(x, t, Some(v))?;
        Ok((out, tan.expect("tangents requested")))
    }

    /// The MLP, optionally pushing tangents v [m, n, d] forward alongside.
    fn run(&self, x: &Tensor, t: &Tensor, v: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let (n, d, m) = self.check_inputs(x, v)?;
        if let Some(f) = &self.fused {
            let (out, tan, ()) = run_fused(f, x, t, v.map(|v| (v, m)), |_, _, _, _, _| Ok(()))?;
            let (o, dev) = (f.out_dim(), x.device());
            let tan = v
                .map(|_| Tensor::from_vec(tan, (m, n, o), dev))
                .transpose()?;
            return Ok((Tensor::from_vec(out, (n, o), dev)?, tan));
        }
        let mut tan = v
            .map(|v| v.to_dtype(self.dtype)?.reshape((m * n, d)))
            .transpose()?;
        let mut h = Tensor::cat(&[x.to_dtype(self.dtype)?, self.embed(t)?], 1)?;
        let layers = self.params.len() / 2;
        for i in 0..layers {
            let (w, b, w_in) = self.layer(i, d)?;
            h = h.matmul(&w.t()?)?.broadcast_add(b)?;
            if let Some(v) = tan.as_mut() {
                *v = v.matmul(&w_in.t()?)?;
            }
            if i + 1 < layers {
                let (a, da) = self.config.arch.activation.apply_with_derivative(&h)?;
                if let Some(v) = tan.as_mut() {
                    let width = da.dims()[1];
                    *v = v
                        .reshape((m, n, width))?
                        .broadcast_mul(&da)?
                        .reshape((m * n, width))?;
                }
                h = a;
            }
        }
        let out_dim = h.dims()[1];
        Ok((h, tan.map(|v| v.reshape((m, n, out_dim))).transpose()?))
    }

    /// Layer i's weight, bias and the weight acting on input tangents: layer 0's first d columns
    /// (the time embedding has no x-dependence), the whole weight elsewhere.
    fn layer(&self, i: usize, d: usize) -> Result<(&Tensor, &Tensor, Tensor)> {
        let (w, b) = (
            self.params[2 * i].1.as_tensor(),
            self.params[2 * i + 1].1.as_tensor(),
        );
        let w_in = if i == 0 {
            w.narrow(1, 0, d)?.contiguous()?
        } else {
            w.clone()
        };
        Ok((w, b, w_in))
    }

    /// (n, d, m) of inputs x [n, d] and directions v [m, n, d], or an error naming the mismatch.
    fn check_inputs(&self, x: &Tensor, v: Option<&Tensor>) -> Result<(usize, usize, usize)> {
        let (n, d) = x.dims2()?;
        if d != self.config.dim {
            bail!(
                "input has dimension {d} but the network was built for {}",
                self.config.dim
            );
        }
        let m = match v.map(|v| v.dims3()).transpose()? {
            Some((m, vn, vd)) if (vn, vd) == (n, d) => m,
            Some(shape) => bail!("tangents have shape {shape:?}, expected [m, {n}, {d}]"),
            None => 0,
        };
        Ok((n, d, m))
    }

    /// Per-row α_t and σ_t as [n, 1] f32 columns.
    pub fn coefficients(&self, t: &Tensor) -> Result<(Tensor, Tensor)> {
        let p = self.process();
        Ok((
            column(t, self.dtype, |t| p.alpha(t))?,
            column(t, self.dtype, |t| p.sigma(t))?,
        ))
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }
}

/// The fused kernels on tensors: x, t and the directions v = (v [m, n, d], m) borrowed as f32
/// (copied where they are not contiguous f32 CPU tensors), the raw outputs out [n × o] and
/// tangents [m × n × o] written into fresh buffers, then `then(x, t, v, out, tan)` run while the
/// inputs are still borrowed.
#[allow(clippy::type_complexity)]
fn run_fused<R>(
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

impl ScoreNet {
    /// The score (and with directions v [m × n × d] the quadratic forms vᵀ J_s v [m × n]) on the
    /// fused kernels: the outputs land in one buffer, become s = A·out + B·x in place with (A, B)
    /// computed once per run of equal times, and the forms are summed in the same pass.
    fn fused_score(
        &self,
        f: &FusedMlp,
        x: &Tensor,
        t: &Tensor,
        v: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (n, d, m) = self.check_inputs(x, v)?;
        if t.elem_count() != n {
            bail!("{} times for {n} points", t.elem_count());
        }
        let (s, _, q) = run_fused(f, x, t, v.map(|v| (v, m)), |xs, ts, vs, s, tan| {
            Ok(self.outputs_to_score(xs, ts, (vs, m), s, tan))
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
        &self,
        xs: &[f32],
        ts: &[f32],
        (vs, m): (&[f32], usize),
        s: &mut [f32],
        tan: &[f32],
    ) -> Vec<f32> {
        let (n, d) = (ts.len(), self.config.dim);
        let (p, param) = (self.process(), self.config.arch.parameterisation);
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
}

impl HostDivergence for ScoreNet {
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
        let (d, n) = (self.config.dim, trace.len());
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
        let q = self.outputs_to_score(&xs, &ts, (v, m), &mut out, &tan);
        s.iter_mut().zip(&out).for_each(|(s, &o)| *s = o as f64);
        for (i, tr) in trace.iter_mut().enumerate() {
            *tr = w * (0..m).map(|k| q[k * n + i] as f64).sum::<f64>();
        }
        Ok(())
    }
}

impl ScoreModel for ScoreNet {
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        if let Some(f) = &self.fused {
            return Ok(self.fused_score(f, x, t, None)?.0);
        }
        let xf = x.to_dtype(self.dtype)?;
        let out = self.forward(&xf, t)?;
        let (alpha, sigma) = self.coefficients(t)?;
        Ok(self
            .config
            .arch
            .parameterisation
            .to_score(&out, &xf, &alpha, &sigma)?
            .to_dtype(x.dtype())?)
    }
    fn dim(&self) -> usize {
        self.config.dim
    }
}

/// Forward-mode tangents through the MLP, read through the parameterisation: every conversion
/// s = A·out + B·x is linear in (out, x), so J_s v = to_score(J_out v, v) — for ε̂: −J_ε v/σ; for
/// x̂0: (α J_x0 v − v)/σ²; for v̂: −(σ v + α J_v v)/((α² + σ²) σ); the score as is.
impl DivergenceModel for ScoreNet {
    fn host(&self) -> Option<&dyn HostDivergence> {
        self.fused.as_ref().map(|_| self as &dyn HostDivergence)
    }

    fn score_and_quadratic_forms(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        if let Some(f) = &self.fused {
            let (s, q) = self.fused_score(f, x, t, Some(v))?;
            return Ok((s, q.expect("directions given")));
        }
        let xf = x.to_dtype(self.dtype)?;
        let vf = v.to_dtype(self.dtype)?;
        if self.config.arch.parameterisation == Parameterisation::Energy {
            let (_, grad, q) = self.energy_jets(&xf, t, Some(&vf))?;
            let q = q.expect("directions given");
            return Ok((grad.to_dtype(x.dtype())?, q.to_dtype(x.dtype())?));
        }
        let (out, tan) = self.forward_with_tangents(&xf, t, &vf)?;
        let (alpha, sigma) = self.coefficients(t)?;
        let p = self.config.arch.parameterisation;
        let s = p.to_score(&out, &xf, &alpha, &sigma)?;
        let js_v = p.to_score(&tan, &vf, &alpha, &sigma)?;
        let q = (js_v * &vf)?.sum(2)?;
        Ok((s.to_dtype(x.dtype())?, q.to_dtype(x.dtype())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn shapes_and_parameter_count_match_the_peer() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let net = ScoreNet::new(
            ModelConfig::default_for(2, ProcessConfig::vp_default()),
            &mut rng,
            &Device::Cpu,
        )?;
        // the PyTorch reference's ScoreMLP has 37,762 parameters
        assert_eq!(net.num_params(), 37_762);
        let x = Tensor::zeros((5, 2), DType::F32, &Device::Cpu)?;
        let t = Tensor::full(0.5f32, 5, &Device::Cpu)?;
        assert_eq!(net.score(&x, &t)?.dims(), &[5, 2]);
        let bad = Tensor::zeros((5, 3), DType::F32, &Device::Cpu)?;
        assert!(net.forward(&bad, &t).is_err());
        Ok(())
    }

    /// An energy network's score is the gradient of its scalar output (f64 central differences).
    #[test]
    fn energy_score_is_the_gradient_of_the_energy() -> Result<()> {
        let dev = Device::Cpu;
        let mut config = ModelConfig::default_for(3, ProcessConfig::vp_default());
        config.arch = Arch {
            width: 16,
            depth: 2,
            activation: Activation::Tanh,
            parameterisation: Parameterisation::Energy,
            ..Arch::default()
        };
        let net = ScoreNet::new(config, &mut rand_chacha::ChaCha8Rng::seed_from_u64(2), &dev)?
            .to_dtype(DType::F64)?;
        let x = Tensor::new(&[[0.3f64, -1.0, 0.5], [1.2, 0.1, -0.4]], &dev)?;
        let t = Tensor::new(&[0.2f64, 0.7], &dev)?;
        let s: Vec<Vec<f64>> = net.score(&x, &t)?.to_vec2()?;
        for j in 0..3 {
            let h = 1e-6;
            let e = Tensor::zeros((2, 3), DType::F64, &dev)?
                .slice_assign(&[0..2, j..j + 1], &Tensor::full(h, (2, 1), &dev)?)?;
            let fd = ((net.energy(&(&x + &e)?, &t)? - net.energy(&(&x - &e)?, &t)?)? / (2.0 * h))?;
            for (f, row) in fd.to_vec1::<f64>()?.iter().zip(&s) {
                assert!((f - row[j]).abs() < 1e-7, "∂f/∂x_{j}: fd {f} vs {}", row[j]);
            }
        }
        assert_eq!(net.energy(&x, &t)?.dims(), &[2]);
        Ok(())
    }

    /// The forward-mode divergence and probe forms of the score equal central finite differences
    /// of the score (f32, h = 1e-2) for every activation and parameterisation.
    #[test]
    fn tangent_divergence_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let (n, d) = (4, 3);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let xv: Vec<f64> = (0..n * d).map(|_| rng.sample(StandardNormal)).collect();
        let x = Tensor::from_vec(xv, (n, d), &dev)?;
        let t = Tensor::new(&[0.3f64, 0.05, 0.6, 0.9], &dev)?;
        let v = Tensor::from_vec(
            (0..n * d)
                .map(|i| if i % 3 == 1 { -1.0f64 } else { 1.0 })
                .collect::<Vec<_>>(),
            (1, n, d),
            &dev,
        )?;
        let h = 1e-2;
        for activation in [Activation::Silu, Activation::Softplus, Activation::Tanh] {
            for parameterisation in [
                Parameterisation::Eps,
                Parameterisation::X0,
                Parameterisation::V,
                Parameterisation::Score,
                Parameterisation::Energy,
            ] {
                let mut config = ModelConfig::default_for(d, ProcessConfig::vp_default());
                config.arch = Arch {
                    width: 32,
                    depth: 2,
                    activation,
                    parameterisation,
                    ..Arch::default()
                };
                let net = ScoreNet::new(config, &mut rng, &dev)?;
                // J·u by central differences, [n, d]
                let jvp = |u: &Tensor| -> Result<Tensor> {
                    let sp = net.score(&(&x + (u * h)?)?, &t)?;
                    let sm = net.score(&(&x - (u * h)?)?, &t)?;
                    Ok(((sp - sm)? / (2.0 * h))?)
                };
                let mut fd_div = Tensor::zeros(n, DType::F64, &dev)?;
                for j in 0..d {
                    let e = Tensor::zeros((n, d), DType::F64, &dev)?.slice_assign(
                        &[0..n, j..j + 1],
                        &Tensor::ones((n, 1), DType::F64, &dev)?,
                    )?;
                    fd_div = (fd_div + jvp(&e)?.narrow(1, j, 1)?.squeeze(1)?)?;
                }
                let (_, div) = net.score_and_divergence(&x, &t)?;
                let (_, q) = net.score_and_quadratic_forms(&x, &t, &v)?;
                let fd_q = (jvp(&v.squeeze(0)?)? * v.squeeze(0)?)?.sum(1)?;
                for (got, want) in [(div, fd_div), (q.squeeze(0)?, fd_q)] {
                    let (got, want): (Vec<f64>, Vec<f64>) = (got.to_vec1()?, want.to_vec1()?);
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() < 1e-3 * (1.0 + w.abs()),
                            "{activation:?} {parameterisation:?}: {got:?} vs fd {want:?}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn activations_are_correct() -> Result<()> {
        let z = Tensor::new(&[-30.0f32, -1.0, 0.0, 2.0, 40.0], &Device::Cpu)?;
        let sp: Vec<f32> = Activation::Softplus.apply(&z)?.to_vec1()?;
        for (v, x) in sp.iter().zip([-30.0f32, -1.0, 0.0, 2.0, 40.0]) {
            let want = (1.0f64 + (x as f64).exp()).ln() as f32;
            assert!((v - want).abs() < 1e-5, "{v} vs {want}");
        }
        Ok(())
    }
}
