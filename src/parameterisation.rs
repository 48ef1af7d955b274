//! What a network's raw output means, and the one map between it and the score: ε, x0, v, the
//! score itself, an energy, and EDM's preconditioned denoiser (Karras et al. 2022). Every one is
//! linear, s = A·out + B·x at a given (α_t, σ_t); EDM also scales the network's inputs.

use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// What a network's output means (score_sde / EDM / Salimans & Ho conventions).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Parameterisation {
    /// ε̂ (noise prediction): s = −ε̂/σ_t.
    Eps,
    /// x̂0 (data prediction): s = (α_t x̂0 − x)/σ_t².
    X0,
    /// v̂ = α_t ε − σ_t x0 (velocity): ε̂ = (σ_t x + α_t v̂)/(α_t² + σ_t²), then as ε.
    V,
    /// The score itself.
    Score,
    /// A scalar f_θ(x, t) (a negative energy) whose input-gradient is the score: s = ∇x f_θ.
    /// The network's `forward` then returns ∇x f_θ, so the conversions are those of `Score`.
    Energy,
    /// EDM's preconditioning (Karras et al. 2022, Table 1) at the VE-equivalent level
    /// σ̃ = σ_t/α_t of x̃ = x/α_t: x̂0 = c_skip x̃ + c_out F(c_in x̃, c_noise), with
    /// c_skip = σ_d²/(σ̃² + σ_d²), c_out = σ̃σ_d/√(σ̃² + σ_d²), c_in = 1/√(σ̃² + σ_d²),
    /// c_noise = ¼ ln σ̃.
    Edm,
}

impl Parameterisation {
    /// The output map with the data's standard deviation σ_d (used by `Edm` only).
    pub fn with(self, sigma_data: f64) -> OutputMap {
        OutputMap {
            kind: self,
            sigma_data,
        }
    }
}

/// A parameterisation with what it needs to map outputs to scores: s = A·out + B·x, and the
/// network's inputs (c_in·x̃, c_noise) for EDM.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputMap {
    pub kind: Parameterisation,
    /// σ_d, the data's standard deviation in the network's units (EDM).
    pub sigma_data: f64,
}

/// EDM's coefficients in (α_t, σ_t): with r = √(σ_t² + α_t² σ_d²), c_in/α_t = 1/r,
/// A = α_t c_out/σ_t² = α_t σ_d/(σ_t r) and B = (c_skip − 1)/σ_t² = −1/r².
fn edm_coefficients(alpha: f64, sigma: f64, sd: f64) -> (f64, f64, f64) {
    let r = (sigma * sigma + alpha * alpha * sd * sd).sqrt();
    (alpha * sd / (sigma * r), -1.0 / (r * r), r)
}

impl OutputMap {
    /// (A, B) with s = A·out + B·x at one time: ε̂ (−1/σ, 0); x̂0 (α/σ², −1/σ²);
    /// v̂ (−α/((α² + σ²)σ), −1/(α² + σ²)); the score (and energy gradient) (1, 0);
    /// EDM (α σ_d/(σ r), −1/r²) with r² = σ² + α²σ_d².
    pub fn score_coefficients(&self, alpha: f64, sigma: f64) -> (f64, f64) {
        let norm = alpha * alpha + sigma * sigma;
        match self.kind {
            Parameterisation::Eps => (-1.0 / sigma, 0.0),
            Parameterisation::X0 => (alpha / (sigma * sigma), -1.0 / (sigma * sigma)),
            Parameterisation::V => (-alpha / (norm * sigma), -1.0 / norm),
            Parameterisation::Score | Parameterisation::Energy => (1.0, 0.0),
            Parameterisation::Edm => {
                let (a, b, _) = edm_coefficients(alpha, sigma, self.sigma_data);
                (a, b)
            }
        }
    }

    /// The network's inputs at (x, t): x is scaled by the first value and t replaced by the
    /// second; (1, t) except for EDM, (c_in/α_t, c_noise) = (1/r, ¼ ln(σ_t/α_t)).
    pub fn inputs(&self, alpha: f64, sigma: f64, t: f64) -> (f64, f64) {
        match self.kind {
            Parameterisation::Edm => {
                let (_, _, r) = edm_coefficients(alpha, sigma, self.sigma_data);
                (1.0 / r, 0.25 * (sigma / alpha).ln())
            }
            _ => (1.0, t),
        }
    }

