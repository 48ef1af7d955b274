//! Bad input for every command, as one table: malformed arrays (NaN/inf rows, integer, complex,
//! object and big-endian dtypes, Fortran order, truncated files, headers claiming 10¹² rows or
//! shapes that overflow), ragged and empty CSV, MCMC starting states of the wrong width, with NaN
//! or with infinite energy, wrong dimensions against a checkpoint, zero and negative settings,
//! missing runs, unwritable folders, bad configs and corrupt checkpoints. Each must end with a
//! non-zero exit, one `error:` line on stderr naming what is wrong, and no panic.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Writes a `.npy` file from a raw header dict and data bytes (version 1).
fn npy(path: &Path, dict: &str, data: &[u8]) {
    let mut h = dict.as_bytes().to_vec();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(b' ');
    }
    h.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).expect("write npy");
}

fn f32_npy(path: &Path, rows: usize, cols: usize, value: impl Fn(usize) -> f32) {
    let data: Vec<u8> = (0..rows * cols)
        .flat_map(|i| value(i).to_le_bytes())
        .collect();
    npy(
        path,
        &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}"),
        &data,
    );
}

/// `tweedie train ARGS --out OUT --quiet`, which must succeed.
fn train(args: &[&str], out: &Path) {
    let done = Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .arg("train")
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .output()
        .expect("train");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
}

