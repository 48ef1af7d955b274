//! Where training batches come from: fresh toy draws, exact mixture draws (with exact forces and
//! diffused scores), minibatches of a data file (with optional per-sample forces), or minibatches
//! of 8-bit images dequantised afresh for every batch.

use crate::config::DataConfig;
use crate::data::{self, idx, mnist, pngs, Images, Points};
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
    /// 8-bit images [n, c, h, w] (with optional labels): each batch's pixels dequantised with
    /// fresh u ~ U(0, 1), x = (b + u)/256·2 − 1, then divided by `data.scale`.
    Images(Images),
}

/// Class labels for `n` points from `path`: an IDX labels file or a `.npy` of integers.
fn read_labels(path: &str, n: usize, source: &str) -> Result<Vec<u32>> {
    let p = Path::new(path);
    let labels = if idx::is_idx_path(p) {
        idx::read_idx_labels(p)?
    } else {
        data::read_labels(p)?
    };
    if labels.len() != n {
        bail!(
            "{path}: {} labels for the {n} points of {source}",
            labels.len()
        );
    }
    Ok(labels)
}

/// The images `data.source` names: the shipped MNIST digits' training split (`mnist`), a
/// folder of PNGs, or an IDX images file; labels from `data.labels` where given. None when the
/// source is not an image source.
fn open_images(cfg: &DataConfig) -> Result<Option<Images>> {
    let source = cfg.source.as_str();
    if source == mnist::NAME {
        if cfg.labels.is_some() {
            bail!("data.source = \"mnist\" carries its own labels; drop data.labels");
        }
        return Ok(Some(mnist::split()?.0));
    }
    let path = Path::new(source);
    let mut images = if path.is_dir() {
        pngs::read_png_folder(path)?
    } else if idx::is_idx_path(path) {
        mnist::read_labelled(path, None)?
    } else {
        return Ok(None);
    };
    if let Some(l) = &cfg.labels {
        images.labels = Some(read_labels(l, images.n, source)?);
    }
    if cfg.forces.is_some() || cfg.potential.is_some() {
        bail!("{source}: images carry no forces; drop data.forces and data.potential");
    }
    Ok(Some(images))
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
    let p = crate::target::potential::Scaled {
        inner: crate::target::potential::named(name, cfg.kt)?,
        scale: cfg.scale,
    };
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
    let scores = Points::new(x.n, x.d, p.score(&x.data)?)?;
    scores.check_finite(&format!(
        "{source}: forces of the potential {name} at the data"
    ))?;
    Ok(scores)
}

