"""Motion math: MotionDirector's appearance-debiased temporal loss, LoRA deltas, and motion metrics as functions of
per-frame tracks and optical-flow fields (pure torch / numpy, no model)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def debias(x: torch.Tensor, anchor: int, beta: float = 1.0) -> torch.Tensor:
    """sqrt(beta^2 + 1) * x - beta * x[:, :, anchor] over frames of (B, C, F, H, W): the appearance shared by the
    frames cancels (Zhao et al., MotionDirector, ECCV 2024, Eq. 5)."""
    return (beta ** 2 + 1) ** 0.5 * x - beta * x[:, :, anchor:anchor + 1]


def debiased_temporal_loss(pred: torch.Tensor, target: torch.Tensor, anchor: int, beta: float = 1.0
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(plain MSE, appearance-debiased MSE) of (B, C, F, H, W) noise predictions against their targets, the
    debiased one against a random anchor frame (MotionDirector, ECCV 2024, Eq. 5-6: L_temporal = sum of both)."""
    plain = F.mse_loss(pred.float(), target.float())
    return plain, F.mse_loss(debias(pred.float(), anchor, beta), debias(target.float(), anchor, beta))


def high_noise_weight(alphas_cumprod: torch.Tensor, t: torch.Tensor, cap: float = 10.0) -> torch.Tensor:
    """clamp(1 / SNR, 1, cap): the epsilon loss in x0 units where noise is high (1 / SNR is the x0 error per unit
    of epsilon error, Salimans & Ho ICLR 2022), where a clip's trajectory is decided; 1 elsewhere."""
    a = alphas_cumprod.to(t.device)[t]
    return ((1 - a) / a).clamp(min=1.0, max=cap)


def lora_delta(down: torch.Tensor, up: torch.Tensor, alpha: float | None, scale: float = 1.0) -> torch.Tensor:
    """scale * (alpha / rank) * up @ down: the weight change of a LoRA pair (Hu et al. ICLR 2022, Eq. 3; alpha
    None means alpha = rank)."""
    rank = down.shape[0]
    factor = scale * ((alpha if alpha is not None else rank) / rank)
    return factor * (up.double() @ down.double())


def centred(track: np.ndarray) -> np.ndarray:
    """A (F, D) per-frame track minus its mean over frames: where the subject is does not matter, how it moves does."""
    track = np.asarray(track, np.float64)
    return track - track.mean(axis=0, keepdims=True)


def resample_track(track: np.ndarray, frames: int) -> np.ndarray:
    """Linear interpolation of a (F, D) track to (frames, D) over the same time span."""
    track = np.asarray(track, np.float64)
    if len(track) == frames:
        return track
    src, dst = np.linspace(0, 1, len(track)), np.linspace(0, 1, frames)
    return np.stack([np.interp(dst, src, track[:, d]) for d in range(track.shape[1])], axis=1)


def track_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine between two centred (F, D) tracks (resampled to the longer): 1 for the same motion at any place and
    amplitude ratio, 0 for unrelated motions, -1 for the reverse; 0 when either does not move."""
    n = max(len(a), len(b))
    x, y = centred(resample_track(a, n)).ravel(), centred(resample_track(b, n)).ravel()
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    return float(x @ y / (nx * ny)) if nx > 1e-9 and ny > 1e-9 else 0.0


def motion_fidelity(tracks: list[np.ndarray], references: list[np.ndarray]) -> float:
    """Mean over generated tracks of their mean `track_similarity` to the reference tracks."""
    return float(np.mean([np.mean([track_similarity(t, r) for r in references]) for t in tracks]))


def flow_track(flows: np.ndarray, quantile: float = 0.9) -> np.ndarray:
    """(F, 3) track of a clip from its (F-1, H, W, 2) optical flows: the cumulative mean displacement (x, y) of the
    moving pixels (flow magnitude above the frame's `quantile`) and the cumulative divergence (zoom), from 0."""
    steps = []
    for f in np.asarray(flows, np.float64):
        mag = np.linalg.norm(f, axis=-1)
        moving = mag >= max(np.quantile(mag, quantile), 1e-6)
        dx, dy = (f[..., 0][moving].mean(), f[..., 1][moving].mean()) if moving.any() else (0.0, 0.0)
        div = np.gradient(f[..., 0], axis=1) + np.gradient(f[..., 1], axis=0)
        steps.append((dx, dy, float(div[moving].mean()) * f.shape[1] if moving.any() else 0.0))
    return np.vstack([np.zeros((1, 3)), np.cumsum(np.array(steps), axis=0)])


def dynamic_degree(flows: np.ndarray, top: float = 0.05) -> float:
    """Mean over frame pairs of the mean of the top `top` share of flow magnitudes, in pixels per frame (VBench's
    dynamic degree before its threshold; Huang et al. CVPR 2024)."""
    per = []
    for f in np.asarray(flows, np.float64):
        mag = np.sort(np.linalg.norm(f, axis=-1).ravel())
        per.append(mag[-max(1, int(len(mag) * top)):].mean())
    return float(np.mean(per)) if per else 0.0
