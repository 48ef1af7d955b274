#!/usr/bin/env bash
# The Python environment of the benchmarks: the PyTorch and JAX references (../shared/peers) and the
# scripts under bench/ that load or convert networks (bench/peers/torch_cases.py, bench/likelihood/),
# and diffusers for the U-Net cases' peer (bench/peers/unet_ref.py).
#
#   bench/setup.sh            # torch, numpy, scipy, diffusers, jax[cpu], optax in bench/.venv (ignored by git)
#   bench/setup.sh --no-jax   # the PyTorch side only (bench/suite.py then skips JAX and says so)
#
# Env: TWEEDIE_BENCH_VENV (where, default bench/.venv; bench/suite.py reads the same variable),
# PYTHON (the interpreter that makes it, default python3; 3.11 or newer, as torch 2.15 and jax 0.10
# need).
# Everything comes from PyPI. PyPI's torch wheel for Linux is the CUDA build (a few GB with its
# nvidia-* dependencies); the suite runs it on the CPU. The versions of torch and jax are pinned to
# the ones the recorded results used (diffusers too), so that new runs compare with them.
# Running it again installs only what is missing; delete the folder to start afresh.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_PKGS=(torch==2.15.0 numpy scipy diffusers==0.42.1)
JAX_PKGS=("jax[cpu]==0.10.2" optax)

jax=1
for arg in "$@"; do
    case $arg in
        --no-jax) jax=0 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/setup.sh: unknown argument '$arg' (known: --no-jax)" >&2; exit 2 ;;
    esac
done

VENV=${TWEEDIE_BENCH_VENV:-bench/.venv}
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null \
    || { echo "bench/setup.sh: $PYTHON not found: install Python 3.11 or newer" >&2; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "bench/setup.sh: $PYTHON is older than 3.11 (torch 2.15 and jax 0.10 need 3.11)" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
    echo "bench/setup.sh: making $VENV with $("$PYTHON" --version)"
    # Debian and Ubuntu ship venv's pip apart (python3-venv); say so instead of a bare traceback
    "$PYTHON" -m venv "$VENV" || {
        echo "bench/setup.sh: '$PYTHON -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
        rm -rf "$VENV"; exit 1; }
fi
PY=$VENV/bin/python

pkgs=("${TORCH_PKGS[@]}")
[ "$jax" = 1 ] && pkgs+=("${JAX_PKGS[@]}")
echo "bench/setup.sh: installing ${pkgs[*]} into $VENV"
"$PY" -m pip install --upgrade pip
"$PY" -m pip install "${pkgs[@]}"

# check what the suite will import
"$PY" -c 'import torch, numpy, scipy, diffusers
print("torch", torch.__version__, "| numpy", numpy.__version__, "| scipy", scipy.__version__,
      "| diffusers", diffusers.__version__)'
if [ "$jax" = 1 ]; then
    "$PY" -c 'import jax, optax
print("jax", jax.__version__, "| optax", optax.__version__, "|", jax.devices()[0].platform)'
fi
echo "bench/setup.sh: ready. Next: cargo build --release && python3 bench/suite.py"
