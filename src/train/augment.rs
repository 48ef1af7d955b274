//! Symmetry augmentation of particle batches (`train.augment`): each sample's N particles in k-D
//! rotated and reflected by a random orthogonal R (Haar on O(k)) and permuted by a random π,
//! x'_i = R x_π(i), with its forces moved the same way, F'_i = R F_π(i) — the force of the moved
//! configuration when U is invariant (U(R x_π) = U(x), so F(R x_π) = R F(x)_π): DW-4 and LJ-13
//! depend on interatomic distances alone.

use crate::objective::Batch;
use crate::process::Space;
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// One symmetry a batch can be augmented with.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Augment {
    /// A random orthogonal matrix (rotation or reflection) per sample, applied to every particle.
    Rotate,
    /// A random permutation of the particles per sample.
    Permute,
}

/// A Haar-random orthogonal k×k matrix (row-major): Gram–Schmidt on Gaussian rows, which is the
/// QR of a Gaussian matrix with R's diagonal made positive (Mezzadri 2007).
pub fn random_orthogonal(k: usize, rng: &mut impl Rng) -> Vec<f64> {
    let mut q = vec![0.0; k * k];
    let mut i = 0;
    while i < k {
        let mut v: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
        for j in 0..i {
            let dot: f64 = (0..k).map(|c| v[c] * q[j * k + c]).sum();
            (0..k).for_each(|c| v[c] -= dot * q[j * k + c]);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        // a draw (numerically) in the span of the earlier rows: draw again (probability ~0)
        if norm < 1e-8 {
            continue;
        }
        (0..k).for_each(|c| q[i * k + c] = v[c] / norm);
        i += 1;
    }
    q
}

/// Augments rows of x (n samples of N particles × k coordinates, row-major) in place, and the
/// forces f alongside with the same R and π per sample.
pub fn augment_rows(
    x: &mut [f64],
    mut f: Option<&mut [f64]>,
    (particles, k): (usize, usize),
    kinds: &[Augment],
    rng: &mut impl Rng,
) {
    let d = particles * k;
    let (rotate, permute) = (
        kinds.contains(&Augment::Rotate),
        kinds.contains(&Augment::Permute),
    );
    let mut order: Vec<usize> = (0..particles).collect();
    let mut moved = vec![0.0; d];
    for s in 0..x.len() / d {
        let r = rotate.then(|| random_orthogonal(k, rng));
        if permute {
            order.shuffle(rng);
        }
        let mut apply = |row: &mut [f64]| {
            for (i, &src) in order.iter().enumerate() {
                let p = &row[src * k..(src + 1) * k];
                for a in 0..k {
                    moved[i * k + a] = match &r {
                        Some(r) => (0..k).map(|b| r[a * k + b] * p[b]).sum(),
                        None => p[a],
                    };
                }
            }
            row.copy_from_slice(&moved);
        };
        apply(&mut x[s * d..(s + 1) * d]);
        if let Some(f) = f.as_deref_mut() {
            apply(&mut f[s * d..(s + 1) * d]);
        }
    }
}

/// The batch's x0 and forces augmented in place (`augment_rows`); refused off a particle space.
pub fn augment_batch(
    batch: &mut Batch,
    space: Space,
    kinds: &[Augment],
    rng: &mut impl Rng,
) -> Result<()> {
    if kinds.is_empty() {
        return Ok(());
    }
    let Space::ComFree { particles, dim } = space else {
        bail!("train.augment needs particle data (data.space with kind = \"com_free\")");
    };
    let (dtype, dev) = (batch.x0.dtype(), batch.x0.device().clone());
    let shape = batch.x0.dims2()?;
    let mut x: Vec<f64> = crate::flat::values(&batch.x0)?;
    let mut f: Option<Vec<f64>> = batch.force.as_ref().map(crate::flat::values).transpose()?;
    augment_rows(&mut x, f.as_deref_mut(), (particles, dim), kinds, rng);
    let back =
        |v: Vec<f64>| -> Result<Tensor> { Ok(Tensor::from_vec(v, shape, &dev)?.to_dtype(dtype)?) };
    batch.x0 = back(x)?;
    batch.force = f.map(back).transpose()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::potential::named;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// QᵀQ = I for k = 1, 2, 3, and both orientations (det ±1) occur.
    #[test]
    fn random_matrices_are_orthogonal() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for k in 1..=3 {
            let mut signs = (false, false);
            for _ in 0..50 {
                let q = random_orthogonal(k, &mut rng);
                for a in 0..k {
                    for b in 0..k {
                        let dot: f64 = (0..k).map(|c| q[c * k + a] * q[c * k + b]).sum();
                        let want = if a == b { 1.0 } else { 0.0 };
                        assert!((dot - want).abs() < 1e-12, "k = {k}: {q:?}");
                    }
                }
                let det = match k {
                    1 => q[0],
                    2 => q[0] * q[3] - q[1] * q[2],
                    _ => {
                        q[0] * (q[4] * q[8] - q[5] * q[7]) - q[1] * (q[3] * q[8] - q[5] * q[6])
                            + q[2] * (q[3] * q[7] - q[4] * q[6])
                    }
                };
                assert!((det.abs() - 1.0).abs() < 1e-12);
                if det > 0.0 {
                    signs.0 = true
                } else {
                    signs.1 = true
                }
            }
            assert!(signs.0 && signs.1, "k = {k}: one orientation only");
        }
    }

    /// DW-4 and LJ-13: the augmented configurations keep their energies (U(R x_π) = U(x)), and
    /// the augmented forces are the potential's forces there (F(R x_π) = R F(x)_π); the
    /// configurations did move.
    #[test]
    fn augmented_particles_keep_energy_and_carry_their_forces() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for (name, particles, k) in [("dw4", 4, 2), ("lj13", 13, 3)] {
            let p = named(name, None).unwrap();
            let n = 20;
            // spread-out configurations (LJ-13 at ~1.2 spacing, no overlaps)
            let mut x: Vec<f64> = (0..n * particles * k)
                .map(|i| {
                    let grid = ((i / k) % particles) as f64 * 1.3;
                    grid * if i % k == 0 { 1.0 } else { 0.3 }
                        + 0.1 * rng.sample::<f64, _>(StandardNormal)
                })
                .collect();
            Space::ComFree { particles, dim: k }.project(&mut x);
            let (u, mut f) = (p.energy(&x).unwrap(), p.force(&x).unwrap());
            let mut y = x.clone();
            augment_rows(
                &mut y,
                Some(&mut f),
                (particles, k),
                &[Augment::Rotate, Augment::Permute],
                &mut rng,
            );
            let (u2, f2) = (p.energy(&y).unwrap(), p.force(&y).unwrap());
            for (a, b) in u.iter().zip(&u2) {
                assert!(
                    (a - b).abs() < 1e-9 * (1.0 + a.abs()),
                    "{name}: U {a} vs {b}"
                );
            }
            let scale = f2.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (a, b) in f.iter().zip(&f2) {
                assert!((a - b).abs() < 1e-9 * (1.0 + scale), "{name}: F {a} vs {b}");
            }
            let moved = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(moved > 0.1, "{name}: nothing moved");
        }
    }

    /// A batch: forces follow x0, shapes and dtype stay, nothing happens without kinds, and a
    /// full space is refused.
    #[test]
    fn batches_are_augmented_in_place() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let space = Space::ComFree {
            particles: 4,
            dim: 2,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut x: Vec<f32> = (0..3 * 8).map(|i| (i as f32 * 0.37).sin()).collect();
        let v: Vec<f64> = x.iter().map(|v| *v as f64).collect();
        let mut centred = v.clone();
        space.project(&mut centred);
        x.iter_mut().zip(&centred).for_each(|(a, b)| *a = *b as f32);
        let x0 = Tensor::from_vec(x, (3, 8), &dev)?;
        let batch = |x0: &Tensor| Batch {
            x0: x0.clone(),
            force: Some(x0.clone()),
            labels: None,
            truth: None,
            blend: None,
        };
        let mut b = batch(&x0);
        augment_batch(&mut b, space, &[], &mut rng)?;
        assert_eq!(b.x0.to_vec2::<f32>()?, x0.to_vec2::<f32>()?);
        augment_batch(
            &mut b,
            space,
            &[Augment::Rotate, Augment::Permute],
            &mut rng,
        )?;
        assert_eq!(b.x0.dtype(), candle_core::DType::F32);
        // the force was a copy of x0: it must have moved exactly as x0 did
        let (x1, f1) = (
            b.x0.to_vec2::<f32>()?,
            b.force.as_ref().map(|f| f.to_vec2::<f32>()).transpose()?,
        );
        assert_eq!(Some(x1.clone()), f1);
        assert_ne!(x1, x0.to_vec2::<f32>()?);
        // still centred
        for row in &x1 {
            let cx: f32 = row.iter().step_by(2).sum();
            assert!(cx.abs() < 1e-5, "{row:?}");
        }
        assert!(augment_batch(&mut batch(&x0), Space::Full, &[Augment::Rotate], &mut rng).is_err());
        Ok(())
    }
}
