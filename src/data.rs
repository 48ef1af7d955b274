//! Point sets, 2-D toy datasets and `.npy` / `.csv` input-output.

use anyhow::{anyhow, bail, Context, Result};
use npyz::WriterBuilder;
use rand::Rng;
use rand_distr::StandardNormal;
use std::f64::consts::PI;
use std::io::Write;
use std::path::Path;

/// A row-major `n × d` matrix of `f64` points (one point per row).
#[derive(Debug, Clone, PartialEq)]
pub struct Points {
    /// Number of points (rows).
    pub n: usize,
    /// Dimension of each point (columns).
    pub d: usize,
    /// Row-major data, length `n * d`.
    pub data: Vec<f64>,
    /// The shape of one point ([N, k] for particles, [c, h, w] for images); empty: [d].
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

    /// The same points with each one shaped `event` (whose sizes multiply to d; empty: [d]).
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

    /// The shape of one point: `event`, or [d] when none was given.
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
                "{what}: row {}, column {} is {}; clean the data before training",
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

// ------------------------------------------------------------------ toy data

/// Names accepted by [`toy`].
pub const TOY_NAMES: &[&str] = &[
    "checkerboard",
    "8gaussians",
    "swissroll",
    "moons",
    "circles",
    "pinwheel",
    "2spirals",
    "ncsn2",
    "gmm40",
];

/// Per-coordinate standard deviation of every gmm40 component: softplus(1) = ln(1 + e).
pub const GMM40_STD: f64 = 1.313_261_687_518_222_8;

/// The 40 FAB/iDEM gmm40 means (uniform in [-40, 40]², from `assets/gmm40_means.csv`).
pub fn gmm40_means() -> Vec<[f64; 2]> {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/gmm40_means.csv"
    ));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (a, b) = l.split_once(',')?;
            Some([a.trim().parse().ok()?, b.trim().parse().ok()?])
        })
        .collect()
}

fn normal(rng: &mut impl Rng) -> f64 {
    rng.sample(StandardNormal)
}

/// Centres of the 8gaussians mixture *before* the final division by 1.414.
fn eight_centres() -> Vec<[f64; 2]> {
    (0..8)
        .map(|k| {
            let a = k as f64 * PI / 4.0;
            [4.0 * a.cos(), 4.0 * a.sin()]
        })
        .collect()
}

/// Draws one point of the named toy distribution (name already validated).
fn toy_point(name: &str, rng: &mut impl Rng, gmm: &[[f64; 2]]) -> [f64; 2] {
    match name {
        "checkerboard" => {
            let x1 = rng.random::<f64>() * 4.0 - 2.0;
            let x2 = rng.random::<f64>() - 2.0 * rng.random_range(0..2u32) as f64
                + x1.floor().rem_euclid(2.0);
            [2.0 * x1, 2.0 * x2]
        }
        "8gaussians" => {
            let c = eight_centres()[rng.random_range(0..8usize)];
            let (a, b) = (normal(rng), normal(rng));
            [(c[0] + 0.5 * a) / 1.414, (c[1] + 0.5 * b) / 1.414]
        }
        "swissroll" => {
            let t = 1.5 * PI * (1.0 + 2.0 * rng.random::<f64>());
            let (a, b) = (normal(rng), normal(rng));
            [(t * t.cos() + a) / 5.0, (t * t.sin() + b) / 5.0]
        }
        "moons" => {
            let th = PI * rng.random::<f64>();
            let p = if rng.random_bool(0.5) {
                [1.0 - th.cos(), 1.0 - th.sin() - 0.5]
            } else {
                [th.cos(), th.sin()]
            };
            let (a, b) = (normal(rng), normal(rng));
            [(p[0] + 0.1 * a) * 2.0 - 1.0, (p[1] + 0.1 * b) * 2.0 - 0.2]
        }
        "circles" => {
            let th = 2.0 * PI * rng.random::<f64>();
            let r = if rng.random_bool(0.5) { 0.5 } else { 1.0 };
            let (a, b) = (normal(rng), normal(rng));
            [
                3.0 * (r * th.cos() + 0.08 * a),
                3.0 * (r * th.sin() + 0.08 * b),
            ]
        }
        "pinwheel" => {
            let f0 = 1.0 + 0.3 * normal(rng);
            let f1 = 0.1 * normal(rng);
            let class = rng.random_range(0..5u32) as f64;
            let ang = class * 2.0 * PI / 5.0 + 0.25 * f0.exp();
            let (s, c) = ang.sin_cos();
            [2.0 * (f0 * c + f1 * s), 2.0 * (-f0 * s + f1 * c)]
        }
        "2spirals" => {
            let t = rng.random::<f64>().sqrt() * 540.0 * 2.0 * PI / 360.0;
            let x = -t.cos() * t + 0.5 * rng.random::<f64>();
            let y = t.sin() * t + 0.5 * rng.random::<f64>();
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            let (a, b) = (normal(rng), normal(rng));
            [sign * x / 3.0 + 0.1 * a, sign * y / 3.0 + 0.1 * b]
        }
        "ncsn2" => {
            let m = if rng.random_bool(0.8) { 5.0 } else { -5.0 };
            [m + normal(rng), m + normal(rng)]
        }
        _ => {
            // "gmm40"
            let m = gmm[rng.random_range(0..gmm.len())];
            [
                m[0] + GMM40_STD * normal(rng),
                m[1] + GMM40_STD * normal(rng),
            ]
        }
    }
}

