//! Network tests: shapes, energy gradients and tangents against finite differences.

use super::*;
use crate::process::ProcessConfig;
use crate::score::{DivergenceModel, Parameterisation, ScoreModel};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;

use rand::SeedableRng;

#[test]
fn shapes_and_parameter_count_match_the_peer() -> Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let net = Model::new(
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
    let net = Model::new(config, &mut rand_chacha::ChaCha8Rng::seed_from_u64(2), &dev)?
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
    let networks = [NetworkKind::Mlp, NetworkKind::Resmlp];
    for (network, activation) in networks
        .into_iter()
        .flat_map(|n| [Activation::Silu, Activation::Softplus, Activation::Tanh].map(|a| (n, a)))
    {
        for parameterisation in [
            Parameterisation::Eps,
            Parameterisation::X0,
            Parameterisation::V,
            Parameterisation::Score,
            Parameterisation::Energy,
        ] {
            let mut config = ModelConfig::default_for(d, ProcessConfig::vp_default());
            config.arch = Arch {
                network,
                width: 32,
                depth: 2,
                activation,
                parameterisation,
                ..Arch::default()
            };
            if network == NetworkKind::Resmlp && parameterisation == Parameterisation::Energy {
                let err = Model::new(config, &mut rng, &dev)
                    .err()
                    .map(|e| e.to_string());
                assert!(err.is_some_and(|e| e.contains("network = \"mlp\"")));
                continue;
            }
            let net = Model::new(config, &mut rng, &dev)?;
            // J·u by central differences, [n, d]
            let jvp = |u: &Tensor| -> Result<Tensor> {
                let sp = net.score(&(&x + (u * h)?)?, &t)?;
                let sm = net.score(&(&x - (u * h)?)?, &t)?;
                Ok(((sp - sm)? / (2.0 * h))?)
            };
            let mut fd_div = Tensor::zeros(n, DType::F64, &dev)?;
            for j in 0..d {
                let e = Tensor::zeros((n, d), DType::F64, &dev)?
                    .slice_assign(&[0..n, j..j + 1], &Tensor::ones((n, 1), DType::F64, &dev)?)?;
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
                        "{network:?} {activation:?} {parameterisation:?}: {got:?} vs fd {want:?}"
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

/// On the zero-centre-of-mass space the divergence is the trace over the space, tr(P J P) =
/// Σ_j (P e_j)ᵀ J (P e_j), for the candle and the fused path alike (central differences, f64).
#[test]
fn divergence_on_a_restricted_space_is_the_trace_there() -> Result<()> {
    use crate::process::Space;
    let dev = Device::Cpu;
    let (n, d) = (3, 6);
    let mut config = ModelConfig::default_for(d, ProcessConfig::vp_default());
    config.event = vec![3, 2];
    config.space = Space::ComFree {
        particles: 3,
        dim: 2,
    };
    config.arch = Arch {
        width: 32,
        depth: 2,
        ..Arch::default()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let xv: Vec<f64> = (0..n * d).map(|_| rng.sample(StandardNormal)).collect();
    let x = config
        .space
        .project_tensor(&Tensor::from_vec(xv, (n, d), &dev)?)?;
    let t = Tensor::new(&[0.2f64, 0.5, 0.8], &dev)?;
    let build = || {
        Model::new(
            config.clone(),
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
            &dev,
        )
    };
    for net in [build()?, build()?.for_inference()?] {
        let h = 1e-2;
        let mut fd = vec![0.0f64; n];
        for j in 0..d {
            let e = Tensor::zeros((n, d), DType::F64, &dev)?
                .slice_assign(&[0..n, j..j + 1], &Tensor::ones((n, 1), DType::F64, &dev)?)?;
            let pe = config.space.project_tensor(&e)?;
            let sp = net.score(&(&x + (&pe * h)?)?, &t)?;
            let sm = net.score(&(&x - (&pe * h)?)?, &t)?;
            let jpe: Vec<f64> = (((sp - sm)? / (2.0 * h))? * &pe)?.sum(1)?.to_vec1()?;
            fd.iter_mut().zip(jpe).for_each(|(f, v)| *f += v);
        }
        let (s, div) = net.score_and_divergence(&x, &t)?;
        let div: Vec<f64> = div.to_vec1()?;
        for (g, w) in div.iter().zip(&fd) {
            assert!(
                (g - w).abs() < 1e-3 * (1.0 + w.abs()),
                "fused {}: {div:?} vs fd {fd:?}",
                net.is_fused()
            );
        }
        // the score lies in the space: each coordinate's particle mean is zero
        let centre = s
            .reshape((n, 3, 2))?
            .sum(1)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(centre < 1e-5, "score's centre of mass {centre}");
    }
    Ok(())
}
