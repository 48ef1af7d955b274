//! Note 004 at 784 dimensions (issue 21): ISM (exact trace), SSM, FD-SSM and DSM on MNIST with an
//! MLP — cost per step against dimension and sample quality at equal wall-clock time — then the
//! note's two open questions on real data: sample quality against the process, weighting and
//! t_min of DSM, and the learned score near the data manifold (on noised test digits, as σ → 0)
//! and off it (uniform-noise images, smooth blobs), beside the score of the smoothed training set.

mod cost;
mod judge;
mod manifold;
mod report;
mod schedules;
mod training;

pub use cost::{CostRow, QualityRow};
pub use manifold::ManifoldRow;
pub use schedules::ScheduleRow;

use super::{write_doc, write_text};
use crate::data::images::Images;
use crate::data::mnist;
use crate::images::quality::frechet_and_floor;
use crate::train::DataSource;
use anyhow::{ensure, Result};
use cost::{cost_table, equal_time};
use judge::Judge;
use manifold::{manifold, plot_manifold};
use report::report;
use schedules::schedules;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Settings of the experiment.
pub struct Settings {
    /// Image sides of the cost table (28 / side must be whole): 7, 14, 28 → d = 49, 196, 784.
    pub sides: Vec<usize>,
    /// Seconds of training per objective in the equal-wall-clock comparison (d = 784).
    pub budget: f64,
    /// Seconds each objective is timed for in the cost table (after one warm-up step).
    pub timing: f64,
    /// Optimiser steps per DSM run of the schedule / weighting comparison.
    pub steps: usize,
    pub batch: usize,
    /// Hidden width of the 3-layer MLP.
    pub width: usize,
    pub lr: f64,
    /// Samples per model; the Fréchet distance uses k = min(n, 500).
    pub n: usize,
    /// Euler–Maruyama steps (DDIM gets a tenth, at least 1).
    pub sampler_steps: usize,
    /// Independent trainings per setting (mean ± standard error).
    pub seeds: usize,
    /// A trained classifier run (`tweedie classifier`) to judge with; None trains one.
    pub classifier: Option<PathBuf>,
    /// Steps of the classifier trained when none is given.
    pub classifier_steps: usize,
    /// Points per set in the manifold section.
    pub points: usize,
    pub seed: u64,
    pub quiet: bool,
}

/// MNIST downsampled by averaging f × f blocks of bytes (rounded).
pub fn downsample(im: &Images, f: usize) -> Result<Images> {
    let [c, h, w] = im.shape;
    ensure!(
        f >= 1 && h.is_multiple_of(f) && w.is_multiple_of(f),
        "cannot downsample {h}×{w} images by {f}"
    );
    let (h2, w2) = (h / f, w / f);
    let mut pixels = Vec::with_capacity(im.n * c * h2 * w2);
    for i in 0..im.n {
        let img = im.image(i);
        for ch in 0..c {
            for y in 0..h2 {
                for x in 0..w2 {
                    let mut sum = 0u32;
                    for dy in 0..f {
                        for dx in 0..f {
                            sum += img[ch * h * w + (y * f + dy) * w + x * f + dx] as u32;
                        }
                    }
                    let k = (f * f) as u32;
                    pixels.push(((sum + k / 2) / k) as u8);
                }
            }
        }
    }
    Images::new(
        im.n,
        [c, h2, w2],
        pixels,
        im.labels.clone(),
        "downsampled MNIST",
    )
}

