"""The PyTorch peer of `tweedie bench mala`: MALA over many chains at once, vectorised over chains,
for the DW-4 and LJ-13 potentials in the benchmarks' conventions, with analytic forces (faster than
autograd; `--forces autograd` times the usual torch.autograd.grad way), the noise and the proposal
residuals projected onto the centre-of-mass-free subspace, and the same Metropolis-Hastings ratio
as tweedie's `mcmc::mala`. Prints one JSON line like `tweedie bench`.

    python mala_ref.py --potential dw4 --chains 1000 --steps 200 --step-size 0.02 \
        [--init data/dw4/val_split_DW4.npy] [--dtype float64|float32] [--threads 2] [--repeats 3]

Timed: one warm-up block, then `--repeats` blocks of `--steps` steps from the same starting states;
seconds per step (all chains) of each block.
"""
import argparse
import json
import math
import time

import numpy as np
import torch

# (particles, dimensions) of each potential
SHAPES = {"dw4": (4, 2), "lj13": (13, 3)}


def pair_terms(x):
    """Differences x_i - x_j [C, N, N, k] and distances [C, N, N] (1 on the diagonal, masked later)."""
    diff = x[:, :, None, :] - x[:, None, :, :]
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    r = torch.sqrt((diff * diff).sum(-1) + eye)
    return diff, r, 1.0 - eye


def dw4(x):
    """U = sum_{i<j} 0.9 (d - 4)^4 - 4 (d - 4)^2 and F = -grad U, for x [C, 4, 2]."""
    diff, r, off = pair_terms(x)
    s = r - 4.0
    s2 = s * s
    u = 0.5 * ((0.9 * s2 * s2 - 4.0 * s2) * off).sum((1, 2))
    g = (3.6 * s2 * s - 8.0 * s) / r * off  # phi'(r)/r
    return u, -(g[..., None] * diff).sum(2)


def lj13(x):
    """U = sum_{i != j} (r^-12 - 2 r^-6) + 0.5 sum_i |x_i - mean|^2 and F = -grad U, x [C, 13, 3]."""
    diff, r, off = pair_terms(x)
    s6 = r.pow(-6)
    u = ((s6 * s6 - 2.0 * s6) * off).sum((1, 2))
    g = 2.0 * 12.0 * (s6 - s6 * s6) / (r * r) * off  # each unordered pair twice: 2 phi'(r)/r
    c = x - x.mean(1, keepdim=True)
    return u + 0.5 * (c * c).sum((1, 2)), -(g[..., None] * diff).sum(2) - c


def autograd(energy_force):
    """The same energy with the force by torch.autograd.grad (the way most Python samplers do it)."""
    def ef(x):
        x = x.detach().requires_grad_(True)
        u, _ = energy_force(x)
        (g,) = torch.autograd.grad(u.sum(), x)
        return u.detach(), -g
    return ef


def centre(v):
    return v - v.mean(1, keepdim=True)


def mala(ef, x, steps, h, gen):
    """`steps` MALA steps of every chain (kT = 1); returns the final states and the acceptance."""
    u, f = ef(x)
    accepted = 0
    noise_scale = math.sqrt(2.0 * h)
    for _ in range(steps):
        xi = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        y = centre(x + h * f + noise_scale * xi)
        uy, fy = ef(y)
        fwd = centre(y - x - h * f)
        rev = centre(x - y - h * fy)
        log_a = -(uy - u) + ((fwd * fwd).sum((1, 2)) - (rev * rev).sum((1, 2))) / (4.0 * h)
        log_a = torch.nan_to_num(log_a, nan=-math.inf)
        acc = torch.rand(u.shape, generator=gen, dtype=x.dtype).log() < log_a
        accepted += int(acc.sum())
        x = torch.where(acc[:, None, None], y, x)
        f = torch.where(acc[:, None, None], fy, f)
        u = torch.where(acc, uy, u)
    return x, accepted / (steps * x.shape[0])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--potential", choices=sorted(SHAPES), default="dw4")
    p.add_argument("--chains", type=int, default=1000)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--step-size", type=float, default=1e-2)
    p.add_argument("--init", help=".npy [m, N*k]: chain c starts at row c mod m (default: N(0, 4 I))")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--forces", choices=["analytic", "autograd"], default="analytic")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    n, k = SHAPES[a.potential]
    gen = torch.Generator().manual_seed(0)
    if a.init:
        rows = np.load(a.init).reshape(-1, n * k)
        x0 = torch.tensor(rows[np.arange(a.chains) % len(rows)], dtype=dtype).reshape(a.chains, n, k)
    else:
        x0 = 2.0 * torch.randn((a.chains, n, k), generator=gen, dtype=dtype)
    x0 = centre(x0)
    ef = {"dw4": dw4, "lj13": lj13}[a.potential]
    if a.forces == "autograd":
        ef = autograd(ef)
    acceptance = 0.0

    def block():
        nonlocal acceptance
        with torch.no_grad() if a.forces == "analytic" else torch.enable_grad():
            _, acceptance = mala(ef, x0, a.steps, a.step_size, gen)

    block()
    secs = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        block()
        secs.append((time.perf_counter() - t0) / a.steps)
    print(json.dumps({"case": "mala", "potential": a.potential, "chains": a.chains, "steps": a.steps,
                      "step_size": a.step_size, "seconds_per_step": secs, "acceptance": acceptance,
                      "dtype": a.dtype, "forces": a.forces, "threads": a.threads,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
