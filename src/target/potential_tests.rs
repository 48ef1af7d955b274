//! Potentials against central finite differences, their symmetries, the benchmarks' data
//! statistics and the registry.

use super::potential::{check_kt, named, POTENTIAL_NAMES};
use super::*;
use crate::process::Space;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Configurations of `p` to test at: its own starting points (the lattice for particles, which
/// keeps LJ's pairs apart), moved by a little noise.
fn points(p: &dyn Potential, n: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .flat_map(|_| {
            let x = p.initial(&mut rng);
            x.into_iter()
                .map(|v| v + 0.05 * rng.sample::<f64, _>(StandardNormal))
                .collect::<Vec<f64>>()
        })
        .collect()
}

/// F = −∇U by central differences (h = 1e-6, f64) for every named potential, and
/// `energy`/`force`/`score` agree with `energy_force` (score = F/kT).
#[test]
fn forces_are_minus_energy_gradients() {
    for name in POTENTIAL_NAMES {
        let p = named(name, Some(2.5)).unwrap();
        let d = p.dim();
        let x = points(p.as_ref(), 5, 7);
        let (e, f) = (p.energy(&x).unwrap(), p.force(&x).unwrap());
        assert_eq!((e.len(), f.len()), (5, x.len()));
        let s = p.score(&x).unwrap();
        for (si, fi) in s.iter().zip(&f) {
            assert!(
                (si - fi / 2.5).abs() <= 1e-12 * fi.abs(),
                "{name}: score ≠ F/kT"
            );
        }
        let h = 1e-6;
        for r in 0..5 {
            for i in 0..d {
                let (mut xp, mut xm) = (
                    x[r * d..(r + 1) * d].to_vec(),
                    x[r * d..(r + 1) * d].to_vec(),
                );
                xp[i] += h;
                xm[i] -= h;
                let fd = -(p.energy(&xp).unwrap()[0] - p.energy(&xm).unwrap()[0]) / (2.0 * h);
                let got = f[r * d + i];
                assert!(
                    (fd - got).abs() < 1e-6 * (1.0 + got.abs()) + 1e-7 * e[r].abs(),
                    "{name} row {r} coordinate {i}: −∂U/∂x {fd} vs force {got}"
                );
            }
        }
    }
}

/// Particle energies are invariant to translation and their forces sum to zero (Newton's third
/// law and the centred trap), so sampling on the centre-of-mass-free subspace loses nothing.
#[test]
fn particle_systems_are_translation_invariant() {
    for name in ["dw4", "lj13"] {
        let p = named(name, None).unwrap();
        let (n, k) = p.particles().unwrap();
        assert_eq!(
            p.space(),
            Space::ComFree {
                particles: n,
                dim: k
            }
        );
        let x = points(p.as_ref(), 3, 1);
        let shifted: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.7 * (1 + i % k) as f64)
            .collect();
        let (e, es) = (p.energy(&x).unwrap(), p.energy(&shifted).unwrap());
        for (a, b) in e.iter().zip(&es) {
            assert!(
                (a - b).abs() < 1e-9 * (1.0 + a.abs()),
                "{name}: {a} vs {b} after a shift"
            );
        }
        for row in p.force(&x).unwrap().chunks(n * k) {
            for c in 0..k {
                let total: f64 = row.iter().skip(c).step_by(k).sum();
                assert!(total.abs() < 1e-9, "{name}: forces sum to {total}");
            }
        }
    }
    assert!(named("double-well", None).unwrap().particles().is_none());
}

/// Closed forms at chosen points: DW-4 at a square of side d0 (four sides at d0, two diagonals
/// at √2 d0), LJ-13 pairs at r_m, the double well and Müller–Brown's minimum A.
#[test]
fn energies_at_known_points() {
    let dw4 = MultiDoubleWell::dw4(1.0);
    let sq = [0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0];
    let s = 4.0 * std::f64::consts::SQRT_2 - 4.0;
    let want = 2.0 * (0.9 * s.powi(4) - 4.0 * s * s);
    assert!((dw4.energy(&sq).unwrap()[0] - want).abs() < 1e-12);
    // two LJ particles at r_m: each ordered pair −ε, so −2, plus the trap ½·2·(½)²
    let lj2 = LennardJones {
        particles: 2,
        ..LennardJones::lj13(1.0)
    };
    let e = lj2.energy(&[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]).unwrap()[0];
    assert!((e - (-2.0 + 0.25)).abs() < 1e-12, "{e}");
    let dw = DoubleWell::default();
    assert!((dw.energy(&[1.0, 2.0]).unwrap()[0] - (0.5 + 2.0)).abs() < 1e-12);
    let mb = MullerBrown { kt: 1.0 };
    let u = mb.energy(&[-0.558224, 1.441726]).unwrap()[0];
    assert!((u - -146.69948).abs() < 1e-3, "{u}");
    let f = mb.force(&[-0.558224, 1.441726]).unwrap();
    assert!(f.iter().all(|v| v.abs() < 1e-2), "a minimum: {f:?}");
}