/// Draws `n` i.i.d. points (n × 2) of a named 2-D toy distribution.
///
/// * `checkerboard` — uniform on the 8 "black" squares of side 2 of a 4×4 board on [-4,4]²
///   (density 1/32; FFJORD).
/// * `8gaussians` — equal mixture of N(4·(cos kπ/4, sin kπ/4), 0.5²I), all divided by 1.414
///   (radius ≈ 2.83, component std ≈ 0.354; FFJORD).
/// * `swissroll` — sklearn `make_swiss_roll(noise=1)` columns (x, z), divided by 5;
///   roughly [-2.5, 3]².
/// * `moons` — sklearn `make_moons(noise=0.1)` with i.i.d. angle and label, ×2 + (-1, -0.2);
///   roughly [-3, 3] × [-1.5, 1.5].
/// * `circles` — sklearn `make_circles(factor=0.5, noise=0.08)` with i.i.d. angle and label,
///   ×3: radii 3 and 1.5, noise std 0.24.
/// * `pinwheel` — FFJORD pinwheel (5 arms, radial std 0.3, tangential std 0.1, rate 0.25), ×2;
///   roughly [-4, 4]².
/// * `2spirals` — FFJORD two spirals (radius = angle = √U·3π, + U[0,0.5) jitter, ±, /3,
///   + N(0, 0.1²)); roughly [-4, 4]².
/// * `ncsn2` — 0.8·N((5,5), I) + 0.2·N((-5,-5), I).
/// * `gmm40` — FAB/iDEM: equal mixture of 40 Gaussians with means [`gmm40_means`] in
///   [-40,40]² and per-coordinate std [`GMM40_STD`].
pub fn toy(name: &str, n: usize, rng: &mut impl Rng) -> Result<Points> {
    if !TOY_NAMES.contains(&name) {
        bail!(
            "unknown toy dataset '{name}'; valid names are: {}",
            TOY_NAMES.join(", ")
        );
    }
    let gmm = gmm40_means();
    if gmm.len() != 40 {
        bail!(
            "assets/gmm40_means.csv: expected 40 'x,y' lines, parsed {}",
            gmm.len()
        );
    }
    let mut data = Vec::with_capacity(2 * n);
    for _ in 0..n {
        data.extend_from_slice(&toy_point(name, rng, &gmm));
    }
    Points::new(n, 2, data)
}

/// log Σ_k exp(-‖x-μ_k‖²/(2s²)) / (2πs²) − log K: an equal-weight isotropic 2-D mixture.
fn mixture_log_prob(x: &[f64], means: &[[f64; 2]], s: f64) -> f64 {
    let comp: Vec<f64> = means
        .iter()
        .map(|m| {
            let d2 = (x[0] - m[0]).powi(2) + (x[1] - m[1]).powi(2);
            -d2 / (2.0 * s * s) - (2.0 * PI * s * s).ln()
        })
        .collect();
    let mx = comp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    mx + comp.iter().map(|c| (c - mx).exp()).sum::<f64>().ln() - (means.len() as f64).ln()
}

