//! GPU check of the device-resident sampler and ODE state (`flat::Buf::Device`): the cost per NFE
//! of every sampler on an image-sized state against one device-resident network evaluation, and
//! agreement with the CPU. `cargo run --release --features cuda --example gpu_state` (docs/gpu.md).
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use tweedie::likelihood::{log_prob, Options as LOpts};
use tweedie::nn::{Arch, Model, ModelConfig};
use tweedie::process::ProcessConfig;
use tweedie::sample::grid::Grid;
use tweedie::sample::{by_name, prior_sample, Options, Trace};
use tweedie::score::{times, ScoreModel};

fn net(d: usize, width: usize, dev: &Device) -> Result<Model> {
    let cfg = ModelConfig {
        arch: Arch {
            width,
            ..Arch::default()
        },
        ..ModelConfig::default_for(d, ProcessConfig::vp_default())
    };
    Model::new(cfg, &mut ChaCha8Rng::seed_from_u64(0), dev)?.for_inference()
}

fn sample(
    m: &Model,
    name: &str,
    grid: Grid,
    steps: usize,
    n: usize,
    dev: &Device,
) -> Result<(Tensor, usize, f64)> {
    let p = m.process();
    let x = prior_sample(p, n, m.dim(), &mut ChaCha8Rng::seed_from_u64(1), dev)?;
    let ts = grid.times(p, steps)?;
    let mut tr = Trace::default();
    let t0 = Instant::now();
    let out = by_name(name)?(
        m,
        p,
        x,
        &ts,
        &Options::default(),
        &mut ChaCha8Rng::seed_from_u64(2),
        &mut tr,
    )?;
    let _ = out.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok((out, tr.nfe, t0.elapsed().as_secs_f64()))
}

fn main() -> Result<()> {
    let gpu = Device::cuda_if_available(0)?;
    println!("device: {gpu:?}");
    let (n, d, w) = (10_000, 784, 512);
    let g = net(d, w, &gpu)?;
    let x = Tensor::randn(0f32, 1f32, (n, d), &gpu)?;
    let tt = times(0.5, n, DType::F32, &gpu)?;
    for _ in 0..5 {
        let _ = g.score(&x, &tt)?.sum_all()?.to_scalar::<f32>()?;
    }
    let t0 = Instant::now();
    for _ in 0..30 {
        let _ = g.score(&x, &tt)?.sum_all()?.to_scalar::<f32>()?;
    }
    let eval = t0.elapsed().as_secs_f64() / 30.0;
    println!("n={n} d={d} width={w}: one device-resident score evaluation (+ a scalar read back) {:.3} ms", eval * 1e3);
    sample(&g, "dpmpp_2m", Grid::LogSnr, 5, n, &gpu)?; // warm-up
    for (name, grid, steps) in [
        ("em", Grid::Uniform, 100),
        ("ancestral", Grid::Uniform, 100),
        ("pc", Grid::Uniform, 30),
        ("ddim", Grid::LogSnr, 20),
        ("dpm2", Grid::LogSnr, 10),
        ("dpmpp_2m", Grid::LogSnr, 20),
        ("dpmpp_3m", Grid::LogSnr, 20),
        ("edm", Grid::Karras(7.0), 10),
        ("euler", Grid::Uniform, 20),
        ("heun", Grid::Uniform, 20),
        ("rk4", Grid::Uniform, 5),
    ] {
        let (x, nfe, secs) = sample(&g, name, grid, steps, n, &gpu)?;
        let finite = x.sum_all()?.to_scalar::<f32>()?.is_finite();
        println!("  {name:>10} {steps:>4} steps: {nfe:>4} NFE in {secs:.3} s = {:.3} ms per NFE ({:.2}x one evaluation), finite {finite}", secs / nfe as f64 * 1e3, secs / nfe as f64 / eval);
    }
    // the same network (same seed) on the CPU: deterministic samplers agree
    let (n2, d2) = (500, 784);
    let c = net(d2, w, &Device::Cpu)?;
    let g2 = net(d2, w, &gpu)?;
    for (name, grid, steps) in [
        ("dpmpp_2m", Grid::LogSnr, 10),
        ("heun", Grid::Uniform, 10),
        ("dpm2", Grid::LogSnr, 5),
        ("edm", Grid::Karras(7.0), 5),
    ] {
        let (xc, _, tc) = sample(&c, name, grid, steps, n2, &Device::Cpu)?;
        let (xg, _, tg) = sample(&g2, name, grid, steps, n2, &gpu)?;
        let diff = (xc.clone() - xg.to_device(&Device::Cpu)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        let scale = xc.abs()?.max_all()?.to_scalar::<f32>()?;
        println!("  {name} {steps} steps, {n2} x {d2}: max |CPU − GPU| {diff:.2e} (max |x| {scale:.2}); CPU {tc:.2} s, GPU {tg:.2} s");
    }
    // stochastic: EM's sample moments on both devices (different noise streams)
    let (xc, _, _) = sample(&c, "em", Grid::Uniform, 100, 2000, &Device::Cpu)?;
    let (xg, _, _) = sample(&g2, "em", Grid::Uniform, 100, 2000, &gpu)?;
    let stats = |x: &Tensor| -> Result<(f32, f32)> {
        let x = x.to_device(&Device::Cpu)?;
        let m = x.mean_all()?.to_scalar::<f32>()?;
        let v = x.sqr()?.mean_all()?.to_scalar::<f32>()? - m * m;
        Ok((m, v.sqrt()))
    };
    println!(
        "  em 100 steps, 2000 x 784: mean/std CPU {:?} GPU {:?}",
        stats(&xc)?,
        stats(&xg)?
    );
    // likelihood, 2-D, exact divergence, dopri5 1e-5
    let (c3, g3) = (net(2, 128, &Device::Cpu)?, net(2, 128, &gpu)?);
    let x = prior_sample(
        c3.process(),
        1000,
        2,
        &mut ChaCha8Rng::seed_from_u64(3),
        &Device::Cpu,
    )?;
    let t0 = Instant::now();
    let lc = log_prob(&c3, c3.process(), &x, &LOpts::default())?;
    let tc = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let lg = log_prob(&g3, g3.process(), &x.to_device(&gpu)?, &LOpts::default())?;
    let tg = t0.elapsed().as_secs_f64();
    let worst = lc
        .log_p0
        .iter()
        .zip(&lg.log_p0)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!("  log_prob 1000 x 2: mean CPU {:.5} GPU {:.5}, max |diff| {worst:.2e}, NFE {} / {}, CPU {tc:.2} s GPU {tg:.2} s", mean(&lc.log_p0), mean(&lg.log_p0), lc.nfe, lg.nfe);
    Ok(())
}
