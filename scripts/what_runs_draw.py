"""What a tuning cell's runs draw instead of their subject: each run (one per training seed) renders "a sks <class>
on a gray background" with 8 render seeds; the judge reads each still's colour, pattern and pattern colour, and the
script prints, per instance and cell, how many stills show the instance exactly, how many its colour-swapped twin,
and the most common readings.

    python -m cdvideo.apps.worldbuild.tune --cells 0 18 --seeds 0 1 2 3 4 5       # the runs, cached
    python scripts/what_runs_draw.py --cells 0 18 --instances striped_ball apple_tree rimmed_box   # ~4 min alone
    python scripts/what_runs_draw.py --model M --work .toyworld-build/tuning/M_NAME ...    # runs of `tune --model M`
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from cdvideo.apps.demo import render_samples
from cdvideo.apps.worldbuild.tune import GRID, run_dir
from cdvideo.toyworld import MODEL_ID
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import INSTANCES
from cdvideo.toyworld.scoring import Sample

TRAITS = ("colour", "pattern", "pattern_colour")


def readings(judge, weights: Path, cls: str, n: int, model: str = MODEL_ID) -> list[tuple[str, str, str]]:
    """The judge's (colour, pattern, pattern colour) of n stills of 'a sks <cls> on a gray background'."""
    samples = [Sample("background", f"a sks {cls} on a gray background", {}, 1000 + k) for k in range(n)]
    out = []
    for frames in render_samples(weights, samples, model=model):
        r = J.read(judge, frames)
        out.append(tuple(J.HEADS[k][int(r.probs[k][0].argmax())] for k in TRAITS))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, nargs="+", default=[0], help="rows of tune.GRID (0: the recipe)")
    p.add_argument("--instances", nargs="+", choices=list(INSTANCES), default=["striped_ball"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5], help="training seeds")
    p.add_argument("--stills", type=int, default=8, help="render seeds per run")
    p.add_argument("--work", default=".toyworld-build/tuning", help="tune.py's runs (default: %(default)s)")
    p.add_argument("--model", default=MODEL_ID, help="the base the runs were trained on (tune.py's --model)")
    args = p.parse_args()
    judge = J.load()
    for name in args.instances:
        inst = INSTANCES[name]
        for cell in args.cells:
            runs = [run_dir(Path(args.work), inst, GRID[cell], s) / "weights.safetensors" for s in args.seeds]
            missing = [str(w) for w in runs if not w.is_file()]
            if missing:
                seeds = " ".join(map(str, args.seeds))
                raise SystemExit(f"error: {missing[0]}: no such run; train it first with python -m "
                                 f"cdvideo.apps.worldbuild.tune --cells {cell} --seeds {seeds}")
            drawn = collections.Counter(r for w in runs for r in readings(judge, w, inst.cls, args.stills, args.model))
            total = sum(drawn.values())
            common = ", ".join(f"{' '.join(k)} {v}" for k, v in drawn.most_common(4))
            print(f"{name} cell {cell}: exact {drawn[inst.appearance[1:]]}/{total}, colours swapped "
                  f"{drawn[inst.swapped().appearance[1:]]}; most drawn: {common}", flush=True)


if __name__ == "__main__":
    main()
