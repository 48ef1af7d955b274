//! Single-head self-attention over the positions of a feature map (DDPM's `AttnBlock`): GroupNorm,
//! q, k, v by one linear layer, softmax(q kᵀ/√c) v, an output projection and a residual. On f32
//! CPU maps the block is one candle op (`AttentionOp`), images split over the threads, with its
//! own backward pass; elsewhere candle's composites.

use super::conv::{on_f32s, over_images, over_new_images, split_params};
use super::layers::{cpu_f32, softmax, Builder, Linear, Norm};
use super::norm::{activate, NormOp};
use crate::nn::contiguous;
use crate::nn::gemm::{gemm, Rhs};
use anyhow::Result;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor, Var};
use rand::Rng;
use std::sync::OnceLock;

/// Self-attention on [n, h, w, c].
pub(super) struct Attention {
    norm: Norm,
    qkv: Linear,
    proj: Linear,
}

impl Attention {
    /// `name`.{norm, qkv, proj} over c channels.
    pub fn new<R: Rng>(b: &mut Builder<R>, name: &str, c: usize) -> Result<Self> {
        Ok(Attention {
            norm: b.norm(&format!("{name}.norm"), c)?,
            qkv: b.linear(&format!("{name}.qkv"), c, 3 * c)?,
            proj: b.linear(&format!("{name}.proj"), c, c)?,
        })
    }

    /// x + proj(softmax(q kᵀ/√c) v): on f32 CPU maps one op, elsewhere the composite.
    pub fn forward(&self, v: &[(String, Var)], x: &Tensor) -> Result<Tensor> {
        if !cpu_f32(&[x]) {
            return self.forward_composite(v, x);
        }
        let mut theta = Vec::new();
        for (a, b) in [self.norm.params(v), self.qkv.params(v), self.proj.params(v)] {
            theta.extend([a.flatten_all()?, b.clone()]);
        }
        let theta = Tensor::cat(&theta, 0)?;
        let op = AttentionOp {
            norm: self.norm.op(false),
            saved: OnceLock::new(),
        };
        Ok(x.contiguous()?.apply_op2(&theta, op)?)
    }

    /// The block as candle's composites.
    pub fn forward_composite(&self, v: &[(String, Var)], x: &Tensor) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let y = self.norm.forward_composite(v, x)?.reshape((n, h * w, c))?;
        let qkv = self.qkv.forward(v, &y)?;
        let part = |i: usize| qkv.narrow(2, i * c, c)?.contiguous();
        let (q, k, val) = (part(0)?, part(1)?, part(2)?);
        let att = softmax(&(q.matmul(&k.t()?)? / (c as f64).sqrt())?)?;
        let o = self.proj.forward(v, &att.matmul(&val)?)?;
        Ok((x + o.reshape((n, h, w, c))?)?)
    }
}

/// The op on x [n, h, w, c] (contiguous) and θ = [γ, β, W_qkv [3c, c], b_qkv, W_o [c, c], b_o]
/// flattened.
struct AttentionOp {
    norm: NormOp,
    saved: OnceLock<Saved>,
}

/// Per image: the norm's coefficients [a; b], then q k v [l, 3c], the attention P [l, l] and
/// P v [l, c] (l = h·w positions).
struct Saved {
    ab: Vec<f32>,
    qkv: Vec<f32>,
    p: Vec<f32>,
    o: Vec<f32>,
}

/// θ split into its parameters.
struct Params<'a> {
    gamma: &'a [f32],
    beta: &'a [f32],
    w_qkv: &'a [f32],
    b_qkv: &'a [f32],
    w_o: &'a [f32],
    b_o: &'a [f32],
}

