"""What the shipped judge reads on each personal instance's own renders, trait by trait: stills at the world's five
positions against the frames of moving clips (which put the object between them), per motion, and how often a
frame reads the instance's two colours swapped (the body's colour as the pattern's and the pattern's as the body's).
A generated image can at best score what its instance's renders score here: a swap the judge reads on a render
counts against a run that drew the instance exactly. No model; about 30 s alone.

    python scripts/judge_traits.py [--clips 48] [--out docs/toyworld/judge_traits.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cdvideo.data.files import write_text_atomic
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.draw import render
from cdvideo.toyworld.instances import INSTANCES
from cdvideo.toyworld.scoring import CLIP_MOTIONS
from cdvideo.toyworld.world import POSITIONS, backgrounds_for, with_motion


def traits(reading: J.Reading, appearance: tuple) -> dict[str, float]:
    """Over a reading's frames: each trait's share (identity on that trait alone), and the share of frames whose two
    colour labels are the instance's swapped."""
    return {**{t: J.identity(reading, appearance, (t,)) for t in J.TRAITS},
            "swapped": float(J.swapped(reading, appearance).mean())}


def instance(judge: J.Judge, name: str, n: int, seed: int) -> dict:
    """n stills (random background and position, big) and n clips (the moving motions in turn) of one instance."""
    inst, rng = INSTANCES[name], np.random.default_rng(seed)
    backgrounds = backgrounds_for(inst.colour)
    stills, by_motion = [], {m: [] for m in CLIP_MOTIONS}
    for i in range(n):
        scene = inst.scene(backgrounds[i % len(backgrounds)], list(POSITIONS)[rng.integers(5)], "big",
                           seed=int(rng.integers(2**30)))
        stills.append(traits(J.read(judge, [render(scene)[0]]), inst.appearance))
        motion = CLIP_MOTIONS[i % len(CLIP_MOTIONS)]
        frames = render(with_motion(scene, rng, motion))  # (F, 64, 64, 3)
        by_motion[motion].append(traits(J.read(judge, list(frames)), inst.appearance))
    mean = lambda rows, k: round(float(np.mean([r[k] for r in rows])), 3)  # noqa: E731  (every clip 16 frames)
    keys = (*J.TRAITS, "swapped")
    clips = [r for rows in by_motion.values() for r in rows]
    return {"stills": {k: mean(stills, k) for k in keys}, "clip_frames": {k: mean(clips, k) for k in keys},
            "identity": {"stills": round(float(np.mean([mean(stills, t) for t in J.TRAITS])), 3),
                         "clip_frames": round(float(np.mean([mean(clips, t) for t in J.TRAITS])), 3)},
            "by_motion": {m: {k: mean(rows, k) for k in keys} for m, rows in by_motion.items() if rows}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=48, help="stills and clips per instance (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the readings here (JSON)")
    args = p.parse_args()
    judge = J.load()
    found = {name: instance(judge, name, args.clips, args.seed) for name in INSTANCES}
    print(f"{'instance':14} {'':6} " + " ".join(f"{k:>14}" for k in (*J.TRAITS, "swapped", "identity")))
    for name, r in found.items():
        for where in ("stills", "clip_frames"):
            print(f"{name:14} {where[:6]:6} " + " ".join(f"{r[where][k]:14.3f}" for k in (*J.TRAITS, "swapped"))
                  + f" {r['identity'][where]:14.3f}")
    if args.out:
        write_text_atomic(args.out, json.dumps({"judge": judge.digest, "clips": args.clips, "seed": args.seed,
                                                "instances": found}, indent=1) + "\n")


if __name__ == "__main__":
    main()
