"""Stage 5: the motion adapter, as AnimateDiff trains one (Guo et al. ICLR 2024): a diffusers MotionAdapter matching
the UNet, inserted with UNetMotionModel.from_unet2d; the image model frozen, only the motion modules learn, on
16-frame clips of encoded renders with AnimateDiff's linear-beta schedule and captions naming the motion."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from common import (ADAPTER, Curve, MOTION_SCHEDULE, log, mark_done, optimizer_step, seed_everything, step_rngs,
                    warmup_cosine)
from train_text import datasets
from train_unet import captions, latents, load_text, noised, sample_latents

from cdvideo.text import tokenize


def build(work: Path):
    """UNetMotionModel of the trained (EMA) UNet and a fresh MotionAdapter; only the motion modules train."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    unet = UNet2DConditionModel.from_pretrained(str(work / "unet"))
    adapter = MotionAdapter(**ADAPTER)
    for name, module in adapter.named_modules():  # zero-initialised outputs, as AnimateDiff's: the model starts as
        if name.endswith("proj_out"):             # the image model (diffusers draws them at random)
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    model = UNetMotionModel.from_unet2d(unet, adapter)
    model.requires_grad_(False)
    trainable = [p for n, p in model.named_parameters() if "motion_modules." in n]
    for p in trainable:
        p.requires_grad_(True)
    return model.train(), trainable


def batch_at(step: int, seed: int, data: dict, clips_per_batch: int, tokenizer) -> dict:
    """The step's clips, a pure function of (seed, step): noised latents and token ids (CPU)."""
    rng, gen = step_rngs(seed, step)
    mean, std = data["latents"]  # (N, F, 4, 16, 16)
    ci = np.sort(rng.choice(len(data["clip_scenes"]), clips_per_batch, replace=False))
    x0 = sample_latents(mean[ci], std[ci], data["scale"], gen).permute(0, 2, 1, 3, 4)  # (B, 4, F, 16, 16)
    ids = tokenize(tokenizer, captions([data["clip_scenes"][c] for c in ci], rng))  # (B, 77)
    return dict(noised(x0, data["sched"], gen), ids=ids)


def run(work: Path, seed: int, steps: int = 1200, clips_per_batch: int = 4, lr: float = 1e-3,
        device: str = "cpu") -> dict:
    from diffusers import AutoencoderKL, DDPMScheduler

    seed_everything(seed)
    _, _, _, clip_scenes = datasets(work, seed)
    tokenizer, text_encoder = load_text(work)
    text_encoder.to(device)
    data = dict(clip_scenes=clip_scenes, latents=latents(work, "clips"), sched=DDPMScheduler(**MOTION_SCHEDULE),
                scale=AutoencoderKL.load_config(str(work / "vae"))["scaling_factor"])
    model, trainable = build(work)
    model.to(device)
    log(f"motion modules: {sum(p.numel() for p in trainable) / 1e6:.2f}M parameters")
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=1e-2)
    lr_sched = warmup_cosine(opt, steps, 50, floor=0.1)
    curve, t0 = Curve(work, "motion"), time.time()
    for step in range(steps):
        b = {k: v.to(device) for k, v in batch_at(step, seed, data, clips_per_batch, tokenizer).items()}
        with torch.no_grad():
            cond = text_encoder(b["ids"]).last_hidden_state  # (B, 77, D)
        cond = cond.repeat_interleave(b["noisy"].shape[2], dim=0)  # (B * F, 77, D), one per frame as the pipeline
        pred = model(b["noisy"], b["t"], cond).sample
        loss = (b["w"] * (pred - b["noise"]).pow(2).mean(dim=(1, 2, 3, 4))).mean()
        optimizer_step(loss, opt, lr_sched, trainable)
        if step % 10 == 0 or step == steps - 1:
            curve.add(step, loss=loss.item())
            log(f"motion step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
    curve.save()
    model.cpu().eval().save_motion_modules(str(work / "motion_adapter"))
    info = {"steps": steps, "clips_per_batch": clips_per_batch, "device": device,
            "seconds": round(time.time() - t0)}
    mark_done(work, "motion", info)
    return info
