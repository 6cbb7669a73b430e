"""Do the motion words reach the UNet's features, where the motion modules read the prompt?

    python -m cdvideo.apps.worldbuild.motion_signal              # about a minute on 2 CPU cores
    python -m cdvideo.apps.worldbuild.motion_signal --adapter .toyworld-build/motion_adapter   # another adapter's test

One noisy latent, prompts that differ only in their motion words, and prompts that differ only in their colour
word, through the shipped UNet. It prints how far each block's output spreads across the prompts of each group:
the RMS distance from the group mean, over the norm of the mean; then the same for pairs of opposite motions
against a pair of colours. Last, the caption test: fresh rendered clips, noised, denoised by the UNet with the
shipped motion adapter under their own motion word, the opposite one, and none; if the model used the words, its
own word would give the lowest loss. docs/toyworld.md quotes the numbers.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from cdvideo.apps.worldbuild.common import MOTION_SCHEDULE, to_pixels
from cdvideo.models.loading import load_components
from cdvideo.models.text import encode_prompts
from cdvideo.pipelines.registry import load_adapter
from cdvideo.toyworld import MODEL_ID, draw, world

MOTIONS = ["moving left", "moving right", "moving up", "moving down", "growing", "shrinking"]
COLOURS = ["red", "blue", "yellow", "white", "pink", "black"]
PAIRS = {"left/right": ("moving left", "moving right"), "up/down": ("moving up", "moving down"),
         "growing/shrinking": ("growing", "shrinking"), "red/blue (colours)": ("red ball", "blue ball")}


def spread(f: torch.Tensor) -> float:
    """RMS distance of the rows from their mean, relative to the mean's norm."""
    mean = f.mean(0, keepdim=True)
    return ((f - mean).norm() / mean.norm() / len(f) ** 0.5).item()


@torch.no_grad()
def block_outputs(m: dict, prompts: list[str], x: torch.Tensor, t: int) -> dict[str, torch.Tensor]:
    """Outputs of the two cross-attention down blocks and the mid block for each prompt."""
    unet, out = m["unet"].eval(), {}
    hooks = [blk.register_forward_hook(lambda mod, inp, o, n=f"down{i}": out.__setitem__(n, o[0]))
             for i, blk in enumerate(unet.down_blocks) if getattr(blk, "has_cross_attention", False)]
    hooks.append(unet.mid_block.register_forward_hook(lambda mod, inp, o: out.__setitem__("mid", o)))
    cond = encode_prompts(m["text_encoder"], m["tokenizer"], prompts)  # (P, 77, D)
    unet(x.expand(len(prompts), -1, -1, -1), torch.tensor(t), cond)
    for h in hooks:
        h.remove()
    return out


OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "growing": "shrinking",
            "shrinking": "growing"}


@torch.no_grad()
def caption_test(m: dict, adapter, per_motion: int = 4, seed: int = 777) -> None:
    """Denoising loss of fresh clips under their own motion word, the opposite one, and none, by timestep."""
    from diffusers import DDPMScheduler, UNetMotionModel  # lazy: start-up time

    model = UNetMotionModel.from_unet2d(m["unet"], adapter).eval()
    sched, vae, rng = DDPMScheduler(**MOTION_SCHEDULE), m["vae"], np.random.default_rng(seed)
    scenes = [world.with_motion(world.sample_scene(rng), rng, mo) for mo in OPPOSITE for _ in range(per_motion)]
    clips = []  # per scene: its latents (1, 4, F, 16, 16), its noise, and the prompt states of each caption
    for k, sc in enumerate(scenes):
        x0 = vae.encode(to_pixels(draw.render(sc))).latent_dist.mean * vae.config.scaling_factor  # (F, 4, 16, 16)
        x0 = x0.permute(1, 0, 2, 3)[None]  # (1, 4, F, 16, 16)
        subject = world.subject_phrase(sc.cls, sc.colour)
        conds = {name: encode_prompts(m["text_encoder"], m["tokenizer"], [world.prompt(subject, None, sc.background,
                                                                                        mo)])  # (1, 77, D)
                 for name, mo in (("own", sc.motion), ("opposite", OPPOSITE[sc.motion]), ("none", None))}
        clips.append((x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + k)), conds))
    for t in (100, 300, 500, 700, 900):
        losses = {"own": [], "opposite": [], "none": []}
        for x0, noise, conds in clips:
            noisy = sched.add_noise(x0, noise, torch.tensor([t]))
            for name, cond in conds.items():
                pred = model(noisy, torch.tensor(t), cond.repeat_interleave(x0.shape[2], 0)).sample
                losses[name].append((pred - noise).pow(2).mean().item())
        own, opp = np.array(losses["own"]), np.array(losses["opposite"])
        print(f"caption test t={t}: loss own {own.mean():.4f}  opposite {opp.mean():.4f}  "
              f"none {np.mean(losses['none']):.4f}  own < opposite in {np.mean(own < opp):.0%} of "
              f"{len(own)} clips")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapter", default=MODEL_ID, help="the motion adapter of the caption test (default: shipped)")
    args = p.parse_args()
    m = load_components(MODEL_ID)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))  # (1, 4, 16, 16)
    groups = {"motion words": [f"a red ball {w} on a green background" for w in MOTIONS],
              "colour words": [f"a {c} ball on a green background" for c in COLOURS]}
    for t in (200, 600):
        outs = {name: block_outputs(m, prompts, x, t) for name, prompts in groups.items()}
        for block in outs["motion words"]:
            print(f"t={t} {block:6s} " + "  ".join(f"spread across {name} {spread(o[block]):.3f}"
                                                   for name, o in outs.items()))
    for t in (200, 600):
        for name, (a, b) in PAIRS.items():
            pair = [f"a {w} on a green background" if "ball" in w else f"a red ball {w} on a green background"
                    for w in (a, b)]
            o = block_outputs(m, pair, x, t)
            print(f"t={t} {name:18s} " + "  ".join(f"{block} {spread(f):.3f}" for block, f in o.items()))
    caption_test(m, load_adapter(args.adapter, torch.float32))


if __name__ == "__main__":
    main()
