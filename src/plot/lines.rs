//! Line plots (training curves, convergence against NFE) and 2-D sampler trajectories.

use super::{colour, legend, linear_chart, log_label, padded_range, register_font, MAX_SERIES};
use crate::data::Points;
use anyhow::{bail, Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;

/// Title, axis titles and scales of a line plot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Axes<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// Logarithmic x axis (points with x ≤ 0 are dropped).
    pub log_x: bool,
    /// Logarithmic y axis (points with y ≤ 0 are dropped).
    pub log_y: bool,
}

/// A named series of (x, y) points.
pub type Series<'a> = (&'a str, Vec<(f64, f64)>);

/// Writes a PNG line plot of named `(x, y)` series with a linear x axis, optionally a
/// logarithmic y axis (points with y ≤ 0 or non-finite values are then dropped).
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    let axes = Axes {
        title,
        x_label,
        y_label,
        log_x: false,
        log_y,
    };
    line_plot_axes(path, &axes, series)
}

/// Writes a PNG line plot (~900×520 per panel, the legend to the right of the data); more than
/// `MAX_SERIES` series become small multiples stacked vertically.
pub fn line_plot_axes(path: &Path, axes: &Axes, series: &[Series]) -> Result<()> {
    let p = path.display();
    let keep = |&(x, y): &(f64, f64)| {
        x.is_finite() && y.is_finite() && (!axes.log_x || x > 0.0) && (!axes.log_y || y > 0.0)
    };
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, s)| s.iter().copied().filter(keep))
        .collect();
    if all.is_empty() {
        bail!(
            "{p}: line plot '{}' has no finite points to draw (log_y = {})",
            axes.title,
            axes.log_y
        );
    }
    // plotters puts no tick labels on a log axis spanning less than a decade: linear there
    let decades = |v: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| {
            (l.min(x), h.max(x))
        });
        hi > 10.0 * lo
    };
    let axes = &Axes {
        log_x: axes.log_x && decades(&mut all.iter().map(|q| q.0)),
        log_y: axes.log_y && decades(&mut all.iter().map(|q| q.1)),
        ..*axes
    };
    let xs = span(all.iter().map(|q| q.0), axes.log_x);
    let ys = span(all.iter().map(|q| q.1), axes.log_y);
    let groups: Vec<&[Series]> = series.chunks(MAX_SERIES).collect();
    register_font()?;
    crate::io::render_atomic(path, |path| {
        let root = BitMapBackend::new(path, (900, 520 * groups.len() as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        for (g, (area, group)) in root
            .split_evenly((groups.len(), 1))
            .iter()
            .zip(&groups)
            .enumerate()
        {
            let (plot, side) = area.split_horizontally(900 - 200);
            let title = if groups.len() > 1 {
                format!("{} ({}/{})", axes.title, g + 1, groups.len())
            } else {
                axes.title.to_string()
            };
            let first = g * MAX_SERIES;
            let panel = Panel {
                title: &title,
                axes,
                series: group,
                first,
                keep: &keep,
            };
            match (axes.log_x, axes.log_y) {
                (false, false) => panel.draw(&plot, xs.clone(), ys.clone())?,
                (true, false) => panel.draw(&plot, xs.clone().log_scale(), ys.clone())?,
                (false, true) => panel.draw(&plot, xs.clone(), ys.clone().log_scale())?,
                (true, true) => {
                    panel.draw(&plot, xs.clone().log_scale(), ys.clone().log_scale())?
                }
            }
            let entries: Vec<(String, RGBAColor)> = group
                .iter()
                .enumerate()
                .map(|(k, (name, _))| (name.to_string(), colour(first + k)))
                .collect();
            legend(&side, &entries)?;
        }
        root.present()?;
        Ok(())
    })
    .with_context(|| format!("{p}: writing the line plot failed"))
}

/// The axis range of the values: padded linearly, or by a factor 1.25 on a log axis.
fn span(values: impl Iterator<Item = f64>, log: bool) -> Range<f64> {
    if log {
        let logs = padded_range(values.map(f64::log10));
        10f64.powf(logs.start)..10f64.powf(logs.end)
    } else {
        padded_range(values)
    }
}

/// One panel of a line plot.
struct Panel<'a, K: Fn(&(f64, f64)) -> bool> {
    title: &'a str,
    axes: &'a Axes<'a>,
    series: &'a [Series<'a>],
    first: usize,
    keep: &'a K,
}

