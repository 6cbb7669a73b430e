"""Rebuild the miniature world's shipped weights: judge, text encoder, VAE, UNet, motion adapter, ControlNet.

    python -m cdvideo.apps.worldbuild                  # every stage not yet finished (~6 hours on 2 CPU cores)
    python -m cdvideo.apps.worldbuild --stage unet     # one stage (the earlier ones must have run)
    python -m cdvideo.apps.worldbuild --stage latents,unet --device cuda   # the UNet on one GPU, "cuda" profile

--device cuda trains the UNet (and the motion adapter, if asked) on a GPU with the "cuda" profile of plans.py
(larger batches, more samples); judge, text and VAE train on the CPU either way. `latents` re-encodes the renders
with the trained VAE, for a machine that has the stage outputs but not the (large, re-renderable) datasets. The
shipped second edition was built on the CPU alone, stage by stage, each finished stage committed in the build
folder (toyworld-build/) so that a later sitting goes on from there.

Deterministic for a seed, a device and a thread count: every stage seeds its own RNGs and uses only its inputs and
its plan (plans.py), which its record work/<stage>.done holds. Intermediate files (rendered datasets, latents,
curves) go to --work (default toyworld-build/, where only finished stages' weights and records are committed);
`export` writes the shipped files into --assets (default the installed cdvideo/toyworld/assets/) and `report`
renders the figures and numbers of docs/toyworld.md into --docs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from cdvideo.apps.worldbuild.common import log, unet_digest
from cdvideo.apps.worldbuild.plans import BACKWARDS, PROFILES, SWEPT_CLIPS, Plans, parse_rounds, plans_for
from cdvideo.apps.worldbuild.plans import record as plan_record
from cdvideo.data.files import write_fault
from cdvideo.data.ranges import SEED, Flag, Parser, Range
from cdvideo.errors import CdvideoError
from cdvideo.toyworld import assets_dir

# stages with a record (work/<stage>.done) and a plan
TRAINED = ("judge", "text", "vae", "unet", "motion", "controlnet", "judge_clips", "judge_twins", "judge_motion")
STAGES = (*TRAINED, "export", "report")
OVER_UNET = ("motion", "controlnet")  # trained over the frozen UNet: their record names it (common.unet_digest)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m cdvideo.apps.worldbuild", description=__doc__.splitlines()[0])
    p.add_argument("--stage", default="all", help=f"all, or a comma-separated list of {', '.join(STAGES)}, latents")
    p.add_argument("--work", default="toyworld-build", help="the build folder: finished stages (committed) and "
                   "intermediate files (not) (default: %(default)s)")
    p.add_argument("--assets", default=str(assets_dir()), help="where `export` writes the shipped files (default: the "
                   "installed package's)")
    p.add_argument("--docs", default="docs/toyworld", help="where `report` writes (default: %(default)s)")
    p.add_argument("--seed", type=Flag(int, SEED), default=0)
    p.add_argument("--scale", type=Flag(float, Range(0, 100, above=True)), default=1.0,
                   help="multiply every stage's steps (0.05 for a smoke run)")
    p.add_argument("--device", default="cpu", choices=sorted(PROFILES), help="where the UNet and motion stages train")
    p.add_argument("--motion-rounds", default=None,
                   metavar=f"STEPS[:WEIGHTING[{'|'.join((BACKWARDS, *SWEPT_CLIPS))}]],...",
                   help="motion stage: its warm-restart rounds, each steps and loss weighting (min-snr, "
                   "high-noise, or late: high-noise on the upper half of the timesteps only; +backwards after it: each "
                   "clip beside itself played backwards under the opposite motion word; +short: its translations "
                   "short sweeps from about the centre, so that only the word tells which way; +middle: its size "
                   "changes too, from the middle extent; +sizes: its size changes only; +more: as +sizes, 6,400 other "
                   "clips); default the profile's; "
                   "goes on after the saved rounds it begins with")
    p.add_argument("--unet-rounds", type=Flag(int, Range(1, 1000)), default=None, metavar="N",
                   help="UNet stage: its first N warm-restart rounds, the profile's and then its last one again "
                   "(default the profile's: 14 on the cpu); goes on after the saved rounds")
    return p


def main() -> None:
    p = parser()
    args = p.parse_args()
    try:
        rounds = parse_rounds(args.motion_rounds) if args.motion_rounds else None  # None: the profile's
    except ValueError as e:
        p.error(f"--motion-rounds {args.motion_rounds}: {e}")
    stages = STAGES if args.stage == "all" else tuple(args.stage.split(","))
    unknown = sorted(set(stages) - set(STAGES) - {"latents"})
    if unknown:
        p.error(f"unknown stage {', '.join(unknown)}; choose from all, {', '.join(STAGES)}, latents")
    if args.device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before CUDA starts
    work = Path(args.work)
    plans = plans_for(args.device, args.scale, rounds, args.unet_rounds)
    t0 = time.time()
    try:
        work.mkdir(parents=True, exist_ok=True)
        for stage in stages:
            if args.stage == "all" and stage in TRAINED and finished(work, stage, plans):
                log(f"== stage {stage}: finished before ({work / stage}.done), skipped")
                continue
            log(f"== stage {stage} ({args.device} profile)")
            run_stage(stage, work, args.seed, plans, args)
    except Exception as e:  # a user's mistake or a full disk: one line (the rest is a bug, with its traceback)
        error = e if isinstance(e, CdvideoError) else write_fault(e, work)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    log(f"done in {(time.time() - t0) / 60:.1f} min")


def finished(work: Path, stage: str, plans: Plans) -> bool:
    """Whether a training stage's record is in `work` (committed when the stage ended, or from an earlier call) and
    holds this build's plan (and, for a stage over the UNet, this UNet); a record of another plan is an error, not
    a silent reuse; one over another UNet is trained again."""
    record = work / f"{stage}.done"
    if not record.is_file():
        return False
    ran = json.loads(record.read_text())
    if ran.get("plan") != json.loads(json.dumps(plan_record(getattr(plans, stage)))):  # tuples as JSON lists
        raise CdvideoError(f"{record} was made with another plan than this build's; run that stage again with "
                           f"--stage {stage}, or remove the record")
    if stage in OVER_UNET and ran.get("unet") != unet_digest(work):
        log(f"== stage {stage}: its record was trained over another UNet than {work / 'unet'}; trained again")
        return False
    return True


def run_stage(stage: str, work: Path, seed: int, plans: Plans, args: argparse.Namespace) -> None:
    """One stage with its plan (the stage modules import torch and diffusers: only the stages asked for load)."""
    if stage == "latents":
        from cdvideo.apps.worldbuild import vae  # lazy: start-up time
        vae.reencode(work, seed, plans.vae, args.device)
    elif stage == "export":
        from cdvideo.apps.worldbuild import export  # lazy: start-up time
        export.run(work, Path(args.assets))
    elif stage == "report":
        from cdvideo.apps.worldbuild import report  # lazy: start-up time
        report.run(work, seed, Path(args.docs))
    else:  # a training stage: its module's run(work, seed, plan)
        importlib.import_module(f"cdvideo.apps.worldbuild.{stage}").run(work, seed, getattr(plans, stage))


if __name__ == "__main__":
    main()
