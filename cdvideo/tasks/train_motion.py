"""`cdvideo train-motion`: a motion LoRA from 1-5 reference clips, as MotionDirector trains one on AnimateDiff
(Zhao et al. ECCV 2024).

Two paths share the UNetMotionModel. The spatial path trains a LoRA on the image model's attention with single
frames of the clips: it absorbs their appearance (colours, backgrounds) and is dropped at inference. The temporal
path trains the LoRA on the motion modules' attention with whole clips, the spatial LoRA on and frozen, under the
plain plus the appearance-debiased loss, so that it keeps the motion. One loop, sections in order: checks and
clips, models, LoRA paths, latents and prompt, optimizers, output folder, resume, steps, motion LoRA files. Every
step's randomness derives from (seed, step): a resumed run repeats what an uninterrupted one would have done.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from cdvideo.data import checkpoint, motion_lora
from cdvideo.data.config import to_dict
from cdvideo.data.files import atomic_path, sha256_file, write_text_atomic
from cdvideo.data.lock import run_lock
from cdvideo.data.motion_config import MotionTrainConfig
from cdvideo.data.references import expand, read_references
from cdvideo.data.weights import DTYPES
from cdvideo.errors import CdvideoError
from cdvideo.math.motion import debiased_temporal_loss, high_noise_weight
from cdvideo.models.loading import load_components
from cdvideo.models.motion_lora import LoraSet, spatial_modules, temporal_modules
from cdvideo.models.text import encode_prompts
from cdvideo.pipelines.build import motion_unet
from cdvideo.pipelines.registry import default_adapter, load_adapter, make_scheduler
from cdvideo.tasks.motion_validation import render_motion_validation
from cdvideo.tasks.train import LazyLogs

log = logging.getLogger(__name__)
OWNED = ("motion_lora.safetensors", "diffusers", "config.yaml", "checkpoints", "validation", "logs",
         "reference_frames")
AUTOCAST = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class MotionTrainingStopped(Exception):
    """`should_stop()` said so: the step reached is saved as a checkpoint (resume=latest goes on)."""

    def __init__(self, step: int, folder: Path):
        super().__init__(f"stopped at step {step}; checkpoint {folder}")
        self.step, self.folder = step, folder


def train_motion(cfg: MotionTrainConfig, on_step: Callable[[int, dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Path:
    """Run a motion config to the end; returns the motion LoRA file (AnimateDiff's layout; diffusers' beside).
    `output_dir`'s lock (one writer per run folder) is held from before the checks to the end."""
    with run_lock(cfg.output_dir):
        return _train_motion(cfg, on_step, should_stop)


