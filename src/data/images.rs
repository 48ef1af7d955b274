//! 8-bit images [n, c, h, w] with optional class labels, and their reading as points in
//! (−1, 1)^d: x = (b + u)/256·2 − 1 for a byte b, with uniform dequantisation u ~ U(0, 1) drawn
//! afresh for every training batch (a continuous density for the model to fit) and u = ½ for
//! evaluation (the bin's centre).

use super::Points;
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// u8 images, channel-first per image, with an optional label per image.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    pub n: usize,
    /// The shape of one image [c, h, w].
    pub shape: [usize; 3],
    /// n · c · h · w bytes, one image after another.
    pub pixels: Vec<u8>,
    /// Class labels \[n\], when known.
    pub labels: Option<Vec<u32>>,
}

/// The value of byte b with dequantisation offset u ∈ [0, 1): (b + u)/256·2 − 1.
pub fn pixel_value(b: u8, u: f32) -> f32 {
    (b as f32 + u) / 128.0 - 1.0
}

impl Images {
    /// Wraps `pixels`, checking their count against n and `shape` and the labels' count against n;
    /// `what` names the data in errors.
    pub fn new(
        n: usize,
        shape: [usize; 3],
        pixels: Vec<u8>,
        labels: Option<Vec<u32>>,
        what: &str,
    ) -> Result<Self> {
        let d: usize = shape.iter().product();
        if d == 0 || pixels.len() != n * d {
            bail!(
                "{what}: {} bytes do not hold {n} images of shape {shape:?}",
                pixels.len()
            );
        }
        if let Some(l) = &labels {
            if l.len() != n {
                bail!("{what}: {} labels for {n} images", l.len());
            }
        }
        Ok(Images {
            n,
            shape,
            pixels,
            labels,
        })
    }

    /// Values per image d = c · h · w.
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }

    /// The event shape [c, h, w].
    pub fn event(&self) -> Vec<usize> {
        self.shape.to_vec()
    }

    /// The bytes of image i.
    pub fn image(&self, i: usize) -> &[u8] {
        let d = self.dim();
        &self.pixels[i * d..(i + 1) * d]
    }

    /// The images at `rows`, in that order, with their labels.
    pub fn subset(&self, rows: &[usize]) -> Images {
        Images {
            n: rows.len(),
            shape: self.shape,
            pixels: rows.iter().flat_map(|&i| self.image(i).to_vec()).collect(),
            labels: self
                .labels
                .as_ref()
                .map(|l| rows.iter().map(|&i| l[i]).collect()),
        }
    }

    /// A fixed split: the images shuffled by a ChaCha8 generator seeded with `seed`, the first
    /// n − `test` for training and the last `test` for testing.
    pub fn split(&self, test: usize, seed: u64) -> Result<(Images, Images)> {
        if test >= self.n {
            bail!("cannot hold out {test} of {} images for testing", self.n);
        }
        let mut order: Vec<usize> = (0..self.n).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let (train, held) = order.split_at(self.n - test);
        Ok((self.subset(train), self.subset(held)))
    }

    /// The images at `rows` as f32 values [rows × d]: u ~ U(0, 1) per pixel drawn from `rng`
    /// (training), or u = ½ without one (evaluation).
    pub fn values<R: Rng>(&self, rows: &[usize], rng: Option<&mut R>) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * self.dim());
        let bytes = rows.iter().flat_map(|&i| self.image(i));
        match rng {
            Some(rng) => out.extend(bytes.map(|&b| pixel_value(b, rng.random::<f32>()))),
            None => out.extend(bytes.map(|&b| pixel_value(b, 0.5))),
        }
        out
    }

    /// Every image as a point with u = ½, shaped [c, h, w].
    pub fn to_points(&self) -> Result<Points> {
        let rows: Vec<usize> = (0..self.n).collect();
        let v = self.values::<rand_chacha::ChaCha8Rng>(&rows, None);
        Points::from_f32(self.n, self.dim(), &v)?.with_event(self.event())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn four() -> Result<Images> {
        Images::new(
            4,
            [1, 1, 2],
            vec![0, 255, 1, 2, 3, 4, 5, 6],
            Some(vec![0, 1, 2, 3]),
            "t",
        )
    }

    #[test]
    fn values_lie_in_their_bins_and_centre_without_a_generator() -> Result<()> {
        let im = four()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let v = im.values(&[0, 0], Some(&mut rng));
        // byte b covers [(b/128 − 1), ((b + 1)/128 − 1))
        for (k, &x) in v.iter().enumerate() {
            let b = im.pixels[k % 2] as f32;
            assert!(x >= b / 128.0 - 1.0 && x < (b + 1.0) / 128.0 - 1.0, "{x}");
        }
        // fresh draws: the two copies of image 0 differ
        assert_ne!(v[..2], v[2..]);
        let p = im.to_points()?;
        assert_eq!(p.event, vec![1, 1, 2]);
        assert!((p.data[0] - (0.5 / 128.0 - 1.0)).abs() < 1e-7);
        assert!((p.data[1] - (255.5 / 128.0 - 1.0)).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn the_split_is_fixed_by_its_seed_and_keeps_labels() -> Result<()> {
        let im = four()?;
        let (a, b) = im.split(1, 7)?;
        assert_eq!((a.n, b.n), (3, 1));
        assert_eq!(im.split(1, 7)?, (a.clone(), b.clone()));
        let mut all: Vec<u32> = a
            .labels
            .iter()
            .chain(&b.labels)
            .flatten()
            .copied()
            .collect();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3]);
        // an image keeps its label
        for (k, &l) in a.labels.as_ref().expect("labels").iter().enumerate() {
            assert_eq!(a.image(k), im.image(l as usize));
        }
        assert!(im.split(4, 7).is_err());
        assert!(Images::new(2, [1, 1, 2], vec![0; 4], Some(vec![1]), "t").is_err());
        assert!(Images::new(2, [1, 1, 2], vec![0; 3], None, "t").is_err());
        Ok(())
    }
}
