"""tweedie's EGNN training step beside DEM's EGNN_dynamics (PyTorch), same machine, same run.

    python3 bench/egnn.py [--rounds 3] [--cases dw4,lj13] [--threads 2] [--quick] [--python PY]

For each case and round it runs `tweedie bench train-egnn` and `bench/peers/egnn_ref.py train`
once each as fresh processes (alternating who goes first), after waiting (bounded) for an idle
machine. Each process times its own blocks after a warm-up; a round's value is the median of its
blocks; the script prints the median over rounds, [min, max], and the ratio torch / tweedie
(> 1: tweedie is faster), and the same for the processes' CPU seconds per step (all threads:
with 2 threads it counts spinning too; with --threads 1 it is the work itself, the comparison
least disturbed by other programs on a shared machine). Both sides: 2 threads (--threads), f32, DSM step with Adam on DEM's settings
(hidden 128, attention, tanh, recurrent, SiLU), batch 512 (DEM's training batch).
Needs target/release/tweedie (cargo build --release) and the bench environment with torch
(bench/setup.sh, or --python / TORCH_PY).
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from machine import wait_idle  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
TWEEDIE = ROOT / "target" / "release" / "tweedie"
PEER = ROOT / "bench" / "peers" / "egnn_ref.py"
VENV = pathlib.Path(os.environ.get("TWEEDIE_BENCH_VENV", ROOT / "bench" / ".venv"))
TORCH_PY = os.environ.get("TORCH_PY", str(VENV / "bin" / "python"))

# name: (particles, dim, layers, steps per block)
CASES = {"dw4": (4, 2, 3, 20), "lj13": (13, 3, 5, 5)}


def run(cmd, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{out.stderr}")
    line = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = line.get("cpu_seconds_per_step") or [float("nan")]
    return statistics.median(line["seconds_per_step"]), statistics.median(cpu)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default="dw4,lj13")
    ap.add_argument("--quick", action="store_true", help="one round, fewer steps")
    ap.add_argument("--python", default=TORCH_PY)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--idle-wait", type=float, default=60.0,
                    help="seconds to wait at most for an idle machine before each process")
    a = ap.parse_args()
    rounds = 1 if a.quick else a.rounds
    rows = []
    for name in a.cases.split(","):
        particles, dim, layers, steps = CASES[name]
        steps = max(1, steps // 4) if a.quick else steps
        shape = ["--particles", particles, "--dim", dim, "--layers", layers, "--steps", steps,
                 "--repeats", 3]
        torch_shape = [*shape, "--threads", a.threads]
        sides = {"tweedie": [TWEEDIE, "bench", "train-egnn", *shape],
                 "torch": [a.python, PEER, "train", *torch_shape]}
        got = {"tweedie": [], "torch": []}
        cpu = {"tweedie": [], "torch": []}
        for r in range(rounds):
            order = ["tweedie", "torch"] if r % 2 == 0 else ["torch", "tweedie"]
            for side in order:
                waited = wait_idle(a.idle_wait)
                wall, cpu_s = run(sides[side], a.threads)
                got[side].append(wall)
                cpu[side].append(cpu_s)
                print(f"{name} round {r + 1} {side}: {wall * 1e3:.1f} ms/step, CPU {cpu_s * 1e3:.1f} ms"
                      f" (waited {waited:.0f} s for an idle machine)", file=sys.stderr)
        med = {k: statistics.median(v) for k, v in got.items()}
        rows.append((name, particles, dim, layers, med, got, cpu))
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "unknown CPU")
    print(f"{a.threads} thread(s), {cpu}, {rounds} round(s); median [min, max] over rounds")
    print("| case | tweedie ms/step | PyTorch ms/step | ratio | CPU ms/step tweedie / PyTorch | CPU ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, particles, dim, layers, med, got, cpu in rows:
        span = {k: f"[{min(v) * 1e3:.1f}, {max(v) * 1e3:.1f}]" for k, v in got.items()}
        c = {k: statistics.median(v) for k, v in cpu.items()}
        print(f"| {name} ({particles}×{dim}, {layers} layers) | {med['tweedie'] * 1e3:.1f} "
              f"{span['tweedie']} | {med['torch'] * 1e3:.1f} {span['torch']} | "
              f"{med['torch'] / med['tweedie']:.2f} | {c['tweedie'] * 1e3:.1f} / "
              f"{c['torch'] * 1e3:.1f} | {c['torch'] / c['tweedie']:.2f} |")


if __name__ == "__main__":
    main()
