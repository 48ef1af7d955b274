//! Training objectives. Continuous-time denoising score matching (Song et al. 2021, eq. 7):
//! L(θ) = E_{t~U(t_min,T)} E_{x0, ε} λ(t) · ½‖s_θ(α_t x0 + σ_t ε, t) + ε/σ_t‖².

use crate::nn::ScoreNet;
use crate::process::Process;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// The weighting λ(t) of the score error in continuous-time DSM.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Weighting {
    /// λ(t) = σ_t²: ε-prediction MSE (Ho et al. 2020; score_sde's default).
    Sigma2,
    /// λ(t) = g(t)²: the likelihood weighting (Song et al. 2021b, bounds the NLL).
    G2,
    /// λ(t) = 1.
    One,
}

impl Weighting {
    /// λ(t) for a process.
    pub fn lambda(&self, p: &dyn Process, t: f64) -> f64 {
        match self {
            Weighting::Sigma2 => p.sigma(t).powi(2),
            Weighting::G2 => p.g2(t),
            Weighting::One => 1.0,
        }
    }
}

/// One Monte-Carlo estimate of the continuous-time DSM loss on a batch x0 [n, d] (f32).
///
/// The error is taken in the network's own output space and scaled back to score space with
/// c(t) (see `Parameterisation::score_error_scale`), so no 1/σ_t blows up in f32 at small t.
/// Loss = mean over the batch of λ(t)·c(t)²·½‖out − out*‖².
pub fn dsm_loss(
    net: &ScoreNet,
    weighting: Weighting,
    x0: &Tensor,
    rng: &mut impl Rng,
) -> Result<Tensor> {
    let (n, d) = x0.dims2()?;
    if d != net.config.dim {
        bail!(
            "data have dimension {d} but the network expects {}",
            net.config.dim
        );
    }
    let p = net.process();
    let dev = x0.device();
    let ts: Vec<f64> = (0..n)
        .map(|_| rng.random_range(p.t_min()..p.t_max()))
        .collect();
    let eps: Vec<f32> = (0..n * d).map(|_| StandardNormal.sample(rng)).collect();
    let param = net.config.arch.parameterisation;
    let w: Vec<f32> = ts
        .iter()
        .map(|&t| {
            let c = param.score_error_scale(p.alpha(t), p.sigma(t));
            (weighting.lambda(p, t) * c * c) as f32
        })
        .collect();
    let t = Tensor::from_vec(ts, n, dev)?.to_dtype(DType::F32)?;
    let eps = Tensor::from_vec(eps, (n, d), dev)?;
    let w = Tensor::from_vec(w, (n, 1), dev)?;
    let (alpha, sigma) = net.coefficients(&t)?;
    let xt = (x0.broadcast_mul(&alpha)? + eps.broadcast_mul(&sigma)?)?;
    let target = param.target(x0, &eps, &alpha, &sigma)?;
    let out = net.forward(&xt, &t)?;
    let per_row = (out - target)?.sqr()?.broadcast_mul(&w)?;
    Ok((per_row.sum_all()? * (0.5 / n as f64))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ModelConfig;
    use crate::process::ProcessConfig;
    use crate::score::Parameterisation;
    use candle_core::Device;
    use rand::SeedableRng;

    /// With λ = σ² and ε-prediction the loss is ½ E‖ε̂ − ε‖² summed over dimensions,
    /// and the parameterisations' losses agree for a network that predicts exactly zero score error.
    #[test]
    fn sigma2_weighting_is_eps_mse() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let cfg = ModelConfig::default_for(2, ProcessConfig::vp_default());
        let net = ScoreNet::new(cfg, &mut rng, &Device::Cpu)?;
        let x0 = Tensor::zeros((4096, 2), DType::F32, &Device::Cpu)?;
        let l = dsm_loss(&net, Weighting::Sigma2, &x0, &mut rng)?.to_scalar::<f32>()?;
        // an untrained net outputs O(0.1) values, so ½E‖ε̂ − ε‖² ≈ ½·d = 1 plus a little
        assert!(l > 0.9 && l < 1.5, "loss {l}");
        assert_eq!(Parameterisation::Eps.score_error_scale(0.5, 0.5), 2.0);
        Ok(())
    }
}
