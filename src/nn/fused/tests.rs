//! Tests of the fused MLP against the candle network it replaces.

use super::*;
use crate::nn::Embedding;
use crate::nn::{Activation, Arch, ModelConfig};
use crate::process::ProcessConfig;
use crate::score::probes;
use crate::score::Probe;
use candle_core::{DType, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// ‖a − b‖ / ‖b‖.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Outputs, tangents and parameter gradients of the fused MLP equal the candle network's to
/// 1e-5 relative, for every activation and embedding, with n spanning several threads and
/// cache blocks (1300 rows; 512-row blocks at width 128).
#[test]
fn fused_mlp_matches_the_candle_network() -> Result<()> {
    let dev = Device::Cpu;
    let (n, d) = (1300, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = Tensor::randn(0f32, 1.5, (n, d), &dev)?;
    let t = Tensor::rand(1e-3f32, 1.0, n, &dev)?;
    let v = probes(Probe::Gaussian, 2, n, d, &mut rng, DType::F32, &dev)?;
    let target = Tensor::randn(0f32, 1.0, (n, d), &dev)?;
    let w = Tensor::rand(0.5f32, 2.0, (n, 1), &dev)?;
    for (activation, embedding, width) in [
        (Activation::Silu, Embedding::Fourier, 128),
        (Activation::Softplus, Embedding::Sinusoidal, 48),
        (Activation::Tanh, Embedding::Fourier, 40),
    ] {
        let mut config = ModelConfig::default_for(d, ProcessConfig::vp_default());
        config.arch = Arch {
            width,
            depth: 3,
            activation,
            embedding,
            ..Arch::default()
        };
        let net = Model::new(config, &mut rng, &dev)?;
        let fused = net.network().fused().expect("an mlp")?;
        let (xs, ts, vs) = (flat(&x), flat(&t), flat(&v));

        let (want_out, want_tan) = net.forward_with_tangents(&x, &t, &v)?;
        let (out, tan) = fused.forward(&xs, &ts, Some((&vs, 2)))?;
        let (e_out, e_tan) = (rel(&out, &flat(&want_out)), rel(&tan, &flat(&want_tan)));
        assert!(
            e_out < 1e-5 && e_tan < 1e-5,
            "{activation:?}: out {e_out:e}, tangents {e_tan:e}"
        );

        // loss mean_r w_r ½‖out_r − target_r‖² and its gradient
        let loss = ((net.forward(&x, &t)? - &target)?
            .sqr()?
            .broadcast_mul(&w)?
            .sum_all()?
            * (0.5 / n as f64))?;
        let grads = loss.backward()?;
        let (tg, wv) = (flat(&target), flat(&w));
        let o = fused.out_dim();
        let mut grad = vec![0.0f32; fused.params().len()];
        let value = fused.loss_and_grad(
            &xs,
            &ts,
            |rows, out, g| {
                let mut l = 0.0f64;
                for (i, r) in rows.enumerate() {
                    for j in 0..o {
                        let e = out[i * o + j] - tg[r * o + j];
                        l += 0.5 * (wv[r] * e * e) as f64 / n as f64;
                        g[i * o + j] = wv[r] * e / n as f32;
                    }
                }
                l
            },
            &mut grad,
        )?;
        let want_loss = loss.to_scalar::<f32>()? as f64;
        assert!(
            (value - want_loss).abs() < 1e-5 * want_loss,
            "loss {value} vs {want_loss}"
        );
        let want: Vec<Tensor> = net
            .vars()
            .iter()
            .map(|(_, p): &(String, Var)| grads.get(p.as_tensor()).unwrap().clone())
            .collect();
        for ((name, _), (got, want)) in net
            .vars()
            .iter()
            .zip(fused.to_tensors(&grad, &dev)?.iter().zip(&want))
        {
            let e = rel(&flat(got), &flat(want));
            assert!(e < 1e-5, "{activation:?} ∂L/∂{name}: relative error {e:e}");
        }
    }
    Ok(())
}

/// The reverse pass through the tangents (a Stein-type loss on outputs and J·v) gives the same
/// parameter gradients as candle's autograd through `forward_with_tangents`, to 1e-5.
#[test]
fn jvp_gradients_match_the_candle_network() -> Result<()> {
    let dev = Device::Cpu;
    let (n, d, m) = (900, 2, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let x = Tensor::randn(0f32, 1.0, (n, d), &dev)?;
    let t = Tensor::rand(1e-3f32, 1.0, n, &dev)?;
    let v = probes(Probe::Rademacher, m, n, d, &mut rng, DType::F32, &dev)?;
    let u = Tensor::randn(0f32, 1.0, (m, n, d), &dev)?;
    for (activation, width) in [
        (Activation::Silu, 128),
        (Activation::Softplus, 24),
        (Activation::Tanh, 40),
    ] {
        let mut config = ModelConfig::default_for(d, ProcessConfig::vp_default());
        config.arch = Arch {
            width,
            depth: 3,
            activation,
            ..Arch::default()
        };
        let net = Model::new(config, &mut rng, &dev)?;
        let fused = net.network().fused().expect("an mlp")?;
        // L = Σ_n ½‖out_n‖²/n + Σ_{k,n} ⟨u_kn, tan_kn⟩/n
        let (out, tan) = net.forward_with_tangents(&x, &t, &v)?;
        let loss = ((out.sqr()?.sum_all()? * 0.5)? + (tan * &u)?.sum_all()?)?;
        let loss = (loss / n as f64)?;
        let grads = loss.backward()?;
        let us = flat(&u);
        let mut grad = vec![0.0f32; fused.params().len()];
        let value = fused.loss_and_grad_jvp(
            &flat(&x),
            &flat(&t),
            (&flat(&v), m),
            |rows, out, tan, g, gt| {
                let len = rows.len();
                let mut l = 0.0f64;
                for (o, g) in out.iter().zip(g.iter_mut()) {
                    l += 0.5 * (o * o) as f64 / n as f64;
                    *g = o / n as f32;
                }
                for k in 0..m {
                    for (i, r) in rows.clone().enumerate() {
                        for j in 0..d {
                            let (a, b) = ((k * len + i) * d + j, (k * n + r) * d + j);
                            l += (tan[a] * us[b]) as f64 / n as f64;
                            gt[a] = us[b] / n as f32;
                        }
                    }
                }
                l
            },
            &mut grad,
        )?;
        let want_loss = loss.to_scalar::<f32>()? as f64;
        assert!(
            (value - want_loss).abs() < 1e-5 * want_loss.abs(),
            "loss {value} vs {want_loss}"
        );
        for ((name, p), got) in net.vars().iter().zip(fused.to_tensors(&grad, &dev)?) {
            let want = flat(grads.get(p.as_tensor()).unwrap());
            let e = rel(&flat(&got), &want);
            assert!(e < 1e-5, "{activation:?} ∂L/∂{name}: relative error {e:e}");
        }
    }
    Ok(())
}

/// When every row has the same time (samplers, ODE solves) layer 0 folds the embedding into
/// its bias: outputs, tangents and gradients still equal the candle network's, and so do
/// outputs without tangents over many chunks.
#[test]
fn shared_time_matches_the_candle_network() -> Result<()> {
    let dev = Device::Cpu;
    let (n, d) = (700, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut config = ModelConfig::default_for(d, ProcessConfig::vp_default());
    config.arch = Arch {
        width: 64,
        ..Arch::default()
    };
    let net = Model::new(config, &mut rng, &dev)?;
    let fused = net.network().fused().expect("an mlp")?;
    let x = Tensor::randn(0f32, 1.0, (n, d), &dev)?;
    let t = Tensor::full(0.37f32, n, &dev)?;
    let v = probes(Probe::Gaussian, 2, n, d, &mut rng, DType::F32, &dev)?;
    let (want_out, want_tan) = net.forward_with_tangents(&x, &t, &v)?;
    let (out, tan) = fused.forward(&flat(&x), &flat(&t), Some((&flat(&v), 2)))?;
    assert!(rel(&out, &flat(&want_out)) < 1e-5 && rel(&tan, &flat(&want_tan)) < 1e-5);
    let grads = (net.forward(&x, &t)?.sqr()?.sum_all()? * 0.5)?.backward()?;
    let mut grad = vec![0.0f32; fused.params().len()];
    fused.loss_and_grad(
        &flat(&x),
        &flat(&t),
        |_, out, g| {
            g.copy_from_slice(out);
            0.0
        },
        &mut grad,
    )?;
    for ((name, p), got) in net.vars().iter().zip(fused.to_tensors(&grad, &dev)?) {
        let e = rel(&flat(&got), &flat(grads.get(p.as_tensor()).unwrap()));
        assert!(e < 1e-5, "∂L/∂{name}: relative error {e:e}");
    }
    // a sampler's call: no tangents, enough rows for several chunks per thread
    let n = 4100 * rayon::current_num_threads();
    let x = Tensor::randn(0f32, 1.0, (n, d), &dev)?;
    let t = Tensor::full(0.81f32, n, &dev)?;
    let (out, _) = fused.forward(&flat(&x), &flat(&t), None)?;
    assert!(rel(&out, &flat(&net.forward(&x, &t)?)) < 1e-5);
    // new weights at the same t: the workspaces' folded layer-0 bias must not be reused
    let mut fused = fused;
    fused.params_mut().iter_mut().for_each(|p| *p *= 0.9);
    for ((_, var), p) in net
        .vars()
        .iter()
        .zip(fused.to_tensors(fused.params(), &dev)?)
    {
        var.set(&p)?;
    }
    let (out, _) = fused.forward(&flat(&x), &flat(&t), None)?;
    assert!(rel(&out, &flat(&net.forward(&x, &t)?)) < 1e-5);
    Ok(())
}

/// A loaded network's inference path (`for_inference`: fused kernels, the score conversion done
/// row by row) gives the candle network's score and quadratic forms vᵀ J_s v for every
/// parameterisation, with per-row and shared times, from f32 and f64 inputs.
#[test]
fn inference_score_matches_the_candle_network() -> Result<()> {
    use crate::score::{DivergenceModel, ScoreModel};
    let dev = Device::Cpu;
    let (n, d) = (300, 2);
    let x = Tensor::randn(0f32, 1.0, (n, d), &dev)?;
    let v = Tensor::randn(0f32, 1.0, (3, n, d), &dev)?;
    let per_row = Tensor::rand(0.01f32, 1.0, n, &dev)?;
    let shared = Tensor::full(0.3f32, n, &dev)?;
    for param in [
        Parameterisation::Eps,
        Parameterisation::X0,
        Parameterisation::V,
        Parameterisation::Score,
    ] {
        let mut config = ModelConfig::default_for(d, ProcessConfig::vp_default());
        config.arch = Arch {
            width: 32,
            parameterisation: param,
            ..Arch::default()
        };
        let build = || Model::new(config.clone(), &mut ChaCha8Rng::seed_from_u64(9), &dev);
        let (net, fast) = (build()?, build()?.for_inference()?);
        assert!(fast.is_fused());
        for t in [&per_row, &shared] {
            let e = rel(&flat(&fast.score(&x, t)?), &flat(&net.score(&x, t)?));
            assert!(e < 1e-5, "{param:?}: score {e:e}");
            let (s, q) = fast.score_and_quadratic_forms(&x.to_dtype(DType::F64)?, t, &v)?;
            let (want_s, want_q) = net.score_and_quadratic_forms(&x, t, &v)?;
            assert_eq!(s.dtype(), DType::F64);
            let (es, eq) = (
                rel(&flat(&s.to_dtype(DType::F32)?), &flat(&want_s)),
                rel(&flat(&q.to_dtype(DType::F32)?), &flat(&want_q)),
            );
            assert!(
                es < 1e-5 && eq < 1e-5,
                "{param:?}: score {es:e}, forms {eq:e}"
            );
        }
    }
    Ok(())
}

/// Inference chunks cover 0..n in order, in whole 12-row tiles (but the last) of 48 to 504 rows,
/// never growing.
#[test]
fn inference_chunks_tile_the_rows_and_shrink() {
    for n in [0, 1, 47, 100, 1000, 10_000, 123_457] {
        let parts = inference_chunks(n);
        assert_eq!(parts.first().map_or(0, |p| p.start), 0);
        assert_eq!(parts.last().map_or(0, |p| p.end), n);
        for (i, p) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            assert!(last || (p.len() % 12 == 0 && (48..=504).contains(&p.len())));
            if let Some(next) = parts.get(i + 1) {
                assert_eq!(p.end, next.start);
                assert!(next.len() <= p.len(), "{n} rows: {parts:?}");
            }
        }
    }
}

/// A row's output does not depend on its position in the batch (which tile its block gives
/// it): each of 37 rows evaluated alone equals its value in the batch, bit for bit.
#[test]
fn a_rows_output_does_not_depend_on_its_tile() -> Result<()> {
    let dev = Device::Cpu;
    let (n, d) = (37, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let config = ModelConfig::default_for(d, ProcessConfig::vp_default());
    let fused = Model::new(config, &mut rng, &dev)?
        .network()
        .fused()
        .expect("an mlp")?;
    let x: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.37).sin()).collect();
    let t = vec![0.42f32; n];
    let (batch, _) = fused.forward(&x, &t, None)?;
    let o = fused.out_dim();
    for r in 0..n {
        let (alone, _) = fused.forward(&x[r * d..(r + 1) * d], &t[r..r + 1], None)?;
        assert_eq!(alone, batch[r * o..(r + 1) * o], "row {r}");
    }
    Ok(())
}
