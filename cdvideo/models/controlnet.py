"""ControlNets for AnimateDiff's ControlNet pipelines: a diffusers folder, a hub id or one `.safetensors` file,
checked against the base it conditions before anything renders."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from cdvideo.data import builtins
from cdvideo.errors import CdvideoError, first_line
from cdvideo.models.loading import load_error

FIT_KEYS = ("cross_attention_dim", "block_out_channels", "in_channels")  # what a ControlNet shares with its UNet


def load_controlnet(ref: str, dtype: torch.dtype, sparse: bool = False):
    """A `ControlNetModel` (`SparseControlNetModel` when `sparse`: SparseCtrl) from a folder, a bundled base's name
    (`toyworld:mask`) or a hub id (`from_pretrained`), or one file (`from_single_file`, SD1.5's layout); a damaged
    or missing one is one line."""
    import diffusers  # lazy: start-up time

    cls = diffusers.SparseControlNetModel if sparse else diffusers.ControlNetModel
    source = builtins.controlnet_ref(ref)  # a bundled base's (`toyworld:mask`) is a folder in the package
    path = Path(source)
    try:
        if path.is_file():
            return cls.from_single_file(str(path), torch_dtype=dtype)
        if not path.exists() and not re.fullmatch(r"[\w.-]+/[\w.-]+", ref):  # neither a path nor a hub id
            raise CdvideoError(f"ControlNet {ref}: no such folder or file; give a diffusers folder, a .safetensors "
                               "file or a hub id")
        return cls.from_pretrained(source, torch_dtype=dtype)
    except CdvideoError:
        raise
    except Exception as e:  # safetensors, huggingface_hub and diffusers raise many types for a bad file
        if path.exists():
            first = first_line(e, 160)
            raise CdvideoError(f"ControlNet {ref}: cannot be read ({first}); is it a complete ControlNet?") from None
        raise load_error(ref, e) from None


def check_fits(controlnet, unet, vae_factor: int, ref: str, base: str) -> None:
    """A one-line error naming both unless the ControlNet was made for a UNet of the base's shape, its condition
    images brought down to the latents' size (`vae_factor`: the VAE's downsampling)."""
    want = {**{k: _plain(unet.config.get(k)) for k in FIT_KEYS}, "condition downsampling": vae_factor}
    have = {**{k: _plain(controlnet.config.get(k)) for k in FIT_KEYS},
            "condition downsampling": 2 ** (len(controlnet.config.conditioning_embedding_out_channels) - 1)}
    if have != want:
        diff = ", ".join(f"{k} {have[k]} vs {want[k]}" for k in want if have[k] != want[k])
        raise CdvideoError(f"ControlNet {ref} was made for another base than {base} ({diff}); use a ControlNet "
                           "trained for this base (SD1.5's for SD1.5)")


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value
