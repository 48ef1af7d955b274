"""Side-by-side CPU benchmark suite: tweedie against the PyTorch and JAX references.

    bench/setup.sh        # once: the peers' Python environment in bench/.venv
    python3 bench/suite.py [--rounds 3] [--cases train_b512,...] [--work bench/.work]
                           [--out bench/results] [--quick] [--no-scaling] [--python PY]

Standard library only (the peers run in the environment bench/setup.sh makes). Sets up a gmm40/VP
run (trained by tweedie, converted for the torch peer) and test points in --work, measures the
machine's f32 peak (`tweedie bench peak`), then for each case and round runs every implementation
once as a fresh process (rotating who goes first), after waiting (bounded) for an idle machine.
Each process times its own blocks after a warm-up; a round's value is the median of its blocks;
the suite reports the median over rounds and [min, max].
Ratio = (faster of the peers' medians) / tweedie's median: > 1 means tweedie is faster.
Writes OUT/suite.json (every number and command) and OUT/suite.md (tables for BENCHMARKS.md).
"""
import argparse
import ast
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

from machine import cpu_jiffies, wait_idle  # bench/machine.py, beside this file

ROOT = pathlib.Path(__file__).resolve().parents[1]
TWEEDIE = str(ROOT / "target" / "release" / "tweedie")
# The peers' code (torch_ref, jax_ref): ../shared/peers beside the repository, or TWEEDIE_PEERS.
DEFAULT_PEERS = ROOT.parent / "shared" / "peers"
PEERS = pathlib.Path(os.environ.get("TWEEDIE_PEERS", DEFAULT_PEERS)).resolve()
# The Python environment of bench/setup.sh (torch, numpy, scipy, jax, optax), or TWEEDIE_BENCH_VENV;
# TORCH_PY / JAX_PY (or --python) name another interpreter for one side or both.
VENV = pathlib.Path(os.environ.get("TWEEDIE_BENCH_VENV", ROOT / "bench" / ".venv")).resolve()
TORCH_PY = os.environ.get("TORCH_PY", str(VENV / "bin" / "python"))
JAX_PY = os.environ.get("JAX_PY", TORCH_PY)
TORCH_CASES = str(ROOT / "bench" / "peers" / "torch_cases.py")
MALA_REF = str(ROOT / "bench" / "peers" / "mala_ref.py")
UNET_REF = str(ROOT / "bench" / "peers" / "unet_ref.py")
JAX_DSM = str(PEERS / "jax_ref" / "bench_dsm.py")
MAX_FOREIGN = 0.10  # share of all CPUs others may use: the idle test, and a run flagged "!" above it