    /// Whether the network sees (x, t) unchanged (every parameterisation but EDM).
    pub fn plain_inputs(&self) -> bool {
        self.kind != Parameterisation::Edm
    }

    /// Score from the network output `out` at x, with per-row α_t and σ_t as [n, 1] tensors.
    pub fn to_score(
        &self,
        out: &Tensor,
        x: &Tensor,
        alpha: &Tensor,
        sigma: &Tensor,
    ) -> Result<Tensor> {
        Ok(match self.kind {
            Parameterisation::Eps => out.broadcast_div(sigma)?.neg()?,
            Parameterisation::X0 => out
                .broadcast_mul(alpha)?
                .sub(x)?
                .broadcast_div(&sigma.sqr()?)?,
            Parameterisation::V => {
                let norm = (alpha.sqr()? + sigma.sqr()?)?;
                let eps =
                    (x.broadcast_mul(sigma)? + out.broadcast_mul(alpha)?)?.broadcast_div(&norm)?;
                eps.broadcast_div(sigma)?.neg()?
            }
            Parameterisation::Score | Parameterisation::Energy => out.clone(),
            Parameterisation::Edm => {
                let sd = self.sigma_data;
                let r2 = (sigma.sqr()? + (alpha.sqr()? * (sd * sd))?)?;
                let a = (alpha * sd)?.broadcast_div(&(sigma * &r2.sqrt()?)?)?;
                (out.broadcast_mul(&a)? - x.broadcast_div(&r2)?)?
            }
        })
    }

    /// The output whose score is s at x (one component): the inverse of `to_score`,
    /// out = (s − B·x)/A with (A, B) the `score_coefficients`.
    pub fn output_for_score(&self, s: f64, x: f64, alpha: f64, sigma: f64) -> f64 {
        let (a, b) = self.score_coefficients(alpha, sigma);
        (s - b * x) / a
    }

    /// The regression target for x_t = α x0 + σ ε in this parameterisation; EDM's is
    /// F* = (x0 − c_skip x̃)/c_out = (σ x0 − α σ_d² ε)/(σ_d r).
    pub fn target(
        &self,
        x0: &Tensor,
        eps: &Tensor,
        alpha: &Tensor,
        sigma: &Tensor,
    ) -> Result<Tensor> {
        Ok(match self.kind {
            Parameterisation::Eps => eps.clone(),
            Parameterisation::X0 => x0.clone(),
            Parameterisation::V => (eps.broadcast_mul(alpha)? - x0.broadcast_mul(sigma)?)?,
            Parameterisation::Score | Parameterisation::Energy => {
                eps.broadcast_div(sigma)?.neg()?
            }
            Parameterisation::Edm => {
                let sd = self.sigma_data;
                let r = (sigma.sqr()? + (alpha.sqr()? * (sd * sd))?)?.sqrt()?;
                let num = (x0.broadcast_mul(sigma)? - eps.broadcast_mul(&(alpha * (sd * sd))?)?)?;
                num.broadcast_div(&(r * sd)?)?
            }
        })
    }

