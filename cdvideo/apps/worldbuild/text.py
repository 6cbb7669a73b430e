"""Stage 2: the text encoder, a CLIPTextModel with SD1.5's tokenizer, trained contrastively against a locked image
encoder (LiT, Zhai et al. CVPR 2022): the judge's penultimate features of the pretraining renders (first, middle
and last frame of a clip) through a learnt projection. Auxiliary heads on the EOS feature name the attributes the
caption mentions, so that classes cluster and colours, backgrounds, positions and motions separate linearly."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from cdvideo.apps.worldbuild.common import (TEXT, Curve, log, mark_done, optimizer, optimizer_step, pretraining,
    seed_everything, to_pixels)
from cdvideo.apps.worldbuild.plans import TextPlan
from cdvideo.models.architectures import tokenizer_dir
from cdvideo.models.text import eos_index
from cdvideo.toyworld import judge as J
from cdvideo.toyworld.world import MOTIONS, NUM_FRAMES, describe

ATTRS = {**{k: tuple(x for x in v if x != "none") for k, v in J.HEADS.items()}, "motion": MOTIONS[1:]}


@torch.no_grad()
def image_features(judge: J.Judge, images: np.ndarray, clips: np.ndarray) -> torch.Tensor:
    """Locked features (N_images + N_clips, 3, hidden): a still repeats its frame; a clip gives first/middle/last."""
    feats = lambda x: torch.cat([judge.features(to_pixels(x[i:i + 500])) for i in range(0, len(x), 500)])  # noqa: E731
    still = feats(images)[:, None].expand(-1, 3, -1)
    frames = np.asarray(clips[:, [0, NUM_FRAMES // 2, NUM_FRAMES - 1]]).reshape(-1, 64, 64, 3)
    return torch.cat([still, feats(frames).view(len(clips), 3, -1)])


class Towers(nn.Module):
    """Projections into the shared space, the temperature, and the attribute heads."""

    def __init__(self, hidden: int, width: int, plan: TextPlan):
        super().__init__()
        tower = plan.tower_width
        self.image = nn.Sequential(nn.Linear(4 * hidden, tower), nn.SiLU(), nn.Linear(tower, width))
        self.text = nn.Linear(width, width, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / plan.temperature)))
        self.heads = nn.ModuleDict({k: nn.Linear(width, len(v)) for k, v in ATTRS.items()})

    def image_embed(self, f: torch.Tensor) -> torch.Tensor:
        """(B, 3, hidden) -> (B, width): frames and the change from first to last."""
        return self.image(torch.cat([f[:, 0], f[:, 1], f[:, 2], f[:, 2] - f[:, 0]], dim=-1))


def clip_loss(text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch (Radford et al. 2021)."""
    logits = logit_scale.exp().clamp(max=100) * F.normalize(text, dim=-1) @ F.normalize(image, dim=-1).T
    labels = torch.arange(len(text))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def attribute_targets(mentions: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([v.index(m[k]) if m.get(k) else J.IGNORE for m in mentions]) for k, v in ATTRS.items()}


def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel  # lazy: start-up time

    return CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), **TEXT))


def run(work: Path, seed: int, plan: TextPlan) -> dict:
    from transformers import CLIPTokenizer  # lazy: start-up time

    seed_everything(seed)
    images, scenes, clips, clip_scenes = pretraining(work, seed, plan.renders)
    all_scenes = scenes + clip_scenes
    # the judge in NCHW, as the committed stage was built: the same locked features to the bit
    judge = J.load(work / "judge.safetensors").to(memory_format=torch.contiguous_format)
    feats = image_features(judge, images, clips)  # (N, 3, hidden)
    log(f"locked image features: {tuple(feats.shape)}")

    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir()))
    text_encoder = build_text_encoder(tokenizer).train()
    towers = Towers(feats.shape[-1], TEXT["hidden_size"], plan)
    params = list(text_encoder.parameters()) + list(towers.parameters())
    steps, batch = plan.steps, plan.batch
    opt, sched = optimizer(params, plan.optim, steps)
    rng = np.random.default_rng(seed)
    weights = np.r_[np.full(len(scenes), plan.image_weight),
                    np.full(len(clip_scenes), 1.0 * len(scenes) / len(clip_scenes))]
    weights /= weights.sum()  # image_weight 3: a quarter of each batch from clips
    curve, t0 = Curve(work, "text"), time.time()
    for step in range(steps):
        idx = rng.choice(len(all_scenes), batch, replace=False, p=weights)
        described = [describe(all_scenes[i], rng) for i in idx]
        ids = tokenizer([d[0] for d in described], padding="longest", return_tensors="pt").input_ids
        hidden = text_encoder(ids).last_hidden_state  # (B, L, D), causal: padding does not change EOS
        eos = hidden[torch.arange(len(ids)), eos_index(ids, tokenizer.eos_token_id)]  # (B, D)
        contrastive = clip_loss(towers.text(eos), towers.image_embed(feats[idx]), towers.logit_scale)
        t = attribute_targets([d[1] for d in described])
        aux = sum((plan.class_weight if k == "cls" else 1.0)  # the class matters most: its phrases cluster
                  * F.cross_entropy(towers.heads[k](eos), t[k], ignore_index=J.IGNORE) for k in ATTRS) / len(ATTRS)
        loss = contrastive + aux
        optimizer_step(loss, opt, sched, params, plan.optim.max_norm)
        if step % 50 == 0 or step == steps - 1:
            curve.add(step, loss=loss.item(), contrastive=contrastive.item(), attributes=aux.item())
            log(f"text step {step}/{steps} contrastive {contrastive.item():.4f} attributes {aux.item():.4f} "
                f"({time.time() - t0:.0f} s)")
    curve.save()
    text_encoder.eval().save_pretrained(str(work / "text_encoder"))
    info = {"steps": steps, "seconds": round(time.time() - t0), "final_contrastive": contrastive.item(),
            "final_attributes": aux.item()}
    mark_done(work, "text", info, plan)
    return info