# name: (issue case, target ratio, kind, args, quick overrides, implementations)
CASES = {
    "train_b512": (1, 2.0, "train", dict(batch=512, width=128, objective="dsm", steps=200, repeats=3),
                   dict(steps=30), ["tweedie", "torch", "jax"]),
    "train_b4096": (2, 1.3, "train", dict(batch=4096, width=256, objective="dsm", steps=20, repeats=3),
                    dict(steps=3), ["tweedie", "torch", "jax"]),
    "sample_em": (3, 3.0, "sample", dict(sampler="em", steps=1000, n=10000, repeats=1),
                  dict(steps=100, n=2000), ["tweedie", "torch"]),
    "sample_dpm": (3, 3.0, "sample", dict(sampler="dpmpp_2m", steps=20, n=10000, repeats=5),
                   dict(n=2000), ["tweedie", "torch"]),
    "nll": (4, 3.0, "nll", dict(repeats=2), dict(), ["tweedie", "torch"]),
    "train_ssm": (5, 2.0, "train", dict(batch=512, width=128, objective="ssm", steps=50, repeats=3),
                  dict(steps=10), ["tweedie", "torch"]),
    "train_ism": (5, 2.0, "train", dict(batch=512, width=128, objective="ism", steps=50, repeats=3),
                  dict(steps=10), ["tweedie", "torch"]),
    # MALA of 1000 chains from the reference data, f64 on both sides, the step size adaptation
    # reaches (the acceptance rates must agree: the same chain)
    "mala_dw4": (20, 3.0, "mala", dict(potential="dw4", chains=1000, steps=200, step_size=0.02,
                                       init="data/dw4/val_split_DW4.npy", repeats=3),
                 dict(steps=50), ["tweedie", "torch"]),
    "mala_lj13": (20, 3.0, "mala", dict(potential="lj13", chains=1000, steps=100, step_size=6e-4,
                                        init="data/lj13/val_split_LJ13-1000.npy", repeats=3),
                  dict(steps=20), ["tweedie", "torch"]),
    # the tiny U-Net of configs/mnist-tiny.toml, batch 32: a DSM step (Adam, clipping, EMA) and one
    # sampling NFE (a class-conditional forward pass); torch = diffusers' UNet2DModel as close as it
    # allows, torch_same = tweedie's wiring from diffusers' blocks (bench/peers/unet_ref.py)
    "unet_train": (21, 1.5, "unet_train", dict(batch=32, steps=5, repeats=3), dict(steps=2),
                   ["tweedie", "torch", "torch_same"]),
    "unet_sample": (21, 1.5, "unet_sample", dict(batch=32, nfe=10, repeats=3), dict(nfe=3),
                    ["tweedie", "torch", "torch_same"]),
}
NEEDS_SETUP = ("sample", "nll")  # the kinds that use the trained gmm40 run


def run_process(cmd, env=None, timeout=3600):
    """Runs cmd -> dict(rc, stdout, stderr, wall_s, foreign_cpu, rss_kib, cpu_s).

    foreign_cpu: share of all CPUs used by other processes meanwhile; rss_kib: the child's peak RSS
    (ru_maxrss from wait4)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        b0, _ = cpu_jiffies()
        w0 = time.perf_counter()
        try:
            p = subprocess.Popen([str(c) for c in cmd], env=env, stdout=out, stderr=err, text=True)
        except OSError as e:  # e.g. a missing interpreter
            return dict(rc=127, stdout="", stderr=str(e), wall_s=0.0, foreign_cpu=0.0, rss_kib=0,
                        cpu_s=0.0)
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - w0 > timeout:
                p.kill()
                _, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.02)
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        wall = time.perf_counter() - w0
        b1, _ = cpu_jiffies()
        out.seek(0)
        err.seek(0)
        child_cpu = ru.ru_utime + ru.ru_stime
        busy = (b1 - b0) / os.sysconf("SC_CLK_TCK")
        foreign = max(0.0, busy - child_cpu) / (wall * os.cpu_count())
        return dict(rc=p.returncode, stdout=out.read(), stderr=err.read(), wall_s=round(wall, 3),
                    foreign_cpu=round(foreign, 3), rss_kib=ru.ru_maxrss, cpu_s=round(child_cpu, 3))


def shown(arg):
    """An argument as the records show it: a path inside the repository relative to its root, one
    inside the peers' folder as ../shared/peers/... (or $TWEEDIE_PEERS/... where that is set)."""
    s = str(arg)
    if not os.path.isabs(s):
        return s
    for base, name in ((PEERS, None), (ROOT, ".")):
        try:
            rel = pathlib.Path(s).relative_to(base)
        except ValueError:
            continue
        if name is None:
            default = PEERS == DEFAULT_PEERS.resolve()
            name = os.path.relpath(DEFAULT_PEERS, ROOT) if default else "$TWEEDIE_PEERS"
        return str(pathlib.Path(name) / rel) if str(rel) != "." else name
    return s


