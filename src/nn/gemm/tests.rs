use super::*;

/// The kernels this CPU can run: without AVX-512 tiles, and with them where it has AVX-512F and DQ.
fn kernels() -> Vec<bool> {
    let wide = cfg!(target_arch = "x86_64")
        && super::super::kernels::has_avx2()
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq");
    if wide {
        vec![false, true]
    } else {
        vec![false]
    }
}

/// Deterministic operands: `len_a` values for A and `len_b` for B, small mixed-sign steps times
/// `scale`.
fn operands(len_a: usize, len_b: usize, scale: (f32, f32)) -> (Vec<f32>, Vec<f32>) {
    let a = (0..len_a).map(|i| ((i * 7 % 13) as f32 - 6.0) * scale.0);
    let b = (0..len_b).map(|i| ((i * 5 % 11) as f32 - 5.0) * scale.1);
    (a.collect(), b.collect())
}

/// Every shape class (full and partial row tiles of both kernels and column panels, strided A,
/// odd and even k, accumulate) against a plain triple loop in f64.
#[test]
fn gemm_matches_a_naive_product() {
    let shapes = [
        (1, 1, 1),
        (7, 2, 5),
        (13, 34, 9),
        (64, 48, 128),
        (6, 16, 3),
        (8, 20, 600),
        (9, 3, 45),
        (25, 16, 1),
        (12, 32, 2),
        (37, 17, 130),
        (23, 64, 7),
        (5, 32, 3),
        (30, 32, 600),
        (8, 3, 32),
    ];
    for (wide, (m, n, k)) in kernels().into_iter().flat_map(|w| shapes.map(|s| (w, s))) {
        // A row-major, column-major (transposed storage), and with neither stride 1
        for (a_rs, a_cs) in [(k, 1), (1, m), (2 * k, 2)] {
            let (a, b) = operands(2 * m * k, k * n, (0.3, 0.2));
            let mut c = vec![1.0f32; m * n];
            let a_s = (a_rs, a_cs);
            gemm_on(
                wide,
                (m, n, k),
                &mut c,
                n,
                &a,
                a_s,
                Rhs::Strided(&b, (n, 1)),
                true,
            );
            // the same product with B read transposed from Bᵀ [n × k], and packed beforehand
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let mut c2 = vec![1.0f32; m * n];
            gemm_on(
                wide,
                (m, n, k),
                &mut c2,
                n,
                &a,
                a_s,
                Rhs::Strided(&bt, (1, k)),
                true,
            );
            assert!(c.iter().zip(&c2).all(|(x, y)| (x - y).abs() < 1e-4));
            let mut packed = PackedB::default();
            packed.pack(&bt, (1, k), k, n);
            let mut c3 = vec![1.0f32; m * n];
            gemm_on(
                wide,
                (m, n, k),
                &mut c3,
                n,
                &a,
                a_s,
                Rhs::Packed(&packed),
                true,
            );
            assert!(c.iter().zip(&c3).all(|(x, y)| (x - y).abs() < 1e-4));
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = 1.0
                        + (0..k)
                            .map(|p| a[i * a_rs + p * a_cs] as f64 * b[p * n + j] as f64)
                            .sum::<f64>();
                    let got = c[i * n + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{m}×{n}×{k} (wide {wide}) [{i},{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// C with a row stride wider than n: each product writes (or adds to) its n columns and leaves
/// the columns between rows alone, for packed and strided B and for row tiles of every kind.
#[test]
fn gemm_keeps_to_its_columns_of_a_wider_c() {
    for (wide, (m, n, k)) in kernels()
        .into_iter()
        .flat_map(|w| [(30, 48, 20), (13, 32, 7), (7, 3, 9)].map(|s| (w, s)))
    {
        let ldc = n + 5;
        let (a, bt) = operands(m * k, n * k, (0.3, 0.2));
        let mut packed = PackedB::default();
        packed.pack(&bt, (1, k), k, n);
        for (rhs, accumulate) in [
            (Rhs::Strided(&bt, (1, k)), true),
            (Rhs::Packed(&packed), false),
        ] {
            let mut c = vec![7.0f32; (m - 1) * ldc + n];
            gemm_on(wide, (m, n, k), &mut c, ldc, &a, (k, 1), rhs, accumulate);
            for i in 0..m {
                for j in 0..ldc.min(c.len() - i * ldc) {
                    let product: f64 = (0..k)
                        .map(|p| a[i * k + p] as f64 * bt[j.min(n - 1) * k + p] as f64)
                        .sum();
                    let want = match (j < n, accumulate) {
                        (false, _) => 7.0,
                        (true, true) => 7.0 + product,
                        (true, false) => product,
                    };
                    let got = c[i * ldc + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{m}×{n}×{k} ldc {ldc} (wide {wide}) [{i},{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// The fused epilogues equal the plain product followed by the element-wise pass.
#[test]
fn fused_epilogues_match_product_then_pass() {
    let shapes = [
        (1, 16, 3),
        (13, 32, 2),
        (20, 48, 130),
        (31, 16, 7),
        (11, 64, 5),
    ];
    for (wide, (m, n, k)) in kernels().into_iter().flat_map(|w| shapes.map(|s| (w, s))) {
        let (a, bt) = operands(m * k, n * k, (0.1, 0.1));
        let d: Vec<f32> = (0..m * n).map(|i| (i % 9) as f32 * 0.25 - 1.0).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.1 - 0.8).collect();
        let mut packed = PackedB::default();
        packed.pack(&bt, (1, k), k, n);
        let rhs = Rhs::Packed(&packed);
        let mut plain = vec![0.0f32; m * n];
        gemm_on(wide, (m, n, k), &mut plain, n, &a, (k, 1), rhs, false);
        let (mut scaled, mut silu, mut d1) = (vec![0.0; m * n], vec![0.0; m * n], vec![0.0; m * n]);
        let dims = (m, n, k);
        if !gemm_fused_on(
            wide,
            dims,
            &mut scaled,
            &a,
            (k, 1),
            rhs,
            Epilogue::Scale(&d),
        ) {
            return; // no AVX2: callers take the unfused path
        }
        let epilogue = Epilogue::BiasSilu {
            bias: &bias,
            d1: Some(&mut d1),
        };
        assert!(gemm_fused_on(
            wide,
            dims,
            &mut silu,
            &a,
            (k, 1),
            rhs,
            epilogue
        ));
        for i in 0..m * n {
            let z = (plain[i] + bias[i % n]) as f64;
            let sig = 1.0 / (1.0 + (-z).exp());
            let want = [
                plain[i] as f64 * d[i] as f64,
                z * sig,
                sig * (1.0 + z * (1.0 - sig)),
            ];
            for (got, want) in [scaled[i], silu[i], d1[i]].into_iter().zip(want) {
                assert!(
                    (got as f64 - want).abs() < 1e-5,
                    "{m}×{n}×{k} (wide {wide}) [{i}]: {got} vs {want}"
                );
            }
        }
    }
}
