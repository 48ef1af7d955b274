//! What a model is made of (the `[model]` table, and the spec stored in every checkpoint): the
//! network and its sizes, the parameterisation, the event shape, the process and its space.

use super::egnn::{self, Egnn};
use super::layers::{Activation, Embedding};
use super::mlp::Mlp;
use super::network::Network;
use super::resmlp::ResMlp;
use super::unet::{UNet, UnetPreset};
use crate::process::{ProcessConfig, Space};
use crate::score::Parameterisation;
use anyhow::{bail, Result};
use candle_core::Device;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which network computes the raw output.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// An MLP on [x, embed(t)] (fused CPU kernels; energies).
    #[default]
    Mlp,
    /// Pre-LayerNorm residual blocks on a projection of [x, embed(t)].
    Resmlp,
    /// DEM's E(n)-equivariant graph network on particles (needs a `com_free` space; `depth`
    /// layers of `width` features; t enters as a node feature, not through `embedding`).
    Egnn,
    /// A U-Net on images [c, h, w] (`preset`, `channels`, `mults`, `blocks`, `attention`), with
    /// an optional class condition (`classes`).
    Unet,
}

impl NetworkKind {
    /// Whether the network takes a condition (class labels): the U-Net; none of the point networks.
    pub fn conditional(&self) -> bool {
        *self == NetworkKind::Unet
    }
}

/// Architecture of the network (the `[model]` table of a run config). Keys a config leaves out
/// come from `Arch::recipe` (EDM's preconditioning); `Arch::default()` is the PyTorch peer's
/// ε-prediction network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default = "Arch::recipe", deny_unknown_fields)]
pub struct Arch {
    pub network: NetworkKind,
    /// Hidden width.
    pub width: usize,
    /// Hidden layers (MLP), residual blocks (resmlp) or E_GCL layers (egnn).
    pub depth: usize,
    pub activation: Activation,
    pub embedding: Embedding,
    /// Number of embedding features (even).
    pub embed_dim: usize,
    /// Standard deviation of the Fourier frequencies.
    pub fourier_scale: f64,
    pub parameterisation: Parameterisation,
    /// σ_d, the data's standard deviation in the network's units assumed by EDM's
    /// preconditioning; unset, training writes `DEFAULT_SIGMA_DATA` into the run's config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigma_data: Option<f64>,
    /// U-Net size preset (`tiny` when unset); the fields below override it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<UnetPreset>,
    /// U-Net base channel width C.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// U-Net channel multipliers per level (level l has C·mults\[l\] channels, at 1/2^l size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mults: Option<Vec<usize>>,
    /// U-Net residual blocks per level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<usize>,
    /// U-Net resolutions (heights) with self-attention (default: the lowest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<Vec<usize>>,
    /// Classes of a conditional network (labels 0 … classes − 1; the null class is `classes`);
    /// set from the data's labels when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
}

/// σ_d of an EDM model whose spec does not give one: EDM's value (Karras et al. 2022, for
/// images in [−1, 1]), kept for every data set (why: `train::train`'s comment).
pub const DEFAULT_SIGMA_DATA: f64 = 0.5;

impl Arch {
    /// The network of the best training recipe (docs/experiments/recipes.md): a 4×256 SiLU MLP
    /// read through EDM's preconditioning with σ_d = 0.5.
    pub fn recipe() -> Self {
        // 3×128 leaves the modes of gmm40 (std 0.026 in model units) and the thin directions of
        // anisotropic10 too wide: 1000-step EM is 0.2–0.4 nats above the entropy, 4×256 < 0.1.
        Arch {
            width: 256,
            depth: 4,
            parameterisation: Parameterisation::Edm,
            ..Arch::default()
        }
    }
}

impl Default for Arch {
    /// The peer's network: 32 Fourier features (scale 16), 3×128 SiLU MLP, ε-prediction.
    fn default() -> Self {
        Arch {
            network: NetworkKind::Mlp,
            width: 128,
            depth: 3,
            activation: Activation::Silu,
            embedding: Embedding::Fourier,
            embed_dim: 32,
            fourier_scale: 16.0,
            parameterisation: Parameterisation::Eps,
            sigma_data: None,
            preset: None,
            channels: None,
            mults: None,
            blocks: None,
            attention: None,
            classes: None,
        }
    }
}

/// Everything needed to rebuild a model; stored in every checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Data dimension d: the number of values in one event.
    pub dim: usize,
    /// The event shape (\[d\] for points, [N, k] for particles, [c, h, w] for images); empty: \[d\].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event: Vec<usize>,
    /// The subspace of R^d that noise, prior and samples live in.
    #[serde(default, skip_serializing_if = "Space::is_full")]
    pub space: Space,
    pub arch: Arch,
    pub process: ProcessConfig,
}

