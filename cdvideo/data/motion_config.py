"""Typed configuration of `cdvideo train-motion`: a motion LoRA learnt from 1-5 reference clips (MotionDirector's
dual path on AnimateDiff), with the same YAML + `key=value` overrides as `cdvideo train`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from cdvideo.data.config import load_config
from cdvideo.errors import CdvideoError

MAX_REFERENCES = 5


@dataclass
class MotionValidationConfig:
    every: int = 0  # steps between validation clips; 0 disables
    prompts: list[str] = field(default_factory=list)  # default: the training prompt
    seeds: list[int] = field(default_factory=lambda: [0])
    num_inference_steps: int = 25
    guidance_scale: float = 7.5


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
    num_frames: int = 16  # frames per clip, sampled at `fps`
    fps: int = 8
    resolution: int = 512  # square frames: short side resized, centre crop
    rank: int = 32  # MotionDirector's LoRA rank
    max_steps: int = 300
    learning_rate: float = 5e-4  # of the temporal LoRA (MotionDirector: 5e-4)
    spatial_learning_rate: float = 5e-4
    spatial: bool = True  # the appearance path: a spatial LoRA on single frames, dropped at inference
    debiased: bool = True  # MotionDirector's appearance-debiased temporal loss (Eq. 5-6)
    beta: float = 1.0  # its anchor weight
    loss_weighting: Literal["uniform", "high-noise"] = "uniform"  # high-noise: the temporal loss x clamp(1/SNR, 1,
    high_noise_cap: float = 10.0  # cap), where a clip's trajectory is decided (the miniature world needs it)
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    lr_warmup_steps: int = 0
    seed: int = 42
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    log_every: int = 10
    checkpoint_every: int = 100  # 0 disables
    checkpoints_total_limit: Optional[int] = 2
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
    if not 2 <= cfg.num_frames <= 32:
        raise CdvideoError(f"num_frames: {cfg.num_frames}; the motion adapter takes 2-32 frames (16 is its own)")
    if cfg.resolution < 64 or cfg.resolution % 8:
        raise CdvideoError(f"resolution: {cfg.resolution} must be a multiple of 8, at least 64")
    for key in ("max_steps", "rank", "fps", "log_every"):
        if getattr(cfg, key) < 1:
            raise CdvideoError(f"{key}: must be at least 1")
    for key in ("learning_rate", "spatial_learning_rate"):
        if getattr(cfg, key) <= 0:
            raise CdvideoError(f"{key}: must be above 0")
    if cfg.resume not in (None, "latest") and not Path(cfg.resume).is_dir():
        raise CdvideoError(f"resume: {cfg.resume} is neither 'latest' nor a checkpoint folder")
