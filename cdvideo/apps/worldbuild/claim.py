"""ClassDiffusion's claim where the paper makes it, measured in the miniature world: four arms, paired.

    python -m cdvideo.apps.worldbuild.claim --noise        # the scorer's own noise first (~3 min)
    python -m cdvideo.apps.worldbuild.claim --seeds 0      # one seed: 72 runs (~25 min on 2 cores)
    python -m cdvideo.apps.worldbuild.claim                # seeds 0 1 (resumable: finished rows are kept)
    python -m cdvideo.apps.worldbuild.claim --report       # tables and figure from the rows so far
    python -m cdvideo.apps.worldbuild.claim --recipe maskless   # the study of record before subject masks

Arms, each `cdvideo train` with the world's recipe (configs/train/toyworld.yaml: subject masks, 5e-4; or with
`--recipe maskless` the recipe before them, 1e-3 without masks) on one instance's 5 photos:
ClassDiffusion (SPL 1), Custom Diffusion (no SPL), and each with prior preservation (200 class images of
"a photo of a <class>" from the base model, generated once per class and shared by every run; the paper's
baseline question, the official repository's issue #14). Every (instance, seed, strength) is trained in every arm
and scored on the same samples (prompts and render seeds: common random numbers) of six prompt kinds: background,
position, property change, accessory ("a sks ball wearing a red hat"), second object ("a sks ball next to an
orange star") and motion (clips). Beside them, per instance: the base model prompted with the class word and the
spelled-out ceiling (the instance's traits in words). Rows go to <docs>/claim_rows.jsonl as each run ends (docs:
docs/toyworld/masked, or docs/toyworld for the maskless record); the summary to claim.md, claim.json and claim.png
(claim_report.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from cdvideo.apps.demo import MASKLESS, train_config
from cdvideo.apps.worldbuild.claim_report import NOISE, SUBJECT_KINDS, write_report
from cdvideo.apps.worldbuild.common import study_run
from cdvideo.apps.worldbuild.spl_strength import (
    append_row,
    drift_distance,
    read_rows,
    rescored,
    score,
    study_flags,
    study_main,
)
from cdvideo.data.files import write_text_atomic
from cdvideo.data.ranges import Parser
from cdvideo.toyworld.instances import INSTANCES, Instance
from cdvideo.toyworld.scoring import KINDS, Sample, eval_set

ROWS = "claim_rows.jsonl"  # in --docs
ARMS = {"ClassDiffusion": {"spl.weight": 1.0}, "Custom Diffusion": {"spl.weight": 0.0},
        "ClassDiffusion + prior": {"spl.weight": 1.0, "prior.enabled": True},
        "Custom Diffusion + prior": {"spl.weight": 0.0, "prior.enabled": True}}


@dataclass(frozen=True)
class Recipe:
    """The training settings every run of one study shares, its strengths (label: (learning rate, steps)), the
    label of the recipe itself among them, and where its runs and rows go unless --work and --docs say otherwise."""
    settings: dict
    strengths: dict
    itself: str
    work: str
    docs: str


# Each recipe between a lighter (half the steps) and a stronger (twice the rate and the steps) fine-tuning
RECIPES = {
    "masked": Recipe({}, {"5e-4 x 60": (5e-4, 60), "5e-4 x 120": (5e-4, 120), "1e-3 x 240": (1e-3, 240)},
                     "5e-4 x 120", ".toyworld-build/claim-masked", "docs/toyworld/masked"),  # `demo.TRAIN`
    "maskless": Recipe(MASKLESS, {"1e-3 x 60": (1e-3, 60), "1e-3 x 120": (1e-3, 120), "2e-3 x 240": (2e-3, 240)},
                       "1e-3 x 120", ".toyworld-build/claim", "docs/toyworld"),  # before subject masks: the record
}
CLASS_IMAGES = ".toyworld-build/claim/class_images"  # from the base model: every recipe's runs share them
PRIOR = {"prior.num_class_images": 200, "prior.num_inference_steps": 25, "prior.guidance_scale": 5.0}


def train_arm(inst: Instance, out: Path, arm: str, strength: str, seed: int, class_images: Path,
              recipe: Recipe) -> Path:
    """One run as `cdvideo train` reads it (cached: weights trained on the shipped UNet are reused)."""
    lr, steps = recipe.strengths[strength]
    settings = dict(ARMS[arm])
    spl = settings.pop("spl.weight")
    extra = {"overwrite": True, **recipe.settings, "optimizer.learning_rate": lr, "seed": seed, **settings}
    if settings.get("prior.enabled"):
        extra |= {**PRIOR, "prior.class_images": str(class_images)}
    return study_run(out, lambda: train_config(inst, out, steps, spl, extra))


def samples(inst: Instance, subject: str, args, kinds: tuple = KINDS) -> list[Sample]:
    return eval_set(inst.colour, subject, args.still_seeds, args.clip_seeds, kinds)


def tag(inst: str, seed: int, strength: str, arm: str) -> str:
    return f"{inst}-{strength.replace(' ', '')}-{arm.replace(' + ', '-').replace(' ', '')}-s{seed}"


def reference_rows(args, judge, done: set, rows: Path) -> None:
    """Per instance, once: the base model told the class word ('a ball') and told the traits ('a yellow ball with
    purple stripes'); the ceiling is read on the kinds whose words keep the subject (all but property)."""
    for name in args.instances:
        inst = INSTANCES[name]
        for setting, subject in (("base", inst.cls), ("spelled out", inst.describe())):
            if f"{name}-{setting}" in done:
                continue
            kinds = KINDS if setting == "base" else SUBJECT_KINDS
            r = score(None, inst, subject, samples(inst, subject, args, kinds), judge)
            append_row({"tag": f"{name}-{setting}", "instance": name, "held_out": inst.held_out,
                        "setting": setting, **r, "judge": judge.digest}, rows)


def run_study(args, judge) -> None:
    rows, recipe = Path(args.docs) / ROWS, RECIPES[args.recipe]
    work, done, t0 = Path(args.work), {r["tag"] for r in read_rows(rows)}, time.time()
    reference_rows(args, judge, done, rows)
    plan = [(s, name, st, arm) for s in args.seeds for name in args.instances for st in recipe.strengths
            for arm in ARMS]
    for seed, name, strength, arm in plan:  # seed by seed: a stopped study leaves whole seeds
        t = tag(name, seed, strength, arm)
        if t in done:
            continue
        inst = INSTANCES[name]
        path = train_arm(inst, work / t, arm, strength, seed, Path(args.class_images), recipe)
        r = score(path, inst, f"sks {inst.cls}", samples(inst, f"sks {inst.cls}", args), judge)
        row = {"tag": t, "instance": name, "held_out": inst.held_out, "seed": seed, "strength": strength,
               "arm": arm, "recipe": args.recipe, **r, "drift": drift_distance(path), "judge": judge.digest}
        append_row(row, rows)
        print(f"[{time.time() - t0:6.0f} s] {t}: identity {r['identity']:.3f} composition {r['composition']:.3f}",
              flush=True)


def measure_noise(args, judge) -> None:
    """The scorer's noise: one run (striped_ball, ClassDiffusion, the recipe, seed 0) scored again with other
    render seeds (+100, +200, ...): the spread of each metric that is not the model's."""
    inst, recipe = INSTANCES["striped_ball"], RECIPES[args.recipe]
    strength = recipe.itself
    path = train_arm(inst, Path(args.work) / tag(inst.name, 0, strength, "ClassDiffusion"), "ClassDiffusion",
                     strength, 0, Path(args.class_images), recipe)
    keys = ("identity", "composition", *(f"composition_{k}" for k in KINDS), *(f"identity_{k}" for k in KINDS))
    noise = rescored(path, inst, "sks ball", samples(inst, "sks ball", args), judge, args.noise_repeats, keys)
    for key, v in noise.items():
        print(f"{key:24s} mean {v['mean']:.3f}  sd over render seeds {v['sd']:.3f}")
    record = {"run": f"striped_ball, ClassDiffusion, {strength}, seed 0", "repeats": args.noise_repeats,
              "still_seeds": args.still_seeds, "clip_seeds": args.clip_seeds, "metrics": noise}
    write_text_atomic(Path(args.docs) / NOISE, json.dumps(record, indent=1) + "\n")


def main() -> None:
    p = Parser(prog="python -m cdvideo.apps.worldbuild.claim", description=__doc__.splitlines()[0])
    p.add_argument("--instances", nargs="+", choices=list(INSTANCES), default=list(INSTANCES), metavar="NAME",
                   help=f"of {', '.join(INSTANCES)} (default: all)")
    p.add_argument("--recipe", choices=list(RECIPES), default="masked",
                   help="the world's recipe (masked, the default) or the one before subject masks (maskless)")
    p.add_argument("--class-images", default=CLASS_IMAGES, help="prior preservation's (default: %(default)s)")
    study_flags(p, None, [0, 1], 2, 1, docs=None)  # the recipe's, unless given
    args = p.parse_args()
    args.work = args.work or RECIPES[args.recipe].work
    args.docs = args.docs or RECIPES[args.recipe].docs
    study_main(args, measure_noise, run_study, ROWS, write_report)


if __name__ == "__main__":
    main()
