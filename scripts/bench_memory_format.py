"""What the UNet's memory format costs: NCHW against channels-last, side by side in one process, on what cdvideo
runs most (the miniature model's stills, clips and training steps; optionally SD1.5's real UNet shape).

    python scripts/bench_memory_format.py [--pairs 12] [--threads 1] [--train-steps 30] [--train-pairs 4] [--sd15]
    python scripts/bench_memory_format.py --no-train                                   # the forward cases only
    python scripts/bench_memory_format.py --device cuda --dtype bfloat16 --sd15 --resolution 512   # on a GPU

Both formats run the same inputs on the same weights, in pairs whose order alternates; the speed-up is the median
of the pairs' ratios (this machine's speed drifts by a fifth within minutes: a ratio per pair cancels most of it).
The outputs of the two formats are compared too (the same model: they differ by float rounding only). Run it
alone: on two cores a second job doubles any timing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cdvideo.data.ranges import Flag, Range

FORMATS = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}


def paired(arm, pairs: int) -> list[tuple[float, float]]:
    """(NCHW seconds, channels-last seconds) of `arm(format)` for `pairs` pairs, the order alternating from pair to
    pair: a drift of the machine's speed falls on both arms alike."""
    arm(torch.contiguous_format), arm(torch.channels_last)  # warm-up
    out = []
    for i in range(pairs):
        order = (torch.contiguous_format, torch.channels_last)[:: -1 if i % 2 else 1]
        seconds = {fmt: arm(fmt) for fmt in order}
        out.append((seconds[torch.contiguous_format], seconds[torch.channels_last]))
    return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_case(unet, shape: tuple, frames: int, device: torch.device, dtype: torch.dtype):
    """One denoising step's UNet call on `shape` latents ((B, C, H, W), or (B, C, F, H, W) with `frames`), with
    classifier-free guidance's doubled batch, as an arm: the model in the format asked; also the outputs' largest
    difference between the formats."""
    gen = torch.Generator().manual_seed(0)
    unet.to(device, dtype)
    x = torch.randn(shape, generator=gen).to(device, dtype)
    rows = shape[0] * max(frames, 1)  # the motion UNet takes one text row per frame
    cond = torch.randn(rows, 77, unet.config.cross_attention_dim, generator=gen).to(device, dtype)
    t = torch.tensor(500, device=device)

    @torch.no_grad()
    def arm(fmt) -> float:
        unet.to(memory_format=fmt)
        synchronize(device)
        start = time.perf_counter()
        unet(x, t, cond)
        synchronize(device)
        return time.perf_counter() - start

    with torch.no_grad():
        outputs = [unet.to(memory_format=fmt)(x, t, cond).sample for fmt in FORMATS.values()]
    return arm, float((outputs[0] - outputs[1]).abs().max())


def train_case(steps: int, device: torch.device):
    """Seconds per step of the demo's ClassDiffusion run (`cdvideo.tasks.train.train`, its `channels_last` key),
    setup excluded, as an arm."""
    from cdvideo.apps.demo import train_config
    from cdvideo.tasks.train import train
    from cdvideo.toyworld import instances

    def arm(fmt) -> float:
        marks: list[float] = []
        with tempfile.TemporaryDirectory() as folder:
            cfg = train_config(instances.get("striped_ball"), Path(folder) / "run", steps, 0.1,
                               {"channels_last": fmt == torch.channels_last})
            train(cfg, on_step=lambda step, logs: (synchronize(device), marks.append(time.perf_counter())))
        return (marks[-1] - marks[0]) / (len(marks) - 1)

    return arm


def cases(sd15: bool, resolution: int) -> list[tuple]:
    """(label, unet, latent shape, frames) for each forward case."""
    from cdvideo.models.loading import load_components
    from cdvideo.pipelines.build import motion_unet
    from cdvideo.pipelines.registry import load_adapter

    m = load_components("toyworld")
    s = m["unet"].config.sample_size
    out = [("toyworld stills: 52 at once, guided", m["unet"].eval(), (104, 4, s, s), 0),
           ("toyworld clip: 16 frames, guided", motion_unet(m, load_adapter("toyworld", torch.float32)).eval(),
            (2, 4, 16, s, s), 16)]
    if sd15:
        real = load_components("sd15-random")["unet"].eval()
        out.append((f"SD1.5's UNet: 1 image at {resolution} px, guided", real,
                    (2, 4, resolution // 8, resolution // 8), 0))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=Flag(int, Range(2, 1000)), default=12, help="timed pairs per forward case")
    p.add_argument("--threads", type=Flag(int, Range(1, 256)), default=None, help="torch threads (default: torch's)")
    p.add_argument("--train-steps", type=Flag(int, Range(2, 10_000)), default=30, help="steps per training run")
    p.add_argument("--train-pairs", type=Flag(int, Range(2, 100)), default=4, help="pairs of training runs")
    p.add_argument("--no-train", action="store_true", help="the forward cases only")
    p.add_argument("--sd15", action="store_true", help="also SD1.5's UNet shape (random weights)")
    p.add_argument("--resolution", type=int, default=256, choices=range(64, 1025, 64), metavar="64..1024",
                   help="SD1.5's image size (--sd15)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="the forward cases' dtype (training runs the demo's config: fp32)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device, dtype = torch.device(a.device), getattr(torch, a.dtype)
    rows = []
    for label, unet, shape, frames in cases(a.sd15, a.resolution):
        arm, diff = forward_case(unet, shape, frames, device, dtype)
        rows.append((label, paired(arm, a.pairs), f"{diff:.1e}"))
    if not a.no_train:
        rows.append(("toyworld training step (the demo's run)", paired(train_case(a.train_steps, device),
                                                                       a.train_pairs), "-"))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, {a.dtype}; medians over the pairs, the speed-up's quartiles in "
          "brackets\n")
    print("| case | NCHW | channels-last | speed-up | largest output difference |")
    print("|---|---|---|---|---|")
    for label, pairs, diff in rows:
        nchw, last = (statistics.median(p[k] for p in pairs) for k in (0, 1))
        q = statistics.quantiles([p[0] / p[1] for p in pairs], n=4)
        print(f"| {label} | {nchw * 1000:.0f} ms | {last * 1000:.0f} ms | {q[1]:.2f}x [{q[0]:.2f}, {q[2]:.2f}] "
              f"| {diff} |")


if __name__ == "__main__":
    main()
