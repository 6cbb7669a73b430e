"""Loading the base SD1.5 components: hub id or local diffusers folder through `from_pretrained`, or tiny."""

from __future__ import annotations

from pathlib import Path

import torch

from . import tiny
from .errors import CdvideoError


def load_components(model: str, revision: str | None = None, variant: str | None = None,
                    dtype: torch.dtype = torch.float32) -> dict:
    """tokenizer, text_encoder, vae, unet, scheduler (DDPM, for training) of an SD1.5-architecture model."""
    if model == tiny.TINY_ID:
        c = tiny.build_components()
        if dtype != torch.float32:
            for k in ("text_encoder", "vae", "unet"):
                c[k].to(dtype)
        return c
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"revision": revision}
    try:
        return {
            "tokenizer": CLIPTokenizer.from_pretrained(model, subfolder="tokenizer", **kw),
            "text_encoder": CLIPTextModel.from_pretrained(
                model, subfolder="text_encoder", variant=variant, dtype=dtype, **kw).eval(),
            "vae": AutoencoderKL.from_pretrained(model, subfolder="vae", variant=variant, torch_dtype=dtype, **kw),
            "unet": UNet2DConditionModel.from_pretrained(
                model, subfolder="unet", variant=variant, torch_dtype=dtype, **kw),
            "scheduler": DDPMScheduler.from_pretrained(model, subfolder="scheduler", **kw),
        }
    except (OSError, ValueError, EnvironmentError) as e:
        raise load_error(model, e) from None


def load_error(model: str, e: Exception) -> CdvideoError:
    """A one-line explanation for a model that cannot be loaded, with what to do offline."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if Path(model).exists():
        return CdvideoError(f"cannot load model from folder {model}: {first}")
    return CdvideoError(
        f"cannot load model {model!r} ({first[:160]}). Offline, download it once elsewhere "
        f"(`hf download {model}`) and set `model:` to the local diffusers folder, or use `model: tiny` to try cdvideo"
    )
