//! An E(n)-equivariant graph network (Satorras, Hoogeboom and Welling 2021) as DEM's
//! `EGNN_dynamics`: N particles in k dimensions on the fully connected graph without self-edges,
//! time as every node's one input feature, E_GCL layers (recurrent node update, attention on the
//! messages, tanh-bounded coordinate update, sum aggregation, differences normalised by
//! ‖xᵢ − xⱼ‖ + 1), and the output x_final − x with the centre of mass removed.
//!
//! Rotating, reflecting or permuting the particles of the input transforms the output the same
//! way; translating it leaves the output unchanged. Edges (E = N(N − 1) per sample) are ordered
//! by receiver, so that each receiver's messages are consecutive rows. The first edge layer acts
//! on [hᵢ, hⱼ, ‖xᵢ − xⱼ‖², ‖xᵢ⁰ − xⱼ⁰‖²]: its hᵢ and hⱼ blocks are applied per node before the
//! gather (N instead of N(N − 1) rows), the same function as DEM's per-edge linear layer.
//!
//! Two implementations of the same layer: in f32 on the CPU the edge MLP runs as one fused op
//! (`edges`: blocks of edges through the whole chain in cache, a hand-written backward pass) and
//! the per-node products on a fused linear op (`linear`), both on the fused MLP's AVX-512 GEMM;
//! elsewhere (f64, a GPU, `TWEEDIE_ENGINE=candle`) candle's ops run it, gathering node features
//! onto [B, E, ·] tensors with `index_select` and summing messages with `index_add` (contiguous
//! row loops; a dense [B, N, N, ·] formulation needs middle-axis broadcasts and reductions, which
//! candle runs element by element through strided indices). The candle version is the reference
//! the fused one is tested against. On one core, batch 512, forward and backward: DW-4 size
//! 136 → 41 ms, LJ-13 size 3.1 → 0.68 s.

mod edges;
mod linear;

use super::config::Arch;
use super::layers::{self, affine, Activation};
use super::network::Network;
use crate::process::Space;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use edges::EdgeOp;
use linear::LinearOp;
use rand::Rng;

/// DEM's `coords_range`: the bound on the summed coordinate updates of all layers, split evenly.
const COORDS_RANGE: f64 = 15.0;
/// Added under the square root of ‖xᵢ − xⱼ‖² (DEM's 1e-8): a finite gradient at coincident points.
const NORM_EPS: f64 = 1e-8;

/// Where one E_GCL layer's variables sit in `Egnn::vars` (each weight is followed by its bias).
struct Gcl {
    edge_in: usize,
    edge_out: usize,
    /// Absent in the last layer: its node update never reaches the output.
    node: Option<(usize, usize)>,
    coord_in: usize,
    /// The bias-free scalar output of the coordinate MLP.
    coord_out: usize,
    att: usize,
}

/// What a layer's edge MLP reads: node features h [B·N, H] and each edge's r = ‖xᵢ − xⱼ‖² and
/// d = ‖xᵢ⁰ − xⱼ⁰‖² ([B, E, 1] each).
#[derive(Clone, Copy)]
struct EdgeInputs<'a> {
    h: &'a Tensor,
    radial: &'a Tensor,
    dist0: &'a Tensor,
}

/// DEM's `EGNN_dynamics` with `depth` E_GCL layers of `width` hidden features.
pub struct Egnn {
    particles: usize,
    dim: usize,
    hidden: usize,
    activation: Activation,
    /// Each layer's bound on its coordinate update (DEM: coords_range / layers).
    coords_range: f64,
    /// embedding.{weight,bias}; gcl_{l}.{edge_mlp.0, edge_mlp.2, node_mlp.0, node_mlp.2,
    /// coord_mlp.0}.{weight,bias}, gcl_{l}.coord_mlp.2.weight, gcl_{l}.att_mlp.0.{weight,bias}
    /// (DEM's names without its `egnn.` prefix).
    vars: Vec<(String, Var)>,
    gcl: Vec<Gcl>,
    /// Receiver i and sender j of each edge (i ≠ j), ordered by receiver: \[E\] u32.
    row: Tensor,
    col: Tensor,
    /// Whether f32 CPU evaluations run the edges on the fused op (`edges`); off, or in f64 or
    /// on a GPU, the same layer runs on candle's ops (the reference it is tested against).
    pub(crate) fused: bool,
    /// The fused op's per-thread buffers, kept between calls.
    work: edges::Workspaces,
}

