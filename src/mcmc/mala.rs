//! The Metropolis-adjusted Langevin algorithm (MALA; Roberts & Tweedie 1996) on many chains at
//! once, in f64. With s = βF the score of p ∝ exp(−βU), each chain proposes
//!
//!   y = P(x + h s(x) + √(2h) ξ),  ξ ~ N(0, I),
//!
//! with P the projection onto the potential's space (the identity, or the centre-of-mass-free
//! subspace of particles, so chains that start centred stay centred), and accepts it with
//! probability min(1, exp(−β(U(y) − U(x)) + (‖r_fwd‖² − ‖r_rev‖²)/(4h))), where
//! r_fwd = P(y − x − h s(x)) and r_rev = P(x − y − h s(y)): the Metropolis–Hastings ratio of the
//! Gaussian proposals on that space. A proposal with a non-finite energy or force is rejected.
//!
//! Step-size adaptation (during burn-in only): one step size h shared by all chains (global),
//! adapted by Robbins–Monro on log h toward the target acceptance from the chains' mean acceptance
//! probability ᾱ_k, log h ← log h + (k+1)^−0.6 (ᾱ_k − target); the h used after burn-in is the
//! geometric mean of the iterates of the burn-in's second half (Polyak averaging: with few chains
//! the last iterate is noisy). It is then fixed, so the kept draws are from an exact MALA chain.
//!
//! Every chain has its own random stream (ChaCha8, stream = chain index), and the chains' mean
//! acceptance is summed in chain order, so a run's draws do not depend on the thread count.

use super::Progress;
use crate::process::Space;
use crate::sample::Callback;
use crate::target::Potential;
use anyhow::{bail, ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

/// The most values of kept positions (as many of forces) a run may hold: 2³⁰, 8 GiB in f64.
const MAX_KEPT: usize = 1 << 30;

/// Steps every chain takes in one parallel region when the step size is fixed.
const BLOCK: usize = 16;

/// MALA's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Number of chains run side by side.
    pub chains: usize,
    /// Steps after burn-in; each chain keeps every `thin`-th, ⌊steps/thin⌋ draws.
    pub steps: usize,
    /// Steps before any draw is kept (the step size adapts during them).
    pub burn_in: usize,
    /// Keep every `thin`-th state after burn-in.
    pub thin: usize,
    /// The step size h (the initial one when adapting).
    pub step_size: f64,
    /// Acceptance rate the adaptation aims at (0.574: optimal for MALA in high dimension,
    /// Roberts & Rosenthal 1998).
    pub target_accept: f64,
    /// Adapt h during burn-in.
    pub adapt: bool,
    /// Seed of every chain's random stream (and of the default starting states).
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chains: 256,
            steps: 2000,
            burn_in: 1000,
            thin: 10,
            step_size: 1e-2,
            target_accept: 0.574,
            adapt: true,
            seed: 0,
        }
    }
}

impl Options {
    /// Checks the settings: chains, steps and thin ≥ 1, at least one kept draw, h > 0 and the
    /// target acceptance in (0, 1).
    pub fn check(&self) -> Result<()> {
        ensure!(self.chains >= 1, "chains must be at least 1, not 0");
        ensure!(self.steps >= 1, "steps must be at least 1, not 0");
        ensure!(self.thin >= 1, "thin must be at least 1, not 0");
        ensure!(
            self.steps >= self.thin,
            "steps ({}) / thin ({}) keeps no draw; take steps ≥ thin",
            self.steps,
            self.thin
        );
        ensure!(
            self.step_size.is_finite() && self.step_size > 0.0,
            "step size must be a positive finite number, not {}",
            self.step_size
        );
        ensure!(
            self.target_accept > 0.0 && self.target_accept < 1.0,
            "target acceptance must lie strictly between 0 and 1, not {}",
            self.target_accept
        );
        Ok(())
    }

    /// Draws kept per chain, ⌊steps/thin⌋.
    pub fn draws(&self) -> usize {
        self.steps / self.thin.max(1)
    }
}

/// The kept draws of a MALA run and its acceptance.
#[derive(Clone, Debug)]
pub struct Draws {
    /// Number of chains C.
    pub chains: usize,
    /// Draws kept per chain n.
    pub draws: usize,
    /// Dimension d of a configuration.
    pub dim: usize,
    /// Positions \[C, n, d\], chain-major (chain c's draws are rows c·n .. (c+1)·n).
    pub positions: Vec<f64>,
    /// Energies U \[C, n\], chain-major.
    pub energies: Vec<f64>,
    /// Forces F = −∇U \[C, n, d\] (not divided by kT), chain-major.
    pub forces: Vec<f64>,
    /// Share of proposals accepted after burn-in (all chains).
    pub acceptance: f64,
    /// Share of proposals accepted during burn-in (NaN without burn-in).
    pub burn_in_acceptance: f64,
    /// The step size h of the kept phase.
    pub step_size: f64,
}

