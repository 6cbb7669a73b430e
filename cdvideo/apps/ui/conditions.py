"""The Animate tab's conditioning inputs: a control clip with its ControlNet, SparseCtrl keyframes, an IP-Adapter's
image prompt. Dropped files are checked as the other uploads are (kind, then size read before decoding) and kept in
the user's folder under their sha256, so a clip's sidecar regenerates it after Gradio's upload is gone; a picked
model is a built-in name, a hub id or a path inside the user's readable folders."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from cdvideo.apps.ui.access import MAX_VIDEO_SECONDS, MAX_VIDEO_SIDE, Client
from cdvideo.data.files import atomic_path, sha256_file
from cdvideo.data.references import CLIP_SUFFIXES
from cdvideo.data.video import VIDEO_SUFFIXES, check_video
from cdvideo.errors import CdvideoError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class Conditions:
    """What the Animate tab's conditioning inputs hold (empty: none)."""
    control: str | None = None  # a dropped control clip
    controlnet: str = ""  # the ControlNet that reads it
    preprocess: str = "none"  # none (the clip's frames are the condition) or canny
    control_scale: float = 1.0
    keyframes: list[str] = field(default_factory=list)  # dropped images, spread evenly over the clip
    sparsectrl: str = ""
    ip_image: str | None = None  # a dropped image prompt
    ip_adapter: str = ""
    ip_scale: float = 1.0


def check_clip_upload(f: Path) -> None:
    """A dropped clip: a video file or a GIF; a video's length and size are read before it is decoded."""
    if f.suffix.lower() not in CLIP_SUFFIXES:
        raise CdvideoError(f"{f.name}: not a clip; drop mp4, mov, webm, mkv or gif files")
    if f.suffix.lower() in VIDEO_SUFFIXES:
        check_video(f, MAX_VIDEO_SECONDS, MAX_VIDEO_SIDE)


def check_image_upload(f: Path) -> None:
    """A dropped image: png, jpg or webp whose size (read from its header, before decoding) is at most
    MAX_VIDEO_SIDE on a side."""
    if f.suffix.lower() not in IMAGE_SUFFIXES:
        raise CdvideoError(f"{f.name}: not an image; drop png, jpg or webp files")
    try:
        with Image.open(f) as im:
            size = im.size
    except OSError:
        raise CdvideoError(f"{f.name}: not a readable image") from None
    if max(size) > MAX_VIDEO_SIDE:
        raise CdvideoError(f"{f.name}: {size[0]}x{size[1]} px; drop an image of at most {MAX_VIDEO_SIDE} px a side")


def kept(client: Client, upload: str, check) -> str:
    """A dropped file, checked with `check`, copied once into the user's folder under its sha256."""
    f = Path(upload)
    check(f)
    dest = client.folder / "sources" / f"{sha256_file(f)[:16]}{f.suffix.lower()}"
    if not dest.exists():
        with atomic_path(dest) as tmp:
            shutil.copyfile(f, tmp)
    return str(dest)


def keyframe_indices(n: int, num_frames: int) -> list[int]:
    """Where n keyframes sit in a clip: the first on frame 0, the last on the last frame, the others evenly between."""
    return [0] if n == 1 else [round(k * (num_frames - 1) / (n - 1)) for k in range(n)]


def resolve(client: Client, c: Conditions, num_frames: int, model_ref) -> tuple[dict, dict]:
    """(the render job's fields, the options' fields) of the tab's conditioning inputs, every file checked and kept;
    `model_ref(client, ref, key)` checks a picked model."""
    for given, model, what in ((c.control, c.controlnet, "a control clip and a ControlNet"),
                               (c.keyframes, c.sparsectrl, "keyframes and a SparseCtrl model"),
                               (c.ip_image, c.ip_adapter, "an image prompt and an IP-Adapter")):
        if bool(given) != bool((model or "").strip()):
            raise CdvideoError(f"give {what} together (one reads the other)")
    job: dict = {}
    opts: dict = {}
    if c.control:
        job["control_videos"] = [kept(client, c.control, check_clip_upload)]
        opts.update(controlnets=[(model_ref(client, c.controlnet, "ControlNet"), float(c.control_scale))],
                    control_preprocess=[c.preprocess])
    if c.keyframes:
        if len(c.keyframes) > num_frames:
            raise CdvideoError(f"{len(c.keyframes)} keyframes for a clip of {num_frames} frames; drop at most one a "
                               "frame")
        files = [kept(client, f, check_image_upload) for f in c.keyframes]
        job["keyframes"] = dict(zip(keyframe_indices(len(files), num_frames), files))
        opts["sparsectrl"] = model_ref(client, c.sparsectrl, "SparseCtrl model")
    if c.ip_image:
        job["ip_adapter_image"] = kept(client, c.ip_image, check_image_upload)
        opts.update(ip_adapter=model_ref(client, c.ip_adapter, "IP-Adapter"), ip_adapter_scale=float(c.ip_scale))
    return job, opts
