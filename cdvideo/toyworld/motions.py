"""Novel motions of the miniature world (`world.NOVEL_MOTIONS`: circling, zigzag), which pretraining never shows:
reference clips of other objects on other backgrounds to learn one from, and the per-frame tracks (centre x, y
and log extent, in the judge's regression units) that motion fidelity compares."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from cdvideo.toyworld import draw, world
from cdvideo.toyworld.instances import excluded
from cdvideo.toyworld.judge import Reading
from cdvideo.toyworld.judge import motion as read_motion


def reference_scenes(motion: str, n: int = 3, seed: int = 0) -> list[world.Scene]:
    """n clips of `motion` with random objects, colours and backgrounds (never a personal instance), each on a
    background of its own."""
    if motion not in world.NOVEL_MOTIONS + world.MOTIONS:
        raise ValueError(f"unknown motion {motion!r}")
    rng, scenes, used = np.random.default_rng([seed, 404]), [], set()
    while len(scenes) < n:
        s = world.sample_scene(rng, exclude=excluded())
        if s.background not in used:
            used.add(s.background)
            scenes.append(world.with_motion(s, rng, motion))
    return scenes


def write_reference_clips(motion: str, folder: str | Path, n: int = 3, seed: int = 0, fps: int = 8) -> list[Path]:
    """The reference clips as GIFs (64 px, `fps`) into `folder`, as a user's clips would be."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, scene in enumerate(reference_scenes(motion, n, seed)):
        frames = [Image.fromarray(f) for f in draw.render(scene)]
        path = folder / f"{motion}_{k}.gif"
        tmp = path.with_name(f".{path.name}.tmp")
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=1000 // fps, loop=0)
        tmp.replace(path)
        paths.append(path)
    return paths


def track(reading: Reading) -> np.ndarray:
    """(F, 3) centre x, centre y (/ 64) and log extent the judge read in each frame."""
    return reading.regression[:, :3].detach().cpu().numpy().astype(np.float64)


# the motion's axis in a track (x, y, log extent) and the sign its word asks for (y grows downwards)
AXIS = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1), "growing": (2, 1), "shrinking": (2, -1)}


def progress(track: np.ndarray, motion: str) -> float:
    """How far a clip moves the way `motion` asks: the least-squares slope of its track (F, 3) along the motion's
    axis over the clip, in px (64 a frame) for a translation or log extent for a size change; below 0 the other
    way."""
    axis, sign = AXIS[motion]
    t = np.linspace(0.0, 1.0, len(track))
    return float(sign * (64.0 if axis < 2 else 1.0) * np.polyfit(t, track[:, axis], 1)[0])


def direction(reading: Reading, motion: str) -> dict:
    """What a clip asked to show `motion` shows: the motion the judge reads, its `progress` the asked way, and where
    it `start`s on the motion's axis (px for a translation, log extent for a size change)."""
    tr, (axis, _) = track(reading), AXIS[motion]
    return {"motion": motion, "read": read_motion(reading), "progress": progress(tr, motion),
            "start": float(tr[0, axis] * (64.0 if axis < 2 else 1.0))}


def away_from_start(clip: dict) -> bool:
    """Whether a translation clip (a `direction` reading) moves away from the half of the frame it starts in."""
    moves_up_the_axis = clip["progress"] * AXIS[clip["motion"]][1] > 0  # toward larger x or y
    return moves_up_the_axis == (clip["start"] < 32.0)


def direction_shares(clips: list[dict]) -> dict:
    """Over `direction` readings: the share the judge reads as asked and the share moving the asked way."""
    return {"read_as_asked": float(np.mean([c["read"] == c["motion"] for c in clips])),
            "moves_the_asked_way": float(np.mean([c["progress"] > 0 for c in clips]))}


def true_track(scene: world.Scene, num_frames: int = world.NUM_FRAMES) -> np.ndarray:
    """(F, 3) the generator's own track of a clip, in the judge's units."""
    g = world.geometry(scene, num_frames)
    return np.stack([g[:, 0] / 64, g[:, 1] / 64, np.log(g[:, 2] / 20)], axis=1)


def circling_masks(folder: str | Path, size: str = "small", seed: int = 3) -> tuple[Path, np.ndarray]:
    """The masks of a yellow ball with purple stripes circling (a path no pretraining clip shows; `size` of the
    ball, `seed` of the scene) as a GIF in `folder`, for `--controlnet toyworld:mask --control-video`, and its true
    path (F, 2) in px."""
    scene = world.with_motion(world.Scene("ball", "yellow", "stripes", "purple", "gray", "centre", "big", seed=seed),
                              np.random.default_rng(0), "circling")
    scene = dataclasses.replace(scene, size=size)  # with_motion draws a circling object small
    masks = draw.masks(scene)
    gif = Path(folder) / f"circling_masks_{size}_{seed}.gif"
    gif.parent.mkdir(parents=True, exist_ok=True)
    tmp = gif.with_name(f".{gif.name}.tmp")  # whole or absent, as the reference clips
    masks[0].save(tmp, format="GIF", save_all=True, append_images=masks[1:], duration=125, loop=0)
    tmp.replace(gif)
    return gif, world.geometry(scene, len(masks))[:, :2]


def path_error(reading: Reading, truth: np.ndarray) -> float:
    """Mean distance in px between the centres the judge read in a clip's frames and the true path (F, 2)."""
    return float(np.linalg.norm(track(reading)[:, :2] * 64 - truth, axis=1).mean())