def command(impl, kind, a, w, threads):
    """(argv, env) of one implementation of one case with `threads` threads."""
    env = dict(os.environ)
    train = ["--batch", a.get("batch"), "--width", a.get("width"), "--objective", a.get("objective"),
             "--steps", a.get("steps")]
    mala = ["--potential", a.get("potential"), "--chains", a.get("chains"), "--steps", a.get("steps"),
            "--step-size", a.get("step_size"), "--init", ROOT / str(a.get("init"))]
    if kind.startswith("unet_"):
        per = ["--steps", a["steps"]] if kind == "unet_train" else ["--nfe", a["nfe"]]
        if impl == "tweedie":
            env["RAYON_NUM_THREADS"] = str(threads)
            cmd = [TWEEDIE, "bench", kind.replace("_", "-"), "--batch", a["batch"], *per]
        else:
            arch = "same" if impl == "torch_same" else "unet2d"
            cmd = [TORCH_PY, UNET_REF, kind[5:], "--arch", arch, "--threads", threads, "--batch",
                   a["batch"], *per]
        return [str(c) for c in cmd] + ["--repeats", str(a["repeats"])], env
    if kind == "mala" and impl == "torch":
        return [str(c) for c in [TORCH_PY, MALA_REF, *mala, "--threads", threads,
                                 "--repeats", a["repeats"]]], env
    if impl == "tweedie":
        env["RAYON_NUM_THREADS"] = str(threads)
        cmd = [TWEEDIE, "bench", kind]
        if kind == "train":
            cmd += train
        elif kind == "mala":
            cmd += mala
        elif kind == "sample":
            cmd += ["--run", w["run"], "--sampler", a["sampler"], "--steps", a["steps"], "--n", a["n"]]
        else:
            cmd += ["--run", w["run"], "--data", w["points"]]
    elif impl == "torch":
        cmd = [TORCH_PY, TORCH_CASES, kind, "--threads", threads]
        if kind == "train":
            cmd += train
        elif kind == "sample":
            cmd += ["--ckpt", w["ckpt"], "--sampler", a["sampler"], "--steps", a["steps"], "--n", a["n"]]
        else:
            cmd += ["--ckpt", w["ckpt"], "--data", w["points"]]
    else:  # jax: DSM training only, default threads
        cmd = [JAX_PY, JAX_DSM, "--batch", a["batch"], "--width", a["width"], "--steps", a["steps"]]
    return [str(c) for c in cmd] + ["--repeats", str(a["repeats"])], env


def parse(impl, stdout):
    """-> (block seconds per unit, the parsed JSON or {'line': ...})."""
    if impl == "jax":
        line = stdout.strip().splitlines()[-1]
        rates = ast.literal_eval(re.search(r"all=(\[.*\])", line).group(1))
        return [1.0 / r for r in rates], {"line": line, "jax": line.split()[1]}
    out = json.loads(stdout.strip().splitlines()[-1])
    return out.get("seconds_per_step", out.get("seconds")), out


def setup(work, quick):
    """Trains and converts the gmm40/VP run and writes test points, skipping what exists."""
    steps = 2000 if quick else 20000
    run, ckpt, points = work / "gmm40_vp", work / "gmm40_vp.pt", work / "gmm40_test.npy"
    work.mkdir(parents=True, exist_ok=True)
    steps_ = [
        (run / "checkpoint.safetensors", [TWEEDIE, "train", "--data", "gmm40", "--data-scale", "50",
                                          "--process", "vp", "--steps", steps, "--quiet", "--out", run]),
        (ckpt, [TORCH_PY, ROOT / "bench/likelihood/convert.py", run / "checkpoint.safetensors", ckpt,
                "--dataset", "gmm40", "--sde", "vp"]),
        (points, [TORCH_PY, ROOT / "bench/likelihood/testdata.py", "--data", "gmm40", "--n", "1000",
                  "--seed", "999", "--out", points]),
    ]
    for target, cmd in steps_:
        if target.exists():
            print(f"setup: {target} exists, skipped")
            continue
        print("setup:", " ".join(map(shown, cmd)), flush=True)
        subprocess.run([str(c) for c in cmd], check=True)
    return {"run": run, "ckpt": ckpt, "points": points}


def stats(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v)} if v else None