def _train_motion(cfg: MotionTrainConfig, on_step: Callable[[int, dict], None] | None,
                  should_stop: Callable[[], bool] | None) -> Path:
    # -- Checks and clips: every user mistake surfaces before anything is written --------------------------
    out = Path(cfg.output_dir)
    checkpoint.check_run_folder(out, OWNED, "motion_lora.safetensors", cfg.resume, cfg.overwrite)
    clips = read_references(cfg.references, cfg.num_frames, cfg.fps, cfg.resolution)  # each (F, S, S, 3)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # -- Models: the base, its motion adapter, the UNetMotionModel, all frozen -------------------------------
    m, adapter_name, unet = frozen_models(cfg, dev)

    # -- LoRA paths: temporal (the motion, kept) and spatial (the clips' appearance, dropped) ---------------
    temporal = LoraSet(unet, temporal_modules(unet), cfg.rank, cfg.seed)
    spatial = LoraSet(unet, spatial_modules(unet), cfg.rank, cfg.seed + 1) if cfg.spatial else None
    unet.train()

    # -- Latents and prompt, once ----------------------------------------------------------------------------
    latents = encode_clips(m["vae"], clips, dev)  # each (mean, std) of (1, 4, F, h, w)
    with torch.no_grad():
        cond = encode_prompts(m["text_encoder"], m["tokenizer"], [cfg.prompt]).to(dev)  # (1, 77, D)
    sched = make_scheduler("ddpm", m["scheduler"].config, animatediff=True)  # AnimateDiff's linear betas

    # -- Optimizers ------------------------------------------------------------------------------------------
    opts, lr_scheds = optimizers(cfg, temporal, spatial)

    # -- Output folder ---------------------------------------------------------------------------------------
    checkpoint.reset_run_folder(out, OWNED, cfg.resume, cfg.overwrite)
    write_text_atomic(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    save_reference_frames(clips, cfg, out)
    writer = tensorboard(cfg, out)

    # -- Resume ----------------------------------------------------------------------------------------------
    step = restore(cfg, temporal, spatial, opts, lr_scheds) if cfg.resume else 0

    # -- Steps -----------------------------------------------------------------------------------------------
    paths = {"unet": unet, "temporal": temporal, "spatial": spatial, "cond": cond, "sched": sched, "dev": dev}
    with tqdm(total=cfg.max_steps, initial=step, desc="train-motion") as pbar:
        while step < cfg.max_steps:
            rng = np.random.default_rng([cfg.seed, step])
            logs = train_step(cfg, paths, latents, opts, rng)
            for s in lr_scheds.values():
                s.step()
            step += 1
            stop = should_stop is not None and should_stop()
            at_checkpoint = bool(cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or stop
            if step % cfg.log_every == 0 or step == cfg.max_steps or at_checkpoint:
                report(writer, pbar, step, logs)  # syncs; stops on a NaN before a checkpoint could keep it
            pbar.update(1)
            if at_checkpoint:
                save_checkpoint(cfg, step, temporal, spatial, opts, lr_scheds)
            if cfg.validation.every and step % cfg.validation.every == 0:
                render_validation(cfg, m, unet, temporal, spatial, out, step)
            if on_step is not None:
                on_step(step, LazyLogs(logs))
            if stop:
                raise MotionTrainingStopped(step, checkpoint.checkpoint_dir(out, step))
    if writer is not None:
        writer.close()

    # -- Motion LoRA files: AnimateDiff's layout, and diffusers' in diffusers/ -------------------------------
    lora = temporal.export(metadata(cfg, adapter_name))
    path = motion_lora.write(lora, out / "motion_lora.safetensors", "animatediff", DTYPES[cfg.save_dtype])
    motion_lora.write(lora, out / "diffusers" / "pytorch_lora_weights.safetensors", "diffusers",
                      DTYPES[cfg.save_dtype])
    return path


def frozen_models(cfg: MotionTrainConfig, dev: torch.device) -> tuple[dict, str, torch.nn.Module]:
    """The base's components, the motion adapter's name and the UNetMotionModel over them, frozen on `dev`."""
    m = load_components(cfg.model, cfg.revision, cfg.variant, config=cfg.model_config)
    adapter_name = cfg.adapter or default_adapter(cfg.model)
    unet = motion_unet(m, load_adapter(adapter_name, torch.float32), adapter_name, cfg.model)
    for module in (m["vae"], m["text_encoder"], unet):
        module.requires_grad_(False).to(dev)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return m, adapter_name, unet


def optimizers(cfg: MotionTrainConfig, temporal: LoraSet, spatial: LoraSet | None) -> tuple[dict, dict]:
    """An AdamW per LoRA path, each with its linear warmup: ({path: optimizer}, {path: schedule})."""
    opts = {"temporal": adamw(temporal.parameters(), cfg.learning_rate, cfg)}
    if spatial is not None:
        opts["spatial"] = adamw(spatial.parameters(), cfg.spatial_learning_rate, cfg)
    warmup = lambda s: min(1.0, (s + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps else 1.0  # noqa: E731
    return opts, {k: torch.optim.lr_scheduler.LambdaLR(o, warmup) for k, o in opts.items()}


def train_step(cfg: MotionTrainConfig, paths: dict, latents: list, opts: dict, rng: np.random.Generator) -> dict:
    """One step of each path on one clip: the spatial LoRA on a random frame, then the temporal LoRA on the whole
    clip with the spatial one on and frozen; returns the step's losses (device tensors: no sync per step)."""
    unet, temporal, spatial, dev = paths["unet"], paths["temporal"], paths["spatial"], paths["dev"]
    mean, std = latents[int(rng.integers(len(latents)))]
    gen = torch.Generator(dev).manual_seed(int(rng.integers(2**62)))
    x0 = (mean + std * torch.randn(mean.shape, generator=gen, device=dev))  # (1, 4, F, h, w)
    logs = {}
    if spatial is not None:  # -- spatial path: one frame, the temporal LoRA off
        temporal.enable(False, train=False)
        spatial.enable(True, train=True)
        frame = int(rng.integers(x0.shape[2]))
        pred, target, _ = denoise(cfg, paths, x0[:, :, frame:frame + 1], gen)
        loss = torch.nn.functional.mse_loss(pred, target)
        update(loss, opts["spatial"], spatial.parameters(), cfg.max_grad_norm)
        logs["loss/spatial"] = loss.detach()
    # -- temporal path: the whole clip, the spatial LoRA on and frozen
    temporal.enable(True, train=True)
    if spatial is not None:
        spatial.enable(True, train=False)
    pred, target, t = denoise(cfg, paths, x0, gen)
    plain, debiased = debiased_temporal_loss(pred, target, int(rng.integers(x0.shape[2])), cfg.beta)
    loss = plain + debiased if cfg.debiased else plain
    if cfg.loss_weighting == "high-noise":
        loss = loss * high_noise_weight(paths["sched"].alphas_cumprod, t, cfg.high_noise_cap)[0]
    update(loss, opts["temporal"], temporal.parameters(), cfg.max_grad_norm)
    unet.zero_grad(set_to_none=True)
    return {**logs, "loss/temporal": plain.detach(), "loss/debiased": debiased.detach(), "loss": loss.detach()}


def denoise(cfg: MotionTrainConfig, paths: dict, x0: torch.Tensor, gen: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The UNet's noise prediction for x0 (1, 4, F, h, w) noised at a random timestep, its target, the timestep."""
    sched, dev = paths["sched"], paths["dev"]
    noise = torch.randn(x0.shape, generator=gen, device=dev)
    t = torch.randint(0, sched.config.num_train_timesteps, (1,), generator=gen, device=dev)
    noisy = sched.add_noise(x0, noise, t)
    cond = paths["cond"].repeat_interleave(x0.shape[2], dim=0)  # (F, 77, D): one per frame, as the pipeline
    with torch.autocast(dev.type, AUTOCAST[cfg.mixed_precision], enabled=AUTOCAST[cfg.mixed_precision] is not None):
        pred = paths["unet"](noisy, t, cond).sample.float()  # (1, 4, F, h, w)
    target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(x0, noise, t)
    return pred, target, t


def update(loss: torch.Tensor, opt, params: list, max_norm: float) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()


def adamw(params: list, lr: float, cfg: MotionTrainConfig):
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def encode_clips(vae, clips: list[np.ndarray], dev) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each clip's VAE posterior, scaled: (mean, std), each (1, 4, F, h, w)."""
    out = []
    for clip in clips:
        x = torch.from_numpy(clip).permute(0, 3, 1, 2).float().to(dev) / 127.5 - 1  # (F, 3, S, S)
        dists = [vae.encode(x[i:i + 8]).latent_dist for i in range(0, len(x), 8)]
        mean, std = (torch.cat([getattr(d, k) for d in dists]) * vae.config.scaling_factor for k in ("mean", "std"))
        out.append((mean.permute(1, 0, 2, 3)[None], std.permute(1, 0, 2, 3)[None]))  # (1, 4, F, h, w)
    return out


def metadata(cfg: MotionTrainConfig, adapter: str) -> dict:
    """What the LoRA was trained on: base, adapter, reference files and their sha256, the prompt and settings."""
    refs = [{"file": p.name, "sha256": sha256_file(p)} for p in expand(cfg.references)]
    return {"format": "cdvideo-motion-lora", "base_model": Path(cfg.model).name if Path(cfg.model).exists()
            else cfg.model, "adapter": adapter, "prompt": cfg.prompt, "references": refs,
            "rank": cfg.rank, "steps": cfg.max_steps, "spatial": cfg.spatial, "debiased": cfg.debiased}


def save_reference_frames(clips: list[np.ndarray], cfg: MotionTrainConfig, out: Path) -> None:
    """The frames trained on, normalised, as output_dir/reference_frames/<i>_<name>/NN.png."""
    from PIL import Image  # lazy: start-up time

    for i, (clip, src) in enumerate(zip(clips, expand(cfg.references))):
        folder = out / "reference_frames" / f"{i}_{src.stem}"
        for k, frame in enumerate(clip):
            with atomic_path(folder / f"{k:02d}.png") as tmp:
                Image.fromarray(frame).save(tmp, format="PNG")


def tensorboard(cfg: MotionTrainConfig, out: Path):
    if cfg.report_to == "none":
        return None
    from torch.utils.tensorboard import SummaryWriter  # lazy: start-up time

    return SummaryWriter(str(out / "logs" / "train-motion"))


def report(writer, pbar, step: int, logs: dict) -> None:
    """Read the step's losses (one sync), stop on a non-finite one, log them and show them."""
    values = dict(LazyLogs(logs))
    if not math.isfinite(values["loss"]):
        raise CdvideoError(f"loss became {values['loss']} at step {step}; stopped without writing the motion LoRA. "
                           "Lower learning_rate or use mixed_precision=no, then resume=latest")
    if writer is not None:
        for k, v in values.items():
            writer.add_scalar(k, v, step)
    pbar.set_postfix(loss=f"{values['loss']:.4f}", temporal=f"{values['loss/temporal']:.4f}")


def render_validation(cfg, m, unet, temporal, spatial, out: Path, step: int) -> None:
    """Validation clips with the temporal LoRA only (the spatial one off, as at inference)."""
    if spatial is not None:
        spatial.enable(False)
    render_motion_validation(cfg, m, unet, out, step)
    if spatial is not None:
        spatial.enable(True)


def save_checkpoint(cfg, step: int, temporal: LoraSet, spatial: LoraSet | None, opts: dict, scheds: dict) -> Path:
    state = {"temporal": temporal.state(), "spatial": spatial.state() if spatial else {},
             "optimizers": {k: o.state_dict() for k, o in opts.items()},
             "lr_schedulers": {k: s.state_dict() for k, s in scheds.items()}}
    return checkpoint.save(cfg.output_dir, step, state, keep=cfg.checkpoints_total_limit)


def restore(cfg, temporal: LoraSet, spatial: LoraSet | None, opts: dict, scheds: dict) -> int:
    """Load a checkpoint's LoRA tensors, optimizers and schedules; returns its step."""
    folder = checkpoint.resolve_resume(cfg.output_dir, cfg.resume)
    state = checkpoint.load(folder)
    if set(state["optimizers"]) != set(opts):
        raise CdvideoError(f"resume: {folder} was trained with spatial={not cfg.spatial}; keep the run's setting")
    temporal.load_state(state["temporal"])
    if spatial is not None:
        spatial.load_state(state["spatial"])
    for k, o in opts.items():
        o.load_state_dict(state["optimizers"][k])
        scheds[k].load_state_dict(state["lr_schedulers"][k])
    log.info("resumed from %s (step %d)", folder, state["step"])
    return int(state["step"])
