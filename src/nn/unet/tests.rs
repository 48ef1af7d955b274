//! U-Net tests on a network smaller than the `tiny` preset: shapes and the parameter count,
//! input gradients against central differences in f64 (through pooling, upsampling, GroupNorm and
//! attention), the null class, and training on a fixed batch.

use super::layers::{pool2, upsample2};
use super::*;
use crate::nn::{Model, ModelConfig, NetworkKind};
use crate::objective::{Batch, ObjectiveConfig, Weighting};
use crate::process::ProcessConfig;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A 2-level U-Net of 8 channels with 3 classes on 1×8×8 images.
pub(crate) fn small() -> ModelConfig {
    let mut cfg = ModelConfig::default_for(64, ProcessConfig::vp_default());
    cfg.event = vec![1, 8, 8];
    cfg.arch = Arch {
        network: NetworkKind::Unet,
        channels: Some(8),
        mults: Some(vec![1, 2]),
        blocks: Some(1),
        classes: Some(3),
        embed_dim: 8,
        ..Arch::default()
    };
    cfg
}

/// The `tiny` preset on MNIST's shape with 10 classes.
fn tiny_mnist() -> ModelConfig {
    let mut cfg = ModelConfig::default_for(784, ProcessConfig::vp_default());
    cfg.event = vec![1, 28, 28];
    cfg.arch = Arch {
        network: NetworkKind::Unet,
        classes: Some(10),
        ..Arch::default()
    };
    cfg
}

fn randn(shape: &[usize], seed: u64, dtype: DType) -> Result<Tensor> {
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f64> = (0..shape.iter().product::<usize>())
        .map(|_| rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, &mut rng))
        .collect();
    Ok(Tensor::from_vec(v, shape, &dev)?.to_dtype(dtype)?)
}

#[test]
fn shapes_parameter_count_and_the_null_class() -> Result<()> {
    let cfg = small();
    let dev = Device::Cpu;
    let net = Model::new(cfg.clone(), &mut ChaCha8Rng::seed_from_u64(0), &dev)?;
    assert_eq!(Some(net.num_params()), cfg.parameter_count());
    let x = randn(&[5, 64], 1, DType::F32)?;
    let t = Tensor::new(&[0.1f32, 0.3, 0.5, 0.7, 0.9], &dev)?;
    let out = net.forward(&x, &t)?;
    assert_eq!(out.dims(), &[5, 64]);
    // no condition is the null class 3; a class gives a different output
    let null = Tensor::full(3u32, 5, &dev)?;
    let c = Tensor::new(&[0u32, 1, 2, 0, 1], &dev)?;
    let diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
    };
    assert_eq!(diff(&out, &net.forward_cond(&x, &t, Some(&null))?)?, 0.0);
    let cond = net.forward_cond(&x, &t, Some(&c))?;
    assert!(diff(&out, &cond)? > 1e-4);
    assert_eq!(net.score_cond(&x, &t, Some(&c))?.dims(), &[5, 64]);
    // out-of-range labels and wrong sizes are errors, not panics
    assert!(net
        .forward_cond(&x, &t, Some(&Tensor::full(4u32, 5, &dev)?))
        .is_err());
    assert!(net
        .forward_cond(&x, &t, Some(&Tensor::full(0u32, 4, &dev)?))
        .is_err());
    assert!(net.forward(&randn(&[5, 63], 1, DType::F32)?, &t).is_err());
    // the tiny preset on MNIST's shape: within the documented 0.5–1M
    let count = tiny_mnist().parameter_count().expect("a valid spec");
    assert!((500_000..1_000_000).contains(&count), "{count}");
    Ok(())
}

#[test]
fn sizes_that_do_not_halve_are_refused() {
    let mut cfg = small();
    cfg.event = vec![1, 7, 8];
    cfg.dim = 56;
    let e = cfg.check().expect_err("7 is odd").to_string();
    assert!(e.contains("divisible"), "{e}");
    let mut flat = small();
    flat.event = Vec::new();
    assert!(flat.check().is_err());
    let mut att = small();
    att.arch.attention = Some(vec![3]);
    assert!(att.check().is_err());
    assert_eq!(att.parameter_count(), None);
}

