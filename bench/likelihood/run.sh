#!/usr/bin/env bash
# Likelihood speed benchmark: tweedie nll vs the PyTorch reference on the same network and points.
#   bench/likelihood/run.sh RUN [REPEATS]        (RUN: a `tweedie train` folder, default architecture)
# Needs a Python with torch, numpy, scipy (PY, default /tmp/torchenv/bin/python:
#   python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy scipy)
# and the peer's code (TORCH_REF, default /work/shared/peers/torch_ref). DATASET/SDE describe RUN
# for the peer (default gmm40/vp: data scale 50).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:?usage: bench/likelihood/run.sh RUN [REPEATS]}
REPEATS=${2:-7}
PY=${PY:-/tmp/torchenv/bin/python}
DATASET=${DATASET:-gmm40}
SDE=${SDE:-vp}
cargo build --release -q
POINTS=$(mktemp --suffix=.npy)
"$PY" bench/likelihood/testdata.py --data "$DATASET" --n 1000 --seed 999 --out "$POINTS"
"$PY" bench/likelihood/bench.py --run "$RUN" --data "$POINTS" --dataset "$DATASET" --sde "$SDE" \
    --repeats "$REPEATS" ${JSON:+--json "$JSON"}
