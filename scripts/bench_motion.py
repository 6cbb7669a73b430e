"""`cdvideo train-motion`'s step against the bare temporal-LoRA step, side by side, at real SD1.5 + v1-5-2 size
(random weights), in one run.

    python scripts/bench_motion.py [--resolution 128] [--frames 16] [--steps 3] [--rounds 2] [--bf16]

The bare step is what a motion LoRA cannot do without: the UNetMotionModel's forward on a clip, the MSE, backward and
AdamW on the temporal LoRA only. The motion step is `cdvideo.tasks.train_motion.train_step` itself: MotionDirector's
spatial path on one frame, then the temporal path on the clip with the appearance-debiased loss. Both use the same
model, LoRA layers (rank 32) and clip latents; they alternate for `--rounds` and the fastest round counts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def build(model: str, rank: int, resolution: int, frames: int, bf16: bool = False):
    from cdvideo.data.motion_config import MotionTrainConfig
    from cdvideo.models.loading import load_components
    from cdvideo.models.motion_lora import LoraSet, spatial_modules, temporal_modules
    from cdvideo.pipelines.build import motion_unet
    from cdvideo.pipelines.registry import load_adapter, make_scheduler

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    m = load_components(model)
    unet = motion_unet(m, load_adapter(model, torch.float32), model, model).requires_grad_(False).to(dev).train()
    temporal = LoraSet(unet, temporal_modules(unet), rank, 0)
    spatial = LoraSet(unet, spatial_modules(unet), rank, 1)
    h = resolution // 8
    gen = torch.Generator().manual_seed(0)
    latents = [(torch.randn(1, 4, frames, h, h, generator=gen).to(dev), torch.full((1, 4, frames, h, h), 0.01,
                                                                                    device=dev))]
    cond = torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen).to(dev)
    cfg = MotionTrainConfig(model=model, references=["-"], prompt="-", rank=rank, num_frames=frames,
                            resolution=resolution, report_to="none", mixed_precision="bf16" if bf16 else "no")
    paths = {"unet": unet, "temporal": temporal, "spatial": spatial, "cond": cond, "dev": dev,
             "sched": make_scheduler("ddpm", m["scheduler"].config, animatediff=True)}
    return cfg, paths, latents


def timed(fn, steps: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> None:
    from cdvideo.tasks.train_motion import adamw, denoise, train_step, update

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sd15-random")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast, as on a GPU (fp32 LoRA weights)")
    args = p.parse_args(argv)
    cfg, paths, latents = build(args.model, args.rank, args.resolution, args.frames, args.bf16)
    temporal, spatial = paths["temporal"], paths["spatial"]
    opts = {"temporal": adamw(temporal.parameters(), cfg.learning_rate, cfg),
            "spatial": adamw(spatial.parameters(), cfg.spatial_learning_rate, cfg)}
    rng = np.random.default_rng(0)

    def bare():  # the temporal LoRA alone: forward on the clip, MSE, backward, AdamW
        spatial.enable(False, train=False)
        temporal.enable(True, train=True)
        gen = torch.Generator(paths["dev"]).manual_seed(int(rng.integers(2**62)))
        pred, target, _ = denoise(cfg, paths, latents[0][0], gen)
        update(torch.nn.functional.mse_loss(pred, target), opts["temporal"], temporal.parameters(), 1.0)

    def ours():
        train_step(cfg, paths, latents, opts, rng)

    rows = {"bare temporal-LoRA step": [], "cdvideo motion step": []}
    for _ in range(args.rounds):
        rows["bare temporal-LoRA step"].append(timed(bare, args.steps))
        rows["cdvideo motion step"].append(timed(ours, args.steps))
    best = {k: min(v) for k, v in rows.items()}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.model}, {args.frames} frames at {args.resolution} px, LoRA rank {args.rank}, {device}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}")
    print("| step | s/step | ratio |\n|---|---|---|")
    for k, v in best.items():
        print(f"| {k} | {v:.3f} | {v / best['bare temporal-LoRA step']:.2f}x |")


if __name__ == "__main__":
    main()