/// C [m × n] (+)= A B, A and B read through their (row, column) strides.
fn mm(
    c: (&mut [f32], usize),
    (m, n, k): (usize, usize, usize),
    a: (&[f32], (usize, usize)),
    b: (&[f32], (usize, usize)),
    accumulate: bool,
) {
    gemm(
        (m, n, k),
        c.0,
        c.1,
        a.0,
        a.1,
        Rhs::Strided(b.0, b.1),
        accumulate,
    );
}

/// Each row of x [.., c] plus b \[c\].
fn add_rows(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
    }
}

/// s += the sum of the rows of x [.., c].
fn sum_rows(s: &mut [f32], x: &[f32]) {
    super::winograd::add_pixels(s, x);
}

impl AttentionOp {
    fn params<'a>(&self, theta: &'a [f32], c: usize) -> candle_core::Result<Params<'a>> {
        let parts = split_params(theta, &[c, c, 3 * c * c, 3 * c, c * c, c]);
        let (Some(parts), true) = (parts, c.is_multiple_of(self.norm.groups)) else {
            candle_core::bail!(
                "unet-attention op: {} parameter values for {c} channels",
                theta.len()
            );
        };
        let p = |k: usize| parts.get(k).copied().unwrap_or(&[]);
        Ok(Params {
            gamma: p(0),
            beta: p(1),
            w_qkv: p(2),
            b_qkv: p(3),
            w_o: p(4),
            b_o: p(5),
        })
    }
}

