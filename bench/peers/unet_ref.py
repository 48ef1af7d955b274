"""The PyTorch peer of `tweedie bench unet-train` and `unet-sample`: the tiny U-Net of
configs/mnist-tiny.toml (class-conditional MNIST, [1, 28, 28], batch 32) in diffusers. Prints one
JSON line like `tweedie bench`.

    python unet_ref.py train  [--arch unet2d|same] [--batch 32] [--steps 5] [--threads 2] [--repeats 3]
    python unet_ref.py sample [--arch unet2d|same] [--batch 32] [--nfe 10] [--threads 2] [--repeats 3]
    python unet_ref.py describe      # both networks' parameter counts and their differences

Two networks (both float32, NCHW, GroupNorm of 8 groups, ε 1e-5, SiLU, sinusoidal time features of
32 dimensions through Linear(32, 128), SiLU, Linear(128, 128), a class table of 11 rows (10 digits
and the null class) added to the time embedding, single-head attention at 7×7 and in the middle):

- `unet2d` (default): diffusers' own `UNet2DModel` with block_out_channels (32, 64, 64),
  layers_per_block 1, ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D") down,
  ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D") up, num_class_embeds 11. Its wiring is diffusers':
  a strided 3×3 conv downsamples (tweedie: 2×2 average pooling), and every level's up path has
  layers_per_block + 1 = 2 residual blocks taking the skips of conv_in and of the downsamplers too
  (tweedie: 1 block, one skip per level): 1,114,209 parameters, 1.42× tweedie's.
- `same`: tweedie's wiring (src/nn/unet) built from diffusers' blocks (`ResnetBlock2D`, `Attention`,
  `Upsample2D`, `Timesteps`, `TimestepEmbedding`) and `nn.AvgPool2d`: the same layers, the same
  parameter count (782,465), the same FLOPs.

Train: one DSM step as `tweedie train --config configs/mnist-tiny.toml` takes it: x0 uniform in
[-1, 1] (tweedie: the dequantised digits; the values do not change the time), labels with 10 %
dropped to the null class, t ~ U(0.001, 1), VP (β 0.1 to 20), x = α x0 + σ ε, loss = mean (ε̂ − ε)²,
backward, gradient clipping at norm 1, Adam (lr 2e-3 with warm-up), EMA 0.995. Sample: one forward
pass of `--batch` images at random times with labels 0-9 under `torch.no_grad()`. Timed: one
warm-up block, then `--repeats` blocks; seconds per step (per NFE) of each block.
"""
import argparse
import json
import math
import time

import torch
from torch import nn

from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D

CH, MULTS, GROUPS, EPS, CLASSES = 32, (1, 2, 2), 8, 1e-5, 10
SIZE = 28


def unet2d():
    """diffusers' UNet2DModel configured as close to tweedie's tiny preset as it allows."""
    return UNet2DModel(
        sample_size=SIZE, in_channels=1, out_channels=1, block_out_channels=tuple(CH * m for m in MULTS),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=CH * MULTS[-1],
        norm_num_groups=GROUPS, norm_eps=EPS, act_fn="silu", num_class_embeds=CLASSES + 1,
        time_embedding_type="positional", flip_sin_to_cos=True, freq_shift=0)


def resblock(i, o):
    return ResnetBlock2D(in_channels=i, out_channels=o, temb_channels=4 * CH, groups=GROUPS, eps=EPS,
                         non_linearity="silu")


def attention(c):
    # one head over all channels: softmax(q kᵀ/√c) v, GroupNorm first, residual (DDPM's AttnBlock)
    return Attention(c, heads=1, dim_head=c, norm_num_groups=GROUPS, eps=EPS, bias=True,
                     residual_connection=True, upcast_softmax=True, _from_deprecated_attn_block=True)


