//! Sample-quality metrics: exact and sliced Wasserstein-2, MMD, mode statistics, Fisher divergence,
//! kernel Stein discrepancy (`ksd`); each reported number can carry its definition, the sample
//! sizes it was computed on and its floor ([`Metric`]).

pub mod boltzmann;
pub mod ksd;

pub use ksd::{ksd2, ksd2_imq, Imq, Ksd, KSD_DEFINITION};

use crate::data::Points;
use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// Checks that two point sets are non-empty, finite, and of equal size and dimension.
fn check_pair(what: &str, a: &Points, b: &Points, same_n: bool) -> Result<()> {
    if a.n == 0 || b.n == 0 {
        bail!(
            "{what}: empty point set (n = {} and {}); pass at least one point",
            a.n,
            b.n
        );
    }
    if a.d != b.d {
        bail!(
            "{what}: dimensions differ ({} vs {}); compare sets of the same dimension",
            a.d,
            b.d
        );
    }
    if same_n && a.n != b.n {
        bail!(
            "{what}: sample sizes differ ({} vs {}); subsample both sets to the same n",
            a.n,
            b.n
        );
    }
    a.check_finite(&format!("{what}: first set"))?;
    b.check_finite(&format!("{what}: second set"))
}

/// Squared exact 2-Wasserstein distance W2² = min_σ (1/n) Σ_i ‖a_i − b_σ(i)‖² between two
/// equal-size empirical measures, solved as an optimal assignment (`assignment`, O(n³) worst case,
/// n² memory; in 1-D by sorting, O(n log n)).
pub fn w2_squared_exact(a: &Points, b: &Points) -> Result<f64> {
    check_pair("w2_exact", a, b, true)?;
    let n = a.n;
    if a.d == 1 {
        // on the line the sorted (monotone) coupling is optimal for any convex cost, in
        // O(n log n); the general solver meets its worst case there (~9 s for n = 2000)
        let (mut x, mut y) = (a.data.clone(), b.data.clone());
        x.sort_by(f64::total_cmp);
        y.sort_by(f64::total_cmp);
        return Ok(sq_dist(&x, &y) / n as f64);
    }
    let mut cost = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            cost.push(sq_dist(a.row(i), b.row(j)));
        }
    }
    let row_to_col = assignment(&cost, n);
    let total: f64 = row_to_col
        .iter()
        .enumerate()
        .map(|(i, &j)| cost[i * n + j])
        .sum();
    Ok(total / n as f64)
}

/// Minimum-cost perfect assignment of a dense n×n cost matrix (row-major): the column of each row.
///
/// Shortest augmenting paths with dual potentials (Jonker & Volgenant 1987, in the form of Crouse
/// 2016 that scipy's `linear_sum_assignment` uses): one Dijkstra search per row over reduced costs
/// c_ij − u_i − v_j ≥ 0. Written here because the `lapjv` crate took ~5 s for n = 2000 on this
/// machine (scipy: ~0.3 s); exactness is tested against brute force.
pub fn assignment(cost: &[f64], n: usize) -> Vec<usize> {
    const NONE: usize = usize::MAX;
    let (mut u, mut v) = (vec![0.0f64; n], vec![0.0f64; n]);
    let (mut col4row, mut row4col) = (vec![NONE; n], vec![NONE; n]);
    let mut path = vec![NONE; n];
    let mut shortest = vec![f64::INFINITY; n];
    let mut remaining: Vec<usize> = Vec::with_capacity(n);
    let (mut sr, mut sc): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    for cur in 0..n {
        shortest.iter_mut().for_each(|s| *s = f64::INFINITY);
        remaining.clear();
        remaining.extend((0..n).rev());
        sr.clear();
        sc.clear();
        let (mut min_val, mut i, mut sink) = (0.0f64, cur, NONE);
        while sink == NONE {
            sr.push(i);
            let (mut index, mut lowest) = (NONE, f64::INFINITY);
            let row = &cost[i * n..(i + 1) * n];
            for (it, &j) in remaining.iter().enumerate() {
                let r = min_val + row[j] - u[i] - v[j];
                if r < shortest[j] {
                    path[j] = i;
                    shortest[j] = r;
                }
                if shortest[j] < lowest || (shortest[j] == lowest && row4col[j] == NONE) {
                    lowest = shortest[j];
                    index = it;
                }
            }
            min_val = lowest;
            let j = remaining.swap_remove(index);
            sc.push(j);
            if row4col[j] == NONE {
                sink = j;
            } else {
                i = row4col[j];
            }
        }
        u[cur] += min_val;
        for &r in sr.iter().skip(1) {
            u[r] += min_val - shortest[col4row[r]];
        }
        for &c in &sc {
            v[c] -= min_val - shortest[c];
        }
        let mut j = sink;
        loop {
            let r = path[j];
            row4col[j] = r;
            std::mem::swap(&mut col4row[r], &mut j);
            if r == cur {
                break;
            }
        }
    }
    col4row
}

