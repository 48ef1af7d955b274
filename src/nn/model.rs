//! `Model`: any `Network` read as a score s_θ(x, t) through its parameterisation and process
//! (k-diffusion's `Denoiser(inner_model)`, score_sde's `get_score_fn`). Objectives, the trainer,
//! the samplers, the likelihood and the metrics take a `Model` (or the `ScoreModel` it is).

use super::config::ModelConfig;
use super::fused::FusedMlp;
use super::network::Network;
use crate::objective::time::TimeSampler;
use crate::process::Process;
use crate::score::{
    column, DivergenceModel, HostDivergence, OutputMap, Parameterisation, ScoreModel,
};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

/// A score model made of a network, its parameterisation and the process it was trained for.
pub struct Model {
    pub config: ModelConfig,
    network: Box<dyn Network>,
    process: Box<dyn Process>,
    device: Device,
    /// Compute dtype: f32 for training and sampling; f64 for exact gradient checks.
    dtype: DType,
    /// Frozen fused copy of the weights that inference runs on (see `for_inference`).
    pub(crate) fused: Option<FusedMlp>,
    /// The process's importance-sampled time density, tabulated on first use (`g2_is`).
    likelihood_times: std::sync::OnceLock<TimeSampler>,
}

impl Model {
    /// A new model: the configured network freshly initialised from `rng`.
    pub fn new(config: ModelConfig, rng: &mut impl Rng, device: &Device) -> Result<Self> {
        config.check()?;
        let network = config.build_network(rng, device)?;
        let process = config.process.build_in(config.space)?;
        Ok(Model {
            config,
            network,
            process,
            device: device.clone(),
            dtype: DType::F32,
            fused: None,
            likelihood_times: std::sync::OnceLock::new(),
        })
    }

    /// A copy with the same weights and buffers, not frozen for inference (a distillation
    /// student, a frozen teacher).
    pub fn copy(&self) -> Result<Self> {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let mut m =
            Model::new(self.config.clone(), &mut rng, &self.device)?.to_dtype(self.dtype)?;
        for ((_, dst), (_, src)) in m.vars().iter().zip(self.vars()) {
            dst.set(&src.as_tensor().copy()?)?;
        }
        for (name, t) in self.buffers() {
            m.set_buffer(&name, t)?;
        }
        Ok(m)
    }

    /// The network.
    pub fn network(&self) -> &dyn Network {
        self.network.as_ref()
    }

    /// Trainable variables, named, in the network's fixed order.
    pub fn vars(&self) -> &[(String, Var)] {
        self.network.vars()
    }

