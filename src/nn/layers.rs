//! The pieces networks share: activations with their derivatives, the time embedding, linear
//! layers with PyTorch's initialisation and their forward-mode tangents.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
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
    /// a(z).
    pub fn apply(&self, z: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Silu => candle_nn::ops::silu(z)?,
            // softplus(z) = max(z, 0) + log(1 + e^{−|z|}), stable for large |z|
            Activation::Softplus => (z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?,
            Activation::Tanh => z.tanh()?,
        })
    }

    /// The activation and its first two derivatives at z: silu'' = σ(1 − σ)(2 + z(1 − 2σ)),
    /// softplus'' = σ(1 − σ), tanh'' = −2 tanh (1 − tanh²).
    pub fn apply_with_derivatives(&self, z: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
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
    pub fn apply_with_derivative(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
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

impl Embedding {
    /// The factor c in [sin(c t W), cos(c t W)]: 2π (Fourier) or 1000 (sinusoidal).
    pub fn scale(&self) -> f64 {
        match self {
            Embedding::Fourier => 2.0 * std::f64::consts::PI,
            Embedding::Sinusoidal => 1000.0,
        }
    }
}

/// The embedding features of t with their fixed frequencies W [features/2] (`embed.W`).
pub struct TimeEmbedding {
    pub kind: Embedding,
    pub w: Tensor,
}

/// Name of the embedding frequencies among a network's buffers.
pub const EMBED_W: &str = "embed.W";

impl TimeEmbedding {
    /// `features` (even) embedding features: W ~ N(0, scale²) drawn from `rng` (Fourier) or the
    /// fixed ω_k (sinusoidal).
    pub fn new(
        kind: Embedding,
        features: usize,
        scale: f64,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Self> {
        let half = features / 2;
        let w: Vec<f32> = match kind {
            Embedding::Fourier => (0..half)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(rng);
                    (z * scale) as f32
                })
                .collect(),
            Embedding::Sinusoidal => (0..half)
                .map(|k| 10000f64.powf(-(k as f64) / half as f64) as f32)
                .collect(),
        };
        Ok(TimeEmbedding {
            kind,
            w: Tensor::from_vec(w, half, device)?,
        })
    }

    /// The embedding an architecture asks for (`embedding`, `embed_dim`, `fourier_scale`).
    pub fn of(arch: &super::Arch, rng: &mut impl Rng, device: &Device) -> Result<Self> {
        Self::new(
            arch.embedding,
            arch.embed_dim,
            arch.fourier_scale,
            rng,
            device,
        )
    }

    /// Embedding features [n, features] of times t \[n\], in the frequencies' dtype.
    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let t = t.to_dtype(self.w.dtype())?.unsqueeze(1)?;
        let proj = t
            .broadcast_mul(&self.w.unsqueeze(0)?)?
            .affine(self.kind.scale(), 0.0)?;
        Ok(Tensor::cat(&[proj.sin()?, proj.cos()?], 1)?)
    }

    /// Replaces W, checking its shape.
    pub fn set(&mut self, w: Tensor) -> Result<()> {
        if w.dims() != self.w.dims() {
            bail!(
                "{EMBED_W} has shape {:?}, expected {:?}",
                w.dims(),
                self.w.dims()
            );
        }
        self.w = w.to_dtype(self.w.dtype())?.to_device(self.w.device())?;
        Ok(())
    }
}

/// A linear layer's weight [out, in] and bias \[out\] with PyTorch's default initialisation
/// U(±1/√fan_in), drawn from `rng` (weight first).
pub fn linear(
    fan_in: usize,
    fan_out: usize,
    rng: &mut impl Rng,
    device: &Device,
) -> Result<(Var, Var)> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let weight = uniform(&[fan_out, fan_in], bound, rng, device)?;
    Ok((weight, uniform(&[fan_out], bound, rng, device)?))
}

/// A variable of `shape` with entries drawn from U(±bound), in row-major order.
pub fn uniform(shape: &[usize], bound: f64, rng: &mut impl Rng, device: &Device) -> Result<Var> {
    let len = shape.iter().product();
    let values: Vec<f32> = (0..len)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect();
    Ok(Var::from_tensor(&Tensor::from_vec(values, shape, device)?)?)
}

/// h Wᵀ + b.
pub fn affine(h: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(h.matmul(&w.t()?)?.broadcast_add(b)?)
}

/// The trainable variables of a network of the MLP family and its time embedding (its one buffer).
pub struct Weights {
    /// Named variables in the network's fixed order.
    pub vars: Vec<(String, Var)>,
    pub embed: TimeEmbedding,
}

impl Weights {
    /// The fixed buffers: the embedding frequencies.
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        vec![(EMBED_W.into(), self.embed.w.clone())]
    }

    /// Replaces the buffer `name` of `network`.
    pub fn set_buffer(&mut self, name: &str, value: Tensor, network: &str) -> Result<()> {
        match name {
            EMBED_W => self.embed.set(value),
            other => bail!("the {network} network has no buffer '{other}'"),
        }
    }

    /// Every variable and buffer converted to `dtype`, in place.
    pub fn to_dtype(&mut self, dtype: DType) -> Result<()> {
        vars_to_dtype(&mut self.vars, dtype)?;
        self.embed.w = self.embed.w.to_dtype(dtype)?;
        Ok(())
    }
}

/// Replaces every variable by a copy in `dtype` (new variables: the optimiser must be rebuilt).
pub fn vars_to_dtype(vars: &mut [(String, Var)], dtype: DType) -> Result<()> {
    for (_, v) in vars.iter_mut() {
        *v = Var::from_tensor(&v.as_tensor().to_dtype(dtype)?)?;
    }
    Ok(())
}

/// `Network`'s bookkeeping methods for a network that keeps its `Weights` in field `w`.
macro_rules! weights_methods {
    ($network:literal) => {
        fn vars(&self) -> &[(String, candle_core::Var)] {
            &self.w.vars
        }
        fn buffers(&self) -> Vec<(String, candle_core::Tensor)> {
            self.w.buffers()
        }
        fn set_buffer(&mut self, name: &str, value: candle_core::Tensor) -> anyhow::Result<()> {
            self.w.set_buffer(name, value, $network)
        }
        fn to_dtype(&mut self, dtype: candle_core::DType) -> anyhow::Result<()> {
            self.w.to_dtype(dtype)
        }
    };
}
pub(crate) use weights_methods;

/// Rejects a condition given to a network that takes none.
pub fn no_condition(cond: Option<&Tensor>, network: &str) -> Result<()> {
    if cond.is_some() {
        bail!(
            "the {network} network takes no condition (class labels); train a conditional network"
        );
    }
    Ok(())
}
