"""Stage 5: the motion adapter, as AnimateDiff trains one (Guo et al. ICLR 2024): a diffusers MotionAdapter matching
the UNet, inserted with UNetMotionModel.from_unet2d; the image model frozen, only the motion modules learn, on
16-frame clips of encoded renders with AnimateDiff's linear-beta schedule and captions naming the motion.

Training runs in rounds, each (steps, loss weighting): a warm-up cosine with a fresh AdamW (a warm restart, SGDR,
Loshchilov & Hutter ICLR 2017), ending with the motion modules saved to work/motion.round/. A stopped build, or
a later one whose rounds begin with the saved ones, goes on from there; batches are functions of (seed, step), so
the run that went on is the run that did not stop."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from cdvideo.apps.worldbuild import common
from cdvideo.apps.worldbuild.common import (ADAPTER, MOTION_SCHEDULE, Curve, log, mark_done, optimizer,
    optimizer_step, pretraining, render_set, round_plan, seed_everything, step_rngs, unet_digest)
from cdvideo.apps.worldbuild.plans import BACKWARDS, SWEPT_CLIPS, MotionPlan, Renders, round_data
from cdvideo.apps.worldbuild.unet import captions, latents, load_text, noised, sample_latents
from cdvideo.models.text import tokenize
from cdvideo.toyworld.world import played_backwards


LATE_FROM = 500  # a "late" round's lowest timestep (of the schedule's 1,000): a round's weighting, not the plan's


def build(work: Path, adapter_dir: Path | None = None):
    """UNetMotionModel of the trained (EMA) UNet and a MotionAdapter (fresh, or a saved round's); only the motion
    modules train."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel  # lazy: start-up time

    unet = UNet2DConditionModel.from_pretrained(str(work / "unet"))
    adapter = MotionAdapter(**ADAPTER, block_out_channels=unet.config.block_out_channels)  # the UNet's widths
    for name, module in adapter.named_modules():  # zero-initialised outputs, as AnimateDiff's: the model starts as
        if name.endswith("proj_out"):             # the image model (diffusers draws them at random)
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    if adapter_dir is not None:
        adapter = MotionAdapter.from_pretrained(str(adapter_dir))
    model = UNetMotionModel.from_unet2d(unet, adapter)
    model.requires_grad_(False)
    trainable = [p for n, p in model.named_parameters() if "motion_modules." in n]
    for p in trainable:
        p.requires_grad_(True)
    return model.train(), trainable


def high_noise_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, min_snr_w: torch.Tensor,
                       cap: float) -> torch.Tensor:
    """max(min-SNR weight, min(1 / SNR, cap)): the epsilon loss in x0 units where noise is high (1 / SNR is the
    x0 error per unit of epsilon error, Salimans & Ho ICLR 2022), where a clip's trajectory is decided."""
    a = alphas_cumprod[t]
    return torch.maximum(min_snr_w, ((1 - a) / a).clamp(max=cap))


def batch_at(step: int, seed: int, data: dict, plan: MotionPlan, tokenizer, t_min: int = 0,
             backwards: bool = False) -> dict:
    """The step's clips, a pure function of (seed, step): noised latents (timesteps t_min and up) and token ids
    (CPU). `backwards`: half as many clips, each beside itself played backwards under the opposite motion word,
    with the same timestep and the same noise reversed, so that only the word tells the two apart."""
    rng, gen = step_rngs(seed, step)
    mean, std = data["latents"]  # (N, F, 4, 16, 16)
    n = plan.clips_per_batch // 2 if backwards else plan.clips_per_batch
    ci = np.sort(rng.choice(len(data["clip_scenes"]), n, replace=False))
    x0 = sample_latents(mean[ci], std[ci], data["scale"], gen).permute(0, 2, 1, 3, 4)  # (n, 4, F, 16, 16)
    scenes = [data["clip_scenes"][c] for c in ci]
    b = noised(x0, data["sched"], gen, plan.min_snr, t_min)
    if backwards:
        scenes += [played_backwards(s) for s in scenes]
        b = {k: torch.cat([v, v.flip(2) if v.dim() == 5 else v]) for k, v in b.items()}  # (B, 4, F, 16, 16)
    return dict(b, ids=tokenize(tokenizer, captions(scenes, rng, plan.caption_drop)))  # ids: (B, 77)


