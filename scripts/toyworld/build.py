"""Rebuild the miniature world's shipped weights: judge, text encoder, VAE, UNet, motion adapter.

    python scripts/toyworld/build.py                 # every stage, about 85 minutes on 2 CPU cores
    python scripts/toyworld/build.py --stage unet    # one stage (the earlier ones must have run)

Deterministic for a seed and a thread count: every stage seeds its own RNGs and uses only its inputs.
Intermediate files (rendered datasets, latents, per-stage weights, curves) go to --work (default
.toyworld-build/, not committed); `export` writes the shipped files into cdvideo/toyworld/assets/ and
`report` renders the figures and numbers of docs/toyworld.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common

STAGES = ("judge", "text", "vae", "unet", "motion", "export", "report")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=STAGES + ("all",), default="all")
    p.add_argument("--work", default=str(common.ROOT / ".toyworld-build"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps (0.05 for a smoke run)")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    stages = STAGES if args.stage == "all" else (args.stage,)
    t0 = time.time()
    for stage in stages:
        common.log(f"== stage {stage}")
        run_stage(stage, work, args.seed, args.scale)
    common.log(f"done in {(time.time() - t0) / 60:.1f} min")


def run_stage(stage: str, work: Path, seed: int, scale: float) -> None:
    steps = lambda n: max(2, int(n * scale))  # noqa: E731
    if stage == "judge":
        import train_judge
        train_judge.run(work, seed, steps=steps(1600))
    elif stage == "text":
        import train_text
        train_text.run(work, seed, steps=steps(500))
    elif stage == "vae":
        import train_vae
        train_vae.run(work, seed, steps=steps(1600))
    elif stage == "unet":
        import train_unet
        train_unet.run(work, seed, steps=steps(2800))
    elif stage == "motion":
        import train_motion
        train_motion.run(work, seed, steps=steps(1200))
    elif stage == "export":
        import export
        export.run(work)
    elif stage == "report":
        import report
        report.run(work, seed)


if __name__ == "__main__":
    main()
