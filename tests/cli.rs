//! End-to-end checks of the `tweedie` binary: bad input gives a one-line error naming the file or
//! key and a non-zero exit (never a panic), and a killed training run resumes exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tweedie(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args(args)
        .output()
        .expect("run tweedie")
}

/// Asserts a clean failure: exit code 1, one `error:` line mentioning every `needle`, no panic.
fn assert_clean_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1, stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "'{n}' not in: {stderr}");
    }
}

fn write_npy_f32(path: &Path, rows: usize, cols: usize, values: impl Fn(usize) -> f32) {
    write_npy_shaped(path, &[rows, cols], values)
}

const SMALL: &str =
    // a constant learning rate: the killed run below is configured for far more steps
    "[model]\nwidth = 16\ndepth = 2\n[train]\nbatch = 64\ndecay = \"none\"\nlog_every = 10\ncheckpoint_every = 20\n";

fn small_config(dir: &Path, steps: usize) -> PathBuf {
    let p = dir.join("small.toml");
    std::fs::write(&p, format!("{SMALL}steps = {steps}\n")).expect("write config");
    p
}

#[test]
fn missing_and_malformed_npy_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.npy");
    let out = tweedie(&[
        "eval",
        "--samples",
        missing.to_str().unwrap(),
        "--reference",
        missing.to_str().unwrap(),
    ]);
    assert_clean_error(&out, &["nope.npy"]);

    let junk = dir.path().join("junk.npy");
    std::fs::write(&junk, b"this is not numpy at all").unwrap();
    let out = tweedie(&[
        "train",
        "--data",
        junk.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
        "--quiet",
    ]);
    assert_clean_error(&out, &["junk.npy"]);

    let truncated = dir.path().join("trunc.npy");
    write_npy_f32(&truncated, 100, 2, |i| i as f32);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 50]).unwrap();
    let out = tweedie(&[
        "eval",
        "--samples",
        truncated.to_str().unwrap(),
        "--reference",
        truncated.to_str().unwrap(),
    ]);
    assert_clean_error(&out, &["trunc.npy"]);
}

#[test]
fn nan_in_data_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nan.npy");
    write_npy_f32(&data, 50, 2, |i| if i == 37 { f32::NAN } else { i as f32 });
    let out = tweedie(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
        "--steps",
        "5",
        "--quiet",
    ]);
    assert_clean_error(&out, &["nan.npy", "row 18", "NaN"]);
}

#[test]
fn unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[train]\nsteps = 10\nlearning_rate = 0.1\n").unwrap();
    let out = tweedie(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert_clean_error(&out, &["bad.toml", "learning_rate"]);
}

#[test]
fn checkpoint_problems_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let cfg = small_config(dir.path(), 20);
    let out = tweedie(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run_s,
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // a 3-D data set for a 2-D checkpoint
    let data3 = dir.path().join("three.npy");
    write_npy_f32(&data3, 40, 3, |i| (i % 7) as f32);
    let out = tweedie(&[
        "train",
        "--out",
        run_s,
        "--resume",
        "--data",
        data3.to_str().unwrap(),
        "--steps",
        "40",
        "--quiet",
    ]);
    assert_clean_error(&out, &["checkpoint.safetensors", "2-D", "dimension 3"]);

    // a truncated checkpoint
    let ck = run.join("checkpoint.safetensors");
    let bytes = std::fs::read(&ck).unwrap();
    std::fs::write(&ck, &bytes[..bytes.len() / 2]).unwrap();
    let out = tweedie(&[
        "sample",
        "--run",
        run_s,
        "--n",
        "10",
        "--steps",
        "5",
        "--out",
        dir.path().join("s.npy").to_str().unwrap(),
    ]);
    assert_clean_error(&out, &["checkpoint.safetensors"]);
    // a file that is not a checkpoint at all
    std::fs::write(&ck, b"garbage").unwrap();
    let out = tweedie(&[
        "train", "--out", run_s, "--resume", "--steps", "40", "--quiet",
    ]);
    assert_clean_error(&out, &["checkpoint.safetensors"]);
}

