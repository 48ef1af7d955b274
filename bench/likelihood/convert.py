"""Convert a tweedie checkpoint (safetensors) into the PyTorch peer's checkpoint format.

    python convert.py RUN/checkpoint.safetensors OUT.pt --dataset gmm40 --sde vp [--raw]

tweedie: `ema.layers.{i}.weight` [out, in] / `.bias` (or `params.` with --raw) and `embed.W`;
header metadata `model` (JSON: dim, arch, process). Peer (torch_ref/model.py ScoreMLP): `embed.W`,
`net.{2i}.weight/bias`; torch_ref/common.load_checkpoint reads {"config": {...}, "ema": state_dict}
and rebuilds the SDE from config["sde"] and config["dataset"] (gmm40: data scale 50, VE sigma_max
2.1), so those must describe the same process and scale the tweedie run was trained with.
The safetensors file is parsed directly (8-byte header length, JSON header, raw little-endian data).
"""
import argparse
import json
import struct

import numpy as np
import torch

DTYPES = {"F32": np.float32, "F64": np.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        blob = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        lo, hi = info["data_offsets"]
        tensors[name] = np.frombuffer(blob[lo:hi], DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors, meta


def convert(src, raw=False):
    """-> (peer state_dict, tweedie model config dict)."""
    tensors, meta = read_safetensors(src)
    model = json.loads(meta["model"])
    arch = model["arch"]
    if (arch["activation"], arch["embedding"], arch["parameterisation"]) != ("silu", "fourier", "eps"):
        raise SystemExit(f"the peer's ScoreMLP is SiLU / Fourier / eps-prediction; this run has {arch}")
    prefix = "params" if raw else "ema"
    sd = {"embed.W": torch.from_numpy(tensors["embed.W"].astype(np.float32))}
    for i in range(arch["depth"] + 1):
        for p in ("weight", "bias"):
            sd[f"net.{2 * i}.{p}"] = torch.from_numpy(
                tensors[f"{prefix}.layers.{i}.{p}"].astype(np.float32))
    return sd, model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--dataset", required=True, help="peer dataset name (sets data scale, VE sigma_max)")
    p.add_argument("--sde", required=True, choices=["vp", "ve"])
    p.add_argument("--raw", action="store_true", help="raw weights instead of EMA")
    a = p.parse_args()
    sd, model = convert(a.src, a.raw)
    arch = model["arch"]
    cfg = {"dataset": a.dataset, "sde": a.sde, "width": arch["width"], "depth": arch["depth"],
           "source": a.src, "tweedie_model": model}
    # The peer's ScoreMLP must accept the state dict as is (shapes and names).
    import sys
    import pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from peer import ScoreMLP  # noqa: E402
    net = ScoreMLP(width=arch["width"], depth=arch["depth"], embed_dim=arch["embed_dim"])
    net.load_state_dict(sd)
    torch.save({"config": cfg, "ema": sd, "model": sd}, a.out)
    print(f"wrote {a.out}: {sum(v.numel() for k, v in sd.items() if k != 'embed.W')} params, "
          f"process {model['process']}")


if __name__ == "__main__":
    main()
