"""SPL across fine-tuning strength in the miniature world: paired differences with bootstrap intervals.

    python scripts/toyworld/spl_strength.py --noise                 # the scorer's own noise first (~4 min)
    python scripts/toyworld/spl_strength.py                         # the ablation (~2.5 h on 2 cores, resumable)
    python scripts/toyworld/spl_strength.py --report                # tables and figures from the rows so far

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

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cdvideo.config import load_train_config
from cdvideo.drift_report import compute, load_source
from cdvideo.pipelines import image_pipeline, load_adapter, load_personalized, make_scheduler, video_pipeline
from cdvideo.toyworld import drift_phrases
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.demo import TRAIN
from cdvideo.toyworld.instances import INSTANCES, Instance
from cdvideo.toyworld.world import BACKGROUNDS, COLOURS, MOTION_WORDS, POSITION_WORDS, clashes
from cdvideo.train import train

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "toyworld"
ROWS = DOCS / "strength_rows.jsonl"
STRENGTHS = {"1e-3 x 120": (1e-3, 120), "3e-3 x 120": (3e-3, 120), "3e-3 x 240": (3e-3, 240),
             "6e-3 x 240": (6e-3, 240)}  # the demo's setting first (1e-2 x 240 collapses with and without SPL)
STRONGEST = "6e-3 x 240"
EXTRA = ((0.1, "eos"), (10.0, "eos"), (1.0, "official"))  # at the strongest setting only
KINDS = ("background", "position", "property", "motion")
MOTIONS = ("left", "right", "up", "down")
RENDER = {"num_inference_steps": 20, "guidance_scale": 5.0}


@dataclass(frozen=True)
class Sample:
    kind: str
    text: str
    asked: dict  # attribute -> prompted value
    seed: int


def eval_set(inst: Instance, subject: str, still_seeds: int, clip_seeds: int, offset: int = 0) -> list[Sample]:
    """The fixed samples of one instance: 8 backgrounds, 5 positions, the 7 other colours (stills) and 4 motions."""
    bgs = [b for b in BACKGROUNDS if not clashes(inst.colour, b)][:8]
    out = [Sample("background", f"a {subject} on a {b} background", {"background": b}, s)
           for b in bgs for s in range(still_seeds)]
    out += [Sample("position", f"a {subject} {words[0]}", {"position": p}, s)
            for p, words in POSITION_WORDS.items() for s in range(still_seeds)]
    out += [Sample("property", f"{_article(c)} {c} {subject}", {"colour": c}, s)
            for c in COLOURS if c != inst.colour for s in range(still_seeds)]
    out += [Sample("motion", f"a {subject} {MOTION_WORDS[m]}", {"motion": m}, s) for m in MOTIONS
            for s in range(clip_seeds)]
    return [Sample(x.kind, x.text, x.asked, x.seed + offset) for x in out]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@torch.no_grad()
def score(weights_file: Path | None, inst: Instance, subject: str, samples: list[Sample], judge) -> dict:
    """Per kind: composition (share of samples showing the prompted attribute) and identity (property change: the
    share of the traits other than colour); plus their means over kinds."""
    m, _, _ = load_personalized("toyworld", [str(weights_file)] if weights_file else [])
    stills = [s for s in samples if s.kind != "motion"]
    pipe = image_pipeline(m, scheduler=make_scheduler("ddim", m["scheduler"].config, False))
    pipe.set_progress_bar_config(disable=True)
    images = []
    for i in range(0, len(stills), 64):
        batch = stills[i:i + 64]
        images += pipe([s.text for s in batch], generator=[torch.Generator().manual_seed(s.seed) for s in batch],
                       **RENDER).images
    vpipe = video_pipeline(m, load_adapter("toyworld", torch.float32),
                           make_scheduler("ddim", m["scheduler"].config, animatediff=True))
    vpipe.set_progress_bar_config(disable=True)
    clips = [vpipe(s.text, num_frames=16, output_type="pil", generator=torch.Generator().manual_seed(s.seed),
                   **RENDER).frames[0] for s in samples if s.kind == "motion"]
    hits: dict[str, list[float]] = {k: [] for k in KINDS}
    ids: dict[str, list[float]] = {k: [] for k in KINDS}
    for s, frames in zip(stills + [s for s in samples if s.kind == "motion"], [[im] for im in images] + clips):
        reading = J.read(judge, frames)
        found = J.attributes(reading, clip=s.kind == "motion")
        hits[s.kind].append(float(all(J.honoured(found, s.asked).values())))
        traits = tuple(t for t in J.TRAITS if t != "colour") if s.kind == "property" else J.TRAITS
        ids[s.kind].append(J.identity(reading, inst.appearance, traits))
    out = {f"composition_{k}": float(np.mean(hits[k])) for k in KINDS}
    out |= {f"identity_{k}": float(np.mean(ids[k])) for k in KINDS}
    out["composition"] = float(np.mean([out[f"composition_{k}"] for k in KINDS]))
    out["identity"] = float(np.mean([out[f"identity_{k}"] for k in KINDS]))
    return out


def train_run(inst: Instance, out: Path, lr: float, steps: int, spl: float, seed: int, pooling: str) -> Path:
    """One ClassDiffusion run as `cdvideo train` reads it (cached: an existing weights file is reused)."""
    if (out / "weights.safetensors").is_file():
        return out / "weights.safetensors"
    values = {**TRAIN, "model": "toyworld", "output_dir": str(out), "overwrite": True,
              "concepts.0.images": f"toyworld:{inst.name}", "concepts.0.class_word": inst.cls,
              "max_steps": steps, "optimizer.learning_rate": lr, "spl.weight": spl, "spl.pooling": pooling,
              "seed": seed}
    return train(load_train_config(None, values=values))


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


def read_rows(path: Path = ROWS) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def append_row(row: dict, path: Path = ROWS) -> None:
    """One line per finished run, flushed and synced: an interrupted ablation keeps every row it finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        import os
        os.fsync(f.fileno())


