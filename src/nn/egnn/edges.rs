//! The edge work of an E_GCL layer as one fused CPU op (f32) in candle's graph: from the node
//! projections and each edge's two squared distances to the messages summed per receiver and the
//! coordinate weights, with a hand-written backward pass.
//!
//! Per edge (i, j): z₁ = Pᵢ + Qⱼ + w_r r + w_d d + b₁, m₁ = a(z₁), m = a(W₂ m₁ + b₂),
//! α = σ(w_α·m + b_α), m̃ = α m, c = a(W_c m̃ + b_c), φ = R tanh(w_o·c); the outputs are
//! Σⱼ m̃ᵢⱼ per receiver and φ per edge. The candle-op version of the same layer allocates and
//! walks a [B·E, H] tensor for each of some forty element-wise steps (forward and backward); here
//! blocks of about 128 edges (whole samples) run the whole chain while they are in cache, the
//! products with the bias and activation applied as they are stored (`gemm_fused`). The backward
//! pass recomputes a block's forward instead of keeping it: at LJ-13 size each [B·E, H]
//! intermediate is 41 MB, and reading them back from memory costs more than the two products.

use crate::flat::with_values;
use crate::nn::contiguous;
use crate::nn::fused::{chunks, split_rows};
use crate::nn::gemm::{gemm, gemm_fused, gemm_scaled, Epilogue, PackedB, Rhs};
use crate::nn::kernels::{self, multiversion, Keep};
use crate::nn::Activation;
use anyhow::{bail, Result};
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// Edges per block: a block's dozen [rows × H] buffers stay in L2 (about 800 KB at H = 128).
const BLOCK_EDGES: usize = 128;

/// Where each piece sits in the op's flat weights (`Egnn` packs them in this order).
#[derive(Clone, Copy)]
pub(super) struct Offsets {
    /// The first edge layer's columns acting on r = ‖xᵢ − xⱼ‖² and on d = ‖xᵢ⁰ − xⱼ⁰‖²
    /// (H values each: w_r, then w_d).
    pub wr: usize,
    pub b1: usize,
    /// W₂ [H × H], row-major as its variable.
    pub w2: usize,
    pub b2: usize,
    pub wa: usize,
    pub ba: usize,
    pub wc: usize,
    pub bc: usize,
    pub wo: usize,
    pub len: usize,
}

impl Offsets {
    /// The layout for `h` hidden features.
    pub fn new(h: usize) -> Self {
        let hh = h * h;
        Offsets {
            wr: 0,
            b1: 2 * h,
            w2: 3 * h,
            b2: 3 * h + hh,
            wa: 4 * h + hh,
            ba: 5 * h + hh,
            wc: 5 * h + hh + 1,
            bc: 5 * h + 2 * hh + 1,
            wo: 6 * h + 2 * hh + 1,
            len: 7 * h + 2 * hh + 1,
        }
    }
}

/// The op for N particles and H hidden features. Arguments: nodes [B, N, 2H] (Pᵢ, then Qᵢ: the
/// first edge layer's blocks acting on hᵢ and on hⱼ, applied per node), distances [B, E, 2]
/// (r, d per edge, in edge order) and the flat weights (`Offsets`); result [B, N·H + E]: each
/// sample's Σⱼ m̃ᵢⱼ [N, H], then its φ \[E\]. Edges run by receiver i, then sender j ≠ i.
pub(super) struct EdgeOp {
    pub particles: usize,
    pub hidden: usize,
    pub activation: Activation,
    /// R, the layer's bound on a coordinate weight.
    pub range: f32,
    /// The network's per-thread buffers, kept from call to call: allocated afresh, their pages
    /// would be faulted in (and zeroed) again on every call.
    pub work: Workspaces,
}

/// Per-thread block buffers shared by every call of a network's edge ops.
pub(super) type Workspaces = Arc<Mutex<Vec<Work>>>;

/// The weights of one call, with W₂ and W_c packed for the products.
struct Weights<'a> {
    flat: &'a [f32],
    at: Offsets,
    w2t: PackedB,
    wct: PackedB,
    /// W₂ and W_c as they are, for the backward pass's G·W (empty in a forward call).
    w2: PackedB,
    wc: PackedB,
}

