//! `tweedie plot`: figures of a run or of sample files: samples over data, the score field at a
//! time t beside the exact one, log-densities through the likelihood beside the exact ones,
//! training curves, histograms and image grids.

use super::source::{Loaded, ModelSource};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use clap::{Parser, Subcommand};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use tweedie::data::{self, Points};
use tweedie::plot::{self, FieldPanel, Grid2, HeatPanel};
use tweedie::target::GaussianMixture;

#[derive(Parser)]
#[command(after_help = "Sampler trajectories: `tweedie sample --trajectory FILE.png`.")]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Samples over data: a scatter (or a 2-D histogram, --bins) for d = 2, pairwise marginals of --coords for d > 2.
    Samples(SamplesArgs),
    /// The score field at time t over a grid (2-D), beside the exact field and an error heat map when the target is known.
    Score(ScoreArgs),
    /// log p0 on a grid through the probability-flow ODE (2-D), beside the exact log-density and their difference when known.
    Density(DensityArgs),
    /// Training curves of a run (loss, gradient norm, learning rate) from RUN/metrics.jsonl.
    Curves(CurvesArgs),
    /// Histograms of a coordinate, the norm or the interatomic distances of samples, over a reference's.
    Hist(HistArgs),
    /// A grid of images from a sample file of [n, h, w] or [n, c, h, w] (or --shape).
    Images(ImagesArgs),
}

#[derive(Parser)]
struct SamplesArgs {
    /// Samples (.npy or .csv, [n, d]).
    #[arg(long)]
    samples: PathBuf,
    /// Reference points drawn beside them (.npy or .csv).
    #[arg(long, conflicts_with = "target")]
    reference: Option<PathBuf>,
    /// Or exact draws of a known target as the reference (ncsn2, anisotropic3, anisotropic10, gmm40, 8gaussians, or a toy).
    #[arg(long)]
    target: Option<String>,
    /// Coordinates whose pairwise marginals are drawn when d > 2 (default: the first four).
    #[arg(long, value_delimiter = ',')]
    coords: Vec<usize>,
    /// Draw 2-D histograms with this many bins per axis instead of scatters (for large sets).
    #[arg(long)]
    bins: Option<usize>,
    /// Axis range xmin,xmax,ymin,ymax (2-D; default: both sets' range).
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 4,
        allow_negative_numbers = true
    )]
    range: Option<Vec<f64>>,
    /// Output PNG.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Parser)]
struct ScoreArgs {
    #[command(flatten)]
    model: ModelSource,
    /// Diffusion time t of the field.
    #[arg(long, default_value_t = 0.05)]
    t: f64,
    /// Arrows per axis.
    #[arg(long, default_value_t = 21)]
    grid: usize,
    /// Axis range xmin,xmax,ymin,ymax in data units (default: the target's or data's range).
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 4,
        allow_negative_numbers = true
    )]
    range: Option<Vec<f64>>,
    /// Output PNG.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Parser)]
struct DensityArgs {
    #[command(flatten)]
    model: ModelSource,
    /// Cells per axis (each cell one likelihood solve).
    #[arg(long, default_value_t = 40)]
    grid: usize,
    /// Axis range xmin,xmax,ymin,ymax in data units (default: the target's or data's range).
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 4,
        allow_negative_numbers = true
    )]
    range: Option<Vec<f64>>,
    /// Colour range: this many nats below the highest log-density.
    #[arg(long, default_value_t = 12.0)]
    depth: f64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Output PNG.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Parser)]
struct CurvesArgs {
    /// Run folder of `tweedie train`.
    #[arg(long)]
    run: PathBuf,
    /// Output PNG (default: RUN/curves.png).
    #[arg(long, short)]
    out: Option<PathBuf>,
}

#[derive(Parser)]
struct HistArgs {
    /// Samples (.npy or .csv).
    #[arg(long)]
    samples: PathBuf,
    /// Reference values drawn beside them (.npy or .csv, the same width).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// What to histogram: coord:J (coordinate J), norm (‖x‖), distances:K (interatomic distances of particles in K dimensions), or energy:NAME (the energy U of a named potential: double-well, muller-brown, gmm40, dw4, lj13).
    #[arg(long, default_value = "coord:0")]
    of: String,
    /// Bins (on the range of all values, or --range).
    #[arg(long, default_value_t = 60)]
    bins: usize,
    /// Histogram range lo,hi (default: the reference's range, else all values').
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 2,
        allow_negative_numbers = true
    )]
    range: Option<Vec<f64>>,
    /// Output PNG.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Parser)]
