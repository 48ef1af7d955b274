//! Images end to end: the shipped MNIST config trains a class-conditional U-Net from the command
//! line, samples a class with guidance, draws the grid and scores test digits in bits/dim; a
//! U-Net trained on an IDX file round-trips through its safetensors checkpoint with identical
//! outputs.

use anyhow::Result;
use candle_core::{Device, Tensor};
use std::path::Path;
use std::process::{Command, Output};
use tweedie::config::RunConfig;
use tweedie::data::idx::{encode_idx, IMAGES_MAGIC, LABELS_MAGIC};
use tweedie::train::{self, checkpoint::Checkpoint, TrainOptions, CHECKPOINT};

fn tweedie(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args(args)
        .output()
        .expect("run tweedie")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two steps of the shipped MNIST config (batch 4) into `run`.
fn train_two_steps(run: &str) {
    ok(&tweedie(&[
        "train",
        "--config",
        "configs/mnist-tiny.toml",
        "--steps",
        "2",
        "--batch",
        "4",
        "--out",
        run,
        "--quiet",
    ]));
}

/// The GPU config (`configs/mnist-base.toml`, the base preset) reads and takes a training step on
/// the CPU: a U-Net of 5,149,761 parameters for class-conditional 1×28×28 digits.
#[test]
fn the_base_config_builds_and_takes_a_step() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("base").to_string_lossy().into_owned();
    ok(&tweedie(&[
        "train",
        "--config",
        "configs/mnist-base.toml",
        "--steps",
        "1",
        "--batch",
        "2",
        "--out",
        &run,
        "--quiet",
    ]));
    let ck = Checkpoint::load(&Path::new(&run).join(CHECKPOINT))?;
    assert_eq!(ck.model.event, vec![1, 28, 28]);
    assert_eq!(ck.model.parameter_count(), Some(5_149_761));
    Ok(())
}

