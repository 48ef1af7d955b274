#!/usr/bin/env bash
# Trained-model NLLs of docs/experiments/likelihood.md: five 20k-step runs, then `tweedie nll` on
# 1000 fresh test points each, with the paired gap to the true NLL.
#   bench/likelihood/experiment.sh DIR            # train into DIR/runs, evaluate (~20 min on 2 cores)
#   EVAL_ONLY=1 bench/likelihood/experiment.sh DIR  # evaluate existing DIR/runs
# Training uses one candle thread (RAYON_NUM_THREADS=1): on a machine shared with other jobs,
# candle's spinning two-thread pools ran at 13 steps/s instead of ~100.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:?usage: bench/likelihood/experiment.sh DIR}
PY=${PY:-${TWEEDIE_BENCH_VENV:-bench/.venv}/bin/python}  # numpy: the environment of bench/setup.sh
[ -x "$PY" ] || { echo "bench/likelihood/experiment.sh: no Python at $PY: run bench/setup.sh (or set PY)" >&2; exit 1; }
W=target/release/tweedie
mkdir -p "$DIR/runs"
cargo build --release -q
# the page's settings (the peer's network and the defaults of 2026-11-26: bench/likelihood/peer.toml)
common=(--config bench/likelihood/peer.toml --quiet)
train() {  # name, flags...
    local name=$1; shift
    [ -n "${EVAL_ONLY:-}" ] && return
    RAYON_NUM_THREADS=1 nice -n 10 $W train "$@" "${common[@]}" --out "$DIR/runs/$name" 2>&1 | tail -1
}
train gmm40_vp        --data gmm40 --data-scale 50 --process vp
train gmm40_vp_g2     --data gmm40 --data-scale 50 --process vp --objective dsm --weighting g2
train gmm40_ve        --data gmm40 --data-scale 50 --process ve --sigma-max 2.1
train checkerboard_vp --data checkerboard --process vp
train checkerboard_ve --data checkerboard --process ve --sigma-max 11.3
for d in gmm40 checkerboard; do
    $PY bench/likelihood/testdata.py --data $d --n 1000 --seed 999 --out "$DIR/${d}_test.npy" > /dev/null
done
for spec in gmm40_vp:1e-5 gmm40_vp:1e-3 gmm40_vp_g2:1e-5 gmm40_ve:1e-5 gmm40_ve:1e-3 \
            checkerboard_vp:1e-5 checkerboard_vp:1e-3 checkerboard_ve:1e-5 checkerboard_ve:1e-3; do
    run=${spec%:*}; tmin=${spec#*:}; data=${run%%_*}
    for ema in ema raw; do
        [ $ema = raw ] && [ $tmin != 1e-5 ] && continue
        flags=(); [ $ema = raw ] && flags=(--no-ema)
        tag=${run}_t${tmin}_$ema
        $W nll --run "$DIR/runs/$run" --data "$DIR/${data}_test.npy" --t-min "$tmin" "${flags[@]}" \
            --out "$DIR/lp_$tag.npy" --json "$DIR/nll_$tag.json" > "$DIR/nll_$tag.txt" 2> /dev/null
        echo "== $tag: $(grep -o 'NFE [0-9]*' "$DIR/nll_$tag.txt"), $(grep -o '[0-9.]* s$' "$DIR/nll_$tag.txt")"
        $PY bench/likelihood/gap.py --data "$data" --points "$DIR/${data}_test.npy" --logp "$DIR/lp_$tag.npy"
    done
done
