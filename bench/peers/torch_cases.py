"""The PyTorch side of the benchmark suite: each case of `tweedie bench`, written with the PyTorch
reference's own code (../shared/peers/torch_ref: ScoreMLP, VPSDE, data, train.make_step,
sample.euler_maruyama, likelihood.nll_data_space). Prints one JSON line like `tweedie bench`.

    python torch_cases.py train --batch 512 --width 128 [--objective dsm|ism|ssm] [--steps 200]
    python torch_cases.py sample --ckpt model.pt --sampler em|dpmpp_2m --steps 1000 --n 10000
    python torch_cases.py nll --ckpt model.pt --data points.npy

ISM and SSM use double backward (create_graph=True), the usual PyTorch way: the trace of ∂s/∂x by
d vector-Jacobian products (ISM) and vᵀ(∂s/∂x)v by one (SSM, one Rademacher projection,
variance-reduced), at t = 0.1 as `tweedie bench`. DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) runs
on the same log-SNR-uniform grid from T to t_min as tweedie's `dpmpp_2m`. Timed: warm-up, then
`--repeats` blocks (2 torch threads, float32).
"""
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # bench/
from torch_ref import PEERS, ROOT, TORCH_REF  # noqa: E402,F401  puts torch_ref on sys.path

import common  # noqa: E402  first: caps OpenBLAS threads before numpy loads

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import data  # noqa: E402
from likelihood import nll_data_space  # noqa: E402
from model import ScoreMLP, count_params, get_score_fn  # noqa: E402
from sample import Counted, euler_maruyama  # noqa: E402
from sde import SDE_EPS, VPSDE  # noqa: E402
from train import build, make_step  # noqa: E402


def timed(fn, repeats):
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def stein_step(model, opt, sde, objective, batch, gen, t_level=0.1):
    """One ISM or SSM-VR step at one noise level, by double backward."""
    params = list(model.parameters())

    def step():
        x0 = data.sample("checkerboard", batch, gen)
        t = torch.full((batch,), t_level)
        mean, std = sde.marginal_prob(x0, t)
        x = (mean + std[:, None] * torch.randn(x0.shape, generator=gen)).requires_grad_(True)
        s = -model(x, t) / std[:, None]
        if objective == "ism":
            tr = sum(torch.autograd.grad(s[:, j].sum(), x, create_graph=True)[0][:, j]
                     for j in range(x.shape[1]))
        else:
            v = torch.randint(0, 2, x.shape, generator=gen).float() * 2 - 1
            jv = torch.autograd.grad((s * v).sum(), x, create_graph=True)[0]
            tr = (jv * v).sum(1)
        loss = (0.5 * (s ** 2).sum(1) + tr).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()
    return step, params


@torch.inference_mode()
def dpmpp_2m(model, sde, n, steps, gen):
    """DPM-Solver++(2M) on x0-predictions, log-SNR-uniform grid, t from T to t_min."""
    def log_alpha(t):
        return sde._log_mean_coeff(t)

    def lam(t):
        la = log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2 * la))

    T, eps = torch.tensor([sde.T]), torch.tensor([SDE_EPS])
    l0, l1 = lam(T).item(), lam(eps).item()
    lams = torch.linspace(l0, l1, steps + 1)
    # invert λ(t) by bisection (monotone decreasing in t)
    lo, hi = torch.full_like(lams, SDE_EPS), torch.full_like(lams, sde.T)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        big = lam(mid) > lams
        lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
    ts = 0.5 * (lo + hi)
    ts[0], ts[-1] = sde.T, SDE_EPS
    x = sde.prior_sampling((n, 2), gen)
    prev = None
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        a, a_next = log_alpha(t).exp(), log_alpha(t_next).exp()
        s, s_next = sde.marginal_std(t.reshape(1)), sde.marginal_std(t_next.reshape(1))
        eps_hat = model(x, torch.full((n,), t.item()))
        x0 = (x - s * eps_hat) / a
        h = lams[i + 1] - lams[i]
        d = x0
        if prev is not None:
            r = (lams[i] - lams[i - 1]) / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev
        x = (s_next / s) * x - a_next * torch.expm1(-h) * d
        prev = x0
    return x


def main():
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=["train", "sample", "nll"])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--objective", default="dsm", choices=["dsm", "ism", "ssm"])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--ckpt")
    p.add_argument("--sampler", default="em", choices=["em", "dpmpp_2m"])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--data")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    common.setup(a.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    out = {"case": a.case, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if a.case == "train":
        args = SimpleNamespace(width=a.width, depth=3, lr=1e-3, warmup=0, seed=0)
        model, ema, opt, sched = build(args)
        sde = VPSDE()
        if a.objective == "dsm":
            step = make_step(model, ema, opt, sched, sde, "checkerboard", a.batch, 0.999, gen)
        else:
            step, _ = stein_step(model, opt, sde, a.objective, a.batch, gen)
        for _ in range(20):
            step()
        secs = timed(lambda: [step() for _ in range(a.steps)], a.repeats)
        out.update(objective=a.objective, batch=a.batch, width=a.width,
                   seconds_per_step=[s / a.steps for s in secs],
                   flops_per_step=6.0 * a.batch * count_params(model))
    elif a.case == "sample":
        model, sde, cfg = common.load_checkpoint(a.ckpt)
        if a.sampler == "em":
            score = Counted(get_score_fn(model, sde))
            run = lambda: euler_maruyama(score, sde, a.n, a.steps, gen=gen)  # noqa: E731
        else:
            score = None
            run = lambda: dpmpp_2m(model, sde, a.n, a.steps, gen)  # noqa: E731
        secs = timed(run, a.repeats)
        nfe = score.nfe // (a.repeats + 1) if score else a.steps
        out.update(sampler=a.sampler, steps=a.steps, n=a.n, nfe=nfe, seconds=secs)
    else:
        model, sde, cfg = common.load_checkpoint(a.ckpt)
        x = torch.from_numpy(np.load(a.data)).float()
        nfe = []

        def run():
            nfe.append(nll_data_space(model, sde, cfg, x, "exact")[1])
        out.update(n=len(x), seconds=timed(run, a.repeats), nfe=nfe[-1])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
