use super::*;
use rand::SeedableRng;
use std::path::Path;

/// Decodes the PNG at `path`: its size, and the share of pixels that are not white.
fn decoded(path: &Path) -> ((u32, u32), f64) {
    let img = image::open(path).unwrap().to_rgb8();
    let inked = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    (
        img.dimensions(),
        inked as f64 / (img.width() * img.height()) as f64,
    )
}

/// Each figure is a valid PNG of the expected size with something drawn on it.
fn check(path: &Path, size: (u32, u32)) {
    let (dims, ink) = decoded(path);
    assert_eq!(dims, size, "{}", path.display());
    assert!(
        ink > 0.01,
        "{}: only {ink} of the pixels drawn",
        path.display()
    );
    if let Ok(keep) = std::env::var("TWEEDIE_KEEP_PLOTS") {
        let name = path.file_name().unwrap();
        std::fs::copy(path, Path::new(&keep).join(name)).unwrap();
    }
}

#[test]
fn every_figure_writes_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let at = |f: &str| dir.path().join(f);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let a = crate::data::toy("checkerboard", 3000, &mut rng).unwrap();
    let b = crate::data::toy("moons", 3000, &mut rng).unwrap();

    scatter_panels(&at("scatter.png"), &[("data", &a), ("samples", &b)], None).unwrap();
    check(&at("scatter.png"), (960, 480));
    density_panels(&at("hist2d.png"), &[("data", &a)], None, 40).unwrap();
    check(&at("hist2d.png"), (560, 480));

    let g = crate::target::GaussianMixture::named("anisotropic10").unwrap();
    let x3 = g.sample(2000, &mut rng);
    pairwise(
        &at("pairs.png"),
        &[("exact", &x3), ("shifted", &x3.scaled(1.5))],
        &[0, 1, 2],
    )
    .unwrap();
    check(&at("pairs.png"), (780, 600));

    let loss: Vec<(f64, f64)> = (1..200).map(|i| (i as f64, 10.0 / i as f64)).collect();
    for log_y in [false, true] {
        let f = format!("line{log_y}.png");
        line_plot(
            &at(&f),
            "Training loss",
            "step",
            "loss",
            &[("loss", loss.clone())],
            log_y,
        )
        .unwrap();
        check(&at(&f), (900, 520));
    }
    // more series than fit one panel: small multiples
    let many: Vec<(String, Vec<(f64, f64)>)> = (0..11)
        .map(|k| {
            (
                format!("s{k}"),
                loss.iter().map(|&(x, y)| (x, y * (k + 1) as f64)).collect(),
            )
        })
        .collect();
    let refs: Vec<Series> = many.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
    let axes = Axes {
        title: "many",
        x_label: "NFE",
        y_label: "W2",
        log_x: true,
        log_y: true,
    };
    line_plot_axes(&at("many.png"), &axes, &refs).unwrap();
    check(&at("many.png"), (900, 1040));

    let paths: Vec<Vec<(f64, f64)>> = (0..20)
        .map(|k| {
            (0..10)
                .map(|i| (k as f64 + i as f64 * 0.1, (i as f64).sin()))
                .collect()
        })
        .collect();
    let times: Vec<f64> = (0..10).map(|i| 10f64.powf(-3.0 * i as f64 / 9.0)).collect();
    trajectories(&at("traj.png"), "em", &paths, Some(&times)).unwrap();
    check(&at("traj.png"), (1100, 640));

    let grid = Grid2::new(-3.0..3.0, -3.0..3.0, 30, 30).unwrap();
    let pts = grid.points();
    let logp: Vec<f64> = (0..pts.n)
        .map(|i| -0.5 * pts.row(i).iter().map(|v| v * v).sum::<f64>())
        .collect();
    let score = Points::new(pts.n, 2, pts.data.iter().map(|v| -v).collect()).unwrap();
    let panels = [HeatPanel {
        title: "log p",
        values: &logp,
        label: "nats",
        range: None,
    }];
    heatmaps(&at("heat.png"), &grid, &panels).unwrap();
    check(&at("heat.png"), (560, 480));
    let coarse = Grid2::new(-3.0..3.0, -3.0..3.0, 15, 15).unwrap().points();
    let cs = Points::new(coarse.n, 2, coarse.data.iter().map(|v| -v).collect()).unwrap();
    let field = FieldPanel {
        title: "score",
        at: &coarse,
        vectors: &cs,
        log_density: Some((&grid, &logp)),
    };
    vector_fields(&at("field.png"), &[field], None).unwrap();
    check(&at("field.png"), (590, 480));
    let err = HeatPanel {
        title: "error",
        values: &logp,
        label: "‖Δ‖",
        range: None,
    };
    let field = FieldPanel {
        title: "score",
        at: &coarse,
        vectors: &cs,
        log_density: None,
    };
    vector_fields(&at("field_err.png"), &[field], Some((&grid, &err))).unwrap();
    check(&at("field_err.png"), (1150, 480));
    assert_eq!(score.n, 900);

    let e1: Vec<f64> = a.data.iter().step_by(2).copied().collect();
    let e2: Vec<f64> = b.data.iter().step_by(2).copied().collect();
    let bins = Histogram::new(50, None, &[&e1, &e2]).unwrap();
    histograms(
        &at("hist.png"),
        "x₁",
        "x₁",
        &[("data", &e1), ("samples", &e2)],
        &bins,
    )
    .unwrap();
    check(&at("hist.png"), (900, 520));

    let imgs = Points::new(6, 64, (0..384).map(|k| (k % 64) as f64 / 63.0).collect())
        .unwrap()
        .with_event(vec![8, 8])
        .unwrap();
    let caps: Vec<String> = (0..6).map(|k| format!("#{k}")).collect();
    image_grid(&at("grid.png"), &imgs, 3, (0.0, 1.0), 4, Some(&caps)).unwrap();
    check(&at("grid.png"), (3 * 34 + 2, 2 * 52 + 2));
}

