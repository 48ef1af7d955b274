//! The fused CPU MLP: the same network as `Mlp`'s candle ops, with every weight and bias in one
//! flat buffer, workspaces kept between calls, GEMMs with the bias and activation applied to each
//! output block while it is in cache, a hand-written backward pass and forward-mode tangents. The
//! batch is cut into chunks (training: one per thread; inference: shrinking ones that the threads
//! claim in turn) and each chunk into cache-sized blocks that run the whole network: one parallel
//! region per call, no allocation per layer.

use super::gemm::{gemm, gemm_fused, gemm_scaled, Epilogue, PackedB, Rhs, NARROW};
use super::kernels::{self, Keep};
use super::{Activation, Mlp, Model};
use crate::flat::values;
use crate::objective::ObjectiveConfig;
use crate::score::Parameterisation;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use std::ops::Range;
use std::sync::{Mutex, RwLock, RwLockReadGuard};

pub mod losses;
pub mod peak;
pub mod score;

/// Whether the fused kernels may be used: always, unless `TWEEDIE_ENGINE=candle` asks for
/// candle's ops (for comparisons and debugging).
pub fn enabled() -> bool {
    std::env::var("TWEEDIE_ENGINE").as_deref() != Ok("candle")
}

/// The one test of "can this run fused?": a CPU f32 model whose network has a fused path, not an
/// energy, with the fused engine enabled, and (when training) an objective the kernels compute:
/// every one but FD-SSM (regressions on the raw output, ISM/SSM through the fused tangents).
/// In a restricted space the Stein objectives (ISM, SSM) train on candle, whose forms and ½‖P s‖²
/// are taken on the space.
pub fn applies(model: &Model, objective: Option<&ObjectiveConfig>) -> bool {
    let stein = matches!(
        objective,
        Some(ObjectiveConfig::Ism { .. } | ObjectiveConfig::Ssm { .. })
    );
    model.device().is_cpu()
        && model.dtype() == candle_core::DType::F32
        && spec_applies(&model.config)
        && !matches!(objective, Some(ObjectiveConfig::FdSsm { .. }))
        && (!stein || (model.config.space.is_full() && model.output_map().plain_inputs()))
}

/// The part of `applies` a model's spec decides: the fused engine enabled, a network with a fused
/// path (the MLP), not an energy.
pub fn spec_applies(spec: &crate::nn::ModelConfig) -> bool {
    enabled()
        && spec.arch.network == crate::nn::NetworkKind::Mlp
        && spec.arch.parameterisation != Parameterisation::Energy
}

/// A fused copy of the model's network where `applies`, else None.
pub fn build(model: &Model, objective: Option<&ObjectiveConfig>) -> Result<Option<FusedMlp>> {
    if !applies(model, objective) {
        return Ok(None);
    }
    model.network().fused().transpose()
}

/// One linear layer's place in the flat buffer: W [fan_out × fan_in] at `w`, b \[fan_out\] at `b`.
#[derive(Clone, Debug)]
struct Layer {
    fan_in: usize,
    fan_out: usize,
    w: usize,
    b: usize,
}

impl Layer {
    /// An output of a few dimensions: its Wᵀ products read W's rows as dot products, unpacked.
    fn narrow(&self) -> bool {
        self.fan_out < NARROW
    }
}

/// An MLP on [x, embed(t)] evaluated by fused CPU kernels (f32).
pub struct FusedMlp {
    dim: usize,
    layers: Vec<Layer>,
    act: Activation,
    embed_w: Vec<f32>,
    embed_scale: f32,
    /// Weights and biases layer by layer (W_i row-major, then b_i): `Mlp::vars` in order.
    params: Vec<f32>,
    workspaces: Mutex<Vec<Workspace>>,
    packed: RwLock<Packed>,
}

/// Every layer's weights packed for the GEMM micro-kernel once per change of the weights (not once
/// per block): Wᵀ for the forward and tangent products, W for the reverse pass's G·W.
#[derive(Default)]
struct Packed {
    fresh: bool,
    /// Counts the repacks: the weights' version, for what a workspace derives from them.
    generation: u64,
    wt: Vec<PackedB>,
    w: Vec<PackedB>,
}

