"""A short video of the subject as training photos: read with decord, blurred frames dropped (variance of the
Laplacian), then N diverse frames picked by farthest-point sampling on small thumbnails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cdvideo.errors import CdvideoError, first_line

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
CANDIDATES = 96  # frames read, evenly spaced over the video
MIN_FRAMES = 3


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def probe(path: str | Path) -> tuple[float, int, int]:
    """(seconds, width, height) read from the container's header by ffmpeg, before any frame is decoded."""
    import imageio_ffmpeg  # lazy: start-up time

    frames = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(frames)
    except (RuntimeError, OSError, StopIteration):
        raise CdvideoError(f"{Path(path).name}: not a readable video (mp4, mov, webm, mkv)") from None
    finally:
        frames.close()
    width, height = meta.get("size") or (0, 0)
    return float(meta.get("duration") or 0.0), int(width), int(height)


def check_video(path: str | Path, max_seconds: float, max_side: int) -> None:
    """A one-line error if the video is longer or larger than the limits (checked before it is decoded)."""
    seconds, width, height = probe(path)
    if seconds > max_seconds:
        raise CdvideoError(f"{Path(path).name}: {seconds:.1f} s long; give a clip of at most {max_seconds:g} s")
    if max(width, height) > max_side:
        raise CdvideoError(f"{Path(path).name}: {width}x{height}; give a video of at most {max_side} px a side")


def sharpness(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a grayscale image (Pech-Pacheco et al. 2000): low when blurred."""
    g = gray.astype(np.float64)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def thumbnail_features(frames: list[np.ndarray], size: int = 16) -> np.ndarray:
    """(N, size*size*3) unit-norm, mean-removed colour thumbnails: a cheap appearance feature."""
    feats = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BOX), np.float64).ravel()
                      for f in frames])
    feats -= feats.mean(axis=1, keepdims=True)
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-9)


def farthest_points(feats: np.ndarray, n: int, first: int = 0) -> list[int]:
    """Greedy farthest-point sampling: each pick maximises its distance to the picks so far."""
    picks = [first]
    dist = np.linalg.norm(feats - feats[first], axis=1)
    while len(picks) < min(n, len(feats)):
        nxt = int(dist.argmax())
        if dist[nxt] <= 0:
            break  # only repeats of the picks are left
        picks.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(feats - feats[nxt], axis=1))
    return sorted(picks)


def select_frames(frames: list[np.ndarray], n: int = 8, blur_ratio: float = 0.35) -> list[int]:
    """Indices of up to n sharp, mutually distinct frames: frames whose Laplacian variance is under `blur_ratio`
    of the sharpest decile are dropped; then farthest-point sampling from the sharpest frame."""
    sharp = np.array([sharpness(np.asarray(Image.fromarray(f).convert("L"))) for f in frames])
    keep = np.flatnonzero(sharp >= blur_ratio * np.quantile(sharp, 0.9))
    if len(keep) == 0:
        return []
    feats = thumbnail_features([frames[i] for i in keep])
    picked = farthest_points(feats, n, first=int(np.argmax(sharp[keep])))
    return [int(keep[i]) for i in picked]


def read_video(path: Path, candidates: int = CANDIDATES) -> list[np.ndarray]:
    """Up to `candidates` evenly spaced RGB frames (H, W, 3) of a video file."""
    try:
        import decord  # lazy: start-up time
    except ImportError:
        raise CdvideoError(f"{path}: reading a video needs decord: pip install 'cdvideo[video]'") from None
    try:
        vr = decord.VideoReader(str(path))
    except Exception as e:  # decord raises its own errors for unreadable files
        raise CdvideoError(f"{path}: cannot be read as a video ({first_line(e, 120)})") from None
    idx = np.unique(np.linspace(0, len(vr) - 1, min(candidates, len(vr))).round().astype(int))
    return list(vr.get_batch(list(idx)).asnumpy())


def frames_from_video(path: str | Path, n: int = 8) -> list[Image.Image]:
    """The N frames of a subject video to train on."""
    path = Path(path)
    frames = read_video(path)
    picks = select_frames(frames, n)
    if len(picks) < MIN_FRAMES:
        raise CdvideoError(f"{path}: only {len(picks)} sharp, distinct frames found (need {MIN_FRAMES}); film the "
                           "subject longer, from several sides, holding the camera steady")
    return [Image.fromarray(frames[i]) for i in picks]
