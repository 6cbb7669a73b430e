"""Reading tensor files safely: safetensors, or pickles (.ckpt, .bin, .pt) with `weights_only=True`, so a file
can never run code; every failure is one line naming the file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from cdvideo.errors import CdvideoError, first_line

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")


def read_tensors(path: str | Path) -> dict:
    """The tensors (and plain values) stored in a safetensors or pickle file."""
    path = Path(path)
    if not path.is_file():
        raise CdvideoError(f"{path}: file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # lazy: start-up time

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own types for truncated or foreign files
            raise CdvideoError(f"{path}: not a readable safetensors file ({first_line(e, 120)}); "
                               "re-download or re-export it") from None
    if path.suffix in PICKLE_SUFFIXES:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            what = first_line(e, 160)
            if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
                raise CdvideoError(f"{path}: refused: this pickle holds more than tensors (it could run code when "
                                   "loaded); convert it to .safetensors with a tool you trust") from None
            if not zipfile.is_zipfile(path):
                raise CdvideoError(f"{path}: not a readable PyTorch checkpoint ({what})") from None
            raise CdvideoError(f"{path}: cannot be read ({what})") from None
    raise CdvideoError(f"{path}: unknown file type {path.suffix!r}; expected .safetensors, .ckpt, .bin or .pt")


def safetensors_metadata(path: str | Path) -> dict:
    """The metadata of a safetensors file (an empty dict for other files)."""
    from safetensors import safe_open  # lazy: start-up time

    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CdvideoError(f"{path}: not a readable safetensors file ({first_line(e, 120)})") from None
