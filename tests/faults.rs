//! Fault injection on the `tweedie` binary: training processes killed (SIGKILL) at many moments,
//! among them inside a checkpoint write (the test-only pause hook), resume each time to weights
//! bit-identical to an uninterrupted run's; a write error during a checkpoint leaves the previous
//! one intact; a folder holding a run is never overwritten by accident, and two processes never
//! train into one folder.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tweedie"));
    // two threads: the processes of this file run beside other tests
    c.env("RAYON_NUM_THREADS", "2");
    c
}

fn tweedie(args: &[&str]) -> Output {
    bin().args(args).output().expect("run tweedie")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
}

/// A clean failure: non-zero exit, one `error:` line holding every needle, no panic.
fn assert_clean_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "'{n}' not in: {err}");
    }
}

const SMALL: &str = "[model]\nwidth = 16\ndepth = 2\n[train]\nbatch = 64\nlog_every = 10\n";

fn config(dir: &Path, name: &str, steps: usize, checkpoint_every: usize) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("{SMALL}steps = {steps}\ncheckpoint_every = {checkpoint_every}\n"),
    )
    .expect("write config");
    p
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The step in a checkpoint's header (None: no checkpoint).
fn checkpoint_step(run: &Path) -> Option<usize> {
    let bytes = std::fs::read(run.join("checkpoint.safetensors")).ok()?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("readable checkpoint");
    meta.metadata().as_ref()?.get("step")?.parse().ok()
}

/// Every tensor of two checkpoints equal bit for bit.
fn assert_same_tensors(a: &Path, b: &Path) {
    let (fa, fb) = (
        std::fs::read(a.join("checkpoint.safetensors")).expect("a"),
        std::fs::read(b.join("checkpoint.safetensors")).expect("b"),
    );
    let ta = safetensors::SafeTensors::deserialize(&fa).expect("a parses");
    let tb = safetensors::SafeTensors::deserialize(&fb).expect("b parses");
    let mut names = ta.names();
    names.sort();
    let mut nb = tb.names();
    nb.sort();
    assert_eq!(names, nb);
    assert!(names.len() >= 8);
    for name in names {
        let (x, y) = (ta.tensor(name).expect("x"), tb.tensor(name).expect("y"));
        assert_eq!(x.shape(), y.shape(), "{name}");
        assert_eq!(x.data(), y.data(), "tensor {name} differs");
    }
}

/// Kills a child with SIGKILL and reaps it.
fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts training into `run` with stderr piped; `resume` when a checkpoint exists.
fn launch(cfg: &Path, run: &Path, pause: Option<f64>) -> Child {
    let mut c = bin();
    c.args(["train", "--config", s(cfg), "--out", s(run), "--quiet"]);
    if checkpoint_step(run).is_some() {
        c.arg("--resume");
    }
    if let Some(p) = pause {
        c.env("TWEEDIE_TEST_PAUSE_IN_CHECKPOINT", p.to_string());
    }
    c.stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn")
}

/// Waits for the `k`-th "paused in the checkpoint write" line on the child's stderr and kills the
/// child there (inside the write: temporary file written, not yet renamed). False if the child
/// ended first.
fn kill_in_checkpoint_write(mut child: Child, k: usize) -> bool {
    let err = child.stderr.take().expect("piped");
    let mut seen = 0;
    for line in BufReader::new(err).lines() {
        let line = line.unwrap_or_default();
        assert!(!line.contains("panicked"), "{line}");
        if line.contains("paused in the checkpoint write") {
            seen += 1;
            if seen == k {
                kill(child);
                return true;
            }
        }
    }
    kill(child);
    false
}

