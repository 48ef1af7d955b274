//! Where training batches come from: fresh toy draws, exact mixture draws (with exact forces and
//! diffused scores), or minibatches of a data file (with optional per-sample forces).

use crate::config::DataConfig;
use crate::data::{self, Points};
use crate::objective::{Batch, Blend};
use crate::process::Process;
use crate::score::ScoreModel;
use crate::target::{GaussianMixture, Potential, TARGET_NAMES};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use std::path::Path;

/// Training data, in model space (divided by `data.scale`).
pub enum DataSource {
    /// A 2-D toy by name, drawn afresh every step.
    Toy(String),
    /// A Gaussian-mixture target (model space), drawn exactly, with exact forces from its `Potential`.
    Mixture(GaussianMixture),
    /// Points from a file, with per-sample forces when `data.forces` names a second file and
    /// class labels when `data.labels` names one.
    Points {
        x: Points,
        forces: Option<Points>,
        labels: Option<Vec<u32>>,
    },
}

fn load(path: &str, scale: f64) -> Result<Points> {
    let pts = data::read_points(Path::new(path))?;
    if pts.n == 0 {
        bail!("{path}: the data set is empty");
    }
    pts.check_finite(path)?;
    Ok(pts.scaled(1.0 / scale))
}

/// β F = ∇log p0 of the named potential at the data points (model space x; the scores in model
/// space), checked: the data's width must be the potential's dimension, every force finite.
fn potential_forces(name: &str, cfg: &DataConfig, source: &str, x: &Points) -> Result<Points> {
    let p = crate::target::potential::named(name, cfg.kt)?;
    if p.dim() != x.d {
        let shape = match p.particles() {
            Some((n, k)) => format!("{n} particles × {k} dimensions = {}", p.dim()),
            None => format!("{}", p.dim()),
        };
        bail!(
            "{source}: points have {} values but the potential {name} needs {shape}",
            x.d
        );
    }
    let data = x.scaled(cfg.scale);
    let scores = Points::new(x.n, x.d, p.score(&data.data)?)?.scaled(cfg.scale);
    scores.check_finite(&format!(
        "{source}: forces of the potential {name} at the data"
    ))?;
    Ok(scores)
}

impl DataSource {
    /// Resolves `data.source`: a mixture target name, a toy name, else a `.npy`/`.csv` path.
    pub fn open(cfg: &DataConfig) -> Result<Self> {
        let source = cfg.source.as_str();
        if TARGET_NAMES.contains(&source) {
            return Ok(DataSource::Mixture(
                GaussianMixture::named(source)?.scaled(1.0 / cfg.scale)?,
            ));
        }
        if data::TOY_NAMES.contains(&source) {
            return Ok(DataSource::Toy(source.to_string()));
        }
        if Path::new(source).extension().is_none() {
            bail!("data source '{source}' is neither a toy ({}), a mixture target ({}) nor a .npy/.csv file", data::TOY_NAMES.join(", "), TARGET_NAMES.join(", "));
        }
        let x = load(source, cfg.scale)?;
        let forces = match (&cfg.forces, &cfg.potential) {
            (Some(_), Some(_)) => bail!("give data.forces or data.potential, not both"),
            (Some(f), None) => {
                // forces are scores: they scale inversely to the data
                let forces = load(f, 1.0 / cfg.scale)?;
                if (forces.n, forces.d) != (x.n, x.d) {
                    bail!(
                        "{f}: forces have shape [{}, {}] but the data {source} have [{}, {}]",
                        forces.n,
                        forces.d,
                        x.n,
                        x.d
                    );
                }
                Some(forces)
            }
            (None, Some(name)) => Some(potential_forces(name, cfg, source, &x)?),
            (None, None) => None,
        };
        let labels = match &cfg.labels {
            Some(l) => {
                let labels = data::read_labels(Path::new(l))?;
                if labels.len() != x.n {
                    bail!(
                        "{l}: {} labels for the {} points of {source}",
                        labels.len(),
                        x.n
                    );
                }
                Some(labels)
            }
            None => None,
        };
        Ok(DataSource::Points { x, forces, labels })
    }

    /// Whether the points carry class labels.
    pub fn has_labels(&self) -> bool {
        matches!(
            self,
            DataSource::Points {
                labels: Some(_),
                ..
            }
        )
    }

    /// The shape of one point (empty: \[d\]).
    pub fn event(&self) -> Vec<usize> {
        match self {
            DataSource::Points { x, .. } => x.event.clone(),
            _ => Vec::new(),
        }
    }

    /// Data dimension.
    pub fn dim(&self) -> usize {
        match self {
            DataSource::Toy(_) => 2,
            DataSource::Mixture(m) => m.dim(),
            DataSource::Points { x, .. } => x.d,
        }
    }

