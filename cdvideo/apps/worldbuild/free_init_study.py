"""Does FreeInit (`cdvideo animate --free-init`: 3 iterations of low-frequency noise re-initialisation) lift the
identity of the miniature world's clips? Paired on prompt and seed, plain against FreeInit:

- the ceiling: each instance spelled out, "... moving left/right/up/down on a gray background", one clip a motion
  (seeds 0-3);
- the demo's clips: its three prompts on their first backgrounds (blue, grassy, checkered: as the study ran, before
  the demo moved spotted_star's first clip off blue) x 4 render seeds, base model and ClassDiffusion at the demo's
  recipe, on spotted_star (the demo's subject) and striped_ball.

    python -m cdvideo.apps.worldbuild.free_init_study    # about 11 minutes on 2 cores
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cdvideo.data.files import write_text_atomic
from cdvideo.data.ranges import Parser
from cdvideo.math.metrics import bootstrap_ci
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import INSTANCES, Instance, get
from cdvideo.toyworld.scoring import Sample
from cdvideo.toyworld.world import MOTION_WORDS, TRANSLATIONS

SEEDS = range(4)  # render seeds of each demo prompt
DEMO_SUBJECTS = ("spotted_star", "striped_ball")


def identities(weights: Path | None, inst: Instance, clips: list[tuple[str, int]], judge) -> dict[bool, list[float]]:
    """The instance's identity on each (prompt, seed) clip (the demo's 16 frames, 20 steps, guidance 5), plain and
    with FreeInit."""
    from cdvideo.apps.demo import render_samples  # lazy: start-up time

    samples = [Sample("motion", text, {}, seed) for text, seed in clips]
    return {free_init: [J.identity(J.read(judge, frames), inst.appearance)
                        for frames in render_samples(weights, samples, free_init=free_init)]
            for free_init in (False, True)}


def paired(ids: dict[bool, list[float]]) -> dict:
    """Plain and FreeInit means, and FreeInit's paired difference with its 95% bootstrap interval."""
    diff = bootstrap_ci(np.subtract(ids[True], ids[False]))
    return {"plain": float(np.mean(ids[False])), "free_init": float(np.mean(ids[True])), "difference": diff,
            "clips": len(ids[False])}


def run(work: Path) -> dict:
    from cdvideo.apps.demo import MASKLESS, PROMPT_BACKGROUNDS, PROMPTS, TOKEN, train_config  # lazy: start-up time
    from cdvideo.tasks.train import train  # lazy: start-up time

    judge = J.load()
    ceiling: dict[bool, list[float]] = {True: [], False: []}
    for inst in INSTANCES.values():  # one clip a motion, seed i for the i-th
        clips = [(f"a {inst.describe()} {MOTION_WORDS[m]} on a gray background", i) for i, m in enumerate(TRANSLATIONS)]
        for k, v in identities(None, inst, clips, judge).items():
            ceiling[k] += v
    result = {"spelled out, gray background": paired(ceiling)}
    for name in DEMO_SUBJECTS:
        inst = get(name)
        weights = train(train_config(inst, work / name, 120, 1.0, {"overwrite": True, **MASKLESS}))
        clips = [(p.format(token=TOKEN, class_word=inst.cls, background=b), s)
                 for p, b in zip(PROMPTS, PROMPT_BACKGROUNDS) for s in SEEDS]
        result[f"{name}, base"] = paired(identities(None, inst, [(t.replace(f"{TOKEN} ", ""), s) for t, s in clips],
                                                    judge))
        result[f"{name}, ClassDiffusion"] = paired(identities(weights, inst, clips, judge))
    return result


def main() -> None:
    p = Parser(prog="python -m cdvideo.apps.worldbuild.free_init_study", description=__doc__.splitlines()[0])
    p.add_argument("--work", default=".toyworld-build/free_init", help="the runs' weights (default: %(default)s)")
    p.add_argument("--out", default="docs/toyworld/free_init.json", help="the results (default: %(default)s)")
    args = p.parse_args()
    result = run(Path(args.work))
    write_text_atomic(Path(args.out), json.dumps(result, indent=1) + "\n")
    for k, r in result.items():
        lo, hi = r["difference"][1:]
        print(f"{k}: {r['plain']:.3f} -> {r['free_init']:.3f} ({r['difference'][0]:+.3f} [{lo:+.3f}, {hi:+.3f}], "
              f"{r['clips']} clips)")


if __name__ == "__main__":
    main()