class Same(nn.Module):
    """tweedie's tiny U-Net (src/nn/unet/mod.rs) from diffusers' blocks: one residual block per
    level (attention after it at the lowest resolution), 2×2 average pooling down, a middle of
    resblock-attention-resblock, up levels of one residual block on [h, skip] and nearest
    upsampling + 3×3 conv, GroupNorm-SiLU-conv out."""

    def __init__(self):
        super().__init__()
        chans = [CH * m for m in MULTS]
        self.time_proj = Timesteps(CH, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(CH, 4 * CH)
        self.class_embedding = nn.Embedding(CLASSES + 1, 4 * CH)
        self.conv_in = nn.Conv2d(1, CH, 3, padding=1)
        self.down, ch, skips = nn.ModuleList(), CH, []
        for lvl, c in enumerate(chans):
            last = lvl == len(chans) - 1
            self.down.append(nn.ModuleList([resblock(ch, c), attention(c) if last else nn.Identity(),
                                            nn.Identity() if last else nn.AvgPool2d(2)]))
            ch = c
            skips.append(c)
        self.mid = nn.ModuleList([resblock(ch, ch), attention(ch), resblock(ch, ch)])
        self.up = nn.ModuleList()
        for lvl in reversed(range(len(chans))):
            c = chans[lvl]
            self.up.append(nn.ModuleList([resblock(ch + skips.pop(), c),
                                          attention(c) if lvl == len(chans) - 1 else nn.Identity(),
                                          Upsample2D(c, use_conv=True) if lvl > 0 else nn.Identity()]))
            ch = c
        self.out_norm = nn.GroupNorm(GROUPS, ch, eps=EPS)
        self.out_conv = nn.Conv2d(ch, 1, 3, padding=1)

    def forward(self, x, t, class_labels):
        emb = self.time_embedding(self.time_proj(t).to(x.dtype)) + self.class_embedding(class_labels)
        h, skips = self.conv_in(x), []
        for rb, at, pool in self.down:
            h = at(rb(h, emb))
            skips.append(h)
            h = pool(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for rb, at, up in self.up:
            h = up(at(rb(torch.cat([h, skips.pop()], 1), emb)))
        return self.out_conv(nn.functional.silu(self.out_norm(h)))


def build(arch):
    torch.manual_seed(0)
    return unet2d() if arch == "unet2d" else Same()


def run(net, arch, x, t, labels):
    out = net(x, t, class_labels=labels)
    return out.sample if arch == "unet2d" else out


def count(net):
    return sum(p.numel() for p in net.parameters())


def timed(fn, repeats):
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def alpha_sigma(t, beta_min=0.1, beta_max=20.0):
    log_a = -0.25 * t ** 2 * (beta_max - beta_min) - 0.5 * t * beta_min
    a = torch.exp(log_a)
    return a, torch.sqrt(1.0 - a * a)


def train(a, net):
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
    ema = [p.detach().clone() for p in net.parameters()]
    gen = torch.Generator().manual_seed(1)

    def step():
        x0 = torch.rand(a.batch, 1, SIZE, SIZE, generator=gen) * 2 - 1
        labels = torch.randint(0, CLASSES, (a.batch,), generator=gen)
        labels = torch.where(torch.rand(a.batch, generator=gen) < 0.1, CLASSES, labels)
        t = 0.001 + 0.999 * torch.rand(a.batch, generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        al, sg = alpha_sigma(t)
        x = al[:, None, None, None] * x0 + sg[:, None, None, None] * eps
        loss = (run(net, a.arch, x, t, labels) - eps).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in net.parameters()], 1 - 0.995)

    def block():
        for _ in range(a.steps):
            step()

    return [s / a.steps for s in timed(block, a.repeats)]


def sample(a, net):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(a.batch, 1, SIZE, SIZE, generator=gen)
    t = 0.001 + 0.999 * torch.rand(a.batch, generator=gen)
    labels = torch.arange(a.batch) % CLASSES

    def block():
        with torch.no_grad():
            for _ in range(a.nfe):
                run(net, a.arch, x, t, labels)

    return [s / a.nfe for s in timed(block, a.repeats)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("case", choices=["train", "sample", "describe"])
    p.add_argument("--arch", choices=["unet2d", "same"], default="unet2d")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.case == "describe":
        for arch in ("unet2d", "same"):
            print(f"{arch}: {count(build(arch)):,} parameters")
        return
    net = build(a.arch)
    secs = train(a, net) if a.case == "train" else sample(a, net)
    print(json.dumps({"case": "unet_" + a.case, "arch": a.arch, "batch": a.batch,
                      "params": count(net), "seconds_per_step": secs, "threads": a.threads,
                      "torch": torch.__version__, "dtype": "float32"}))


if __name__ == "__main__":
    main()
