"""What bounds the spelled-out identity, instance by instance: the VAE, or what the UNet draws instead.

    python -m cdvideo.apps.worldbuild.ceiling                    # toyworld-build's VAE, UNet and judges, ~1 min
    python -m cdvideo.apps.worldbuild.ceiling --unet U --n 32 --out ceiling.json

- `vae`: identity on each instance's own big renders (the spelled-out prompts' backgrounds, random position), raw
  and after the VAE's encode and decode, read by both judges: a trait the round trip loses no UNet can draw;
- `drawn`: what the UNet draws for each instance spelled out (the judge stage's judge's reading of class, colour,
  pattern and pattern colour per image, the drawing history's judge) and how often pretraining shows each drawn
  appearance: a missed instance drawn as a neighbour pretraining shows is a composition the model has not learnt.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from cdvideo.apps.worldbuild.common import from_pixels, to_pixels
from cdvideo.apps.worldbuild.drawing import components, draw, emit, pretraining_appearances
from cdvideo.data.ranges import Flag, Parser, Range
from cdvideo.toyworld import judge as J
from cdvideo.toyworld import scoring
from cdvideo.toyworld.draw import render
from cdvideo.toyworld.instances import INSTANCES, Instance
from cdvideo.toyworld.world import POSITIONS, backgrounds_for

JUDGES = {"judge": "judge.safetensors", "judge_clips": "judge_clips.safetensors"}


def own_renders(inst: Instance, n: int, rng: np.random.Generator) -> np.ndarray:
    """n big renders of the instance on the spelled-out prompts' backgrounds in turn, at random positions."""
    bgs = backgrounds_for(inst.colour)
    return np.stack([render(inst.scene(bgs[i % len(bgs)], list(POSITIONS)[rng.integers(len(POSITIONS))], "big",
                                       seed=int(rng.integers(2**31))))[0] for i in range(n)])  # (n, 64, 64, 3)


@torch.no_grad()
def round_trip(vae, frames: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) through the VAE's encoder (the posterior's mode) and decoder, back to uint8."""
    return from_pixels(vae.decode(vae.encode(to_pixels(frames)).latent_dist.mode()).sample)


def traits(judge: J.Judge, frames, inst: Instance) -> dict:
    """Identity and each trait's share, averaged over the frames (each read as a still)."""
    reading = J.read(judge, list(frames))
    out = {"identity": J.identity(reading, inst.appearance)}
    out |= {t: J.identity(reading, inst.appearance, (t,)) for t in J.TRAITS}
    return {k: round(v, 4) for k, v in out.items()}


def vae_ceiling(work: Path, vae, n: int, seed: int = 0) -> dict:
    """Per instance and judge: the own renders' traits raw and through the VAE."""
    judges = {name: J.load(work / file).eval() for name, file in JUDGES.items()}
    rng, out = np.random.default_rng(seed), {}
    for name, inst in INSTANCES.items():
        frames = own_renders(inst, n, rng)
        decoded = round_trip(vae, frames)
        out[name] = {j: {"raw": traits(judge, frames, inst), "vae": traits(judge, decoded, inst)}
                     for j, judge in judges.items()}
    return out


def drawn(work: Path, pipe, n: int) -> dict:
    """Per instance: the appearances the UNet draws when the instance is spelled out (n images), most drawn first,
    each with how often the pretraining stills show it."""
    judge, seen = J.load(work / JUDGES["judge"]).eval(), pretraining_appearances(work) or Counter()
    out = {}
    for name, inst in INSTANCES.items():
        counts: Counter = Counter()
        for frames in draw(pipe, scoring.spelled_prompts(inst, n), 5.0, 25):
            probs = J.read(judge, frames).probs
            counts[tuple(J.HEADS[t][int(probs[t].mean(0).argmax())] for t in J.TRAITS)] += 1
        out[name] = [{"appearance": " ".join(a), "images": k, "seen": seen[a]} for a, k in counts.most_common()]
    return out


def main() -> None:
    from cdvideo.pipelines.build import image_pipeline  # lazy: start-up time

    p = Parser(prog="python -m cdvideo.apps.worldbuild.ceiling", description=__doc__.splitlines()[0])
    p.add_argument("--work", default="toyworld-build", help="the build folder (default: %(default)s)")
    p.add_argument("--unet", default=None, help="a UNet folder (default: WORK/unet)")
    p.add_argument("--n", type=Flag(int, Range(1, 1000)), default=32, help="renders and images per instance "
                   "(default: 32)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    work = Path(args.work)
    for need in (work / "vae", work / JUDGES["judge"], work / JUDGES["judge_clips"]):
        if not need.exists():
            p.error(f"{need}: not found; --work names a build folder whose vae, judge and judge_clips stages ran")
    torch.manual_seed(0)
    t0 = time.time()
    m = components(work, Path(args.unet) if args.unet else work / "unet")
    pipe = image_pipeline(m)
    pipe.set_progress_bar_config(disable=True)
    emit({"vae": vae_ceiling(work, m["vae"].eval(), args.n), "drawn": drawn(work, pipe, args.n),
          "seconds": round(time.time() - t0)}, args.out)


if __name__ == "__main__":
    main()
