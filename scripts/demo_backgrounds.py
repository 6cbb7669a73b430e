"""Does a demo clip's background decide whether the subject shows? Each tuning instance's demo run (its recipe and
training seed) renders "a sks <class> moving right on a <background> background" on several backgrounds and render
seeds, the base model the same with the class word; the judge reads each clip's identity, and the script prints
the gain per clip, per background its mean and the share of clips gaining 0.3, and each background's paired
difference from blue (the demo's first) with a 95% bootstrap interval over instances and seeds.

    python scripts/demo_backgrounds.py /tmp/bg --out docs/toyworld/demo_backgrounds.json    # ~12 min alone
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cdvideo.apps.cli import main as cdvideo
from cdvideo.data.files import slug, write_text_atomic
from cdvideo.math.metrics import bootstrap_ci
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import INSTANCES

TUNING = [name for name, inst in INSTANCES.items() if not inst.held_out]
BACKGROUNDS = ("blue", "green", "checkered", "black", "sandy")
PROMPT = "a {subject} moving right on a {background} background"


def identity(judge, folder: Path, appearance: tuple) -> float:
    """A clip's identity from its saved frames (`*_frames/*.png`)."""
    return J.identity(J.read(judge, [np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob("*.png"))]),
                      appearance)


def gains(judge, run: Path, cls: str, appearance: tuple, seeds: int) -> dict[str, list[float]]:
    """Per background, each render seed's identity gain of the tuned clip over the base model's."""
    out = {}
    for bg in BACKGROUNDS:
        tuned, base = (slug(PROMPT.format(subject=s, background=bg)) for s in (f"sks {cls}", cls))  # file stems
        out[bg] = [round(identity(judge, run / "clips" / f"{tuned}_s{s}_frames", appearance)
                         - identity(judge, run / "before" / f"{base}_s{s}_frames", appearance), 4)
                   for s in range(seeds)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work", type=Path, help="a new folder for the demo runs")
    p.add_argument("--seeds", type=int, choices=range(2, 65), default=6, metavar="2..64",
                   help="render seeds per prompt (default: 6)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args()
    if args.work.exists():
        p.error(f"{args.work}: already exists; name a new folder for the demo runs")
    judge, result = J.load(), {"prompt": PROMPT, "gains": {}}
    for name in TUNING:
        inst = INSTANCES[name]
        prompts = [a for bg in BACKGROUNDS for a in ("--prompt", PROMPT.format(subject=f"sks {inst.cls}",
                                                                               background=bg))]
        if cdvideo(["demo", "--instance", name, *prompts, "--seed", *map(str, range(args.seeds)),
                    "--still-seeds", "1", "--without-spl", "never", "--output-dir", str(args.work / name)]) != 0:
            sys.exit(f"error: the demo on {name} failed (above)")
        result["gains"][name] = gains(judge, args.work / name / name, inst.cls, inst.appearance, args.seeds)
    flat = {bg: [g for per in result["gains"].values() for g in per[bg]] for bg in BACKGROUNDS}
    result["backgrounds"] = {bg: {"mean gain": round(float(np.mean(v)), 3),
                                  "share gaining 0.3": round(float(np.mean(np.array(v) >= 0.3)), 3),
                                  "minus blue": [round(x, 3) for x in bootstrap_ci(np.subtract(v, flat["blue"]))]}
                             for bg, v in flat.items()}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        write_text_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()