impl Egnn {
    /// A new EGNN for the particles of `space` with PyTorch's default initialisation, except the
    /// coordinate MLP's output weight (Xavier-uniform with gain 0.001, as DEM), drawn from `rng`.
    pub fn new<R: Rng>(space: Space, arch: &Arch, rng: &mut R, device: &Device) -> Result<Self> {
        let Space::ComFree { particles, dim } = space else {
            bail!("{}", FULL_SPACE);
        };
        let h = arch.width;
        let layers_n = arch.depth;
        let mut vars = Vec::new();
        let push_linear =
            |vars: &mut Vec<(String, Var)>, name: &str, fan_in, fan_out, rng: &mut R| {
                let at = vars.len();
                let (w, b) = layers::linear(fan_in, fan_out, rng, device)?;
                vars.push((format!("{name}.weight"), w));
                vars.push((format!("{name}.bias"), b));
                anyhow::Ok(at)
            };
        push_linear(&mut vars, "embedding", 1, h, rng)?;
        let mut gcl = Vec::with_capacity(layers_n);
        for l in 0..layers_n {
            let p = format!("gcl_{l}");
            // [hᵢ, hⱼ, radial, the input's squared distance]
            let edge_in = push_linear(&mut vars, &format!("{p}.edge_mlp.0"), 2 * h + 2, h, rng)?;
            let edge_out = push_linear(&mut vars, &format!("{p}.edge_mlp.2"), h, h, rng)?;
            let node = if l + 1 < layers_n {
                let a = push_linear(&mut vars, &format!("{p}.node_mlp.0"), 2 * h, h, rng)?;
                Some((
                    a,
                    push_linear(&mut vars, &format!("{p}.node_mlp.2"), h, h, rng)?,
                ))
            } else {
                None
            };
            let coord_in = push_linear(&mut vars, &format!("{p}.coord_mlp.0"), h, h, rng)?;
            let att = push_linear(&mut vars, &format!("{p}.att_mlp.0"), h, 1, rng)?;
            // xavier_uniform_(gain = 0.001): U(±gain·√(6/(fan_in + fan_out)))
            let bound = 0.001 * (6.0 / (h + 1) as f64).sqrt();
            let coord_out = vars.len();
            vars.push((
                format!("{p}.coord_mlp.2.weight"),
                layers::uniform(&[1, h], bound, rng, device)?,
            ));
            gcl.push(Gcl {
                edge_in,
                edge_out,
                node,
                coord_in,
                coord_out,
                att,
            });
        }
        let (row, col): (Vec<u32>, Vec<u32>) = (0..particles as u32)
            .flat_map(|i| {
                (0..particles as u32)
                    .filter(move |&j| j != i)
                    .map(move |j| (i, j))
            })
            .unzip();
        let edges = row.len();
        Ok(Egnn {
            particles,
            dim,
            hidden: h,
            activation: arch.activation,
            coords_range: COORDS_RANGE / layers_n.max(1) as f64,
            vars,
            gcl,
            row: Tensor::from_vec(row, edges, device)?,
            col: Tensor::from_vec(col, edges, device)?,
            fused: super::fused::enabled(),
            work: Default::default(),
        })
    }

    /// The number of trainable values of an EGNN of `layers` layers of `width` (`None` on
    /// overflow): DEM's `EGNN_dynamics` less its parameters that never reach the output (the last
    /// layer's node MLP and the unused output embedding).
    pub fn parameter_count(width: usize, layers: usize) -> Option<usize> {
        let linear = |i: usize, o: usize| i.checked_mul(o)?.checked_add(o);
        let h = width;
        let edge = linear(2 * h.checked_add(1)?, h)?.checked_add(linear(h, h)?)?;
        let node = linear(2 * h, h)?.checked_add(linear(h, h)?)?;
        // coordinate MLP (its output has no bias) and attention
        let coord = linear(h, h)?.checked_add(h)?.checked_add(linear(h, 1)?)?;
        let per_layer = edge.checked_add(coord)?;
        linear(1, h)?
            .checked_add(per_layer.checked_mul(layers)?)?
            .checked_add(node.checked_mul(layers.saturating_sub(1))?)
    }

    fn p(&self, i: usize) -> &Tensor {
        self.vars[i].1.as_tensor()
    }

    fn dtype(&self) -> DType {
        self.p(0).dtype()
    }

    /// xᵢ − xⱼ of every edge: [B, E, k] from x [B, N, k].
    fn differences(&self, x: &Tensor) -> Result<Tensor> {
        Ok((x.index_select(&self.row, 1)? - x.index_select(&self.col, 1)?)?)
    }

