"""Stage controlnet: a miniature ControlNet (Zhang et al. ICCV 2023) that places the object where a mask says, for
`cdvideo animate --controlnet`. Made from the trained UNet (`ControlNetModel.from_unet`: its encoder copied, zero
convolutions out), conditioned on each frame's object mask (white where the object is, black elsewhere: the mask
of any clip, made by any segmenter), trained with the UNet frozen on the pretraining stills and clip frames:
epsilon prediction, min-SNR weighting, half the captions dropped, so that the mask alone places the object (as
ControlNet's authors trained theirs). Saved as a diffusers folder, work/controlnet_mask/."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cdvideo.apps.worldbuild.common import (Curve, log, mark_done, optimizer, optimizer_step,
    seed_everything, unet_digest)
from cdvideo.apps.worldbuild.plans import ControlNetPlan
from cdvideo.apps.worldbuild.unet import batch_at, epsilon_loss, load_text, training_data
from cdvideo.data.files import atomic_folder

CONDITION_CHANNELS = (16, 32, 64)  # the condition embedding: 64 px masks down to 16 x 16 latents (3 levels, 4x)


def mask_image(alpha: torch.Tensor) -> torch.Tensor:
    """(B, H, W) object coverage in [0, 1] -> (B, 3, H, W) control images, as pipelines pass them."""
    return alpha[:, None].expand(-1, 3, -1, -1).contiguous()


def build(unet):
    """A ControlNet copied from the UNet's encoder, its outputs zero (the frozen UNet draws as before)."""
    from diffusers import ControlNetModel  # lazy: start-up time

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONDITION_CHANNELS)


def run(work: Path, seed: int, plan: ControlNetPlan) -> dict:
    from diffusers import UNet2DConditionModel  # lazy: start-up time

    seed_everything(seed)
    data = training_data(work, seed, plan)
    device, (tokenizer, text_encoder) = plan.device, load_text(work)
    unet = UNet2DConditionModel.from_pretrained(str(work / "unet")).eval().requires_grad_(False)
    controlnet = build(unet).train().to(device)
    unet.to(device)
    text_encoder.to(device)
    log(f"controlnet: {sum(p.numel() for p in controlnet.parameters()) / 1e6:.2f}M parameters")
    opt, lr_sched = optimizer(controlnet.parameters(), plan.optim, plan.steps)
    curve, t0 = Curve(work, "controlnet"), time.time()
    for step in range(plan.steps):
        b = {k: v.to(device) for k, v in batch_at(step, seed, data, plan, tokenizer).items()}
        with torch.no_grad():
            cond = text_encoder(b["ids"]).last_hidden_state  # (B, 77, D)
        # -- the ControlNet's residuals from the mask, the frozen UNet's prediction with them, epsilon loss
        down, mid = controlnet(b["noisy"], b["t"], cond, controlnet_cond=mask_image(b["alpha"]), return_dict=False)
        pred = unet(b["noisy"], b["t"], cond, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample  # (B, 4, 16, 16)
        loss = epsilon_loss(pred, b["noise"], b["w"], torch.ones_like(b["pixel_w"]))
        optimizer_step(loss, opt, lr_sched, controlnet.parameters(), plan.optim.max_norm)
        if step % 25 == 0 or step == plan.steps - 1:
            curve.add(step, loss=loss.item())
            log(f"controlnet step {step}/{plan.steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
    curve.save()
    with atomic_folder(work / "controlnet_mask") as tmp:
        controlnet.cpu().eval().save_pretrained(str(tmp))
    info = {"steps": plan.steps, "seconds": round(time.time() - t0), "final_loss": loss.item(),
            "unet": unet_digest(work)}
    mark_done(work, "controlnet", info, plan)
    return info