    /// Whether batches carry per-sample forces.
    pub fn has_forces(&self) -> bool {
        matches!(
            self,
            DataSource::Mixture(_)
                | DataSource::Points {
                    forces: Some(_),
                    ..
                }
        )
    }

    /// The mixture target, when the data are one.
    pub fn mixture(&self) -> Option<&GaussianMixture> {
        match self {
            DataSource::Mixture(m) => Some(m),
            _ => None,
        }
    }

    /// Up to `n` points of the data for quick statistics (model space).
    pub fn points(&self, n: usize, scale: f64, rng: &mut impl Rng) -> Result<Points> {
        Ok(match self {
            DataSource::Toy(name) => data::toy(name, n, rng)?.scaled(1.0 / scale),
            DataSource::Mixture(m) => m.sample(n, rng),
            DataSource::Points { x, .. } => x.clone(),
        })
    }

    /// σ_d for EDM's preconditioning: the root mean square over coordinates of the per-coordinate
    /// standard deviation of up to 4096 points (model units, projected on `space`; fixed seed,
    /// so a resumed run measures the same).
    pub fn sigma_data(&self, scale: f64, space: crate::process::Space) -> Result<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5d);
        let mut pts = self.points(4096, scale, &mut rng)?;
        space.project(&mut pts.data);
        let (n, d) = (pts.n.min(4096), pts.d);
        if n < 2 {
            bail!("σ_d needs at least 2 data points, found {n}; give model.sigma_data");
        }
        let mut var = 0.0;
        for j in 0..d {
            let col = (0..n).map(|i| pts.row(i)[j]);
            let mean = col.clone().sum::<f64>() / n as f64;
            var += col.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        }
        let sd = (var / d as f64).sqrt();
        if !(sd > 0.0 && sd.is_finite()) {
            bail!("the data's standard deviation is {sd}; give model.sigma_data");
        }
        Ok(sd)
    }

    /// The minimum-variance blend of the DSM and force targets under `process`, measured on up to
    /// 4096 points of the data with their forces (fixed seed: a resumed run measures the same);
    /// None when the data carry no forces.
    pub fn blend(&self, process: &dyn Process) -> Result<Option<Blend>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xb1e4d);
        let (x, f) = match self {
            DataSource::Mixture(m) => {
                let x = m.sample(4096, &mut rng);
                let f = Points::new(x.n, x.d, m.force(&x.data)?)?;
                (x, f)
            }
            DataSource::Points {
                x, forces: Some(f), ..
            } => {
                let k = x.n.min(4096);
                let head = |p: &Points| Points::new(k, p.d, p.data[..k * p.d].to_vec());
                (head(x)?, head(f)?)
            }
            _ => return Ok(None),
        };
        Ok(Some(Blend::estimate(process, &x, &f, 1)?))
    }

    /// A batch of n points [n, d] (f32, model space), with forces when known; `truth` and
    /// `blend` are passed on.
    pub fn batch<'a>(
        &self,
        n: usize,
        scale: f64,
        rng: &mut impl Rng,
        device: &Device,
        truth: Option<&'a dyn ScoreModel>,
        blend: Option<&'a Blend>,
    ) -> Result<Batch<'a>> {
        let to_tensor = |p: &Points| -> Result<Tensor> {
            Ok(Tensor::from_vec(p.to_f32(), (p.n, p.d), device)?)
        };
        let (x, f, labels) = match self {
            DataSource::Toy(name) => (data::toy(name, n, rng)?.scaled(1.0 / scale), None, None),
            DataSource::Mixture(m) => {
                let x = m.sample(n, rng);
                let f = Points::new(n, x.d, m.force(&x.data)?)?;
                (x, Some(f), None)
            }
            DataSource::Points { x, forces, labels } => {
                let rows: Vec<usize> = (0..n).map(|_| rng.random_range(0..x.n)).collect();
                let pick = |p: &Points| {
                    Points::new(
                        n,
                        p.d,
                        rows.iter().flat_map(|&i| p.row(i).to_vec()).collect(),
                    )
                };
                let picked = labels
                    .as_ref()
                    .map(|l| rows.iter().map(|&i| l[i]).collect());
                (pick(x)?, forces.as_ref().map(pick).transpose()?, picked)
            }
        };
        Ok(Batch {
            x0: to_tensor(&x)?,
            force: f.as_ref().map(to_tensor).transpose()?,
            labels: labels
                .map(|l: Vec<u32>| Tensor::from_vec(l, n, device))
                .transpose()?,
            truth,
            blend,
        })
    }
}