/// Per-thread scratch, grown on demand and reused by every later call.
#[derive(Default)]
struct Workspace {
    /// acts[i]: the input of layer i [rows × fan_in]; acts[L]: the output.
    acts: Vec<Vec<f32>>,
    /// a'(z_i) and a''(z_i) of each hidden layer [rows × width].
    d1: Vec<Vec<f32>>,
    d2: Vec<Vec<f32>>,
    /// tin[i]: the input tangents of layer i [m × rows × fan_in]; tin[L]: the output's.
    tin: Vec<Vec<f32>>,
    /// Pre-activation tangents ż_i of each hidden layer (kept for the reverse pass through them).
    zdot: Vec<Vec<f32>>,
    /// Cotangents of activations [rows × width] and of tangents [m × rows × width], ping-pong.
    cot: [Vec<f32>; 2],
    cot_tan: [Vec<f32>; 2],
    /// This thread's parameter gradient, laid out like `params`.
    grads: Vec<f32>,
    /// Layer 0's bias, with the embedding's share folded in when the block has one time.
    bias0: Vec<f32>,
    /// The time's bits and the weights' generation that `bias0` was folded for, if it was.
    bias0_for: Option<(u32, u64)>,
}

/// Rows per inference block: one activation matrix and its m tangent directions' of about 64k
/// floats (256 KiB) in all stay in L2. Without tangents 512 rows at width 128 measured best
/// against 64 and 128 (and against 256 and 128 for sampling; inference chunks now hold at most
/// 504 rows, so sampling's blocks are its chunks); with the two tangents of a 2-D exact
/// divergence, 170 rows ran the likelihood 1.085× faster than 512 (8 alternating rounds).
fn block_rows(width: usize, tangents: usize) -> usize {
    (65_536 / (width.max(1) * (1 + tangents))).clamp(16, 512)
}

/// n rows cut into at most `rayon::current_num_threads()` contiguous chunks of ≥ 32 rows.
pub(crate) fn chunks(n: usize) -> Vec<Range<usize>> {
    let k = rayon::current_num_threads().min(n.div_ceil(32)).max(1);
    (0..k).map(|i| i * n / k..(i + 1) * n / k).collect()
}

/// Inference's chunks, claimed by the threads in turn (`for_chunks_with`), in whole 12-row tiles
/// and shrinking (guided): each an eighth of the rows left per thread, 48 to 504 rows, so that a
/// thread slowed by the shared machine claims fewer and the last ones end close together (against
/// ~16 equal chunks per thread: EM 1.10×, DPM-Solver++ 1.04–1.06×, the likelihood 1.04×).
fn inference_chunks(n: usize) -> Vec<Range<usize>> {
    let threads = rayon::current_num_threads();
    if threads == 1 && n > 0 {
        // nothing to balance: one chunk, in blocks
        return std::iter::once(0..n).collect();
    }
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let rows = ((n - start) / (8 * threads))
            .next_multiple_of(12)
            .clamp(48, 504);
        parts.push(start..(start + rows).min(n));
        start += rows;
    }
    parts
}

/// `buf` [n × width] cut into the rows of each chunk.
pub(crate) fn split_rows<'b>(
    mut buf: &'b mut [f32],
    parts: &[Range<usize>],
    width: usize,
) -> Vec<&'b mut [f32]> {
    parts
        .iter()
        .map(|rows| {
            let (head, tail) = std::mem::take(&mut buf).split_at_mut(rows.len() * width);
            buf = tail;
            head
        })
        .collect()
}

