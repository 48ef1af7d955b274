"""Fresh test points for the likelihood experiment and benchmark (numpy only).

    python3 bench/likelihood/testdata.py --data gmm40 --n 1000 --seed 999 --out gmm40_test.npy

gmm40: FAB/iDEM's 40 equal-weight modes (assets/gmm40_means.csv), per-dim std softplus(1);
checkerboard: FFJORD's (uniform on 8 squares of side 2 in [-4, 4]^2), as the peer's data.py.
Writes float64 [n, 2] .npy in data coordinates.
"""
import argparse
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
GMM40_STD = float(np.log1p(np.e))  # softplus(1) = 1.3132616...


def gmm40(n, rng):
    means = np.loadtxt(ROOT / "assets" / "gmm40_means.csv", delimiter=",", comments="#")
    return means[rng.integers(0, len(means), n)] + GMM40_STD * rng.standard_normal((n, 2))


def checkerboard(n, rng):
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2.0 + np.mod(np.floor(x1), 2)
    return np.stack([x1, x2], axis=1) * 2


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", choices=["gmm40", "checkerboard"], required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=999)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    x = {"gmm40": gmm40, "checkerboard": checkerboard}[a.data](a.n, np.random.default_rng(a.seed))
    np.save(a.out, x.astype(np.float64))
    print(f"wrote {a.out}: {x.shape}, mean {x.mean(0).round(3).tolist()}")


if __name__ == "__main__":
    main()