/// What every chain of a group shares in one call: the potential and the step's constants.
struct Ctx<'a> {
    p: &'a (dyn Potential + Sync),
    space: Space,
    beta: f64,
    d: usize,
}

/// A slice of the chains with their states, proposals and kept draws (one rayon task).
struct Group {
    rng: Vec<ChaCha8Rng>,
    /// Current positions, energies and forces.
    x: Vec<f64>,
    u: Vec<f64>,
    f: Vec<f64>,
    /// Proposals.
    y: Vec<f64>,
    uy: Vec<f64>,
    fy: Vec<f64>,
    /// The last proposal's acceptance probability, per chain.
    alpha: Vec<f64>,
    /// Proposals accepted (burn-in, kept phase).
    accepted: [u64; 2],
    /// Kept positions, energies and forces, chain-major within the group.
    kx: Vec<f64>,
    ku: Vec<f64>,
    kf: Vec<f64>,
}

impl Group {
    /// One MALA step of every chain with step size h; `kept` = (the draw index to record, draws per
    /// chain) when this step's state is kept; `phase` 0 in burn-in, 1 after.
    fn step(&mut self, c: &Ctx, h: f64, phase: usize, kept: Option<(usize, usize)>) -> Result<()> {
        let (d, beta) = (c.d, c.beta);
        let noise = (2.0 * h).sqrt();
        for (k, rng) in self.rng.iter_mut().enumerate() {
            let (x, f) = (&self.x[k * d..][..d], &self.f[k * d..][..d]);
            let y = &mut self.y[k * d..][..d];
            for j in 0..d {
                y[j] = x[j] + h * beta * f[j] + noise * rng.sample::<f64, _>(StandardNormal);
            }
            c.space.project(y);
        }
        c.p.energy_force(&self.y, &mut self.uy, &mut self.fy)?;
        let mut r = vec![0.0; d];
        // ‖P(b − a − h β F_a)‖²: the exponent of the Gaussian proposal a → b, times 4h
        let mut residual = |a: &[f64], b: &[f64], fa: &[f64]| {
            for j in 0..d {
                r[j] = b[j] - a[j] - h * beta * fa[j];
            }
            c.space.project(&mut r);
            r.iter().map(|v| v * v).sum::<f64>()
        };
        for (k, rng) in self.rng.iter_mut().enumerate() {
            let s = k * d..(k + 1) * d;
            let (x, y) = (&self.x[s.clone()], &self.y[s.clone()]);
            let (fx, fy) = (&self.f[s.clone()], &self.fy[s.clone()]);
            let log_a = -beta * (self.uy[k] - self.u[k])
                + (residual(x, y, fx) - residual(y, x, fy)) / (4.0 * h);
            // NaN (a non-finite energy or force at y) rejects
            let a = if log_a >= 0.0 { 1.0 } else { log_a.exp() };
            let a = if a.is_nan() { 0.0 } else { a };
            self.alpha[k] = a;
            if rng.random::<f64>() < a {
                self.x[s.clone()].copy_from_slice(&self.y[s.clone()]);
                self.f[s.clone()].copy_from_slice(&self.fy[s]);
                self.u[k] = self.uy[k];
                self.accepted[phase] += 1;
            }
        }
        if let Some((i, n)) = kept {
            for k in 0..self.u.len() {
                let row = k * n + i;
                self.kx[row * d..][..d].copy_from_slice(&self.x[k * d..][..d]);
                self.kf[row * d..][..d].copy_from_slice(&self.f[k * d..][..d]);
                self.ku[row] = self.u[k];
            }
        }
        Ok(())
    }
}

