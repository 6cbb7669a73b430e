"""Bundled bases behind one registry: each registers itself through the `cdvideo.builtins` entry point group
(`tiny` from `cdvideo.models.architectures`, the miniature world from `cdvideo.toyworld.plugin`), so that no core
module imports the packages that bring them. A base gives its model (a diffusers folder, or components built in
code), its motion adapter, native size, the phrases `cdvideo drift` compares against, its bundled photos
(`<name>:<instance>` as a concept's `images:`) and ControlNets (`<name>:<condition>` as `--controlnet`). Judges
for `cdvideo eval --judge` register the same way (`cdvideo.scorers`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Protocol

from cdvideo.errors import CdvideoError

BASES_GROUP, SCORERS_GROUP = "cdvideo.builtins", "cdvideo.scorers"


@dataclass(frozen=True)
class Builtin:
    name: str
    native_size: int  # image size it was trained at (px)
    model_dir: Callable[[], Path] | None = None  # a diffusers StableDiffusionPipeline folder ...
    build: Callable[[], dict] | None = None  # ... or components built in code
    adapter_dir: Callable[[], Path] | None = None  # a diffusers MotionAdapter folder ...
    build_adapter: Callable[[], Any] | None = None  # ... or one built in code
    drift_phrases: Callable[[], list[str]] | None = None  # '<phrase> <class word>' neighbours for `cdvideo drift`
    photos: Callable[[str], Path] | None = None  # instance name -> its bundled photo folder
    controlnet: Callable[[str], Path] | None = None  # condition name -> its bundled ControlNet folder
    rebuild: str = ""  # how to make a missing model folder


class Scorer(Protocol):
    """A judge for `cdvideo eval --judge NAME`: columns read off generated frames."""
    metrics: tuple[str, ...]

    def reference(self, photos: list) -> Any: ...  # what it reads off the subject's photos

    def score(self, frames: list, prompt: str, reference: Any | None) -> dict[str, float]: ...


_bases: dict[str, Builtin] = {}
_scorers: dict[str, Callable[[], Scorer]] = {}
_discovered = False  # an empty registry (nothing installed) is not read again on every lookup


def _discover() -> None:
    """Read the entry points once (installed packages register there; `pip install -e .` writes them)."""
    global _discovered
    if _discovered:
        return
    for ep in entry_points(group=BASES_GROUP):
        spec = ep.load()()
        _bases[spec["name"]] = Builtin(**spec)
    for ep in entry_points(group=SCORERS_GROUP):
        _scorers[ep.name] = ep.load()
    _discovered = True


def get(name: str | None) -> Builtin | None:
    """The bundled base called `name`, or None (a hub id, folder or file)."""
    _discover()
    return _bases.get(name) if name else None


def names() -> list[str]:
    _discover()
    return sorted(_bases)


def scorer(name: str) -> Scorer:
    _discover()
    if name not in _scorers:
        raise CdvideoError(f"--judge {name}: choose from {', '.join(sorted(_scorers)) or 'none installed'}")
    return _scorers[name]()


def native_size(model: str | None, default: int = 512) -> int:
    """A bundled base's image size; SD1.5's (512) for any other model."""
    b = get(model)
    return b.native_size if b else default


def _bundled_photos(ref: str) -> Path | None:
    """`<base>:<instance>` -> a bundled base's photo folder; None for anything else."""
    name, sep, instance = ref.partition(":")
    b = get(name) if sep else None
    return b.photos(instance) if b is not None and b.photos is not None else None


def images_folder(ref: str) -> Path:
    """`<base>:<instance>` -> a bundled base's photo folder (e.g. `toyworld:striped_ball`); anything else -> a path."""
    return _bundled_photos(ref) or Path(ref).expanduser()


def masks_folder(ref: str) -> Path:
    """`<base>:<instance>` -> the subject masks beside a bundled base's photos (their `masks/` folder); anything
    else -> a path."""
    bundled = _bundled_photos(ref)
    return bundled / "masks" if bundled else Path(ref).expanduser()


def controlnet_ref(ref: str) -> str:
    """`<base>:<condition>` -> a bundled base's ControlNet folder (e.g. `toyworld:mask`); anything else as given (a
    folder, file or hub id); a bundled one not built yet is one line saying how to build it."""
    name, sep, condition = ref.partition(":")
    b = get(name) if sep else None
    if b is None or b.controlnet is None:
        return ref
    if not re.fullmatch(r"[a-z0-9_-]+", condition):  # a name, never a path out of the package
        raise CdvideoError(f"ControlNet {ref}: {condition!r} is not a condition name of {name} (e.g. {name}:mask)")
    folder = b.controlnet(condition)
    if not folder.is_dir():
        raise CdvideoError(f"ControlNet {ref}: not in this installation ({folder} is missing); {b.rebuild}")
    return str(folder)
