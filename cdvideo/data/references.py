"""Clips read from disk (a motion's reference clips; the source of video-to-video): mp4, mov, webm, mkv (decord),
gif (PIL) or a folder of frames, normalised to `num_frames` frames at `fps` (evenly over the clip when it is shorter),
resized to cover the wanted size and centre-cropped (square for references, the clip's size for a source). Large
videos are decoded at about that size; bad clips give one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from cdvideo.data.video import VIDEO_SUFFIXES, probe
from cdvideo.errors import CdvideoError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CLIP_SUFFIXES = (*VIDEO_SUFFIXES, ".gif")
MIN_SOURCE_FRAMES = 4  # fewer frames show no motion to learn


def fit(frame: Image.Image, width: int, height: int) -> np.ndarray:
    """Resized to cover `width` x `height`, centre crop: (height, width, 3) uint8."""
    frame = frame.convert("RGB")
    w, h = frame.size
    s = max(width / w, height / h)
    frame = frame.resize((max(width, round(w * s)), max(height, round(h * s))), Image.Resampling.BICUBIC)
    w, h = frame.size
    left, top = (w - width) // 2, (h - height) // 2
    return np.asarray(frame.crop((left, top, left + width, top + height)))


def square(frame: Image.Image, size: int) -> np.ndarray:
    """Short side resized to `size`, centre crop: (size, size, 3) uint8."""
    return fit(frame, size, size)


def pick(times: np.ndarray, num_frames: int, fps: int) -> np.ndarray:
    """Indices of the source frames (at `times` seconds) nearest to `num_frames` instants 1/fps apart from the
    start, squeezed evenly over the clip when it is shorter than num_frames / fps."""
    span = min((num_frames - 1) / fps, float(times[-1] - times[0]))
    wanted = times[0] + np.linspace(0.0, span, num_frames)
    return np.abs(times[None, :] - wanted[:, None]).argmin(axis=1)


def _video(path: Path, num_frames: int, fps: int, size: int) -> list[Image.Image]:
    try:
        import decord  # lazy: start-up time
    except ImportError:
        raise CdvideoError(f"{path}: reading a video needs decord: pip install 'cdvideo[video]'") from None
    _, width, height = probe(path)  # a one-line error for what ffmpeg cannot open
    if min(width, height) < 1:
        raise CdvideoError(f"{path.name}: holds no video stream")
    s = size / min(width, height)  # decode at about the training size (a 4K clip never lands in memory whole)
    dw, dh = (max(size, round(width * s) // 2 * 2), max(size, round(height * s) // 2 * 2)) if s < 1 else (-1, -1)
    try:
        vr = decord.VideoReader(str(path), width=dw, height=dh)
        n, rate = len(vr), float(vr.get_avg_fps() or fps)
        if n < MIN_SOURCE_FRAMES:
            raise CdvideoError(f"{path.name}: {n} frames; a clip needs at least {MIN_SOURCE_FRAMES}")
        idx = pick(np.arange(n) / rate, num_frames, fps)
        return [Image.fromarray(f) for f in vr.get_batch(list(idx)).asnumpy()]
    except CdvideoError:
        raise
    except Exception as e:  # decord raises its own errors for damaged streams
        raise CdvideoError(f"{path.name}: cannot be decoded ({first_line(e, 100)})") from None


def _gif(path: Path, num_frames: int, fps: int) -> list[Image.Image]:
    try:
        with Image.open(path) as im:
            frames, durations = [], []
            for f in ImageSequence.Iterator(im):
                frames.append(f.convert("RGB"))
                durations.append(f.info.get("duration", 1000 / fps) or 1000 / fps)
    except (OSError, ValueError) as e:
        raise CdvideoError(f"{path.name}: not a readable GIF ({first_line(e, 100)})") from None
    if len(frames) < MIN_SOURCE_FRAMES:
        raise CdvideoError(f"{path.name}: {len(frames)} frame(s); a clip needs at least "
                           f"{MIN_SOURCE_FRAMES} (a still image shows no motion)")
    times = np.concatenate([[0.0], np.cumsum(durations[:-1])]) / 1000
    return [frames[i] for i in pick(times, num_frames, fps)]


def _folder(path: Path, num_frames: int, fps: int) -> list[Image.Image]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < MIN_SOURCE_FRAMES:
        raise CdvideoError(f"{path}: {len(files)} frame image(s); a folder of frames needs at least "
                           f"{MIN_SOURCE_FRAMES}, named in order (00.png, 01.png, ...)")
    frames = []
    for i in pick(np.arange(len(files)) / fps, num_frames, fps):  # a folder's frames are taken 1/fps apart
        try:
            with Image.open(files[i]) as im:
                frames.append(im.convert("RGB"))
        except OSError:
            raise CdvideoError(f"{files[i]}: not a readable image") from None
    return frames


def read_reference(path: str | Path, num_frames: int, fps: int, size: int) -> np.ndarray:
    """One reference clip as (num_frames, size, size, 3) uint8."""
    return read_clip(path, num_frames, fps, size, size, "reference clip")


def read_clip(path: str | Path, num_frames: int, fps: int, width: int, height: int, what: str = "clip") -> np.ndarray:
    """A clip (video file, GIF or folder of frames) as (num_frames, height, width, 3) uint8: `num_frames` frames
    1/fps apart (evenly over a shorter clip), each resized to cover the size and centre-cropped. `what` names it in
    errors."""
    path = Path(path)
    if not path.exists():
        raise CdvideoError(f"{what} {path} not found")
    suffix = path.suffix.lower()
    if path.is_dir():
        frames = _folder(path, num_frames, fps)
    elif suffix == ".gif":
        frames = _gif(path, num_frames, fps)
    elif suffix in VIDEO_SUFFIXES:
        frames = _video(path, num_frames, fps, max(width, height))
    elif suffix in IMAGE_SUFFIXES:
        raise CdvideoError(f"{path.name}: a still image shows no motion; give a clip (mp4, mov, webm, gif) or a "
                           "folder of its frames")
    else:
        raise CdvideoError(f"{path.name}: not a clip; give mp4, mov, webm, mkv, gif or a folder of frames")
    return np.stack([fit(f, width, height) for f in frames])


def expand(references: list[str]) -> list[Path]:
    """The clips meant: a folder of clips stands for the clips in it; a folder of images is one clip."""
    out = []
    for ref in references:
        p = Path(ref)
        clips = sorted(c for c in p.iterdir() if c.suffix.lower() in CLIP_SUFFIXES) if p.is_dir() else []
        out += clips or [p]
    return out


def read_references(references: list[str], num_frames: int, fps: int, size: int) -> list[np.ndarray]:
    """Every reference clip, normalised; at most 5."""
    clips = expand(references)
    if len(clips) > 5:
        raise CdvideoError(f"references: {len(clips)} clips found; give at most 5")
    return [read_reference(c, num_frames, fps, size) for c in clips]
