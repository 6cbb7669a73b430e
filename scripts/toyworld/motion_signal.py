"""Do the motion words reach the UNet's features, where the motion modules read the prompt?

    python scripts/toyworld/motion_signal.py     # under a minute on 2 CPU cores

One noisy latent, prompts that differ only in their motion words, and prompts that differ only in their colour
word, through the shipped UNet. It prints how far each block's output spreads across the prompts of each group:
the RMS distance from the group mean, over the norm of the mean. docs/toyworld.md quotes the numbers.
"""

from __future__ import annotations

import torch

from common import ROOT  # noqa: F401  (puts the repository on sys.path)

from cdvideo.models import load_components
from cdvideo.text import encode_prompts
from cdvideo.toyworld import MODEL_ID

MOTIONS = ["moving left", "moving right", "moving up", "moving down", "growing", "shrinking"]
COLOURS = ["red", "blue", "yellow", "white", "pink", "black"]


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


def main() -> None:
    m = load_components(MODEL_ID)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))  # (1, 4, 16, 16)
    groups = {"motion words": [f"a red ball {w} on a green background" for w in MOTIONS],
              "colour words": [f"a {c} ball on a green background" for c in COLOURS]}
    for t in (200, 600):
        outs = {name: block_outputs(m, prompts, x, t) for name, prompts in groups.items()}
        for block in outs["motion words"]:
            print(f"t={t} {block:6s} " + "  ".join(f"spread across {name} {spread(o[block]):.3f}"
                                                   for name, o in outs.items()))


if __name__ == "__main__":
    main()