impl CustomOp2 for AttentionOp {
    fn name(&self) -> &'static str {
        "unet-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, theta) = (
            contiguous(s1, l1, self.name())?,
            contiguous(s2, l2, self.name())?,
        );
        let &[n, h, w, c] = l1.dims() else {
            candle_core::bail!("unet-attention op: x {:?}", l1.dims());
        };
        let p = self.params(theta, c)?;
        let (l, scale) = (h * w, 1.0 / (c as f32).sqrt());
        let ab = self.norm.coefficients(x, p.gamma, p.beta, n);
        let mut qkv = vec![0.0f32; n * l * 3 * c];
        over_images(&mut qkv, n, |images, part| {
            let mut z = vec![0.0f32; l * c];
            for (i, qkv) in images.zip(part.chunks_exact_mut(l * 3 * c)) {
                let (a, b) = ab[2 * i * c..2 * (i + 1) * c].split_at(c);
                activate(&mut z, &x[i * l * c..(i + 1) * l * c], (a, b), None);
                mm(
                    (qkv, 3 * c),
                    (l, 3 * c, c),
                    (&z, (c, 1)),
                    (p.w_qkv, (1, c)),
                    false,
                );
                add_rows(qkv, p.b_qkv);
            }
        });
        let mut att = vec![0.0f32; n * l * l];
        let mut o = vec![0.0f32; n * l * c];
        // P = softmax(q kᵀ/√c) by rows, then P v
        over_images(&mut att, n, |images, part| {
            for (i, pi) in images.zip(part.chunks_exact_mut(l * l)) {
                let qkv = &qkv[i * l * 3 * c..(i + 1) * l * 3 * c];
                mm(
                    (pi, l),
                    (l, l, c),
                    (qkv, (3 * c, 1)),
                    (&qkv[c..], (1, 3 * c)),
                    false,
                );
                for row in pi.chunks_exact_mut(l) {
                    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    let mut sum = 0.0;
                    for v in row.iter_mut() {
                        *v = ((*v - max) * scale).exp();
                        sum += *v;
                    }
                    row.iter_mut().for_each(|v| *v /= sum);
                }
            }
        });
        over_images(&mut o, n, |images, part| {
            for (i, oi) in images.zip(part.chunks_exact_mut(l * c)) {
                let (pi, qkv) = (&att[i * l * l..][..l * l], &qkv[i * l * 3 * c..]);
                mm(
                    (oi, c),
                    (l, c, l),
                    (pi, (l, 1)),
                    (&qkv[2 * c..], (3 * c, 1)),
                    false,
                );
            }
        });
        // y = x + O W_oᵀ + b_o
        let (y, _) = over_new_images(n * l * c, n, |images, part| {
            for (i, yi) in images.zip(part.chunks_exact_mut(l * c)) {
                let oi = &o[i * l * c..(i + 1) * l * c];
                mm((yi, c), (l, c, c), (oi, (c, 1)), (p.w_o, (1, c)), false);
                add_rows(yi, p.b_o);
                let xi = &x[i * l * c..(i + 1) * l * c];
                yi.iter_mut().zip(xi).for_each(|(y, x)| *y += x);
            }
        });
        let _ = self.saved.set(Saved { ab, qkv, p: att, o });
        Ok((CpuStorage::F32(y), Shape::from((n, h, w, c))))
    }

    /// Back through the projection, P v, the softmax (dS = P ∘ (dP − Σ_j P dP)), q kᵀ, the q k v
    /// layer and the norm; plus the residual's g.
    fn bwd(
        &self,
        x: &Tensor,
        theta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(sv) = self.saved.get() else {
            candle_core::bail!(
                "unet-attention op: backward pass without a forward pass on the CPU"
            );
        };
        let (n, h, w, c) = x.dims4()?;
        let (l, scale) = (h * w, 1.0 / (c as f32).sqrt());
        let (dx, dtheta) = on_f32s([x, theta, grad], |[x, theta, g]| {
            let p = self.params(theta, c)?;
            let (dz, sums) = over_new_images(n * l * c, n, |images, part| {
                // this thread's dW_qkv, db_qkv, dW_o, db_o
                let mut dw = vec![0.0f32; 3 * c * c + 3 * c + c * c + c];
                let (dw_qkv, rest) = dw.split_at_mut(3 * c * c);
                let (db_qkv, rest) = rest.split_at_mut(3 * c);
                let (dw_o, db_o) = rest.split_at_mut(c * c);
                let (mut d_o, mut dp) = (vec![0.0f32; l * c], vec![0.0f32; l * l]);
                let (mut dqkv, mut z) = (vec![0.0f32; l * 3 * c], vec![0.0f32; l * c]);
                for (i, dz) in images.zip(part.chunks_exact_mut(l * c)) {
                    let gi = &g[i * l * c..(i + 1) * l * c];
                    let (qkv, pi) = (
                        &sv.qkv[i * l * 3 * c..][..l * 3 * c],
                        &sv.p[i * l * l..][..l * l],
                    );
                    let oi = &sv.o[i * l * c..(i + 1) * l * c];
                    sum_rows(db_o, gi);
                    mm((dw_o, c), (c, c, l), (gi, (1, c)), (oi, (c, 1)), true);
                    mm(
                        (&mut d_o, c),
                        (l, c, c),
                        (gi, (c, 1)),
                        (p.w_o, (c, 1)),
                        false,
                    );
                    // dP = dO vᵀ; dv = Pᵀ dO
                    mm(
                        (&mut dp, l),
                        (l, l, c),
                        (&d_o, (c, 1)),
                        (&qkv[2 * c..], (1, 3 * c)),
                        false,
                    );
                    let dv = &mut dqkv[2 * c..];
                    mm((dv, 3 * c), (l, c, l), (pi, (1, l)), (&d_o, (c, 1)), false);
                    for (dr, pr) in dp.chunks_exact_mut(l).zip(pi.chunks_exact(l)) {
                        let dot: f32 = dr.iter().zip(pr).map(|(d, p)| d * p).sum();
                        dr.iter_mut()
                            .zip(pr)
                            .for_each(|(d, p)| *d = p * (*d - dot) * scale);
                    }
                    // dq = dS k; dk = dSᵀ q
                    let k = &qkv[c..];
                    mm(
                        (&mut dqkv, 3 * c),
                        (l, c, l),
                        (&dp, (l, 1)),
                        (k, (3 * c, 1)),
                        false,
                    );
                    let dk = &mut dqkv[c..];
                    mm(
                        (dk, 3 * c),
                        (l, c, l),
                        (&dp, (1, l)),
                        (qkv, (3 * c, 1)),
                        false,
                    );
                    // through the q k v layer to z, the norm's result
                    let (a, b) = sv.ab[2 * i * c..2 * (i + 1) * c].split_at(c);
                    activate(&mut z, &x[i * l * c..(i + 1) * l * c], (a, b), None);
                    sum_rows(db_qkv, &dqkv);
                    mm(
                        (dw_qkv, c),
                        (3 * c, c, l),
                        (&dqkv, (1, 3 * c)),
                        (&z, (c, 1)),
                        true,
                    );
                    mm(
                        (dz, c),
                        (l, c, 3 * c),
                        (&dqkv, (3 * c, 1)),
                        (p.w_qkv, (c, 1)),
                        false,
                    );
                }
                dw
            });
            let (mut dx, dgamma, dbeta) = self.norm.cotangents(x, p.gamma, p.beta, &dz, n);
            dx.iter_mut().zip(g).for_each(|(d, g)| *d += g);
            let mut dw = vec![0.0f32; sums.first().map_or(0, Vec::len)];
            for s in &sums {
                dw.iter_mut().zip(s).for_each(|(a, b)| *a += b);
            }
            // θ's order: γ, β, W_qkv, b_qkv, W_o, b_o
            Ok::<_, candle_core::Error>((dx, [dgamma, dbeta, dw].concat()))
        })??;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dtheta, theta.shape(), x.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::tests::{assert_grads_match, randn};
    use super::super::layers::Builder;
    use super::Attention;
    use anyhow::Result;
    use candle_core::{Device, Var};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// The op against the composite: values, and the gradients of x and every parameter, on
    /// maps of 7×7 and 3×5 positions, and one image of 2×3.
    #[test]
    fn values_and_gradients_match_the_composite() -> Result<()> {
        let dev = Device::Cpu;
        for (case, &(n, h, w, c)) in [(3, 7, 7, 16), (2, 3, 5, 8), (1, 2, 3, 8)]
            .iter()
            .enumerate()
        {
            let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
            let mut b = Builder::drawing(&mut rng, &dev);
            let att = Attention::new(&mut b, "a", c)?;
            for (j, (_, var)) in b.vars.iter().enumerate().take(2) {
                var.set(&((randn(&[c], 30 + j as u64)? * 0.5)? + 1.0)?)?;
            }
            let v = b.vars.clone();
            let x = Var::from_tensor(&((randn(&[n, h, w, c], 3 + case as u64)? * 2.0)? + 0.5)?)?;
            let r = randn(&[n, h, w, c], 5 + case as u64)?;
            let ours = att.forward(&v, &x)?;
            let theirs = att.forward_composite(&v, &x)?;
            let scale = theirs.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5 * scale, "case {case}: values differ by {diff}");
            let g1 = (ours * &r)?.sum_all()?.backward()?;
            let g2 = (theirs * &r)?.sum_all()?.backward()?;
            let mut vars: Vec<&Var> = vec![&x];
            vars.extend(v.iter().map(|(_, var)| var));
            assert_grads_match(&g1, &g2, &vars, 1e-4, &format!("case {case}"))?;
        }
        Ok(())
    }

    /// A parameter vector of the wrong length is an error, not a panic.
    #[test]
    fn mismatched_parameters_are_refused() -> Result<()> {
        let op = super::AttentionOp {
            norm: super::NormOp {
                groups: 4,
                silu: false,
                eps: 1e-5,
            },
            saved: std::sync::OnceLock::new(),
        };
        let x = randn(&[2, 3, 3, 8], 1)?;
        let err = x.apply_op2(&randn(&[10], 2)?, op).expect_err("refused");
        assert!(format!("{err}").contains("parameter values"), "{err}");
        Ok(())
    }
}