/// Exact 2-Wasserstein distance W2 (not squared) = sqrt of [`w2_squared_exact`].
pub fn w2_exact(a: &Points, b: &Points) -> Result<f64> {
    Ok(w2_squared_exact(a, b)?.sqrt())
}

/// Sliced W2 = sqrt( mean over `n_proj` random unit directions θ of W2²(θᵀa, θᵀb) ), the 1-D
/// W2² being the mean squared difference of the sorted projections; equal n required,
/// directions drawn from a ChaCha8 stream seeded by `seed`.
pub fn sliced_w2(a: &Points, b: &Points, n_proj: usize, seed: u64) -> Result<f64> {
    check_pair("sliced_w2", a, b, true)?;
    if n_proj == 0 {
        bail!("sliced_w2: n_proj is 0; use at least one projection (e.g. 256)");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let project = |x: &Points, th: &[f64]| -> Vec<f64> {
        let mut p: Vec<f64> = (0..x.n)
            .map(|i| x.row(i).iter().zip(th).map(|(u, v)| u * v).sum())
            .collect();
        p.sort_by(f64::total_cmp);
        p
    };
    let mut acc = 0.0;
    for _ in 0..n_proj {
        let mut th: Vec<f64> = (0..a.d)
            .map(|_| rand::Rng::sample(&mut rng, StandardNormal))
            .collect();
        let norm = th.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
        th.iter_mut().for_each(|v| *v /= norm);
        let (pa, pb) = (project(a, &th), project(b, &th));
        acc += pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            / a.n as f64;
    }
    Ok((acc / n_proj as f64).sqrt())
}

/// Unbiased MMD² with the RBF kernel k(x,y) = exp(−‖x−y‖²/(2h²)):
/// (1/(m(m−1))) Σ_{i≠j} k(a_i,a_j) + (1/(n(n−1))) Σ_{i≠j} k(b_i,b_j) − (2/(mn)) Σ_{i,j} k(a_i,b_j).
/// `h` defaults to the median pairwise distance among the first ≤ 2000 points of `b` (the
/// reference sample). Returns `(mmd2, h)`; can be slightly negative when the laws agree.
pub fn mmd2_rbf(a: &Points, b: &Points, bandwidth: Option<f64>) -> Result<(f64, f64)> {
    check_pair("mmd2_rbf", a, b, false)?;
    if a.n < 2 || b.n < 2 {
        bail!("mmd2_rbf: the unbiased estimator needs at least 2 points per set");
    }
    let h = match bandwidth {
        Some(h) if h.is_finite() && h > 0.0 => h,
        Some(h) => bail!("mmd2_rbf: bandwidth {h} must be positive and finite"),
        None => {
            let m = b.n.min(2000);
            let mut d: Vec<f64> = (0..m)
                .flat_map(|i| (0..i).map(move |j| (i, j)))
                .map(|(i, j)| sq_dist(b.row(i), b.row(j)).sqrt())
                .collect();
            d.sort_by(f64::total_cmp);
            let med = d[d.len() / 2];
            if med <= 0.0 {
                bail!("mmd2_rbf: median pairwise distance of the reference set is 0 (repeated points); pass an explicit bandwidth");
            }
            med
        }
    };
    let g = -0.5 / (h * h);
    let within = |x: &Points| -> f64 {
        let mut s = 0.0;
        for i in 0..x.n {
            for j in 0..i {
                s += (g * sq_dist(x.row(i), x.row(j))).exp();
            }
        }
        2.0 * s / (x.n as f64 * (x.n as f64 - 1.0))
    };
    let mut cross = 0.0;
    for i in 0..a.n {
        for j in 0..b.n {
            cross += (g * sq_dist(a.row(i), b.row(j))).exp();
        }
    }
    let mmd2 = within(a) + within(b) - 2.0 * cross / (a.n as f64 * b.n as f64);
    Ok((mmd2, h))
}

/// Index of the centre nearest to `p` (squared Euclidean; first on ties).
fn nearest(p: &[f64], centres: &[Vec<f64>]) -> usize {
    let mut best = (0, f64::INFINITY);
    for (k, c) in centres.iter().enumerate() {
        let d = sq_dist(p, c);
        if d < best.1 {
            best = (k, d);
        }
    }
    best.0
}

/// Sample-set metrics against a reference set, computed on the first k points of each.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SampleMetrics {
    /// k = min(n_samples, n_reference, max_points): points used from each set.
    pub n_points: usize,
    /// Exact W2 (not squared), see [`w2_exact`].
    pub w2: f64,
    /// Sliced W2, see [`sliced_w2`].
    pub sliced_w2: f64,
    /// Unbiased RBF MMD², see [`mmd2_rbf`] (median-heuristic bandwidth on the reference).
    pub mmd2: f64,
    /// The MMD bandwidth h that was used.
    pub mmd_bandwidth: f64,
    /// Number of random directions of the sliced W2.
    pub sliced_projections: usize,
    /// The definitions, written beside the numbers in every report.
    pub definitions: &'static str,
}

