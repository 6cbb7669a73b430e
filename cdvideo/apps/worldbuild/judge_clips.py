"""Stage judge_clips: a judge that reads clips as surely as stills. The judge stage's judge reads a frame's traits
through a linear layer over its 8 x 8 feature grid, and its stills put an object at five positions only: a moving
object between them was read worse than on them (the class of fresh moving clips' frames 0.56-0.60 a third of the
way between two positions, 0.97 on them), and it had learnt its 1,500 training clips by heart (0.99-1.00).
Trained on with many more moving clips, it reads the instances' own rendered clips nearly as well as their
stills. The text stage learnt against the first judge, so this one is a stage of its own; export ships the last
judge stage's judge that ran."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from cdvideo.apps.worldbuild.common import Curve, log, mark_done, render_set, seed_everything
from cdvideo.apps.worldbuild.judge import (all_targets, evaluate, fit, instance_identity, save,
    train_motion_head)
from cdvideo.apps.worldbuild.plans import JudgeClipsPlan
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.draw import render
from cdvideo.toyworld.instances import INSTANCES
from cdvideo.toyworld.scoring import CLIP_MOTIONS as MOVING  # translations and size changes
from cdvideo.toyworld.world import NUM_FRAMES, POSITIONS, backgrounds_for, with_motion


@torch.no_grad()
def frame_accuracy(judge: J.Judge, clips: np.ndarray, scenes: list, heads: tuple[str, ...] = J.TRAITS) -> dict:
    """Per-head accuracy on every frame of the moving clips (spinning and still ones aside): how surely the judge
    reads an object wherever a motion puts it."""
    hits: dict[str, list] = {k: [] for k in heads}
    for frames, s in zip(clips, scenes):
        if s.motion not in MOVING:
            continue
        probs = J.read(judge, list(frames)).probs
        for k in heads:
            hits[k].append(probs[k].argmax(-1).numpy() == J.HEADS[k].index(getattr(s, k) or "none"))
    return {k: round(float(np.mean(v)), 4) for k, v in hits.items()}


@torch.no_grad()
def clip_identity(judge: J.Judge, per_instance: int = 24, seed: int = 0) -> dict[str, float]:
    """Identity the judge reads on each instance's own rendered clips (big, the spelled-out prompts' backgrounds
    and motions cycling, random row): what a generated clip of it can at best score."""
    rng, out = np.random.default_rng(seed), {}
    for name, inst in INSTANCES.items():
        backgrounds, read = backgrounds_for(inst.colour), []
        for i in range(per_instance):
            scene = inst.scene(backgrounds[i % len(backgrounds)], list(POSITIONS)[rng.integers(5)], "big",
                               seed=int(rng.integers(2**30)))
            frames = render(with_motion(scene, rng, MOVING[i % len(MOVING)]))  # (F, 64, 64, 3)
            read.append(J.identity(J.read(judge, list(frames)), inst.appearance))
        out[name] = round(float(np.mean(read)), 4)
    return out


def readings(judge: J.Judge, test_images, test_scenes, test_clips, test_clip_scenes, plan: JudgeClipsPlan) -> dict:
    """Everything this stage measures of a judge, on renders neither judge trained on."""
    acc = evaluate(judge, test_images, test_scenes, test_clips, test_clip_scenes)
    judge.eval()
    return {"accuracy": acc, "clip_frames": frame_accuracy(judge, test_clips, test_clip_scenes),
            "instances": instance_identity(judge, plan.judge.identity_renders),
            "instance_clips": clip_identity(judge, plan.world_clips)}


def run(work: Path, seed: int, plan: JudgeClipsPlan) -> dict:
    seed_everything(seed)
    base = plan.judge
    (images, scenes), (clips, clip_scenes), (spins, spin_scenes) = (render_set(work, r, seed) for r in base.renders)
    more, more_scenes = render_set(work, plan.clips, seed)
    tests = [x for r in base.tests for x in render_set(work, r, seed)]
    first, judge = going_on(work / "judge.safetensors", tests, plan)

    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    curve, t0 = Curve(work, "judge_clips"), time.time()
    n_spin = base.batch // base.clip_divisor
    fit(judge, (images, all_targets(scenes, 1)),
        [(more, all_targets(more_scenes, NUM_FRAMES), round(base.batch * plan.clip_share)),
         (spins, all_targets(spin_scenes, NUM_FRAMES), n_spin)],
        base.batch, plan.steps, plan.optim, gen, rng, curve, "judge_clips")
    train_motion_head(judge, [clips, spins, more], clip_scenes + spin_scenes + more_scenes, gen, rng, curve, base)
    return conclude(judge, work, "judge_clips", ("judge", first), tests, plan, plan, time.time() - t0)


def going_on(weights: Path, tests: list, read_plan: JudgeClipsPlan) -> tuple[dict, J.Judge]:
    """The readings of the judge a stage goes on from (`read_plan`'s, on the test renders), and that judge to train."""
    first = readings(J.load(weights), *tests, read_plan)
    return first, J.load(weights).train().to(memory_format=torch.channels_last)


def conclude(judge: J.Judge, work: Path, stage: str, before: tuple[str, dict], tests: list, read_plan:
             JudgeClipsPlan, plan, seconds: float) -> dict:
    """A judge stage's end: its judge's readings (`read_plan`'s) logged beside those of the stage's judge it went on
    from (`before`: that stage and its readings), its weights saved, its record (with `plan`) written."""
    found = readings(judge, *tests, read_plan)
    for what, r in ((f"the {before[0]} stage's", before[1]), ("this", found)):
        log(f"{what} judge: accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in r["accuracy"].items())
            + "; on moving clips' frames " + ", ".join(f"{k} {v:.3f}" for k, v in r["clip_frames"].items())
            + "; identity on the instances' own clips " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                                   r["instance_clips"].items()))
    save(judge, work / f"{stage}.safetensors")
    info = {**found, f"{before[0]}_stage": before[1], "steps": plan.steps, "seconds": round(seconds)}
    mark_done(work, stage, info, plan)
    return info

