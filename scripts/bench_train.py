"""`cdvideo train`'s step against the bare UNet step, side by side, at real SD1.5 size (random weights).

    python scripts/bench_train.py [--resolution 256] [--batch-sizes 1 2] [--steps 3] [--rounds 2] [-- key=value ...]

The bare step is what a step cannot do without: UNet forward + backward + AdamW on the same trainable
cross-attention K/V, on random latents and random text states. The train step is `cdvideo.tasks.train.train()` itself
(the function the CLI calls) with `model=sd15-random`, timed from its `on_step` callback, its sections split by a
`timing.StepTimer`. Each measurement runs in its own process (peak memory is its own), bare and train in turn,
`--rounds` times; the fastest round counts (a shared machine drifts). Extra `key=value` arguments go to the train
config (e.g. `latent_pool=off` for the plain path, `mixed_precision=bf16` on a GPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16


def peak_memory_gb() -> dict:
    import torch

    out = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if torch.cuda.is_available():
        out["peak_vram_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def unet_forward_flops(unet, batch: int, resolution: int, device, dtype) -> float:
    """FLOPs of one UNet forward at this batch and resolution (under the step's autocast), by FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    h = resolution // 8
    x = torch.randn(batch, 4, h, h, device=device, dtype=dtype)
    cond = torch.randn(batch, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    bf16 = dtype == torch.bfloat16  # the fp32 master K/V need the step's autocast, as in the timed steps
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16), \
            FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor([500] * batch, device=device), cond)
    return float(counter.get_total_flops())