/// How `SampleMetrics` are defined, stated in every JSON report.
pub const METRIC_DEFINITIONS: &str = "w2: exact 2-Wasserstein distance (not squared) between the two k-point empirical measures, \
by optimal assignment on squared Euclidean costs; sliced_w2: sqrt of the mean over random unit directions of the 1-D W2²; \
mmd2: unbiased MMD² with the RBF kernel exp(-|x-y|²/(2h²)), h = median pairwise distance of the reference; \
all in data units, on the first k points of each set";

/// Rows `range` of `x`.
fn rows(x: &Points, range: std::ops::Range<usize>) -> Points {
    Points {
        n: range.len(),
        d: x.d,
        data: x.data[range.start * x.d..range.end * x.d].to_vec(),
        event: x.event.clone(),
    }
}

/// Exact W2, sliced W2 (`n_proj` directions from `seed`) and MMD² of `samples` against
/// `reference`, each set truncated to its first k = min(n, m, `max_points`) points.
pub fn compare(
    samples: &Points,
    reference: &Points,
    max_points: usize,
    n_proj: usize,
    seed: u64,
) -> Result<SampleMetrics> {
    if max_points == 0 {
        bail!("compare: max_points is 0; use at least 2 points");
    }
    let k = samples.n.min(reference.n).min(max_points);
    compare_sets(
        &rows(samples, 0..k),
        &rows(reference, 0..k),
        None,
        n_proj,
        seed,
    )
}

/// The metrics of [`compare`] between two sets of equal size, with an MMD bandwidth (`None`: the
/// median heuristic on `b`).
fn compare_sets(
    a: &Points,
    b: &Points,
    bandwidth: Option<f64>,
    n_proj: usize,
    seed: u64,
) -> Result<SampleMetrics> {
    let (mmd2, mmd_bandwidth) = mmd2_rbf(a, b, bandwidth)?;
    Ok(SampleMetrics {
        n_points: a.n,
        w2: w2_exact(a, b)?,
        sliced_w2: sliced_w2(a, b, n_proj, seed)?,
        mmd2,
        mmd_bandwidth,
        sliced_projections: n_proj,
        definitions: METRIC_DEFINITIONS,
    })
}

/// One reported number with its one-line definition, the sample sizes behind it and its floor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Metric {
    /// The number.
    pub value: f64,
    /// Its standard error, where the estimator has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub se: Option<f64>,
    /// What it is, in one line (units, squared or not, estimator).
    pub definition: &'static str,
    /// Points of the judged samples it used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_samples: Option<usize>,
    /// Points of the reference set, or exact draws from the target, it used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_reference: Option<usize>,
    /// What exact samples score at the same sizes: the metric between two independent halves of
    /// the reference set (k points each), or against the target, the exact draws' value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<f64>,
}

/// One-line definition of the exact W2 entry.
pub const W2_DEFINITION: &str =
    "w2: exact 2-Wasserstein distance (not squared) between the first k points of each set, \
optimal assignment on squared Euclidean costs, data units";
/// One-line definition of the sliced W2 entry.
pub const SLICED_W2_DEFINITION: &str =
    "sliced_w2: sqrt of the mean over random unit directions of the 1-D W2² of the \
projected first k points of each set (not squared), data units";
/// One-line definition of the MMD² entry.
pub const MMD2_DEFINITION: &str = "mmd2: unbiased MMD² with the RBF kernel exp(-|x-y|²/(2h²)), h = median pairwise \
distance of the reference's first k points, on the first k points of each set; may be slightly negative";

/// Metrics of samples against a reference set, with the floor that exact samples would reach.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReferenceReport {
    /// Points in the judged set, all of them.
    pub n_samples: usize,
    /// Points in the reference set, all of them.
    pub n_reference: usize,
    /// The metrics on the first k points of each set ([`compare`]).
    pub metrics: SampleMetrics,
    /// The same metrics between reference points 0..k and k..2k (same MMD bandwidth, same
    /// projections): present when the reference has at least 2k points.
    pub floor: Option<SampleMetrics>,
    /// Why there is no floor, or which points it used.
    pub floor_note: String,
}

/// [`compare`] of `samples` against `reference`, and its floor between two independent halves
/// of the reference set where that holds at least 2k points.
pub fn against_reference(
    samples: &Points,
    reference: &Points,
    max_points: usize,
    n_proj: usize,
    seed: u64,
) -> Result<ReferenceReport> {
    let metrics = compare(samples, reference, max_points, n_proj, seed)?;
    let k = metrics.n_points;
    let (floor, floor_note) = if reference.n >= 2 * k {
        let f = compare_sets(
            &rows(reference, k..2 * k),
            &rows(reference, 0..k),
            Some(metrics.mmd_bandwidth),
            n_proj,
            seed,
        )?;
        let note = format!("reference points {k}..{} against 0..{k}", 2 * k);
        (Some(f), note)
    } else {
        let note = format!(
            "no floor: the reference has {} points, fewer than 2k = {}; give at least {} reference points (or lower --max-points)",
            reference.n,
            2 * k,
            2 * k
        );
        (None, note)
    };
    Ok(ReferenceReport {
        n_samples: samples.n,
        n_reference: reference.n,
        metrics,
        floor,
        floor_note,
    })
}

