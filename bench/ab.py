"""Rotating paired A/B runs of two or more tweedie binaries on one `tweedie bench` case.

    cp target/release/tweedie target/ab-old    # a copy of each build to compare (target/ is ignored)
    ... change, cargo build --release ...
    python3 bench/ab.py target/ab-old target/release/tweedie -- sample --sampler dpmpp_2m --steps 20 \
        --run bench/.work/gmm40_vp [--rounds 12]

Standard library only. Each round runs every binary once as a fresh process, `BIN bench CASE...`,
in an order rotated each round, after waiting (bounded) for an idle machine; each process warms up,
times its own blocks and prints one JSON line (`tweedie bench`: `seconds_per_step` for train,
`seconds` for sample and nll). A process during which other programs used more than 10 % of the
CPUs is rerun (--retries), and the quieter run kept.

Per round and binary the script takes the best block (the least disturbed by the VM's slow spells)
and the median block. The speedup of binary B over the first binary A is, per round,
A's time / B's time (> 1: B is faster); the report gives the median over rounds of those ratios on
the best blocks and on the median blocks, with their [min, max], and each binary's own medians.

--env I:VAR=VALUE sets an environment variable for binary I only (0 = the first), e.g. to run one
binary twice: `ab.py BIN BIN --env 1:TWEEDIE_NO_AVX512=1 -- sample ...`. --threads sets
RAYON_NUM_THREADS (default 2, as the suite).
"""
import argparse
import json
import os
import pathlib
import statistics
import sys

from machine import wait_idle  # bench/machine.py, beside this file
from suite import MAX_FOREIGN, run_process, shown  # bench/suite.py: the same process timing


def times(stdout):
    """Seconds per unit of every timed block, from `tweedie bench`'s JSON line."""
    out = json.loads(stdout.strip().splitlines()[-1])
    secs = out.get("seconds_per_step", out.get("seconds"))
    if not secs:
        raise ValueError(f"no block times in {out}")
    return secs


def spread(v):
    return f"{statistics.median(v):.4g} [{min(v):.4g}, {max(v):.4g}]"


def main():
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    if {"-h", "--help"} & set(argv[:cut]):
        print(__doc__)
        return
    if cut == len(argv):
        raise SystemExit("usage: ab.py BIN_A BIN_B [BIN ...] [options] -- CASE [case args]  (--help: more)")
    case = argv[cut + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bins", nargs="+", help="tweedie binaries; the first is the baseline A")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="RAYON_NUM_THREADS of every run")
    p.add_argument("--env", action="append", default=[], metavar="I:VAR=VALUE",
                   help="an environment variable for binary I only (0-based); repeatable")
    p.add_argument("--idle-wait", type=float, default=20.0, help="max s to wait for idle before a process")
    p.add_argument("--retries", type=int, default=1,
                   help="reruns of a process during which others used > 10%% of the CPUs")
    p.add_argument("--json", help="write every block and command here")
    a = p.parse_args(argv[:cut])
    if len(a.bins) < 2:
        raise SystemExit("ab.py: give at least two binaries (the first is the baseline)")
    if not case:
        raise SystemExit("ab.py: give the case after --, e.g. -- train --batch 512")
    envs = []
    for b in a.bins:
        if not os.access(b, os.X_OK):
            raise SystemExit(f"ab.py: {b} is not an executable file")
        envs.append(dict(os.environ, RAYON_NUM_THREADS=str(a.threads)))
    for spec in a.env:
        try:
            i, kv = spec.split(":", 1)
            k, v = kv.split("=", 1)
            envs[int(i)][k] = v
        except (ValueError, IndexError):
            raise SystemExit(f"ab.py: --env {spec}: expected I:VAR=VALUE with 0 <= I < {len(a.bins)}")
    labels = [" ".join([f"{i}:{shown(b)}", *(s.split(":", 1)[1] for s in a.env if s.split(":", 1)[0] == str(i))])
              for i, b in enumerate(a.bins)]

    runs = []  # one dict per process kept
    n = len(a.bins)
    for r in range(a.rounds):
        order = [(r + k) % n for k in range(n)]
        for i in order:
            cmd = [str(pathlib.Path(a.bins[i]).resolve()), "bench", *case]
            for attempt in range(1 + a.retries):  # rerun a run disturbed by others; keep the quieter
                waited = wait_idle(a.idle_wait, MAX_FOREIGN)
                q = run_process(cmd, envs[i])
                if attempt == 0 or (q["rc"] == 0 and q["foreign_cpu"] < kept["foreign_cpu"]):
                    kept = q
                if kept["rc"] != 0 or kept["foreign_cpu"] <= MAX_FOREIGN:
                    break
            if kept["rc"] != 0:
                raise SystemExit(f"ab.py: {labels[i]} failed (exit {kept['rc']}): {' '.join(map(shown, cmd))}\n"
                                 f"{kept['stderr'][-3000:]}")
            blocks = times(kept["stdout"])
            runs.append(dict(round=r, bin=i, cmd=" ".join(map(shown, cmd)), blocks=blocks,
                             best=min(blocks), median=statistics.median(blocks),
                             foreign_cpu=kept["foreign_cpu"], waited_s=round(waited, 1)))
            print(f"round {r} {labels[i]}: best {min(blocks):.5g} s, median {statistics.median(blocks):.5g} s, "
                  f"foreign CPU {kept['foreign_cpu']:.2f}", flush=True)

    def of(i, key):
        return [x[key] for x in runs if x["bin"] == i]

    print(f"\n`tweedie bench {' '.join(case)}`, {a.rounds} rounds, RAYON_NUM_THREADS={a.threads}; "
          f"time per unit (s), median [min, max] over rounds:")
    for i in range(n):
        print(f"  {labels[i]}: best block {spread(of(i, 'best'))}, median block {spread(of(i, 'median'))}")
    print(f"speedup over {labels[0]} (per-round ratio A / B, median [min, max] over rounds; > 1: faster):")
    summary = []
    for i in range(1, n):
        rb = [x / y for x, y in zip(of(0, "best"), of(i, "best"))]
        rm = [x / y for x, y in zip(of(0, "median"), of(i, "median"))]
        summary.append(dict(bin=labels[i], best_block=statistics.median(rb), median_block=statistics.median(rm),
                            best_block_ratios=rb, median_block_ratios=rm))
        print(f"  {labels[i]}: best block {statistics.median(rb):.3f}x [{min(rb):.3f}, {max(rb):.3f}], "
              f"median block {statistics.median(rm):.3f}x [{min(rm):.3f}, {max(rm):.3f}]")
    disturbed = sum(x["foreign_cpu"] > MAX_FOREIGN for x in runs)
    if disturbed:
        print(f"note: {disturbed} of {len(runs)} kept runs had foreign CPU > {MAX_FOREIGN:g}")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(
            {"case": case, "bins": labels, "rounds": a.rounds, "threads": a.threads, "runs": runs,
             "speedup": summary}, indent=1))


if __name__ == "__main__":
    main()
