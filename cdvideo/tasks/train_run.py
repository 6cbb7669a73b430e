"""A ClassDiffusion run's folder: checked before anything is written, its frames and config, its checkpoints'
trainable tensors, and the weights file it ends with (`tasks.train` runs the loop)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from cdvideo.data import checkpoint, weights
from cdvideo.data.config import TrainConfig, to_dict
from cdvideo.data.files import atomic_path, sha256_file
from cdvideo.data.photos import Concept
from cdvideo.data.video import is_video
from cdvideo.errors import CdvideoError
from cdvideo.models.single_file import is_single_file

log = logging.getLogger("cdvideo.tasks.train")  # the loop's logger: one stream for a run
OWNED = ("weights.safetensors", "config.yaml", "checkpoints", "validation", "logs", "subject_frames")


def save_weights(cfg: TrainConfig, state: dict, path: Path) -> None:
    """The run's weights file: trained K/V and token rows, with the base, tokens and config as metadata."""
    weights.save(path, weights.PersonalWeights(
        unet=state["unet"], tokens=cfg.added_tokens(), class_words=cfg.token_class_words(),
        embeddings=state["token_embeddings"],
        metadata={"base_model": cfg.model, "base_revision": cfg.revision or "", "config": to_dict(cfg),
                  "initializers": cfg.token_initializers(), **base_record(cfg)},
    ), dtype=cfg.save_dtype)


def trainable_state(unet, kv_names: list[str], rows) -> dict:
    params = dict(unet.named_parameters())
    return {"unet": {n: params[n].detach().cpu().clone() for n in kv_names},
            "token_embeddings": rows.rows.detach().cpu().clone()}


def restore(cfg: TrainConfig, unet, rows, optimizer, lr_scheduler) -> int:
    """Load a checkpoint's trainable tensors, optimizer, schedule and RNG; returns its step."""
    folder = checkpoint.resolve_resume(cfg.output_dir, cfg.resume)
    state = checkpoint.load(folder)
    if state["tokens"] != cfg.added_tokens():
        raise CdvideoError(f"resume: {folder} was trained for tokens {state['tokens']}, not this config's")
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for n, t in state["trainable"]["unet"].items():
            params[n].copy_(t)
        rows.rows.copy_(state["trainable"]["token_embeddings"])
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    checkpoint.set_rng_state(state["rng"])
    log.info("resumed from %s (step %d)", folder, state["step"])
    return int(state["step"])


def check_output_dir(cfg: TrainConfig) -> None:
    """Refuse to overwrite an earlier run unless `overwrite: true` (or `resume` continues it)."""
    checkpoint.check_run_folder(cfg.output_dir, OWNED, "weights.safetensors", cfg.resume, cfg.overwrite)


def reset_output_dir(cfg: TrainConfig) -> None:
    """Create the output folder; with `overwrite: true` (and no resume), remove the earlier run's files."""
    checkpoint.reset_run_folder(cfg.output_dir, OWNED, cfg.resume, cfg.overwrite)


def save_video_frames(cfg: TrainConfig, concepts: list[Concept], out: Path) -> None:
    """The frames picked from a subject video, in output_dir/subject_frames/<token>/, to see what was trained on."""

    for c, concept in zip(cfg.concepts, concepts):
        if is_video(c.images):
            folder = out / "subject_frames" / c.token
            for i, image in enumerate(concept.images):
                with atomic_path(folder / f"{i:02d}.png") as tmp:
                    image.save(tmp, format="PNG")
            log.info("trained on %d frames of %s: %s", len(concept.images), c.images, folder)


def base_record(cfg: TrainConfig) -> dict:
    """For a one-file base: its sha256 (so `animate` can check it gets the same base) and how it was read."""

    if not is_single_file(cfg.model):
        return {}
    return {"base_sha256": sha256_file(cfg.model), "base_config": cfg.model_config or "sd15"}


def nan_error(cfg: TrainConfig, step: int, loss: float) -> CdvideoError:
    found = checkpoint.list_checkpoints(cfg.output_dir)
    last = f"last good checkpoint: {found[-1]}" if found else "no checkpoint was saved yet"
    value = "NaN" if math.isnan(loss) else str(loss)
    return CdvideoError(f"loss became {value} at step {step}; stopped without writing weights ({last}). "
                        "Lower optimizer.learning_rate or use mixed_precision=no, then resume=latest")
