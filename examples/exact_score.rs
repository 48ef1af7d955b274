//! Sample a Gaussian mixture with its exact diffused score (no training) and compare two samplers:
//! the reverse SDE (Euler–Maruyama, 500 steps) and DPM-Solver++(3M) (20 steps).
//!
//! `cargo run --release --example exact_score` (a few seconds). The target is gmm40, 40 modes in
//! [−40, 40]², sampled in model units x/50 (as iDEM and `tweedie experiment samplers` do) and
//! measured in data units.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use tweedie::data::Points;
use tweedie::process::{Process, ProcessConfig};
use tweedie::sample::{self, grid, Options, Plan, Trace};
use tweedie::target::{ExactScore, GaussianMixture};

/// Samples [n, d] (any float dtype) as plain f64 points.
fn to_points(x: &Tensor) -> anyhow::Result<Points> {
    let (n, d) = x.dims2()?;
    Points::new(n, d, x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
}

/// Sample cross-entropy E_q[−log p(x)] of points x ~ q under the mixture p (nats per point).
fn cross_entropy(p: &GaussianMixture, x: &Points) -> anyhow::Result<f64> {
    Ok(-p.log_prob(x)?.iter().sum::<f64>() / x.n as f64)
}

fn main() -> anyhow::Result<()> {
    let device = Device::Cpu;
    let scale = 50.0;
    let target = GaussianMixture::named("gmm40")?; // data units
    let process: Arc<dyn Process> = Arc::from(ProcessConfig::vp_default().build()?);
    // The exact score ∇x log p_t of the mixture in model units, diffused by the VP process.
    let model = ExactScore {
        mixture: target.scaled(1.0 / scale)?,
        process: process.clone(),
    };

    let n = 1000;
    let reference = target.sample(n, &mut ChaCha8Rng::seed_from_u64(1));
    // Floors: what exact draws themselves score (W2 to another exact set; the entropy of p).
    let exact = target.sample(n, &mut ChaCha8Rng::seed_from_u64(2));
    println!("gmm40 with exact scores, VP process, {n} samples vs {n} exact draws");
    println!(
        "{:<10} {:>5} {:>5} {:>8} {:>14} {:>8}",
        "sampler", "steps", "NFE", "W2", "E_q[-log p]", "seconds"
    );
    let w2 = tweedie::metrics::w2_exact(&exact, &reference)?;
    let ce = cross_entropy(&target, &exact)?;
    println!(
        "{:<10} {:>5} {:>5} {w2:>8.3} {ce:>14.3} {:>8}",
        "exact", "-", "-", "-"
    );

    for (sampler, steps) in [("em", 500), ("dpmpp_3m", 20)] {
        let plan = Plan {
            sampler,
            grid: grid::recommended(sampler), // uniform in t for em, log-SNR for DPM-Solver++
            steps,
            options: Options::default(),
            denoise_final: false,
        };
        let mut trace = Trace::default();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let started = std::time::Instant::now();
        let x = sample::generate(
            &model,
            process.as_ref(),
            &plan,
            n,
            &mut rng,
            &device,
            &mut trace,
        )?;
        let secs = started.elapsed().as_secs_f64();
        let samples = to_points(&x)?.scaled(scale); // back to data units
        let w2 = tweedie::metrics::w2_exact(&samples, &reference)?;
        let ce = cross_entropy(&target, &samples)?;
        println!(
            "{sampler:<10} {steps:>5} {:>5} {w2:>8.3} {ce:>14.3} {secs:>8.2}",
            trace.nfe
        );
    }
    println!(
        "W2: exact 2-Wasserstein distance (not squared), data units; E_q[-log p]: nats per point"
    );
    Ok(())
}
