"""One timed PF-ODE likelihood solve with the PyTorch reference's own code (likelihood.py:
scipy RK45, rtol = atol = 1e-5, t from 1e-5 to 1, exact divergence by d VJPs, 2 torch threads).

    python torch_nll.py --ckpt model.pt --data points.npy --json out.json [--logp logp.npy]

Prints and writes {"seconds": solve wall time, "nfe", "nll_mean", "nll_sem"} (nats, data
coordinates). Only the solve is timed (not the torch import or loading), as `tweedie nll` times
only its solve.
"""
import peer  # noqa: I001 -- first: OpenBLAS threads

import argparse
import json
import math
import time

import numpy as np
import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--logp", default=None)
    p.add_argument("--divergence", default="exact", choices=["exact", "hutchinson"])
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    peer.common.setup(a.threads)
    model, sde, cfg = peer.common.load_checkpoint(a.ckpt)
    x = torch.from_numpy(np.load(a.data)).float()
    t0 = time.perf_counter()
    nll, nfe = peer.nll_data_space(model, sde, cfg, x, a.divergence)
    seconds = time.perf_counter() - t0
    nll = nll.double()
    res = {"seconds": seconds, "nfe": nfe, "nll_mean": nll.mean().item(),
           "nll_sem": (nll.std() / math.sqrt(len(nll))).item(), "n": len(nll),
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    with open(a.json, "w") as f:
        json.dump(res, f, indent=2)
    if a.logp:
        np.save(a.logp, (-nll).numpy())
    print(f"torch: NLL {res['nll_mean']:.4f} ± {res['nll_sem']:.4f}, NFE {nfe}, {seconds:.2f} s")


if __name__ == "__main__":
    main()
