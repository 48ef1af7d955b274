//! Training objectives: every form of score matching of the notes behind one `ObjectiveConfig`.
//!
//! Regression objectives (`regression`) share one shape: a per-sample score target s*(x_t) and
//! weight, regressed in the network's own output space. Stein objectives (`stein`) need the
//! network's input-Jacobian and get it exactly by forward-mode tangents, so one reverse pass gives
//! exact parameter gradients. Single-level objectives learn ∇ log p_t at one fixed time t (noise
//! level σ_t): their data are x_t = α_t x0 + σ_t ε with x0 from the data set.

pub mod blend;
pub mod diagnostics;
pub mod regression;
pub mod stein;
pub mod time;

use crate::nn::Model;
use crate::process::Process;
use crate::score::ScoreModel;
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The weighting λ(t) of the score error in continuous-time objectives.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Weighting {
    /// λ(t) = σ_t²: ε-prediction MSE (Ho et al. 2020; score_sde's default).
    Sigma2,
    /// λ(t) = g(t)²: the likelihood weighting (Song et al. 2021b, bounds the NLL).
    G2,
    /// λ(t) = g(t)² with t importance-sampled from q ∝ g²/σ_t² (Song et al. 2021b, §5): the
    /// same expected loss as `g2`, each sample weighted by g²/(q(t)(T − t_min)) ∝ σ_t².
    #[serde(rename = "g2_is")]
    #[value(name = "g2_is")]
    G2Importance,
    /// λ(t) = 1.
    One,
}

impl Weighting {
    /// The weight λ(t) for a process (not the log-SNR `Process::lambda`).
    pub fn weight(&self, p: &dyn Process, t: f64) -> f64 {
        match self {
            Weighting::Sigma2 => p.sigma(t).powi(2),
            Weighting::G2 | Weighting::G2Importance => p.g2(t),
            Weighting::One => 1.0,
        }
    }
}

pub use crate::score::Probe;
pub use blend::Blend;

/// Which objective to train with (the `[objective]` table; `kind` selects).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ObjectiveConfig {
    /// Continuous-time DSM: E_t λ(t)·½‖s(x_t, t) + ε/σ_t‖², t ~ U(t_min, T) (Song et al. 2021, eq. 7).
    Dsm { weighting: Weighting },
    /// DSM at the single level t (Vincent 2011): ½σ_t²‖s(x_t, t) + ε/σ_t‖².
    DsmLevel { t: f64 },
    /// NCSN: DSM on `levels` times spaced uniformly in t (geometric σ for VE), λ = σ² (Song & Ermon 2019).
    Ncsn { levels: usize },
    /// Explicit score matching at level t: ½‖s(x_t, t) − ∇log p_t(x_t)‖², with the exact score
    /// of a known target, or at t_min with the data's per-sample scores (forces).
    Esm { t: f64 },
    /// Implicit (Hyvärinen 2005) score matching at level t: ½‖s‖² + div s, exact divergence.
    Ism { t: f64 },
    /// Sliced score matching at level t (Song et al. 2019): vᵀ∇(vᵀs) + ½(vᵀs)², or with
    /// `variance_reduced` + ½‖s‖² in place of ½(vᵀs)²; `projections` per sample.
    Ssm {
        t: f64,
        projection: Probe,
        projections: usize,
        variance_reduced: bool,
    },
    /// Finite-difference SSM (Pang et al. 2020): only s(x ± εv), with u± = vᵀs(x ± εv):
    /// (u₊ − u₋)/(2ε) + ⅛(u₊ + u₋)².
    FdSsm { t: f64, projection: Probe, eps: f64 },
    /// Force / target score matching (note 000; De Bortoli et al. 2024): λ(t)·½‖s(x_t, t) − F(x0)/α_t‖².
    Force { weighting: Weighting },
    /// DSM and force targets blended by noise level: s* = w(t)(−ε/σ_t) + (1 − w(t)) F(x0)/α_t
    /// with the minimum-variance w*(t) measured from the data (`blend`): the force target at low
    /// noise, the noise target at high noise, never a noisier target than either.
    Mixed { weighting: Weighting },
    /// EDM's training (Karras et al. 2022): ln(σ_t/α_t) ~ N(p_mean, p_std²) and unit weight on
    /// the network's output error (EDM's λ(σ) under `parameterisation = "edm"`).
    Edm {
        #[serde(default = "edm_p_mean")]
        p_mean: f64,
        #[serde(default = "edm_p_std")]
        p_std: f64,
    },
    /// Energy-only training (iDEM, Akhound-Sadegh et al. 2024): λ(t)·½‖s(x_t, t) − Ŝ_K(x_t, t)‖²
    /// with Ŝ_K note 000's Monte Carlo posterior-expected force of `data.potential` (K draws,
    /// per-row norm clipped), x_t noised from a replay buffer of the model's own samples.
    Idem(Idem),
}

