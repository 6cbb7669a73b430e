"""Loading the base SD1.5 components: hub id or local diffusers folder through `from_pretrained`, a one-file
checkpoint, or a bundled base from the registry (`toyworld`'s folder; `tiny`, `sd15-random` built in code)."""

from __future__ import annotations

from pathlib import Path

import torch

from cdvideo.data import builtins
from cdvideo.errors import CdvideoError, first_line
from cdvideo.models.single_file import is_single_file, load_single_file


def resolve(model: str) -> str:
    """The folder or hub id `from_pretrained` reads: a bundled base's name names its folder."""
    b = builtins.get(model)
    if b and b.model_dir:
        folder = b.model_dir()
        if not (folder / "model_index.json").is_file():
            raise CdvideoError(f"the {model} model is missing from {folder}; {b.rebuild or 'reinstall cdvideo'}")
        return str(folder)
    return model


def load_components(model: str, revision: str | None = None, variant: str | None = None,
                    dtype: torch.dtype = torch.float32, config: str | None = None) -> dict:
    """tokenizer, text_encoder, vae, unet, scheduler (DDPM, for training) of an SD1.5-architecture model: a hub id,
    a diffusers folder, a one-file checkpoint (read with `config`: sd15 by default), toyworld, tiny, sd15-random."""
    b = builtins.get(model)
    if b and b.build:  # built in code: tiny, or SD1.5-sized with random weights
        c = b.build()
        if dtype != torch.float32:
            for k in ("text_encoder", "vae", "unet"):
                c[k].to(dtype)
        return c
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # lazy: start-up time
    from transformers import CLIPTextModel, CLIPTokenizer  # lazy: start-up time

    if is_single_file(model):
        return load_single_file(model, config or "sd15", dtype)
    model = resolve(model)
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
    first = first_line(e)
    if Path(model).exists():
        return CdvideoError(f"cannot load model from folder {model}: {first}")
    return CdvideoError(
        f"cannot load model {model!r} ({first[:160]}). Offline, download it once elsewhere "
        f"(`hf download {model}`) and set `model:` to the local diffusers folder, or use `model: tiny` to try cdvideo"
    )
