"""Typed configuration of `cdvideo train-motion`: a motion LoRA learnt from 1-5 reference clips (MotionDirector's
dual path on AnimateDiff), with the same YAML + `key=value` overrides as `cdvideo train`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional

from cdvideo.data.config import load_config
from cdvideo.data.ranges import (
    CLIP_FPS,
    EVERY,
    GRAD_NORM,
    GUIDANCE,
    INFERENCE_STEPS,
    KEPT_CHECKPOINTS,
    LEARNING_RATE,
    LOSS_WEIGHT,
    SEED,
    SIZE,
    STEPS,
    WEIGHT_DECAY,
    Range,
)
from cdvideo.errors import CdvideoError

MAX_REFERENCES = 5


@dataclass
class MotionValidationConfig:
    every: Annotated[int, EVERY] = 0  # steps between validation clips; 0 disables
    prompts: list[str] = field(default_factory=list)  # default: the training prompt
    seeds: list[Annotated[int, SEED]] = field(default_factory=lambda: [0])
    num_inference_steps: Annotated[int, INFERENCE_STEPS] = 25
    guidance_scale: Annotated[float, GUIDANCE] = 7.5


@dataclass
class MotionTrainConfig:
    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # hub id, folder, one-file checkpoint, toyworld
    model_config: Optional[str] = None
    revision: Optional[str] = None
    variant: Optional[str] = None
    adapter: Optional[str] = None  # motion adapter; default the model's (v1-5-2 for SD1.5, the world's own)
    references: list[str] = field(default_factory=list)  # 1-5 clips (mp4, mov, webm, gif, a folder of frames)
    prompt: str = ""  # what the clips show, e.g. "a person riding a bicycle" (MotionDirector's caption)
    output_dir: str = "runs/motion"
    overwrite: bool = False
    num_frames: Annotated[int, Range(2, 32)] = 16  # frames per clip, sampled at `fps` (the adapter's own: 16)
    fps: Annotated[int, CLIP_FPS] = 8
    resolution: Annotated[int, SIZE] = 512  # square frames: short side resized, centre crop
    rank: Annotated[int, Range(1, 1024)] = 32  # MotionDirector's LoRA rank
    max_steps: Annotated[int, STEPS] = 300
    learning_rate: Annotated[float, LEARNING_RATE] = 5e-4  # of the temporal LoRA (MotionDirector: 5e-4)
    spatial_learning_rate: Annotated[float, LEARNING_RATE] = 5e-4
    spatial: bool = True  # the appearance path: a spatial LoRA on single frames, dropped at inference
    debiased: bool = True  # MotionDirector's appearance-debiased temporal loss (Eq. 5-6)
    beta: Annotated[float, LOSS_WEIGHT] = 1.0  # its anchor weight
    # high-noise: the temporal loss x clamp(1/SNR, 1, cap), where a clip's trajectory is decided (the miniature
    # world needs it)
    loss_weighting: Literal["uniform", "high-noise"] = "uniform"
    high_noise_cap: Annotated[float, Range(1, 1000)] = 10.0
    weight_decay: Annotated[float, WEIGHT_DECAY] = 1e-2
    max_grad_norm: Annotated[float, GRAD_NORM] = 1.0
    lr_warmup_steps: Annotated[int, EVERY] = 0
    seed: Annotated[int, SEED] = 42
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    log_every: Annotated[int, STEPS] = 10
    checkpoint_every: Annotated[int, EVERY] = 100  # 0 disables
    checkpoints_total_limit: Optional[Annotated[int, KEPT_CHECKPOINTS]] = 2
    resume: Optional[str] = None  # "latest" or a checkpoint folder
    save_dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    validation: MotionValidationConfig = field(default_factory=MotionValidationConfig)


def load_motion_config(path: str | Path | None, overrides: list[str] = (),
                       values: Mapping[str, Any] | None = None) -> MotionTrainConfig:
    """A `train-motion` config from YAML, `key=value` overrides and typed `values`, checked."""
    cfg = load_config(MotionTrainConfig, path, overrides, values)
    check_motion_config(cfg)
    return cfg


def check_motion_config(cfg: MotionTrainConfig) -> None:
    """Checks across fields that types alone cannot express."""
    if not cfg.references:
        raise CdvideoError("references: give 1-5 reference clips (mp4, mov, webm, gif or a folder of frames)")
    if len(cfg.references) > MAX_REFERENCES:
        raise CdvideoError(f"references: {len(cfg.references)} clips; give at most {MAX_REFERENCES}")
    if not cfg.prompt.strip():
        raise CdvideoError("prompt: describe what the reference clips show, e.g. 'a ball moving in a circle'")
    if cfg.resolution % 8:  # its range is in the schema
        raise CdvideoError(f"resolution: {cfg.resolution} must be a multiple of 8")
    if cfg.resume not in (None, "latest") and not Path(cfg.resume).is_dir():
        raise CdvideoError(f"resume: {cfg.resume} is neither 'latest' nor a checkpoint folder")