/// The settings of energy-only training (`kind = "idem"`); every key has a default.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Idem {
    pub weighting: Weighting,
    /// Importance draws K of the estimator per point.
    pub k: usize,
    /// The estimator's read-out (`force` is iDEM's ∇log of the mean weight; `blend` takes the
    /// kernel form at high noise, where the force form's variance explodes).
    pub readout: crate::target::posterior::Readout,
    /// Each target row rescaled to σ_t‖Ŝ‖ ≤ `clip`·√dof (0: none): in noise units, where the exact
    /// score's σ_t‖∇log p_t‖ = ‖E[ε | x_t]‖ has mean square at most dof. It bounds the
    /// enormous forces at stray buffer rows of a poor model, which otherwise steer the fit
    /// (iDEM clips ‖Ŝ‖ ≤ 20 at every t; docs/boltzmann.md compares).
    pub clip: f64,
    /// Rows the replay buffer keeps (the oldest go first).
    pub buffer: usize,
    /// Every `refresh_every` optimiser steps, `refresh` new samples of the model enter the buffer.
    pub refresh_every: usize,
    pub refresh: usize,
    /// Euler–Maruyama steps of the reverse SDE that draws them.
    pub sampler_steps: usize,
}

impl Default for Idem {
    /// iDEM's DW-4 settings (DEM's configs: a buffer of 10,000 refreshed with 1000 samples) at a
    /// 2-core budget (K = 500, not 1000; a refresh every 100 steps drawn with 100 EM steps), with
    /// three changes measured in docs/boltzmann.md: λ = σ_t², not iDEM's λ = 1 (the targets are
    /// unbiased at every t, so λ leaves the minimiser alone, but under λ = 1 the low-noise rows,
    /// whose output errors count 1/σ_t-fold, drown the rest and the middle noise levels stay
    /// unfit); the blend read-out; and a clip in noise units.
    fn default() -> Self {
        Idem {
            weighting: Weighting::Sigma2,
            k: 500,
            readout: crate::target::posterior::Readout::Blend,
            clip: 3.5,
            buffer: 10_000,
            refresh_every: 100,
            refresh: 1000,
            sampler_steps: 100,
        }
    }
}

/// EDM's P_mean (Karras et al. 2022, Table 1).
fn edm_p_mean() -> f64 {
    -1.2
}

/// EDM's P_std (Karras et al. 2022, Table 1).
fn edm_p_std() -> f64 {
    1.2
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig::Dsm {
            weighting: Weighting::Sigma2,
        }
    }
}

impl ObjectiveConfig {
    /// EDM's training with its published P_mean and P_std.
    pub fn edm() -> Self {
        ObjectiveConfig::Edm {
            p_mean: edm_p_mean(),
            p_std: edm_p_std(),
        }
    }

    /// The default of run configs (docs/experiments/recipes.md): DSM with the likelihood
    /// weighting g², t importance-sampled ∝ g²/σ² — with EDM's preconditioning, the best sample
    /// cross-entropy over the recipes compared and an NLL gap of 0.14 nats on GMM-40 under VP.
    pub fn recipe() -> Self {
        ObjectiveConfig::Dsm {
            weighting: Weighting::G2Importance,
        }
    }

    /// Names accepted by `from_name`.
    pub const NAMES: &'static str =
        "dsm, dsm_level, ncsn, esm, ism, ssm, ssm_vr, fd_ssm, force, mixed, edm, idem";