impl<'a> Weights<'a> {
    fn new(flat: &'a [f32], h: usize, backward: bool) -> Self {
        let at = Offsets::new(h);
        let pack = |off: usize, transposed: bool| {
            let mut p = PackedB::default();
            if transposed || backward {
                // Wᵀ [in × out] is W read with strides (1, H)
                let strides = if transposed { (1, h) } else { (h, 1) };
                p.pack(&flat[off..off + h * h], strides, h, h);
            }
            p
        };
        Weights {
            flat,
            at,
            w2t: pack(at.w2, true),
            wct: pack(at.wc, true),
            w2: pack(at.w2, false),
            wc: pack(at.wc, false),
        }
    }

    fn get(&self, off: usize, len: usize) -> &[f32] {
        &self.flat[off..off + len]
    }
}

/// One thread's buffers for a block of edges, reused block after block.
#[derive(Default)]
pub(super) struct Work {
    /// m₁ and a'(z₁); m and a'(z₂); m̃; c and a'(z₃) [rows × H].
    m1: Vec<f32>,
    d1: Vec<f32>,
    m: Vec<f32>,
    d2: Vec<f32>,
    mt: Vec<f32>,
    c: Vec<f32>,
    d3: Vec<f32>,
    /// α and tanh(w_o·c) per edge.
    att: Vec<f32>,
    th: Vec<f32>,
    /// Per-edge scratch and cotangents [rows × H].
    s: Vec<f32>,
    g: Vec<f32>,
    g2: Vec<f32>,
}

