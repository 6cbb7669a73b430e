"""Motion personalization in the miniature world: each novel motion (circling, zigzag: rendered by the generator,
kept out of every pretraining caption) learnt from 3 reference clips of other objects on other backgrounds, then
rendered on personal instances ("a sks ball on a blue background" + the motion LoRA), against (a) the base adapter
(no words exist for these motions, so the prompt names none) and (b) a temporal LoRA trained without the appearance
path (no spatial LoRA, no debiased loss). Read by the world's judge: motion fidelity, appearance leakage, identity.

    python -m cdvideo.apps.worldbuild.motion_study --seeds 0 1 2              # ~25 min on 2 cores (both parts)
    python -m cdvideo.apps.worldbuild.motion_study --part 1/2 & ... --part 2/2   # the same in two processes
    python -m cdvideo.apps.worldbuild.motion_study --report                   # tables, figure and GIFs

A row per (motion, seed, instance, method) goes to docs/toyworld/motion_rows.jsonl as it ends (a rerun skips it);
the summary to docs/toyworld/motion.md, with 95% bootstrap intervals over the clips and the spread over seeds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from cdvideo.apps import motion_demo as M
from cdvideo.apps.demo import MASKLESS, train_config
from cdvideo.apps.worldbuild.common import study_run
from cdvideo.apps.worldbuild.spl_strength import append_row, read_rows
from cdvideo.data.files import slug, write_text_atomic
from cdvideo.data.ranges import SEED, Flag, Parser
from cdvideo.math.metrics import bootstrap_ci
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import get
from cdvideo.toyworld.world import NOVEL_MOTIONS

INSTANCES = ("striped_ball", "dotted_heart")  # one tuning instance, one held out
ROWS = "motion_rows.jsonl"
BASE = "base adapter"


def subject(work: Path, name: str) -> Path:
    """The instance's ClassDiffusion weights at the demo's setting (trained once)."""
    out = work / f"subject-{name}"
    return study_run(out, lambda: train_config(get(name), out, 120, 1.0, {"overwrite": True, **MASKLESS}))


def run_pair(work: Path, motion: str, seed: int, judge, rows: Path, done: set) -> None:
    """Every method on every instance for one (motion, seed): the LoRAs trained once, each scored on 8 clips."""
    methods = {BASE: None, **{v: None for v in M.VARIANTS}}
    for name in INSTANCES:
        inst, clips = get(name), M.clips_for(get(name), motion, seed)
        for method in methods:
            tag = f"{motion}-s{seed}-{name}-{method}"
            if tag in done:
                continue
            if method != BASE and methods[method] is None:
                t0 = time.time()
                methods[method] = (M.learn(motion, work, seed, method), round(time.time() - t0))
            loras = [(methods[method][0], 1.0)] if method != BASE else []
            r = M.score(judge, inst, motion, seed, clips, M.render(subject(work, name), clips, loras))
            append_row({"tag": tag, "motion": motion, "seed": seed, "instance": name, "method": method,
                        "train_seconds": methods[method][1] if method != BASE else 0, **r}, rows)
            print(f"{tag}: fidelity {r['fidelity']:.3f} leakage {r['leakage']:.3f} identity {r['identity']:.3f}",
                  flush=True)


def releak(row: dict) -> dict:
    """The row with each clip's leakage read again from its judged background and colour (`motion_demo.leaked`)."""
    inst = get(row["instance"])
    asked = [c.background for c in M.clips_for(inst, row["motion"], row["seed"])]
    clips = [{**c, "leakage": float(M.leaked(inst, row["motion"], row["seed"], a, c["background"], c["colour"]))}
             for a, c in zip(asked, row["clips"])]
    return {**row, "clips": clips}


