//! Network tests: shapes, energy gradients and tangents against finite differences.

use super::*;
use crate::process::ProcessConfig;
use crate::score::{DivergenceModel, Parameterisation, ScoreModel};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;

use rand::SeedableRng;

/// Sets every f64 variable to N(0, 0.3²) draws: weights far from zero, where a broken symmetry
/// or a wrong derivative shows (DEM's initialisation leaves an EGNN nearly linear).
pub(crate) fn randomise(vars: &[(String, candle_core::Var)], rng: &mut impl Rng) -> Result<()> {
    for (_, v) in vars {
        let values: Vec<f64> = (0..v.elem_count())
            .map(|_| 0.3 * rng.sample::<f64, _>(StandardNormal))
            .collect();
        v.set(&Tensor::from_vec(values, v.shape(), v.device())?)?;
    }
    Ok(())
}

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

/// DEM's EGNN_dynamics, rebuilt: its numbers, symmetries, size and errors.
mod egnn {
    use super::*;
    use crate::process::Space;
    use candle_core::Var;

    const DW4: Space = Space::ComFree {
        particles: 4,
        dim: 2,
    };
    /// Five particles in 3-D.
    const FIVE_3D: Space = Space::ComFree {
        particles: 5,
        dim: 3,
    };

    /// An EGNN model spec for `space` with `depth` layers of `width`.
    fn spec(space: Space, width: usize, depth: usize) -> ModelConfig {
        let Space::ComFree { particles, dim } = space else {
            return ModelConfig::default_for(2, ProcessConfig::vp_default());
        };
        let mut config = ModelConfig::default_for(particles * dim, ProcessConfig::vp_default());
        config.event = vec![particles, dim];
        config.space = space;
        config.arch = Arch {
            network: NetworkKind::Egnn,
            width,
            depth,
            ..Arch::default()
        };
        config
    }