#[test]
fn bad_names_list_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let never = dir.path().join("never");
    let out = tweedie(&[
        "sample",
        "--target",
        "ncsn2",
        "--sampler",
        "rk9",
        "--n",
        "5",
        "--steps",
        "3",
        "--out",
        "/dev/null",
    ]);
    assert_clean_error(&out, &["rk9", "em, reverse_diffusion, ancestral"]);
    let out = tweedie(&[
        "sample",
        "--target",
        "ncsn3",
        "--n",
        "5",
        "--steps",
        "3",
        "--out",
        "/dev/null",
    ]);
    assert_clean_error(&out, &["ncsn3", "ncsn2"]);
    let out = tweedie(&[
        "train",
        "--data",
        "chequerboard",
        "--steps",
        "3",
        "--quiet",
        "--out",
        never.to_str().unwrap(),
    ]);
    assert_clean_error(&out, &["chequerboard", "checkerboard"]);
}

/// Kill a training process after its first checkpoints, resume it, and compare the final weights
/// with an uninterrupted run of the same seed: they must be bit-identical.
#[test]
fn killed_training_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let steps = 200;
    let cfg = small_config(dir.path(), steps);
    let cfg_s = cfg.to_str().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));

    let out = tweedie(&[
        "train",
        "--config",
        cfg_s,
        "--out",
        a.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // the same run, killed once a checkpoint (but not the last) exists
    let big = dir.path().join("long.toml");
    std::fs::write(&big, format!("{SMALL}steps = 1000000\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args([
            "train",
            "--config",
            big.to_str().unwrap(),
            "--out",
            b.to_str().unwrap(),
            "--quiet",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ck = b.join("checkpoint.safetensors");
    let start = Instant::now();
    while !ck.exists() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ck.exists(), "no checkpoint appeared");
    let bytes = std::fs::read(&ck).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let killed_at: usize = meta.metadata().as_ref().unwrap()["step"].parse().unwrap();
    assert!(
        killed_at > 0 && killed_at < steps,
        "killed run's checkpoint is at step {killed_at}"
    );
    // resume with the original step budget (flags override the run's config)
    let out = tweedie(&[
        "train",
        "--out",
        b.to_str().unwrap(),
        "--resume",
        "--steps",
        &steps.to_string(),
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let load = |p: &Path| std::fs::read(p.join("checkpoint.safetensors")).unwrap();
    let (fa, fb) = (load(&a), load(&b));
    let ta = safetensors::SafeTensors::deserialize(&fa).unwrap();
    let tb = safetensors::SafeTensors::deserialize(&fb).unwrap();
    let mut names = ta.names();
    names.sort();
    assert!(names.len() >= 8);
    for name in names {
        assert_eq!(
            ta.tensor(name).unwrap().data(),
            tb.tensor(name).unwrap().data(),
            "tensor {name} differs after resume"
        );
    }
}

/// `tweedie nll` with an exact mixture score reproduces the true NLL of the same points and writes
/// per-point values and JSON; NaN, a wrong dimension, bad tolerances and non-8-bit data given
/// `--dequantise` are one-line errors.
#[test]
fn nll_of_an_exact_target() {
    use rand::SeedableRng;
    let dir = tempfile::tempdir().unwrap();
    let n = 200;
    let x = tweedie::target::GaussianMixture::anisotropic3()
        .sample(n, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1))
        .to_f32();
    let data = dir.path().join("x.npy");
    write_npy_f32(&data, n, 2, |i| x[i]);
    let (lp, json) = (dir.path().join("lp.npy"), dir.path().join("nll.json"));
    let path = |p: &PathBuf| p.to_str().unwrap().to_string();
    let base = ["nll", "--target", "anisotropic3", "--data"];
    let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    args.push(path(&data));
    args.extend(["--out", &path(&lp), "--json", &path(&json)].map(String::from));
    let out = tweedie(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("true NLL"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let mae = report["mean_abs_error"].as_f64().unwrap();
    assert!(mae < 3e-3, "mean |error| {mae}");
    assert_eq!(tweedie::data::read_npy(&lp).unwrap().n, n);

    let bad = dir.path().join("bad.npy");
    let run_bad = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.push(bad.to_str().unwrap());
        a.extend_from_slice(extra);
        tweedie(&a)
    };
    write_npy_f32(&bad, 4, 2, |i| if i == 5 { f32::NAN } else { 0.0 });
    assert_clean_error(&run_bad(&[]), &["bad.npy", "row 2", "NaN"]);
    write_npy_f32(&bad, 4, 3, |_| 0.0);
    assert_clean_error(&run_bad(&[]), &["bad.npy", "dimension 3", "dimension 2"]);
    write_npy_f32(&bad, 4, 2, |i| i as f32 * 0.5);
    assert_clean_error(&run_bad(&["--rtol", "-1"]), &["rtol"]);
    assert_clean_error(&run_bad(&["--dequantise", "-1,1"]), &["0..=255", "0.5"]);
    assert_clean_error(&run_bad(&["--dequantise", "1"]), &["LO,HI"]);
}

/// Every objective trains from the command line on a mixture target; force without forces is a clean error.
#[test]
fn objectives_train_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path(), 5);
    for obj in [
        "dsm",
        "dsm_level",
        "ncsn",
        "esm",
        "ism",
        "ssm",
        "ssm_vr",
        "fd_ssm",
        "force",
        "mixed",
    ] {
        let out = tweedie(&[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--data",
            "anisotropic3",
            "--objective",
            obj,
            "--out",
            dir.path().join(obj).to_str().unwrap(),
            "--quiet",
        ]);
        assert!(
            out.status.success(),
            "{obj}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = tweedie(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        "checkerboard",
        "--objective",
        "force",
        "--out",
        dir.path().join("f").to_str().unwrap(),
        "--quiet",
    ]);
    assert_clean_error(&out, &["force", "forces"]);
    let out = tweedie(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--objective",
        "sm",
        "--out",
        dir.path().join("g").to_str().unwrap(),
        "--quiet",
    ]);
    assert_clean_error(&out, &["sm", "ssm_vr"]);
    // a trained run's samples end with one Tweedie step (+1 NFE) unless --no-denoise
    let (run, dest) = (dir.path().join("dsm"), dir.path().join("s.npy"));
    let sample = |extra: &[&str]| {
        let mut args = vec![
            "sample",
            "--run",
            run.to_str().unwrap(),
            "--sampler",
            "unipc",
            "--steps",
            "5",
            "--n",
            "10",
            "--out",
            dest.to_str().unwrap(),
            "--quiet",
        ];
        args.extend_from_slice(extra);
        tweedie(&args)
    };
    for (extra, nfe) in [(&[][..], "NFE 6"), (&["--no-denoise"][..], "NFE 5")] {
        let out = sample(extra);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.contains(nfe),
            "{extra:?}: {said}"
        );
    }
    let out = sample(&["--denoise", "--no-denoise"]);
    assert!(!out.status.success());
    // drawn 3 at a time: all 10 rows, the NFE per sample
    let out = sample(&["--batch", "3"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("NFE 6"), "{said}");
    let bytes = std::fs::read(&dest).unwrap();
    let rows: npyz::NpyFile<_> = npyz::NpyFile::new(&bytes[..]).unwrap();
    assert_eq!(rows.shape(), &[10, 2]);
    assert_clean_error(&sample(&["--batch", "0"]), &["--batch"]);
}

/// `tweedie eval` states, beside every number, its definition and sample sizes; a reference of at
/// least 2k points gives each metric's floor between its two halves; `--target` adds the KSD
/// against the exact score. The flat keys of older readers stay.
#[test]
fn eval_json_describes_every_metric() {
    let dir = tempfile::tempdir().unwrap();
    let (s, r) = (dir.path().join("s.npy"), dir.path().join("r.npy"));
    for (path, n, seed) in [(&s, "300", "1"), (&r, "700", "2")] {
        let out = tweedie(&[
            "sample",
            "--target",
            "ncsn2",
            "--n",
            n,
            "--steps",
            "50",
            "--seed",
            seed,
            "--out",
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = tweedie(&[
        "eval",
        "--samples",
        s.to_str().unwrap(),
        "--reference",
        r.to_str().unwrap(),
        "--target",
        "ncsn2",
        "--entropy-draws",
        "5000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("eval prints JSON");
    assert_eq!(v["n_points"], 300);
    assert!(v["w2"].is_number() && v["target"]["metrics"]["cross_entropy"].is_number());
    assert_eq!(
        (v["n_samples"].as_u64(), v["n_reference"].as_u64()),
        (Some(300), Some(700))
    );
    let m = v["metrics"].as_object().expect("metrics");
    for name in [
        "w2",
        "sliced_w2",
        "mmd2",
        "cross_entropy",
        "entropy",
        "cross_entropy_minus_entropy",
        "mode_tv",
        "ksd2",
    ] {
        let e = &m[name];
        assert!(e["value"].is_number(), "{name}: {e}");
        let def = e["definition"].as_str().unwrap_or("");
        assert!(
            def.starts_with(&format!("{name}: ")) && !def.contains('\n'),
            "{name}: {def}"
        );
        assert!(
            e["n_samples"].is_number() || e["n_reference"].is_number(),
            "{name}: {e}"
        );
    }
    for name in ["w2", "sliced_w2", "mmd2"] {
        assert!(m[name]["floor"].is_number(), "{name}: {}", m[name]);
        assert_eq!(m[name]["n_reference"], 300);
    }
    let ksd = &m["ksd2"];
    assert!(
        ksd["value"].as_f64().unwrap().abs() < 4.0 * ksd["se"].as_f64().unwrap(),
        "{ksd}"
    );
    // a reference under 2k points: no floor, and the JSON says why
    let out = tweedie(&[
        "eval",
        "--samples",
        r.to_str().unwrap(),
        "--reference",
        s.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("eval prints JSON");
    assert!(v["floor"].is_null() && v["metrics"]["w2"].get("floor").is_none());
    assert!(
        v["floor_note"]
            .as_str()
            .unwrap_or("")
            .contains("fewer than 2k"),
        "{v}"
    );
}

/// `tweedie mcmc` on DW-4 from the reference data writes positions [n, d], forces [n, d],
/// energies \[n\] and a summary whose fields are defined, with centred draws, the energies of
/// those positions and the settings it ran with.
#[test]
fn mcmc_writes_draws_forces_energies_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dw4");
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/dw4/val_split_DW4.npy");
    let args = [
        "mcmc",
        "--potential",
        "dw4",
        "--chains",
        "16",
        "--steps",
        "200",
        "--burn-in",
        "50",
        "--thin",
        "10",
        "--seed",
        "3",
        "--quiet",
        "--init",
    ];
    let mut args: Vec<&str> = args.to_vec();
    args.extend([init.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let run = tweedie(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let read = |name: &str| tweedie::data::read_npy(&out.join(name)).unwrap();
    let (x, f, e) = (
        read("positions.npy"),
        read("forces.npy"),
        read("energies.npy"),
    );
    assert_eq!((x.n, x.d, f.n, f.d, e.n, e.d), (320, 8, 320, 8, 320, 1));
    let p = tweedie::target::named_potential("dw4", None).unwrap();
    let want = p.energy(&x.data).unwrap();
    for (a, b) in want.iter().zip(&e.data) {
        assert!(
            (a - b).abs() < 1e-3 * (1.0 + a.abs()),
            "energy {b} of positions whose energy is {a}"
        );
    }
    for row in x.data.chunks(8) {
        let com: f64 = row.iter().step_by(2).sum();
        assert!(com.abs() < 1e-4, "centre of mass {com}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for key in [
        "acceptance",
        "step_size",
        "ess_coordinates_min",
        "ess_coordinates_median",
        "ess_energy",
        "rhat_max",
        "energy_mean",
        "energy_se",
    ] {
        assert!(summary[key].is_number(), "{key}: {}", summary[key]);
        assert!(
            summary["definitions"][key].is_string(),
            "no definition of {key}"
        );
    }
    assert_eq!(summary["settings"]["chains"], 16);
    assert_eq!(summary["draws"], 320);
    let a = summary["acceptance"].as_f64().unwrap();
    assert!(a > 0.3 && a < 0.9, "acceptance {a}");
}

/// Force-based training end to end on DW-4: forces computed from the potential at the data
/// (`--potential`), and forces read from MD-style files written by `tweedie mcmc` (`--forces`);
/// both train on the zero-centre-of-mass space and sample centred configurations.
#[test]
fn force_training_from_a_potential_and_from_md_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let (pot, md, md_run, positions) = (p("pot"), p("md"), p("md_run"), p("md/positions.npy"));
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/dw4/val_split_DW4.npy");
    let ok = |args: &[&str]| {
        let out = tweedie(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let small = [
        "--steps", "200", "--batch", "64", "--width", "32", "--quiet",
    ];
    let mut a = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--potential",
        "dw4",
    ];
    a.extend(["--objective", "mixed", "--out", &pot]);
    a.extend(small);
    ok(&a);
    let cfg = std::fs::read_to_string(dir.path().join("pot/config.toml")).unwrap();
    assert!(
        cfg.contains("potential = \"dw4\"") && cfg.contains("com_free"),
        "{cfg}"
    );

    ok(&[
        "mcmc",
        "--potential",
        "dw4",
        "--chains",
        "8",
        "--steps",
        "120",
        "--burn-in",
        "40",
        "--thin",
        "5",
        "--init",
        data.to_str().unwrap(),
        "--out",
        &md,
        "--quiet",
    ]);
    let mut b = vec!["train", "--data", &positions];
    let forces = p("md/forces.npy");
    b.extend([
        "--forces",
        &forces,
        "--com-free",
        "4",
        "--objective",
        "mixed",
        "--out",
        &md_run,
    ]);
    b.extend(small);
    ok(&b);
    for run in ["pot", "md_run"] {
        let s = p(&format!("{run}.npy"));
        ok(&[
            "sample",
            "--run",
            &p(run),
            "--steps",
            "20",
            "-n",
            "50",
            "--out",
            &s,
            "--quiet",
        ]);
        let x = tweedie::data::read_npy(Path::new(&s)).unwrap();
        assert_eq!((x.n, x.d), (50, 8));
        for i in 0..x.n {
            let r = x.row(i);
            let (cx, cy) = (
                (0..4).map(|k| r[2 * k]).sum::<f64>(),
                (0..4).map(|k| r[2 * k + 1]).sum::<f64>(),
            );
            assert!(
                cx.abs() < 1e-3 && cy.abs() < 1e-3,
                "{run}: sample {i} not centred: {r:?}"
            );
        }
    }
}

/// `--network egnn` trains on particle data with `--com-free` and samples from the run; without
/// `--com-free` it is refused with a message that names the flag.
#[test]
fn an_egnn_trains_and_samples_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("particles.npy");
    write_npy_shaped(&data, &[64, 4, 2], |i| ((i * 37 % 101) as f32 / 50.0) - 1.0);
    let cfg = small_config(dir.path(), 5);
    let run = dir.path().join("run");
    let args = |extra: &[&str]| -> Vec<String> {
        let base = ["train", "--config", cfg.to_str().unwrap(), "--data"];
        let tail = [
            "--network",
            "egnn",
            "--out",
            run.to_str().unwrap(),
            "--quiet",
        ];
        base.iter()
            .map(|s| s.to_string())
            .chain([data.to_string_lossy().into_owned()])
            .chain(extra.iter().chain(&tail).map(|s| s.to_string()))
            .collect()
    };
    let refused = args(&[]);
    let out = tweedie(&refused.iter().map(String::as_str).collect::<Vec<_>>());
    assert_clean_error(&out, &["egnn", "--com-free"]);
    let ok = args(&["--com-free"]);
    let out = tweedie(&ok.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = dir.path().join("s.npy");
    let out = tweedie(&[
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--n",
        "16",
        "--steps",
        "5",
        "--out",
        samples.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(samples.exists());
}

/// A C-order f32 .npy of any shape.
fn write_npy_shaped(path: &Path, shape: &[usize], values: impl Fn(usize) -> f32) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    let mut h = header.into_bytes();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(b' ');
    }
    h.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&h);
    for i in 0..shape.iter().product::<usize>() {
        bytes.extend_from_slice(&values(i).to_le_bytes());
    }
    std::fs::write(path, bytes).expect("write npy");
}
