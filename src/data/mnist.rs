//! The 10,000 MNIST digits shipped in `data/mnist/` (IDX, gzip) and their fixed split: 9000
//! training and 1000 test images, shuffled with the seed `SPLIT_SEED`.

use super::idx::{read_idx_images, read_idx_labels};
use super::images::Images;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The data source name that selects these digits.
pub const NAME: &str = "mnist";
/// Images held out for testing.
pub const TEST: usize = 1000;
/// Seed of the shuffle that splits the digits (they are stored grouped by label).
pub const SPLIT_SEED: u64 = 0x6d6e_6973;
/// The images' file inside the folder.
pub const IMAGES: &str = "images-idx3-ubyte.gz";
/// The labels' file inside the folder.
pub const LABELS: &str = "labels-idx1-ubyte.gz";

/// The folder: `data/mnist` under the current directory, else under the repository this binary
/// was built from.
pub fn folder() -> PathBuf {
    let here = Path::new("data").join(NAME);
    if here.join(IMAGES).exists() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(NAME)
}

/// Images [n, 1, rows, cols] of an IDX file, with the labels of a second one (counts must match).
pub fn read_labelled(images: &Path, labels: Option<&Path>) -> Result<Images> {
    let im = read_idx_images(images)?;
    let labels = match labels {
        Some(lp) => {
            let l = read_idx_labels(lp)?;
            if l.len() != im.n {
                bail!(
                    "{}: {} labels for the {} images of {}",
                    lp.display(),
                    l.len(),
                    im.n,
                    images.display()
                );
            }
            Some(l)
        }
        None => None,
    };
    Images::new(
        im.n,
        [1, im.rows, im.cols],
        im.pixels,
        labels,
        &images.display().to_string(),
    )
}

/// All the shipped digits with their labels.
pub fn all() -> Result<Images> {
    let dir = folder();
    read_labelled(&dir.join(IMAGES), Some(&dir.join(LABELS)))
}

/// The fixed split of the shipped digits: (9000 training, 1000 test) images.
pub fn split() -> Result<(Images, Images)> {
    all()?.split(TEST, SPLIT_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_digits_read_and_split_with_every_class_on_both_sides() -> Result<()> {
        let (train, test) = split()?;
        assert_eq!((train.n, test.n, train.shape), (9000, 1000, [1, 28, 28]));
        for part in [&train, &test] {
            let mut counts = [0usize; 10];
            for &l in part.labels.as_ref().expect("labels") {
                counts[l as usize] += 1;
            }
            // about a tenth each: the shuffle mixed the label-grouped file
            let share = part.n / 10;
            assert!(counts.iter().all(|&c| c > share / 2), "{counts:?}");
        }
        // a digit has ink and background
        let img = train.image(0);
        assert!(img.contains(&0) && img.iter().any(|&b| b > 200));
        Ok(())
    }

    #[test]
    fn a_labels_count_that_differs_from_the_images_is_named() -> Result<()> {
        use crate::data::idx::{encode_idx, IMAGES_MAGIC, LABELS_MAGIC};
        let dir = tempfile::tempdir()?;
        let (images, labels) = (dir.path().join("im.idx"), dir.path().join("lab.idx"));
        std::fs::write(&images, encode_idx(IMAGES_MAGIC, &[2, 2, 2], &[9; 8]))?;
        std::fs::write(&labels, encode_idx(LABELS_MAGIC, &[3], &[1, 2, 3]))?;
        let e = format!(
            "{:#}",
            read_labelled(&images, Some(&labels)).expect_err("3 ≠ 2")
        );
        assert!(
            e.contains("lab.idx") && e.contains("3 labels for the 2 images"),
            "{e}"
        );
        let im = read_labelled(&images, None)?;
        assert_eq!((im.n, im.shape, im.labels), (2, [1, 2, 2], None));
        Ok(())
    }
}
