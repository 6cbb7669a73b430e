"""Rebuild the miniature world's shipped weights: judge, text encoder, VAE, UNet, motion adapter.

    python scripts/toyworld/build.py                 # every stage, about 164 minutes on 2 CPU cores
    python scripts/toyworld/build.py --stage unet    # one stage (the earlier ones must have run)
    python scripts/toyworld/build.py --stage latents,unet --device cuda   # the shipped UNet: one GPU, ~5 minutes

--device cuda trains the UNet (and the motion adapter, if asked) on a GPU with the "cuda" profile below (larger
batches, more samples); judge, text and VAE train on the CPU either way. `latents` re-encodes the renders with
the trained VAE, for a machine that has the stage outputs but not the (large, re-renderable) datasets. The
shipped weights: judge, text, vae on the CPU; latents, unet with --device cuda; motion, export on the CPU.

Deterministic for a seed, a device and a thread count: every stage seeds its own RNGs and uses only its inputs.
Intermediate files (rendered datasets, latents, per-stage weights, curves) go to --work (default
.toyworld-build/, not committed); `export` writes the shipped files into cdvideo/toyworld/assets/ and
`report` renders the figures and numbers of docs/toyworld.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import common

STAGES = ("judge", "text", "vae", "unet", "motion", "export", "report")
# steps (and batch) per stage; "cpu" is the 2-core build, "cuda" feeds the UNet 2.9x and the motion modules 2x the
# samples in a few GPU minutes. motion: its rounds (STEPS[:WEIGHTING], see train_motion), clips per step
PROFILES = {"cpu": dict(judge=1600, text=500, vae=1600, unet=(2800, 64), motion=("4000,1500:high-noise", 4)),
            "cuda": dict(judge=1600, text=500, vae=1600, unet=(2000, 256), motion=("2000,750:high-noise", 16))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", default="all", help=f"all, or a comma-separated list of {', '.join(STAGES)}, latents")
    p.add_argument("--work", default=str(common.ROOT / ".toyworld-build"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps (0.05 for a smoke run)")
    p.add_argument("--device", default="cpu", choices=sorted(PROFILES), help="where the UNet and motion stages train")
    p.add_argument("--motion-rounds", default=None, metavar="STEPS[:WEIGHTING],...",
                   help="motion stage: its warm-restart rounds, each steps and loss weighting (min-snr or "
                   "high-noise); default the profile's; goes on after the saved rounds it begins with")
    args = p.parse_args()
    try:
        rounds = common.parse_rounds(args.motion_rounds) if args.motion_rounds else None  # None: the profile's
    except ValueError as e:
        p.error(f"--motion-rounds {args.motion_rounds}: {e}")
    stages = STAGES if args.stage == "all" else tuple(args.stage.split(","))
    unknown = sorted(set(stages) - set(STAGES) - {"latents"})
    if unknown:
        p.error(f"unknown stage {', '.join(unknown)}; choose from all, {', '.join(STAGES)}, latents")
    if args.device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before CUDA starts
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for stage in stages:
        common.log(f"== stage {stage} ({args.device} profile)")
        run_stage(stage, work, args.seed, args.scale, args.device, rounds)
    common.log(f"done in {(time.time() - t0) / 60:.1f} min")


def run_stage(stage: str, work: Path, seed: int, scale: float, device: str = "cpu",
              rounds: list[tuple[int, str]] | None = None) -> None:
    steps = lambda n: max(2, int(n * scale))  # noqa: E731
    profile = PROFILES[device]
    if stage == "judge":
        import train_judge
        train_judge.run(work, seed, steps=steps(profile["judge"]))
    elif stage == "text":
        import train_text
        train_text.run(work, seed, steps=steps(profile["text"]))
    elif stage == "vae":
        import train_vae
        train_vae.run(work, seed, steps=steps(profile["vae"]))
    elif stage == "latents":
        import train_vae
        train_vae.reencode(work, seed, device)
    elif stage == "unet":
        import train_unet
        train_unet.run(work, seed, steps=steps(profile["unet"][0]), batch=profile["unet"][1], device=device)
    elif stage == "motion":
        import train_motion
        rounds = rounds or common.parse_rounds(profile["motion"][0])
        train_motion.run(work, seed, [(steps(n), w) for n, w in rounds], clips_per_batch=profile["motion"][1],
                         device=device)
    elif stage == "export":
        import export
        export.run(work)
    elif stage == "report":
        import report
        report.run(work, seed)


if __name__ == "__main__":
    main()
