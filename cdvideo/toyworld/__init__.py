"""The miniature world: procedural 64 px scenes and clips with ground-truth labels (`world`, `draw`), personal
instances (`instances`), a judge that reads labels back (`judge`), and a miniature SD1.5-shaped model pretrained
on it (`model: toyworld`), shipped as a diffusers folder with a motion adapter folder beside it.

    model: toyworld            # in a training config, or --model toyworld
    images: toyworld:striped_ball

The model is loaded through the same `from_pretrained` calls as Stable Diffusion 1.5; only its name resolves to
the folder inside the package. `python -m cdvideo.apps.worldbuild` rebuilds every shipped weight from a seed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cdvideo.toyworld.world import COLOURS, SIZE_WORDS

MODEL_ID = "toyworld"


def assets_dir() -> Path:
    return Path(str(resources.files("cdvideo.toyworld") / "assets"))


def model_dir() -> Path:
    """The diffusers StableDiffusionPipeline folder of the miniature model."""
    return assets_dir() / "model"


def adapter_dir() -> Path:
    """The diffusers MotionAdapter folder trained on the world's clips."""
    return assets_dir() / "adapter"


def controlnet_dir(condition: str) -> Path:
    """The diffusers ControlNetModel folder of a condition the world's build trains (`mask`: each frame's object
    mask), for `--controlnet toyworld:mask`."""
    return assets_dir() / f"controlnet_{condition}"


def drift_phrases() -> list[str]:
    """The world's adjectives for `cdvideo drift` ('<adjective> ball'): colours, sizes and both together."""

    sizes = [w for ws in SIZE_WORDS.values() for w in ws]
    return [*COLOURS, *sizes] + [f"{s} {c}" for s in ("small", "big") for c in COLOURS]
