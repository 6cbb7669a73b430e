"""Registries of what a pipeline is built from: motion adapters by name (bundled bases name their own), schedulers
by short name with AnimateDiff's settings, and the device and dtype."""

from __future__ import annotations

from pathlib import Path

import torch

from cdvideo.data import builtins, weights
from cdvideo.errors import CdvideoError
from cdvideo.models import single_file as bases
from cdvideo.models.loading import load_error
from cdvideo.pipelines import presets

ADAPTERS = {
    "v1-5-2": "guoyww/animatediff-motion-adapter-v1-5-2",
    "v1-5-3": "guoyww/animatediff-motion-adapter-v1-5-3",
    "v1-5": "guoyww/animatediff-motion-adapter-v1-5",
    "v1-5-2-random": "sd15-random",  # v1-5-2's layout with random weights, for benchmarks
}  # besides these, a bundled base's name (toyworld, tiny, sd15-random) names its own adapter
DEFAULT_ADAPTER = "v1-5-2"


def default_adapter(model: str) -> str:
    """The motion adapter a base renders with unless --adapter says otherwise: a bundled base's own, else v1-5-2."""
    b = builtins.get(model)
    return model if b and (b.adapter_dir or b.build_adapter) else DEFAULT_ADAPTER
# AnimateDiff's motion modules were trained with these DDIM settings
ANIMATEDIFF_SCHEDULER = {"beta_schedule": "linear", "clip_sample": False, "timestep_spacing": "linspace",
                         "steps_offset": 1}
SCHEDULERS = {
    "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp": "DPMSolverMultistepScheduler", "pndm": "PNDMScheduler", "lms": "LMSDiscreteScheduler",
    "ddpm": "DDPMScheduler", "lcm": "LCMScheduler",
}


def make_scheduler(name: str, base_config, animatediff: bool, **overrides):
    """A scheduler by short name from the base model's config (with AnimateDiff's settings for video, and a
    few-step preset's on top)."""
    import diffusers  # lazy: start-up time

    if name not in SCHEDULERS:
        raise CdvideoError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    cls = getattr(diffusers, SCHEDULERS[name])
    return cls.from_config(base_config, **{**(ANIMATEDIFF_SCHEDULER if animatediff else {}), **overrides})


def pick_device(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    """CUDA when present with fp16 there; fp32 on CPU. Explicit choices win."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is not None and dtype not in weights.DTYPES:
        raise CdvideoError(f"--dtype {dtype}: choose from {', '.join(weights.DTYPES)}")
    return dev, weights.DTYPES[dtype] if dtype else (torch.float16 if dev.type == "cuda" else torch.float32)


def load_adapter(name: str, dtype: torch.dtype):
    """A MotionAdapter by registry name (few-step presets included), hub id, local folder, or one file (an original
    AnimateDiff motion module or a diffusers state dict)."""
    from diffusers import MotionAdapter  # lazy: start-up time

    ref = presets.adapter_source(name) if name in presets.PRESETS else ADAPTERS.get(name, name)
    if Path(ref).is_file():
        return bases.load_motion_file(ref, dtype)
    b = builtins.get(ref)
    if b and b.build_adapter:
        adapter = b.build_adapter()
        return adapter if dtype == torch.float32 else adapter.to(dtype)
    if b and b.adapter_dir:
        ref = str(b.adapter_dir())
    if "/" not in ref and not Path(ref).exists():
        known = ", ".join([*ADAPTERS, *builtins.names(), *presets.PRESETS])
        raise CdvideoError(f"unknown motion adapter {name!r}; use one of {known}, "
                           "a hub id, a local folder or a motion-module file")
    try:
        return MotionAdapter.from_pretrained(ref, torch_dtype=dtype)
    except (OSError, ValueError) as e:
        raise load_error(ref, e) from None
