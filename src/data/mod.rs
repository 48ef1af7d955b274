//! Point sets with an event shape, the 2-D toy data sets (`toys`) and file formats: `.npy`
//! (`npy`, any event shape) and `.csv` (`csv`, rows); 8-bit images (`images`) from IDX files
//! (`idx`), the shipped MNIST digits (`mnist`) or a folder of PNGs (`pngs`).

pub mod csv;
pub mod idx;
pub mod images;
pub mod mnist;
pub mod npy;
pub mod pngs;
pub mod toys;

use anyhow::{bail, Result};
use std::path::Path;

pub use self::csv::{parse_csv, read_csv, write_csv};
pub use images::Images;
pub use npy::{
    parse_labels, parse_npy, read_labels, read_npy, write_labels, write_npy, write_npy_f32_1d,
};
pub use toys::{gmm40_means, toy, toy_log_prob, GMM40_STD, TOY_NAMES};

/// A row-major `n × d` matrix of `f64` points (one point per row).
#[derive(Debug, Clone, PartialEq)]
pub struct Points {
    /// Number of points (rows).
    pub n: usize,
    /// Dimension of each point (columns).
    pub d: usize,
    /// Row-major data, length `n * d`.
    pub data: Vec<f64>,
    /// The shape of one point ([N, k] for particles, [c, h, w] for images); empty: \[d\].
    pub event: Vec<usize>,
}

impl Points {
    /// Wraps row-major `data`, checking that its length is `n * d`.
    pub fn new(n: usize, d: usize, data: Vec<f64>) -> Result<Self> {
        if data.len() != n * d {
            bail!(
                "Points::new: data has {} values but n × d = {n} × {d} = {}; pass matching sizes",
                data.len(),
                n * d
            );
        }
        Ok(Self {
            n,
            d,
            data,
            event: Vec::new(),
        })
    }

    /// The distances |x_i − x_j| over the unordered pairs i < j of particles of each point, read
    /// as particles of `k` coordinates (row after row; k must divide d).
    pub fn interatomic_distances(&self, k: usize) -> Vec<f64> {
        let m = self.d.checked_div(k).unwrap_or(0);
        let mut out = Vec::with_capacity(self.n * m * m.saturating_sub(1) / 2);
        for r in (0..self.n).map(|i| self.row(i)) {
            for i in 0..m {
                for j in i + 1..m {
                    let d2: f64 = (0..k).map(|c| (r[i * k + c] - r[j * k + c]).powi(2)).sum();
                    out.push(d2.sqrt());
                }
            }
        }
        out
    }

    /// The same points with each one shaped `event` (whose sizes multiply to d; empty: \[d\]).
    pub fn with_event(mut self, event: Vec<usize>) -> Result<Self> {
        if !event.is_empty() && event.iter().product::<usize>() != self.d {
            bail!(
                "an event of shape {event:?} does not hold the {} values of a point",
                self.d
            );
        }
        self.event = if event.len() == 1 { Vec::new() } else { event };
        Ok(self)
    }

    /// The shape of one point: `event`, or \[d\] when none was given.
    pub fn event_shape(&self) -> Vec<usize> {
        if self.event.is_empty() {
            vec![self.d]
        } else {
            self.event.clone()
        }
    }

    /// The `i`-th point as a slice of length `d` (panics if `i >= n`, like slice indexing).
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// Errors on the first NaN or infinite value, naming `what`, the row and the column.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        match self.data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(k) => bail!(
                "{what}: row {}, column {} is {}; every value must be finite",
                k / self.d.max(1),
                k % self.d.max(1),
                self.data[k]
            ),
        }
    }

    /// The data converted to `f32` (row-major).
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    /// Builds points from row-major `f32` data, checking that its length is `n * d`.
    pub fn from_f32(n: usize, d: usize, data: &[f32]) -> Result<Self> {
        Self::new(n, d, data.iter().map(|&v| v as f64).collect())
    }

    /// Column means (length `d`; NaN when `n == 0`).
    pub fn mean(&self) -> Vec<f64> {
        let mut m = vec![0.0; self.d];
        for i in 0..self.n {
            for (mj, x) in m.iter_mut().zip(self.row(i)) {
                *mj += x;
            }
        }
        m.iter().map(|s| s / self.n as f64).collect()
    }

    /// A copy with every coordinate multiplied by `factor`.
    pub fn scaled(&self, factor: f64) -> Points {
        Points {
            n: self.n,
            d: self.d,
            data: self.data.iter().map(|v| v * factor).collect(),
            event: self.event.clone(),
        }
    }
}

/// Reads a `.npy` or `.csv` file (chosen by extension) into points.
pub fn read_points(path: &Path) -> Result<Points> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("npy") => read_npy(path),
        Some(e) if e.eq_ignore_ascii_case("csv") => read_csv(path),
        _ => bail!(
            "{}: unsupported file extension; use .npy (float32/float64) or .csv",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests;