struct ImagesArgs {
    /// Images (.npy [n, h, w] or [n, c, h, w], or [n, d] with --shape).
    #[arg(long)]
    samples: PathBuf,
    /// Image shape HxW or CxHxW when the file holds flat rows.
    #[arg(long)]
    shape: Option<String>,
    /// Images drawn (the first ones).
    #[arg(long, default_value_t = 100)]
    n: usize,
    /// Images per row.
    #[arg(long, default_value_t = 10)]
    cols: usize,
    /// Value range mapped to black…white lo,hi (default: the images' min and max).
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 2,
        allow_negative_numbers = true
    )]
    range: Option<Vec<f64>>,
    /// Screen pixels per image pixel.
    #[arg(long, default_value_t = 3)]
    zoom: u32,
    /// Output PNG.
    #[arg(long, short)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    match a.what {
        What::Samples(a) => samples(a),
        What::Score(a) => score(a),
        What::Density(a) => density(a),
        What::Curves(a) => curves(a),
        What::Hist(a) => hist(a),
        What::Images(a) => images(a),
    }
}

/// Reads a finite point set, naming the file in errors.
fn read(path: &Path) -> Result<Points> {
    let x = data::read_points(path)?;
    x.check_finite(&path.display().to_string())?;
    Ok(x)
}

/// `n` exact draws of a mixture or toy named `name` (seed fixed).
fn draws(name: &str, n: usize) -> Result<Points> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    match GaussianMixture::named(name) {
        Ok(m) => Ok(m.sample(n, &mut rng)),
        Err(_) if data::TOY_NAMES.contains(&name) => data::toy(name, n, &mut rng),
        Err(e) => Err(e),
    }
}

/// The 4-value --range as [xmin, xmax, ymin, ymax].
fn four(r: &Option<Vec<f64>>) -> Option<[f64; 4]> {
    r.as_ref().map(|v| [v[0], v[1], v[2], v[3]])
}

fn samples(a: SamplesArgs) -> Result<()> {
    tweedie::io::check_parent(&a.out)?;
    let x = read(&a.samples)?;
    let reference = match (&a.reference, &a.target) {
        (Some(r), _) => Some(read(r)?),
        (None, Some(name)) => Some(draws(name, x.n)?),
        _ => None,
    };
    if let Some(r) = &reference {
        if r.d != x.d {
            bail!(
                "the reference has dimension {} but the samples have {}",
                r.d,
                x.d
            );
        }
    }
    let name = format!("samples ({})", x.n);
    let ref_name = reference.as_ref().map(|r| format!("reference ({})", r.n));
    let mut sets: Vec<(&str, &Points)> = Vec::new();
    if let (Some(r), Some(n)) = (&reference, &ref_name) {
        sets.push((n, r));
    }
    sets.push((&name, &x));
    if x.d == 2 {
        match a.bins {
            Some(b) => plot::density_panels(&a.out, &sets, four(&a.range), b)?,
            None => plot::scatter_panels(&a.out, &sets, four(&a.range))?,
        }
    } else {
        let coords = if a.coords.is_empty() {
            (0..x.d.min(4)).collect()
        } else {
            a.coords.clone()
        };
        plot::pairwise(&a.out, &sets, &coords)?;
    }
    println!("{}", a.out.display());
    Ok(())
}

/// The square grid over `range` or over the padded range of `pts`.
fn grid_over(range: &Option<Vec<f64>>, pts: &Points, cells: usize) -> Result<Grid2> {
    if cells < 2 {
        bail!("--grid must be at least 2");
    }
    let r = match four(range) {
        Some(r) => r,
        None => {
            let span = |j: usize| {
                let v = (0..pts.n).map(|i| pts.row(i)[j]);
                let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                    (l.min(v), h.max(v))
                });
                let m = 0.1 * (hi - lo);
                (lo - m, hi + m)
            };
            let ((a, b), (c, d)) = (span(0), span(1));
            [a, b, c, d]
        }
    };
    Grid2::new(r[0]..r[1], r[2]..r[3], cells, cells)
        .context("--range must be xmin,xmax,ymin,ymax with min < max")
}

