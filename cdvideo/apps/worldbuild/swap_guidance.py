"""Can sampling alone keep an instance's colours where they belong? The model draws an instance's colour-swapped
twin in its place ("a purple ball with yellow stripes" for "a yellow ball with purple stripes"); this guides away
from the twin's words, on the spelled-out prompts, paired on seeds:

    python -m cdvideo.apps.worldbuild.swap_guidance                   # the build's UNet, 32 stills each, ~2 min
    python -m cdvideo.apps.worldbuild.swap_guidance --unet U --n 32 --weights 1 3 --out swap_guidance.json

- `negative prompt`: the twin's prompt as the negative prompt, as a user would type it (guidance 5);
- `away W`: Composable Diffusion's negation (Liu et al. ECCV 2022, Eq. 9's NOT): the prompt's guidance kept at 5
  and the twin's prediction pushed away with weight W (the prompt's then weighs 5 + W); 25 steps of the sampler
  `drawing` reads the build with (the pipelines' default, DPM-Solver++), the plain arm equal to its images.
Read by both of the build's judges; each arm minus the plain one, per instance, with 95% bootstrap intervals.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from cdvideo.apps.worldbuild.ceiling import JUDGES
from cdvideo.apps.worldbuild.common import from_pixels
from cdvideo.apps.worldbuild.drawing import components, emit
from cdvideo.data.ranges import Flag, Parser, Range
from cdvideo.math.metrics import bootstrap_ci
from cdvideo.toyworld import judge as J
from cdvideo.toyworld import scoring
from cdvideo.toyworld.instances import INSTANCES

GUIDANCE, STEPS = 5.0, 25


def away_from(e_uncond: torch.Tensor, e_cond: torch.Tensor, e_neg: torch.Tensor, guidance: float,
              weight: float) -> torch.Tensor:
    """Composable Diffusion's negation: e_u + (g + w)(e_c - e_u) - w(e_n - e_u) (Liu et al. 2022, Eq. 9)."""
    return e_uncond + (guidance + weight) * (e_cond - e_uncond) - weight * (e_neg - e_uncond)


@torch.no_grad()
def draw_away(pipe, texts: list[str], negatives: list[str], seeds: list[int], weight: float,
              steps: int = STEPS) -> list[np.ndarray]:
    """One still per prompt from its seed's noise (the pipeline's own draw), guided away from its negative (the
    pipeline's scheduler, `steps` steps, guidance 5)."""
    sched, out = pipe.scheduler, []
    for i in range(0, len(texts), 16):
        n = len(texts[i:i + 16])
        sched.set_timesteps(steps)  # a multistep solver starts afresh for each batch, as in the pipeline
        embeds = torch.cat([pipe.encode_prompt(t, "cpu", 1, False)[0]
                            for t in ([""] * n, texts[i:i + 16], negatives[i:i + 16])])  # (3n, 77, D)
        shape = (pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
        lat = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s))
                           for s in seeds[i:i + 16]]) * sched.init_noise_sigma  # (n, 4, 16, 16)
        for t in sched.timesteps:
            e_u, e_c, e_n = pipe.unet(torch.cat([lat] * 3), t, encoder_hidden_states=embeds).sample.chunk(3)
            lat = sched.step(away_from(e_u, e_c, e_n, GUIDANCE, weight), t, lat).prev_sample
        out += list(from_pixels(pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample))  # (64, 64, 3) each
    return out


@torch.no_grad()
def draw_negative(pipe, texts: list[str], negatives: list[str], seeds: list[int]) -> list[np.ndarray]:
    """One still per prompt through the pipeline, the negative prompt as a user gives it."""
    images = pipe(texts, negative_prompt=negatives, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                  generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np").images
    return list((np.asarray(images) * 255).round().astype(np.uint8))


def measure(work: Path, unet: Path, n: int, weights: list[float]) -> dict:
    """Per instance and judge: each arm's spelled-out identity and its paired difference from the plain arm."""
    from cdvideo.pipelines.build import image_pipeline  # lazy: start-up time

    judges = {name: J.load(work / file).eval() for name, file in JUDGES.items()}
    pipe = image_pipeline(components(work, unet))
    pipe.set_progress_bar_config(disable=True)
    out: dict = {"unet": str(unet), "n": n, "instances": {}}
    pooled: dict = {j: {} for j in judges}  # judge -> arm -> every instance's per-image identities
    for name, inst in INSTANCES.items():
        prompts, twins = scoring.spelled_prompts(inst, n), scoring.spelled_prompts(inst.swapped(), n)
        texts, negatives, seeds = [p.text for p in prompts], [p.text for p in twins], [p.seed for p in prompts]
        arms = {"plain": draw_away(pipe, texts, negatives, seeds, 0.0),
                "negative prompt": draw_negative(pipe, texts, negatives, seeds),
                **{f"away {w:g}": draw_away(pipe, texts, negatives, seeds, w) for w in weights}}
        out["instances"][name] = {}
        for judge_name, judge in judges.items():
            ids = {arm: [J.identity(J.read(judge, [im]), inst.appearance) for im in ims] for arm, ims in arms.items()}
            out["instances"][name][judge_name] = paired(ids)
            for arm, v in ids.items():
                pooled[judge_name].setdefault(arm, []).extend(v)
        print(name, out["instances"][name], flush=True)
    out["all"] = {judge_name: paired(ids) for judge_name, ids in pooled.items()}
    return out


def paired(ids: dict[str, list[float]]) -> dict:
    """Each arm's mean identity, and each arm minus the plain one, paired image by image: mean and 95% interval."""
    row = {arm: round(float(np.mean(v)), 4) for arm, v in ids.items()}
    for arm in [a for a in ids if a != "plain"]:
        row[f"{arm} - plain"] = [round(x, 4) for x in bootstrap_ci([a - b for a, b in zip(ids[arm], ids["plain"])])]
    return row


def main() -> None:
    p = Parser(prog="python -m cdvideo.apps.worldbuild.swap_guidance", description=__doc__.splitlines()[0])
    p.add_argument("--work", default="toyworld-build", help="the build folder (default: %(default)s)")
    p.add_argument("--unet", default=None, help="a UNet folder (default: WORK/unet)")
    p.add_argument("--n", type=Flag(int, Range(1, 1000)), default=32, help="stills per instance (default: 32)")
    p.add_argument("--weights", type=Flag(float, Range(0.0, 30.0)), nargs="+", default=[1.0, 3.0],
                   help="the negation's weights (default: 1 3)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    work, t0 = Path(args.work), time.time()
    result = measure(work, Path(args.unet) if args.unet else work / "unet", args.n, args.weights)
    result["seconds"] = round(time.time() - t0)
    emit(result, args.out)


if __name__ == "__main__":
    main()