impl DataSource {
    /// Resolves `data.source`: a mixture target name, a toy name, `mnist`, a folder of PNGs, an
    /// IDX file, else a `.npy`/`.csv` path.
    pub fn open(cfg: &DataConfig) -> Result<Self> {
        let source = cfg.source.as_str();
        if source == super::replay::SOURCE {
            bail!("data.source = \"replay\" is energy-only training's buffer of the model's own samples: use it with objective kind = \"idem\" and data.potential");
        }
        if let Some(images) = open_images(cfg)? {
            return Ok(DataSource::Images(images));
        }
        if TARGET_NAMES.contains(&source) {
            return Ok(DataSource::Mixture(
                GaussianMixture::named(source)?.scaled(1.0 / cfg.scale)?,
            ));
        }
        if data::TOY_NAMES.contains(&source) {
            return Ok(DataSource::Toy(source.to_string()));
        }
        if Path::new(source).extension().is_none() {
            bail!("data source '{source}' is neither a toy ({}), a mixture target ({}), \"mnist\", a folder of PNGs, an IDX file nor a .npy/.csv file", data::TOY_NAMES.join(", "), TARGET_NAMES.join(", "));
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
        let labels = cfg
            .labels
            .as_ref()
            .map(|l| read_labels(l, x.n, source))
            .transpose()?;
        Ok(DataSource::Points { x, forces, labels })
    }

    /// Whether the points carry class labels.
    pub fn has_labels(&self) -> bool {
        match self {
            DataSource::Points { labels, .. } => labels.is_some(),
            DataSource::Images(im) => im.labels.is_some(),
            _ => false,
        }
    }

    /// The same data without class labels (for a network that takes no condition).
    pub fn without_labels(self) -> Self {
        match self {
            DataSource::Points { x, forces, .. } => DataSource::Points {
                x,
                forces,
                labels: None,
            },
            DataSource::Images(im) => DataSource::Images(Images { labels: None, ..im }),
            other => other,
        }
    }

    /// The number of classes (1 + the largest label), when the data carry labels.
    pub fn classes(&self) -> Option<usize> {
        let labels = match self {
            DataSource::Points { labels, .. } => labels.as_ref(),
            DataSource::Images(im) => im.labels.as_ref(),
            _ => None,
        }?;
        labels.iter().max().map(|&m| m as usize + 1)
    }

    /// The shape of one point (empty: \[d\]).
    pub fn event(&self) -> Vec<usize> {
        match self {
            DataSource::Points { x, .. } => x.event.clone(),
            DataSource::Images(im) => im.event(),
            _ => Vec::new(),
        }
    }

    /// Data dimension.
    pub fn dim(&self) -> usize {
        match self {
            DataSource::Toy(_) => 2,
            DataSource::Mixture(m) => m.dim(),
            DataSource::Points { x, .. } => x.d,
            DataSource::Images(im) => im.dim(),
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
            DataSource::Images(im) => im.to_points()?.scaled(1.0 / scale),
        })
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
            DataSource::Images(im) => {
                let rows: Vec<usize> = (0..n).map(|_| rng.random_range(0..im.n)).collect();
                let mut v = im.values(&rows, Some(rng));
                if scale != 1.0 {
                    v.iter_mut().for_each(|x| *x /= scale as f32);
                }
                let labels = im
                    .labels
                    .as_ref()
                    .map(|l| rows.iter().map(|&i| l[i]).collect());
                let x0 = Tensor::from_vec(v, (n, im.dim()), device)?;
                return Ok(Batch {
                    x0,
                    force: None,
                    labels: labels
                        .map(|l: Vec<u32>| Tensor::from_vec(l, n, device))
                        .transpose()?,
                    truth,
                    blend,
                });
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

/// Classifier-free guidance's label dropout: each of the batch's labels replaced by the null
/// class `null` with probability p (one uniform draw per row from `rng`; none without labels).
pub fn drop_labels(batch: &mut Batch, null: Option<u32>, p: f64, rng: &mut impl Rng) -> Result<()> {
    let (Some(labels), Some(null)) = (&batch.labels, null) else {
        return Ok(());
    };
    if p <= 0.0 {
        return Ok(());
    }
    let kept: Vec<u32> = labels
        .to_vec1::<u32>()?
        .into_iter()
        .map(|l| if rng.random::<f64>() < p { null } else { l })
        .collect();
    let n = kept.len();
    batch.labels = Some(Tensor::from_vec(kept, n, labels.device())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;

    fn batch(labels: Option<Vec<u32>>) -> Result<Batch<'static>> {
        let dev = Device::Cpu;
        Ok(Batch {
            x0: Tensor::zeros((4, 1), candle_core::DType::F32, &dev)?,
            force: None,
            labels: labels.map(|l| Tensor::from_vec(l, 4, &dev)).transpose()?,
            truth: None,
            blend: None,
        })
    }

    #[test]
    fn label_dropout_sends_a_share_of_labels_to_the_null_class() -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let labels = |b: &Batch| -> Result<Vec<u32>> {
            Ok(b.labels.as_ref().expect("labels").to_vec1::<u32>()?)
        };
        for (p, want) in [(0.0, vec![0, 1, 2, 1]), (1.0, vec![3; 4])] {
            let mut b = batch(Some(vec![0, 1, 2, 1]))?;
            drop_labels(&mut b, Some(3), p, &mut rng)?;
            assert_eq!(labels(&b)?, want);
        }
        let mut b = batch(Some(vec![0; 4]))?;
        let dropped: usize = (0..250)
            .map(|_| -> Result<usize> {
                let mut b = batch(Some(vec![0; 4]))?;
                drop_labels(&mut b, Some(3), 0.25, &mut rng)?;
                Ok(labels(&b)?.iter().filter(|&&l| l == 3).count())
            })
            .sum::<Result<usize>>()?;
        assert!((200..300).contains(&dropped), "{dropped} of 1000");
        // no null class (an unconditional network) or no labels: nothing changes
        drop_labels(&mut b, None, 1.0, &mut rng)?;
        assert_eq!(labels(&b)?, vec![0; 4]);
        let mut none = batch(None)?;
        drop_labels(&mut none, Some(3), 1.0, &mut rng)?;
        assert!(none.labels.is_none());
        Ok(())
    }

    #[test]
    fn image_batches_are_dequantised_afresh_with_their_labels() -> Result<()> {
        let im = Images::new(
            2,
            [1, 1, 3],
            vec![0, 128, 255, 7, 7, 7],
            Some(vec![1, 0]),
            "t",
        )?;
        let source = DataSource::Images(im);
        assert_eq!((source.dim(), source.event()), (3, vec![1, 1, 3]));
        assert_eq!(source.classes(), Some(2));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let dev = Device::Cpu;
        let a = source.batch(64, 1.0, &mut rng, &dev, None, None)?;
        let b = source.batch(64, 1.0, &mut rng, &dev, None, None)?;
        let (va, vb): (Vec<f32>, Vec<f32>) = (
            a.x0.flatten_all()?.to_vec1()?,
            b.x0.flatten_all()?.to_vec1()?,
        );
        assert!(va.iter().all(|v| (-1.0..1.0).contains(v)));
        assert_ne!(va, vb);
        // each row's label belongs to its image (image 1 is all 7s: values near 7.5/128 − 1)
        let la: Vec<u32> = a.labels.as_ref().expect("labels").to_vec1()?;
        for (row, &l) in va.chunks(3).zip(&la) {
            let is_sevens = row
                .iter()
                .all(|v| (v - (7.5 / 128.0 - 1.0)).abs() < 0.5 / 128.0);
            assert_eq!(is_sevens, l == 0, "{row:?} {l}");
        }
        assert!(!source.without_labels().has_labels());
        Ok(())
    }
}