def run_case(name, rounds, w, quick, scaling, impls, idle_s, retries):
    issue, target, kind, args, quick_args, _ = CASES[name]
    a = dict(args, **(quick_args if quick else {}))
    res = {"issue": issue, "target": target, "kind": kind, "args": a, "runs": [], "failed": []}
    order = list(impls)
    for r in range(rounds):
        k = r % len(order)
        jobs = [(i, 2) for i in order[k:] + order[:k]]
        if scaling:
            jobs += [(i, 1) for i in ("tweedie", "torch") if i in impls]
        for impl, threads in jobs:
            if impl in res["failed"]:
                continue
            cmd, env = command(impl, kind, a, w, threads)
            for attempt in range(1 + retries):  # rerun a run disturbed by others; keep the quieter
                waited = wait_idle(idle_s, MAX_FOREIGN)
                q = run_process(cmd, env)
                if attempt == 0 or (q["rc"] == 0 and q["foreign_cpu"] < p["foreign_cpu"]):
                    p = q
                if p["rc"] != 0 or p["foreign_cpu"] <= MAX_FOREIGN:
                    break
                if attempt < retries:
                    print(f"  {name} {impl} {threads} thr: foreign CPU {q['foreign_cpu']:.2f}, rerun",
                          flush=True)
            rec = dict(round=r, impl=impl, threads=threads, cmd=" ".join(map(shown, cmd)),
                       waited_s=round(waited, 1),
                       **{k_: p[k_] for k_ in ("rc", "wall_s", "foreign_cpu", "rss_kib", "cpu_s")})
            try:
                if p["rc"] != 0:
                    raise RuntimeError(f"exit status {p['rc']}")
                rec["blocks"], rec["output"] = parse(impl, p["stdout"])
                rec["value"] = statistics.median(rec["blocks"])
            except Exception as e:  # noqa: BLE001  report and go on with the others
                print(f"  FAILED {name} {impl} ({e}): {' '.join(map(shown, cmd))}\n{p['stderr'][-3000:]}"
                      f"{p['stdout'][-500:]}", file=sys.stderr, flush=True)
                rec["error"], rec["stderr"] = str(e), p["stderr"][-3000:]
                res["failed"].append(impl)
            res["runs"].append(rec)
            if "value" in rec:
                print(f"  {name} round {r} {impl:7s} {threads} thr: {rec['value']:.6g} s, "
                      f"RSS {p['rss_kib'] / 1024:.0f} MiB, foreign CPU {p['foreign_cpu']:.2f}, "
                      f"waited {waited:.0f} s", flush=True)
    summarise(res, impls)
    return res


def summarise(res, impls):
    def values(impl, threads):
        return [x["value"] for x in res["runs"] if x["impl"] == impl and x["threads"] == threads
                and "value" in x]
    s = res["summary"] = {}
    for impl in impls:
        v2, v1 = values(impl, 2), values(impl, 1)
        if not v2:
            continue
        runs = [x for x in res["runs"] if x["impl"] == impl and x["threads"] == 2 and "value" in x]
        s[impl] = {"seconds": stats(v2), "rss_mib": max(x["rss_kib"] for x in runs) / 1024,
                   "foreign_cpu_max": max(x["foreign_cpu"] for x in runs)}
        if v1:
            s[impl]["seconds_1thread"] = stats(v1)
            s[impl]["speedup_1to2"] = statistics.median(v1) / statistics.median(v2)
        if res["kind"] == "train" and res["args"]["objective"] == "dsm":  # jax reports no flops
            res["flops"] = res.get("flops") or runs[0]["output"].get("flops_per_step")
            res["product_flops"] = res["flops"]
        if res["kind"] == "sample" and impl == "tweedie":  # the count of the peers' network too
            res["flops"], res["product_flops"] = (runs[0]["output"].get(k) for k in ("flops", "product_flops"))
    peers = [s[i]["seconds"]["median"] for i in s if i != "tweedie"]
    if "tweedie" in s and peers:
        res["ratio"] = min(peers) / s["tweedie"]["seconds"]["median"]
        res["verdict"] = "PASS" if res["ratio"] >= res["target"] else "MISS"
    else:
        res["ratio"], res["verdict"] = None, "FAILED"
    if res["failed"]:
        res["verdict"] = "FAILED (" + ", ".join(res["failed"]) + ")"
    if res.get("flops"):
        for impl in s:
            s[impl]["gflops"] = res["flops"] / s[impl]["seconds"]["median"] / 1e9


