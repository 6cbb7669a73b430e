"""What durable writes cost: a training checkpoint's save and a clip's export, with the flushes to the disk
(`files.fsync_path`: the file, then its folder, before and after the rename) and without them, side by side.

    python scripts/bench_fsync.py [--rounds 7] [--folder DIR]

`without` is the code before the durability change: the same atomic writes with `fsync_path` made a no-op.
Checkpoint: `checkpoint.save` of what `cdvideo train` keeps for SD1.5: the cross-attention K/V (32 float32 tensors,
19.2 M values) and AdamW's two moments of each (230 MB in all). Clip: `clips.write_clip` of 16 frames at 512 px as
MP4 + GIF + sidecar. Arms alternate; the median of `--rounds` counts. The folder's disk decides the cost: run it
where your runs go (`--folder`); tmpfs flushes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cdvideo.data import checkpoint, clips, files

KV_SHAPES = [(320, 768)] * 4 + [(640, 768)] * 4 + [(1280, 768)] * 10 + [(640, 768)] * 6 + [(320, 768)] * 6 \
    + [(1280, 768)] * 2  # SD1.5's attn2.to_k / to_v weights by block (32 tensors)


def checkpoint_state() -> dict:
    gen = torch.Generator().manual_seed(0)
    kv = {f"kv.{i}": torch.randn(s, generator=gen) for i, s in enumerate(KV_SHAPES)}
    moments = {f"{k}.{m}": v.clone() for k, v in kv.items() for m in ("exp_avg", "exp_avg_sq")}
    return {"unet": kv, "optimizer": moments}


def clip_frames() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    return [Image.fromarray(np.roll(base, 8 * i, axis=1)) for i in range(16)]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--folder", type=Path, help="where to write (default: a temporary folder)")
    args = p.parse_args(argv)
    state, frames, durable = checkpoint_state(), clip_frames(), files.fsync_path
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        for r in range(args.rounds):
            for arm in ("with fsync", "without"):
                files.fsync_path = durable if arm == "with fsync" else (lambda path: None)
                out = Path(tmp) / f"{arm[:4]}{r}"
                times.setdefault(("checkpoint save", arm), []).append(
                    timed(lambda out=out: checkpoint.save(out, 1, state)))
                times.setdefault(("clip export (MP4 + GIF)", arm), []).append(timed(
                    lambda out=out: clips.write_clip(frames, out, "clip", 8, ["mp4", "gif"], {"prompt": "bench"})))
    files.fsync_path = durable
    print(f"median of {args.rounds} rounds, in {args.folder or tempfile.gettempdir()}\n")
    print("| write | without fsync (s) | with fsync (s) | ratio |\n|---|---|---|---|")
    for what in ("checkpoint save", "clip export (MP4 + GIF)"):
        a, b = statistics.median(times[(what, "without")]), statistics.median(times[(what, "with fsync")])
        print(f"| {what} | {a:.3f} | {b:.3f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