    /// An f64 EGNN whose weights are all drawn N(0, 0.3²): at DEM's initialisation the
    /// coordinate updates are ~1e-3 and would hide a broken symmetry.
    fn random_egnn(space: Space, width: usize, depth: usize, seed: u64) -> Result<Egnn> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut net = Egnn::new(
            space,
            &spec(space, width, depth).arch,
            &mut rng,
            &Device::Cpu,
        )?;
        net.to_dtype(DType::F64)?;
        super::randomise(net.vars(), &mut rng)?;
        Ok(net)
    }

    fn gaussian(rng: &mut impl Rng, shape: &[usize]) -> Result<Tensor> {
        let n = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }

    /// A random k×k orthogonal matrix with determinant `det` (Gram–Schmidt on Gaussian rows).
    fn orthogonal(k: usize, det: f64, rng: &mut impl Rng) -> Result<Tensor> {
        let mut rows: Vec<Vec<f64>> = Vec::new();
        while rows.len() < k {
            let mut v: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
            for r in &rows {
                let dot: f64 = v.iter().zip(r).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(r).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            rows.push(v.iter().map(|a| a / norm).collect());
        }
        let q = Tensor::new(rows, &Device::Cpu)?;
        // the determinant's sign by LU-free means: flip the last row if it disagrees
        let sign = determinant(&q.to_vec2()?).signum();
        let flip: Vec<f64> = (0..k)
            .map(|i| if i + 1 == k && sign != det { -1.0 } else { 1.0 })
            .collect();
        Ok(q.broadcast_mul(&Tensor::new(flip, &Device::Cpu)?.unsqueeze(1)?)?)
    }

    /// The determinant by Laplace expansion (k ≤ 3 here).
    fn determinant(m: &[Vec<f64>]) -> f64 {
        if m.len() == 1 {
            return m[0][0];
        }
        (0..m.len())
            .map(|j| {
                let minor: Vec<Vec<f64>> = m[1..]
                    .iter()
                    .map(|r| {
                        r.iter()
                            .enumerate()
                            .filter(|(c, _)| *c != j)
                            .map(|(_, v)| *v)
                            .collect()
                    })
                    .collect();
                let sign = if j % 2 == 0 { 1.0 } else { -1.0 };
                sign * m[0][j] * determinant(&minor)
            })
            .sum()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        Ok((a - b)?
            .abs()?
            .max_all()?
            .to_dtype(DType::F64)?
            .to_scalar()?)
    }

    /// Rotating (det +1) or reflecting (det −1) the input rotates or reflects the output;
    /// translating it changes nothing; permuting the particles permutes the output; the output
    /// has zero centre of mass. f64, weights far from zero, 2-D and 3-D.
    #[test]
    fn egnn_is_e_n_equivariant_and_mean_free() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for (space, seed) in [(DW4, 1), (FIVE_3D, 2)] {
            let Space::ComFree {
                particles: n,
                dim: k,
            } = space
            else {
                unreachable!()
            };
            let net = random_egnn(space, 16, 3, seed)?;
            let b = 6;
            let x = gaussian(&mut rng, &[b, n * k])?;
            let t = Tensor::new(&[0.01f64, 0.1, 0.3, 0.5, 0.8, 1.0], &Device::Cpu)?;
            let f = |x: &Tensor| net.forward(x, &t, None);
            let out = f(&x)?;
            let scale = out.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(
                scale > 1e-2,
                "the output {scale} is too small to test anything"
            );
            let centre = out
                .reshape((b, n, k))?
                .sum(1)?
                .abs()?
                .max_all()?
                .to_scalar::<f64>()?;
            assert!(centre < 1e-12, "{space:?}: centre of mass {centre}");
            let as_particles = |x: &Tensor| x.reshape((b, n, k));
            for det in [1.0, -1.0] {
                let q = orthogonal(k, det, &mut rng)?;
                let turn = |x: &Tensor| -> Result<Tensor> {
                    Ok(as_particles(x)?.broadcast_matmul(&q)?.reshape((b, n * k))?)
                };
                let err = max_diff(&f(&turn(&x)?)?, &turn(&out)?)?;
                assert!(err < 1e-10 * (1.0 + scale), "{space:?} det {det}: {err}");
            }
            let shift = gaussian(&mut rng, &[b, 1, k])?;
            let moved = as_particles(&x)?
                .broadcast_add(&(shift * 5.0)?)?
                .reshape((b, n * k))?;
            let err = max_diff(&f(&moved)?, &out)?;
            assert!(err < 1e-10 * (1.0 + scale), "{space:?} translation: {err}");
            let perm: Vec<u32> = (0..n as u32).rev().collect();
            let perm = Tensor::new(perm, &Device::Cpu)?;
            let shuffle = |x: &Tensor| -> Result<Tensor> {
                Ok(as_particles(x)?
                    .index_select(&perm, 1)?
                    .reshape((b, n * k))?)
            };
            let err = max_diff(&f(&shuffle(&x)?)?, &shuffle(&out)?)?;
            assert!(err < 1e-10 * (1.0 + scale), "{space:?} permutation: {err}");
        }
        Ok(())
    }

    /// DEM's EGNN_dynamics itself (PyTorch, f64, its weights in tests/data/egnn_dem.json from
    /// `bench/peers/egnn_ref.py fixture`) and tweedie's EGNN with the same weights agree.
    #[test]
    fn egnn_matches_dem_on_a_fixture() -> Result<()> {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/egnn_dem.json"))?;
        let size = |k: &str| doc[k].as_u64().map(|v| v as usize).unwrap_or(0);
        let space = Space::ComFree {
            particles: size("particles"),
            dim: size("dim"),
        };
        let mut net = Egnn::new(
            space,
            &spec(space, size("hidden"), size("layers")).arch,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(0),
            &Device::Cpu,
        )?;
        net.to_dtype(DType::F64)?;
        let floats = |v: &serde_json::Value| -> Vec<f64> {
            let mut out = Vec::new();
            let mut walk = vec![v];
            while let Some(v) = walk.pop() {
                match v {
                    serde_json::Value::Array(a) => walk.extend(a.iter().rev()),
                    other => out.push(other.as_f64().unwrap_or(f64::NAN)),
                }
            }
            out
        };
        let params = &doc["params"];
        for (name, var) in net.vars() {
            let values = floats(&params[name]["values"]);
            assert_eq!(values.len(), var.elem_count(), "{name}");
            var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu)?)?;
        }
        // DEM's weights that tweedie does not keep are exactly those that never reach the output
        let ours: Vec<&str> = net.vars().iter().map(|(n, _)| n.as_str()).collect();
        let mut dropped: Vec<&str> = params
            .as_object()
            .map(|o| {
                o.keys()
                    .map(|k| k.as_str())
                    .filter(|k| !ours.contains(k))
                    .collect()
            })
            .unwrap_or_default();
        dropped.sort();
        let last = size("layers") - 1;
        let want = [
            "embedding_out.bias".to_string(),
            "embedding_out.weight".into(),
            format!("gcl_{last}.node_mlp.0.bias"),
            format!("gcl_{last}.node_mlp.0.weight"),
            format!("gcl_{last}.node_mlp.2.bias"),
            format!("gcl_{last}.node_mlp.2.weight"),
        ];
        assert_eq!(dropped, want);
        let x = floats(&doc["x"]);
        let rows = x.len() / (size("particles") * size("dim"));
        let x = Tensor::from_vec(x, (rows, size("particles") * size("dim")), &Device::Cpu)?;
        let t = Tensor::new(floats(&doc["t"]), &Device::Cpu)?;
        let want = Tensor::from_vec(floats(&doc["out"]), x.shape(), &Device::Cpu)?;
        let got = net.forward(&x, &t, None)?;
        let err = max_diff(&got, &want)?;
        let scale = want.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(
            scale > 0.1 && err < 1e-12,
            "error {err} against DEM's output of size {scale}"
        );
        Ok(())
    }

    /// tweedie's EGNN has DEM's parameters less the ones that never reach the output.
    #[test]
    fn egnn_parameter_count_matches_dem() -> Result<()> {
        // PyTorch, DEM's EGNN_dynamics(hidden_nf=128, attention, tanh, recurrent):
        // sum(p.numel() for p in net.parameters()) = 347,908 (DW-4: 4×2, 3 layers) and 579,590
        // (LJ-13: 13×3, 5 layers); of these, the last layer's node_mlp (32,896 + 16,512) and
        // embedding_out (129) get no gradient (their output is discarded): 49,537.
        for (space, depth, dem) in [
            (DW4, 3, 347_908),
            (
                Space::ComFree {
                    particles: 13,
                    dim: 3,
                },
                5,
                579_590,
            ),
        ] {
            let config = spec(space, 128, depth);
            let net = Model::new(
                config.clone(),
                &mut rand_chacha::ChaCha8Rng::seed_from_u64(0),
                &Device::Cpu,
            )?;
            assert_eq!(net.num_params(), dem - 49_537, "{space:?}");
            assert_eq!(config.parameter_count(), Some(net.num_params()));
        }
        Ok(())
    }

    /// An EGNN needs particles: the full space, a condition, the wrong width and the energy
    /// parameterisation are refused with messages that say what to do.
    #[test]
    fn egnn_refuses_what_it_cannot_do() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut full = spec(DW4, 8, 1);
        full.space = Space::Full;
        let err = Model::new(full, &mut rng, &dev)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("--com-free")), "full space");
        let mut energy = spec(DW4, 8, 1);
        energy.arch.parameterisation = Parameterisation::Energy;
        assert!(Model::new(energy, &mut rng, &dev).is_err());
        let net = Model::new(spec(DW4, 8, 1), &mut rng, &dev)?;
        let x = Tensor::zeros((3, 8), DType::F32, &dev)?;
        let t = Tensor::full(0.5f32, 3, &dev)?;
        let cond = Tensor::zeros(3, DType::U32, &dev)?;
        assert!(net.network().forward(&x, &t, Some(&cond)).is_err());
        let wide = Tensor::zeros((3, 9), DType::F32, &dev)?;
        assert!(net.network().forward(&wide, &t, None).is_err());
        let v = Tensor::zeros((1, 3, 8), DType::F32, &dev)?;
        let err = net
            .forward_with_tangents(&x, &t, &v)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("no forward-mode tangents")));
        assert_eq!(net.score(&x, &t)?.dims(), &[3, 8]);
        Ok(())
    }

    /// The fused edge op and candle's ops compute the same network in f32: the output and every
    /// variable's gradient agree (H = 16: products with fused epilogues; H = 12: product, then
    /// epilogue; 3-D with five particles).
    #[test]
    fn fused_egnn_edges_match_candle_ops() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (space, width) in [(DW4, 16), (FIVE_3D, 12)] {
            let mut net = random_egnn(space, width, 3, 7)?;
            net.to_dtype(DType::F32)?;
            let d = net.vars()[0].1.device().clone();
            let b = 9;
            let x = gaussian(&mut rng, &[b, size(space)])?.to_dtype(DType::F32)?;
            let t = Tensor::rand(0f32, 1.0, b, &d)?;
            let mut run = |fused: bool| -> Result<(Tensor, Vec<Tensor>)> {
                net.fused = fused;
                let out = net.forward(&x, &t, None)?;
                // a loss that weighs every output differently
                let weights = Tensor::arange(1f32, (out.elem_count() + 1) as f32, &d)?
                    .reshape(out.shape())?
                    .sin()?;
                let grads = (&out * weights)?.sum_all()?.backward()?;
                let g = net
                    .vars()
                    .iter()
                    .map(|(name, v)| {
                        grads
                            .get(v.as_tensor())
                            .cloned()
                            .ok_or_else(|| anyhow::anyhow!("{name}: no gradient"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((out, g))
            };
            let (want, want_g) = run(false)?;
            let (got, got_g) = run(true)?;
            let close = |a: &Tensor, b: &Tensor, what: &str| -> Result<()> {
                let scale = b.abs()?.max_all()?.to_scalar::<f32>()?;
                let err = max_diff(a, b)?;
                assert!(
                    err <= 2e-4 * (1.0 + scale as f64),
                    "{space:?} H={width} {what}: {err} (scale {scale})"
                );
                Ok(())
            };
            close(&got, &want, "output")?;
            for ((name, _), (g, w)) in net.vars().iter().zip(got_g.iter().zip(&want_g)) {
                close(g, w, name)?;
            }
        }
        Ok(())
    }

    /// d = N·k of a particle space.
    fn size(space: Space) -> usize {
        match space {
            Space::ComFree { particles, dim } => particles * dim,
            Space::Full => 0,
        }
    }

    /// Gradients reach every variable (none is dead weight, as DEM's unused ones would be).
    #[test]
    fn every_egnn_variable_gets_a_gradient() -> Result<()> {
        let net = random_egnn(DW4, 8, 2, 5)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let x = gaussian(&mut rng, &[3, 8])?;
        let t = Tensor::new(&[0.2f64, 0.5, 0.9], &Device::Cpu)?;
        let grads = net.forward(&x, &t, None)?.sqr()?.sum_all()?.backward()?;
        for (name, v) in net.vars() {
            let g: &Var = v;
            let norm = grads
                .get(g.as_tensor())
                .map(|g| g.abs()?.sum_all()?.to_scalar::<f64>())
                .transpose()?;
            assert!(norm.is_some_and(|n| n > 0.0), "{name}: no gradient");
        }
        Ok(())
    }
}