    /// An objective by name with default settings: `weighting` for continuous ones, level `t`
    /// for single-level ones (SSM: 1 Rademacher projection; FD-SSM: ε = 0.01; NCSN: 10 levels).
    pub fn from_name(name: &str, weighting: Weighting, t: f64) -> Result<Self> {
        Ok(match name {
            "dsm" => ObjectiveConfig::Dsm { weighting },
            "dsm_level" => ObjectiveConfig::DsmLevel { t },
            "ncsn" => ObjectiveConfig::Ncsn { levels: 10 },
            "esm" => ObjectiveConfig::Esm { t },
            "ism" => ObjectiveConfig::Ism { t },
            "ssm" | "ssm_vr" => ObjectiveConfig::Ssm {
                t,
                projection: Probe::Rademacher,
                projections: 1,
                variance_reduced: name == "ssm_vr",
            },
            "fd_ssm" => ObjectiveConfig::FdSsm {
                t,
                projection: Probe::Rademacher,
                eps: 0.01,
            },
            "force" => ObjectiveConfig::Force { weighting },
            "mixed" => ObjectiveConfig::Mixed { weighting },
            "edm" => Self::edm(),
            "idem" => ObjectiveConfig::Idem(Idem {
                weighting,
                ..Idem::default()
            }),
            other => bail!("unknown objective '{other}'; valid: {}", Self::NAMES),
        })
    }

    /// Short name, as in tables.
    pub fn name(&self) -> String {
        match self {
            ObjectiveConfig::Dsm { weighting } => format!("dsm ({weighting:?})").to_lowercase(),
            ObjectiveConfig::DsmLevel { .. } => "dsm (one level)".into(),
            ObjectiveConfig::Ncsn { levels } => format!("ncsn ({levels} levels)"),
            ObjectiveConfig::Esm { .. } => "esm".into(),
            ObjectiveConfig::Ism { .. } => "ism".into(),
            ObjectiveConfig::Ssm {
                variance_reduced,
                projection,
                ..
            } => format!(
                "{} ({projection:?})",
                if *variance_reduced { "ssm-vr" } else { "ssm" }
            )
            .to_lowercase(),
            ObjectiveConfig::FdSsm { .. } => "fd-ssm".into(),
            ObjectiveConfig::Force { .. } => "force".into(),
            ObjectiveConfig::Mixed { .. } => "mixed (dsm+force)".into(),
            ObjectiveConfig::Edm { .. } => "edm".into(),
            ObjectiveConfig::Idem(_) => "idem (energy only)".into(),
        }
    }

    /// The fixed time of a single-level objective (None: all of [t_min, T]).
    pub fn level(&self) -> Option<f64> {
        match *self {
            ObjectiveConfig::DsmLevel { t }
            | ObjectiveConfig::Esm { t }
            | ObjectiveConfig::Ism { t } => Some(t),
            ObjectiveConfig::Ssm { t, .. } | ObjectiveConfig::FdSsm { t, .. } => Some(t),
            _ => None,
        }
    }

    /// Whether the objective needs per-sample forces ∇log p0(x0).
    pub fn needs_forces(&self) -> bool {
        matches!(
            self,
            ObjectiveConfig::Force { .. } | ObjectiveConfig::Mixed { .. }
        )
    }

    /// Checks the parameters against the process.
    pub fn check(&self, p: &dyn Process) -> Result<()> {
        if let Some(t) = self.level() {
            if !(t >= p.t_min() && t <= p.t_max()) {
                bail!(
                    "objective.t = {t} lies outside the process's [t_min, T] = [{}, {}]",
                    p.t_min(),
                    p.t_max()
                );
            }
        }
        match *self {
            ObjectiveConfig::Ncsn { levels } if levels < 1 => {
                bail!("objective.levels must be at least 1")
            }
            ObjectiveConfig::Ssm { projections, .. } if projections < 1 => {
                bail!("objective.projections must be at least 1")
            }
            ObjectiveConfig::FdSsm { eps, .. } if eps.is_nan() || eps <= 0.0 => {
                bail!("objective.eps must be positive")
            }
            ObjectiveConfig::Edm { p_mean, p_std } if !(p_mean.is_finite() && p_std > 0.0) => {
                bail!("objective.p_mean must be finite and objective.p_std positive")
            }
            ObjectiveConfig::Idem(ref i) => i.check(),
            _ => Ok(()),
        }
    }