def clip_data(work: Path, seed: int, plan: MotionPlan, swept: Renders | None = None) -> dict:
    """A round's clips (scenes, latents), the schedule and the latent scale: the pretraining clips, or `swept`'s
    (the same clips along another of world.SWEEPS: plans.SWEPT_CLIPS), rendered and encoded the first time."""
    from diffusers import AutoencoderKL, DDPMScheduler  # lazy: start-up time

    if swept is not None:
        clips, clip_scenes = render_set(work, swept, seed)
        if not (work / f"latents_{swept.name}_std.npy").is_file():
            from cdvideo.apps.worldbuild.vae import encode_clips  # lazy: only a swept round needs it
            encode_clips(AutoencoderKL.from_pretrained(str(work / "vae")).eval(), clips, work, swept.name)
    else:
        _, _, _, clip_scenes = pretraining(work, seed, plan.renders)
    return dict(clip_scenes=clip_scenes, latents=latents(work, "clips" if swept is None else swept.name),
                sched=DDPMScheduler(**MOTION_SCHEDULE),
                scale=AutoencoderKL.load_config(str(work / "vae"))["scaling_factor"])


def run(work: Path, seed: int, plan: MotionPlan) -> dict:
    seed_everything(seed)
    tokenizer, text_encoder = load_text(work)
    text_encoder.to(plan.device)
    rounds = [(int(n), w) for n, w in plan.rounds]
    done, curve = resume(work, seed, plan)
    model, trainable = build(work, work / "motion.round" if done else None)
    model.to(plan.device)
    log(f"motion modules: {sum(p.numel() for p in trainable) / 1e6:.2f}M parameters")
    t0, steps = time.time(), sum(n for n, _ in rounds)
    for k in range(done, len(rounds)):
        r0 = sum(n for n, _ in rounds[:k])
        data = clip_data(work, seed, plan, SWEPT_CLIPS.get(round_data(rounds[k][1])[1]))
        train_round(model, trainable, data, text_encoder, tokenizer, curve, (seed, plan, steps), r0, *rounds[k])
        save_round(work, model, seed, plan, rounds[:k + 1], curve)
    curve.save()
    model.cpu().eval().save_motion_modules(str(work / "motion_adapter"))
    info = {"steps": steps, "seconds": round(time.time() - t0), "went_on_after_rounds": done,
            "unet": unet_digest(work)}
    mark_done(work, "motion", info, plan)
    return info


def train_round(model, trainable, data: dict, text_encoder, tokenizer, curve: Curve, run: tuple, r0: int, n: int,
                weighting: str = "min-snr") -> None:
    """Steps r0 .. r0 + n of the run (seed, plan, total steps): a fresh AdamW and a warm-up cosine over the round;
    the epsilon loss weighted by min-SNR, or `high_noise_weights` ("late": those, on timesteps from LATE_FROM
    only, where the caption must decide the clip's direction); `data` holds the round's clips (`clip_data`)."""
    seed, plan, steps = run
    weighting, batches = round_data(weighting)
    device, backwards = plan.device, batches == BACKWARDS
    opt, lr_sched = optimizer(trainable, plan.optim, n)
    t0, alphas_cumprod = time.time(), data["sched"].alphas_cumprod.to(device)
    t_min = LATE_FROM if weighting == "late" else 0
    for step in range(r0, r0 + n):
        b = {k: v.to(device) for k, v in batch_at(step, seed, data, plan, tokenizer, t_min,
                                                   backwards).items()}
        if weighting in ("high-noise", "late"):
            b["w"] = high_noise_weights(alphas_cumprod, b["t"], b["w"], plan.high_noise_cap)
        with torch.no_grad():
            cond = text_encoder(b["ids"]).last_hidden_state  # (B, 77, D)
        cond = cond.repeat_interleave(b["noisy"].shape[2], dim=0)  # (B * F, 77, D), one per frame as the pipeline
        pred = model(b["noisy"], b["t"], cond).sample  # (B, 4, F, 16, 16)
        loss = (b["w"] * (pred - b["noise"]).pow(2).mean(dim=(1, 2, 3, 4))).mean()
        optimizer_step(loss, opt, lr_sched, trainable, plan.optim.max_norm)
        if step % 10 == 0 or step == r0 + n - 1:
            curve.add(step, loss=loss.item())
            log(f"motion step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")


def save_round(work: Path, model, seed: int, plan: MotionPlan, rounds: list[tuple[int, str]], curve: Curve) -> None:
    """The motion modules after the given rounds, with the plan and curve so far, in work/motion.round/."""
    common.save_round(work, "motion", model.save_motion_modules,
                      {"plan": round_plan(seed, plan, unet_digest(work)), "rounds": rounds, "curve": curve.values})


def resume(work: Path, seed: int, plan: MotionPlan) -> tuple[int, Curve]:
    """How many of the plan's rounds the saved state has done (0 unless its plan is this one and its rounds begin
    the plan's, over this UNet), and the curve up to there."""
    curve, blob = Curve(work, "motion"), common.saved_round(work, "motion", seed, plan, unet_digest(work))
    if blob is None:
        return 0, curve
    curve.values = blob["curve"]
    return len(blob["rounds"]), curve
