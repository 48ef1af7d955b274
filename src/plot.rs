//! PNG plots: side-by-side 2-D scatter panels and line plots (loss / convergence curves).

use crate::data::Points;
use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/DejaVuSans.ttf"
));

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

/// Min/max of the finite coordinates `j` over all panels, widened by a 5% margin.
fn auto_range(panels: &[(&str, &Points)], j: usize) -> (f64, f64) {
    let vals = panels
        .iter()
        .flat_map(|(_, p)| p.data.iter().skip(j).step_by(2))
        .filter(|v| v.is_finite());
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
        (l.min(v), h.max(v))
    });
    if lo > hi {
        return (-1.0, 1.0);
    }
    let m = if hi > lo { 0.05 * (hi - lo) } else { 1.0 };
    (lo - m, hi + m)
}

/// Writes a PNG of side-by-side scatter plots of 2-D point sets, one ~480×480 panel per
/// `(title, points)`, all sharing the axis range `[xmin, xmax, ymin, ymax]` (default: the
/// min/max over all panels plus a 5% margin).
pub fn scatter_panels(
    path: &Path,
    panels: &[(&str, &Points)],
    range: Option<[f64; 4]>,
) -> Result<()> {
    let p = path.display();
    if panels.is_empty() {
        bail!("{p}: scatter_panels needs at least one panel");
    }
    for (title, pts) in panels {
        if pts.d != 2 {
            bail!(
                "{p}: panel '{title}' has {}-D points; scatter plots need d = 2",
                pts.d
            );
        }
    }
    let [x0, x1, y0, y1] = match range {
        Some(r) => {
            if !(r.iter().all(|v| v.is_finite()) && r[0] < r[1] && r[2] < r[3]) {
                bail!("{p}: invalid range {r:?}; expected finite [xmin, xmax, ymin, ymax] with min < max");
            }
            r
        }
        None => {
            let ((x0, x1), (y0, y1)) = (auto_range(panels, 0), auto_range(panels, 1));
            [x0, x1, y0, y1]
        }
    };
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
            let mut chart = ChartBuilder::on(area)
                .caption(*title, ("sans-serif", 24))
                .margin(12)
                .x_label_area_size(28)
                .y_label_area_size(40)
                .build_cartesian_2d(x0..x1, y0..y1)?;
            chart.configure_mesh().light_line_style(WHITE).draw()?;
            let colour = Palette99::pick(k).mix(0.35).filled();
            chart.draw_series(
                (0..pts.n)
                    .map(|i| pts.row(i))
                    .filter(|r| r[0] >= x0 && r[0] <= x1 && r[1] >= y0 && r[1] <= y1)
                    .map(|r| Circle::new((r[0], r[1]), 2, colour)),
            )?;
        }
        root.present()?;
        Ok(())
    };
    crate::io::render_atomic(path, draw)
        .with_context(|| format!("{p}: writing the scatter plot failed"))
}

/// Writes a PNG line plot (~800×500) of named `(x, y)` series with a legend, optionally with a
/// log-scale y axis (points with y ≤ 0 or non-finite values are then dropped).
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    log_y: bool,
) -> Result<()> {
    let p = path.display();
    let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0);
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, s)| s.iter().copied().filter(keep))
        .collect();
    if all.is_empty() {
        bail!("{p}: line_plot '{title}' has no finite points to draw (log_y = {log_y})");
    }
    let lim = |f: fn(&(f64, f64)) -> f64| {
        let lo = all.iter().map(f).fold(f64::INFINITY, f64::min);
        let hi = all.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
        if hi > lo {
            (lo, hi)
        } else {
            (
                lo - 0.5 * lo.abs().max(1e-12),
                hi + 0.5 * hi.abs().max(1e-12),
            )
        }
    };
    let (x0, x1) = lim(|q| q.0);
    let (y0, y1) = lim(|q| q.1);
    register_font()?;
    // plotters puts no tick labels on a log axis spanning less than a decade: use a linear one there
    let res = crate::io::render_atomic(path, |path| {
        if log_y && y1 > 10.0 * y0 {
            draw_lines(
                path,
                title,
                x_label,
                y_label,
                series,
                keep,
                x0..x1,
                (y0 / 1.2..y1 * 1.2).log_scale(),
            )
        } else {
            let m = 0.05 * (y1 - y0);
            draw_lines(
                path,
                title,
                x_label,
                y_label,
                series,
                keep,
                x0..x1,
                (y0 - m)..(y1 + m),
            )
        }
    });
    res.with_context(|| format!("{p}: writing the line plot failed"))
}