def bare(arch: str, batch: int, resolution: int, steps: int, warmup: int, bf16: bool) -> dict:
    """UNet forward + backward + AdamW on the K/V, random latents and text states."""
    import torch

    from cdvideo.data import weights
    from cdvideo.models import architectures as tiny

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if bf16 else torch.float32
    with torch.random.fork_rng():
        torch.manual_seed(0)
        from diffusers import UNet2DConditionModel
        unet = UNet2DConditionModel(**tiny.ARCHITECTURES[arch]["unet"]).to(dev, dtype)
    unet.requires_grad_(False)
    kv = [p for n, p in unet.named_parameters() if n in set(weights.cross_attention_names(unet))]
    for p in kv:
        p.data = p.data.float()
        p.requires_grad_(True)
    opt = torch.optim.AdamW(kv, lr=1e-5, fused=dev.type == "cuda")
    h = resolution // 8
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        x = torch.randn(batch, 4, h, h, device=dev, dtype=dtype)
        cond = torch.randn(batch, 77, unet.config.cross_attention_dim, device=dev, dtype=dtype)
        t = torch.randint(0, 1000, (batch,), device=dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = (unet(x, t, cond).sample.float() - x.float()).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    out = {"sec_per_step": sum(times) / len(times), **peak_memory_gb()}
    out["unet_forward_flops"] = unet_forward_flops(unet, batch, resolution, dev, dtype)  # after the peak reading
    return out


def train_step(arch: str, batch: int, resolution: int, steps: int, warmup: int, overrides: list[str]) -> dict:
    """`cdvideo.tasks.train.train()` for warmup + steps steps; seconds per step after warmup and the split."""
    import torch

    from cdvideo.data.config import load_train_config
    from cdvideo.tasks.timing import StepTimer
    from cdvideo.tasks.train import train

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    timer, stamps = StepTimer(dev), []

    def on_step(step: int, logs) -> None:
        if dev == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if step == warmup:
            timer.reset()

    with tempfile.TemporaryDirectory() as out:
        cfg = load_train_config(None, [
            f"model={arch}", f"output_dir={out}/run", "concepts.0.images=samples/dog", "concepts.0.class_word=dog",
            f"resolution={resolution}", f"batch_size={batch}", f"max_steps={warmup + steps}", "checkpoint_every=0",
            "report_to=none", "validation.every=0", *overrides])
        t0 = time.perf_counter()
        train(cfg, on_step=on_step, timer=timer)
        total = time.perf_counter() - t0
    split = timer.split()
    per_step = (stamps[-1] - stamps[warmup - 1]) / steps
    accounted = sum(v for k, v in split.items() if not k.startswith("setup/"))
    split["other"] = max(per_step - accounted, 0.0)
    return {"sec_per_step": per_step, "split": split, "setup_and_save_s": total - (stamps[-1] - stamps[0]),
            **peak_memory_gb()}


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    bf16 = any(o == "mixed_precision=bf16" for o in args.overrides)
    if args.worker == "bare":
        result = bare(args.arch, args.batch_size, args.resolution, args.steps, args.warmup, bf16)
    else:
        result = train_step(args.arch, args.batch_size, args.resolution, args.steps, args.warmup, args.overrides)
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(kind: str, batch: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--batch-size", str(batch), "--resolution",
           str(args.resolution), "--steps", str(args.steps), "--warmup", str(args.warmup), "--arch", args.arch,
           "--", *args.overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def report(args: argparse.Namespace) -> None:
    import torch

    device = (torch.cuda.get_device_name() if torch.cuda.is_available()
              else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)")
    print(f"# bench_train: {device}, torch {torch.__version__}, {args.resolution} px, {args.arch} (random weights), "
          f"{time.strftime('%Y-%m-%d')}; overrides: {' '.join(args.overrides) or 'none'}")
    for batch in args.batch_sizes:
        best: dict[str, dict] = {}
        for _ in range(args.rounds):
            for kind in ("bare", "train"):
                r = run_worker(kind, batch, args)
                if kind not in best or r["sec_per_step"] < best[kind]["sec_per_step"]:
                    best[kind] = r
        b, t = best["bare"], best["train"]
        print(f"\n## batch {batch}")
        print(f"bare step   {b['sec_per_step']:7.3f} s   peak RSS {b['peak_rss_gb']:.2f} GB"
              + (f"   peak VRAM {b['peak_vram_gb']:.2f} GB" if "peak_vram_gb" in b else ""))
        print(f"train step  {t['sec_per_step']:7.3f} s   peak RSS {t['peak_rss_gb']:.2f} GB"
              + (f"   peak VRAM {t['peak_vram_gb']:.2f} GB" if "peak_vram_gb" in t else ""))
        print(f"ratio       {t['sec_per_step'] / b['sec_per_step']:7.3f} x   "
              f"(setup + save {t['setup_and_save_s']:.1f} s)")
        print("split of one train step:")
        for name, sec in sorted(t["split"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:22s} {sec:7.3f} s  {100 * sec / t['sec_per_step']:5.1f}%")
        print(flop_line(b["unet_forward_flops"], b["sec_per_step"], t["sec_per_step"], device))


def flop_line(forward_flops: float, bare_s: float, train_s: float, device: str) -> str:
    """Achieved UNet TFLOP/s of both steps, and the share of the GPU's dense bf16 peak where it is known."""
    # forward + backward: the backward computes input gradients through every layer (~1x forward) and weight
    # gradients only for the K/V (negligible): ~2x the forward's FLOPs
    gpu = next((k for k in GPU_PEAK_TFLOPS if k in device), None)
    parts = []
    for name, sec in (("bare", bare_s), ("train", train_s)):
        achieved = 2 * forward_flops / sec / 1e12
        parts.append(f"{name} step {achieved:.2f} TFLOP/s"
                     + (f" ({100 * achieved / GPU_PEAK_TFLOPS[gpu]:.1f}% of {gpu} bf16 peak)" if gpu else ""))
    return f"UNet: {forward_flops / 1e12:.3f} TFLOP per forward; " + "; ".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--arch", default="sd15-random", choices=["sd15-random", "tiny"], help="tiny: a quick check")
    p.add_argument("--worker", choices=["bare", "train"], help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="key=value for the train config")
    args = p.parse_args()
    if args.worker:
        worker(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