/// The benchmarks' energy conventions reproduce the statistics of their reference data
/// (data/*/README.md): DW-4's centred train split has energy mean −22.48 (std 1.91), LJ-13's
/// validation split −43.0 (std 7.1).
#[test]
fn benchmark_energies_match_the_data() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    for (name, file, mean, std, tol) in [
        ("dw4", "dw4/train_split_DW4.npy", -22.48, 1.91, 0.006),
        ("lj13", "lj13/val_split_LJ13-1000.npy", -43.0, 7.1, 0.06),
    ] {
        let p = named(name, None).unwrap();
        let mut x = crate::data::read_npy(&root.join(file)).unwrap();
        assert_eq!(x.d, p.dim());
        p.space().project(&mut x.data);
        let e = p.energy(&x.data).unwrap();
        let (m, _) = crate::metrics::mean_and_sem(&e);
        let sd = (e.iter().map(|v| (v - m).powi(2)).sum::<f64>() / e.len() as f64).sqrt();
        assert!((m - mean).abs() < tol, "{name}: energy mean {m} vs {mean}");
        assert!((sd - std).abs() < 0.06, "{name}: energy std {sd} vs {std}");
    }
}

/// The double well's quadrature: equal weights without tilt, the tilt favours x < 0, and the
/// weights match a plain Riemann sum of exp(−u/kT).
#[test]
fn double_well_mode_weights_by_quadrature() {
    let flat = DoubleWell {
        tilt: 0.0,
        ..DoubleWell::default()
    };
    let w = flat.mode_weights();
    assert!((w[0] - 0.5).abs() < 1e-12, "{w:?}");
    let dw = DoubleWell {
        kt: 0.8,
        ..DoubleWell::default()
    };
    let w = dw.mode_weights();
    let h = 1e-4;
    let (mut left, mut right) = (0.0, 0.0);
    for i in -60_000..60_000 {
        let x = (i as f64 + 0.5) * h;
        let u = dw.energy(&[x, 0.0]).unwrap()[0];
        let v = (-u / dw.kt).exp();
        if x < 0.0 {
            left += v
        } else {
            right += v
        }
    }
    assert!(w[0] > 0.6 && (w[0] + w[1] - 1.0).abs() < 1e-12, "{w:?}");
    assert!(
        (w[0] - left / (left + right)).abs() < 1e-7,
        "{w:?} vs {}",
        left / (left + right)
    );
}

/// Unknown names list the valid ones; kT must be positive and finite; the default kTs.
#[test]
fn registry_names_and_temperatures() {
    let e = named("argon", None).err().unwrap().to_string();
    for n in POTENTIAL_NAMES {
        assert!(e.contains(n), "{e}");
    }
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(check_kt(bad).is_err());
        assert!(named("dw4", Some(bad)).is_err(), "kT {bad}");
    }
    assert_eq!(
        named("muller-brown", None).unwrap().kt(),
        MullerBrown::DEFAULT_KT
    );
    assert_eq!(named("lj13", None).unwrap().kt(), 1.0);
    assert_eq!(named("gmm40", Some(3.0)).unwrap().kt(), 3.0);
    assert!((named("gmm40", Some(3.0)).unwrap().beta() - 1.0 / 3.0).abs() < 1e-15);
    // a wrong buffer or a partial row is an error, not a panic
    let p = named("lj13", None).unwrap();
    assert!(p.energy(&[0.0; 10]).is_err());
    let mut e = [0.0; 2];
    let mut f = [0.0; 39];
    assert!(p.energy_force(&[0.0; 39], &mut e, &mut f).is_err());
}
