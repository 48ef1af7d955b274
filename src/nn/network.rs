//! The interface every score network implements (candle-nn's `Module`, with time and a condition):
//! a raw output from x, t and an optional condition, its variables, and optional capabilities.

use super::fused::FusedMlp;
use anyhow::Result;
use candle_core::{DType, Tensor, Var};

/// A network f_θ(x, t, c): the raw output that a `Parameterisation` turns into a score.
pub trait Network: Send + Sync {
    /// Raw output [n, o] at x [n, d] (the event flattened), times t \[n\] and an optional
    /// condition c \[n\] (e.g. class labels).
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor>;
    /// Trainable variables, named, in a fixed order (the optimiser's and the checkpoint's).
    fn vars(&self) -> &[(String, Var)];
    /// Fixed tensors saved beside the weights but not trained (e.g. Fourier frequencies).
    fn buffers(&self) -> Vec<(String, Tensor)>;
    /// Replaces the fixed tensor `name` (loading a checkpoint); its shape must match.
    fn set_buffer(&mut self, name: &str, value: Tensor) -> Result<()>;
    /// The same network computing in `dtype` (f64 for gradient checks).
    fn to_dtype(&mut self, dtype: DType) -> Result<()>;
    /// Exact forward-mode tangents J·v, where the network has them (divergences, ISM, SSM).
    fn tangents(&self) -> Option<&dyn Tangents> {
        None
    }
    /// Energy jets of a scalar-output network (the `energy` parameterisation), where it has them.
    fn energy(&self) -> Option<&dyn EnergyJets> {
        None
    }
    /// A fused CPU copy of the current weights, where the network has a fused host path.
    fn fused(&self) -> Option<Result<FusedMlp>> {
        None
    }
}

/// Forward-mode tangents through a network.
pub trait Tangents {
    /// Raw output [n, o] and its tangents J·v [m, n, o] along directions v [m, n, d],
    /// J = ∂out/∂x at fixed t (exact, with ordinary differentiable ops).
    fn forward_with_tangents(&self, x: &Tensor, t: &Tensor, v: &Tensor)
        -> Result<(Tensor, Tensor)>;
}

/// First- and second-order input derivatives of a scalar network f_θ(x, t).
pub trait EnergyJets {
    /// f [n, 1], ∇x f [n, d] and, for directions v [m, n, d], vᵀ(∇²f)v [m, n].
    fn energy_jets(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)>;
}