/// Every pixel of an image is drawn: a black image gives a black block of zoom × zoom pixels
/// per pixel, with no background showing between them.
#[test]
fn image_grid_fills_every_pixel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("black.png");
    let imgs = Points::new(2, 16, vec![-1.0; 32])
        .unwrap()
        .with_event(vec![4, 4])
        .unwrap();
    for zoom in [1, 3] {
        image_grid(&path, &imgs, 2, (-1.0, 1.0), zoom, None).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let cw = 4 * zoom + 2;
        for k in 0..2 {
            for y in 0..4 * zoom {
                for x in 0..4 * zoom {
                    let px = img.get_pixel(2 + k * cw + x, 2 + y);
                    assert_eq!(px.0, [0, 0, 0], "zoom {zoom}, image {k}, pixel ({x}, {y})");
                }
            }
        }
        // the gutter between the two images stays white
        assert_eq!(img.get_pixel(2 + 4 * zoom, 2).0, [255, 255, 255]);
    }
}

#[test]
fn bad_figure_inputs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let at = |f: &str| dir.path().join(f);
    let c = Points::new(2, 3, vec![0.0; 6]).unwrap();
    let e = scatter_panels(&at("c.png"), &[("3d", &c)], None).unwrap_err();
    assert!(e.to_string().contains("d = 2"), "{e}");
    let a = Points::new(2, 2, vec![0.0; 4]).unwrap();
    assert!(scatter_panels(&at("r.png"), &[("a", &a)], Some([5.0, -5.0, -5.0, 5.0])).is_err());
    assert!(line_plot(
        &at("x.png"),
        "t",
        "x",
        "y",
        &[("neg", vec![(0.0, -1.0)])],
        true
    )
    .is_err());
    assert!(pairwise(&at("p.png"), &[("c", &c)], &[0, 3]).is_err());
    assert!(image_grid(&at("i.png"), &c, 2, (0.0, 1.0), 2, None).is_err());
    assert!(Grid2::new(1.0..0.0, 0.0..1.0, 3, 3).is_err());
    let grid = Grid2::new(0.0..1.0, 0.0..1.0, 3, 3).unwrap();
    let short = [0.0; 4];
    let panels = [HeatPanel {
        title: "x",
        values: &short,
        label: "",
        range: None,
    }];
    assert!(heatmaps(&at("h.png"), &grid, &panels).is_err());
}

#[test]
fn grid_histogram_counts_shares() {
    let grid = Grid2::new(0.0..2.0, 0.0..1.0, 2, 1).unwrap();
    let pts = Points::new(4, 2, vec![0.5, 0.5, 1.5, 0.5, 1.6, 0.2, 9.0, 0.5]).unwrap();
    assert_eq!(grid.histogram(&pts), vec![0.25, 0.5]);
    let bins = Histogram::new(2, Some(0.0..2.0), &[]).unwrap();
    // densities: share / width, the out-of-range value counted in the total only
    assert_eq!(
        bins.density(&[0.5, 1.5, 1.6, 9.0, f64::NAN]),
        vec![0.25, 0.5]
    );
}
