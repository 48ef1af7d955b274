//! Energy-only training's data (iDEM, Akhound-Sadegh et al. 2024, Alg. 1): no samples of the
//! target, only a replay buffer of the model's own samples, started from the prior and refreshed
//! as the model learns; the regression targets come from the potential at noised buffer rows.

use super::frozen;
use crate::data::Points;
use crate::nn::Model;
use crate::objective::Idem;
use crate::process::Process;
use crate::sample::{generate, grid::Grid, Options, Plan, Trace};
use crate::target::posterior::PosteriorScore;
use crate::target::potential::{named, Scaled};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `data.source` of energy-only training: no data file, the model's own samples.
pub const SOURCE: &str = "replay";

/// The buffer of the checkpoint at `step`, beside it in the run folder (`.npy`, model space):
/// written before the checkpoint and named by its step, so that a run killed between the two
/// writes still resumes exactly from the older pair.
pub fn path(run_dir: &Path, step: usize) -> PathBuf {
    run_dir.join(format!("buffer-{step:08}.npy"))
}

/// Writes the buffer of the checkpoint at `step`.
pub fn save(run_dir: &Path, step: usize, buffer: &Points) -> Result<()> {
    crate::data::npy::write_npy(&path(run_dir, step), buffer, true)
}

/// Removes every buffer file of the run folder but the one of the checkpoint at `step`.
pub fn prune(run_dir: &Path, step: usize) -> Result<()> {
    let keep = path(run_dir, step);
    for entry in std::fs::read_dir(run_dir)? {
        let p = entry?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("buffer-") && name.ends_with(".npy") && p != keep {
            std::fs::remove_file(&p).with_context(|| format!("{}: cannot remove", p.display()))?;
        }
    }
    Ok(())
}

/// The buffer's first rows: `n` draws of the process's prior (iDEM's `init_from_prior`).
pub fn initial(process: &dyn Process, n: usize, d: usize, rng: &mut ChaCha8Rng) -> Result<Points> {
    let x = crate::sample::prior_sample(process, n, d, rng, &Device::Cpu)?;
    Points::new(n, d, crate::flat::values(&x)?)
}

/// Appends `rows` ([m × d]) to the buffer, dropping its oldest rows beyond `capacity`.
pub fn push(buffer: &mut Points, rows: &[f64], capacity: usize) {
    buffer.data.extend_from_slice(rows);
    let n = buffer.data.len() / buffer.d;
    if n > capacity {
        buffer.data.drain(..(n - capacity) * buffer.d);
    }
    buffer.n = buffer.data.len() / buffer.d;
}

/// `cfg.refresh` samples of the network as it stands (the reverse SDE by Euler–Maruyama in
/// `cfg.sampler_steps` steps, uniform in t), model space, row-major.
pub fn draw(net: &Model, cfg: &Idem, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
    let model = frozen(net)?;
    let plan = Plan {
        sampler: "em",
        grid: Grid::Uniform,
        steps: cfg.sampler_steps,
        options: Options::default(),
        denoise_final: false,
    };
    let x = generate(
        &model,
        net.process(),
        &plan,
        cfg.refresh,
        rng,
        net.device(),
        &mut Trace::default(),
    )
    .context("refreshing the replay buffer with the model's samples")?;
    crate::flat::values(&x)
}

/// The regression target of energy-only training: note 000's estimator of `data.potential` in
/// model space (x / `scale`), K draws per point, its draws seeded by `seed`.
pub fn estimator(
    potential: &str,
    kt: Option<f64>,
    scale: f64,
    process: Arc<dyn Process>,
    cfg: &Idem,
    seed: u64,
) -> Result<PosteriorScore> {
    let p = Scaled {
        inner: named(potential, kt)?,
        scale,
    };
    PosteriorScore::new(Arc::new(p), process, cfg.k, cfg.readout, seed)
}

