"""Few-step motion adapters people use for speed, with the scheduler settings they were distilled for.

- AnimateLCM (Wang et al. 2024): its MotionAdapter plus its LCM LoRA on the image model, `LCMScheduler` with linear
  betas, 4-8 steps, guidance 1-2.
- AnimateDiff-Lightning (Lin & Yang 2024): one file per step count (1, 2, 4, 8) holding a v1-5-2-layout
  MotionAdapter state dict; Euler with trailing timestep spacing and linear betas, guidance 1.0.

`--adapter lightning-4` fetches the file from the hub; offline, download it once and pass the file with
`--adapter FILE --preset lightning-4`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cdvideo.data.hub import download_file
from cdvideo.errors import CdvideoError


@dataclass(frozen=True)
class Preset:
    repo: str
    file: str | None  # one file in the repo holding the adapter; None: the repo is a MotionAdapter folder
    scheduler: str  # a name of pipelines.SCHEDULERS
    scheduler_kwargs: dict = field(default_factory=dict)
    num_inference_steps: int = 4
    guidance_scale: float = 1.0
    lora: tuple[str, str, float] | None = None  # (repo, weight file, scale) for the image model


LIGHTNING = "ByteDance/AnimateDiff-Lightning"
PRESETS = {
    "animatelcm": Preset("wangfuyun/AnimateLCM", None, "lcm", {"beta_schedule": "linear"}, 6, 1.5,
                         ("wangfuyun/AnimateLCM", "AnimateLCM_sd15_t2v_lora.safetensors", 0.8)),
    **{f"lightning-{n}": Preset(LIGHTNING, f"animatediff_lightning_{n}step_diffusers.safetensors", "euler",
                                {"timestep_spacing": "trailing", "beta_schedule": "linear"}, n, 1.0)
       for n in (1, 2, 4, 8)},
}


def get(name: str) -> Preset:
    if name not in PRESETS:
        raise CdvideoError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def fetch(repo: str, file: str) -> str:
    """A file of a hub repo, from the local cache or the network; offline, a one-line error saying what to do."""
    return str(download_file(repo, file, f"{file} from {repo}"))


def adapter_source(name: str) -> str:
    """Where a preset's motion adapter comes from: a downloaded file, or the hub folder id."""
    p = get(name)
    return fetch(p.repo, p.file) if p.file else p.repo


def lora_file(name: str, local: str | None = None) -> tuple[str, float] | None:
    """The image-model LoRA a preset needs (AnimateLCM's), as (file, scale)."""
    p = get(name)
    if p.lora is None:
        return None
    if local is not None:
        if not Path(local).is_file():
            raise CdvideoError(f"--lcm-lora {local}: file not found")
        return local, p.lora[2]
    return fetch(p.lora[0], p.lora[1]), p.lora[2]