/// Exact log density of `checkerboard` (−log 32 on the support, −∞ off it), `8gaussians`
/// and `gmm40` (mixture log density) at 2-D points; `None` for other names or `x.d != 2`.
pub fn toy_log_prob(name: &str, x: &Points) -> Option<Vec<f64>> {
    if x.d != 2 {
        return None;
    }
    let rows = (0..x.n).map(|i| x.row(i));
    match name {
        "checkerboard" => Some(
            rows.map(|p| {
                let inside = p[0].abs() <= 4.0 && p[1].abs() <= 4.0;
                let black = ((p[0] / 2.0).floor() + (p[1] / 2.0).floor()).rem_euclid(2.0) == 0.0;
                if inside && black {
                    -(32f64.ln())
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect(),
        ),
        "8gaussians" => {
            let means: Vec<[f64; 2]> = eight_centres()
                .iter()
                .map(|c| [c[0] / 1.414, c[1] / 1.414])
                .collect();
            Some(
                rows.map(|p| mixture_log_prob(p, &means, 0.5 / 1.414))
                    .collect(),
            )
        }
        "gmm40" => {
            let means = gmm40_means();
            Some(
                rows.map(|p| mixture_log_prob(p, &means, GMM40_STD))
                    .collect(),
            )
        }
        _ => None,
    }
}

// ------------------------------------------------------------------------ IO

/// Reads a C-order little-endian `f32`/`f64` `.npy` file of n points: [n, d], [n] (as n × 1), or
/// [n, e₁, e₂, …] (each point an event of shape [e₁, e₂, …], e.g. particles [n, N, k]).
pub fn read_npy(path: &Path) -> Result<Points> {
    let p = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("{p}: cannot read file"))?;
    let mut rest: &[u8] = &bytes;
    let header = npyz::NpyHeader::from_reader(&mut rest)
        .map_err(|e| anyhow!("{p}: not a valid .npy file (bad magic or header: {e})"))?;
    let dtype = header.dtype();
    let size = match &dtype {
        npyz::DType::Plain(ts) if ts.to_string() == "<f4" => 4,
        npyz::DType::Plain(ts) if ts.to_string() == "<f8" => 8,
        other => bail!(
            "{p}: dtype {} is not supported; accepted dtypes are '<f4' (float32) and \
             '<f8' (float64); convert with arr.astype(np.float32)",
            other.descr()
        ),
    };
    if header.order() == npyz::Order::Fortran {
        bail!("{p}: array is stored in Fortran order; save np.ascontiguousarray(arr) instead");
    }
    let shape = header.shape().to_vec();
    let (n, event): (usize, Vec<usize>) = match shape[..] {
        [] => bail!("{p}: array is a scalar; expected one point per row, [n, d] or [n, ...event]"),
        [n] => (n as usize, vec![1]),
        [n, ref rest @ ..] => (n as usize, rest.iter().map(|&e| e as usize).collect()),
    };
    let d = event
        .iter()
        .try_fold(1usize, |a, &e| a.checked_mul(e))
        .ok_or_else(|| anyhow!("{p}: shape {shape:?} is too large"))?;
    let need = n.saturating_mul(d).saturating_mul(size);
    if rest.len() < need {
        bail!(
            "{p}: truncated: header says shape {shape:?} ({need} data bytes) but only {} \
             bytes follow; re-export the file",
            rest.len()
        );
    }
    let npy = npyz::NpyFile::with_header(header, rest);
    let data: Vec<f64> = if size == 4 {
        let v: Vec<f32> = npy
            .into_vec()
            .with_context(|| format!("{p}: reading data"))?;
        v.into_iter().map(f64::from).collect()
    } else {
        npy.into_vec()
            .with_context(|| format!("{p}: reading data"))?
    };
    Points::new(n, d, data)
        .and_then(|x| x.with_event(event))
        .with_context(|| format!("{p}: inconsistent data length"))
}

/// Writes points as a C-order `.npy` file of shape [n, ...event], `f64` (`<f8`) if `f64` is true
/// else `f32` (`<f4`).
pub fn write_npy(path: &Path, x: &Points, f64: bool) -> Result<()> {
    let p = path.display();
    let file = std::fs::File::create(path).with_context(|| format!("{p}: cannot create file"))?;
    let shape: Vec<u64> = std::iter::once(x.n)
        .chain(x.event_shape())
        .map(|v| v as u64)
        .collect();
    let w = std::io::BufWriter::new(file);
    let res = if f64 {
        npyz::WriteOptions::<f64>::new()
            .default_dtype()
            .shape(&shape)
            .writer(w)
            .begin_nd()
            .and_then(|mut wr| {
                wr.extend(x.data.iter().copied())?;
                wr.finish()
            })
    } else {
        npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(w)
            .begin_nd()
            .and_then(|mut wr| {
                wr.extend(x.to_f32())?;
                wr.finish()
            })
    };
    res.with_context(|| format!("{p}: writing .npy failed"))
}

/// Writes per-point values as a 1-D `f32` `.npy` file.
pub fn write_npy_f32_1d(path: &Path, values: &[f64]) -> Result<()> {
    let p = path.display();
    let file = std::fs::File::create(path).with_context(|| format!("{p}: cannot create file"))?;
    npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[values.len() as u64])
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .and_then(|mut wr| {
            wr.extend(values.iter().map(|&v| v as f32))?;
            wr.finish()
        })
        .with_context(|| format!("{p}: writing .npy failed"))
}

/// Reads comma-separated numeric rows; skips `#` comments and a non-numeric first (header) line.
pub fn read_csv(path: &Path) -> Result<Points> {
    let p = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("{p}: cannot read file"))?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .comment(Some(b'#'))
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(file);
    let (mut data, mut d, mut n) = (Vec::new(), None, 0usize);
    for (k, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{p}: malformed CSV"))?;
        let line = rec.position().map_or(0, |pos| pos.line());
        let vals: Result<Vec<f64>, _> = rec.iter().map(str::parse::<f64>).collect();
        let vals = match vals {
            Ok(v) => v,
            Err(_) if k == 0 => continue, // header line
            Err(_) => bail!(
                "{p}: line {line} has a non-numeric field: {:?}",
                rec.iter().collect::<Vec<_>>()
            ),
        };
        match d {
            None => d = Some(vals.len()),
            Some(d) if d != vals.len() => bail!(
                "{p}: line {line} has {} fields but earlier rows have {d}; every row needs the \
                 same number of columns",
                vals.len()
            ),
            _ => {}
        }
        data.extend(vals);
        n += 1;
    }
    let d = d.ok_or_else(|| anyhow!("{p}: no numeric rows found"))?;
    Points::new(n, d, data)
}