fn resize(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

multiversion! {
    /// z₁ of every edge of whole samples: Pᵢ + Qⱼ + w_r r + w_d d, row by row in edge order.
    pub fn first_layer(z: &mut [f32], nodes: &[f32], dist: &[f32], wrd: &[f32], n: usize) {
        let h = wrd.len() / 2;
        let (wr, wd) = wrd.split_at(h);
        let mut rows = z.chunks_exact_mut(h);
        let mut dist = dist.chunks_exact(2);
        for sample in nodes.chunks_exact(2 * n * h) {
            for i in 0..n {
                let p = &sample[2 * i * h..(2 * i + 1) * h];
                for j in (0..n).filter(|&j| j != i) {
                    let q = &sample[(2 * j + 1) * h..(2 * j + 2) * h];
                    let (Some(row), Some(rd)) = (rows.next(), dist.next()) else {
                        return;
                    };
                    let (r, d) = (rd[0], rd[1]);
                    for ((((z, p), q), a), b) in row.iter_mut().zip(p).zip(q).zip(wr).zip(wd) {
                        *z = p + q + a * r + b * d;
                    }
                }
            }
        }
    }
}

/// a·b in 16 partial sums: a single running sum is a chain of dependent adds that the compiler
/// may not reorder, so it would neither vectorise nor pipeline.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let ((ca, ra), (cb, rb)) = (a.as_chunks::<16>(), b.as_chunks::<16>());
    for (x, y) in ca.iter().zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

multiversion! {
    /// out[r] = x[r]·w for each row of x [rows × w.len()].
    pub fn row_dots(out: &mut [f32], x: &[f32], w: &[f32]) {
        for (o, row) in out.iter_mut().zip(x.chunks_exact(w.len())) {
            *o = dot(row, w);
        }
    }
}

multiversion! {
    /// out[r] = x[r]·y[r] for each pair of rows of width w.
    pub fn pair_dots(out: &mut [f32], x: &[f32], y: &[f32], w: usize) {
        for ((o, a), b) in out.iter_mut().zip(x.chunks_exact(w)).zip(y.chunks_exact(w)) {
            *o = dot(a, b);
        }
    }
}

multiversion! {
    /// y[r] = s[r] x[r] for each row of width w.
    pub fn scale_rows(y: &mut [f32], x: &[f32], s: &[f32], w: usize) {
        for ((y, x), s) in y.chunks_exact_mut(w).zip(x.chunks_exact(w)).zip(s) {
            y.iter_mut().zip(x).for_each(|(y, x)| *y = s * x);
        }
    }
}

multiversion! {
    /// acc += Σ_r s[r] x[r] over the rows of x [rows × acc.len()].
    pub fn add_weighted_rows(acc: &mut [f32], x: &[f32], s: &[f32]) {
        for (row, s) in x.chunks_exact(acc.len()).zip(s) {
            acc.iter_mut().zip(row).for_each(|(a, x)| *a += s * x);
        }
    }
}

multiversion! {
    /// y[r] = s[r] w ⊙ d[r] for each row: a scalar's cotangent through w·x, then through a'(z).
    pub fn outer_scaled(y: &mut [f32], s: &[f32], w: &[f32], d: &[f32]) {
        for ((y, d), s) in y.chunks_exact_mut(w.len()).zip(d.chunks_exact(w.len())).zip(s) {
            for ((y, w), d) in y.iter_mut().zip(w).zip(d) {
                *y = s * w * d;
            }
        }
    }
}

multiversion! {
    /// g[r] ← (α[r] g[r] + s[r] w) ⊙ d[r]: back through m̃ = α m and α's logit w·m + b (whose
    /// cotangent is s), then through a'(z₂).
    pub fn through_attention(g: &mut [f32], att: &[f32], s: &[f32], w: &[f32], d: &[f32]) {
        let rows = g.chunks_exact_mut(w.len()).zip(d.chunks_exact(w.len()));
        for (((g, d), a), s) in rows.zip(att).zip(s) {
            for ((g, w), d) in g.iter_mut().zip(w).zip(d) {
                *g = (a * *g + s * w) * d;
            }
        }
    }
}

multiversion! {
    /// acc [nodes × h] += the sum of each receiver's n − 1 consecutive edge rows of x.
    pub fn sum_receivers(acc: &mut [f32], x: &[f32], n: usize, h: usize) {
        for (a, rows) in acc.chunks_exact_mut(h).zip(x.chunks_exact((n - 1) * h)) {
            for row in rows.chunks_exact(h) {
                a.iter_mut().zip(row).for_each(|(a, r)| *a += r);
            }
        }
    }
}

multiversion! {
    /// Each edge row of x += its receiver's row of acc [nodes × h] (`sum_receivers` reversed).
    pub fn spread_receivers(x: &mut [f32], acc: &[f32], n: usize, h: usize) {
        for (a, rows) in acc.chunks_exact(h).zip(x.chunks_exact_mut((n - 1) * h)) {
            for row in rows.chunks_exact_mut(h) {
                row.iter_mut().zip(a).for_each(|(r, a)| *r += a);
            }
        }
    }
}

multiversion! {
    /// The node cotangents [samples × N × 2H] += each edge's g₁ at its receiver's P block and its
    /// sender's Q block.
    pub fn node_cotangents(gnodes: &mut [f32], g: &[f32], n: usize, h: usize) {
        let mut rows = g.chunks_exact(h);
        for sample in gnodes.chunks_exact_mut(2 * n * h) {
            for i in 0..n {
                for j in (0..n).filter(|&j| j != i) {
                    let Some(row) = rows.next() else { return };
                    let p = &mut sample[2 * i * h..(2 * i + 1) * h];
                    p.iter_mut().zip(row).for_each(|(a, g)| *a += g);
                    let q = &mut sample[(2 * j + 1) * h..(2 * j + 2) * h];
                    q.iter_mut().zip(row).for_each(|(a, g)| *a += g);
                }
            }
        }
    }
}

impl EdgeOp {
    fn edges(&self) -> usize {
        self.particles * (self.particles - 1)
    }

    /// Whole samples per block.
    fn samples_per_block(&self) -> usize {
        (BLOCK_EDGES / self.edges()).max(1)
    }

    /// C = a(A·B + bias) [rows × H] with B packed, the activation applied as the product is
    /// stored where the kernels allow, and a'(z) into `d` when given.
    fn dense(
        &self,
        c: &mut [f32],
        a: &[f32],
        b: &PackedB,
        bias: &[f32],
        mut d: Option<&mut [f32]>,
    ) {
        let h = self.hidden;
        let dims = (c.len() / h, h, h);
        if self.activation == Activation::Silu {
            let epilogue = Epilogue::BiasSilu {
                bias,
                d1: d.as_deref_mut(),
            };
            if gemm_fused(dims, c, a, (h, 1), Rhs::Packed(b), epilogue) {
                return;
            }
        }
        gemm(dims, c, h, a, (h, 1), Rhs::Packed(b), false);
        let act = Some(self.activation);
        match d {
            Some(d) => kernels::bias_act(c, bias, act, Keep::First, d, &mut []),
            None => kernels::bias_act(c, bias, act, Keep::Value, &mut [], &mut []),
        }
    }

    /// The forward chain on whole samples (their nodes and distances), leaving m₁, m, α, m̃, c
    /// and tanh(w_o·c) in `ws`, and the derivatives a'(z) too when `keep`.
    fn forward_block(&self, w: &Weights, nodes: &[f32], dist: &[f32], ws: &mut Work, keep: bool) {
        let (h, at) = (self.hidden, w.at);
        let rows = dist.len() / 2;
        let len = rows * h;
        let Work {
            m1,
            d1,
            m,
            d2,
            mt,
            c,
            d3,
            att,
            th,
            ..
        } = ws;
        let m1 = resize(m1, len);
        first_layer(m1, nodes, dist, w.get(at.wr, 2 * h), self.particles);
        let act = Some(self.activation);
        let b1 = w.get(at.b1, h);
        if keep {
            kernels::bias_act(m1, b1, act, Keep::First, resize(d1, len), &mut []);
        } else {
            kernels::bias_act(m1, b1, act, Keep::Value, &mut [], &mut []);
        }
        let m = resize(m, len);
        self.dense(
            m,
            m1,
            &w.w2t,
            w.get(at.b2, h),
            keep.then(|| resize(d2, len)),
        );
        let att = resize(att, rows);
        row_dots(att, m, w.get(at.wa, h));
        let ba = w.flat[at.ba];
        att.iter_mut()
            .for_each(|a| *a = 1.0 / (1.0 + (-(*a + ba)).exp()));
        let mt = resize(mt, len);
        scale_rows(mt, m, att, h);
        let c = resize(c, len);
        self.dense(
            c,
            mt,
            &w.wct,
            w.get(at.bc, h),
            keep.then(|| resize(d3, len)),
        );
        let th = resize(th, rows);
        row_dots(th, c, w.get(at.wo, h));
        th.iter_mut().for_each(|t| *t = t.tanh());
    }

    /// The result [B, N·H + E] at nodes [B, N, 2H] and distances [B, E, 2].
    fn forward(&self, nodes: &[f32], dist: &[f32], flat: &[f32]) -> Vec<f32> {
        let (n, h, e) = (self.particles, self.hidden, self.edges());
        let b = dist.len() / (2 * e);
        let stride = n * h + e;
        let w = &Weights::new(flat, h, false);
        let mut out = vec![0.0f32; b * stride];
        let parts = chunks(b);
        let outs = split_rows(&mut out, &parts, stride);
        let mut works = self.take_work(parts.len());
        let jobs = parts
            .into_iter()
            .zip(outs)
            .zip(works.iter_mut())
            .map(|((samples, out), ws)| {
                move || {
                    let spb = self.samples_per_block();
                    let mut outs = out.chunks_exact_mut(stride);
                    for s0 in samples.clone().step_by(spb) {
                        let s1 = (s0 + spb).min(samples.end);
                        let nodes = &nodes[s0 * 2 * n * h..s1 * 2 * n * h];
                        self.forward_block(w, nodes, &dist[s0 * 2 * e..s1 * 2 * e], ws, false);
                        let (mt, th) = (&ws.mt, &ws.th);
                        for (k, o) in (s0..s1).zip(outs.by_ref()) {
                            let (agg, phi) = o.split_at_mut(n * h);
                            let rows = (k - s0) * e * h..(k - s0 + 1) * e * h;
                            sum_receivers(agg, &mt[rows], n, h);
                            let t = &th[(k - s0) * e..(k - s0 + 1) * e];
                            phi.iter_mut().zip(t).for_each(|(p, t)| *p = self.range * t);
                        }
                    }
                }
            })
            .collect();
        crate::pool::run_all(jobs);
        self.give_back(works);
        out
    }

    /// `count` workspaces from the network's (new ones where it has fewer).
    fn take_work(&self, count: usize) -> Vec<Work> {
        let mut kept = self.work.lock().unwrap_or_else(|e| e.into_inner());
        let have = count.min(kept.len());
        let mut taken: Vec<Work> = kept.drain(..have).collect();
        taken.resize_with(count, Work::default);
        taken
    }

    /// Returns workspaces to the network for its next calls.
    fn give_back(&self, works: Vec<Work>) {
        self.work
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(works);
    }

    /// The cotangents of nodes [B, N, 2H], distances [B, E, 2] and the flat weights, given the
    /// result's cotangent `g_out` [B, N·H + E].
    fn backward(
        &self,
        nodes: &[f32],
        dist: &[f32],
        flat: &[f32],
        g_out: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (n, h, e) = (self.particles, self.hidden, self.edges());
        let b = dist.len() / (2 * e);
        let stride = n * h + e;
        let w = &Weights::new(flat, h, true);
        let (mut g_nodes, mut g_dist) = (vec![0.0f32; nodes.len()], vec![0.0f32; dist.len()]);
        let parts = chunks(b);
        let gn = split_rows(&mut g_nodes, &parts, 2 * n * h);
        let gd = split_rows(&mut g_dist, &parts, 2 * e);
        let mut works = self.take_work(parts.len());
        let jobs = parts
            .into_iter()
            .zip(gn)
            .zip(gd)
            .zip(works.iter_mut())
            .map(|(((samples, gn), gd), ws)| {
                move || {
                    let mut gw = vec![0.0f32; w.at.len];
                    let spb = self.samples_per_block();
                    let base = samples.start;
                    for s0 in samples.clone().step_by(spb) {
                        let s1 = (s0 + spb).min(samples.end);
                        let (k0, k1) = (s0 - base, s1 - base);
                        self.backward_block(
                            w,
                            (
                                &nodes[s0 * 2 * n * h..s1 * 2 * n * h],
                                &dist[s0 * 2 * e..s1 * 2 * e],
                            ),
                            &g_out[s0 * stride..s1 * stride],
                            (
                                &mut gn[k0 * 2 * n * h..k1 * 2 * n * h],
                                &mut gd[k0 * 2 * e..k1 * 2 * e],
                            ),
                            &mut gw,
                            ws,
                        );
                    }
                    gw
                }
            })
            .collect();
        let mut grads = crate::pool::run_all(jobs).into_iter();
        self.give_back(works);
        let mut g_flat = grads.next().unwrap_or_else(|| vec![0.0; w.at.len]);
        for other in grads {
            g_flat.iter_mut().zip(&other).for_each(|(a, b)| *a += b);
        }
        (g_nodes, g_dist, g_flat)
    }

    /// One block's reverse pass: the forward recomputed, then the cotangents back through it into
    /// the block's node and distance cotangents and this thread's weight gradient `gw`.
    fn backward_block(
        &self,
        w: &Weights,
        (nodes, dist): (&[f32], &[f32]),
        g_out: &[f32],
        (g_nodes, g_dist): (&mut [f32], &mut [f32]),
        gw: &mut [f32],
        ws: &mut Work,
    ) {
        let (n, h, e, at) = (self.particles, self.hidden, self.edges(), w.at);
        self.forward_block(w, nodes, dist, ws, true);
        let rows = dist.len() / 2;
        let len = rows * h;
        let (m1, d1, m, d2) = (&ws.m1[..len], &ws.d1[..len], &ws.m[..len], &ws.d2[..len]);
        let (mt, c, d3, att) = (&ws.mt[..len], &ws.c[..len], &ws.d3[..len], &ws.att[..rows]);
        let (g, g2) = (resize(&mut ws.g, len), resize(&mut ws.g2, len));
        let stride = n * h + e;
        // φ = R tanh(w_o·c): the logit's cotangent, over th
        let gzo = &mut ws.th[..rows];
        for (k, go) in g_out.chunks_exact(stride).enumerate() {
            let phi = &go[n * h..];
            for (t, gp) in gzo[k * e..(k + 1) * e].iter_mut().zip(phi) {
                *t = gp * self.range * (1.0 - *t * *t);
            }
        }
        add_weighted_rows(&mut gw[at.wo..at.wo + h], c, gzo);
        // z₃ = W_c m̃ + b_c
        outer_scaled(g, gzo, w.get(at.wo, h), d3);
        gemm(
            (h, h, rows),
            &mut gw[at.wc..],
            h,
            g,
            (1, h),
            Rhs::Strided(mt, (h, 1)),
            true,
        );
        kernels::add_column_sums(&mut gw[at.bc..at.bc + h], g);
        gemm((rows, h, h), g2, h, g, (h, 1), Rhs::Packed(&w.wc), false);
        // m̃'s cotangent also comes from the receivers' sums
        for (k, go) in g_out.chunks_exact(stride).enumerate() {
            spread_receivers(&mut g2[k * e * h..(k + 1) * e * h], &go[..n * h], n, h);
        }
        // m̃ = α m, α = σ(w_α·m + b_α): the logit's cotangent (m̃'s · m) α (1 − α), over s
        let gza = resize(&mut ws.s, rows);
        pair_dots(gza, g2, m, h);
        gza.iter_mut()
            .zip(att)
            .for_each(|(s, a)| *s *= a * (1.0 - a));
        add_weighted_rows(&mut gw[at.wa..at.wa + h], m, gza);
        gw[at.ba] += gza.iter().sum::<f32>();
        through_attention(g2, att, gza, w.get(at.wa, h), d2);
        // z₂ = W₂ m₁ + b₂
        gemm(
            (h, h, rows),
            &mut gw[at.w2..],
            h,
            g2,
            (1, h),
            Rhs::Strided(m1, (h, 1)),
            true,
        );
        kernels::add_column_sums(&mut gw[at.b2..at.b2 + h], g2);
        gemm_scaled((rows, h, h), g, g2, (h, 1), Rhs::Packed(&w.w2), d1);
        // z₁ = Pᵢ + Qⱼ + w_r r + w_d d + b₁
        kernels::add_column_sums(&mut gw[at.b1..at.b1 + h], g);
        node_cotangents(g_nodes, g, n, h);
        let (r, d): (Vec<f32>, Vec<f32>) = dist.chunks_exact(2).map(|p| (p[0], p[1])).unzip();
        let (gr, gd) = gw[at.wr..at.wr + 2 * h].split_at_mut(h);
        add_weighted_rows(gr, g, &r);
        add_weighted_rows(gd, g, &d);
        let (mut dots_r, mut dots_d) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        row_dots(&mut dots_r, g, w.get(at.wr, h));
        row_dots(&mut dots_d, g, w.get(at.wr + h, h));
        for ((gd, a), b) in g_dist
            .chunks_exact_mut(2)
            .zip(dots_r.iter())
            .zip(dots_d.iter())
        {
            gd[0] += a;
            gd[1] += b;
        }
    }
}

impl EdgeOp {
    /// Checks the arguments' shapes: (B, nodes, distances, weights) value counts agree.
    fn check(&self, nodes: &[usize], dist: &[usize], flat: &[usize]) -> Result<usize> {
        let (n, h, e) = (self.particles, self.hidden, self.edges());
        match (nodes, dist, flat) {
            ([b, nn, hh], [b2, ee, 2], [len])
                if *b == *b2
                    && *nn == n
                    && *hh == 2 * h
                    && *ee == e
                    && *len == Offsets::new(h).len =>
            {
                Ok(*b)
            }
            _ => bail!(
                "egnn edge op: nodes {nodes:?}, distances {dist:?}, weights {flat:?} do not fit \
                 {n} particles and {h} hidden features"
            ),
        }
    }
}

/// An anyhow error as candle's.
fn candle_err(e: anyhow::Error) -> candle_core::Error {
    candle_core::Error::Msg(format!("{e:#}"))
}

impl CustomOp3 for EdgeOp {
    fn name(&self) -> &'static str {
        "egnn-edges"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let b = self
            .check(l1.dims(), l2.dims(), l3.dims())
            .map_err(candle_err)?;
        let out = self.forward(
            contiguous(s1, l1, self.name())?,
            contiguous(s2, l2, self.name())?,
            contiguous(s3, l3, self.name())?,
        );
        let shape = Shape::from((b, self.particles * self.hidden + self.edges()));
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        nodes: &Tensor,
        dist: &Tensor,
        flat: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gn, gd, gw) = with_values::<f32, _>(nodes, |nv| {
            with_values::<f32, _>(dist, |dv| {
                with_values::<f32, _>(flat, |fv| {
                    with_values::<f32, _>(grad, |gv| Ok(self.backward(nv, dv, fv, gv)))
                })
            })
        })
        .map_err(candle_err)?;
        let dev = nodes.device();
        Ok((
            Some(Tensor::from_vec(gn, nodes.shape(), dev)?),
            Some(Tensor::from_vec(gd, dist.shape(), dev)?),
            Some(Tensor::from_vec(gw, flat.shape(), dev)?),
        ))
    }
}
