#!/usr/bin/env bash
# Likelihood speed benchmark: tweedie nll vs the PyTorch reference on the same network and points.
#   bench/likelihood/run.sh RUN [REPEATS]        (RUN: a `tweedie train` folder, default architecture)
# Needs a Python with torch, numpy, scipy (PY, default the environment of bench/setup.sh,
# ${TWEEDIE_BENCH_VENV:-bench/.venv}/bin/python) and the peer's code (../shared/peers/torch_ref beside
# the repository; TWEEDIE_PEERS names the peers' folder, TORCH_REF torch_ref itself). DATASET/SDE
# describe RUN for the peer (default gmm40/vp: data scale 50).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:?usage: bench/likelihood/run.sh RUN [REPEATS]}
REPEATS=${2:-7}
PY=${PY:-${TWEEDIE_BENCH_VENV:-bench/.venv}/bin/python}
[ -x "$PY" ] || { echo "bench/likelihood/run.sh: no Python at $PY: run bench/setup.sh (or set PY)" >&2; exit 1; }
DATASET=${DATASET:-gmm40}
SDE=${SDE:-vp}
cargo build --release -q
POINTS=$(mktemp --suffix=.npy)
"$PY" bench/likelihood/testdata.py --data "$DATASET" --n 1000 --seed 999 --out "$POINTS"
"$PY" bench/likelihood/bench.py --run "$RUN" --data "$POINTS" --dataset "$DATASET" --sde "$SDE" \
    --repeats "$REPEATS" ${JSON:+--json "$JSON"}
