"""Likelihood speed, tweedie vs the PyTorch reference, on the same network and the same points.

    python bench.py --run RUN --data points.npy [--repeats 7] [--tweedie target/release/tweedie]

Converts RUN's EMA weights to the peer's format (convert.py), then runs, rotating which goes
first, `tweedie nll --run RUN --data points.npy` (Dopri5, rtol = atol = 1e-5, exact divergence by
d forward-mode tangents; by default chunks of 512 points solved side by side), the same with
`--chunk 0` (all points one state, as the peer) and the peer's likelihood.py solve (torch_nll.py:
scipy RK45, the same tolerances, exact divergence by d VJPs, 2 torch threads), each in a fresh
process. The time compared is each
program's own wall time of the solve (both exclude start-up and loading; process wall times are
printed beside). Before each run it waits (bounded) until other processes use < 10 % of the CPUs
and records the share they used meanwhile (the machine is shared). Prints medians, ranges and the
ratio torch / tweedie, and checks that both give the same log-likelihoods.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from machine import cpu_jiffies, wait_idle  # noqa: E402  bench/machine.py


def children_cpu_s():
    t = os.times()
    return t.children_user + t.children_system


def timed_process(cmd, env=None):
    """Runs cmd; returns (process wall s, share of all CPUs used by other processes meanwhile)."""
    b0, _ = cpu_jiffies()
    c0, w0 = children_cpu_s(), time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{done.stderr}")
    wall = time.perf_counter() - w0
    b1, _ = cpu_jiffies()
    busy = (b1 - b0) / os.sysconf("SC_CLK_TCK")
    foreign = max(0.0, busy - (children_cpu_s() - c0)) / (wall * os.cpu_count())
    return wall, foreign


def summary(v):
    return f"median {statistics.median(v):.3f} s (min {min(v):.3f}, max {max(v):.3f})"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run", required=True, help="tweedie run folder (default architecture)")
    p.add_argument("--data", required=True, help="points [n, 2] .npy, data coordinates")
    p.add_argument("--dataset", default="gmm40", help="peer dataset name of the run (data scale)")
    p.add_argument("--sde", default="vp", choices=["vp", "ve"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--tweedie", default=str(ROOT / "target" / "release" / "tweedie"))
    p.add_argument("--idle-budget", type=float, default=300.0, help="total s to wait for idleness")
    p.add_argument("--json", default=None, help="write all numbers here")
    a = p.parse_args()

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tweedie-nll-bench-"))
    ckpt = tmp / "peer.pt"
    py = sys.executable
    subprocess.run([py, HERE / "convert.py", pathlib.Path(a.run) / "checkpoint.safetensors", ckpt,
                    "--dataset", a.dataset, "--sde", a.sde], check=True)
    def tweedie(name, *extra):
        return lambda r: [a.tweedie, "nll", "--run", a.run, "--data", a.data, *extra,
                          "--json", tmp / f"{name}{r}.json", "--out", tmp / f"{name}_logp.npy"]

    cmds = {
        "tweedie": tweedie("tweedie"),  # default: chunks of 512 points side by side
        "tweedie-joint": tweedie("tweedie-joint", "--chunk", "0"),  # one state, as the peer
        "torch": lambda r: [py, HERE / "torch_nll.py", "--ckpt", ckpt, "--data", a.data,
                            "--json", tmp / f"torch{r}.json", "--logp", tmp / "torch_logp.npy"],
    }
    res = {k: {"solve_s": [], "process_s": [], "foreign_cpu": [], "nfe": [], "nll": []} for k in cmds}
    budget = a.idle_budget
    names = list(cmds)
    for r in range(a.repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            budget -= wait_idle(budget, window_s=2.0)
            wall, foreign = timed_process(cmds[name](r))
            out = json.loads((tmp / f"{name}{r}.json").read_text())
            for key, val in [("solve_s", out["seconds"]), ("process_s", wall),
                             ("foreign_cpu", round(foreign, 3)), ("nfe", out["nfe"]),
                             ("nll", out["nll_mean"])]:
                res[name][key].append(val)
            print(f"repeat {r} {name:7s} solve {out['seconds']:.3f} s, process {wall:.3f} s, "
                  f"NFE {out['nfe']}, NLL {out['nll_mean']:.4f}, foreign CPU {foreign:.2f}",
                  flush=True)
    lp_p = np.load(tmp / "torch_logp.npy")
    print()
    for name in ("tweedie", "tweedie-joint"):
        diff = np.abs(np.load(tmp / f"{name}_logp.npy").astype(np.float64) - lp_p)
        res[name]["logp_abs_diff_vs_torch"] = [float(diff.mean()), float(diff.max())]
        print(f"{len(lp_p)} points; per-point |log p_{name} - log p_torch|: mean {diff.mean():.2e}, "
              f"max {diff.max():.2e} nats")
    for name, r in res.items():
        print(f"{name:13s} solve {summary(r['solve_s'])}; process {summary(r['process_s'])}; "
              f"NFE {r['nfe'][0]}; NLL {r['nll'][0]:.4f}; foreign CPU max {max(r['foreign_cpu']):.2f}")
    torch_med = statistics.median(res["torch"]["solve_s"])
    for name in ("tweedie", "tweedie-joint"):
        med = statistics.median(res[name]["solve_s"])
        per_nfe = (torch_med / res["torch"]["nfe"][0]) / (med / res[name]["nfe"][0])
        pairs = [t / w for t, w in zip(res["torch"]["solve_s"], res[name]["solve_s"])]
        res[name]["ratio_torch_over_this"] = {"median_solve": torch_med / med, "per_nfe": per_nfe,
                                              "per_repeat": pairs}
        print(f"ratio torch/{name} (medians of solve time): {torch_med / med:.2f}x; per NFE "
              f"{per_nfe:.2f}x; per repeat: min {min(pairs):.2f}x, median "
              f"{statistics.median(pairs):.2f}x, max {max(pairs):.2f}x")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