    /// Σⱼ mᵢⱼ over each receiver's edges: [B, N, c] from messages [B, E, c].
    fn aggregate(&self, m: &Tensor) -> Result<Tensor> {
        let (b, _, c) = m.dims3()?;
        let zeros = Tensor::zeros((b, self.particles, c), m.dtype(), m.device())?;
        Ok(zeros.index_add(&self.row, m, 1)?)
    }

    /// The edge MLP of layer `g` on candle's ops: Σⱼ m̃ᵢⱼ [B·N, H] and φ [B, E].
    fn edges_reference(&self, g: &Gcl, inputs: EdgeInputs) -> Result<(Tensor, Tensor)> {
        let EdgeInputs { h, radial, dist0 } = inputs;
        let ((b, e, _), n, hd) = (radial.dims3()?, self.particles, self.hidden);
        let act = |z: &Tensor| self.activation.apply(z);
        // W [hᵢ, hⱼ, r, d] + b₁, the hᵢ and hⱼ blocks applied per node, then gathered
        let (w, bias) = (self.p(g.edge_in), self.p(g.edge_in + 1));
        let node_i = affine(h, &w.narrow(1, 0, hd)?, bias)?.reshape((b, n, hd))?;
        let node_j = h.matmul(&w.narrow(1, hd, hd)?.t()?)?.reshape((b, n, hd))?;
        let scalars = Tensor::cat(&[radial, dist0], 2)?.reshape((b * e, 2))?;
        let pre = (node_i.index_select(&self.row, 1)? + node_j.index_select(&self.col, 1)?)?
            .reshape((b * e, hd))?;
        let pre = (pre + scalars.matmul(&w.narrow(1, 2 * hd, 2)?.t()?)?)?;
        let m = act(&pre)?;
        let m = act(&affine(&m, self.p(g.edge_out), self.p(g.edge_out + 1))?)?;
        let att = candle_nn::ops::sigmoid(&affine(&m, self.p(g.att), self.p(g.att + 1))?)?;
        let m = m.broadcast_mul(&att)?;
        // φ = R tanh(w_o·a(W_c m̃ + b_c))
        let phi = act(&affine(&m, self.p(g.coord_in), self.p(g.coord_in + 1))?)?
            .matmul(&self.p(g.coord_out).t()?)?
            .tanh()?
            .affine(self.coords_range, 0.0)?
            .reshape((b, e))?;
        let agg = self
            .aggregate(&m.reshape((b, e, hd))?)?
            .reshape((b * n, hd))?;
        Ok((agg, phi))
    }

    /// `edges_reference` on the fused CPU op (f32): the node projections [Pᵢ | Qᵢ] of all nodes
    /// in one product, the layer's edge weights in one flat tensor (a copy of ~2H² values).
    fn edges_fused(&self, g: &Gcl, inputs: EdgeInputs) -> Result<(Tensor, Tensor)> {
        let EdgeInputs { h, radial, dist0 } = inputs;
        let ((b, e, _), n, hd) = (radial.dims3()?, self.particles, self.hidden);
        let w = self.p(g.edge_in);
        // [A | C] (the blocks acting on hᵢ and hⱼ) → [A; C], so that h [A; C]ᵀ = [P | Q]
        let ac = w
            .narrow(1, 0, 2 * hd)?
            .reshape((hd, 2, hd))?
            .transpose(0, 1)?
            .reshape((2 * hd, hd))?;
        let no_bias = Tensor::zeros(2 * hd, DType::F32, h.device())?;
        let nodes = self
            .node_linear(h, &ac, &no_bias, false)?
            .reshape((b, n, 2 * hd))?;
        let dist = Tensor::cat(&[radial, dist0], 2)?;
        let flat = |i: usize| self.p(i).flatten_all();
        let weights = Tensor::cat(
            &[
                w.narrow(1, 2 * hd, 2)?.t()?.flatten_all()?,
                self.p(g.edge_in + 1).clone(),
                flat(g.edge_out)?,
                self.p(g.edge_out + 1).clone(),
                flat(g.att)?,
                self.p(g.att + 1).clone(),
                flat(g.coord_in)?,
                self.p(g.coord_in + 1).clone(),
                flat(g.coord_out)?,
            ],
            0,
        )?;
        let op = EdgeOp {
            particles: n,
            hidden: hd,
            activation: self.activation,
            range: self.coords_range as f32,
            work: self.work.clone(),
        };
        let out = nodes.apply_op3(&dist, &weights, op)?;
        let agg = out.narrow(1, 0, n * hd)?.reshape((b * n, hd))?;
        Ok((agg, out.narrow(1, n * hd, e)?))
    }