/// Draws the line plot on a y axis of either linear or logarithmic type.
#[allow(clippy::too_many_arguments)]
fn draw_lines<Y>(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    keep: impl Fn(&(f64, f64)) -> bool,
    x_range: std::ops::Range<f64>,
    y_spec: Y,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_spec)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .y_labels(10)
        .y_label_formatter(&|v| format!("{v:.3}"))
        .label_style(("sans-serif", 15))
        .draw()?;
    for (k, (name, pts)) in series.iter().enumerate() {
        let colour = Palette99::pick(k).to_rgba();
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied().filter(&keep),
                colour.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes a PNG (~640×640) of 2-D sampler trajectories: one faint line per path from its start
/// (the prior draw) to its end (the sample), with the end points marked.
pub fn trajectories(path: &Path, title: &str, paths: &[Vec<(f64, f64)>]) -> Result<()> {
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
    let (x0, x1) = auto_range(&[("", &ends)], 0);
    let (y0, y1) = auto_range(&[("", &ends)], 1);
    register_font()?;
    let draw = |path: &Path| -> Result<()> {
        let root = BitMapBackend::new(path, (640, 640)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(40)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart.configure_mesh().light_line_style(WHITE).draw()?;
        for tr in paths {
            chart.draw_series(LineSeries::new(tr.iter().copied(), BLUE.mix(0.25)))?;
        }
        chart.draw_series(
            paths
                .iter()
                .filter_map(|tr| tr.last())
                .map(|&(x, y)| Circle::new((x, y), 2, RED.mix(0.8).filled())),
        )?;
        root.present()?;
        Ok(())
    };
    crate::io::render_atomic(path, draw)
        .with_context(|| format!("{p}: writing the trajectory plot failed"))
}

/// Writes a PNG of side-by-side 2-D vector fields (~480×480 per panel): at each point an arrow
/// segment along its vector, all scaled by one common factor so that the 90th-percentile length
/// over all panels spans `max_len` data units; longer arrows are clipped to that length.
pub fn vector_fields(path: &Path, panels: &[(&str, &Points, &Points)], max_len: f64) -> Result<()> {
    let p = path.display();
    if panels.is_empty() {
        bail!("{p}: vector_fields needs at least one panel");
    }
    for (title, at, v) in panels {
        if at.d != 2 || v.d != 2 || at.n != v.n {
            bail!("{p}: panel '{title}' needs 2-D points and as many 2-D vectors");
        }
    }
    let mut lens: Vec<f64> = panels
        .iter()
        .flat_map(|(_, _, v)| (0..v.n).map(|i| v.row(i)[0].hypot(v.row(i)[1])))
        .filter(|l| l.is_finite())
        .collect();
    lens.sort_by(f64::total_cmp);
    let reference = lens.get(lens.len() * 9 / 10).copied().unwrap_or(0.0);
    let k = if reference > 0.0 {
        max_len / reference
    } else {
        0.0
    };
    let ((x0, x1), (y0, y1)) = {
        let at: Vec<(&str, &Points)> = panels.iter().map(|(t, a, _)| (*t, *a)).collect();
        (auto_range(&at, 0), auto_range(&at, 1))
    };
    register_font()?;
    let draw = |path: &Path| -> Result<()> {
        let root = BitMapBackend::new(path, (480 * panels.len() as u32, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        for (area, (title, at, v)) in root.split_evenly((1, panels.len())).iter().zip(panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(*title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(28)
                .y_label_area_size(40)
                .build_cartesian_2d(x0..x1, y0..y1)?;
            chart.configure_mesh().light_line_style(WHITE).draw()?;
            for i in 0..at.n {
                let (a, d) = (at.row(i), v.row(i));
                if d.iter().all(|c| c.is_finite()) {
                    let clip = (max_len / (k * d[0].hypot(d[1])).max(1e-300)).min(1.0);
                    let end = (a[0] + clip * k * d[0], a[1] + clip * k * d[1]);
                    chart
                        .draw_series(LineSeries::new([(a[0], a[1]), end], BLUE.stroke_width(1)))?;
                    chart.draw_series([Circle::new(end, 1, BLUE.filled())])?;
                }
            }
        }
        root.present()?;
        Ok(())
    };
    crate::io::render_atomic(path, draw)
        .with_context(|| format!("{p}: writing the vector-field plot failed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

    #[test]
    fn scatter_and_line_png() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let a = crate::data::toy("checkerboard", 3000, &mut rng).unwrap();
        let b = crate::data::toy("moons", 3000, &mut rng).unwrap();
        let out = dir.path().join("s.png");
        scatter_panels(&out, &[("data", &a), ("samples", &b)], None).unwrap();
        assert!(std::fs::read(&out).unwrap().starts_with(PNG_MAGIC));
        let out2 = dir.path().join("r.png");
        scatter_panels(&out2, &[("data", &a)], Some([-5.0, 5.0, -5.0, 5.0])).unwrap();
        assert!(std::fs::read(&out2).unwrap().starts_with(PNG_MAGIC));
        assert!(scatter_panels(&out2, &[("data", &a)], Some([5.0, -5.0, -5.0, 5.0])).is_err());

        let c = Points::new(2, 3, vec![0.0; 6]).unwrap();
        let e = scatter_panels(&dir.path().join("c.png"), &[("3d", &c)], None).unwrap_err();
        assert!(e.to_string().contains("d = 2"), "{e}");

        let loss: Vec<(f64, f64)> = (1..200).map(|i| (i as f64, 10.0 / i as f64)).collect();
        let ema: Vec<(f64, f64)> = (1..200)
            .map(|i| (i as f64, 5.0 / i as f64 + 0.01))
            .collect();
        for log_y in [false, true] {
            let out3 = dir.path().join(format!("l{log_y}.png"));
            let s = [("loss", loss.clone()), ("ema", ema.clone())];
            line_plot(&out3, "Training loss", "step", "loss", &s, log_y).unwrap();
            assert!(std::fs::read(&out3).unwrap().starts_with(PNG_MAGIC));
        }
        let bad = [("neg", vec![(0.0, -1.0)])];
        assert!(line_plot(&dir.path().join("x.png"), "t", "x", "y", &bad, true).is_err());
        if let Ok(keep) = std::env::var("TWEEDIE_KEEP_PLOTS") {
            for f in ["s.png", "ltrue.png", "lfalse.png"] {
                std::fs::copy(dir.path().join(f), Path::new(&keep).join(f)).unwrap();
            }
        }
    }
}