fn resize(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

impl FusedMlp {
    /// A fused copy of an MLP's current weights.
    pub fn from_mlp(net: &Mlp) -> Result<Self> {
        use super::Network;
        let vars = net.vars();
        let mut params = Vec::with_capacity(vars.iter().map(|(_, v)| v.elem_count()).sum());
        let mut layers = Vec::new();
        for pair in vars.chunks(2) {
            let w = pair[0].1.as_tensor();
            let (fan_out, fan_in) = w.dims2()?;
            let w_off = params.len();
            params.extend(values::<f32>(w)?);
            let b_off = params.len();
            params.extend(values::<f32>(pair[1].1.as_tensor())?);
            layers.push(Layer {
                fan_in,
                fan_out,
                w: w_off,
                b: b_off,
            });
        }
        Ok(FusedMlp {
            dim: net.dim,
            layers,
            act: net.activation,
            embed_w: values::<f32>(&net.w.embed.w)?,
            embed_scale: net.w.embed.kind.scale() as f32,
            params,
            workspaces: Mutex::new(Vec::new()),
            packed: RwLock::default(),
        })
    }

    /// The flat weights and biases (`Mlp::vars` in order, each row-major).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The flat weights for writing (an optimiser step).
    pub fn params_mut(&mut self) -> &mut [f32] {
        let packed = self.packed.get_mut().unwrap_or_else(|e| e.into_inner());
        packed.fresh = false;
        &mut self.params
    }

    /// The packed weights, repacked first if the weights changed since.
    fn packed(&self) -> RwLockReadGuard<'_, Packed> {
        let read = || self.packed.read().unwrap_or_else(|e| e.into_inner());
        if read().fresh {
            return read();
        }
        let mut p = self.packed.write().unwrap_or_else(|e| e.into_inner());
        if !p.fresh {
            let n = self.layers.len();
            p.wt.resize_with(n, PackedB::default);
            p.w.resize_with(n, PackedB::default);
            let Packed { wt, w, .. } = &mut *p;
            // a layer per job: a training step repacks every step
            let jobs = self.layers.iter().zip(wt).zip(w).map(|((l, wt), w)| {
                let weights = &self.params[l.w..l.w + l.fan_in * l.fan_out];
                move || {
                    if !l.narrow() {
                        wt.pack(weights, (1, l.fan_in), l.fan_in, l.fan_out);
                    }
                    w.pack(weights, (l.fan_in, 1), l.fan_out, l.fan_in);
                }
            });
            crate::pool::run_all(jobs.collect());
            p.fresh = true;
            p.generation += 1;
        }
        drop(p);
        read()
    }

    /// Layer i's Wᵀ as a product's B: packed, or for a narrow layer (an output of a few
    /// dimensions) read from W, whose rows are Wᵀ's contiguous columns.
    fn transposed<'a>(&'a self, packed: &'a Packed, i: usize) -> Rhs<'a> {
        let l = &self.layers[i];
        if l.narrow() {
            Rhs::Strided(&self.params[l.w..l.w + l.fan_in * l.fan_out], (1, l.fan_in))
        } else {
            Rhs::Packed(&packed.wt[i])
        }
    }

    /// Output dimension.
    pub fn out_dim(&self) -> usize {
        self.layers.last().map_or(0, |l| l.fan_out)
    }

    /// A flat buffer laid out like `params` split into the network's tensors (weights [out, in],
    /// biases \[out\]) in `Mlp::vars` order.
    pub fn to_tensors(&self, flat: &[f32], device: &Device) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(2 * self.layers.len());
        for l in &self.layers {
            let w = &flat[l.w..l.w + l.fan_in * l.fan_out];
            out.push(Tensor::from_slice(w, (l.fan_out, l.fan_in), device)?);
            out.push(Tensor::from_slice(
                &flat[l.b..l.b + l.fan_out],
                l.fan_out,
                device,
            )?);
        }
        Ok(out)
    }

    /// The inverse of `to_tensors`: tensors in `Mlp::vars` order to one flat buffer.
    pub fn from_tensors(&self, tensors: &[Tensor]) -> Result<Vec<f32>> {
        if tensors.len() != 2 * self.layers.len() {
            bail!(
                "expected {} tensors, got {}",
                2 * self.layers.len(),
                tensors.len()
            );
        }
        let mut flat = Vec::with_capacity(self.params.len());
        for t in tensors {
            flat.extend(values::<f32>(t)?);
        }
        if flat.len() != self.params.len() {
            bail!(
                "tensors hold {} values, the network has {}",
                flat.len(),
                self.params.len()
            );
        }
        Ok(flat)
    }

    /// Raw outputs [n × out] at x [n × d], t \[n\], and with directions v = (values [m × n × d], m)
    /// their forward-mode tangents J·v [m × n × out].
    pub fn forward(
        &self,
        x: &[f32],
        t: &[f32],
        v: Option<(&[f32], usize)>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let (n, m, o) = (t.len(), v.map_or(0, |(_, m)| m), self.out_dim());
        let (mut out, mut tan) = (vec![0.0; n * o], vec![0.0; m * n * o]);
        self.forward_into(x, t, v, &mut out, &mut tan)?;
        Ok((out, tan))
    }

    /// `forward` into the caller's buffers out [n × out] and tan [m × n × out]: each thread
    /// writes its rows in place.
    pub fn forward_into(
        &self,
        x: &[f32],
        t: &[f32],
        v: Option<(&[f32], usize)>,
        out: &mut [f32],
        tan: &mut [f32],
    ) -> Result<()> {
        let n = self.check(x, t)?;
        let (m, o) = (v.map_or(0, |(_, m)| m), self.out_dim());
        if let Some((v, m)) = v {
            if v.len() != m * n * self.dim {
                bail!(
                    "tangents have {} values, expected {m} × {n} × {}",
                    v.len(),
                    self.dim
                );
            }
        }
        if out.len() != n * o || tan.len() != m * n * o {
            bail!(
                "output buffers hold {} and {} values, expected {n} × {o} and {m} × {n} × {o}",
                out.len(),
                tan.len()
            );
        }
        // each chunk's rows of out, and of every tangent direction's block of tan
        let parts = inference_chunks(n);
        let outs = split_rows(out, &parts, o);
        let mut tans: Vec<Vec<&mut [f32]>> = parts.iter().map(|_| Vec::new()).collect();
        if n > 0 {
            for direction in tan.chunks_exact_mut(n * o) {
                for (list, piece) in tans.iter_mut().zip(split_rows(direction, &parts, o)) {
                    list.push(piece);
                }
            }
        }
        let buffers: Vec<_> = outs.into_iter().zip(tans).collect();
        let keep = if m > 0 { Keep::First } else { Keep::Value };
        self.for_chunks_with(parts, buffers, |ws, rows, (out, mut tan)| {
            for block in self.blocks(rows.clone(), m) {
                self.forward_block(ws, x, t, block.clone(), keep);
                let (len, at) = (block.len() * o, (block.start - rows.start) * o);
                out[at..at + len].copy_from_slice(&ws.acts[self.layers.len()][..len]);
                if let Some((v, m)) = v {
                    let res = self.tangents_block(ws, v, n, m, block.clone(), false);
                    for (k, dst) in tan.iter_mut().enumerate() {
                        dst[at..at + len].copy_from_slice(&res[k * len..(k + 1) * len]);
                    }
                }
            }
        });
        Ok(())
    }

    /// Loss and parameter gradient (written to `grad`, laid out like `params`) of a loss on the raw
    /// outputs: `loss(rows, out [rows × o], g)` returns that block's share of the loss and writes
    /// its gradient ∂L/∂out into g [rows × o].
    pub fn loss_and_grad<F>(&self, x: &[f32], t: &[f32], loss: F, grad: &mut [f32]) -> Result<f64>
    where
        F: Fn(Range<usize>, &[f32], &mut [f32]) -> f64 + Sync,
    {
        let n = self.check(x, t)?;
        self.accumulate(n, grad, |ws, block| {
            self.forward_block(ws, x, t, block.clone(), Keep::First);
            self.backward_block(ws, block, None, &|rows, out, _, g, _| loss(rows, out, g))
        })
    }

    /// As `loss_and_grad` for a loss on the outputs and their tangents along v = (values
    /// [m × n × d], m): `loss(rows, out [rows × o], tan [m × rows × o], g, g_tan)` writes ∂L/∂out
    /// and ∂L/∂tan. The reverse pass runs through the tangent pass too (a'' terms included), so
    /// Stein losses (ISM, SSM) get exact parameter gradients without double backward.
    pub fn loss_and_grad_jvp<F>(
        &self,
        x: &[f32],
        t: &[f32],
        (v, m): (&[f32], usize),
        loss: F,
        grad: &mut [f32],
    ) -> Result<f64>
    where
        F: Fn(Range<usize>, &[f32], &[f32], &mut [f32], &mut [f32]) -> f64 + Sync,
    {
        let n = self.check(x, t)?;
        if v.len() != m * n * self.dim {
            bail!(
                "tangents have {} values, expected {m} × {n} × {}",
                v.len(),
                self.dim
            );
        }
        self.accumulate(n, grad, |ws, block| {
            self.forward_block(ws, x, t, block.clone(), Keep::Second);
            self.tangents_block(ws, v, n, m, block.clone(), true);
            self.backward_block(ws, block, Some(m), &loss)
        })
    }

    /// Runs `per_block` (which adds into the workspace's gradient and returns its loss) over every
    /// block of every thread's rows; sums the threads' gradients into `grad` and the losses.
    fn accumulate<F>(&self, n: usize, grad: &mut [f32], per_block: F) -> Result<f64>
    where
        F: Fn(&mut Workspace, Range<usize>) -> f64 + Sync,
    {
        let np = self.params.len();
        if grad.len() != np {
            bail!("gradient buffer has {} values, expected {np}", grad.len());
        }
        let losses = self.for_chunks(n, |ws, rows| {
            resize(&mut ws.grads, np).fill(0.0);
            // training keeps whole 512-row blocks even with tangents: ISM's step ran 6 % slower
            // in 170-row blocks, whose weight gradients have a shorter k
            self.blocks(rows, 0).map(|b| per_block(ws, b)).sum::<f64>()
        });
        let ws = &self.lock();
        grad.copy_from_slice(&ws[0].grads[..np]);
        for other in ws.iter().take(losses.len()).skip(1) {
            grad.iter_mut().zip(&other.grads).for_each(|(g, o)| *g += o);
        }
        Ok(losses.iter().sum())
    }

    fn check(&self, x: &[f32], t: &[f32]) -> Result<usize> {
        let n = t.len();
        if x.len() != n * self.dim {
            bail!(
                "input has {} values, expected {n} rows of dimension {}",
                x.len(),
                self.dim
            );
        }
        Ok(n)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Workspace>> {
        self.workspaces.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on each thread's chunk of n rows with a workspace of its own (chunk i, workspace
    /// i: the threads' gradients then sum in a fixed order); results in chunk order.
    fn for_chunks<R: Send>(
        &self,
        n: usize,
        f: impl Fn(&mut Workspace, Range<usize>) -> R + Sync,
    ) -> Vec<R> {
        let parts = chunks(n);
        let mut workspaces = self.workspaces(parts.len());
        let f = &f;
        let jobs = workspaces
            .iter_mut()
            .zip(parts)
            .map(|(ws, rows)| move || f(ws, rows))
            .collect();
        crate::pool::run_all(jobs)
    }

    /// `f` on each of `parts` (rows) with one item of `per_chunk` (say, that chunk's output rows)
    /// and the workspace of the thread that claims it (`pool::run_claimed`); results in chunk
    /// order.
    fn for_chunks_with<T: Send, R: Send>(
        &self,
        parts: Vec<Range<usize>>,
        per_chunk: Vec<T>,
        f: impl Fn(&mut Workspace, Range<usize>, T) -> R + Sync,
    ) -> Vec<R> {
        debug_assert_eq!(parts.len(), per_chunk.len());
        let workers = rayon::current_num_threads().min(parts.len());
        let mut workspaces = self.workspaces(workers);
        let items = parts.into_iter().zip(per_chunk).collect();
        crate::pool::run_claimed(&mut workspaces[..workers], items, |ws, _, (rows, item)| {
            f(ws, rows, item)
        })
    }

    /// The workspaces, at least `count` of them, with the weights repacked for a parallel region.
    fn workspaces(&self, count: usize) -> std::sync::MutexGuard<'_, Vec<Workspace>> {
        // repack changed weights here, once: inside, the first thread would repack under the
        // write lock while the others slept on it (a futex wake-up of up to 0.25 ms on a VM)
        drop(self.packed());
        let mut workspaces = self.lock();
        while workspaces.len() < count {
            workspaces.push(Workspace::default());
        }
        workspaces
    }

    /// `rows` in blocks of `block_rows` for m tangent directions.
    fn blocks(&self, rows: Range<usize>, m: usize) -> impl Iterator<Item = Range<usize>> {
        let width = self.layers.iter().map(|l| l.fan_out).max().unwrap_or(1);
        let b = block_rows(width, m);
        let end = rows.end;
        rows.step_by(b).map(move |s| s..(s + b).min(end))
    }

    /// The network on rows `block`: acts\[L\] ← out, and a'(z) (and a''(z)) as `keep` asks.
    fn forward_block(
        &self,
        ws: &mut Workspace,
        x: &[f32],
        t: &[f32],
        block: Range<usize>,
        keep: Keep,
    ) {
        let rows = block.len();
        let nl = self.layers.len();
        ws.acts.resize_with(nl + 1, Vec::new);
        ws.d1.resize_with(nl, Vec::new);
        ws.d2.resize_with(nl, Vec::new);
        let (d, e) = (self.dim, 2 * self.embed_w.len());
        let in0 = self.layers[0].fan_in;
        // samplers and ODE solvers evaluate every row at one time: then the embedding's share of
        // layer 0, emb(t)·W0[:, d..]ᵀ + b0, is one row, used as layer 0's bias and computed once
        // per workspace for each t and version of the weights
        let shared = block.clone().all(|r| t[r] == t[block.start]);
        let packed = self.packed();
        // a sampler's later blocks at the same t reuse the first one's fold
        let key = (t[block.start].to_bits(), packed.generation);
        let folded = shared && ws.bias0_for == Some(key);
        // inference at one t never reads the embedding's columns past the first row (they fold
        // into layer 0's bias below); a reverse pass (dW₀) does
        let rows_need_embedding = !shared || keep != Keep::Value;
        let h0 = resize(&mut ws.acts[0], rows * in0);
        let (first, rest) = h0.split_at_mut(in0);
        if !folded || rows_need_embedding {
            self.embed(t[block.start], &mut first[d..]);
        }
        for (r, row) in block.clone().skip(1).zip(rest.chunks_exact_mut(in0)) {
            if !shared {
                self.embed(t[r], &mut row[d..]);
            } else if rows_need_embedding {
                row[d..].copy_from_slice(&first[d..]);
            }
        }
        for (r, row) in block.clone().zip(h0.chunks_exact_mut(in0)) {
            // an element loop: d is a few values, too few for a `memcpy` call per row
            for (h, x) in row[..d].iter_mut().zip(&x[r * d..(r + 1) * d]) {
                *h = *x;
            }
        }
        let l0 = &self.layers[0];
        if !folded {
            let bias0 = resize(&mut ws.bias0, l0.fan_out);
            bias0.copy_from_slice(&self.params[l0.b..l0.b + l0.fan_out]);
            ws.bias0_for = None;
            if shared {
                // bias0_j += Σ_k emb_k W0[j, d + k], then layer 0 needs only x's d columns
                let emb = &h0[d..d + e];
                for (j, b) in bias0.iter_mut().enumerate() {
                    let w = &self.params[l0.w + j * in0 + d..l0.w + (j + 1) * in0];
                    *b += w.iter().zip(emb).map(|(w, e)| w * e).sum::<f32>();
                }
                ws.bias0_for = Some(key);
            }
        }
        for (i, l) in self.layers.iter().enumerate() {
            let (lo, hi) = ws.acts.split_at_mut(i + 1);
            let z = resize(&mut hi[0], rows * l.fan_out);
            let wt = self.transposed(&packed, i);
            let k = if i == 0 && shared { d } else { l.fan_in };
            let hidden = i + 1 < nl;
            let keep_here = if hidden { keep } else { Keep::Value };
            let bias = if i == 0 {
                &ws.bias0[..l.fan_out]
            } else {
                &self.params[l.b..l.b + l.fan_out]
            };
            let dims = (rows, l.fan_out, k);
            if hidden && self.act == Activation::Silu && keep_here <= Keep::First {
                // bias and SiLU applied in the GEMM's registers, no pass of their own
                let d1 =
                    (keep_here == Keep::First).then(|| resize(&mut ws.d1[i], rows * l.fan_out));
                let epilogue = Epilogue::BiasSilu { bias, d1 };
                if gemm_fused(dims, z, &lo[i], (l.fan_in, 1), wt, epilogue) {
                    continue;
                }
            }
            gemm(dims, z, l.fan_out, &lo[i], (l.fan_in, 1), wt, false);
            let d1 = if keep_here >= Keep::First {
                resize(&mut ws.d1[i], rows * l.fan_out)
            } else {
                &mut []
            };
            let d2 = if keep_here >= Keep::Second {
                resize(&mut ws.d2[i], rows * l.fan_out)
            } else {
                &mut []
            };
            kernels::bias_act(z, bias, hidden.then_some(self.act), keep_here, d1, d2);
        }
    }

    /// The time features [sin(s·t·w_k) | cos(s·t·w_k)] into `out` (the candle network's f32 ops).
    fn embed(&self, t: f32, out: &mut [f32]) {
        let (sin, cos) = out.split_at_mut(self.embed_w.len());
        kernels::embed_row(t, &self.embed_w, self.embed_scale, sin, cos);
    }

    /// Tangents [m × rows × out] of the block's outputs along v [m × n × d] (after
    /// `forward_block` kept a'(z)): a layer maps ż ↦ ż W_inᵀ, an activation ż ↦ a'(z) ż. Every
    /// layer's input tangents stay in `tin`, and with `keep_pre` the pre-activation ones in `zdot`.
    #[allow(clippy::too_many_arguments)]
    fn tangents_block<'w>(
        &self,
        ws: &'w mut Workspace,
        v: &[f32],
        n: usize,
        m: usize,
        block: Range<usize>,
        keep_pre: bool,
    ) -> &'w [f32] {
        let (rows, d, nl) = (block.len(), self.dim, self.layers.len());
        ws.tin.resize_with(nl + 1, Vec::new);
        ws.zdot.resize_with(nl, Vec::new);
        let t0 = resize(&mut ws.tin[0], m * rows * d);
        for k in 0..m {
            t0[k * rows * d..(k + 1) * rows * d]
                .copy_from_slice(&v[(k * n + block.start) * d..(k * n + block.end) * d]);
        }
        let mut width = d;
        let packed = self.packed();
        for (i, l) in self.layers.iter().enumerate() {
            let (lo, hi) = ws.tin.split_at_mut(i + 1);
            let z = resize(&mut hi[0], m * rows * l.fan_out);
            // layer 0 acts on the input tangent through W's first d columns (Wᵀ's first d rows)
            let (dims, wt) = ((m * rows, l.fan_out, width), self.transposed(&packed, i));
            let hidden = i + 1 < nl;
            if hidden && !keep_pre {
                // inference: each direction's product scaled by a'(z) as it is stored
                let d1 = &ws.d1[i][..rows * l.fan_out];
                let directions = z.chunks_exact_mut(rows * l.fan_out);
                for (z, v) in directions.zip(lo[i].chunks_exact(rows * width)) {
                    gemm_scaled((rows, l.fan_out, width), z, v, (width, 1), wt, d1);
                }
            } else {
                gemm(dims, z, l.fan_out, &lo[i], (width, 1), wt, false);
                if hidden {
                    // the reverse pass needs ż before the scaling
                    resize(&mut ws.zdot[i], z.len()).copy_from_slice(z);
                    kernels::scale_blocks(z, &ws.d1[i][..rows * l.fan_out]);
                }
            }
            width = l.fan_out;
        }
        &ws.tin[nl][..m * rows * width]
    }

    /// Reverse pass over the block after `forward_block` (and, with m tangents, `tangents_block`
    /// with a'' and ż kept): the loss's ∂L/∂out (and ∂L/∂tan), then per layer ∂W += Gᵀ H (+ Ġᵀ Ḣ),
    /// ∂b += Σ_rows G, and down through the activation: G ← a'(z) ⊙ (G W) + a''(z) ⊙ Σ_k ż_k ⊙ (Ġ_k W),
    /// Ġ ← a'(z) ⊙ (Ġ W). Returns the block's loss.
    fn backward_block<F>(
        &self,
        ws: &mut Workspace,
        block: Range<usize>,
        tangents: Option<usize>,
        loss: &F,
    ) -> f64
    where
        F: Fn(Range<usize>, &[f32], &[f32], &mut [f32], &mut [f32]) -> f64,
    {
        let (rows, nl, o, d) = (block.len(), self.layers.len(), self.out_dim(), self.dim);
        let m = tangents.unwrap_or(0);
        let [a, b] = &mut ws.cot;
        let (mut g, mut next) = (a, b);
        let [a, b] = &mut ws.cot_tan;
        let (mut gt, mut next_t) = (a, b);
        let tan: &[f32] = if m > 0 {
            &ws.tin[nl][..m * rows * o]
        } else {
            &[]
        };
        let value = loss(
            block,
            &ws.acts[nl][..rows * o],
            tan,
            resize(g, rows * o),
            resize(gt, m * rows * o),
        );
        let packed = self.packed();
        for (i, l) in self.layers.iter().enumerate().rev() {
            let gi = &g[..rows * l.fan_out];
            let gti = &gt[..m * rows * l.fan_out];
            let acts = Rhs::Strided(&ws.acts[i], (l.fan_in, 1));
            let dims = (l.fan_out, l.fan_in, rows);
            gemm(
                dims,
                &mut ws.grads[l.w..],
                l.fan_in,
                gi,
                (1, l.fan_out),
                acts,
                true,
            );
            if m > 0 {
                // layer 0's input tangent covers only x's d columns of W
                let k_in = if i == 0 { d } else { l.fan_in };
                let tin = Rhs::Strided(&ws.tin[i], (k_in, 1));
                let dims = (l.fan_out, k_in, m * rows);
                gemm(
                    dims,
                    &mut ws.grads[l.w..],
                    l.fan_in,
                    gti,
                    (1, l.fan_out),
                    tin,
                    true,
                );
            }
            kernels::add_column_sums(&mut ws.grads[l.b..l.b + l.fan_out], gi);
            if i == 0 {
                break;
            }
            let w = Rhs::Packed(&packed.w[i]);
            let gh = resize(next, rows * l.fan_in);
            let d1 = &ws.d1[i - 1][..rows * l.fan_in];
            let dims = (rows, l.fan_in, l.fan_out);
            if m == 0 {
                // G ← a'(z) ⊙ (G W)
                gemm_scaled(dims, gh, gi, (l.fan_out, 1), w, d1);
            } else {
                gemm(dims, gh, l.fan_in, gi, (l.fan_out, 1), w, false);
                let gth = resize(next_t, m * rows * l.fan_in);
                let k = (m * rows, l.fan_in, l.fan_out);
                gemm(k, gth, l.fan_in, gti, (l.fan_out, 1), w, false);
                let zdot = &ws.zdot[i - 1][..m * rows * l.fan_in];
                kernels::jvp_cotangents(gh, gth, zdot, d1, &ws.d2[i - 1][..rows * l.fan_in]);
            }
            std::mem::swap(&mut g, &mut next);
            std::mem::swap(&mut gt, &mut next_t);
        }
        value
    }
}

#[cfg(test)]
mod tests;