    /// c(t) = |A| with ‖s − s*‖ = c(t)·‖out − out*‖: turns an output error into a score error.
    pub fn score_error_scale(&self, alpha: f64, sigma: f64) -> f64 {
        self.score_coefficients(alpha, sigma).0.abs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Every parameterisation's target maps to the same score −ε/σ, and the error scale is right.
    #[test]
    fn parameterisations_agree_on_the_score() -> Result<()> {
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[0.3f64, -1.2], [2.0, 0.5]], &dev)?;
        let eps = Tensor::new(&[[1.1f64, 0.4], [-0.7, 0.2]], &dev)?;
        let (a, s) = (0.8f64, 0.45f64);
        let alpha = Tensor::new(&[[a], [a]], &dev)?;
        let sigma = Tensor::new(&[[s], [s]], &dev)?;
        let x = (x0.affine(a, 0.0)? + eps.affine(s, 0.0)?)?;
        let want = eps.affine(-1.0 / s, 0.0)?;
        for p in [
            Parameterisation::Eps,
            Parameterisation::X0,
            Parameterisation::V,
            Parameterisation::Score,
            Parameterisation::Edm,
        ] {
            let p = p.with(0.7);
            let target = p.target(&x0, &eps, &alpha, &sigma)?;
            let got = p.to_score(&target, &x, &alpha, &sigma)?;
            let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(err < 1e-12, "{p:?}: {err}");
            // s = A·out + B·x, the scalar form the fused kernels use
            let (ca, cb) = p.score_coefficients(a, s);
            let affine = (target.affine(ca, 0.0)? + x.affine(cb, 0.0)?)?;
            let err = (affine - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(err < 1e-12, "{p:?}: score coefficients off by {err}");
            // perturb the output by δ and check ‖Δs‖ = c‖δ‖
            let delta = Tensor::new(&[[1e-3f64, 0.0], [0.0, 0.0]], &dev)?;
            let moved = p.to_score(&(target + &delta)?, &x, &alpha, &sigma)?;
            let ds = (moved
                - p.to_score(&p.target(&x0, &eps, &alpha, &sigma)?, &x, &alpha, &sigma)?)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?
            .sqrt();
            let c = p.score_error_scale(a, s);
            let (w, xs): (Vec<f64>, Vec<f64>) =
                (crate::flat::values(&want)?, crate::flat::values(&x)?);
            let back: Vec<f64> = w
                .iter()
                .zip(&xs)
                .map(|(&w, &x)| p.output_for_score(w, x, a, s))
                .collect();
            let back = Tensor::from_vec(back, want.shape(), &dev)?;
            let round = (p.to_score(&back, &x, &alpha, &sigma)? - &want)?
                .abs()?
                .max_all()?
                .to_scalar::<f64>()?;
            assert!(round < 1e-12, "{p:?}: output_for_score round trip {round}");
            assert!((ds - c * 1e-3).abs() < 1e-9, "{p:?}: {ds} vs {}", c * 1e-3);
        }
        Ok(())
    }

    /// EDM's preconditioning written in (α_t, σ_t) equals Karras et al.'s Table 1 in σ̃ = σ/α:
    /// s = (α D(x̃; σ̃) − x)/σ², D = c_skip x̃ + c_out F(c_in x̃, ¼ ln σ̃), at VP and VE points and
    /// two σ_d; and with σ_d = 1 on VP (α² + σ² = 1) it is −v-prediction.
    #[test]
    fn edm_coefficients_match_karras_table_1() {
        for (alpha, sigma) in [(0.8f64, 0.6f64), (1.0, 3.5), (0.05, 0.9987), (1.0, 0.002)] {
            for sd in [0.5, 1.3] {
                let m = Parameterisation::Edm.with(sd);
                let st = sigma / alpha;
                let c_skip = sd * sd / (st * st + sd * sd);
                let c_out = st * sd / (st * st + sd * sd).sqrt();
                let c_in = 1.0 / (st * st + sd * sd).sqrt();
                // s = A F + B x for D = c_skip x/α + c_out F
                let (a_want, b_want) = (
                    alpha * c_out / (sigma * sigma),
                    (c_skip - 1.0) / (sigma * sigma),
                );
                let (a, b) = m.score_coefficients(alpha, sigma);
                assert!((a / a_want - 1.0).abs() < 1e-12, "A {a} vs {a_want}");
                // c_skip − 1 cancels at small σ: a few ulps of 1 relative
                assert!((b / b_want - 1.0).abs() < 1e-10, "B {b} vs {b_want}");
                let (scale, t_in) = m.inputs(alpha, sigma, 0.3);
                assert!((scale / (c_in / alpha) - 1.0).abs() < 1e-12);
                assert!((t_in - 0.25 * st.ln()).abs() < 1e-12);
            }
        }
        let (alpha, sigma) = (0.6f64, 0.8f64);
        let (a, b) = Parameterisation::Edm
            .with(1.0)
            .score_coefficients(alpha, sigma);
        let (av, bv) = Parameterisation::V
            .with(1.0)
            .score_coefficients(alpha, sigma);
        assert!((a + av).abs() < 1e-12 && (b - bv).abs() < 1e-12);
    }
}
