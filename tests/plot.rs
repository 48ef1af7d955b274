//! Every `tweedie plot` figure from the command line: a valid PNG of the right kind, drawn from a
//! small trained run, an exact target and sample files.

use std::path::Path;
use std::process::Command;

fn tweedie(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args(args)
        .output()
        .expect("run tweedie");
    assert!(
        out.status.success(),
        "tweedie {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Decodes the PNG: its width and height, after checking that something was drawn.
fn png(path: &Path) -> (u32, u32) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let inked = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(
        inked * 50 > img.pixels().len(),
        "{}: nearly blank",
        path.display()
    );
    img.dimensions()
}

#[test]
fn every_plot_command_writes_a_png() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let cfg = d("c.toml");
    std::fs::write(
        &cfg,
        "[data]\nsource = \"8gaussians\"\n[model]\nwidth = 32\ndepth = 2\n[train]\nsteps = 300\nbatch = 128\nlog_every = 20\n",
    )
    .expect("config");
    let run = d("run");
    tweedie(&["train", "--config", &cfg, "--out", &run, "--quiet"]);
    tweedie(&[
        "sample",
        "--run",
        &run,
        "--steps",
        "20",
        "-n",
        "500",
        "-o",
        &d("s.npy"),
    ]);

    tweedie(&[
        "plot",
        "samples",
        "--samples",
        &d("s.npy"),
        "--target",
        "8gaussians",
        "-o",
        &d("a.png"),
    ]);
    assert_eq!(png(dir.path().join("a.png").as_path()), (960, 480));
    tweedie(&[
        "plot",
        "samples",
        "--samples",
        &d("s.npy"),
        "--bins",
        "30",
        "-o",
        &d("b.png"),
    ]);
    assert_eq!(png(dir.path().join("b.png").as_path()), (560, 480));
    // the run's data is a known mixture: learned field, exact field and the error map
    tweedie(&[
        "plot",
        "score",
        "--run",
        &run,
        "--t",
        "0.1",
        "-o",
        &d("c.png"),
    ]);
    assert_eq!(
        png(dir.path().join("c.png").as_path()),
        (2 * 480 + 110 + 560, 480)
    );
    tweedie(&[
        "plot",
        "score",
        "--target",
        "ncsn2",
        "--t",
        "0.5",
        "--grid",
        "9",
        "-o",
        &d("c2.png"),
    ]);
    tweedie(&[
        "plot",
        "density",
        "--run",
        &run,
        "--grid",
        "12",
        "-o",
        &d("e.png"),
    ]);
    assert_eq!(png(dir.path().join("e.png").as_path()), (3 * 560, 480));
    tweedie(&["plot", "curves", "--run", &run]);
    assert_eq!(png(&dir.path().join("run").join("curves.png")), (900, 520));
    tweedie(&[
        "plot",
        "hist",
        "--samples",
        &d("s.npy"),
        "--of",
        "norm",
        "-o",
        &d("f.png"),
    ]);
    assert_eq!(png(dir.path().join("f.png").as_path()), (900, 520));
    tweedie(&[
        "plot",
        "hist",
        "--samples",
        &d("s.npy"),
        "--reference",
        &d("s.npy"),
        "--of",
        "distances:1",
        "-o",
        &d("g.png"),
    ]);
    tweedie(&[
        "plot",
        "images",
        "--samples",
        &d("s.npy"),
        "--shape",
        "1x2",
        "--cols",
        "5",
        "--n",
        "10",
        "-o",
        &d("h.png"),
    ]);
}
