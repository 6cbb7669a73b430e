"""Applying a weights file to a base model's modules: the trained K/V by name (W0 + scale * (W - W0)) into the UNet's
spatial `attn2` layers (a `UNet2DConditionModel` or AnimateDiff's `UNetMotionModel` alike, never its motion modules),
and the tokens with their embedding rows into the tokenizer and text encoder. Check first with `weights.validate`."""

from __future__ import annotations

import torch

from cdvideo.data.weights import PersonalWeights
from cdvideo.errors import CdvideoError
from cdvideo.models.text import set_token_rows


@torch.no_grad()
def apply(w: PersonalWeights, unet, text_encoder, tokenizer, scale: float = 1.0) -> list[int]:
    """Write K/V by name (W0 + scale * (W - W0)) and add the tokens with their rows; returns token ids."""
    if not 0.0 <= scale <= 1.0:
        raise CdvideoError(f"scale {scale} must lie in [0, 1]")
    params = dict(unet.named_parameters())
    for key, t in w.unet.items():
        p = params[key]
        tuned = t.to(p.device, torch.float32)
        p.copy_(tuned if scale == 1.0 else p.float() + scale * (tuned - p.float()))
    return set_token_rows(tokenizer, text_encoder, w.tokens, w.embeddings)