/// The layers' backward passes: d/dx Σ r ⊙ f(x) along a direction against central differences.
fn check_gradient(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor, seed: u64) -> Result<()> {
    let r = randn(f(x)?.dims(), seed, DType::F64)?;
    let v = randn(x.dims(), seed + 1, DType::F64)?;
    let loss = |x: &Tensor| -> Result<f64> { Ok((f(x)? * &r)?.sum_all()?.to_scalar::<f64>()?) };
    let var = candle_core::Var::from_tensor(x)?;
    let grads = (f(var.as_tensor())? * &r)?.sum_all()?.backward()?;
    let g = grads.get(var.as_tensor()).expect("a gradient");
    let analytic = (g * &v)?.sum_all()?.to_scalar::<f64>()?;
    let h = 1e-5;
    let numeric = (loss(&(x + (&v * h)?)?)? - loss(&(x - (&v * h)?)?)?) / (2.0 * h);
    assert!(
        (analytic - numeric).abs() < 1e-6 * (1.0 + numeric.abs()),
        "autograd {analytic} vs central differences {numeric}"
    );
    Ok(())
}

#[test]
fn gradients_match_central_differences_in_f64() -> Result<()> {
    let x = randn(&[2, 4, 6, 3], 5, DType::F64)?;
    // upsampling's backward sums each 2×2 block; x used twice checks accumulation
    check_gradient(
        |x| Ok((upsample2(x)? * 2.0)?.broadcast_add(&pool2(&upsample2(x)?)?.sum_all()?)?),
        &x,
        11,
    )?;
    check_gradient(pool2, &x, 13)?;
    let net = Model::new(small(), &mut ChaCha8Rng::seed_from_u64(3), &Device::Cpu)?
        .to_dtype(DType::F64)?;
    let t = Tensor::new(&[0.2f64, 0.6], &Device::Cpu)?;
    let c = Tensor::new(&[2u32, 0], &Device::Cpu)?;
    let x = randn(&[2, 64], 7, DType::F64)?;
    check_gradient(|x| net.forward_cond(x, &t, Some(&c)), &x, 17)?;
    Ok(())
}