/// The fixture: a folder of bad (and a few good) inputs and small trained runs.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        let j = |n: &str| d.join(n);
        f32_npy(&j("good.npy"), 64, 2, |i| (i % 13) as f32 * 0.1);
        f32_npy(
            &j("nan.npy"),
            50,
            2,
            |i| if i == 37 { f32::NAN } else { 0.5 },
        );
        f32_npy(&j("inf.npy"), 50, 2, |i| {
            if i == 8 {
                f32::INFINITY
            } else {
                0.5
            }
        });
        f32_npy(&j("three.npy"), 40, 3, |i| (i % 7) as f32);
        // 13 particles in 3-D all at the origin: LJ's r⁻¹² is infinite
        f32_npy(&j("lj_overlap.npy"), 3, 39, |_| 0.0);
        // particles [n, 2, 2]: valid data, but not for a 2-D checkpoint or target
        npy(
            &j("particles.npy"),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (10, 2, 2), }",
            &[0u8; 10 * 4 * 4],
        );
        npy(
            &j("int.npy"),
            "{'descr': '<i8', 'fortran_order': False, 'shape': (4, 2), }",
            &[0u8; 64],
        );
        npy(
            &j("complex.npy"),
            "{'descr': '<c16', 'fortran_order': False, 'shape': (4, 2), }",
            &[0u8; 128],
        );
        npy(
            &j("fortran.npy"),
            "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 2), }",
            &[0u8; 32],
        );
        npy(
            &j("object.npy"),
            "{'descr': '|O', 'fortran_order': False, 'shape': (4, 2), }",
            &[0u8; 64],
        );
        npy(
            &j("bigendian.npy"),
            "{'descr': '>f4', 'fortran_order': False, 'shape': (4, 2), }",
            &[0u8; 32],
        );
        npy(
            &j("structured.npy"),
            "{'descr': [('a', '<f4'), ('b', '<f4')], 'fortran_order': False, 'shape': (4,), }",
            &[0u8; 32],
        );
        npy(
            &j("huge.npy"),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 2), }",
            &[0u8; 64],
        );
        npy(
            &j("overflow.npy"),
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
            &[0u8; 64],
        );
        npy(
            &j("scalar.npy"),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
            &[0u8; 4],
        );
        npy(
            &j("empty_rows.npy"),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 0), }",
            &[],
        );
        npy(
            &j("bad_header.npy"),
            "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (4, 2), }",
            &[0u8; 32],
        );
        f32_npy(&j("trunc_src.npy"), 100, 2, |i| i as f32);
        let bytes = std::fs::read(j("trunc_src.npy")).expect("read");
        std::fs::write(j("truncated.npy"), &bytes[..bytes.len() - 50]).expect("write");
        // a version-2 header claiming 4 GiB of header text
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend_from_slice(&u32::MAX.to_le_bytes());
        v2.extend_from_slice(b"{'descr'");
        std::fs::write(j("v2huge.npy"), v2).expect("write");
        std::fs::write(j("zero.npy"), b"").expect("write");
        std::fs::write(j("junk.npy"), b"this is not numpy at all").expect("write");
        npy(
            &j("float_labels.npy"),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (64,), }",
            &[0u8; 256],
        );
        npy(
            &j("neg_labels.npy"),
            "{'descr': '<i4', 'fortran_order': False, 'shape': (64,), }",
            &[0xffu8; 256],
        );
        // MNIST-like digits of the wrong size (27×27), and pixels already scaled to [−1, 1]
        npy(
            &j("digits27.npy"),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 27, 27), }",
            &[0u8; 2 * 27 * 27 * 4],
        );
        f32_npy(&j("scaled784.npy"), 2, 784, |i| (i % 5) as f32 * 0.25 - 0.5);
        std::fs::write(j("ragged.csv"), "1,2\n3,4\n5\n").expect("write");
        std::fs::write(j("words.csv"), "x,y\n1,2\n3,four\n").expect("write");
        std::fs::write(j("empty.csv"), "").expect("write");
        std::fs::write(j("infs.csv"), "1,2\ninf,3\n4,5\n").expect("write");
        std::fs::write(j("data.txt"), "1 2\n").expect("write");
        std::fs::write(j("a_file"), "not a folder").expect("write");
        std::fs::write(
            j("unknown_key.toml"),
            "[train]\nsteps = 10\nlearning_rate = 0.1\n",
        )
        .expect("write");
        std::fs::write(j("wrong_type.toml"), "[train]\nsteps = \"ten\"\n").expect("write");
        std::fs::write(j("syntax.toml"), "[train\nsteps = 10\n").expect("write");
        std::fs::write(j("bad_process.toml"), "[process]\nkind = \"warp\"\n").expect("write");
        std::fs::write(
            j("neg_beta.toml"),
            "[process]\nkind = \"vp\"\nbeta_min = 0.1\nbeta_max = -20.0\nt_min = 0.001\n",
        )
        .expect("write");
        std::fs::write(
            j("small.toml"),
            "[model]\nwidth = 16\ndepth = 2\n[train]\nsteps = 20\nbatch = 64\nlog_every = 10\n",
        )
        .expect("write");
        let small = j("small.toml").display().to_string();
        train(&["--config", &small], &j("run"));
        // a U-Net run of the shipped MNIST config (one step of batch 2)
        let mnist = [
            "--config",
            "configs/mnist-tiny.toml",
            "--steps",
            "1",
            "--batch",
            "2",
        ];
        train(&mnist, &j("unet_run"));
        // corrupt copies of its checkpoint
        let ck = std::fs::read(j("run").join("checkpoint.safetensors")).expect("ck");
        for (name, bytes) in [
            ("truncated_run", ck[..ck.len() / 2].to_vec()),
            ("garbage_run", b"garbage".to_vec()),
            ("empty_run", Vec::new()),
            ("huge_header_run", {
                let mut b = (u64::MAX / 2).to_le_bytes().to_vec();
                b.extend_from_slice(b"{}");
                b
            }),
            ("no_meta_run", {
                let mut b = br#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_vec();
                let mut out = (b.len() as u64).to_le_bytes().to_vec();
                out.append(&mut b);
                out.extend_from_slice(&[0u8; 4]);
                out
            }),
            ("giant_model_run", {
                // the real header, its model spec claiming a network of 10^12 weights
                let n = u64::from_le_bytes(ck[..8].try_into().expect("8 bytes")) as usize;
                let header = String::from_utf8(ck[8..8 + n].to_vec()).expect("utf-8");
                let header = header.replace(r#"\"width\":16"#, r#"\"width\":1000000"#);
                let mut out = (header.len() as u64).to_le_bytes().to_vec();
                out.extend_from_slice(header.as_bytes());
                out.extend_from_slice(&ck[8 + n..]);
                out
            }),
        ] {
            std::fs::create_dir_all(j(name)).expect("dir");
            std::fs::write(j(name).join("checkpoint.safetensors"), bytes).expect("write");
            std::fs::copy(j("run").join("config.toml"), j(name).join("config.toml"))
                .expect("config");
        }
        std::fs::create_dir_all(j("empty_folder")).expect("dir");
        Fixture { dir }
    }
}