/// The model's points in its coordinates (data / scale) as an f32 or f64 tensor.
fn model_points(pts: &Points, scale: f64, dtype: DType) -> Result<Tensor> {
    let x = Tensor::from_vec(
        pts.scaled(1.0 / scale).data,
        (pts.n, pts.d),
        &candle_core::Device::Cpu,
    )?;
    Ok(x.to_dtype(dtype)?)
}

/// Where a 2-D model's figure is drawn: the exact target's draws or the run's toy data.
fn extent(l: &Loaded) -> Result<Points> {
    match (&l.exact, &l.source) {
        (Some(m), _) => Ok(m.sample(4000, &mut ChaCha8Rng::seed_from_u64(1))),
        (None, Some(toy)) if data::TOY_NAMES.contains(&toy.as_str()) => draws(toy, 4000),
        _ => Ok(Points::new(2, 2, vec![-3.0, -3.0, 3.0, 3.0])?.scaled(l.scale)),
    }
}

fn score(a: ScoreArgs) -> Result<()> {
    tweedie::io::check_parent(&a.out)?;
    let l = a.model.load(&candle_core::Device::Cpu)?;
    draw_score(&l, a.t, a.grid, &a.range, &a.out)?;
    println!("{}", a.out.display());
    Ok(())
}

/// Writes the score field of run folder `run` at time `t` (21 arrows per axis over its data's
/// range, EMA weights) to `out`.
pub(crate) fn write_score_field(run: &Path, t: f64, out: &Path) -> Result<()> {
    let source = ModelSource {
        run: Some(run.to_path_buf()),
        target: None,
        process: "vp".into(),
        sigma_max: 100.0,
        no_ema: false,
    };
    draw_score(&source.load(&candle_core::Device::Cpu)?, t, 21, &None, out)
}

/// The score figure of a loaded model at time `t`: the learned field, and beside it the exact
/// field and an error map when the data's density is known.
fn draw_score(l: &Loaded, t: f64, grid: usize, range: &Option<Vec<f64>>, out: &Path) -> Result<()> {
    if l.model.dim() != 2 {
        bail!(
            "plot score draws 2-D fields; this model has dimension {} (use plot samples for pairwise marginals)",
            l.model.dim()
        );
    }
    let (t0, t1) = (l.process.t_min(), l.process.t_max());
    if !(t.is_finite() && t >= t0 && t <= t1) {
        bail!(
            "--t must lie in the process's [t_min, T] = [{t0}, {t1}], got {}",
            t
        );
    }
    let arrows = grid_over(range, &extent(l)?, grid)?;
    let fine = Grid2::new(arrows.x.clone(), arrows.y.clone(), 80, 80)?;
    let at = arrows.points();
    let x = model_points(&at, l.scale, DType::F32)?;
    let times = Tensor::full(t as f32, at.n, x.device())?;
    let s: Vec<f64> = l
        .model
        .score(&x, &times)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1()?;
    // the score of data coordinates: ∇_x log p(x) = ∇_u log p_u(x / scale) / scale
    let learned = Points::new(at.n, 2, s.iter().map(|v| v / l.scale).collect())?;
    let (alpha, sigma) = (l.process.alpha(t), l.process.sigma(t));
    let title = format!("learned score, t = {}", t);
    match &l.exact {
        None => {
            let panel = FieldPanel {
                title: &title,
                at: &at,
                vectors: &learned,
                log_density: None,
            };
            plot::vector_fields(out, &[panel], None)?;
        }
        Some(mix) => {
            // p_t in data coordinates: the mixture diffused with (α, σ·scale)
            let (_, exact) = mix.log_prob_and_score_at(&at.data, alpha, sigma * l.scale)?;
            let fine_pts = fine.points();
            let (logp, exact_fine) =
                mix.log_prob_and_score_at(&fine_pts.data, alpha, sigma * l.scale)?;
            let xf = model_points(&fine_pts, l.scale, DType::F32)?;
            let tf = Tensor::full(t as f32, fine_pts.n, xf.device())?;
            let sf: Vec<f64> = l
                .model
                .score(&xf, &tf)?
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1()?;
            let err: Vec<f64> = sf
                .chunks(2)
                .zip(exact_fine.chunks(2))
                .map(|(m, e)| {
                    ((m[0] / l.scale - e[0]).hypot(m[1] / l.scale - e[1]))
                        .max(1e-12)
                        .log10()
                })
                .collect();
            let exact = Points::new(at.n, 2, exact)?;
            let panels = [
                FieldPanel {
                    title: &title,
                    at: &at,
                    vectors: &learned,
                    log_density: Some((&fine, &logp)),
                },
                FieldPanel {
                    title: "exact score",
                    at: &at,
                    vectors: &exact,
                    log_density: Some((&fine, &logp)),
                },
            ];
            let heat = HeatPanel {
                title: "error ‖s_θ − ∇log p_t‖",
                values: &err,
                label: "log₁₀ error",
                range: None,
            };
            plot::vector_fields(out, &panels, Some((&fine, &heat)))?;
        }
    }
    Ok(())
}

