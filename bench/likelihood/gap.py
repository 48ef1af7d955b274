"""Paired NLL gap of a model against the true density on the same points (numpy only).

    python3 bench/likelihood/gap.py --data gmm40 --points test.npy --logp logp.npy

logp.npy: per-point log p (nats, data coordinates) from `tweedie nll --out`. Prints the true NLL,
the model NLL and the gap mean(log p_true - log p_model) with the standard error of the per-point
differences (smaller than either NLL's own s.e., since both vary with the same points).
"""
import argparse

import numpy as np

from testdata import GMM40_STD, ROOT


def true_log_p(name, x):
    if name == "checkerboard":
        on = (np.abs(x) <= 4).all(1) & (np.mod(np.floor(x[:, 0] / 2) + np.floor(x[:, 1] / 2), 2) == 0)
        return np.where(on, -np.log(32.0), -np.inf)
    means = np.loadtxt(ROOT / "assets" / "gmm40_means.csv", delimiter=",", comments="#")
    d2 = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    comp = -d2 / (2 * GMM40_STD**2) - np.log(2 * np.pi * GMM40_STD**2)
    m = comp.max(1, keepdims=True)
    return (m + np.log(np.exp(comp - m).sum(1, keepdims=True)))[:, 0] - np.log(len(means))


def mean_sem(v):
    return v.mean(), v.std(ddof=1) / np.sqrt(len(v))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", choices=["gmm40", "checkerboard"], required=True)
    p.add_argument("--points", required=True)
    p.add_argument("--logp", required=True)
    a = p.parse_args()
    x = np.load(a.points).astype(np.float64)
    model = np.load(a.logp).astype(np.float64)
    true = true_log_p(a.data, x)
    ok = np.isfinite(true)
    if not ok.all():
        print(f"{(~ok).sum()} points off the support, left out")
    t, m = mean_sem(-true[ok]), mean_sem(-model[ok])
    g = mean_sem(true[ok] - model[ok])
    print(f"true NLL {t[0]:.4f} ± {t[1]:.4f}; model NLL {m[0]:.4f} ± {m[1]:.4f}; "
          f"gap {g[0]:.4f} ± {g[1]:.4f} nats (paired s.e.)")


if __name__ == "__main__":
    main()
