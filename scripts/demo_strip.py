"""The README's strip of a `cdvideo demo` run: the base model's clips above, the personalized subject's below (the
demo's raw 64 px frames, enlarged 2x, nearest), one animated GIF.

    cdvideo demo --output-dir /tmp/demo && python scripts/demo_strip.py /tmp/demo/spotted_star docs/demo/demo_clips.gif
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cdvideo.data.files import atomic_path

ORDER = ("moving_right", "moving_up", "wearing")  # the demo's three default prompts, in the README's order


def frames(folder: Path) -> list[list[np.ndarray]]:
    """Each clip's frames in `folder` (`*_frames/*.png`), in ORDER where the names allow."""
    clips = sorted(folder.glob("*_frames"), key=lambda p: next((i for i, k in enumerate(ORDER) if k in p.name), 9))
    return [[np.asarray(Image.open(f).convert("RGB")) for f in sorted(c.glob("*.png"))] for c in clips]


def strip(rows: list[list[list[np.ndarray]]], scale: int = 2) -> list[Image.Image]:
    """Frame by frame, the clips side by side and the rows one above the other, enlarged `scale` times."""
    n = min(len(clip) for row in rows for clip in row)
    out = []
    for t in range(n):
        grid = np.concatenate([np.concatenate([clip[t] for clip in row], axis=1) for row in rows], axis=0)
        out.append(Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale),
                                                Image.Resampling.NEAREST))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a demo run's folder (with before/ and clips/)")
    p.add_argument("out", type=Path, help="the GIF to write (never overwritten in part)")
    a = p.parse_args()
    rows = [frames(a.run / "before"), frames(a.run / "clips")]
    if not all(rows) or len({len(r) for r in rows}) != 1:
        sys.exit(f"error: {a.run} has no before/ and clips/ of as many clips each: give a `cdvideo demo` run's folder")
    images = strip(rows)
    with atomic_path(a.out) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=120, loop=0)
    print(f"{a.out}: {len(rows[0])} clips x 2 rows, {len(images)} frames")


if __name__ == "__main__":
    main()
