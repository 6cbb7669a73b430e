"""SPL across fine-tuning strength in the miniature world: paired differences with bootstrap intervals.

    python -m cdvideo.apps.worldbuild.spl_strength --noise       # the scorer's own noise first (~4 min)
    python -m cdvideo.apps.worldbuild.spl_strength --seeds 0     # one seed: 72 runs, ~40 min on 2 cores
    python -m cdvideo.apps.worldbuild.spl_strength               # seeds 0 1 2 (~2 h; resumable, rows kept)
    python -m cdvideo.apps.worldbuild.spl_strength --report      # tables and figures from the rows so far

Each run is `cdvideo train` with the demo's settings (configs/train/toyworld.yaml) on one instance's 5 photos, at
one strength (learning rate x steps) and SPL weight; every (instance, seed, strength) is trained with SPL 0 and 1,
and the strongest also with 0.1, 10 and `spl.pooling=official`. Every run is scored on the same samples (the same
prompts and render seeds: common random numbers, so a paired difference carries less render noise) of four prompt
kinds, as DreamBench's: background change, position, property change ("a blue sks ball": the judge reads the
colour; identity there is the share of the other traits) and motion (clips). Composition is the mean over kinds.
Rows go to docs/toyworld/strength_rows.jsonl as each run ends (a rerun skips them), the summary to
docs/toyworld/strength.md, strength.json and strength.png.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from cdvideo.apps.demo import MASKLESS, render_samples, train_config
from cdvideo.apps.worldbuild.common import study_run
from cdvideo.apps.worldbuild.strength_report import write_report
from cdvideo.data.ranges import COUNT, SEED, Flag, Parser
from cdvideo.tasks.drift import compute, load_source
from cdvideo.toyworld import MODEL_ID, drift_phrases
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import INSTANCES, Instance
from cdvideo.toyworld.scoring import KINDS, Sample, eval_set, score_samples

ROWS = "strength_rows.jsonl"  # in --docs
STRENGTHS = {"1e-3 x 120": (1e-3, 120), "3e-3 x 120": (3e-3, 120), "3e-3 x 240": (3e-3, 240),
             "6e-3 x 240": (6e-3, 240)}  # the demo's setting first (1e-2 x 240 collapses with and without SPL)
STRONGEST = "6e-3 x 240"
EXTRA = ((0.1, "eos"), (10.0, "eos"), (1.0, "official"))  # at the strongest setting only
NOISE_SETTING = (1e-2, 240)  # where the scorer's noise was measured (--noise)


@torch.no_grad()
def score(weights_file: Path | None, inst: Instance, subject: str, samples: list, judge, model: str = MODEL_ID) -> dict:
    """Per kind: composition (share of samples showing the prompted attribute) and identity (property change: the
    share of the traits other than colour); plus their means over kinds (the demo's rendering and scoring; `model`:
    another base of the miniature model's architecture)."""
    out = score_samples(judge, inst.appearance, samples, render_samples(weights_file, samples, model=model))
    out.pop("samples")
    return out


def train_run(inst: Instance, out: Path, lr: float, steps: int, spl: float, seed: int, pooling: str) -> Path:
    """One ClassDiffusion run as `cdvideo train` reads it (cached: weights trained on the shipped UNet are reused)."""
    return study_run(out, lambda: train_config(inst, out, steps, spl, {
        "overwrite": True, **MASKLESS, "optimizer.learning_rate": lr, "spl.pooling": pooling, "seed": seed}))


def drift_distance(weights_file: Path) -> float:
    """`cdvideo drift`'s cosine distance of the token from its class centroid."""
    return compute([load_source(weights_file)], drift_phrases())["runs"][0]["after"]["distance"]


def plan(instances: list[str], seeds: list[int]) -> list[tuple]:
    """(instance, seed, strength, spl weight, pooling), seed by seed: each seed completes every pair and the extra
    weights before the next seed starts, so a stopped ablation leaves whole seeds."""
    return [row for s in seeds for row in
            [(i, s, st, w, "eos") for i in instances for st in STRENGTHS for w in (0.0, 1.0)]
            + [(i, s, STRONGEST, w, p) for i in instances for w, p in EXTRA]]


def tag(inst: str, seed: int, strength: str, weight: float, pooling: str) -> str:
    lr, steps = STRENGTHS[strength]
    return f"{inst}-lr{lr:g}-n{steps}-spl{weight:g}{'-official' if pooling == 'official' else ''}-s{seed}"


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def append_row(row: dict, path: Path) -> None:
    """One line per finished run, flushed and synced: an interrupted ablation keeps every row it finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_ablation(args, judge) -> None:
    rows = Path(args.docs) / ROWS
    work, done, t0 = Path(args.work), {r["tag"] for r in read_rows(rows)}, time.time()
    for name in args.instances:  # the base model, prompted with the class word, once per instance
        if f"{name}-base" not in done:
            inst = INSTANCES[name]
            r = score(None, inst, inst.cls, eval_set(inst.colour, inst.cls, args.still_seeds, args.clip_seeds), judge)
            append_row({"tag": f"{name}-base", "instance": name, "held_out": inst.held_out, "setting": "base", **r,
                        "judge": judge.digest}, rows)
    for name, seed, strength, weight, pooling in plan(args.instances, args.seeds):
        t = tag(name, seed, strength, weight, pooling)
        if t in done:
            continue
        inst, (lr, steps) = INSTANCES[name], STRENGTHS[strength]
        path = train_run(inst, work / t, lr, steps, weight, seed, pooling)
        r = score(path, inst, f"sks {inst.cls}", eval_set(inst.colour, f"sks {inst.cls}", args.still_seeds,
                                                          args.clip_seeds), judge)
        row = {"tag": t, "instance": name, "held_out": inst.held_out, "seed": seed, "strength": strength,
               "spl": weight, "pooling": pooling, **r, "drift": drift_distance(path), "judge": judge.digest}
        append_row(row, rows)
        print(f"[{time.time() - t0:6.0f} s] {t}: identity {r['identity']:.3f} composition {r['composition']:.3f} "
              f"drift {row['drift']:.3f}", flush=True)


def rescored(path: Path, inst, subject: str, samples: list[Sample], judge, repeats: int,
             keys: tuple[str, ...]) -> dict:
    """The same weights scored `repeats` times on `samples` with other render seeds (+100, +200, ...): per metric
    its mean and standard deviation, the spread that is the scorer's and not the model's."""
    scores = [score(path, inst, subject, [Sample(x.kind, x.text, x.asked, x.seed + 100 * k) for x in samples],
                    judge) for k in range(repeats)]
    return {key: {"mean": float(np.mean([s[key] for s in scores])),
                  "sd": float(np.std([s[key] for s in scores], ddof=1))} for key in keys}


def measure_noise(args, judge) -> None:
    """The scorer's noise: the same weights (striped_ball, seed 0, lr 1e-2 x 240 steps) scored again with other
    render seeds (+100, +200, ...), per metric."""
    inst, (lr, steps) = INSTANCES["striped_ball"], NOISE_SETTING
    for weight in (0.0, 1.0):
        path = train_run(inst, Path(args.work) / f"{inst.name}-lr{lr:g}-n{steps}-spl{weight:g}-s0", lr, steps,
                         weight, 0, "eos")
        base = eval_set(inst.colour, "sks ball", args.still_seeds, args.clip_seeds)
        keys = ("identity", "composition", *(f"composition_{k}" for k in KINDS))
        for key, v in rescored(path, inst, "sks ball", base, judge, args.noise_repeats, keys).items():
            print(f"spl {weight:g} {key:22s} mean {v['mean']:.3f} sd over render seeds {v['sd']:.3f}")


def study_flags(p, work: str | None, seeds: list[int], still_seeds: int, clip_seeds: int,
                docs: str | None = "docs/toyworld") -> None:
    """The flags every ablation study of the world takes (a default of None: the study picks it)."""
    p.add_argument("--seeds", type=Flag(int, SEED), nargs="+", default=seeds, help="training seeds")
    p.add_argument("--still-seeds", type=Flag(int, COUNT), default=still_seeds, help="render seeds per still prompt")
    p.add_argument("--clip-seeds", type=Flag(int, COUNT), default=clip_seeds, help="render seeds per motion prompt")
    p.add_argument("--work", default=work, help="the runs' weights" + (" (default: %(default)s)" if work else ""))
    p.add_argument("--docs", default=docs, help="rows, tables and figures" + (" (default: %(default)s)" if docs
                                                                               else ""))
    p.add_argument("--noise", action="store_true", help="measure the scorer's noise and stop")
    p.add_argument("--noise-repeats", type=Flag(int, COUNT), default=4)
    p.add_argument("--report", action="store_true", help="only write the summary of the rows so far")


def study_main(args, measure, run, rows: str, report) -> None:
    """--noise: measure the scorer's noise; else run the study (unless --report) and write its summary."""
    judge = J.load()
    if args.noise:
        return measure(args, judge)
    if not args.report:
        stale = [r for r in read_rows(Path(args.docs) / rows) if r.get("judge") != judge.digest]
        if stale:
            raise SystemExit(f"error: {Path(args.docs) / rows} holds {len(stale)} rows read by another judge than "
                             f"{J.weights_path()}: move it away (or pass --docs) to run the study again, or pass "
                             "--report to tabulate those rows")
        run(args, judge)
    report(read_rows(Path(args.docs) / rows), Path(args.docs))


def main() -> None:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", nargs="+", default=list(INSTANCES))
    study_flags(p, ".toyworld-build/strength", [0, 1, 2], 3, 2)
    study_main(p.parse_args(), measure_noise, run_ablation, ROWS, write_report)


if __name__ == "__main__":
    main()