def run_ablation(args, judge) -> None:
    work, done, t0 = Path(args.work), {r["tag"] for r in read_rows()}, time.time()
    for name in args.instances:  # the base model, prompted with the class word, once per instance
        if f"{name}-base" not in done:
            inst = INSTANCES[name]
            r = score(None, inst, inst.cls, eval_set(inst, inst.cls, args.still_seeds, args.clip_seeds), judge)
            append_row({"tag": f"{name}-base", "instance": name, "held_out": inst.held_out, "setting": "base", **r})
    for name, seed, strength, weight, pooling in plan(args.instances, args.seeds):
        t = tag(name, seed, strength, weight, pooling)
        if t in done:
            continue
        inst, (lr, steps) = INSTANCES[name], STRENGTHS[strength]
        path = train_run(inst, work / t, lr, steps, weight, seed, pooling)
        r = score(path, inst, f"sks {inst.cls}", eval_set(inst, f"sks {inst.cls}", args.still_seeds,
                                                          args.clip_seeds), judge)
        row = {"tag": t, "instance": name, "held_out": inst.held_out, "seed": seed, "strength": strength,
               "spl": weight, "pooling": pooling, **r, "drift": drift_distance(path)}
        append_row(row)
        print(f"[{time.time() - t0:6.0f} s] {t}: identity {r['identity']:.3f} composition {r['composition']:.3f} "
              f"drift {row['drift']:.3f}", flush=True)


def measure_noise(args, judge) -> None:
    """The scorer's noise: the same weights scored with other render seeds (offsets), per metric."""
    inst = INSTANCES["striped_ball"]
    lr, steps = STRENGTHS[STRONGEST]
    for weight in (0.0, 1.0):
        path = train_run(inst, Path(args.work) / tag(inst.name, 0, STRONGEST, weight, "eos"), lr, steps, weight, 0,
                         "eos")
        scores = [score(path, inst, "sks ball", eval_set(inst, "sks ball", args.still_seeds, args.clip_seeds,
                                                         offset=100 * k), judge) for k in range(args.noise_repeats)]
        for key in ("identity", "composition", *(f"composition_{k}" for k in KINDS)):
            v = np.array([s[key] for s in scores])
            print(f"spl {weight:g} {key:22s} mean {v.mean():.3f} sd over render seeds {v.std(ddof=1):.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", nargs="+", default=list(INSTANCES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--still-seeds", type=int, default=3, help="render seeds per still prompt")
    p.add_argument("--clip-seeds", type=int, default=2, help="render seeds per motion prompt")
    p.add_argument("--work", default=str(ROOT / ".toyworld-build" / "strength"))
    p.add_argument("--noise", action="store_true", help="measure the scorer's noise and stop")
    p.add_argument("--noise-repeats", type=int, default=4)
    p.add_argument("--report", action="store_true", help="only write the summary of the rows so far")
    args = p.parse_args()
    judge = J.load()
    if args.noise:
        return measure_noise(args, judge)
    if not args.report:
        run_ablation(args, judge)
    from strength_report import write_report  # the script's folder is on sys.path when run as a script

    write_report(read_rows(), DOCS)


if __name__ == "__main__":
    main()