def foreign_flag(x):
    return f"{x:.2f}" + (" !" if x > MAX_FOREIGN else "")


def fmt_time(st, kind):
    if st is None:
        return "-"
    scale, unit = (1e3, "ms") if kind in ("train", "mala", "unet_train", "unet_sample") else (1.0, "s")
    return f"{st['median'] * scale:.3g} [{st['min'] * scale:.3g}, {st['max'] * scale:.3g}] {unit}"


def tables(results, impls, peak):
    head1 = ["case", "issue", "unit", *impls, "ratio", "target", "result"]
    head2 = ["case", *[f"GFLOP/s {i}" for i in impls], "tweedie % peak", "ratio at peak",
             *[f"RSS MiB {i}" for i in impls], "1→2 thr tweedie", "1→2 thr torch", "foreign CPU max"]
    rows1, rows2 = [], []
    for name, r in results.items():
        s = r.get("summary", {})
        unit = {"train": "per step", "sample": f"per {r['args'].get('n')} samples",
                "nll": "per 1000 points", "mala": f"per step of {r['args'].get('chains')} chains",
                "unet_train": f"per step of {r['args'].get('batch')}",
                "unet_sample": f"per NFE of {r['args'].get('batch')}"}[r["kind"]]
        rows1.append([name, str(r["issue"]), unit,
                      *[fmt_time(s[i]["seconds"], r["kind"]) if i in s else "-" for i in impls],
                      f"{r['ratio']:.2f}x" if r.get("ratio") else "-", f"{r['target']:g}x", r["verdict"]])
        g = {i: s[i].get("gflops") for i in s}
        tw_pct = f"{100 * g['tweedie'] / peak:.1f} %" if g.get("tweedie") and peak else "-"
        peers = [s[i]["seconds"]["median"] for i in s if i != "tweedie"]
        if r.get("product_flops") and peak and peers:  # the ratio if tweedie's products ran at peak
            r["ratio_at_peak"] = min(peers) / (r["product_flops"] / (peak * 1e9))
        ceiling = f"{r['ratio_at_peak']:.2f}x" if r.get("ratio_at_peak") else "-"
        rows2.append([name, *[f"{g[i]:.1f}" if g.get(i) else "-" for i in impls], tw_pct, ceiling,
                      *[f"{s[i]['rss_mib']:.0f}" if i in s else "-" for i in impls],
                      *[f"{s[i]['speedup_1to2']:.2f}x" if "speedup_1to2" in s.get(i, {}) else "-"
                        for i in ("tweedie", "torch")],
                      foreign_flag(max((v['foreign_cpu_max'] for v in s.values()), default=0))])
    return (head1, rows1), (head2, rows2)


def text_table(head, rows):
    w = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda r: "  ".join(x.ljust(n) for x, n in zip(r, w))  # noqa: E731
    return "\n".join([line(head), "  ".join("-" * n for n in w), *map(line, rows)])


