//! Score networks and the model that reads them as scores.
//!
//! A `Network` (`network.rs`) maps x, t and an optional condition to a raw output: the MLP
//! (`mlp.rs`) and the residual MLP (`resmlp.rs`), built from shared `layers`, the EGNN (`egnn/`)
//! and the image U-Net (`unet/`). A `Model` (`model.rs`) wraps any network with its
//! `Parameterisation` and process into a `ScoreModel`; `guidance.rs` reads a conditional one at a
//! class, with classifier-free guidance.
//! `config.rs` holds the `[model]` table and the spec stored in checkpoints; `fused/` is the MLP's
//! opt-in fused CPU path (with `gemm` and the SIMD kernels), chosen by `fused::applies`.

pub mod config;
pub mod egnn;
pub mod fused;
pub(crate) mod gemm;
pub mod guidance;
pub(crate) mod kernels;
pub mod layers;
pub mod mlp;
pub mod model;
pub mod network;
pub mod resmlp;
mod reverse;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd;
pub mod unet;

pub use config::{Arch, ModelConfig, NetworkKind};
pub use egnn::Egnn;
pub use fused::FusedMlp;
pub use guidance::{ClassGuided, Conditioned};
pub use layers::{Activation, Embedding};
pub use mlp::Mlp;
pub use model::Model;
pub use network::{EnergyJets, Network, Tangents};
pub use resmlp::ResMlp;
pub use unet::UNet;

#[cfg(test)]
mod tests;

/// The contiguous f32 values of a custom CPU op's argument (`op` names the op in the error).
pub(crate) fn contiguous<'s>(
    s: &'s candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'s [f32]> {
    let values = s.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&values[a..b]),
        None => candle_core::bail!("the {op} op needs contiguous arguments"),
    }
}
