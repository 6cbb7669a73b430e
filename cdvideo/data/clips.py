"""Writing clips and images: MP4 (H.264), GIF, WebP, PNG frames, grids, and the sidecar JSON. All atomic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

from cdvideo.data.files import atomic_folder, atomic_path, reserve_stem, write_text_atomic
from cdvideo.errors import CdvideoError

VIDEO_FORMATS = ("mp4", "gif", "webp", "png")
CLIP_SUFFIXES = (".mp4", ".gif", ".webp", ".json", "_frames")  # one clip's files, by stem


def check_formats(formats: list[str]) -> None:
    unknown = [f for f in formats if f not in VIDEO_FORMATS]
    if unknown or not formats:
        raise CdvideoError(f"--format {','.join(formats)}: choose from {', '.join(VIDEO_FORMATS)}")


def upscaled(frames: list[Image.Image], factor: int) -> list[Image.Image]:
    """Frames enlarged `factor` times with nearest-neighbour sampling (crisp pixels), for viewing small clips."""
    if factor == 1:
        return frames
    return [f.resize((f.width * factor, f.height * factor), Image.Resampling.NEAREST) for f in frames]


def write_clip(frames: list[Image.Image], folder: Path, stem: str, fps: int, formats: list[str],
               sidecar: dict, upscale: int = 1) -> list[Path]:
    """Write one clip in each format plus `stem.json`; the stem gets a suffix if any name is taken (reserved
    atomically, so concurrent renders keep every clip). MP4, GIF and WebP are enlarged `upscale` times for
    viewing; PNG frames stay raw. All or nothing: the sidecar is written last, and a failure (a full disk) removes
    the formats already written."""
    stem = reserve_stem(folder, stem, CLIP_SUFFIXES)
    try:
        return _write_clip_files(frames, folder, stem, fps, formats, sidecar, upscale)
    except BaseException:
        remove_clip(folder, stem)  # all or nothing: the formats written before the failure go, the name is free
        raise


def remove_clip(folder: Path, stem: str) -> None:
    """Every file of the clip `stem` (its name was reserved by this writer, so none belongs to another clip)."""
    for suffix in CLIP_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _write_clip_files(frames, folder: Path, stem: str, fps: int, formats: list[str], sidecar: dict,
                      upscale: int) -> list[Path]:
    written = []
    raw, frames = frames, upscaled(frames, upscale)
    for fmt in formats:
        if fmt == "png":
            written.append(_write_frames(raw, folder / f"{stem}_frames"))
            continue
        path = folder / f"{stem}.{fmt}"
        with atomic_path(path) as tmp:
            if fmt == "mp4":
                from diffusers.utils import export_to_video  # lazy: 4 s of imports a GIF or WebP need not pay

                export_to_video(frames, str(tmp), fps=fps, macro_block_size=16)
            elif fmt == "gif":
                write_gif(frames, tmp, fps)
            else:
                frames[0].save(tmp, format="WEBP", save_all=True, append_images=frames[1:],
                               duration=1000 // fps, loop=0, lossless=False, quality=90)
        written.append(path)
    written.append(write_sidecar(folder / f"{stem}.json", sidecar))
    return written


def write_gif(frames: list[Image.Image], path: Path, fps: int) -> None:
    """A looping GIF, byte for byte as diffusers' `export_to_gif` writes it, without importing diffusers (4 s)."""
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], optimize=False,
                   duration=1000 // fps, loop=0)


def _write_frames(frames: list[Image.Image], folder: Path) -> Path:
    with atomic_folder(folder) as tmp:
        for i, frame in enumerate(frames):
            frame.save(tmp / f"{i:04d}.png")
    return folder


def write_images(images: list[Image.Image], folder: Path, stem: str, sidecar: dict, grid: bool) -> list[Path]:
    """Write `stem_i.png` per image (and `stem_grid.png`), plus `stem.json` (the name reserved atomically). All or
    nothing, as `write_clip`: the sidecar last, and a failure removes the images already written."""
    stem = reserve_stem(folder, stem, (".json", "_0.png", "_grid.png"))
    try:
        return _write_image_files(images, folder, stem, sidecar, grid)
    except BaseException:
        for path in [*(folder / f"{stem}_{i}.png" for i in range(len(images))), folder / f"{stem}_grid.png",
                     folder / f"{stem}.json"]:
            path.unlink(missing_ok=True)
        raise


def _write_image_files(images, folder: Path, stem: str, sidecar: dict, grid: bool) -> list[Path]:
    written = []
    for i, image in enumerate(images):
        with atomic_path(folder / f"{stem}_{i}.png") as tmp:
            image.save(tmp, format="PNG")
        written.append(folder / f"{stem}_{i}.png")
    if grid and len(images) > 1:
        with atomic_path(folder / f"{stem}_grid.png") as tmp:
            make_grid(images).save(tmp, format="PNG")
        written.append(folder / f"{stem}_grid.png")
    written.append(write_sidecar(folder / f"{stem}.json", sidecar))
    return written


def make_grid(images: list[Image.Image]) -> Image.Image:
    """Images side by side in rows of at most 4."""
    cols = min(4, len(images))
    rows = -(-len(images) // cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, image in enumerate(images):
        grid.paste(image, ((i % cols) * w, (i // cols) * h))
    return grid


def write_sidecar(path: Path, data: dict) -> Path:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def read_sidecar(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CdvideoError(f"sidecar {path} not found") from None
    except json.JSONDecodeError as e:
        raise CdvideoError(f"sidecar {path}: not JSON ({e})") from None