impl ReferenceReport {
    /// Each metric with its definition, sizes and floor.
    pub fn entries(&self) -> Vec<(&'static str, Metric)> {
        let (m, k) = (&self.metrics, self.metrics.n_points);
        let entry = |value: f64, floor: Option<f64>, definition| Metric {
            value,
            se: None,
            definition,
            n_samples: Some(k),
            n_reference: Some(k),
            floor,
        };
        let f = self.floor.as_ref();
        vec![
            ("w2", entry(m.w2, f.map(|f| f.w2), W2_DEFINITION)),
            (
                "sliced_w2",
                entry(m.sliced_w2, f.map(|f| f.sliced_w2), SLICED_W2_DEFINITION),
            ),
            ("mmd2", entry(m.mmd2, f.map(|f| f.mmd2), MMD2_DEFINITION)),
        ]
    }
}

/// Fraction of the points of `x` whose nearest centre (Euclidean) is each of `centres`
/// (each centre must have length `x.d`); all zeros when `x` is empty.
pub fn mode_fractions(x: &Points, centres: &[Vec<f64>]) -> Vec<f64> {
    let mut counts = vec![0.0; centres.len()];
    if centres.is_empty() {
        return counts;
    }
    for i in 0..x.n {
        counts[nearest(x.row(i), centres)] += 1.0;
    }
    counts.iter().map(|c| c / (x.n.max(1)) as f64).collect()
}

/// Mean of the points of `x` assigned (nearest centre) to each centre; `None` for a centre
/// that received no points.
pub fn mode_means(x: &Points, centres: &[Vec<f64>]) -> Vec<Option<Vec<f64>>> {
    let mut sums = vec![vec![0.0; x.d]; centres.len()];
    let mut counts = vec![0usize; centres.len()];
    if centres.is_empty() {
        return Vec::new();
    }
    for i in 0..x.n {
        let k = nearest(x.row(i), centres);
        counts[k] += 1;
        sums[k].iter_mut().zip(x.row(i)).for_each(|(s, v)| *s += v);
    }
    sums.into_iter()
        .zip(counts)
        .map(|(s, c)| (c > 0).then(|| s.iter().map(|v| v / c as f64).collect()))
        .collect()
}

/// Fisher divergence estimate (1/n) Σ_i ½‖s_model(x_i) − s_true(x_i)‖² (with the ½ factor;
/// rows must correspond). Returns NaN if the shapes differ or n = 0.
pub fn fisher_divergence(s_model: &Points, s_true: &Points) -> f64 {
    if s_model.n != s_true.n || s_model.d != s_true.d || s_model.n == 0 {
        return f64::NAN;
    }
    0.5 * sq_dist(&s_model.data, &s_true.data) / s_model.n as f64
}

