//! Quadratic forms of a score's Jacobian by reverse-mode autograd, for networks without
//! forward-mode tangents (the EGNN): exact divergences for the likelihood at m backward passes
//! per evaluation.

use anyhow::{bail, Result};
use candle_core::{Tensor, Var};
/// Score s [n, d] and the forms vᵀ(∂s/∂x)v [m, n] by reverse mode, for networks without
/// forward-mode tangents (EGNN): one backward pass of Σ_i s_i·v_ki per direction k gives the rows
/// (∂s/∂x)ᵀv_k (the points are independent samples: row i of s depends on x_i alone), and
/// vᵀJᵀv = vᵀJv. m backward passes per call: slower than tangents, exact all the same.
pub(crate) fn quadratic_forms(
    score: impl Fn(&Tensor) -> Result<Tensor>,
    x: &Tensor,
    v: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let m = v.dims3()?.0;
    let xv = Var::from_tensor(&x.detach())?;
    let s = score(xv.as_tensor())?;
    let forms = (0..m)
        .map(|k| -> Result<Tensor> {
            let vk = v.get(k)?.to_dtype(s.dtype())?;
            let grads = (&s * &vk)?.sum_all()?.backward()?;
            let Some(g) = grads.get(xv.as_tensor()) else {
                bail!("the score does not depend on its input (no gradient came back)");
            };
            Ok((g.to_dtype(x.dtype())? * v.get(k)?.to_dtype(x.dtype())?)?.sum(1)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((s.detach().to_dtype(x.dtype())?, Tensor::stack(&forms, 0)?))
}

#[cfg(test)]
mod tests {
    use crate::nn::config::{Arch, ModelConfig, NetworkKind};
    use crate::nn::Model;
    use crate::process::{ProcessConfig, Space};
    use crate::score::{DivergenceModel, ScoreModel};
    use anyhow::Result;
    use candle_core::{DType, Device, Tensor};
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;

    /// An EGNN score model of DW-4's shape (4 particles in 2-D) with weights N(0, 0.3²) (DEM's
    /// initialisation leaves the network nearly linear), in f64.
    fn egnn(seed: u64) -> Result<Model> {
        let space = Space::ComFree {
            particles: 4,
            dim: 2,
        };
        let mut config = ModelConfig::default_for(8, ProcessConfig::vp_default());
        config.event = vec![4, 2];
        config.space = space;
        config.arch = Arch {
            network: NetworkKind::Egnn,
            width: 16,
            depth: 2,
            ..Arch::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let model = Model::new(config, &mut rng, &Device::Cpu)?.to_dtype(DType::F64)?;
        crate::nn::tests::randomise(model.vars(), &mut rng)?;
        Ok(model)
    }

    /// The EGNN's exact divergence (reverse mode) is the trace over the centre-of-mass-free
    /// space, Σ_j (P e_j)ᵀ J (P e_j), by central differences of the score in f64 (h = 1e-5);
    /// on the fused f32 edge op (inexact input gradients) it is refused.
    #[test]
    fn egnn_divergence_matches_finite_differences() -> Result<()> {
        let model = egnn(3)?;
        let dev = Device::Cpu;
        let (n, d) = (5, 8);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let space = model.process().space();
        let mut xv: Vec<f64> = (0..n * d).map(|_| rng.sample(StandardNormal)).collect();
        space.project(&mut xv);
        let x = Tensor::from_vec(xv, (n, d), &dev)?;
        let t = Tensor::new(&[0.05f64, 0.2, 0.4, 0.7, 0.95], &dev)?;
        let (_, div) = model.score_and_divergence(&x, &t)?;
        let h = 1e-5;
        let mut fd = vec![0.0; n];
        for j in 0..d {
            let mut e = vec![0.0; n * d];
            (0..n).for_each(|i| e[i * d + j] = 1.0);
            space.project(&mut e);
            let e = Tensor::from_vec(e, (n, d), &dev)?;
            let sp = model.score(&(&x + (&e * h)?)?, &t)?;
            let sm = model.score(&(&x - (&e * h)?)?, &t)?;
            let q: Vec<f64> = (((sp - sm)? / (2.0 * h))? * &e)?.sum(1)?.to_vec1()?;
            fd.iter_mut().zip(q).for_each(|(f, q)| *f += q);
        }
        let got: Vec<f64> = div.to_vec1()?;
        for (g, w) in got.iter().zip(&fd) {
            assert!(
                (g - w).abs() < 1e-6 * (1.0 + w.abs()),
                "{got:?} vs fd {fd:?}"
            );
        }
        assert!(
            fd.iter().any(|w| w.abs() > 1.0),
            "a trivial divergence: {fd:?}"
        );
        if crate::nn::fused::enabled() {
            let fused = egnn(3)?.to_dtype(DType::F32)?;
            let err = fused
                .score_and_divergence(&x, &t)
                .err()
                .map(|e| e.to_string());
            assert!(err.is_some_and(|e| e.contains("f64")));
        }
        Ok(())
    }
}
