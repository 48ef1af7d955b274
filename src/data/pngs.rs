//! A folder of PNG images as `Images` (a user's own small images): every `.png` in it, in name
//! order, greyscale (one channel) or colour (RGB, three channels), all the same size.

use super::images::Images;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Reads every `.png` of `dir` (sorted by name); the first image decides greyscale or RGB, and
/// every other must have its size and kind.
pub fn read_png_folder(dir: &Path) -> Result<Images> {
    let d = dir.display();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("{d}: cannot read folder"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("png"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{d}: no .png files in the folder");
    }
    let mut pixels = Vec::new();
    let mut shape: Option<[usize; 3]> = None;
    for f in &files {
        let img = image::open(f).with_context(|| format!("{}: not a readable PNG", f.display()))?;
        let grey = !img.color().has_color();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let this = [if grey { 1 } else { 3 }, h, w];
        let first = *shape.get_or_insert(this);
        if this != first {
            let kind = |s: [usize; 3]| if s[0] == 1 { "greyscale" } else { "RGB" };
            bail!(
                "{}: a {} image of {w}×{h}, but {} is {} of {}×{}; every image of the folder must \
                 have the same size and kind",
                f.display(),
                kind(this),
                files[0].display(),
                kind(first),
                first[2],
                first[1]
            );
        }
        if grey {
            pixels.extend(img.to_luma8().into_raw());
        } else {
            // interleaved RGB → channel-first [3, h, w]
            let rgb = img.to_rgb8().into_raw();
            for c in 0..3 {
                pixels.extend(rgb.iter().skip(c).step_by(3));
            }
        }
    }
    let shape = shape.context("no image was read")?;
    Images::new(files.len(), shape, pixels, None, &d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grey_and_rgb_folders_and_refuses_mixed_sizes() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let grey = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(10 * x + y) as u8]));
        grey.save(dir.path().join("a.png"))?;
        grey.save(dir.path().join("b.png"))?;
        let im = read_png_folder(dir.path())?;
        assert_eq!((im.n, im.shape), (2, [1, 2, 3]));
        assert_eq!(im.image(1), &[0, 10, 20, 1, 11, 21]);

        let rgb_dir = tempfile::tempdir()?;
        let rgb = image::RgbImage::from_fn(2, 1, |x, _| image::Rgb([x as u8, 5, 9]));
        rgb.save(rgb_dir.path().join("c.png"))?;
        let im = read_png_folder(rgb_dir.path())?;
        assert_eq!(im.shape, [3, 1, 2]);
        assert_eq!(im.image(0), &[0, 1, 5, 5, 9, 9]);

        image::GrayImage::new(4, 4).save(dir.path().join("c.png"))?;
        let e = format!(
            "{:#}",
            read_png_folder(dir.path()).expect_err("sizes differ")
        );
        assert!(e.contains("c.png") && e.contains("same size"), "{e}");
        let empty = tempfile::tempdir()?;
        assert!(read_png_folder(empty.path()).is_err());
        Ok(())
    }
}
