"""DEM's EGNN_dynamics (../shared/peers/dem_ref) as the PyTorch side of tweedie's EGNN: timings of
one training step, and the fixture that pins tweedie's network to DEM's numbers.

    python egnn_ref.py train --particles 4 --dim 2 --layers 3 [--hidden 128] [--batch 512]
                             [--steps 20] [--repeats 3]
    python egnn_ref.py fixture --out tests/data/egnn_dem.json

`train`: DEM's settings (configs/model/net/egnn.yaml: SiLU, recurrent, attention, tanh, sum
aggregation, time as the node feature) and DEM's training batch (num_samples_to_sample_from_buffer
= 512 in DEM's configs/model/dem.yaml). One step is a denoising score-matching step like tweedie's
`dsm` on the zero-centre-of-mass space under the VP process (β 0.1 → 20): x_t = α x0 + σ ε with
mean-free x0 and ε, loss mean ‖f(x_t, t) − ε‖², backward, Adam (lr 1e-3). float32, 2 threads (--threads).
Prints one JSON line: seconds per step of each timed block (wall clock, and the process's CPU
seconds).

`fixture`: a small EGNN_dynamics (3 particles in 3-D, hidden 8, 2 layers) in float64 with its
weights drawn N(0, 0.3²) (so that the coordinate updates, tiny at DEM's initialisation, count),
inputs and outputs, as JSON; tweedie's `egnn_matches_dem_on_a_fixture` test loads the weights
into its own network and compares the outputs.
"""
import argparse
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
PEERS = pathlib.Path(os.environ.get("TWEEDIE_PEERS", ROOT.parent / "shared" / "peers"))
DEM_REF = os.environ.get("DEM_REF", str(PEERS / "dem_ref"))
if not os.path.isdir(DEM_REF):
    sys.exit(f"DEM is not at {DEM_REF}: set TWEEDIE_PEERS to the peers' folder (or DEM_REF)")
sys.path.insert(0, DEM_REF)

import torch  # noqa: E402

from dem.models.components.egnn import EGNN_dynamics  # noqa: E402


def build(particles, dim, hidden, layers):
    return EGNN_dynamics(n_particles=particles, n_dimension=dim, hidden_nf=hidden,
                         act_fn=torch.nn.SiLU(), n_layers=layers, recurrent=True,
                         attention=True, condition_time=True, tanh=True, agg="sum")


def mean_free(x, particles, dim):
    x = x.view(x.shape[0], particles, dim)
    return (x - x.mean(1, keepdim=True)).view(x.shape[0], particles * dim)


def vp(t):
    """α_t and σ_t of the VP process with β from 0.1 to 20 (tweedie's `vp`)."""
    log_alpha = -0.25 * t ** 2 * (20.0 - 0.1) - 0.5 * t * 0.1
    alpha = torch.exp(log_alpha)
    return alpha, torch.sqrt(1.0 - alpha ** 2)


def train(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = build(a.particles, a.dim, a.hidden, a.layers)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    d = a.particles * a.dim
    gen = torch.Generator().manual_seed(1)

    def step():
        x0 = mean_free(torch.randn(a.batch, d, generator=gen), a.particles, a.dim)
        eps = mean_free(torch.randn(a.batch, d, generator=gen), a.particles, a.dim)
        t = 1e-5 + (1 - 1e-5) * torch.rand(a.batch, generator=gen)
        alpha, sigma = vp(t)
        xt = alpha[:, None] * x0 + sigma[:, None] * eps
        loss = ((net(t, xt) - eps) ** 2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    blocks, cpu = [], []
    for _ in range(a.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(a.steps):
            step()
        blocks.append((time.perf_counter() - t0) / a.steps)
        cpu.append((time.process_time() - c0) / a.steps)
    params = sum(p.numel() for p in net.parameters())
    print(json.dumps({"case": "train_egnn", "impl": "torch", "particles": a.particles,
                      "dim": a.dim, "layers": a.layers, "hidden": a.hidden, "batch": a.batch,
                      "params": params, "seconds_per_step": blocks, "cpu_seconds_per_step": cpu,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


def fixture(a):
    torch.manual_seed(3)
    particles, dim, hidden, layers = 3, 3, 8, 2
    net = build(particles, dim, hidden, layers).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    x = torch.randn(4, particles * dim, dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)
    with torch.no_grad():
        out = net(t, x)
    params = {name.removeprefix("egnn."): {"shape": list(p.shape),
                                            "values": p.flatten().tolist()}
              for name, p in net.named_parameters()}
    doc = {"particles": particles, "dim": dim, "hidden": hidden, "layers": layers,
           "how": "bench/peers/egnn_ref.py fixture: DEM's EGNN_dynamics in float64, weights "
                  "N(0, 0.3^2), torch.manual_seed(3)",
           "params": params, "x": x.tolist(), "t": t.tolist(), "out": out.tolist()}
    pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(a.out).write_text(json.dumps(doc) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--particles", type=int, required=True)
    t.add_argument("--dim", type=int, required=True)
    t.add_argument("--layers", type=int, required=True)
    t.add_argument("--hidden", type=int, default=128)
    t.add_argument("--batch", type=int, default=512)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--repeats", type=int, default=3)
    t.add_argument("--threads", type=int, default=2)
    f = sub.add_parser("fixture")
    f.add_argument("--out", required=True)
    a = ap.parse_args()
    train(a) if a.cmd == "train" else fixture(a)


if __name__ == "__main__":
    main()