impl<K: Fn(&(f64, f64)) -> bool> Panel<'_, K> {
    /// Draws the panel's series on axes of either linear or logarithmic type.
    fn draw<X, Y>(
        &self,
        area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
        x: X,
        y: Y,
    ) -> Result<()>
    where
        X: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .caption(self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(84)
            .build_cartesian_2d(x, y)?;
        let (xr, yr) = (chart.x_range(), chart.y_range());
        let fmt = |log: bool, r: &Range<f64>| {
            let r = r.clone();
            move |v: &f64| {
                if log {
                    log_label(*v)
                } else {
                    super::linear_label(*v, r.start, r.end)
                }
            }
        };
        let (fx, fy) = (fmt(self.axes.log_x, &xr), fmt(self.axes.log_y, &yr));
        chart
            .configure_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .x_desc(self.axes.x_label)
            .y_desc(self.axes.y_label)
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&fx)
            .y_label_formatter(&fy)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        for (k, (_, pts)) in self.series.iter().enumerate() {
            let c = colour(self.first + k);
            chart.draw_series(LineSeries::new(
                pts.iter().copied().filter(self.keep),
                c.stroke_width(2),
            ))?;
        }
        Ok(())
    }
}

/// Writes a PNG of 2-D sampler trajectories (one faint line per path from the prior draw to the
/// sample, end points marked) and, when `times` is given, a second panel with the time grid tᵢ
/// against the step i on a log axis.
pub fn trajectories(
    path: &Path,
    title: &str,
    paths: &[Vec<(f64, f64)>],
    times: Option<&[f64]>,
) -> Result<()> {
    let p = path.display();
    let all: Vec<f64> = paths
        .iter()
        .flatten()
        .flat_map(|&(x, y)| [x, y])
        .filter(|v| v.is_finite())
        .collect();
    if all.is_empty() {
        bail!("{p}: no finite trajectory points to draw");
    }
    let ends = Points::new(all.len() / 2, 2, all)?;
    let (xs, ys) = (
        super::coord_range(&[&ends], 0),
        super::coord_range(&[&ends], 1),
    );
    let grid: Vec<(f64, f64)> = times
        .unwrap_or(&[])
        .iter()
        .enumerate()
        .map(|(i, &t)| (i as f64, t))
        .filter(|&(_, t)| t > 0.0 && t.is_finite())
        .collect();
    register_font()?;
    let draw = |path: &Path| -> Result<()> {
        let width = if grid.is_empty() { 640 } else { 1100 };
        let root = BitMapBackend::new(path, (width, 640)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(640);
        let mut chart = linear_chart(&left, title, ("x₁", "x₂"), xs.clone(), ys.clone())?;
        for tr in paths {
            chart.draw_series(LineSeries::new(tr.iter().copied(), colour(0).mix(0.25)))?;
        }
        chart.draw_series(
            paths
                .iter()
                .filter_map(|tr| tr.last())
                .map(|&(x, y)| Circle::new((x, y), 2, colour(1).mix(0.8).filled())),
        )?;
        if !grid.is_empty() {
            let steps = grid.len() as f64;
            let ts = span(grid.iter().map(|q| q.1), true);
            let mut c = ChartBuilder::on(&right)
                .caption("time grid", ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(46)
                .y_label_area_size(70)
                .build_cartesian_2d(-0.5..steps - 0.5, ts.log_scale())?;
            c.configure_mesh()
                .light_line_style(RGBColor(235, 235, 235))
                .x_desc("step i")
                .y_desc("tᵢ")
                .y_label_formatter(&|v| log_label(*v))
                .x_label_formatter(&|v| format!("{v:.0}"))
                .label_style(("sans-serif", 14))
                .draw()?;
            c.draw_series(LineSeries::new(grid.iter().copied(), colour(0)))?;
            c.draw_series(grid.iter().map(|&q| Circle::new(q, 3, colour(0).filled())))?;
        }
        root.present()?;
        Ok(())
    };
    crate::io::render_atomic(path, draw)
        .with_context(|| format!("{p}: writing the trajectory plot failed"))
}