fn density(a: DensityArgs) -> Result<()> {
    tweedie::io::check_parent(&a.out)?;
    if !(a.depth.is_finite() && a.depth > 0.0) {
        bail!("--depth must be a positive number of nats");
    }
    let l = a.model.load(&candle_core::Device::Cpu)?;
    if l.model.dim() != 2 {
        bail!(
            "plot density draws 2-D log-densities; this model has dimension {}",
            l.model.dim()
        );
    }
    let grid = grid_over(&a.range, &extent(&l)?, a.grid)?;
    let pts = grid.points();
    eprintln!(
        "log p on {} grid points through the probability-flow ODE (dopri5, exact divergence)",
        pts.n
    );
    let x = model_points(&pts, l.scale, DType::F64)?;
    let opts = tweedie::likelihood::Options::default();
    let bar = tweedie::progress::bar(pts.n, 0, a.quiet);
    let done = |k: usize| bar.set_position(k as u64);
    let out = tweedie::likelihood::log_prob_chunked(
        l.model.as_ref(),
        l.process.as_ref(),
        &x,
        &opts,
        64,
        2,
        Some(&done),
    )?;
    bar.finish_and_clear();
    let shift = 2.0 * l.scale.ln();
    let model: Vec<f64> = out.log_p0.iter().map(|v| v - shift).collect();
    let exact: Option<Vec<f64>> = match (&l.exact, &l.source) {
        (Some(m), _) => Some(m.log_prob(&pts)?),
        (None, Some(toy)) => data::toy_log_prob(toy, &pts),
        _ => None,
    };
    let top = model
        .iter()
        .chain(exact.iter().flatten())
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    let range = Some((top - a.depth, top));
    let mut panels = vec![HeatPanel {
        title: "model log p₀ (PF-ODE)",
        values: &model,
        label: "nats",
        range,
    }];
    let diff: Vec<f64>;
    if let Some(e) = &exact {
        panels.push(HeatPanel {
            title: "exact log p₀",
            values: e,
            label: "nats",
            range,
        });
        diff = model.iter().zip(e).map(|(m, e)| m - e).collect();
        panels.push(HeatPanel {
            title: "model − exact",
            values: &diff,
            label: "nats",
            range: None,
        });
    }
    plot::heatmaps(&a.out, &grid, &panels)?;
    println!("{}", a.out.display());
    Ok(())
}

fn curves(a: CurvesArgs) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| a.run.join("curves.png"));
    tweedie::io::check_parent(&out)?;
    write_curves(&a.run, &out)?;
    println!("{}", out.display());
    Ok(())
}

