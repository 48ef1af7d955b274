//! Points, toys and file formats.

use super::*;
use npyz::WriterBuilder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;

fn moments(x: &Points) -> (Vec<f64>, Vec<f64>) {
    let m = x.mean();
    let mut v = vec![0.0; x.d];
    for i in 0..x.n {
        for j in 0..x.d {
            v[j] += (x.row(i)[j] - m[j]).powi(2) / x.n as f64;
        }
    }
    (m, v.iter().map(|v| v.sqrt()).collect())
}

#[test]
fn toys_shapes_and_moments() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = 20000;
    for &name in TOY_NAMES {
        let x = toy(name, n, &mut rng).unwrap();
        assert_eq!((x.n, x.d, x.data.len()), (n, 2, 2 * n), "{name}");
        x.check_finite(name).unwrap();
        let (m, s) = moments(&x);
        // (expected mean, expected std) per coordinate, loose tolerances.
        let (em, es, tol): ([f64; 2], [f64; 2], f64) = match name {
            "checkerboard" => ([0.0, 0.0], [2.309, 2.309], 0.05),
            "8gaussians" => ([0.0, 0.0], [2.031, 2.031], 0.05),
            "moons" => ([0.0, 0.3], [1.744, 1.008], 0.05),
            "circles" => ([0.0, 0.0], [1.694, 1.694], 0.05),
            "swissroll" => ([0.4, 0.042], [1.340, 1.405], 0.05),
            "pinwheel" => ([0.0, 0.0], [1.483, 1.483], 0.05),
            "2spirals" => ([0.0, 0.0], [1.610, 1.584], 0.05),
            "ncsn2" => ([3.0, 3.0], [4.123, 4.123], 0.15),
            _ => {
                // gmm40: mean of the means, variance of the means + GMM40_STD².
                let c = Points::new(40, 2, gmm40_means().concat()).unwrap();
                let (cm, cs) = moments(&c);
                let sd = |v: f64| (v * v + GMM40_STD * GMM40_STD).sqrt();
                ([cm[0], cm[1]], [sd(cs[0]), sd(cs[1])], 0.5)
            }
        };
        for j in 0..2 {
            assert!((m[j] - em[j]).abs() < tol, "{name} mean {m:?}");
            assert!((s[j] - es[j]).abs() < tol, "{name} std {s:?}");
        }
    }
    assert!(toy("nope", 3, &mut rng)
        .unwrap_err()
        .to_string()
        .contains("checkerboard"));
}

#[test]
fn checkerboard_support_and_log_prob() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = toy("checkerboard", 5000, &mut rng).unwrap();
    let lp = toy_log_prob("checkerboard", &x).unwrap();
    assert!(lp.iter().all(|&v| (v + 32f64.ln()).abs() < 1e-12));
    let off = Points::new(2, 2, vec![1.0, -1.0, 5.0, 0.5]).unwrap();
    assert!(toy_log_prob("checkerboard", &off)
        .unwrap()
        .iter()
        .all(|v| *v == f64::NEG_INFINITY));
    assert!(toy_log_prob("moons", &x).is_none());
}

#[test]
fn mixture_log_probs_normalise_and_fit_samples() {
    // Monte-Carlo check: E_p[log p] from samples equals a grid estimate of -entropy.
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (name, half, h) in [("8gaussians", 5.0, 0.02), ("gmm40", 46.0, 0.1)] {
        let k = (2.0 * half / h) as usize;
        let mut grid = Vec::with_capacity(2 * k * k);
        for a in 0..k {
            for b in 0..k {
                grid.push(-half + (a as f64 + 0.5) * h);
                grid.push(-half + (b as f64 + 0.5) * h);
            }
        }
        let g = Points::new(k * k, 2, grid).unwrap();
        let lp = toy_log_prob(name, &g).unwrap();
        let mass: f64 = lp.iter().map(|v| v.exp() * h * h).sum();
        assert!((mass - 1.0).abs() < 1e-3, "{name} mass {mass}");
        let neg_ent: f64 = lp.iter().map(|v| v * v.exp() * h * h).sum();
        let x = toy(name, 20000, &mut rng).unwrap();
        let mc = toy_log_prob(name, &x).unwrap().iter().sum::<f64>() / 20000.0;
        assert!((mc - neg_ent).abs() < 0.03, "{name}: {mc} vs {neg_ent}");
    }
}

