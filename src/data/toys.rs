//! The 2-D toy data sets (FFJORD's conventions, as the PyTorch peer) and their exact
//! log-densities where they have one.

use super::Points;
use anyhow::{bail, Result};
use rand::Rng;
use rand_distr::StandardNormal;
use std::f64::consts::PI;

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