impl ModelConfig {
    /// The default architecture for data of dimension `dim` under `process`.
    pub fn default_for(dim: usize, process: ProcessConfig) -> Self {
        ModelConfig {
            dim,
            event: Vec::new(),
            space: Space::Full,
            arch: Arch::default(),
            process,
        }
    }

    /// The event shape, \[d\] when none was given.
    pub fn event_shape(&self) -> Vec<usize> {
        if self.event.is_empty() {
            vec![self.dim]
        } else {
            self.event.clone()
        }
    }

    /// Checks sizes, the event shape and the space against each other.
    pub fn check(&self) -> Result<()> {
        let a = &self.arch;
        if self.dim == 0 || a.width == 0 || a.depth == 0 {
            bail!("model dim, width and depth must be positive");
        }
        if let Some(sd) = a.sigma_data.filter(|sd| !(*sd > 0.0 && sd.is_finite())) {
            bail!("model sigma_data must be positive, got {sd}");
        }
        if a.embed_dim == 0 || !a.embed_dim.is_multiple_of(2) {
            bail!(
                "model embed_dim must be a positive even number, got {}",
                a.embed_dim
            );
        }
        let size: usize = self.event_shape().iter().product();
        if size != self.dim {
            bail!(
                "model event shape {:?} holds {size} values, not dim = {}",
                self.event,
                self.dim
            );
        }
        self.space.check(self.dim)?;
        if let (Space::ComFree { particles, dim }, false) = (self.space, self.event.is_empty()) {
            if self.event != [particles, dim] {
                bail!(
                    "the space's {particles} particles in {dim} dimensions do not match the event shape {:?}",
                    self.event
                );
            }
        }
        if a.network == NetworkKind::Egnn && self.space.is_full() {
            bail!("{}", egnn::FULL_SPACE);
        }
        if a.network == NetworkKind::Unet {
            super::unet::UnetSpec::of(a, &self.event_shape())?;
            if !self.space.is_full() {
                bail!(
                    "network = \"unet\" takes images on the full space, not {:?}",
                    self.space
                );
            }
        }
        if a.network != NetworkKind::Mlp && a.parameterisation == Parameterisation::Energy {
            bail!("the energy parameterisation needs network = \"mlp\" (its second-order jets)");
        }
        Ok(())
    }

    /// The number of trainable values of the network this spec builds (`None` on overflow):
    /// lets a loader refuse a spec too large for its file before allocating it.
    pub fn parameter_count(&self) -> Option<usize> {
        let a = &self.arch;
        let out = match a.parameterisation {
            Parameterisation::Energy => 1,
            _ => self.dim,
        };
        let (w, d) = (a.width, a.depth);
        let linear = |i: usize, o: usize| i.checked_mul(o)?.checked_add(o);
        let mlp_family = |hidden: Option<usize>| {
            let input = linear(self.dim.checked_add(a.embed_dim)?, w)?;
            input.checked_add(linear(w, out)?)?.checked_add(hidden?)
        };
        match a.network {
            // depth − 1 hidden-to-hidden layers
            NetworkKind::Mlp => {
                mlp_family(linear(w, w).and_then(|l| l.checked_mul(d.saturating_sub(1))))
            }
            // two linear layers and a LayerNorm (γ, β) per block, and the output's LayerNorm
            NetworkKind::Resmlp => mlp_family((|| {
                linear(w, w)?
                    .checked_mul(2)?
                    .checked_add(w.checked_mul(2)?)?
                    .checked_mul(d)?
                    .checked_add(w.checked_mul(2)?)
            })()),
            NetworkKind::Egnn => Egnn::parameter_count(w, d),
            NetworkKind::Unet => UNet::parameter_count(&self.event_shape(), a),
        }
    }

    /// The network, freshly initialised from `rng`: d outputs, or one for an energy.
    pub fn build_network(&self, rng: &mut impl Rng, device: &Device) -> Result<Box<dyn Network>> {
        let out = match self.arch.parameterisation {
            Parameterisation::Energy => 1,
            _ => self.dim,
        };
        Ok(match self.arch.network {
            NetworkKind::Mlp => Box::new(Mlp::new(self.dim, out, &self.arch, rng, device)?),
            NetworkKind::Resmlp => Box::new(ResMlp::new(self.dim, out, &self.arch, rng, device)?),
            NetworkKind::Egnn => Box::new(Egnn::new(self.space, &self.arch, rng, device)?),
            NetworkKind::Unet => Box::new(UNet::new(&self.event_shape(), &self.arch, rng, device)?),
        })
    }
}