def summary(rows: list[dict]) -> dict:
    """Per motion and method: each measure's mean with a 95% bootstrap interval over clips, and the SD over seeds."""
    rows = [releak(r) for r in rows]
    out: dict = {}
    for motion in sorted({r["motion"] for r in rows}):
        for method in [BASE, *M.VARIANTS]:
            sel = [r for r in rows if r["motion"] == motion and r["method"] == method]
            if not sel:
                continue
            cell = {"seeds": len({r["seed"] for r in sel}), "clips": sum(len(r["clips"]) for r in sel)}
            for key in ("fidelity", "leakage", "identity"):
                mean, lo, hi = bootstrap_ci([c[key] for r in sel for c in r["clips"]])
                per_seed = [np.mean([c[key] for r in sel if r["seed"] == s for c in r["clips"]])
                            for s in sorted({r["seed"] for r in sel})]
                cell[key] = {"mean": mean, "ci": [lo, hi], "sd_seeds": float(np.std(per_seed, ddof=1))
                             if len(per_seed) > 1 else None}
            out.setdefault(motion, {})[method] = cell
    return out


def cell(v: dict) -> str:
    """'0.42 [0.30, 0.55], sd 0.08': mean, 95% interval over clips, SD over seeds."""
    sd = f", sd {v['sd_seeds']:.2f}" if v["sd_seeds"] is not None else ""
    return f"{v['mean']:.2f} [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]{sd}"


def table(s: dict) -> str:
    lines = []
    for motion, methods in s.items():
        lines += [f"**{motion}**", "", "| method | motion fidelity | appearance leakage | identity | seeds, clips |",
                  "|---|---|---|---|---|"]
        for method, c in methods.items():
            lines.append(f"| {method} | {cell(c['fidelity'])} | {cell(c['leakage'])} | {cell(c['identity'])} | "
                         f"{c['seeds']}, {c['clips']} |")
        lines.append("")
    return "\n".join(lines)


def gifs(work: Path, docs: Path) -> None:
    """One reference and the ball with each method, per motion (seed 0), enlarged, into docs/."""
    from cdvideo.toyworld import draw, motions  # lazy: start-up time

    from PIL import Image  # lazy: start-up time

    inst = get(INSTANCES[0])
    for motion in NOVEL_MOTIONS:
        ref = [Image.fromarray(f) for f in draw.render(motions.reference_scenes(motion, seed=0)[0])]
        M.write_gif(ref, docs / f"motion_{motion}_reference.gif", upscale=2)
        clip = M.clips_for(inst, motion, 0, n_backgrounds=1, seeds=(0,))
        for method in [BASE, *M.VARIANTS]:
            loras = [] if method == BASE else [(M.learn(motion, work, 0, method), 1.0)]
            frames = M.render(subject(work, inst.name), clip, loras)[0]
            M.write_gif(frames, docs / f"motion_{motion}_{slug(method)}.gif", upscale=2)


def main() -> None:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=Flag(int, SEED), nargs="+", default=[0, 1, 2])
    p.add_argument("--motions", nargs="+", default=list(NOVEL_MOTIONS))
    p.add_argument("--part", default="1/1", help="K/N: this process runs every N-th (motion, seed) from the K-th")
    p.add_argument("--work", default=".toyworld-build/motion", help="the runs (default: %(default)s)")
    p.add_argument("--docs", default="docs/toyworld", help="rows, table and GIFs (default: %(default)s)")
    p.add_argument("--report", action="store_true", help="only write the summary and GIFs of the rows so far")
    args = p.parse_args()
    work, docs = Path(args.work), Path(args.docs)
    rows = docs / ROWS
    if not args.report:
        k, n = (int(x) for x in args.part.split("/"))
        pairs = [(m, s) for m in args.motions for s in args.seeds][k - 1::n]
        judge, done = J.load(), {r["tag"] for r in read_rows(rows)}
        for motion, seed in pairs:
            run_pair(work, motion, seed, judge, rows, done)
        return
    s = summary(read_rows(rows))
    write_text_atomic(docs / "motion.md", table(s))
    write_text_atomic(docs / "motion.json", json.dumps(s, indent=1) + "\n")
    gifs(work, docs)
    print(table(s))


if __name__ == "__main__":
    main()