/// Writes the training curves of run folder `run` (loss, gradient norm and learning rate,
/// one panel each, against the step) to `out`.
pub(crate) fn write_curves(run: &Path, out: &Path) -> Result<()> {
    let log = run.join(tweedie::train::METRICS_LOG);
    let text = std::fs::read_to_string(&log).with_context(|| {
        format!(
            "{}: cannot read the run's training log (is {} a run folder?)",
            log.display(),
            run.display()
        )
    })?;
    let rows: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let series = |key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|v| Some((v["step"].as_f64()?, v[key].as_f64()?)))
            .collect()
    };
    let loss = series("loss");
    if loss.is_empty() {
        bail!("{}: no logged loss to plot", log.display());
    }
    let axes = plot::Axes {
        title: "training loss (mean over each logging interval)",
        x_label: "step",
        y_label: "loss",
        log_x: false,
        log_y: loss.iter().all(|q| q.1 > 0.0),
    };
    plot::line_plot_axes(
        out,
        &axes,
        &[("loss", loss), ("gradient norm", series("grad_norm"))],
    )
}

/// The values histogrammed by `--of` for each row of `x`.
fn values_of(x: &Points, of: &str) -> Result<Vec<f64>> {
    let bad =
        || anyhow::anyhow!("--of must be coord:J, norm, distances:K or energy:NAME, got '{of}'");
    let rows = (0..x.n).map(|i| x.row(i));
    Ok(match of.split_once(':') {
        None if of == "norm" => rows
            .map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt())
            .collect(),
        Some(("coord", j)) => {
            let j: usize = j.parse().map_err(|_| bad())?;
            if j >= x.d {
                bail!("--of coord:{j}: the points have only {} coordinates", x.d);
            }
            rows.map(|r| r[j]).collect()
        }
        Some(("energy", name)) => tweedie::target::potential::named(name, None)?.energy(&x.data)?,
        Some(("distances", k)) => {
            let k: usize = k.parse().map_err(|_| bad())?;
            if k == 0 || !x.d.is_multiple_of(k) {
                bail!(
                    "--of distances:{k}: a point of {} values is not particles of {k} coordinates",
                    x.d
                );
            }
            x.interatomic_distances(k)
        }
        _ => return Err(bad()),
    })
}

fn hist(a: HistArgs) -> Result<()> {
    tweedie::io::check_parent(&a.out)?;
    let x = read(&a.samples)?;
    let r = a.reference.as_deref().map(read).transpose()?;
    let xv = values_of(&x, &a.of)?;
    let rv = r.as_ref().map(|r| values_of(r, &a.of)).transpose()?;
    let mut sets: Vec<(&str, &[f64])> = Vec::new();
    if let Some(v) = &rv {
        sets.push(("reference", v));
    }
    sets.push(("samples", &xv));
    // by default the reference's range (samples far outside it would squash the picture)
    let all: Vec<&[f64]> = match &rv {
        Some(v) => vec![v.as_slice()],
        None => sets.iter().map(|s| s.1).collect(),
    };
    let range = a.range.as_ref().map(|v| v[0]..v[1]);
    let bins = plot::Histogram::new(a.bins, range, &all)?;
    plot::histograms(
        &a.out,
        &format!("histogram of {}", a.of),
        &a.of,
        &sets,
        &bins,
    )?;
    println!("{}", a.out.display());
    Ok(())
}

fn images(a: ImagesArgs) -> Result<()> {
    tweedie::io::check_parent(&a.out)?;
    let mut x = read(&a.samples)?;
    if let Some(s) = &a.shape {
        let dims: Vec<usize> = s
            .split('x')
            .map(|v| v.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow::anyhow!("--shape must be HxW or CxHxW, e.g. 28x28, got '{s}'"))?;
        x = x.with_event(dims)?;
    }
    let k = a.n.min(x.n);
    if k == 0 {
        bail!("{}: no images to draw", a.samples.display());
    }
    let first = Points::new(k, x.d, x.data[..k * x.d].to_vec())?.with_event(x.event.clone())?;
    let (lo, hi) = match &a.range {
        Some(v) => (v[0], v[1]),
        None => first
            .data
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            }),
    };
    let hi = if hi > lo { hi } else { lo + 1.0 };
    plot::image_grid(&a.out, &first, a.cols, (lo, hi), a.zoom, None)?;
    println!("{}", a.out.display());
    Ok(())
}
