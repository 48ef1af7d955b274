//! A linear layer y = a(x Wᵀ + b) (a optional) as one CPU op (f32) on the fused MLP's GEMM, for
//! the EGNN's per-node products: candle's own matmul (the `gemm` crate's AVX2 kernel) ran them at
//! half the rate of the AVX-512 tiles, and its bias and activation cost passes and a slow
//! column reduction of their own in the backward pass. Rows are split over the threads.

use crate::flat::with_values;
use crate::nn::contiguous;
use crate::nn::fused::{chunks as parts, split_rows};
use crate::nn::gemm::{gemm, PackedB, Rhs};
use crate::nn::kernels::{self, Keep};
use crate::nn::Activation;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use std::sync::Mutex;

/// The op on x [M, K], W [N, K], b \[N\]; result [M, N]. One instance per call: the forward pass
/// keeps a'(z) in it for the backward pass.
pub(super) struct LinearOp {
    pub activation: Option<Activation>,
    derivative: Mutex<Vec<f32>>,
}

impl LinearOp {
    pub fn new(activation: Option<Activation>) -> Self {
        LinearOp {
            activation,
            derivative: Mutex::new(Vec::new()),
        }
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "egnn-linear"
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
        let op = self.name();
        let (x, w, b) = (
            contiguous(s1, l1, op)?,
            contiguous(s2, l2, op)?,
            contiguous(s3, l3, op)?,
        );
        let (m, k, n) = match (l1.dims(), l2.dims(), l3.dims()) {
            ([m, k], [n, k2], [n2]) if k == k2 && n == n2 => (*m, *k, *n),
            (a, b, c) => candle_core::bail!("egnn linear op: x {a:?}, W {b:?}, b {c:?}"),
        };
        let mut wt = PackedB::default();
        // Wᵀ [K × N] is W read with strides (1, K)
        wt.pack(w, (1, k), k, n);
        let mut y = vec![0.0f32; m * n];
        let keep = self.activation.is_some();
        let mut d = vec![0.0f32; if keep { m * n } else { 0 }];
        let rows = parts(m);
        let ys = split_rows(&mut y, &rows, n);
        let ds = split_rows(&mut d, &rows, if keep { n } else { 0 });
        let wt = &wt;
        let jobs = rows
            .iter()
            .zip(ys)
            .zip(ds)
            .map(|((r, y), d)| {
                move || {
                    let xr = &x[r.start * k..r.end * k];
                    gemm((r.len(), n, k), y, n, xr, (k, 1), Rhs::Packed(wt), false);
                    let (act, keep) = match self.activation {
                        Some(a) => (Some(a), Keep::First),
                        None => (None, Keep::Value),
                    };
                    kernels::bias_act(y, b, act, keep, d, &mut []);
                }
            })
            .collect();
        crate::pool::run_all(jobs);
        *self.derivative.lock().unwrap_or_else(|e| e.into_inner()) = d;
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (m, k) = x.dims2()?;
        let n = w.dims2()?.0;
        let d = std::mem::take(&mut *self.derivative.lock().unwrap_or_else(|e| e.into_inner()));
        let (gx, gw, gb) = with_values::<f32, _>(x, |xv| {
            with_values::<f32, _>(w, |wv| {
                with_values::<f32, _>(grad, |gv| Ok(backward((m, k, n), xv, wv, gv, &d)))
            })
        })
        .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(gx, (m, k), dev)?),
            Some(Tensor::from_vec(gw, (n, k), dev)?),
            Some(Tensor::from_vec(gb, b.shape(), dev)?),
        ))
    }
}

/// The cotangents of x [m × k], W [n × k] and b \[n\] from the result's `g` [m × n], through
/// a'(z) = `d` where the layer has an activation (d empty otherwise).
fn backward(
    (m, k, n): (usize, usize, usize),
    x: &[f32],
    w: &[f32],
    g: &[f32],
    d: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    // through a'(z) where the layer has an activation (a copy of g), g itself otherwise
    let scaled;
    let gz = if d.is_empty() {
        g
    } else {
        let mut s = g.to_vec();
        kernels::scale_blocks(&mut s, d);
        scaled = s;
        &scaled
    };
    let mut wp = PackedB::default();
    // W [N × K] as the product's B: gx = gz W
    wp.pack(w, (k, 1), n, k);
    let mut gx = vec![0.0f32; m * k];
    let rows = parts(m);
    let gxs = split_rows(&mut gx, &rows, k);
    let wp = &wp;
    let jobs = rows
        .iter()
        .zip(gxs)
        .map(|(r, gx)| {
            move || {
                let gzr = &gz[r.start * n..r.end * n];
                gemm((r.len(), k, n), gx, k, gzr, (n, 1), Rhs::Packed(wp), false);
                // this part's share of gW = gzᵀ x and gb = Σ gz
                let mut gw = vec![0.0f32; n * k + n];
                let xr = &x[r.start * k..r.end * k];
                let (gwm, gb) = gw.split_at_mut(n * k);
                gemm(
                    (n, k, r.len()),
                    gwm,
                    k,
                    gzr,
                    (1, n),
                    Rhs::Strided(xr, (k, 1)),
                    true,
                );
                kernels::add_column_sums(gb, gzr);
                gw
            }
        })
        .collect();
    let mut shares = crate::pool::run_all(jobs).into_iter();
    let mut total = shares.next().unwrap_or_else(|| vec![0.0; n * k + n]);
    for s in shares {
        total.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
    }
    let gb = total.split_off(n * k);
    (gx, total, gb)
}
