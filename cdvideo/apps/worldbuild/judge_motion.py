"""Stage judge_motion: a judge that reads the motion of every clip the world draws. The judge_twins stage's judge
learnt its clip motion head on clips that sweep the frame and size changes over their whole range; the shipped
`+sizes` motion adapter learnt size changes from the middle extent (to 1.5 times it or a 1.5th), and the world
draws short translations from about the centre too (world.SWEEPS). That judge read those as their motion in about
half of them, while its regressed tracks moved their way in all (docs/toyworld.md, "What the `judge_motion` stage
mends"). Here the motion head alone is trained on again, over the judge stage's clips and spins and as many along
the "middle" sweep; the per-frame trunk and heads are kept, so every trait reads as before. Export ships it."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from cdvideo.apps.worldbuild.common import Curve, log, mark_done, render_set, seed_everything
from cdvideo.apps.worldbuild.judge import motion_accuracy, save, train_motion_head
from cdvideo.apps.worldbuild.plans import JudgeMotionPlan
from cdvideo.toyworld import draw, motions, world
from cdvideo.toyworld import judge as J

KINDS = {"translations": world.TRANSLATIONS, "size changes": world.SIZE_CHANGES}


@torch.no_grad()
def sweep_readings(judge: J.Judge, per_motion: int = 16, seed: int = 5) -> dict:
    """Rendered clips of each translation and size change along each of world.SWEEPS (the same scenes): the share the
    judge reads as their motion, and the share whose regressed track moves their way (`motions.progress`)."""
    rng, out = np.random.default_rng(seed), {}
    scenes = [world.with_motion(world.sample_scene(rng), rng, m) for m in motions.AXIS for _ in range(per_motion)]
    for sweep in world.SWEEPS:
        clips = [motions.direction(J.read(judge, draw.render(world.with_sweep(s, sweep))), s.motion) for s in scenes]
        for kind, moves in KINDS.items():
            out[f"{sweep or 'across'}, {kind}"] = motions.direction_shares([c for c in clips if c["motion"] in moves])
    return out


def readings(judge: J.Judge, test_clips: np.ndarray, test_scenes: list, per_motion: int) -> dict:
    """What this stage measures of a judge: the motion of fresh clips, and of clips along each sweep."""
    judge.eval()
    sweeps = {k: round(v["read_as_asked"], 4) for k, v in sweep_readings(judge, per_motion).items()}
    return {"motion": round(motion_accuracy(judge, test_clips, test_scenes), 4), "sweeps_read_as_their_motion": sweeps}


def run(work: Path, seed: int, plan: JudgeMotionPlan) -> dict:
    seed_everything(seed)
    base = plan.judge_twins.judge_clips.judge
    (clips, clip_scenes), (spins, spin_scenes) = (render_set(work, r, seed) for r in base.renders[1:])
    swept, swept_scenes = render_set(work, plan.swept, seed)
    test_clips, test_scenes = render_set(work, base.tests[1], seed)
    first = readings(J.load(work / "judge_twins.safetensors"), test_clips, test_scenes, plan.sweeps_per_motion)
    judge = J.load(work / "judge_twins.safetensors").to(memory_format=torch.channels_last)

    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    t0 = time.time()
    train_motion_head(judge, [clips, spins, swept], clip_scenes + spin_scenes + swept_scenes, gen, rng,
                      Curve(work, "judge_motion"), replace(base, head_steps=plan.head_steps))
    found = readings(judge, test_clips, test_scenes, plan.sweeps_per_motion)
    for what, r in (("the judge_twins stage's", first), ("this", found)):
        log(f"{what} judge: motion of fresh clips {r['motion']:.3f}; sweeps read as their motion "
            + ", ".join(f"{k} {v:.2f}" for k, v in r["sweeps_read_as_their_motion"].items()))
    save(judge, work / "judge_motion.safetensors")
    info = {**found, "judge_twins_stage": first, "seconds": round(time.time() - t0)}
    mark_done(work, "judge_motion", info, plan)
    return info