/// Writes points as comma-separated rows (no header), using round-trip exact formatting.
pub fn write_csv(path: &Path, x: &Points) -> Result<()> {
    let p = path.display();
    let file = std::fs::File::create(path).with_context(|| format!("{p}: cannot create file"))?;
    let mut w = std::io::BufWriter::new(file);
    for i in 0..x.n {
        let line: Vec<String> = x.row(i).iter().map(|v| v.to_string()).collect();
        writeln!(w, "{}", line.join(",")).with_context(|| format!("{p}: write failed"))?;
    }
    w.flush().with_context(|| format!("{p}: write failed"))
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
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn moments(x: &Points) -> (Vec<f64>, Vec<f64>) {
        let m = x.mean();
        let mut v = vec![0.0; x.d];
        for i in 0..x.n {
            for j in 0..x.d {
                v[j] += (x.row(i)[j] - m[j]).powi(2) / x.n as f64;
            }
        }
        (m, v.iter().map(|v| v.sqrt()).collect())
    }

    #[test]
    fn toys_shapes_and_moments() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let n = 20000;
        for &name in TOY_NAMES {
            let x = toy(name, n, &mut rng).unwrap();
            assert_eq!((x.n, x.d, x.data.len()), (n, 2, 2 * n), "{name}");
            x.check_finite(name).unwrap();
            let (m, s) = moments(&x);
            // (expected mean, expected std) per coordinate, loose tolerances.
            let (em, es, tol): ([f64; 2], [f64; 2], f64) = match name {
                "checkerboard" => ([0.0, 0.0], [2.309, 2.309], 0.05),
                "8gaussians" => ([0.0, 0.0], [2.031, 2.031], 0.05),
                "moons" => ([0.0, 0.3], [1.744, 1.008], 0.05),
                "circles" => ([0.0, 0.0], [1.694, 1.694], 0.05),
                "swissroll" => ([0.4, 0.042], [1.340, 1.405], 0.05),
                "pinwheel" => ([0.0, 0.0], [1.483, 1.483], 0.05),
                "2spirals" => ([0.0, 0.0], [1.610, 1.584], 0.05),
                "ncsn2" => ([3.0, 3.0], [4.123, 4.123], 0.15),
                _ => {
                    // gmm40: mean of the means, variance of the means + GMM40_STD².
                    let c = Points::new(40, 2, gmm40_means().concat()).unwrap();
                    let (cm, cs) = moments(&c);
                    let sd = |v: f64| (v * v + GMM40_STD * GMM40_STD).sqrt();
                    ([cm[0], cm[1]], [sd(cs[0]), sd(cs[1])], 0.5)
                }
            };
            for j in 0..2 {
                assert!((m[j] - em[j]).abs() < tol, "{name} mean {m:?}");
                assert!((s[j] - es[j]).abs() < tol, "{name} std {s:?}");
            }
        }
        assert!(toy("nope", 3, &mut rng)
            .unwrap_err()
            .to_string()
            .contains("checkerboard"));
    }

    #[test]
    fn checkerboard_support_and_log_prob() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x = toy("checkerboard", 5000, &mut rng).unwrap();
        let lp = toy_log_prob("checkerboard", &x).unwrap();
        assert!(lp.iter().all(|&v| (v + 32f64.ln()).abs() < 1e-12));
        let off = Points::new(2, 2, vec![1.0, -1.0, 5.0, 0.5]).unwrap();
        assert!(toy_log_prob("checkerboard", &off)
            .unwrap()
            .iter()
            .all(|v| *v == f64::NEG_INFINITY));
        assert!(toy_log_prob("moons", &x).is_none());
    }

    #[test]
    fn mixture_log_probs_normalise_and_fit_samples() {
        // Monte-Carlo check: E_p[log p] from samples equals a grid estimate of -entropy.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for (name, half, h) in [("8gaussians", 5.0, 0.02), ("gmm40", 46.0, 0.1)] {
            let k = (2.0 * half / h) as usize;
            let mut grid = Vec::with_capacity(2 * k * k);
            for a in 0..k {
                for b in 0..k {
                    grid.push(-half + (a as f64 + 0.5) * h);
                    grid.push(-half + (b as f64 + 0.5) * h);
                }
            }
            let g = Points::new(k * k, 2, grid).unwrap();
            let lp = toy_log_prob(name, &g).unwrap();
            let mass: f64 = lp.iter().map(|v| v.exp() * h * h).sum();
            assert!((mass - 1.0).abs() < 1e-3, "{name} mass {mass}");
            let neg_ent: f64 = lp.iter().map(|v| v * v.exp() * h * h).sum();
            let x = toy(name, 20000, &mut rng).unwrap();
            let mc = toy_log_prob(name, &x).unwrap().iter().sum::<f64>() / 20000.0;
            assert!((mc - neg_ent).abs() < 0.03, "{name}: {mc} vs {neg_ent}");
        }
    }

    #[test]
    fn gmm40_assets() {
        let m = gmm40_means();
        assert_eq!(m.len(), 40);
        assert!((m[0][0] + 0.299472809).abs() < 1e-9 && (m[0][1] - 21.457744598).abs() < 1e-9);
        assert!(m.iter().all(|p| p[0].abs() <= 40.0 && p[1].abs() <= 40.0));
        assert!((GMM40_STD - (1.0 + 1f64.exp()).ln()).abs() < 1e-15);
    }

    #[test]
    fn ncsn2_weights() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 10000;
        let x = toy("ncsn2", n, &mut rng).unwrap();
        let frac = (0..n).filter(|&i| x.row(i)[0] > 0.0).count() as f64 / n as f64;
        let sd = (0.8f64 * 0.2 / n as f64).sqrt();
        assert!((frac - 0.8).abs() < 4.0 * sd, "{frac}");
    }

    #[test]
    fn points_helpers() {
        assert!(Points::new(2, 2, vec![1.0; 3]).is_err());
        let mut x = Points::new(3, 2, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(x.row(1), &[2.0, 3.0]);
        assert_eq!(x.mean(), vec![2.0, 3.0]);
        assert_eq!(x.scaled(2.0).row(2), &[8.0, 10.0]);
        let y = Points::from_f32(3, 2, &x.to_f32()).unwrap();
        assert_eq!(x, y);
        x.check_finite("x").unwrap();
        x.data[3] = f64::NAN;
        let e = x.check_finite("train data").unwrap_err().to_string();
        assert!(e.contains("train data: row 1, column 1 is NaN"), "{e}");
    }

    #[test]
    fn npy_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let x = Points::new(3, 2, vec![0.1, -1.5, 2.0, 1e-30, 7.25, 3.0]).unwrap();
        let p64 = dir.path().join("a64.npy");
        write_npy(&p64, &x, true).unwrap();
        assert_eq!(read_points(&p64).unwrap(), x);
        let p32 = dir.path().join("a32.npy");
        write_npy(&p32, &x, false).unwrap();
        let y = read_npy(&p32).unwrap();
        assert_eq!((y.n, y.d), (3, 2));
        assert_eq!(y.to_f32(), x.to_f32());
        let p1 = dir.path().join("v.npy");
        write_npy_f32_1d(&p1, &[1.0, 2.0, 3.5]).unwrap();
        assert_eq!(
            read_npy(&p1).unwrap(),
            Points::new(3, 1, vec![1.0, 2.0, 3.5]).unwrap()
        );

        let check = |path: &Path, needle: &str| {
            let e = format!("{:#}", read_npy(path).unwrap_err());
            assert!(e.starts_with(&path.display().to_string()), "{e}");
            assert!(e.contains(needle), "{e}");
        };
        // Truncated.
        let bytes = std::fs::read(&p64).unwrap();
        let pt = dir.path().join("trunc.npy");
        std::fs::write(&pt, &bytes[..bytes.len() - 5]).unwrap();
        check(&pt, "truncated");
        // Random bytes.
        let pr = dir.path().join("rand.npy");
        std::fs::write(
            &pr,
            (0..200u32)
                .map(|i| (i * 7919 % 251) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        check(&pr, "not a valid .npy");
        // Missing.
        check(&dir.path().join("missing.npy"), "cannot read");
        // 3-D.
        let p3 = dir.path().join("three.npy");
        let f = std::fs::File::create(&p3).unwrap();
        let mut w = npyz::WriteOptions::<f64>::new()
            .default_dtype()
            .shape(&[2, 2, 2])
            .writer(f)
            .begin_nd()
            .unwrap();
        w.extend((0..8).map(f64::from)).unwrap();
        w.finish().unwrap();
        // 3-D: two points, each an event [2, 2], and back to the same shape
        let three = read_npy(&p3).unwrap();
        assert_eq!((three.n, three.d, three.event_shape()), (2, 4, vec![2, 2]));
        let back = dir.path().join("three_back.npy");
        write_npy(&back, &three, true).unwrap();
        assert_eq!(read_npy(&back).unwrap(), three);
        let header = npyz::NpyFile::new(std::fs::File::open(&back).unwrap()).unwrap();
        assert_eq!(header.shape(), &[2, 2, 2]);
        // Wrong dtype.
        let pi = dir.path().join("int.npy");
        let f = std::fs::File::create(&pi).unwrap();
        let mut w = npyz::WriteOptions::<i32>::new()
            .default_dtype()
            .shape(&[2, 1])
            .writer(f)
            .begin_nd()
            .unwrap();
        w.extend([1i32, 2]).unwrap();
        w.finish().unwrap();
        check(&pi, "'<i4' is not supported");
        // Fortran order.
        let pf = dir.path().join("fortran.npy");
        let f = std::fs::File::create(&pf).unwrap();
        let mut w = npyz::WriteOptions::<f64>::new()
            .default_dtype()
            .shape(&[2, 2])
            .order(npyz::Order::Fortran)
            .writer(f)
            .begin_nd()
            .unwrap();
        w.extend([0.0f64; 4]).unwrap();
        w.finish().unwrap();
        check(&pf, "Fortran");
        // Unknown extension.
        let e = read_points(&dir.path().join("x.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.txt: unsupported"), "{e}");
    }

    #[test]
    fn csv_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let x = Points::new(2, 3, vec![0.1, -2.0, 1e-300, 4.0, 5.5, -0.0]).unwrap();
        let p = dir.path().join("a.csv");
        write_csv(&p, &x).unwrap();
        assert_eq!(read_points(&p).unwrap(), x);
        std::fs::write(&p, "# comment\nx, y\n1, 2\n# mid\n3,4\n").unwrap();
        assert_eq!(
            read_csv(&p).unwrap(),
            Points::new(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap()
        );
        std::fs::write(&p, "1,2\n3,4,5\n").unwrap();
        let e = read_csv(&p).unwrap_err().to_string();
        assert!(
            e.starts_with(&p.display().to_string()) && e.contains("line 2"),
            "{e}"
        );
        std::fs::write(&p, "1,2\n3,abc\n").unwrap();
        assert!(read_csv(&p).unwrap_err().to_string().contains("line 2"));
        std::fs::write(&p, "# only a comment\n").unwrap();
        assert!(read_csv(&p).is_err());
        assert!(read_csv(&dir.path().join("missing.csv")).is_err());
    }
}
