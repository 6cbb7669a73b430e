"""Condition frames for a ControlNet: a clip or folder of frames the user made (pose, depth, edges, ...), read as a
video-to-video source is, or edges cdvideo draws from a plain clip with OpenCV's Canny detector (on the CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cdvideo.data.references import fit, read_clip
from cdvideo.errors import CdvideoError

PREPROCESS = ("none", "canny")  # what turns a plain clip into condition frames; `none`: the frames are the condition
CANNY_THRESHOLDS = (100, 200)  # the ControlNet-canny model card's


def canny(frame: np.ndarray, low: int = CANNY_THRESHOLDS[0], high: int = CANNY_THRESHOLDS[1]) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 white edges on black (Canny 1986, OpenCV's detector)."""
    try:
        import cv2  # lazy: start-up time
    except ImportError:
        raise CdvideoError("--control-preprocess canny needs OpenCV: pip install 'cdvideo[video]'") from None
    edges = cv2.Canny(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), low, high)
    return np.repeat(edges[:, :, None], 3, axis=2)


def keyframe(path: str | Path, width: int, height: int) -> Image.Image:
    """A SparseCtrl keyframe (an RGB image or a scribble) resized to cover the clip's size, centre-cropped."""
    return Image.fromarray(fit(read_image(path, "keyframe"), width, height))


def read_image(path: str | Path, what: str) -> Image.Image:
    """An image file as RGB; missing or unreadable is one line naming `what` and the file."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise CdvideoError(f"{what} {path} not found") from None
    except OSError:
        raise CdvideoError(f"{what} {path}: not a readable image") from None


def control_frames(path: str | Path, num_frames: int, fps: int, width: int, height: int,
                   preprocess: str = "none") -> list[Image.Image]:
    """A control clip as `num_frames` frames at the clip's size (`preprocess`: canny draws its edges)."""
    if preprocess not in PREPROCESS:
        raise CdvideoError(f"--control-preprocess {preprocess}: choose from {', '.join(PREPROCESS)}")
    clip = read_clip(path, num_frames, fps, width, height, "control video")  # (F, H, W, 3)
    return [Image.fromarray(canny(f) if preprocess == "canny" else f) for f in clip]
