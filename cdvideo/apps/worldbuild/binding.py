"""Does a UNet bind each instance's two colours the right way round? The UNet as a two-way classifier (diffusion
classifier, Li et al. ICCV 2023) of the instance's own renders between its words and its colour-swapped twin's:

    python -m cdvideo.apps.worldbuild.binding toyworld-build/unet.round            # ~30 s alone
    python -m cdvideo.apps.worldbuild.binding toyworld-build/unet.round /tmp/bind/round1 --n 128

Each of n big renders of an instance is encoded by the build's VAE and noised at a random timestep; the UNet's
epsilon error under "a big yellow ball with purple stripes" and under "a big purple ball with yellow stripes" (the
same noise for both and for every UNet) says which words explain the latents better. Per instance: the share of
renders the own words explain better, and the error gap (twin - own, x 1000), with 95% bootstrap intervals; a
second UNet onward is also paired with the first on each render's gap. Sampling draws the twin where this
classifier errs early in the trajectory; it is cheaper than drawing and judging, and reads the UNet alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cdvideo.apps.worldbuild import unet as U
from cdvideo.apps.worldbuild.common import SD_SCHEDULE, to_pixels
from cdvideo.apps.worldbuild.keeps import big_renders
from cdvideo.data.ranges import Flag, Parser, Range
from cdvideo.math.metrics import bootstrap_ci
from cdvideo.models.text import tokenize
from cdvideo.toyworld.instances import INSTANCES


def words(inst) -> str:
    """The spelled-out words of an instance, big (its renders' size), no position or background."""
    return f"a big {inst.describe()}"


@torch.no_grad()
def noised_renders(vae, sched, n: int, seed: int = 0) -> dict:
    """Per instance: n big renders' latents noised at random timesteps, with the noise and timesteps (one draw,
    shared by every UNet read)."""
    gen, out = torch.Generator().manual_seed(seed), {}
    for name, inst in INSTANCES.items():
        z = vae.encode(to_pixels(big_renders(inst, n))).latent_dist.mean * vae.config.scaling_factor  # (n, 4, 16, 16)
        out[name] = U.noised(z, sched, gen, min_snr=5.0)  # the stage's draw (its loss weights unused here)
    return out


@torch.no_grad()
def gaps(unet, text_encoder, tokenizer, batch: dict, own: str, twin: str) -> np.ndarray:
    """(n,) epsilon error under the twin's words minus under the own words, per render."""
    n, ones = len(batch["t"]), torch.ones(len(batch["t"]), 1, 1, 1)
    errs = [U.sample_errors(unet(batch["noisy"], batch["t"], text_encoder(tokenize(tokenizer, [w] * n))
                                 .last_hidden_state).sample, batch["noise"], ones) for w in (twin, own)]
    return (errs[0] - errs[1]).numpy()


def interval(values, scale: float = 1.0) -> list[float]:
    return [round(v * scale, 3) for v in bootstrap_ci(list(values))]


def read(unets: list[Path], work: Path, n: int) -> dict:
    from diffusers import AutoencoderKL, DDPMScheduler  # lazy: start-up time

    tokenizer, text_encoder = U.load_text(work)
    vae = AutoencoderKL.from_pretrained(str(work / "vae")).eval()
    batches = noised_renders(vae, DDPMScheduler(**SD_SCHEDULE), n)
    result, first = {}, {}
    for path in unets:
        unet, row = U.build(path).eval(), {}
        for name, inst in INSTANCES.items():
            g = gaps(unet, text_encoder, tokenizer, batches[name], words(inst), words(inst.swapped()))
            row[name] = {"own_words_better": interval(g > 0), "gap_x1000": interval(g, 1000)}
            if path != unets[0]:
                row[name]["gap_x1000_minus_first"] = interval(g - first[name], 1000)
            first.setdefault(name, g)
        row["mean"] = {"own_words_better": round(float(np.mean([r["own_words_better"][0] for r in row.values()])), 3)}
        result[str(path)] = row
    return {"n": n, "unets": result}


def main() -> None:
    p = Parser(prog="python -m cdvideo.apps.worldbuild.binding", description=__doc__.splitlines()[0])
    p.add_argument("unets", nargs="+", help="UNet folders (a build's unet.round, a trial's round<k>)")
    p.add_argument("--work", default="toyworld-build", help="the build folder (default: %(default)s)")
    p.add_argument("--n", type=Flag(int, Range(2, 4096)), default=128, help="renders per instance (default: 128)")
    args = p.parse_args()
    for u in args.unets:
        if not (Path(u) / "config.json").is_file():
            p.error(f"{u}: not a UNet folder (no config.json); e.g. toyworld-build/unet.round")
    print(json.dumps(read([Path(u) for u in args.unets], Path(args.work), args.n), indent=1))


if __name__ == "__main__":
    main()