/// Mean and standard error (sample s.d./√n) of per-point values; s.e. 0 for fewer than 2.
pub fn mean_and_sem(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// Sample metrics against a known density p (a Gaussian mixture), with their definitions.
#[derive(Debug, serde::Serialize)]
pub struct DensityMetrics {
    pub n_points: usize,
    /// E_q\[−log p(x)\] over the samples, and its standard error.
    pub cross_entropy: f64,
    pub cross_entropy_se: f64,
    /// H(p) = E_p\[−log p(x)\] from `entropy_draws` exact draws, and its standard error.
    pub entropy: f64,
    pub entropy_se: f64,
    pub entropy_draws: usize,
    /// Share of the samples nearest to each component's mean, beside the component weights.
    pub mode_fractions: Vec<f64>,
    pub mode_weights: Vec<f64>,
    /// ½ Σ_k |fraction_k − w_k|, and the same for the first n exact draws (when draws ≥ n).
    pub mode_tv: f64,
    pub mode_tv_floor: Option<f64>,
    /// KSD² of the first `ksd_points` samples against p's exact score ([`ksd2_imq`]), ± s.e.
    pub ksd2: f64,
    pub ksd2_se: f64,
    pub ksd_points: usize,
    pub definitions: &'static str,
}

/// What `DensityMetrics` reports.
pub const DENSITY_DEFINITIONS: &str = "cross_entropy: mean of -log p(x) over the samples (nats per point; \
the sharpest sample-quality number when p is known: stray samples between modes cost many nats, where W2 \
barely moves); entropy: the same mean over exact draws from p, so cross_entropy - entropy is about 0 for exact samples \
(more when the samples are spread or off the modes, possibly less when they are too concentrated); standard \
errors over points; mode_fractions: share of samples whose nearest component mean is each component's, beside \
the component weights; mode_tv: half the summed absolute difference of the two, mode_tv_floor the same for as many \
exact draws; ksd2: kernel Stein discrepancy squared (IMQ kernel (1 + |x-y|²)^(-1/2), U-statistic) of the first \
ksd_points samples against the exact score of p, about 0 for exact samples";

/// One-line definitions of the [`DensityMetrics`] entries.
const CROSS_ENTROPY_DEFINITION: &str =
    "cross_entropy: mean of -log p(x) over the samples, nats per point; floor: the entropy of p";
const ENTROPY_DEFINITION: &str =
    "entropy: mean of -log p(x) over exact draws from p (H(p)), nats per point";
const EXCESS_DEFINITION: &str =
    "cross_entropy_minus_entropy: cross_entropy - entropy, nats per point; \
about 0 for exact samples, s.e. of the two combined";
const MODE_TV_DEFINITION: &str =
    "mode_tv: half the summed |share of samples nearest component k's mean - weight of \
k|; floor: the same for as many exact draws";

/// Cross-entropy of `samples` under `target`, its entropy from `draws` exact draws (seed `seed`),
/// the mode fractions, and the KSD² of the first `ksd_points` samples against the exact score.
pub fn against_density(
    samples: &Points,
    target: &crate::target::GaussianMixture,
    draws: usize,
    ksd_points: usize,
    seed: u64,
) -> Result<DensityMetrics> {
    if samples.d != target.dim() {
        bail!(
            "samples have dimension {} but the target has {}",
            samples.d,
            target.dim()
        );
    }
    if samples.n < 3 || draws < 2 {
        bail!("the metrics against a density need at least 3 samples and 2 exact draws");
    }
    let neg = |v: Vec<f64>| v.into_iter().map(|l| -l).collect::<Vec<_>>();
    let (logp, score) = target.log_prob_and_score_at(&samples.data, 1.0, 0.0)?;
    let (cross_entropy, cross_entropy_se) = mean_and_sem(&neg(logp));
    let exact = target.sample(draws, &mut ChaCha8Rng::seed_from_u64(seed));
    let (entropy, entropy_se) = mean_and_sem(&neg(target.log_prob(&exact)?));
    let tv = |f: &[f64]| {
        0.5 * f
            .iter()
            .zip(&target.weights)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
    };
    let mode_fractions = mode_fractions(samples, &target.means);
    let mode_tv_floor = (draws >= samples.n).then(|| {
        tv(&self::mode_fractions(
            &rows(&exact, 0..samples.n),
            &target.means,
        ))
    });
    let k = samples.n.min(ksd_points.max(3));
    let ksd = ksd2_imq(
        &rows(samples, 0..k),
        &Points::new(k, samples.d, score[..k * samples.d].to_vec())?,
    )?;
    Ok(DensityMetrics {
        n_points: samples.n,
        cross_entropy,
        cross_entropy_se,
        entropy,
        entropy_se,
        entropy_draws: draws,
        mode_tv: tv(&mode_fractions),
        mode_tv_floor,
        mode_fractions,
        mode_weights: target.weights.clone(),
        ksd2: ksd.ksd2,
        ksd2_se: ksd.se,
        ksd_points: k,
        definitions: DENSITY_DEFINITIONS,
    })
}

/// Distance from each point of `x` to its nearest neighbour in `reference` (Euclidean).
pub fn nearest_distances(x: &Points, reference: &Points) -> Vec<f64> {
    use rayon::prelude::*;
    (0..x.n)
        .into_par_iter()
        .map(|i| {
            let p = x.row(i);
            (0..reference.n)
                .map(|j| sq_dist(p, reference.row(j)))
                .fold(f64::INFINITY, f64::min)
                .sqrt()
        })
        .collect()
}

/// The share of `scores` below the `q`-quantile of `reference_scores` (the quantile returned
/// beside it): with scores log p(x), or −(distance to the nearest data point), the share of
/// samples off the data's support, about q for fresh data. Non-finite scores (log 0) count as below.
pub fn share_below_quantile(
    scores: &[f64],
    reference_scores: &[f64],
    q: f64,
) -> Result<(f64, f64)> {
    if scores.is_empty() || reference_scores.is_empty() || !(0.0..1.0).contains(&q) {
        bail!("share_below_quantile needs scores, reference scores and q in [0, 1)");
    }
    let mut r: Vec<f64> = reference_scores.to_vec();
    r.sort_by(f64::total_cmp);
    let threshold = r[((q * r.len() as f64) as usize).min(r.len() - 1)];
    let below = scores
        .iter()
        .filter(|&&s| s.is_nan() || s < threshold)
        .count();
    Ok((below as f64 / scores.len() as f64, threshold))
}

impl DensityMetrics {
    /// Each scalar metric with its definition, sizes and floor.
    pub fn entries(&self) -> Vec<(&'static str, Metric)> {
        let (n, draws) = (Some(self.n_points), Some(self.entropy_draws));
        let se = (self.cross_entropy_se.powi(2) + self.entropy_se.powi(2)).sqrt();
        vec![
            (
                "cross_entropy",
                Metric {
                    value: self.cross_entropy,
                    se: Some(self.cross_entropy_se),
                    definition: CROSS_ENTROPY_DEFINITION,
                    n_samples: n,
                    n_reference: None,
                    floor: Some(self.entropy),
                },
            ),
            (
                "entropy",
                Metric {
                    value: self.entropy,
                    se: Some(self.entropy_se),
                    definition: ENTROPY_DEFINITION,
                    n_samples: None,
                    n_reference: draws,
                    floor: None,
                },
            ),
            (
                "cross_entropy_minus_entropy",
                Metric {
                    value: self.cross_entropy - self.entropy,
                    se: Some(se),
                    definition: EXCESS_DEFINITION,
                    n_samples: n,
                    n_reference: draws,
                    floor: None,
                },
            ),
            (
                "mode_tv",
                Metric {
                    value: self.mode_tv,
                    se: None,
                    definition: MODE_TV_DEFINITION,
                    n_samples: n,
                    n_reference: self.mode_tv_floor.map(|_| self.n_points),
                    floor: self.mode_tv_floor,
                },
            ),
            (
                "ksd2",
                Metric {
                    value: self.ksd2,
                    se: Some(self.ksd2_se),
                    definition: KSD_DEFINITION,
                    n_samples: Some(self.ksd_points),
                    n_reference: None,
                    floor: None,
                },
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn random_points(n: usize, d: usize, seed: u64) -> Points {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let data = (0..n * d).map(|_| rng.sample(StandardNormal)).collect();
        Points::new(n, d, data).unwrap()
    }

    fn brute_w2_sq(a: &Points, b: &Points) -> f64 {
        fn rec(a: &Points, b: &Points, i: usize, used: &mut Vec<bool>, acc: f64, best: &mut f64) {
            if i == a.n {
                *best = best.min(acc);
                return;
            }
            for j in 0..b.n {
                if !used[j] {
                    used[j] = true;
                    rec(a, b, i + 1, used, acc + sq_dist(a.row(i), b.row(j)), best);
                    used[j] = false;
                }
            }
        }
        let mut best = f64::INFINITY;
        rec(a, b, 0, &mut vec![false; b.n], 0.0, &mut best);
        best / a.n as f64
    }

    #[test]
    fn w2_matches_brute_force() {
        for seed in 0..50 {
            let d = 1 + (seed as usize % 3);
            let a = random_points(6, d, seed);
            let b = random_points(6, d, 1000 + seed).scaled(2.0);
            let w = w2_squared_exact(&a, &b).unwrap();
            let bf = brute_w2_sq(&a, &b);
            assert!(
                (w - bf).abs() < 1e-10 * bf.max(1.0),
                "seed {seed}: {w} vs {bf}"
            );
        }
        // Ties: integer grid points with many equal costs.
        let a = Points::new(6, 1, vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0]).unwrap();
        let b = Points::new(6, 1, vec![1.0, 1.0, 1.0, 0.0, 2.0, 2.0]).unwrap();
        assert!((w2_squared_exact(&a, &b).unwrap() - brute_w2_sq(&a, &b)).abs() < 1e-12);
    }

    #[test]
    fn w2_one_d_closed_form_and_invariants() {
        let n = 500;
        let a = random_points(n, 1, 1);
        let b = random_points(n, 1, 2).scaled(3.0);
        let (mut sa, mut sb) = (a.data.clone(), b.data.clone());
        sa.sort_by(f64::total_cmp);
        sb.sort_by(f64::total_cmp);
        let closed = (sa
            .iter()
            .zip(&sb)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            / n as f64)
            .sqrt();
        let w = w2_exact(&a, &b).unwrap();
        assert!((w - closed).abs() < 1e-9, "{w} vs {closed}");
        let s = sliced_w2(&a, &b, 7, 3).unwrap();
        assert!((s - closed).abs() < 1e-9, "{s} vs {closed}");

        let x = random_points(300, 2, 5);
        assert!(w2_exact(&x, &x).unwrap() < 1e-12);
        let c = [3.0, -4.0];
        let mut y = x.clone();
        y.data
            .iter_mut()
            .enumerate()
            .for_each(|(k, v)| *v += c[k % 2]);
        assert!((w2_exact(&x, &y).unwrap() - 5.0).abs() < 1e-9);
        // Tiny scales still solve correctly (no absolute tolerance in the solver).
        let (xs, ys) = (
            random_points(40, 2, 8).scaled(1e-9),
            random_points(40, 2, 9).scaled(1e-9),
        );
        let big = w2_exact(&xs.scaled(1e9), &ys.scaled(1e9)).unwrap();
        assert!((w2_exact(&xs, &ys).unwrap() * 1e9 - big).abs() < 1e-6 * big);

        assert!(w2_exact(&x, &random_points(299, 2, 1)).is_err());
        assert!(w2_exact(&x, &random_points(300, 3, 1)).is_err());
        assert!(w2_exact(
            &Points::new(0, 2, vec![]).unwrap(),
            &Points::new(0, 2, vec![]).unwrap()
        )
        .is_err());
        let mut bad = x.clone();
        bad.data[7] = f64::NAN;
        assert!(w2_exact(&x, &bad).is_err());
        assert!(sliced_w2(&x, &y, 0, 0).is_err());
    }

    #[test]
    fn mmd_behaviour() {
        let a = random_points(400, 2, 11);
        let b = random_points(400, 2, 12);
        let (same, h) = mmd2_rbf(&a, &b, None).unwrap();
        assert!(same.abs() < 0.01, "{same}");
        assert!(
            (h - 2f64.sqrt() * (2.0 * 2f64.ln()).sqrt()).abs() < 0.15,
            "h = {h}"
        );
        let mut c = b.clone();
        c.data.iter_mut().step_by(2).for_each(|v| *v += 1.0);
        let (shifted, _) = mmd2_rbf(&c, &b, None).unwrap();
        assert!(shifted > 0.05, "{shifted}");
        assert!(mmd2_rbf(&a, &b, Some(-1.0)).is_err());
        let (_, h2) = mmd2_rbf(&a, &b, Some(0.7)).unwrap();
        assert_eq!(h2, 0.7);

        let r = compare(&c, &b, 300, 50, 0).unwrap();
        assert_eq!(r.n_points, 300);
        assert!(r.w2 > 0.3 && r.sliced_w2 > 0.1 && r.mmd2 > 0.05, "{r:?}");
        assert!(compare(&c, &b, 0, 50, 0).is_err());
    }

    #[test]
    fn modes_and_fisher() {
        let x = Points::new(4, 2, vec![0.1, 0.0, -0.1, 0.2, 9.0, 10.0, 0.0, 0.0]).unwrap();
        let centres = vec![vec![0.0, 0.0], vec![10.0, 10.0], vec![-50.0, 0.0]];
        assert_eq!(mode_fractions(&x, &centres), vec![0.75, 0.25, 0.0]);
        let m = mode_means(&x, &centres);
        let m0 = m[0].as_ref().unwrap();
        assert!(m0[0].abs() < 1e-12 && (m0[1] - 0.2 / 3.0).abs() < 1e-12);
        assert_eq!(m[1], Some(vec![9.0, 10.0]));
        assert_eq!(m[2], None);
        assert!(mode_means(&x, &[]).is_empty() && mode_fractions(&x, &[]).is_empty());
        let s = Points::new(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let t = Points::new(2, 2, vec![1.0, 0.0, 3.0, 5.0]).unwrap();
        assert!((fisher_divergence(&s, &t) - 0.5 * (4.0 + 1.0) / 2.0).abs() < 1e-15);
        assert!(fisher_divergence(&s, &x).is_nan());
    }

    /// Exact samples' cross-entropy equals the entropy within 3 standard errors; samples from a
    /// wider mixture (every covariance doubled) cost clearly more.
    #[test]
    fn cross_entropy_of_exact_samples_is_the_entropy() {
        let target = crate::target::GaussianMixture::anisotropic3();
        let x = target.sample(20_000, &mut ChaCha8Rng::seed_from_u64(3));
        let m = against_density(&x, &target, 100_000, 2000, 4).unwrap();
        let se = (m.cross_entropy_se.powi(2) + m.entropy_se.powi(2)).sqrt();
        assert!(
            (m.cross_entropy - m.entropy).abs() < 3.0 * se,
            "CE {} vs H {} (± {se})",
            m.cross_entropy,
            m.entropy
        );
        let wide = crate::target::GaussianMixture::new(
            target.weights.clone(),
            target.means.clone(),
            vec![
                vec![2.0, 1.2, 1.2, 1.0],
                vec![0.6, -0.2, -0.2, 1.6],
                vec![1.2, 0.0, 0.0, 0.2],
            ],
        )
        .unwrap();
        let y = wide.sample(20_000, &mut ChaCha8Rng::seed_from_u64(5));
        let w = against_density(&y, &target, 100_000, 2000, 4).unwrap();
        assert!(
            w.cross_entropy - w.entropy > 0.2,
            "wide: {}",
            w.cross_entropy - w.entropy
        );
        let sum: f64 = m.mode_fractions.iter().sum();
        assert!((sum - 1.0).abs() < 1e-12);
    }

    /// W2 between samples of N(0, I) and N(μ, s²I) against the closed form
    /// W2² = ‖μ‖² + d(1 − s)²: in 1-D (n = 2000, where the empirical W2 converges fast) and
    /// 2-D (n = 600), averaged over replicates, within 4 replicate standard errors plus the
    /// empirical measures' own W2² (their finite-sample bias, O(log n / n) in 2-D).
    #[test]
    fn w2_of_gaussian_samples_matches_the_closed_form() {
        for (d, n, reps) in [(1usize, 2000usize, 20u64), (2, 600, 10)] {
            let (mu, s) = (1.0f64, 2.0f64);
            let closed = mu * mu * d as f64 + d as f64 * (1.0 - s).powi(2);
            let (mut w2s, mut noise) = (Vec::new(), Vec::new());
            for r in 0..reps {
                let a = random_points(n, d, 10 + r);
                let b0 = random_points(n, d, 100 + r);
                let mut b = b0.scaled(s);
                b.data.iter_mut().for_each(|v| *v += mu);
                w2s.push(w2_squared_exact(&a, &b).unwrap());
                noise.push(w2_squared_exact(&a, &b0).unwrap());
            }
            let (mean, sem) = mean_and_sem(&w2s);
            let bias = noise.iter().sum::<f64>() / noise.len() as f64;
            assert!(
                (mean - closed).abs() < 4.0 * sem + bias,
                "d = {d}: W2² {mean} ± {sem} vs {closed} (bias scale {bias})"
            );
            // and the tolerance is tight enough to matter
            assert!(4.0 * sem + bias < 0.15 * closed, "d = {d}: {sem} {bias}");
        }
    }

    /// The entropy reported for a single Gaussian against ½ log((2πe)^d |Σ|), within 3 s.e.
    #[test]
    fn entropy_of_a_gaussian_matches_the_closed_form() {
        let cov = vec![2.0, 0.6, 0.0, 0.6, 1.0, 0.3, 0.0, 0.3, 0.5];
        let det = 2.0 * (1.0 * 0.5 - 0.09) - 0.6 * (0.6 * 0.5) + 0.0;
        let p = crate::target::GaussianMixture::gaussian(vec![1.0, -2.0, 0.5], cov).unwrap();
        let x = p.sample(500, &mut ChaCha8Rng::seed_from_u64(1));
        let m = against_density(&x, &p, 200_000, 500, 2).unwrap();
        let closed =
            0.5 * (3.0 * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln() + f64::ln(det));
        assert!(
            (m.entropy - closed).abs() < 3.0 * m.entropy_se,
            "H {} ± {} vs {closed}",
            m.entropy,
            m.entropy_se
        );
        assert!(m.ksd2.abs() < 3.0 * m.ksd2_se, "{m:?}");
        assert_eq!(m.mode_tv, 0.0);
        let names: Vec<&str> = m.entries().iter().map(|e| e.0).collect();
        assert!(names.contains(&"ksd2") && names.contains(&"cross_entropy"));
    }

    /// Fisher divergence of N(0, I)'s exact score is 0; of the scaled score −a x it is
    /// ½ (a − 1)² E‖x‖² = ½ (a − 1)² d, within 3 s.e. (Var ‖x‖² = 2d).
    #[test]
    fn fisher_divergence_matches_the_closed_form() {
        let (n, d, a) = (100_000, 3, 1.5);
        let x = random_points(n, d, 21);
        let exact = x.scaled(-1.0);
        assert_eq!(fisher_divergence(&exact, &exact), 0.0);
        let f = fisher_divergence(&x.scaled(-a), &exact);
        let c = 0.5 * (a - 1.0) * (a - 1.0);
        let (closed, se) = (c * d as f64, c * (2.0 * d as f64 / n as f64).sqrt());
        assert!((f - closed).abs() < 3.0 * se, "{f} vs {closed} ± {se}");
    }

    /// With a reference of at least 2k points each metric gets a floor from two halves of it,
    /// and an exact-sample set scores near that floor; a smaller reference says why there is none.
    #[test]
    fn reference_floor_from_two_halves() {
        let reference = random_points(600, 2, 31);
        let samples = random_points(300, 2, 32);
        let r = against_reference(&samples, &reference, 300, 20, 0).unwrap();
        let f = r.floor.as_ref().unwrap();
        assert_eq!((f.n_points, r.metrics.n_points), (300, 300));
        assert_eq!(f.mmd_bandwidth, r.metrics.mmd_bandwidth);
        assert!((r.metrics.w2 / f.w2 - 1.0).abs() < 0.3, "{r:?}");
        let entries = r.entries();
        assert_eq!(entries.len(), 3);
        assert!(entries
            .iter()
            .all(|(name, m)| m.floor.is_some() && m.definition.starts_with(name)));
        let small = against_reference(&samples, &rows(&reference, 0..400), 300, 20, 0).unwrap();
        assert!(small.floor.is_none() && small.floor_note.contains("fewer than 2k"));
    }
}
