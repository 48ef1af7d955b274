//! PNG figures, drawn with plotters on the bundled DejaVu Sans: scatter and 2-D histogram panels
//! with pairwise marginals (`scatter`), line plots and sampler trajectories (`lines`), heat maps
//! and score fields over a grid (`field`), histograms (`hist`) and image grids (`images`).
//!
//! Every figure labels its axes and ticks them for their range (`ticks`), keeps legends outside
//! the data, and is written atomically.

mod field;
mod hist;
mod images;
mod lines;
mod scatter;
mod ticks;

pub use field::{heatmaps, vector_fields, FieldPanel, Grid2, HeatPanel};
pub use hist::{histograms, Histogram};
pub use images::image_grid;
pub use lines::{line_plot, line_plot_axes, trajectories, Axes, Series};
pub use scatter::{density_panels, pairwise, scatter_panels};
pub use ticks::{linear_label, log_label};

use crate::data::Points;
use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::ops::Range;
use std::sync::OnceLock;

const FONT: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/DejaVuSans.ttf"
));

/// Series drawn in one panel at most; more become small multiples.
pub const MAX_SERIES: usize = 8;

/// Registers the bundled DejaVu Sans as plotters' "sans-serif" font (once per process).
fn register_font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "assets/DejaVuSans.ttf: bundled font could not be parsed"
        ))
    }
}

/// Min/max of the finite values, widened by a 5% margin (±1 around a single value).
fn padded_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if lo > hi {
        return -1.0..1.0;
    }
    let m = if hi > lo { 0.05 * (hi - lo) } else { 1.0 };
    lo - m..hi + m
}

/// The padded range of coordinate `j` over all point sets.
fn coord_range(sets: &[&Points], j: usize) -> Range<f64> {
    padded_range(
        sets.iter()
            .flat_map(|p| (0..p.n).map(move |i| p.data[i * p.d + j])),
    )
}

/// Width in pixels of the y-label area: the widest tick label at 15 px plus the axis title.
fn y_label_width(range: &Range<f64>) -> u32 {
    let chars = [range.start, range.end, 0.5 * (range.start + range.end)]
        .iter()
        .map(|&v| linear_label(v, range.start, range.end).chars().count())
        .max()
        .unwrap_or(4);
    (chars as u32) * 9 + 38
}

/// A chart with linear axes on `area`: title, axis titles, tick labels formatted for the range,
/// light grid.
fn linear_chart<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    title: &str,
    (x_label, y_label): (&str, &str),
    x: Range<f64>,
    y: Range<f64>,
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let (x0, x1, y0, y1) = (x.start, x.end, y.start, y.end);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(if x_label.is_empty() { 28 } else { 46 })
        .y_label_area_size(y_label_width(&y) - if y_label.is_empty() { 24 } else { 0 })
        .build_cartesian_2d(x.clone(), y.clone())?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(7)
        .y_labels(7)
        .x_label_formatter(&|v| linear_label(*v, x0, x1))
        .y_label_formatter(&|v| linear_label(*v, y0, y1))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    Ok(chart)
}

/// Draws a legend (a coloured swatch and a name per entry) in its own area, outside the data.
fn legend(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    entries: &[(String, RGBAColor)],
) -> Result<()> {
    let style = ("sans-serif", 14).into_font();
    for (k, (name, colour)) in entries.iter().enumerate() {
        let y = 50 + 22 * k as i32;
        area.draw(&Rectangle::new([(8, y - 5), (28, y + 5)], colour.filled()))?;
        area.draw(&Text::new(name.clone(), (34, y - 8), style.clone()))?;
    }
    Ok(())
}

/// The k-th series colour (a colour-blind-safe qualitative palette, Okabe–Ito).
fn colour(k: usize) -> RGBAColor {
    const OKABE_ITO: [(u8, u8, u8); 8] = [
        (0, 114, 178),
        (213, 94, 0),
        (0, 158, 115),
        (204, 121, 167),
        (230, 159, 0),
        (86, 180, 233),
        (0, 0, 0),
        (240, 228, 66),
    ];
    let (r, g, b) = OKABE_ITO[k % OKABE_ITO.len()];
    RGBColor(r, g, b).to_rgba()
}

#[cfg(test)]
mod tests;