#[test]
fn the_loss_falls_on_a_fixed_batch_with_labels() -> Result<()> {
    let dev = Device::Cpu;
    let net = Model::new(small(), &mut ChaCha8Rng::seed_from_u64(4), &dev)?;
    let x0 = randn(&[16, 64], 8, DType::F32)?.tanh()?;
    let batch = Batch {
        x0,
        force: None,
        labels: Some(Tensor::from_vec([0u32, 1, 2, 3].repeat(4), 16, &dev)?),
        truth: None,
        blend: None,
    };
    let objective = ObjectiveConfig::Dsm {
        weighting: Weighting::Sigma2,
    };
    let mut adam = crate::train::adam::Adam::new(net.vars())?;
    let t = crate::config::TrainConfig {
        lr: 3e-3,
        ..Default::default()
    };
    let mut losses = Vec::new();
    for step in 0..30 {
        // the same noise every step: the loss of one fixed problem
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let loss = objective.loss(&net, &batch, &mut rng)?;
        losses.push(crate::train::optimise(&net, &mut adam, &mut [], &loss, &t, step)?.0);
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(last < 0.7 * first, "{losses:?}");
    Ok(())
}

/// `upsample2` is candle's nearest upsampling (on channels-first maps), by value. (Its backward
/// is not: in candle 0.11.1, d/dx [Σ up(x) + Σ x] came out 4 where it is 5 — the upsampling's
/// gradient replaces what the other use of x had accumulated.)
#[test]
fn upsampling_matches_candles_nearest_upsampling() -> Result<()> {
    let x = randn(&[2, 3, 4, 5], 21, DType::F64)?;
    let ours = upsample2(&x.permute((0, 2, 3, 1))?.contiguous()?)?.permute((0, 3, 1, 2))?;
    let candle = x.upsample_nearest2d(8, 10)?;
    let diff = (ours - &candle)?.abs()?.max_all()?.to_scalar::<f64>()?;
    assert_eq!(diff, 0.0);
    Ok(())
}

/// The divergence `tweedie nll` takes from a U-Net: with no forward-mode tangents and no fused
/// path, `Model::score_and_quadratic_forms` runs reverse mode (`nn::reverse`, one backward pass
/// per probe). Its forms vᵀ(∂s/∂x)v along Rademacher probes, at one time per call as in the
/// probability-flow solve, against central differences vᵀ(s(x + hv) − s(x − hv))/(2h) of the
/// same network in f64 (h = 1e-4; GroupNorm's γ, β drawn away from 1, 0):
/// - the f64 model (candle's composite ops) agrees to 1e-6 relative: the differences' own error
///   is O(h²) ≈ 1e-8 and their rounding ≈ 1e-16/h;
/// - the f32 model, which `nll` loads (the U-Net's own convolution and GroupNorm ops, whose
///   backward passes carry the input gradient), agrees to 1e-5 of Σ_i |v_i (Jv)_i|: f32 rounding
///   (2⁻²⁴ ≈ 6e-8) through ~30 layers left at most 2.1e-7 of it here (and the differences'
///   own ≈ 6e-8), while a wrong input-gradient path (a dropped skip or residual term, an
///   overwritten accumulation like candle's upsampling backward) moves a form by far more.
#[test]
fn reverse_mode_quadratic_forms_match_central_differences() -> Result<()> {
    use crate::score::{DivergenceModel, Probe, ScoreModel};
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let f32_model = Model::new(small(), &mut rng, &dev)?;
    assert!(f32_model.network().tangents().is_none() && f32_model.host().is_none());
    for (k, (name, var)) in f32_model.vars().iter().enumerate() {
        if name.contains("norm") {
            let base = if name.ends_with("weight") { 1.0 } else { 0.0 };
            let noise = randn(var.dims(), 100 + k as u64, DType::F32)?;
            var.set(&((noise * 0.3)? + base)?)?;
        }
    }
    let f64_model = f32_model.copy()?.to_dtype(DType::F64)?;
    let (m, n, d) = (2, 3, 64);
    let x = (randn(&[n, d], 22, DType::F64)? * 0.5)?;
    let v = crate::score::probes(Probe::Rademacher, m, n, d, &mut rng, DType::F64, &dev)?;
    let h = 1e-4;
    let mut largest = 0.0f64;
    for t in [0.02, 0.3, 0.9] {
        let tt = crate::score::times(t, n, DType::F64, &dev)?;
        // (model, tolerance, whether it is relative to Σ|vᵢ(Jv)ᵢ| rather than 1 + |vᵀJv|)
        for (model, tol, of_size) in [(&f64_model, 1e-6, false), (&f32_model, 1e-5, true)] {
            let (s, q) = model.score_and_quadratic_forms(&x, &tt, &v)?;
            assert_eq!((s.dims(), q.dims()), (&[n, d][..], &[m, n][..]));
            let q: Vec<Vec<f64>> = q.to_dtype(DType::F64)?.to_vec2()?;
            for (k, qk) in q.iter().enumerate() {
                let vk = v.get(k)?;
                let sp = f64_model.score(&(&x + (&vk * h)?)?, &tt)?;
                let sm = f64_model.score(&(&x - (&vk * h)?)?, &tt)?;
                let jv = ((sp - sm)? / (2.0 * h))?;
                let fd: Vec<f64> = (&jv * &vk)?.sum(1)?.to_vec1()?;
                let size: Vec<f64> = (&jv * &vk)?.abs()?.sum(1)?.to_vec1()?;
                for (i, ((got, want), size)) in qk.iter().zip(&fd).zip(&size).enumerate() {
                    let scale = if of_size { *size } else { 1.0 + want.abs() };
                    assert!(
                        (got - want).abs() < tol * scale,
                        "t {t}, {:?}, probe {k}, point {i}: reverse mode {got} vs central differences {want} (Σ|v Jv| {size})",
                        model.dtype(),
                    );
                    largest = largest.max(want.abs());
                }
            }
        }
    }
    // forms far from trivially zero (hundreds at t = 0.02, where 1/σ_t is large)
    assert!(largest > 10.0, "{largest}");
    Ok(())
}
