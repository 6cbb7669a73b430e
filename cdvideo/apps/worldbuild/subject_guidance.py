"""Does sampling show more of a personalized subject when guided away from its class? A run's "a sks tree on a blue
background" is guided away from "a tree on a blue background", which amplifies what the token and the K/V add over
the class word (Composable Diffusion's negation, Liu et al. ECCV 2022, Eq. 9, as `swap_guidance` applies it to the
twin's words). On the recipe's runs of the tuning grid (`tune`'s cell 32: SPL 0.1, subject masks, 5e-4 x 120; the
four tuning instances, trained once and cached), the grid's 52 stills a run (DDIM 20 steps, guidance 5, the
demo's renders), paired on (run, still) with the same stills unguided:

    python -m cdvideo.apps.worldbuild.subject_guidance                    # weights 1 and 2, 6.6 min alone (runs cached)
    python -m cdvideo.apps.worldbuild.subject_guidance --weights 1 2 --out docs/toyworld/subject_guidance.json

Read by the shipped judge: identity over the kinds that keep the subject's words and composition, as `tune`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from cdvideo.apps.demo import RENDER, TOKEN
from cdvideo.apps.worldbuild.drawing import emit
from cdvideo.apps.worldbuild.swap_guidance import draw_away
from cdvideo.apps.worldbuild.tune import GRID, STILL_KINDS, readings, run_dir, tuned
from cdvideo.data.ranges import SEED, Flag, Parser, Range
from cdvideo.math.metrics import bootstrap_ci, strip_tokens
from cdvideo.toyworld import MODEL_ID
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import INSTANCES
from cdvideo.toyworld.scoring import eval_set, score_samples

RECIPE = GRID[32]  # SPL 0.1, the photos' subject masks 0.1 off the subject, 5e-4 x 120: configs/train/toyworld.yaml
STILL_SEEDS = 2  # the grid's: 52 stills a run


def run_readings(pipe, inst, judge, weights: list[float]) -> dict:
    """Per guidance weight (0: the plain renders): identity on stills and composition, as `tune.readings`."""
    samples = eval_set(inst.colour, f"{TOKEN} {inst.cls}", STILL_SEEDS, 0, STILL_KINDS)
    texts, seeds = [s.text for s in samples], [s.seed for s in samples]
    negatives = [strip_tokens(t, [TOKEN]) for t in texts]  # the same words told the class word alone
    out = {}
    for w in [0.0, *weights]:
        images = draw_away(pipe, texts, negatives, seeds, w, RENDER["num_inference_steps"])
        scores = score_samples(judge, inst.appearance, samples, [[Image.fromarray(a)] for a in images])
        scores.pop("samples")
        found = readings(scores | {"identity_motion": float("nan")})  # stills only: its clips value is not read
        out[f"{w:g}"] = {"stills": found["stills"], "composition": found["composition"]}
    return out


def measure(work: Path, instances: list[str], seeds: list[int], weights: list[float]) -> dict:
    """Each run's readings per weight; each weight minus the plain renders, paired on the run: mean and 95%."""
    from cdvideo.pipelines.build import image_pipeline  # lazy: start-up time
    from cdvideo.pipelines.personalized import load_personalized  # lazy: start-up time
    from cdvideo.pipelines.registry import make_scheduler  # lazy: start-up time

    judge, runs = J.load(), []
    for name in instances:
        for seed in seeds:
            cached = tuned(INSTANCES[name], work, RECIPE, seed, STILL_SEEDS, judge)  # trains it if not yet there
            m, _, _ = load_personalized(MODEL_ID, [str(run_dir(work, INSTANCES[name], RECIPE, seed)
                                                       / "weights.safetensors")])
            pipe = image_pipeline(m, scheduler=make_scheduler("ddim", m["scheduler"].config, False))
            pipe.set_progress_bar_config(disable=True)
            runs.append({"instance": name, "seed": seed, "cached": cached,
                         "readings": run_readings(pipe, INSTANCES[name], judge, weights)})
            print(name, seed, runs[-1]["readings"], flush=True)
    out: dict = {"runs": runs}
    for w in weights:
        for k in ("stills", "composition"):
            diffs = [r["readings"][f"{w:g}"][k] - r["readings"]["0"][k] for r in runs]
            out[f"{w:g} - plain, {k}"] = [round(x, 4) for x in bootstrap_ci(diffs)]
        out[f"{w:g} - plain, per instance, stills"] = {
            n: round(float(np.mean([r["readings"][f"{w:g}"]["stills"] - r["readings"]["0"]["stills"]
                                    for r in runs if r["instance"] == n])), 4) for n in instances}
    return out


def main() -> None:
    p = Parser(prog="python -m cdvideo.apps.worldbuild.subject_guidance", description=__doc__.splitlines()[0])
    p.add_argument("--instances", nargs="+", choices=list(INSTANCES), metavar="NAME",
                   default=[n for n, i in INSTANCES.items() if not i.held_out])
    p.add_argument("--seeds", nargs="+", type=Flag(int, SEED), default=[0, 1], help="training seeds (default 0 1)")
    p.add_argument("--weights", type=Flag(float, Range(0.0, 30.0)), nargs="+", default=[1.0, 2.0],
                   help="the negation's weights (default: 1 2)")
    p.add_argument("--work", default=".toyworld-build/tuning", help="the grid's runs (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    t0 = time.time()
    result = measure(Path(args.work), args.instances, args.seeds, args.weights)
    result["seconds"] = round(time.time() - t0)
    emit(result, args.out)


if __name__ == "__main__":
    main()