/// Runs MALA on `p` from `init` (C·d values, one starting configuration per chain; `None`: the
/// potential's own `initial` states), calling `progress` after every step.
pub fn mala(
    p: &(dyn Potential + Sync),
    init: Option<&[f64]>,
    o: &Options,
    progress: Option<&Callback<Progress>>,
) -> Result<Draws> {
    o.check()?;
    let (d, chains, draws) = (p.dim(), o.chains, o.draws());
    let space = p.space();
    space.check(d)?;
    // what the run keeps (positions and forces, f64) must be allocatable: refuse, not abort
    let kept = chains
        .checked_mul(draws.max(1))
        .and_then(|v| v.checked_mul(d))
        .filter(|&v| v <= MAX_KEPT)
        .is_some();
    ensure!(
        kept,
        "{chains} chains × {draws} draws × {d} values is more than the {MAX_KEPT} values a run \
         keeps at most (16 GiB with the forces); take fewer chains or steps, or a larger thin"
    );
    let mut rng: Vec<ChaCha8Rng> = (0..chains)
        .map(|c| {
            let mut r = ChaCha8Rng::seed_from_u64(o.seed);
            r.set_stream(c as u64);
            r
        })
        .collect();
    let mut x = match init {
        Some(v) => {
            ensure!(
                v.len() == chains * d,
                "initial states have {} values, not chains × d = {chains} × {d}",
                v.len()
            );
            v.to_vec()
        }
        None => rng.iter_mut().flat_map(|r| p.initial(r)).collect(),
    };
    space.project(&mut x);
    let (mut u, mut f) = (vec![0.0; chains], vec![0.0; chains * d]);
    p.energy_force(&x, &mut u, &mut f)?;
    if let Some(c) =
        (0..chains).find(|&c| !u[c].is_finite() || f[c * d..][..d].iter().any(|v| !v.is_finite()))
    {
        bail!(
            "the initial state of chain {c} has energy {} or a non-finite force; start elsewhere",
            u[c]
        );
    }
    // a few groups per thread, so that a slow group does not hold up the step
    let per = chains.div_ceil(4 * rayon::current_num_threads()).max(1);
    let mut groups: Vec<Group> = Vec::new();
    let mut rng = rng.into_iter();
    for start in (0..chains).step_by(per) {
        let m = per.min(chains - start);
        groups.push(Group {
            rng: rng.by_ref().take(m).collect(),
            x: x[start * d..(start + m) * d].to_vec(),
            u: u[start..start + m].to_vec(),
            f: f[start * d..(start + m) * d].to_vec(),
            y: vec![0.0; m * d],
            uy: vec![0.0; m],
            fy: vec![0.0; m * d],
            alpha: vec![0.0; m],
            accepted: [0; 2],
            kx: vec![0.0; m * draws * d],
            ku: vec![0.0; m * draws],
            kf: vec![0.0; m * draws * d],
        });
    }
    let ctx = Ctx {
        p,
        space,
        beta: p.beta(),
        d,
    };
    let total = o.burn_in + o.steps;
    let mut log_h = o.step_size.ln();
    let (mut sum_log_h, mut averaged) = (0.0, 0usize);
    // the kept-draw index of step k (0-based, burn-in included), when its state is kept
    let kept = |k: usize| {
        (k >= o.burn_in && (k + 1 - o.burn_in).is_multiple_of(o.thin))
            .then(|| ((k + 1 - o.burn_in) / o.thin - 1, draws))
    };
    let run = || -> Result<f64> {
        let mut k = 0;
        while k < total {
            let burning = k < o.burn_in;
            // steps in one parallel region: one while h adapts (it needs every step's mean
            // acceptance), else a block, which spares the chains a rendezvous every step
            let end = if burning { o.burn_in } else { total };
            let len = if burning && o.adapt {
                1
            } else {
                (end - k).min(BLOCK)
            };
            let h = log_h.exp();
            let phase = usize::from(!burning);
            groups
                .par_iter_mut()
                .try_for_each(|g| (k..k + len).try_for_each(|s| g.step(&ctx, h, phase, kept(s))))?;
            k += len;
            // in chain order, whatever the grouping: the same h on any thread count
            let mean_alpha = groups.iter().flat_map(|g| &g.alpha).sum::<f64>() / chains as f64;
            if burning && o.adapt {
                log_h += (mean_alpha - o.target_accept) / (k as f64).powf(0.6);
                if 2 * k > o.burn_in {
                    sum_log_h += log_h;
                    averaged += 1;
                }
                if k == o.burn_in {
                    log_h = sum_log_h / averaged as f64;
                }
            }
            if let Some(cb) = progress {
                cb(&Progress {
                    step: k,
                    total,
                    step_size: h,
                    acceptance: mean_alpha,
                });
            }
        }
        Ok(log_h.exp())
    };
    let step_size = crate::pool::warm(run)?;
    let accepted = |phase: usize| groups.iter().map(|g| g.accepted[phase]).sum::<u64>() as f64;
    let cat = |part: fn(&Group) -> &Vec<f64>| groups.iter().flat_map(part).copied().collect();
    Ok(Draws {
        chains,
        draws,
        dim: d,
        positions: cat(|g| &g.kx),
        energies: cat(|g| &g.ku),
        forces: cat(|g| &g.kf),
        acceptance: accepted(1) / (o.steps * chains) as f64,
        burn_in_acceptance: accepted(0) / (o.burn_in * chains) as f64,
        step_size,
    })
}
