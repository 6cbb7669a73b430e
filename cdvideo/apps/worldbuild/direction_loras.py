"""Does a motion LoRA give a direction the motion word does not? (AnimateDiff's v2 camera MotionLoRAs give pans
and zooms its prompts cannot.)

    python -m cdvideo.apps.worldbuild.direction_loras --out docs/toyworld/direction_loras.json   # ~18 min, 2 cores

For each direction (up, down, left, right, growing, shrinking): 3 reference clips of other objects moving that way
(`motions.reference_scenes`), `cdvideo train-motion`'s LoRA on them (`cdvideo demo --motion`'s settings, 600
steps), then clips of the report's subjects asked to move that way ("a red box moving up on a blue background"),
with the shipped adapter alone and with the LoRA merged, on the same seeds. The world's judge reads each clip: the
share moving the asked way along its axis (`motions.progress` above 0) and the share it reads as the asked motion.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cdvideo.apps import motion_demo as M
from cdvideo.apps.worldbuild.common import log
from cdvideo.data.files import write_text_atomic
from cdvideo.toyworld import motions, scoring
from cdvideo.toyworld import judge as J

DIRECTIONS = ("up", "down", "left", "right", "growing", "shrinking")


def clips(motion: str, n: int) -> list[M.Clip]:
    """n clips asking `motion` of the report's subjects (the clip prompts' classes, colours, backgrounds), seeds
    0 .. n - 1."""
    return [M.Clip(scoring.asking(p, motion), p.asked["background"], k) for k, p in enumerate(scoring.clip_prompts(n))]


def summary(per: list[dict]) -> dict:
    """The clips' shares read as asked and moving the asked way, and their mean progress."""
    return motions.direction_shares(per) | {"progress": float(np.mean([c["progress"] for c in per]))}


def run(work: Path, n: int, seed: int = 0, variant: str = M.DEFAULT, directions: tuple = DIRECTIONS) -> dict:
    """Each direction's LoRA (trained into `work`, reused if there) and its clips without and with it."""
    judge, out = J.load(), {}
    for motion in directions:
        t0 = time.time()
        lora = M.learn(motion, work, seed, variant)
        asked = clips(motion, n)
        rows = {name: [motions.direction(J.read(judge, f), motion) for f in M.render(None, asked, loras)]
                for name, loras in (("adapter", []), ("adapter + LoRA", [(lora, 1.0)]))}
        out[motion] = {name: summary(per) | {"clips": per} for name, per in rows.items()}
        log(f"{motion}: " + "; ".join(f"{name} moves the asked way {v['moves_the_asked_way']:.2f}, read as asked "
                                      f"{v['read_as_asked']:.2f}" for name, v in out[motion].items())
            + f" ({time.time() - t0:.0f} s)")
    for name in ("adapter", "adapter + LoRA"):
        per = [c for m in directions for c in out[m][name]["clips"]]
        shares = motions.direction_shares(per)
        log(f"all {len(per)} clips, {name}: moving the asked way {shares['moves_the_asked_way']:.2f}, read as asked "
            f"{shares['read_as_asked']:.2f}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("toyworld-build/direction_loras"),
                   help="where the reference clips and LoRAs go (reused by a rerun)")
    p.add_argument("--clips", type=int, default=8, help="clips per direction and arm")
    p.add_argument("--variant", default=M.DEFAULT, choices=list(M.VARIANTS), help="the motion LoRA's paths "
                   f"(default: {M.DEFAULT!r}, the motion demo's)")
    p.add_argument("--direction", action="append", choices=DIRECTIONS, help="only these (repeat; default: all)")
    p.add_argument("--out", type=Path, help="also write the numbers here (JSON)")
    args = p.parse_args()
    result = run(args.work, args.clips, variant=args.variant, directions=tuple(args.direction or DIRECTIONS))
    if args.out:
        write_text_atomic(args.out, json.dumps({"clips_per_direction": args.clips, "variant": args.variant, **result},
                                               indent=1) + "\n")


if __name__ == "__main__":
    main()