    /// Whether this evaluation runs on the fused CPU ops: f32 on the CPU, fused kernels enabled.
    fn fused_on(&self, x: &Tensor) -> bool {
        self.fused && x.device().is_cpu() && x.dtype() == DType::F32
    }

    /// a(x Wᵀ + b) (with the activation when `act`) on node rows: one fused op where `fused_on`,
    /// else candle's ops.
    fn node_linear(&self, x: &Tensor, w: &Tensor, b: &Tensor, act: bool) -> Result<Tensor> {
        if self.fused_on(x) {
            let op = LinearOp::new(act.then_some(self.activation));
            return Ok(x
                .contiguous()?
                .apply_op3(&w.contiguous()?, &b.contiguous()?, op)?);
        }
        let z = affine(x, w, b)?;
        if act {
            self.activation.apply(&z)
        } else {
            Ok(z)
        }
    }

    /// One E_GCL layer on node features h [B·N, H] and coordinates x [B, N, k], with the input's
    /// squared distances `dist0` [B, E, 1]: the new (h, x); h is unchanged in the last layer.
    fn layer(&self, g: &Gcl, h: &Tensor, x: &Tensor, dist0: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = x.dims()[0];
        let diff = self.differences(x)?;
        let e = diff.dims()[1];
        let radial = diff.sqr()?.sum_keepdim(2)?;
        // DEM's normalisation: (xᵢ − xⱼ)/(‖xᵢ − xⱼ‖ + 1)
        let unit = diff.broadcast_div(&((&radial + NORM_EPS)?.sqrt()? + 1.0)?)?;

        let inputs = EdgeInputs {
            h,
            radial: &radial,
            dist0,
        };
        let (agg, phi) = if self.fused_on(x) {
            self.edges_fused(g, inputs)?
        } else {
            self.edges_reference(g, inputs)?
        };
        // coordinates: x ← x + Σⱼ unitᵢⱼ φᵢⱼ
        let trans = unit.broadcast_mul(&phi.reshape((b, e, 1))?)?;
        let x = (x + self.aggregate(&trans)?)?;

        // nodes: h ← h + ψ([h, Σⱼ mᵢⱼ]) (recurrent)
        let h = match g.node {
            Some((a, c)) => {
                let input = Tensor::cat(&[h, &agg], 1)?;
                let z = self.node_linear(&input, self.p(a), self.p(a + 1), true)?;
                (h + self.node_linear(&z, self.p(c), self.p(c + 1), false)?)?
            }
            None => h.clone(),
        };
        Ok((h, x))
    }
}

/// Why an EGNN refuses the full space.
pub const FULL_SPACE: &str = "network = \"egnn\" needs particles: train on particle data \
    [n, N, k] with --com-free (data.space = { kind = \"com_free\", particles = N, dim = k })";

impl Network for Egnn {
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        layers::no_condition(cond, "egnn")?;
        let (b, d) = x.dims2()?;
        let (n, k) = (self.particles, self.dim);
        if d != n * k {
            bail!("the egnn network takes {n} particles in {k} dimensions (rows of {}), not rows of {d}", n * k);
        }
        let dtype = self.dtype();
        let x0 = x.to_dtype(dtype)?.reshape((b, n, k))?;
        // every node's one feature is t (DEM's condition_time), embedded linearly node by node
        // (embedding per sample and then broadcasting would sum the gradient over the particles
        // in candle's slow middle-axis reduction)
        let t_nodes = t
            .to_dtype(dtype)?
            .reshape((b, 1))?
            .broadcast_as((b, n))?
            .reshape((b * n, 1))?;
        let mut h = self.node_linear(&t_nodes, self.p(0), self.p(1), false)?;
        let dist0 = self.differences(&x0)?.sqr()?.sum_keepdim(2)?;
        let mut x = x0.clone();
        for g in &self.gcl {
            (h, x) = self.layer(g, &h, &x, &dist0)?;
        }
        let vel = (x - x0)?.reshape((b, d))?;
        Space::ComFree {
            particles: n,
            dim: k,
        }
        .project_tensor(&vel)
    }

    fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn set_buffer(&mut self, name: &str, _value: Tensor) -> Result<()> {
        bail!("the egnn network has no buffer '{name}' (it embeds t linearly)")
    }

    fn to_dtype(&mut self, dtype: DType) -> Result<()> {
        layers::vars_to_dtype(&mut self.vars, dtype)
    }
}