/// Everything the page reports.
#[derive(Serialize)]
pub struct Results {
    pub cost: Vec<CostRow>,
    pub equal_time: Vec<QualityRow>,
    pub schedules: Vec<ScheduleRow>,
    pub manifold: Vec<ManifoldRow>,
    pub frechet_floor: f64,
    pub frechet_k: usize,
    pub classifier_accuracy: f64,
    pub wall_seconds: f64,
    /// /proc/loadavg's 1-minute load at the start and the end (other work on the machine).
    pub load: (f64, f64),
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Runs the experiment; writes mnist.{md,json} and mnist_manifold.png into `out`.
pub fn run(s: &Settings, out: &Path) -> Result<Results> {
    ensure!(
        s.seeds >= 1 && s.steps >= 1 && s.batch >= 1 && s.width >= 1 && s.n >= 2,
        "--seeds, --steps, --batch and --width must be at least 1 and --n at least 2"
    );
    ensure!(
        s.budget > 0.0 && s.lr > 0.0 && s.sampler_steps >= 1 && s.points >= 1,
        "--budget, --lr, --sampler-steps and --points must be positive"
    );
    super::create_dir(out)?;
    let began = Instant::now();
    let load0 = load_average();
    let (train, test) = mnist::split()?;
    let bar = crate::progress::bar(5, 0, s.quiet);
    bar.set_message("classifier");
    let judge = Judge::new(s, &train, &test)?;
    bar.inc(1);
    bar.set_message("cost per step");
    let cost = cost_table(s, &train)?;
    bar.inc(1);
    let source = DataSource::Images(Images {
        labels: None,
        ..train.clone()
    });
    bar.set_message("equal wall-clock");
    let equal_time = equal_time(s, &source, &judge)?;
    bar.inc(1);
    bar.set_message("schedules");
    let (schedules, model) = schedules(s, &source, &judge)?;
    bar.inc(1);
    bar.set_message("manifold");
    let manifold = manifold(s, &model, &train, &test)?;
    bar.inc(1);
    bar.finish_and_clear();
    let floor = {
        let f = judge.model.config.spec.features();
        frechet_and_floor(&judge.test_features, &judge.test_features, judge.k, f)?.1
    };
    let results = Results {
        cost,
        equal_time,
        schedules,
        manifold,
        frechet_floor: floor,
        frechet_k: judge.k,
        classifier_accuracy: judge.accuracy,
        wall_seconds: began.elapsed().as_secs_f64(),
        load: (load0, load_average()),
    };
    plot_manifold(&results.manifold, &out.join("mnist_manifold.png"))?;
    write_doc(&out.join("mnist.md"), &report(s, &judge, &results))?;
    write_text(
        &out.join("mnist.json"),
        &serde_json::to_string_pretty(&results)?,
    )?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_averages_blocks() {
        let im = Images::new(1, [1, 2, 4], vec![0, 2, 10, 10, 4, 255, 10, 11], None, "t").unwrap();
        let half = downsample(&im, 2).unwrap();
        assert_eq!(half.shape, [1, 1, 2]);
        // (0 + 2 + 4 + 255)/4 = 65.25 → 65; (10 + 10 + 10 + 11)/4 = 10.25 → 10
        assert_eq!(half.pixels, vec![65, 10]);
        assert!(downsample(&im, 3).is_err());
    }

    /// Every section on tiny settings: finite numbers, every JSON key, the page and the figure.
    #[test]
    fn the_experiment_runs_on_tiny_settings() {
        let out = std::env::temp_dir().join(format!("tweedie-mnist-exp-{}", std::process::id()));
        let s = Settings {
            sides: vec![7],
            budget: 0.2,
            timing: 0.05,
            steps: 3,
            batch: 8,
            width: 16,
            lr: 1e-3,
            n: 8,
            sampler_steps: 10,
            seeds: 1,
            classifier: None,
            classifier_steps: 2,
            points: 4,
            seed: 0,
            quiet: true,
        };
        let r = run(&s, &out).unwrap();
        assert_eq!(r.cost.len(), 6);
        assert!(r.cost.iter().all(|c| c.ms_per_step > 0.0 && c.d == 49));
        // ISM's exact trace pushes 49 tangents, SSM one
        let ism = &r.cost[1];
        assert!(ism.objective.starts_with("ISM") && ism.ratio_to_dsm > 1.0);
        assert_eq!(r.equal_time.len(), 4);
        assert!(r
            .equal_time
            .iter()
            .all(|q| q.steps[0] >= 1 && q.fd_sde[0].is_finite() && q.fd_ode[0].is_finite()));
        assert_eq!(r.schedules.len(), schedules::schedule_settings().len());
        assert!(r.schedules.iter().all(|q| q.fd_sde[0].is_finite()));
        assert_eq!(r.manifold.len(), 3 * manifold::MANIFOLD_TIMES.len());
        for m in &r.manifold {
            for v in [
                m.norm_theta,
                m.norm_emp,
                m.target_err_theta,
                m.target_err_emp,
                m.rel_diff_emp,
            ] {
                assert!(v.is_finite() && v >= 0.0, "{m:?}", m = m.set);
            }
        }
        // noised test digits at the largest level: the smoothed training set's score is nearly
        // the prior's, −x/σ², so its norm·σ/√d is close to 1
        let top = r
            .manifold
            .iter()
            .find(|m| m.set == "test digits" && m.t == 1.0)
            .unwrap();
        assert!((top.norm_emp - 1.0).abs() < 0.2, "{}", top.norm_emp);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("mnist.json")).unwrap())
                .unwrap();
        for key in [
            "cost",
            "equal_time",
            "schedules",
            "manifold",
            "frechet_floor",
            "classifier_accuracy",
        ] {
            assert!(json.get(key).is_some(), "mnist.json lacks {key}");
        }
        let md = std::fs::read_to_string(out.join("mnist.md")).unwrap();
        assert!(md.contains("Produced at") && md.contains("| test digits |"));
        assert!(out.join("mnist_manifold.png").exists());
        std::fs::remove_dir_all(&out).unwrap();
    }
}
