//! Values over a regular 2-D grid: heat maps with colour bars (log-densities, score errors, 2-D
//! histograms) and vector fields drawn as equal-length arrows coloured by magnitude over a shaded
//! density, so that both the direction and the size of a score read at a glance.

use super::{linear_chart, linear_label, register_font};
use crate::data::Points;
use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use std::ops::Range;
use std::path::Path;

/// A regular grid of `nx` × `ny` cells over `x` × `y`; values are listed row by row from the
/// bottom (index j·nx + i for column i, row j), at the cell centres.
#[derive(Clone, Debug)]
pub struct Grid2 {
    pub x: Range<f64>,
    pub y: Range<f64>,
    pub nx: usize,
    pub ny: usize,
}

impl Grid2 {
    /// A grid, checked: finite ranges with min < max and at least one cell per axis.
    pub fn new(x: Range<f64>, y: Range<f64>, nx: usize, ny: usize) -> Result<Self> {
        let ok = |r: &Range<f64>| r.start.is_finite() && r.end.is_finite() && r.start < r.end;
        if !(ok(&x) && ok(&y) && nx > 0 && ny > 0) {
            bail!("a grid needs finite ranges with min < max and at least one cell per axis (got {x:?} × {y:?}, {nx} × {ny})");
        }
        Ok(Grid2 { x, y, nx, ny })
    }

    /// Cell widths (Δx, Δy).
    pub fn cell(&self) -> (f64, f64) {
        (
            (self.x.end - self.x.start) / self.nx as f64,
            (self.y.end - self.y.start) / self.ny as f64,
        )
    }

    /// The cell centres as 2-D points, in value order.
    pub fn points(&self) -> Points {
        let (dx, dy) = self.cell();
        let data = (0..self.ny)
            .flat_map(|j| {
                (0..self.nx).flat_map(move |i| {
                    [
                        self.x.start + (i as f64 + 0.5) * dx,
                        self.y.start + (j as f64 + 0.5) * dy,
                    ]
                })
            })
            .collect();
        Points {
            n: self.nx * self.ny,
            d: 2,
            data,
            event: Vec::new(),
        }
    }

    /// The share of the 2-D points falling in each cell (points outside the grid count in no cell).
    pub fn histogram(&self, pts: &Points) -> Vec<f64> {
        let (dx, dy) = self.cell();
        let mut h = vec![0.0; self.nx * self.ny];
        for r in (0..pts.n).map(|i| pts.row(i)) {
            let (i, j) = ((r[0] - self.x.start) / dx, (r[1] - self.y.start) / dy);
            if i >= 0.0 && j >= 0.0 && (i as usize) < self.nx && (j as usize) < self.ny {
                h[j as usize * self.nx + i as usize] += 1.0 / pts.n.max(1) as f64;
            }
        }
        h
    }
}

/// One heat-map panel: a value per grid cell, the colour bar's label, and its range (default:
/// the finite min/max of the values).
pub struct HeatPanel<'a> {
    pub title: &'a str,
    pub values: &'a [f64],
    pub label: &'a str,
    pub range: Option<(f64, f64)>,
}

/// The finite (min, max) of the values, widened when they are all equal.
fn finite_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    match (lo.is_finite(), hi > lo) {
        (false, _) => (0.0, 1.0),
        (true, true) => (lo, hi),
        (true, false) => (lo - 0.5, hi + 0.5),
    }
}

/// The viridis colour of `v` on `[lo, hi]` (clamped).
fn viridis(v: f64, lo: f64, hi: f64) -> RGBColor {
    ViridisRGB::get_color_normalized(v.clamp(lo, hi) as f32, lo as f32, hi as f32)
}

