"""How the miniature world's training recipe (configs/train/toyworld.yaml, `cdvideo demo`) is chosen: a small grid
of learning rate x steps with ClassDiffusion (SPL 1) and one Custom Diffusion (no SPL) run of the recipe, on the
four tuning instances only (the two held-out ones never enter it), each run scored on the claim study's stills
(background, position, property, accessory, second object; 26 per render seed) as the share of the way from the
base model (told the class word) to the spelled-out ceiling (told the traits) that its identity recovers.

    python -m cdvideo.apps.worldbuild.tune    # about 5 minutes on 2 cores; writes docs/toyworld/tuning.md
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from cdvideo.apps.worldbuild.claim_report import SUBJECT_KINDS, share, subject_identity
from cdvideo.data.files import write_text_atomic
from cdvideo.data.ranges import COUNT, Flag, Parser
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import INSTANCES, Instance

GRID = [(lr, steps, 1.0) for lr in (1e-3, 2e-3, 4e-3) for steps in (120, 240)] + [(1e-3, 120, 0.0)]
STILL_KINDS = ("background", "position", "property", "accessory", "companion")


def stills(weights: Path | None, inst: Instance, subject: str, still_seeds: int, judge,
           kinds: tuple[str, ...] = STILL_KINDS) -> dict:
    """The claim study's scores of `subject` on the stills of `kinds` (rendered with `weights`, or the base)."""
    from cdvideo.apps.worldbuild.spl_strength import score  # lazy: start-up time
    from cdvideo.toyworld.scoring import eval_set  # lazy: start-up time

    return score(weights, inst, subject, eval_set(inst.colour, subject, still_seeds, 0, kinds), judge)


def references(inst: Instance, still_seeds: int, judge) -> tuple[float, float]:
    """The base model's subject identity (kinds that keep the subject's words) told the class word, and the
    ceiling: told the traits."""
    told, kinds = inst.describe(), tuple(k for k in SUBJECT_KINDS if k in STILL_KINDS)
    return (subject_identity(stills(None, inst, inst.cls, still_seeds, judge)),
            subject_identity(stills(None, inst, told, still_seeds, judge, kinds)))


def tuned(inst: Instance, work: Path, lr: float, steps: int, spl: float, still_seeds: int, judge) -> dict:
    """One run as `cdvideo train` reads it (cached: an existing weights file is reused), scored."""
    from cdvideo.apps.demo import train_config  # lazy: start-up time
    from cdvideo.tasks.train import train  # lazy: start-up time

    out = work / f"{inst.name}-lr{lr:g}-{steps}-spl{spl:g}"
    path = out / "weights.safetensors"
    if not path.is_file():
        path = train(train_config(inst, out, steps, spl, {"overwrite": True, "optimizer.learning_rate": lr}))
    return stills(path, inst, f"sks {inst.cls}", still_seeds, judge)


def main() -> None:
    p = Parser(prog="python -m cdvideo.apps.worldbuild.tune", description=__doc__.splitlines()[0])
    p.add_argument("--instances", nargs="+", choices=list(INSTANCES), metavar="NAME",
                   default=[n for n, i in INSTANCES.items() if not i.held_out])
    p.add_argument("--still-seeds", type=Flag(int, COUNT), default=2, help="render seeds per still prompt")
    p.add_argument("--work", default=".toyworld-build/tuning", help="the runs' weights (default: %(default)s)")
    p.add_argument("--docs", default="docs/toyworld", help="where tuning.md goes (default: %(default)s)")
    args = p.parse_args()
    judge, t0 = J.load(), time.time()
    refs = {n: references(INSTANCES[n], args.still_seeds, judge) for n in args.instances}
    lines = []
    for lr, steps, spl in GRID:
        rows = {n: tuned(INSTANCES[n], Path(args.work), lr, steps, spl, args.still_seeds, judge)
                for n in args.instances}
        shares = [share(subject_identity(rows[n]), *refs[n]) for n in args.instances]  # as the claim study's
        ident, comp = (np.mean([r[k] for r in rows.values()]) for k in ("identity", "composition"))
        lines.append(f"| {lr:g} | {steps} | {spl:g} | {ident:.3f} | {comp:.3f} | {np.mean(shares):.2f} | "
                     + ", ".join(f"{s:.2f}" for s in shares) + " |")
        print(f"[{time.time() - t0:5.0f} s] {lines[-1]}", flush=True)
    text = ("| learning rate | steps | SPL | identity | composition | share of the ceiling | per instance |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n\n"
            f"Tuning instances: {', '.join(args.instances)}; base and spelled-out identity: "
            + ", ".join(f"{n} {b:.2f} / {c:.2f}" for n, (b, c) in refs.items())
            + f". {26 * args.still_seeds} stills per run (`python -m cdvideo.apps.worldbuild.tune`, "
            f"{(time.time() - t0) / 60:.0f} min).\n")
    write_text_atomic(Path(args.docs) / "tuning.md", text)
    print(text)


if __name__ == "__main__":
    main()