/// A deterministic generator of kill delays (no extra dependency).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Kills at many moments (inside checkpoint writes, at random times while training with slowed
/// checkpoints, at random times from start-up), resuming each time; the final weights equal an
/// uninterrupted run's bit for bit.
#[test]
fn killed_anywhere_resumes_bit_for_bit() {
    let dir = tempfile::tempdir().expect("tmp");
    let (steps, every) = (200, 20);
    let cfg = config(dir.path(), "c.toml", steps, every);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    assert_ok(&tweedie(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&a),
        "--quiet",
    ]));

    let mut rng = Lcg(24);
    let mut kills = 0;
    // 1. inside the write of the first checkpoint (none exists yet), then of the third
    // (each write pauses: 30 s where the first is killed, 0.5 s where the third is)
    for (k, pause) in [(1, 30.0), (3, 0.5)] {
        if kill_in_checkpoint_write(launch(&cfg, &b, Some(pause)), k) {
            kills += 1;
        }
    }
    // 2. at random moments of a run whose checkpoint writes each pause 30 ms: the kill lands in
    // training steps, in a checkpoint's write or its pause
    for _ in 0..4 {
        let child = launch(&cfg, &b, Some(0.03));
        std::thread::sleep(Duration::from_millis(40 + rng.below(120)));
        kill(child);
        kills += 1;
    }
    // 3. at random moments from start-up (loading the checkpoint, taking the lock)
    for _ in 0..3 {
        let child = launch(&cfg, &b, None);
        std::thread::sleep(Duration::from_millis(rng.below(30)));
        kill(child);
        kills += 1;
    }
    // whatever the kills left, the folder resumes (or starts) and finishes
    let reached = checkpoint_step(&b);
    assert!(
        reached.is_none_or(|s| s <= steps && s % every == 0),
        "{reached:?}"
    );
    if reached != Some(steps) {
        let out = launch(&cfg, &b, None).wait_with_output().expect("finish");
        assert_ok(&out);
        assert!(!b.join("train.lock").exists(), "lock released");
    }
    assert_eq!(checkpoint_step(&b), Some(steps));
    assert_same_tensors(&a, &b);
    eprintln!(
        "killed {kills} times (checkpoint before the last resume: {reached:?}); weights equal"
    );
}

/// A write error during a checkpoint (injected: half the file written, then "no space left")
/// stops the run with a one-line error; the previous checkpoint stays loadable, no temporary file
/// or lock is left, and the run resumes from it to the same weights as an uninterrupted run.
#[test]
fn checkpoint_write_error_keeps_the_previous_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path(), "c.toml", 100, 20);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    assert_ok(&tweedie(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&a),
        "--quiet",
    ]));
    let out = bin()
        .args(["train", "--config", s(&cfg), "--out", s(&b), "--quiet"])
        .env("TWEEDIE_TEST_FAIL_CHECKPOINT_AT_STEP", "60")
        .output()
        .expect("run");
    assert_clean_error(&out, &["checkpoint", "no space left"]);
    assert_eq!(checkpoint_step(&b), Some(40), "the previous checkpoint");
    let left: Vec<String> = std::fs::read_dir(&b)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp") || n == "train.lock")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // the previous checkpoint loads and samples
    let samples = dir.path().join("x.npy");
    assert_ok(&tweedie(&[
        "sample",
        "--run",
        s(&b),
        "-n",
        "10",
        "--steps",
        "5",
        "--out",
        s(&samples),
    ]));
    assert_ok(&tweedie(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&b),
        "--resume",
        "--quiet",
    ]));
    assert_same_tensors(&a, &b);
}

/// A folder holding a trained run is refused without --resume or --overwrite (its checkpoint
/// untouched); --overwrite replaces it.
#[test]
fn a_trained_run_is_never_overwritten_by_accident() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path(), "c.toml", 40, 20);
    let run = dir.path().join("run");
    assert_ok(&tweedie(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&run),
        "--quiet",
    ]));
    let before = std::fs::read(run.join("checkpoint.safetensors")).expect("ck");
    let again = ["train", "--out", s(&run), "--steps", "20", "--quiet"];
    assert_clean_error(&tweedie(&again), &["--resume", "--overwrite", "run"]);
    assert_eq!(
        std::fs::read(run.join("checkpoint.safetensors")).expect("ck"),
        before
    );
    assert!(!run.join("train.lock").exists(), "lock released on error");
    let mut over = again.to_vec();
    over.push("--overwrite");
    assert_ok(&tweedie(&over));
    assert_eq!(checkpoint_step(&run), Some(20));
    // --resume and --overwrite together are refused
    let mut both = over.clone();
    both.push("--resume");
    let out = tweedie(&both);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--overwrite"), "{}", stderr(&out));
}

/// A second process on a folder in training refuses at once; the lock of a killed process is
/// taken over with a warning and released at the end.
#[test]
fn one_process_per_run_folder() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path(), "c.toml", 1_000_000, 20);
    let run = dir.path().join("run");
    let first = launch(&cfg, &run, None);
    let lock = run.join("train.lock");
    let start = Instant::now();
    while checkpoint_step(&run).is_none() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(lock.exists(), "the lock is held while training");
    let t = Instant::now();
    let out = tweedie(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&run),
        "--resume",
        "--quiet",
    ]);
    assert_clean_error(&out, &["another tweedie process", "train.lock"]);
    assert!(t.elapsed() < Duration::from_secs(10), "refused at once");
    kill(first);
    assert!(lock.exists(), "a killed process leaves its lock");
    let out = tweedie(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&run),
        "--resume",
        "--steps",
        &(checkpoint_step(&run).expect("step") + 20).to_string(),
        "--quiet",
    ]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("took over a lock"),
        "{}",
        stderr(&out)
    );
    assert!(!lock.exists(), "released at the end");
}
