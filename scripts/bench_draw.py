"""What drawing the miniature world costs: the renderer against its version at an earlier commit, side by side on
the same scenes, and whether the two draw the same pictures to the bit.

    python scripts/bench_draw.py [--before b0e7977] [--stills 1500] [--clips 40] [--rounds 3]

`--before` names the commit whose `cdvideo/toyworld/draw.py` is timed beside the working tree's (b0e7977: the
float compositing and float box filter, before the integer one). Scenes: fresh stills (40% wearing an accessory,
40% beside a second object) and clips of 16 frames, as the build's stages and the tests draw them. Arms alternate;
the median of `--rounds` counts. Run it alone: on two cores a second job doubles any timing.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from cdvideo.data.ranges import COUNT, Flag, Range
from cdvideo.toyworld import draw, world

ROOT = Path(__file__).resolve().parents[1]


def draw_at(commit: str):
    """The module `cdvideo/toyworld/draw.py` as it was at `commit` (read with git, loaded under its own name)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:cdvideo/toyworld/draw.py"],
                            capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as folder:  # executed once loaded: nothing left behind
        path = Path(folder) / f"draw_{commit}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def seconds(module, scenes: list) -> tuple[float, list]:
    start = time.perf_counter()
    out = [module.render_with_alpha(s) for s in scenes]
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="b0e7977")
    ap.add_argument("--stills", type=Flag(int, Range(1, 100_000)), default=1500)
    ap.add_argument("--clips", type=Flag(int, Range(0, 10_000)), default=40)
    ap.add_argument("--rounds", type=Flag(int, COUNT), default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    scenes = [world.sample_scene(rng, accessory_p=0.4, companion_p=0.4) for _ in range(args.stills)]
    scenes += [world.sample_scene(rng, clip=True) for _ in range(args.clips)]
    frames = args.stills + args.clips * world.NUM_FRAMES
    arms = {f"at {args.before}": draw_at(args.before), "working tree": draw}
    times: dict[str, list[float]] = {name: [] for name in arms}
    drawn = {}
    for _ in range(args.rounds):
        for name, module in arms.items():
            t, drawn[name] = seconds(module, scenes)
            times[name].append(t)
    (a, out_a), (b, out_b) = ((statistics.median(times[n]), drawn[n]) for n in arms)
    same = all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(out_a, out_b))
    print(f"{len(scenes)} scenes, {frames} frames, median of {args.rounds} rounds")
    for name in arms:
        t = statistics.median(times[name])
        print(f"  {name:>16}: {t:6.2f} s, {1000 * t / frames:5.2f} ms a frame")
    print(f"  speed-up {a / b:.2f}x; frames and coverage equal to the bit: {same}")


if __name__ == "__main__":
    main()