/// Runs one case with a time limit; returns (exit success, stderr) or an error for a hang.
fn run(args: &[String], limit: Duration) -> Result<(bool, String), String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut s, &mut err);
                }
                return Ok((status.success(), err));
            }
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {limit:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The table: (what, command line, words the error line must hold). `{name}` stands for the
/// fixture's file `name`; `{run}` is a small trained run, `{unet_run}` a U-Net run of the
/// shipped MNIST config (one step).
#[rustfmt::skip]
const CASES: &[(&str, &str, &[&str])] = &[
    // data files, through the command that reads them
    ("NaN row", "train --data {nan.npy} --steps 5", &["nan.npy", "NaN"]),
    ("inf row", "eval --samples {inf.npy} --reference {good.npy}", &["inf.npy", "inf"]),
    ("inf in CSV", "train --data {infs.csv} --steps 5", &["infs.csv", "inf"]),
    ("integer dtype", "train --data {int.npy} --steps 5", &["int.npy", "<i8"]),
    ("complex dtype", "eval --samples {complex.npy} --reference {good.npy}", &["complex.npy", "<c16"]),
    ("Fortran order", "eval --samples {fortran.npy} --reference {good.npy}", &["fortran.npy", "Fortran"]),
    ("object array", "eval --samples {object.npy} --reference {good.npy}", &["object.npy", "|O"]),
    ("big-endian floats", "train --data {bigendian.npy} --steps 5", &["bigendian.npy", ">f4"]),
    ("structured dtype", "eval --samples {structured.npy} --reference {good.npy}", &["structured.npy", "not supported"]),
    ("truncated .npy", "eval --samples {truncated.npy} --reference {good.npy}", &["truncated.npy", "truncated"]),
    ("header claiming 10^12 rows", "train --data {huge.npy} --steps 5", &["huge.npy", "truncated"]),
    ("shape overflowing 64 bits", "nll --target ncsn2 --data {overflow.npy}", &["overflow.npy", "too large"]),
    ("scalar array", "train --data {scalar.npy} --steps 5", &["scalar.npy", "scalar"]),
    ("rows of no values", "eval --samples {empty_rows.npy} --reference {good.npy}", &["empty_rows.npy"]),
    ("bad header value", "eval --samples {bad_header.npy} --reference {good.npy}", &["bad_header.npy", "fortran_order"]),
    ("v2 header claiming 4 GiB", "eval --samples {v2huge.npy} --reference {good.npy}", &["v2huge.npy"]),
    ("empty .npy", "eval --samples {zero.npy} --reference {good.npy}", &["zero.npy"]),
    ("not numpy at all", "train --data {junk.npy} --steps 5", &["junk.npy"]),
    ("missing data file", "eval --samples {nope.npy} --reference {good.npy}", &["nope.npy"]),
    ("ragged CSV", "train --data {ragged.csv} --steps 5", &["ragged.csv", "line 3"]),
    ("words in CSV", "eval --samples {words.csv} --reference {good.npy}", &["words.csv", "non-numeric"]),
    ("empty CSV", "train --data {empty.csv} --steps 5", &["empty.csv"]),
    ("unknown extension", "train --data {data.txt} --steps 5", &["data.txt"]),
    ("float labels", "train --data {good.npy} --labels {float_labels.npy} --steps 5", &["float_labels.npy"]),
    ("negative labels", "train --data {good.npy} --labels {neg_labels.npy} --steps 5", &["neg_labels.npy"]),
    ("forces of another shape", "train --data {good.npy} --forces {three.npy} --objective force --steps 5", &["three.npy"]),
    // dimensions that do not match ([n, N, k] is valid particle data, not for a 2-D model)
    ("3-D data, 2-D checkpoint (resume)", "train --out {run} --resume --data {three.npy} --steps 40", &["dimension 3"]),
    ("3-D data, 2-D checkpoint (nll)", "nll --run {run} --data {three.npy}", &["three.npy"]),
    ("particles, 2-D checkpoint (nll)", "nll --run {run} --data {particles.npy}", &["particles.npy"]),
    ("particles, 2-D target (nll)", "nll --target ncsn2 --data {particles.npy}", &["particles.npy"]),
    ("27×27 digits, 28×28 U-Net (nll)", "nll --run {unet_run} --data {digits27.npy} --dequantise=-1,1", &["digits27.npy", "dimension 729", "784"]),
    ("scaled pixels as 8-bit (nll)", "nll --run {unet_run} --data {scaled784.npy} --dequantise=-1,1", &["integers"]),
    ("mnist dequantised to [0, 1] (nll)", "nll --run {unet_run} --data mnist --dequantise=0,1", &["[-1, 1]"]),
    ("nll --limit 0", "nll --run {unet_run} --data mnist --limit 0", &["--limit"]),
    ("samples vs reference dimension", "eval --samples {good.npy} --reference {three.npy}", &["dimension"]),
    ("reweight: reference of another width", "reweight --target ncsn2 --potential double-well --reference {three.npy}", &["three.npy"]),
    ("reweight: NaN in the reference", "reweight --target ncsn2 --potential double-well --reference {nan.npy}", &["nan.npy"]),
    ("reweight: model vs potential dimension", "reweight --run {run} --potential dw4", &["dimension"]),
    ("reweight -n 0", "reweight --target ncsn2 --potential double-well -n 0", &["sample"]),
    ("sample --readout tweedie without a run", "sample --potential double-well --readout tweedie", &["--run"]),
    ("sample --run --potential without tweedie", "sample --run {run} --potential double-well", &["tweedie"]),
    ("sample --tweedie-max-noise 0", "sample --run {run} --potential double-well --readout tweedie --tweedie-max-noise 0", &["tweedie-max-noise"]),
    ("--com-free on 2-D data", "train --data {good.npy} --com-free --steps 5", &["com-free"]),
    // zero and negative settings: read as numbers, refused by the setting's check
    ("train --steps 0", "train --steps 0 --out {r1}", &["steps"]),
    ("train --steps -5", "train --steps -5 --out {r1}", &["-5", "steps"]),
    ("train --batch 0", "train --batch 0 --out {r1}", &["batch"]),
    ("train --lr -1", "train --lr -1 --out {r1}", &["lr"]),
    ("train --lr nan", "train --lr nan --out {r1}", &["lr"]),
    ("train --data-scale -2", "train --data-scale -2 --out {r1}", &["scale"]),
    ("train --width 0", "train --width 0 --out {r1}", &["width"]),
    ("train --sigma-max -3", "train --process ve --sigma-max -3 --out {r1}", &["sigma"]),
    ("train --level-t -0.5", "train --objective dsm_level --level-t -0.5 --out {r1}", &["0.5"]),
    ("sample --steps 0", "sample --target ncsn2 --steps 0 --out {out.npy}", &["steps"]),
    ("sample -n 0", "sample --target ncsn2 -n 0 --steps 5 --out {out.npy}", &["samples"]),
    ("sample --rtol -1", "sample --target ncsn2 --sampler dopri5 --rtol -1 --out {out.npy}", &["rtol"]),
    ("sample --eta -0.5", "sample --target ncsn2 --sampler ddim --eta -0.5 --steps 5 --out {out.npy}", &["eta"]),
    ("sample --snr -1", "sample --target ncsn2 --sampler pc --snr -1 --steps 5 --out {out.npy}", &["snr"]),
    ("sample --langevin-step -1", "sample --target ncsn2 --sampler langevin --langevin-step -1 --steps 5 --out {out.npy}", &["step"]),
    ("eval --max-points 0", "eval --samples {good.npy} --reference {good.npy} --max-points 0", &["max_points"]),
    ("eval --projections -3", "eval --samples {good.npy} --reference {good.npy} --projections -3", &["-3"]),
    ("nll --probes 0", "nll --target ncsn2 --data {good.npy} --divergence hutchinson --probes 0", &["probes"]),
    ("nll --t-min -1", "nll --target ncsn2 --data {good.npy} --t-min -1", &["t"]),
    ("nll --dequantise 5,1", "nll --target ncsn2 --data {good.npy} --dequantise 5,1", &["dequantisation"]),
    ("bench --repeats 0", "bench train --repeats 0", &["repeats"]),
    ("bench train --batch 0", "bench train --batch 0 --steps 2", &["batch"]),
    ("demo --steps 0", "demo --steps 0 --out {demo0} --quiet", &["steps"]),
    ("demo --n 0", "demo --n 0 --steps 2 --out {demo1} --quiet", &["n"]),
    ("demo unknown toy", "demo --dataset chequerboard --out {demo2} --quiet", &["chequerboard"]),
    ("experiment samplers --n 0", "experiment samplers --n 0 --out {exp} --quiet", &["--n"]),
    ("experiment samplers --repeats 0", "experiment samplers --repeats 0 --out {exp} --quiet", &["repeats"]),
    ("experiment samplers --budgets 0", "experiment samplers --budgets 0 --out {exp} --quiet", &["budgets"]),
    ("experiment energy --seeds 0", "experiment energy --seeds 0 --out {exp} --quiet", &["--seeds"]),
    ("experiment objectives --steps 0", "experiment objectives --steps 0 --out {exp} --quiet", &["steps"]),
    ("experiment objectives --level -1", "experiment objectives --level -1 --out {exp} --quiet", &["level"]),
    ("experiment objectives unknown target", "experiment objectives --target nope --steps 2 --out {exp} --quiet", &["nope"]),
    ("experiment schedules --lr -1", "experiment schedules --lr -1 --out {exp} --quiet", &["lr"]),
    ("train --potential of another shape", "train --data {good.npy} --potential dw4 --objective mixed --steps 2 --out {r1}", &["good.npy", "dw4", "8"]),
    ("train --potential unknown", "train --data {good.npy} --potential dw5 --objective mixed --steps 2 --out {r1}", &["dw5"]),
    ("train idem without --potential", "train --objective idem --steps 2 --out {r1}", &["data.potential"]),
    ("train idem on a data file", "train --objective idem --potential anisotropic3 --data {good.npy} --steps 2 --out {r1}", &["replay", "good.npy"]),
    ("train ssm on a U-Net (no tangents)", "train --network unet --data mnist --objective ssm_vr --steps 2 --out {r1}", &["ssm", "unet", "fd_ssm"]),
    ("train ism on an EGNN (no tangents)", "train --network egnn --data {good.npy} --objective ism --steps 2 --out {r1}", &["ism", "egnn", "fd_ssm"]),
    ("data replay without idem", "train --data replay --steps 2 --out {r1}", &["replay", "idem"]),
    ("train --kt without --potential", "train --data {good.npy} --kt 2 --steps 2 --out {r1}", &["--kt", "--potential"]),
    ("mcmc --chains 0", "mcmc --potential dw4 --chains 0 --out {mc} --quiet", &["chains"]),
    ("mcmc --steps 0", "mcmc --potential dw4 --steps 0 --out {mc} --quiet", &["steps"]),
    ("mcmc --thin 0", "mcmc --potential dw4 --thin 0 --out {mc} --quiet", &["thin"]),
    ("mcmc --steps below --thin", "mcmc --potential dw4 --steps 5 --thin 10 --out {mc} --quiet", &["thin"]),
    ("mcmc --kt 0", "mcmc --potential dw4 --kt 0 --out {mc} --quiet", &["kT", "0"]),
    ("mcmc --kt -1", "mcmc --potential lj13 --kt -1 --out {mc} --quiet", &["kT", "-1"]),
    ("mcmc --kt nan", "mcmc --potential double-well --kt nan --out {mc} --quiet", &["kT", "NaN"]),
    ("mcmc --step-size -1", "mcmc --potential dw4 --step-size -1 --out {mc} --quiet", &["step size"]),
    ("mcmc --target-accept 1.5", "mcmc --potential dw4 --target-accept 1.5 --out {mc} --quiet", &["acceptance"]),
    // MCMC starting states
    ("mcmc init of the wrong width", "mcmc --potential dw4 --init {good.npy} --out {mc} --quiet", &["good.npy", "4 particles × 2 dimensions"]),
    ("mcmc init with a NaN row", "mcmc --potential double-well --init {nan.npy} --out {mc} --quiet", &["nan.npy", "row 18", "NaN"]),
    ("mcmc init of overlapping particles", "mcmc --potential lj13 --init {lj_overlap.npy} --out {mc} --quiet", &["lj_overlap.npy", "row 0"]),
    ("mcmc missing init", "mcmc --potential dw4 --init {nope.npy} --out {mc} --quiet", &["nope.npy"]),
    // names
    ("unknown toy", "train --data chequerboard --out {r1}", &["chequerboard"]),
    ("unknown process", "train --process warp --out {r1}", &["warp"]),
    ("unknown objective", "train --objective sm --out {r1}", &["sm"]),
    ("unknown sampler", "sample --target ncsn2 --sampler rk9 --out {out.npy}", &["rk9"]),
    ("unknown grid", "sample --target ncsn2 --grid spiral --out {out.npy}", &["spiral"]),
    ("unknown target", "sample --target ncsn3 --out {out.npy}", &["ncsn3"]),
    ("unknown device", "train --device tpu --out {r1}", &["tpu"]),
    ("unknown potential", "mcmc --potential argon --out {mc} --quiet", &["argon", "double-well, muller-brown, dw4, lj13, gmm40"]),
    ("cuda in a CPU build", "sample --target ncsn2 --device cuda --out {out.npy}", &["cuda"]),
    ("unknown flag", "train --stepz 5", &["--stepz"]),
    // runs, folders and configs
    ("missing run (sample)", "sample --run {no_run} --out {out.npy}", &["no_run"]),
    ("missing run (nll)", "nll --run {no_run} --data {good.npy}", &["no_run"]),
    ("missing run (bench)", "bench sample --run {no_run} --steps 2 --n 2", &["no_run"]),
    ("resume without a run", "train --out {empty_folder} --resume", &["empty_folder"]),
    ("existing run", "train --out {run} --steps 5", &["--resume", "--overwrite"]),
    ("run folder under a file", "train --out {a_file}/run --steps 5", &["a_file"]),
    ("samples under a file", "sample --target ncsn2 --steps 3 -n 4 --out {a_file}/x.npy", &["a_file"]),
    ("PNG under a file", "sample --target ncsn2 --steps 3 -n 4 --out {out.npy} --png {a_file}/x.png", &["a_file"]),
    ("metrics JSON under a file", "eval --samples {good.npy} --reference {good.npy} --json {a_file}/m.json", &["a_file"]),
    ("NLL array under a file", "nll --target ncsn2 --data {good.npy} --out {a_file}/x.npy", &["a_file"]),
    ("MCMC output under a file", "mcmc --potential double-well --chains 2 --steps 4 --burn-in 0 --thin 1 --out {a_file}/mc --quiet", &["a_file"]),
    ("experiment under a file", "experiment samplers --n 20 --budgets 10 --repeats 1 --out {a_file}/exp --quiet", &["a_file"]),
    ("missing config", "train --config {nope.toml}", &["nope.toml"]),
    ("unknown config key", "train --config {unknown_key.toml} --out {r1}", &["learning_rate"]),
    ("config value of the wrong type", "train --config {wrong_type.toml} --out {r1}", &["wrong_type.toml"]),
    ("config syntax error", "train --config {syntax.toml} --out {r1}", &["syntax.toml"]),
    ("config unknown process", "train --config {bad_process.toml} --out {r1}", &["warp"]),
    ("config negative beta", "train --config {neg_beta.toml} --out {r1}", &["beta"]),
    ("truncated checkpoint", "sample --run {truncated_run} --steps 3 --out {out.npy}", &["checkpoint.safetensors"]),
    ("garbage checkpoint", "train --out {garbage_run} --resume", &["checkpoint.safetensors"]),
    ("empty checkpoint", "nll --run {empty_run} --data {good.npy}", &["checkpoint.safetensors"]),
    ("checkpoint header of 2^63 bytes", "nll --run {huge_header_run} --data {good.npy}", &["checkpoint.safetensors"]),
    ("checkpoint without metadata", "sample --run {no_meta_run} --steps 3 --out {out.npy}", &["checkpoint.safetensors"]),
    ("checkpoint claiming a giant network", "sample --run {giant_model_run} --steps 3 --out {out.npy}", &["checkpoint.safetensors"]),
];

/// The command line of a case, `{name}` replaced by the fixture's path.
fn expand(f: &Fixture, line: &str) -> Vec<String> {
    line.split_whitespace()
        .map(|w| match (w.find('{'), w.find('}')) {
            (Some(a), Some(b)) if a < b => {
                format!("{}{}{}", &w[..a], f.p(&w[a + 1..b]), &w[b + 1..])
            }
            _ => w.to_string(),
        })
        .collect()
}

#[test]
fn every_command_refuses_bad_input_in_one_line() {
    let f = Fixture::new();
    let cases: Vec<(&str, Vec<String>, &[&str])> = CASES
        .iter()
        .map(|&(what, line, needles)| (what, expand(&f, line), needles))
        .collect();
    let mut failures = Vec::new();
    for (what, args, needles) in &cases {
        let mut args = args.clone();
        if matches!(args[0].as_str(), "train") {
            args.push("--quiet".into());
        }
        match run(&args, Duration::from_secs(60)) {
            Err(e) => failures.push(format!("{what}: {e}")),
            Ok((true, err)) => failures.push(format!("{what}: succeeded ({err})")),
            Ok((false, err)) => {
                let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
                if err.contains("panicked") {
                    failures.push(format!("{what}: panicked: {err}"));
                } else if lines.len() != 1 || !lines[0].starts_with("error") {
                    failures.push(format!("{what}: not one error line: {err}"));
                } else if let Some(n) = needles.iter().find(|n| !lines[0].contains(*n)) {
                    failures.push(format!("{what}: '{n}' not in: {}", lines[0]));
                }
            }
        }
    }
    eprintln!("{} bad inputs tried", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // nothing was written where the input was bad
    assert!(
        !Path::new(&f.p("out.npy")).exists(),
        "no samples from a failed run"
    );
    assert!(
        !Path::new(&f.p("mc")).join("positions.npy").exists(),
        "no draws from a failed MCMC run"
    );
}