#[test]
fn gmm40_assets() {
    let m = gmm40_means();
    assert_eq!(m.len(), 40);
    assert!((m[0][0] + 0.299472809).abs() < 1e-9 && (m[0][1] - 21.457744598).abs() < 1e-9);
    assert!(m.iter().all(|p| p[0].abs() <= 40.0 && p[1].abs() <= 40.0));
    assert!((GMM40_STD - (1.0 + 1f64.exp()).ln()).abs() < 1e-15);
}

#[test]
fn ncsn2_weights() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let n = 10000;
    let x = toy("ncsn2", n, &mut rng).unwrap();
    let frac = (0..n).filter(|&i| x.row(i)[0] > 0.0).count() as f64 / n as f64;
    let sd = (0.8f64 * 0.2 / n as f64).sqrt();
    assert!((frac - 0.8).abs() < 4.0 * sd, "{frac}");
}

#[test]
fn points_helpers() {
    assert!(Points::new(2, 2, vec![1.0; 3]).is_err());
    let mut x = Points::new(3, 2, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    assert_eq!(x.row(1), &[2.0, 3.0]);
    assert_eq!(x.mean(), vec![2.0, 3.0]);
    assert_eq!(x.scaled(2.0).row(2), &[8.0, 10.0]);
    let y = Points::from_f32(3, 2, &x.to_f32()).unwrap();
    assert_eq!(x, y);
    x.check_finite("x").unwrap();
    x.data[3] = f64::NAN;
    let e = x.check_finite("train data").unwrap_err().to_string();
    assert!(e.contains("train data: row 1, column 1 is NaN"), "{e}");
}

#[test]
fn npy_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let x = Points::new(3, 2, vec![0.1, -1.5, 2.0, 1e-30, 7.25, 3.0]).unwrap();
    let p64 = dir.path().join("a64.npy");
    write_npy(&p64, &x, true).unwrap();
    assert_eq!(read_points(&p64).unwrap(), x);
    let p32 = dir.path().join("a32.npy");
    write_npy(&p32, &x, false).unwrap();
    let y = read_npy(&p32).unwrap();
    assert_eq!((y.n, y.d), (3, 2));
    assert_eq!(y.to_f32(), x.to_f32());
    let p1 = dir.path().join("v.npy");
    write_npy_f32_1d(&p1, &[1.0, 2.0, 3.5]).unwrap();
    assert_eq!(
        read_npy(&p1).unwrap(),
        Points::new(3, 1, vec![1.0, 2.0, 3.5]).unwrap()
    );

    let check = |path: &Path, needle: &str| {
        let e = format!("{:#}", read_npy(path).unwrap_err());
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(e.contains(needle), "{e}");
    };
    // Truncated.
    let bytes = std::fs::read(&p64).unwrap();
    let pt = dir.path().join("trunc.npy");
    std::fs::write(&pt, &bytes[..bytes.len() - 5]).unwrap();
    check(&pt, "truncated");
    // Random bytes.
    let pr = dir.path().join("rand.npy");
    std::fs::write(
        &pr,
        (0..200u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    check(&pr, "not a valid .npy");
    // Missing.
    check(&dir.path().join("missing.npy"), "cannot read");
    // 3-D.
    let p3 = dir.path().join("three.npy");
    let f = std::fs::File::create(&p3).unwrap();
    let mut w = npyz::WriteOptions::<f64>::new()
        .default_dtype()
        .shape(&[2, 2, 2])
        .writer(f)
        .begin_nd()
        .unwrap();
    w.extend((0..8).map(f64::from)).unwrap();
    w.finish().unwrap();
    // 3-D: two points, each an event [2, 2], and back to the same shape
    let three = read_npy(&p3).unwrap();
    assert_eq!((three.n, three.d, three.event_shape()), (2, 4, vec![2, 2]));
    let back = dir.path().join("three_back.npy");
    write_npy(&back, &three, true).unwrap();
    assert_eq!(read_npy(&back).unwrap(), three);
    let header = npyz::NpyFile::new(std::fs::File::open(&back).unwrap()).unwrap();
    assert_eq!(header.shape(), &[2, 2, 2]);
    // Wrong dtype.
    let pi = dir.path().join("int.npy");
    let f = std::fs::File::create(&pi).unwrap();
    let mut w = npyz::WriteOptions::<i32>::new()
        .default_dtype()
        .shape(&[2, 1])
        .writer(f)
        .begin_nd()
        .unwrap();
    w.extend([1i32, 2]).unwrap();
    w.finish().unwrap();
    check(&pi, "'<i4' is not supported");
    // Fortran order.
    let pf = dir.path().join("fortran.npy");
    let f = std::fs::File::create(&pf).unwrap();
    let mut w = npyz::WriteOptions::<f64>::new()
        .default_dtype()
        .shape(&[2, 2])
        .order(npyz::Order::Fortran)
        .writer(f)
        .begin_nd()
        .unwrap();
    w.extend([0.0f64; 4]).unwrap();
    w.finish().unwrap();
    check(&pf, "Fortran");
    // Unknown extension.
    let e = read_points(&dir.path().join("x.txt"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.txt: unsupported"), "{e}");
}

#[test]
fn csv_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let x = Points::new(2, 3, vec![0.1, -2.0, 1e-300, 4.0, 5.5, -0.0]).unwrap();
    let p = dir.path().join("a.csv");
    write_csv(&p, &x).unwrap();
    assert_eq!(read_points(&p).unwrap(), x);
    std::fs::write(&p, "# comment\nx, y\n1, 2\n# mid\n3,4\n").unwrap();
    assert_eq!(
        read_csv(&p).unwrap(),
        Points::new(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap()
    );
    std::fs::write(&p, "1,2\n3,4,5\n").unwrap();
    let e = read_csv(&p).unwrap_err().to_string();
    assert!(
        e.starts_with(&p.display().to_string()) && e.contains("line 2"),
        "{e}"
    );
    std::fs::write(&p, "1,2\n3,abc\n").unwrap();
    assert!(read_csv(&p).unwrap_err().to_string().contains("line 2"));
    std::fs::write(&p, "# only a comment\n").unwrap();
    assert!(read_csv(&p).is_err());
    assert!(read_csv(&dir.path().join("missing.csv")).is_err());
}

/// Labels of every integer dtype read as class indices; floats, negatives and 2-D arrays are
/// errors that say what to do.
#[test]
fn labels_read_from_integer_npy() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, f: &dyn Fn(std::fs::File)| {
        let p = dir.path().join(name);
        f(std::fs::File::create(&p).unwrap());
        p
    };
    let u8s = write("u8.npy", &|f| {
        let mut w = npyz::WriteOptions::<u8>::new()
            .default_dtype()
            .shape(&[4])
            .writer(f)
            .begin_nd()
            .unwrap();
        w.extend([0u8, 3, 9, 1]).unwrap();
        w.finish().unwrap();
    });
    assert_eq!(read_labels(&u8s).unwrap(), vec![0, 3, 9, 1]);
    let i64s = write("i64.npy", &|f| {
        let mut w = npyz::WriteOptions::<i64>::new()
            .default_dtype()
            .shape(&[3, 1])
            .writer(f)
            .begin_nd()
            .unwrap();
        w.extend([7i64, 0, 2]).unwrap();
        w.finish().unwrap();
    });
    assert_eq!(read_labels(&i64s).unwrap(), vec![7, 0, 2]);
    // what `tweedie sample --class` writes beside its samples reads back
    let ours = i64s.with_file_name("ours.npy");
    crate::data::write_labels(&ours, &[4, 0, 9]).unwrap();
    assert_eq!(read_labels(&ours).unwrap(), vec![4, 0, 9]);
    let negative = write("neg.npy", &|f| {
        let mut w = npyz::WriteOptions::<i32>::new()
            .default_dtype()
            .shape(&[2])
            .writer(f)
            .begin_nd()
            .unwrap();
        w.extend([1i32, -1]).unwrap();
        w.finish().unwrap();
    });
    let e = read_labels(&negative).unwrap_err().to_string();
    assert!(e.contains("label -1 of point 1"), "{e}");
    let floats = write("f.npy", &|f| {
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&[2])
            .writer(f)
            .begin_nd()
            .unwrap();
        w.extend([1f32, 2.0]).unwrap();
        w.finish().unwrap();
    });
    let e = read_labels(&floats).unwrap_err().to_string();
    assert!(e.contains("astype(np.int64)"), "{e}");
    let matrix = write("m.npy", &|f| {
        let mut w = npyz::WriteOptions::<u8>::new()
            .default_dtype()
            .shape(&[2, 2])
            .writer(f)
            .begin_nd()
            .unwrap();
        w.extend([1u8, 2, 3, 4]).unwrap();
        w.finish().unwrap();
    });
    assert!(read_labels(&matrix)
        .unwrap_err()
        .to_string()
        .contains("one integer per point"));
}