/// Draws a vertical colour bar for `[lo, hi]` with its label in `area`.
fn colour_bar(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    label: &str,
    (lo, hi): (f64, f64),
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(50)
        .margin_right(8)
        .y_label_area_size(0)
        .right_y_label_area_size(62)
        .build_cartesian_2d(0.0..1.0, lo..hi)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .disable_x_axis()
        .y_desc(label)
        .y_labels(6)
        .y_label_formatter(&|v| linear_label(*v, lo, hi))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    let steps = 128;
    chart.draw_series((0..steps).map(|k| {
        let (a, b) = (
            lo + (hi - lo) * k as f64 / steps as f64,
            lo + (hi - lo) * (k + 1) as f64 / steps as f64,
        );
        Rectangle::new(
            [(0.0, a), (1.0, b)],
            viridis(0.5 * (a + b), lo, hi).filled(),
        )
    }))?;
    Ok(())
}

/// Writes a PNG of side-by-side heat maps over one grid (~560×480 per panel, each with its colour
/// bar); non-finite values (e.g. log 0) are drawn light grey.
pub fn heatmaps(path: &Path, grid: &Grid2, panels: &[HeatPanel]) -> Result<()> {
    let p = path.display();
    if panels.is_empty() {
        bail!("{p}: a heat-map figure needs at least one panel");
    }
    for h in panels {
        check_heat(&p.to_string(), grid, h)?;
    }
    register_font()?;
    let draw = |path: &Path| -> Result<()> {
        let root = BitMapBackend::new(path, (560 * panels.len() as u32, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        for (area, h) in root.split_evenly((1, panels.len())).iter().zip(panels) {
            draw_heat(area, grid, h)?;
        }
        root.present()?;
        Ok(())
    };
    crate::io::render_atomic(path, draw)
        .with_context(|| format!("{p}: writing the heat map failed"))
}

/// Draws one heat-map panel with its colour bar on `area` (560 px wide).
fn draw_heat(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    grid: &Grid2,
    h: &HeatPanel,
) -> Result<()> {
    let (dx, dy) = grid.cell();
    let (plot, bar) = area.split_horizontally(560 - 110);
    let (lo, hi) = h
        .range
        .unwrap_or_else(|| finite_range(h.values.iter().copied()));
    let mut chart = linear_chart(&plot, h.title, ("x₁", "x₂"), grid.x.clone(), grid.y.clone())?;
    chart.draw_series(h.values.iter().enumerate().map(|(k, &v)| {
        let (i, j) = ((k % grid.nx) as f64, (k / grid.nx) as f64);
        let (x0, y0) = (grid.x.start + i * dx, grid.y.start + j * dy);
        let c = if v.is_finite() {
            viridis(v, lo, hi)
        } else {
            RGBColor(225, 225, 225)
        };
        Rectangle::new([(x0, y0), (x0 + dx, y0 + dy)], c.filled())
    }))?;
    colour_bar(&bar, h.label, (lo, hi))
}

/// Checks that a heat panel has one value per grid cell.
fn check_heat(p: &str, grid: &Grid2, h: &HeatPanel) -> Result<()> {
    if h.values.len() != grid.nx * grid.ny {
        bail!(
            "{p}: panel '{}' has {} values for a {} × {} grid",
            h.title,
            h.values.len(),
            grid.nx,
            grid.ny
        );
    }
    Ok(())
}

/// One vector-field panel: vectors at points, optionally over a shaded log-density on a grid.
pub struct FieldPanel<'a> {
    pub title: &'a str,
    pub at: &'a Points,
    pub vectors: &'a Points,
    pub log_density: Option<(&'a Grid2, &'a [f64])>,
}

/// Writes a PNG of side-by-side 2-D vector fields (~480×480 per panel): an arrow of one length
/// along each vector, coloured by log₁₀ of its norm (one colour bar for all panels), over the
/// panel's density shaded in greys (darker = more probable); then, when given, a heat-map panel
/// (e.g. the error against the exact field).
pub fn vector_fields(
    path: &Path,
    panels: &[FieldPanel],
    extra: Option<(&Grid2, &HeatPanel)>,
) -> Result<()> {
    let p = path.display();
    if panels.is_empty() {
        bail!("{p}: a vector-field figure needs at least one panel");
    }
    for f in panels {
        if f.at.d != 2 || f.vectors.d != 2 || f.at.n != f.vectors.n || f.at.n == 0 {
            bail!(
                "{p}: panel '{}' needs 2-D points and as many 2-D vectors",
                f.title
            );
        }
        if let Some((g, v)) = f.log_density {
            if v.len() != g.nx * g.ny {
                bail!(
                    "{p}: panel '{}': the density has {} values for a {} × {} grid",
                    f.title,
                    v.len(),
                    g.nx,
                    g.ny
                );
            }
        }
    }
    if let Some((g, h)) = extra {
        check_heat(&p.to_string(), g, h)?;
    }
    let norm = |v: &[f64]| v[0].hypot(v[1]);
    let logs = panels
        .iter()
        .flat_map(|f| (0..f.vectors.n).map(|i| norm(f.vectors.row(i))))
        .filter(|n| *n > 0.0)
        .map(f64::log10);
    let (lo, hi) = finite_range(logs);
    let sets: Vec<&Points> = panels.iter().map(|f| f.at).collect();
    let (xs, ys) = (super::coord_range(&sets, 0), super::coord_range(&sets, 1));
    // arrows 70% of the spacing of a square grid of as many points
    let n_max = panels.iter().map(|f| f.at.n).max().unwrap_or(1) as f64;
    let len = 0.7 * ((xs.end - xs.start) * (ys.end - ys.start) / n_max).sqrt();
    register_font()?;
    let draw = |path: &Path| -> Result<()> {
        let w = 480 * panels.len() as u32;
        let more = if extra.is_some() { 560 } else { 0 };
        let root = BitMapBackend::new(path, (w + 110 + more, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let (plots, rest) = root.split_horizontally(w);
        let (bar, right) = rest.split_horizontally(110);
        if let Some((g, h)) = extra {
            draw_heat(&right, g, h)?;
        }
        for (area, f) in plots.split_evenly((1, panels.len())).iter().zip(panels) {
            let mut chart = linear_chart(area, f.title, ("x₁", "x₂"), xs.clone(), ys.clone())?;
            if let Some((g, v)) = f.log_density {
                let top = v
                    .iter()
                    .copied()
                    .filter(|v| v.is_finite())
                    .fold(f64::NEG_INFINITY, f64::max);
                let (dx, dy) = g.cell();
                chart.draw_series(v.iter().enumerate().filter(|(_, v)| v.is_finite()).map(
                    |(k, &v)| {
                        let (x0, y0) = (
                            g.x.start + (k % g.nx) as f64 * dx,
                            g.y.start + (k / g.nx) as f64 * dy,
                        );
                        let shade = (255.0 - 150.0 * (v - top).exp()) as u8;
                        Rectangle::new(
                            [(x0, y0), (x0 + dx, y0 + dy)],
                            RGBColor(shade, shade, shade).filled(),
                        )
                    },
                ))?;
            }
            for i in 0..f.at.n {
                let (a, v) = (f.at.row(i), f.vectors.row(i));
                let m = norm(v);
                if !(m.is_finite() && m > 0.0) {
                    continue;
                }
                let (ux, uy) = (v[0] / m * len, v[1] / m * len);
                let (tail, head) = (
                    (a[0] - 0.5 * ux, a[1] - 0.5 * uy),
                    (a[0] + 0.5 * ux, a[1] + 0.5 * uy),
                );
                let c = viridis(m.log10(), lo, hi).stroke_width(2);
                // the head: two strokes at ±25° back from the tip, a third of the length
                let (s, co) = (0.42f64.sin(), 0.42f64.cos());
                let barb = |sign: f64| {
                    let (bx, by) = (-ux / 3.0, -uy / 3.0);
                    (
                        head.0 + co * bx - sign * s * by,
                        head.1 + sign * s * bx + co * by,
                    )
                };
                chart.draw_series(LineSeries::new([tail, head], c))?;
                chart.draw_series(LineSeries::new([barb(1.0), head, barb(-1.0)], c))?;
            }
        }
        colour_bar(&bar, "log₁₀ ‖vector‖", (lo, hi))?;
        root.present()?;
        Ok(())
    };
    crate::io::render_atomic(path, draw)
        .with_context(|| format!("{p}: writing the vector-field plot failed"))
}
