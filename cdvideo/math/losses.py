"""Loss math as small pure torch functions (no diffusers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the mask's support, averaged per sample (Custom Diffusion's masked loss).

    pred, target: (B, C, H, W); mask: (B, 1, H, W) weights in [0, 1] (0/1: an augmentation's box; a subject mask's
    weights: a weighted mean). The denominator sums the weights.
    """
    err = (pred.float() - target.float()).pow(2) * mask
    denom = (mask.expand_as(err)).sum(dim=(1, 2, 3)).clamp_min(1.0)
    return (err.sum(dim=(1, 2, 3)) / denom).mean()


def semantic_preservation_loss(personal: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """SPL = 1 - cos(f(personal phrase), f(class phrase)), averaged over concepts (ClassDiffusion, Eq. 5).

    personal, cls: (N, D) EOS features, one row per concept.
    """
    return (1.0 - F.cosine_similarity(personal.float(), cls.float(), dim=-1)).mean()


def velocity(x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v = sqrt(a_t) * eps - sqrt(1 - a_t) * x0 (Salimans & Ho 2022, v-parameterisation)."""
    a = alphas_cumprod.to(x0.device, torch.float32)[t].view(-1, *([1] * (x0.dim() - 1)))
    return (a.sqrt() * noise.float() - (1 - a).sqrt() * x0.float()).to(x0.dtype)


def diffusion_target(
    prediction_type: str, x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """What the UNet is trained to predict under the scheduler's `prediction_type`."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return velocity(x0, noise, alphas_cumprod, t)
    if prediction_type == "sample":
        return x0
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def contrast_caption_loss(err: torch.Tensor, err_contrast: torch.Tensor, beta: float) -> torch.Tensor:
    """-log sigmoid(beta (err_contrast - err)), averaged: the denoiser as a two-way classifier of its caption
    against a contrast caption (diffusion classifier, Li et al. ICCV 2023; discriminative tuning, Qu et al. CVPR 2024).

    err, err_contrast: (N,) per-sample squared epsilon errors under the caption and under the contrast caption.
    """
    return F.softplus(beta * (err.float() - err_contrast.float())).mean()
