"""Stage judge_twins: a judge that tells which colour is the body wherever an object travels. The judge_clips
stage's judge reads a two-coloured object's colours swapped (the body's as the pattern's, the pattern's as the
body's) in 0-2% of stills but in about a third of the frames of one moving up or down, a few pixels from frames it
reads right; more of the same training, shifted frames and a pooled readout did not change that (docs/toyworld.md,
"What the `judge_twins` stage mends"). Here each batch holds moving frames beside their colour-swapped twins, the
same scene and frame with the binding as the only difference. Export ships the last judge stage's judge that ran."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from cdvideo.apps.worldbuild.common import Curve, render_set, seed_everything
from cdvideo.apps.worldbuild.judge import all_targets, fit, train_motion_head
from cdvideo.apps.worldbuild.judge_clips import conclude, going_on
from cdvideo.apps.worldbuild.plans import JudgeTwinsPlan
from cdvideo.toyworld.world import NUM_FRAMES


def run(work: Path, seed: int, plan: JudgeTwinsPlan) -> dict:
    seed_everything(seed)
    clips_plan, base = plan.judge_clips, plan.judge_clips.judge
    (images, scenes), (clips, clip_scenes), (spins, spin_scenes) = (render_set(work, r, seed) for r in base.renders)
    more, more_scenes = render_set(work, clips_plan.clips, seed)
    twins, twin_scenes = render_set(work, plan.twins, seed)  # (2P, F, 64, 64, 3): clip 2k and its twin 2k + 1
    tests = [x for r in base.tests for x in render_set(work, r, seed)]
    first, judge = going_on(work / "judge_clips.safetensors", tests, clips_plan)

    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    curve, t0 = Curve(work, "judge_twins"), time.time()
    fit(judge, (images, all_targets(scenes, 1)),
        [(more, all_targets(more_scenes, NUM_FRAMES), plan.clip_frames),
         (twins, all_targets(twin_scenes, NUM_FRAMES), 2 * plan.pairs, True),
         (spins, all_targets(spin_scenes, NUM_FRAMES), base.batch // base.clip_divisor)],
        base.batch, plan.steps, plan.optim, gen, rng, curve, "judge_twins")
    train_motion_head(judge, [clips, spins, more], clip_scenes + spin_scenes + more_scenes, gen, rng, curve, base)
    return conclude(judge, work, "judge_twins", ("judge_clips", first), tests, clips_plan, plan, time.time() - t0)
