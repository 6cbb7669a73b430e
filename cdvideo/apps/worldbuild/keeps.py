"""What a build's VAE keeps of each personal instance, read by the build's judge:

    python -m cdvideo.apps.worldbuild.keeps --noise 0,0.1,0.2,0.4      # ~20 s

the identity (and the pattern's colour's share of it) of 16 big renders of each instance after encoding and
decoding, with Gaussian noise of each level (in units of the scaled latents, whose standard deviation is about 1)
added to the latents in between: how far from the renders' latents a UNet may draw before the decoder loses a
pattern's colour. Prints one JSON object.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cdvideo.apps.worldbuild.common import from_pixels, to_pixels
from cdvideo.data.ranges import Flag, Parser, Range
from cdvideo.toyworld import draw
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.instances import INSTANCES
from cdvideo.toyworld.world import backgrounds_for


def big_renders(inst, n: int) -> np.ndarray:
    """(n, 64, 64, 3) renders of the instance, big and centred, backgrounds cycling."""
    bgs = backgrounds_for(inst.colour)
    return np.stack([draw.render(inst.scene(bgs[i % len(bgs)], "centre", "big", seed=i))[0] for i in range(n)])


@torch.no_grad()
def kept(vae, judge, frames: np.ndarray, appearance: tuple, noise: float, gen: torch.Generator) -> dict:
    """Identity and the pattern colour's share on the frames after encoding, `noise` added, decoding."""
    sf = vae.config.scaling_factor
    z = vae.encode(to_pixels(frames)).latent_dist.mean * sf  # (n, 4, 16, 16)
    z = z + noise * torch.randn(z.shape, generator=gen)
    out = from_pixels(vae.decode(z / sf).sample)
    reading = J.read(judge, out)
    return {"identity": round(J.identity(reading, appearance), 3),
            "pattern_colour": round(J.identity(reading, appearance, ("pattern_colour",)), 3)}


def main() -> None:
    from diffusers import AutoencoderKL  # lazy: start-up time

    p = Parser(prog="python -m cdvideo.apps.worldbuild.keeps", description=__doc__.splitlines()[0])
    p.add_argument("--work", default="toyworld-build", help="the build folder (default: %(default)s)")
    p.add_argument("--noise", default="0,0.1,0.2,0.4", help="latent noise levels, comma-separated")
    p.add_argument("--n", type=Flag(int, Range(1, 1000)), default=16, help="renders per instance (default: 16)")
    args = p.parse_args()
    try:
        levels = [float(x) for x in args.noise.split(",")]
    except ValueError:
        p.error(f"--noise {args.noise}: not comma-separated numbers, e.g. 0,0.1,0.2")
    work = Path(args.work)
    vae, judge = AutoencoderKL.from_pretrained(str(work / "vae")).eval(), J.load(work / "judge.safetensors")
    gen = torch.Generator().manual_seed(0)
    result = {name: {str(level): kept(vae, judge, big_renders(inst, args.n), inst.appearance, level, gen)
                     for level in levels} for name, inst in INSTANCES.items()}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
