//! Point sets: side-by-side scatter panels, 2-D histograms, and pairwise marginals of chosen
//! coordinates when d > 2.

use super::{colour, coord_range, legend, linear_chart, register_font};
use crate::data::Points;
use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;

/// The shared `[xmin, xmax, ymin, ymax]`, checked, or the padded range over all panels.
fn panel_ranges(
    p: &str,
    panels: &[(&str, &Points)],
    range: Option<[f64; 4]>,
) -> Result<(Range<f64>, Range<f64>)> {
    if panels.is_empty() {
        bail!("{p}: a scatter figure needs at least one panel");
    }
    for (title, pts) in panels {
        if pts.d != 2 {
            bail!(
                "{p}: panel '{title}' has {}-D points; scatter plots need d = 2 (use pairwise for d > 2)",
                pts.d
            );
        }
    }
    match range {
        Some(r) => {
            if !(r.iter().all(|v| v.is_finite()) && r[0] < r[1] && r[2] < r[3]) {
                bail!("{p}: invalid range {r:?}; expected finite [xmin, xmax, ymin, ymax] with min < max");
            }
            Ok((r[0]..r[1], r[2]..r[3]))
        }
        None => {
            let sets: Vec<&Points> = panels.iter().map(|(_, p)| *p).collect();
            Ok((coord_range(&sets, 0), coord_range(&sets, 1)))
        }
    }
}

/// Writes a PNG of side-by-side scatter plots of 2-D point sets, one ~480×480 panel per
/// `(title, points)`, all on one axis range `[xmin, xmax, ymin, ymax]` (default: the padded
/// range over all panels).
pub fn scatter_panels(
    path: &Path,
    panels: &[(&str, &Points)],
    range: Option<[f64; 4]>,
) -> Result<()> {
    let p = path.display().to_string();
    let (xs, ys) = panel_ranges(&p, panels, range)?;
    register_font()?;
    let draw = |path: &Path| -> Result<()> {
        let root = BitMapBackend::new(path, (480 * panels.len() as u32, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        for (k, (area, (title, pts))) in root
            .split_evenly((1, panels.len()))
            .iter()
            .zip(panels)
            .enumerate()
        {
            let mut chart = linear_chart(area, title, ("x₁", "x₂"), xs.clone(), ys.clone())?;
            // fainter dots for larger sets, so dense regions stay readable
            let alpha = (60.0 / (pts.n as f64).sqrt()).clamp(0.08, 0.6);
            let c = colour(k).mix(alpha).filled();
            chart.draw_series(
                (0..pts.n)
                    .map(|i| pts.row(i))
                    .filter(|r| xs.contains(&r[0]) && ys.contains(&r[1]))
                    .map(|r| Circle::new((r[0], r[1]), 2, c)),
            )?;
        }
        root.present()?;
        Ok(())
    };
    crate::io::render_atomic(path, draw)
        .with_context(|| format!("{p}: writing the scatter plot failed"))
}

/// Writes a PNG of side-by-side 2-D histograms (`bins` × `bins` counts, viridis, one colour bar per
/// panel as a share of the points per cell) of 2-D point sets on one axis range: the view for
/// large sample sets, where a scatter saturates.
pub fn density_panels(
    path: &Path,
    panels: &[(&str, &Points)],
    range: Option<[f64; 4]>,
    bins: usize,
) -> Result<()> {
    let p = path.display().to_string();
    let (xs, ys) = panel_ranges(&p, panels, range)?;
    if bins < 2 {
        bail!("{p}: a 2-D histogram needs at least 2 bins per axis");
    }
    let grid = super::Grid2::new(xs, ys, bins, bins)?;
    let counts: Vec<Vec<f64>> = panels.iter().map(|(_, pts)| grid.histogram(pts)).collect();
    let heat: Vec<super::HeatPanel> = panels
        .iter()
        .zip(&counts)
        .map(|((title, _), c)| super::HeatPanel {
            title,
            values: c,
            label: "share of points per cell",
            range: None,
        })
        .collect();
    super::heatmaps(path, &grid, &heat)
}

/// Writes a PNG of the pairwise marginals of coordinates `coords` (a lower-triangular grid of
/// scatter plots, one per pair i < j), every set overlaid in its own colour with a legend.
pub fn pairwise(path: &Path, sets: &[(&str, &Points)], coords: &[usize]) -> Result<()> {
    let p = path.display();
    if coords.len() < 2 {
        bail!("{p}: pairwise marginals need at least two coordinates");
    }
    if sets.is_empty() || sets.len() > super::MAX_SERIES {
        bail!(
            "{p}: pairwise marginals overlay 1 to {} point sets, got {}",
            super::MAX_SERIES,
            sets.len()
        );
    }
    for (name, pts) in sets {
        if let Some(&j) = coords.iter().find(|&&j| j >= pts.d) {
            bail!(
                "{p}: coordinate {j} is out of range for '{name}' of dimension {}",
                pts.d
            );
        }
    }
    let k = coords.len() - 1;
    let refs: Vec<&Points> = sets.iter().map(|(_, s)| *s).collect();
    let ranges: Vec<Range<f64>> = coords.iter().map(|&j| coord_range(&refs, j)).collect();
    register_font()?;
    let cell = 300u32;
    let draw = |path: &Path| -> Result<()> {
        let root =
            BitMapBackend::new(path, (cell * k as u32 + 180, cell * k as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        let (grid, side) = root.split_horizontally(cell * k as u32);
        let areas = grid.split_evenly((k, k));
        for row in 0..k {
            for col in 0..=row {
                let (a, b) = (col, row + 1);
                let area = &areas[row * k + col];
                let labels = (
                    if row == k - 1 { "x" } else { "" },
                    if col == 0 { "y" } else { "" },
                );
                let x_name = format!("x{}", coords[a]);
                let y_name = format!("x{}", coords[b]);
                let mut chart = linear_chart(
                    area,
                    &format!("{y_name} vs {x_name}"),
                    (
                        if labels.0.is_empty() { "" } else { &x_name },
                        if labels.1.is_empty() { "" } else { &y_name },
                    ),
                    ranges[a].clone(),
                    ranges[b].clone(),
                )?;
                for (s, (_, pts)) in sets.iter().enumerate() {
                    let alpha = (40.0 / (pts.n as f64).sqrt()).clamp(0.05, 0.5);
                    let c = colour(s).mix(alpha).filled();
                    chart.draw_series((0..pts.n).map(|i| {
                        let r = pts.row(i);
                        Circle::new((r[coords[a]], r[coords[b]]), 1, c)
                    }))?;
                }
            }
        }
        let entries: Vec<(String, RGBAColor)> = sets
            .iter()
            .enumerate()
            .map(|(s, (name, _))| (name.to_string(), colour(s)))
            .collect();
        legend(&side, &entries)?;
        root.present()?;
        Ok(())
    };
    crate::io::render_atomic(path, draw)
        .with_context(|| format!("{p}: writing the pairwise marginals failed"))
}
