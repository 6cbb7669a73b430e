"""Optical flow of a clip: OpenCV's Farneback dense flow (as OpenS2V-Eval measures dynamic degree), on grayscale
frames resized to a 256 px short side, so that magnitudes compare across resolutions."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cdvideo.errors import CdvideoError

SIZE = 256


def gray(frame, size: int = SIZE) -> np.ndarray:
    """A frame (PIL image or (H, W, 3) uint8) as grayscale uint8 with its short side `size`."""
    im = frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame, np.uint8))
    w, h = im.size
    s = size / min(w, h)
    return np.asarray(im.convert("L").resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC))


def farneback(frames: list, size: int = SIZE) -> np.ndarray:
    """(F-1, H, W, 2) flow between consecutive frames, in pixels at `size`."""
    try:
        import cv2  # lazy: start-up time
    except ImportError:
        raise CdvideoError("motion metrics need OpenCV: pip install 'cdvideo[video]'") from None
    if len(frames) < 2:
        raise CdvideoError(f"a clip of {len(frames)} frame(s) has no motion to measure")
    cv2.setNumThreads(1)  # its worker threads would compete with torch's for the same cores
    g = [gray(f, size) for f in frames]
    return np.stack([cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=3, winsize=15, iterations=3,
                                                  poly_n=5, poly_sigma=1.2, flags=0) for a, b in zip(g, g[1:])])
