"""Loss math as small pure torch functions (no diffusers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the mask's support, averaged per sample (Custom Diffusion's masked loss).

    pred, target: (B, C, H, W); mask: (B, 1, H, W) weights in [0, 1] (0/1: an augmentation's box; a subject mask's
    weights: a weighted mean). The denominator sums the weights. weight: (B,) each sample's weight in the mean over
    the batch (`min_snr_weight`), or None: all 1.
    """
    err = (pred.float() - target.float()).pow(2) * mask
    denom = (mask.expand_as(err)).sum(dim=(1, 2, 3)).clamp_min(1.0)
    per_sample = err.sum(dim=(1, 2, 3)) / denom  # (B,)
    return (per_sample if weight is None else per_sample * weight.float()).mean()


def signal_to_noise(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """SNR(t) = a_t / (1 - a_t) of the noised latent sqrt(a_t) x0 + sqrt(1 - a_t) eps (Kingma et al. 2021, VDM).

    alphas_cumprod: (T,) the scheduler's; t: (B,) timesteps; returns (B,) float32.
    """
    a = alphas_cumprod.to(t.device, torch.float32)[t]
    return a / (1 - a)


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-sample loss weights of Min-SNR-gamma (Hang et al., ICCV 2023): min(SNR, gamma) for an x0 loss; for an
    epsilon loss / SNR (= min(1, gamma / SNR), 1 at zero SNR), for a v loss / (SNR + 1).

    snr: (B,) `signal_to_noise`; returns (B,). Low noise levels (SNR above gamma) weigh less, the rest as before.
    """
    snr = snr.float()
    if prediction_type == "epsilon":  # 0 / 0 where SNR is 0, replaced by its limit 1
        return torch.where(snr > 0, snr.clamp(max=gamma) / snr, torch.ones_like(snr))
    if prediction_type == "v_prediction":
        return torch.clamp(snr, max=gamma) / (snr + 1)
    if prediction_type == "sample":
        return torch.clamp(snr, max=gamma)
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


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