    /// Fixed tensors saved beside the weights (e.g. `embed.W`).
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        self.network.buffers()
    }

    /// Replaces a fixed tensor by name.
    pub fn set_buffer(&mut self, name: &str, value: Tensor) -> Result<()> {
        self.fused = None;
        self.network
            .set_buffer(name, value.to_device(&self.device)?)
    }

    /// The model frozen for inference: where `fused::applies`, on the fused CPU kernels, with the
    /// same numbers and no autograd graph. Later changes to the variables are not seen by it.
    pub fn for_inference(mut self) -> Result<Self> {
        self.fused = super::fused::build(&self, None)?;
        Ok(self)
    }

    /// Whether inference runs on the fused CPU kernels.
    pub fn is_fused(&self) -> bool {
        self.fused.is_some()
    }

    /// The process the model was trained for (restricted to the model's space).
    pub fn process(&self) -> &dyn Process {
        self.process.as_ref()
    }

    /// q(t) ∝ g(t)²/σ_t² of the model's process (the likelihood weighting's importance-sampled
    /// time), tabulated once per model rather than once per batch.
    pub fn likelihood_times(&self) -> &TimeSampler {
        self.likelihood_times
            .get_or_init(|| TimeSampler::likelihood(self.process()))
    }

    /// The parameterisation of the network's output.
    pub fn parameterisation(&self) -> Parameterisation {
        self.config.arch.parameterisation
    }

    /// The map between the network's output and the score (with σ_d for EDM).
    pub fn output_map(&self) -> OutputMap {
        let sd = self.config.arch.sigma_data;
        self.parameterisation()
            .with(sd.unwrap_or(super::config::DEFAULT_SIGMA_DATA))
    }

    /// Per-row input scales and network times at times `ts` (EDM's c_in/α_t and c_noise), or
    /// None where the network sees (x, t) as they are.
    pub fn input_map(&self, ts: &[f64]) -> Option<(Vec<f64>, Vec<f64>)> {
        let map = self.output_map();
        if map.plain_inputs() {
            return None;
        }
        let p = self.process();
        Some(
            ts.iter()
                .map(|&t| map.inputs(p.alpha(t), p.sigma(t), t))
                .unzip(),
        )
    }

    /// What the network sees at (x, t) where it is not (x, t) itself: (c_in·x̃, c_noise) and
    /// the per-row input scale [n, 1].
    fn network_inputs(&self, x: &Tensor, t: &Tensor) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        let ts: Vec<f64> = crate::flat::values(t)?;
        let Some((scale, t_in)) = self.input_map(&ts) else {
            return Ok(None);
        };
        let scale = crate::score::column_of(scale, x.dtype(), x.device())?;
        let t_in = Tensor::from_vec(t_in, ts.len(), t.device())?.to_dtype(t.dtype())?;
        Ok(Some((x.broadcast_mul(&scale)?, t_in, scale)))
    }

    /// The same model computing in `dtype` (variables converted; f64 for gradient checks).
    pub fn to_dtype(mut self, dtype: DType) -> Result<Self> {
        self.network.to_dtype(dtype)?;
        self.dtype = dtype;
        self.fused = None;
        Ok(self)
    }

    /// Compute dtype of the variables.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device the variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Raw network output (in the configured parameterisation) for x [n, d] and t \[n\]; for an
    /// energy network, ∇x f_θ.
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.forward_cond(x, t, None)
    }

    /// Raw network output as `forward`, given class labels c \[n\] (u32) for a conditional
    /// network (None: the null class ∅ of a conditional network, no condition otherwise).
    pub fn forward_cond(&self, x: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        self.check_inputs(x, None)?;
        if cond.is_none() && self.parameterisation() == Parameterisation::Energy {
            return Ok(self.energy_jets(x, t, None)?.1);
        }
        if let Some((x, t, _)) = self.network_inputs(x, t)? {
            return self.raw(&x, &t, cond);
        }
        self.raw(x, t, cond)
    }

    /// The network's output at its own inputs.
    fn raw(&self, x: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        if let (Some(f), None) = (&self.fused, cond) {
            return super::fused::score::raw(f, x, t);
        }
        self.network.forward(x, t, cond)
    }

    /// The null class ∅ of a conditional network (its label is the number of classes).
    pub fn null_class(&self) -> Option<u32> {
        (self.config.arch.network.conditional())
            .then(|| self.config.arch.classes.unwrap_or(0) as u32)
    }

    /// s_θ(x, t | c) for labels c \[n\] of a conditional network (None: s_θ(x, t | ∅), the
    /// unconditional score).
    pub fn score_cond(&self, x: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        if cond.is_none() {
            return self.score(x, t);
        }
        let xf = x.to_dtype(self.dtype)?;
        let out = self.forward_cond(&xf, t, cond)?;
        let (alpha, sigma) = self.coefficients(t)?;
        let s = self
            .output_map()
            .to_score(&out, &xf, &alpha, &sigma)?
            .to_dtype(x.dtype())?;
        self.process.space().project_tensor(&s)
    }

    /// The scalar f_θ(x, t) \[n\] of an energy network (−energy: the score is its gradient).
    pub fn energy(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        if self.parameterisation() != Parameterisation::Energy {
            bail!(
                "this network predicts a vector ({:?}), not an energy",
                self.parameterisation()
            );
        }
        self.check_inputs(x, None)?;
        Ok(self.network.forward(x, t, None)?.squeeze(1)?)
    }

    /// For an energy network: f [n, 1], ∇x f [n, d] and vᵀ(∇²f)v [m, n] for directions v.
    pub fn energy_jets(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        match self.network.energy() {
            Some(e) => e.energy_jets(x, t, v),
            None => bail!("this network has no energy jets; use network = \"mlp\""),
        }
    }

    /// Raw output [n, d] and its forward-mode tangents J·v [m, n, d] along v [m, n, d].
    pub fn forward_with_tangents(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        self.check_inputs(x, Some(v))?;
        // EDM: F(c·x) moves by J_F (c·v) along v
        if let Some((x, t, scale)) = self.network_inputs(x, t)? {
            let v = v.broadcast_mul(&scale.unsqueeze(0)?)?;
            return self.raw_with_tangents(&x, &t, &v);
        }
        self.raw_with_tangents(x, t, v)
    }

    /// The network's output and tangents at its own inputs.
    fn raw_with_tangents(&self, x: &Tensor, t: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        if let Some(f) = &self.fused {
            return super::fused::score::raw_with_tangents(f, x, t, v);
        }
        match self.network.tangents() {
            Some(tg) => tg.forward_with_tangents(x, t, v),
            None => bail!(
                "this network has no forward-mode tangents (needed for divergences, ISM and SSM)"
            ),
        }
    }

    /// (n, d, m) of inputs x [n, d] and directions v [m, n, d], or an error naming the mismatch.
    pub(crate) fn check_inputs(
        &self,
        x: &Tensor,
        v: Option<&Tensor>,
    ) -> Result<(usize, usize, usize)> {
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

    /// Per-row α_t and σ_t as [n, 1] columns.
    pub fn coefficients(&self, t: &Tensor) -> Result<(Tensor, Tensor)> {
        let p = self.process();
        Ok((
            column(t, self.dtype, |t| p.alpha(t))?,
            column(t, self.dtype, |t| p.sigma(t))?,
        ))
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.vars().iter().map(|(_, v)| v.elem_count()).sum()
    }
}

