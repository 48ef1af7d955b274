//! Histograms of scalar values (energies, interatomic distances, any coordinate), several sets
//! overlaid as step outlines on shared bins.

use super::{colour, legend, linear_chart, padded_range, register_font, MAX_SERIES};
use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;

/// Shared bins of an overlaid histogram figure.
#[derive(Clone, Debug)]
pub struct Histogram {
    pub range: Range<f64>,
    pub bins: usize,
}

impl Histogram {
    /// `bins` bins over `range`, or over the padded range of all the values.
    pub fn new(bins: usize, range: Option<Range<f64>>, sets: &[&[f64]]) -> Result<Self> {
        if bins == 0 {
            bail!("a histogram needs at least one bin");
        }
        let range = match range {
            Some(r) if r.start.is_finite() && r.end.is_finite() && r.start < r.end => r,
            Some(r) => bail!("invalid histogram range {r:?}: expected finite min < max"),
            None => padded_range(sets.iter().flat_map(|s| s.iter().copied())),
        };
        Ok(Histogram { range, bins })
    }

    /// Bin width.
    pub fn width(&self) -> f64 {
        (self.range.end - self.range.start) / self.bins as f64
    }

    /// Probability density per bin (the share of finite values in the bin over its width; values
    /// outside the range count in the total but in no bin).
    pub fn density(&self, values: &[f64]) -> Vec<f64> {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let mut h = vec![0.0; self.bins];
        let w = self.width();
        for v in &finite {
            let k = (v - self.range.start) / w;
            if k >= 0.0 && (k as usize) < self.bins {
                h[k as usize] += 1.0;
            }
        }
        let norm = finite.len().max(1) as f64 * w;
        h.iter().map(|c| c / norm).collect()
    }
}

/// Writes a PNG (~900×520) of overlaid density histograms of named value sets on shared bins,
/// each a step outline over a light fill, with the legend outside the data.
pub fn histograms(
    path: &Path,
    title: &str,
    x_label: &str,
    sets: &[(&str, &[f64])],
    bins: &Histogram,
) -> Result<()> {
    let p = path.display();
    if sets.is_empty() || sets.len() > MAX_SERIES {
        bail!(
            "{p}: a histogram overlays 1 to {MAX_SERIES} sets, got {}",
            sets.len()
        );
    }
    let dens: Vec<Vec<f64>> = sets.iter().map(|(_, v)| bins.density(v)).collect();
    let top = dens.iter().flatten().copied().fold(0.0, f64::max);
    let ys = 0.0..(if top > 0.0 { 1.08 * top } else { 1.0 });
    register_font()?;
    let w = bins.width();
    let draw = |path: &Path| -> Result<()> {
        let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let (plot, side) = root.split_horizontally(900 - 200);
        let mut chart = linear_chart(
            &plot,
            title,
            (x_label, "density"),
            bins.range.clone(),
            ys.clone(),
        )?;
        for (k, h) in dens.iter().enumerate() {
            let c = colour(k);
            chart.draw_series(h.iter().enumerate().map(|(i, &v)| {
                let x0 = bins.range.start + i as f64 * w;
                Rectangle::new([(x0, 0.0), (x0 + w, v)], c.mix(0.12).filled())
            }))?;
            let outline = h.iter().enumerate().flat_map(|(i, &v)| {
                let x0 = bins.range.start + i as f64 * w;
                [(x0, v), (x0 + w, v)]
            });
            chart.draw_series(LineSeries::new(outline, c.stroke_width(2)))?;
        }
        let entries: Vec<(String, RGBAColor)> = sets
            .iter()
            .enumerate()
            .map(|(k, (name, v))| (format!("{name} ({})", v.len()), colour(k)))
            .collect();
        legend(&side, &entries)?;
        root.present()?;
        Ok(())
    };
    crate::io::render_atomic(path, draw)
        .with_context(|| format!("{p}: writing the histogram failed"))
}
