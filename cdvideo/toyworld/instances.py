"""Personal instances: objects whose appearance never occurs in pretraining, each with 5 'photos' (varied
position, size and background, like a DreamBooth set) and a class word. Two are held out of all tuning
(steps, learning rates, thresholds were chosen on the others) and appear only in evaluations."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from cdvideo.errors import CdvideoError
from cdvideo.toyworld.draw import render_with_alpha
from cdvideo.toyworld.world import Scene, backgrounds_for, pattern_phrase


@dataclass(frozen=True)
class Instance:
    name: str
    cls: str
    colour: str
    pattern: str
    pattern_colour: str
    held_out: bool = False

    @property
    def appearance(self) -> tuple:
        return (self.cls, self.colour, self.pattern, self.pattern_colour)

    def describe(self) -> str:
        return f"{self.colour} {self.cls}{pattern_phrase(self.pattern, self.pattern_colour)}"

    def swapped(self) -> Instance:
        """Its colour-swapped twin (a yellow ball with purple stripes -> a purple ball with yellow stripes): the
        neighbour the model draws most often in its place, an appearance pretraining shows."""
        return Instance(f"{self.name} swapped", self.cls, self.pattern_colour, self.pattern, self.colour, self.held_out)

    def scene(self, background: str, position: str, size: str, motion: str | None = None, seed: int = 0) -> Scene:
        return Scene(self.cls, self.colour, self.pattern, self.pattern_colour, background, position, size, motion, seed)


INSTANCES = {i.name: i for i in (
    Instance("striped_ball", "ball", "yellow", "stripes", "purple"),
    Instance("spotted_star", "star", "orange", "spot", "blue"),
    Instance("apple_tree", "tree", "green", "dots", "red"),
    Instance("rimmed_box", "box", "pink", "rim", "green"),
    Instance("dotted_heart", "heart", "white", "dots", "blue", held_out=True),
    Instance("striped_cup", "cup", "red", "stripes", "white", held_out=True),
)}
# The demo's subject: of the tuning instances, the one the recipe recovers most of (docs/toyworld/tuning.md; the
# demo on all six: docs/toyworld.md, "The demo on every instance"); striped_ball, the hardest, is `--instance`
DEMO_INSTANCE = "spotted_star"
PHOTOS = 5
PHOTO_LAYOUT = (("centre", "big"), ("left", "big"), ("top", "small"), ("right", "big"), ("bottom", "small"))


def excluded() -> frozenset:
    """Appearances that pretraining never shows."""
    return frozenset(i.appearance for i in INSTANCES.values())


def get(name: str) -> Instance:
    if name not in INSTANCES:
        raise CdvideoError(f"unknown toyworld instance {name!r}; choose from {', '.join(INSTANCES)}")
    return INSTANCES[name]


def photo_scenes(inst: Instance) -> list[Scene]:
    """The instance's 5 photos: fixed positions and sizes, 5 different backgrounds drawn from its name."""
    rng = np.random.default_rng(list(inst.name.encode()))
    bgs = backgrounds_for(inst.colour)
    chosen = [bgs[i] for i in rng.permutation(len(bgs))[:PHOTOS]]
    return [inst.scene(bg, pos, size, seed=int(rng.integers(2**31))) for bg, (pos, size) in zip(chosen, PHOTO_LAYOUT)]


def photos_dir(name: str) -> Path:
    """The bundled photo folder of an instance (`images: toyworld:<name>` in a config)."""
    return Path(str(resources.files("cdvideo.toyworld") / "assets" / "instances" / get(name).name))


def write_photos(root: str | Path) -> list[Path]:
    """Render every instance's photos as PNGs into root/<name>/NN.png (the bundled folders), and each photo's
    subject mask into root/<name>/masks/NN.png (white on the object; a concept's `masks: toyworld:<name>`)."""
    written = []
    for inst in INSTANCES.values():
        folder = Path(root) / inst.name
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        for k, scene in enumerate(photo_scenes(inst)):
            frames, cover = render_with_alpha(scene)  # (1, 64, 64, 3), (1, 64, 64) in [0, 1]
            Image.fromarray(frames[0]).save(folder / f"{k:02d}.png", optimize=True)
            Image.fromarray((cover[0] * 255).round().astype(np.uint8)).save(folder / "masks" / f"{k:02d}.png",
                                                                            optimize=True)
            written += [folder / f"{k:02d}.png", folder / "masks" / f"{k:02d}.png"]
    return written