/// The buffer saved beside a checkpoint, checked against the data dimension.
pub fn load(path: &Path, d: usize) -> Result<Points> {
    let pts = crate::data::read_points(path)?;
    if pts.d != d || pts.n == 0 {
        bail!(
            "{}: the replay buffer has shape [{}, {}], the run needs [n > 0, {d}]; remove the run folder and train afresh",
            path.display(),
            pts.n,
            pts.d
        );
    }
    pts.check_finite(&path.display().to_string())?;
    Ok(pts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use crate::metrics::against_density;
    use crate::target::GaussianMixture;
    use crate::train::{load_net, train, TrainOptions, CHECKPOINT};
    use rand::SeedableRng;

    const ANISOTROPIC3: &str = "[data]\nsource = \"replay\"\npotential = \"anisotropic3\"\n\
        [model]\nparameterisation = \"eps\"\nwidth = 64\ndepth = 2\n\
        [process]\nkind = \"ve\"\nsigma_min = 0.01\nsigma_max = 5.0\nt_min = 0.001\n\
        [objective]\nkind = \"idem\"\nk = 200\nbuffer = 2000\nrefresh_every = 50\nrefresh = 500\nsampler_steps = 50\n\
        [train]\nsteps = 3000\nbatch = 128\nlr = 0.003\nwarmup = 50\nema_decay = 0.0\nlog_every = 50\ncheckpoint_every = 100\n";

    /// Sample cross-entropy minus entropy (nats) of 4000 EM-200 samples of a run's network under
    /// anisotropic3's exact density: about 0 for exact samples.
    fn excess(run: &Path) -> Result<f64> {
        let (net, _) = load_net(&run.join(CHECKPOINT), true, &Device::Cpu)?;
        let plan = Plan {
            sampler: "em",
            grid: Grid::Uniform,
            steps: 200,
            options: Options::default(),
            denoise_final: true,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let x = generate(
            &net,
            net.process(),
            &plan,
            4000,
            &mut rng,
            &Device::Cpu,
            &mut Trace::default(),
        )?;
        let pts = Points::new(4000, 2, crate::flat::values(&x)?)?;
        let m = against_density(&pts, &GaussianMixture::named("anisotropic3")?, 20_000, 3, 0)?;
        Ok(m.cross_entropy - m.entropy)
    }

    /// Energy-only training on anisotropic3's energy, with no samples of it, learns to sample it:
    /// the samples' cross-entropy is within 0.35 nats of the entropy after 3000 steps (3.5 → 0.21;
    /// DSM on exact draws with the same network and steps: +0.51); stopped and resumed from a
    /// checkpoint and its buffer, it ends bit-identical to a straight run.
    #[test]
    fn energy_only_training_learns_the_score_and_resumes_exactly() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let cfg = RunConfig::from_toml_str(ANISOTROPIC3)?;
        let (a, b, early) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("e"),
        );
        let dev = Device::Cpu;
        let short = RunConfig {
            train: crate::config::TrainConfig {
                steps: 50,
                ..cfg.train.clone()
            },
            ..cfg.clone()
        };
        train(&short, &early, &TrainOptions::default(), &dev)?;
        train(&cfg, &a, &TrainOptions::default(), &dev)?;
        let (start, end) = (excess(&early)?, excess(&a)?);
        assert!(
            end < 0.35 && end < 0.25 * start,
            "sample cross-entropy − entropy {start} nats after 50 steps, {end} after 3000"
        );

        // killed after 230 steps: the checkpoint at 200 and its buffer (the older ones removed)
        let stop = TrainOptions {
            stop_after: Some(230),
            ..Default::default()
        };
        train(&cfg, &b, &stop, &dev)?;
        let buffers: Vec<_> = std::fs::read_dir(&b)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("buffer-"))
            .collect();
        assert_eq!(buffers, vec!["buffer-00000200.npy".to_string()]);
        let resume = TrainOptions {
            resume: true,
            ..Default::default()
        };
        train(&cfg, &b, &resume, &dev)?;
        let weights = |run: &Path| -> Result<Vec<Vec<f32>>> {
            let ck = crate::train::checkpoint::Checkpoint::load(&run.join(CHECKPOINT))?;
            ck.params
                .iter()
                .map(|t| {
                    Ok(t.flatten_all()?
                        .to_dtype(candle_core::DType::F32)?
                        .to_vec1()?)
                })
                .collect()
        };
        assert!(weights(&a)? == weights(&b)?, "the resumed run differs");
        Ok(())
    }

    #[test]
    fn the_buffer_keeps_its_newest_rows() -> Result<()> {
        let mut b = Points::new(2, 1, vec![0.0, 1.0])?;
        push(&mut b, &[2.0, 3.0, 4.0], 4);
        assert_eq!((b.n, b.data.clone()), (4, vec![1.0, 2.0, 3.0, 4.0]));
        push(&mut b, &[5.0], 10);
        assert_eq!(b.n, 5);
        Ok(())
    }
}