impl ScoreModel for Model {
    fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let s = if let (Some(f), true) = (&self.fused, self.output_map().plain_inputs()) {
            super::fused::score::score(self, f, x, t, None)?.0
        } else {
            let xf = x.to_dtype(self.dtype)?;
            let out = self.forward(&xf, t)?;
            let (alpha, sigma) = self.coefficients(t)?;
            self.output_map()
                .to_score(&out, &xf, &alpha, &sigma)?
                .to_dtype(x.dtype())?
        };
        // a network that is not equivariant leaves the subspace: its score there is P s
        self.process.space().project_tensor(&s)
    }
    fn dim(&self) -> usize {
        self.config.dim
    }
}

/// Forward-mode tangents read through the parameterisation: every conversion s = A·out + B·x is
/// linear in (out, x), so J_s v = to_score(J_out v, v) — for ε̂: −J_ε v/σ; for x̂0:
/// (α J_x0 v − v)/σ²; for v̂: −(σ v + α J_v v)/((α² + σ²) σ); the score as is. In a restricted
/// space the directions are projected first: the forms are (P v)ᵀ J_s (P v), and the exact
/// divergence is tr(P J_s P), the trace over the space.
impl DivergenceModel for Model {
    fn host(&self) -> Option<&dyn HostDivergence> {
        let plain = self.output_map().plain_inputs();
        self.fused
            .as_ref()
            .filter(|_| plain)
            .map(|_| self as &dyn HostDivergence)
    }

    fn score_and_quadratic_forms(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let space = self.process.space();
        // directions on the space: vᵀ J v along P v, so the forms sum to tr(P J P)
        let v = &space.project_tensor(v)?;
        let fast = self
            .fused
            .as_ref()
            .filter(|_| self.output_map().plain_inputs());
        let (s, q) = if let Some(f) = fast {
            let (s, q) = super::fused::score::score(self, f, x, t, Some(v))?;
            match q {
                Some(q) => (s, q),
                None => bail!("no quadratic forms came back"),
            }
        } else if self.parameterisation() == Parameterisation::Energy {
            let xf = x.to_dtype(self.dtype)?;
            let (_, grad, q) = self.energy_jets(&xf, t, Some(&v.to_dtype(self.dtype)?))?;
            let Some(q) = q else {
                bail!("no quadratic forms came back")
            };
            (grad.to_dtype(x.dtype())?, q.to_dtype(x.dtype())?)
        } else if self.fused.is_none() && self.network.tangents().is_none() {
            if self.config.arch.network == super::config::NetworkKind::Egnn
                && self.dtype == DType::F32
                && self.device.is_cpu()
                && super::fused::enabled()
            {
                // its fused f32 edge op's input gradients are off by up to ~5% from depth 2 on
                // (nn::reverse's test); candle's ops, in f64, are exact
                bail!("the EGNN's divergence needs the model in f64 (Model::to_dtype): its fused f32 edge op has inexact input gradients");
            }
            return super::reverse::quadratic_forms(|x| self.score(x, t), x, v);
        } else {
            let xf = x.to_dtype(self.dtype)?;
            let vf = v.to_dtype(self.dtype)?;
            let (out, tan) = self.forward_with_tangents(&xf, t, &vf)?;
            let (alpha, sigma) = self.coefficients(t)?;
            let p = self.output_map();
            let s = p.to_score(&out, &xf, &alpha, &sigma)?;
            let js_v = p.to_score(&tan, &vf, &alpha, &sigma)?;
            let q = (js_v * &vf)?.sum(2)?;
            (s.to_dtype(x.dtype())?, q.to_dtype(x.dtype())?)
        };
        Ok((space.project_tensor(&s)?, q))
    }
}
