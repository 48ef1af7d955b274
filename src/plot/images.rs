//! Image grids: a PNG of images laid out in rows (samples per class, a denoising strip), each
//! pixel drawn as a `zoom` × `zoom` block.

use super::register_font;
use crate::data::Points;
use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use std::path::Path;

/// Writes a PNG grid of the images in `images` (event shape \[h, w\] grey, or \[c, h, w\] with
/// c = 1 or 3), `cols` per row, values mapped from `[lo, hi]` to black…white (clamped), with an
/// optional caption over each image and a 2-pixel white gutter.
pub fn image_grid(
    path: &Path,
    images: &Points,
    cols: usize,
    (lo, hi): (f64, f64),
    zoom: u32,
    captions: Option<&[String]>,
) -> Result<()> {
    let p = path.display();
    let (c, h, w) = match images.event_shape()[..] {
        [h, w] => (1, h, w),
        [c, h, w] if c == 1 || c == 3 => (c, h, w),
        ref e => bail!(
            "{p}: an image grid needs images of shape [h, w] or [c, h, w] with c = 1 or 3, got {e:?} (give the event shape, e.g. --shape 28x28)"
        ),
    };
    if images.n == 0 || cols == 0 || zoom == 0 {
        bail!("{p}: an image grid needs at least one image, one column and zoom ≥ 1");
    }
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        bail!("{p}: the value range [{lo}, {hi}] must be finite with lo < hi");
    }
    if let Some(caps) = captions {
        if caps.len() != images.n {
            bail!("{p}: {} captions for {} images", caps.len(), images.n);
        }
    }
    let rows = images.n.div_ceil(cols);
    let cap_h = if captions.is_some() { 18 } else { 0 };
    let (cw, ch) = (w as u32 * zoom + 2, h as u32 * zoom + 2 + cap_h);
    register_font()?;
    let draw = |path: &Path| -> Result<()> {
        let root = BitMapBackend::new(path, (cw * cols as u32 + 2, ch * rows as u32 + 2))
            .into_drawing_area();
        root.fill(&WHITE)?;
        let level = |v: f64| (255.0 * ((v - lo) / (hi - lo)).clamp(0.0, 1.0)).round() as u8;
        for k in 0..images.n {
            let img = images.row(k);
            let (x0, y0) = (
                2 + (k % cols) as u32 * cw,
                2 + (k / cols) as u32 * ch + cap_h,
            );
            if let Some(caps) = captions {
                root.draw(&Text::new(
                    caps[k].clone(),
                    (x0 as i32, y0 as i32 - cap_h as i32 + 2),
                    ("sans-serif", 13).into_font(),
                ))?;
            }
            for y in 0..h {
                for x in 0..w {
                    let px = |ch: usize| level(img[ch * h * w + y * w + x]);
                    let colour = if c == 3 {
                        RGBColor(px(0), px(1), px(2))
                    } else {
                        let g = px(0);
                        RGBColor(g, g, g)
                    };
                    let (a, b) = ((x0 + x as u32 * zoom) as i32, (y0 + y as u32 * zoom) as i32);
                    // plotters fills [a, a') × [b, b'): the far corner is one past the block
                    // (with a' = a + zoom − 1 every block lost a row and a column, and the white
                    // background showed through as a dot grid)
                    root.draw(&Rectangle::new(
                        [(a, b), (a + zoom as i32, b + zoom as i32)],
                        colour.filled(),
                    ))?;
                }
            }
        }
        root.present()?;
        Ok(())
    };
    crate::io::render_atomic(path, draw)
        .with_context(|| format!("{p}: writing the image grid failed"))
}