    /// One Monte-Carlo estimate of the loss on a batch (a scalar with gradients).
    pub fn loss(&self, net: &Model, batch: &Batch, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        if let Some(r) = self.regression(net, batch, rng)? {
            return r.loss(net);
        }
        if let Some(s) = self.stein(net, batch, rng)? {
            return s.loss(net);
        }
        match *self {
            ObjectiveConfig::FdSsm { t, projection, eps } => {
                stein::fd_ssm(net, t, projection, eps, batch, rng)
            }
            _ => unreachable!("regression and Stein objectives returned above"),
        }
    }

    /// For ISM and SSM, one draw of their inputs and directions; None otherwise. Draws from
    /// `rng` exactly as `loss` does.
    pub fn stein(
        &self,
        net: &Model,
        batch: &Batch,
        rng: &mut ChaCha8Rng,
    ) -> Result<Option<stein::Stein>> {
        Ok(Some(match *self {
            ObjectiveConfig::Ism { t } => stein::ism(net, t, batch, rng)?,
            ObjectiveConfig::Ssm {
                t,
                projection,
                projections,
                variance_reduced,
            } => stein::ssm(
                net,
                t,
                projection,
                projections,
                variance_reduced,
                batch,
                rng,
            )?,
            _ => return Ok(None),
        }))
    }

    /// For a regression objective, one draw of its inputs, targets and weights; None for the
    /// Stein objectives. Draws from `rng` exactly as `loss` does.
    pub fn regression(
        &self,
        net: &Model,
        batch: &Batch,
        rng: &mut ChaCha8Rng,
    ) -> Result<Option<regression::Regression>> {
        let (_, d) = batch.x0.dims2()?;
        if d != net.config.dim {
            bail!(
                "data have dimension {d} but the network expects {}",
                net.config.dim
            );
        }
        let mut r = match *self {
            ObjectiveConfig::Dsm { weighting } => regression::dsm(net, weighting, batch, rng)?,
            ObjectiveConfig::DsmLevel { t } => regression::dsm_level(net, t, batch, rng)?,
            ObjectiveConfig::Ncsn { levels } => regression::ncsn(net, levels, batch, rng)?,
            ObjectiveConfig::Esm { t } => regression::esm(net, t, batch, rng)?,
            ObjectiveConfig::Force { weighting } => {
                regression::force(net, weighting, batch, rng, false)?
            }
            ObjectiveConfig::Mixed { weighting } => {
                regression::force(net, weighting, batch, rng, true)?
            }
            ObjectiveConfig::Edm { p_mean, p_std } => {
                regression::edm(net, (p_mean, p_std), batch, rng)?
            }
            ObjectiveConfig::Idem(ref i) => regression::idem(net, i, batch, rng)?,
            ObjectiveConfig::Ism { .. }
            | ObjectiveConfig::Ssm { .. }
            | ObjectiveConfig::FdSsm { .. } => return Ok(None),
        };
        // a conditional network regresses s(x_t, t | c) on the rows' labels
        r.labels = batch.labels.clone();
        Ok(Some(r))
    }
}

impl Idem {
    /// Refuses settings that cannot run.
    pub fn check(&self) -> Result<()> {
        if self.k == 0 || self.buffer == 0 || self.refresh == 0 {
            bail!("objective.k, objective.buffer and objective.refresh must be at least 1");
        }
        if self.refresh_every == 0 || self.sampler_steps == 0 {
            bail!("objective.refresh_every and objective.sampler_steps must be at least 1");
        }
        if self.clip.is_nan() || self.clip < 0.0 {
            bail!("objective.clip must be >= 0 (0: no clipping)");
        }
        Ok(())
    }
}

/// A training batch: data x0 [n, d] (model space) and what is known about them.
pub struct Batch<'a> {
    pub x0: Tensor,
    /// Per-sample data scores ∇log p0(x0) = F(x0) (forces, at temperature 1), when known.
    pub force: Option<Tensor>,
    /// Class labels \[n\] (u32), when the data carry them.
    pub labels: Option<Tensor>,
    /// The exact diffused score ∇log p_t, when the data come from a known target; for `idem`,
    /// the Monte Carlo estimator of it from the potential.
    pub truth: Option<&'a dyn ScoreModel>,
    /// The minimum-variance blend of the DSM and force targets (the `mixed` objective).
    pub blend: Option<&'a Blend>,
}

#[cfg(test)]
mod tests;