def md_table(head, rows):
    return "\n".join(["| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *rows]])


def measure_peak(best, idle_wait, retries, notes):
    """`tweedie bench peak`, kept if it beats `best` (a busy or throttled machine reads low)."""
    for _ in range(1 + retries):
        wait_idle(idle_wait, MAX_FOREIGN)
        pk = run_process([TWEEDIE, "bench", "peak", "--repeats", "1"])
        if pk["rc"] == 0 and json.loads(pk["stdout"])["gflops"] > best.get("gflops", 0):
            best = dict(json.loads(pk["stdout"]), foreign_cpu=pk["foreign_cpu"])
        elif pk["rc"] != 0:
            notes.append("peak measurement failed: " + pk["stderr"][-500:])
        if best.get("foreign_cpu", 1) <= MAX_FOREIGN:
            break
    return best


def machine_info():
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {"nproc": os.cpu_count(), "cpu_model": model, "git": git.stdout.strip(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "python": sys.version.split()[0]}


def python_has(py, *modules):
    """Whether the interpreter py runs and imports every one of modules."""
    try:
        return subprocess.run([py, "-c", "import " + ", ".join(modules)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=300).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def preflight(names):
    """Stops with what to do when the binary, the torch environment or the peers are missing."""
    problems = []
    if not os.access(TWEEDIE, os.X_OK):
        problems.append(f"{shown(TWEEDIE)} not found: build it with `cargo build --release`")
    if not os.access(TORCH_PY, os.X_OK):
        problems.append(f"no Python at {shown(TORCH_PY)}: run bench/setup.sh to make the peers' "
                        "environment (bench/.venv), or name one with --python or TORCH_PY")
    elif not python_has(TORCH_PY, "torch", "numpy", "scipy"):
        problems.append(f"{shown(TORCH_PY)} cannot import torch, numpy and scipy: rerun bench/setup.sh, "
                        "or name another interpreter with --python or TORCH_PY")
    if not (PEERS / "torch_ref").is_dir():
        problems.append(f"the peers are not at {PEERS} (expected ../shared/peers beside the "
                        "repository): set TWEEDIE_PEERS to the folder holding torch_ref/ and jax_ref/")
    if any(CASES[c][2].startswith("unet_") for c in names) and not python_has(TORCH_PY, "diffusers"):
        problems.append(f"{shown(TORCH_PY)} cannot import diffusers (the U-Net cases' peer): rerun "
                        "bench/setup.sh")
    if problems:
        raise SystemExit("bench/suite.py cannot run:\n" + "\n".join("  - " + p for p in problems))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--work", default=str(ROOT / "bench" / ".work"),
                   help="setup files (the trained run, its torch copy, test points); default bench/.work")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--quick", action="store_true", help="small blocks and a 2000-step run (in WORK/quick)")
    p.add_argument("--no-scaling", action="store_true", help="skip the 1-thread runs")
    p.add_argument("--idle-wait", type=float, default=20.0, help="max s to wait for idle before a process")
    p.add_argument("--retries", type=int, default=1,
                   help="reruns of a process during which others used > 10%% of the CPUs")
    p.add_argument("--python", help="the peers' interpreter, torch and jax alike (default: TORCH_PY / "
                   "JAX_PY, else bench/.venv/bin/python from bench/setup.sh)")
    a = p.parse_args()
    global TORCH_PY, JAX_PY
    if a.python:
        TORCH_PY = JAX_PY = a.python
    names = [c for c in a.cases.split(",") if c]
    for c in names:
        if c not in CASES:
            raise SystemExit(f"unknown case {c}; known: {', '.join(CASES)}")
    preflight(names)
    notes = []
    jax_ok = python_has(JAX_PY, "jax", "optax") and os.path.isfile(JAX_DSM)
    if not jax_ok:
        notes.append(f"jax skipped: {shown(JAX_PY)} cannot import jax and optax, or {shown(JAX_DSM)} "
                     f"is missing (bench/setup.sh installs jax unless given --no-jax)")
        print("note:", notes[-1], file=sys.stderr)
    work = pathlib.Path(a.work) / ("quick" if a.quick else "")
    try:
        w = setup(work, a.quick) if any(CASES[c][2] in NEEDS_SETUP for c in names) else {}
    except (subprocess.CalledProcessError, OSError) as e:  # the training cases can still run
        w = None
        notes.append(f"setup failed ({e}); sample and nll cases skipped")
        print("setup FAILED:", e, file=sys.stderr)
    info = machine_info()
    peak = measure_peak({}, a.idle_wait, a.retries, notes)
    print(f"{info['cpu_model']}, {info['nproc']} CPUs; f32 peak {peak.get('gflops', 0):.1f} GFLOP/s "
          f"(1 thread {peak.get('gflops_one_thread', 0):.1f}; foreign CPU {peak.get('foreign_cpu', 1):.2f})",
          flush=True)
    results = {}
    for name in names:
        impls = [i for i in CASES[name][5] if i != "jax" or jax_ok]
        print(f"case {name} ({', '.join(impls)})", flush=True)
        if w is None and CASES[name][2] in NEEDS_SETUP:
            results[name] = {"issue": CASES[name][0], "target": CASES[name][1], "kind": CASES[name][2],
                             "args": CASES[name][3], "runs": [], "failed": ["setup"]}
            summarise(results[name], [])
            continue
        results[name] = run_case(name, a.rounds, w, a.quick, not a.no_scaling, impls, a.idle_wait,
                                  a.retries)
    peak = measure_peak(peak, a.idle_wait, a.retries, notes)  # the machine drifts: the better end
    for x in (r["output"] for res in results.values() for r in res["runs"] if "output" in r):
        for key in ("torch", "jax", "engine"):
            if key in x:
                info.setdefault(key + "_version" if key != "engine" else "tweedie_engines", set()).add(x[key])
    info = {k: sorted(v) if isinstance(v, set) else v for k, v in info.items()}
    impls = [i for i in ("tweedie", "torch", "torch_same", "jax") if any(i in r.get("summary", {}) for r in results.values())]
    t1, t2 = tables(results, impls, peak.get("gflops"))
    defs = (f"Times: median over {a.rounds} round(s) of each process's median timed block (after its "
            f"warm-up), [min, max] over rounds; each implementation a fresh process per round, order "
            f"rotated, 2 threads (jax: its default). Ratio = (faster of the peers' medians) / tweedie's median (> 1: tweedie "
            f"faster). GFLOP/s = nominal FLOPs / median time, the same count for every program: 6 x batch x "
            f"params per DSM step, 2 x params per row per NFE for sampling; peak = the "
            f"better of `tweedie bench peak` before and after the cases, all-thread {peak.get('isa', 'avx2').upper().replace('AVX512', 'AVX-512')} f32 FMA ({peak.get('gflops', 0):.1f} GFLOP/s, "
            f"foreign CPU {foreign_flag(peak.get('foreign_cpu', 1))}). Ratio at peak = the faster peer's "
            f"median / the time tweedie's matrix products alone would take at that peak (sampling: layer 0 "
            f"over x only, its time features folded into the bias; training: the nominal count): the "
            f"ratio no kernel on this machine can beat. "
            f"RSS = peak resident set of the process (ru_maxrss). 1→2 thr = 1-thread median / 2-thread "
            f"median. Foreign CPU = max share of all CPUs used by other processes during a kept run (! > "
            f"{MAX_FOREIGN:g}: disturbed; such runs are rerun {a.retries} time(s), the quieter kept). "
            f"Machine: {info['cpu_model']}, {info['nproc']} CPUs; torch {', '.join(info.get('torch_version', [])) or '-'}"
            f"; jax {', '.join(info.get('jax_version', [])) or '-'}; git {info['git']}"
            f"{'; --quick' if a.quick else ''}.")
    print("\n" + text_table(*t1) + "\n\n" + text_table(*t2) + "\n\n" + defs)
    for n in notes:
        print("note:", n)
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.json").write_text(json.dumps(
        {"machine": info, "peak": peak, "notes": notes,
         "args": {k: shown(v) if isinstance(v, str) else v for k, v in vars(a).items()},
         "setup": {k: shown(v) for k, v in (w or {}).items()}, "cases": results},
        indent=1, default=str))
    (out / "suite.md").write_text(md_table(*t1) + "\n\n" + md_table(*t2) + "\n\n" + defs + "\n"
                                  + "".join(f"\nNote: {n}\n" for n in notes))
    print(f"wrote {out / 'suite.json'} and {out / 'suite.md'}")


if __name__ == "__main__":
    main()
