//! Times of the tiny preset's layer types on MNIST's shapes, for `tweedie bench unet-layers`:
//! each type's forward and backward passes over all its instances in the network.

use super::attention::Attention;
use super::layers::{cat_channels, pool2, silu, upsample2, Builder};
use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// Seconds of forward and forward + backward of `f` on x, best of 3.
fn time(f: &dyn Fn(&Tensor) -> Result<Tensor>, shape: &[usize]) -> Result<(f64, f64)> {
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &Device::Cpu)?)?;
    let (mut fwd, mut all) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let t0 = Instant::now();
        let y = f(x.as_tensor())?;
        let t1 = t0.elapsed().as_secs_f64();
        let r = Tensor::ones_like(&y)?;
        let _ = (y * r)?.sum_all()?.backward()?;
        fwd = fwd.min(t1);
        all = all.min(t0.elapsed().as_secs_f64());
    }
    Ok((fwd, all))
}

/// (layer type, forward seconds, backward seconds) summed over the type's instances in the tiny
/// preset at batch `n`, each the best of 3; our ops beside candle's composites.
pub fn layer_times(n: usize) -> Result<Vec<(String, f64, f64)>> {
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut b = Builder::drawing(&mut rng, &dev);
    // (input channels, output channels, resolution) of the tiny preset's 3×3 convolutions
    let convs = [
        (1, 32, 28),
        (32, 32, 28),
        (32, 32, 28),
        (32, 64, 14),
        (64, 64, 14),
        (64, 64, 7),
        (64, 64, 7),
        (64, 64, 7),
        (64, 64, 7),
        (64, 64, 7),
        (128, 64, 7),
        (64, 64, 7),
        (64, 64, 14),
        (128, 64, 14),
        (64, 64, 14),
        (64, 64, 28),
        (96, 32, 28),
        (32, 32, 28),
        (32, 1, 28),
    ];
    // (channels, resolution) of its GroupNorms (each followed by SiLU)
    let norms = [
        (32, 28),
        (32, 28),
        (32, 14),
        (64, 14),
        (64, 7),
        (64, 7),
        (64, 7),
        (64, 7),
        (64, 7),
        (64, 7),
        (128, 7),
        (64, 7),
        (128, 14),
        (64, 14),
        (96, 28),
        (32, 28),
        (32, 28),
    ];
    let mut rows = Vec::new();
    let mut total = |name: &str, parts: Vec<(f64, f64)>| {
        let (f, a) = parts.iter().fold((0.0, 0.0), |s, p| (s.0 + p.0, s.1 + p.1));
        rows.push((name.to_string(), f, a - f));
    };
    let mut ours = Vec::new();
    let mut composite = Vec::new();
    for &(i, o, r) in &convs {
        let conv = b.conv("c", i, o, 3)?;
        let v = b.vars.clone();
        ours.push(time(&|x| conv.forward(&v, x), &[n, r, r, i])?);
        composite.push(time(&|x| conv.forward_composite(&v, x), &[n, r, r, i])?);
    }
    total("conv 3×3 (ConvOp)", ours);
    total("conv 3×3 (candle composite)", composite);
    let mut gn = Vec::new();
    let mut act = Vec::new();
    for &(c, r) in &norms {
        let norm = b.norm("n", c)?;
        let v = b.vars.clone();
        gn.push(time(&|x| norm.forward_silu(&v, x), &[n, r, r, c])?);
        act.push(time(
            &|x| silu(&norm.forward_composite(&v, x)?),
            &[n, r, r, c],
        )?);
    }
    total("GroupNorm + SiLU (NormOp)", gn);
    total("GroupNorm, SiLU (composite)", act);
    let mut at = Vec::new();
    for _ in 0..3 {
        let a = Attention::new(&mut b, "a", 64)?;
        let v = b.vars.clone();
        at.push(time(&|x| a.forward(&v, x), &[n, 7, 7, 64])?);
    }
    total("attention (3, with its norm)", at);
    let mut lin = Vec::new();
    for &(i, o, r) in &[(32, 64, 14), (128, 64, 7), (128, 64, 14), (96, 32, 28)] {
        let l = b.linear("l", i, o)?;
        let v = b.vars.clone();
        lin.push(time(&|x| l.forward_map(&v, x), &[n, r, r, i])?);
    }
    total("1×1 skip convs (4)", lin);
    let up = vec![
        time(&|x| upsample2(x), &[n, 7, 7, 64])?,
        time(&|x| upsample2(x), &[n, 14, 14, 64])?,
    ];
    total("upsample (2)", up);
    let pool = vec![
        time(&|x| pool2(x), &[n, 28, 28, 32])?,
        time(&|x| pool2(x), &[n, 14, 14, 64])?,
    ];
    total("pool (2)", pool);
    let cat = |x: &Tensor| cat_channels(x, x);
    let cats = vec![
        time(&cat, &[n, 7, 7, 64])?,
        time(&cat, &[n, 14, 14, 64])?,
        time(&|x| cat_channels(x, &x.narrow(3, 0, 32)?), &[n, 28, 28, 64])?,
    ];
    total("skip concatenations (3)", cats);
    Ok(rows)
}