#[test]
fn the_mnist_config_trains_samples_a_class_and_draws_a_grid() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let run = p("run");
    train_two_steps(&run);
    let ck = Checkpoint::load(&Path::new(&run).join(CHECKPOINT))?;
    assert_eq!(ck.model.event, vec![1, 28, 28]);
    assert_eq!(ck.model.arch.classes, Some(10));
    let samples = p("s.npy");
    let sample = |class: &str| {
        tweedie(&[
            "sample",
            "--run",
            &run,
            "--class",
            class,
            "--guidance",
            "2",
            "-n",
            "2",
            "--steps",
            "2",
            "--sampler",
            "ddim",
            "-o",
            &samples,
            "--quiet",
        ])
    };
    ok(&sample("3"));
    // one class per sample, cycled
    ok(&sample("0,9"));
    let grid = p("grid.png");
    ok(&tweedie(&[
        "plot",
        "images",
        "--samples",
        &samples,
        "--range",
        "-1",
        "1",
        "-o",
        &grid,
    ]));
    assert!(Path::new(&grid).exists());
    // bits/dim of the first two held-out test digits (`--data mnist`, read as training reads
    // them): the reverse-mode Hutchinson path through the U-Net, on two Euler steps
    let out = tweedie(&[
        "nll",
        "--run",
        &run,
        "--data",
        "mnist",
        "--limit",
        "2",
        "--divergence",
        "hutchinson",
        "--solver",
        "euler",
        "--steps",
        "2",
        "--quiet",
    ]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2 points of dimension 784")
            && text.contains("bits/dim")
            && text.contains("+ 7.0000, a = (HI − LO)/256 = 0.0078125"),
        "{text}"
    );
    // a class the run does not know: one clean line
    let out = sample("2,10");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("class 10") && !err.contains("panicked"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_unet_checkpoint_round_trips_with_identical_outputs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (n, side) = (12u32, 8u32);
    let pixels: Vec<u8> = (0..n * side * side).map(|i| (i * 37 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
    let images = dir.path().join("images-idx3-ubyte");
    let label_file = dir.path().join("labels.idx");
    std::fs::write(&images, encode_idx(IMAGES_MAGIC, &[n, side, side], &pixels))?;
    std::fs::write(&label_file, encode_idx(LABELS_MAGIC, &[n], &labels))?;
    let cfg = RunConfig::from_toml_str(&format!(
        "[data]\nsource = {:?}\nlabels = {:?}\n[model]\nnetwork = \"unet\"\nchannels = 8\n\
         mults = [1, 2]\nembed_dim = 8\n[train]\nsteps = 2\nbatch = 4\nlabel_dropout = 0.5\n",
        images.to_string_lossy(),
        label_file.to_string_lossy()
    ))?;
    let run = dir.path().join("run");
    let dev = Device::Cpu;
    train::train(&cfg, &run, &TrainOptions::default(), &dev)?;
    let ck = Checkpoint::load(&run.join(CHECKPOINT))?;
    // the classes come from the labels (0, 1, 2)
    assert_eq!(ck.model.arch.classes, Some(3));
    let copy = dir.path().join("copy.safetensors");
    ck.save(&copy)?;
    let a = train::net_from_checkpoint(&ck, true, &dev)?;
    let b = train::net_from_checkpoint(&Checkpoint::load(&copy)?, true, &dev)?;
    let x = Tensor::rand(-1f32, 1f32, (3, 64), &dev)?;
    let t = Tensor::new(&[0.1f32, 0.5, 0.9], &dev)?;
    let c = Tensor::new(&[2u32, 0, 3], &dev)?;
    for cond in [None, Some(&c)] {
        let (ya, yb) = (a.forward_cond(&x, &t, cond)?, b.forward_cond(&x, &t, cond)?);
        let diff = (ya - yb)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
    }
    // the conditional and null-class outputs differ
    let d = (a.forward_cond(&x, &t, Some(&c))? - a.forward(&x, &t)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert!(d > 0.0);
    Ok(())
}

/// The classifier from the command line: trained a few steps (and resumed to more), it judges
/// samples (`eval --classifier`) and guides a U-Net's sampling (`sample --classifier`); a score
/// run given as a classifier, a labels count that differs from the samples and samples of
/// another shape are one-line errors.
#[test]
fn a_classifier_trains_judges_samples_and_guides_sampling() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (cls, unet) = (p("cls"), p("unet"));
    ok(&tweedie(&[
        "classifier",
        "--out",
        &cls,
        "--steps",
        "3",
        "--batch",
        "8",
        "--quiet",
    ]));
    let acc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        Path::new(&cls).join("accuracy.json"),
    )?)?;
    assert!(acc["test_accuracy"]
        .as_f64()
        .is_some_and(|a| (0.0..=1.0).contains(&a)));
    // a second run into the same folder is refused
    assert_eq!(
        tweedie(&["classifier", "--out", &cls, "--steps", "1"])
            .status
            .code(),
        Some(1)
    );
    // --resume goes on from the checkpoint to more steps; with none left it is refused
    ok(&tweedie(&[
        "classifier",
        "--out",
        &cls,
        "--resume",
        "--steps",
        "5",
        "--quiet",
    ]));
    let acc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        Path::new(&cls).join("accuracy.json"),
    )?)?;
    assert_eq!(acc["steps"].as_u64(), Some(5));
    let again = tweedie(&["classifier", "--out", &cls, "--resume", "--quiet"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--steps"));
    train_two_steps(&unet);
    let samples = p("s.npy");
    ok(&tweedie(&[
        "sample",
        "--run",
        &unet,
        "--class",
        "3,7",
        "--guidance",
        "1",
        "--classifier",
        &cls,
        "--classifier-scale",
        "2",
        "-n",
        "6",
        // 2 at a time (whole cycles of the classes): 3 calls of the sampler
        "--batch",
        "3",
        "--steps",
        "2",
        "--sampler",
        "ddim",
        "-o",
        &samples,
        "--quiet",
    ]));
    // the labels written beside the samples are read by default
    assert_eq!(
        tweedie::data::read_labels(Path::new(&p("s.labels.npy")))?,
        vec![3, 7, 3, 7, 3, 7]
    );
    let out = tweedie(&["eval", "--samples", &samples, "--classifier", &cls]);
    ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let m = &report["metrics"];
    assert!(m["class_accuracy"]["definition"].as_str().is_some());
    assert_eq!(m["frechet_distance"]["n_samples"], 6);
    assert!(m["frechet_distance"]["floor"]
        .as_f64()
        .is_some_and(|f| f >= 0.0));
    let fails = |args: &[&str], says: &str| {
        let out = tweedie(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(says) && !err.contains("panicked") && err.trim().lines().count() == 1,
            "{err}"
        );
    };
    fails(
        &["eval", "--samples", &samples, "--classifier", &unet],
        "not a classifier",
    );
    fails(
        &[
            "sample",
            "--run",
            &unet,
            "--class",
            "1",
            "--classifier",
            &unet,
            "-n",
            "2",
            "--steps",
            "1",
            "-o",
            &samples,
        ],
        "not a classifier",
    );
    let labels = p("l.npy");
    tweedie::data::write_labels(Path::new(&labels), &[1, 2, 3])?;
    fails(
        &[
            "eval",
            "--samples",
            &samples,
            "--classifier",
            &cls,
            "--labels",
            &labels,
        ],
        "3 labels for 6 samples",
    );
    let flat = p("flat.npy");
    let pts = tweedie::data::Points::new(6, 2, vec![0.0; 12])?;
    tweedie::data::write_npy(Path::new(&flat), &pts, false)?;
    fails(
        &[
            "eval",
            "--samples",
            &flat,
            "--classifier",
            &cls,
            "--classes",
            "0,1",
        ],
        "the classifier takes images of shape [1, 28, 28]",
    );
    Ok(())
}
